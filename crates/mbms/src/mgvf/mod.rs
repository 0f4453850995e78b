//! The MGV-F: the UE function that validates every MIKEY message and hands
//! MTKs to the ME (seed 004 6.5.3 and 6.5.4, seed 000 6.3.2.1, seeds 002/003
//! 6.3.2.2.4, as `PROFILE.md` section 7 states them).
//!
//! Every failure is a typed [`MgvError`] and leaves the stored state exactly
//! as it was: the MGV-F computes the next state on a copy and commits it to
//! the [`MgvStore`] only when the whole message was accepted.

pub mod store;

use std::collections::BTreeMap;
use std::time::Duration;

use mikey::SrtpIdEntry;

use crate::ids::{KeyGroupName, MskId, MskName, MtkId, MukId};
use crate::keys::{Mtk, Muk};
use crate::messages::{MskAck, MskEnvelope, MtkEnvelope, ProfileError, Streaming};
use crate::profile::{
    MAX_MSKS_PER_KEY_GROUP, MSK_REACK_INTERVAL, OLDER_LAST_USED_MUK_FOR_PULL_ONLY,
};
use store::{
    lowest_key_number, InstalledMuks, MgvState, MgvStore, MskRecord, MukRecord, StoreError,
};

/// Whether a new MSK can be stored in its key group.
enum Room {
    /// Stored; `replaced` is the lower-numbered MSK deleted for it.
    Free { replaced: Option<MskName> },
    /// The arriving MSK is the older one: not stored.
    Superseded,
}

/// Why the MGV-F refused a message. The stored state is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum MgvError {
    /// Not a well-formed message of the MBMS profile.
    #[error("malformed: {0}")]
    Malformed(ProfileError),
    /// IDr names neither the current MUK of that BM-SC nor the one before
    /// (`PROFILE.md` section 7), and the message is not a solicited pull
    /// under another MUK the UE holds or one the last MUK used by that
    /// BM-SC checks.
    #[error("unknown MUK {0}")]
    UnknownMuk(MukId),
    /// The counter is not greater than the stored one.
    #[error("replay: counter {counter} is not greater than the last accepted {last}")]
    Replay {
        /// The message's counter.
        counter: u32,
        /// The stored counter.
        last: u32,
    },
    /// The MAC does not verify.
    #[error("MAC verification failed")]
    BadMac,
    /// The MTK message names an MSK the UE does not hold.
    #[error("unknown MSK {0}")]
    UnknownMsk(MskName),
    /// The MSK is inactive (SEQs > SEQu): waiting for its activation.
    #[error("MSK {0} is inactive")]
    InactiveMsk(MskName),
    /// SEQp <= SEQs or SEQp > SEQu (RFC 1982).
    #[error("MTK ID {mtk_id} outside the window ({seq_s}, {seq_u}] of MSK {msk}")]
    MtkIdOutOfWindow {
        /// The MSK.
        msk: MskName,
        /// SEQp.
        mtk_id: MtkId,
        /// SEQs.
        seq_s: MtkId,
        /// SEQu.
        seq_u: MtkId,
    },
    /// The MGV-S could not store the new state.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl From<ProfileError> for MgvError {
    fn from(e: ProfileError) -> Self {
        match e {
            ProfileError::MacMismatch => MgvError::BadMac,
            other => MgvError::Malformed(other),
        }
    }
}

