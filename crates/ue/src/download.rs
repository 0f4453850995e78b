//! Download sessions: the UE scans the session's input folder for protected
//! objects (`PROFILE.md` section 8, `docs/download-object.md`) and their
//! MIKEY MTK messages (`<name>.mikey`), hands the MTK message to the MGV-F
//! when the ME does not hold the MTK the object header names, and writes
//! the verified plaintext to the output folder: through `<file>.partial`,
//! renamed only after the tag verified, so a tampered object never yields
//! any output.
//!
//! An object whose MSK the UE does not hold triggers the missed key update
//! (through the MGV-F's "unknown MSK") and is retried at the next scan.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{debug, info};

use srtp::download::{self, DownloadError, ObjectHeader};

use crate::core::MtkStatus;
use crate::events::UeEvent;
use crate::runtime::Shell;

/// Suffix of the MIKEY MTK message beside an object.
pub const MIKEY_SUFFIX: &str = ".mikey";

/// Suffix some senders give protected objects; removed from the output
/// name (`news.ts.mbmspo` -> `news.ts`).
pub const OBJECT_SUFFIX: &str = ".mbmspo";

/// One download session to watch.
pub(crate) struct Watch {
    pub name: String,
    pub stats: usize,
    pub protected: bool,
    /// The protections the service announces (seed 000 6.3.2.2.2): an
    /// object whose header lacks one is refused.
    pub required: download::Protection,
    pub input: PathBuf,
    pub output: PathBuf,
    pub every: Duration,
}

type Seen = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

pub(crate) async fn watch(shell: Arc<Shell>, w: Watch) {
    let mut seen = Seen::new();
    loop {
        scan(&shell, &w, &mut seen).await;
        tokio::time::sleep(w.every).await;
    }
}

fn is_object_name(name: &str) -> bool {
    !(name.starts_with('.')
        || name.ends_with(MIKEY_SUFFIX)
        || name.ends_with(".partial")
        || name.ends_with(".tmp"))
}

/// The plain file name of an object.
pub fn output_name(object: &str) -> &str {
    object.strip_suffix(OBJECT_SUFFIX).unwrap_or(object)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

async fn scan(shell: &Arc<Shell>, w: &Watch, seen: &mut Seen) {
    let Ok(dir) = fs::read_dir(&w.input) else {
        return;
    };
    let mut names: Vec<(PathBuf, String)> = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_owned();
            is_object_name(&n).then(|| (e.path(), n))
        })
        .collect();
    names.sort();
    for (path, name) in names {
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        let stamp = (meta.len(), meta.modified().ok());
        if seen.get(&path) == Some(&stamp) {
            continue;
        }
        let out = w.output.join(output_name(&name));
        // After a restart: an output newer than the object is done.
        let first_sight = !seen.contains_key(&path);
        let done_before = matches!((mtime(&out), stamp.1), (Some(o), Some(i)) if o >= i);
        if first_sight && done_before {
            seen.insert(path, stamp);
            continue;
        }
        if process(shell, w, &path, &name, &out).await {
            seen.insert(path, stamp);
        }
    }
}

/// Returns whether the object is finished with (decrypted or refused).
async fn process(shell: &Arc<Shell>, w: &Watch, path: &Path, name: &str, out: &Path) -> bool {
    if !w.protected {
        return match fs::copy(path, out) {
            Ok(_) => {
                shell.core().stats[w.stats].downloads_ok += 1;
                shell.event(UeEvent::DownloadDecrypted {
                    session: w.name.clone(),
                    file: out.to_owned(),
                });
                true
            }
            Err(_) => false,
        };
    }
    let header = match fs::File::open(path)
        .map_err(DownloadError::from)
        .and_then(|mut f| ObjectHeader::read_from(&mut f))
    {
        Ok(h) => h,
        Err(DownloadError::Io(e)) => {
            debug!(object = %path.display(), error = %e, "object not readable yet");
            return false;
        }
        Err(e) => {
            refuse(shell, w, path, e.to_string());
            return true;
        }
    };
    // Refused before any key work; unprotect_file_with checks again on the
    // bytes it decrypts.
    if let Err(e) = header.require(w.required) {
        refuse(shell, w, path, e.to_string());
        return true;
    }
    let mut keys = shell.core().download_keys(&header);
    if keys.is_none() {
        let mut mikey = path.as_os_str().to_owned();
        mikey.push(MIKEY_SUFFIX);
        if let Ok(bytes) = fs::read(PathBuf::from(mikey)) {
            let (st, outs) = shell.core().on_mtk(&bytes);
            shell.exec(outs).await;
            keys = shell.core().download_keys(&header);
            if let (None, MtkStatus::Refused(why)) = (&keys, st) {
                refuse(shell, w, path, why);
                return true;
            }
        }
    }
    let Some(keys) = keys else {
        debug!(object = name, "waiting for the MTK of the object");
        return false;
    };
    let (input, output, required) = (path.to_owned(), out.to_owned(), w.required);
    let r = tokio::task::spawn_blocking(move || {
        download::unprotect_file_with(&keys, required, &input, &output)
    })
    .await;
    match r {
        Ok(Ok(_)) => {
            info!(object = name, file = %out.display(), "download object decrypted");
            shell.core().stats[w.stats].downloads_ok += 1;
            shell.event(UeEvent::DownloadDecrypted {
                session: w.name.clone(),
                file: out.to_owned(),
            });
            true
        }
        Ok(Err(DownloadError::Io(e))) => {
            debug!(object = name, error = %e, "I/O error, retrying later");
            false
        }
        Ok(Err(e)) => {
            refuse(shell, w, path, e.to_string());
            true
        }
        Err(_) => false,
    }
}

fn refuse(shell: &Arc<Shell>, w: &Watch, path: &Path, reason: String) {
    {
        let mut c = shell.core();
        c.stats[w.stats].downloads_refused += 1;
        c.error(format!(
            "download object {} refused: {reason}",
            path.display()
        ));
    }
    shell.event(UeEvent::DownloadRefused {
        session: w.name.clone(),
        object: path.to_owned(),
        reason,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_object_name("news.ts"));
        assert!(!is_object_name("news.ts.mikey"));
        assert!(!is_object_name("news.ts.partial"));
        assert!(!is_object_name(".hidden"));
        assert_eq!(output_name("a.ts.mbmspo"), "a.ts");
        assert_eq!(output_name("a.ts"), "a.ts");
    }
}
