//! Issue 13 over the real binaries and the machine's PostgreSQL
//! (`MBMS_TEST_POSTGRES_URL`, set by `.ci/run`; skipped without it): three
//! `mbms bmsc` processes on one fresh database (created by the harness from
//! the URL and dropped at the end) with the real BSF and a UE swarm whose
//! UEs register and ask round robin over the instances. In the middle of a
//! rotation the key group's anchor (`GET /admin/v1/cluster`) gets SIGKILL
//! and stays dead; the survivors must take over its key group and its UEs:
//! every UE ends holding the new MSK active, no UE's MGV-F sees a (MUK,
//! counter) pair twice or a counter going backwards, and every UE is
//! charged exactly once whichever instance saw its acknowledgement.
//! No timing is asserted (the failover time is reported, not checked).

use std::process::{Command, Stdio};

fn postgres_url() -> Option<String> {
    match std::env::var("MBMS_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            mbms_test_support::skip("scale-out: MBMS_TEST_POSTGRES_URL not set");
            None
        }
    }
}

/// Databases named after the harness process `pid` still on the server.
fn leftover_databases(url: &str, pid: u32) -> Vec<String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.query(
            "SELECT datname FROM pg_database WHERE datname LIKE $1",
            &[&format!("mbms_bench_{pid}_%")],
        )
        .expect("query")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
    })
    .join()
    .expect("thread")
}

