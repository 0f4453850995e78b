//! Persistence of the BM-SC behind one trait, [`Store`], with two
//! implementations that behave the same: [`SqliteStore`] (a file, the
//! default) and [`PgStore`] (PostgreSQL). One test suite
//! ([`conformance`]) runs against both.
//!
//! What is stored, and why it must survive a crash:
//!
//! | state | why |
//! |---|---|
//! | MUK counter high-water marks | a (MUK, counter) pair must never repeat (the MGV-F drops replays, `PROFILE.md` section 7); the engine persists a block before using it |
//! | key groups: current and next MSK, windows, last MTK ID, MTK-message counter | MSKs must not change under the UEs, MTK IDs and counters must not be reissued |
//! | key group and service definitions | created from the configuration or the admin API |
//! | UEs: IMPI, B-TID, MUK, MIKEY address, registered services | registrations are accepted with a 200: they must survive; the MUK is the "last MUK known by the BM-SC" of the solicited pull (seeds 002/003) |
//! | delivery outcomes per (UE, MSK): acknowledged, charged | an acknowledged MSK is not pushed again after a restart; a charged subscriber is not charged twice |
//! | charging records | the 4-way procedure's product (seed 004 6.3.2.3.3) |
//!
//! Every write is durable when the method returns `Ok` (SQLite: WAL with
//! `synchronous = FULL`; PostgreSQL: a committed transaction). The store
//! holds secrets (MUKs and MSKs): the SQLite file is created with mode 0600;
//! a PostgreSQL database must be protected likewise.
//!
//! All methods block: call them from `tokio::task::spawn_blocking` (the
//! server does) or from plain threads.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use mbms::engine::{EngineStore, KeyGroupSnapshot, MskSnapshot};
use mbms::{KeyGroupName, Msk, MskId, MskName, MtkId, Muk};

pub mod conformance;
mod pg;
mod sqlite;

pub use pg::PgStore;
pub use sqlite::SqliteStore;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or initialised.
    #[error("cannot open the database {target}")]
    Open {
        /// The file or the URL without its password.
        target: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database failed.
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The stored data is not what this program wrote.
    #[error("corrupt data in the database: {0}")]
    Corrupt(String),
    /// A SQLite database refused at open: damaged, not ours, of a newer
    /// schema, or holding values this program never writes (the message
    /// names the file and the problem).
    #[error(transparent)]
    Refused(#[from] mbms_service::db::DbError),
    /// A PostgreSQL database refused at open (partial schema, unknown
    /// schema version, invalid rows).
    #[error("database {target}: {detail}")]
    Rejected {
        /// The database, without its password.
        target: String,
        /// The problem.
        detail: String,
    },
    /// A write with a value this program never stores (nothing written).
    #[error("refused to store {0}")]
    Invalid(String),
    /// A key group write of an instance that no longer holds the key
    /// group's lease (epoch fencing, [`ClusterStore::set_fence`]).
    #[error("key group {key_group}: this instance no longer holds its lease (fenced)")]
    Fenced {
        /// The Key Group.
        key_group: u16,
    },
    /// The MUK counter high-water mark would go down.
    #[error("MUK counter high-water mark would go from {stored} to {requested}")]
    CounterRollback {
        /// The stored mark.
        stored: u32,
        /// The requested mark.
        requested: u32,
    },
}

/// A key group definition: the policy of key group `key_group` in this
/// BM-SC's Key Domain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyGroupDef {
    /// Key Group part of the MSK IDs (1..=65535).
    pub key_group: u16,
    /// MTK IDs per MSK (1..=32767).
    pub window_len: u16,
    /// Charging: deliver with the 4-way procedure (seed 004 6.3.2.3.3).
    pub charging: bool,
    /// V bit of plain pushes (seed 000 6.3.2.3.1).
    pub ack: bool,
    /// Seconds between automatic rotations; 0 = only on request.
    pub rotate_interval: u64,
}

