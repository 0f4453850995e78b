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
//! Every file is replaced atomically (write `<file>.tmp` with mode 0600,
//! fsync, rename, fsync the directory), so a crash leaves the old or the new
//! content. The directory is created with mode 0700.
//!
//! At start ([`open_state_dir`]) every state file present is read and
//! checked: a missing, empty (0-byte), truncated or invalid file, an unknown
//! field or format, or an out-of-range counter is refused with an error
//! naming the file. A new state is created only in a fresh directory (no
//! state file at all). A directory with an identity (B-TID or MUKs) but no
//! readable MGV-S refuses to start until told to start over
//! (`mbms ue run --start-over`, [`crate::UeConfig::start_over`]), which
//! discards the identity, the MSKs and MTKs and bootstraps again
//! (`PROFILE.md` section 7, revised).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use zeroize::Zeroizing;

use gba::aka::Rand;
use gba::kdf::{derive_ks_ext_naf, derive_ks_int_naf, derive_ks_naf, KdfError};
use gba::{BTid, Ks, MbmsKeys, NafId};

use mbms::mgvf::store::{replace_private_file, sync_parent_dir, FileStore, StoreError};

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
    /// A state file that must exist is missing.
    #[error("state file {path} is missing: {why}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// Why it must exist.
        why: String,
    },
}

/// What the start-up errors about a damaged state directory add.
const START_OVER_HINT: &str = "the UE refuses to start on a damaged state (it would reset its \
replay counters); to discard its identity (B-TID, MUKs), MSKs and MTKs and bootstrap again, \
run `mbms ue run --start-over`";

impl StateError {
    /// Adds how to start over to a refusal at start.
    pub(crate) fn with_hint(self) -> StateError {
        match self {
            StateError::Corrupt { path, why } => StateError::Corrupt {
                path,
                why: format!("{why}; {START_OVER_HINT}"),
            },
            StateError::Missing { path, why } => StateError::Missing {
                path,
                why: format!("{why}; {START_OVER_HINT}"),
            },
            other => other,
        }
    }
}

impl From<StoreError> for StateError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io { path, source } => StateError::Io { path, source },
            StoreError::Missing { path } => StateError::Missing {
                path,
                why: "no MGV-S".into(),
            },
            StoreError::Exists { path } => StateError::Corrupt {
                path,
                why: "exists already (not creating a new MGV-S over it)".into(),
            },
            StoreError::Corrupt { path, why } => StateError::Corrupt { path, why },
            e @ StoreError::CounterRollback(_) => StateError::Corrupt {
                path: PathBuf::from(files::MGVS),
                why: e.to_string(),
            },
            StoreError::Uncertain { path } => StateError::Io {
                path,
                source: std::io::Error::other(
                    "an earlier commit could not be made durable; start the UE again",
                ),
            },
        }
    }
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

/// Writes `bytes` to `path` atomically with mode 0600 (crash-safe: see
/// [`replace_private_file`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    replace_private_file(path, bytes).map_err(|e| io(&e.path)(e.source))
}

/// Makes a rename or removal in the directory of `path` durable.
fn sync_dir_of(path: &Path) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_parent_dir(path).map_err(io(dir))
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

/// Writes a runtime snapshot (`status.json`) atomically with mode 0600:
/// temporary file, rename, but no fsync. The running UE rewrites it every
/// 500 ms while anything changes and it holds no state the UE reads back,
/// so a crash loses at most a stale snapshot; the two fsyncs per write of
/// [`write_json`] were the UEs' main cost in `mbms demo --ues 1000`
/// (issue 12: 1,000 UEs x 2 writes/s x 2 fsyncs blocked the runtime's
/// worker threads).
pub fn write_json_snapshot<T: Serialize>(path: &Path, v: &T) -> Result<(), StateError> {
    use std::io::Write as _;
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| StateError::Corrupt {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io(&tmp))?;
    #[cfg(unix)]
    {
        // A leftover temporary file keeps its old mode through `truncate`.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io(&tmp))?;
    }
    f.write_all(&bytes).map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))
}

/// Reads a JSON document; `None` if the file does not exist. An empty
/// (0-byte), truncated or invalid file is [`StateError::Corrupt`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match fs::read(path) {
        Ok(b) if b.is_empty() => Err(StateError::Corrupt {
            path: path.to_owned(),
            why: "empty file (0 bytes)".into(),
        }),
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
#[serde(deny_unknown_fields)]
pub struct UsimState {
    /// The highest SQN the USIM accepted.
    pub sqn_ms: u64,
}

