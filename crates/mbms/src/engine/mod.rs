//! The BM-SC key engine (network side, sans-IO).
//!
//! [`Engine`] holds the key groups (current and next MSK, MTK ID windows, MTK
//! messages), the UEs (MUK, replay counter), and the delivery of each MSK to
//! each UE (push, retransmission, acknowledgement, the 4-way procedure). It
//! sends and receives nothing and reads no clock: the caller (the BM-SC
//! server, a thin async shell) passes the time ([`Timestamp`]) and a
//! cryptographic RNG, carries out the returned [`Action`]s (send a MIKEY
//! message over UDP, write a charging record), feeds acknowledgements back
//! with [`Engine::on_ack`], and calls [`Engine::poll`] at
//! [`Engine::next_deadline`]. Persistent state goes through an
//! [`EngineStore`].
//!
//! # Design decisions
//!
//! * **MTK ID windows.** Each MSK has its own window `(SEQs, SEQu]` of
//!   [`KeyGroupConfig::window_len`] MTK IDs (the MGV-F accepts SEQp only if
//!   SEQs < SEQp <= SEQu, seed 004 6.5.4). Consecutive MSKs get consecutive
//!   windows (the next MSK's SEQs is the current MSK's SEQu), so MTK IDs keep
//!   increasing (RFC 1982) across rotations and an MTK ID alone orders the
//!   traffic keys of a key group. [`Engine::next_mtk`] issues the IDs of the
//!   current MSK's window in order and returns
//!   [`EngineError::WindowExhausted`] at its end: rotate then.
//! * **Retransmissions are rebuilt**, not resent byte for byte: each attempt
//!   is a new MSK message with a fresh counter and RAND. The MGV-F accepts an
//!   MSK message only if its counter is greater than the last it accepted
//!   under that MUK and never answers a replay (`PROFILE.md` section 7,
//!   DIGEST 6.4.8). Identical bytes would therefore never be acknowledged when
//!   the *acknowledgement* was lost (the UE already accepted the counter), nor
//!   when the UE accepted a later message to the same MUK first (two MSKs in
//!   flight, e.g. current and next). A rebuilt message with a new counter is
//!   accepted (the same MSK ID and key simply updates the window) and
//!   acknowledged. An acknowledgement of any attempt of the current step is
//!   accepted: each attempt's counter, auth_key and IDi/IDr/T are kept.
//! * **Counters are reserved in blocks** of [`EngineConfig::counter_block`]:
//!   the new high-water mark is persisted through
//!   [`EngineStore::reserve_muk_counters`] before any counter of the block is
//!   put in a message; after a crash the engine resumes above the persisted
//!   mark (skipping at most one block), so a (MUK, counter) pair never repeats.
//!   Key group state (MSKs, windows, last MTK ID, MTK-message counter) is
//!   saved with [`EngineStore::save_key_group`] before the MTK message or the
//!   rotated MSK is returned.
//! * **4-way procedure** (seed 004 6.3.2.3.3) for key groups with
//!   [`KeyGroupConfig::charging`]: step 1 sends the MSK inactive (V = 1,
//!   `profile::INACTIVE_WINDOW`); its acknowledgement yields an
//!   [`Action::ChargingRecord`] and schedules step 3, the activation (same MSK
//!   ID and key, the real window, V = 1); its acknowledgement ends the
//!   delivery. Each step is retransmitted like a plain push. A UE is charged
//!   once per MSK: the engine remembers who was charged for the current and
//!   next MSKs (also across an unsubscription), a later delivery or request
//!   of a charged MSK is its activation (seed 004 6.3.2.3.3: the UE may
//!   request the MSK again when the activation is lost), and after a restart
//!   the caller restores the charges from its durable charging records
//!   ([`Engine::mark_charged`]).
//! * **A request is answered at once** (seed 002 6.3.2.2.1): an authorised
//!   MSK request makes the delivery due now whatever its state (waiting for
//!   a retransmission timer, given up, acknowledged), and its retransmission
//!   starts afresh; [`Engine::poll`] then sends a new message.
//! * **Solicited pull** (seeds 002/003 6.3.2.2.4): built with the last MUK
//!   the engine knows for the UE, V never set, not tracked.
//! * **UEs are identified** by a [`UeId`] chosen by the caller (the
//!   subscriber's IMPI: charging records name it). Acknowledgements are
//!   matched by their IDr (B-TID) and counter, and authenticated by their
//!   MAC, never by the address they came from.
//! * Delivery state lives in memory only: the caller restores the outcome of
//!   deliveries after a restart ([`Engine::restore_delivery`],
//!   [`Engine::mark_charged`]); UEs that miss an MSK fetch it again with the
//!   basic MSK request (seed 002 6.3.2.2.1).

