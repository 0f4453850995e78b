//! Retransmission timing, acknowledgements and their refusal (seed 004 6.4.2,
//! seed 000 6.3.2.3.1).

mod engine_support;

use std::time::Duration;

use engine_support::*;
use mbms::engine::{
    AckError, Action, DeliveryState, Engine, EngineConfig, EngineError, KeyGroupConfig,
    MemoryStore, RetransmitPolicy, Step,
};
use mbms::messages::MskAck;

fn policy() -> RetransmitPolicy {
    RetransmitPolicy {
        initial: Duration::from_millis(1000),
        factor: 2,
        max_interval: Duration::from_millis(5000),
        max_attempts: 5,
        jitter_permille: 100,
    }
}

fn engine(store: &mut MemoryStore, cfg: KeyGroupConfig) -> Engine<&mut MemoryStore> {
    let mut e = Engine::new(
        EngineConfig {
            counter_block: 8,
            retransmit: policy(),
        },
        store,
    )
    .unwrap();
    e.open_key_group(group(1), cfg, &mut TestRng(1)).unwrap();
    e
}

#[test]
fn deadlines_follow_the_backoff_within_jitter_then_give_up() {
    let mut store = MemoryStore::new();
    let mut e = engine(&mut store, KeyGroupConfig::default());
    let mut rng = TestRng(7);
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(1000)).unwrap();
    assert_eq!(
        e.next_deadline(),
        Some(t(1000)),
        "pending deliveries are due at once"
    );
    let current = e.key_group(&group(1)).unwrap().current.name;

    let mut now = t(1000);
    let mut counters = vec![];
    for attempt in 1..=5u32 {
        let actions = e.poll(now, &mut rng).unwrap();
        let sent = sends(&actions);
        assert_eq!(sent.len(), 2, "attempt {attempt}: current and next MSK");
        for (_, msk, step, counter, bytes) in &sent {
            assert_eq!(*step, Some(Step::Deliver));
            counters.push(*counter);
            // Each retransmission is a new message the UE accepts (its
            // counter is fresh), even though the UE got the earlier ones:
            // this is what recovers from a lost acknowledgement.
            let r = ue.receive(bytes).expect("a rebuilt message is accepted");
            assert!(r.v && r.ack.is_some());
            assert_eq!(r.msk, *msk);
        }
        let st = e.delivery(&ue.id, &current).unwrap();
        let DeliveryState::Sent {
            attempt: a,
            next_deadline,
        } = st.state
        else {
            panic!("{st:?}")
        };
        assert_eq!(a, attempt);
        let (lo, hi) = policy().interval_bounds(attempt);
        let waited = next_deadline.saturating_since(now);
        assert!(
            lo <= waited && waited <= hi,
            "attempt {attempt}: {waited:?} not in [{lo:?}, {hi:?}]"
        );
        let base = [1000, 2000, 4000, 5000, 5000][attempt as usize - 1];
        assert_eq!(policy().base_interval(attempt), Duration::from_millis(base));
        // Nothing happens before the earliest deadline; at the later of the
        // two deadlines both deliveries are due.
        let earliest = e.next_deadline().unwrap();
        assert!(earliest > now);
        assert!(e
            .poll(t(earliest.as_millis() - 1), &mut rng)
            .unwrap()
            .is_empty());
        let next = e
            .delivery(&ue.id, &sent.iter().find(|s| s.1 != current).unwrap().1)
            .unwrap();
        let DeliveryState::Sent {
            next_deadline: other,
            ..
        } = next.state
        else {
            panic!("{next:?}")
        };
        now = next_deadline.max(other);
    }
    let actions = e.poll(now, &mut rng).unwrap();
    let gave_up: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::GaveUp {
                msk,
                attempts,
                step,
                ..
            } => Some((*msk, *attempts, *step)),
            _ => None,
        })
        .collect();
    assert_eq!(gave_up.len(), 2);
    assert!(gave_up
        .iter()
        .all(|(_, n, s)| *n == 5 && *s == Step::Deliver));
    assert!(sends(&actions).is_empty());
    assert_eq!(
        e.delivery(&ue.id, &current).unwrap().state,
        DeliveryState::GivenUp
    );
    assert_eq!(e.next_deadline(), None);
    // Counters strictly increase across every transmission.
    assert!(counters.windows(2).all(|w| w[0] < w[1]), "{counters:?}");
}

