//! Random interleavings of poll, acknowledgements (delayed, lost, replayed),
//! subscriptions, requests, solicited pulls, new MUKs, rotations, MTKs and
//! crashes never repeat a (MUK, counter) pair or an (MSK, counter) pair,
//! never use a counter that was not persisted first, never issue an MTK
//! ID outside its MSK's window, and never charge a subscriber twice for one
//! MSK (the charges are restored after a crash as the BM-SC does, from its
//! charging records).

mod engine_support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use engine_support::*;
use mbms::engine::{
    Action, Engine, EngineConfig, EngineError, KeyGroupConfig, MemoryStore, RetransmitPolicy,
};
use mbms::messages::MskEnvelope;
use mbms::{KeyGroupName, MskName, MtkId, MukId};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Poll { advance_ms: u16, loss: u8 },
    Ack { pick: u8, keep: bool },
    Subscribe { ue: u8, group: u8 },
    Request { ue: u8, group: u8 },
    Pull { ue: u8, group: u8 },
    NewMuk { ue: u8 },
    Rotate { group: u8 },
    NextMtk { group: u8 },
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u16>(), any::<u8>()).prop_map(|(a, l)| Op::Poll { advance_ms: a % 8000, loss: l }),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(pick, keep)| Op::Ack { pick, keep }),
        2 => (0..2u8, 0..2u8).prop_map(|(ue, group)| Op::Subscribe { ue, group }),
        1 => (0..2u8, 0..2u8).prop_map(|(ue, group)| Op::Request { ue, group }),
        1 => (0..2u8, 0..2u8).prop_map(|(ue, group)| Op::Pull { ue, group }),
        1 => (0..2u8).prop_map(|ue| Op::NewMuk { ue }),
        1 => (0..2u8).prop_map(|group| Op::Rotate { group }),
        3 => (0..2u8).prop_map(|group| Op::NextMtk { group }),
        1 => Just(Op::Crash),
    ]
}

fn groups() -> [(KeyGroupName, KeyGroupConfig); 2] {
    [
        (
            group(1),
            KeyGroupConfig {
                window_len: 3,
                ..Default::default()
            },
        ),
        (
            group(2),
            KeyGroupConfig {
                window_len: 2,
                charging: true,
                ..Default::default()
            },
        ),
    ]
}

fn start<'a>(store: &'a mut MemoryStore, rng: &mut TestRng) -> Engine<&'a mut MemoryStore> {
    let mut e = Engine::new(
        EngineConfig {
            counter_block: 3,
            retransmit: RetransmitPolicy {
                initial: Duration::from_millis(1000),
                max_attempts: 3,
                ..Default::default()
            },
        },
        store,
    )
    .unwrap();
    for (g, c) in groups() {
        e.open_key_group(g, c, rng).unwrap();
    }
    e
}

#[derive(Default)]
struct Seen {
    muk_counters: HashSet<(MukId, u32)>,
    msk_counters: HashSet<(MskName, u32)>,
    last_mtk_id: BTreeMap<MskName, MtkId>,
}

impl Seen {
    fn sent(&mut self, e: &Engine<&mut MemoryStore>, actions: &[Action]) {
        for (_, _, _, counter, bytes) in sends(actions) {
            let env = MskEnvelope::parse(&bytes).unwrap();
            assert_eq!(env.counter, counter);
            let hw = e.store().counter_mark().unwrap_or(0);
            assert!(
                counter <= hw,
                "counter {counter} used before being persisted (mark {hw})"
            );
            assert!(
                self.muk_counters.insert((env.muk_id.clone(), counter)),
                "(MUK, counter) repeated: {} {counter}",
                env.muk_id
            );
        }
    }
}