mod counter;
mod delivery;
mod keygroup;
mod store;
mod time;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::ids::{KeyGroupName, MskName, MtkId, MukId};
use crate::keys::Muk;
use crate::messages::{MskAck, MskKeyData, MskMessage, ProfileError, Streaming};
use crate::profile::{INACTIVE_WINDOW, RAND_LEN};

pub use delivery::{DeliveryState, DeliveryStatus, Step};
pub use keygroup::{
    KeyGroupConfig, KeyGroupInfo, MskInfo, MtkOutput, DEFAULT_WINDOW_LEN, MAX_WINDOW_LEN,
};
pub use store::{EngineStore, KeyGroupSnapshot, MemoryStore, MskSnapshot, StoreError};
pub use time::{RetransmitPolicy, Timestamp};

use counter::MukCounters;
use delivery::{Attempt, Deliveries, Key, MIN_ATTEMPTS_KEPT};

/// Default size of a counter reservation block ([`EngineConfig::counter_block`]).
pub const DEFAULT_COUNTER_BLOCK: u32 = 32;

/// A UE as the caller names it: the subscriber identity (e.g. the IMPI the
/// BSF returned for the UE's B-TID). Charging records carry it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct UeId(pub String);

impl fmt::Display for UeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for UeId {
    fn from(s: &str) -> Self {
        UeId(s.to_owned())
    }
}

/// Engine-wide settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// MUK counters reserved (persisted) at a time. Larger blocks mean fewer
    /// store writes; a crash skips at most one block.
    pub counter_block: u32,
    /// Retransmission of unacknowledged MSK messages.
    pub retransmit: RetransmitPolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            counter_block: DEFAULT_COUNTER_BLOCK,
            retransmit: RetransmitPolicy::default(),
        }
    }
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this MIKEY MSK message to the UE over UDP (`PROFILE.md` section
    /// 3: to the source address of its authenticated HTTP requests).
    SendMikey {
        /// The UE.
        ue: UeId,
        /// The MSK delivered (Key Number 0 for a solicited pull).
        msk: MskName,
        /// The delivery step; `None` for a solicited pull.
        step: Option<Step>,
        /// The MUK counter of the message.
        counter: u32,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A step of a delivery was acknowledged.
    Acknowledged {
        /// The UE.
        ue: UeId,
        /// The MSK.
        msk: MskName,
        /// The acknowledged step.
        step: Step,
    },
    /// Charge the subscriber for the MSK (4-way step 1 acknowledged, seed
    /// 004 6.3.2.3.3).
    ChargingRecord(ChargingRecord),
    /// No acknowledgement after the last attempt.
    GaveUp {
        /// The UE.
        ue: UeId,
        /// The MSK.
        msk: MskName,
        /// The unacknowledged step.
        step: Step,
        /// Transmissions of that step.
        attempts: u32,
    },
}

/// A charging record: the subscriber acknowledged the (inactive) MSK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargingRecord {
    /// The subscriber.
    pub ue: UeId,
    /// The MUK ID (BM-SC FQDN, B-TID) of the acknowledged message.
    pub muk_id: MukId,
    /// The MSK.
    pub msk: MskName,
    /// When the acknowledgement was received.
    pub time: Timestamp,
    /// The counter of the acknowledged message.
    pub counter: u32,
}