/// What an accepted MSK message did.
#[derive(Debug, PartialEq, Eq)]
pub enum MskOutcome {
    /// An MSK was stored or its key validity updated.
    Stored {
        /// The MSK.
        msk: MskName,
        /// SEQs > SEQu: stored but unusable until activated (seed 004 6.3.2.3.3).
        inactive: bool,
        /// The MSK of the key group deleted to keep at most two: the one
        /// with the lowest Key Number (RFC 1982; seed 000 6.3.2.1).
        replaced: Option<MskName>,
        /// The acknowledgement to send to the BM-SC when the V bit was set.
        ack: Option<Vec<u8>>,
    },
    /// The message was valid (its counter is recorded) but its MSK has a
    /// lower Key Number than the two MSKs the UE holds for that key group,
    /// so the key was not stored (`PROFILE.md` section 7: "the older is
    /// deleted, whatever the order of arrival"). The acknowledgement is
    /// sent all the same when the V bit asks for it.
    Superseded {
        /// The MSK that was not stored.
        msk: MskName,
        /// The acknowledgement, when the V bit is set.
        ack: Option<Vec<u8>>,
    },
    /// A solicited pull: the ME must request the current MSK of this key
    /// group (seeds 002/003 6.3.2.2.4). No key was stored.
    SolicitedPull {
        /// The key group.
        key_group: KeyGroupName,
    },
    /// An identical copy of the last accepted message (the BM-SC resent it
    /// because our acknowledgement was lost): nothing changed; here is the
    /// acknowledgement again (seed 004 6.4.2 lets the BM-SC resend).
    Duplicate {
        /// The acknowledgement, when the V bit is set.
        ack: Option<Vec<u8>>,
    },
    /// An identical copy of the last accepted message that asks for an
    /// acknowledgement, but this MSK was acknowledged again less than
    /// [`MSK_REACK_INTERVAL`] ago: nothing changed and nothing is sent
    /// (`PROFILE.md` section 7, revised). Not an attack indication.
    DuplicateSuppressed {
        /// The MSK the message names.
        msk: MskName,
    },
}

/// An accepted MTK, handed to the ME.
#[derive(Debug, PartialEq, Eq)]
pub struct MtkOutcome {
    /// The protecting MSK.
    pub msk: MskName,
    /// The MTK ID.
    pub mtk_id: MtkId,
    /// The MTK and its salt.
    pub mtk: Mtk,
    /// CSB ID of the message (download key label).
    pub csb_id: u32,
    /// RAND of the message (download key label).
    pub rand: [u8; 16],
    /// Streaming parameters (SRTP-ID map with SSRC and ROC, SRTP policy).
    pub streaming: Option<Streaming>,
}

impl MtkOutcome {
    /// The SRTP streams of the message (empty for download).
    pub fn streams(&self) -> &[SrtpIdEntry] {
        self.streaming.as_ref().map_or(&[], |s| &s.streams)
    }
}

/// The MGV-F over an MGV-S.
#[derive(Debug)]
pub struct MgvF<S: MgvStore> {
    store: S,
    /// When each MSK was last acknowledged again for an identical resend
    /// (monotonic time as passed in). Volatile, not part of the MGV-S: it
    /// only limits the rate of re-acknowledgements.
    reacked: BTreeMap<MskName, Duration>,
}

