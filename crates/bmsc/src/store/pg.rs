//! [`Store`] on PostgreSQL (the `postgres` crate: pure Rust, no libpq),
//! with the same tables and behaviour as the SQLite store.
//!
//! * `--db postgres://user:password@host:port/dbname` (or a key/value
//!   string starting with `host=`; `host=/var/run/postgresql` uses the Unix
//!   socket). TLS is not negotiated (`sslmode` must not be `require`): run
//!   the database on the same host or a protected network.
//! * Every method is one transaction on one connection behind a mutex; a
//!   connection found closed (database restarted) is re-opened once.
//! * Tables live in the connection's default schema, or in the schema given
//!   to [`PgStore::open_in_schema`] (created if missing), so that several
//!   BM-SCs or test runs can share a database.
//!
//! The client runs its own small runtime and blocks: call it from blocking
//! threads (`tokio::task::spawn_blocking`), as the server does.

use std::collections::BTreeSet;
use std::str::FromStr as _;
use std::sync::{Mutex, MutexGuard};

use mbms::engine::KeyGroupSnapshot;
use mbms::{KeyGroupName, MukId};
use postgres::{Client, NoTls, Transaction};

use super::*;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS muk_counters (
    idi      TEXT NOT NULL,
    idr      TEXT NOT NULL,
    reserved BIGINT NOT NULL,
    PRIMARY KEY (idi, idr)
);
CREATE TABLE IF NOT EXISTS key_groups (
    key_domain BYTEA NOT NULL,
    key_group  INTEGER NOT NULL,
    state      BYTEA NOT NULL,
    PRIMARY KEY (key_domain, key_group)
);
CREATE TABLE IF NOT EXISTS key_group_defs (
    key_group       INTEGER PRIMARY KEY,
    window_len      INTEGER NOT NULL,
    charging        BOOLEAN NOT NULL,
    ack             BOOLEAN NOT NULL,
    rotate_interval BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS services (
    id         TEXT PRIMARY KEY,
    key_groups TEXT NOT NULL,
    open       BOOLEAN NOT NULL,
    allowed    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ues (
    impi       TEXT PRIMARY KEY,
    btid       TEXT NOT NULL,
    muk        BYTEA NOT NULL,
    mikey_addr TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS registrations (
    impi       TEXT NOT NULL,
    service_id TEXT NOT NULL,
    PRIMARY KEY (impi, service_id)
);
CREATE TABLE IF NOT EXISTS deliveries (
    impi       TEXT NOT NULL,
    msk        TEXT NOT NULL,
    state      TEXT NOT NULL,
    charged    BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (impi, msk)
);
CREATE TABLE IF NOT EXISTS charging_records (
    id      BIGSERIAL PRIMARY KEY,
    impi    TEXT NOT NULL,
    btid    TEXT NOT NULL,
    msk     TEXT NOT NULL,
    counter BIGINT NOT NULL,
    time_ms BIGINT NOT NULL
);
";

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// A [`Store`] on a PostgreSQL database.
pub struct PgStore {
    config: postgres::Config,
    schema: Option<String>,
    client: Mutex<Client>,
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
    /// Connects to `url` and creates the tables if needed.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, None)
    }

    /// Like [`open`](Self::open), with every table in `schema` (lowercase
    /// letters, digits and `_`; created if missing).
    pub fn open_in_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        Self::open_with(url, Some(schema))
    }

    fn open_with(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
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
        let client = connect(&config, schema.as_deref()).map_err(|e| StoreError::Open {
            target: describe(&config),
            source: Box::new(e),
        })?;
        Ok(Self {
            config,
            schema,
            client: Mutex::new(client),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Client>, StoreError> {
        let mut g = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_closed() {
            *g = connect(&self.config, self.schema.as_deref())?;
        }
        Ok(g)
    }

    fn tx<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.lock()?;
        let mut tx = c.transaction()?;
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }
}

fn connect(config: &postgres::Config, schema: Option<&str>) -> Result<Client, postgres::Error> {
    let mut c = config.connect(NoTls)?;
    if let Some(s) = schema {
        // `s` is checked by `valid_schema_name`.
        c.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s}; SET search_path TO {s}"
        ))?;
    }
    c.batch_execute(SCHEMA)?;
    Ok(c)
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

    fn muk_counter_reserved(&self, muk: &MukId) -> Result<Option<u32>, StoreError> {
        let row = self.lock()?.query_opt(
            "SELECT reserved FROM muk_counters WHERE idi = $1 AND idr = $2",
            &[&muk.idi, &muk.idr],
        )?;
        row.map(|r| u32_from_i64(r.get(0), "counter mark"))
            .transpose()
    }

    fn reserve_muk_counters(&self, muk: &MukId, upto: u32) -> Result<(), StoreError> {
        self.tx(|tx| {
            let old = tx.query_opt(
                "SELECT reserved FROM muk_counters WHERE idi = $1 AND idr = $2 FOR UPDATE",
                &[&muk.idi, &muk.idr],
            )?;
            if let Some(r) = old {
                let old = u32_from_i64(r.get(0), "counter mark")?;
                if upto <= old {
                    return Err(StoreError::CounterRollback {
                        muk: muk.to_string(),
                        stored: old,
                        requested: upto,
                    });
                }
            }
            tx.execute(
                "INSERT INTO muk_counters (idi, idr, reserved) VALUES ($1, $2, $3)
                 ON CONFLICT (idi, idr) DO UPDATE SET reserved = excluded.reserved",
                &[&muk.idi, &muk.idr, &i64::from(upto)],
            )?;
            Ok(())
        })
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
        let r = self.tx(|tx| {
            tx.execute(
                "INSERT INTO key_groups (key_domain, key_group, state) VALUES ($1, $2, $3)
                 ON CONFLICT (key_domain, key_group) DO UPDATE SET state = excluded.state",
                &[&&s.name.key_domain.0[..], &i32_of(s.name.key_group), &state],
            )?;
            Ok(())
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
        self.tx(|tx| {
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
        })
    }

    fn remove_ue(&self, impi: &str) -> Result<(), StoreError> {
        self.tx(|tx| {
            tx.execute("DELETE FROM registrations WHERE impi = $1", &[&impi])?;
            tx.execute("DELETE FROM deliveries WHERE impi = $1", &[&impi])?;
            tx.execute("DELETE FROM ues WHERE impi = $1", &[&impi])?;
            Ok(())
        })
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
        self.tx(|tx| {
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
                let r = tx.query_one(
                    "INSERT INTO charging_records (impi, btid, msk, counter, time_ms)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[
                        &c.impi,
                        &c.btid,
                        &msk_to_text(&c.msk),
                        &i64::from(c.counter),
                        &i64_from_u64(c.time_ms),
                    ],
                )?;
                let mut c = c.clone();
                c.id = r.get(0);
                out.push(c);
            }
            Ok(out)
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
