//! `--log-format json` through the real binary: `mbms bsf`, `mbms bmsc`
//! and `mbms ue run` (the example configurations on free loopback ports)
//! bootstrap, register and stop; every line each writes on standard error
//! is one JSON object with `timestamp`, `level`, `target` and `fields`
//! (with `message`), at DEBUG for our crates. No secret of the
//! configurations or of the UE's state appears, and the one-per-request
//! lines (Ub bootstrapped, Zn keys delivered, Ua) are DEBUG, not INFO.

use std::io::{BufRead as _, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
const LOG_FILTER: &str = "info,bsf=debug,bmsc=debug,ue=debug,mbms_service=debug";

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A service started with `--log-format json`; its log lines arrive on
/// `lines` and are all returned by [`Service::stop`].
struct Service {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: Option<JoinHandle<Vec<String>>>,
}

impl Service {
    fn start(name: &'static str, dir: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mbms"))
            .args(args)
            .args(["--log-format", "json"])
            .current_dir(dir)
            .env("RUST_LOG", LOG_FILTER)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap();
                let _ = tx.send(line.clone());
                all.push(line);
            }
            all
        });
        Service {
            name,
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// The first log object whose message starts with `message`.
    fn wait_for(&self, message: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("{}: no {message:?} log line: {e}", self.name));
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", self.name));
            if v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
            {
                return v;
            }
        }
    }

    /// SIGTERM, exit status 0, every line it logged.
    fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{} did not stop", self.name);
            std::thread::sleep(Duration::from_millis(20));
        };
        let lines = self.reader.take().unwrap().join().unwrap();
        assert_eq!(status.code(), Some(0), "{}: {lines:#?}", self.name);
        lines
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port_of(v: &serde_json::Value, field: &str) -> u16 {
    v["fields"][field]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

#[test]
fn bsf_bmsc_and_ue_log_one_json_object_per_line_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let bsf = Service::start(
        "bsf",
        d,
        &[
            "bsf",
            "--config",
            &format!("{EXAMPLES}/bsf.toml"),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let bsf_port = port_of(&bsf.wait_for("BSF listening"), "listen");

    let bmsc_toml = std::fs::read_to_string(format!("{EXAMPLES}/bmsc.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{bsf_port}"))
        .replace("127.0.0.1:5004", &format!("127.0.0.1:{}", free_udp_port()));
    std::fs::write(d.join("bmsc.toml"), bmsc_toml).unwrap();
    let bmsc = Service::start(
        "bmsc",
        d,
        &[
            "bmsc",
            "--config",
            "bmsc.toml",
            "--listen",
            "127.0.0.1:0",
            "--mikey-listen",
            "127.0.0.1:0",
        ],
    );
    let bmsc_port = port_of(&bmsc.wait_for("BM-SC running"), "http");

    // The example UE, on free ports, with the news service without its
    // sessions (their example ports are fixed).
    let ue_toml = std::fs::read_to_string(format!("{EXAMPLES}/ue.toml"))
        .unwrap()
        .replace("127.0.0.1:2269", "127.0.0.1:0")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{bsf_port}"))
        .replace("news-service.toml", "services.toml");
    std::fs::write(d.join("ue.toml"), ue_toml).unwrap();
    std::fs::write(
        d.join("services.toml"),
        format!(
            r#"
[[service]]
id = "urn:mbms:service:news"
key_management_uri = "http://127.0.0.1:{bmsc_port}/keymanagement"
bmsc_fqdn = "bmsc.home1.net"
key_domain = "001-01"
key_groups = [1]
"#
        ),
    )
    .unwrap();
    let ue = Service::start("ue", d, &["ue", "run", "--config", "ue.toml"]);
    let reg = ue.wait_for("registration");
    assert_eq!(reg["fields"]["status"], 200, "{reg}");
    assert_eq!(reg["level"], "INFO");
    assert_eq!(reg["target"], "ue::km");

    let ue_lines = ue.stop();
    let bmsc_lines = bmsc.stop();
    let bsf_lines = bsf.stop();

    let ks = {
        let gba: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("ue-state/gba.json")).unwrap())
                .unwrap();
        gba["ks"].as_str().expect("Ks in gba.json").to_owned()
    };
    let secrets = [K, OPC, "zn-demo-token", "admin-demo-token", ks.as_str()];
    let mut levels = Vec::new();
    for (name, lines) in [
        ("bsf", &bsf_lines),
        ("bmsc", &bmsc_lines),
        ("ue", &ue_lines),
    ] {
        assert!(lines.len() >= 3, "{name}: {lines:#?}");
        for line in lines.iter() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: not one JSON object ({e}): {line}"));
            let obj = v.as_object().unwrap_or_else(|| panic!("{name}: {line}"));
            let ts = obj["timestamp"].as_str().unwrap();
            assert!(ts.ends_with('Z') && ts.contains('T'), "{line}");
            let level = obj["level"].as_str().unwrap();
            assert!(
                ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
                "{line}"
            );
            assert!(
                obj["target"].as_str().is_some_and(|t| !t.is_empty()),
                "{line}"
            );
            let message = obj["fields"]["message"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no fields.message: {line}"));
            for s in secrets {
                assert!(
                    !line.to_lowercase().contains(&s.to_lowercase()),
                    "{name} logged a secret: {line}"
                );
            }
            levels.push((name, message.to_owned(), level.to_owned()));
        }
    }
    // One line per request: DEBUG.
    for (service, message) in [
        ("bsf", "Ub: bootstrapped"),
        ("bsf", "Zn: NAF keys delivered"),
        ("bmsc", "Ua"),
    ] {
        let found: Vec<_> = levels
            .iter()
            .filter(|(n, m, _)| *n == service && m == message)
            .collect();
        assert!(!found.is_empty(), "{service}: no {message:?} line");
        assert!(found.iter().all(|(_, _, l)| l == "DEBUG"), "{found:?}");
    }
    // Start and stop stay INFO.
    for (service, message) in [("bsf", "BSF stopped"), ("bmsc", "BM-SC stopped")] {
        assert!(
            levels
                .iter()
                .any(|(n, m, l)| *n == service && m == message && l == "INFO"),
            "{service}: {message}"
        );
    }
}
