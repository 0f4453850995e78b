//! `Message::parse` never panics, and every input it accepts re-emits
//! byte for byte and parses again to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mikey::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let out = m.to_bytes();
        assert_eq!(out, data, "re-emission differs from the input");
        assert_eq!(m.encoded_len(), data.len());
        let again = Message::parse(&out).expect("re-emitted message parses");
        assert_eq!(again, m);
        assert_eq!(m.clone().into_owned(), m);
    }
});
