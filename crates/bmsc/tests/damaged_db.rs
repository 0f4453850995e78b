//! A damaged database never starts silently (issue 11, point 10): each
//! kind of damage is refused at open with an error naming the database and
//! the problem, for SQLite always and PostgreSQL when
//! `MBMS_TEST_POSTGRES_URL` is set (each test in its own schema).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bmsc::store::{
    self, ChargingRow, Create, DeliveryRecord, Outcomes, PgStore, SqliteStore, Store, StoreError,
    UeRecord,
};
use mbms::{KeyDomainId, MskId, MskName, Muk};

const BTID: &str = "b1@bsf.home1.net";

fn msk(n: u16) -> MskName {
    MskName {
        key_domain: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
        msk_id: MskId::new(1, n),
    }
}

/// A store holding what a running BM-SC writes: a UE, a counter mark of
/// its MUK, delivery outcomes and a charging record under that MUK.
fn populate(s: &dyn Store, ues: usize) {
    s.reserve_counters(32).unwrap();
    for i in 0..ues {
        s.put_ue(&UeRecord {
            impi: format!("user{i}_private@home1.net"),
            btid: BTID.into(),
            muk: Muk::from_bytes([7; 32]),
            mikey_addr: SocketAddr::from(([127, 0, 0, 1], 4000)),
            services: ["urn:mbms:service:news".to_owned()].into(),
            updated_at: 1,
        })
        .unwrap();
    }
    s.record(&Outcomes {
        deliveries: vec![DeliveryRecord {
            impi: "user0_private@home1.net".into(),
            msk: msk(1),
            state: "acknowledged".into(),
            charged: true,
            updated_at: 2,
        }],
        charging: vec![ChargingRow {
            id: 0,
            impi: "user0_private@home1.net".into(),
            btid: BTID.into(),
            msk: msk(1),
            counter: 20,
            time_ms: 3,
        }],
    })
    .unwrap();
}

// ---------------------------------------------------------------- SQLite

fn sqlite_db(dir: &Path) -> PathBuf {
    let path = dir.join("bmsc.db");
    populate(&SqliteStore::open(&path).unwrap(), 1);
    path
}

fn tamper(path: &Path, sql: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(sql).unwrap();
}

/// Opens `path` as `mbms bmsc` does and returns the refusal.
fn refused(path: &Path) -> String {
    let e = match store::open(path.to_str().unwrap()) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e,
    };
    assert!(matches!(e, StoreError::Refused(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "the error names the file: {msg}"
    );
    msg
}

#[test]
fn sqlite_zero_byte_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bmsc.db");
    std::fs::write(&path, b"").unwrap();
    let msg = refused(&path);
    assert!(msg.contains("empty (0 bytes)"), "{msg}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    // The same through SqliteStore::open (what the tests and tools use).
    assert!(SqliteStore::open(&path).is_err());
}

#[test]
fn sqlite_truncated_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bmsc.db");
    populate(&SqliteStore::open(&path).unwrap(), 400);
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 8 * 4096, "several pages: {len}");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let msg = refused(&path);
    assert!(msg.contains("not a valid database"), "{msg}");
}

#[test]
fn sqlite_garbage_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bmsc.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let msg = refused(&path);
    assert!(msg.contains("not a valid database"), "{msg}");
}

#[test]
fn sqlite_missing_table_is_refused_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let path = sqlite_db(dir.path());
    tamper(&path, "DROP TABLE deliveries");
    let msg = refused(&path);
    assert!(msg.contains("table deliveries is missing"), "{msg}");
    let c = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'deliveries'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0, "not re-created");
}

#[test]
fn sqlite_missing_column_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = sqlite_db(dir.path());
    tamper(&path, "ALTER TABLE deliveries DROP COLUMN charged");
    let msg = refused(&path);
    assert!(
        msg.contains("column charged of table deliveries is missing"),
        "{msg}"
    );
}