impl<S: MgvStore> MgvF<S> {
    /// An MGV-F over `store`.
    pub fn new(store: S) -> Self {
        MgvF {
            store,
            reacked: BTreeMap::new(),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The current state.
    pub fn state(&self) -> &MgvState {
        self.store.state()
    }

    /// Install a MUK (after GBA bootstrapping): it becomes the current MUK
    /// of its BM-SC (IDi) and the current one before becomes the previous
    /// one (`PROFILE.md` section 7: an MSK message may name "its current
    /// one or the one before"). Of that BM-SC's other MUKs only the one it
    /// last used successfully stays, for a solicited pull (seeds 002/003
    /// 6.3.2.2.4); the rest are dropped. Installing the current MUK again
    /// changes nothing but the key.
    pub fn add_muk(&mut self, muk_id: MukId, muk: Muk) -> Result<(), MgvError> {
        let mut next = self.store.state().clone();
        let last_used = next.last_used_muk.get(&muk_id.idi).cloned();
        let previous = match next.installed_muks.get(&muk_id.idi) {
            Some(i) if i.current == muk_id => i.previous.clone(),
            Some(i) => Some(i.current.clone()),
            None => None,
        };
        next.muks.retain(|id, _| {
            id.idi != muk_id.idi
                || *id == muk_id
                || Some(id) == previous.as_ref()
                || Some(id) == last_used.as_ref()
        });
        let counter = next.muks.get(&muk_id).and_then(|m| m.counter);
        let last_mac = next.muks.get(&muk_id).and_then(|m| m.last_mac);
        next.installed_muks.insert(
            muk_id.idi.clone(),
            InstalledMuks {
                current: muk_id.clone(),
                previous,
            },
        );
        next.muks.insert(
            muk_id.clone(),
            MukRecord {
                muk_id,
                muk,
                counter,
                last_mac,
            },
        );
        Ok(self.store.commit(next)?)
    }

    /// Delete a MUK (e.g. when its B-TID expired).
    pub fn delete_muk(&mut self, muk_id: &MukId) -> Result<(), MgvError> {
        let mut next = self.store.state().clone();
        next.muks.remove(muk_id);
        if next.last_used_muk.get(&muk_id.idi) == Some(muk_id) {
            next.last_used_muk.remove(&muk_id.idi);
        }
        // The previous MUK moves up when the current one goes.
        if let Some(i) = next.installed_muks.get_mut(&muk_id.idi) {
            if i.previous.as_ref() == Some(muk_id) {
                i.previous = None;
            } else if i.current == *muk_id {
                match i.previous.take() {
                    Some(p) => i.current = p,
                    None => {
                        next.installed_muks.remove(&muk_id.idi);
                    }
                }
            }
        }
        Ok(self.store.commit(next)?)
    }

    /// Delete the MSKs of a key group (after deregistration; TS 31.102 "MSK
    /// deletion" by Key Domain ID and Key Group). Returns how many.
    pub fn delete_msks(&mut self, key_group: KeyGroupName) -> Result<usize, MgvError> {
        let mut next = self.store.state().clone();
        let before = next.msks.len();
        next.msks.retain(|n, _| n.key_group() != key_group);
        let removed = before - next.msks.len();
        self.store.commit(next)?;
        Ok(removed)
    }

    /// The MSK records of a key group, the older (lower Key Number, RFC
    /// 1982) first.
    pub fn msks_of(&self, key_group: KeyGroupName) -> Vec<&MskRecord> {
        self.state().msks_of(key_group)
    }

    /// Find the MUK of a message by its MUK ID (IDi, IDr; seed 004 6.5.3
    /// via clause 6.1): the BM-SC's current MUK or the one installed before
    /// it (`PROFILE.md` section 7). Only a solicited pull (Key Number 0) may
    /// use any other MUK the UE holds (as long as
    /// [`OLDER_LAST_USED_MUK_FOR_PULL_ONLY`]), or fall back to the MUK last
    /// used successfully by that BM-SC (seeds 002/003 6.3.2.2.4;
    /// `PROFILE.md` section 7, revised).
    fn find_muk<'s>(
        state: &'s MgvState,
        muk_id: &MukId,
        solicited_pull: bool,
    ) -> Option<&'s MukRecord> {
        let installed = state
            .installed_muks
            .get(&muk_id.idi)
            .is_some_and(|i| i.names(muk_id));
        if installed || !OLDER_LAST_USED_MUK_FOR_PULL_ONLY {
            if let Some(m) = state.muks.get(muk_id) {
                return Some(m);
            }
        }
        if !solicited_pull {
            return None;
        }
        state.muks.get(muk_id).or_else(|| {
            state
                .last_used_muk
                .get(&muk_id.idi)
                .and_then(|id| state.muks.get(id))
        })
    }

