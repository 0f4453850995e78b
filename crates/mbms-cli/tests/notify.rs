//! `Type=notify` readiness (the systemd units of packaging/deb): `mbms bsf`
//! and `mbms bmsc` send `READY=1` with their PID on `$NOTIFY_SOCKET` once
//! they serve, `STOPPING=1` on SIGTERM, and exit 0.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `mbms ARGS` in `dir` under a fake service manager; checks the
/// notifications and the exit status of a SIGTERM stop.
fn notifies_ready_then_stopping(dir: &std::path::Path, args: &[&str]) {
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let log_path = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args(args)
        .current_dir(dir)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut buf = [0u8; 512];
    let n = match sock.recv(&mut buf) {
        Ok(n) => n,
        Err(e) => {
            let _ = child.kill();
            panic!("no READY=1 within 60 s ({e}); {args:?} wrote:\n{}", log());
        }
    };
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert!(
        msg.lines().any(|l| l == format!("MAINPID={}", child.id())),
        "{msg:?}"
    );
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let n = sock.recv(&mut buf).expect("no STOPPING=1 after SIGTERM");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{args:?}");
}

#[test]
fn bsf_notifies_readiness_and_stops_with_0() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!("{EXAMPLES}/bsf.toml");
    notifies_ready_then_stopping(
        dir.path(),
        &["bsf", "--config", &cfg, "--listen", "127.0.0.1:0"],
    );
}

#[test]
fn bmsc_notifies_readiness_and_stops_with_0() {
    let dir = tempfile::tempdir().unwrap();
    // The example, with its fixed RTP input port moved to a free one.
    let cfg = std::fs::read_to_string(format!("{EXAMPLES}/bmsc.toml"))
        .unwrap()
        .replace("127.0.0.1:5004", &format!("127.0.0.1:{}", free_udp_port()));
    let cfg_path = dir.path().join("bmsc.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    notifies_ready_then_stopping(
        dir.path(),
        &[
            "bmsc",
            "--config",
            cfg_path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--mikey-listen",
            "127.0.0.1:0",
        ],
    );
}