#[test]
fn sqlite_unknown_delivery_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = sqlite_db(dir.path());
    tamper(&path, "UPDATE deliveries SET state = 'delivered'");
    let msg = refused(&path);
    assert!(
        msg.contains("unknown delivery state") && msg.contains("delivered"),
        "{msg}"
    );
}

#[test]
fn sqlite_negative_counter_mark_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = sqlite_db(dir.path());
    tamper(&path, "UPDATE muk_counters SET reserved = -1");
    let msg = refused(&path);
    assert!(
        msg.contains("negative or out-of-range counter mark"),
        "{msg}"
    );
}

#[test]
fn sqlite_counter_mark_below_a_used_counter_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = sqlite_db(dir.path());
    // Counter 20 was used (charging record); the mark went back to 10.
    tamper(&path, "UPDATE muk_counters SET reserved = 10");
    let msg = refused(&path);
    assert!(
        msg.contains("counter mark is below a counter already used") && msg.contains(BTID),
        "{msg}"
    );
    // And a mark that vanished altogether.
    tamper(&path, "DELETE FROM muk_counters");
    let msg = refused(&path);
    assert!(msg.contains("mark missing"), "{msg}");
}

#[test]
fn sqlite_newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = sqlite_db(dir.path());
    tamper(&path, "PRAGMA user_version = 3");
    let msg = refused(&path);
    assert!(msg.contains("schema version 3 is newer"), "{msg}");
}

#[test]
fn sqlite_database_without_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bmsc.db");
    tamper(&path, "CREATE TABLE other (x INTEGER)");
    let msg = refused(&path);
    assert!(msg.contains("no schema version"), "{msg}");
}

#[test]
fn sqlite_damaged_key_group_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bmsc.db");
    drop(SqliteStore::open(&path).unwrap());
    tamper(
        &path,
        "INSERT INTO key_groups (key_domain, key_group, state) VALUES (x'00f110', 1, x'0102')",
    );
    let msg = refused(&path);
    assert!(msg.contains("table key_groups"), "{msg}");
}

#[test]
fn sqlite_init_creates_only_new_databases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bmsc.db");
    let db = path.to_str().unwrap();
    // Where no file exists.
    drop(store::open_with(db, Create::Init).unwrap());
    drop(store::open(db).unwrap());
    // Never over an existing database, valid or not.
    let e = store::open_with(db, Create::Init).err().unwrap();
    assert!(e.to_string().contains("--init refuses"), "{e}");
    // A 0-byte file is initialised by --init only.
    std::fs::write(&path, b"").unwrap();
    assert!(store::open(db).is_err());
    let s = store::open_with(db, Create::Init).unwrap();
    populate(&*s, 1);
    drop(s);
    assert_eq!(store::open(db).unwrap().ues().unwrap().len(), 1);
}

#[test]
fn unknown_delivery_state_is_never_written() {
    let s = SqliteStore::open_in_memory().unwrap();
    let bad = Outcomes {
        deliveries: vec![DeliveryRecord {
            impi: "a@x".into(),
            msk: msk(1),
            state: "whatever".into(),
            charged: true,
            updated_at: 1,
        }],
        charging: vec![],
    };
    assert!(matches!(s.record(&bad), Err(StoreError::Invalid(_))));
    assert!(s.deliveries(None).unwrap().is_empty());
}

// ------------------------------------------------------------ PostgreSQL

fn postgres_url() -> Option<String> {
    match std::env::var("MBMS_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            mbms_test_support::skip("PostgreSQL: MBMS_TEST_POSTGRES_URL not set");
            None
        }
    }
}

/// A schema of its own, dropped at the end.
struct PgSchema {
    url: String,
    name: String,
}

impl PgSchema {
    fn new(url: &str, test: &str) -> PgSchema {
        let s = PgSchema {
            url: url.to_owned(),
            name: format!("bmsc_dmg_{}_{test}", std::process::id()),
        };
        s.sql(&format!(
            "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
            s.name
        ));
        s
    }

