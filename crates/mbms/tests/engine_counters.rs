//! Counter reservation across a simulated crash, key group persistence, MTK
//! windows and rotation, solicited pull.

mod engine_support;

use engine_support::*;
use mbms::engine::{
    Action, DeliveryState, Engine, EngineConfig, EngineError, KeyGroupConfig, MemoryStore, Step,
    Timestamp,
};
use mbms::messages::{MskEnvelope, MtkEnvelope, Streaming};
use mbms::{MskId, MskName, MtkId};

fn config(block: u32) -> EngineConfig {
    EngineConfig {
        counter_block: block,
        ..Default::default()
    }
}

fn cfg(window_len: u16) -> KeyGroupConfig {
    KeyGroupConfig {
        window_len,
        ..Default::default()
    }
}

#[test]
fn muk_counters_never_repeat_across_a_simulated_crash() {
    let mut store = MemoryStore::new();
    let mut rng = TestRng(1);
    // The UE (and its MGV-F counter) outlives the BM-SC's crash.
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    let mut seen = vec![];
    let mut mark_at_crash: Option<u32> = None;
    for life in 0..3 {
        let mut e = Engine::new(config(4), &mut store).unwrap();
        e.open_key_group(group(1), cfg(100), &mut rng).unwrap();
        ue.register(&mut e, t(0));
        e.subscribe(&ue.id, &group(1), t(0)).unwrap();
        for round in 0..3u64 {
            let now = t(round * 100_000);
            e.solicited_pull(&ue.id, &group(1)).unwrap();
            let actions = e.poll(now, &mut rng).unwrap();
            assert!(
                actions
                    .iter()
                    .any(|a| matches!(a, Action::SendMikey { step: None, .. })),
                "the pull is built by the poll"
            );
            // Every counter put in a message was persisted before: it is at
            // most the store's high-water mark at the time it is emitted.
            let hw = e.store().counter_mark().unwrap();
            for (_, _, _, counter, bytes) in sends(&actions) {
                if let Some(mark) = mark_at_crash.take() {
                    assert_eq!(counter, mark + 1, "resumes just above the persisted mark");
                }
                assert!(
                    counter <= hw,
                    "life {life}: counter {counter} above the persisted mark {hw}"
                );
                seen.push(counter);
                let r = ue
                    .receive(&bytes)
                    .expect("the UE accepts every message: counters only grow");
                if let Some(ack) = r.ack {
                    e.on_ack(&ack, now).unwrap();
                }
            }
            e.request_msk(&ue.id, e.key_group(&group(1)).unwrap().current.name, now)
                .unwrap();
        }
        // Crash: the engine is dropped with whatever it had reserved.
        mark_at_crash = e.store().counter_mark();
        drop(e);
    }
    assert!(seen.len() > 20);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    // Blocks of 4: the mark is never more than a block ahead.
    assert!(store.counter_mark().unwrap() < seen.last().unwrap() + 4);
}

#[test]
fn key_group_state_survives_a_crash() {
    let mut store = MemoryStore::new();
    let mut rng = TestRng(2);
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    let (info, last) = {
        let mut e = Engine::new(config(32), &mut store).unwrap();
        let info = e.open_key_group(group(1), cfg(100), &mut rng).unwrap();
        ue.register(&mut e, t(0));
        e.subscribe(&ue.id, &group(1), t(0)).unwrap();
        for (_, _, _, _, b) in sends(&e.poll(t(0), &mut rng).unwrap()) {
            ue.receive(&b).unwrap();
        }
        let mut last = None;
        for _ in 0..5 {
            let m = e.next_mtk(&group(1), None, &mut rng).unwrap();
            ue.receive_mtk(&m.bytes).unwrap();
            // Saved before it was returned.
            let saved = e.store().key_group(&group(1)).unwrap();
            assert_eq!(
                (saved.current.last_mtk_id, saved.current.mtk_counter),
                (m.mtk_id, m.counter)
            );
            last = Some((m.mtk_id, m.counter));
        }
        (info, last.unwrap())
    };
    let mut e = Engine::new(config(32), &mut store).unwrap();
    let again = e.open_key_group(group(1), cfg(100), &mut rng).unwrap();
    assert_eq!(again.current.name, info.current.name);
    assert_eq!(again.next.name, info.next.name);
    let m = e.next_mtk(&group(1), None, &mut rng).unwrap();
    assert_eq!(m.mtk_id, MtkId(last.0 .0.next()));
    assert_eq!(m.counter, last.1 + 1);
    // The UE that kept its MSK accepts it: the same key was restored.
    assert_eq!(ue.receive_mtk(&m.bytes).unwrap().0, m.mtk_id);
}