#[test]
fn kill_9_of_the_anchor_among_three_instances_loses_nothing() {
    let Some(url) = postgres_url() else { return };
    let n: u64 = 600;
    let child = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args(["bench", "rekey", "--json", "--timeout", "180"])
        .args(["--ues", &n.to_string()])
        .args(["--bmsc-instances", "3", "--postgres", &url])
        .args(["--kill-bmsc-at", "0.3", "--lease-ms", "2000"])
        .args(["--retransmit-initial-ms", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mbms bench rekey");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mbms bench rekey --bmsc-instances 3 failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(r["bmsc_instances"], 3, "{r}");
    assert_eq!(r["store"], "postgres", "{r}");
    assert_eq!(r["every_ue_holds_new_msk"], true, "{r}");
    assert_eq!(r["rekey"]["ues_holding"], n, "{r}");
    // The requests were spread: every instance worked.
    assert_eq!(r["msk_request"]["errors"], 0, "{r}");
    let per_instance = r["msk_request"]["cpu"]["bmsc_instances_s"]
        .as_array()
        .expect("per-instance CPU");
    assert_eq!(per_instance.len(), 3, "{r}");
    assert!(
        per_instance.iter().all(|c| c.as_f64().unwrap() > 0.0),
        "{r}"
    );

    let k = &r["kill"];
    assert_eq!(k["counter_violations"], 0, "{r}");
    assert_eq!(r["rekey"]["swarm"]["counter_violations"], 0, "{r}");
    assert_eq!(r["rekey"]["swarm"]["refused"], 0, "{r}");
    assert_eq!(k["ues_active"], n, "{r}");
    assert_eq!(k["charging_records"], n, "{r}");
    assert_eq!(k["ues_charged_once"], n, "{r}");
    assert_eq!(k["ues_charged_twice"], 0, "{r}");
    let f = &k["failover"];
    assert_eq!(f["instances"], 3, "{r}");
    assert!(
        f["killed_instance"]
            .as_str()
            .is_some_and(|i| i.starts_with("bmsc-")),
        "{r}"
    );
    // A survivor became the key group's anchor.
    assert!(f["takeover_s"].as_f64().is_some(), "{r}");
    assert!(f["every_ue_active_s"].as_f64().unwrap() > 0.0, "{r}");
    // The kill landed mid-rotation: the survivors finished it.
    assert!(k["holders_at_kill"].as_u64().unwrap() < n, "{r}");
    assert_eq!(k["mid_rotation"], true, "{r}");
    assert_eq!(k["passed"], true, "{r}");

    // The harness's database is gone.
    assert_eq!(leftover_databases(&url, pid), Vec::<String>::new());
}

/// The same without waiting for the instances to share out the UE shards:
/// the UEs register (and the 4-way procedure of the charging key group
/// runs) while the starting instances still hand shards over (issue 13:
/// UEs registered then once stalled). Every UE must end with the new MSK
/// active, charged once, no counter twice.
#[test]
fn ues_starting_while_the_instances_rebalance_are_all_served() {
    let Some(url) = postgres_url() else { return };
    let n: u64 = 300;
    let out = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args(["bench", "rekey", "--json", "--timeout", "180"])
        .args(["--ues", &n.to_string(), "--no-wait-settled"])
        .args(["--bmsc-instances", "3", "--postgres", &url])
        .args(["--kill-bmsc-at", "0.3", "--lease-ms", "1500"])
        .args(["--retransmit-initial-ms", "500"])
        .output()
        .expect("run mbms bench rekey");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mbms bench rekey --no-wait-settled failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(r["every_ue_holds_new_msk"], true, "{r}");
    let k = &r["kill"];
    assert_eq!(k["counter_violations"], 0, "{r}");
    assert_eq!(k["ues_active"], n, "{r}");
    assert_eq!(k["ues_charged_once"], n, "{r}");
    assert_eq!(k["ues_charged_twice"], 0, "{r}");
    assert_eq!(k["passed"], true, "{r}");
}

#[test]
fn several_instances_need_postgresql() {
    let out = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args(["bench", "rekey", "--ues", "2", "--bmsc-instances", "2"])
        .output()
        .expect("run mbms bench rekey");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--postgres"), "{err}");
}

/// `mbms demo --bmsc-instances 3`: the whole demo scenario (the 12
/// procedures of the single-instance demo and the two cluster checks) on
/// three `mbms bmsc` processes behind the demo's load balancer, the anchor
/// of key group 1 killed mid-rotation; the merged pcap, the key log and
/// the report page are written and every MIKEY datagram of the capture
/// (the killed instance's up to its kill included) opened with the key
/// log.
#[test]
fn demo_on_three_instances_survives_the_anchor_s_kill() {
    let Some(url) = postgres_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (pcap, keylog, report) = (
        dir.path().join("d.pcap"),
        dir.path().join("d.keys"),
        dir.path().join("d.html"),
    );
    let n: u64 = 12;
    let child = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args(["demo", "--json", "--free-ports", "--bmsc-instances", "3"])
        .args(["--ues", &n.to_string()])
        .args(["--postgres", &url, "--lease-ms", "2000"])
        .arg("--pcap")
        .arg(&pcap)
        .arg("--keylog")
        .arg(&keylog)
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mbms demo");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mbms demo --bmsc-instances 3 failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(r["schema"], "mbms-demo/1");
    assert_eq!(r["success"], true, "{r}");
    // Every procedure of the single demo, then the cluster checks.
    let names: Vec<&str> = r["procedures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["procedure"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = mbms_demo::PROCEDURES.to_vec();
    let check = want.pop().unwrap();
    want.extend(mbms_demo::CLUSTER_PROCEDURES);
    want.push(check);
    assert_eq!(names, want, "{r}");
    for p in r["procedures"].as_array().unwrap() {
        assert_eq!(p["succeeded"], p["total"], "{p}");
        assert!(p["total"].as_u64().unwrap() > 0, "{p}");
    }
    let c = &r["cluster"];
    assert_eq!(c["instances"], 3, "{r}");
    // The kill landed in the middle of the rotation.
    let holders = c["holders_at_kill"].as_u64().unwrap();
    assert!(holders < n, "{r}");
    assert!(
        c["killed_instance"].as_str().unwrap().starts_with("bmsc-"),
        "{r}"
    );
    assert!(c["takeover_ms"].as_u64().is_some(), "{r}");
    assert_eq!(c["counter_reuses"], 0, "{r}");
    // Every instance sent MSK messages (the killed one before its kill),
    // and the load balancer spread the Ua connections over all three.
    let per = c["msk_messages_per_instance"].as_array().unwrap();
    assert_eq!(per.len(), 3, "{r}");
    assert!(per.iter().all(|m| m.as_u64().unwrap() > 0), "{r}");
    let conns = c["ua_connections_per_instance"].as_array().unwrap();
    assert_eq!(conns.len(), 3, "{r}");
    assert!(conns.iter().all(|m| m.as_u64().unwrap() > 0), "{r}");
    // The capture and the key log, opened by the self-check.
    let cap = &r["capture"];
    assert!(cap["mikey"].as_u64().unwrap() > 0, "{r}");
    assert!(cap["srtp"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(cap["mikey_opened"], cap["mikey"], "{r}");
    assert!(std::fs::metadata(&pcap).unwrap().len() > 24);
    let keys = std::fs::read_to_string(&keylog).unwrap();
    assert!(keys.lines().filter(|l| l.starts_with("MUK ")).count() >= n as usize);
    assert!(keys.lines().any(|l| l.starts_with("MSK ")));
    assert!(keys.lines().any(|l| l.starts_with("MTK ")));
    // The report page.
    let page = std::fs::read_to_string(&report).unwrap();
    assert!(page.contains("key group rotation"), "report page");
    // The run's database is gone.
    assert_eq!(leftover_databases(&url, pid), Vec::<String>::new());
}

#[test]
fn the_demo_on_several_instances_needs_postgresql() {
    let out = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args(["demo", "--ues", "2", "--bmsc-instances", "2"])
        .output()
        .expect("run mbms demo");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--postgres"), "{err}");
}
