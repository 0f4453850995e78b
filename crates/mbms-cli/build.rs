//! Records the git commit the binary is built from, for `mbms --version`.
//! Outside a git checkout (a source tarball, `cargo install` from a copy)
//! the commit is "unknown"; `MBMS_GIT_COMMIT` in the environment overrides
//! it (for packagers who build from an exported tree).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=MBMS_GIT_COMMIT");
    let commit = std::env::var("MBMS_GIT_COMMIT").ok().or_else(|| {
        let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
        Some(if dirty {
            format!("{hash}-modified")
        } else {
            hash
        })
    });
    // Rebuild when HEAD moves: HEAD itself, the branch it points to, and
    // the packed refs (paths from git, so worktrees work too).
    for p in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&["rev-parse", "--git-path", &r]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!(
        "cargo:rustc-env=MBMS_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
}
