//! Schema migrations (issue 14, point 7): a database written by release
//! 0.1.0 opens with this program, is brought to the current schema
//! version and keeps every row: MUK counter marks hold (a counter is never
//! reused), charging records keep their IDs and the next one follows.
//! SQLite: `tests/fixtures/bmsc-0.1.0.db` (see the README there).
//! PostgreSQL (when `MBMS_TEST_POSTGRES_URL` is set): the tables of
//! `tests/fixtures/pg-schema-0.1.0.sql` in a schema of their own, filled
//! with the rows of the SQLite fixture.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bmsc::store::{
    ChargingRow, Create, DeliveryRecord, Outcomes, PgStore, SqliteStore, Store, StoreError,
    SCHEMA_VERSION,
};
use mbms::{KeyDomainId, KeyGroupName, Msk, MskId, MskName, Muk};

const IMPI: &str = "user1_private@home1.net";
const BTID: &str = "QkJCQkJCQkJCQkJCQkJCQg==@bsf.home1.net";
const SERVICE: &str = "urn:mbms:service:news";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn msk(n: u16) -> MskName {
    MskName {
        key_domain: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
        msk_id: MskId::new(1, n),
    }
}

/// What the old BM-SC wrote (see tests/fixtures/generate.rs).
fn assert_fixture_rows(s: &dyn Store) {
    assert_eq!(s.counter_reserved().unwrap(), Some(64));
    let defs = s.key_group_defs().unwrap();
    assert_eq!(defs.len(), 1);
    assert_eq!(
        (
            defs[0].key_group,
            defs[0].window_len,
            defs[0].charging,
            defs[0].ack,
            defs[0].rotate_interval
        ),
        (1, 8, true, true, 3600)
    );
    let services = s.services().unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].id, SERVICE);
    assert_eq!(services[0].key_groups, [1]);
    assert!(!services[0].open);
    assert_eq!(services[0].allowed, [IMPI]);
    let ues = s.ues().unwrap();
    assert_eq!(ues.len(), 1);
    assert_eq!(ues[0].impi, IMPI);
    assert_eq!(ues[0].btid, BTID);
    assert!(ues[0].muk == Muk::from_bytes([0x5a; 32]));
    assert_eq!(ues[0].mikey_addr, "127.0.0.1:4000".parse().unwrap());
    assert_eq!(ues[0].services, [SERVICE.to_owned()].into());
    assert_eq!(ues[0].updated_at, 1_764_000_001_000);
    let kg = s
        .load_key_group(&KeyGroupName {
            key_domain: msk(1).key_domain,
            key_group: 1,
        })
        .unwrap()
        .expect("key group 1");
    assert_eq!(kg.current.name, msk(1));
    assert_eq!(kg.current.key, Msk::from_bytes([0xa1; 16]));
    assert_eq!(kg.current.mtk_counter, 4);
    assert_eq!(kg.current.last_mtk_id.value(), 4);
    assert_eq!(kg.next.name, msk(2));
    assert_eq!(kg.next_key_number, 3);
    let d = s.deliveries(Some(IMPI)).unwrap();
    let d: Vec<_> = d
        .iter()
        .map(|d| (d.msk, d.state.as_str(), d.charged, d.updated_at))
        .collect();
    assert_eq!(
        d,
        [
            (msk(1), "acknowledged", true, 1_764_000_002_000),
            (msk(2), "pending", false, 1_764_000_003_000)
        ]
    );
    let c = s.charging_records(0, 10).unwrap();
    assert_eq!(
        c,
        [ChargingRow {
            id: 1,
            impi: IMPI.into(),
            btid: BTID.into(),
            msk: msk(2),
            counter: 3,
            time_ms: 1_764_000_002_500,
        }]
    );
}

/// The old data go on: the counter mark of the old MUK is never lowered or
/// reused, and a new charging record follows the old one.
fn assert_old_data_go_on(s: &dyn Store) {
    assert!(matches!(
        s.reserve_counters(64),
        Err(StoreError::CounterRollback { stored: 64, .. })
    ));
    s.reserve_counters(96).unwrap();
    let rows = s
        .record(&Outcomes {
            deliveries: vec![DeliveryRecord {
                impi: IMPI.into(),
                msk: msk(2),
                state: "acknowledged".into(),
                charged: true,
                updated_at: 1_764_000_004_000,
            }],
            charging: vec![
                // The old record's (IMPI, MSK): charged once (schema
                // version 2), this one is dropped.
                ChargingRow {
                    id: 0,
                    impi: IMPI.into(),
                    btid: BTID.into(),
                    msk: msk(2),
                    counter: 70,
                    time_ms: 1_764_000_004_000,
                },
                ChargingRow {
                    id: 0,
                    impi: IMPI.into(),
                    btid: BTID.into(),
                    msk: msk(3),
                    counter: 71,
                    time_ms: 1_764_000_004_000,
                },
            ],
        })
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].msk, msk(3));
    // IDs continue after the old one (PostgreSQL: the dropped duplicate
    // took a sequence value).
    assert!(
        rows[0].id >= 2,
        "charging record IDs continue: {}",
        rows[0].id
    );
    assert_eq!(s.counter_reserved().unwrap(), Some(96));
}