#[test]
fn an_ack_stops_retransmission_and_acks_of_any_attempt_count() {
    let mut store = MemoryStore::new();
    let mut e = engine(&mut store, KeyGroupConfig::default());
    let mut rng = TestRng(8);
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let info = e.key_group(&group(1)).unwrap();
    let first = sends(&e.poll(t(0), &mut rng).unwrap());
    // The acknowledgements of attempt 1 are lost; attempt 2 goes out.
    let acks1: Vec<_> = first
        .iter()
        .map(|s| ue.receive(&s.4).unwrap().ack.unwrap())
        .collect();
    let d = e.next_deadline().unwrap();
    let later = t(d.as_millis() + 200);
    let second = sends(&e.poll(later, &mut rng).unwrap());
    assert_eq!(second.len(), 2);
    // A late acknowledgement of attempt 1 for the current MSK is accepted.
    let idx = first.iter().position(|s| s.1 == info.current.name).unwrap();
    let actions = e.on_ack(&acks1[idx], later).unwrap();
    assert_eq!(
        actions,
        vec![Action::Acknowledged {
            ue: ue.id.clone(),
            handle: e.ue_handle(&ue.id.0).unwrap(),
            msk: info.current.name,
            step: Step::Deliver,
            charged: false,
        }]
    );
    assert_eq!(
        e.delivery(&ue.id, &info.current.name).unwrap().state,
        DeliveryState::Acknowledged
    );
    // The next MSK is acknowledged through attempt 2.
    let s2 = second.iter().find(|s| s.1 == info.next.name).unwrap();
    let ack = ue.receive(&s2.4).unwrap().ack.unwrap();
    e.on_ack(&ack, later).unwrap();
    assert_eq!(e.next_deadline(), None);
    assert!(e.poll(t(10_000_000), &mut rng).unwrap().is_empty());
    // The same acknowledgement again: stale (a replay), nothing changes.
    assert!(matches!(e.on_ack(&ack, later), Err(AckError::Stale { .. })));
    assert!(matches!(
        e.on_ack(&acks1[1 - idx], later),
        Err(AckError::Stale { .. })
    ));
}

#[test]
fn forged_unmatched_wrong_and_replayed_acks_change_nothing() {
    let mut store = MemoryStore::new();
    let mut e = engine(&mut store, KeyGroupConfig::default());
    let mut rng = TestRng(9);
    let ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    let mut other = SimUe::new("ue2", "b2@bsf.home1.net", 0x22);
    ue.register(&mut e, t(0));
    other.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    e.subscribe(&other.id, &group(1), t(0)).unwrap();
    let info = e.key_group(&group(1)).unwrap();
    let sent = sends(&e.poll(t(0), &mut rng).unwrap());
    let msg = sent
        .iter()
        .find(|s| s.0 == ue.id && s.1 == info.current.name)
        .unwrap();
    let env = mbms::messages::MskEnvelope::parse(&msg.4).unwrap();
    let opened = env.open(&ue.muk()).unwrap();
    let good = MskAck::for_message(&env)
        .build(&opened.keys.auth_key, &opened.initiator)
        .unwrap();

    let snapshot = |e: &Engine<&mut MemoryStore>| {
        let mut v = vec![];
        for u in [&ue.id, &other.id] {
            for m in [info.current.name, info.next.name] {
                v.push(e.delivery(u, &m));
            }
        }
        (v, e.next_deadline())
    };
    let before = snapshot(&e);

    // Forged: MAC flipped.
    let mut forged = good.clone();
    let n = forged.len();
    forged[n - 1] ^= 1;
    assert!(matches!(e.on_ack(&forged, t(5)), Err(AckError::BadMac)));
    // Forged: MACed with a wrong key.
    let wrong_key = MskAck::for_message(&env)
        .build(&[0u8; 20], &opened.initiator)
        .unwrap();
    assert!(matches!(e.on_ack(&wrong_key, t(5)), Err(AckError::BadMac)));
    // Unmatched: a counter never sent.
    let mut ack = MskAck::for_message(&env);
    ack.counter = 999;
    let unmatched = ack.build(&opened.keys.auth_key, &opened.initiator).unwrap();
    assert!(matches!(
        e.on_ack(&unmatched, t(5)),
        Err(AckError::Unmatched { counter: 999, .. })
    ));
    // Authentic but naming the other MSK.
    let mut ack = MskAck::for_message(&env);
    ack.msk = info.next.name;
    let wrong_msk = ack.build(&opened.keys.auth_key, &opened.initiator).unwrap();
    assert!(matches!(
        e.on_ack(&wrong_msk, t(5)),
        Err(AckError::WrongMsk { .. })
    ));
    // Garbage.
    assert!(matches!(
        e.on_ack(&msg.4, t(5)),
        Err(AckError::Malformed(_))
    ));
    assert!(matches!(
        e.on_ack(&[1, 2, 3], t(5)),
        Err(AckError::Malformed(_))
    ));
    // Another UE's B-TID with this UE's counter: the MAC cannot match.
    let mut ack = MskAck::for_message(&env);
    ack.btid = other.muk_id.idr.clone();
    let cross = ack.build(&opened.keys.auth_key, &opened.initiator).unwrap();
    assert!(e.on_ack(&cross, t(5)).is_err());
    assert_eq!(
        snapshot(&e),
        before,
        "refused acknowledgements change nothing"
    );

    // The genuine one works once; its replay is stale and changes nothing.
    e.on_ack(&good, t(5)).unwrap();
    let after = snapshot(&e);
    assert!(matches!(e.on_ack(&good, t(6)), Err(AckError::Stale { .. })));
    assert_eq!(snapshot(&e), after);
    let _ = other.receive(&sent.iter().find(|s| s.0 == other.id).unwrap().4);
}

