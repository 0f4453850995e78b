//! The delivery state machine of one MSK to one UE, the retransmission timers
//! and the index that matches acknowledgements to the messages they
//! acknowledge.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use mikey::crypto::InitiatorFields;
use zeroize::Zeroizing;

use crate::ids::{MskName, MukId};

use super::time::Timestamp;
use super::UeId;

/// The step of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// A plain push of the MSK with its window (seed 000 6.3.2.3.1).
    Deliver,
    /// 4-way step 1: the MSK delivered inactive, VF > VT (seed 004
    /// 6.3.2.3.3, `profile::INACTIVE_WINDOW`), V = 1.
    Inactive,
    /// 4-way step 3: the activation, same MSK ID and key, the real window,
    /// V = 1.
    Activate,
}

/// Where the delivery of one MSK to one UE stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// To be sent at the next [`poll`](super::Engine::poll).
    Pending,
    /// Sent, waiting for the acknowledgement.
    Sent {
        /// Transmissions of the current step so far (1 = the first).
        attempt: u32,
        /// When to retransmit (or give up, after the last attempt).
        next_deadline: Timestamp,
    },
    /// Sent without asking for an acknowledgement (V = 0): nothing to wait for.
    Unconfirmed,
    /// The last step was acknowledged: the UE holds the MSK (and, after a
    /// 4-way procedure, holds it active).
    Acknowledged,
    /// No acknowledgement after the last attempt. A late acknowledgement is
    /// still accepted; a new request or subscription restarts the delivery.
    GivenUp,
}

impl DeliveryState {
    /// Pending or sent: retransmissions are scheduled.
    pub fn in_flight(&self) -> bool {
        matches!(self, DeliveryState::Pending | DeliveryState::Sent { .. })
    }
}

/// The status of the delivery of one MSK to one UE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryStatus {
    /// The current step.
    pub step: Step,
    /// Its state.
    pub state: DeliveryState,
    /// A charging record was emitted (4-way step 1 acknowledged).
    pub charged: bool,
}

/// One transmitted MSK message that expects an acknowledgement.
pub(crate) struct Attempt {
    pub(crate) round: u32,
    pub(crate) step: Step,
    pub(crate) counter: u32,
    pub(crate) muk_id: MukId,
    pub(crate) auth_key: Zeroizing<[u8; mikey::AUTH_KEY_LEN]>,
    pub(crate) initiator: InitiatorFields,
}

pub(crate) struct Delivery {
    pub(crate) step: Step,
    pub(crate) state: DeliveryState,
    /// When the delivery is due (pending: now; sent: the deadline).
    pub(crate) due: Option<Timestamp>,
    /// Incremented when a finished delivery is restarted (re-request):
    /// acknowledgements of an earlier round are stale.
    pub(crate) round: u32,
    /// Transmissions that expect an acknowledgement, oldest first (the last
    /// `keep` of [`Deliveries::record_attempt`]).
    pub(crate) attempts: VecDeque<Attempt>,
}

impl Delivery {
    pub(crate) fn status(&self, charged: bool) -> DeliveryStatus {
        DeliveryStatus {
            step: self.step,
            state: self.state,
            charged,
        }
    }
}

/// The fewest transmissions remembered per delivery for matching
/// acknowledgements (the engine keeps two rounds of `max_attempts` when that
/// is more). A UE that asks for an
/// MSK again and again gets a new message each time (seed 002 6.3.2.2.1);
/// the oldest attempts are then forgotten (an acknowledgement of one of
/// them is refused as unmatched) so that the memory of a delivery stays
/// bounded.
pub(crate) const MIN_ATTEMPTS_KEPT: usize = 32;

/// The first step of a delivery: a plain push, or the 4-way procedure's
/// inactive MSK, or (the subscriber was already charged for the MSK, seed 004
/// 6.3.2.3.3) directly its activation.
pub(crate) fn first_step(four_way: bool, charged: bool) -> Step {
    match (four_way, charged) {
        (false, _) => Step::Deliver,
        (true, false) => Step::Inactive,
        (true, true) => Step::Activate,
    }
}

pub(crate) type Key = (UeId, MskName);

/// All deliveries, their timers and the acknowledgement index.
#[derive(Default)]
pub(crate) struct Deliveries {
    map: BTreeMap<Key, Delivery>,
    timers: BTreeSet<(Timestamp, Key)>,
    /// (IDr = B-TID, counter) -> deliveries with an attempt of that counter.
    sent: HashMap<(String, u32), Vec<Key>>,
}

impl Deliveries {
    pub(crate) fn get(&self, key: &Key) -> Option<&Delivery> {
        self.map.get(key)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.map.keys()
    }

