//! `mbms man --out-dir DIR`: man pages generated from the clap definitions
//! (`clap_mangen`), one per command and subcommand, named as git names its
//! own (`mbms-ue-run.1`), so `man mbms-bmsc` works once installed.

use std::path::{Path, PathBuf};

/// Writes `NAME.1` for `cmd` and, recursively, for each visible subcommand
/// (named `PARENT-SUB`); returns the files written.
pub fn write_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    write_one(cmd, None, dir, &mut written)?;
    Ok(written)
}

fn write_one(
    cmd: clap::Command,
    parent: Option<&str>,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let name = match parent {
        Some(p) => format!("{p}-{}", cmd.get_name()),
        None => cmd.get_name().to_string(),
    };
    // The page's title and synopsis use the full name; `mbms` keeps its
    // version, which subcommands inherit.
    let cmd = cmd.name(name.clone()).bin_name(name.replace('-', " "));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page)?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_one(sub.clone(), Some(&name), dir, written)?;
    }
    Ok(())
}