    /// Process an MSK message (seed 004 6.5.3; `PROFILE.md` section 7):
    /// identify the MUK from IDr, check the counter, verify the MAC, only
    /// then decrypt and store; at most two MSKs per key group, the lowest
    /// Key Number goes; Key Number 0 is a solicited pull; an
    /// acknowledgement is produced when V is set. `now` is a monotonic time
    /// (any fixed origin) used only to limit the re-acknowledgements of
    /// identical resends to one per [`MSK_REACK_INTERVAL`] per MSK.
    pub fn process_msk_message(
        &mut self,
        bytes: &[u8],
        now: Duration,
    ) -> Result<MskOutcome, MgvError> {
        let env = MskEnvelope::parse(bytes)?;
        let state = self.store.state();
        let rec = Self::find_muk(state, &env.muk_id, env.is_solicited_pull())
            .ok_or_else(|| MgvError::UnknownMuk(env.muk_id.clone()))?;
        if let Some(last) = rec.counter {
            if env.counter <= last {
                if env.counter == last && rec.last_mac.as_ref() == Some(&kemac_mac(bytes)) {
                    // The same counter and MAC as the last accepted message
                    // under this MUK, and the MAC verifies: the same bytes
                    // (HMAC-SHA-1 covers everything before the MAC). An
                    // identical resend changes nothing.
                    let opened = env.open(&rec.muk)?;
                    if !env.v {
                        return Ok(MskOutcome::Duplicate { ack: None });
                    }
                    let due = self
                        .reacked
                        .get(&env.msk)
                        .is_none_or(|t| now.saturating_sub(*t) >= MSK_REACK_INTERVAL);
                    if !due {
                        return Ok(MskOutcome::DuplicateSuppressed { msk: env.msk });
                    }
                    let ack = MskAck::for_message(&env)
                        .build(&opened.keys.auth_key, &opened.initiator)?;
                    self.reacked
                        .retain(|_, t| now.saturating_sub(*t) < MSK_REACK_INTERVAL);
                    self.reacked.insert(env.msk, now);
                    return Ok(MskOutcome::Duplicate { ack: Some(ack) });
                }
                return Err(MgvError::Replay {
                    counter: env.counter,
                    last,
                });
            }
        }
        let opened = env.open(&rec.muk)?;
        let used_muk_id = rec.muk_id.clone();

        let mut next = state.clone();
        if let Some(m) = next.muks.get_mut(&used_muk_id) {
            m.counter = Some(env.counter);
            m.last_mac = Some(kemac_mac(bytes));
        }
        // The MUK the BM-SC used before, kept only for being the last used
        // one (neither current nor previous), has no more use.
        if let Some(old) = next
            .last_used_muk
            .insert(used_muk_id.idi.clone(), used_muk_id.clone())
        {
            let installed = next
                .installed_muks
                .get(&old.idi)
                .is_some_and(|i| i.names(&old));
            if old != used_muk_id && !installed {
                next.muks.remove(&old);
            }
        }

        let ack = || -> Result<Option<Vec<u8>>, MgvError> {
            Ok(if env.v {
                Some(MskAck::for_message(&env).build(&opened.keys.auth_key, &opened.initiator)?)
            } else {
                None
            })
        };
        let outcome = match &opened.key {
            None => MskOutcome::SolicitedPull {
                key_group: env.msk.key_group(),
            },
            Some(k) => {
                if let Some(existing) = next.msks.get_mut(&env.msk) {
                    // Same MSK: the message may update the key validity
                    // (seed 004 6.5.3 NOTE; the activation of the 4-way
                    // procedure). Its MTK counter and the highest accepted
                    // MTK ID are kept: no MTK ID is ever re-opened
                    // (`PROFILE.md` section 7, revised).
                    existing.msk = k.msk.clone();
                    existing.seq_u = k.seq_u;
                    existing.seq_s = match existing.accepted {
                        // SEQs does not go back below an accepted MTK ID
                        // where the new window still reaches above it.
                        Some(a)
                            if !k.is_inactive()
                                && a.0.gt(k.seq_s.0)
                                && (a == k.seq_u || a.0.lt(k.seq_u.0)) =>
                        {
                            a
                        }
                        // Activation, or a window entirely at or below
                        // the accepted IDs: the message's window as it is
                        // (`accepted` still refuses the old IDs).
                        _ => k.seq_s,
                    };
                    let inactive = existing.is_inactive();
                    MskOutcome::Stored {
                        msk: env.msk,
                        inactive,
                        replaced: None,
                        ack: ack()?,
                    }
                } else {
                    match Self::make_room(&mut next, env.msk) {
                        Room::Superseded => MskOutcome::Superseded {
                            msk: env.msk,
                            ack: ack()?,
                        },
                        Room::Free { replaced } => {
                            next.msks.insert(
                                env.msk,
                                MskRecord {
                                    name: env.msk,
                                    msk: k.msk.clone(),
                                    seq_s: k.seq_s,
                                    seq_u: k.seq_u,
                                    counter: None,
                                    accepted: None,
                                },
                            );
                            MskOutcome::Stored {
                                msk: env.msk,
                                inactive: k.is_inactive(),
                                replaced,
                                ack: ack()?,
                            }
                        }
                    }
                }
            }
        };
        self.store.commit(next)?;
        Ok(outcome)
    }

