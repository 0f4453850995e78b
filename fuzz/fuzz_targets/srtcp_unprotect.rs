//! `srtp::Receiver::unprotect_rtcp` never panics on a sequence of packets
//! (suite, MKI and E bit selected by the first byte); each input packet is
//! also protected as RTCP and must come back unchanged.
//!
//! Input: one configuration byte, then packets, each preceded by a 2-byte
//! big-endian length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp::{Config, MasterKey, Receiver, Sender, Suite};

const KEY: [u8; 16] = [0x42; 16];
const SALT: [u8; 14] = [0x24; 14];
const MKI: [u8; 6] = [0, 1, 0, 2, 0, 3];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let cfg = Config {
        // Every named suite, NULL cipher and NULL authentication included.
        suite: Suite::NAMED[usize::from(sel) % Suite::NAMED.len()].1,
        mki_len: if sel & 2 == 0 { 0 } else { MKI.len() },
        srtcp_encryption: sel & 4 == 0,
        ..Config::default()
    };
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
        if let Ok(u) = rx.unprotect_rtcp(&mut buf) {
            assert!(u.len <= pkt.len());
        }

        let mut p = pkt.to_vec();
        if tx.protect_rtcp_vec(&mut p).is_ok() {
            let got = follower
                .unprotect_rtcp_vec(&mut p)
                .expect("a packet we protected must unprotect");
            assert_eq!(&p[..], pkt);
            assert_eq!(got.encrypted, cfg.srtcp_encryption);
        }
    }
});
