//! [`Store`] on a SQLite file (rusqlite, bundled SQLite): the default.
//!
//! The file holds MUKs and MSKs: it is created with mode 0600 on Unix. WAL
//! journal with `synchronous = FULL`; every method is one `BEGIN IMMEDIATE`
//! transaction on a connection behind a mutex.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use mbms::engine::KeyGroupSnapshot;
use mbms::KeyGroupName;
use mbms_service::db::{self, Migration, Schema};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::*;

/// The schema: the tables of version 0 and the migration steps after it
/// (version [`SCHEMA_VERSION`], in `PRAGMA user_version`; an older
/// database is upgraded at open, see [`mbms_service::db`]).
pub(crate) const SCHEMA: Schema = Schema {
    base: BASE,
    migrations: MIGRATIONS,
};

const _: () = assert!(SCHEMA.version() == SCHEMA_VERSION);

/// Version 0: the tables of release 0.1.0 (commit ce6c076). A database
/// without a version is upgraded only if it has exactly these tables and
/// columns. Never change this text: add a step to [`MIGRATIONS`].
/// PostgreSQL has the same tables and columns (`pg.rs`), and its open-time
/// check takes the expected names from [`SCHEMA`].
const BASE: &str = "
CREATE TABLE muk_counters (
    idi      TEXT NOT NULL,
    idr      TEXT NOT NULL,
    reserved INTEGER NOT NULL,
    PRIMARY KEY (idi, idr)
);
CREATE TABLE key_groups (
    key_domain BLOB NOT NULL,
    key_group  INTEGER NOT NULL,
    state      BLOB NOT NULL,
    PRIMARY KEY (key_domain, key_group)
);
CREATE TABLE key_group_defs (
    key_group       INTEGER PRIMARY KEY NOT NULL,
    window_len      INTEGER NOT NULL,
    charging        INTEGER NOT NULL,
    ack             INTEGER NOT NULL,
    rotate_interval INTEGER NOT NULL
);
CREATE TABLE services (
    id         TEXT PRIMARY KEY NOT NULL,
    key_groups TEXT NOT NULL,
    open       INTEGER NOT NULL,
    allowed    TEXT NOT NULL
);
CREATE TABLE ues (
    impi       TEXT PRIMARY KEY NOT NULL,
    btid       TEXT NOT NULL,
    muk        BLOB NOT NULL,
    mikey_addr TEXT NOT NULL,
    updated_at INTEGER NOT NULL
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
    charged    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (impi, msk)
);
CREATE TABLE charging_records (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    impi    TEXT NOT NULL,
    btid    TEXT NOT NULL,
    msk     TEXT NOT NULL,
    counter INTEGER NOT NULL,
    time_ms INTEGER NOT NULL
);
";

/// The migration steps, one per schema version, applied in order at open
/// to an older database (in the transaction that checks it). PostgreSQL
/// has its own steps to the same versions (`pg.rs`).
const MIGRATIONS: &[Migration] = &[
    Migration {
        to: 1,
        what:
            "schema version 1: the tables of version 0, with their version in PRAGMA user_version",
        // Release 0.1.0 wrote version 1 itself, with the tables of version 0;
        // a database without a version but with exactly these tables (its
        // creation interrupted, or restored from an `sqlite3 .dump`, which
        // drops the version) only gets the version.
        sql: "",
    },
    Migration {
        to: 2,
        what: "schema version 2: a charging record once per (IMPI, MSK) (issue 13)",
        // Seed 004 6.3.2.3.3: a subscriber is charged once per MSK; with
        // several instances (PostgreSQL) whichever saw the acknowledgement
        // writes it, `ON CONFLICT DO NOTHING`. A database holding two records
        // of one (IMPI, MSK) is refused (never deleted).
        sql: "CREATE UNIQUE INDEX charging_once ON charging_records (impi, msk);",
    },
];

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// The BM-SC's checks of the rows of an existing file.
fn validate(conn: &Connection) -> Result<(), String> {
    validate_rows(&mut |sql| {
        conn.query_row(sql, [], |r| r.get::<_, String>(0))
            .optional()
            .map_err(|e| e.to_string())
    })?;
    let mut st = conn
        .prepare("SELECT key_domain, key_group, state FROM key_groups")
        .map_err(|e| e.to_string())?;
    let mut rows = st.query([]).map_err(|e| e.to_string())?;
    while let Some(r) = rows.next().map_err(|e| e.to_string())? {
        let kd: Vec<u8> = r.get(0).map_err(|e| format!("table key_groups: {e}"))?;
        let kg: i64 = r.get(1).map_err(|e| format!("table key_groups: {e}"))?;
        let mut state: Vec<u8> = r.get(2).map_err(|e| format!("table key_groups: {e}"))?;
        let out = validate_key_group_row(&kd, kg, &state);
        zeroize::Zeroize::zeroize(&mut state);
        out?;
    }
    Ok(())
}

