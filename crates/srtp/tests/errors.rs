//! Error cases: tampering, truncation, replay, too-old packets, unknown MKI,
//! wrong key, buffer and stream limits. Every one is a typed error.

mod common;
use common::*;
use srtp::*;

fn mbms_pair() -> (Sender, Receiver) {
    pair(Config::mbms(), &[key(1, Mki::mbms(0x0001_0001, 1))])
}

#[test]
fn tampered_header_payload_and_tag_fail_authentication() {
    let (mut tx, _) = mbms_pair();
    let good = protect(&mut tx, &rtp(10, 40));
    // header 0..12, payload 12..52, MKI 52..58, tag 58..68
    for pos in (0..52).chain(58..68) {
        let (_, mut rx) = mbms_pair();
        let mut bad = good.clone();
        bad[pos] ^= 0x01;
        let e = rx.unprotect_rtp(&mut bad).unwrap_err();
        match e {
            Error::AuthenticationFailed {
                kind: PacketKind::Rtp,
                ssrc,
                ..
            } => {
                if !(8..12).contains(&pos) {
                    assert_eq!(ssrc, SSRC, "byte {pos}");
                }
            }
            // Flipping a version bit is caught before the MAC.
            Error::BadVersion { .. } => assert_eq!(pos, 0),
            other => panic!("byte {pos}: {other}"),
        }
        // The good packet still goes through afterwards: no state changed.
        let mut ok = good.clone();
        rx.unprotect_rtp(&mut ok).unwrap();
    }
}

#[test]
fn tampered_mki_is_an_unknown_key() {
    let (mut tx, mut rx) = mbms_pair();
    let mut p = protect(&mut tx, &rtp(10, 40));
    p[57] ^= 0x01;
    assert_eq!(
        rx.unprotect_rtp(&mut p),
        Err(Error::UnknownMki {
            kind: PacketKind::Rtp,
            mki: Mki::mbms(0x0001_0001, 0)
        })
    );
}

#[test]
fn every_truncation_is_an_error() {
    let (mut tx, _) = mbms_pair();
    let good = protect(&mut tx, &rtp(10, 40));
    for n in 0..good.len() {
        let (_, mut rx) = mbms_pair();
        let mut p = good[..n].to_vec();
        let e = rx.unprotect_rtp(&mut p).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Truncated { .. }
                    | Error::AuthenticationFailed { .. }
                    | Error::UnknownMki { .. }
            ),
            "{n}: {e}"
        );
    }
    let (_, mut rx) = mbms_pair();
    assert!(matches!(
        rx.unprotect_rtp(&mut good[..20].to_vec()),
        Err(Error::Truncated { needed: 28, .. })
    ));
}

#[test]
fn replayed_packet_is_refused() {
    let (mut tx, mut rx) = mbms_pair();
    let p = protect(&mut tx, &rtp(10, 40));
    rx.unprotect_rtp(&mut p.clone()).unwrap();
    assert_eq!(
        rx.unprotect_rtp(&mut p.clone()),
        Err(Error::Replayed {
            kind: PacketKind::Rtp,
            ssrc: SSRC,
            index: 10
        })
    );
}

#[test]
fn too_old_packet_is_refused_and_window_is_configurable() {
    for window in [64usize, 128] {
        let cfg = Config {
            replay_window: window,
            ..Config::mbms()
        };
        let (mut tx, mut rx) = pair(cfg, &[key(1, Mki::mbms(1, 1))]);
        let pkts: Vec<Vec<u8>> = (1..=200u16).map(|s| protect(&mut tx, &rtp(s, 8))).collect();
        rx.unprotect_rtp(&mut pkts[199].clone()).unwrap(); // index 200
        let oldest_ok = 200 - (window as u16 - 1);
        rx.unprotect_rtp(&mut pkts[oldest_ok as usize - 1].clone())
            .unwrap();
        assert_eq!(
            rx.unprotect_rtp(&mut pkts[oldest_ok as usize - 2].clone()),
            Err(Error::TooOld {
                kind: PacketKind::Rtp,
                ssrc: SSRC,
                index: oldest_ok as u64 - 1,
                highest: 200,
                window: window as u64
            })
        );
        // Out of order inside the window is fine, once.
        rx.unprotect_rtp(&mut pkts[190].clone()).unwrap();
        assert!(matches!(
            rx.unprotect_rtp(&mut pkts[190].clone()),
            Err(Error::Replayed { .. })
        ));
    }
}

#[test]
fn unknown_mki_has_its_own_error() {
    let (mut tx, _) = pair(Config::mbms(), &[key(1, Mki::mbms(0x0002_0003, 9))]);
    let mut rx = Receiver::new(Config::mbms()).unwrap();
    rx.add_key(&key(1, Mki::mbms(0x0002_0003, 8))).unwrap();
    let mut p = protect(&mut tx, &rtp(1, 10));
    match rx.unprotect_rtp(&mut p) {
        Err(Error::UnknownMki { kind, mki }) => {
            assert_eq!(kind, PacketKind::Rtp);
            assert_eq!(mki.mbms_parts(), Some((0x0002_0003, 9)));
        }
        other => panic!("{other:?}"),
    }
    // Also for SRTCP.
    let mut c = rtcp(20);
    tx.protect_rtcp_vec(&mut c).unwrap();
    assert!(matches!(
        rx.unprotect_rtcp(&mut c),
        Err(Error::UnknownMki {
            kind: PacketKind::Rtcp,
            ..
        })
    ));
    // No keys at all.
    let mut empty = Receiver::new(Config::default()).unwrap();
    let (mut tx0, _) = pair(Config::default(), &[key(1, Mki::EMPTY)]);
    let mut p = protect(&mut tx0, &rtp(1, 10));
    assert!(matches!(
        empty.unprotect_rtp(&mut p),
        Err(Error::UnknownMki { .. })
    ));
}

