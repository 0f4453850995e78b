//! The hot paths of MBMS MSK delivery (`PROFILE.md` section 6): parsing an
//! MSK message, building and protecting one, verifying and decrypting one,
//! and the PSK key derivation they both contain.
//!
//! ```text
//! cargo bench -p mikey --bench mikey -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! With `MBMS_BENCH_CPU_TIME=1` criterion measures the CPU time of the
//! benchmark thread instead of the wall clock (as `mbms`'s `msk` bench).

use std::hint::black_box;

use criterion::measurement::Measurement;
use criterion::Criterion;
use mikey::*;

/// The MUK (a 32-byte pre-shared key).
const MUK: [u8; 32] = [
    0x61, 0xfe, 0x78, 0x6b, 0x6a, 0x0f, 0x40, 0x85, 0x32, 0x8d, 0xa6, 0x23, 0x47, 0xd1, 0xcb, 0xd3,
    0x14, 0xcb, 0x7c, 0xfd, 0x9d, 0xcb, 0xf7, 0x1f, 0x41, 0x21, 0xef, 0xd1, 0xcf, 0x2c, 0x91, 0xaa,
];
const RAND: [u8; 16] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];
const BMSC_FQDN: &str = "bmsc.home1.net";
const B_TID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net";
/// Key Domain ID (MCC || MNC, 3 bytes) || MSK ID (4 bytes).
const MSK_KEY_ID: [u8; 7] = [0x00, 0xf1, 0x10, 0x00, 0x00, 0x00, 0x01];
const MSK: [u8; 16] = [0x11; 16];

/// The key data sub-payload: TGK, KV Interval with VF = SEQs and VT = SEQu
/// (2 bytes each), key = MSK.
fn msk_key_data() -> KeyData {
    KeyData {
        kind: KeyKind::Tgk,
        key: SecretBytes::new(MSK.to_vec()),
        salt: None,
        validity: KeyValidity::Interval {
            from: vec![0x00, 0x01].into(),
            to: vec![0x00, 0x64].into(),
        },
    }
}

/// An MSK delivery message as `PROFILE.md` section 6 describes it:
/// HDR(data type 0, V = 1, CSB ID 0, #CS 0, map 1) · T(COUNTER) · RAND ·
/// IDi(URI) · IDr(NAI, B-TID) · EXT(Key ID MSK) · KEMAC(AES-CM-128 +
/// HMAC-SHA-1-160, one TGK key data sub-payload).
fn build_msk_message(keys: &[KeyData]) -> Protected {
    MessageBuilder::new(DataType::PSK_INIT)
        .verification_requested(true)
        .csb_id(0)
        .cs_id_map(CsIdMap::Empty { cs_count: 0 })
        .timestamp(Timestamp::Counter(1))
        .rand(RAND)
        .id(IdType::URI, BMSC_FQDN)
        .id(IdType::NAI, B_TID)
        .key_id(KeyIdType::MSK, MSK_KEY_ID)
        .protect(&MUK, EncrAlg::AES_CM_128, keys)
        .expect("protect")
}

fn benches<M: Measurement + 'static>(c: &mut Criterion<M>) {
    let keys = [msk_key_data()];
    let bytes = build_msk_message(&keys).into_bytes();
    // Sanity: the message is what the benches claim to measure.
    let opened = open_psk(&bytes, &MUK).expect("open");
    assert_eq!(opened.key_data, keys);
    assert_eq!(opened.message.payloads().len(), 6);

    c.bench_function("parse_msk_message", |b| {
        b.iter(|| Message::parse(black_box(&bytes)).expect("parse"))
    });
    c.bench_function("build_protect_msk_message", |b| {
        b.iter(|| build_msk_message(black_box(&keys)))
    });
    c.bench_function("verify_decrypt_msk_message", |b| {
        b.iter(|| open_psk(black_box(&bytes), black_box(&MUK)).expect("open"))
    });
    c.bench_function("prf_derive_psk_keys", |b| {
        b.iter(|| PskKeys::derive(black_box(&MUK), black_box(0), black_box(&RAND)))
    });
}

mbms_test_support::bench_main!(benches);
