//! Probes for the system libsrtp 2 (Debian package `libsrtp2-dev`).
//!
//! The library itself never uses libsrtp. Only the interoperability tests
//! (`tests/interop.rs`) and the comparison benchmark (`benches/srtp.rs`) link
//! it, through the hand-written binding in `tests/libsrtp/mod.rs`, and only
//! when this script found it and set `--cfg has_libsrtp`. Without it those
//! tests print "skipped: libsrtp2 not installed" and pass.
//!
//! `SRTP_NO_LIBSRTP=1` forces the skip.

use std::path::Path;
use std::process::Command;

const HEADER: &str = "/usr/include/srtp2/srtp.h";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_libsrtp)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=SRTP_NO_LIBSRTP");
    println!("cargo::rerun-if-changed={HEADER}");
    if std::env::var_os("SRTP_NO_LIBSRTP").is_some_and(|v| v == "1") {
        return;
    }
    let pkg_config = Command::new("pkg-config")
        .args(["--exists", "libsrtp2"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if pkg_config || Path::new(HEADER).exists() {
        println!("cargo::rustc-cfg=has_libsrtp");
    }
}
