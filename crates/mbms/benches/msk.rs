//! The MBMS MSK message (`PROFILE.md` section 6; 159 bytes, 32-byte MUK) on
//! its zero-allocation path, its owned path, its acknowledgement, and the
//! anchor: the raw SHA-1, HMAC-SHA-1 and AES-CTR work the message needs,
//! done with the same crates, so the ratio to the floor is visible in one
//! run (issue 12).
//!
//! ```text
//! cargo bench -p mbms --bench msk -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! With `MBMS_BENCH_CPU_TIME=1` criterion measures the CPU time of the
//! benchmark thread instead of the wall clock: on a machine shared with
//! other work, the time the thread spends waiting for a core then does not
//! count.

use std::hint::black_box;

use aes::cipher::{KeyIvInit, StreamCipher};

use criterion::measurement::Measurement;
use criterion::Criterion;
use hmac::{Hmac, Mac};
use mbms::ids::{KeyDomainId, MskId, MskName, MtkId, MukId};
use mbms::keys::{Msk, Muk};
use mbms::messages::{MskAckView, MskEnvelope, MskKeyData, MskMessage, MskView, PreparedMuk};
use mikey::HmacSha1Key;
use sha1::Sha1;

/// The MUK (32 bytes).
const MUK: [u8; 32] = [
    0x61, 0xfe, 0x78, 0x6b, 0x6a, 0x0f, 0x40, 0x85, 0x32, 0x8d, 0xa6, 0x23, 0x47, 0xd1, 0xcb, 0xd3,
    0x14, 0xcb, 0x7c, 0xfd, 0x9d, 0xcb, 0xf7, 0x1f, 0x41, 0x21, 0xef, 0xd1, 0xcf, 0x2c, 0x91, 0xaa,
];
const RAND: [u8; 16] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];
const BMSC_FQDN: &str = "bmsc.home1.net";
const B_TID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net";

/// The MSK delivery of the mikey bench: MSK 00f110 00000001, V = 1,
/// window (1, 100].
fn message() -> MskMessage {
    MskMessage {
        muk_id: MukId::new(BMSC_FQDN, B_TID),
        counter: 1,
        rand: RAND,
        msk: MskName {
            key_domain: KeyDomainId([0x00, 0xf1, 0x10]),
            msk_id: MskId::new(0, 1),
        },
        v: true,
        key: Some(MskKeyData {
            msk: Msk::from_bytes([0x11; 16]),
            seq_s: MtkId::new(1),
            seq_u: MtkId::new(100),
        }),
    }
}

