//! [`Store`] on PostgreSQL (the `postgres` crate: pure Rust, no libpq),
//! with the same tables and behaviour as the SQLite store.
//!
//! * `--db postgres://user:password@host:port/dbname` (or a key/value
//!   string starting with `host=`; `host=/var/run/postgresql` uses the Unix
//!   socket). TLS is not negotiated (`sslmode` must not be `require`): run
//!   the database on the same host or a protected network.
//! * Every method is one transaction on one connection behind a mutex; a
//!   connection found closed (database restarted) is re-opened once.
//! * Tables live in the connection's current schema (the first existing
//!   one of its `search_path`, which a URL can set with
//!   `?options=-csearch_path%3Dmyschema`), or in the schema given to
//!   [`PgStore::open_in_schema`] (created if missing), so that several
//!   BM-SCs or test runs can share a database.
//! * A schema without any table is a new database; otherwise the schema
//!   version (table `mbms_meta`) is read, the migration steps the database
//!   lacks are applied ([`MIGRATIONS`]; the tables of release 0.1.0 without
//!   `mbms_meta` are version 0), then the tables, columns and rows are
//!   checked, all in one transaction: a partial, damaged or newer database
//!   is refused and left as it was.
//! * The client is closed on a thread of its own, never on a thread of
//!   the server's Tokio runtime (see [`close_off_runtime`]).
//!
//! The client runs its own small runtime and blocks: call it from blocking
//! threads (`tokio::task::spawn_blocking`), as the server does.

use std::collections::BTreeSet;
use std::str::FromStr as _;
use std::sync::{Mutex, MutexGuard};

use mbms::engine::KeyGroupSnapshot;
use mbms::KeyGroupName;
use mbms_service::db::{plan, Migration};
use postgres::{Client, NoTls, Transaction};

use super::*;

/// Version 0: the tables of release 0.1.0 (commit ce6c076), which kept
/// no schema version. A schema holding them without [`PG_META_TABLE`] is
/// upgraded only if every one is there with exactly these columns (name,
/// type, NOT NULL, in order). Never change this text: add a step to
/// [`MIGRATIONS`].
const BASE: &str = "
CREATE TABLE muk_counters (
    idi      TEXT NOT NULL,
    idr      TEXT NOT NULL,
    reserved BIGINT NOT NULL,
    PRIMARY KEY (idi, idr)
);
CREATE TABLE key_groups (
    key_domain BYTEA NOT NULL,
    key_group  INTEGER NOT NULL,
    state      BYTEA NOT NULL,
    PRIMARY KEY (key_domain, key_group)
);
CREATE TABLE key_group_defs (
    key_group       INTEGER PRIMARY KEY,
    window_len      INTEGER NOT NULL,
    charging        BOOLEAN NOT NULL,
    ack             BOOLEAN NOT NULL,
    rotate_interval BIGINT NOT NULL
);
CREATE TABLE services (
    id         TEXT PRIMARY KEY,
    key_groups TEXT NOT NULL,
    open       BOOLEAN NOT NULL,
    allowed    TEXT NOT NULL
);
CREATE TABLE ues (
    impi       TEXT PRIMARY KEY,
    btid       TEXT NOT NULL,
    muk        BYTEA NOT NULL,
    mikey_addr TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE registrations (
    impi       TEXT NOT NULL,
    service_id TEXT NOT NULL,
    PRIMARY KEY (impi, service_id)
);
CREATE TABLE deliveries (
    impi       TEXT NOT NULL,
    msk        TEXT NOT NULL,
    state      TEXT NOT NULL,
    charged    BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (impi, msk)
);
CREATE TABLE charging_records (
    id      BIGSERIAL PRIMARY KEY,
    impi    TEXT NOT NULL,
    btid    TEXT NOT NULL,
    msk     TEXT NOT NULL,
    counter BIGINT NOT NULL,
    time_ms BIGINT NOT NULL
);
";

/// The migration steps, one per schema version (the same versions as the
/// SQLite store's, [`SCHEMA_VERSION`] the last), applied in order at open
/// in the transaction that checks the database; the runner then writes
/// the version into [`PG_META_TABLE`].
const MIGRATIONS: &[Migration] = &[
    Migration {
        to: 1,
        what: "table mbms_meta holds the schema version",
        sql: "CREATE TABLE mbms_meta (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);",
    },
    Migration {
        to: 2,
        what: "several instances on one database (issue 13): instances, leases of key \
               groups and UE shards, shared secrets, a charging record once per (IMPI, MSK)",
        // The UE shard rows: `crate::cluster::UE_SHARDS` (checked at open).
        sql: "CREATE TABLE bmsc_instances (
    instance_id  TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE key_group_leases (
    key_group  INTEGER PRIMARY KEY,
    holder     TEXT,
    epoch      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE ue_shards (
    shard      INTEGER PRIMARY KEY,
    holder     TEXT,
    epoch      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
INSERT INTO ue_shards (shard, holder, epoch, expires_at)
    SELECT g, NULL, 0, '-infinity' FROM generate_series(0, 255) AS g;
CREATE TABLE cluster_secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE UNIQUE INDEX charging_once ON charging_records (impi, msk);",
    },
];

const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

/// One column of [`BASE`]: name, `information_schema` data type, nullable.
type BaseColumn = (String, String, bool);

/// The tables and columns of [`BASE`], read from its text (one column a
/// line, as written there).
fn base_layout() -> Vec<(String, Vec<BaseColumn>)> {
    let mut out: Vec<(String, Vec<BaseColumn>)> = Vec::new();
    for line in BASE.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("CREATE"), Some("TABLE")) => {
                if let Some(t) = words.next() {
                    out.push((t.to_owned(), Vec::new()));
                }
            }
            (Some("PRIMARY"), _) | (Some(");"), _) | (None, _) => {}
            (Some(col), Some(ty)) => {
                let ty = match ty {
                    "BIGSERIAL" => "bigint".to_owned(),
                    t => t.to_ascii_lowercase(),
                };
                let nullable = !(line.contains("NOT NULL") || line.contains("PRIMARY KEY"));
                if let Some((_, cols)) = out.last_mut() {
                    cols.push((col.to_owned(), ty, nullable));
                }
            }
            (Some(_), None) => {}
        }
    }
    out
}

