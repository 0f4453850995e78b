//! `mbms ue run` as a real process against an in-process BSF and BM-SC over
//! loopback, `mbms ue status` while it runs and after it stopped, and the
//! command's refusals.

use std::io::{BufRead as _, BufReader};
use std::process::{Command as StdCommand, Stdio};
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;

const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
const IMPI: &str = "user1_private@home1.net";
const NEWS: &str = "urn:mbms:service:news";

fn mbms() -> Command {
    Command::cargo_bin("mbms").unwrap()
}

async fn start_bsf(dir: &std::path::Path) -> bsf::RunningBsf {
    use bsf::Store as _;
    let store = bsf::SqliteStore::open(&dir.join("bsf.db")).unwrap();
    store
        .provision_subscribers(&[bsf::Subscriber {
            impi: IMPI.into(),
            k: gba::SubscriberKey::from_hex(K).unwrap(),
            opc: gba::Opc::from_hex(OPC).unwrap(),
            sqn: gba::Sqn48::ZERO,
            amf: [0x80, 0x00],
            gba_type: bsf::GbaType::GbaMe,
        }])
        .unwrap();
    bsf::Bsf::new(
        bsf::BsfConfig::new("bsf.home1.net", bsf::ZnToken::new("zn-token")).settings(),
        Arc::new(store),
    )
    .spawn("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap()
}

async fn start_bmsc(dir: &std::path::Path, bsf_url: &str) -> bmsc::RunningBmsc {
    let text = format!(
        r#"
fqdn = "bmsc.home1.net"
listen = "127.0.0.1:0"
mikey_listen = "127.0.0.1:0"
key_domain = "001-01"
admin_token = "admin-test-token"
[bsf]
url = "{bsf_url}"
zn_token = "zn-token"
[[key_group]]
id = 1
[[service]]
id = "{NEWS}"
key_groups = [1]
open = true
"#
    );
    let cfg = bmsc::BmscConfig::parse(&text).unwrap();
    let db = dir.join("bmsc.db");
    let store = tokio::task::spawn_blocking(move || {
        Arc::new(bmsc::store::SqliteStore::open(&db).unwrap()) as Arc<dyn bmsc::store::Store>
    })
    .await
    .unwrap();
    bmsc::start(&cfg, store).await.unwrap()
}

fn status(dir: &std::path::Path, json: bool) -> String {
    let mut c = mbms();
    c.args(["ue", "status", "--config"])
        .arg(dir.join("ue.toml"));
    if json {
        c.arg("--json");
    }
    String::from_utf8(c.assert().success().get_output().stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ue_run_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bsf = start_bsf(d).await;
    let bmsc = start_bmsc(d, &bsf.url()).await;
    std::fs::write(
        d.join("ue.toml"),
        format!(
            r#"
state_dir = "state"
services = "services.toml"
mikey_listen = "127.0.0.1:0"
[identity]
impi = "{IMPI}"
k = "{K}"
opc = "{OPC}"
bsf = "{}"
bsf_fqdn = "bsf.home1.net"
"#,
            bsf.url()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("services.toml"),
        format!(
            r#"
[[service]]
id = "{NEWS}"
key_management_uri = "{}/keymanagement"
bmsc_fqdn = "bmsc.home1.net"
key_domain = "001-01"
key_groups = [1]
"#,
            bmsc.url()
        ),
    )
    .unwrap();

    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("mbms"))
        .args(["ue", "run", "--config"])
        .arg(d.join("ue.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(d.join("ue.stderr")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::task::spawn_blocking(move || {
        let first = lines.next().unwrap().unwrap();
        // Keep reading, so the UE's standard output stays open.
        std::thread::spawn(move || lines.for_each(drop));
        first
    })
    .await
    .unwrap();
    assert!(
        first.starts_with("UE running: MIKEY on 127.0.0.1:"),
        "{first}"
    );

    // The BM-SC pushes the current and the next MSK after registration.
    let mut text = String::new();
    for _ in 0..100 {
        text = status(d, false);
        if text.matches("active").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains("UE: running"), "{text}");
    assert!(
        text.contains(&format!("{NEWS}: registered (status 200")),
        "{text}"
    );
    assert!(
        text.contains("00F110/00010001 (key group 1, key number 1)"),
        "{text}"
    );
    assert!(
        text.contains("00F110/00010002 (key group 1, key number 2)"),
        "{text}"
    );
    assert!(!text.to_lowercase().contains("muk:"), "no key printed");

    // Stop with SIGTERM, deregistering (--deregister-on-exit not given: the
    // registration stays).
    let pid = child.id().to_string();
    assert!(StdCommand::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let st = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        st.success(),
        "{st}: {}",
        std::fs::read_to_string(d.join("ue.stderr")).unwrap_or_default()
    );
    let v: serde_json::Value = serde_json::from_str(&status(d, true)).unwrap();
    assert_eq!(v["format"], "mbms-ue-status/1");
    assert_eq!(v["running"], false);
    assert_eq!(v["registrations"][0]["state"], "registered");
    assert_eq!(v["msks"].as_array().unwrap().len(), 2);
    assert!(v["runtime"]["counters"]["acks_sent"].as_u64().unwrap() >= 2);
    let raw = std::fs::read_to_string(d.join("state/status.json")).unwrap();
    assert!(!raw.contains("\"ks\""));

    // Issue 11 point 6: the MGV-S is lost beside the B-TID and MUK. The UE
    // refuses to start (exit 1), naming the file, instead of resetting its
    // replay counters; nothing is changed.
    let btid = v["btid"].as_str().unwrap().to_owned();
    std::fs::remove_file(d.join("state/mgvs.json")).unwrap();
    let out = mbms()
        .args(["ue", "run", "--config"])
        .arg(d.join("ue.toml"))
        .timeout(Duration::from_secs(60))
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(
        err.contains("mgvs.json") && err.contains("--start-over"),
        "{err}"
    );
    assert!(!d.join("state/mgvs.json").exists());
    assert!(d.join("state/gba.json").exists());

    // Told to start over, it discards the identity and bootstraps again.
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("mbms"))
        .args(["ue", "run", "--start-over", "--config"])
        .arg(d.join("ue.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(d.join("ue2.stderr")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = tokio::task::spawn_blocking(move || {
        let first = lines.next().unwrap().unwrap();
        std::thread::spawn(move || lines.for_each(drop));
        first
    })
    .await
    .unwrap();
    assert!(started.starts_with("UE running"), "{started}");
    let v: serde_json::Value = serde_json::from_str(&status(d, true)).unwrap();
    assert_ne!(v["btid"].as_str().unwrap(), btid, "bootstrapped again");
    let pid = child.id().to_string();
    assert!(StdCommand::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let st = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        st.success(),
        "{st}: {}",
        std::fs::read_to_string(d.join("ue2.stderr")).unwrap_or_default()
    );
    assert!(d.join("state/mgvs.json").exists());
    drop(bmsc);
}

#[test]
fn ue_status_and_run_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let out = mbms()
        .args(["ue", "status", "--state-dir"])
        .arg(dir.path().join("nothing"))
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("no state directory"));
    std::fs::write(dir.path().join("ue.toml"), "state_dir = 1\n").unwrap();
    let out = mbms()
        .args(["ue", "run", "--config"])
        .arg(dir.path().join("ue.toml"))
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8(out).unwrap().contains("invalid"));
}
