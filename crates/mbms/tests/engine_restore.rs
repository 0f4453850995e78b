//! Restoring persisted delivery outcomes after a restart of the service
//! (`Engine::restore_delivery`): acknowledged deliveries are not resent,
//! charged subscribers resume at the activation and are not charged twice,
//! counters continue above the persisted high-water mark.

mod engine_support;

use engine_support::*;
use mbms::engine::{
    Action, DeliveryState, Engine, EngineConfig, KeyGroupConfig, MemoryStore, Step,
};

fn open(store: &mut MemoryStore, charging: bool) -> Engine<&mut MemoryStore> {
    let mut e = Engine::new(EngineConfig::default(), store).unwrap();
    let cfg = KeyGroupConfig {
        charging,
        window_len: 100,
        ..Default::default()
    };
    e.open_key_group(group(1), cfg, &mut TestRng(1)).unwrap();
    e
}

#[test]
fn acknowledged_deliveries_are_not_resent_after_a_restart() {
    let mut store = MemoryStore::new();
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    let mut rng = TestRng(3);
    let (current, next);
    {
        let mut e = open(&mut store, false);
        ue.register(&mut e, t(0));
        e.subscribe(&ue.id, &group(1), t(0)).unwrap();
        let info = e.key_group(&group(1)).unwrap();
        (current, next) = (info.current.name, info.next.name);
        for s in sends(&e.poll(t(0), &mut rng).unwrap()) {
            let r = ue.receive(&s.4).unwrap();
            // Only the current MSK's acknowledgement arrives before the crash.
            if s.1 == current {
                e.on_ack(&r.ack.unwrap(), t(1)).unwrap();
            }
        }
    }
    let mut e = open(&mut store, false);
    ue.register(&mut e, t(10));
    e.subscribe(&ue.id, &group(1), t(10)).unwrap();
    assert!(e.restore_delivery(&ue.id, &current, true, false));
    assert_eq!(
        e.delivery(&ue.id, &current).unwrap().state,
        DeliveryState::Acknowledged
    );
    let sent = sends(&e.poll(t(10), &mut rng).unwrap());
    assert_eq!(sent.len(), 1, "only the unacknowledged MSK is pushed again");
    assert_eq!(sent[0].1, next);
    let r = ue.receive(&sent[0].4).expect("counter above the old ones");
    e.on_ack(&r.ack.unwrap(), t(11)).unwrap();
    // Restoring a delivery already sent changes nothing.
    assert!(!e.restore_delivery(&ue.id, &next, false, true));
    assert!(!e.restore_delivery(&ue.id, &group_msk(99), true, false));
}

fn group_msk(n: u16) -> mbms::MskName {
    mbms::MskName {
        key_domain: group(n).key_domain,
        msk_id: mbms::MskId::new(n, 1),
    }
}

#[test]
fn a_charged_subscriber_resumes_at_the_activation() {
    let mut store = MemoryStore::new();
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    let mut rng = TestRng(4);
    let current;
    {
        let mut e = open(&mut store, true);
        ue.register(&mut e, t(0));
        e.subscribe(&ue.id, &group(1), t(0)).unwrap();
        current = e.key_group(&group(1)).unwrap().current.name;
        for s in sends(&e.poll(t(0), &mut rng).unwrap()) {
            let r = ue.receive(&s.4).unwrap();
            if s.1 == current {
                let a = e.on_ack(&r.ack.unwrap(), t(1)).unwrap();
                assert!(a.iter().any(|a| matches!(a, Action::ChargingRecord(_))));
            }
        }
    }
    let mut e = open(&mut store, true);
    ue.register(&mut e, t(10));
    e.subscribe(&ue.id, &group(1), t(10)).unwrap();
    assert!(e.restore_delivery(&ue.id, &current, false, true));
    let st = e.delivery(&ue.id, &current).unwrap();
    assert!(st.charged);
    assert_eq!(
        (st.step, st.state),
        (Step::Activate, DeliveryState::Pending)
    );
    let sent = sends(&e.poll(t(10), &mut rng).unwrap());
    let s = sent.iter().find(|s| s.1 == current).unwrap();
    assert_eq!(s.2, Some(Step::Activate));
    let r = ue.receive(&s.4).unwrap();
    let answers = e.on_ack(&r.ack.unwrap(), t(11)).unwrap();
    assert!(!answers
        .iter()
        .any(|a| matches!(a, Action::ChargingRecord(_))));
    assert_eq!(
        e.delivery(&ue.id, &current).unwrap().state,
        DeliveryState::Acknowledged
    );
}