// ---------------------------------------------------------------- SQLite

fn fixture_copy(dir: &Path) -> PathBuf {
    let path = dir.join("bmsc.db");
    std::fs::copy(fixture("bmsc-0.1.0.db"), &path).unwrap();
    path
}

fn sql(path: &Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn sqlite_release_0_1_0_database_opens_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    let s = SqliteStore::open(&path).unwrap();
    assert_fixture_rows(&s);
    drop(s);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    // A second open is a no-op; the data go on.
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_fixture_rows(&s);
    assert_old_data_go_on(&s);
}

#[test]
fn sqlite_unversioned_database_of_the_old_schema_is_upgraded() {
    // Release 0.1.0's tables without a version (creation interrupted
    // before the version was written, or restored from `sqlite3 .dump`).
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    sql(&path, "PRAGMA user_version = 0");
    let s = bmsc::store::open(path.to_str().unwrap()).unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION, "upgraded at open");
    assert_fixture_rows(&*s);
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_fixture_rows(&s);
    assert_old_data_go_on(&s);
}

#[test]
fn sqlite_unversioned_partial_or_invalid_database_is_refused_and_left_alone() {
    for (name, damage, expect) in [
        (
            "partial",
            "DROP TABLE charging_records",
            "table charging_records is missing",
        ),
        (
            "altered",
            "ALTER TABLE deliveries DROP COLUMN charged",
            "table deliveries has the columns",
        ),
        (
            // The layout is right, a row is not: the upgrade is rolled back.
            "invalid_row",
            "UPDATE muk_counters SET reserved = 2",
            "counter mark is below a counter already used",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture_copy(dir.path());
        sql(&path, &format!("PRAGMA user_version = 0; {damage}"));
        let before = std::fs::read(&path).unwrap();
        let e = SqliteStore::open(&path).expect_err(name);
        assert!(matches!(e, StoreError::Refused(_)), "{name}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(expect) && msg.contains(&path.display().to_string()),
            "{name}: {msg}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "{name}: unchanged");
        assert_eq!(user_version(&path), 0, "{name}");
    }
}

#[test]
fn sqlite_newer_database_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    let newer = SCHEMA_VERSION + 1;
    sql(&path, &format!("PRAGMA user_version = {newer}"));
    let msg = SqliteStore::open(&path).expect_err("newer").to_string();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains(&format!(
                "schema version {newer} is newer than this program's {SCHEMA_VERSION}"
            )),
        "{msg}"
    );
}

// ------------------------------------------------------------ PostgreSQL

fn postgres_url() -> Option<String> {
    match std::env::var("MBMS_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            eprintln!("skipped: MBMS_TEST_POSTGRES_URL not set");
            None
        }
    }
}

/// A schema of its own holding release 0.1.0's tables, dropped at the end.
struct OldPgSchema {
    url: String,
    name: String,
}

