//! `mbms bench srtp`: protect and unprotect throughput of the `srtp` crate
//! on this machine, one core, so that anyone can compare it with other SRTP
//! implementations (the criterion benchmark `cargo bench -p srtp` also runs
//! libsrtp side by side).
//!
//! Packets: a 12-byte RTP header and `--payload` bytes, one SSRC, SEQ
//! increasing (crossing rollovers), no MKI, processed in place in batches of
//! 64. MB/s counts payload bytes (10^6 bytes per MB). Filling the packets,
//! and protecting them before the unprotect measurement, is not timed.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use srtp::{Config, MasterKey, Receiver, Sender, Suite};

/// `mbms bench ...`
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// SRTP protect and unprotect throughput (MB/s of payload, one core).
    Srtp(SrtpArgs),
    /// One MSK rotation to N simulated UEs over the real BSF and BM-SC
    /// (started as child processes): setup rates, rekey time, messages,
    /// kernel UDP drops, BM-SC memory per UE, CPU per process.
    Rekey(crate::bench_rekey::RekeyArgs),
    /// Authenticated msk-request rate of the real BM-SC against an axum
    /// hello server and the protocol's floor (hello + a UDP push and its
    /// reply; and a group-committed row), driven by the same load
    /// generator in the same run.
    Http(crate::bench_rekey::HttpArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SuiteArg {
    /// AES_CM_128_HMAC_SHA1_80
    #[value(name = "80")]
    Sha1_80,
    /// AES_CM_128_HMAC_SHA1_32
    #[value(name = "32")]
    Sha1_32,
}

#[derive(Args, Debug)]
struct SrtpArgs {
    /// Payload bytes per packet (after a 12-byte RTP header).
    #[arg(long, value_name = "BYTES", default_value_t = 1200,
          value_parser = clap::value_parser!(u16).range(0..=65000))]
    payload: u16,
    /// Packets per measurement (protect and unprotect each).
    #[arg(long, value_name = "N", default_value_t = 200_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    packets: u64,
    /// Crypto suite by tag length: 80 (AES_CM_128_HMAC_SHA1_80) or 32.
    #[arg(long, value_enum, default_value = "80")]
    suite: SuiteArg,
    /// Print JSON (schema "mbms-bench-srtp/1").
    #[arg(long)]
    json: bool,
}

const BATCH: usize = 64;
const SSRC: u32 = 0x5eed_5eed;

/// Runs `mbms bench ...`.
pub fn run(a: BenchArgs) -> ExitCode {
    match a.what {
        BenchCommand::Srtp(a) => srtp_bench(a),
        BenchCommand::Rekey(a) => crate::bench_rekey::run(a),
        BenchCommand::Http(a) => crate::bench_rekey::run_http(a),
    }
}

struct Bench {
    /// Sender measured by `protect`.
    tx: Sender,
    /// Sender feeding `rx` (a receiver must see the stream it follows).
    feed: Sender,
    rx: Receiver,
    payload: usize,
    /// Next SEQ of `tx` and of `feed`.
    seq: [u16; 2],
    stride: usize,
    bufs: Vec<u8>,
    lens: [usize; BATCH],
}

impl Bench {
    fn new(suite: Suite, payload: usize) -> Bench {
        let cfg = Config {
            suite,
            ..Config::default()
        };
        // A fixed key: the benchmark measures speed, not secrecy.
        let key = MasterKey::new([0x2b; 16], [0x7e; 14]);
        let mut tx = Sender::new(cfg.clone()).expect("valid config");
        let mut feed = Sender::new(cfg.clone()).expect("valid config");
        let mut rx = Receiver::new(cfg.clone()).expect("valid config");
        tx.add_key(&key).expect("key");
        feed.add_key(&key).expect("key");
        rx.add_key(&key).expect("key");
        let stride = 12 + payload + cfg.rtp_overhead();
        Bench {
            tx,
            feed,
            rx,
            payload,
            seq: [0; 2],
            stride,
            bufs: vec![0u8; BATCH * stride],
            lens: [0; BATCH],
        }
    }

