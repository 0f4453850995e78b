//! The demo scenario with 20 UEs through the library: every procedure
//! succeeds for every UE, the pcap opens in tshark without malformed
//! packets (when tshark is installed) and every MIKEY datagram of the
//! capture opens with the key log (the run's own check, and here again with
//! `mikey::open_psk` for the KEMAC messages, keys picked from the log).
//! Hermetic: the runs use free ports (or fall back to them), and tshark is
//! told the ports the run really used (issue 14, point 1).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use mbms_demo::{run, DemoOptions, DemoPorts, DemoReport, Progress};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_20_ues_succeeds_and_its_capture_opens() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("demo.pcap");
    let keylog = dir.path().join("demo.keys");
    // A key log that exists with a wide mode ends up 0600 (issue 11, 15).
    std::fs::write(&keylog, b"old\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&keylog, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let opts = DemoOptions {
        ues: 20,
        pcap: Some(pcap.clone()),
        keylog: Some(keylog.clone()),
        work_dir: None,
        ports: DemoPorts::DEFAULT,
        // Never the default ports: another suite may run its demo now.
        free_ports: true,
        ..Default::default()
    };
    let progress = |_p: Progress| {};
    let report = run(opts, &progress).await.unwrap();
    let table = mbms_demo::render_table(&report);
    assert!(report.success, "{table}");
    assert_eq!(report.procedures.len(), mbms_demo::PROCEDURES.len());
    for p in &report.procedures {
        assert!(p.ok(), "{}: {table}", p.procedure);
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["schema"], "mbms-demo/1");
    assert_eq!(json["ues"], 20);
    assert!(report.capture.srtp > 0 && report.capture.mikey > 0);
    assert_eq!(report.capture.mikey_opened, report.capture.mikey);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&keylog).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key log holds keys");
    }
    // The key log: MUK, MSK and MTK lines in the documented format.
    let (muks, msks) = keys_of(&keylog);
    assert!(muks.len() >= 20, "a MUK per UE");
    assert!(!msks.is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&keylog).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key log is private");
    }

    assert!(!report.port_fallback, "free ports were asked for");
    tshark_check(&report, &pcap, &muks, &msks);
}