/// An MBMS User Service: its key groups and who may register to it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceDef {
    /// The service ID (a URI, e.g. `urn:mbms:service:news`).
    pub id: String,
    /// Key groups whose MSKs protect the service.
    pub key_groups: Vec<u16>,
    /// Any subscriber may register.
    pub open: bool,
    /// When not open: the IMPIs that may register.
    #[serde(default)]
    pub allowed: Vec<String>,
}

impl ServiceDef {
    /// Whether the subscriber `impi` may register (seed 002: "verifies that
    /// the subscriber is authorized").
    pub fn allows(&self, impi: &str) -> bool {
        self.open || self.allowed.iter().any(|a| a == impi)
    }
}

/// A UE known to the BM-SC (registered to at least one service, or
/// remembered for its MUK).
#[derive(Clone, PartialEq, Eq)]
pub struct UeRecord {
    /// The subscriber (IMPI, from Zn).
    pub impi: String,
    /// The B-TID of its last authenticated request (IDr of the MUK ID).
    pub btid: String,
    /// The MUK of that B-TID: the last MUK known by the BM-SC.
    pub muk: Muk,
    /// Where MIKEY messages go: the source IP of the last authenticated
    /// request and the UE's MIKEY port (`PROFILE.md` section 3).
    pub mikey_addr: SocketAddr,
    /// The services it is registered to.
    pub services: BTreeSet<String>,
    /// Last change, Unix milliseconds.
    pub updated_at: u64,
}

impl fmt::Debug for UeRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UeRecord")
            .field("impi", &self.impi)
            .field("btid", &self.btid)
            .field("muk", &"<redacted>")
            .field("mikey_addr", &self.mikey_addr)
            .field("services", &self.services)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// The persisted outcome of the delivery of one MSK to one UE.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryRecord {
    /// The subscriber.
    pub impi: String,
    /// The MSK.
    #[serde(serialize_with = "ser_display")]
    pub msk: MskName,
    /// `pending`, `acknowledged` or `given_up`.
    pub state: String,
    /// The subscriber was charged for it (4-way step 1 acknowledged).
    pub charged: bool,
    /// Last change, Unix milliseconds.
    pub updated_at: u64,
}

/// A charging record (seed 004 6.3.2.3.3): the subscriber acknowledged the
/// inactive MSK.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChargingRow {
    /// Sequence number assigned by the store (0 before insertion).
    pub id: i64,
    /// The subscriber.
    pub impi: String,
    /// The B-TID (IDr) of the acknowledged message.
    pub btid: String,
    /// The MSK.
    #[serde(serialize_with = "ser_display")]
    pub msk: MskName,
    /// The counter of the acknowledged message.
    pub counter: u32,
    /// When the acknowledgement arrived, Unix milliseconds.
    pub time_ms: u64,
}

fn ser_display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// What one batch of engine work produced, written in one transaction.
#[derive(Clone, Debug, Default)]
pub struct Outcomes {
    /// Delivery outcomes to upsert.
    pub deliveries: Vec<DeliveryRecord>,
    /// Charging records to append.
    pub charging: Vec<ChargingRow>,
}

impl Outcomes {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.charging.is_empty()
    }
}

/// A write of a UE's registration state.
#[derive(Clone, Debug)]
pub enum UeWrite {
    /// Insert or replace the UE and its registrations.
    Put(UeRecord),
    /// Forget the UE, its registrations and its deliveries.
    Remove(String),
}

/// Writes of many requests committed together ([`Store::commit`]: group
/// commit, one transaction and one fsync for all), in the order they were
/// made.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// Registration changes, in order.
    pub ues: Vec<UeWrite>,
    /// Delivery outcomes and charging records.
    pub outcomes: Outcomes,
    /// Notices to the other BM-SC instances on the same database, sent
    /// when (and only if) the batch commits (PostgreSQL `NOTIFY` in the
    /// transaction; ignored by a store without a cluster). See
    /// [`crate::cluster`].
    pub notices: Vec<String>,
}

