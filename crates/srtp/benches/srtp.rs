//! Protect and unprotect throughput of this crate and of the system
//! libsrtp, side by side in the same run: AES_CM_128_HMAC_SHA1_80, 160- and
//! 1200-byte payloads, 12-byte RTP header, no MKI. Throughput counts payload
//! bytes. Packets are processed in place in batches of 64 with increasing
//! SEQ (so the replay checks run as in real use); filling and protecting
//! the batch for the unprotect measurement is not timed.
//!
//! `cargo bench -p srtp --bench srtp -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
#[cfg(has_libsrtp)]
use srtp::Suite;
use srtp::{Config, MasterKey, Receiver, Sender};

#[cfg(has_libsrtp)]
#[path = "../tests/libsrtp/mod.rs"]
mod libsrtp;

const BATCH: usize = 64;
const ROOM: usize = 160;
const SSRC: u32 = 0xdead_beef;
const KEY: [u8; 30] = [
    0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde, 0x41, 0x39,
    0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a, 0xab, 0xe6,
];

trait Impl {
    fn protect(&mut self, buf: &mut [u8], len: usize) -> usize;
    fn unprotect(&mut self, buf: &mut [u8]) -> usize;
}

struct Ours {
    tx: Sender,
    rx: Receiver,
}

impl Ours {
    fn new() -> Ours {
        let key = MasterKey::from_slices(&KEY[..16], &KEY[16..], &[]).unwrap();
        let mut tx = Sender::new(Config::default()).unwrap();
        let mut rx = Receiver::new(Config::default()).unwrap();
        tx.add_key(&key).unwrap();
        rx.add_key(&key).unwrap();
        Ours { tx, rx }
    }
}

impl Impl for Ours {
    #[inline]
    fn protect(&mut self, buf: &mut [u8], len: usize) -> usize {
        self.tx.protect_rtp(buf, len).unwrap()
    }
    #[inline]
    fn unprotect(&mut self, buf: &mut [u8]) -> usize {
        self.rx.unprotect_rtp(buf).unwrap().len
    }
}

#[cfg(has_libsrtp)]
struct Lib {
    tx: libsrtp::LibSrtp,
    rx: libsrtp::LibSrtp,
}

#[cfg(has_libsrtp)]
impl Lib {
    fn new() -> Lib {
        use libsrtp::{Direction, LibSrtp};
        let keys = vec![(KEY, Vec::new())];
        Lib {
            tx: LibSrtp::new(
                Direction::Outbound,
                Suite::AES_CM_128_HMAC_SHA1_80,
                &keys,
                0,
            ),
            rx: LibSrtp::new(Direction::Inbound, Suite::AES_CM_128_HMAC_SHA1_80, &keys, 0),
        }
    }
}

#[cfg(has_libsrtp)]
impl Impl for Lib {
    #[inline]
    fn protect(&mut self, buf: &mut [u8], len: usize) -> usize {
        self.tx.protect(buf, len, 0).unwrap()
    }
    #[inline]
    fn unprotect(&mut self, buf: &mut [u8]) -> usize {
        self.rx.unprotect(buf).unwrap()
    }
}

/// Writes an RTP packet with this SEQ into `slot`; returns its length.
fn fill(slot: &mut [u8], seq: u16, payload: usize) -> usize {
    slot[..2].copy_from_slice(&[0x80, 96]);
    slot[2..4].copy_from_slice(&seq.to_be_bytes());
    slot[4..8].copy_from_slice(&(seq as u32).wrapping_mul(160).to_be_bytes());
    slot[8..12].copy_from_slice(&SSRC.to_be_bytes());
    slot[12..12 + payload].fill(0xab);
    12 + payload
}

struct Bench<I> {
    imp: I,
    seq: u16,
    bufs: Vec<u8>,
    lens: Vec<usize>,
}

impl<I: Impl> Bench<I> {
    fn new(imp: I, payload: usize) -> Bench<I> {
        Bench {
            imp,
            seq: 1,
            bufs: vec![0; BATCH * (12 + payload + ROOM + libsrtp_room())],
            lens: vec![0; BATCH],
        }
    }

    fn protect(&mut self, payload: usize, iters: u64) -> Duration {
        let stride = self.bufs.len() / BATCH;
        let mut total = Duration::ZERO;
        let mut done = 0u64;
        while done < iters {
            let n = (iters - done).min(BATCH as u64) as usize;
            for k in 0..n {
                self.lens[k] = fill(&mut self.bufs[k * stride..], self.seq, payload);
                self.seq = self.seq.wrapping_add(1);
            }
            let t = Instant::now();
            for k in 0..n {
                let slot = &mut self.bufs[k * stride..(k + 1) * stride];
                black_box(self.imp.protect(slot, self.lens[k]));
            }
            total += t.elapsed();
            done += n as u64;
        }
        total
    }

    fn unprotect(&mut self, payload: usize, iters: u64) -> Duration {
        let stride = self.bufs.len() / BATCH;
        let mut total = Duration::ZERO;
        let mut done = 0u64;
        while done < iters {
            let n = (iters - done).min(BATCH as u64) as usize;
            for k in 0..n {
                let len = fill(&mut self.bufs[k * stride..], self.seq, payload);
                self.seq = self.seq.wrapping_add(1);
                self.lens[k] = self
                    .imp
                    .protect(&mut self.bufs[k * stride..(k + 1) * stride], len);
            }
            let t = Instant::now();
            for k in 0..n {
                let slot = &mut self.bufs[k * stride..k * stride + self.lens[k]];
                black_box(self.imp.unprotect(slot));
            }
            total += t.elapsed();
            done += n as u64;
        }
        total
    }
}

fn libsrtp_room() -> usize {
    #[cfg(has_libsrtp)]
    {
        libsrtp::MAX_TRAILER
    }
    #[cfg(not(has_libsrtp))]
    {
        0
    }
}

fn bench(c: &mut Criterion) {
    #[cfg(not(has_libsrtp))]
    eprintln!("libsrtp2 not installed: measuring this crate only");
    for op in ["protect", "unprotect"] {
        let mut g = c.benchmark_group(format!("srtp_{op}_aes_cm_128_hmac_sha1_80"));
        for payload in [160usize, 1200] {
            g.throughput(Throughput::Bytes(payload as u64));
            let mut ours = Bench::new(Ours::new(), payload);
            g.bench_with_input(BenchmarkId::new("srtp-rs", payload), &payload, |b, &p| {
                b.iter_custom(|iters| match op {
                    "protect" => ours.protect(p, iters),
                    _ => ours.unprotect(p, iters),
                })
            });
            #[cfg(has_libsrtp)]
            {
                let mut lib = Bench::new(Lib::new(), payload);
                g.bench_with_input(BenchmarkId::new("libsrtp", payload), &payload, |b, &p| {
                    b.iter_custom(|iters| match op {
                        "protect" => lib.protect(p, iters),
                        _ => lib.unprotect(p, iters),
                    })
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
