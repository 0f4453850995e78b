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
//!   accepted. Nothing is copied per attempt: a delivery keeps the range of
//!   counters it used, the RAND of a message is a keyed function of (UE,
//!   counter, MSK) (`rand` module), and the auth_key and IDi/IDr/T the
//!   acknowledgement's MAC covers are recomputed when it arrives.
//! * **Counters are reserved in blocks** of [`EngineConfig::counter_block`]
//!   under one engine-wide high-water mark: every UE keeps its next counter
//!   in memory, and the mark is persisted through
//!   [`EngineStore::reserve_counters`] before any counter above the old mark
//!   is put in a message (one write for a whole rotation, not one per MUK);
//!   after a crash every UE resumes above the persisted mark, so a (MUK,
//!   counter) pair never repeats.
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
//! * **One record per UE.** The engine gives each UE a dense [`UeHandle`]
//!   (never reused) and keeps its IMPI, B-TID and prepared MUK once, in its
//!   slot; the IMPI and IDr indexes hold handles only, key group membership
//!   is a bit per UE. [`Action`]s carry the handle (and the attempt and
//!   charge), so a caller keys its own per-UE data (the BM-SC core: MIKEY
//!   address, services) by [`UeHandle::index`] in a `Vec` and looks nothing
//!   up by name on the hot path.
//! * Delivery state lives in memory only: the caller restores the outcome of
//!   deliveries after a restart ([`Engine::restore_delivery`],
//!   [`Engine::mark_charged`]); UEs that miss an MSK fetch it again with the
//!   basic MSK request (seed 002 6.3.2.2.1).

mod counter;
mod delivery;
mod keygroup;
mod rand;
mod store;
mod time;

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use mikey::InitiatorRef;
use rand_core::{CryptoRng, RngCore};

use crate::ids::MskId;
use crate::ids::{KeyGroupName, MskName, MtkId, MukId};
use crate::keys::Muk;
use crate::messages::{
    MskAckView, MskKeyData, MskMessageRef, PreparedMuk, ProfileError, Streaming,
};
use crate::profile::{INACTIVE_WINDOW, RAND_LEN};

pub use delivery::{DeliveryState, DeliveryStatus, Step};
pub use keygroup::{
    KeyGroupConfig, KeyGroupInfo, MskInfo, MtkOutput, DEFAULT_WINDOW_LEN, MAX_WINDOW_LEN,
};
pub use store::{EngineStore, KeyGroupSnapshot, MemoryStore, MskSnapshot, StoreError};
pub use time::{RetransmitPolicy, Timestamp};

use counter::CounterMark;
use delivery::{first_step, Delivery, Handle, Timers};
use rand::RandSource;

/// Capacity of the buffer an MSK message is built into (the MBMS shape is
/// about 160 bytes with a 40-byte B-TID): one allocation per message.
const MSK_MESSAGE_CAPACITY: usize = 256;

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

/// The engine's index of a UE: dense from 0, never reused (a UE keeps its
/// handle across a deregistration, so its charges outlive it). The caller
/// may key its own per-UE records by [`UeHandle::index`] (a `Vec`, not a
/// map keyed by the IMPI), and [`Action`]s carry it so that nothing is
/// looked up by name on the hot path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct UeHandle(Handle);

