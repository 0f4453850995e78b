//! The hot path allocates nothing: protect and unprotect (SRTP and SRTCP)
//! into caller buffers, measured with a counting global allocator. Only the
//! first packet of a new SSRC may allocate (its stream state).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use srtp::*;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(|c| c.get())
}

fn run(cfg: Config) {
    let key = MasterKey::from_slices(&[3; 16], &[4; 14], &vec![9u8; cfg.mki_len]).unwrap();
    let mut tx = Sender::new(cfg.clone()).unwrap();
    let mut rx = Receiver::new(cfg.clone()).unwrap();
    tx.add_key(&key).unwrap();
    rx.add_key(&key).unwrap();
    rx.set_roc(0x1234_5678, 0).unwrap();
    let mut buf = [0u8; 1400];
    let mut seq = 65000u16;
    let mut step = |buf: &mut [u8; 1400], seq: u16| {
        buf[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        let n = tx.protect_rtp(buf, 1200).unwrap();
        let got = rx.unprotect_rtp(&mut buf[..n]).unwrap();
        assert_eq!(got.len, 1200);
        let mut c = [0u8; 200];
        c[..8].copy_from_slice(&[0x80, 200, 0, 1, 0x12, 0x34, 0x56, 0x78]);
        let n = tx.protect_rtcp(&mut c, 100).unwrap();
        rx.unprotect_rtcp(&mut c[..n]).unwrap();
    };
    // Warm up: the first packets create the stream state.
    step(&mut buf, seq);
    let before = allocs();
    for _ in 0..2000 {
        seq = seq.wrapping_add(1); // crosses the rollover
        step(&mut buf, seq);
    }
    // Error paths allocate nothing either.
    let mut junk = [0x80u8; 40];
    let _ = rx.unprotect_rtp(&mut junk);
    let _ = rx.unprotect_rtcp(&mut junk);
    assert_eq!(
        allocs() - before,
        0,
        "allocations on the hot path ({cfg:?})"
    );
}

#[test]
fn hot_path_allocates_nothing() {
    run(Config::default());
    run(Config::mbms());
    run(Config {
        suite: Suite::AES_CM_128_HMAC_SHA1_32,
        ..Config::mbms()
    });
    run(Config {
        rcc: Some(Rcc {
            mode: RccMode::Rccm2,
            rate: 7,
        }),
        replay_window: 1024,
        ..Config::mbms()
    });
}