/// Whether the schema's tables are exactly those of version 0: `Err`
/// names the first difference.
fn check_base(tx: &mut Transaction<'_>, schema: &str, present: &[String]) -> Result<(), Prep> {
    for (table, columns) in base_layout() {
        if !present.contains(&table) {
            return Err(Prep::Refused(format!("table {table} is missing")));
        }
        let have: Vec<BaseColumn> = tx
            .query(
                "SELECT column_name::TEXT, data_type::TEXT, is_nullable = 'YES'
                 FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&schema, &table],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        if have != columns {
            let show = |c: &[BaseColumn]| {
                c.iter()
                    .map(|(n, t, null)| format!("{n} {t}{}", if *null { "" } else { " NOT NULL" }))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(Prep::Refused(format!(
                "table {table} has the columns ({}), expected ({})",
                show(&have),
                show(&columns)
            )));
        }
    }
    Ok(())
}

/// Writes the current version into [`PG_META_TABLE`].
fn set_version(tx: &mut Transaction<'_>) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO mbms_meta (name, value) VALUES ('schema_version', $1)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        &[&SCHEMA_VERSION],
    )
    .map(drop)
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// The instance whose key group writes are fenced, and the epoch of each
/// key group lease it holds (`None`: not held).
type Fence = (String, std::collections::BTreeMap<u16, Option<i64>>);

/// A [`Store`] on a PostgreSQL database.
pub struct PgStore {
    config: postgres::Config,
    schema: Option<String>,
    /// The `NOTIFY` channel of the instances on this schema.
    channel: String,
    /// Key group write fencing ([`ClusterStore::set_fence`]): the
    /// instance and the epoch of each key group lease it holds.
    fence: Mutex<Option<Fence>>,
    /// Key group writes the fence refused ([`ClusterStore::fenced_writes`]).
    fenced: std::sync::atomic::AtomicU64,
    /// `None` only while being dropped.
    client: Mutex<Option<Client>>,
    /// The connection of the lease renewals ([`ClusterStore::heartbeat`],
    /// [`ClusterStore::claim`], [`ClusterStore::release`]), opened at the
    /// first of them: commits and loads on `client` never hold a renewal
    /// back (`crate::cluster::lease_thread`).
    lease_client: Mutex<Option<Client>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for m in [&mut self.client, &mut self.lease_client] {
            if let Some(c) = m.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
                close_off_runtime(c);
            }
        }
    }
}

/// Closes a client on a thread of its own. A `postgres::Client` drives
/// its connection with a runtime of its own and blocks on it when closed:
/// dropped on a thread that runs a Tokio runtime (the last `Arc` of the
/// store goes away at the end of `mbms bmsc`), that panics with "Cannot
/// start a runtime from within a runtime" (issue 11, point 12).
fn close_off_runtime(c: Client) {
    if std::thread::Builder::new()
        .name("pg-close".into())
        .spawn(move || drop(c))
        .and_then(|t| t.join().map_err(|_| std::io::Error::other("panicked")))
        .is_err()
    {
        tracing::warn!("closing the PostgreSQL connection failed");
    }
}

/// The locked client, connected.
struct ClientGuard<'a>(MutexGuard<'a, Option<Client>>);

impl std::ops::Deref for ClientGuard<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        match self.0.as_ref() {
            Some(c) => c,
            // `PgStore::lock` fills it; only `drop` empties it.
            None => unreachable!("PgStore client taken outside drop"),
        }
    }
}