#[test]
fn mtk_window_exhaustion_and_rotation() {
    let mut store = MemoryStore::new();
    let mut rng = TestRng(3);
    let mut e = Engine::new(config(32), &mut store).unwrap();
    let info = e.open_key_group(group(1), cfg(3), &mut rng).unwrap();
    assert_eq!(info.current.name.msk_id, MskId::new(1, 1));
    assert_eq!(
        (info.current.seq_s, info.current.seq_u),
        (MtkId::new(0), MtkId::new(3))
    );
    assert_eq!(
        (info.next.seq_s, info.next.seq_u),
        (MtkId::new(3), MtkId::new(6))
    );
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    for (_, _, _, _, b) in sends(&e.poll(t(0), &mut rng).unwrap()) {
        let r = ue.receive(&b).unwrap();
        e.on_ack(&r.ack.unwrap(), t(0)).unwrap();
    }
    let mut ids = vec![];
    for _ in 0..3 {
        let m = e.next_mtk(&group(1), None, &mut rng).unwrap();
        assert_eq!(ue.receive_mtk(&m.bytes).unwrap().0, m.mtk_id);
        ids.push(m.mtk_id.value());
    }
    assert_eq!(ids, [1, 2, 3]);
    let err = e.next_mtk(&group(1), None, &mut rng).unwrap_err();
    assert!(
        matches!(err, EngineError::WindowExhausted { msk, seq_u } if msk == info.current.name && seq_u == MtkId::new(3))
    );
    assert_eq!(e.key_group(&group(1)).unwrap().current.remaining(), 0);

    // Rotate: MSK 2 is current (the UE has it already), MSK 3 is new and is
    // pushed; deliveries of MSK 1 end.
    let rotated = e.rotate(&group(1), t(10), &mut rng).unwrap();
    assert_eq!(rotated.current, info.next);
    assert_eq!(rotated.next.name.msk_id, MskId::new(1, 3));
    assert_eq!(
        (rotated.next.seq_s, rotated.next.seq_u),
        (MtkId::new(6), MtkId::new(9))
    );
    assert_eq!(e.delivery(&ue.id, &info.current.name), None);
    assert_eq!(
        e.delivery(&ue.id, &info.next.name).unwrap().state,
        DeliveryState::Acknowledged
    );
    let sent = sends(&e.poll(t(10), &mut rng).unwrap());
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].1, sent[0].2),
        (rotated.next.name, Some(Step::Deliver))
    );
    ue.receive(&sent[0].4).unwrap();
    // MTK IDs continue in the new window, under MSK 2.
    let m = e.next_mtk(&group(1), None, &mut rng).unwrap();
    assert_eq!(
        (m.msk, m.mtk_id, m.counter),
        (info.next.name, MtkId::new(4), 1)
    );
    assert_eq!(ue.receive_mtk(&m.bytes).unwrap().0, MtkId::new(4));
    // Requests: Key Number 0 -> current; a retired MSK is unknown.
    let req = |n| MskName {
        key_domain: group(1).key_domain,
        msk_id: MskId::new(1, n),
    };
    assert_eq!(
        e.request_msk(&ue.id, req(0), t(20)).unwrap(),
        info.next.name
    );
    assert!(matches!(
        e.request_msk(&ue.id, req(1), t(20)),
        Err(EngineError::UnknownMsk(_))
    ));
    assert_eq!(
        e.request_msk(&ue.id, req(3), t(20)).unwrap(),
        rotated.next.name
    );
}

#[test]
fn streaming_mtk_carries_the_srtp_parameters() {
    let mut store = MemoryStore::new();
    let mut rng = TestRng(4);
    let mut e = Engine::new(config(32), &mut store).unwrap();
    e.open_key_group(group(2), cfg(10), &mut rng).unwrap();
    let streaming = Streaming {
        streams: vec![mikey::SrtpIdEntry {
            policy_no: 0,
            ssrc: 0x1234_5678,
            roc: 0,
        }],
        policy: Default::default(),
    };
    let m = e
        .next_mtk(&group(2), Some(streaming.clone()), &mut rng)
        .unwrap();
    let env = MtkEnvelope::parse(&m.bytes).unwrap();
    assert_eq!(env.streaming, Some(streaming));
    assert_eq!(
        (env.mtk_id, env.counter, env.rand),
        (m.mtk_id, m.counter, m.rand)
    );
    assert_eq!(
        m.srtp_master(),
        (m.mtk.key.as_bytes(), m.mtk.salt.as_bytes())
    );
}

