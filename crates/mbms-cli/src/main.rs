//! `mbms`: the command-line front end of the MBMS security stack.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod bench;
mod bench_rekey;
mod cluster_args;
mod demo;
mod inspect;
mod man;
mod pcap_decrypt;

/// `mbms --version`: the package version and the git commit it was built
/// from (`build.rs`; "-modified" when the tree had uncommitted changes).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MBMS_GIT_COMMIT"),
    ")"
);

/// MBMS security (3GPP TS 33.246): MIKEY tools, BSF, BM-SC, UE and demo.
#[derive(Parser, Debug)]
#[command(name = "mbms", version = VERSION, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// MIKEY (RFC 3830) tools.
    #[command(subcommand)]
    Mikey(MikeyCommand),
    /// GBA Bootstrapping Server Function: Ub bootstrapping (TS 24.109) and
    /// the Zn key service; `mbms bsf --config FILE` starts it, `mbms bsf
    /// subscriber ...` manages its subscribers.
    Bsf(bsf::cli::BsfArgs),
    /// BM-SC key management server (TS 33.246): Ua registration and MSK
    /// requests with HTTP Digest, MIKEY MSK/MTK delivery over UDP, SRTP and
    /// download protection, admin API; `mbms bmsc --config FILE` starts it.
    Bmsc(bmsc::cli::BmscArgs),
    /// MBMS UE: `mbms ue run --config FILE` runs the UE, `mbms ue status`
    /// shows it, `mbms ue bootstrap` runs GBA bootstrapping.
    Ue(ue::cli::UeArgs),
    /// Print the deterministic MBMS MIKEY test vectors (every message type of
    /// the profile with all inputs, the bytes and the derived keys); the same
    /// as testvectors/mbms-mikey.json.
    Vectors(VectorsArgs),
    /// Benchmarks: `mbms bench srtp` prints the SRTP protect and unprotect
    /// throughput of this implementation (MB/s of payload, one core).
    Bench(bench::BenchArgs),
    /// The whole system in one command: a BSF, a BM-SC and N UEs on
    /// loopback through every procedure, with byte-exact checks; `--pcap`
    /// and `--keylog` write captures (docs/demo.md). Exit 0 only if every
    /// procedure succeeded for every UE.
    Demo(demo::DemoArgs),
    /// Capture tools: `mbms pcap decrypt` opens the MIKEY and SRTP of a
    /// capture with a key log (docs/wireshark.md).
    #[command(subcommand)]
    Pcap(PcapCommand),
    /// Write the man pages of `mbms` and of each of its subcommands
    /// (mbms.1, mbms-bsf.1, mbms-bmsc.1, ...) into a folder, as the Debian
    /// package installs them.
    Man(ManArgs),
}

#[derive(Subcommand, Debug)]
enum PcapCommand {
    /// Write a copy of a capture in which every SRTP packet that a key of
    /// the key log opens is replaced by its plain RTP, and every MIKEY packet
    /// carries a packet comment saying what the key log opened in it.
    ///
    /// The output is pcapng: SRTP packets that open become plain RTP (for
    /// Wireshark's RTP player and stream analysis, with `-d
    /// udp.port==PORT,rtp` or the dissector contrib/wireshark/mbms-mikey.lua);
    /// MIKEY packets get a comment "mbms pcap decrypt: ..." with whether the
    /// MAC verified, the MSK or MTK ID, the key, the salt and the key
    /// validity (SEQs/SEQu, inactive, SPI/MKI); packets that cannot be
    /// opened stay as they were, with a comment why.
    ///
    /// SECRETS: the output holds the plain traffic and the comments hold the
    /// keys themselves (you asked for decryption): it is written with mode
    /// 0600; share it as you would share the key log.
    ///
    /// Exit status: 0 written; 2 unreadable input or key log, or the output
    /// could not be written.
    Decrypt(PcapDecryptArgs),
}

