//! Build the example MBMS MSK delivery message shown in the README
//! (`docs/examples/msk-delivery.hex`) from fixed inputs and print it in hex.
//!
//! Layout per PROFILE.md section 6: HDR(data type 0, V=1, CSB ID 0, #CS 0,
//! empty map) · T(COUNTER) · RAND · IDi(URI) · IDr(NAI) · EXT(Key ID MSK) ·
//! KEMAC(AES-CM-128, HMAC-SHA-1-160; TGK, KV Interval).
//!
//! Run: `cargo run -p mikey --example msk_delivery`

use mikey::*;

/// The MUK of the example (32 bytes 0x00..0x1f).
pub const MUK: [u8; 32] = {
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = i as u8;
        i += 1;
    }
    k
};

/// Build the example message.
pub fn build() -> Protected {
    let msk = KeyData {
        kind: KeyKind::Tgk,
        key: SecretBytes::new(hex_bytes("3c2a77e5b8f0d1946a0b5e21c7d48f90")),
        salt: None,
        validity: KeyValidity::Interval {
            from: vec![0x00, 0x00].into(),
            to: vec![0x00, 0xff].into(),
        },
    };
    MessageBuilder::new(DataType::PSK_INIT)
        .verification_requested(true)
        .csb_id(0)
        .timestamp(Timestamp::Counter(1))
        .rand(hex_bytes("a1b2c3d4e5f60718293a4b5c6d7e8f90"))
        .id(IdType::URI, "bmsc.home1.net")
        .id(IdType::NAI, "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net")
        // Key Domain ID 001-01 (00 f1 10) || MSK ID: Key Group 1, Key Number 1.
        .key_id(KeyIdType::MSK, hex_bytes("00f11000010001"))
        .protect(&MUK, EncrAlg::AES_CM_128, &[msk])
        .expect("valid message")
}

#[allow(dead_code)]
fn main() {
    let hex: String = build().bytes().iter().map(|b| format!("{b:02x}")).collect();
    println!("{hex}");
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
