//! The BSF's persistent state behind the [`Store`] trait: subscribers (the
//! HSS role of the BSF: IMPI, K, OPc, SQN, AMF, GBA type; PROFILE.md
//! section 4) and bootstrapping sessions (B-TID, IMPI, RAND, Ks, expiry;
//! TS 33.220 4.5.2).
//!
//! The trait is synchronous on purpose: the server calls it from
//! `tokio::task::spawn_blocking` (the writes of bootstrapping through their
//! `*_then` forms, which deliver the result once committed), and a later
//! PostgreSQL implementation can use a blocking client the same way. [`crate::sqlite::SqliteStore`] is
//! the default implementation.
//!
//! SQN rule (TS 33.102 6.3.2 and Annex C): the stored `sqn` of a subscriber
//! is SQN_HE, the highest sequence number ever put into a vector.
//! [`Store::next_sqn`] increments it and makes the new value durable
//! *before* the caller builds and sends the vector, so a crash or restart
//! can never make the BSF send the same SQN twice.

use core::fmt;
use core::str::FromStr;

use gba::aka::{Amf, Rand};
use gba::{BTid, Ks, Opc, Sqn48, SubscriberKey};

/// Which GBA variant a subscriber's card supports (TS 33.220 4 vs 5).
///
/// The BSF is GBA_ME by default (PROFILE.md section 2); a subscriber marked
/// GBA_U additionally gets Ks_int_NAF on Zn.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum GbaType {
    /// GBA_ME: all keys live in the ME (TS 33.220 clause 4).
    #[default]
    GbaMe,
    /// GBA_U: GBA-aware UICC (TS 33.220 clause 5).
    GbaU,
}

impl GbaType {
    /// The token used in the database, on Zn and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GbaMe => "gba_me",
            Self::GbaU => "gba_u",
        }
    }
}

impl fmt::Display for GbaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GbaType {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "gba_me" | "me" => Ok(Self::GbaMe),
            "gba_u" | "u" => Ok(Self::GbaU),
            _ => Err(StoreError::Invalid(format!(
                "unknown GBA type {s:?} (expected gba_me or gba_u)"
            ))),
        }
    }
}

/// A subscriber record (the HSS data the BSF needs; PROFILE.md section 4).
/// K and OPc zeroize on drop and are redacted in `Debug`.
#[derive(Clone, Debug)]
pub struct Subscriber {
    /// The IP Multimedia Private Identity, e.g. `user1_private@home1.net`.
    pub impi: String,
    /// The subscriber key K (TS 35.206).
    pub k: SubscriberKey,
    /// OPc (TS 35.206 4.1).
    pub opc: Opc,
    /// SQN_HE: the highest SQN used in a vector so far (TS 33.102 Annex C).
    pub sqn: Sqn48,
    /// The AMF put into AUTN (TS 33.102 6.3.2).
    pub amf: Amf,
    /// GBA_ME (default) or GBA_U.
    pub gba_type: GbaType,
}

/// A bootstrapping session: what the BSF keeps after a successful Ub run
/// (TS 33.220 4.5.2). Ks zeroizes on drop and is redacted in `Debug`.
#[derive(Clone, Debug)]
pub struct Session {
    /// The bootstrapping transaction identifier, base64(RAND)@BSF-FQDN.
    pub btid: BTid,
    /// The IMPI that bootstrapped.
    pub impi: String,
    /// The RAND of the vector that authenticated the UE.
    pub rand: Rand,
    /// Ks = CK || IK.
    pub ks: Ks,
    /// The subscriber's GBA type at bootstrapping time.
    pub gba_type: GbaType,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Key lifetime end, Unix seconds (TS 33.220 4.5.2).
    pub expires_at: u64,
}