impl WriteBatch {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ues.is_empty() && self.outcomes.is_empty() && self.notices.is_empty()
    }

    /// Rows written: registration changes, delivery outcomes and charging
    /// records.
    pub fn writes(&self) -> usize {
        self.ues.len() + self.outcomes.deliveries.len() + self.outcomes.charging.len()
    }

    /// Append `later` (its writes come after this batch's).
    pub fn append(&mut self, later: WriteBatch) {
        self.ues.extend(later.ues);
        self.outcomes.deliveries.extend(later.outcomes.deliveries);
        self.outcomes.charging.extend(later.outcomes.charging);
        self.notices.extend(later.notices);
    }
}

/// What a lease covers: a key group (its MSK key management anchor,
/// TS 33.246 6.3.4.3) or a shard of the UEs ([`crate::cluster::shard_of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseKind {
    /// Table `key_group_leases`: items are Key Groups.
    KeyGroup,
    /// Table `ue_shards`: items are shard numbers `0..UE_SHARDS`.
    UeShard,
}

/// A lease held by this instance after [`ClusterStore::claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The Key Group or shard.
    pub item: u32,
    /// Raised each time the lease changes holder (fencing token).
    pub epoch: i64,
}

/// An instance as [`ClusterStore::instances`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InstanceRow {
    /// Its `[cluster] instance_id`.
    pub instance_id: String,
    /// Its `advertise_url`.
    pub url: String,
    /// Its heartbeat is younger than the lease time.
    pub alive: bool,
    /// The key groups it anchors (unexpired leases).
    pub key_groups: Vec<u16>,
    /// The UE shards it holds (unexpired leases).
    pub ue_shards: usize,
}

/// Waits for notices of the other instances ([`ClusterStore::listen`]).
pub trait NoticeListener: Send {
    /// The notices that arrived within `timeout` (empty: none).
    fn wait(&mut self, timeout: std::time::Duration) -> Result<Vec<String>, StoreError>;
}