    /// Start a delivery, or restart one that was given up (a subscription or
    /// a rotation). In-flight, acknowledged and unconfirmed deliveries are
    /// left alone.
    pub(crate) fn ensure(&mut self, key: &Key, four_way: bool, charged: bool, now: Timestamp) {
        let step = first_step(four_way, charged);
        match self.map.get_mut(key) {
            None => self.insert(key, step),
            Some(d) => {
                if d.state != DeliveryState::GivenUp {
                    return;
                }
                d.round += 1;
                d.step = step;
            }
        }
        self.set_state(key, DeliveryState::Pending, Some(now));
    }

    /// The UE asked for the MSK (seed 002 6.3.2.2.1): the delivery is due
    /// now, whatever its state, and its retransmission starts afresh
    /// (attempt 1, until acknowledged or given up). A delivery in flight
    /// keeps its round (an acknowledgement of an earlier attempt still
    /// counts) unless its step changes; a finished one (acknowledged,
    /// unconfirmed, given up) starts a new round at its first step.
    pub(crate) fn request(&mut self, key: &Key, four_way: bool, charged: bool, now: Timestamp) {
        let step = first_step(four_way, charged);
        match self.map.get_mut(key) {
            None => self.insert(key, step),
            Some(d) => {
                let same_round = d.state.in_flight() && d.step == step;
                if !same_round {
                    d.round += 1;
                    d.step = step;
                }
            }
        }
        self.set_state(key, DeliveryState::Pending, Some(now));
    }

    /// The subscriber turned out to be charged for the MSK already (restored
    /// after a restart): a delivery at the 4-way procedure's inactive step
    /// moves to the activation (a new round: acknowledgements of the
    /// inactive MSK are stale), sent now if it was in flight.
    pub(crate) fn charged(&mut self, key: &Key, now: Timestamp) {
        let Some(d) = self.map.get_mut(key) else {
            return;
        };
        if d.step != Step::Inactive {
            return;
        }
        d.round += 1;
        d.step = Step::Activate;
        if d.state.in_flight() {
            self.set_state(key, DeliveryState::Pending, Some(now));
        }
    }

    fn insert(&mut self, key: &Key, step: Step) {
        self.map.insert(
            key.clone(),
            Delivery {
                step,
                state: DeliveryState::Pending,
                due: None,
                round: 1,
                attempts: VecDeque::new(),
            },
        );
    }

    /// Change the state and the timer of a delivery.
    pub(crate) fn set_state(&mut self, key: &Key, state: DeliveryState, due: Option<Timestamp>) {
        let Some(d) = self.map.get_mut(key) else {
            return;
        };
        if let Some(old) = d.due {
            self.timers.remove(&(old, key.clone()));
        }
        d.state = state;
        d.due = due;
        if let Some(t) = due {
            self.timers.insert((t, key.clone()));
        }
    }

    pub(crate) fn get_mut(&mut self, key: &Key) -> Option<&mut Delivery> {
        self.map.get_mut(key)
    }

    /// Remember a transmission (and forget the oldest beyond `keep`).
    pub(crate) fn record_attempt(&mut self, key: &Key, attempt: Attempt, keep: usize) {
        if let Some(d) = self.map.get_mut(key) {
            let k = (attempt.muk_id.idr.clone(), attempt.counter);
            let entry = self.sent.entry(k).or_default();
            if !entry.contains(key) {
                entry.push(key.clone());
            }
            d.attempts.push_back(attempt);
            while d.attempts.len() > keep.max(1) {
                if let Some(old) = d.attempts.pop_front() {
                    unindex(&mut self.sent, &old, key);
                }
            }
        }
    }

    /// Deliveries that may have sent `counter` under a MUK with IDr `btid`.
    pub(crate) fn candidates(&self, btid: &str, counter: u32) -> &[Key] {
        self.sent
            .get(&(btid.to_owned(), counter))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Keys due at or before `now`, earliest first.
    pub(crate) fn due(&self, now: Timestamp) -> Vec<Key> {
        self.timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, k)| k.clone())
            .collect()
    }

    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.iter().next().map(|(t, _)| *t)
    }

    /// Remove every delivery for which `pred` holds, with its timer and its
    /// index entries.
    pub(crate) fn remove_where(&mut self, mut pred: impl FnMut(&Key) -> bool) {
        let doomed: Vec<Key> = self.map.keys().filter(|k| pred(k)).cloned().collect();
        for key in doomed {
            if let Some(d) = self.map.remove(&key) {
                if let Some(t) = d.due {
                    self.timers.remove(&(t, key.clone()));
                }
                for a in &d.attempts {
                    unindex(&mut self.sent, a, &key);
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Remove `key` from the acknowledgement index entry of attempt `a`.
fn unindex(sent: &mut HashMap<(String, u32), Vec<Key>>, a: &Attempt, key: &Key) {
    let k = (a.muk_id.idr.clone(), a.counter);
    if let Some(v) = sent.get_mut(&k) {
        v.retain(|x| x != key);
        if v.is_empty() {
            sent.remove(&k);
        }
    }
}
