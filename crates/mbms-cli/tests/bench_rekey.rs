//! `mbms bench rekey` over the real binaries: the BSF and the BM-SC as
//! child processes, a UE swarm, one rotation; every UE must end holding
//! the new MSK (also with 30 % of the datagrams lost in each direction).
//! No timing is asserted.

use std::process::Command;

fn rekey(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args(["bench", "rekey", "--json", "--timeout", "120"])
        .args(args)
        .output()
        .expect("run mbms bench rekey");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mbms bench rekey {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn every_ue_holds_the_rotated_msk() {
    let r = rekey(&["--ues", "200"]);
    assert_eq!(r["schema"], "mbms-bench-rekey/1");
    assert_eq!(r["ues"], 200);
    assert_eq!(r["every_ue_holds_new_msk"], true);
    assert_eq!(r["rekey"]["ues_holding"], 200);
    // One delivery per UE, each acknowledged once and accepted.
    assert!(r["rekey"]["messages_sent"].as_u64().unwrap() >= 200, "{r}");
    assert!(r["rekey"]["acks_accepted"].as_u64().unwrap() >= 200, "{r}");
    assert_eq!(r["rekey"]["swarm"]["refused"], 0, "{r}");
    assert!(r["setup"]["bootstraps_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["memory"]["bmsc_rss_after_kib"].as_u64().unwrap() > 0);
}

#[test]
fn every_ue_holds_the_rotated_msk_with_loss() {
    let r = rekey(&[
        "--ues",
        "200",
        "--loss",
        "0.3",
        "--retransmit-initial-ms",
        "300",
        "--request-after",
        "2",
        "--seed",
        "7",
    ]);
    assert_eq!(r["every_ue_holds_new_msk"], true, "{r}");
    assert_eq!(r["rekey"]["ues_holding"], 200);
    let swarm = &r["rekey"]["swarm"];
    assert!(swarm["dropped_in"].as_u64().unwrap() > 0, "{r}");
    assert!(swarm["dropped_out"].as_u64().unwrap() > 0, "{r}");
    // Lost messages were made up for by retransmissions or MSK requests.
    let retx = r["rekey"]["retransmissions"].as_u64().unwrap();
    let requests = swarm["msk_requests"].as_u64().unwrap();
    assert!(retx + requests > 0, "{r}");
}