/// A [`Store`] on one SQLite database file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (mode 0600, with the
    /// schema) only where no file exists; an existing file is checked
    /// first (see [`super::open_with`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, Create::IfMissing)
    }

    /// Opens the database at `path` under the rules of
    /// [`mbms_service::db`] and [`super::open_with`]: anything damaged,
    /// foreign, newer or invalid is refused ([`StoreError::Refused`]).
    pub fn open_with(path: &Path, create: Create) -> Result<Self, StoreError> {
        let conn = db::open_sqlite(path, &SCHEMA, create, &validate)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Ok(Self {
            conn: Mutex::new(db::open_sqlite_in_memory(&SCHEMA)?),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic under the lock rolls the open transaction back on drop.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn counter_reserved(&self) -> Result<Option<u32>, StoreError> {
        let v: Option<i64> =
            self.lock()
                .query_row("SELECT MAX(reserved) FROM muk_counters", [], |r| r.get(0))?;
        v.map(|v| u32_from_i64(v, "counter mark")).transpose()
    }

    fn reserve_counters(&self, upto: u32) -> Result<(), StoreError> {
        let (idi, idr) = COUNTER_MARK_ROW;
        self.write(|tx| {
            let old: Option<i64> =
                tx.query_row("SELECT MAX(reserved) FROM muk_counters", [], |r| r.get(0))?;
            if let Some(old) = old {
                let old = u32_from_i64(old, "counter mark")?;
                if upto <= old {
                    return Err(StoreError::CounterRollback {
                        stored: old,
                        requested: upto,
                    });
                }
            }
            tx.execute(
                "INSERT INTO muk_counters (idi, idr, reserved) VALUES (?1, ?2, ?3)
                 ON CONFLICT (idi, idr) DO UPDATE SET reserved = excluded.reserved",
                params![idi, idr, i64::from(upto)],
            )?;
            Ok(())
        })
    }

    fn load_key_group(&self, name: &KeyGroupName) -> Result<Option<KeyGroupSnapshot>, StoreError> {
        let b: Option<Vec<u8>> = self
            .lock()
            .query_row(
                "SELECT state FROM key_groups WHERE key_domain = ?1 AND key_group = ?2",
                params![&name.key_domain.0[..], i64::from(name.key_group)],
                |r| r.get(0),
            )
            .optional()?;
        let out = b.as_deref().map(|b| decode_snapshot(name, b)).transpose();
        if let Some(mut b) = b {
            zeroize::Zeroize::zeroize(&mut b);
        }
        out
    }

    fn save_key_group(&self, s: &KeyGroupSnapshot) -> Result<(), StoreError> {
        let mut state = encode_snapshot(s);
        let r = self.write(|tx| {
            tx.execute(
                "INSERT INTO key_groups (key_domain, key_group, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key_domain, key_group) DO UPDATE SET state = excluded.state",
                params![&s.name.key_domain.0[..], i64::from(s.name.key_group), state],
            )?;
            Ok(())
        });
        zeroize::Zeroize::zeroize(&mut state);
        r
    }

    fn put_key_group_def(&self, d: &KeyGroupDef) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO key_group_defs (key_group, window_len, charging, ack, rotate_interval)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (key_group) DO UPDATE SET window_len = excluded.window_len,
                   charging = excluded.charging, ack = excluded.ack,
                   rotate_interval = excluded.rotate_interval",
                params![
                    i64::from(d.key_group),
                    i64::from(d.window_len),
                    d.charging,
                    d.ack,
                    i64_from_u64(d.rotate_interval)
                ],
            )?;
            Ok(())
        })
    }

    fn key_group_defs(&self) -> Result<Vec<KeyGroupDef>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT key_group, window_len, charging, ack, rotate_interval
             FROM key_group_defs ORDER BY key_group",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, bool>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (g, w, charging, ack, rot) = row?;
            out.push(KeyGroupDef {
                key_group: u16_from_i64(g, "key group")?,
                window_len: u16_from_i64(w, "window length")?,
                charging,
                ack,
                rotate_interval: u64_from_i64(rot),
            });
        }
        Ok(out)
    }

    fn put_service(&self, d: &ServiceDef) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO services (id, key_groups, open, allowed) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET key_groups = excluded.key_groups,
                   open = excluded.open, allowed = excluded.allowed",
                params![
                    d.id,
                    json_list(&d.key_groups),
                    d.open,
                    json_list(&d.allowed)
                ],
            )?;
            Ok(())
        })
    }

    fn services(&self) -> Result<Vec<ServiceDef>, StoreError> {
        let conn = self.lock();
        let mut st =
            conn.prepare("SELECT id, key_groups, open, allowed FROM services ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kg, open, allowed) = row?;
            out.push(ServiceDef {
                key_groups: parse_json_list(&kg, "service key groups")?,
                allowed: parse_json_list(&allowed, "service allow list")?,
                id,
                open,
            });
        }
        Ok(out)
    }

    fn put_ue(&self, ue: &UeRecord) -> Result<(), StoreError> {
        self.write(|tx| put_ue_tx(tx, ue))
    }

    fn remove_ue(&self, impi: &str) -> Result<(), StoreError> {
        self.write(|tx| remove_ue_tx(tx, impi))
    }

    fn ues(&self) -> Result<Vec<UeRecord>, StoreError> {
        let conn = self.lock();
        let mut regs: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
        {
            let mut st = conn.prepare("SELECT impi, service_id FROM registrations")?;
            let rows =
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (i, s) = row?;
                regs.entry(i).or_default().insert(s);
            }
        }
        let mut st =
            conn.prepare("SELECT impi, btid, muk, mikey_addr, updated_at FROM ues ORDER BY impi")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (impi, btid, mut muk, addr, updated) = row?;
            let m = muk_from_bytes(&muk);
            zeroize::Zeroize::zeroize(&mut muk);
            out.push(UeRecord {
                services: regs.remove(&impi).unwrap_or_default(),
                impi,
                btid,
                muk: m?,
                mikey_addr: addr_from_text(&addr)?,
                updated_at: u64_from_i64(updated),
            });
        }
        Ok(out)
    }

    fn record(&self, o: &Outcomes) -> Result<Vec<ChargingRow>, StoreError> {
        if o.is_empty() {
            return Ok(Vec::new());
        }
        check_outcomes(o)?;
        self.write(|tx| record_tx(tx, o))
    }

    fn commit(&self, batch: &WriteBatch) -> Result<Vec<ChargingRow>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        check_outcomes(&batch.outcomes)?;
        self.write(|tx| {
            for w in &batch.ues {
                match w {
                    UeWrite::Put(ue) => put_ue_tx(tx, ue)?,
                    UeWrite::Remove(impi) => remove_ue_tx(tx, impi)?,
                }
            }
            record_tx(tx, &batch.outcomes)
        })
    }

    fn deliveries(&self, impi: Option<&str>) -> Result<Vec<DeliveryRecord>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT impi, msk, state, charged, updated_at FROM deliveries
             WHERE (?1 IS NULL OR impi = ?1) ORDER BY impi, msk",
        )?;
        let rows = st.query_map(params![impi], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (impi, msk, state, charged, updated) = row?;
            out.push(DeliveryRecord {
                impi,
                msk: msk_from_text(&msk)?,
                state,
                charged,
                updated_at: u64_from_i64(updated),
            });
        }
        Ok(out)
    }

    fn charging_records(&self, after: i64, limit: usize) -> Result<Vec<ChargingRow>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT id, impi, btid, msk, counter, time_ms FROM charging_records
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(
            params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, impi, btid, msk, counter, time) = row?;
            out.push(ChargingRow {
                id,
                impi,
                btid,
                msk: msk_from_text(&msk)?,
                counter: u32_from_i64(counter, "counter")?,
                time_ms: u64_from_i64(time),
            });
        }
        Ok(out)
    }
}

