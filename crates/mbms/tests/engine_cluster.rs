//! Several engines on one store, as several BM-SC instances on one
//! database (TS 33.246 6.3.4): a non-anchor adopts the anchor's key group
//! state and delivers the same MSKs; a survivor taking over a UE starts
//! its counters above every counter the other engine may have used.

mod engine_support;

use std::cell::RefCell;
use std::rc::Rc;

use engine_support::*;
use mbms::engine::{
    Engine, EngineConfig, EngineStore, KeyGroupConfig, KeyGroupSnapshot, MemoryStore, StoreError,
};
use mbms::KeyGroupName;

/// One database shared by two engines; blocks are disjoint like
/// `UPDATE ... SET mark = GREATEST(mark + len, upto) RETURNING mark`.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<MemoryStore>>);

impl EngineStore for Shared {
    fn counter_reserved(&self) -> Result<Option<u32>, StoreError> {
        self.0.borrow().counter_reserved()
    }
    fn reserve_counters(&mut self, upto: u32) -> Result<(), StoreError> {
        self.0.borrow_mut().reserve_counters(upto)
    }
    fn reserve_counter_block(&mut self, len: u32, upto: u32) -> Result<u32, StoreError> {
        let mut s = self.0.borrow_mut();
        let mark = s.counter_mark().unwrap_or(0);
        let new = (mark + len).max(upto);
        s.reserve_counters(new)?;
        Ok(new)
    }
    fn load_key_group(&self, name: &KeyGroupName) -> Result<Option<KeyGroupSnapshot>, StoreError> {
        self.0.borrow().load_key_group(name)
    }
    fn save_key_group(&mut self, s: &KeyGroupSnapshot) -> Result<(), StoreError> {
        self.0.borrow_mut().save_key_group(s)
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        counter_block: 8,
        ..Default::default()
    }
}

#[test]
fn a_non_anchor_adopts_the_anchors_rotation_and_pushes_the_same_msk() {
    let store = Shared::default();
    let mut rng = TestRng(7);
    let mut anchor = Engine::new(config(), store.clone()).unwrap();
    let mut other = Engine::new(config(), store.clone()).unwrap();
    let kg = KeyGroupConfig::default();
    anchor.open_key_group(group(1), kg, &mut rng).unwrap();
    other.open_key_group(group(1), kg, &mut rng).unwrap();
    assert_eq!(anchor.key_group(&group(1)), other.key_group(&group(1)));
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x21);
    ue.register(&mut other, t(0));
    other.subscribe(&ue.id, &group(1), t(0)).unwrap();
    for (_, _, _, _, b) in sends(&other.poll(t(0), &mut rng).unwrap()) {
        let r = ue.receive(&b).expect("accepted");
        if let Some(a) = r.ack {
            other.on_ack(&a, t(0)).unwrap();
        }
    }
    let rotated = anchor.rotate(&group(1), t(10), &mut rng).unwrap();
    // Adopting an unchanged snapshot pushes nothing.
    let snap = store.load_key_group(&group(1)).unwrap().unwrap();
    let adopted = other.adopt_key_group(snap.clone(), t(20)).unwrap();
    assert_eq!(adopted, Some(rotated));
    assert_eq!(other.adopt_key_group(snap, t(20)).unwrap(), None);
    let pushed = sends(&other.poll(t(20), &mut rng).unwrap());
    assert!(pushed.iter().any(|s| s.1 == rotated.next.name));
    for (_, _, _, _, b) in pushed {
        ue.receive(&b).expect("accepted");
    }
    let want = store.load_key_group(&group(1)).unwrap().unwrap();
    assert_eq!(ue.msk(&rotated.next.name), Some(&want.next.key));
}

#[test]
fn a_survivor_starts_a_taken_ues_counters_above_the_dead_engines() {
    let store = Shared::default();
    let mut rng = TestRng(8);
    let mut a = Engine::new(config(), store.clone()).unwrap();
    let mut b = Engine::new(config(), store.clone()).unwrap();
    let kg = KeyGroupConfig::default();
    a.open_key_group(group(1), kg, &mut rng).unwrap();
    b.open_key_group(group(1), kg, &mut rng).unwrap();
    // B reserves its block first: A's block lies above it.
    let mine = SimUe::new("ue-b", "bb@bsf.home1.net", 0x31);
    mine.register(&mut b, t(0));
    b.subscribe(&mine.id, &group(1), t(0)).unwrap();
    b.poll(t(0), &mut rng).unwrap();
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x22);
    ue.register(&mut a, t(0));
    a.subscribe(&ue.id, &group(1), t(0)).unwrap();
    for round in 0..3 {
        for (_, _, _, _, bytes) in sends(&a.poll(t(round * 100_000), &mut rng).unwrap()) {
            ue.receive(&bytes).expect("accepted");
        }
        a.request_msk(
            &ue.id,
            a.key_group(&group(1)).unwrap().current.name,
            t(round * 100_000),
        )
        .unwrap();
    }
    let used = ue.last_counter;
    drop(a); // killed
    let floor = b.fresh_counter_block().unwrap();
    assert!(
        floor > used,
        "floor {floor} above A's counters (last {used})"
    );
    ue.register(&mut b, t(1_000_000));
    b.subscribe(&ue.id, &group(1), t(1_000_000)).unwrap();
    let pushed = sends(&b.poll(t(1_000_000), &mut rng).unwrap());
    assert!(pushed.iter().any(|s| s.0 == ue.id));
    for (id, _, _, _, bytes) in pushed {
        if id == ue.id {
            ue.receive(&bytes)
                .expect("the UE accepts the survivor's messages: no replay");
        }
    }
}
