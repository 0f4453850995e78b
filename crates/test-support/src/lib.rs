//! # mbms-test-support: helpers for the workspace's tests
//!
//! A dev-dependency only. [`skip`] is the one way a test says it skipped
//! part or all of its work because something of the machine is missing
//! (PostgreSQL, tshark, libsrtp, curl): the line shows in `cargo test`'s
//! output without `--nocapture`. [`cpu_time`] measures criterion
//! benchmarks in the benchmark thread's CPU time ([`bench_main!`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cpu_time;

use std::fmt::Display;
use std::io::Write as _;

/// Writes `skipped: <test>: <reason>` to the process's stderr.
///
/// libtest captures the output of `print!`/`eprint!` (and shows it only
/// for failing tests or with `--nocapture`); a write to
/// [`std::io::stderr`] itself is not captured, so the line always shows.
/// `<test>` is the running test's name (libtest names the thread after
/// the test), or the caller's file and line where the thread has no test
/// name (e.g. `--test-threads=1` on the main thread).
#[track_caller]
pub fn skip(reason: impl Display) {
    let caller = std::panic::Location::caller();
    let line = match std::thread::current().name() {
        Some(name) if name != "main" => format!("skipped: {name}: {reason}\n"),
        _ => format!("skipped: {}:{}: {reason}\n", caller.file(), caller.line()),
    };
    // One write of the whole line, so parallel tests do not interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Starts `bin ARGS` in `dir` (`RUST_LOG=info`, standard error piped) and
/// returns it with the first line of its log that contains `marker`; the
/// rest of the log is read on a thread of its own, so the child never
/// blocks on a full pipe. Panics, after killing the child, if it exits
/// before logging `marker`.
pub fn spawn_until(
    bin: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
    marker: &str,
) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} {args:?}: {e}", bin.display()));
    let stderr = child.stderr.take().expect("piped standard error");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut log = String::new();
    let found = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!(
                "{} {args:?} exited before {marker:?}:\n{log}",
                bin.display()
            );
        };
        log.push_str(&line);
        log.push('\n');
        if line.contains(marker) {
            break line;
        }
    };
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    (child, found)
}