fn run(ops: Vec<Op>, seed: u64) {
    let mut rng = TestRng(seed);
    let mut store = MemoryStore::new();
    let mut e = Some(start(&mut store, &mut rng));
    let mut ues = [
        SimUe::new("ue0", "u0-0@bsf.home1.net", 0x10),
        SimUe::new("ue1", "u1-0@bsf.home1.net", 0x20),
    ];
    let mut subscribed: HashSet<(usize, usize)> = HashSet::new();
    let mut muk_gen = [0u8; 2];
    let mut acks: Vec<Vec<u8>> = vec![];
    let mut seen = Seen::default();
    let mut charged: HashSet<(mbms::engine::UeId, MskName)> = HashSet::new();
    let mut now = 0u64;
    for ue in &ues {
        ue.register(e.as_mut().unwrap(), t(now));
    }
    for op in ops {
        let eng = e.as_mut().unwrap();
        match op {
            Op::Poll { advance_ms, loss } => {
                now += u64::from(advance_ms);
                let actions = eng.poll(t(now), &mut rng).unwrap();
                seen.sent(eng, &actions);
                for (i, (ue, _, _, _, bytes)) in sends(&actions).into_iter().enumerate() {
                    if loss >> (i % 8) & 1 == 1 {
                        continue; // lost on the way to the UE
                    }
                    let sim = ues.iter_mut().find(|u| u.id == ue).unwrap();
                    if let Some(r) = sim.receive(&bytes) {
                        acks.extend(r.ack);
                    }
                }
            }
            Op::Ack { pick, keep } => {
                if !acks.is_empty() {
                    let i = usize::from(pick) % acks.len();
                    let ack = if keep {
                        acks[i].clone()
                    } else {
                        acks.swap_remove(i)
                    };
                    // Refusals (stale, unmatched after a rotation) are fine;
                    // they must just not panic.
                    if let Ok(actions) = eng.on_ack(&ack, t(now)) {
                        for a in actions {
                            if let Action::ChargingRecord(r) = a {
                                assert!(
                                    charged.insert((r.ue.clone(), r.msk)),
                                    "{} charged twice for {}",
                                    r.ue,
                                    r.msk
                                );
                            }
                        }
                    }
                }
            }
            Op::Subscribe { ue, group } => {
                let (g, _) = groups()[usize::from(group)];
                eng.subscribe(&ues[usize::from(ue)].id, &g, t(now)).unwrap();
                subscribed.insert((usize::from(ue), usize::from(group)));
            }
            Op::Request { ue, group } => {
                let (g, _) = groups()[usize::from(group)];
                let req = MskName {
                    key_domain: g.key_domain,
                    msk_id: mbms::MskId::current(g.key_group),
                };
                let r = eng.request_msk(&ues[usize::from(ue)].id, req, t(now));
                match r {
                    Ok(_) => assert!(subscribed.contains(&(usize::from(ue), usize::from(group)))),
                    Err(EngineError::NotSubscribed { .. }) => {}
                    Err(other) => panic!("{other}"),
                }
            }
            Op::Pull { ue, group } => {
                // Queued; the next poll builds it with the deliveries, in
                // counter order (every message goes through `sent` there).
                let (g, _) = groups()[usize::from(group)];
                eng.solicited_pull(&ues[usize::from(ue)].id, &g).unwrap();
            }
            Op::NewMuk { ue } => {
                let u = usize::from(ue);
                muk_gen[u] += 1;
                let fresh = SimUe::new(
                    &format!("ue{u}"),
                    &format!("u{u}-{}@bsf.home1.net", muk_gen[u]),
                    0x10 * (u as u8 + 1) + muk_gen[u],
                );
                ues[u].muk_id = fresh.muk_id;
                ues[u].muk_bytes = fresh.muk_bytes;
                ues[u].last_counter = 0;
                ues[u].register(eng, t(now));
            }
            Op::Rotate { group } => {
                let (g, _) = groups()[usize::from(group)];
                eng.rotate(&g, t(now), &mut rng).unwrap();
            }
            Op::NextMtk { group } => {
                let (g, _) = groups()[usize::from(group)];
                let before = eng.key_group(&g).unwrap().current;
                match eng.next_mtk(&g, None, &mut rng) {
                    Ok(m) => {
                        assert_eq!(m.msk, before.name);
                        assert!(
                            before.window_contains(m.mtk_id),
                            "{} outside ({}, {}]",
                            m.mtk_id,
                            before.seq_s,
                            before.seq_u
                        );
                        assert!(
                            seen.msk_counters.insert((m.msk, m.counter)),
                            "(MSK, counter) repeated"
                        );
                        if let Some(last) = seen.last_mtk_id.insert(m.msk, m.mtk_id) {
                            assert!(m.mtk_id.0.gt(last.0), "MTK ID not increasing");
                        }
                    }
                    Err(EngineError::WindowExhausted { msk, .. }) => {
                        assert_eq!(msk, before.name);
                        assert_eq!(before.remaining(), 0);
                    }
                    Err(other) => panic!("{other}"),
                }
            }
            Op::Crash => {
                let store = e.take().unwrap().into_store();
                let mut fresh = Engine::new(
                    EngineConfig {
                        counter_block: 3,
                        retransmit: RetransmitPolicy {
                            initial: Duration::from_millis(1000),
                            max_attempts: 3,
                            ..Default::default()
                        },
                    },
                    store,
                )
                .unwrap();
                for (g, c) in groups() {
                    fresh.open_key_group(g, c, &mut rng).unwrap();
                }
                for ue in &ues {
                    ue.register(&mut fresh, t(now));
                }
                for (u, g) in &subscribed {
                    fresh
                        .subscribe(&ues[*u].id, &groups()[*g].0, t(now))
                        .unwrap();
                }
                for (ue, msk) in &charged {
                    fresh.mark_charged(ue, msk, t(now));
                }
                e = Some(fresh);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_the_invariants(ops in proptest::collection::vec(op(), 1..80), seed in any::<u64>()) {
        run(ops, seed);
    }
}
