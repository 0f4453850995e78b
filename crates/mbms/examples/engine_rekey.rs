//! The key engine alone, one rotation of N UEs on one thread: the BM-SC's
//! share of a rekey (build every MSK message, verify every acknowledgement),
//! without sockets or a database (`MemoryStore`). The UEs' share (open the
//! message, build the acknowledgement) is timed apart.
//!
//! `cargo run --release -p mbms --example engine_rekey -- 1000000`

use std::time::{Duration, Instant};

use mbms::engine::{Action, Engine, EngineConfig, KeyGroupConfig, MemoryStore, Timestamp, UeId};
use mbms::messages::{MskAck, MskEnvelope};
use mbms::{KeyDomainId, KeyGroupName, Muk, MukId};
use rand::rngs::{OsRng, StdRng};
use rand::SeedableRng;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("N"))
        .unwrap_or(100_000);
    let group = KeyGroupName {
        key_domain: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
        key_group: 1,
    };
    let mut e = Engine::new(EngineConfig::default(), MemoryStore::new()).unwrap();
    e.open_key_group(group, KeyGroupConfig::default(), &mut OsRng)
        .unwrap();
    let muks: Vec<(MukId, Muk)> = (0..n)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            (
                MukId::new("bmsc.operator.com", format!("{i:08}@bsf.operator.com")),
                Muk::from_bytes(k),
            )
        })
        .collect();
    let t0 = Instant::now();
    for (i, (id, muk)) in muks.iter().enumerate() {
        let ue = UeId(format!("ue{i:08}@ims.operator.com"));
        e.register_ue(ue.clone(), id.clone(), muk.clone(), Timestamp(0));
        e.subscribe(&ue, &group, Timestamp(0)).unwrap();
    }
    let setup = t0.elapsed();
    let rss0 = rss_kib();
    // The first delivery (current and next MSK), acknowledged.
    // As the BM-SC does: a CSPRNG seeded once (not a system call per message).
    let mut rng = StdRng::from_rng(OsRng).unwrap();
    let mut round = |e: &mut Engine<MemoryStore>, now: u64| -> (usize, Duration, Duration) {
        let t = Instant::now();
        let actions = e.poll(Timestamp(now), &mut rng).unwrap();
        let mut engine_time = t.elapsed();
        let t = Instant::now();
        let mut acks = Vec::with_capacity(actions.len());
        for a in &actions {
            if let Action::SendMikey { bytes, .. } = a {
                let env = MskEnvelope::parse(bytes).unwrap();
                let i: usize = env.muk_id.idr[..8].parse().unwrap();
                let opened = env.open(&muks[i].1).unwrap();
                acks.push(
                    MskAck::for_message(&env)
                        .build(&opened.keys.auth_key, &opened.initiator)
                        .unwrap(),
                );
            }
        }
        let ue_time = t.elapsed();
        let t = Instant::now();
        for a in &acks {
            e.on_ack(a, Timestamp(now)).unwrap();
        }
        engine_time += t.elapsed();
        (acks.len(), engine_time, ue_time)
    };
    let (first, _, _) = round(&mut e, 0);
    let t = Instant::now();
    e.rotate(&group, Timestamp(1000), &mut OsRng).unwrap();
    let rot = t.elapsed();
    let (sent, mut engine_time, ue_time) = round(&mut e, 1000);
    engine_time += rot;
    let rss1 = rss_kib();
    assert_eq!(e.next_deadline(), None, "every delivery acknowledged");
    println!(
        "UEs {n}: setup {:.2} s; first delivery {first} messages; rotation: {sent} messages, \
         engine {:.2} s ({:.2} us per UE), simulated UEs {:.2} s; engine RSS {} KiB ({:.0} B per UE after setup)",
        setup.as_secs_f64(),
        engine_time.as_secs_f64(),
        engine_time.as_secs_f64() * 1e6 / f64::from(n),
        ue_time.as_secs_f64(),
        rss1,
        (rss0 as f64 * 1024.0) / f64::from(n),
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
