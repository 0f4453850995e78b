//! The per-message work of an MSK rotation allocates nothing (issue 12):
//! building and protecting an MSK message into a reused buffer, parsing,
//! verifying and decrypting it, building its acknowledgement, and the
//! BM-SC's parse and verification of that acknowledgement. A counting
//! global allocator (per thread, so the test harness does not interfere)
//! checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mbms::ids::{KeyDomainId, MskId, MskName, MtkId, MukId};
use mbms::keys::{Msk, Mtk, MtkKey, MtkSalt, Muk};
use mbms::messages::{
    MskAckView, MskKeyData, MskMessage, MskView, MtkEnvelope, MtkMessage, PreparedMsk, PreparedMuk,
};
use mikey::HmacSha1Key;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; the
// count is a thread-local `Cell` with a const initializer (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn an_msk_rotation_allocates_nothing_per_message() {
    let muk = PreparedMuk::new(&Muk::from_bytes([0x4d; 32]));
    let muk_id = MukId::new("bmsc.home1.net", "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net");
    let key = MskKeyData {
        msk: Msk::from_bytes([0x11; 16]),
        seq_s: MtkId::new(1),
        seq_u: MtkId::new(100),
    };
    let template = MskMessage {
        muk_id,
        counter: 0,
        rand: [0; 16],
        msk: MskName {
            key_domain: KeyDomainId([0, 0xf1, 0x10]),
            msk_id: MskId::new(1, 2),
        },
        v: true,
        key: Some(key),
    };
    let mut message = Vec::with_capacity(256);
    let mut ack = Vec::with_capacity(256);
    let probe = allocations();
    drop(std::hint::black_box(Vec::<u8>::with_capacity(8)));
    assert_eq!(allocations(), probe + 1, "the counter counts");
    let before = allocations();
    for counter in 1..=1000u32 {
        // BM-SC: build and protect.
        let mut m = template.as_ref();
        m.counter = counter;
        m.rand = [counter as u8; 16];
        let keys = m.build_into(&muk, &mut message).unwrap();
        // UE: parse, verify, decrypt, acknowledge.
        let view = MskView::parse(&message).unwrap();
        let opened = view.open(&muk).unwrap();
        assert_eq!(opened.key.as_ref(), m.key);
        view.ack_into(&opened, &mut ack).unwrap();
        // BM-SC: match and verify the acknowledgement.
        let a = MskAckView::parse(&ack).unwrap();
        assert_eq!(a.counter, counter);
        let t = counter.to_be_bytes();
        a.verify(&HmacSha1Key::new(&keys.auth_key), m.initiator(&t))
            .unwrap();
    }
    assert_eq!(allocations() - before, 0, "allocations in 1000 rotations");
}

#[test]
fn a_download_mtk_message_allocates_nothing() {
    let msk = PreparedMsk::new(&Msk::from_bytes([0x22; 16]));
    let m = MtkMessage {
        counter: 1,
        rand: [7; 16],
        msk: MskName {
            key_domain: KeyDomainId([0, 0xf1, 0x10]),
            msk_id: MskId::new(1, 2),
        },
        mtk_id: MtkId::new(5),
        mtk: Mtk {
            key: MtkKey::from_bytes([0x33; 16]),
            salt: MtkSalt::from_bytes([0x44; 14]),
        },
        streaming: None,
    };
    let mut out = Vec::with_capacity(256);
    let before = allocations();
    for _ in 0..100 {
        m.build_into(&msk, &mut out).unwrap();
    }
    assert_eq!(allocations() - before, 0);
    assert_eq!(
        MtkEnvelope::parse(&out)
            .unwrap()
            .open_prepared(&msk)
            .unwrap(),
        m.mtk
    );
}