/// What several BM-SC instances on one database share (PostgreSQL only;
/// see [`crate::cluster`]): heartbeats, leases with epochs compared with
/// the database's clock (`now()`, never two processes' clocks), shared
/// secrets, notices. Every method blocks.
pub trait ClusterStore: Send + Sync {
    /// Records this instance's heartbeat (`heartbeat_at = now()`) and
    /// returns how many instances are alive (heartbeat younger than
    /// `lease_ms`), this one included.
    fn heartbeat(&self, instance: &str, url: &str, lease_ms: u64) -> Result<usize, StoreError>;
    /// Renews every lease of `kind` that `instance` holds (also those
    /// beyond `want`: they are given back with [`release`](Self::release)
    /// once no longer used), then takes free or expired leases (`expires_at
    /// < now()`, epoch raised) until it holds `want`, in one transaction.
    /// Key group leases are created for every defined key group. Returns
    /// the leases held afterwards, by item.
    fn claim(
        &self,
        kind: LeaseKind,
        instance: &str,
        lease_ms: u64,
        want: usize,
    ) -> Result<Vec<Lease>, StoreError>;
    /// Gives back the leases of `kind` on `items` that `instance` holds
    /// (others' leases are left alone): the holder stopped using them and
    /// its writes for them are committed, so the next holder reads
    /// everything (crate::cluster, hand-over).
    fn release(&self, kind: LeaseKind, instance: &str, items: &[u32]) -> Result<(), StoreError>;
    /// Gives back every lease of `instance` and forgets its heartbeat (a
    /// graceful stop: the others take over at once).
    fn release_all(&self, instance: &str) -> Result<(), StoreError>;
    /// Every instance known, with what it holds.
    fn instances(&self, lease_ms: u64) -> Result<Vec<InstanceRow>, StoreError>;
    /// The shared secret `name`: stored as `fresh` by the first instance
    /// that asks, the stored one afterwards.
    fn shared_secret(
        &self,
        name: &str,
        fresh: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError>;
    /// A listener of the notices ([`WriteBatch::notices`], [`notify`](Self::notify)),
    /// on a connection of its own.
    fn listen(&self) -> Result<Box<dyn NoticeListener>, StoreError>;
    /// Sends a notice to every instance listening (this one included).
    fn notify(&self, notice: &str) -> Result<(), StoreError>;
    /// Fences the key group writes of this process: from now on
    /// [`Store::save_key_group`] of an existing key group state succeeds
    /// only while `instance` holds the key group's lease with this epoch
    /// ([`StoreError::Fenced`] otherwise). `None` epoch: not held.
    fn set_fence(&self, instance: &str, key_group: u16, epoch: Option<i64>);
    /// Key group writes refused by the fence so far ([`StoreError::Fenced`]:
    /// this instance wrote as the anchor after its lease had passed to
    /// another; `bmsc_cluster_fenced_writes_total`).
    fn fenced_writes(&self) -> u64;
}

/// The `(idi, idr)` key of the engine-wide MUK counter mark in table
/// `muk_counters` (no MUK has an empty IDi: it is the BM-SC's FQDN). The
/// key engine bounds every MUK's counters by one mark (see
/// `mbms::engine::EngineStore`); 0.1.0 kept one row per MUK, which the
/// maximum still covers.
pub const COUNTER_MARK_ROW: (&str, &str) = ("", "");

/// The BM-SC's storage. See the [module documentation](self).
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgresql`.
    fn backend(&self) -> &'static str;

    /// The persisted high-water mark of the MUK counters: the highest mark in
    /// table `muk_counters` (the engine-wide mark is its row
    /// [`COUNTER_MARK_ROW`]; marks per MUK written by 0.1.0 count too).
    fn counter_reserved(&self) -> Result<Option<u32>, StoreError>;
    /// Raise the engine-wide mark; refuses to lower it
    /// ([`StoreError::CounterRollback`]).
    fn reserve_counters(&self, upto: u32) -> Result<(), StoreError>;
    /// Reserve a block shared with other instances on the same database
    /// (see `mbms::engine::EngineStore::reserve_counter_block`): the new
    /// mark is `max(mark + len, upto)`, taken atomically, so blocks of two
    /// instances never overlap. Returns the new mark. Default: one
    /// process per database, [`reserve_counters`](Self::reserve_counters).
    fn reserve_counter_block(&self, len: u32, upto: u32) -> Result<u32, StoreError> {
        let _ = len;
        self.reserve_counters(upto)?;
        Ok(upto)
    }
    /// The saved state of a key group.
    fn load_key_group(&self, name: &KeyGroupName) -> Result<Option<KeyGroupSnapshot>, StoreError>;
    /// Save the state of a key group.
    fn save_key_group(&self, snapshot: &KeyGroupSnapshot) -> Result<(), StoreError>;

    /// Insert or replace a key group definition.
    fn put_key_group_def(&self, def: &KeyGroupDef) -> Result<(), StoreError>;
    /// All key group definitions, by Key Group.
    fn key_group_defs(&self) -> Result<Vec<KeyGroupDef>, StoreError>;
    /// Insert or replace a service.
    fn put_service(&self, def: &ServiceDef) -> Result<(), StoreError>;
    /// All services, by ID.
    fn services(&self) -> Result<Vec<ServiceDef>, StoreError>;

    /// Insert or replace a UE and its registrations (one transaction).
    fn put_ue(&self, ue: &UeRecord) -> Result<(), StoreError>;
    /// Forget a UE, its registrations and delivery outcomes.
    fn remove_ue(&self, impi: &str) -> Result<(), StoreError>;
    /// All UEs, by IMPI.
    fn ues(&self) -> Result<Vec<UeRecord>, StoreError>;
    /// One UE (default: from [`ues`](Self::ues)).
    fn ue(&self, impi: &str) -> Result<Option<UeRecord>, StoreError> {
        Ok(self.ues()?.into_iter().find(|u| u.impi == impi))
    }

    /// Write delivery outcomes and charging records in one transaction;
    /// returns the charging records with their assigned IDs.
    fn record(&self, outcomes: &Outcomes) -> Result<Vec<ChargingRow>, StoreError>;
    /// Write a batch of registration changes and outcomes in one
    /// transaction (group commit); returns the charging records with their
    /// assigned IDs. All or nothing.
    fn commit(&self, batch: &WriteBatch) -> Result<Vec<ChargingRow>, StoreError>;
    /// Delivery outcomes, of one UE or of all.
    fn deliveries(&self, impi: Option<&str>) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Charging records with an ID greater than `after`, oldest first, at
    /// most `limit`.
    fn charging_records(&self, after: i64, limit: usize) -> Result<Vec<ChargingRow>, StoreError>;

    /// The cluster functions, where several instances may share the
    /// database (PostgreSQL); `None`: one process owns everything (SQLite).
    fn cluster(&self) -> Option<&dyn ClusterStore> {
        None
    }
}

/// Opens the store named by `db`: a `postgres://` or `postgresql://` URL
/// (or a `host=... dbname=...` connection string starting with `host=`),
/// else a SQLite file path. A new database is created only where no file
/// exists (SQLite, mode 0600) or in a schema without any table
/// (PostgreSQL); an existing one is checked first (see [`open_with`]).
pub fn open(db: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(db, Create::IfMissing)
}

/// [`open`] with the creation rule: [`Create::Init`] (`mbms bmsc --init`)
/// creates a new database and refuses an existing one. Every existing
/// database is checked before use: schema version known (a newer one is
/// refused), every table and column present, SQLite's
/// `PRAGMA quick_check`, delivery states known ([`DELIVERY_STATES`]),
/// counter marks non-negative and not below a counter already used (a
/// charging record), key group states decodable. A failed check is an
/// error naming the database and the problem: a damaged database never
/// starts as a fresh one.
pub fn open_with(db: &str, create: Create) -> Result<Arc<dyn Store>, StoreError> {
    if is_postgres(db) {
        Ok(Arc::new(PgStore::open_with(db, None, create)?))
    } else {
        Ok(Arc::new(SqliteStore::open_with(
            std::path::Path::new(db),
            create,
        )?))
    }
}

pub use mbms_service::db::Create;

/// The delivery states stored in `deliveries.state`: the names of the
/// engine's delivery states (`mbms::engine::DeliveryState`, see
/// docs/bmsc.md). Any other value is refused when written and when found
/// at open (an unknown state could make the BM-SC deliver or charge again).
pub const DELIVERY_STATES: [&str; 5] =
    ["pending", "sent", "unconfirmed", "acknowledged", "given_up"];

/// Refuses an unknown delivery state before anything is written.
pub(crate) fn check_outcomes(o: &Outcomes) -> Result<(), StoreError> {
    match o
        .deliveries
        .iter()
        .find(|d| !DELIVERY_STATES.contains(&d.state.as_str()))
    {
        Some(d) => Err(StoreError::Invalid(format!(
            "the unknown delivery state {:?} of {} for {}",
            d.state, d.msk, d.impi
        ))),
        None => Ok(()),
    }
}

/// The table holding the schema version of a PostgreSQL database (SQLite
/// keeps it in `PRAGMA user_version`).
pub(crate) const PG_META_TABLE: &str = "mbms_meta";

/// The version of the BM-SC schema (both backends): SQLite
/// `PRAGMA user_version`, PostgreSQL table `mbms_meta`. A database
/// with a newer version is refused.
pub const SCHEMA_VERSION: i64 = 2;

/// The checks of the rows of an existing database that are the same on
/// both backends: `first(sql)` runs a query and returns the first column
/// of its first row as text, if any. Each query finds the first row that
/// breaks a rule.
pub(crate) fn validate_rows(
    first: &mut dyn FnMut(&str) -> Result<Option<String>, String>,
) -> Result<(), String> {
    let states = DELIVERY_STATES
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let checks = [
        (
            "table deliveries holds an unknown delivery state",
            format!(
                "SELECT impi || ' ' || msk || ': ' || state FROM deliveries
                 WHERE state NOT IN ({states}) LIMIT 1"
            ),
        ),
        (
            "table muk_counters holds a negative or out-of-range counter mark",
            "SELECT idi || ' ' || idr || ': ' || CAST(reserved AS TEXT) FROM muk_counters
             WHERE reserved < 0 OR reserved > 4294967295 LIMIT 1"
                .to_owned(),
        ),
        (
            "table charging_records holds a negative or out-of-range counter",
            "SELECT CAST(id AS TEXT) || ': ' || CAST(counter AS TEXT) FROM charging_records
             WHERE counter < 0 OR counter > 4294967295 LIMIT 1"
                .to_owned(),
        ),
        (
            // The counter mark went back below a counter the BM-SC already
            // used (and the UE acknowledged): the engine would reuse
            // counters, and the MGV-F drops them as replays (PROFILE.md
            // section 7). One mark bounds every MUK's counters
            // (COUNTER_MARK_ROW; marks per MUK of 0.1.0 count in the maximum).
            "a counter mark is below a counter already used",
            "SELECT 'mark ' || COALESCE(CAST(m.mx AS TEXT), 'missing')
                    || ', counter ' || CAST(c.counter AS TEXT)
                    || ' used by charging record ' || CAST(c.id AS TEXT)
                    || ' (B-TID ' || c.btid || ')'
             FROM charging_records c, (SELECT MAX(reserved) AS mx FROM muk_counters) m
             WHERE m.mx IS NULL OR c.counter > m.mx LIMIT 1"
                .to_owned(),
        ),
        (
            "table ues holds a MUK of the wrong length",
            "SELECT impi FROM ues WHERE length(muk) != 32 LIMIT 1".to_owned(),
        ),
    ];
    for (what, sql) in checks {
        if let Some(row) = first(&sql)? {
            return Err(format!("{what}: {row}"));
        }
    }
    Ok(())
}

/// Checks one stored key group state (the row's key and its encoding).
pub(crate) fn validate_key_group_row(
    key_domain: &[u8],
    key_group: i64,
    state: &[u8],
) -> Result<(), String> {
    let kd: [u8; 3] = key_domain.try_into().map_err(|_| {
        format!(
            "table key_groups: Key Domain ID of {} bytes",
            key_domain.len()
        )
    })?;
    let kg = u16::try_from(key_group)
        .map_err(|_| format!("table key_groups: Key Group {key_group} out of range"))?;
    let name = KeyGroupName {
        key_domain: mbms::KeyDomainId(kd),
        key_group: kg,
    };
    decode_snapshot(&name, state)
        .map(drop)
        .map_err(|e| format!("table key_groups: {e}"))
}

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://") || db.starts_with("host=")
}

