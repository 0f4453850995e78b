//! tshark opens the capture without malformed packets and decodes MIKEY on
//! port 2269. Skips, and says so, where tshark is not installed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use mbms_capture::PcapWriter;

#[test]
fn tshark_reads_the_capture() {
    if Command::new("tshark").arg("--version").output().is_err() {
        mbms_test_support::skip("tshark is not installed");
        return;
    }
    let msg = mikey::MessageBuilder::new(mikey::DataType::PSK_INIT)
        .timestamp(mikey::Timestamp::Counter(1))
        .rand([1u8; 16])
        .protect(&[2u8; 32], mikey::EncrAlg::AES_CM_128, &[])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pcap");
    let mut w = PcapWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
    let bmsc = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 2269);
    for i in 0..3u16 {
        let ue = SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, i as u8 + 1), 2269);
        w.write_udp(
            Duration::from_secs(1_700_000_000 + u64::from(i)),
            bmsc,
            ue,
            msg.bytes(),
        )
        .unwrap();
    }
    // An odd-length non-MIKEY datagram (e.g. SRTP) on another port.
    w.write_udp(
        Duration::from_secs(1_700_000_010),
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 5004),
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, 1), 40000),
        &[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 7],
    )
    .unwrap();
    w.finish().unwrap();
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&path)
        .args([
            "-V",
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("Multimedia Internet KEYing").count(),
        3,
        "{text}"
    );
    for bad in [
        "Malformed",
        "Bad checksum",
        "[incorrect",
        "Expert Info (Error",
    ] {
        assert!(!text.contains(bad), "tshark reports {bad:?}:\n{text}");
    }
}