#[test]
fn wrong_key_fails_authentication() {
    let (mut tx, _) = pair(Config::default(), &[key(1, Mki::EMPTY)]);
    let (_, mut rx) = pair(Config::default(), &[key(2, Mki::EMPTY)]);
    let mut p = protect(&mut tx, &rtp(1, 10));
    assert_eq!(
        rx.unprotect_rtp(&mut p),
        Err(Error::AuthenticationFailed {
            kind: PacketKind::Rtp,
            ssrc: SSRC,
            index: 1
        })
    );
    let mut c = rtcp(10);
    tx.protect_rtcp_vec(&mut c).unwrap();
    assert!(matches!(
        rx.unprotect_rtcp(&mut c),
        Err(Error::AuthenticationFailed {
            kind: PacketKind::Rtcp,
            ..
        })
    ));
}

#[test]
fn sender_refuses_to_reuse_an_index_and_checks_buffers() {
    let (mut tx, _) = mbms_pair();
    protect(&mut tx, &rtp(5, 10));
    let mut again = rtp(5, 10);
    assert!(matches!(
        tx.protect_rtp_vec(&mut again),
        Err(Error::Replayed { index: 5, .. })
    ));
    assert_eq!(
        again,
        rtp(5, 10),
        "a failed protect leaves the Vec as it was"
    );
    let mut buf = rtp(6, 10);
    let n = buf.len();
    assert_eq!(
        tx.protect_rtp(&mut buf, n),
        Err(Error::BufferTooSmall {
            needed: n + 16,
            available: n
        })
    );
    assert_eq!(
        tx.protect_rtp(&mut buf, n + 1),
        Err(Error::LengthExceedsBuffer {
            len: n + 1,
            buffer: n
        })
    );
    let mut small = vec![0x80, 200, 0, 1, 0, 0, 0, 1];
    assert!(matches!(
        tx.protect_rtcp(&mut small, 8),
        Err(Error::BufferTooSmall { .. })
    ));
    assert!(matches!(
        tx.protect_rtp(&mut [0x40; 40], 12),
        Err(Error::BadVersion { version: 1, .. })
    ));
}

#[test]
fn stream_limit() {
    let cfg = Config {
        max_streams: 2,
        ..Config::default()
    };
    let (mut tx, mut rx) = pair(cfg, &[key(1, Mki::EMPTY)]);
    for ssrc in 1..=2 {
        let mut p = protect(&mut tx, &rtp_ssrc(1, 4, ssrc));
        rx.unprotect_rtp(&mut p).unwrap();
    }
    assert_eq!(
        tx.protect_rtp_vec(&mut rtp_ssrc(1, 4, 3)),
        Err(Error::TooManyStreams { max: 2 })
    );
    let (mut tx2, _) = pair(Config::default(), &[key(1, Mki::EMPTY)]);
    let mut p = protect(&mut tx2, &rtp_ssrc(1, 4, 3));
    assert_eq!(
        rx.unprotect_rtp(&mut p),
        Err(Error::TooManyStreams { max: 2 })
    );
    rx.remove_stream(1);
    rx.unprotect_rtp(&mut p).unwrap();
}

#[test]
fn srtcp_tamper_replay_and_truncation() {
    let (mut tx, mut rx) = mbms_pair();
    let mut good = rtcp(24);
    tx.protect_rtcp_vec(&mut good).unwrap();
    for pos in 1..good.len() {
        // (byte 0 carries the version: BadVersion before the MAC)
        let mut bad = good.clone();
        bad[pos] ^= 0x80;
        assert!(rx.unprotect_rtcp(&mut bad).is_err(), "{pos}");
    }
    for n in 0..good.len() {
        assert!(rx.unprotect_rtcp(&mut good[..n].to_vec()).is_err(), "{n}");
    }
    rx.unprotect_rtcp(&mut good.clone()).unwrap();
    assert_eq!(
        rx.unprotect_rtcp(&mut good.clone()),
        Err(Error::Replayed {
            kind: PacketKind::Rtcp,
            ssrc: SSRC,
            index: 0
        })
    );
}

#[test]
fn errors_read_well() {
    let e = Error::UnknownMki {
        kind: PacketKind::Rtp,
        mki: Mki::mbms(0x0001_0002, 3),
    };
    assert_eq!(e.to_string(), "unknown MKI 000100020003 (RTP)");
    let e = Error::TooOld {
        kind: PacketKind::Rtcp,
        ssrc: 1,
        index: 2,
        highest: 100,
        window: 64,
    };
    assert!(e.to_string().contains("behind the replay window"), "{e}");
}