impl UeHandle {
    /// The handle as an index (0, 1, 2, ... in the order UEs were first
    /// seen).
    pub fn index(self) -> usize {
        self.0 as usize
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
        /// Its handle.
        handle: UeHandle,
        /// The MSK delivered (Key Number 0 for a solicited pull).
        msk: MskName,
        /// The delivery step; `None` for a solicited pull.
        step: Option<Step>,
        /// Transmissions of this step so far, this one included (1 for a
        /// solicited pull).
        attempt: u32,
        /// The MUK counter of the message.
        counter: u32,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A step of a delivery was acknowledged.
    Acknowledged {
        /// The UE.
        ue: UeId,
        /// Its handle.
        handle: UeHandle,
        /// The MSK.
        msk: MskName,
        /// The acknowledged step.
        step: Step,
        /// The subscriber is charged for the MSK (this acknowledgement
        /// included).
        charged: bool,
    },
    /// Charge the subscriber for the MSK (4-way step 1 acknowledged, seed
    /// 004 6.3.2.3.3).
    ChargingRecord(ChargingRecord),
    /// No acknowledgement after the last attempt.
    GaveUp {
        /// The UE.
        ue: UeId,
        /// Its handle.
        handle: UeHandle,
        /// The MSK.
        msk: MskName,
        /// The unacknowledged step.
        step: Step,
        /// Transmissions of that step.
        attempts: u32,
        /// The subscriber was charged for the MSK.
        charged: bool,
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
    /// The MUK replay counters reached their maximum (`u32::MAX`): the UEs
    /// must bootstrap again (new B-TIDs, new MUKs).
    #[error("MUK replay counters exhausted: the UEs must bootstrap again")]
    CounterExhausted,
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
    /// The subscribed UEs: bit `h` is UE handle `h` (one bit per UE ever
    /// seen per key group, instead of a set entry per member and a list of
    /// key groups per UE).
    members: Vec<u64>,
}

impl Group {
    fn msk(&self, name: &MskName) -> Option<&MskSnapshot> {
        [&self.state.current, &self.state.next]
            .into_iter()
            .find(|m| m.name == *name)
    }

    fn is_member(&self, h: Handle) -> bool {
        self.members
            .get(h as usize / 64)
            .is_some_and(|w| w & (1 << (h % 64)) != 0)
    }

    fn set_member(&mut self, h: Handle, member: bool) {
        let i = h as usize / 64;
        if member {
            if self.members.len() <= i {
                self.members.resize(i + 1, 0);
            }
            self.members[i] |= 1 << (h % 64);
        } else if let Some(w) = self.members.get_mut(i) {
            *w &= !(1 << (h % 64));
        }
    }

    fn member_count(&self) -> usize {
        self.members.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// The MUK ID of a registration without copies: IDi is an index into the
/// engine's few distinct IDi values (every UE has the BM-SC's FQDN), IDr
/// the B-TID, stored once (the IDr index refers to it).
struct MukName {
    idi: u16,
    idr: Box<str>,
}

/// The MUK a registration replaced.
struct PreviousMuk {
    name: MukName,
    muk: PreparedMuk,
    /// The first counter sent under the new MUK.
    until: u32,
}

/// A registered UE's keys.
struct Registration {
    name: MukName,
    /// The MUK with its PRF key schedule computed once (no key setup per
    /// message).
    muk: PreparedMuk,
    /// The MUK it replaced and the first counter sent under the new one:
    /// acknowledgements of messages sent under the old MUK remain valid.
    previous: Option<Box<PreviousMuk>>,
}

/// One UE: fixed-size apart from its IMPI, its B-TID and its (usually two)
/// deliveries per key group.
struct UeSlot {
    id: Box<str>,
    reg: Option<Registration>,
    /// The counter of the next message to this UE (any MUK).
    next_counter: u32,
    deliveries: Vec<Delivery>,
}

impl UeSlot {
    fn delivery(&self, msk: &MskName) -> Option<&Delivery> {
        self.deliveries.iter().find(|d| d.msk == *msk)
    }

    fn delivery_mut(&mut self, msk: &MskName) -> Option<&mut Delivery> {
        self.deliveries.iter_mut().find(|d| d.msk == *msk)
    }
}

/// An entry of the IDr index: a handle, with [`PREVIOUS_IDR`] set when the
/// entry is the IDr of the UE's previous MUK.
type IdrEntry = u32;

/// The bit of an [`IdrEntry`] naming the previous MUK's IDr.
const PREVIOUS_IDR: u32 = 1 << 31;

/// The UE indexes hold handles only; the strings they are keyed by are the
/// slots' own (no second copy of an IMPI or B-TID per UE).
struct Indexes {
    hasher: RandomState,
    /// Every UE by IMPI.
    by_id: HashTable<Handle>,
    /// Registered UEs by IDr (B-TID), current and previous MUK.
    by_idr: HashTable<IdrEntry>,
}

impl Indexes {
    fn hash(&self, s: &str) -> u64 {
        self.hasher.hash_one(s)
    }

    fn find_id(&self, slots: &[UeSlot], id: &str) -> Option<Handle> {
        self.by_id
            .find(self.hash(id), |h| &*slots[*h as usize].id == id)
            .copied()
    }

    fn insert_id(&mut self, slots: &[UeSlot], h: Handle) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(&*slots[h as usize].id);
        self.by_id
            .insert_unique(hash, h, |h| hasher.hash_one(&*slots[*h as usize].id));
    }

    /// The IDr an entry stands for.
    fn idr_of(slots: &[UeSlot], e: IdrEntry) -> &str {
        let reg = slots[(e & !PREVIOUS_IDR) as usize].reg.as_ref();
        let name = match reg {
            Some(r) if e & PREVIOUS_IDR == 0 => Some(&r.name),
            Some(r) => r.previous.as_ref().map(|p| &p.name),
            None => None,
        };
        name.map_or("", |n| &n.idr)
    }

    fn find_idr(&self, slots: &[UeSlot], idr: &str) -> Option<Handle> {
        self.by_idr
            .find(self.hash(idr), |e| Self::idr_of(slots, *e) == idr)
            .map(|e| e & !PREVIOUS_IDR)
    }

    /// Index entry `e` under `idr`, replacing another UE's entry for the
    /// same IDr (the last registration with a B-TID wins).
    fn insert_idr(&mut self, slots: &[UeSlot], idr: &str, e: IdrEntry) {
        let hash = self.hash(idr);
        if let Ok(old) = self
            .by_idr
            .find_entry(hash, |x| Self::idr_of(slots, *x) == idr)
        {
            old.remove();
        }
        let hasher = &self.hasher;
        self.by_idr
            .insert_unique(hash, e, |x| hasher.hash_one(Self::idr_of(slots, *x)));
    }

    /// Drop the entry `e` (looked up under `idr`, the IDr it stands for).
    fn remove_idr(&mut self, idr: &str, e: IdrEntry) {
        if let Ok(old) = self.by_idr.find_entry(self.hash(idr), |x| *x == e) {
            old.remove();
        }
    }
}

/// The BM-SC key engine. See the [module documentation](self).
pub struct Engine<S: EngineStore> {
    config: EngineConfig,
    store: S,
    groups: BTreeMap<KeyGroupName, Group>,
    /// Every UE ever seen in this run (handles are indices, never reused, so
    /// charges outlive a deregistration).
    slots: Vec<UeSlot>,
    index: Indexes,
    /// The distinct IDi values (the BM-SC's FQDN), each stored once.
    idis: Vec<Box<str>>,
    timers: Timers,
    counters: CounterMark,
    rand: Option<RandSource>,
}

impl<S: EngineStore> fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("key_groups", &self.groups.keys().collect::<Vec<_>>())
            .field("ues", &self.index.by_idr.len())
            .field("armed_deliveries", &self.timers.len())
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
        handle: Handle,
        msk: MskName,
        attempt: u32,
    },
    GiveUp {
        handle: Handle,
        msk: MskName,
        attempts: u32,
    },
    Drop {
        handle: Handle,
        msk: MskName,
    },
}

impl<S: EngineStore> Engine<S> {
    /// An engine over `store`, with no key group and no UE. After a restart,
    /// reopen the key groups ([`open_key_group`](Self::open_key_group)) and
    /// register the UEs again; MUK counters resume above the store's mark.
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
        let counters = CounterMark::load(&store, config.counter_block)?;
        Ok(Engine {
            config,
            store,
            groups: BTreeMap::new(),
            slots: Vec::new(),
            index: Indexes {
                hasher: RandomState::new(),
                by_id: HashTable::new(),
                by_idr: HashTable::new(),
            },
            idis: Vec::new(),
            timers: Timers::default(),
            counters,
            rand: None,
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

    /// The number of registered UEs.
    pub fn registered_ues(&self) -> usize {
        self.slots.iter().filter(|s| s.reg.is_some()).count()
    }

    // -----------------------------------------------------------------
    // Key groups

    /// Open a key group: load its saved state, or create its first two
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
                members: Vec::new(),
            },
        );
        Ok(i)
    }