impl std::ops::DerefMut for ClientGuard<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        match self.0.as_mut() {
            Some(c) => c,
            None => unreachable!("PgStore client taken outside drop"),
        }
    }
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &describe(&self.config))
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// The database named without its password, for messages.
fn describe(c: &postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(t) => t.clone(),
            #[cfg(unix)]
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    format!(
        "postgresql database {:?} on {} as {:?}",
        c.get_dbname().unwrap_or("(default)"),
        if hosts.is_empty() {
            "(default host)".to_owned()
        } else {
            hosts.join(",")
        },
        c.get_user().unwrap_or("(default)")
    )
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl PgStore {
    /// Connects to `url`; creates the tables in a schema without any
    /// table, checks an existing database (see [`super::open_with`]).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, None, Create::IfMissing)
    }

    /// Like [`open`](Self::open), with every table in `schema` (lowercase
    /// letters, digits and `_`; created if missing).
    pub fn open_in_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        Self::open_with(url, Some(schema), Create::IfMissing)
    }

    /// Connects to `url` (tables in `schema`, or in the connection's
    /// current schema). A schema without any table is a new database: the
    /// tables and the schema version are created. A schema holding some
    /// tables is upgraded and checked in one transaction: the version in
    /// `mbms_meta` known (newer: refused; older: the missing steps of
    /// `MIGRATIONS` applied; no `mbms_meta` but exactly the tables of
    /// release 0.1.0: version 0), every table and column present (a
    /// partial schema is refused), the rows valid. [`Create::Init`] creates the tables where
    /// none of this program's tables exist (other tables may) and refuses
    /// a schema that holds them.
    pub fn open_with(url: &str, schema: Option<&str>, create: Create) -> Result<Self, StoreError> {
        let config = postgres::Config::from_str(url).map_err(|e| StoreError::Open {
            target: "postgresql database (unparsable connection string)".into(),
            source: Box::new(e),
        })?;
        if let Some(s) = schema {
            if !valid_schema_name(s) {
                return Err(StoreError::Open {
                    target: describe(&config),
                    source: format!("invalid schema name {s:?}").into(),
                });
            }
        }
        let schema = schema.map(str::to_owned);
        let target = describe(&config);
        let mut client = connect(&config, schema.as_deref()).map_err(|e| StoreError::Open {
            target: target.clone(),
            source: Box::new(e),
        })?;
        let prepared = prepare(&mut client, create).map_err(|e| match e {
            Prep::Db(e) => StoreError::Open {
                target: target.clone(),
                source: Box::new(e),
            },
            Prep::Refused(detail) => StoreError::Rejected {
                target: target.clone(),
                detail,
            },
        });
        match prepared {
            Err(e) => {
                close_off_runtime(client);
                return Err(e);
            }
            Ok(Some((schema, from))) => tracing::info!(
                db = %target,
                schema,
                from,
                to = SCHEMA_VERSION,
                "database schema upgraded"
            ),
            Ok(None) => {}
        }
        let current: Option<String> = match client.query_one("SELECT current_schema()", &[]) {
            Ok(r) => r.get(0),
            Err(e) => {
                close_off_runtime(client);
                return Err(StoreError::Open {
                    target,
                    source: Box::new(e),
                });
            }
        };
        let channel: String = format!("mbms_bmsc_{}", current.unwrap_or_default())
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(63)
            .collect();
        Ok(Self {
            config,
            schema,
            channel,
            fence: Mutex::new(None),
            fenced: std::sync::atomic::AtomicU64::new(0),
            client: Mutex::new(Some(client)),
            lease_client: Mutex::new(None),
        })
    }

    fn lock(&self) -> Result<ClientGuard<'_>, StoreError> {
        self.lock_of(&self.client)
    }

    /// The connection of `m`, (re)connected when closed or not open yet.
    fn lock_of<'a>(&self, m: &'a Mutex<Option<Client>>) -> Result<ClientGuard<'a>, StoreError> {
        let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
        if g.as_ref().is_none_or(|c| c.is_closed()) {
            let new = connect(&self.config, self.schema.as_deref())?;
            if let Some(old) = g.replace(new) {
                close_off_runtime(old);
            }
        }
        Ok(ClientGuard(g))
    }

    fn tx<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.tx_on(&self.client, f)
    }

    /// [`tx`](Self::tx) on the lease connection.
    fn lease_tx<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.tx_on(&self.lease_client, f)
    }

    fn tx_on<T>(
        &self,
        m: &Mutex<Option<Client>>,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.lock_of(m)?;
        let mut tx = c.transaction()?;
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }
}

/// Connects and selects the schema (created if missing, when named).
fn connect(config: &postgres::Config, schema: Option<&str>) -> Result<Client, postgres::Error> {
    let mut c = config.connect(NoTls)?;
    if let Some(s) = schema {
        // `s` is checked by `valid_schema_name`.
        c.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s}; SET search_path TO {s}"
        ))?;
    }
    Ok(c)
}

enum Prep {
    Db(postgres::Error),
    Refused(String),
}

impl From<postgres::Error> for Prep {
    fn from(e: postgres::Error) -> Self {
        Prep::Db(e)
    }
}