/// The [`EngineStore`] of the key engine, over a [`Store`].
#[derive(Clone)]
pub struct EngineStoreHandle(pub Arc<dyn Store>);

impl fmt::Debug for EngineStoreHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EngineStoreHandle({})", self.0.backend())
    }
}

fn engine_err(e: StoreError) -> mbms::engine::StoreError {
    mbms::engine::StoreError::with_source("BM-SC store", e)
}

impl EngineStore for EngineStoreHandle {
    fn counter_reserved(&self) -> Result<Option<u32>, mbms::engine::StoreError> {
        self.0.counter_reserved().map_err(engine_err)
    }

    fn reserve_counters(&mut self, upto: u32) -> Result<(), mbms::engine::StoreError> {
        self.0.reserve_counters(upto).map_err(engine_err)
    }

    fn reserve_counter_block(
        &mut self,
        len: u32,
        upto: u32,
    ) -> Result<u32, mbms::engine::StoreError> {
        self.0.reserve_counter_block(len, upto).map_err(engine_err)
    }

    fn load_key_group(
        &self,
        name: &KeyGroupName,
    ) -> Result<Option<KeyGroupSnapshot>, mbms::engine::StoreError> {
        self.0.load_key_group(name).map_err(engine_err)
    }

    fn save_key_group(
        &mut self,
        snapshot: &KeyGroupSnapshot,
    ) -> Result<(), mbms::engine::StoreError> {
        self.0.save_key_group(snapshot).map_err(engine_err)
    }
}

