//! `mbms demo` keeps its secrets in a 0700 temporary folder and removes it
//! when it is stopped by SIGINT or SIGTERM, not only when it ends (issue 11,
//! point 14).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `mbms-demo-*` folder the demo made under `tmp`, once it holds the
/// BSF database (the run has really started).
fn demo_folder(tmp: &Path) -> Option<PathBuf> {
    std::fs::read_dir(tmp)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mbms-demo-"))
                && p.join("bsf.db").exists()
        })
}

fn stop_demo_with(signal: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args(["demo", "--ues", "2", "--free-ports"])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let folder = loop {
        if let Some(f) = demo_folder(tmp.path()) {
            break f;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the demo ended before its folder appeared"
        );
        assert!(Instant::now() < deadline, "no demo folder under {tmp:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{folder:?} holds keys");
    }
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not stop within 30 s of {signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("stopped by a signal"), "{err}");
    assert!(!folder.exists(), "{folder:?} is still there after {signal}");
}

#[test]
fn sigterm_removes_the_demo_folder() {
    stop_demo_with("-TERM");
}

#[test]
fn sigint_removes_the_demo_folder() {
    stop_demo_with("-INT");
}
