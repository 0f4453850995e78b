//! Helpers shared by the integration tests.
#![allow(dead_code)]

use srtp::{Config, MasterKey, Mki, Receiver, Sender};

pub const SSRC: u32 = 0x0bad_cafe;

pub fn key(i: u8, mki: Mki) -> MasterKey {
    MasterKey::with_mki([i; 16], [i.wrapping_add(100); 14], mki)
}

pub fn pair(cfg: Config, keys: &[MasterKey]) -> (Sender, Receiver) {
    let mut tx = Sender::new(cfg.clone()).unwrap();
    let mut rx = Receiver::new(cfg).unwrap();
    for k in keys {
        tx.add_key(k).unwrap();
        rx.add_key(k).unwrap();
    }
    (tx, rx)
}

/// A plain RTP packet (12-byte header) with an n-byte payload.
pub fn rtp(seq: u16, n: usize) -> Vec<u8> {
    rtp_ssrc(seq, n, SSRC)
}

pub fn rtp_ssrc(seq: u16, n: usize, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x10, 0]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..n).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// A compound RTCP packet (SR).
pub fn rtcp(n: usize) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend((0..n).map(|i| i as u8));
    p
}

pub fn protect(tx: &mut Sender, p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    tx.protect_rtp_vec(&mut v).unwrap();
    v
}
