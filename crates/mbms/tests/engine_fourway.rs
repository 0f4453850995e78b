//! The MSK acknowledgement reliability (4-way) procedure (seed 004
//! 6.3.2.3.3), end to end with a UE simulated by the `messages` readers.

mod engine_support;

use std::time::Duration;

use engine_support::*;
use mbms::engine::{
    AckError, Action, ChargingRecord, DeliveryState, Engine, EngineConfig, KeyGroupConfig,
    MemoryStore, RetransmitPolicy, Step,
};
use mbms::profile::INACTIVE_WINDOW;
use mbms::MtkId;

fn charging_engine(store: &mut MemoryStore) -> Engine<&mut MemoryStore> {
    let mut e = Engine::new(
        EngineConfig {
            counter_block: 4,
            retransmit: RetransmitPolicy {
                initial: Duration::from_secs(1),
                jitter_permille: 0,
                max_attempts: 3,
                ..Default::default()
            },
        },
        store,
    )
    .unwrap();
    let cfg = KeyGroupConfig {
        charging: true,
        window_len: 100,
        ..Default::default()
    };
    e.open_key_group(group(1), cfg, &mut TestRng(1)).unwrap();
    e
}

#[test]
fn four_way_procedure_end_to_end() {
    let mut store = MemoryStore::new();
    let mut e = charging_engine(&mut store);
    let mut rng = TestRng(2);
    let mut ue = SimUe::new("user1_private@home1.net", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let info = e.key_group(&group(1)).unwrap();
    let msk = info.current.name;

    // Step 1: the MSK, inactive (VF > VT), V = 1.
    let sent = sends(&e.poll(t(0), &mut rng).unwrap());
    assert_eq!(sent.len(), 2, "current and next MSK");
    assert!(sent.iter().all(|s| s.2 == Some(Step::Inactive)));
    let s1 = sent.iter().find(|s| s.1 == msk).unwrap();
    let r1 = ue.receive(&s1.4).unwrap();
    let k1 = r1.key.clone().unwrap();
    assert!(r1.v);
    assert!(k1.is_inactive());
    assert_eq!((k1.seq_s.value(), k1.seq_u.value()), INACTIVE_WINDOW);
    // An inactive MSK protects no MTK.
    let mtk = e.next_mtk(&group(1), None, &mut rng).unwrap();
    assert_eq!(ue.receive_mtk(&mtk.bytes), Err("inactive MSK"));

    // Step 2: the acknowledgement -> a charging record, then step 3 is due.
    let actions = e.on_ack(r1.ack.as_ref().unwrap(), t(300)).unwrap();
    assert_eq!(
        actions,
        vec![
            Action::Acknowledged {
                ue: ue.id.clone(),
                handle: e.ue_handle(&ue.id.0).unwrap(),
                msk,
                step: Step::Inactive,
                charged: true,
            },
            Action::ChargingRecord(ChargingRecord {
                ue: ue.id.clone(),
                muk_id: ue.muk_id.clone(),
                msk,
                time: t(300),
                counter: r1.counter,
            }),
        ]
    );
    let st = e.delivery(&ue.id, &msk).unwrap();
    assert_eq!(
        (st.step, st.state, st.charged),
        (Step::Activate, DeliveryState::Pending, true)
    );
    assert_eq!(e.next_deadline(), Some(t(300)));

    // Step 3: the activation: same MSK ID and key, the real window, V = 1.
    let sent = sends(&e.poll(t(300), &mut rng).unwrap());
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].1, sent[0].2), (msk, Some(Step::Activate)));
    let r3 = ue.receive(&sent[0].4).unwrap();
    let k3 = r3.key.clone().unwrap();
    assert!(r3.v && r3.counter > r1.counter);
    assert_eq!(k3.msk, k1.msk, "the same key");
    assert!(!k3.is_inactive());
    assert_eq!(
        (k3.seq_s, k3.seq_u),
        (info.current.seq_s, info.current.seq_u)
    );

    // Step 4: its acknowledgement ends the procedure; no second charge.
    let actions = e.on_ack(r3.ack.as_ref().unwrap(), t(400)).unwrap();
    assert_eq!(
        actions,
        vec![Action::Acknowledged {
            ue: ue.id.clone(),
            handle: e.ue_handle(&ue.id.0).unwrap(),
            msk,
            step: Step::Activate,
            charged: true,
        }]
    );
    let st = e.delivery(&ue.id, &msk).unwrap();
    assert_eq!(
        (st.step, st.state, st.charged),
        (Step::Activate, DeliveryState::Acknowledged, true)
    );
    // The step-1 acknowledgement replayed now is stale: no second record.
    assert!(matches!(
        e.on_ack(r1.ack.as_ref().unwrap(), t(500)),
        Err(AckError::Stale { .. })
    ));

    // The MSK is usable: the next MTK opens, with its traffic keys.
    let mtk = e.next_mtk(&group(1), None, &mut rng).unwrap();
    assert_eq!(mtk.mtk_id, MtkId::new(info.current.seq_s.value() + 2));
    let (id, got) = ue.receive_mtk(&mtk.bytes).unwrap();
    assert_eq!((id, &got), (mtk.mtk_id, &mtk.mtk));
    let env = mbms::messages::MtkEnvelope::parse(&mtk.bytes).unwrap();
    assert_eq!(
        mtk.download_keys(),
        got.download_keys(env.csb_id(), &env.rand)
    );
    assert_eq!(mtk.srtp_master(), got.srtp_master());
    assert_eq!(mtk.mki(), mbms::messages::mki(msk.msk_id, mtk.mtk_id));
}