#[test]
fn without_v_a_push_is_sent_once() {
    let mut store = MemoryStore::new();
    let cfg = KeyGroupConfig {
        ack_requested: false,
        ..Default::default()
    };
    let mut e = engine(&mut store, cfg);
    let mut rng = TestRng(10);
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let sent = sends(&e.poll(t(0), &mut rng).unwrap());
    assert_eq!(sent.len(), 2);
    for s in &sent {
        let r = ue.receive(&s.4).unwrap();
        assert!(!r.v && r.ack.is_none());
        assert_eq!(
            e.delivery(&ue.id, &s.1).unwrap().state,
            DeliveryState::Unconfirmed
        );
    }
    assert_eq!(e.next_deadline(), None);
}

#[test]
fn a_store_failure_in_poll_sends_nothing_and_changes_nothing() {
    let mut store = MemoryStore::new();
    drop(engine(&mut store, KeyGroupConfig::default()));
    // The key group exists; from now on every write fails.
    store.set_fail_writes(true);
    let mut e = engine(&mut store, KeyGroupConfig::default());
    let mut rng = TestRng(11);
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let current = e.key_group(&group(1)).unwrap().current.name;
    e.solicited_pull(&ue.id, &group(1)).unwrap();
    assert!(matches!(e.poll(t(0), &mut rng), Err(EngineError::Store(_))));
    assert_eq!(e.pulls_queued(), 1, "the pull waits for the store");
    assert!(matches!(
        e.next_mtk(&group(1), None, &mut rng),
        Err(EngineError::Store(_))
    ));
    assert!(matches!(
        e.rotate(&group(1), t(0), &mut rng),
        Err(EngineError::Store(_))
    ));
    assert_eq!(e.key_group(&group(1)).unwrap().current.name, current);
    assert_eq!(e.key_group(&group(1)).unwrap().current.mtk_counter, 0);
    assert_eq!(
        e.delivery(&ue.id, &current).unwrap().state,
        DeliveryState::Pending
    );
    assert_eq!(e.next_deadline(), Some(t(0)));
    let store = e.into_store();
    assert_eq!(store.counter_mark(), None, "nothing was reserved");
    store.set_fail_writes(false);
    let mut e = engine(store, KeyGroupConfig::default());
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let sent = sends(&e.poll(t(0), &mut rng).unwrap());
    assert_eq!(sent.len(), 2);
    assert!(ue.receive(&sent[0].4).is_some());
}

/// `poll_at_most` sends a rotation in chunks: each call at most `limit`
/// messages, earliest due first, the rest stays due; every UE gets its
/// message once, with one counter mark write for all of them.
#[test]
fn a_rotation_goes_out_in_chunks_with_one_counter_write() {
    let mut store = MemoryStore::new();
    let mut e = engine(&mut store, KeyGroupConfig::default());
    let mut rng = TestRng(21);
    let mut ues: Vec<SimUe> = (0..10)
        .map(|i| {
            SimUe::new(
                &format!("ue{i}"),
                &format!("b{i}@bsf.home1.net"),
                i as u8 + 1,
            )
        })
        .collect();
    for ue in &mut ues {
        ue.register(&mut e, t(0));
        e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    }
    // First delivery: acknowledge everything.
    for (ue_id, _, _, _, bytes) in sends(&e.poll(t(0), &mut rng).unwrap()) {
        let ue = ues.iter_mut().find(|u| u.id == ue_id).unwrap();
        let ack = ue.receive(&bytes).unwrap().ack.unwrap();
        e.on_ack(&ack, t(0)).unwrap();
    }
    assert_eq!(e.next_deadline(), None);
    e.rotate(&group(1), t(10), &mut rng).unwrap();
    let writes = e.store().writes();
    let mut got = Vec::new();
    loop {
        let chunk = sends(&e.poll_at_most(t(10), 3, &mut rng).unwrap());
        assert!(chunk.len() <= 3);
        if chunk.is_empty() {
            break;
        }
        got.extend(chunk.into_iter().map(|s| s.0));
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 10, "each UE once");
    assert!(
        e.store().writes() <= writes + 2,
        "counter marks: {} writes for 10 UEs",
        e.store().writes() - writes
    );
    assert!(
        e.next_deadline().unwrap() > t(10),
        "only retransmissions left"
    );
}