/// Creates, upgrades or checks the tables, in one transaction under an
/// advisory lock (two BM-SCs starting on one empty schema do not both
/// create it; a refusal after the upgrade leaves the schema as it was).
/// Returns the schema and the version it was upgraded from, if it was.
fn prepare(client: &mut Client, create: Create) -> Result<Option<(String, i64)>, Prep> {
    let expected = super::sqlite::SCHEMA
        .tables()
        .map_err(|e| Prep::Refused(format!("internal schema error: {e}")))?;
    let mut tx = client.transaction()?;
    let schema: Option<String> = tx.query_one("SELECT current_schema()", &[])?.get(0);
    let Some(schema) = schema else {
        return Err(Prep::Refused(
            "no schema to use: the search_path names no existing schema".into(),
        ));
    };
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('mbms-bmsc-schema:' || $1))",
        &[&schema],
    )?;
    let present: Vec<String> = tx
        .query(
            "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ours = |t: &String| t == PG_META_TABLE || expected.iter().any(|(e, _)| e == t);
    let new = match create {
        Create::IfMissing => present.is_empty(),
        Create::Init => {
            if let Some(t) = present.iter().find(|t| ours(t)) {
                return Err(Prep::Refused(format!(
                    "--init refuses schema {schema}: it already holds table {t} of a BM-SC \
                     database (drop the tables first)"
                )));
            }
            true
        }
    };
    if new {
        tx.batch_execute(BASE)?;
        for m in MIGRATIONS {
            tx.batch_execute(m.sql)?;
        }
        set_version(&mut tx)?;
        tx.commit()?;
        return Ok(None);
    }
    let refuse = |d: String| Err(Prep::Refused(format!("schema {schema}: {d}")));
    let version = if present.iter().any(|t| t == PG_META_TABLE) {
        let version: Option<i64> = tx
            .query_opt(
                "SELECT value FROM mbms_meta WHERE name = 'schema_version'",
                &[],
            )?
            .map(|r| r.get(0));
        match version {
            None => return refuse(format!("no schema_version row in {PG_META_TABLE}")),
            Some(v) => v,
        }
    } else if !present.iter().any(ours) {
        return refuse(format!(
            "table {PG_META_TABLE} is missing (no schema version): not a BM-SC database \
             (tables present: {})",
            present.join(", ")
        ));
    } else {
        // Version 0: the tables of the previous release, without a version.
        match check_base(&mut tx, &schema, &present) {
            Ok(()) => 0,
            Err(Prep::Refused(d)) => {
                return refuse(format!(
                    "table {PG_META_TABLE} is missing (no schema version) and the tables are \
                     not those of the previous release, not upgraded: {d}"
                ))
            }
            Err(e) => return Err(e),
        }
    };
    let steps = match plan(version, MIGRATIONS) {
        Ok(steps) => steps,
        Err(e) => return refuse(e.to_string()),
    };
    for m in steps {
        if let Err(e) = tx.batch_execute(m.sql) {
            return refuse(format!(
                "the upgrade to schema version {} ({}) failed: {e}",
                m.to, m.what
            ));
        }
    }
    if !steps.is_empty() {
        set_version(&mut tx)?;
    }
    for (table, columns) in &expected {
        if !present.contains(table) {
            return refuse(format!("table {table} is missing"));
        }
        let have: Vec<String> = tx
            .query(
                "SELECT column_name::TEXT FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = $2",
                &[&schema, table],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(c) = columns.iter().find(|c| !have.contains(c)) {
            return refuse(format!("column {c} of table {table} is missing"));
        }
    }
    let mut db_err = None;
    let checked = validate_rows(&mut |sql| match tx.query_opt(sql, &[]) {
        Ok(r) => Ok(r.map(|r| r.get::<_, String>(0))),
        Err(e) => {
            let m = e.to_string();
            db_err = Some(e);
            Err(m)
        }
    });
    if let Some(e) = db_err {
        return Err(Prep::Db(e));
    }
    if let Err(d) = checked {
        return refuse(d);
    }
    let shards: i64 = tx.query_one("SELECT count(*) FROM ue_shards", &[])?.get(0);
    if shards != i64::from(crate::cluster::UE_SHARDS) {
        return refuse(format!(
            "table ue_shards holds {shards} shards, expected {}",
            crate::cluster::UE_SHARDS
        ));
    }
    for r in tx.query("SELECT key_domain, key_group, state FROM key_groups", &[])? {
        let kd: Vec<u8> = r.get(0);
        let kg: i32 = r.get(1);
        let mut state: Vec<u8> = r.get(2);
        let out = validate_key_group_row(&kd, i64::from(kg), &state);
        zeroize::Zeroize::zeroize(&mut state);
        if let Err(d) = out {
            return refuse(d);
        }
    }
    tx.commit()?;
    Ok((!steps.is_empty()).then_some((schema, version)))
}

fn i32_of(v: u16) -> i32 {
    i32::from(v)
}

fn u16_of(v: i32, what: &str) -> Result<u16, StoreError> {
    u16_from_i64(i64::from(v), what)
}

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgresql"
    }

    fn counter_reserved(&self) -> Result<Option<u32>, StoreError> {
        let row = self
            .lock()?
            .query_one("SELECT MAX(reserved) FROM muk_counters", &[])?;
        let v: Option<i64> = row.get(0);
        v.map(|v| u32_from_i64(v, "counter mark")).transpose()
    }

    fn reserve_counters(&self, upto: u32) -> Result<(), StoreError> {
        let (idi, idr) = COUNTER_MARK_ROW;
        self.tx(|tx| {
            // Serialise writers of the mark (one row, locked), then compare
            // with the highest mark of the table.
            tx.execute(
                "INSERT INTO muk_counters (idi, idr, reserved) VALUES ($1, $2, 0)
                 ON CONFLICT (idi, idr) DO NOTHING",
                &[&idi, &idr],
            )?;
            tx.query_one(
                "SELECT reserved FROM muk_counters WHERE idi = $1 AND idr = $2 FOR UPDATE",
                &[&idi, &idr],
            )?;
            let v: Option<i64> = tx
                .query_one("SELECT MAX(reserved) FROM muk_counters", &[])?
                .get(0);
            if let Some(old) = v {
                let old = u32_from_i64(old, "counter mark")?;
                if upto <= old {
                    return Err(StoreError::CounterRollback {
                        stored: old,
                        requested: upto,
                    });
                }
            }
            tx.execute(
                "UPDATE muk_counters SET reserved = $3 WHERE idi = $1 AND idr = $2",
                &[&idi, &idr, &i64::from(upto)],
            )?;
            Ok(())
        })
    }

    fn reserve_counter_block(&self, len: u32, upto: u32) -> Result<u32, StoreError> {
        let (idi, idr) = COUNTER_MARK_ROW;
        self.tx(|tx| {
            // The mark row starts at the highest mark of the table (marks
            // per MUK of 0.1.0 count); one UPDATE takes the block, so two
            // instances never get overlapping blocks.
            tx.execute(
                "INSERT INTO muk_counters (idi, idr, reserved)
                 SELECT $1, $2, COALESCE(MAX(reserved), 0) FROM muk_counters
                 ON CONFLICT (idi, idr) DO NOTHING",
                &[&idi, &idr],
            )?;
            let mark: i64 = tx
                .query_one(
                    "UPDATE muk_counters SET reserved = GREATEST(reserved + $3, $4)
                     WHERE idi = $1 AND idr = $2 AND GREATEST(reserved + $3, $4) <= 4294967295
                     RETURNING reserved",
                    &[&idi, &idr, &i64::from(len), &i64::from(upto)],
                )
                .map_err(|_| {
                    StoreError::Invalid(format!(
                        "a counter block of {len} up to {upto}: the MUK counters are exhausted"
                    ))
                })?
                .get(0);
            u32_from_i64(mark, "counter mark")
        })
    }

    fn ue(&self, impi: &str) -> Result<Option<UeRecord>, StoreError> {
        let mut c = self.lock()?;
        let services: BTreeSet<String> = c
            .query(
                "SELECT service_id FROM registrations WHERE impi = $1",
                &[&impi],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let Some(r) = c.query_opt(
            "SELECT impi, btid, muk, mikey_addr, updated_at FROM ues WHERE impi = $1",
            &[&impi],
        )?
        else {
            return Ok(None);
        };
        let mut muk: Vec<u8> = r.get(2);
        let m = muk_from_bytes(&muk);
        zeroize::Zeroize::zeroize(&mut muk);
        let addr: String = r.get(3);
        Ok(Some(UeRecord {
            impi: r.get(0),
            btid: r.get(1),
            muk: m?,
            mikey_addr: addr_from_text(&addr)?,
            services,
            updated_at: u64_from_i64(r.get(4)),
        }))
    }

    fn cluster(&self) -> Option<&dyn ClusterStore> {
        Some(self)
    }

    fn load_key_group(&self, name: &KeyGroupName) -> Result<Option<KeyGroupSnapshot>, StoreError> {
        let row = self.lock()?.query_opt(
            "SELECT state FROM key_groups WHERE key_domain = $1 AND key_group = $2",
            &[&&name.key_domain.0[..], &i32_of(name.key_group)],
        )?;
        match row {
            None => Ok(None),
            Some(r) => {
                let mut b: Vec<u8> = r.get(0);
                let out = decode_snapshot(name, &b);
                zeroize::Zeroize::zeroize(&mut b);
                out.map(Some)
            }
        }
    }

    fn save_key_group(&self, s: &KeyGroupSnapshot) -> Result<(), StoreError> {
        let mut state = encode_snapshot(s);
        let fence = self
            .fence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(id, held)| (id.clone(), held.get(&s.name.key_group).copied().flatten()));
        let r = self.tx(|tx| {
            let Some((instance, epoch)) = fence else {
                tx.execute(
                    "INSERT INTO key_groups (key_domain, key_group, state) VALUES ($1, $2, $3)
                     ON CONFLICT (key_domain, key_group) DO UPDATE SET state = excluded.state",
                    &[&&s.name.key_domain.0[..], &i32_of(s.name.key_group), &state],
                )?;
                return Ok(());
            };
            // Several instances: the first state of a key group is written
            // by whoever opens it first (the others adopt it); later states
            // only by the holder of the key group's lease, with its epoch
            // (TS 33.246 6.3.4.3: one anchor per key group).
            let created = tx.execute(
                "INSERT INTO key_groups (key_domain, key_group, state) VALUES ($1, $2, $3)
                 ON CONFLICT (key_domain, key_group) DO NOTHING",
                &[&&s.name.key_domain.0[..], &i32_of(s.name.key_group), &state],
            )?;
            if created == 1 {
                return Ok(());
            }
            let updated = tx.execute(
                "UPDATE key_groups SET state = $3 WHERE key_domain = $1 AND key_group = $2
                 AND EXISTS (SELECT 1 FROM key_group_leases l WHERE l.key_group = $2
                    AND l.holder = $4 AND l.epoch = $5 AND l.expires_at > now())",
                &[
                    &&s.name.key_domain.0[..],
                    &i32_of(s.name.key_group),
                    &state,
                    &instance,
                    &epoch.unwrap_or(-1),
                ],
            )?;
            if updated == 1 {
                Ok(())
            } else {
                self.fenced
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(StoreError::Fenced {
                    key_group: s.name.key_group,
                })
            }
        });
        zeroize::Zeroize::zeroize(&mut state);
        r
    }

    fn put_key_group_def(&self, d: &KeyGroupDef) -> Result<(), StoreError> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO key_group_defs (key_group, window_len, charging, ack, rotate_interval)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (key_group) DO UPDATE SET window_len = excluded.window_len,
                   charging = excluded.charging, ack = excluded.ack,
                   rotate_interval = excluded.rotate_interval",
                &[
                    &i32_of(d.key_group),
                    &i32_of(d.window_len),
                    &d.charging,
                    &d.ack,
                    &i64_from_u64(d.rotate_interval),
                ],
            )?;
            Ok(())
        })
    }

    fn key_group_defs(&self) -> Result<Vec<KeyGroupDef>, StoreError> {
        let rows = self.lock()?.query(
            "SELECT key_group, window_len, charging, ack, rotate_interval
             FROM key_group_defs ORDER BY key_group",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(KeyGroupDef {
                    key_group: u16_of(r.get(0), "key group")?,
                    window_len: u16_of(r.get(1), "window length")?,
                    charging: r.get(2),
                    ack: r.get(3),
                    rotate_interval: u64_from_i64(r.get(4)),
                })
            })
            .collect()
    }

    fn put_service(&self, d: &ServiceDef) -> Result<(), StoreError> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO services (id, key_groups, open, allowed) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET key_groups = excluded.key_groups,
                   open = excluded.open, allowed = excluded.allowed",
                &[
                    &d.id,
                    &json_list(&d.key_groups),
                    &d.open,
                    &json_list(&d.allowed),
                ],
            )?;
            Ok(())
        })
    }

    fn services(&self) -> Result<Vec<ServiceDef>, StoreError> {
        let rows = self.lock()?.query(
            "SELECT id, key_groups, open, allowed FROM services ORDER BY id",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(ServiceDef {
                    id: r.get(0),
                    key_groups: parse_json_list(r.get(1), "service key groups")?,
                    open: r.get(2),
                    allowed: parse_json_list(r.get(3), "service allow list")?,
                })
            })
            .collect()
    }

    fn put_ue(&self, ue: &UeRecord) -> Result<(), StoreError> {
        self.tx(|tx| put_ue_tx(tx, ue))
    }

    fn remove_ue(&self, impi: &str) -> Result<(), StoreError> {
        self.tx(|tx| remove_ue_tx(tx, impi))
    }

    fn ues(&self) -> Result<Vec<UeRecord>, StoreError> {
        let mut c = self.lock()?;
        let mut regs: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
        for r in c.query("SELECT impi, service_id FROM registrations", &[])? {
            regs.entry(r.get(0)).or_default().insert(r.get(1));
        }
        let rows = c.query(
            "SELECT impi, btid, muk, mikey_addr, updated_at FROM ues ORDER BY impi",
            &[],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let impi: String = r.get(0);
            let mut muk: Vec<u8> = r.get(2);
            let m = muk_from_bytes(&muk);
            zeroize::Zeroize::zeroize(&mut muk);
            let addr: String = r.get(3);
            out.push(UeRecord {
                services: regs.remove(&impi).unwrap_or_default(),
                btid: r.get(1),
                muk: m?,
                mikey_addr: addr_from_text(&addr)?,
                updated_at: u64_from_i64(r.get(4)),
                impi,
            });
        }
        Ok(out)
    }

    fn record(&self, o: &Outcomes) -> Result<Vec<ChargingRow>, StoreError> {
        if o.is_empty() {
            return Ok(Vec::new());
        }
        check_outcomes(o)?;
        self.tx(|tx| record_tx(tx, o))
    }

    fn commit(&self, batch: &WriteBatch) -> Result<Vec<ChargingRow>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        check_outcomes(&batch.outcomes)?;
        self.tx(|tx| {
            for w in &batch.ues {
                match w {
                    UeWrite::Put(ue) => put_ue_tx(tx, ue)?,
                    UeWrite::Remove(impi) => remove_ue_tx(tx, impi)?,
                }
            }
            let rows = record_tx(tx, &batch.outcomes)?;
            // Delivered by PostgreSQL when (and only if) this commits.
            for n in &batch.notices {
                tx.execute("SELECT pg_notify($1, $2)", &[&self.channel, n])?;
            }
            Ok(rows)
        })
    }

    fn deliveries(&self, impi: Option<&str>) -> Result<Vec<DeliveryRecord>, StoreError> {
        let rows = self.lock()?.query(
            "SELECT impi, msk, state, charged, updated_at FROM deliveries
             WHERE ($1::TEXT IS NULL OR impi = $1) ORDER BY impi, msk",
            &[&impi],
        )?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRecord {
                    impi: r.get(0),
                    msk: msk_from_text(r.get(1))?,
                    state: r.get(2),
                    charged: r.get(3),
                    updated_at: u64_from_i64(r.get(4)),
                })
            })
            .collect()
    }

    fn charging_records(&self, after: i64, limit: usize) -> Result<Vec<ChargingRow>, StoreError> {
        let rows = self.lock()?.query(
            "SELECT id, impi, btid, msk, counter, time_ms FROM charging_records
             WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        rows.iter()
            .map(|r| {
                Ok(ChargingRow {
                    id: r.get(0),
                    impi: r.get(1),
                    btid: r.get(2),
                    msk: msk_from_text(r.get(3))?,
                    counter: u32_from_i64(r.get(4), "counter")?,
                    time_ms: u64_from_i64(r.get(5)),
                })
            })
            .collect()
    }
}