    fn sql(&self, sql: &str) {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("SET search_path TO {}; {sql}", self.name))
            .unwrap();
    }

    fn open(&self, create: Create) -> Result<Arc<dyn Store>, StoreError> {
        PgStore::open_with(&self.url, Some(&self.name), create).map(|s| Arc::new(s) as _)
    }

    fn populated(url: &str, test: &str) -> PgSchema {
        let s = PgSchema::new(url, test);
        populate(&*s.open(Create::IfMissing).unwrap(), 1);
        s
    }

    fn refused(&self) -> String {
        let e = self.open(Create::IfMissing).err().expect("refused");
        assert!(matches!(e, StoreError::Rejected { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("postgresql database") && msg.contains(&self.name),
            "the error names the database and schema: {msg}"
        );
        msg
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

#[test]
fn postgresql_empty_schema_is_created_and_reopened() {
    let Some(url) = postgres_url() else { return };
    let s = PgSchema::populated(&url, "fresh");
    let st = s.open(Create::IfMissing).unwrap();
    assert_eq!(st.ues().unwrap().len(), 1);
    drop(st);
    let e = s.open(Create::Init).err().unwrap();
    assert!(e.to_string().contains("--init refuses"), "{e}");
}

#[test]
fn postgresql_init_beside_other_tables() {
    let Some(url) = postgres_url() else { return };
    let s = PgSchema::new(&url, "init");
    s.sql("CREATE TABLE someone_else (x INTEGER)");
    // Not empty and none of ours: refused without --init, created with it.
    let msg = s.refused();
    assert!(msg.contains("mbms_meta is missing"), "{msg}");
    drop(s.open(Create::Init).unwrap());
    drop(s.open(Create::IfMissing).unwrap());
}

#[test]
fn postgresql_partial_schema_is_refused() {
    let Some(url) = postgres_url() else { return };
    let s = PgSchema::populated(&url, "partial");
    s.sql("DROP TABLE deliveries");
    let msg = s.refused();
    assert!(msg.contains("table deliveries is missing"), "{msg}");
}

#[test]
fn postgresql_unknown_delivery_state_is_refused() {
    let Some(url) = postgres_url() else { return };
    let s = PgSchema::populated(&url, "state");
    s.sql("UPDATE deliveries SET state = 'delivered'");
    let msg = s.refused();
    assert!(msg.contains("unknown delivery state"), "{msg}");
}

#[test]
fn postgresql_negative_counter_mark_is_refused() {
    let Some(url) = postgres_url() else { return };
    let s = PgSchema::populated(&url, "negative");
    s.sql("UPDATE muk_counters SET reserved = -5");
    let msg = s.refused();
    assert!(
        msg.contains("negative or out-of-range counter mark"),
        "{msg}"
    );
}

#[test]
fn postgresql_counter_mark_below_a_used_counter_is_refused() {
    let Some(url) = postgres_url() else { return };
    let s = PgSchema::populated(&url, "decreasing");
    s.sql("UPDATE muk_counters SET reserved = 10");
    let msg = s.refused();
    assert!(
        msg.contains("counter mark is below a counter already used"),
        "{msg}"
    );
}

#[test]
fn postgresql_newer_schema_version_is_refused() {
    let Some(url) = postgres_url() else { return };
    let s = PgSchema::populated(&url, "newer");
    s.sql("UPDATE mbms_meta SET value = 3 WHERE name = 'schema_version'");
    let msg = s.refused();
    assert!(msg.contains("schema version 3 is newer"), "{msg}");
}

#[test]
fn postgresql_store_drops_inside_a_runtime() {
    // The last handle of the store going away on a runtime thread (as at
    // the end of `mbms bmsc`) must not panic (issue 11, point 12).
    let Some(url) = postgres_url() else { return };
    let s = PgSchema::new(&url, "drop");
    let st = s.open(Create::IfMissing).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move { drop(st) });
}