impl UsimState {
    /// Reads `usim.json`; `None` if absent. SQN_MS must fit in 48 bits
    /// (TS 33.102): anything else is damage, not a value to clamp.
    pub fn load(path: &Path) -> Result<Option<Self>, StateError> {
        let Some(u) = read_json::<UsimState>(path)? else {
            return Ok(None);
        };
        if gba::Sqn48::new(u.sqn_ms).is_err() {
            return Err(StateError::Corrupt {
                path: path.to_owned(),
                why: format!("sqn_ms {} does not fit in 48 bits", u.sqn_ms),
            });
        }
        Ok(Some(u))
    }
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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

/// The state files that make a directory "not fresh" (`status.json` is
/// only the running UE's report and does not count).
const STATE_FILES: [&str; 5] = [
    files::USIM,
    files::GBA,
    files::MGVS,
    files::MTKS,
    files::REGISTRATIONS,
];

/// The files [`open_state_dir`] discards when told to start over: the
/// identity (B-TID and Ks; the MUKs in the MGV-S), the MSKs and MTKs, the
/// registrations made with that B-TID, the last status. `usim.json` (the
/// USIM's SQN_MS) is kept unless it is damaged.
const START_OVER_FILES: [&str; 5] = [
    files::GBA,
    files::MGVS,
    files::MTKS,
    files::REGISTRATIONS,
    files::STATUS,
];

fn exists(path: &Path) -> Result<bool, StateError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}

fn remove_if_exists(path: &Path) -> Result<bool, StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}

/// Checks every state file of `dir` the way start-up reads it (except the
/// MTK cache, which the core reads): `usim.json`, `gba.json`,
/// `registrations.json`.
fn check_files(dir: &Path) -> Result<(), StateError> {
    UsimState::load(&dir.join(files::USIM))?;
    GbaSession::load(&dir.join(files::GBA))?;
    read_json::<Registrations>(&dir.join(files::REGISTRATIONS))?;
    Ok(())
}

/// Opens the state directory at start and returns its MGV-S.
///
/// * `start_over == false`: the directory is created (0700) if needed. In a
///   fresh directory (no state file) a new, empty MGV-S is created. Else
///   the MGV-S must exist and be valid, and every other state file present
///   must be valid; any problem is an error naming the file
///   (`PROFILE.md` section 7: never a silent reset of the counters).
/// * `start_over == true`: the identity, the MSKs and MTKs, the
///   registrations and the last status are discarded (and a damaged
///   `usim.json`), then a new MGV-S is created; the UE bootstraps again.
pub fn open_state_dir(dir: &Path, start_over: bool) -> Result<FileStore, StateError> {
    ensure_dir(dir)?;
    let mgvs = dir.join(files::MGVS);
    if start_over {
        for f in START_OVER_FILES {
            let p = dir.join(f);
            let mut tmp = p.as_os_str().to_owned();
            tmp.push(".tmp");
            remove_if_exists(Path::new(&tmp))?;
            if remove_if_exists(&p)? {
                tracing::warn!(file = %p.display(), "start over: discarded");
            }
        }
        let usim = dir.join(files::USIM);
        if let Err(e) = UsimState::load(&usim) {
            tracing::warn!(error = %e, "start over: discarding the damaged USIM state");
            remove_if_exists(&usim)?;
        }
        sync_dir_of(&mgvs)?;
        return Ok(FileStore::create(&mgvs)?);
    }
    let mut present = Vec::new();
    for f in STATE_FILES {
        if exists(&dir.join(f))? {
            present.push(f);
        }
    }
    if present.is_empty() {
        return Ok(FileStore::create(&mgvs)?);
    }
    let store = if present.contains(&files::MGVS) {
        FileStore::open(&mgvs).map_err(|e| StateError::from(e).with_hint())?
    } else {
        return Err(StateError::Missing {
            path: mgvs,
            why: format!(
                "the state directory holds {} but no MGV-S",
                present.join(", ")
            ),
        }
        .with_hint());
    };
    check_files(dir).map_err(StateError::with_hint)?;
    Ok(store)
}