// One transaction's worth of each write, shared by the single writes and
// [`Store::commit`].

fn put_ue_tx(tx: &rusqlite::Transaction<'_>, ue: &UeRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO ues (impi, btid, muk, mikey_addr, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (impi) DO UPDATE SET btid = excluded.btid, muk = excluded.muk,
                   mikey_addr = excluded.mikey_addr, updated_at = excluded.updated_at",
        params![
            ue.impi,
            ue.btid,
            &ue.muk.as_bytes()[..],
            ue.mikey_addr.to_string(),
            i64_from_u64(ue.updated_at)
        ],
    )?;
    tx.execute(
        "DELETE FROM registrations WHERE impi = ?1",
        params![ue.impi],
    )?;
    for s in &ue.services {
        tx.execute(
            "INSERT INTO registrations (impi, service_id) VALUES (?1, ?2)",
            params![ue.impi, s],
        )?;
    }
    Ok(())
}

fn remove_ue_tx(tx: &rusqlite::Transaction<'_>, impi: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM registrations WHERE impi = ?1", params![impi])?;
    tx.execute("DELETE FROM deliveries WHERE impi = ?1", params![impi])?;
    tx.execute("DELETE FROM ues WHERE impi = ?1", params![impi])?;
    Ok(())
}

fn record_tx(tx: &rusqlite::Transaction<'_>, o: &Outcomes) -> Result<Vec<ChargingRow>, StoreError> {
    {
        let mut st = tx.prepare_cached(
            "INSERT INTO deliveries (impi, msk, state, charged, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (impi, msk) DO UPDATE SET state = excluded.state,
                       charged = (deliveries.charged OR excluded.charged),
                       updated_at = excluded.updated_at",
        )?;
        for d in &o.deliveries {
            st.execute(params![
                d.impi,
                msk_to_text(&d.msk),
                d.state,
                d.charged,
                i64_from_u64(d.updated_at)
            ])?;
        }
    }
    let mut out = Vec::with_capacity(o.charging.len());
    for c in &o.charging {
        // Once per (IMPI, MSK): a second record of the same charge is
        // dropped (schema version 2, index `charging_once`).
        let n = tx.execute(
            "INSERT INTO charging_records (impi, btid, msk, counter, time_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (impi, msk) DO NOTHING",
            params![
                c.impi,
                c.btid,
                msk_to_text(&c.msk),
                i64::from(c.counter),
                i64_from_u64(c.time_ms)
            ],
        )?;
        if n == 0 {
            continue;
        }
        let mut c = c.clone();
        c.id = tx.last_insert_rowid();
        out.push(c);
    }
    Ok(out)
}