#[test]
fn each_step_is_retransmitted_until_acknowledged() {
    let mut store = MemoryStore::new();
    let mut e = charging_engine(&mut store);
    let mut rng = TestRng(3);
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let msk = e.key_group(&group(1)).unwrap().current.name;
    let mine = |a: &[Action]| sends(a).into_iter().find(|s| s.1 == msk);

    // Step 1 lost: retransmitted after 1 s, as an inactive MSK again.
    let lost = mine(&e.poll(t(0), &mut rng).unwrap()).unwrap();
    assert!(e.poll(t(999), &mut rng).unwrap().is_empty());
    let again = mine(&e.poll(t(1000), &mut rng).unwrap()).unwrap();
    assert_eq!(again.2, Some(Step::Inactive));
    assert!(again.3 > lost.3, "a new counter");
    let r = ue.receive(&again.4).unwrap();
    assert!(r.key.unwrap().is_inactive());
    e.on_ack(&r.ack.unwrap(), t(1100)).unwrap();

    // Step 3 lost: retransmitted (timer restarts at attempt 1 for the step).
    let act = mine(&e.poll(t(1100), &mut rng).unwrap()).unwrap();
    assert_eq!(act.2, Some(Step::Activate));
    let again = mine(&e.poll(t(2100), &mut rng).unwrap()).unwrap();
    assert_eq!(again.2, Some(Step::Activate));
    let st = e.delivery(&ue.id, &msk).unwrap();
    assert!(matches!(st.state, DeliveryState::Sent { attempt: 2, .. }));
    let r = ue.receive(&again.4).unwrap();
    assert!(!r.key.unwrap().is_inactive());
    e.on_ack(&r.ack.unwrap(), t(2200)).unwrap();
    assert_eq!(
        e.delivery(&ue.id, &msk).unwrap().state,
        DeliveryState::Acknowledged
    );
}

#[test]
fn a_re_request_after_charging_goes_straight_to_activation() {
    let mut store = MemoryStore::new();
    let mut e = charging_engine(&mut store);
    let mut rng = TestRng(4);
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let msk = e.key_group(&group(1)).unwrap().current.name;
    let mine = |a: &[Action]| sends(a).into_iter().find(|s| s.1 == msk);
    let s = mine(&e.poll(t(0), &mut rng).unwrap()).unwrap();
    let ack = ue.receive(&s.4).unwrap().ack.unwrap();
    assert_eq!(e.on_ack(&ack, t(1)).unwrap().len(), 2);
    let s = mine(&e.poll(t(1), &mut rng).unwrap()).unwrap();
    let ack = ue.receive(&s.4).unwrap().ack.unwrap();
    e.on_ack(&ack, t(2)).unwrap();

    // The UE lost the MSK and asks for the current one (Key Number 0).
    let req = mbms::MskName {
        key_domain: group(1).key_domain,
        msk_id: mbms::MskId::current(1),
    };
    assert_eq!(e.request_msk(&ue.id, req, t(10)).unwrap(), msk);
    let s = mine(&e.poll(t(10), &mut rng).unwrap()).unwrap();
    assert_eq!(
        s.2,
        Some(Step::Activate),
        "charged once: no inactive step again"
    );
    let ack = ue.receive(&s.4).unwrap().ack.unwrap();
    let actions = e.on_ack(&ack, t(11)).unwrap();
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::ChargingRecord(_))));
}

#[test]
fn a_ue_that_never_acknowledges_step_one_is_never_activated() {
    let mut store = MemoryStore::new();
    let mut e = charging_engine(&mut store);
    let mut rng = TestRng(5);
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let mut now = t(0);
    let mut gave_up = vec![];
    while let Some(d) = e.next_deadline() {
        now = now.max(d);
        for a in e.poll(now, &mut rng).unwrap() {
            match a {
                Action::SendMikey { step, bytes, .. } => {
                    assert_eq!(step, Some(Step::Inactive));
                    // The UE stores it (inactive) but withholds the ack.
                    assert!(ue.receive(&bytes).unwrap().key.unwrap().is_inactive());
                }
                Action::GaveUp { step, attempts, .. } => gave_up.push((step, attempts)),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(gave_up, vec![(Step::Inactive, 3), (Step::Inactive, 3)]);
    assert!(ue.msks.values().all(|k| k.is_inactive()));
}