impl OldPgSchema {
    fn new(url: &str, test: &str) -> OldPgSchema {
        let s = OldPgSchema {
            url: url.to_owned(),
            name: format!("bmsc_mig_{}_{test}", std::process::id()),
        };
        let ddl = std::fs::read_to_string(fixture("pg-schema-0.1.0.sql")).unwrap();
        let mut c = s.client();
        c.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}; SET search_path TO {0}; {ddl}",
            s.name
        ))
        .unwrap();
        s
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }

    fn sql(&self, sql: &str) {
        self.client()
            .batch_execute(&format!("SET search_path TO {}; {sql}", self.name))
            .unwrap();
    }

    /// Copies the rows of the SQLite fixture, as the old BM-SC on
    /// PostgreSQL would have written them (charging record IDs from the
    /// sequence).
    fn fill_from_the_sqlite_fixture(&self) {
        // A copy: even a read-only open of a WAL database writes beside it.
        let dir = tempfile::tempdir().unwrap();
        let lite = rusqlite::Connection::open(fixture_copy(dir.path())).unwrap();
        let mut pg = self.client();
        pg.batch_execute(&format!("SET search_path TO {}", self.name))
            .unwrap();
        let mut tx = pg.transaction().unwrap();
        let mut copy = |select: &str, insert: &str, n: usize| {
            let mut st = lite.prepare(select).unwrap();
            let mut rows = st.query([]).unwrap();
            while let Some(r) = rows.next().unwrap() {
                let vals: Vec<Box<dyn postgres::types::ToSql + Sync>> = (0..n)
                    .map(|i| -> Box<dyn postgres::types::ToSql + Sync> {
                        match r.get_ref(i).unwrap() {
                            rusqlite::types::ValueRef::Integer(v) => Box::new(v),
                            rusqlite::types::ValueRef::Text(t) => {
                                Box::new(String::from_utf8(t.to_vec()).unwrap())
                            }
                            rusqlite::types::ValueRef::Blob(b) => Box::new(b.to_vec()),
                            other => panic!("unexpected value {other:?}"),
                        }
                    })
                    .collect();
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    vals.iter().map(|v| &**v).collect();
                tx.execute(insert, &refs).unwrap();
            }
        };
        copy(
            "SELECT idi, idr, reserved FROM muk_counters",
            "INSERT INTO muk_counters VALUES ($1, $2, $3)",
            3,
        );
        copy(
            "SELECT key_domain, key_group, state FROM key_groups",
            "INSERT INTO key_groups VALUES ($1, $2::BIGINT::INTEGER, $3)",
            3,
        );
        copy(
            "SELECT key_group, window_len, charging, ack, rotate_interval FROM key_group_defs",
            "INSERT INTO key_group_defs VALUES ($1::BIGINT::INTEGER, $2::BIGINT::INTEGER,
             $3::BIGINT <> 0, $4::BIGINT <> 0, $5)",
            5,
        );
        copy(
            "SELECT id, key_groups, open, allowed FROM services",
            "INSERT INTO services VALUES ($1, $2, $3::BIGINT <> 0, $4)",
            4,
        );
        copy(
            "SELECT impi, btid, muk, mikey_addr, updated_at FROM ues",
            "INSERT INTO ues VALUES ($1, $2, $3, $4, $5)",
            5,
        );
        copy(
            "SELECT impi, service_id FROM registrations",
            "INSERT INTO registrations VALUES ($1, $2)",
            2,
        );
        copy(
            "SELECT impi, msk, state, charged, updated_at FROM deliveries",
            "INSERT INTO deliveries VALUES ($1, $2, $3, $4::BIGINT <> 0, $5)",
            5,
        );
        copy(
            "SELECT impi, btid, msk, counter, time_ms FROM charging_records ORDER BY id",
            "INSERT INTO charging_records (impi, btid, msk, counter, time_ms)
             VALUES ($1, $2, $3, $4, $5)",
            5,
        );
        tx.commit().unwrap();
    }

    fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        PgStore::open_with(&self.url, Some(&self.name), Create::IfMissing).map(|s| Arc::new(s) as _)
    }

    fn version(&self) -> Option<i64> {
        let mut c = self.client();
        let has_meta: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                 WHERE table_schema = $1 AND table_name = 'mbms_meta')",
                &[&self.name],
            )
            .unwrap()
            .get(0);
        has_meta.then(|| {
            c.query_one(
                &format!(
                    "SELECT value FROM {}.mbms_meta WHERE name = 'schema_version'",
                    self.name
                ),
                &[],
            )
            .unwrap()
            .get(0)
        })
    }
}

impl Drop for OldPgSchema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

#[test]
fn postgresql_release_0_1_0_schema_is_upgraded_and_keeps_every_row() {
    let Some(url) = postgres_url() else { return };
    let s = OldPgSchema::new(&url, "upgrade");
    s.fill_from_the_sqlite_fixture();
    assert_eq!(s.version(), None, "release 0.1.0 kept no version");
    let st = s.open().unwrap();
    assert_eq!(s.version(), Some(SCHEMA_VERSION), "upgraded at open");
    assert_fixture_rows(&*st);
    drop(st);
    // A second open is a no-op; the data go on.
    let st = s.open().unwrap();
    assert_eq!(s.version(), Some(SCHEMA_VERSION));
    assert_fixture_rows(&*st);
    assert_old_data_go_on(&*st);
}

#[test]
fn postgresql_partial_or_altered_old_schema_is_refused_and_left_alone() {
    let Some(url) = postgres_url() else { return };
    for (test, damage, expect) in [
        (
            "partial",
            "DROP TABLE deliveries",
            "table deliveries is missing",
        ),
        (
            "altered",
            "ALTER TABLE muk_counters ALTER COLUMN reserved TYPE TEXT",
            "table muk_counters has the columns",
        ),
        (
            // The layout is right, a row is not: the upgrade is rolled back.
            "invalid_row",
            "UPDATE muk_counters SET reserved = 2",
            "counter mark is below a counter already used",
        ),
    ] {
        let s = OldPgSchema::new(&url, test);
        s.fill_from_the_sqlite_fixture();
        s.sql(damage);
        let e = s.open().err().expect("refused");
        assert!(matches!(e, StoreError::Rejected { .. }), "{test}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(expect) && msg.contains(&s.name),
            "{test}: {msg}"
        );
        assert_eq!(s.version(), None, "{test}: no version written");
    }
}

#[test]
fn postgresql_newer_schema_is_refused_naming_both_versions() {
    let Some(url) = postgres_url() else { return };
    let s = OldPgSchema::new(&url, "newer");
    drop(s.open().unwrap());
    let newer = SCHEMA_VERSION + 1;
    s.sql(&format!(
        "UPDATE mbms_meta SET value = {newer} WHERE name = 'schema_version'"
    ));
    let msg = s.open().err().expect("refused").to_string();
    assert!(
        msg.contains(&s.name)
            && msg.contains(&format!(
                "schema version {newer} is newer than this program's {SCHEMA_VERSION}"
            )),
        "{msg}"
    );
    assert_eq!(s.version(), Some(newer), "left alone");
}
