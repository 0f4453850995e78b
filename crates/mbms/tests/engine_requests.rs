//! The basic MSK request (seed 002 6.3.2.2.1) is answered with a MIKEY
//! message at once, whatever the state of the delivery (waiting for its
//! retransmission timer, at its last attempt, given up), and revives its
//! retransmission; a subscriber already charged for the MSK gets the
//! activation, never the inactive MSK again, and is not charged twice (seed
//! 004 6.3.2.3.3), also after a restart ([`Engine::mark_charged`]) and after
//! leaving and joining again.

mod engine_support;

use std::time::Duration;

use engine_support::*;
use mbms::engine::{
    Action, DeliveryState, Engine, EngineConfig, KeyGroupConfig, MemoryStore, RetransmitPolicy,
    Step, Timestamp, UeId,
};
use mbms::{MskId, MskName};

const MAX_ATTEMPTS: u32 = 3;

fn config() -> EngineConfig {
    EngineConfig {
        counter_block: 4,
        retransmit: RetransmitPolicy {
            initial: Duration::from_millis(1000),
            factor: 2,
            max_interval: Duration::from_millis(8000),
            max_attempts: MAX_ATTEMPTS,
            jitter_permille: 0,
        },
    }
}

fn open(store: &mut MemoryStore, charging: bool) -> Engine<&mut MemoryStore> {
    let mut e = Engine::new(config(), store).unwrap();
    let cfg = KeyGroupConfig {
        charging,
        window_len: 100,
        ..Default::default()
    };
    e.open_key_group(group(1), cfg, &mut TestRng(1)).unwrap();
    e
}

/// Key Number 0: "the current MSK".
fn current_request() -> MskName {
    MskName {
        key_domain: group(1).key_domain,
        msk_id: MskId::current(1),
    }
}

/// The messages of `actions` for `msk`.
fn of(actions: &[Action], msk: MskName) -> Vec<Sent> {
    sends(actions).into_iter().filter(|s| s.1 == msk).collect()
}

fn attempt_of<S: mbms::engine::EngineStore>(e: &Engine<S>, ue: &UeId, msk: &MskName) -> u32 {
    match e.delivery(ue, msk).unwrap().state {
        DeliveryState::Sent { attempt, .. } => attempt,
        other => panic!("not sent: {other:?}"),
    }
}

/// Poll at every deadline until nothing is scheduled; the UE receives
/// nothing (everything is lost). Returns the time reached and the give-ups.
fn run_out<S: mbms::engine::EngineStore>(
    e: &mut Engine<S>,
    mut now: Timestamp,
    rng: &mut TestRng,
) -> (Timestamp, Vec<Action>) {
    let mut gave_up = vec![];
    while let Some(d) = e.next_deadline() {
        now = now.max(d);
        for a in e.poll(now, rng).unwrap() {
            if matches!(a, Action::GaveUp { .. }) {
                gave_up.push(a);
            }
        }
    }
    (now, gave_up)
}

#[test]
fn a_request_while_waiting_for_the_retransmission_timer_is_answered_at_once() {
    let mut store = MemoryStore::new();
    let mut e = open(&mut store, false);
    let mut rng = TestRng(2);
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let msk = e.key_group(&group(1)).unwrap().current.name;

    // The push is lost; the retransmission is due at 1000 ms.
    let lost = of(&e.poll(t(0), &mut rng).unwrap(), msk);
    assert_eq!(lost.len(), 1);
    assert!(e.poll(t(300), &mut rng).unwrap().is_empty());

    // The UE asks at 300 ms: a new message now, not at the timer.
    assert_eq!(
        e.request_msk(&ue.id, current_request(), t(300)).unwrap(),
        msk
    );
    assert_eq!(e.next_deadline(), Some(t(300)));
    let answer = of(&e.poll(t(300), &mut rng).unwrap(), msk);
    assert_eq!(answer.len(), 1, "answered at once");
    assert!(answer[0].3 > lost[0].3, "a fresh counter");
    assert_eq!(attempt_of(&e, &ue.id, &msk), 1, "retransmission restarts");

    // Retransmission goes on from the request (its timer: 1000 ms later)
    // until acknowledged.
    assert!(of(&e.poll(t(1299), &mut rng).unwrap(), msk).is_empty());
    let again = of(&e.poll(t(1300), &mut rng).unwrap(), msk);
    assert_eq!(again.len(), 1);
    assert_eq!(attempt_of(&e, &ue.id, &msk), 2);
    let r = ue.receive(&again[0].4).unwrap();
    e.on_ack(&r.ack.unwrap(), t(1400)).unwrap();
    assert_eq!(
        e.delivery(&ue.id, &msk).unwrap().state,
        DeliveryState::Acknowledged
    );
}

