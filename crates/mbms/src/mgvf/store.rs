//! The MGV-S: the MGV-F's secure storage (seed 004 6.5.4), behind a trait.
//!
//! The state is small (a few MUKs and at most two MSKs per key group), so a
//! store keeps it whole and replaces it atomically on every commit: after a
//! crash at any instant the store holds the old state or the new one, never
//! a mix, and a commit that would move any counter backwards is refused.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ids::{KeyDomainId, KeyGroupName, MskId, MskName, MtkId, MukId};
use crate::keys::{Msk, Muk};
use crate::profile::MAX_MSKS_PER_KEY_GROUP;
use crate::serial::Serial16;

/// A stored MUK and the replay counter of the MSK messages it protects
/// (TS 31.102 EF_MUK: MUK, IDi, IDr, TS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MukRecord {
    /// IDi and IDr.
    pub muk_id: MukId,
    /// The MUK.
    pub muk: Muk,
    /// The counter of the last MSK message accepted under this MUK.
    pub counter: Option<u32>,
    /// The MAC of that message, to recognise an identical retransmission.
    pub last_mac: Option<[u8; 20]>,
}

/// A stored MSK (TS 31.102 EF_MSK: MSK, TS, SEQs/SEQu).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MskRecord {
    /// Key Domain ID and MSK ID.
    pub name: MskName,
    /// The MSK.
    pub msk: Msk,
    /// SEQs: the lower limit of the window, moved to each accepted MTK ID.
    pub seq_s: MtkId,
    /// SEQu: the upper limit.
    pub seq_u: MtkId,
    /// The counter of the last MTK message accepted under this MSK.
    pub counter: Option<u32>,
    /// The highest MTK ID ever accepted under this MSK (RFC 1982). It never
    /// moves back: that ID and every ID at or below it stay refused under
    /// this MSK whatever window a later MSK message brings (`PROFILE.md`
    /// section 7, revised).
    pub accepted: Option<MtkId>,
}

impl MskRecord {
    /// Inactive: SEQs > SEQu by RFC 1982 (seed 004 6.3.2.3.3).
    pub fn is_inactive(&self) -> bool {
        self.seq_s.0.gt(self.seq_u.0)
    }
}

/// Everything the MGV-F keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MgvState {
    /// MUKs by MUK ID.
    pub muks: BTreeMap<MukId, MukRecord>,
    /// Per BM-SC (IDi): the MUK ID last used successfully by that BM-SC
    /// (seeds 002/003 6.3.2.2.4).
    pub last_used_muk: BTreeMap<String, MukId>,
    /// Per BM-SC (IDi): the MUK installed last and the one installed before
    /// it, the two MUKs an MSK message may name (`PROFILE.md` section 7:
    /// "its current one or the one before").
    pub installed_muks: BTreeMap<String, InstalledMuks>,
    /// MSKs by name.
    pub msks: BTreeMap<MskName, MskRecord>,
}

/// The MUKs of one BM-SC (IDi) an MSK message may name: the UE's current
/// one (installed last, after the latest GBA bootstrapping) and the one
/// installed before it (`PROFILE.md` section 7). A push the BM-SC protected
/// before the UE bootstrapped again still verifies, whether or not that
/// MUK was ever used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledMuks {
    /// The MUK installed last.
    pub current: MukId,
    /// The MUK installed before it, while the MGV-F holds it.
    pub previous: Option<MukId>,
}

impl InstalledMuks {
    /// Whether `id` is the current or the previous MUK.
    pub fn names(&self, id: &MukId) -> bool {
        self.current == *id || self.previous.as_ref() == Some(id)
    }
}

/// Orders Key Numbers of one key group, lowest first, by RFC 1982: a key
/// sorts after every key it is greater than (its rank is the number of
/// other keys below it); keys of equal rank (undefined comparisons) sort by
/// value, so the order is total and deterministic.
pub fn key_number_order(numbers: &[u16]) -> Vec<u16> {
    let rank = |x: u16| {
        numbers
            .iter()
            .filter(|&&y| y != x && Serial16(y).lt(Serial16(x)))
            .count()
    };
    let mut v = numbers.to_vec();
    v.sort_by_key(|&x| (rank(x), x));
    v
}