#[derive(Args, Debug)]
struct PcapDecryptArgs {
    /// The capture (pcap or pcapng), e.g. from `mbms demo --pcap`.
    input: std::path::PathBuf,
    /// The key log (docs/keylog.md), e.g. from `mbms demo --keylog`.
    #[arg(long, value_name = "FILE")]
    keylog: std::path::PathBuf,
    /// The pcapng file to write (mode 0600; replaced atomically if it
    /// exists).
    #[arg(short = 'o', long = "output", value_name = "OUT.pcapng")]
    output: std::path::PathBuf,
}

fn pcap_decrypt(a: PcapDecryptArgs) -> ExitCode {
    let run = || -> Result<pcap_decrypt::Summary, String> {
        let bytes = std::fs::read(&a.input).map_err(|e| format!("{}: {e}", a.input.display()))?;
        let cap = mbms_capture::read_capture(&bytes)
            .map_err(|e| format!("{}: {e}", a.input.display()))?;
        let keylog = std::fs::read_to_string(&a.keylog)
            .map_err(|e| format!("--keylog {}: {e}", a.keylog.display()))?;
        let (records, summary) = pcap_decrypt::decrypt(&cap, &keylog)
            .map_err(|e| format!("--keylog {}: {e}", a.keylog.display()))?;
        let out_err = |e: &dyn std::fmt::Display| format!("{}: {e}", a.output.display());
        let mut w = mbms_capture::PcapngWriter::new(
            Vec::new(),
            concat!("mbms pcap decrypt ", env!("CARGO_PKG_VERSION")),
        )
        .map_err(|e| out_err(&e))?;
        for i in &cap.interfaces {
            w.add_interface(u16::try_from(i.link_type).unwrap_or(u16::MAX), i.snaplen)
                .map_err(|e| out_err(&e))?;
        }
        for r in &records {
            w.write_packet(r.interface, r.time, &r.data, r.orig_len, &r.comments)
                .map_err(|e| out_err(&e))?;
        }
        let bytes = w.finish().map_err(|e| out_err(&e))?;
        // Keys and plain traffic: mode 0600, replaced atomically.
        mbms::mgvf::store::replace_private_file(&a.output, &bytes).map_err(|e| e.to_string())?;
        Ok(summary)
    };
    match run() {
        Ok(s) => {
            println!(
                "{} packets: {} MIKEY ({} verified with the key log), {} SRTP ({} replaced by plain RTP); written to {}",
                s.packets,
                s.mikey,
                s.mikey_verified,
                s.srtp,
                s.srtp_opened,
                a.output.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[derive(Args, Debug)]
struct ManArgs {
    /// The folder to write the pages to (created if missing).
    #[arg(long, value_name = "DIR")]
    out_dir: std::path::PathBuf,
}

#[derive(Args, Debug)]
struct VectorsArgs {
    /// Print the JSON document (schema "mbms-mikey-vectors/1") instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum MikeyCommand {
    /// Print a MIKEY message as a payload tree; with --psk verify its MAC and
    /// show the decrypted key data.
    ///
    /// Exit status: 0 decoded (and verified, with --psk); 1 the MAC did not
    /// verify (wrong key or altered message); 2 malformed input, with the
    /// payload and byte offset of the problem.
    Decode(DecodeArgs),
}

#[derive(Args, Debug)]
struct DecodeArgs {
    /// The message: HEX (spaces and colons allowed), base64:TEXT, @FILE (hex,
    /// base64: or raw binary), or - for standard input.
    input: String,
    /// Pre-shared key in hex: the MUK for MSK messages and their
    /// acknowledgements, the MSK for MTK messages. Key data is printed in hex.
    #[arg(long, value_name = "HEX")]
    psk: Option<String>,
    /// For a verification (acknowledgement) message: the message it
    /// acknowledges, in the same forms as INPUT. Needed to verify its MAC.
    #[arg(long, value_name = "INPUT")]
    initiator: Option<String>,
    /// Take the pre-shared key from a key log (docs/keylog.md, as written by
    /// `mbms demo --keylog`): the MUK named by IDi/IDr for MSK messages and
    /// acknowledgements, the MSK named by the MSK Key ID for MTK messages.
    #[arg(long, value_name = "FILE", conflicts_with = "psk")]
    keylog: Option<std::path::PathBuf>,
    /// Print JSON (schema "mbms-mikey-decode/1", see docs/mikey-decode-json.md).
    #[arg(long)]
    json: bool,
}

fn mikey_decode(a: DecodeArgs) -> ExitCode {
    let run = || -> Result<String, inspect::Failure> {
        let bytes = inspect::read_input(&a.input)?;
        let mut psk = a
            .psk
            .as_deref()
            .map(|p| inspect::decode_text(p).map_err(|e| prefix("--psk", e)))
            .transpose()?;
        if let Some(path) = &a.keylog {
            let text = std::fs::read_to_string(path).map_err(|e| {
                inspect::Failure::Input(format!("--keylog {}: {e}", path.display()))
            })?;
            psk = Some(inspect::key_from_keylog(&bytes, &text)?.ok_or_else(|| {
                inspect::Failure::Input(format!(
                    "--keylog {}: no key for this message",
                    path.display()
                ))
            })?);
        }
        let initiator = a
            .initiator
            .as_deref()
            .map(|i| inspect::read_input(i).map_err(|e| prefix("--initiator", e)))
            .transpose()?;
        inspect::decode(
            &bytes,
            &inspect::Options {
                psk,
                initiator,
                json: a.json,
            },
        )
    };
    match run() {
        Ok(out) => {
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(f) => {
            let code = f.exit_code();
            match f {
                inspect::Failure::Input(m) => eprintln!("error: {m}"),
                inspect::Failure::Malformed(e) => eprintln!("error: malformed MIKEY message: {e}"),
                inspect::Failure::Verification { output, reason } => {
                    let _ = std::io::stdout().write_all(output.as_bytes());
                    eprintln!(
                        "error: {reason}: the pre-shared key is wrong or the message was altered"
                    );
                }
            }
            ExitCode::from(code)
        }
    }
}

fn prefix(what: &str, f: inspect::Failure) -> inspect::Failure {
    match f {
        inspect::Failure::Input(m) => inspect::Failure::Input(format!("{what}: {m}")),
        other => other,
    }
}

/// Runs an async subcommand on a Tokio runtime; errors go to standard error
/// with their causes and exit status 1.
fn run_async<E>(fut: impl std::future::Future<Output = Result<(), E>>) -> ExitCode
where
    E: std::error::Error + Send + Sync + 'static,
{
    run_async_on(None, fut)
}

/// [`run_async`] on `workers` worker threads (`None`: one per CPU).
fn run_async_on<E>(
    workers: Option<usize>,
    fut: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    let result = b
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(fut).map_err(anyhow::Error::from));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Mikey(MikeyCommand::Decode(a)) => mikey_decode(a),
        Command::Bsf(a) => run_async(bsf::cli::run(a)),
        Command::Bmsc(a) => run_async_on(a.worker_threads.map(usize::from), bmsc::cli::run(a)),
        Command::Bench(a) => bench::run(a),
        Command::Ue(a) => run_async(ue::cli::run(a)),
        Command::Demo(a) => demo::run(a),
        Command::Pcap(PcapCommand::Decrypt(a)) => pcap_decrypt(a),
        Command::Man(a) => {
            use clap::CommandFactory as _;
            match man::write_pages(Cli::command(), &a.out_dir) {
                Ok(pages) => {
                    for p in pages {
                        println!("{}", p.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: writing man pages to {}: {e}", a.out_dir.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Vectors(a) => {
            let doc = mbms::vectors::generate();
            let out = if a.json {
                serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
            } else {
                mbms::vectors::to_text(&doc)
            };
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
    }
}