#[test]
fn a_request_after_the_last_attempt_revives_the_delivery() {
    let mut store = MemoryStore::new();
    let mut e = open(&mut store, false);
    let mut rng = TestRng(3);
    let ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let msk = e.key_group(&group(1)).unwrap().current.name;

    // Every attempt lost: the last one is sent, its timer runs.
    let mut now = t(0);
    for _ in 0..MAX_ATTEMPTS {
        now = now.max(e.next_deadline().unwrap());
        e.poll(now, &mut rng).unwrap();
    }
    assert_eq!(attempt_of(&e, &ue.id, &msk), MAX_ATTEMPTS);
    // The UE asks now: answered at once, and not given up at that timer.
    let asked = t(now.as_millis() + 10);
    e.request_msk(&ue.id, current_request(), asked).unwrap();
    let answer = of(&e.poll(asked, &mut rng).unwrap(), msk);
    assert_eq!(answer.len(), 1);
    assert_eq!(attempt_of(&e, &ue.id, &msk), 1);
    // It is retransmitted again up to the last attempt, then given up.
    let (now, gave_up) = run_out(&mut e, asked, &mut rng);
    assert!(
        gave_up
            .iter()
            .any(|a| matches!(a, Action::GaveUp { msk: m, attempts, .. } if *m == msk && *attempts == MAX_ATTEMPTS)),
        "{gave_up:?}"
    );
    assert_eq!(
        e.delivery(&ue.id, &msk).unwrap().state,
        DeliveryState::GivenUp
    );

    // Given up: a request revives it, answered at once, retransmitted.
    let asked = t(now.as_millis() + 60_000);
    e.request_msk(&ue.id, current_request(), asked).unwrap();
    let answer = of(&e.poll(asked, &mut rng).unwrap(), msk);
    assert_eq!(answer.len(), 1, "a given-up delivery is revived");
    assert_eq!(attempt_of(&e, &ue.id, &msk), 1);
    let next = e.next_deadline().unwrap();
    assert_eq!(next, t(asked.as_millis() + 1000));
    assert_eq!(of(&e.poll(next, &mut rng).unwrap(), msk).len(), 1);
    assert_eq!(attempt_of(&e, &ue.id, &msk), 2);
}

#[test]
fn repeated_requests_each_get_a_message_and_memory_stays_bounded() {
    let mut store = MemoryStore::new();
    let mut e = open(&mut store, false);
    let mut rng = TestRng(4);
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let msk = e.key_group(&group(1)).unwrap().current.name;
    e.poll(t(0), &mut rng).unwrap();
    let mut last = None;
    for i in 1..=100u64 {
        e.request_msk(&ue.id, current_request(), t(i)).unwrap();
        let s = of(&e.poll(t(i), &mut rng).unwrap(), msk);
        assert_eq!(s.len(), 1, "request {i}");
        last = Some(s[0].clone());
    }
    // The answer to the last request is acknowledged.
    let r = ue.receive(&last.unwrap().4).unwrap();
    e.on_ack(&r.ack.unwrap(), t(200)).unwrap();
    assert_eq!(
        e.delivery(&ue.id, &msk).unwrap().state,
        DeliveryState::Acknowledged
    );
}

