//! The storage suite ([`bmsc::store::conformance`]) against every backend:
//! SQLite always; PostgreSQL when `MBMS_TEST_POSTGRES_URL` is set (each test
//! in its own schema, dropped afterwards).

use std::sync::Arc;

use bmsc::store::{conformance, PgStore, SqliteStore, Store};

#[test]
fn sqlite_passes_the_storage_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bmsc.db");
    let open = || -> Arc<dyn Store> { Arc::new(SqliteStore::open(&path).unwrap()) };
    conformance::run_all(&open);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the database holds MUKs and MSKs");
    }
}

/// The PostgreSQL URL of the test database, or `None` (and a message).
pub fn postgres_url() -> Option<String> {
    match std::env::var("MBMS_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            mbms_test_support::skip("PostgreSQL: MBMS_TEST_POSTGRES_URL not set");
            None
        }
    }
}

#[test]
fn postgresql_passes_the_storage_suite() {
    let Some(url) = postgres_url() else { return };
    let schema = format!("bmsc_test_{}_{}", std::process::id(), "suite");
    let open = || -> Arc<dyn Store> { Arc::new(PgStore::open_in_schema(&url, &schema).unwrap()) };
    conformance::run_all(&open);
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
}