#[test]
fn solicited_pull_uses_the_last_muk_and_is_not_tracked() {
    let mut store = MemoryStore::new();
    let mut rng = TestRng(5);
    let mut e = Engine::new(config(32), &mut store).unwrap();
    e.open_key_group(group(1), cfg(10), &mut rng).unwrap();
    let old = SimUe::new("ue1", "old@bsf.home1.net", 0x11);
    old.register(&mut e, t(0));
    // The UE bootstrapped again: the last MUK the BM-SC knows is the new one.
    let mut new = SimUe::new("ue1", "new@bsf.home1.net", 0x22);
    new.register(&mut e, t(1));
    e.solicited_pull(&new.id, &group(1)).unwrap();
    assert_eq!(e.pulls_queued(), 1);
    assert_eq!(
        e.next_deadline(),
        Some(Timestamp(0)),
        "a queued pull is due now"
    );
    let actions = e.poll(t(2), &mut rng).unwrap();
    let [Action::SendMikey {
        ue,
        msk,
        step,
        bytes,
        ..
    }] = &actions[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!((ue, *step), (&new.id, None));
    assert_eq!(msk.msk_id, MskId::current(1));
    let env = MskEnvelope::parse(bytes).unwrap();
    assert!(env.is_solicited_pull() && !env.v);
    assert_eq!(env.muk_id, new.muk_id);
    let r = new.receive(bytes).unwrap();
    assert!(r.key.is_none() && r.ack.is_none());
    assert_eq!(e.next_deadline(), None, "not tracked");
    assert!(matches!(
        e.solicited_pull(&new.id, &group(9)),
        Err(EngineError::UnknownKeyGroup(_))
    ));
}

/// A pull asked for while a delivery to the same UE is due leaves after
/// it, with the next counter: one stream, counter order (`PROFILE.md`
/// section 7: the MGV-F refuses a counter not greater than the last one).
#[test]
fn a_solicited_pull_leaves_after_the_deliveries_due_with_a_greater_counter() {
    let mut store = MemoryStore::new();
    let mut rng = TestRng(7);
    let mut e = Engine::new(config(32), &mut store).unwrap();
    e.open_key_group(group(1), cfg(10), &mut rng).unwrap();
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    e.solicited_pull(&ue.id, &group(1)).unwrap();
    let actions = e.poll(t(0), &mut rng).unwrap();
    let sent = sends(&actions);
    assert!(sent.len() >= 2, "{actions:?}");
    let counters: Vec<u32> = sent.iter().map(|s| s.3).collect();
    assert!(counters.windows(2).all(|w| w[0] < w[1]), "{counters:?}");
    let last = MskEnvelope::parse(&sent.last().unwrap().4).unwrap();
    assert!(last.is_solicited_pull(), "the pull comes last");
    // The UE takes every message in the order they were built.
    for s in &sent {
        ue.receive(&s.4).unwrap();
    }
}

#[test]
fn a_new_muk_restarts_deliveries_in_flight() {
    let mut store = MemoryStore::new();
    let mut rng = TestRng(6);
    let mut e = Engine::new(config(32), &mut store).unwrap();
    e.open_key_group(group(1), cfg(10), &mut rng).unwrap();
    let old = SimUe::new("ue1", "old@bsf.home1.net", 0x11);
    old.register(&mut e, t(0));
    e.subscribe(&old.id, &group(1), t(0)).unwrap();
    let first = sends(&e.poll(t(0), &mut rng).unwrap());
    assert!(first
        .iter()
        .all(|s| MskEnvelope::parse(&s.4).unwrap().muk_id == old.muk_id));
    let mut new = SimUe::new("ue1", "new@bsf.home1.net", 0x22);
    new.register(&mut e, t(5));
    assert_eq!(e.next_deadline(), Some(t(5)));
    let again = sends(&e.poll(t(5), &mut rng).unwrap());
    assert_eq!(again.len(), 2);
    for s in again {
        let r = new.receive(&s.4).expect("built with the new MUK");
        e.on_ack(&r.ack.unwrap(), t(6)).unwrap();
    }
    assert_eq!(e.next_deadline(), None);
}