/// Issue 14, point 1: with one of the wanted ports taken (as when another
/// program held 127.0.1.1:5008, the first UE's MTK port) the demo falls
/// back to free ports, says which, and tshark decodes the capture with
/// them. The wanted ports are this test's own free ones, one of them held
/// here: nothing depends on 2269/5008/5006 being free or taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_falls_back_and_the_capture_still_decodes() {
    let port = |s: &std::net::UdpSocket| s.local_addr().unwrap().port();
    let bind = |ip| std::net::UdpSocket::bind((ip, 0)).unwrap();
    // Held for the whole run: the wanted MTK port on the first UE's address.
    let (hold, wanted) = loop {
        let hold = bind(mbms_demo::ue_ip(0));
        let (m, s) = (bind(Ipv4Addr::LOCALHOST), bind(Ipv4Addr::LOCALHOST));
        let wanted = DemoPorts {
            mikey: port(&m),
            mtk: port(&hold),
            srtp: port(&s),
        };
        if wanted.mtk != wanted.mikey && wanted.mtk != wanted.srtp {
            break (hold, wanted);
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("demo.pcap");
    let keylog = dir.path().join("demo.keys");
    let opts = DemoOptions {
        ues: 3,
        pcap: Some(pcap.clone()),
        keylog: Some(keylog.clone()),
        work_dir: None,
        ports: wanted,
        free_ports: false,
        ..Default::default()
    };
    let notes = std::sync::Mutex::new(Vec::new());
    let progress = |p: Progress| {
        if let Progress::Note(m) = p {
            notes.lock().unwrap().push(m);
        }
    };
    let report = run(opts, &progress).await.unwrap();
    drop(hold);
    let table = mbms_demo::render_table(&report);
    assert!(report.success, "{table}");
    assert!(report.port_fallback, "{table}");
    assert_ne!(report.mtk_port, wanted.mtk);
    let ports = [report.mikey_port, report.mtk_port, report.srtp_port];
    assert!(
        ports.iter().all(|p| *p != 0) && ports[0] != ports[1] && ports[1] != ports[2],
        "{ports:?}"
    );
    // The note, the table and the JSON name the ports really used.
    let hint = format!("-d udp.port=={},mikey", report.mtk_port);
    let notes = notes.into_inner().unwrap();
    assert!(notes.iter().any(|n| n.contains(&hint)), "{notes:?}");
    assert!(table.contains(&hint), "{table}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["mikey_port"], report.mikey_port);
    assert_eq!(json["mtk_port"], report.mtk_port);
    assert_eq!(json["srtp_port"], report.srtp_port);
    assert_eq!(json["port_fallback"], true);
    let (muks, msks) = keys_of(&keylog);
    tshark_check(&report, &pcap, &muks, &msks);
}

/// The key log's MUKs (by IDr) and MSKs (by key domain + MSK ID).
type Keys = (BTreeMap<String, Vec<u8>>, BTreeMap<Vec<u8>, Vec<u8>>);

fn keys_of(keylog: &Path) -> Keys {
    let text = std::fs::read_to_string(keylog).unwrap();
    let mut msks = BTreeMap::new();
    let mut muks = BTreeMap::new();
    for line in text.lines() {
        match mbms_capture::parse_keylog_line(line).unwrap() {
            Some(mbms_capture::KeyLogEntry::Msk {
                key_domain,
                msk_id,
                key,
            }) => {
                let mut id = key_domain.to_vec();
                id.extend_from_slice(&msk_id);
                msks.insert(id, key);
            }
            Some(mbms_capture::KeyLogEntry::Muk { idr, key, .. }) => {
                muks.insert(idr, key);
            }
            _ => {}
        }
    }
    (muks, msks)
}

/// tshark (when installed) reads the pcap without malformed packets and,
/// told the run's ports by [`DemoReport::tshark_decode_as`], decodes its
/// MIKEY datagrams; the KEMAC ones open with the key log's keys.
fn tshark_check(
    report: &DemoReport,
    pcap: &Path,
    muks: &BTreeMap<String, Vec<u8>>,
    msks: &BTreeMap<Vec<u8>, Vec<u8>>,
) {
    let Ok(out) = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap)
        .args(report.tshark_decode_as())
        .args([
            "-T",
            "fields",
            "-e",
            "frame.protocols",
            "-e",
            "udp.payload",
            "-E",
            "separator=;",
        ])
        .output()
    else {
        mbms_test_support::skip("tshark is not installed: the pcap check with tshark");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("malformed"), "no malformed packet");
    assert_eq!(
        text.lines().count(),
        report.capture.datagrams,
        "every datagram is a frame"
    );
    let mut kemac_opened = 0;
    for line in text.lines().filter(|l| l.contains(":mikey")) {
        let hex_payload = line.split(';').nth(1).unwrap();
        let bytes = hex::decode(hex_payload).unwrap();
        let m = mikey::Message::parse(&bytes).unwrap();
        if m.kemac().is_none() {
            continue; // acknowledgements: checked by the run (needs the initiator)
        }
        let is_mtk = m.key_ids().any(|k| k.key_id_type == mikey::KeyIdType::MTK);
        let key = if is_mtk {
            let id = m
                .key_ids()
                .find(|k| k.key_id_type == mikey::KeyIdType::MSK)
                .unwrap()
                .key_id
                .to_vec();
            msks[&id].clone()
        } else {
            let idr = String::from_utf8(m.ids().last().unwrap().data.to_vec()).unwrap();
            muks[&idr].clone()
        };
        mikey::open_psk(&bytes, &key).unwrap();
        kemac_opened += 1;
    }
    assert!(kemac_opened > 0, "tshark decoded MIKEY");
}
