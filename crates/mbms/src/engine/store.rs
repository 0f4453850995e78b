//! The engine's persistence seam: what must survive a crash of the BM-SC, and
//! an in-memory implementation for tests.
//!
//! Two things must never go backwards, even across a crash:
//!
//! * the replay counter of each MUK (the MGV-F rejects an MSK message whose
//!   counter is not greater than the last it accepted under that MUK,
//!   `PROFILE.md` section 7): the engine reserves counters in blocks under
//!   one engine-wide *high-water mark* (every MUK's counters are below it)
//!   and persists it **before** it emits any message that uses a counter of
//!   the block; after a restart every UE resumes above the persisted mark,
//!   so counters never repeat (a crash merely skips the rest of a block);
//! * the state of each key group (its MSKs, their MTK ID windows, the last
//!   MTK ID and the MTK-message counter of each MSK): the engine saves a
//!   [`KeyGroupSnapshot`] before it returns any message or key that depends
//!   on the new state, so a restarted engine never reissues an MTK ID or an
//!   MTK-message counter.
//!
//! Implementations must make a write durable before returning `Ok` (for SQL:
//! after COMMIT with synchronous writes). The snapshots hold MSKs: store them
//! like the BSF stores K (a file readable by the service only).

use std::collections::BTreeMap;

use crate::ids::{KeyGroupName, MskName, MtkId};
use crate::keys::Msk;

/// A storage failure, as reported by an [`EngineStore`].
#[derive(Debug, thiserror::Error)]
#[error("engine store: {message}")]
pub struct StoreError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StoreError {
    /// A failure described by text.
    pub fn new(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
            source: None,
        }
    }

    /// A failure caused by another error (e.g. a database error).
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// The persisted state of one MSK of a key group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MskSnapshot {
    /// Key Domain ID and MSK ID.
    pub name: MskName,
    /// The key.
    pub key: Msk,
    /// Key validity VF (SEQs as delivered): MTK IDs must be greater.
    pub seq_s: MtkId,
    /// Key validity VT (SEQu): MTK IDs must not be greater.
    pub seq_u: MtkId,
    /// The counter of the last MTK message protected by this MSK (0: none yet).
    pub mtk_counter: u32,
    /// The last MTK ID issued under this MSK (`seq_s`: none yet).
    pub last_mtk_id: MtkId,
}

/// The persisted state of a key group: its current MSK, the next MSK
/// (prepared and pushed ahead of the rotation) and the next Key Number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGroupSnapshot {
    /// The key group.
    pub name: KeyGroupName,
    /// The MSK that protects the MTKs issued now.
    pub current: MskSnapshot,
    /// The MSK that becomes current at the next rotation.
    pub next: MskSnapshot,
    /// The Key Number the MSK after `next` will get (1..=65535, never 0).
    pub next_key_number: u16,
}

/// Durable storage for the engine (see the module documentation). The BM-SC
/// server implements it over SQLite or PostgreSQL; [`MemoryStore`] is for
/// tests. Implemented for `&mut S` too, so a test can keep the store across
/// a simulated crash of the engine.
pub trait EngineStore {
    /// The persisted high-water mark of the MUK counters: every counter the
    /// engine may have put in a message, under any MUK, is at most this value
    /// (`None`: nothing reserved yet).
    fn counter_reserved(&self) -> Result<Option<u32>, StoreError>;

    /// Durably raise the counter high-water mark to `upto`. The engine calls
    /// it with strictly increasing values; an implementation must never lower
    /// the stored value.
    fn reserve_counters(&mut self, upto: u32) -> Result<(), StoreError>;

    /// Durably reserve a block of at least `len` counters shared with other
    /// engines on the same store (several BM-SC instances on one database,
    /// TS 33.246 6.3.4): the new mark is at least `upto`, and the `len`
    /// counters just below it are above every mark reserved before by
    /// anyone, so counters from this block never repeat one another engine
    /// handed out. Returns the new mark. The default (one engine per store)
    /// is [`reserve_counters`](Self::reserve_counters)`(upto)`.
    fn reserve_counter_block(&mut self, len: u32, upto: u32) -> Result<u32, StoreError> {
        let _ = len;
        self.reserve_counters(upto)?;
        Ok(upto)
    }

    /// The saved state of a key group, if any.
    fn load_key_group(&self, name: &KeyGroupName) -> Result<Option<KeyGroupSnapshot>, StoreError>;

    /// Durably save the state of a key group (replacing the previous one).
    fn save_key_group(&mut self, snapshot: &KeyGroupSnapshot) -> Result<(), StoreError>;
}

impl<S: EngineStore + ?Sized> EngineStore for &mut S {
    fn counter_reserved(&self) -> Result<Option<u32>, StoreError> {
        (**self).counter_reserved()
    }

    fn reserve_counters(&mut self, upto: u32) -> Result<(), StoreError> {
        (**self).reserve_counters(upto)
    }

    fn reserve_counter_block(&mut self, len: u32, upto: u32) -> Result<u32, StoreError> {
        (**self).reserve_counter_block(len, upto)
    }

    fn load_key_group(&self, name: &KeyGroupName) -> Result<Option<KeyGroupSnapshot>, StoreError> {
        (**self).load_key_group(name)
    }

    fn save_key_group(&mut self, snapshot: &KeyGroupSnapshot) -> Result<(), StoreError> {
        (**self).save_key_group(snapshot)
    }
}

/// An [`EngineStore`] in memory, for tests: it survives the engine (pass
/// `&mut store`, drop the engine, build a new one on the same store to
/// simulate a crash), counts writes, and can be told to fail writes.
#[derive(Debug, Default)]
pub struct MemoryStore {
    counter_mark: Option<u32>,
    groups: BTreeMap<KeyGroupName, KeyGroupSnapshot>,
    writes: u64,
    fail_writes: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The persisted counter high-water mark.
    pub fn counter_mark(&self) -> Option<u32> {
        self.counter_mark
    }

    /// The saved snapshot of a key group.
    pub fn key_group(&self, name: &KeyGroupName) -> Option<&KeyGroupSnapshot> {
        self.groups.get(name)
    }

    /// Successful writes so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Make every following write fail (`true`) or succeed again (`false`).
    pub fn set_fail_writes(&mut self, fail: bool) {
        self.fail_writes = fail;
    }

    fn check_write(&self) -> Result<(), StoreError> {
        if self.fail_writes {
            Err(StoreError::new(
                "write refused (MemoryStore::set_fail_writes)",
            ))
        } else {
            Ok(())
        }
    }
}

impl EngineStore for MemoryStore {
    fn counter_reserved(&self) -> Result<Option<u32>, StoreError> {
        Ok(self.counter_mark)
    }

    fn reserve_counters(&mut self, upto: u32) -> Result<(), StoreError> {
        self.check_write()?;
        if let Some(old) = self.counter_mark {
            if upto <= old {
                return Err(StoreError::new(format!(
                    "counter high-water mark would go from {old} to {upto}"
                )));
            }
        }
        self.counter_mark = Some(upto);
        self.writes += 1;
        Ok(())
    }

    fn load_key_group(&self, name: &KeyGroupName) -> Result<Option<KeyGroupSnapshot>, StoreError> {
        Ok(self.groups.get(name).cloned())
    }

    fn save_key_group(&mut self, snapshot: &KeyGroupSnapshot) -> Result<(), StoreError> {
        self.check_write()?;
        self.groups.insert(snapshot.name, snapshot.clone());
        self.writes += 1;
        Ok(())
    }
}
