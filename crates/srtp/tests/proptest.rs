//! Property tests: protect/unprotect round trips of arbitrary packets and
//! SEQ sequences under every configuration, and "unprotect never panics"
//! on arbitrary and mutated input.

use proptest::prelude::*;
use srtp::*;

fn config() -> impl Strategy<Value = Config> {
    (
        // Every cipher x authentication combination (seed 000 6.3.2.2.2),
        // named suites weighted up, any HMAC tag length 0..=20.
        prop_oneof![
            3 => prop::sample::select(Suite::NAMED.iter().map(|(_, s)| *s).collect::<Vec<_>>()),
            1 => (any::<bool>(), any::<bool>(), 0u8..=20).prop_map(|(c, a, t)| Suite {
                cipher: if c { Cipher::AesCm128 } else { Cipher::Null },
                auth: if a { Auth::HmacSha1 } else { Auth::Null },
                tag_len: if a { t } else { 0 },
            }),
        ],
        prop_oneof![Just(0usize), Just(4), Just(6), Just(MAX_MKI_LEN)],
        prop_oneof![Just(64usize), Just(100), Just(1024)],
        prop_oneof![
            Just(None),
            (1u16..20).prop_map(|rate| Some(Rcc {
                mode: RccMode::Rccm1,
                rate
            })),
            (1u16..20).prop_map(|rate| Some(Rcc {
                mode: RccMode::Rccm2,
                rate
            })),
            (1u16..20).prop_map(|rate| Some(Rcc {
                mode: RccMode::Rccm3,
                rate
            })),
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(suite, mki_len, replay_window, rcc, enc, rtp_enc)| {
            let mut c = Config {
                suite,
                mki_len,
                replay_window,
                rcc,
                srtp_encryption: rtp_enc,
                srtcp_encryption: enc,
                ..Config::default()
            };
            if c.validate().is_err() {
                c.rcc = None; // RCCm1/2 with a short tag, RCC without HMAC
            }
            c
        })
}

fn master(mki_len: usize, i: u8) -> MasterKey {
    let mki: Vec<u8> = (0..mki_len).map(|j| j as u8 ^ i).collect();
    MasterKey::from_slices(&[i; 16], &[i ^ 0x55; 14], &mki).unwrap()
}

/// An RTP packet with CSRCs, an optional extension, padding flag and any
/// payload.
fn packet(seq: u16, ssrc: u32, cc: u8, ext: Option<Vec<u8>>, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80 | cc | if ext.is_some() { 0x10 } else { 0 }, 0x60];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[1, 2, 3, 4]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    for i in 0..cc {
        p.extend_from_slice(&[i; 4]);
    }
    if let Some(e) = ext {
        let words = e.len() / 4;
        p.extend_from_slice(&[0xbe, 0xde]);
        p.extend_from_slice(&(words as u16).to_be_bytes());
        p.extend_from_slice(&e[..words * 4]);
    }
    p.extend_from_slice(payload);
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn rtp_round_trip(
        cfg in config(),
        start in any::<u16>(),
        roc in 0u32..3,
        steps in prop::collection::vec(1u16..300, 1..40),
        cc in 0u8..16,
        ext in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        payload in prop::collection::vec(any::<u8>(), 0..1500),
        ssrc in any::<u32>(),
        switch_at in 0usize..40,
    ) {
        let k1 = master(cfg.mki_len, 1);
        let k2 = master(cfg.mki_len, 2);
        let mut tx = Sender::new(cfg.clone()).unwrap();
        let mut rx = Receiver::new(cfg.clone()).unwrap();
        tx.add_key(&k1).unwrap();
        rx.add_key(&k1).unwrap();
        let two_keys = cfg.mki_len > 0;
        if two_keys {
            tx.add_key(&k2).unwrap();
            rx.add_key(&k2).unwrap();
        }
        tx.set_roc(ssrc, roc).unwrap();
        rx.set_roc(ssrc, roc).unwrap();
        let mut seq = start;
        let mut expected_index = ((roc as u64) << 16) | start as u64;
        for (i, step) in steps.iter().enumerate() {
            if two_keys && i == switch_at {
                tx.set_active_key(&k2.mki()).unwrap();
            }
            let plain = packet(seq, ssrc, cc, ext.clone(), &payload[..payload.len().min(i * 37)]);
            let mut p = plain.clone();
            tx.protect_rtp_vec(&mut p).unwrap();
            prop_assert!(p.len() <= plain.len() + cfg.rtp_overhead());
            // The payload is in clear exactly when SRTP encryption is off.
            // (At least 8 payload bytes: a keystream of zeros is then
            // out of the question.)
            let header = 12 + 4 * cc as usize + ext.as_ref().map_or(0, |e| 4 + e.len() / 4 * 4);
            if plain.len() >= header + 8 {
                prop_assert_eq!(p[..plain.len()] == plain[..], !cfg.encrypts_rtp());
            }
            let got = rx.unprotect_rtp_vec(&mut p).unwrap();
            prop_assert_eq!(&p, &plain);
            prop_assert_eq!(got.index, expected_index);
            seq = seq.wrapping_add(*step);
            expected_index += *step as u64;
        }
        prop_assert_eq!(rx.roc(ssrc), tx.roc(ssrc));
    }

    #[test]
    fn rtcp_round_trip(
        cfg in config(),
        body in prop::collection::vec(any::<u8>(), 0..1000),
        n in 1usize..20,
    ) {
        let k = master(cfg.mki_len, 3);
        let mut tx = Sender::new(cfg.clone()).unwrap();
        let mut rx = Receiver::new(cfg.clone()).unwrap();
        tx.add_key(&k).unwrap();
        rx.add_key(&k).unwrap();
        for i in 0..n {
            let mut plain = vec![0x80, 200, 0, 0, 9, 8, 7, 6];
            plain.extend_from_slice(&body[..body.len().min(i * 50)]);
            let mut p = plain.clone();
            tx.protect_rtcp_vec(&mut p).unwrap();
            prop_assert_eq!(p.len(), plain.len() + cfg.rtcp_overhead());
            let got = rx.unprotect_rtcp_vec(&mut p).unwrap();
            prop_assert_eq!(&p, &plain);
            prop_assert_eq!(got.index as usize, i);
            prop_assert_eq!(got.encrypted, cfg.encrypts_rtcp());
            prop_assert_eq!(got.authenticated, cfg.suite.auth == Auth::HmacSha1);
        }
    }

    /// Arbitrary bytes never make unprotect panic, under any configuration,
    /// with or without a known ROC.
    #[test]
    fn unprotect_never_panics_on_arbitrary_bytes(
        cfg in config(),
        packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..8),
        set_roc in any::<bool>(),
    ) {
        let mut rx = Receiver::new(cfg.clone()).unwrap();
        rx.add_key(&master(cfg.mki_len, 1)).unwrap();
        for p in packets {
            if set_roc && p.len() >= 12 {
                let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
                let _ = rx.set_roc(ssrc, 1);
            }
            let mut a = p.clone();
            let _ = rx.unprotect_rtp(&mut a);
            let mut b = p.clone();
            let _ = rx.unprotect_rtcp(&mut b);
        }
    }

    /// Valid packets with a byte changed, cut or extended: never a panic,
    /// and never accepted when the transform authenticates that packet.
    #[test]
    fn mutated_packets_are_refused(
        cfg in config(),
        seq in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..300),
        pos in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        cut in 0usize..40,
        extra in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let k = master(cfg.mki_len, 7);
        let mut tx = Sender::new(cfg.clone()).unwrap();
        tx.add_key(&k).unwrap();
        let mut good = packet(seq, 42, 0, None, &payload);
        tx.protect_rtp_vec(&mut good).unwrap();
        let fresh = || {
            let mut rx = Receiver::new(cfg.clone()).unwrap();
            rx.add_key(&k).unwrap();
            rx.set_roc(42, 0).unwrap();
            rx
        };
        let authenticated = {
            let mut rx = fresh();
            rx.unprotect_rtp(&mut good.clone()).unwrap().authenticated
        };
        let mut flipped = good.clone();
        let i = pos.index(flipped.len());
        flipped[i] ^= flip;
        let r = fresh().unprotect_rtp(&mut flipped);
        // RFC 4771 RCCm1/RCCm3: a changed sequence number (bytes 2 and 3)
        // can make the packet one that carries no tag (SEQ mod R != 0),
        // which the receiver takes unauthenticated, as the mode says; it
        // must never take it as authenticated. Any other change of an
        // authenticated packet is refused.
        let reclassified = i == 2 || i == 3;
        let untagged_exist = cfg
            .rcc
            .is_some_and(|r| matches!(r.mode, RccMode::Rccm1 | RccMode::Rccm3));
        if authenticated {
            match &r {
                Ok(u) if reclassified && untagged_exist => prop_assert!(
                    !u.authenticated,
                    "took a packet with its sequence number changed as authenticated"
                ),
                _ => prop_assert!(r.is_err(), "accepted a packet with byte {} changed", i),
            }
        }
        let mut cut_p = good[..good.len().saturating_sub(cut.max(1))].to_vec();
        let r = fresh().unprotect_rtp(&mut cut_p);
        if authenticated && cfg.rcc.is_none() {
            prop_assert!(r.is_err());
        }
        let mut longer = good.clone();
        longer.extend_from_slice(&extra);
        let r = fresh().unprotect_rtp(&mut longer);
        if authenticated && cfg.rcc.is_none() && !extra.is_empty() {
            prop_assert!(r.is_err());
        }
    }
}
