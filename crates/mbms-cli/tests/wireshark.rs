//! Issue 15: the Wireshark dissector (contrib/wireshark/mbms-mikey.lua) and
//! `mbms pcap decrypt` on a real demo capture.
//!
//! One demo run (3 UEs, free ports, pcap + key log, in-process through the
//! `mbms-demo` library) is shared by the tests of this file. The tshark
//! parts print `skipped:` where tshark is missing (`.ci/run` installs it);
//! the decrypt checks that need no tshark always run. With
//! `MBMS_REQUIRE_TSHARK=1` (set by `.ci/run`) a missing tshark fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use mbms_demo::{DemoOptions, DemoPorts, DemoReport};

const LUA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../contrib/wireshark/mbms-mikey.lua"
);
/// The SSRC and RTP payload length of the demo's synthetic stream
/// (`mbms_demo::rtp`).
const SSRC: u32 = 0x4d42_4d53;
const RTP_PAYLOAD_LEN: usize = 160;

struct Demo {
    _dir: tempfile::TempDir,
    pcap: PathBuf,
    keylog: PathBuf,
    report: DemoReport,
}

fn demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("demo.pcap");
        let keylog = dir.path().join("demo.keys");
        let opts = DemoOptions {
            ues: 3,
            pcap: Some(pcap.clone()),
            keylog: Some(keylog.clone()),
            work_dir: None,
            ports: DemoPorts::DEFAULT,
            free_ports: true,
            ..Default::default()
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let report = rt
            .block_on(mbms_demo::run(opts, &|_| {}))
            .expect("the demo runs");
        assert!(report.success, "{}", mbms_demo::render_table(&report));
        Demo {
            _dir: dir,
            pcap,
            keylog,
            report,
        }
    })
}

/// The decrypted capture of the shared demo, written once.
fn decrypted() -> &'static (PathBuf, String) {
    static OUT: OnceLock<(PathBuf, String)> = OnceLock::new();
    OUT.get_or_init(|| {
        let d = demo();
        let out = d.pcap.with_file_name("decrypted.pcapng");
        let o = assert_cmd::Command::cargo_bin("mbms")
            .unwrap()
            .arg("pcap")
            .arg("decrypt")
            .arg(&d.pcap)
            .arg("--keylog")
            .arg(&d.keylog)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (out, String::from_utf8(o.stdout).unwrap())
    })
}

/// Whether tshark runs here. `.ci/run` sets `MBMS_REQUIRE_TSHARK=1` where
/// it installed tshark: then a missing tshark fails instead of skipping.
fn tshark_present() -> bool {
    let present = Command::new("tshark").arg("--version").output().is_ok();
    if !present && std::env::var_os("MBMS_REQUIRE_TSHARK").is_some_and(|v| v == "1") {
        panic!("MBMS_REQUIRE_TSHARK=1 but tshark does not run");
    }
    present
}