/// The lowest of `numbers` by RFC 1982 (seed 000 6.3.2.1, `PROFILE.md`
/// section 7): the one less than every other. `None` when no such one
/// exists (comparisons undefined, RFC 1982 3.2).
pub fn lowest_key_number(numbers: &[u16]) -> Option<u16> {
    numbers.iter().copied().find(|&x| {
        numbers
            .iter()
            .all(|&y| y == x || Serial16(x).lt(Serial16(y)))
    })
}

impl MgvState {
    /// The MSK records of a key group, lowest Key Number (the older, RFC
    /// 1982) first.
    pub fn msks_of(&self, key_group: KeyGroupName) -> Vec<&MskRecord> {
        let numbers: Vec<u16> = self
            .msks
            .keys()
            .filter(|n| n.key_group() == key_group)
            .map(|n| n.msk_id.key_number)
            .collect();
        key_number_order(&numbers)
            .into_iter()
            .filter_map(|k| {
                self.msks.get(&MskName {
                    key_domain: key_group.key_domain,
                    msk_id: MskId::new(key_group.key_group, k),
                })
            })
            .collect()
    }

    /// Check that `next` moves no counter of `self` backwards and re-opens
    /// no MTK ID (a MUK or MSK that disappears is a deletion, which is
    /// allowed).
    pub fn check_monotonic(&self, next: &MgvState) -> Result<(), StoreError> {
        for (id, old) in &self.muks {
            if let Some(new) = next.muks.get(id) {
                if new.counter < old.counter {
                    return Err(StoreError::CounterRollback(format!("MUK {id}")));
                }
            }
        }
        for (name, old) in &self.msks {
            if let Some(new) = next.msks.get(name) {
                if new.counter < old.counter {
                    return Err(StoreError::CounterRollback(format!("MSK {name}")));
                }
                if let Some(a) = old.accepted {
                    let kept = new.accepted.is_some_and(|b| b == a || b.0.gt(a.0));
                    if !kept {
                        return Err(StoreError::CounterRollback(format!(
                            "MSK {name} (accepted MTK ID)"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Check the consistency of a state read from storage: what the MGV-F
    /// never writes is damage, refused rather than used.
    fn validate(&self) -> Result<(), String> {
        for (idi, id) in &self.last_used_muk {
            if &id.idi != idi || !self.muks.contains_key(id) {
                return Err(format!("last_used_muk names a MUK it does not hold: {id}"));
            }
        }
        for (idi, inst) in &self.installed_muks {
            for id in std::iter::once(&inst.current).chain(&inst.previous) {
                if &id.idi != idi || !self.muks.contains_key(id) {
                    return Err(format!("installed_muks names a MUK it does not hold: {id}"));
                }
            }
            if inst.previous.as_ref() == Some(&inst.current) {
                return Err(format!(
                    "installed_muks names {} as current and previous",
                    inst.current
                ));
            }
        }
        for id in self.muks.keys() {
            let installed = self
                .installed_muks
                .get(&id.idi)
                .is_some_and(|i| i.names(id));
            if !installed && self.last_used_muk.get(&id.idi) != Some(id) {
                return Err(format!(
                    "MUK {id} is neither the current, the previous nor the last used one"
                ));
            }
        }
        for m in self.muks.values() {
            if m.last_mac.is_some() && m.counter.is_none() {
                return Err(format!("MUK {} has a last_mac but no counter", m.muk_id));
            }
        }
        let mut per_group: BTreeMap<KeyGroupName, usize> = BTreeMap::new();
        for m in self.msks.values() {
            if m.name.msk_id.is_current_request() {
                return Err(format!("MSK {} has Key Number 0", m.name));
            }
            if m.accepted.is_some() && m.counter.is_none() {
                return Err(format!(
                    "MSK {} has an accepted MTK ID but no counter",
                    m.name
                ));
            }
            *per_group.entry(m.name.key_group()).or_default() += 1;
        }
        if let Some((g, n)) = per_group.iter().find(|(_, n)| **n > MAX_MSKS_PER_KEY_GROUP) {
            return Err(format!(
                "{n} MSKs in key group {g} (at most {MAX_MSKS_PER_KEY_GROUP})"
            ));
        }
        Ok(())
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("MGV-S I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The MGV-S file does not exist (opening an existing store).
    #[error("MGV-S file {path} is missing")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The MGV-S file already exists (creating a new store).
    #[error("MGV-S file {path} already exists: refusing to create a new, empty one over it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The stored file is not a valid MGV-S snapshot.
    #[error("MGV-S file {path} is corrupt: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A commit would roll a counter back.
    #[error("refused: the commit would roll back the counter of {0}")]
    CounterRollback(String),
    /// An earlier commit renamed the new state over the file but could not
    /// make the rename durable: what the file holds after a crash is
    /// unknown, so no commit is taken until the store is opened again.
    #[error("MGV-S file {path}: an earlier commit could not be made durable; refusing commits until the UE starts again")]
    Uncertain {
        /// The file.
        path: PathBuf,
    },
}

/// The MGV-S.
pub trait MgvStore {
    /// The current state.
    fn state(&self) -> &MgvState;
    /// Replace the state atomically. On error the state is unchanged.
    fn commit(&mut self, next: MgvState) -> Result<(), StoreError>;
}

/// An in-memory MGV-S (tests, short-lived UEs).
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: MgvState,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl MgvStore for MemoryStore {
    fn state(&self) -> &MgvState {
        &self.state
    }

    fn commit(&mut self, next: MgvState) -> Result<(), StoreError> {
        self.state.check_monotonic(&next)?;
        self.state = next;
        Ok(())
    }
}

/// A durable MGV-S: one JSON snapshot file, replaced atomically on every
/// commit (write `<file>.tmp` with mode 0600, fsync it, rename it over
/// `<file>`, fsync the directory). The file holds keys: mode 0600, in a
/// directory that [`FileStore::create`] makes with mode 0700.
///
/// A new store is made only by [`FileStore::create`] (explicit);
/// [`FileStore::open`] opens an existing one and refuses a missing, empty,
/// truncated or otherwise invalid file (`PROFILE.md` section 7: the MGV-S
/// never silently resets its counters).
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    state: MgvState,
    /// A commit failed after its rename ([`StoreError::Uncertain`]).
    uncertain: bool,
}

// ---- the snapshot format --------------------------------------------------
//
// Version 3 (written): the current and the previous MUK of each BM-SC
// (`installed_muks`). Version 2 (read only, migrated on the next commit):
// no arrival order (the older MSK is the lower Key Number), and the highest
// accepted MTK ID per MSK; it kept a BM-SC's newest MUK and the one last
// used, so with two MUKs the one not last used is the current one and the
// last used one is taken as the previous one. Version 1 (read only): as
// version 2, and MSKs carried an arrival number; the accepted MTK ID is
// taken to be SEQs when an MTK was accepted (version 1 moved SEQs to each
// accepted MTK ID).

/// The format tag written in every snapshot.
pub const SNAPSHOT_FORMAT: &str = "mbms-mgvs/3";
const SNAPSHOT_FORMAT_V2: &str = "mbms-mgvs/2";
const SNAPSHOT_FORMAT_V1: &str = "mbms-mgvs/1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapMuk {
    idi: String,
    idr: String,
    muk: Zeroizing<String>,
    counter: Option<u32>,
    last_mac: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapMsk {
    key_domain: String,
    msk_id: String,
    msk: Zeroizing<String>,
    seq_s: u16,
    seq_u: u16,
    counter: Option<u32>,
    accepted: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapMskV1 {
    key_domain: String,
    msk_id: String,
    msk: Zeroizing<String>,
    seq_s: u16,
    seq_u: u16,
    counter: Option<u32>,
    #[allow(dead_code)]
    arrival: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapLastUsed {
    idi: String,
    idr: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapInstalled {
    idi: String,
    current: String,
    previous: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    format: String,
    muks: Vec<SnapMuk>,
    last_used_muk: Vec<SnapLastUsed>,
    installed_muks: Vec<SnapInstalled>,
    msks: Vec<SnapMsk>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotV2 {
    #[allow(dead_code)]
    format: String,
    muks: Vec<SnapMuk>,
    last_used_muk: Vec<SnapLastUsed>,
    msks: Vec<SnapMsk>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotV1 {
    #[allow(dead_code)]
    format: String,
    muks: Vec<SnapMuk>,
    last_used_muk: Vec<SnapLastUsed>,
    msks: Vec<SnapMskV1>,
    #[allow(dead_code)]
    next_arrival: u64,
}

/// Only the format tag, to pick the version before reading the rest.
#[derive(Deserialize)]
struct FormatProbe {
    format: String,
}

fn to_snapshot(s: &MgvState) -> Snapshot {
    Snapshot {
        format: SNAPSHOT_FORMAT.into(),
        muks: s
            .muks
            .values()
            .map(|m| SnapMuk {
                idi: m.muk_id.idi.clone(),
                idr: m.muk_id.idr.clone(),
                muk: Zeroizing::new(hex::encode(m.muk.as_bytes())),
                counter: m.counter,
                last_mac: m.last_mac.map(hex::encode),
            })
            .collect(),
        last_used_muk: s
            .last_used_muk
            .values()
            .map(|id| SnapLastUsed {
                idi: id.idi.clone(),
                idr: id.idr.clone(),
            })
            .collect(),
        installed_muks: s
            .installed_muks
            .iter()
            .map(|(idi, i)| SnapInstalled {
                idi: idi.clone(),
                current: i.current.idr.clone(),
                previous: i.previous.as_ref().map(|p| p.idr.clone()),
            })
            .collect(),
        msks: s
            .msks
            .values()
            .map(|m| SnapMsk {
                key_domain: m.name.key_domain.to_string(),
                msk_id: m.name.msk_id.to_string(),
                msk: Zeroizing::new(hex::encode(m.msk.as_bytes())),
                seq_s: m.seq_s.value(),
                seq_u: m.seq_u.value(),
                counter: m.counter,
                accepted: m.accepted.map(|a| a.value()),
            })
            .collect(),
    }
}

/// Version 2 and 1 snapshots name no current MUK: they kept a BM-SC's
/// newest MUK and the one it last used. One MUK is the current one; of two,
/// the one not last used is current and the last used one is taken as the
/// previous one. Anything else is no state those versions wrote.
fn installed_of_v2(
    muks: &[SnapMuk],
    last_used: &[SnapLastUsed],
) -> Result<Vec<SnapInstalled>, String> {
    let mut by_idi: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in muks {
        by_idi.entry(&m.idi).or_default().push(&m.idr);
    }
    by_idi
        .into_iter()
        .map(|(idi, idrs)| {
            let used = last_used
                .iter()
                .find(|l| l.idi == idi)
                .map(|l| l.idr.as_str());
            match (idrs.as_slice(), used) {
                ([one], _) => Ok(SnapInstalled {
                    idi: idi.to_owned(),
                    current: (*one).to_owned(),
                    previous: None,
                }),
                ([a, b], Some(u)) if u == *a || u == *b => Ok(SnapInstalled {
                    idi: idi.to_owned(),
                    current: if u == *a { *b } else { *a }.to_owned(),
                    previous: Some(u.to_owned()),
                }),
                _ => Err(format!(
                    "{} MUKs of BM-SC {idi} and no way to tell the current one",
                    idrs.len()
                )),
            }
        })
        .collect()
}

fn from_snapshot(
    muks: Vec<SnapMuk>,
    last_used_muk: Vec<SnapLastUsed>,
    installed_muks: Vec<SnapInstalled>,
    msks: Vec<SnapMsk>,
) -> Result<MgvState, String> {
    let mut s = MgvState::default();
    for m in muks {
        let muk_id = MukId::new(m.idi, m.idr);
        let muk = Muk::from_hex(&m.muk).map_err(|e| format!("MUK {muk_id}: {e}"))?;
        let last_mac = match m.last_mac {
            Some(h) => {
                let b = hex::decode(h).map_err(|e| format!("MUK {muk_id} last_mac: {e}"))?;
                Some(
                    <[u8; 20]>::try_from(b.as_slice())
                        .map_err(|_| format!("MUK {muk_id}: last_mac is not 20 bytes"))?,
                )
            }
            None => None,
        };
        let rec = MukRecord {
            muk_id: muk_id.clone(),
            muk,
            counter: m.counter,
            last_mac,
        };
        if s.muks.insert(muk_id.clone(), rec).is_some() {
            return Err(format!("MUK {muk_id} appears twice"));
        }
    }
    for l in last_used_muk {
        let id = MukId::new(l.idi.clone(), l.idr);
        if s.last_used_muk.insert(l.idi, id.clone()).is_some() {
            return Err(format!("two last-used MUKs for the BM-SC of {id}"));
        }
    }
    for i in installed_muks {
        let inst = InstalledMuks {
            current: MukId::new(i.idi.clone(), i.current),
            previous: i.previous.map(|p| MukId::new(i.idi.clone(), p)),
        };
        if s.installed_muks.insert(i.idi, inst).is_some() {
            return Err("two installed_muks entries for one BM-SC".into());
        }
    }
    for m in msks {
        let name = MskName {
            key_domain: m
                .key_domain
                .parse::<KeyDomainId>()
                .map_err(|e| format!("MSK key_domain {:?}: {e}", m.key_domain))?,
            msk_id: m
                .msk_id
                .parse::<MskId>()
                .map_err(|e| format!("MSK msk_id {:?}: {e}", m.msk_id))?,
        };
        let rec = MskRecord {
            name,
            msk: Msk::from_hex(&m.msk).map_err(|e| format!("MSK {name}: {e}"))?,
            seq_s: MtkId::new(m.seq_s),
            seq_u: MtkId::new(m.seq_u),
            counter: m.counter,
            accepted: m.accepted.map(MtkId::new),
        };
        if s.msks.insert(name, rec).is_some() {
            return Err(format!("MSK {name} appears twice"));
        }
    }
    s.validate()?;
    Ok(s)
}

fn parse_snapshot(bytes: &[u8]) -> Result<MgvState, String> {
    if bytes.is_empty() {
        return Err("empty file (0 bytes)".into());
    }
    let probe: FormatProbe = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match probe.format.as_str() {
        SNAPSHOT_FORMAT => {
            let s: Snapshot = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            from_snapshot(s.muks, s.last_used_muk, s.installed_muks, s.msks)
        }
        SNAPSHOT_FORMAT_V2 => {
            let s: SnapshotV2 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            let installed = installed_of_v2(&s.muks, &s.last_used_muk)?;
            from_snapshot(s.muks, s.last_used_muk, installed, s.msks)
        }
        SNAPSHOT_FORMAT_V1 => {
            let s: SnapshotV1 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            let msks = s
                .msks
                .into_iter()
                .map(|m| SnapMsk {
                    accepted: m.counter.map(|_| m.seq_s),
                    key_domain: m.key_domain,
                    msk_id: m.msk_id,
                    msk: m.msk,
                    seq_s: m.seq_s,
                    seq_u: m.seq_u,
                    counter: m.counter,
                })
                .collect();
            let installed = installed_of_v2(&s.muks, &s.last_used_muk)?;
            from_snapshot(s.muks, s.last_used_muk, installed, msks)
        }
        other => Err(format!(
            "unknown format {other:?} (this version reads {SNAPSHOT_FORMAT:?}, {SNAPSHOT_FORMAT_V2:?} and {SNAPSHOT_FORMAT_V1:?})"
        )),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

impl FileStore {
    /// Create a new, empty store at `path` and write it at once. Refused
    /// ([`StoreError::Exists`]) if the file exists: an existing MGV-S is
    /// never replaced by an empty one. A missing parent directory is
    /// created with mode 0700. A leftover `<path>.tmp` is removed.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        match fs::symlink_metadata(&path) {
            Ok(_) => return Err(StoreError::Exists { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                let mut b = fs::DirBuilder::new();
                b.recursive(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::DirBuilderExt;
                    b.mode(0o700);
                }
                b.create(dir).map_err(io_err(dir))?;
            }
        }
        remove_leftover_tmp(&path)?;
        let mut store = FileStore {
            path,
            state: MgvState::default(),
            uncertain: false,
        };
        store.write_atomically(&MgvState::default())?;
        Ok(store)
    }

    /// Open the existing store at `path`. A missing file is
    /// [`StoreError::Missing`]; an empty, truncated or invalid one is
    /// [`StoreError::Corrupt`] (never an empty state). A leftover
    /// `<path>.tmp` from an interrupted commit is ignored (and removed): the
    /// last completed commit is what counts.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let state = Self::load(&path)?;
        remove_leftover_tmp(&path)?;
        Ok(FileStore {
            path,
            state,
            uncertain: false,
        })
    }

    /// Read the snapshot at `path` without opening the store: no leftover
    /// `<path>.tmp` is touched, so another process (a status tool) may read
    /// the MGV-S of a running UE. A missing file is [`StoreError::Missing`].
    pub fn load(path: &Path) -> Result<MgvState, StoreError> {
        match fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                parse_snapshot(&bytes).map_err(|why| StoreError::Corrupt {
                    path: path.to_owned(),
                    why,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Missing {
                path: path.to_owned(),
            }),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `next` over the file. A failure after the rename leaves the
    /// file with `next`, not known to be durable: neither state may be
    /// built on (a later commit over the old one could write a counter
    /// lower than the file's; one over `next` could be lost with it), so
    /// the store takes no commit until it is opened again.
    fn write_atomically(&mut self, next: &MgvState) -> Result<(), StoreError> {
        let bytes = Zeroizing::new(serde_json::to_vec_pretty(&to_snapshot(next)).map_err(|e| {
            StoreError::Corrupt {
                path: self.path.clone(),
                why: e.to_string(),
            }
        })?);
        replace_private_file(&self.path, &bytes).map_err(|e| {
            self.uncertain = e.renamed;
            io_err(&e.path)(e.source)
        })
    }
}

/// Why [`replace_private_file`] failed.
#[derive(Debug)]
pub struct ReplaceError {
    /// The path that failed (the temporary file, the file, or its folder).
    pub path: PathBuf,
    /// The error.
    pub source: std::io::Error,
    /// The rename was done: the file holds the new content, but it is not
    /// known to be durable (the folder's fsync failed), so after a crash it
    /// may hold either.
    pub renamed: bool,
}

impl std::fmt::Display for ReplaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

/// Replaces `path` with `bytes` so that a crash at any instant leaves the
/// old content or the new one (`PROFILE.md` section 7: the MGV-S survives
/// crashes): write `path.tmp` with mode 0600 (also over a leftover
/// temporary file of another mode), fsync it, rename it over `path`, fsync
/// the folder. On failure, the path that failed, the error, and whether
/// the rename was done. The UE's other state files use it too.
pub fn replace_private_file(path: &Path, bytes: &[u8]) -> Result<(), ReplaceError> {
    let tmp = tmp_path(path);
    let on = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ReplaceError {
            path: p,
            source,
            renamed: false,
        }
    };
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(on(&tmp))?;
    #[cfg(unix)]
    {
        // A leftover temporary file keeps its old mode through `truncate`.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(on(&tmp))?;
    }
    f.write_all(bytes).map_err(on(&tmp))?;
    f.sync_all().map_err(on(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(on(path))?;
    #[cfg(test)]
    if tests::FAIL_DIR_SYNC.get() {
        return Err(ReplaceError {
            path: parent_dir(path).to_path_buf(),
            source: std::io::Error::other("injected"),
            renamed: true,
        });
    }
    sync_parent_dir(path).map_err(|source| ReplaceError {
        path: parent_dir(path).to_path_buf(),
        source,
        renamed: true,
    })
}

/// The folder of `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Makes a rename or removal in the folder of `path` durable.
pub fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    File::open(parent_dir(path)).and_then(|d| d.sync_all())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".tmp");
    PathBuf::from(p)
}

fn remove_leftover_tmp(path: &Path) -> Result<(), StoreError> {
    let tmp = tmp_path(path);
    match fs::remove_file(&tmp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&tmp)(e)),
    }
}

impl MgvStore for FileStore {
    fn state(&self) -> &MgvState {
        &self.state
    }

    fn commit(&mut self, next: MgvState) -> Result<(), StoreError> {
        if self.uncertain {
            return Err(StoreError::Uncertain {
                path: self.path.clone(),
            });
        }
        self.state.check_monotonic(&next)?;
        self.write_atomically(&next)?;
        self.state = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Makes this thread's next folder fsync in [`replace_private_file`]
        /// fail (after the rename).
        pub(super) static FAIL_DIR_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn with_muk(s: &MgvState, idr: &str, counter: u32) -> MgvState {
        let mut next = s.clone();
        let id = MukId::new("bmsc.home1.net", idr);
        next.muks.insert(
            id.clone(),
            MukRecord {
                muk_id: id.clone(),
                muk: Muk::from_bytes([7; 32]),
                counter: Some(counter),
                last_mac: None,
            },
        );
        next.installed_muks.insert(
            id.idi.clone(),
            InstalledMuks {
                current: id,
                previous: None,
            },
        );
        next
    }

    /// A commit whose rename is done but whose folder fsync fails leaves the
    /// file with the new state, not known to be durable: the store takes no
    /// further commit (neither over the old state, which could write a
    /// counter lower than the file's, nor over the new one) until it is
    /// opened again, and then it reads what the file holds.
    #[test]
    fn a_commit_not_made_durable_stops_the_store_until_it_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mgvs.json");
        let mut store = FileStore::create(&path).unwrap();
        let s1 = with_muk(store.state(), "a", 5);
        store.commit(s1.clone()).unwrap();
        FAIL_DIR_SYNC.set(true);
        let e = store.commit(with_muk(&s1, "a", 9)).unwrap_err();
        FAIL_DIR_SYNC.set(false);
        assert!(matches!(e, StoreError::Io { .. }), "{e}");
        assert_eq!(store.state(), &s1, "the failed commit changes no state");
        let e = store.commit(with_muk(&s1, "a", 6)).unwrap_err();
        assert!(matches!(e, StoreError::Uncertain { .. }), "{e}");
        assert_eq!(
            FileStore::open(&path).unwrap().state().muks[&MukId::new("bmsc.home1.net", "a")]
                .counter,
            Some(9),
            "the file holds the renamed state"
        );
        // A failure before the rename leaves the file as it was and the
        // store usable.
        let mut store = FileStore::open(&path).unwrap();
        std::fs::create_dir(tmp_path(&path)).unwrap();
        let e = store.commit(with_muk(store.state(), "a", 10)).unwrap_err();
        assert!(matches!(e, StoreError::Io { .. }), "{e}");
        std::fs::remove_dir(tmp_path(&path)).unwrap();
        store.commit(with_muk(store.state(), "a", 10)).unwrap();
    }
}
