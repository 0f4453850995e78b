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

use crate::ids::{KeyDomainId, MskId, MskName, MtkId, MukId};
use crate::keys::{Msk, Muk};

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
    /// Arrival order (larger = received later), for "delete the older".
    pub arrival: u64,
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
    /// MSKs by name.
    pub msks: BTreeMap<MskName, MskRecord>,
    /// The next arrival number.
    pub next_arrival: u64,
}

impl MgvState {
    /// Check that `next` moves no counter of `self` backwards (a MUK or MSK
    /// that disappears is a deletion, which is allowed).
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
            }
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
/// commit (write `<file>.tmp`, fsync, rename over `<file>`, fsync the
/// directory). The file holds keys: it is created with mode 0600.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    state: MgvState,
}

// ---- the snapshot format (version 1) ------------------------------------

#[derive(Serialize, Deserialize)]
struct SnapMuk {
    idi: String,
    idr: String,
    muk: Zeroizing<String>,
    counter: Option<u32>,
    last_mac: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SnapMsk {
    key_domain: String,
    msk_id: String,
    msk: Zeroizing<String>,
    seq_s: u16,
    seq_u: u16,
    counter: Option<u32>,
    arrival: u64,
}

#[derive(Serialize, Deserialize)]
struct SnapLastUsed {
    idi: String,
    idr: String,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: String,
    muks: Vec<SnapMuk>,
    last_used_muk: Vec<SnapLastUsed>,
    msks: Vec<SnapMsk>,
    next_arrival: u64,
}

const SNAPSHOT_FORMAT: &str = "mbms-mgvs/1";

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
                arrival: m.arrival,
            })
            .collect(),
        next_arrival: s.next_arrival,
    }
}

fn from_snapshot(snap: Snapshot) -> Result<MgvState, String> {
    if snap.format != SNAPSHOT_FORMAT {
        return Err(format!("unknown format {:?}", snap.format));
    }
    let mut s = MgvState {
        next_arrival: snap.next_arrival,
        ..Default::default()
    };
    for m in snap.muks {
        let muk_id = MukId::new(m.idi, m.idr);
        let muk = Muk::from_hex(&m.muk).map_err(|e| e.to_string())?;
        let last_mac = match m.last_mac {
            Some(h) => {
                let b = hex::decode(h).map_err(|e| e.to_string())?;
                Some(
                    <[u8; 20]>::try_from(b.as_slice())
                        .map_err(|_| "last_mac is not 20 bytes".to_string())?,
                )
            }
            None => None,
        };
        s.muks.insert(
            muk_id.clone(),
            MukRecord {
                muk_id,
                muk,
                counter: m.counter,
                last_mac,
            },
        );
    }
    for l in snap.last_used_muk {
        s.last_used_muk
            .insert(l.idi.clone(), MukId::new(l.idi, l.idr));
    }
    for m in snap.msks {
        let name = MskName {
            key_domain: m
                .key_domain
                .parse::<KeyDomainId>()
                .map_err(|e| e.to_string())?,
            msk_id: m.msk_id.parse::<MskId>().map_err(|e| e.to_string())?,
        };
        s.msks.insert(
            name,
            MskRecord {
                name,
                msk: Msk::from_hex(&m.msk).map_err(|e| e.to_string())?,
                seq_s: MtkId::new(m.seq_s),
                seq_u: MtkId::new(m.seq_u),
                counter: m.counter,
                arrival: m.arrival,
            },
        );
    }
    Ok(s)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

impl FileStore {
    /// Open the store at `path`, creating an empty one if the file does not
    /// exist. A leftover `<path>.tmp` from an interrupted commit is ignored
    /// (and removed): the last completed commit is what counts.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let tmp = tmp_path(&path);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        }
        let state = Self::load(&path)?;
        Ok(FileStore { path, state })
    }

    /// Read the snapshot at `path` without opening the store: no leftover
    /// `<path>.tmp` is touched, so another process (a status tool) may read
    /// the MGV-S of a running UE. An absent file is an empty state.
    pub fn load(path: &Path) -> Result<MgvState, StoreError> {
        match fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let snap: Snapshot =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: path.to_owned(),
                        why: e.to_string(),
                    })?;
                from_snapshot(snap).map_err(|why| StoreError::Corrupt {
                    path: path.to_owned(),
                    why,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MgvState::default()),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_atomically(&self, next: &MgvState) -> Result<(), StoreError> {
        let tmp = tmp_path(&self.path);
        let bytes = Zeroizing::new(serde_json::to_vec_pretty(&to_snapshot(next)).map_err(|e| {
            StoreError::Corrupt {
                path: self.path.clone(),
                why: e.to_string(),
            }
        })?);
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        Ok(())
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".tmp");
    PathBuf::from(p)
}

impl MgvStore for FileStore {
    fn state(&self) -> &MgvState {
        &self.state
    }

    fn commit(&mut self, next: MgvState) -> Result<(), StoreError> {
        self.state.check_monotonic(&next)?;
        self.write_atomically(&next)?;
        self.state = next;
        Ok(())
    }
}
