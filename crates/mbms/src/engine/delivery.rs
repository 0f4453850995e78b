//! The delivery state machine of one MSK to one UE and the retransmission
//! timers.
//!
//! Per-UE state is small and fixed-size: a delivery is a plain record inside
//! its UE's slot (no per-attempt copies). What an acknowledgement must be
//! checked against (the counter, RAND, IDi/IDr/T and auth_key of the message
//! it acknowledges) is recomputed when it arrives: the counters of the
//! current step are a range, and the RAND of a message is a keyed function of
//! (UE, counter, MSK) (see [`super::rand`]).

use std::collections::BTreeSet;

use crate::ids::MskName;

use super::time::Timestamp;

/// Which message of a delivery is being sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// A plain MSK push (V bit per key group configuration).
    Deliver,
    /// 4-way procedure step 1: the MSK inactive (seed 004 6.3.2.3.3).
    Inactive,
    /// 4-way procedure step 3: the activation (same MSK ID and key, the real
    /// window).
    Activate,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// To be sent at the next poll.
    Pending,
    /// Sent (attempt `attempt`), waiting for the acknowledgement until
    /// `next_deadline`.
    Sent {
        /// Transmissions of the current step so far.
        attempt: u32,
        /// When the next attempt (or the give-up) is due.
        next_deadline: Timestamp,
    },
    /// Sent without the V bit: nothing to wait for.
    Unconfirmed,
    /// The last step was acknowledged.
    Acknowledged,
    /// No acknowledgement after the last attempt.
    GivenUp,
}

impl DeliveryState {
    /// Still to be sent or waiting for an acknowledgement.
    pub fn in_flight(&self) -> bool {
        matches!(self, DeliveryState::Pending | DeliveryState::Sent { .. })
    }
}

/// A delivery as the caller sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryStatus {
    /// The step being delivered.
    pub step: Step,
    /// Its state.
    pub state: DeliveryState,
    /// The subscriber was charged for the MSK.
    pub charged: bool,
}

/// The first step of a delivery.
pub(crate) fn first_step(four_way: bool, charged: bool) -> Step {
    match (four_way, charged) {
        (false, _) => Step::Deliver,
        (true, false) => Step::Inactive,
        (true, true) => Step::Activate,
    }
}

/// Counters used for a delivery (inclusive ranges; the UE's other deliveries
/// may use counters in between).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// First counter ever used for this delivery (all rounds and steps).
    pub(crate) first_ever: u32,
    /// First counter of the current round and step.
    pub(crate) first: u32,
    /// Last counter used.
    pub(crate) last: u32,
}

/// One MSK to one UE.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub(crate) msk: MskName,
    /// `false`: the UE left the key group; the record stays only to remember
    /// the charge (seed 004 6.3.2.3.3: charged once per MSK).
    pub(crate) subscribed: bool,
    pub(crate) charged: bool,
    pub(crate) step: Step,
    pub(crate) state: DeliveryState,
    /// The armed timer, if any (mirrors the entry in [`Timers`]).
    pub(crate) due: Option<Timestamp>,
    /// Bumped when the delivery starts over (a new step, a request, a
    /// revival); acknowledgements of earlier rounds are stale.
    pub(crate) round: u32,
    /// Counters of the messages sent; `None` before the first.
    pub(crate) sent: Option<Sent>,
}

impl Delivery {
    pub(crate) fn new(msk: MskName, step: Step) -> Self {
        Delivery {
            msk,
            subscribed: true,
            charged: false,
            step,
            state: DeliveryState::Pending,
            due: None,
            round: 1,
            sent: None,
        }
    }

    pub(crate) fn status(&self) -> DeliveryStatus {
        DeliveryStatus {
            step: self.step,
            state: self.state,
            charged: self.charged,
        }
    }

    /// Start a new round of `step`: acknowledgements of earlier messages
    /// become stale.
    pub(crate) fn new_round(&mut self, step: Step) {
        self.round = self.round.wrapping_add(1);
        self.step = step;
        if let Some(s) = &mut self.sent {
            // Counters above `last` belong to the new round.
            s.first = s.last.saturating_add(1);
        }
    }

    /// Record a transmission with `counter`.
    pub(crate) fn record_counter(&mut self, counter: u32) {
        match &mut self.sent {
            None => {
                self.sent = Some(Sent {
                    first_ever: counter,
                    first: counter,
                    last: counter,
                })
            }
            Some(s) => {
                if s.first > s.last {
                    s.first = counter;
                }
                s.last = counter;
            }
        }
    }

    /// Whether `counter` was used by an attempt of the current round and
    /// step (`Some(true)`), of an earlier one (`Some(false)`), or never for
    /// this delivery (`None`). Counters of the UE's other deliveries that lie
    /// inside the range are told apart by the MAC.
    pub(crate) fn counter_round(&self, counter: u32) -> Option<bool> {
        let s = self.sent?;
        if counter < s.first_ever || counter > s.last {
            return None;
        }
        Some(counter >= s.first)
    }
}

/// Index of a UE in the engine (dense, never reused).
pub(crate) type Handle = u32;

/// The retransmission timers: one entry per armed delivery, ordered by
/// deadline.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    set: BTreeSet<(Timestamp, Handle, MskName)>,
}

impl Timers {
    /// Arm (or move, or with `None` disarm) the timer of a delivery.
    pub(crate) fn set(&mut self, d: &mut Delivery, handle: Handle, due: Option<Timestamp>) {
        if let Some(old) = d.due {
            self.set.remove(&(old, handle, d.msk));
        }
        d.due = due;
        if let Some(t) = due {
            self.set.insert((t, handle, d.msk));
        }
    }

    /// Deliveries due at `now`, earliest first, at most `limit`.
    pub(crate) fn due(&self, now: Timestamp, limit: usize) -> Vec<(Handle, MskName)> {
        self.set
            .iter()
            .take_while(|(t, _, _)| *t <= now)
            .take(limit)
            .map(|(_, h, m)| (*h, *m))
            .collect()
    }

    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        self.set.iter().next().map(|(t, _, _)| *t)
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}
