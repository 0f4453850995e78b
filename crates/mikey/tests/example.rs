//! The README's example message is reproducible from its inputs and opens
//! with its MUK.

#[path = "../examples/msk_delivery.rs"]
mod msk_delivery;

use mikey::{open_psk, CryptoError, KeyIdType, KeyValidity, Message, OpenError};

fn published() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/msk-delivery.hex"
    );
    hex::decode(std::fs::read_to_string(path).expect("example file").trim()).expect("hex")
}

#[test]
fn example_bytes_are_reproducible() {
    assert_eq!(msk_delivery::build().bytes(), &published()[..]);
}

#[test]
fn example_opens_with_its_muk_and_not_without() {
    let bytes = published();
    let opened = open_psk(&bytes, &msk_delivery::MUK).expect("opens");
    assert!(opened.message.header().v);
    let kid = opened.message.key_ids().next().expect("key id");
    assert_eq!(kid.key_id_type, KeyIdType::MSK);
    assert_eq!(&*kid.key_id, &[0x00, 0xf1, 0x10, 0, 1, 0, 1]);
    assert_eq!(opened.key_data.len(), 1);
    assert_eq!(
        hex::encode(opened.key_data[0].key.expose()),
        "3c2a77e5b8f0d1946a0b5e21c7d48f90"
    );
    assert_eq!(
        opened.key_data[0].validity,
        KeyValidity::Interval {
            from: vec![0, 0].into(),
            to: vec![0, 0xff].into()
        }
    );
    let mut wrong = msk_delivery::MUK;
    wrong[31] ^= 1;
    assert_eq!(
        open_psk(&bytes, &wrong).unwrap_err(),
        OpenError::Crypto(CryptoError::MacMismatch)
    );
    assert_eq!(Message::parse(&bytes).unwrap().to_bytes(), bytes);
}