// One transaction's worth of each write, shared by the single writes and
// [`Store::commit`].

fn put_ue_tx(tx: &mut Transaction<'_>, ue: &UeRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO ues (impi, btid, muk, mikey_addr, updated_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (impi) DO UPDATE SET btid = excluded.btid, muk = excluded.muk,
                   mikey_addr = excluded.mikey_addr, updated_at = excluded.updated_at",
        &[
            &ue.impi,
            &ue.btid,
            &&ue.muk.as_bytes()[..],
            &ue.mikey_addr.to_string(),
            &i64_from_u64(ue.updated_at),
        ],
    )?;
    tx.execute("DELETE FROM registrations WHERE impi = $1", &[&ue.impi])?;
    for s in &ue.services {
        tx.execute(
            "INSERT INTO registrations (impi, service_id) VALUES ($1, $2)",
            &[&ue.impi, s],
        )?;
    }
    Ok(())
}

fn remove_ue_tx(tx: &mut Transaction<'_>, impi: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM registrations WHERE impi = $1", &[&impi])?;
    tx.execute("DELETE FROM deliveries WHERE impi = $1", &[&impi])?;
    tx.execute("DELETE FROM ues WHERE impi = $1", &[&impi])?;
    Ok(())
}

fn record_tx(tx: &mut Transaction<'_>, o: &Outcomes) -> Result<Vec<ChargingRow>, StoreError> {
    if !o.deliveries.is_empty() {
        let st = tx.prepare(
            "INSERT INTO deliveries (impi, msk, state, charged, updated_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (impi, msk) DO UPDATE SET state = excluded.state,
                       charged = (deliveries.charged OR excluded.charged),
                       updated_at = excluded.updated_at",
        )?;
        for d in &o.deliveries {
            tx.execute(
                &st,
                &[
                    &d.impi,
                    &msk_to_text(&d.msk),
                    &d.state,
                    &d.charged,
                    &i64_from_u64(d.updated_at),
                ],
            )?;
        }
    }
    let mut out = Vec::with_capacity(o.charging.len());
    for c in &o.charging {
        // Once per (IMPI, MSK), whichever instance saw the acknowledgement
        // (seed 004 6.3.2.3.3; index `charging_once`, schema version 2).
        let r = tx.query_opt(
            "INSERT INTO charging_records (impi, btid, msk, counter, time_ms)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (impi, msk) DO NOTHING RETURNING id",
            &[
                &c.impi,
                &c.btid,
                &msk_to_text(&c.msk),
                &i64::from(c.counter),
                &i64_from_u64(c.time_ms),
            ],
        )?;
        let Some(r) = r else {
            continue;
        };
        let mut c = c.clone();
        c.id = r.get(0);
        out.push(c);
    }
    Ok(out)
}