/// An engine operation failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// The key group is not open in this engine.
    #[error("unknown key group {0}")]
    UnknownKeyGroup(KeyGroupName),
    /// The UE is not registered.
    #[error("unknown UE {0}")]
    UnknownUe(UeId),
    /// The UE is not subscribed to the key group.
    #[error("UE {ue} is not subscribed to key group {group}")]
    NotSubscribed {
        /// The UE.
        ue: UeId,
        /// The key group.
        group: KeyGroupName,
    },
    /// The MSK is neither the current nor the next MSK of its key group.
    #[error("unknown MSK {0}")]
    UnknownMsk(MskName),
    /// Every MTK ID of the current MSK's window has been issued: rotate.
    #[error("MTK ID window of MSK {msk} exhausted (SEQu {seq_u}): rotate the MSK")]
    WindowExhausted {
        /// The current MSK.
        msk: MskName,
        /// Its upper limit.
        seq_u: MtkId,
    },
    /// The MTK-message counter of the MSK is at its maximum: rotate.
    #[error("MTK message counter of MSK {msk} exhausted: rotate the MSK")]
    MtkCounterExhausted {
        /// The MSK.
        msk: MskName,
    },
    /// The replay counter of the MUK is at its maximum: the UE must
    /// bootstrap again (new B-TID, new MUK).
    #[error("replay counter of MUK {muk} exhausted: the UE must bootstrap again")]
    MukCounterExhausted {
        /// The MUK.
        muk: MukId,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A message could not be built.
    #[error("building a MIKEY message: {0}")]
    Message(ProfileError),
}

/// An acknowledgement was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// Not an MSK acknowledgement of the profile.
    #[error("not an MSK acknowledgement: {0}")]
    Malformed(ProfileError),
    /// No message requesting an acknowledgement was sent with this B-TID and
    /// counter (or its delivery was removed: UE gone, MSK retired).
    #[error("no outstanding MSK message with B-TID {btid} and counter {counter}")]
    Unmatched {
        /// IDr of the acknowledgement.
        btid: String,
        /// Its counter.
        counter: u32,
    },
    /// The MAC does not verify (forged or corrupted).
    #[error("acknowledgement MAC does not verify")]
    BadMac,
    /// Authentic, but it names another MSK than the acknowledged message.
    #[error("acknowledgement names MSK {got}, the message delivered {expected}")]
    WrongMsk {
        /// The MSK of the message.
        expected: MskName,
        /// The MSK named in the acknowledgement.
        got: MskName,
    },
    /// Authentic, but for a step or round already settled (a replayed or
    /// duplicate acknowledgement, or one of a superseded step).
    #[error("stale acknowledgement for MSK {msk} of UE {ue}")]
    Stale {
        /// The UE.
        ue: UeId,
        /// The MSK.
        msk: MskName,
    },
}

struct Group {
    cfg: KeyGroupConfig,
    state: KeyGroupSnapshot,
    members: BTreeSet<UeId>,
}

impl Group {
    fn msk(&self, name: &MskName) -> Option<&MskSnapshot> {
        [&self.state.current, &self.state.next]
            .into_iter()
            .find(|m| m.name == *name)
    }
}

struct Ue {
    muk_id: MukId,
    muk: Muk,
    groups: BTreeSet<KeyGroupName>,
}

/// The BM-SC key engine. See the [module documentation](self).
pub struct Engine<S: EngineStore> {
    config: EngineConfig,
    store: S,
    groups: BTreeMap<KeyGroupName, Group>,
    ues: BTreeMap<UeId, Ue>,
    deliveries: Deliveries,
    /// (UE, MSK) pairs whose subscriber was charged (4-way step 1
    /// acknowledged, or restored with [`Engine::mark_charged`]), for the
    /// current and next MSKs only: kept when a delivery ends or the UE leaves,
    /// dropped when the MSK retires.
    charged: BTreeSet<Key>,
    counters: MukCounters,
}

impl<S: EngineStore> fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("key_groups", &self.groups.keys().collect::<Vec<_>>())
            .field("ues", &self.ues.len())
            .field("deliveries", &self.deliveries.len())
            .finish_non_exhaustive()
    }
}

fn random16(rng: &mut (impl RngCore + CryptoRng)) -> [u8; RAND_LEN] {
    let mut r = [0u8; RAND_LEN];
    rng.fill_bytes(&mut r);
    r
}

/// What `poll` does with a due delivery.
enum Plan {
    Send {
        key: Key,
        attempt: u32,
        muk_id: MukId,
    },
    GiveUp {
        key: Key,
        attempts: u32,
    },
    Drop {
        key: Key,
    },
}

