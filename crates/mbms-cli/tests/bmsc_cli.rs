//! `mbms bsf` and `mbms bmsc` as real processes from the example
//! configurations, `mbms ue bootstrap --show-secrets` for the credentials,
//! a registration with `curl --digest`, the MSK push over UDP, a SIGKILL
//! of the BM-SC and a restart that resumes the push with a higher counter.

use std::net::UdpSocket;
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine as _;

const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
const IMPI: &str = "user1_private@home1.net";

fn mbms() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin("mbms"))
}

/// Starts `mbms ARGS` in `dir` and returns the child and the port that
/// follows `marker` in its log.
fn spawn(dir: &std::path::Path, args: &[&str], marker: &str) -> (Child, u16) {
    let bin = assert_cmd::cargo::cargo_bin("mbms");
    let (child, line) = mbms_test_support::spawn_until(&bin, dir, args, marker);
    let port = line
        .split(marker)
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port after {marker:?} in {line:?}"));
    (child, port)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn recv_msk(sock: &UdpSocket) -> u32 {
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("an MSK message arrives");
    let env = mbms::messages::MskEnvelope::parse(&buf[..n]).unwrap();
    assert_eq!(env.muk_id.idi, "bmsc.home1.net");
    env.counter
}

#[test]
fn bsf_and_bmsc_from_the_examples_with_curl_digest() {
    if Command::new("curl").arg("--version").output().is_err() {
        mbms_test_support::skip("curl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let (mut bsf, bsf_port) = spawn(
        dir.path(),
        &[
            "bsf",
            "--config",
            &format!("{examples}/bsf.toml"),
            "--listen",
            "127.0.0.1:0",
        ],
        "listen=127.0.0.1:",
    );
    // The example BM-SC configuration, pointed at this BSF and with the
    // session ports moved to free ones.
    let cfg = std::fs::read_to_string(format!("{examples}/bmsc.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{bsf_port}"))
        .replace("127.0.0.1:5004", &format!("127.0.0.1:{}", free_udp_port()));
    let cfg_path = dir.path().join("bmsc.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let bmsc_args = [
        "bmsc",
        "--config",
        cfg_path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--mikey-listen",
        "127.0.0.1:0",
    ];
    let (mut bmsc, port) = spawn(dir.path(), &bmsc_args, "http=127.0.0.1:");
    let url = format!("http://127.0.0.1:{port}");

    // The UE's credentials, as `mbms ue bootstrap --show-secrets` prints them.
    let out = mbms()
        .args([
            "ue",
            "bootstrap",
            "--bsf",
            &format!("http://127.0.0.1:{bsf_port}"),
            "--impi",
            IMPI,
            "--k",
            K,
            "--opc",
            OPC,
            "--json",
            "--show-secrets",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let btid = v["btid"].as_str().unwrap().to_owned();
    let mrk = hex::decode(v["mrk"].as_str().unwrap()).unwrap();
    let password = base64::engine::general_purpose::STANDARD.encode(mrk);

    let ue = UdpSocket::bind("127.0.0.1:0").unwrap();
    ue.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let reg_url = format!(
        "{url}/keymanagement?requesttype=register&mikey-port={}",
        ue.local_addr().unwrap().port()
    );
    let body = "<mbmsRegister xmlns=\"urn:3GPP:metadata:2005:MBMS:register\"><serviceId>urn:mbms:service:news</serviceId></mbmsRegister>";
    let text = curl(&[
        "-sS",
        "--digest",
        "-u",
        &format!("{btid}:{password}"),
        "-H",
        "Content-Type: application/mbms-register+xml",
        "--data-binary",
        body,
        &reg_url,
    ]);
    assert!(
        text.contains("serviceId=\"urn:mbms:service:news\" status=\"200\""),
        "{text}"
    );
    // The push arrives (the UE does not acknowledge: it will be resent).
    let first = recv_msk(&ue);

    // A crash: SIGKILL, then a restart on the same database.
    bmsc.kill().unwrap();
    bmsc.wait().unwrap();
    let (mut bmsc, port) = spawn(dir.path(), &bmsc_args, "http=127.0.0.1:");
    let url = format!("http://127.0.0.1:{port}");
    let regs = curl(&[
        "-sS",
        "-H",
        "Authorization: Bearer admin-demo-token",
        &format!("{url}/admin/v1/registrations"),
    ]);
    assert!(regs.contains(IMPI), "the registration survived: {regs}");
    // Pushes resume, with counters above every counter used before.
    let mut later = recv_msk(&ue);
    while later <= first {
        later = recv_msk(&ue);
    }
    let metrics = curl(&["-sS", &format!("{url}/metrics")]);
    assert!(metrics.contains("bmsc_registered_ues 1"), "{metrics}");

    for child in [&mut bmsc, &mut bsf] {
        #[cfg(unix)]
        {
            let status = Command::new("kill")
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
    }
    assert!(dir.path().join("bmsc.db").exists());
    assert!(dir.path().join("bmsc-download/in").is_dir());
}
