//! Stream behaviour: MKI key switching (the receiver holds the current and
//! the next MTK), ROC rollover, SRTCP and its E bit, and RFC 4771 ROC
//! transport (late joiners; tag layout checked against hand-computed
//! values).

mod common;
use common::*;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use srtp::keys::{derive, Label};
use srtp::*;

#[test]
fn mki_key_switch_receiver_holds_current_and_next() {
    let k1 = key(1, Mki::mbms(0x0001_0001, 10));
    let k2 = key(2, Mki::mbms(0x0001_0001, 11));
    let k3 = key(3, Mki::mbms(0x0001_0002, 1));
    let mut tx = Sender::new(Config::mbms()).unwrap();
    tx.add_key(&k1).unwrap();
    let mut rx = Receiver::new(Config::mbms()).unwrap();
    rx.add_key(&k1).unwrap();
    rx.add_key(&k2).unwrap(); // the next MTK arrives before the switch

    let mut held_back = Vec::new();
    for seq in 0..100u16 {
        if seq == 50 {
            tx.add_key(&k2).unwrap();
            tx.set_active_key(&k2.mki()).unwrap();
        }
        let plain = rtp(seq, 30);
        let p = protect(&mut tx, &plain);
        if seq == 48 {
            held_back.push((p, plain)); // arrives late, after the switch
            continue;
        }
        let mut q = p.clone();
        let got = rx.unprotect_rtp_vec(&mut q).unwrap();
        assert_eq!(q, plain);
        let want = if seq < 50 { k1.mki() } else { k2.mki() };
        assert_eq!(got.mki, want, "seq {seq}");
    }
    // A late packet under the old key still decrypts (both keys held).
    let (mut p, plain) = held_back.pop().unwrap();
    rx.unprotect_rtp_vec(&mut p).unwrap();
    assert_eq!(p, plain);

    // The receiver drops the old MTK; a packet under an MSK it never got
    // is an unknown MKI (the UE's missed-key trigger).
    rx.remove_key(&k1.mki()).unwrap();
    assert_eq!(rx.mkis().collect::<Vec<_>>(), vec![k2.mki()]);
    tx.add_key(&k3).unwrap();
    tx.set_active_key(&k3.mki()).unwrap();
    let mut p = protect(&mut tx, &rtp(100, 5));
    match rx.unprotect_rtp(&mut p) {
        Err(Error::UnknownMki { mki, .. }) => {
            assert_eq!(mki.mbms_parts(), Some((0x0001_0002, 1)))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn roc_rollover_sender_crosses_65535() {
    let (mut tx, mut rx) = pair(Config::mbms(), &[key(1, Mki::mbms(1, 1))]);
    let mut pkts = Vec::new();
    for seq in (65530..=65535u16).chain(0..10) {
        pkts.push((seq, protect(&mut tx, &rtp(seq, 20))));
    }
    assert_eq!(tx.roc(SSRC), Some(1));
    // Deliver with the first post-wrap packet before the last pre-wrap one.
    pkts.swap(5, 6);
    for (seq, p) in pkts {
        let mut q = p.clone();
        let got = rx.unprotect_rtp_vec(&mut q).unwrap();
        assert_eq!(q, rtp(seq, 20));
        let roc = if seq >= 65530 { 0 } else { 1 };
        assert_eq!((got.roc, got.index), (roc, (roc as u64) << 16 | seq as u64));
    }
    assert_eq!(rx.roc(SSRC), Some(1));
}

#[test]
fn roc_from_the_srtp_id_map() {
    let (mut tx, _) = pair(Config::mbms(), &[key(1, Mki::mbms(1, 1))]);
    tx.set_roc(SSRC, 41).unwrap();
    let p = protect(&mut tx, &rtp(500, 20));
    assert_eq!(tx.roc(SSRC), Some(41));
    // Without the ROC the receiver assumes 0 and the MAC fails ...
    let (_, mut rx) = pair(Config::mbms(), &[key(1, Mki::mbms(1, 1))]);
    assert!(matches!(
        rx.unprotect_rtp(&mut p.clone()),
        Err(Error::AuthenticationFailed { .. })
    ));
    // ... with it (MTK message, SRTP-ID map) it starts right away.
    rx.set_roc(SSRC, 41).unwrap();
    assert_eq!(rx.roc(SSRC), Some(41));
    let got = rx.unprotect_rtp(&mut p.clone()).unwrap();
    assert_eq!(got.roc, 41);
}

#[test]
fn srtcp_round_trip_and_e_bit() {
    for encrypt in [true, false] {
        let cfg = Config {
            srtcp_encryption: encrypt,
            ..Config::mbms()
        };
        let (mut tx, mut rx) = pair(cfg, &[key(7, Mki::mbms(3, 4))]);
        for i in 0..5u32 {
            let plain = rtcp(28);
            let mut p = plain.clone();
            tx.protect_rtcp_vec(&mut p).unwrap();
            assert_eq!(p.len(), plain.len() + 4 + 6 + 10);
            let e_index = u32::from_be_bytes(p[plain.len()..plain.len() + 4].try_into().unwrap());
            assert_eq!(e_index >> 31 == 1, encrypt);
            assert_eq!(e_index & 0x7fff_ffff, i);
            assert_eq!(&p[..8], &plain[..8], "first 8 bytes stay in clear");
            assert_eq!(p[8..plain.len()] == plain[8..], !encrypt);
            assert_eq!(
                &p[plain.len() + 4..plain.len() + 10],
                Mki::mbms(3, 4).as_bytes()
            );
            let got = rx.unprotect_rtcp_vec(&mut p).unwrap();
            assert_eq!(p, plain);
            assert_eq!((got.index, got.encrypted, got.ssrc), (i, encrypt, SSRC));
            assert_eq!(got.mki, Mki::mbms(3, 4));
        }
        // Flipping the E bit breaks the tag.
        let mut p = rtcp(28);
        tx.protect_rtcp_vec(&mut p).unwrap();
        p[32] ^= 0x80;
        assert!(matches!(
            rx.unprotect_rtcp(&mut p),
            Err(Error::AuthenticationFailed { .. })
        ));
    }
}

#[test]
fn srtcp_with_the_32_bit_suite_keeps_an_80_bit_tag() {
    let cfg = Config {
        suite: Suite::AES_CM_128_HMAC_SHA1_32,
        ..Config::default()
    };
    let (mut tx, mut rx) = pair(cfg, &[key(1, Mki::EMPTY)]);
    let mut p = rtp(1, 10);
    tx.protect_rtp_vec(&mut p).unwrap();
    assert_eq!(p.len(), 22 + 4);
    rx.unprotect_rtp_vec(&mut p).unwrap();
    let mut c = rtcp(10);
    tx.protect_rtcp_vec(&mut c).unwrap();
    assert_eq!(c.len(), 18 + 4 + 10);
    rx.unprotect_rtcp_vec(&mut c).unwrap();
}

fn rcc_cfg(mode: RccMode, rate: u16) -> Config {
    Config {
        rcc: Some(Rcc { mode, rate }),
        ..Config::mbms()
    }
}

/// The SRTP authentication key of a test key, computed independently.
fn auth_key(k: u8) -> [u8; 20] {
    let mut a = [0u8; 20];
    derive(
        &[k; 16],
        &[k.wrapping_add(100); 14],
        Label::RtpAuthentication,
        &mut a,
    );
    a
}

/// RFC 4771 tag layout, checked against a hand computation: a packet with
/// SEQ mod R == 0 carries ROC (4 bytes) || HMAC-SHA-1(auth key, header ||
/// encrypted payload || ROC) truncated to tag length - 4; the encryption is
/// that of the default transform.
#[test]
fn rfc4771_tag_layout_by_hand() {
    let mki = Mki::mbms(0x0001_0001, 1);
    let k = key(5, mki);
    for (mode, r) in [
        (RccMode::Rccm1, 4u16),
        (RccMode::Rccm2, 4),
        (RccMode::Rccm3, 4),
    ] {
        let (mut plain_tx, _) = pair(Config::mbms(), std::slice::from_ref(&k));
        let (mut tx, _) = pair(rcc_cfg(mode, r), std::slice::from_ref(&k));
        for t in [&mut plain_tx, &mut tx] {
            t.set_roc(SSRC, 0x0102_0304).unwrap();
        }
        for seq in [8u16, 9] {
            let plain = rtp(seq, 33);
            let d = protect(&mut plain_tx, &plain); // default transform
            let p = protect(&mut tx, &plain);
            let body = plain.len(); // header + payload
            assert_eq!(&p[..body], &d[..body], "same encryption");
            assert_eq!(&p[body..body + 6], mki.as_bytes());
            let t = body + 6;
            let roc = 0x0102_0304u32.to_be_bytes();
            let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&auth_key(5)).unwrap();
            mac.update(&p[..body]);
            mac.update(&roc);
            let mac = mac.finalize().into_bytes();
            match (mode, seq % r == 0) {
                (RccMode::Rccm3, true) => assert_eq!(&p[t..], &roc),
                (_, true) => {
                    assert_eq!(p.len(), t + 10, "the tag keeps its 80 bits");
                    assert_eq!(&p[t..t + 4], &roc);
                    assert_eq!(&p[t + 4..], &mac[..6]);
                }
                (RccMode::Rccm2, false) => assert_eq!(&p[t..], &mac[..10]),
                (_, false) => assert_eq!(p.len(), t, "no tag"),
            }
            // The default transform's tag is the same MAC, 80 bits.
            assert_eq!(&d[t..], &mac[..10]);
        }
    }
}

/// A receiver joining late, ROC unknown: packets without the ROC are
/// refused with RocUnknown until one with SEQ mod R == 0 arrives; from then
/// on everything decrypts, across a later rollover too.
#[test]
fn rfc4771_late_joiner_learns_roc_in_every_mode() {
    for mode in [RccMode::Rccm1, RccMode::Rccm2, RccMode::Rccm3] {
        let r = 10u16;
        let k = key(9, Mki::mbms(1, 2));
        let (mut tx, _) = pair(rcc_cfg(mode, r), std::slice::from_ref(&k));
        tx.set_roc(SSRC, 7).unwrap();
        let mut rx = Receiver::new(rcc_cfg(mode, r)).unwrap();
        rx.add_key(&k).unwrap();
        let mut synced = false;
        for seq in (65521..=65535u16).chain(0..30) {
            let plain = rtp(seq, 17);
            let mut p = protect(&mut tx, &plain);
            let res = rx.unprotect_rtp_vec(&mut p);
            if !synced && seq % r != 0 {
                assert_eq!(
                    res,
                    Err(Error::RocUnknown { ssrc: SSRC, seq }),
                    "{mode:?} {seq}"
                );
                continue;
            }
            let got = res.unwrap_or_else(|e| panic!("{mode:?} {seq}: {e}"));
            synced = true;
            assert_eq!(p, plain, "{mode:?} {seq}");
            let roc = if seq >= 65521 { 7 } else { 8 };
            assert_eq!(got.roc, roc);
            assert_eq!(got.roc_from_packet, seq % r == 0);
            let authed = match mode {
                RccMode::Rccm1 => seq % r == 0,
                RccMode::Rccm2 => true,
                RccMode::Rccm3 => false,
            };
            assert_eq!(got.authenticated, authed, "{mode:?} {seq}");
        }
        assert!(synced);
        assert_eq!(rx.roc(SSRC), Some(8));
    }
}

/// In RCCm1/RCCm2 the carried ROC is authenticated: a forged ROC fails.
#[test]
fn rfc4771_carried_roc_is_authenticated_in_modes_1_and_2() {
    for mode in [RccMode::Rccm1, RccMode::Rccm2] {
        let k = key(9, Mki::mbms(1, 2));
        let (mut tx, mut rx) = pair(rcc_cfg(mode, 5), std::slice::from_ref(&k));
        let mut p = protect(&mut tx, &rtp(10, 17));
        let t = p.len() - 10;
        p[t + 3] ^= 1; // ROC 0 -> 1
        assert!(matches!(
            rx.unprotect_rtp(&mut p),
            Err(Error::AuthenticationFailed { index, .. }) if index == (1 << 16) | 10
        ));
    }
}

/// The receiver never moves the ROC backwards: an old ROC-carrying packet
/// replayed much later is too old.
#[test]
fn rfc4771_old_roc_carrying_packet_is_too_old() {
    let k = key(9, Mki::mbms(1, 2));
    let (mut tx, mut rx) = pair(rcc_cfg(RccMode::Rccm2, 5), std::slice::from_ref(&k));
    let old = protect(&mut tx, &rtp(10, 17));
    rx.unprotect_rtp(&mut old.clone()).unwrap();
    for seq in 11..200u16 {
        let mut p = protect(&mut tx, &rtp(seq, 17));
        rx.unprotect_rtp(&mut p).unwrap();
    }
    assert!(matches!(
        rx.unprotect_rtp(&mut old.clone()),
        Err(Error::TooOld { .. })
    ));
}

/// Without RFC 4771 a receiver that missed a whole ROC cycle would be lost;
/// with it, the next ROC-carrying packet resynchronises it.
#[test]
fn rfc4771_resynchronises_after_a_long_gap() {
    let k = key(4, Mki::mbms(1, 2));
    let (mut tx, mut rx) = pair(rcc_cfg(RccMode::Rccm2, 16), std::slice::from_ref(&k));
    rx.set_roc(SSRC, 0).unwrap();
    let mut p = protect(&mut tx, &rtp(100, 10));
    rx.unprotect_rtp(&mut p).unwrap();
    // 70000 packets lost (more than one SEQ cycle).
    let mut seq = 100u16;
    for _ in 0..70000 {
        seq = seq.wrapping_add(1);
        protect(&mut tx, &rtp(seq, 0));
    }
    let mut resynced = false;
    for _ in 0..32 {
        seq = seq.wrapping_add(1);
        let mut p = protect(&mut tx, &rtp(seq, 10));
        match rx.unprotect_rtp(&mut p) {
            Ok(got) => {
                assert_eq!(got.roc, 1);
                resynced = true;
            }
            Err(e) => {
                assert!(!resynced, "{e}");
                assert!(matches!(e, Error::AuthenticationFailed { .. }));
            }
        }
    }
    assert!(resynced);
}