/// The first (inactive) messages of the current and next MSK, received by
/// the UE (in counter order); returns their acknowledgements, not sent yet.
fn first_pushes(
    e: &mut Engine<&mut MemoryStore>,
    ue: &mut SimUe,
    now: Timestamp,
    rng: &mut TestRng,
) -> (Vec<u8>, Vec<u8>) {
    let info = e.key_group(&group(1)).unwrap();
    let mut sent = sends(&e.poll(now, rng).unwrap());
    sent.sort_by_key(|s| s.3);
    let mut acks = std::collections::BTreeMap::new();
    for s in sent {
        assert_eq!(s.2, Some(Step::Inactive));
        let r = ue.receive(&s.4).unwrap();
        assert!(r.key.unwrap().is_inactive());
        acks.insert(s.1, r.ack.unwrap());
    }
    (
        acks.remove(&info.current.name).unwrap(),
        acks.remove(&info.next.name).unwrap(),
    )
}

/// 4-way step 1 acknowledged: the charging records that produced.
fn charge(e: &mut Engine<&mut MemoryStore>, ack: &[u8], now: Timestamp) -> usize {
    e.on_ack(ack, now)
        .unwrap()
        .iter()
        .filter(|a| matches!(a, Action::ChargingRecord(_)))
        .count()
}

/// Receive `s` and check it is the activation of `msk` with the real window
/// (SEQs <= SEQu, not the inactive window), then acknowledge it; returns the
/// charging records the acknowledgement produced.
fn activate(e: &mut Engine<&mut MemoryStore>, ue: &mut SimUe, s: &Sent, now: Timestamp) -> usize {
    assert_eq!(
        s.2,
        Some(Step::Activate),
        "the activation, not the inactive MSK"
    );
    let r = ue.receive(&s.4).unwrap();
    let k = r.key.unwrap();
    assert!(!k.is_inactive());
    assert!(k.seq_s.value() <= k.seq_u.value());
    let info = e.key_group(&group(1)).unwrap();
    let m = if info.current.name == s.1 {
        info.current
    } else {
        info.next
    };
    assert_eq!((k.seq_s, k.seq_u), (m.seq_s, m.seq_u));
    e.on_ack(&r.ack.unwrap(), now)
        .unwrap()
        .iter()
        .filter(|a| matches!(a, Action::ChargingRecord(_)))
        .count()
}

#[test]
fn a_charged_subscriber_asking_again_gets_the_activation_at_once() {
    let mut store = MemoryStore::new();
    let mut e = open(&mut store, true);
    let mut rng = TestRng(5);
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let msk = e.key_group(&group(1)).unwrap().current.name;
    let (first, second) = first_pushes(&mut e, &mut ue, t(0), &mut rng);
    assert_eq!(charge(&mut e, &first, t(0)), 1);

    // The activation is lost; the UE asks while its timer runs.
    let lost = of(&e.poll(t(10), &mut rng).unwrap(), msk);
    assert_eq!(lost[0].2, Some(Step::Activate));
    e.request_msk(&ue.id, current_request(), t(20)).unwrap();
    let s = of(&e.poll(t(20), &mut rng).unwrap(), msk);
    assert_eq!(s.len(), 1, "answered at once");
    assert_eq!(
        activate(&mut e, &mut ue, &s[0], t(30)),
        0,
        "not charged again"
    );
    assert_eq!(
        e.delivery(&ue.id, &msk).unwrap().state,
        DeliveryState::Acknowledged
    );

    // Every activation lost until the delivery gives up; the UE asks by
    // MSK ID: the activation again, no second charge.
    let next = e.key_group(&group(1)).unwrap().next.name;
    assert_eq!(charge(&mut e, &second, t(40)), 1);
    let (now, gave_up) = run_out(&mut e, t(40), &mut rng);
    assert!(gave_up
        .iter()
        .any(|a| matches!(a, Action::GaveUp { msk: m, step: Step::Activate, .. } if *m == next)));
    let asked = t(now.as_millis() + 5);
    assert_eq!(e.request_msk(&ue.id, next, asked).unwrap(), next);
    let s = of(&e.poll(asked, &mut rng).unwrap(), next);
    assert_eq!(activate(&mut e, &mut ue, &s[0], asked), 0);
    assert!(e.delivery(&ue.id, &next).unwrap().charged);
}