    fn fill(&mut self, n: usize, feed: bool) {
        let seq = &mut self.seq[feed as usize];
        for k in 0..n {
            let slot = &mut self.bufs[k * self.stride..(k + 1) * self.stride];
            slot[..2].copy_from_slice(&[0x80, 96]);
            slot[2..4].copy_from_slice(&seq.to_be_bytes());
            slot[4..8].copy_from_slice(&(*seq as u32).wrapping_mul(160).to_be_bytes());
            slot[8..12].copy_from_slice(&SSRC.to_be_bytes());
            slot[12..12 + self.payload].fill(0xa5);
            self.lens[k] = 12 + self.payload;
            *seq = seq.wrapping_add(1);
        }
    }

    fn protect_batch(&mut self, n: usize, feed: bool) -> Result<(), srtp::Error> {
        let tx = if feed { &mut self.feed } else { &mut self.tx };
        for k in 0..n {
            let slot = &mut self.bufs[k * self.stride..(k + 1) * self.stride];
            self.lens[k] = black_box(tx.protect_rtp(slot, self.lens[k])?);
        }
        Ok(())
    }

    fn protect(&mut self, packets: u64) -> Result<Duration, srtp::Error> {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < packets {
            let n = (packets - done).min(BATCH as u64) as usize;
            self.fill(n, false);
            let t = Instant::now();
            self.protect_batch(n, false)?;
            total += t.elapsed();
            done += n as u64;
        }
        Ok(total)
    }

    fn unprotect(&mut self, packets: u64) -> Result<Duration, srtp::Error> {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < packets {
            let n = (packets - done).min(BATCH as u64) as usize;
            self.fill(n, true);
            self.protect_batch(n, true)?;
            let t = Instant::now();
            for k in 0..n {
                let slot = &mut self.bufs[k * self.stride..k * self.stride + self.lens[k]];
                black_box(self.rx.unprotect_rtp(slot)?);
            }
            total += t.elapsed();
            done += n as u64;
        }
        Ok(total)
    }
}

struct Rate {
    mb_per_s: f64,
    packets_per_s: f64,
    ns_per_packet: f64,
}

fn rate(d: Duration, packets: u64, payload: usize) -> Rate {
    let s = d.as_secs_f64().max(1e-9);
    Rate {
        mb_per_s: (packets as f64 * payload as f64) / s / 1e6,
        packets_per_s: packets as f64 / s,
        ns_per_packet: s * 1e9 / packets as f64,
    }
}

fn srtp_bench(a: SrtpArgs) -> ExitCode {
    let suite = match a.suite {
        SuiteArg::Sha1_80 => Suite::AES_CM_128_HMAC_SHA1_80,
        SuiteArg::Sha1_32 => Suite::AES_CM_128_HMAC_SHA1_32,
    };
    let payload = a.payload as usize;
    let mut b = Bench::new(suite, payload);
    let run = |b: &mut Bench| -> Result<(Duration, Duration), srtp::Error> {
        // Warm-up: caches, branch predictors, CPU frequency.
        let warm = (a.packets / 10).clamp(1, 20_000);
        b.protect(warm)?;
        b.unprotect(warm)?;
        Ok((b.protect(a.packets)?, b.unprotect(a.packets)?))
    };
    let (p, u) = match run(&mut b) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (p, u) = (rate(p, a.packets, payload), rate(u, a.packets, payload));
    if a.json {
        let j = |r: &Rate| {
            serde_json::json!({
                "mb_per_s": (r.mb_per_s * 10.0).round() / 10.0,
                "packets_per_s": r.packets_per_s.round(),
                "ns_per_packet": (r.ns_per_packet * 10.0).round() / 10.0,
            })
        };
        let doc = serde_json::json!({
            "schema": "mbms-bench-srtp/1",
            "implementation": format!("srtp crate {}", env!("CARGO_PKG_VERSION")),
            "suite": suite.to_string(),
            "payload_bytes": payload,
            "rtp_header_bytes": 12,
            "packets": a.packets,
            "protect": j(&p),
            "unprotect": j(&u),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!(
            "SRTP {}, {payload}-byte payload (+12-byte RTP header), {} packets, one core",
            suite, a.packets
        );
        for (name, r) in [("protect", &p), ("unprotect", &u)] {
            println!(
                "  {name:<10} {:>9.1} MB/s  {:>6.3} Mpackets/s  {:>8.1} ns/packet",
                r.mb_per_s,
                r.packets_per_s / 1e6,
                r.ns_per_packet
            );
        }
    }
    ExitCode::SUCCESS
}