/// Errors of a [`Store`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `add` of an IMPI that is already provisioned.
    #[error("subscriber {0} already exists")]
    SubscriberExists(String),
    /// The IMPI is not provisioned.
    #[error("unknown subscriber {0}")]
    UnknownSubscriber(String),
    /// A session with this B-TID exists already (a RAND was used twice).
    #[error("bootstrapping session {0} already exists")]
    SessionExists(String),
    /// SQN_HE reached 2^48 - 1 (TS 33.102 Annex C).
    #[error("sequence number space exhausted for {0}")]
    SqnExhausted(String),
    /// Invalid data handed to the store (e.g. an empty IMPI).
    #[error("{0}")]
    Invalid(String),
    /// A stored record could not be decoded.
    #[error("corrupt record in the store: {0}")]
    Corrupt(String),
    /// The database file could not be created or opened.
    #[error("cannot open the database {path}")]
    Open {
        /// The database path.
        path: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database was refused at open: damaged, not ours, of a newer
    /// schema, or holding values this program never writes (the message
    /// names the file and the problem).
    #[error(transparent)]
    Refused(#[from] mbms_service::db::DbError),
    /// Any other error of the backend.
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Receives the result of a write handed over without waiting for it
/// ([`Store::next_sqn_then`], [`Store::insert_session_then`]), possibly on
/// another thread, once the write is committed (or failed).
pub type Done<T> = Box<dyn FnOnce(Result<T, StoreError>) + Send>;

/// The BSF's persistent state. Implementations must be safe to call from
/// several threads; every method is one atomic transaction.
pub trait Store: Send + Sync + 'static {
    /// Adds subscribers, all or nothing: if any IMPI already exists (or
    /// appears twice), nothing is written and
    /// [`StoreError::SubscriberExists`] is returned.
    fn add_subscribers(&self, subscribers: &[Subscriber]) -> Result<(), StoreError>;

    /// Adds the subscribers that do not exist yet and leaves existing ones
    /// untouched (in particular their SQN). Returns how many were added.
    fn provision_subscribers(&self, subscribers: &[Subscriber]) -> Result<usize, StoreError>;

    /// One subscriber.
    fn subscriber(&self, impi: &str) -> Result<Option<Subscriber>, StoreError>;

    /// All subscribers, ordered by IMPI.
    fn subscribers(&self) -> Result<Vec<Subscriber>, StoreError>;

    /// Removes a subscriber and its sessions. Returns whether it existed.
    fn remove_subscriber(&self, impi: &str) -> Result<bool, StoreError>;

    /// Advances SQN_HE by one and persists it (committed before this
    /// returns), returning the subscriber with the new SQN to use in the next
    /// vector; `None` for an unknown IMPI (TS 33.102 6.3.2, Annex C).
    fn next_sqn(&self, impi: &str) -> Result<Option<Subscriber>, StoreError>;

    /// Re-synchronisation (TS 33.102 6.3.5): SQN_HE := max(SQN_HE, SQN_MS),
    /// returning the new SQN_HE. The BSF never moves SQN_HE backwards, so an
    /// SQN is never sent twice (a deliberate tightening of 6.3.5, see
    /// docs/bsf.md).
    fn resync_sqn(&self, impi: &str, sqn_ms: Sqn48) -> Result<Sqn48, StoreError>;

    /// Stores a new session; [`StoreError::SessionExists`] if the B-TID is
    /// taken.
    fn insert_session(&self, session: &Session) -> Result<(), StoreError>;

    /// [`Store::next_sqn`] handing its result to `done` once committed,
    /// without blocking the caller where the store can (the SQLite store
    /// queues it to its group-commit writer). The default runs
    /// [`Store::next_sqn`] on the calling thread.
    fn next_sqn_then(&self, impi: &str, done: Done<Option<Subscriber>>) {
        done(self.next_sqn(impi));
    }

    /// [`Store::insert_session`] handing its result to `done` once
    /// committed, like [`Store::next_sqn_then`].
    fn insert_session_then(&self, session: &Session, done: Done<()>) {
        done(self.insert_session(session));
    }

    /// A session that has not expired at `now` (Unix seconds).
    fn session(&self, btid: &str, now: u64) -> Result<Option<Session>, StoreError>;

    /// Deletes every session expired at `now`; returns how many.
    fn purge_expired_sessions(&self, now: u64) -> Result<usize, StoreError>;

    /// How many sessions are stored (expired but not yet purged ones
    /// included).
    fn session_count(&self) -> Result<usize, StoreError>;
}
