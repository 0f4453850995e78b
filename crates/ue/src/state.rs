//! The UE's state directory: everything that must survive a restart.
//!
//! | file | content | mode |
//! |---|---|---|
//! | `usim.json` | SQN_MS of the simulated USIM | 0600 |
//! | `gba.json` | B-TID, key lifetime, RAND, Ks (secret) | 0600 |
//! | `mgvs.json` | the MGV-S (MUKs, MSKs, counters; `mbms::mgvf::store::FileStore`) | 0600 |
//! | `mtks.json` | the ME's MTK cache (secret) | 0600 |
//! | `registrations.json` | per service: registration status and time | 0600 |
//! | `status.json` | what `mbms ue status` shows of the running UE (no secrets) | 0600 |
//!
//! Every file is replaced atomically (write `<file>.tmp`, fsync, rename), so
//! a crash leaves the old or the new content. The directory is created with
//! mode 0700.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use zeroize::Zeroizing;

use gba::aka::Rand;
use gba::kdf::{derive_ks_ext_naf, derive_ks_int_naf, derive_ks_naf, KdfError};
use gba::{BTid, Ks, MbmsKeys, NafId};

use crate::bootstrap::Bootstrap;
use crate::config::GbaMode;

/// File names inside the state directory.
pub mod files {
    /// SQN_MS.
    pub const USIM: &str = "usim.json";
    /// The GBA bootstrapping session.
    pub const GBA: &str = "gba.json";
    /// The MGV-S.
    pub const MGVS: &str = "mgvs.json";
    /// The MTK cache.
    pub const MTKS: &str = "mtks.json";
    /// Registrations.
    pub const REGISTRATIONS: &str = "registrations.json";
    /// Runtime status.
    pub const STATUS: &str = "status.json";
}

/// A state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O failure.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The content is not what this UE writes.
    #[error("state file {path} is corrupt: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates the state directory (mode 0700) if needed.
pub fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io(dir))
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Writes a JSON document atomically (mode 0600). The serialised bytes are
/// zeroized after the write (they may hold keys).
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), StateError> {
    let bytes = Zeroizing::new(
        serde_json::to_vec_pretty(v).map_err(|e| StateError::Corrupt {
            path: path.to_owned(),
            why: e.to_string(),
        })?,
    );
    write_atomic(path, &bytes)
}

/// Reads a JSON document; `None` if the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match fs::read(path) {
        Ok(b) => {
            let b = Zeroizing::new(b);
            serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    path: path.to_owned(),
                    why: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// `usim.json`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsimState {
    /// The highest SQN the USIM accepted.
    pub sqn_ms: u64,
}

/// A GBA bootstrapping session (B-TID, key lifetime, Ks). `Debug` never
/// shows Ks.
#[derive(Clone)]
pub struct GbaSession {
    /// The IMPI.
    pub impi: String,
    /// The B-TID.
    pub btid: BTid,
    /// Key lifetime (RFC 3339, as the BSF sent it).
    pub lifetime: String,
    /// Key lifetime, parsed.
    pub expires_at: time::OffsetDateTime,
    /// RAND of the bootstrapping.
    pub rand: Rand,
    /// GBA_ME or GBA_U.
    pub mode: GbaMode,
    ks: Ks,
}

