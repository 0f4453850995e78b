//! `srtp::Receiver::unprotect_rtp` never panics, under every configuration
//! (suite, MKI, RFC 4771 modes, which reach the decryption without a MAC),
//! on a sequence of packets fed to one receiver (so the ROC, index
//! estimation and replay window state is exercised too). Each input packet
//! is also protected as RTP by a sender and must come back unchanged from a
//! second receiver that follows that sender.
//!
//! Input: one configuration byte, then packets, each preceded by a 2-byte
//! big-endian length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp::{Config, MasterKey, Rcc, RccMode, Receiver, Sender, Suite};

const KEY: [u8; 16] = [0x42; 16];
const SALT: [u8; 14] = [0x24; 14];
const MKI: [u8; 6] = [0, 1, 0, 2, 0, 3];

/// sel mod 6: suite; bit 1: 6-byte MKI; bits 2-3: RFC 4771 mode; bits 4-7: R-1.
fn config(sel: u8) -> Config {
    let mut c = Config {
        // Every named suite, NULL cipher and NULL authentication included.
        suite: Suite::NAMED[usize::from(sel) % Suite::NAMED.len()].1,
        mki_len: if sel & 2 == 0 { 0 } else { MKI.len() },
        rcc: match (sel >> 2) & 3 {
            0 => None,
            m => Some(Rcc {
                mode: [RccMode::Rccm1, RccMode::Rccm2, RccMode::Rccm3][m as usize - 1],
                rate: (sel >> 4) as u16 + 1,
            }),
        },
        ..Config::default()
    };
    if c.validate().is_err() {
        c.rcc = None;
    }
    c
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let cfg = config(sel);
    let key = MasterKey::from_slices(&KEY, &SALT, &MKI[..cfg.mki_len]).unwrap();
    let mut rx = Receiver::new(cfg.clone()).unwrap();
    let mut tx = Sender::new(cfg.clone()).unwrap();
    let mut follower = Receiver::new(cfg.clone()).unwrap();
    rx.add_key(&key).unwrap();
    tx.add_key(&key).unwrap();
    follower.add_key(&key).unwrap();
    while rest.len() >= 2 {
        let n = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let pkt = &rest[2..2 + n];
        rest = &rest[2 + n..];

        let mut buf = pkt.to_vec();
        if let Ok(u) = rx.unprotect_rtp(&mut buf) {
            assert!(u.len <= pkt.len());
        }

        let mut p = pkt.to_vec();
        if tx.protect_rtp_vec(&mut p).is_ok() {
            let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
            if follower.roc(ssrc).is_none() {
                follower.set_roc(ssrc, 0).unwrap();
            }
            let got = follower
                .unprotect_rtp_vec(&mut p)
                .expect("a packet we protected must unprotect");
            assert_eq!(&p[..], pkt);
            assert_eq!(got.ssrc, ssrc);
        }
    }
});
