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

/// The [`Delivery::due`] of a delivery whose timer is not armed.
const NOT_ARMED: Timestamp = Timestamp(u64::MAX);

/// One MSK to one UE: 48 bytes (a UE usually has two per key group, the
/// current and the next MSK), no `Option` tags of its own.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub(crate) msk: MskName,
    /// `false`: the UE left the key group; the record stays only to remember
    /// the charge (seed 004 6.3.2.3.3: charged once per MSK).
    pub(crate) subscribed: bool,
    pub(crate) charged: bool,
    pub(crate) step: Step,
    /// `sent` holds counters (a message was sent).
    has_sent: bool,
    pub(crate) state: DeliveryState,
    /// The armed timer ([`NOT_ARMED`] if none; mirrors the entry in
    /// [`Timers`]).
    due: Timestamp,
    /// Counters of the messages sent; meaningful once `has_sent`. A new
    /// round (a new step, a request, a revival) starts above `last`:
    /// acknowledgements of earlier rounds are stale.
    sent: Sent,
}

impl Delivery {
    pub(crate) fn new(msk: MskName, step: Step) -> Self {
        Delivery {
            msk,
            subscribed: true,
            charged: false,
            step,
            has_sent: false,
            state: DeliveryState::Pending,
            due: NOT_ARMED,
            sent: Sent::default(),
        }
    }

    /// Counters of the messages sent; `None` before the first.
    pub(crate) fn sent(&self) -> Option<Sent> {
        self.has_sent.then_some(self.sent)
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
        self.step = step;
        if self.has_sent {
            // Counters above `last` belong to the new round.
            self.sent.first = self.sent.last.saturating_add(1);
        }
    }

    /// Record a transmission with `counter`.
    pub(crate) fn record_counter(&mut self, counter: u32) {
        if self.has_sent {
            let s = &mut self.sent;
            if s.first > s.last {
                s.first = counter;
            }
            s.last = counter;
        } else {
            self.has_sent = true;
            self.sent = Sent {
                first_ever: counter,
                first: counter,
                last: counter,
            };
        }
    }

    /// Whether `counter` was used by an attempt of the current round and
    /// step (`Some(true)`), of an earlier one (`Some(false)`), or never for
    /// this delivery (`None`). Counters of the UE's other deliveries that lie
    /// inside the range are told apart by the MAC.
    pub(crate) fn counter_round(&self, counter: u32) -> Option<bool> {
        let s = self.sent()?;
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
        if d.due != NOT_ARMED {
            self.set.remove(&(d.due, handle, d.msk));
        }
        // The last millisecond of time stands for "not armed".
        let due = due.map(|t| Timestamp(t.0.min(NOT_ARMED.0 - 1)));
        d.due = due.unwrap_or(NOT_ARMED);
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

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn a_delivery_takes_48_bytes_and_its_timer_arms_and_disarms() {
        assert!(std::mem::size_of::<Delivery>() <= 48);
        let m = MskName {
            key_domain: crate::ids::KeyDomainId([1, 2, 3]),
            msk_id: crate::ids::MskId {
                key_group: 1,
                key_number: 1,
            },
        };
        let mut d = Delivery::new(m, Step::Deliver);
        assert_eq!(d.sent(), None);
        let mut t = Timers::default();
        t.set(&mut d, 7, Some(Timestamp(u64::MAX)));
        assert_eq!(t.next_deadline(), Some(Timestamp(u64::MAX - 1)));
        t.set(&mut d, 7, Some(Timestamp(5)));
        assert_eq!(t.due(Timestamp(5), 10), vec![(7, m)]);
        t.set(&mut d, 7, None);
        assert_eq!((t.len(), t.next_deadline()), (0, None));
        d.record_counter(4);
        d.record_counter(6);
        d.new_round(Step::Activate);
        assert_eq!(d.counter_round(4), Some(false));
        assert_eq!(d.counter_round(3), None);
        d.record_counter(9);
        assert_eq!(
            (d.counter_round(9), d.counter_round(6)),
            (Some(true), Some(false))
        );
    }
}
