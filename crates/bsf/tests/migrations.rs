//! Schema migrations (issue 14, point 7): a database written by release
//! 0.1.0 (`tests/fixtures/bsf-0.1.0.db`, see the README there) opens with
//! this program, is brought to the current schema version, and keeps every
//! row: the SQN continues where the old BSF left it (TS 33.102 Annex C).

use std::path::{Path, PathBuf};

use bsf::sqlite::SCHEMA_VERSION;
use bsf::{GbaType, SqliteStore, Store, StoreError};
use gba::{Ks, Opc, SubscriberKey};

const USER1: &str = "user1_private@home1.net";
const USER2: &str = "user2_private@home1.net";
const BTID: &str = "QkJCQkJCQkJCQkJCQkJCQg==@bsf.home1.net";

/// A copy of the fixture in a temporary folder.
fn fixture_copy(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bsf-0.1.0.db");
    let path = dir.join("bsf.db");
    std::fs::copy(src, &path).unwrap();
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

/// What the old BSF wrote (see tests/fixtures/generate.rs).
fn assert_fixture_rows(s: &SqliteStore) {
    let u1 = s.subscriber(USER1).unwrap().expect("user1");
    assert_eq!(u1.sqn.value(), 0x23, "three vectors after SQN 0x20");
    assert_eq!(u1.k, SubscriberKey::from_bytes([0x11; 16]));
    assert_eq!(u1.opc, Opc::from_bytes([0x11 ^ 0x5a; 16]));
    assert_eq!(u1.amf, [0x80, 0x00]);
    assert_eq!(u1.gba_type, GbaType::GbaMe);
    let u2 = s.subscriber(USER2).unwrap().expect("user2");
    assert_eq!(u2.sqn.value(), 0);
    assert_eq!(u2.gba_type, GbaType::GbaU);
    assert_eq!(s.subscribers().unwrap().len(), 2);
    let session = s.session(BTID, 1_764_000_100).unwrap().expect("session");
    assert_eq!(session.impi, USER1);
    assert_eq!(session.rand, [0x42; 16]);
    assert_eq!(session.ks, Ks::from_bytes([0x33; 32]));
    assert_eq!(session.created_at, 1_764_000_000);
    assert_eq!(session.expires_at, 4_102_444_800);
    assert_eq!(s.session_count().unwrap(), 1);
}

#[test]
fn release_0_1_0_database_opens_keeps_its_rows_and_its_sqn_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    let s = SqliteStore::open(&path).unwrap();
    assert_fixture_rows(&s);
    // The SQN continues above the old BSF's last one.
    assert_eq!(s.next_sqn(USER1).unwrap().unwrap().sqn.value(), 0x24);
    drop(s);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    // A second open is a no-op: same version, same rows.
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(s.subscriber(USER1).unwrap().unwrap().sqn.value(), 0x24);
    assert_eq!(s.next_sqn(USER1).unwrap().unwrap().sqn.value(), 0x25);
}

#[test]
fn unversioned_database_of_the_old_schema_is_upgraded() {
    // Release 0.1.0's tables without a version: its creation interrupted
    // before the version was written, or a restore from `sqlite3 .dump`
    // (which does not carry PRAGMA user_version).
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    sql(&path, "PRAGMA user_version = 0");
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION, "upgraded at open");
    assert_fixture_rows(&s);
    assert_eq!(s.next_sqn(USER1).unwrap().unwrap().sqn.value(), 0x24);
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(s.subscriber(USER1).unwrap().unwrap().sqn.value(), 0x24);
}

#[test]
fn unversioned_partial_or_altered_database_is_refused_and_left_alone() {
    for (name, damage, expect) in [
        (
            "no_sessions",
            "DROP TABLE sessions",
            "table sessions is missing",
        ),
        (
            "no_index",
            "DROP INDEX sessions_expires_at",
            "index sessions.sessions_expires_at is missing",
        ),
        (
            "extra_column",
            "ALTER TABLE subscribers ADD COLUMN note TEXT",
            "table subscribers has the columns",
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
            msg.contains("no schema version")
                && msg.contains(expect)
                && msg.contains(&path.display().to_string()),
            "{name}: {msg}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "{name}: unchanged");
        assert_eq!(user_version(&path), 0);
    }
}

#[test]
fn newer_database_is_refused_naming_both_versions() {
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
    assert_eq!(user_version(&path), newer, "left alone");
}
