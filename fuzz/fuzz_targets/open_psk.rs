//! `open_psk` with a fixed 32-byte key (a MUK) never panics. Random input
//! almost never carries a valid MAC, so the decryption and key data parsing
//! behind the MAC check are also driven directly, as is the verification
//! MAC check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mikey::crypto::{decrypt_kemac, verify_verification_mac, InitiatorFields};
use mikey::{open_psk, Message, PskKeys};

const PSK: [u8; 32] = [0x42; 32];

fuzz_target!(|data: &[u8]| {
    let _ = open_psk(data, &PSK);
    if let Ok(m) = Message::parse(data) {
        let keys = PskKeys::for_message(&PSK, &m);
        let _ = decrypt_kemac(&m, &keys);
        let init = InitiatorFields::of(&m);
        let _ = verify_verification_mac(data, &m, &keys.auth_key, &init);
    }
});