impl<S: EngineStore> Engine<S> {
    /// An engine over `store`, with no key group and no UE. After a restart,
    /// reopen the key groups ([`open_key_group`](Self::open_key_group)) and
    /// register the UEs again; MUK counters resume from the store.
    pub fn new(config: EngineConfig, store: S) -> Result<Self, EngineError> {
        config
            .retransmit
            .validate()
            .map_err(EngineError::InvalidConfig)?;
        if config.counter_block == 0 {
            return Err(EngineError::InvalidConfig(
                "counter_block must be at least 1",
            ));
        }
        Ok(Engine {
            config,
            store,
            groups: BTreeMap::new(),
            ues: BTreeMap::new(),
            deliveries: Deliveries::default(),
            charged: BTreeSet::new(),
            counters: MukCounters::new(config.counter_block),
        })
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Stop the engine and get the store back (what survives a crash).
    pub fn into_store(self) -> S {
        self.store
    }

    // -----------------------------------------------------------------
    // Key groups

    /// Open a key group: restore it from the store, or create its first two
    /// MSKs (Key Numbers 1 and 2, windows `(0, L]` and `(L, 2L]`) and save
    /// them. Opening an open group only changes its configuration (which
    /// applies to windows of MSKs created later).
    pub fn open_key_group(
        &mut self,
        name: KeyGroupName,
        cfg: KeyGroupConfig,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<KeyGroupInfo, EngineError> {
        cfg.validate().map_err(EngineError::InvalidConfig)?;
        if let Some(g) = self.groups.get_mut(&name) {
            g.cfg = cfg;
            return Ok(info(&g.state));
        }
        let state = match self.store.load_key_group(&name)? {
            Some(s) => {
                keygroup::check_snapshot(&s, &name)?;
                s
            }
            None => {
                let s = keygroup::create(name, &cfg, rng);
                self.store.save_key_group(&s)?;
                s
            }
        };
        let i = info(&state);
        self.groups.insert(
            name,
            Group {
                cfg,
                state,
                members: BTreeSet::new(),
            },
        );
        Ok(i)
    }

    /// The MSKs of a key group and their windows.
    pub fn key_group(&self, name: &KeyGroupName) -> Option<KeyGroupInfo> {
        self.groups.get(name).map(|g| info(&g.state))
    }

    /// Rotate the MSK (seed 000 6.3.2.3.1): the next MSK becomes current, a
    /// new next MSK is created with the following window and saved, and
    /// pushed to every subscribed UE (as is the new current MSK to UEs that
    /// do not have it). Deliveries of the retired MSK end.
    pub fn rotate(
        &mut self,
        name: &KeyGroupName,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<KeyGroupInfo, EngineError> {
        let g = self
            .groups
            .get_mut(name)
            .ok_or(EngineError::UnknownKeyGroup(*name))?;
        let new = keygroup::rotated(&g.state, &g.cfg, rng);
        self.store.save_key_group(&new)?;
        let retired = g.state.current.name;
        g.state = new;
        let (current, next) = (g.state.current.name, g.state.next.name);
        let four_way = g.cfg.charging;
        let members: Vec<UeId> = g.members.iter().cloned().collect();
        let rotated = info(&g.state);
        self.deliveries.remove_where(|(_, m)| *m == retired);
        self.charged.retain(|(_, m)| *m != retired);
        for ue in members {
            for m in [current, next] {
                let key = (ue.clone(), m);
                let charged = self.charged.contains(&key);
                self.deliveries.ensure(&key, four_way, charged, now);
            }
        }
        Ok(rotated)
    }

    /// Issue the next MTK of the key group under its current MSK and build
    /// its MTK message (`PROFILE.md` section 6): download when `streaming` is
    /// `None`, else streaming with the SRTP-ID map and SRTP policy given. The
    /// MTK ID is the one after the last issued (inside `(SEQs, SEQu]`), the
    /// counter the one after the MSK's last MTK-message counter; the new
    /// state is saved before returning.
    pub fn next_mtk(
        &mut self,
        name: &KeyGroupName,
        streaming: Option<Streaming>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<MtkOutput, EngineError> {
        let g = self
            .groups
            .get_mut(name)
            .ok_or(EngineError::UnknownKeyGroup(*name))?;
        let (after, out) = keygroup::issue_mtk(&g.state, streaming, rng)?;
        self.store.save_key_group(&after)?;
        g.state = after;
        Ok(out)
    }

    // -----------------------------------------------------------------
    // UEs

    /// Register a UE with its current MUK, or give a registered UE a new MUK
    /// (after it bootstrapped again). With a new MUK, deliveries in flight are
    /// restarted with it (the UE may no longer hold the old MUK);
    /// acknowledgements of messages sent under the old MUK remain valid.
    pub fn register_ue(&mut self, ue: UeId, muk_id: MukId, muk: Muk, now: Timestamp) {
        match self.ues.get_mut(&ue) {
            Some(u) => {
                let changed = u.muk_id != muk_id;
                u.muk_id = muk_id;
                u.muk = muk;
                if changed {
                    let keys: Vec<Key> = self
                        .deliveries
                        .keys()
                        .filter(|(k, _)| *k == ue)
                        .cloned()
                        .collect();
                    for key in keys {
                        if self
                            .deliveries
                            .get(&key)
                            .is_some_and(|d| d.state.in_flight())
                        {
                            self.deliveries
                                .set_state(&key, DeliveryState::Pending, Some(now));
                        }
                    }
                }
            }
            None => {
                self.ues.insert(
                    ue,
                    Ue {
                        muk_id,
                        muk,
                        groups: BTreeSet::new(),
                    },
                );
            }
        }
    }

    /// Forget a UE, its subscriptions and its deliveries.
    pub fn remove_ue(&mut self, ue: &UeId) {
        if let Some(u) = self.ues.remove(ue) {
            for g in u.groups {
                if let Some(g) = self.groups.get_mut(&g) {
                    g.members.remove(ue);
                }
            }
        }
        self.deliveries.remove_where(|(k, _)| k == ue);
    }

    /// The UE registered to a service that uses the key group (seed 002
    /// 6.3.2.2.1): push the current and the next MSK.
    pub fn subscribe(
        &mut self,
        ue: &UeId,
        group: &KeyGroupName,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let u = self
            .ues
            .get_mut(ue)
            .ok_or_else(|| EngineError::UnknownUe(ue.clone()))?;
        let g = self
            .groups
            .get_mut(group)
            .ok_or(EngineError::UnknownKeyGroup(*group))?;
        u.groups.insert(*group);
        g.members.insert(ue.clone());
        let four_way = g.cfg.charging;
        for m in [g.state.current.name, g.state.next.name] {
            let key = (ue.clone(), m);
            let charged = self.charged.contains(&key);
            self.deliveries.ensure(&key, four_way, charged, now);
        }
        Ok(())
    }

    /// The UE left every service that uses the key group: stop its deliveries.
    pub fn unsubscribe(&mut self, ue: &UeId, group: &KeyGroupName) {
        if let Some(u) = self.ues.get_mut(ue) {
            u.groups.remove(group);
        }
        if let Some(g) = self.groups.get_mut(group) {
            g.members.remove(ue);
        }
        self.deliveries
            .remove_where(|(k, m)| k == ue && m.key_group() == *group);
    }

    /// The basic MSK request (seed 002 6.3.2.2.1) for one Key Domain ID - MSK
    /// ID pair: Key Number 0 means the current MSK. Returns the MSK that will
    /// be delivered. The delivery is due at once, whatever its state: the
    /// next [`poll`](Self::poll) sends a new message (fresh counter and
    /// RAND) and retransmission starts afresh from attempt 1, until
    /// acknowledged or given up; a delivery waiting for its retransmission
    /// timer, given up, or finished is revived the same way. For a
    /// subscriber already charged for the MSK (4-way key group) the message
    /// is the activation, never the inactive MSK again (seed 004
    /// 6.3.2.3.3).
    pub fn request_msk(
        &mut self,
        ue: &UeId,
        requested: MskName,
        now: Timestamp,
    ) -> Result<MskName, EngineError> {
        let group = requested.key_group();
        let u = self
            .ues
            .get(ue)
            .ok_or_else(|| EngineError::UnknownUe(ue.clone()))?;
        let g = self
            .groups
            .get(&group)
            .ok_or(EngineError::UnknownKeyGroup(group))?;
        if !u.groups.contains(&group) {
            return Err(EngineError::NotSubscribed {
                ue: ue.clone(),
                group,
            });
        }
        let name = if requested.msk_id.is_current_request() {
            g.state.current.name
        } else {
            g.msk(&requested)
                .ok_or(EngineError::UnknownMsk(requested))?
                .name
        };
        let four_way = g.cfg.charging;
        let key = (ue.clone(), name);
        let charged = self.charged.contains(&key);
        self.deliveries.request(&key, four_way, charged, now);
        Ok(name)
    }

    /// The BM-SC solicited pull (seeds 002/003 6.3.2.2.4): a message with Key
    /// Number 0 for the key group and no key, protected with the last MUK the
    /// engine knows for the UE, V not set. Not tracked: send it and forget.
    pub fn solicited_pull(
        &mut self,
        ue: &UeId,
        group: &KeyGroupName,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Action, EngineError> {
        if !self.groups.contains_key(group) {
            return Err(EngineError::UnknownKeyGroup(*group));
        }
        let u = self
            .ues
            .get(ue)
            .ok_or_else(|| EngineError::UnknownUe(ue.clone()))?;
        let counter = self.counters.allocate(&mut self.store, &u.muk_id)?;
        let m = MskMessage::solicited_pull(
            u.muk_id.clone(),
            counter,
            random16(rng),
            group.key_domain,
            group.key_group,
        );
        let built = m.build(&u.muk).map_err(EngineError::Message)?;
        Ok(Action::SendMikey {
            ue: ue.clone(),
            msk: m.msk,
            step: None,
            counter,
            bytes: built.bytes,
        })
    }

    /// The state of the delivery of `msk` to `ue`.
    pub fn delivery(&self, ue: &UeId, msk: &MskName) -> Option<DeliveryStatus> {
        let key = (ue.clone(), *msk);
        let charged = self.charged.contains(&key);
        self.deliveries.get(&key).map(|d| d.status(charged))
    }

    /// Whether the subscriber `ue` was charged for `msk` (a current or next
    /// MSK), whether or not a delivery of it exists now.
    pub fn is_charged(&self, ue: &UeId, msk: &MskName) -> bool {
        self.charged.contains(&(ue.clone(), *msk))
    }

    /// Restore the fact that subscriber `ue` was charged for `msk` (a
    /// durable charging record, seed 004 6.3.2.3.3) after a restart: every
    /// later delivery or request of that MSK to that subscriber is the
    /// activation, and no second charging record is produced. A delivery
    /// at the inactive step moves to the activation (sent at the next
    /// [`poll`](Self::poll) if it was in flight). The UE need not be
    /// registered. Returns `false`, recording nothing, when `msk` is not the
    /// current or next MSK of an open key group (a retired MSK is never
    /// delivered again).
    pub fn mark_charged(&mut self, ue: &UeId, msk: &MskName, now: Timestamp) -> bool {
        let Some(g) = self.groups.get(&msk.key_group()) else {
            return false;
        };
        if g.msk(msk).is_none() {
            return false;
        }
        let key = (ue.clone(), *msk);
        self.charged.insert(key.clone());
        if g.cfg.charging {
            self.deliveries.charged(&key, now);
        }
        true
    }

    /// Restore the persisted outcome of a delivery after a restart of the
    /// service (the engine keeps delivery state in memory only). Call it
    /// after [`subscribe`](Self::subscribe) and before the first
    /// [`poll`](Self::poll): a delivery that was `acknowledged` before the
    /// restart is marked acknowledged again (nothing is resent); one whose
    /// subscriber was `charged` (4-way step 1 acknowledged) keeps that flag,
    /// so the delivery resumes at the activation and the subscriber is not
    /// charged twice. Returns `false`, changing nothing, when there is no
    /// such delivery or it has already been sent.
    pub fn restore_delivery(
        &mut self,
        ue: &UeId,
        msk: &MskName,
        acknowledged: bool,
        charged: bool,
    ) -> bool {
        let Some(g) = self.groups.get(&msk.key_group()) else {
            return false;
        };
        let four_way = g.cfg.charging;
        let key = (ue.clone(), *msk);
        let Some(d) = self.deliveries.get_mut(&key) else {
            return false;
        };
        if d.state != DeliveryState::Pending || !d.attempts.is_empty() {
            return false;
        }
        if charged {
            self.charged.insert(key.clone());
            if four_way {
                d.step = Step::Activate;
            }
        }
        if acknowledged {
            self.deliveries
                .set_state(&key, DeliveryState::Acknowledged, None);
        }
        true
    }

    // -----------------------------------------------------------------
    // Time and acknowledgements

    /// When [`poll`](Self::poll) has work next (a pending delivery or a
    /// retransmission deadline); `None` when nothing is scheduled.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.deliveries.next_deadline()
    }

    /// Send pending deliveries, retransmit those whose deadline passed (a new
    /// message each time: fresh counter and RAND), give up after the last
    /// attempt. All counters needed are reserved first: if the store fails,
    /// nothing changes and the error is returned.
    pub fn poll(
        &mut self,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<Action>, EngineError> {
        let max = self.config.retransmit.max_attempts;
        let mut plans = Vec::new();
        let mut needed: HashMap<MukId, u32> = HashMap::new();
        for key in self.deliveries.due(now) {
            let Some(d) = self.deliveries.get(&key) else {
                continue;
            };
            let attempt = match d.state {
                DeliveryState::Pending => 1,
                DeliveryState::Sent { attempt, .. } if attempt >= max => {
                    plans.push(Plan::GiveUp {
                        key,
                        attempts: attempt,
                    });
                    continue;
                }
                DeliveryState::Sent { attempt, .. } => attempt + 1,
                _ => continue,
            };
            let ue = self.ues.get(&key.0);
            let known = self
                .groups
                .get(&key.1.key_group())
                .and_then(|g| g.msk(&key.1))
                .is_some();
            match ue {
                Some(u) if known => {
                    *needed.entry(u.muk_id.clone()).or_default() += 1;
                    plans.push(Plan::Send {
                        key,
                        attempt,
                        muk_id: u.muk_id.clone(),
                    });
                }
                _ => plans.push(Plan::Drop { key }),
            }
        }
        for (muk, n) in &needed {
            self.counters.ensure(&mut self.store, muk, *n)?;
        }
        let mut actions = Vec::new();
        for plan in plans {
            match plan {
                Plan::Drop { key } => self.deliveries.remove_where(|k| *k == key),
                Plan::GiveUp { key, attempts } => {
                    let step = self.deliveries.get(&key).map_or(Step::Deliver, |d| d.step);
                    self.deliveries
                        .set_state(&key, DeliveryState::GivenUp, None);
                    actions.push(Action::GaveUp {
                        ue: key.0,
                        msk: key.1,
                        step,
                        attempts,
                    });
                }
                Plan::Send {
                    key,
                    attempt,
                    muk_id,
                } => {
                    match self.send(&key, attempt, &muk_id, now, rng) {
                        Some(a) => actions.push(a),
                        // The UE or the MSK vanished: nothing left to deliver.
                        None => self.deliveries.remove_where(|k| *k == key),
                    }
                }
            }
        }
        Ok(actions)
    }

    /// Build and record one transmission of a delivery's current step.
    fn send(
        &mut self,
        key: &Key,
        attempt: u32,
        muk_id: &MukId,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Option<Action> {
        let d = self.deliveries.get(key)?;
        let (step, round) = (d.step, d.round);
        let g = self.groups.get(&key.1.key_group())?;
        let msk = g.msk(&key.1)?;
        let u = self.ues.get(&key.0)?;
        let (v, window) = match step {
            Step::Deliver => (g.cfg.ack_requested, (msk.seq_s, msk.seq_u)),
            Step::Inactive => (
                true,
                (MtkId::new(INACTIVE_WINDOW.0), MtkId::new(INACTIVE_WINDOW.1)),
            ),
            Step::Activate => (true, (msk.seq_s, msk.seq_u)),
        };
        // Reserved by `poll` before any state changed.
        let counter = self.counters.take(muk_id)?;
        let message = MskMessage {
            muk_id: muk_id.clone(),
            counter,
            rand: random16(rng),
            msk: msk.name,
            v,
            key: Some(MskKeyData {
                msk: msk.key.clone(),
                seq_s: window.0,
                seq_u: window.1,
            }),
        };
        let built = match message.build(&u.muk) {
            Ok(b) => b,
            Err(_) => {
                // Only identifiers too long for MIKEY get here; retrying
                // cannot help.
                self.deliveries.set_state(key, DeliveryState::GivenUp, None);
                return Some(Action::GaveUp {
                    ue: key.0.clone(),
                    msk: key.1,
                    step,
                    attempts: attempt - 1,
                });
            }
        };
        if v {
            let deadline = now.saturating_add(self.config.retransmit.interval(attempt, rng));
            let keep = usize::try_from(self.config.retransmit.max_attempts)
                .unwrap_or(usize::MAX)
                .saturating_mul(2)
                .max(MIN_ATTEMPTS_KEPT);
            self.deliveries.record_attempt(
                key,
                Attempt {
                    round,
                    step,
                    counter,
                    muk_id: muk_id.clone(),
                    auth_key: Zeroizing::new(built.keys.auth_key),
                    initiator: built.initiator,
                },
                keep,
            );
            self.deliveries.set_state(
                key,
                DeliveryState::Sent {
                    attempt,
                    next_deadline: deadline,
                },
                Some(deadline),
            );
        } else {
            self.deliveries
                .set_state(key, DeliveryState::Unconfirmed, None);
        }
        Some(Action::SendMikey {
            ue: key.0.clone(),
            msk: key.1,
            step: Some(step),
            counter,
            bytes: built.bytes,
        })
    }

    /// An MSK acknowledgement arrived (`PROFILE.md` section 6). It is matched
    /// by its IDr (B-TID) and counter to a message sent with V = 1, its MAC is
    /// verified with that message's auth_key over that message's IDi, IDr and
    /// T, and its MSK must be the delivered one. Then the step is done: a
    /// plain push or an activation is acknowledged; an inactive MSK (4-way
    /// step 1) yields a charging record and schedules the activation (sent
    /// at the next [`poll`](Self::poll)). Any error leaves everything as it
    /// was.
    pub fn on_ack(&mut self, bytes: &[u8], now: Timestamp) -> Result<Vec<Action>, AckError> {
        let ack = MskAck::parse(bytes).map_err(AckError::Malformed)?;
        let candidates = self.deliveries.candidates(&ack.btid, ack.counter);
        if candidates.is_empty() {
            return Err(AckError::Unmatched {
                btid: ack.btid,
                counter: ack.counter,
            });
        }
        let mut matched = None;
        for key in candidates {
            let Some(d) = self.deliveries.get(key) else {
                continue;
            };
            let found = d
                .attempts
                .iter()
                .find(|a| a.counter == ack.counter && a.muk_id.idr == ack.btid);
            let Some(a) = found else { continue };
            match MskAck::verify(bytes, &a.auth_key[..], &a.initiator) {
                Ok(_) => {
                    matched = Some((key.clone(), a.round, a.step, a.muk_id.clone()));
                    break;
                }
                Err(ProfileError::MacMismatch) => continue,
                Err(e) => return Err(AckError::Malformed(e)),
            }
        }
        let (key, round, step, muk_id) = matched.ok_or(AckError::BadMac)?;
        if ack.msk != key.1 {
            return Err(AckError::WrongMsk {
                expected: key.1,
                got: ack.msk,
            });
        }
        let d = self.deliveries.get(&key).ok_or(AckError::BadMac)?;
        let settled = round != d.round
            || step != d.step
            || matches!(
                d.state,
                DeliveryState::Acknowledged | DeliveryState::Unconfirmed
            );
        if settled {
            return Err(AckError::Stale {
                ue: key.0,
                msk: key.1,
            });
        }
        let mut actions = vec![Action::Acknowledged {
            ue: key.0.clone(),
            msk: key.1,
            step,
        }];
        match step {
            Step::Deliver | Step::Activate => {
                self.deliveries
                    .set_state(&key, DeliveryState::Acknowledged, None);
            }
            Step::Inactive => {
                if let Some(d) = self.deliveries.get_mut(&key) {
                    d.step = Step::Activate;
                }
                self.deliveries
                    .set_state(&key, DeliveryState::Pending, Some(now));
                // Charged once per MSK (seed 004 6.3.2.3.3).
                if self.charged.insert(key.clone()) {
                    actions.push(Action::ChargingRecord(ChargingRecord {
                        ue: key.0.clone(),
                        muk_id,
                        msk: key.1,
                        time: now,
                        counter: ack.counter,
                    }));
                }
            }
        }
        Ok(actions)
    }
}

fn info(s: &KeyGroupSnapshot) -> KeyGroupInfo {
    KeyGroupInfo {
        name: s.name,
        current: MskInfo::of(&s.current),
        next: MskInfo::of(&s.next),
    }
}
