//! `mbms bsf` and `mbms bmsc` as real processes on damaged databases
//! (issue 11, point 10): exit status 1 and the file named on standard
//! error; `--init` creates a database only where there is none. And
//! `mbms bmsc` on PostgreSQL stops with status 0 on SIGTERM (point 12;
//! only when `MBMS_TEST_POSTGRES_URL` is set).

use std::io::{BufRead as _, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn examples() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples")
}

/// Runs `mbms ARGS` to its end; a server that starts instead of refusing
/// is stopped after a generous delay and fails the test.
fn mbms(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "mbms {args:?} kept running (it started on the database):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The example BM-SC configuration with its RTP port moved to a free one.
fn bmsc_config(dir: &Path) -> String {
    let cfg = std::fs::read_to_string(format!("{}/bmsc.toml", examples()))
        .unwrap()
        .replace("127.0.0.1:5004", &format!("127.0.0.1:{}", free_udp_port()));
    let path = dir.join("bmsc.toml");
    std::fs::write(&path, cfg).unwrap();
    path.display().to_string()
}

fn assert_refused(out: &Output, db: &Path, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&db.display().to_string()) && stderr.contains(what),
        "stderr names the file and the problem: {stderr}"
    );
}

#[test]
fn bsf_refuses_a_zero_byte_database_and_init_creates_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bsf.db");
    std::fs::write(&db, b"").unwrap();
    let cfg = format!("{}/bsf.toml", examples());
    let db_arg = db.to_str().unwrap();
    let run = [
        "bsf",
        "--config",
        &cfg,
        "--listen",
        "127.0.0.1:0",
        "--db",
        db_arg,
    ];
    assert_refused(&mbms(dir.path(), &run), &db, "empty (0 bytes)");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left alone");
    // The subscriber commands refuse it too.
    let out = mbms(dir.path(), &["bsf", "subscriber", "list", "--db", db_arg]);
    assert_refused(&out, &db, "empty (0 bytes)");

    // --init initialises it and exits; a second --init refuses.
    let init = ["bsf", "--init", "--config", &cfg, "--db", db_arg];
    let out = mbms(dir.path(), &init);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&db).unwrap().len() > 0);
    assert_refused(&mbms(dir.path(), &init), &db, "--init refuses");
    let out = mbms(dir.path(), &["bsf", "subscriber", "list", "--db", db_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bmsc_refuses_a_zero_byte_database_and_init_creates_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bmsc_config(dir.path());
    let db = dir.path().join("bmsc.db");
    std::fs::write(&db, b"").unwrap();
    let db_arg = db.to_str().unwrap();
    let run = bmsc_run(&cfg, db_arg);
    assert_refused(&mbms(dir.path(), &run), &db, "empty (0 bytes)");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left alone");

    let init = ["bmsc", "--init", "--config", &cfg, "--db", db_arg];
    let out = mbms(dir.path(), &init);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&db).unwrap().len() > 0);
    assert_refused(&mbms(dir.path(), &init), &db, "--init refuses");

    // A missing table is refused, not re-created (today's main re-created
    // `deliveries` and charged every subscriber again).
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE deliveries")
        .unwrap();
    assert_refused(&mbms(dir.path(), &run), &db, "table deliveries is missing");
}

#[test]
fn bmsc_on_postgresql_exits_0_on_sigterm() {
    let url = match std::env::var("MBMS_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => u,
        _ => {
            mbms_test_support::skip("PostgreSQL: MBMS_TEST_POSTGRES_URL not set");
            return;
        }
    };
    let schema = format!("bmsc_cli_sigterm_{}", std::process::id());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = format!("{url}{sep}options=-csearch_path%3D{schema}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = bmsc_config(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args([
            "bmsc",
            "--config",
            &cfg,
            "--listen",
            "127.0.0.1:0",
            "--mikey-listen",
            "127.0.0.1:0",
            "--db",
            &db,
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("mbms bmsc exited before listening:\n{log}"))
            .unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("http=127.0.0.1:") {
            break;
        }
    }
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        for l in lines.map_while(Result::ok) {
            rest.push_str(&l);
            rest.push('\n');
        }
        rest
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Generous: the stop is bounded by the server's graceful shutdown.
    let deadline = Instant::now() + Duration::from_secs(120);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "mbms bmsc did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    log.push_str(&rest.join().unwrap());
    assert_eq!(exit.code(), Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
}

/// Starts `mbms ARGS` and returns it once a line of its log contains
/// `ready`.
fn start_until(dir: &Path, args: &[&str], ready: &str) -> std::process::Child {
    let bin = Path::new(env!("CARGO_BIN_EXE_mbms"));
    mbms_test_support::spawn_until(bin, dir, args, ready).0
}

/// The arguments of `mbms bmsc` on `db` with configuration `cfg`, on free
/// ports.
fn bmsc_run<'a>(cfg: &'a str, db: &'a str) -> [&'a str; 9] {
    [
        "bmsc",
        "--config",
        cfg,
        "--listen",
        "127.0.0.1:0",
        "--mikey-listen",
        "127.0.0.1:0",
        "--db",
        db,
    ]
}

/// A second server on a SQLite file that a running one serves is refused
/// (it would hand out the same MUK counters, or SQNs): exit status 1 naming
/// the file; once the first is killed (-9), a new one starts at once.
#[test]
fn a_second_server_on_one_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bmsc_config(dir.path());
    let db = dir.path().join("bmsc.db");
    let db_arg = db.to_str().unwrap();
    let run = bmsc_run(&cfg, db_arg);
    let mut first = start_until(dir.path(), &run, "http=127.0.0.1:");
    assert_refused(&mbms(dir.path(), &run), &db, "in use by another process");
    first.kill().unwrap();
    first.wait().unwrap();
    let mut again = start_until(dir.path(), &run, "http=127.0.0.1:");
    again.kill().unwrap();
    again.wait().unwrap();

    let bsf_cfg = format!("{}/bsf.toml", examples());
    let bsf_db = dir.path().join("bsf.db");
    let bsf_db_arg = bsf_db.to_str().unwrap();
    let bsf = [
        "bsf",
        "--config",
        &bsf_cfg,
        "--listen",
        "127.0.0.1:0",
        "--db",
        bsf_db_arg,
    ];
    let mut first = start_until(dir.path(), &bsf, "BSF listening");
    assert_refused(
        &mbms(dir.path(), &bsf),
        &bsf_db,
        "in use by another process",
    );
    // The administration commands are not held back.
    let out = mbms(
        dir.path(),
        &["bsf", "subscriber", "list", "--db", bsf_db_arg],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    first.kill().unwrap();
    first.wait().unwrap();
}