/// The work the message needs, with the same crates and nothing else: the
/// MIKEY PRF's six one-block HMACs under the MUK (its HMAC state prepared
/// once), the KEMAC MAC keyed with the 20-byte auth_key over the 139 bytes
/// before the MAC, and AES-128-CTR (key schedule included) over the 26-byte
/// key data.
fn floor_hmac_crate(prepared: &Hmac<Sha1>, msg: &[u8]) -> [u8; 20] {
    let mut label = [0u8; 25];
    label[9..].copy_from_slice(&RAND);
    let mut keys = [0u8; 60];
    for (i, out) in keys.chunks_mut(20).enumerate() {
        label[0] = i as u8;
        let mut a = prepared.clone();
        a.update(&label);
        let a = a.finalize().into_bytes();
        let mut m = prepared.clone();
        m.update(&a);
        m.update(&label);
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    let mut data = [0u8; 26];
    let mut c = ctr::Ctr128BE::<aes::Aes128Enc>::new((&[7u8; 16]).into(), (&[9u8; 16]).into());
    c.apply_keystream(&mut data);
    let mut m = <Hmac<Sha1> as Mac>::new_from_slice(&keys[20..40]).unwrap();
    m.update(&msg[..138]);
    m.update(&data[..1]);
    m.finalize().into_bytes().into()
}

/// The same floor counted in SHA-1 compressions: 12 for the PRF, 2 for the
/// auth_key schedule, 3 for the 139-byte text, 1 outer = 18; plus the AES.
fn floor_compressions(state: &mut [u32; 5], block: &[u8; 64]) {
    let b = sha1::digest::generic_array::GenericArray::from_slice(block);
    for _ in 0..18 {
        sha1::compress(state, core::slice::from_ref(b));
    }
    let mut data = [0u8; 26];
    let mut c = ctr::Ctr128BE::<aes::Aes128Enc>::new((&[7u8; 16]).into(), (&[9u8; 16]).into());
    c.apply_keystream(&mut data);
    state[0] ^= u32::from(data[0]);
}

fn benches<M: Measurement + 'static>(c: &mut Criterion<M>) {
    let muk = Muk::from_bytes(MUK);
    let prepared = PreparedMuk::new(&muk);
    let owned = message();
    let m = owned.as_ref();
    let mut buf = Vec::with_capacity(256);
    let keys = m.build_into(&prepared, &mut buf).expect("build");
    let bytes = buf.clone();
    // Sanity: the message is what the benches claim to measure.
    assert_eq!(bytes.len(), 159);
    assert_eq!(owned.build(&muk).unwrap().bytes, bytes);
    let view = MskView::parse(&bytes).expect("parse");
    let opened = view.open(&prepared).expect("open");
    assert_eq!(opened.key, owned.key);
    let mut ack = Vec::with_capacity(256);
    view.ack_into(&opened, &mut ack).expect("ack");
    let t = owned.counter.to_be_bytes();
    MskAckView::parse(&ack)
        .unwrap()
        .verify(&HmacSha1Key::new(&keys.auth_key), m.initiator(&t))
        .expect("ack verifies");

    c.bench_function("msk/build_protect", |b| {
        b.iter(|| {
            black_box(m)
                .build_into(black_box(&prepared), &mut buf)
                .expect("build")
        })
    });
    c.bench_function("msk/parse_verify_decrypt", |b| {
        b.iter(|| {
            MskView::parse(black_box(&bytes))
                .expect("parse")
                .open(black_box(&prepared))
                .expect("open")
        })
    });
    c.bench_function("msk/ack_build", |b| {
        b.iter(|| {
            black_box(&view)
                .ack_into(black_box(&opened), &mut buf)
                .expect("ack")
        })
    });
    c.bench_function("msk/ack_parse_verify", |b| {
        b.iter(|| {
            let a = MskAckView::parse(black_box(&ack)).expect("parse");
            a.verify(
                &HmacSha1Key::new(black_box(&keys.auth_key)),
                m.initiator(&t),
            )
            .expect("verify");
            a.counter
        })
    });
    // The BM-SC's verification of an acknowledgement: the auth_key alone
    // recomputed from the prepared MUK and the message's RAND (what the
    // engine does), beside deriving all three message keys for it.
    c.bench_function("msk/ack_verify_from_muk", |b| {
        b.iter(|| {
            let a = MskAckView::parse(black_box(&ack)).expect("parse");
            a.verify(
                &black_box(&prepared).msk_ack_key(black_box(&RAND)),
                m.initiator(&t),
            )
            .expect("verify");
            a.counter
        })
    });
    c.bench_function("msk/ack_verify_from_muk_all_keys", |b| {
        b.iter(|| {
            let a = MskAckView::parse(black_box(&ack)).expect("parse");
            a.verify(
                &black_box(&prepared)
                    .msk_message_keys(black_box(&RAND))
                    .mac_key(),
                m.initiator(&t),
            )
            .expect("verify");
            a.counter
        })
    });
    c.bench_function("msk/owned_build_protect", |b| {
        b.iter(|| black_box(&owned).build(black_box(&muk)).expect("build"))
    });
    c.bench_function("msk/owned_parse_verify_decrypt", |b| {
        b.iter(|| {
            MskEnvelope::parse(black_box(&bytes))
                .expect("parse")
                .open(black_box(&muk))
                .expect("open")
        })
    });
    let hmac_prepared = <Hmac<Sha1> as Mac>::new_from_slice(&MUK).unwrap();
    c.bench_function("floor/hmac_crate", |b| {
        b.iter(|| floor_hmac_crate(black_box(&hmac_prepared), black_box(&bytes)))
    });
    let mut state = [1u32; 5];
    c.bench_function("floor/sha1_compress_x18_aes", |b| {
        b.iter(|| floor_compressions(black_box(&mut state), black_box(&[3u8; 64])))
    });
}

mbms_test_support::bench_main!(benches);