// ---------------------------------------------------------------------
// Encodings shared by both backends.

/// Version byte of the key group state encoding.
const SNAPSHOT_VERSION: u8 = 1;
const MSK_ENC_LEN: usize = 2 + 16 + 2 + 2 + 4 + 2;

/// Encodes a key group state: version, then per MSK (current, next) Key
/// Number, key, SEQs, SEQu, MTK-message counter, last MTK ID, then the
/// next Key Number; all big-endian. (Key Domain ID and Key Group are the
/// row's key.)
pub(crate) fn encode_snapshot(s: &KeyGroupSnapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 2 * MSK_ENC_LEN + 2);
    out.push(SNAPSHOT_VERSION);
    for m in [&s.current, &s.next] {
        out.extend_from_slice(&m.name.msk_id.key_number.to_be_bytes());
        out.extend_from_slice(m.key.as_bytes());
        out.extend_from_slice(&m.seq_s.value().to_be_bytes());
        out.extend_from_slice(&m.seq_u.value().to_be_bytes());
        out.extend_from_slice(&m.mtk_counter.to_be_bytes());
        out.extend_from_slice(&m.last_mtk_id.value().to_be_bytes());
    }
    out.extend_from_slice(&s.next_key_number.to_be_bytes());
    out
}

/// Decodes [`encode_snapshot`].
pub(crate) fn decode_snapshot(
    name: &KeyGroupName,
    b: &[u8],
) -> Result<KeyGroupSnapshot, StoreError> {
    if b.len() != 1 + 2 * MSK_ENC_LEN + 2 || b[0] != SNAPSHOT_VERSION {
        return Err(StoreError::Corrupt(format!(
            "key group {name}: state of {} bytes, version {:?}",
            b.len(),
            b.first()
        )));
    }
    let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let msk_at = |o: usize| {
        let mut key = [0u8; 16];
        key.copy_from_slice(&b[o + 2..o + 18]);
        let m = MskSnapshot {
            name: MskName {
                key_domain: name.key_domain,
                msk_id: MskId::new(name.key_group, u16_at(o)),
            },
            key: Msk::from_bytes(key),
            seq_s: MtkId::new(u16_at(o + 18)),
            seq_u: MtkId::new(u16_at(o + 20)),
            mtk_counter: u32::from_be_bytes([b[o + 22], b[o + 23], b[o + 24], b[o + 25]]),
            last_mtk_id: MtkId::new(u16_at(o + 26)),
        };
        zeroize::Zeroize::zeroize(&mut key);
        m
    };
    Ok(KeyGroupSnapshot {
        name: *name,
        current: msk_at(1),
        next: msk_at(1 + MSK_ENC_LEN),
        next_key_number: u16_at(1 + 2 * MSK_ENC_LEN),
    })
}

pub(crate) fn msk_to_text(m: &MskName) -> String {
    hex::encode_upper(m.key_id())
}

pub(crate) fn msk_from_text(s: &str) -> Result<MskName, StoreError> {
    hex::decode(s)
        .ok()
        .and_then(|b| MskName::from_key_id(&b).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("MSK Key ID {s:?}")))
}

pub(crate) fn addr_from_text(s: &str) -> Result<SocketAddr, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("MIKEY address {s:?}")))
}

pub(crate) fn muk_from_bytes(b: &[u8]) -> Result<Muk, StoreError> {
    Muk::from_slice(b).map_err(|_| StoreError::Corrupt(format!("MUK of {} bytes", b.len())))
}

pub(crate) fn u32_from_i64(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} out of range")))
}

pub(crate) fn u16_from_i64(v: i64, what: &str) -> Result<u16, StoreError> {
    u16::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} out of range")))
}

pub(crate) fn u64_from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn i64_from_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn json_list<T: serde::Serialize>(v: &[T]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn parse_json_list<T: serde::de::DeserializeOwned>(
    s: &str,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    serde_json::from_str(s).map_err(|_| StoreError::Corrupt(format!("{what}: {s:?}")))
}