    /// The MSKs of a key group and their windows.
    pub fn key_group(&self, name: &KeyGroupName) -> Option<KeyGroupInfo> {
        self.groups.get(name).map(|g| info(&g.state))
    }

    /// Rotate the MSK of a key group: the next MSK becomes current, a
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
        let rotated = info(&g.state);
        let g = &*g;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let handle = i as Handle;
            if let Some(pos) = slot.deliveries.iter().position(|d| d.msk == retired) {
                let mut d = slot.deliveries.swap_remove(pos);
                self.timers.set(&mut d, handle, None);
            }
            if g.is_member(handle) {
                for m in [current, next] {
                    ensure(&mut self.timers, slot, handle, m, four_way, now);
                }
            }
        }
        Ok(rotated)
    }

    /// Take over a key group's state saved by another engine on the same
    /// store (several BM-SC instances, TS 33.246 6.3.4.4: every instance
    /// delivers the MSKs of the key group's anchor under the same MSK IDs).
    /// Nothing is saved. When the MSKs differ from this engine's (the anchor
    /// rotated), deliveries of MSKs no longer current or next end and the
    /// new current and next MSKs are pushed to every subscribed UE, as
    /// [`rotate`](Self::rotate) does; when only the MTK state moved, it is
    /// taken as is. Returns the key group's MSKs when they changed.
    pub fn adopt_key_group(
        &mut self,
        snapshot: KeyGroupSnapshot,
        now: Timestamp,
    ) -> Result<Option<KeyGroupInfo>, EngineError> {
        let name = snapshot.name;
        keygroup::check_snapshot(&snapshot, &name)?;
        let g = self
            .groups
            .get_mut(&name)
            .ok_or(EngineError::UnknownKeyGroup(name))?;
        let same = g.state.current.name == snapshot.current.name
            && g.state.next.name == snapshot.next.name
            && g.state.current.key == snapshot.current.key
            && g.state.next.key == snapshot.next.key;
        g.state = snapshot;
        if same {
            return Ok(None);
        }
        let (current, next) = (g.state.current.name, g.state.next.name);
        let four_way = g.cfg.charging;
        let adopted = info(&g.state);
        let g = &*g;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let handle = i as Handle;
            let mut k = 0;
            while k < slot.deliveries.len() {
                let m = slot.deliveries[k].msk;
                if m.key_domain == name.key_domain
                    && m.msk_id.key_group == name.key_group
                    && m != current
                    && m != next
                {
                    let mut d = slot.deliveries.swap_remove(k);
                    self.timers.set(&mut d, handle, None);
                } else {
                    k += 1;
                }
            }
            if g.is_member(handle) {
                for m in [current, next] {
                    ensure(&mut self.timers, slot, handle, m, four_way, now);
                }
            }
        }
        Ok(Some(adopted))
    }

    /// Reserve a fresh block of MUK counters above every mark reserved on
    /// the store so far (by any engine) and move every UE's next counter up
    /// to its first counter. Call it before pushing to UEs taken over from
    /// another BM-SC instance: that instance may have used counters up to
    /// its own mark, which the UEs' MGV-F would reject as replays
    /// (`PROFILE.md` section 7). Returns the new floor.
    pub fn fresh_counter_block(&mut self) -> Result<u32, EngineError> {
        let floor = self.counters.fresh_block(&mut self.store)?;
        for slot in &mut self.slots {
            slot.next_counter = slot.next_counter.max(floor);
        }
        Ok(floor)
    }

    /// Issue the next MTK of a key group under its current MSK: the new
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

    fn handle_of(&self, ue: &UeId) -> Option<Handle> {
        self.index.find_id(&self.slots, &ue.0)
    }

    fn slot_for(&mut self, ue: &UeId) -> Handle {
        if let Some(h) = self.handle_of(ue) {
            return h;
        }
        let h = Handle::try_from(self.slots.len())
            .ok()
            .filter(|h| h & PREVIOUS_IDR == 0)
            .expect("fewer than 2^31 UEs");
        self.slots.push(UeSlot {
            id: ue.0.as_str().into(),
            reg: None,
            next_counter: self.counters.floor(),
            deliveries: Vec::new(),
        });
        self.index.insert_id(&self.slots, h);
        h
    }

    /// The index of IDi `idi`, added if new.
    fn idi_index(&mut self, idi: &str) -> u16 {
        if let Some(i) = self.idis.iter().position(|x| &**x == idi) {
            return i as u16;
        }
        assert!(
            self.idis.len() < usize::from(u16::MAX),
            "fewer than 65535 IDi values"
        );
        self.idis.push(idi.into());
        (self.idis.len() - 1) as u16
    }

    fn muk_name(&mut self, muk_id: &MukId) -> MukName {
        MukName {
            idi: self.idi_index(&muk_id.idi),
            idr: muk_id.idr.as_str().into(),
        }
    }

    /// Register a UE with its MUK, or update its MUK after it bootstrapped
    /// again. With a new MUK, deliveries in flight are restarted with it
    /// (the UE may no longer hold the old MUK); acknowledgements of messages
    /// sent under the old MUK remain valid. Returns the UE's handle.
    pub fn register_ue(&mut self, ue: UeId, muk_id: MukId, muk: Muk, now: Timestamp) -> UeHandle {
        let h = self.slot_for(&ue);
        let name = self.muk_name(&muk_id);
        let slot = &mut self.slots[h as usize];
        match &mut slot.reg {
            Some(r) => {
                if r.name.idi != name.idi || r.name.idr != name.idr {
                    // The old previous MUK leaves the IDr index first (its
                    // entry is found by the IDr it stands for).
                    if let Some(p) = r.previous.take() {
                        if p.name.idr != r.name.idr {
                            self.index.remove_idr(&p.name.idr, h | PREVIOUS_IDR);
                        }
                    }
                    self.index.remove_idr(&r.name.idr, h);
                    let old_name = std::mem::replace(&mut r.name, name);
                    let old_muk = std::mem::replace(&mut r.muk, PreparedMuk::new(&muk));
                    let prev_idr = (old_name.idr != r.name.idr).then(|| old_name.idr.clone());
                    r.previous = Some(Box::new(PreviousMuk {
                        name: old_name,
                        muk: old_muk,
                        until: slot.next_counter,
                    }));
                    for d in slot.deliveries.iter_mut() {
                        if d.subscribed && d.state.in_flight() {
                            d.state = DeliveryState::Pending;
                            self.timers.set(d, h, Some(now));
                        }
                    }
                    self.index.insert_idr(&self.slots, &muk_id.idr, h);
                    if let Some(prev) = prev_idr {
                        self.index.insert_idr(&self.slots, &prev, h | PREVIOUS_IDR);
                    }
                } else {
                    r.muk = PreparedMuk::new(&muk);
                }
            }
            None => {
                slot.reg = Some(Registration {
                    name,
                    muk: PreparedMuk::new(&muk),
                    previous: None,
                });
                self.index.insert_idr(&self.slots, &muk_id.idr, h);
            }
        }
        UeHandle(h)
    }

    /// Forget a UE, its subscriptions and its deliveries (its charges stay).
    pub fn remove_ue(&mut self, ue: &UeId) {
        let Some(h) = self.handle_of(ue) else {
            return;
        };
        let slot = &mut self.slots[h as usize];
        let Some(reg) = slot.reg.take() else {
            return;
        };
        self.index.remove_idr(&reg.name.idr, h);
        if let Some(p) = &reg.previous {
            self.index.remove_idr(&p.name.idr, h | PREVIOUS_IDR);
        }
        for g in self.groups.values_mut() {
            g.set_member(h, false);
        }
        leave(&mut self.timers, slot, h, |_| true);
    }

    /// The UE registered to a service that uses the key group (seed 002
    /// 6.3.2.2.1): push the current and the next MSK.
    pub fn subscribe(
        &mut self,
        ue: &UeId,
        group: &KeyGroupName,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let h = self
            .handle_of(ue)
            .filter(|h| self.slots[*h as usize].reg.is_some())
            .ok_or_else(|| EngineError::UnknownUe(ue.clone()))?;
        let g = self
            .groups
            .get_mut(group)
            .ok_or(EngineError::UnknownKeyGroup(*group))?;
        let slot = &mut self.slots[h as usize];
        g.set_member(h, true);
        let four_way = g.cfg.charging;
        for m in [g.state.current.name, g.state.next.name] {
            ensure(&mut self.timers, slot, h, m, four_way, now);
        }
        Ok(())
    }

    /// The UE left every service that uses the key group: stop its deliveries.
    pub fn unsubscribe(&mut self, ue: &UeId, group: &KeyGroupName) {
        let Some(h) = self.handle_of(ue) else {
            return;
        };
        let slot = &mut self.slots[h as usize];
        if let Some(g) = self.groups.get_mut(group) {
            g.set_member(h, false);
        }
        leave(&mut self.timers, slot, h, |m| m.key_group() == *group);
    }

    /// The basic MSK request (seed 002 6.3.2.2.1) of a subscribed UE, answered
    /// at once whatever the delivery's state. Key Number 0 asks for the current
    /// MSK. Returns the MSK that will be sent. For a subscriber already charged
    /// for the MSK (4-way key group) the message is the activation, never the
    /// inactive MSK again (seed 004 6.3.2.3.3).
    pub fn request_msk(
        &mut self,
        ue: &UeId,
        requested: MskName,
        now: Timestamp,
    ) -> Result<MskName, EngineError> {
        let group = requested.key_group();
        let h = self
            .handle_of(ue)
            .filter(|h| self.slots[*h as usize].reg.is_some())
            .ok_or_else(|| EngineError::UnknownUe(ue.clone()))?;
        let g = self
            .groups
            .get(&group)
            .ok_or(EngineError::UnknownKeyGroup(group))?;
        let slot = &mut self.slots[h as usize];
        if !g.is_member(h) {
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
        let d = match slot.delivery_mut(&name) {
            Some(d) => d,
            None => {
                push_delivery(slot, Delivery::new(name, first_step(four_way, false)));
                slot.deliveries.last_mut().expect("just pushed")
            }
        };
        let step = first_step(four_way, d.charged);
        let same_round = d.subscribed && d.state.in_flight() && d.step == step;
        if !same_round {
            d.new_round(step);
        }
        d.subscribed = true;
        d.state = DeliveryState::Pending;
        self.timers.set(d, h, Some(now));
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
        let h = self
            .handle_of(ue)
            .filter(|h| self.slots[*h as usize].reg.is_some())
            .ok_or_else(|| EngineError::UnknownUe(ue.clone()))?;
        let counter = self.slots[h as usize].next_counter;
        self.counters.ensure(&mut self.store, Some(counter))?;
        let slot = &mut self.slots[h as usize];
        slot.next_counter = counter
            .checked_add(1)
            .ok_or(EngineError::CounterExhausted)?;
        let reg = slot.reg.as_ref().expect("registered (checked above)");
        let msk = MskName {
            key_domain: group.key_domain,
            msk_id: MskId::current(group.key_group),
        };
        let m = MskMessageRef {
            idi: &self.idis[usize::from(reg.name.idi)],
            idr: &reg.name.idr,
            counter,
            rand: random16(rng),
            msk,
            v: false,
            key: None,
        };
        let mut bytes = Vec::with_capacity(MSK_MESSAGE_CAPACITY);
        m.build_into(&reg.muk, &mut bytes)
            .map_err(EngineError::Message)?;
        Ok(Action::SendMikey {
            ue: ue.clone(),
            handle: UeHandle(h),
            msk,
            step: None,
            attempt: 1,
            counter,
            bytes,
        })
    }

    /// The state of the delivery of `msk` to `ue`.
    pub fn delivery(&self, ue: &UeId, msk: &MskName) -> Option<DeliveryStatus> {
        let h = self.handle_of(ue)?;
        self.slots[h as usize]
            .delivery(msk)
            .filter(|d| d.subscribed)
            .map(Delivery::status)
    }

    /// Whether the subscriber `ue` was charged for `msk` (a current or next
    /// MSK), whether or not a delivery of it exists now.
    pub fn is_charged(&self, ue: &UeId, msk: &MskName) -> bool {
        self.handle_of(ue)
            .and_then(|h| self.slots[h as usize].delivery(msk))
            .is_some_and(|d| d.charged)
    }

    /// The handle of a UE seen in this run (registered or not).
    pub fn ue_handle(&self, ue: &str) -> Option<UeHandle> {
        self.index.find_id(&self.slots, ue).map(UeHandle)
    }

    /// The identity of the UE with handle `h`.
    pub fn ue_id(&self, h: UeHandle) -> Option<&str> {
        self.slots.get(h.index()).map(|s| &*s.id)
    }

    /// The B-TID (IDr) of the current MUK of a registered UE.
    pub fn ue_btid(&self, h: UeHandle) -> Option<&str> {
        let reg = self.slots.get(h.index())?.reg.as_ref()?;
        Some(&reg.name.idr)
    }

    /// The handle of index `i` (see [`UeHandle::index`]), if a UE has it.
    pub fn ue_handle_at(&self, i: usize) -> Option<UeHandle> {
        (i < self.slots.len()).then_some(UeHandle(i as Handle))
    }

    /// Whether the registered UE `h` has the MUK ID (`idi`, `idr`) and the
    /// MUK `muk` (the key compared in constant time).
    pub fn has_muk(&self, h: UeHandle, idi: &str, idr: &str, muk: &Muk) -> bool {
        let Some(reg) = self.slots.get(h.index()).and_then(|s| s.reg.as_ref()) else {
            return false;
        };
        *reg.name.idr == *idr
            && *self.idis[usize::from(reg.name.idi)] == *idi
            && reg.muk.same_key(muk)
    }

    /// Whether UE `h` is subscribed to key group `group`.
    pub fn is_subscribed(&self, h: UeHandle, group: &KeyGroupName) -> bool {
        self.groups.get(group).is_some_and(|g| g.is_member(h.0))
    }

    /// The key groups UE `h` is subscribed to, in order.
    pub fn subscriptions(&self, h: UeHandle) -> impl Iterator<Item = KeyGroupName> + '_ {
        self.groups
            .iter()
            .filter(move |(_, g)| g.is_member(h.0))
            .map(|(n, _)| *n)
    }

    /// The number of UEs subscribed to key group `group`.
    pub fn members(&self, group: &KeyGroupName) -> usize {
        self.groups.get(group).map_or(0, Group::member_count)
    }

    /// Record that the subscriber was charged for `msk` (restored from the
    /// caller's durable charging records after a restart), whether or not it
    /// is registered. Returns `false`, recording nothing, when `msk` is not the
    /// current or next MSK of an open key group (a retired MSK is never
    /// delivered again).
    pub fn mark_charged(&mut self, ue: &UeId, msk: &MskName, now: Timestamp) -> bool {
        let Some(g) = self.groups.get(&msk.key_group()) else {
            return false;
        };
        if g.msk(msk).is_none() {
            return false;
        }
        let four_way = g.cfg.charging;
        let h = self.slot_for(ue);
        let slot = &mut self.slots[h as usize];
        let d = match slot.delivery_mut(msk) {
            Some(d) => d,
            None => {
                let mut d = Delivery::new(*msk, first_step(four_way, true));
                d.subscribed = false;
                push_delivery(slot, d);
                slot.deliveries.last_mut().expect("just pushed")
            }
        };
        d.charged = true;
        if four_way && d.subscribed && d.step == Step::Inactive {
            d.new_round(Step::Activate);
            if d.state.in_flight() {
                d.state = DeliveryState::Pending;
                self.timers.set(d, h, Some(now));
            }
        }
        true
    }

    /// Restore the outcome of a delivery from the caller's records after a
    /// restart, for a UE registered again and subscribed to the key group's
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
        let Some(h) = self.handle_of(ue) else {
            return false;
        };
        let Some(d) = self.slots[h as usize].delivery_mut(msk) else {
            return false;
        };
        if !d.subscribed || d.state != DeliveryState::Pending || d.sent().is_some() {
            return false;
        }
        if charged {
            d.charged = true;
            if four_way {
                d.step = Step::Activate;
            }
        }
        if acknowledged {
            d.state = DeliveryState::Acknowledged;
            self.timers.set(d, h, None);
        }
        true
    }

    // -----------------------------------------------------------------
    // Time and acknowledgements

    /// When [`poll`](Self::poll) has work next (a pending delivery or a
    /// retransmission deadline); `None` when nothing is scheduled.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.next_deadline()
    }

    /// Send pending deliveries, retransmit those whose deadline passed (a new
    /// message each time: fresh counter and RAND), give up after the last
    /// attempt. All counters needed are reserved first (one store write for
    /// all UEs): if the store fails, nothing changes and the error is
    /// returned.
    pub fn poll(
        &mut self,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<Action>, EngineError> {
        self.poll_at_most(now, usize::MAX, rng)
    }

    /// [`poll`](Self::poll) for at most `limit` due deliveries (the earliest
    /// due first); call again while [`next_deadline`](Self::next_deadline)
    /// is not after `now`. A server paces a rotation of many UEs this way,
    /// reading acknowledgements between the chunks.
    pub fn poll_at_most(
        &mut self,
        now: Timestamp,
        limit: usize,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<Action>, EngineError> {
        let max = self.config.retransmit.max_attempts;
        let mut plans = Vec::new();
        let mut sends: Vec<Handle> = Vec::new();
        for (handle, msk) in self.timers.due(now, limit) {
            let slot = &self.slots[handle as usize];
            let Some(d) = slot.delivery(&msk) else {
                continue;
            };
            let attempt = match d.state {
                DeliveryState::Pending => 1,
                DeliveryState::Sent { attempt, .. } if attempt >= max => {
                    plans.push(Plan::GiveUp {
                        handle,
                        msk,
                        attempts: attempt,
                    });
                    continue;
                }
                DeliveryState::Sent { attempt, .. } => attempt + 1,
                _ => continue,
            };
            let known = self
                .groups
                .get(&msk.key_group())
                .and_then(|g| g.msk(&msk))
                .is_some();
            if slot.reg.is_none() || !known || !d.subscribed {
                plans.push(Plan::Drop { handle, msk });
                continue;
            }
            sends.push(handle);
            plans.push(Plan::Send {
                handle,
                msk,
                attempt,
            });
        }
        if !sends.is_empty() {
            // The highest counter any UE will use: a UE with several due
            // deliveries uses consecutive counters.
            sends.sort_unstable();
            let mut highest = Some(0u32);
            for run in sends.chunk_by(|a, b| a == b) {
                let n = u32::try_from(run.len() - 1).ok();
                let c = n.and_then(|n| self.slots[run[0] as usize].next_counter.checked_add(n));
                highest = highest.zip(c).map(|(h, c)| h.max(c));
            }
            self.counters.ensure(&mut self.store, highest)?;
        }
        let rand = self.rand.get_or_insert_with(|| RandSource::new(rng));
        let mut actions = Vec::new();
        for plan in plans {
            match plan {
                Plan::Drop { handle, msk } => {
                    leave(
                        &mut self.timers,
                        &mut self.slots[handle as usize],
                        handle,
                        |m| *m == msk,
                    );
                }
                Plan::GiveUp {
                    handle,
                    msk,
                    attempts,
                } => {
                    let slot = &mut self.slots[handle as usize];
                    let ue = UeId(slot.id.to_string());
                    let Some(d) = slot.delivery_mut(&msk) else {
                        continue;
                    };
                    d.state = DeliveryState::GivenUp;
                    self.timers.set(d, handle, None);
                    actions.push(Action::GaveUp {
                        ue,
                        handle: UeHandle(handle),
                        msk,
                        step: d.step,
                        attempts,
                        charged: d.charged,
                    });
                }
                Plan::Send {
                    handle,
                    msk,
                    attempt,
                } => {
                    if let Some(a) = send(
                        &self.config,
                        &self.groups,
                        &self.idis,
                        &mut self.slots[handle as usize],
                        &mut self.timers,
                        &self.counters,
                        rand,
                        handle,
                        msk,
                        attempt,
                        now,
                        rng,
                    ) {
                        actions.push(a);
                    }
                }
            }
        }
        Ok(actions)
    }

    /// Process a MIKEY acknowledgement (a verification message, seed 004
    /// 6.4.2): match it by IDr and counter to a message sent, verify its MAC
    /// with that message's auth_key (recomputed), and advance the delivery:
    /// a plain push or an activation is done; the inactive MSK (4-way
    /// step 1) yields a charging record and schedules the activation (sent
    /// at the next [`poll`](Self::poll)). Any error leaves everything as it
    /// was.
    pub fn on_ack(&mut self, bytes: &[u8], now: Timestamp) -> Result<Vec<Action>, AckError> {
        let ack = MskAckView::parse(bytes).map_err(AckError::Malformed)?;
        let unmatched = || AckError::Unmatched {
            btid: ack.btid.to_owned(),
            counter: ack.counter,
        };
        let h = self
            .index
            .find_idr(&self.slots, ack.btid)
            .ok_or_else(unmatched)?;
        let rand = self.rand.as_ref().ok_or_else(unmatched)?;
        let slot = &self.slots[h as usize];
        let reg = slot.reg.as_ref().ok_or_else(unmatched)?;
        // The MUK the message was sent under (by the counter: a new MUK
        // starts at a known counter).
        let (name, muk) = match &reg.previous {
            Some(p) if ack.counter < p.until && *p.name.idr == *ack.btid => (&p.name, &p.muk),
            _ if *reg.name.idr == *ack.btid => (&reg.name, &reg.muk),
            _ => return Err(unmatched()),
        };
        let muk_id = (&*self.idis[usize::from(name.idi)], &*name.idr);
        let verifies = |msk: &MskName| {
            let r = rand.rand(h, ack.counter, msk);
            verify_ack(&ack, muk, muk_id, &r)
        };
        let named = slot
            .deliveries
            .iter()
            .find(|d| d.subscribed && d.msk == ack.msk);
        let current = match named.map(|d| (d, d.counter_round(ack.counter))) {
            Some((d, Some(current))) => match verifies(&d.msk) {
                Ok(true) => current,
                Ok(false) => return Err(self.misnamed(h, &ack, muk, muk_id)),
                Err(e) => return Err(AckError::Malformed(e)),
            },
            _ => return Err(self.misnamed(h, &ack, muk, muk_id)),
        };
        let d = named.expect("matched above");
        let settled = !current
            || matches!(
                d.state,
                DeliveryState::Acknowledged | DeliveryState::Unconfirmed
            );
        if settled {
            return Err(AckError::Stale {
                ue: UeId(slot.id.to_string()),
                msk: d.msk,
            });
        }
        let step = d.step;
        let ue = UeId(slot.id.to_string());
        let charge = step == Step::Inactive && !d.charged;
        let muk_id = charge.then(|| MukId::new(muk_id.0.to_owned(), muk_id.1.to_owned()));
        let slot = &mut self.slots[h as usize];
        let d = slot.delivery_mut(&ack.msk).expect("matched above");
        match step {
            Step::Deliver | Step::Activate => {
                d.state = DeliveryState::Acknowledged;
                self.timers.set(d, h, None);
            }
            Step::Inactive => {
                d.new_round(Step::Activate);
                d.state = DeliveryState::Pending;
                self.timers.set(d, h, Some(now));
                // Charged once per MSK (seed 004 6.3.2.3.3).
                d.charged = true;
            }
        }
        let mut actions = vec![Action::Acknowledged {
            ue: ue.clone(),
            handle: UeHandle(h),
            msk: d.msk,
            step,
            charged: d.charged,
        }];
        if let Some(muk_id) = muk_id {
            actions.push(Action::ChargingRecord(ChargingRecord {
                ue,
                muk_id,
                msk: d.msk,
                time: now,
                counter: ack.counter,
            }));
        }
        Ok(actions)
    }

    /// The error for an acknowledgement that does not verify as an
    /// acknowledgement of the MSK it names: `WrongMsk` when it is authentic
    /// for another MSK delivered to the UE with that counter, else `BadMac`
    /// (a counter we sent) or `Unmatched`.
    fn misnamed(
        &self,
        h: Handle,
        ack: &MskAckView<'_>,
        muk: &PreparedMuk,
        muk_id: (&str, &str),
    ) -> AckError {
        let Some(rand) = self.rand.as_ref() else {
            return AckError::BadMac;
        };
        let slot = &self.slots[h as usize];
        let mut sent_it = false;
        for d in &slot.deliveries {
            if d.counter_round(ack.counter).is_none() {
                continue;
            }
            sent_it = true;
            let r = rand.rand(h, ack.counter, &d.msk);
            if d.msk != ack.msk && verify_ack(ack, muk, muk_id, &r) == Ok(true) {
                return AckError::WrongMsk {
                    expected: d.msk,
                    got: ack.msk,
                };
            }
        }
        if sent_it {
            AckError::BadMac
        } else {
            AckError::Unmatched {
                btid: ack.btid.to_owned(),
                counter: ack.counter,
            }
        }
    }
}

/// Add a delivery to a UE, growing its list by exactly one (a UE has a
/// current and a next MSK per key group: no spare capacity per UE).
fn push_delivery(slot: &mut UeSlot, d: Delivery) {
    slot.deliveries.reserve_exact(1);
    slot.deliveries.push(d);
}

/// Start (or revive) the delivery of `m` to a subscribed UE.
fn ensure(
    timers: &mut Timers,
    slot: &mut UeSlot,
    handle: Handle,
    m: MskName,
    four_way: bool,
    now: Timestamp,
) {
    match slot.delivery_mut(&m) {
        None => {
            let mut d = Delivery::new(m, first_step(four_way, false));
            timers.set(&mut d, handle, Some(now));
            push_delivery(slot, d);
        }
        Some(d) => {
            if d.subscribed && d.state != DeliveryState::GivenUp {
                return;
            }
            d.subscribed = true;
            d.new_round(first_step(four_way, d.charged));
            d.state = DeliveryState::Pending;
            timers.set(d, handle, Some(now));
        }
    }
}

/// End the deliveries of the MSKs `which` selects; charged ones are kept
/// (unsubscribed) to remember the charge.
fn leave(timers: &mut Timers, slot: &mut UeSlot, handle: Handle, which: impl Fn(&MskName) -> bool) {
    slot.deliveries.retain_mut(|d| {
        if !which(&d.msk) {
            return true;
        }
        timers.set(d, handle, None);
        d.subscribed = false;
        d.charged
    });
}

/// Build and record one transmission of a delivery's current step.
#[allow(clippy::too_many_arguments)]
fn send(
    config: &EngineConfig,
    groups: &BTreeMap<KeyGroupName, Group>,
    idis: &[Box<str>],
    slot: &mut UeSlot,
    timers: &mut Timers,
    counters: &CounterMark,
    rand: &RandSource,
    handle: Handle,
    msk_name: MskName,
    attempt: u32,
    now: Timestamp,
    rng: &mut (impl RngCore + CryptoRng),
) -> Option<Action> {
    let g = groups.get(&msk_name.key_group())?;
    let msk = g.msk(&msk_name)?;
    let counter = slot.next_counter;
    if !counters.covers(counter) {
        return None;
    }
    let reg = slot.reg.as_ref()?;
    let d = slot.deliveries.iter_mut().find(|d| d.msk == msk_name)?;
    let step = d.step;
    let (v, window) = match step {
        Step::Deliver => (g.cfg.ack_requested, (msk.seq_s, msk.seq_u)),
        Step::Inactive => (
            true,
            (MtkId::new(INACTIVE_WINDOW.0), MtkId::new(INACTIVE_WINDOW.1)),
        ),
        Step::Activate => (true, (msk.seq_s, msk.seq_u)),
    };
    let key = MskKeyData {
        msk: msk.key.clone(),
        seq_s: window.0,
        seq_u: window.1,
    };
    let message = MskMessageRef {
        idi: &idis[usize::from(reg.name.idi)],
        idr: &reg.name.idr,
        counter,
        rand: rand.rand(handle, counter, &msk_name),
        msk: msk.name,
        v,
        key: Some(&key),
    };
    let mut bytes = Vec::with_capacity(MSK_MESSAGE_CAPACITY);
    match message.build_into(&reg.muk, &mut bytes) {
        Ok(_) => {}
        Err(_) => {
            d.state = DeliveryState::GivenUp;
            timers.set(d, handle, None);
            return Some(Action::GaveUp {
                ue: UeId(slot.id.to_string()),
                handle: UeHandle(handle),
                msk: msk_name,
                step,
                attempts: attempt - 1,
                charged: d.charged,
            });
        }
    }
    d.record_counter(counter);
    if v {
        let deadline = now.saturating_add(config.retransmit.interval(attempt, rng));
        d.state = DeliveryState::Sent {
            attempt,
            next_deadline: deadline,
        };
        timers.set(d, handle, Some(deadline));
    } else {
        d.state = DeliveryState::Unconfirmed;
        timers.set(d, handle, None);
    }
    slot.next_counter = counter.saturating_add(1);
    Some(Action::SendMikey {
        ue: UeId(slot.id.to_string()),
        handle: UeHandle(handle),
        msk: msk_name,
        step: Some(step),
        attempt,
        counter,
        bytes,
    })
}

/// Verify an acknowledgement's MAC against the message it acknowledges,
/// rebuilt from what the engine keeps: the auth_key from the prepared MUK
/// and the message's RAND (RFC 3830 4.1.4), IDi/IDr/T from the MUK ID and
/// counter (RFC 3830 5.2). `Ok(false)`: the MAC does not verify.
fn verify_ack(
    ack: &MskAckView<'_>,
    muk: &PreparedMuk,
    (idi, idr): (&str, &str),
    rand: &[u8; RAND_LEN],
) -> Result<bool, ProfileError> {
    let auth = muk.msk_ack_key(rand);
    let t = ack.counter.to_be_bytes();
    let initiator = InitiatorRef {
        idi: idi.as_bytes(),
        idr: idr.as_bytes(),
        t: &t,
    };
    match ack.verify(&auth, initiator) {
        Ok(()) => Ok(true),
        Err(ProfileError::MacMismatch) => Ok(false),
        Err(e) => Err(e),
    }
}

fn info(s: &KeyGroupSnapshot) -> KeyGroupInfo {
    KeyGroupInfo {
        name: s.name,
        current: MskInfo::of(&s.current),
        next: MskInfo::of(&s.next),
    }
}
