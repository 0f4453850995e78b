//! `KeyData::parse_list` (the decrypted KEMAC plaintext) never panics, and
//! every list it accepts re-emits byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mikey::KeyData;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = KeyData::parse_list(data, 0) {
        let mut out = Vec::new();
        KeyData::emit_list(&list, &mut out).expect("parsed key data re-emits");
        assert_eq!(out, data, "re-emission differs from the input");
    }
});
