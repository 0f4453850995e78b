//! The delivery state machine of one MSK to one UE, the retransmission timers
//! and the index that matches acknowledgements to the messages they
//! acknowledge.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
    pub(crate) charged: bool,
    pub(crate) attempts: Vec<Attempt>,
}

impl Delivery {
    pub(crate) fn status(&self) -> DeliveryStatus {
        DeliveryStatus {
            step: self.step,
            state: self.state,
            charged: self.charged,
        }
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

    /// Start a delivery, or restart a finished one (`force`: also an
    /// acknowledged or unconfirmed one). In-flight deliveries are left alone.
    pub(crate) fn ensure(&mut self, key: &Key, four_way: bool, force: bool, now: Timestamp) {
        let first = |charged: bool| match (four_way, charged) {
            (false, _) => Step::Deliver,
            (true, false) => Step::Inactive,
            (true, true) => Step::Activate,
        };
        match self.map.get_mut(key) {
            None => {
                self.map.insert(
                    key.clone(),
                    Delivery {
                        step: first(false),
                        state: DeliveryState::Pending,
                        due: None,
                        round: 1,
                        charged: false,
                        attempts: Vec::new(),
                    },
                );
            }
            Some(d) => {
                let restart = match d.state {
                    DeliveryState::Pending | DeliveryState::Sent { .. } => false,
                    DeliveryState::GivenUp => true,
                    DeliveryState::Acknowledged | DeliveryState::Unconfirmed => force,
                };
                if !restart {
                    return;
                }
                d.round += 1;
                d.step = first(d.charged);
            }
        }
        self.set_state(key, DeliveryState::Pending, Some(now));
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

    pub(crate) fn record_attempt(&mut self, key: &Key, attempt: Attempt) {
        if let Some(d) = self.map.get_mut(key) {
            let k = (attempt.muk_id.idr.clone(), attempt.counter);
            let entry = self.sent.entry(k).or_default();
            if !entry.contains(key) {
                entry.push(key.clone());
            }
            d.attempts.push(attempt);
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
                    let k = (a.muk_id.idr.clone(), a.counter);
                    if let Some(v) = self.sent.get_mut(&k) {
                        v.retain(|x| x != &key);
                        if v.is_empty() {
                            self.sent.remove(&k);
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
