//! The storage test suite: one generic function per behaviour, run by the
//! tests against every [`Store`] implementation (SQLite always, PostgreSQL
//! when `MBMS_TEST_POSTGRES_URL` is set), so both backends are held to the
//! same contract. Public so that a third implementation can reuse it.
//!
//! Each check takes `open`, which returns a fresh handle on the *same*
//! database: a check writes, drops its handle (a stop of the process) and
//! opens again to see what survived.

use std::collections::BTreeSet;
use std::sync::Arc;

use mbms::engine::{Engine, EngineConfig, KeyGroupConfig, KeyGroupSnapshot, MskSnapshot, UeId};
use mbms::{KeyDomainId, KeyGroupName, Msk, MskId, MskName, MtkId, Muk, MukId};
use rand::rngs::OsRng;

use super::*;

/// Opens a handle on the database under test.
pub type Open<'a> = &'a dyn Fn() -> Arc<dyn Store>;

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").expect("valid")
}

fn group(n: u16) -> KeyGroupName {
    KeyGroupName {
        key_domain: kd(),
        key_group: n,
    }
}

fn msk(g: u16, n: u16) -> MskName {
    MskName {
        key_domain: kd(),
        msk_id: MskId::new(g, n),
    }
}

/// Runs every check.
pub fn run_all(open: Open<'_>) {
    counters_never_go_back(open);
    key_group_state_round_trips(open);
    engine_counters_resume_above_the_mark(open);
    definitions(open);
    ues_and_registrations(open);
    deliveries_and_charging(open);
    charging_once_per_msk(open);
    counter_blocks(open);
    if open().cluster().is_some() {
        cluster_leases(open);
    }
}