/// Run tshark with the dissector; returns stdout. Fails on a non-zero exit
/// or on anything in stderr but the root warning.
fn tshark(file: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(["-n", "-X", &format!("lua_script:{LUA}"), "-r"])
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let noise: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("Running as user") && !l.trim().is_empty())
        .collect();
    assert!(
        out.status.success() && noise.is_empty(),
        "tshark {args:?}: {stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// No Lua error, no malformed packet, no expert error in the whole tree.
fn assert_clean(file: &Path) {
    let tree = tshark(file, &["-V"]);
    assert!(!tree.contains("Lua Error"), "Lua error in the tree");
    assert!(!tree.contains("Malformed"), "malformed packet");
    for filter in ["_ws.malformed", "_ws.expert.severity == error"] {
        let hits = tshark(file, &["-Y", filter]);
        assert!(hits.trim().is_empty(), "{filter}: {hits}");
    }
}

fn column(rows: &str, i: usize) -> Vec<&str> {
    rows.lines()
        .map(|l| l.split('\t').nth(i).unwrap_or(""))
        .collect()
}

#[test]
fn the_dissector_shows_every_mbms_field_on_a_demo_capture() {
    if !tshark_present() {
        mbms_test_support::skip("tshark is not installed: the Lua dissector check");
        return;
    }
    let d = demo();
    assert_clean(&d.pcap);
    // MIKEY on the demo's free ports, found by the heuristics alone.
    let rows = tshark(
        &d.pcap,
        &[
            "-Y",
            "mbms.key_number",
            "-T",
            "fields",
            "-E",
            "occurrence=f",
            "-e",
            "mbms.kind",
            "-e",
            "mbms.counter",
            "-e",
            "mbms.key_domain",
            "-e",
            "mbms.key_group",
            "-e",
            "mbms.key_number",
            "-e",
            "mbms.solicited_pull",
            "-e",
            "mbms.mtk_id",
            "-e",
            "mbms.cs_id_map_type",
            "-e",
            "mbms.empty_map",
            "-e",
            "mbms.mki",
            "-e",
            "mikey.type",
        ],
    );
    let mikey: Vec<&str> = rows
        .lines()
        .filter(|l| !column(l, 10)[0].is_empty())
        .collect();
    assert_eq!(mikey.len(), d.report.capture.mikey, "every MIKEY datagram");
    let kinds: BTreeSet<&str> = column(&rows, 0)
        .into_iter()
        .filter(|k| !k.is_empty())
        .collect();
    for k in [
        "MSK delivery",
        "MSK acknowledgement",
        "Solicited pull",
        "MTK delivery",
    ] {
        assert!(kinds.contains(k), "{k} in {kinds:?}");
    }
    for l in &mikey {
        let c: Vec<&str> = l.split('\t').collect();
        assert!(c[1].parse::<u32>().is_ok_and(|n| n > 0), "counter: {l}");
        assert_eq!(c[2], "001-01", "Key Domain 00f110 as MCC-MNC: {l}");
        assert!(c[3].parse::<u16>().is_ok(), "key group: {l}");
        let kn: u16 = c[4].parse().unwrap();
        assert_eq!(c[5] == "1", kn == 0, "solicited pull iff Key Number 0: {l}");
        assert_eq!(c[0] == "Solicited pull", kn == 0, "{l}");
        match c[0] {
            "MTK delivery" => {
                assert!(c[6].parse::<u16>().is_ok(), "MTK ID: {l}");
                assert_eq!(c[7], "0", "SRTP-ID map: {l}");
            }
            _ => {
                assert_eq!(c[7], "1", "empty map: {l}");
                assert_eq!(c[8], "1", "empty map flag: {l}");
            }
        }
    }
    // SRTP: every packet's MKI as MSK ID || MTK ID, found by the heuristic
    // (the MKI of an MTK message seen before).
    let srtp = tshark(
        &d.pcap,
        &[
            "-Y",
            "mbms.mki && rtp",
            "-T",
            "fields",
            "-e",
            "mbms.mki",
            "-e",
            "mbms.key_group",
            "-e",
            "mbms.mtk_id",
        ],
    );
    assert_eq!(
        srtp.lines().count(),
        d.report.capture.srtp,
        "every SRTP packet"
    );
    for l in srtp.lines() {
        let c: Vec<&str> = l.split('\t').collect();
        let mki = hex::decode(c[0].replace(':', "")).unwrap();
        assert_eq!(mki.len(), 6, "{l}");
        assert_eq!(
            c[1],
            u16::from_be_bytes([mki[0], mki[1]]).to_string(),
            "{l}"
        );
        assert_eq!(
            c[2],
            u16::from_be_bytes([mki[4], mki[5]]).to_string(),
            "{l}"
        );
    }
    // The port preferences do the same without heuristics.
    let ports = format!(
        "mbms.mikey_ports:{},{}",
        d.report.mikey_port, d.report.mtk_port
    );
    let srtp_port = format!("mbms.srtp_ports:{}", d.report.srtp_port);
    let by_pref = tshark(
        &d.pcap,
        &[
            "-o",
            "mbms.heuristics:FALSE",
            "-o",
            &ports,
            "-o",
            &srtp_port,
            "-Y",
            "mbms.mki || mbms.key_number",
        ],
    );
    assert_eq!(
        by_pref.lines().count(),
        d.report.capture.datagrams,
        "every datagram through the port preferences"
    );
}

#[test]
fn pcap_decrypt_opens_every_srtp_and_mikey_packet_of_the_demo() {
    let d = demo();
    let (out, summary) = decrypted();
    let c = &d.report.capture;
    assert!(
        summary.contains(&format!(
            "{} MIKEY ({} verified with the key log), {} SRTP ({} replaced by plain RTP)",
            c.mikey, c.mikey, c.srtp, c.srtp
        )),
        "{summary}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the output holds keys");
    }
    // Read back without tshark: the plain RTP is what the sender sent.
    let cap = mbms_capture::read_capture(&std::fs::read(out).unwrap()).unwrap();
    let (mut rtp, mut mikey) = (0, 0);
    let mut seqs = BTreeSet::new();
    for r in &cap.records {
        let udp = mbms_capture::udp_in_frame(cap.interfaces[0].link_type, &r.data).unwrap();
        let p = &r.data[udp.payload.clone()];
        if udp.dst.port() == d.report.srtp_port {
            let seq = u16::from_be_bytes([p[2], p[3]]);
            assert_eq!(p, mbms_demo::rtp(SSRC, seq, RTP_PAYLOAD_LEN), "seq {seq}");
            assert!(
                r.comments[0].contains("SRTP opened: MKI"),
                "{:?}",
                r.comments
            );
            seqs.insert(seq);
            rtp += 1;
        } else if mikey::Message::parse(p).is_ok() {
            assert_eq!(r.comments.len(), 1);
            assert!(r.comments[0].contains("MAC verified"), "{:?}", r.comments);
            mikey += 1;
        }
    }
    assert_eq!((rtp, mikey), (c.srtp, c.mikey));
    assert!(
        (60_200..60_260).all(|s| seqs.contains(&s)),
        "the checked stream of the demo"
    );
    // Key validity of the 4-way procedure: an inactive MSK, then active.
    let all: Vec<&String> = cap.records.iter().flat_map(|r| &r.comments).collect();
    assert!(all.iter().any(|c| c.contains("(inactive: SEQs > SEQu")));
    assert!(all
        .iter()
        .any(|c| c.contains("no key data (solicited pull")));
    assert!(all
        .iter()
        .any(|c| c.contains("; salt ") && c.contains("KV SPI/MKI")));

    if !tshark_present() {
        mbms_test_support::skip(
            "tshark is not installed: reading the decrypted capture with tshark",
        );
        return;
    }
    // tshark: RTP whose payload equals what the sender sent.
    let decode = format!("udp.port=={},rtp", d.report.srtp_port);
    let o = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(out)
        .args([
            "-d",
            &decode,
            "-Y",
            "rtp",
            "-T",
            "fields",
            "-e",
            "rtp.seq",
            "-e",
            "rtp.ssrc",
            "-e",
            "rtp.payload",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.lines().count(), c.srtp);
    for l in text.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        let seq: u16 = f[0].parse().unwrap();
        assert_eq!(f[1], format!("0x{SSRC:08x}"));
        let payload = hex::decode(f[2].replace(':', "")).unwrap();
        assert_eq!(
            payload,
            mbms_demo::rtp(SSRC, seq, RTP_PAYLOAD_LEN)[12..],
            "seq {seq}"
        );
    }
    // Every MIKEY packet carries its comment (frame.comment).
    let decode_mikey = format!("udp.port=={},mikey", d.report.mtk_port);
    let decode_mikey2 = format!("udp.port=={},mikey", d.report.mikey_port);
    let o = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(out)
        .args([
            "-d",
            &decode_mikey,
            "-d",
            &decode_mikey2,
            "-Y",
            "mikey",
            "-T",
            "fields",
            "-e",
            "frame.comment",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.lines().count(), c.mikey);
    assert!(text
        .lines()
        .all(|l| l.starts_with("mbms pcap decrypt: ") && l.contains("MAC verified")));
    // With the dissector: key validity and the MAC status as fields.
    assert_clean(out);
    let rows = tshark(
        out,
        &[
            "-Y",
            "mbms.seq_s",
            "-T",
            "fields",
            "-e",
            "mbms.mac_verified",
            "-e",
            "mbms.seq_s",
            "-e",
            "mbms.seq_u",
            "-e",
            "mbms.inactive",
        ],
    );
    assert!(rows.lines().count() > 0);
    assert!(rows.lines().all(|l| l.starts_with("1\t")), "{rows}");
    assert!(rows.lines().any(|l| l.ends_with("\t1")), "an inactive MSK");
    assert!(rows.lines().any(|l| l.ends_with("\t0")), "an active MSK");
}

#[test]
fn pcap_decrypt_refuses_bad_input_and_comments_what_it_cannot_open() {
    let d = demo();
    let dir = tempfile::tempdir().unwrap();
    let mbms = || assert_cmd::Command::cargo_bin("mbms").unwrap();
    // Not a capture: exit 2, nothing written.
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"not a capture").unwrap();
    let out = dir.path().join("o.pcapng");
    let o = mbms()
        .args(["pcap", "decrypt"])
        .arg(&junk)
        .arg("--keylog")
        .arg(&d.keylog)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a pcap or pcapng"));
    assert!(!out.exists(), "nothing written");
    // An output that exists with a wide mode ends up 0600.
    std::fs::write(&out, b"old").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // An empty key log: every packet kept as it was, each with the reason.
    let empty = dir.path().join("empty.keys");
    std::fs::write(&empty, b"# nothing\n").unwrap();
    let o = mbms()
        .args(["pcap", "decrypt"])
        .arg(&d.pcap)
        .arg("--keylog")
        .arg(&empty)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let before = mbms_capture::read_capture(&std::fs::read(&d.pcap).unwrap()).unwrap();
    let after = mbms_capture::read_capture(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(before.records.len(), after.records.len());
    for (b, a) in before.records.iter().zip(&after.records) {
        assert_eq!(a.data, b.data, "unchanged without keys");
        assert_eq!(a.time, b.time);
    }
    let comments: Vec<&String> = after.records.iter().flat_map(|r| &r.comments).collect();
    assert_eq!(comments.len(), d.report.capture.mikey, "{comments:?}");
    assert!(comments
        .iter()
        .all(|c| c.contains("not opened") || c.contains("not verified")));
}

/// Damaged input never makes the dissector fail: every truncation and
/// single-byte change of the profile's messages (the published vectors),
/// on the MIKEY port and as SRTP, and random datagrams.
#[test]
fn the_dissector_survives_damaged_datagrams() {
    if !tshark_present() {
        mbms_test_support::skip("tshark is not installed: the Lua dissector robustness check");
        return;
    }
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Duration;
    let doc = mbms::vectors::generate();
    let bmsc = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 2269);
    let ue = SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, 1), 2269);
    let srtp = SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, 1), 5006);
    let free = SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, 1), 40_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.pcap");
    let mut w = mbms_capture::PcapWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
    let mut t = 0u64;
    let mut put = |w: &mut mbms_capture::PcapWriter<std::fs::File>, d, p: &[u8]| {
        t += 1;
        w.write_udp(Duration::from_millis(t), bmsc, d, p).unwrap();
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for v in doc["vectors"].as_array().unwrap() {
        let m = hex::decode(v["message"].as_str().unwrap()).unwrap();
        for dst in [ue, free] {
            put(&mut w, dst, &m);
            for cut in 0..m.len() {
                put(&mut w, dst, &m[..cut]);
            }
            for i in 0..m.len() {
                let mut x = m.clone();
                x[i] ^= (next() as u8) | 1;
                put(&mut w, dst, &x);
            }
        }
        // An RTP-looking datagram with the MKI of the streaming vector.
        let mut p = vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
        p.extend_from_slice(&[0, 1, 0, 1, 0, 2]);
        p.extend_from_slice(&[0; 10]);
        for cut in 0..p.len() {
            put(&mut w, srtp, &p[..cut]);
            put(&mut w, free, &p[..cut]);
        }
    }
    for _ in 0..300 {
        let len = (next() % 80) as usize;
        let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(b) = p.first_mut() {
            *b = [0x01, 0x80, 0x90][(next() % 3) as usize];
        }
        put(&mut w, [ue, srtp, free][(next() % 3) as usize], &p);
    }
    w.finish().unwrap();
    let tree = tshark(&path, &["-V"]);
    assert!(!tree.contains("Lua Error"), "Lua error on damaged input");
    // The intact vectors still decode on the free port (heuristics).
    let kinds = tshark(
        &path,
        &["-Y", "mbms.kind", "-T", "fields", "-e", "mbms.kind"],
    );
    for k in [
        "MSK delivery",
        "MSK acknowledgement",
        "Solicited pull",
        "MTK delivery",
    ] {
        assert!(kinds.contains(k), "{k}");
    }
}