/// The table and key column of a lease kind (fixed names, never input).
fn lease_table(kind: LeaseKind) -> (&'static str, &'static str) {
    match kind {
        LeaseKind::KeyGroup => ("key_group_leases", "key_group"),
        LeaseKind::UeShard => ("ue_shards", "shard"),
    }
}

fn lease_of(r: &postgres::Row) -> Result<Lease, StoreError> {
    let item: i32 = r.get(0);
    Ok(Lease {
        item: u32::try_from(item).map_err(|_| StoreError::Corrupt(format!("lease item {item}")))?,
        epoch: r.get(1),
    })
}

/// [`NoticeListener`] on a connection of its own that `LISTEN`s.
struct PgListener {
    client: Option<Client>,
}

impl Drop for PgListener {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            close_off_runtime(c);
        }
    }
}

impl NoticeListener for PgListener {
    fn wait(&mut self, timeout: std::time::Duration) -> Result<Vec<String>, StoreError> {
        use postgres::fallible_iterator::FallibleIterator as _;
        let Some(c) = self.client.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut n = c.notifications();
        let mut it = n.timeout_iter(timeout);
        while let Some(m) = it.next()? {
            out.push(m.payload().to_owned());
            if out.len() >= 1024 {
                break;
            }
        }
        Ok(out)
    }
}