/// A charging record is written once per (IMPI, MSK) (seed 004
/// 6.3.2.3.3), whichever instance saw the acknowledgement: a second one
/// is dropped, not an error, and not returned.
pub fn charging_once_per_msk(open: Open<'_>) {
    let s = open();
    let c = |n: u32| ChargingRow {
        id: 0,
        impi: "once@x".into(),
        btid: "b@bsf".into(),
        msk: msk(43, 1),
        counter: n,
        time_ms: 1,
    };
    let first = s
        .record(&Outcomes {
            charging: vec![c(5)],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(first.len(), 1);
    let again = s
        .commit(&WriteBatch {
            outcomes: Outcomes {
                charging: vec![c(6)],
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    let all = s.charging_records(0, usize::MAX).unwrap();
    let mine: Vec<_> = all.iter().filter(|r| r.impi == "once@x").collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].counter, 5);
}

/// Counter blocks: the new mark is at least `upto`, never below the old
/// one, durable.
pub fn counter_blocks(open: Open<'_>) {
    let s = open();
    let before = s.counter_reserved().unwrap().unwrap_or(0);
    let m = s.reserve_counter_block(16, before + 16).unwrap();
    assert!(m >= before + 16);
    let m2 = s.reserve_counter_block(16, m + 16).unwrap();
    assert!(m2 >= m + 16);
    drop(s);
    assert_eq!(open().counter_reserved().unwrap(), Some(m2));
}

/// Several instances on one database (PostgreSQL): counter blocks of two
/// handles never overlap; leases are shared fairly, renewed, taken over
/// after they expire with a new epoch; key group writes are fenced by
/// the lease; secrets are shared; notices reach the listeners.
pub fn cluster_leases(open: Open<'_>) {
    use std::time::Duration;
    let (a, b) = (open(), open());
    // Disjoint blocks: each handle's block lies above the other's.
    let ma = a.reserve_counter_block(100, 0).unwrap();
    let mb = b.reserve_counter_block(100, 0).unwrap();
    assert!(mb >= ma + 100, "{ma} {mb}");
    let (ca, cb) = (a.cluster().unwrap(), b.cluster().unwrap());
    assert_eq!(ca.heartbeat("inst-a", "http://a", 60_000).unwrap(), 1);
    assert_eq!(cb.heartbeat("inst-b", "http://b", 60_000).unwrap(), 2);
    let shards = crate::cluster::UE_SHARDS as usize;
    let half = shards.div_ceil(2);
    let la = ca
        .claim(LeaseKind::UeShard, "inst-a", 60_000, half)
        .unwrap();
    let lb = cb
        .claim(LeaseKind::UeShard, "inst-b", 60_000, shards)
        .unwrap();
    assert_eq!(la.len(), half);
    assert_eq!(lb.len(), shards - half, "B gets what A left");
    assert!(la.iter().all(|l| lb.iter().all(|m| m.item != l.item)));
    // Renewal keeps the same leases and epochs.
    assert_eq!(
        ca.claim(LeaseKind::UeShard, "inst-a", 60_000, half)
            .unwrap(),
        la
    );
    // Shedding: a claim keeps what A holds beyond its share (renewed)
    // until A gives it back; then A holds 10.
    let kept = ca.claim(LeaseKind::UeShard, "inst-a", 60_000, 10).unwrap();
    assert_eq!(kept, la);
    let extra: Vec<u32> = la[10..].iter().map(|l| l.item).collect();
    // Another's release changes nothing.
    cb.release(LeaseKind::UeShard, "inst-b", &extra).unwrap();
    assert_eq!(
        ca.claim(LeaseKind::UeShard, "inst-a", 60_000, 10).unwrap(),
        la
    );
    ca.release(LeaseKind::UeShard, "inst-a", &extra).unwrap();
    let kept = ca.claim(LeaseKind::UeShard, "inst-a", 60_000, 10).unwrap();
    assert_eq!(kept[..], la[..10]);
    // Expired leases are taken over with a higher epoch.
    let short = ca.claim(LeaseKind::UeShard, "inst-a", 1, 10).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let lb2 = cb
        .claim(LeaseKind::UeShard, "inst-b", 60_000, shards)
        .unwrap();
    assert_eq!(lb2.len(), shards);
    for l in &short {
        let now = lb2.iter().find(|m| m.item == l.item).unwrap();
        assert!(now.epoch > l.epoch);
    }
    assert!(ca
        .claim(LeaseKind::UeShard, "inst-a", 60_000, 10)
        .unwrap()
        .is_empty());
    let rows = ca.instances(60_000).unwrap();
    let row_b = rows.iter().find(|r| r.instance_id == "inst-b").unwrap();
    assert!(row_b.alive);
    assert_eq!(row_b.ue_shards, shards);
    // Key group leases and fencing.
    a.put_key_group_def(&KeyGroupDef {
        key_group: 44,
        window_len: 10,
        charging: false,
        ack: true,
        rotate_interval: 0,
    })
    .unwrap();
    let ka = ca
        .claim(LeaseKind::KeyGroup, "inst-a", 60_000, 1000)
        .unwrap();
    let kg = ka.iter().find(|l| l.item == 44).copied().unwrap();
    assert!(cb
        .claim(LeaseKind::KeyGroup, "inst-b", 60_000, 1000)
        .unwrap()
        .iter()
        .all(|l| l.item != 44));
    ca.set_fence("inst-a", 44, Some(kg.epoch));
    cb.set_fence("inst-b", 44, None);
    // The first state: whoever writes first; later: only the anchor.
    b.save_key_group(&snapshot(44, 1, 1)).unwrap();
    a.save_key_group(&snapshot(44, 2, 2)).unwrap();
    assert_eq!((ca.fenced_writes(), cb.fenced_writes()), (0, 0));
    assert!(matches!(
        b.save_key_group(&snapshot(44, 3, 3)),
        Err(StoreError::Fenced { key_group: 44 })
    ));
    // Counted where it was refused (`bmsc_cluster_fenced_writes_total`).
    assert_eq!((ca.fenced_writes(), cb.fenced_writes()), (0, 1));
    assert_eq!(
        a.load_key_group(&group(44)).unwrap(),
        Some(snapshot(44, 2, 2))
    );
    // Shared secrets: the first one stays.
    let s1 = ca.shared_secret("test", &[1; 32]).unwrap();
    let s2 = cb.shared_secret("test", &[2; 32]).unwrap();
    assert_eq!(*s1, vec![1; 32]);
    assert_eq!(*s2, vec![1; 32]);
    // Notices: sent with a commit, or at once.
    let mut l = cb.listen().unwrap();
    a.commit(&WriteBatch {
        notices: vec!["hello".into()],
        ..Default::default()
    })
    .unwrap();
    ca.notify("world").unwrap();
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(l.wait(Duration::from_millis(100)).unwrap());
        if got.len() >= 2 {
            break;
        }
    }
    assert_eq!(got, ["hello", "world"]);
    ca.release_all("inst-a").unwrap();
    cb.release_all("inst-b").unwrap();
    assert!(ca.instances(60_000).unwrap().is_empty());
}

/// The MUK counter high-water mark: absent, raised, never lowered,
/// durable.
pub fn counters_never_go_back(open: Open<'_>) {
    let s = open();
    assert_eq!(s.counter_reserved().unwrap(), None);
    s.reserve_counters(32).unwrap();
    s.reserve_counters(64).unwrap();
    for lower in [64, 10] {
        assert!(matches!(
            s.reserve_counters(lower),
            Err(StoreError::CounterRollback { stored: 64, .. })
        ));
    }
    s.reserve_counters(1_000_000).unwrap();
    drop(s);
    let s = open();
    assert_eq!(s.counter_reserved().unwrap(), Some(1_000_000));
}

fn snapshot(g: u16, k: u16, fill: u8) -> KeyGroupSnapshot {
    let m = |n: u16, f: u8, s: u16| MskSnapshot {
        name: msk(g, n),
        key: Msk::from_bytes([f; 16]),
        seq_s: MtkId::new(s),
        seq_u: MtkId::new(s.wrapping_add(100)),
        mtk_counter: u32::from(n) * 1000,
        last_mtk_id: MtkId::new(s.wrapping_add(3)),
    };
    KeyGroupSnapshot {
        name: group(g),
        current: m(k, fill, 65500),
        next: m(
            k.wrapping_add(1).max(1),
            fill ^ 0xff,
            65500u16.wrapping_add(100),
        ),
        next_key_number: k.wrapping_add(2).max(1),
    }
}

/// Key group state: saved, replaced, per group, durable, exact.
pub fn key_group_state_round_trips(open: Open<'_>) {
    let s = open();
    assert!(s.load_key_group(&group(11)).unwrap().is_none());
    let a = snapshot(11, 1, 0x11);
    s.save_key_group(&a).unwrap();
    s.save_key_group(&snapshot(12, 65535, 0x22)).unwrap();
    assert_eq!(s.load_key_group(&group(11)).unwrap(), Some(a));
    let b = snapshot(11, 2, 0x33);
    s.save_key_group(&b).unwrap();
    drop(s);
    let s = open();
    assert_eq!(s.load_key_group(&group(11)).unwrap(), Some(b));
    assert_eq!(
        s.load_key_group(&group(12)).unwrap(),
        Some(snapshot(12, 65535, 0x22))
    );
    let other = KeyGroupName {
        key_domain: KeyDomainId::from_mcc_mnc("262", "01").unwrap(),
        key_group: 11,
    };
    assert!(s.load_key_group(&other).unwrap().is_none());
}

/// The key engine over the store: after a "crash" (the engine and the
/// handle dropped), a new engine on a new handle issues counters above
/// every counter used before, and finds its key group unchanged.
pub fn engine_counters_resume_above_the_mark(open: Open<'_>) {
    let ue = UeId::from("engine-ue@home1.net");
    let muk_id = MukId::new("bmsc.home1.net", "engine-ue@bsf");
    let cfg = EngineConfig {
        counter_block: 3,
        ..Default::default()
    };
    let run = |now: u64| -> (Vec<u32>, mbms::engine::KeyGroupInfo) {
        let mut e = Engine::new(cfg, EngineStoreHandle(open())).unwrap();
        let info = e
            .open_key_group(group(21), KeyGroupConfig::default(), &mut OsRng)
            .unwrap();
        e.register_ue(
            ue.clone(),
            muk_id.clone(),
            Muk::from_bytes([5; 32]),
            mbms::engine::Timestamp(now),
        );
        e.subscribe(&ue, &group(21), mbms::engine::Timestamp(now))
            .unwrap();
        let mut counters = Vec::new();
        for i in 0..3 {
            for a in e
                .poll(mbms::engine::Timestamp(now + i * 100_000), &mut OsRng)
                .unwrap()
            {
                if let mbms::engine::Action::SendMikey { counter, .. } = a {
                    counters.push(counter);
                }
            }
        }
        (counters, info)
    };
    let (first, info1) = run(0);
    let (second, info2) = run(10_000_000);
    assert_eq!(info1, info2, "the key group survives unchanged");
    assert_eq!(first.len(), 6);
    let max = *first.iter().max().unwrap();
    assert!(
        second.iter().all(|c| *c > max),
        "{second:?} must all be above {first:?}"
    );
    let all: BTreeSet<u32> = first.iter().chain(&second).copied().collect();
    assert_eq!(all.len(), first.len() + second.len(), "no counter repeats");
}

/// Key group and service definitions: insert, replace, list in order.
pub fn definitions(open: Open<'_>) {
    let s = open();
    let d = |g: u16, charging: bool| KeyGroupDef {
        key_group: g,
        window_len: 100 + g,
        charging,
        ack: !charging,
        rotate_interval: u64::from(g) * 60,
    };
    s.put_key_group_def(&d(32, false)).unwrap();
    s.put_key_group_def(&d(31, false)).unwrap();
    s.put_key_group_def(&d(32, true)).unwrap();
    let svc = |id: &str, open: bool| ServiceDef {
        id: id.into(),
        key_groups: vec![31, 32],
        open,
        allowed: if open {
            vec![]
        } else {
            vec!["a@x".into(), "b@x".into()]
        },
    };
    s.put_service(&svc("urn:test:b", true)).unwrap();
    s.put_service(&svc("urn:test:a", true)).unwrap();
    s.put_service(&svc("urn:test:a", false)).unwrap();
    drop(s);
    let s = open();
    let defs: Vec<_> = s
        .key_group_defs()
        .unwrap()
        .into_iter()
        .filter(|x| x.key_group == 31 || x.key_group == 32)
        .collect();
    assert_eq!(defs, vec![d(31, false), d(32, true)]);
    let svcs: Vec<_> = s
        .services()
        .unwrap()
        .into_iter()
        .filter(|x| x.id.starts_with("urn:test:"))
        .collect();
    assert_eq!(
        svcs,
        vec![svc("urn:test:a", false), svc("urn:test:b", true)]
    );
    assert!(svcs[0].allows("b@x") && !svcs[0].allows("c@x") && svcs[1].allows("c@x"));
}

fn ue(impi: &str, btid: &str, services: &[&str], port: u16) -> UeRecord {
    UeRecord {
        impi: impi.into(),
        btid: btid.into(),
        muk: Muk::from_bytes([port as u8; 32]),
        mikey_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        services: services.iter().map(|s| s.to_string()).collect(),
        updated_at: 1_700_000_000_000 + u64::from(port),
    }
}

/// UEs: insert, update (B-TID, MUK, address, services replaced), remove.
pub fn ues_and_registrations(open: Open<'_>) {
    let s = open();
    s.put_ue(&ue("ue-b@x", "b1@bsf", &["urn:s1"], 2001))
        .unwrap();
    s.put_ue(&ue("ue-a@x", "a1@bsf", &["urn:s1", "urn:s2"], 2002))
        .unwrap();
    s.put_ue(&ue("ue-c@x", "c1@bsf", &["urn:s2"], 2003))
        .unwrap();
    let a2 = ue("ue-a@x", "a2@bsf", &["urn:s2", "urn:s3"], 2004);
    s.put_ue(&a2).unwrap();
    s.remove_ue("ue-c@x").unwrap();
    s.remove_ue("ue-unknown@x").unwrap();
    drop(s);
    let s = open();
    let ues: Vec<_> = s
        .ues()
        .unwrap()
        .into_iter()
        .filter(|u| u.impi.starts_with("ue-"))
        .collect();
    assert_eq!(ues, vec![a2, ue("ue-b@x", "b1@bsf", &["urn:s1"], 2001)]);
    let none = ue("ue-d@x", "d1@bsf", &[], 2005);
    s.put_ue(&none).unwrap();
    assert!(s.ues().unwrap().contains(&none));
}

/// Delivery outcomes (upsert, `charged` sticky, filter by UE) and charging
/// records (increasing IDs, paging), all durable; removing a UE removes its
/// delivery outcomes but not its charging records.
pub fn deliveries_and_charging(open: Open<'_>) {
    let s = open();
    let d = |impi: &str, m: MskName, state: &str, charged: bool, t: u64| DeliveryRecord {
        impi: impi.into(),
        msk: m,
        state: state.into(),
        charged,
        updated_at: t,
    };
    let c = |impi: &str, m: MskName, counter: u32| ChargingRow {
        id: 0,
        impi: impi.into(),
        btid: format!("{impi}-btid"),
        msk: m,
        counter,
        time_ms: 1_700_000_000_123,
    };
    // The counters of acknowledged messages were reserved before use (a
    // database whose mark is below a used counter is refused at open).
    if s.counter_reserved().unwrap().is_none() {
        s.reserve_counters(100).unwrap();
    }
    let before = s.charging_records(0, usize::MAX).unwrap().len();
    let first = s
        .record(&Outcomes {
            deliveries: vec![
                d("dl-a@x", msk(41, 1), "pending", true, 1),
                d("dl-a@x", msk(41, 2), "acknowledged", false, 2),
                d("dl-b@x", msk(41, 1), "given_up", false, 3),
            ],
            charging: vec![c("dl-a@x", msk(41, 1), 7), c("dl-b@x", msk(41, 1), 9)],
        })
        .unwrap();
    assert_eq!(first.len(), 2);
    assert!(first[0].id > 0 && first[1].id > first[0].id);
    let second = s
        .record(&Outcomes {
            deliveries: vec![d("dl-a@x", msk(41, 1), "acknowledged", false, 4)],
            charging: vec![c("dl-a@x", msk(41, 2), 11)],
        })
        .unwrap();
    assert!(second[0].id > first[1].id);
    assert!(s.record(&Outcomes::default()).unwrap().is_empty());
    // An unknown delivery state is refused and nothing of the batch is
    // written.
    assert!(matches!(
        s.record(&Outcomes {
            deliveries: vec![
                d("dl-c@x", msk(41, 1), "acknowledged", false, 5),
                d("dl-c@x", msk(41, 2), "charged-twice", false, 5),
            ],
            charging: vec![c("dl-c@x", msk(41, 1), 1)],
        }),
        Err(StoreError::Invalid(_))
    ));
    assert!(s.deliveries(Some("dl-c@x")).unwrap().is_empty());
    drop(s);
    let s = open();
    assert_eq!(
        s.deliveries(Some("dl-a@x")).unwrap(),
        vec![
            d("dl-a@x", msk(41, 1), "acknowledged", true, 4),
            d("dl-a@x", msk(41, 2), "acknowledged", false, 2),
        ]
    );
    assert_eq!(
        s.deliveries(None)
            .unwrap()
            .iter()
            .filter(|x| x.impi.starts_with("dl-"))
            .count(),
        3
    );
    let all = s.charging_records(0, usize::MAX).unwrap();
    assert_eq!(all.len(), before + 3);
    let mine: Vec<_> = all
        .iter()
        .filter(|r| r.impi.starts_with("dl-"))
        .cloned()
        .collect();
    assert_eq!(
        mine.iter().map(|r| r.counter).collect::<Vec<_>>(),
        [7, 9, 11]
    );
    assert_eq!(mine[0].btid, "dl-a@x-btid");
    assert_eq!(mine[2].msk, msk(41, 2));
    let page = s.charging_records(mine[0].id, 1).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, mine[1].id);
    s.put_ue(&ue("dl-a@x", "x@bsf", &[], 3000)).unwrap();
    s.remove_ue("dl-a@x").unwrap();
    assert!(s.deliveries(Some("dl-a@x")).unwrap().is_empty());
    assert_eq!(s.charging_records(0, usize::MAX).unwrap().len(), before + 3);
}