/// Formats a time as RFC 3339.
pub use mbms_service::rfc3339;

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

    fn gba_json() -> String {
        format!(
            r#"{{"format": "mbms-ue-gba/1", "impi": "user1_private@home1.net",
  "btid": "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net", "lifetime": "2030-01-01T00:00:00Z",
  "rand": "{r}", "mode": "gba_me", "ks": "{ks}"}}"#,
            r = hex::encode([0x23u8; 16]),
            ks = hex::encode([0x11u8; 32]),
        )
    }

    /// A state directory the way a UE leaves it: USIM, B-TID, MGV-S with a
    /// MUK and a counter, registrations.
    fn populated() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let store = open_state_dir(&dir, false).unwrap();
        let mut f = mbms::mgvf::MgvF::new(store);
        f.add_muk(
            mbms::MukId::new("bmsc.home1.net", "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net"),
            mbms::Muk::from_bytes([7; 32]),
        )
        .unwrap();
        write_json(&dir.join(files::USIM), &UsimState { sqn_ms: 13 }).unwrap();
        fs::write(dir.join(files::GBA), gba_json()).unwrap();
        write_json(&dir.join(files::REGISTRATIONS), &Registrations::default()).unwrap();
        assert!(GbaSession::load(&dir.join(files::GBA)).unwrap().is_some());
        (d, dir)
    }

    /// Issue 11 point 6: a fresh directory gets a new MGV-S (0600 in 0700);
    /// a directory with a UE's state opens it as it is.
    #[test]
    fn fresh_dir_creates_the_mgvs_existing_state_opens() {
        let (_d, dir) = populated();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join(files::MGVS)), 0o600);
        }
        let store = open_state_dir(&dir, false).unwrap();
        use mbms::mgvf::store::MgvStore as _;
        assert_eq!(store.state().muks.len(), 1);
    }

    /// Issue 11 point 6: a missing MGV-S beside an identity used to be
    /// replaced by an empty one (replay counters reset). Now the start is
    /// refused, naming the file, and nothing is changed.
    #[test]
    fn missing_mgvs_beside_an_identity_is_refused() {
        let (_d, dir) = populated();
        fs::remove_file(dir.join(files::MGVS)).unwrap();
        let e = open_state_dir(&dir, false).unwrap_err();
        assert!(
            matches!(&e, StateError::Missing { path, .. } if path.ends_with(files::MGVS)),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("mgvs.json") && text.contains("--start-over"),
            "{text}"
        );
        assert!(!dir.join(files::MGVS).exists(), "no new MGV-S was made");
        // Any state file makes the directory "not fresh", even only the USIM.
        fs::remove_file(dir.join(files::GBA)).unwrap();
        fs::remove_file(dir.join(files::REGISTRATIONS)).unwrap();
        assert!(matches!(
            open_state_dir(&dir, false),
            Err(StateError::Missing { .. })
        ));
    }

    /// Issue 11 point 6: `--start-over` discards the identity, the MGV-S
    /// and the MTKs, keeps the USIM's SQN, and starts with a new MGV-S.
    #[test]
    fn start_over_discards_the_identity_and_keeps_the_usim() {
        let (_d, dir) = populated();
        fs::write(dir.join(files::MGVS), b"").unwrap();
        fs::write(dir.join(files::MTKS), b"{}").unwrap();
        assert!(open_state_dir(&dir, false).is_err());
        let store = open_state_dir(&dir, true).unwrap();
        use mbms::mgvf::store::MgvStore as _;
        assert_eq!(store.state(), &mbms::mgvf::store::MgvState::default());
        for f in [files::GBA, files::MTKS, files::REGISTRATIONS] {
            assert!(!dir.join(f).exists(), "{f} discarded");
        }
        assert_eq!(
            UsimState::load(&dir.join(files::USIM)).unwrap(),
            Some(UsimState { sqn_ms: 13 })
        );
        // Afterwards the directory opens normally.
        drop(store);
        open_state_dir(&dir, false).unwrap();
        // A damaged USIM state is discarded too by a start-over.
        fs::write(dir.join(files::USIM), b"").unwrap();
        assert!(open_state_dir(&dir, false).is_err());
        open_state_dir(&dir, true).unwrap();
        assert!(!dir.join(files::USIM).exists());
    }

    /// Issue 11 point 10 (UE state): every damaged state file is refused at
    /// start with an error naming it.
    #[test]
    fn damaged_state_files_are_refused_naming_the_file() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (files::MGVS, b"".to_vec()),
            (
                files::MGVS,
                b"{\"format\": \"mbms-mgvs/2\", \"muks\": [".to_vec(),
            ),
            (files::USIM, b"".to_vec()),
            (files::USIM, b"{\"sqn_ms\": 1".to_vec()),
            (files::USIM, b"{\"sqn_ms\": -1}".to_vec()),
            (files::USIM, b"{\"sqn_ms\": 281474976710656}".to_vec()),
            (files::USIM, b"{\"sqn_ms\": 1, \"other\": 2}".to_vec()),
            (files::GBA, b"".to_vec()),
            (
                files::GBA,
                gba_json()
                    .replace("\"mode\"", "\"x\": 1, \"mode\"")
                    .into_bytes(),
            ),
            (
                files::GBA,
                gba_json().replace("gba_me", "gba_x").into_bytes(),
            ),
            (files::REGISTRATIONS, b"not json".to_vec()),
            (
                files::REGISTRATIONS,
                b"{\"services\": [], \"x\": 1}".to_vec(),
            ),
        ];
        for (file, bytes) in cases {
            let (_d, dir) = populated();
            fs::write(dir.join(file), &bytes).unwrap();
            let e = open_state_dir(&dir, false).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(&e, StateError::Corrupt { path, .. } if path.ends_with(file)),
                "{file} {:?}: {text}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(text.contains(file), "{text}");
        }
    }
}