impl ClusterStore for PgStore {
    fn heartbeat(&self, instance: &str, url: &str, lease_ms: u64) -> Result<usize, StoreError> {
        self.lease_tx(|tx| {
            tx.execute(
                "INSERT INTO bmsc_instances (instance_id, url, heartbeat_at) VALUES ($1, $2, now())
                 ON CONFLICT (instance_id) DO UPDATE SET url = excluded.url, heartbeat_at = now()",
                &[&instance, &url],
            )?;
            let n: i64 = tx
                .query_one(
                    "SELECT count(*) FROM bmsc_instances
                     WHERE heartbeat_at > now() - $1 * interval '1 millisecond'",
                    &[&(i64_from_u64(lease_ms) as f64)],
                )?
                .get(0);
            Ok(usize::try_from(n).unwrap_or(1).max(1))
        })
    }

    fn claim(
        &self,
        kind: LeaseKind,
        instance: &str,
        lease_ms: u64,
        want: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        let (t, k) = lease_table(kind);
        let lease = i64_from_u64(lease_ms) as f64;
        self.lease_tx(|tx| {
            if kind == LeaseKind::KeyGroup {
                tx.execute(
                    "INSERT INTO key_group_leases (key_group, holder, epoch, expires_at)
                     SELECT key_group, NULL, 0, '-infinity' FROM key_group_defs
                     ON CONFLICT (key_group) DO NOTHING",
                    &[],
                )?;
            }
            let mut held = tx
                .query(
                    &format!(
                        "UPDATE {t} SET expires_at = now() + $2 * interval '1 millisecond'
                         WHERE holder = $1 RETURNING {k}, epoch"
                    ),
                    &[&instance, &lease],
                )?
                .iter()
                .map(lease_of)
                .collect::<Result<Vec<_>, _>>()?;
            held.sort_by_key(|l| l.item);
            // Leases beyond `want` are kept (renewed) here: the holder gives
            // them back with `release` once it stopped using them and its
            // writes for them are committed (crate::cluster, hand-over).
            if held.len() < want {
                let n = i64::try_from(want - held.len()).unwrap_or(i64::MAX);
                let taken = tx.query(
                    &format!(
                        "UPDATE {t} SET holder = $1, epoch = epoch + 1,
                            expires_at = now() + $2 * interval '1 millisecond'
                         WHERE {k} IN (SELECT {k} FROM {t}
                            WHERE holder IS NULL OR expires_at < now()
                            ORDER BY {k} LIMIT $3 FOR UPDATE SKIP LOCKED)
                         RETURNING {k}, epoch"
                    ),
                    &[&instance, &lease, &n],
                )?;
                for r in &taken {
                    held.push(lease_of(r)?);
                }
                held.sort_by_key(|l| l.item);
            }
            Ok(held)
        })
    }

