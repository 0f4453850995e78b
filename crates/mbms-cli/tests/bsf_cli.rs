//! `mbms bsf subscriber ...` on a temporary database, and `mbms bsf` +
//! `mbms ue bootstrap` as real processes over loopback.

use std::io::{BufRead as _, BufReader};
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;

const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
const IMPI: &str = "user1_private@home1.net";

fn mbms() -> Command {
    Command::cargo_bin("mbms").unwrap()
}

trait FailureExt {
    fn assert_failure_with(&mut self, needle: &str);
}

impl FailureExt for Command {
    /// Asserts a non-zero exit whose standard error contains `needle`.
    fn assert_failure_with(&mut self, needle: &str) {
        let out = self.assert().failure().get_output().stderr.clone();
        let err = String::from_utf8(out).unwrap();
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    }
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn subscriber_add_list_remove_import() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bsf.db");
    let db = db.to_str().unwrap();

    stdout(mbms().args([
        "bsf",
        "subscriber",
        "add",
        "--db",
        db,
        "--impi",
        IMPI,
        "--k",
        K,
        "--opc",
        OPC,
        "--sqn",
        "5",
    ]));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(db).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the database holds secrets");
    }

    let list = stdout(mbms().args(["bsf", "subscriber", "list", "--db", db]));
    assert!(list.contains(IMPI), "{list}");
    assert!(list.contains(" 5 "), "{list}");
    assert!(
        !list.contains(K) && !list.contains(OPC),
        "K/OPc leaked: {list}"
    );
    let secret = stdout(mbms().args(["bsf", "subscriber", "list", "--db", db, "--show-secrets"]));
    assert!(secret.contains(K) && secret.contains(OPC));

    // Duplicates and bad keys are refused without changing anything.
    mbms()
        .args([
            "bsf",
            "subscriber",
            "add",
            "--db",
            db,
            "--impi",
            IMPI,
            "--k",
            K,
            "--opc",
            OPC,
        ])
        .assert_failure_with("already exists");
    mbms()
        .args([
            "bsf",
            "subscriber",
            "add",
            "--db",
            db,
            "--impi",
            "x@y",
            "--k",
            "00",
            "--opc",
            OPC,
        ])
        .assert_failure_with("K");

    let csv = dir.path().join("subs.csv");
    std::fs::write(
        &csv,
        format!("impi,k,opc,sqn,amf\na@home1.net,{K},{OPC},0,8000\nb@home1.net,{K},{OPC},7,b9b9\n"),
    )
    .unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        format!(
            "impi,k,opc,sqn,amf\nc@home1.net,{K},{OPC},0,8000\nd@home1.net,{K},nothex,0,8000\n"
        ),
    )
    .unwrap();
    mbms()
        .args([
            "bsf",
            "subscriber",
            "import",
            "--db",
            db,
            bad.to_str().unwrap(),
        ])
        .assert_failure_with("line 3");
    let out = stdout(mbms().args([
        "bsf",
        "subscriber",
        "import",
        "--db",
        db,
        csv.to_str().unwrap(),
    ]));
    assert!(out.contains("imported 2"), "{out}");
    // Importing again: all or nothing, refused.
    mbms()
        .args([
            "bsf",
            "subscriber",
            "import",
            "--db",
            db,
            csv.to_str().unwrap(),
        ])
        .assert()
        .failure();

    let list = stdout(mbms().args(["bsf", "subscriber", "list", "--db", db]));
    assert!(list.contains("a@home1.net") && list.contains("b@home1.net"));
    assert!(list.contains("b9b9"));
    assert!(
        !list.contains("c@home1.net"),
        "bad import left rows: {list}"
    );

    stdout(mbms().args([
        "bsf",
        "subscriber",
        "remove",
        "--db",
        db,
        "--impi",
        "a@home1.net",
    ]));
    mbms()
        .args([
            "bsf",
            "subscriber",
            "remove",
            "--db",
            db,
            "--impi",
            "a@home1.net",
        ])
        .assert_failure_with("unknown subscriber");
    let list = stdout(mbms().args(["bsf", "subscriber", "list", "--db", db]));
    assert!(!list.contains("a@home1.net") && list.contains(IMPI));
}

#[test]
fn bsf_process_and_ue_bootstrap_command() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/bsf.toml");
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("mbms"))
        .args(["bsf", "--config", example, "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(rest) = line.split("listen=127.0.0.1:").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let url = format!("http://127.0.0.1:{port}");
    let run = || {
        let mut c = mbms();
        c.args([
            "ue",
            "bootstrap",
            "--bsf",
            &url,
            "--impi",
            IMPI,
            "--k",
            K,
            "--opc",
            OPC,
        ]);
        c
    };
    let text = stdout(&mut run());
    assert!(
        text.contains("B-TID:") && text.contains("@bsf.home1.net"),
        "{text}"
    );
    assert!(!text.contains("MRK"), "secrets only with --show-secrets");
    let json = stdout(run().args(["--json", "--show-secrets", "--sqn", "1"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["btid"].as_str().unwrap().ends_with("@bsf.home1.net"));
    assert_eq!(v["mrk"].as_str().unwrap().len(), 64);
    assert_eq!(v["naf"], "bmsc.home1.net");
    // A wrong K: clear message, non-zero exit.
    mbms()
        .args([
            "ue",
            "bootstrap",
            "--bsf",
            &url,
            "--impi",
            IMPI,
            "--k",
            "00000000000000000000000000000000",
            "--opc",
            OPC,
        ])
        .assert_failure_with("network authentication failure");

    // Graceful stop on SIGTERM.
    #[cfg(unix)]
    {
        let status = StdCommand::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        assert!(exit.success(), "{exit:?}");
    }
    #[cfg(not(unix))]
    {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(dir.path().join("bsf.db").exists());
}