impl std::fmt::Debug for GbaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GbaSession")
            .field("impi", &self.impi)
            .field("btid", &self.btid)
            .field("lifetime", &self.lifetime)
            .field("mode", &self.mode)
            .field("ks", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct GbaFile {
    format: String,
    impi: String,
    btid: String,
    lifetime: String,
    rand: String,
    mode: GbaMode,
    ks: Zeroizing<String>,
}

const GBA_FORMAT: &str = "mbms-ue-gba/1";

impl GbaSession {
    /// From a fresh bootstrapping.
    pub fn from_bootstrap(b: &Bootstrap, mode: GbaMode) -> Self {
        GbaSession {
            impi: b.impi.clone(),
            btid: b.btid.clone(),
            lifetime: b.lifetime.clone(),
            expires_at: b.expires_at,
            rand: b.rand,
            mode,
            ks: b.ks().clone(),
        }
    }

    /// Whether the key lifetime ends before `now + margin_s`.
    pub fn expires_within(&self, now: time::OffsetDateTime, margin_s: u64) -> bool {
        let margin = time::Duration::seconds(i64::try_from(margin_s).unwrap_or(i64::MAX / 2));
        self.expires_at <= now + margin
    }

    /// MRK and MUK for the BM-SC `bmsc_fqdn` (NAF_Id = FQDN || 01 00 00 00
    /// 01): GBA_ME derives both from Ks_NAF; GBA_U uses Ks_ext_NAF and
    /// Ks_int_NAF (TS 33.246 6.1, `PROFILE.md` section 2).
    pub fn mbms_keys(&self, bmsc_fqdn: &str) -> Result<MbmsKeys, KdfError> {
        let naf = NafId::mbms(bmsc_fqdn);
        match self.mode {
            GbaMode::GbaMe => Ok(MbmsKeys::gba_me(&derive_ks_naf(
                &self.ks, &self.rand, &self.impi, &naf,
            )?)),
            GbaMode::GbaU => Ok(MbmsKeys::gba_u(
                &derive_ks_ext_naf(&self.ks, &self.rand, &self.impi, &naf)?,
                &derive_ks_int_naf(&self.ks, &self.rand, &self.impi, &naf)?,
            )),
        }
    }

    /// Saves the session (mode 0600).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        write_json(
            path,
            &GbaFile {
                format: GBA_FORMAT.into(),
                impi: self.impi.clone(),
                btid: self.btid.as_str().to_owned(),
                lifetime: self.lifetime.clone(),
                rand: hex::encode(self.rand),
                mode: self.mode,
                ks: Zeroizing::new(hex::encode(self.ks.as_bytes())),
            },
        )
    }

    /// Loads a saved session; `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, StateError> {
        let Some(f) = read_json::<GbaFile>(path)? else {
            return Ok(None);
        };
        let corrupt = |why: String| StateError::Corrupt {
            path: path.to_owned(),
            why,
        };
        if f.format != GBA_FORMAT {
            return Err(corrupt(format!("unknown format {:?}", f.format)));
        }
        let btid = BTid::parse(&f.btid).map_err(|e| corrupt(e.to_string()))?;
        let rand: Rand = hex::decode(&f.rand)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| corrupt("rand".into()))?;
        let ks = Ks::from_hex(&f.ks).map_err(|e| corrupt(e.to_string()))?;
        let expires_at = time::OffsetDateTime::parse(
            &f.lifetime,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| corrupt(format!("lifetime: {e}")))?;
        Ok(Some(GbaSession {
            impi: f.impi,
            btid,
            lifetime: f.lifetime,
            expires_at,
            rand,
            mode: f.mode,
            ks,
        }))
    }
}

/// One service's registration (`registrations.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    /// Service ID.
    pub service: String,
    /// `registered`, `refused`, `deregistered`, `left`, `unprotected`.
    pub state: String,
    /// The BM-SC's per-item status code, if any.
    pub status: Option<u16>,
    /// When (RFC 3339).
    pub at: String,
    /// The B-TID used.
    pub btid: Option<String>,
    /// Why (left / refused).
    pub reason: Option<String>,
}

/// `registrations.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registrations {
    /// Per service.
    pub services: Vec<Registration>,
}

impl Registrations {
    /// Replaces or adds the entry of a service.
    pub fn set(&mut self, r: Registration) {
        match self.services.iter_mut().find(|x| x.service == r.service) {
            Some(x) => *x = r,
            None => self.services.push(r),
        }
    }

    /// The entry of a service.
    pub fn get(&self, service: &str) -> Option<&Registration> {
        self.services.iter().find(|x| x.service == service)
    }
}

/// Formats a time as RFC 3339.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_json_round_trip_and_mode() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("s");
        ensure_dir(&dir).unwrap();
        let p = dir.join(files::USIM);
        assert_eq!(read_json::<UsimState>(&p).unwrap(), None);
        write_json(&p, &UsimState { sqn_ms: 42 }).unwrap();
        assert_eq!(
            read_json::<UsimState>(&p).unwrap(),
            Some(UsimState { sqn_ms: 42 })
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            assert_eq!(
                fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        fs::write(&p, b"{").unwrap();
        assert!(matches!(
            read_json::<UsimState>(&p),
            Err(StateError::Corrupt { .. })
        ));
    }
}