#[test]
fn a_charge_restored_after_a_restart_answers_with_the_activation() {
    let mut store = MemoryStore::new();
    let mut rng = TestRng(6);
    let mut ue = SimUe::new("user1_private@home1.net", "b1@bsf.home1.net", 0x11);
    let msk;
    {
        let mut e = open(&mut store, true);
        ue.register(&mut e, t(0));
        e.subscribe(&ue.id, &group(1), t(0)).unwrap();
        msk = e.key_group(&group(1)).unwrap().current.name;
        let (first, _) = first_pushes(&mut e, &mut ue, t(0), &mut rng);
        assert_eq!(charge(&mut e, &first, t(0)), 1);
        // The BM-SC stops before the activation is sent.
    }
    // The new engine learns the charge from the durable charging record;
    // the delivery state itself was not restored.
    let mut e = open(&mut store, true);
    ue.register(&mut e, t(100));
    e.subscribe(&ue.id, &group(1), t(100)).unwrap();
    assert!(e.mark_charged(&ue.id, &msk, t(100)));
    let st = e.delivery(&ue.id, &msk).unwrap();
    assert_eq!((st.step, st.charged), (Step::Activate, true));
    // The UE asks for the MSK by its ID.
    e.request_msk(&ue.id, msk, t(110)).unwrap();
    let s = of(&e.poll(t(110), &mut rng).unwrap(), msk);
    assert_eq!(s.len(), 1);
    assert_eq!(activate(&mut e, &mut ue, &s[0], t(120)), 0);

    // A charge restored while the inactive MSK is already in flight turns
    // the delivery into the activation, sent at once.
    let next = e.key_group(&group(1)).unwrap().next.name;
    let inactive = of(&e.poll(t(110), &mut rng).unwrap(), next);
    assert!(inactive.is_empty(), "sent at 110 already");
    assert_eq!(
        e.delivery(&ue.id, &next).unwrap().step,
        Step::Inactive,
        "not charged for the next MSK yet"
    );
    let r = ue.receive(
        &of(&e.poll(t(5000), &mut rng).unwrap(), next)
            .first()
            .unwrap()
            .4,
    );
    assert!(e.mark_charged(&ue.id, &next, t(5001)));
    let s = of(&e.poll(t(5001), &mut rng).unwrap(), next);
    assert_eq!(s.len(), 1);
    // A late acknowledgement of the inactive MSK is stale: no charge.
    assert!(e.on_ack(&r.unwrap().ack.unwrap(), t(5002)).is_err());
    assert_eq!(activate(&mut e, &mut ue, &s[0], t(5003)), 0);

    // A retired MSK is not recorded.
    e.rotate(&group(1), t(6000), &mut rng).unwrap();
    assert!(!e.mark_charged(&ue.id, &msk, t(6000)));
    assert!(!e.is_charged(&ue.id, &msk));
    assert!(e.is_charged(&ue.id, &next), "the new current MSK");
}

#[test]
fn leaving_and_joining_again_does_not_charge_twice() {
    let mut store = MemoryStore::new();
    let mut e = open(&mut store, true);
    let mut rng = TestRng(7);
    let mut ue = SimUe::new("ue1", "b1@bsf.home1.net", 0x11);
    ue.register(&mut e, t(0));
    e.subscribe(&ue.id, &group(1), t(0)).unwrap();
    let msk = e.key_group(&group(1)).unwrap().current.name;
    let (first, _) = first_pushes(&mut e, &mut ue, t(0), &mut rng);
    assert_eq!(charge(&mut e, &first, t(0)), 1);
    e.remove_ue(&ue.id);
    assert_eq!(e.delivery(&ue.id, &msk), None);
    ue.register(&mut e, t(10));
    e.subscribe(&ue.id, &group(1), t(10)).unwrap();
    let s = of(&e.poll(t(10), &mut rng).unwrap(), msk);
    assert_eq!(activate(&mut e, &mut ue, &s[0], t(11)), 0);
}