    fn release(&self, kind: LeaseKind, instance: &str, items: &[u32]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let (t, k) = lease_table(kind);
        let items: Vec<i32> = items
            .iter()
            .filter_map(|i| i32::try_from(*i).ok())
            .collect();
        self.lock_of(&self.lease_client)?.execute(
            &format!(
                "UPDATE {t} SET holder = NULL, expires_at = '-infinity'
                 WHERE holder = $1 AND {k} = ANY($2)"
            ),
            &[&instance, &items],
        )?;
        Ok(())
    }

    fn release_all(&self, instance: &str) -> Result<(), StoreError> {
        self.lease_tx(|tx| {
            for kind in [LeaseKind::KeyGroup, LeaseKind::UeShard] {
                let (t, _) = lease_table(kind);
                tx.execute(
                    &format!(
                        "UPDATE {t} SET holder = NULL, expires_at = '-infinity' WHERE holder = $1"
                    ),
                    &[&instance],
                )?;
            }
            tx.execute(
                "DELETE FROM bmsc_instances WHERE instance_id = $1",
                &[&instance],
            )?;
            Ok(())
        })
    }

    fn instances(&self, lease_ms: u64) -> Result<Vec<InstanceRow>, StoreError> {
        let lease = i64_from_u64(lease_ms) as f64;
        let rows = self.lock()?.query(
            "SELECT i.instance_id, i.url,
                    i.heartbeat_at > now() - $1 * interval '1 millisecond',
                    COALESCE((SELECT array_agg(key_group ORDER BY key_group) FROM key_group_leases
                              WHERE holder = i.instance_id AND expires_at > now()), '{}'),
                    (SELECT count(*) FROM ue_shards
                     WHERE holder = i.instance_id AND expires_at > now())
             FROM bmsc_instances i ORDER BY i.instance_id",
            &[&lease],
        )?;
        rows.iter()
            .map(|r| {
                let groups: Vec<i32> = r.get(3);
                let shards: i64 = r.get(4);
                Ok(InstanceRow {
                    instance_id: r.get(0),
                    url: r.get(1),
                    alive: r.get(2),
                    key_groups: groups
                        .into_iter()
                        .map(|g| u16_of(g, "key group"))
                        .collect::<Result<_, _>>()?,
                    ue_shards: usize::try_from(shards).unwrap_or(0),
                })
            })
            .collect()
    }

    fn shared_secret(
        &self,
        name: &str,
        fresh: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO cluster_secrets (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &fresh],
            )?;
            let v: Vec<u8> = tx
                .query_one(
                    "SELECT value FROM cluster_secrets WHERE name = $1",
                    &[&name],
                )?
                .get(0);
            Ok(zeroize::Zeroizing::new(v))
        })
    }

    fn listen(&self) -> Result<Box<dyn NoticeListener>, StoreError> {
        let mut c = connect(&self.config, self.schema.as_deref())?;
        // `channel` holds only ASCII letters, digits and `_`.
        if let Err(e) = c.batch_execute(&format!("LISTEN \"{}\"", self.channel)) {
            close_off_runtime(c);
            return Err(e.into());
        }
        Ok(Box::new(PgListener { client: Some(c) }))
    }

    fn notify(&self, notice: &str) -> Result<(), StoreError> {
        self.lock()?
            .execute("SELECT pg_notify($1, $2)", &[&self.channel, &notice])?;
        Ok(())
    }

    fn fenced_writes(&self) -> u64 {
        self.fenced.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_fence(&self, instance: &str, key_group: u16, epoch: Option<i64>) {
        let mut f = self.fence.lock().unwrap_or_else(|p| p.into_inner());
        let (id, held) = f.get_or_insert_with(|| (instance.to_owned(), Default::default()));
        if id != instance {
            *id = instance.to_owned();
            held.clear();
        }
        held.insert(key_group, epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_layout_reads_every_table_and_column() {
        let pg = base_layout();
        let lite = mbms_service::db::tables_of(super::super::sqlite::SCHEMA.base).unwrap();
        let names: Vec<(String, Vec<String>)> = pg
            .iter()
            .map(|(t, cols)| (t.clone(), cols.iter().map(|c| c.0.clone()).collect()))
            .collect();
        assert_eq!(names, lite, "the same tables and columns as SQLite");
        let charging = &pg.iter().find(|(t, _)| t == "charging_records").unwrap().1;
        assert_eq!(charging[0], ("id".to_owned(), "bigint".to_owned(), false));
        let defs = &pg.iter().find(|(t, _)| t == "key_group_defs").unwrap().1;
        assert_eq!(
            defs[2],
            ("charging".to_owned(), "boolean".to_owned(), false)
        );
    }
}
