//! UE handles and the engine's per-UE indexes: what the BM-SC core keys its
//! own records by, and the B-TID index acknowledgements are matched with
//! (current and previous MUK, a B-TID taken over by another UE).

mod engine_support;

use engine_support::*;
use mbms::engine::{Action, DeliveryState, Engine, EngineConfig, KeyGroupConfig, MemoryStore};
use mbms::MukId;

fn engine(store: &mut MemoryStore) -> Engine<&mut MemoryStore> {
    let mut e = Engine::new(EngineConfig::default(), store).unwrap();
    for g in [1, 2] {
        e.open_key_group(group(g), KeyGroupConfig::default(), &mut TestRng(1))
            .unwrap();
    }
    e
}

/// Poll once and let `ue` acknowledge every message to it; returns how
/// many acknowledgements were accepted.
fn exchange(e: &mut Engine<&mut MemoryStore>, ue: &mut SimUe, now: u64) -> usize {
    let actions = e.poll(t(now), &mut TestRng(3)).unwrap();
    let mut accepted = 0;
    for (id, _, _, _, bytes) in sends(&actions) {
        if id != ue.id {
            continue;
        }
        if let Some(ack) = ue.receive(&bytes).and_then(|r| r.ack) {
            accepted += usize::from(e.on_ack(&ack, t(now + 1)).is_ok());
        }
    }
    accepted
}

#[test]
fn handles_are_dense_and_name_the_ue_its_btid_muk_and_key_groups() {
    let mut store = MemoryStore::new();
    let mut e = engine(&mut store);
    let a = SimUe::new("ue-a", "a1@bsf.home1.net", 0x11);
    let b = SimUe::new("ue-b", "b1@bsf.home1.net", 0x22);
    let ha = e.register_ue(a.id.clone(), a.muk_id.clone(), a.muk(), t(0));
    let hb = e.register_ue(b.id.clone(), b.muk_id.clone(), b.muk(), t(0));
    assert_eq!((ha.index(), hb.index()), (0, 1));
    assert_eq!(e.ue_handle("ue-b"), Some(hb));
    assert_eq!(e.ue_handle("ue-c"), None);
    assert_eq!(e.ue_handle_at(1), Some(hb));
    assert_eq!(e.ue_handle_at(2), None);
    assert_eq!(e.ue_id(ha), Some("ue-a"));
    assert_eq!(e.ue_btid(hb), Some("b1@bsf.home1.net"));
    let (idi, idr) = (a.muk_id.idi.as_str(), a.muk_id.idr.as_str());
    assert!(e.has_muk(ha, idi, idr, &a.muk()));
    assert!(!e.has_muk(ha, idi, idr, &b.muk()), "another key");
    assert!(
        !e.has_muk(ha, idi, "b1@bsf.home1.net", &a.muk()),
        "another B-TID"
    );
    assert!(!e.has_muk(ha, "other.fqdn", idr, &a.muk()), "another IDi");

    e.subscribe(&a.id, &group(2), t(0)).unwrap();
    e.subscribe(&b.id, &group(2), t(0)).unwrap();
    e.subscribe(&b.id, &group(1), t(0)).unwrap();
    assert_eq!(
        e.subscriptions(hb).collect::<Vec<_>>(),
        vec![group(1), group(2)]
    );
    assert_eq!((e.members(&group(1)), e.members(&group(2))), (1, 2));
    assert!(e.is_subscribed(ha, &group(2)) && !e.is_subscribed(ha, &group(1)));
    e.unsubscribe(&b.id, &group(2));
    assert_eq!(e.members(&group(2)), 1);

    // A registered-again UE keeps its handle; a removed one too, unsubscribed.
    assert_eq!(
        e.register_ue(a.id.clone(), a.muk_id.clone(), a.muk(), t(1)),
        ha
    );
    e.remove_ue(&a.id);
    assert_eq!(e.ue_handle("ue-a"), Some(ha));
    assert_eq!(e.ue_btid(ha), None);
    assert_eq!(e.members(&group(2)), 0);
    assert_eq!(e.subscriptions(ha).count(), 0);
}

#[test]
fn actions_carry_the_handle_attempt_and_charge() {
    let mut store = MemoryStore::new();
    let mut e = engine(&mut store);
    let mut a = SimUe::new("ue-a", "a1@bsf.home1.net", 0x11);
    let h = e.register_ue(a.id.clone(), a.muk_id.clone(), a.muk(), t(0));
    e.subscribe(&a.id, &group(1), t(0)).unwrap();
    let actions = e.poll(t(0), &mut TestRng(3)).unwrap();
    assert_eq!(actions.len(), 2);
    for act in &actions {
        let Action::SendMikey {
            handle,
            attempt,
            bytes,
            ..
        } = act
        else {
            panic!("a push: {act:?}");
        };
        assert_eq!((*handle, *attempt), (h, 1));
        let ack = a.receive(bytes).unwrap().ack.unwrap();
        let got = e.on_ack(&ack, t(1)).unwrap();
        assert!(matches!(
            got.as_slice(),
            [Action::Acknowledged { handle, charged: false, .. }] if *handle == h
        ));
    }
}

#[test]
fn acknowledgements_under_the_previous_btid_still_match_and_a_taken_over_btid_follows_its_new_ue() {
    let mut store = MemoryStore::new();
    let mut e = engine(&mut store);
    let mut a = SimUe::new("ue-a", "a1@bsf.home1.net", 0x11);
    a.register(&mut e, t(0));
    e.subscribe(&a.id, &group(1), t(0)).unwrap();
    // Sent under B-TID a1; the UE re-bootstraps (a2) before acknowledging.
    let actions = e.poll(t(0), &mut TestRng(3)).unwrap();
    let acks: Vec<Vec<u8>> = sends(&actions)
        .into_iter()
        .filter_map(|s| a.receive(&s.4).and_then(|r| r.ack))
        .collect();
    assert_eq!(acks.len(), 2);
    let old = a.muk_id.clone();
    a.muk_id = MukId::new(old.idi.clone(), "a2@bsf.home1.net".to_owned());
    a.muk_bytes = [0x33; 32];
    a.register(&mut e, t(10));
    assert_eq!(
        e.ue_btid(e.ue_handle("ue-a").unwrap()),
        Some("a2@bsf.home1.net")
    );
    // The in-flight deliveries restart under a2, and an acknowledgement of
    // a message sent under a1 is still matched (by its B-TID) and accepted.
    assert!(e.on_ack(&acks[0], t(11)).is_ok());
    // Another UE takes over B-TID a1 (the last registration wins): its
    // acknowledgements match it, and removing UE a leaves its entry alone.
    let mut b = SimUe::new("ue-b", "a1@bsf.home1.net", 0x44);
    b.register(&mut e, t(20));
    e.subscribe(&b.id, &group(1), t(20)).unwrap();
    e.remove_ue(&a.id);
    assert_eq!(exchange(&mut e, &mut b, 30), 2);
    let hb = e.ue_handle("ue-b").unwrap();
    let msk = e.key_group(&group(1)).unwrap().current.name;
    assert_eq!(
        e.delivery(&b.id, &msk).unwrap().state,
        DeliveryState::Acknowledged
    );
    assert_eq!(e.ue_btid(hb), Some("a1@bsf.home1.net"));
}