    /// Seed 000 6.3.2.1 (`PROFILE.md` section 7, revised): at most
    /// [`MAX_MSKS_PER_KEY_GROUP`] MSKs per key group. When a new MSK would
    /// make one more, the one with the lowest Key Number (RFC 1982) is the
    /// older and goes, whatever the order of arrival; if that is the
    /// arriving MSK, it is not stored. If no Key Number is below all the
    /// others (RFC 1982 leaves the comparison undefined), the MSKs held are
    /// kept and the arriving one is not stored: an MSK the UE holds is
    /// never deleted on an undefined comparison.
    fn make_room(next: &mut MgvState, arriving: MskName) -> Room {
        let group = arriving.key_group();
        let mut numbers: Vec<u16> = next
            .msks
            .keys()
            .filter(|n| n.key_group() == group)
            .map(|n| n.msk_id.key_number)
            .collect();
        numbers.push(arriving.msk_id.key_number);
        let mut replaced = None;
        while numbers.len() > MAX_MSKS_PER_KEY_GROUP {
            match lowest_key_number(&numbers) {
                Some(l) if l != arriving.msk_id.key_number => {
                    numbers.retain(|&n| n != l);
                    let name = MskName {
                        key_domain: group.key_domain,
                        msk_id: MskId::new(group.key_group, l),
                    };
                    next.msks.remove(&name);
                    replaced = Some(name);
                }
                _ => return Room::Superseded,
            }
        }
        Room::Free { replaced }
    }

    /// Process an MTK message (seed 004 6.5.4; `PROFILE.md` section 7): find
    /// the MSK; refuse an inactive MSK, SEQp <= SEQs, SEQp > SEQu, SEQp at
    /// or below an MTK ID accepted before under this MSK, or a counter not
    /// greater than the stored one; then verify the MAC; on success set
    /// SEQs = SEQp, store the counter and hand the MTK to the ME.
    pub fn process_mtk_message(&mut self, bytes: &[u8]) -> Result<MtkOutcome, MgvError> {
        let env = MtkEnvelope::parse(bytes)?;
        let state = self.store.state();
        let rec = state
            .msks
            .get(&env.msk)
            .ok_or(MgvError::UnknownMsk(env.msk))?;
        if rec.is_inactive() {
            return Err(MgvError::InactiveMsk(env.msk));
        }
        let seq_p = env.mtk_id.0;
        // RFC 1982: an undefined comparison is neither greater nor less, so
        // "SEQp > SEQs" and "SEQp <= SEQu" must both hold positively.
        let above_s = seq_p.gt(rec.seq_s.0);
        let within_u = seq_p == rec.seq_u.0 || seq_p.lt(rec.seq_u.0);
        // `PROFILE.md` section 7 (revised): an MTK ID at or below one
        // accepted before stays refused, whatever window the MSK now has.
        let above_accepted = rec.accepted.is_none_or(|a| seq_p.gt(a.0));
        if !(above_s && within_u && above_accepted) {
            return Err(MgvError::MtkIdOutOfWindow {
                msk: env.msk,
                mtk_id: env.mtk_id,
                seq_s: match rec.accepted {
                    Some(a) if !above_accepted => a,
                    _ => rec.seq_s,
                },
                seq_u: rec.seq_u,
            });
        }
        if let Some(last) = rec.counter {
            if env.counter <= last {
                return Err(MgvError::Replay {
                    counter: env.counter,
                    last,
                });
            }
        }
        let mtk = env.open(&rec.msk)?;
        let mut next = state.clone();
        if let Some(m) = next.msks.get_mut(&env.msk) {
            m.seq_s = env.mtk_id;
            m.accepted = Some(env.mtk_id);
            m.counter = Some(env.counter);
        }
        self.store.commit(next)?;
        Ok(MtkOutcome {
            msk: env.msk,
            mtk_id: env.mtk_id,
            mtk,
            csb_id: env.csb_id(),
            rand: env.rand,
            streaming: env.streaming.clone(),
        })
    }
}

/// The KEMAC MAC of an MSK message: its last 20 bytes (the KEMAC with
/// HMAC-SHA-1-160 is the last payload, as `MskEnvelope::parse` checked).
/// Equal MACs under the same MUK mean the same message.
fn kemac_mac(bytes: &[u8]) -> [u8; 20] {
    let mut m = [0u8; 20];
    if let Some(tail) = bytes.len().checked_sub(20).map(|at| &bytes[at..]) {
        m.copy_from_slice(tail);
    }
    m
}
