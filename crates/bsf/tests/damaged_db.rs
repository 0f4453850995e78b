//! A damaged BSF database never starts silently (issue 11, point 10): a
//! 0-byte BSF database used to become a fresh one, sending SQN back from
//! 13 to 0. Each kind of damage is refused at open with an error naming
//! the file and the problem.

use std::path::{Path, PathBuf};

use bsf::{Create, GbaType, SqliteStore, Store, StoreError, Subscriber};
use gba::{Opc, Sqn48, SubscriberKey};

fn sub(impi: &str, sqn: u64) -> Subscriber {
    Subscriber {
        impi: impi.into(),
        k: SubscriberKey::from_bytes([1; 16]),
        opc: Opc::from_bytes([2; 16]),
        sqn: Sqn48::new(sqn).unwrap(),
        amf: [0x80, 0x00],
        gba_type: GbaType::GbaMe,
    }
}

/// A database whose subscriber is at SQN 13.
fn bsf_db(dir: &Path, subscribers: usize) -> PathBuf {
    let path = dir.join("bsf.db");
    let s = SqliteStore::open(&path).unwrap();
    let subs: Vec<_> = (0..subscribers)
        .map(|i| sub(&format!("user{i}_private@home1.net"), 13))
        .collect();
    s.add_subscribers(&subs).unwrap();
    path
}

fn tamper(path: &Path, sql: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(sql).unwrap();
}

fn refused(path: &Path) -> String {
    let e = SqliteStore::open(path).expect_err("refused");
    assert!(matches!(e, StoreError::Refused(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "the error names the file: {msg}"
    );
    msg
}

#[test]
fn zero_byte_file_is_refused_not_restarted_at_sqn_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bsf.db");
    std::fs::write(&path, b"").unwrap();
    let msg = refused(&path);
    assert!(msg.contains("empty (0 bytes)"), "{msg}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left alone");
}

#[test]
fn truncated_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = bsf_db(dir.path(), 500);
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 8 * 4096, "several pages: {len}");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let msg = refused(&path);
    assert!(msg.contains("not a valid database"), "{msg}");
}

#[test]
fn missing_table_is_refused_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let path = bsf_db(dir.path(), 1);
    tamper(&path, "DROP TABLE subscribers");
    let msg = refused(&path);
    assert!(msg.contains("table subscribers is missing"), "{msg}");
    tamper(&path, "DROP TABLE sessions");
    let msg = refused(&path);
    assert!(msg.contains("is missing"), "{msg}");
}

#[test]
fn unknown_gba_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = bsf_db(dir.path(), 1);
    tamper(&path, "UPDATE subscribers SET gba_type = 'gba_x'");
    let msg = refused(&path);
    assert!(
        msg.contains("unknown GBA type") && msg.contains("gba_x"),
        "{msg}"
    );
}

#[test]
fn negative_sqn_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = bsf_db(dir.path(), 1);
    tamper(&path, "UPDATE subscribers SET sqn = -1");
    let msg = refused(&path);
    assert!(msg.contains("negative or out-of-range SQN"), "{msg}");
}

#[test]
fn sqn_above_48_bits_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = bsf_db(dir.path(), 1);
    tamper(&path, "UPDATE subscribers SET sqn = 281474976710656");
    let msg = refused(&path);
    assert!(msg.contains("negative or out-of-range SQN"), "{msg}");
}

#[test]
fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = bsf_db(dir.path(), 1);
    tamper(&path, "PRAGMA user_version = 2");
    let msg = refused(&path);
    assert!(msg.contains("schema version 2 is newer"), "{msg}");
}

#[test]
fn valid_database_keeps_its_sqn() {
    let dir = tempfile::tempdir().unwrap();
    let path = bsf_db(dir.path(), 1);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(
        s.next_sqn("user0_private@home1.net")
            .unwrap()
            .unwrap()
            .sqn
            .value(),
        14
    );
}

#[test]
fn init_creates_only_new_databases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bsf.db");
    drop(SqliteStore::open_with(&path, Create::Init).unwrap());
    let e = SqliteStore::open_with(&path, Create::Init).err().unwrap();
    assert!(e.to_string().contains("--init refuses"), "{e}");
    std::fs::write(&path, b"").unwrap();
    assert!(SqliteStore::open(&path).is_err());
    let s = SqliteStore::open_with(&path, Create::Init).unwrap();
    s.add_subscribers(&[sub("a@x", 5)]).unwrap();
    drop(s);
    assert_eq!(
        SqliteStore::open(&path)
            .unwrap()
            .subscribers()
            .unwrap()
            .len(),
        1
    );
}
