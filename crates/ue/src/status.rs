//! `mbms ue status`: what the UE holds and does, read from its state
//! directory, so it works whether the UE runs or not.
//!
//! * MSKs and MUK counters come from the MGV-S (`mgvs.json`, read without
//!   opening the store), registrations from `registrations.json`, the B-TID
//!   from `gba.json` (never Ks);
//! * MTKs in use, per-session counters and the last errors come from
//!   `status.json`, which the running UE rewrites at most once a second
//!   (schema `mbms-ue-status/1`, documented in `docs/ue.md`).
//!
//! No key is ever printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use mbms::mgvf::store::{FileStore, MgvState, StoreError};

use crate::state::{self, files, GbaSession, Registrations, StateError};

/// Schema name of `status.json` and of `mbms ue status --json`.
pub const STATUS_FORMAT: &str = "mbms-ue-status/1";

/// Counters of the running UE.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// GBA bootstrappings.
    pub bootstraps: u64,
    /// Registration requests sent.
    pub registrations: u64,
    /// MSK requests sent.
    pub msk_requests: u64,
    /// MSK messages accepted by the MGV-F (keys stored or windows updated).
    pub msk_messages: u64,
    /// Acknowledgements sent.
    pub acks_sent: u64,
    /// Solicited pulls accepted.
    pub solicited_pulls: u64,
    /// MTK messages accepted.
    pub mtk_messages: u64,
    /// Repetitions of MTK messages already processed.
    pub mtk_repeats: u64,
    /// MIKEY messages the MGV-F refused (replay, MAC, unknown MUK/MSK, ...).
    pub mikey_refused: u64,
    /// Missed key updates scheduled.
    pub missed_key_updates: u64,
}

/// Per-session counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionStats {
    /// Session name.
    pub name: String,
    /// Service ID.
    pub service: String,
    /// `streaming` or `download`.
    pub kind: String,
    /// Key group (`KeyDomainID/GGGG`).
    pub key_group: String,
    /// Streaming: SRTP/SRTCP packets received.
    pub packets_in: u64,
    /// Streaming: plain RTP packets forwarded.
    pub rtp_out: u64,
    /// Streaming: plain RTCP packets forwarded.
    pub rtcp_out: u64,
    /// Streaming: packets whose MKI named an MTK the UE does not hold.
    pub unknown_mki: u64,
    /// Streaming: packets refused otherwise (tag, replay, ROC, malformed).
    pub refused: u64,
    /// Streaming: MKI of the last decrypted packet (`MSKID/MTKID`).
    pub last_mki: Option<String>,
    /// Streaming: the SDP file of the plain RTP output.
    pub sdp: Option<String>,
    /// Streaming: where the plain RTP goes.
    pub rtp_output: Option<String>,
    /// Streaming: the SRTP protection in use (the suite the newest MTK
    /// message's SP payload asks for, e.g. `NULL_HMAC_SHA1_80`, with
    /// `SRTP unencrypted` / `SRTCP unencrypted` / `RCCm2 R=1` when so).
    #[serde(default)]
    pub srtp: Option<String>,
    /// Download: objects decrypted.
    pub downloads_ok: u64,
    /// Download: objects refused.
    pub downloads_refused: u64,
}

/// An MTK held by the ME (no key).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MtkInfo {
    /// Protecting MSK (`KeyDomainID/MSKID`).
    pub msk: String,
    /// MTK ID.
    pub mtk_id: u16,
    /// SSRCs of the SRTP-ID map (streaming).
    pub ssrcs: Vec<u32>,
    /// When it was accepted (RFC 3339).
    pub received_at: String,
}

/// A recent error.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorEntry {
    /// When (RFC 3339).
    pub at: String,
    /// What.
    pub what: String,
}

/// What the running UE writes to `status.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuntimeStatus {
    /// Schema.
    pub format: String,
    /// Process ID.
    pub pid: u32,
    /// False after a clean shutdown.
    pub running: bool,
    /// Start time.
    pub started_at: String,
    /// Last write.
    pub updated_at: String,
    /// The MIKEY listener.
    pub mikey_listen: String,
    /// Counters.
    pub counters: Counters,
    /// Per session.
    pub sessions: Vec<SessionStats>,
    /// MTKs held.
    pub mtks: Vec<MtkInfo>,
    /// The last errors, oldest first (at most 20).
    pub last_errors: Vec<ErrorEntry>,
}

/// A stored MSK as `status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MskInfo {
    /// Key Domain ID (hex).
    pub key_domain: String,
    /// MSK ID (hex).
    pub msk_id: String,
    /// Key Group part.
    pub key_group: u16,
    /// Key Number part.
    pub key_number: u16,
    /// SEQs (last accepted MTK ID, or the lower limit).
    pub seq_s: u16,
    /// SEQu.
    pub seq_u: u16,
    /// `active`, `inactive` (awaiting activation, 4-way procedure) or
    /// `exhausted` (no MTK ID left in the window).
    pub state: String,
    /// Counter of the last accepted MTK message.
    pub counter: Option<u32>,
}

/// A MUK as `status` shows it (no key).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MukInfo {
    /// IDi (BM-SC FQDN).
    pub idi: String,
    /// IDr (B-TID).
    pub idr: String,
    /// Counter of the last accepted MSK message.
    pub counter: Option<u32>,
    /// The MUK the BM-SC last used successfully.
    pub last_used: bool,
    /// `current` (installed at the latest bootstrapping) or `previous` (the
    /// one before): the MUKs an MSK message may name (`PROFILE.md` section
    /// 7); none for a MUK kept only because the BM-SC last used it (it
    /// serves the solicited pull only).
    #[serde(default)]
    pub installed: Option<MukInstalled>,
}

/// Which installed MUK of its BM-SC a MUK is ([`MukInfo::installed`]).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MukInstalled {
    /// Installed at the latest bootstrapping.
    Current,
    /// Installed at the bootstrapping before.
    Previous,
}

/// The whole status document (`mbms ue status --json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// Schema.
    pub format: String,
    /// The state directory.
    pub state_dir: String,
    /// Whether a UE process is running on this directory.
    pub running: bool,
    /// The B-TID and its lifetime.
    pub btid: Option<String>,
    /// Key lifetime of the B-TID.
    pub btid_expires: Option<String>,
    /// Registrations.
    pub registrations: Vec<state::Registration>,
    /// MSKs of the MGV-S.
    pub msks: Vec<MskInfo>,
    /// MUKs of the MGV-S.
    pub muks: Vec<MukInfo>,
    /// What the (last) running UE reported.
    pub runtime: Option<RuntimeStatus>,
}

/// The MSKs of an MGV-S state, for `status`.
pub fn msk_infos(s: &MgvState) -> Vec<MskInfo> {
    let groups: std::collections::BTreeSet<_> = s.msks.keys().map(|n| n.key_group()).collect();
    groups
        .into_iter()
        .flat_map(|g| s.msks_of(g))
        .map(|m| MskInfo {
            key_domain: m.name.key_domain.to_string(),
            msk_id: m.name.msk_id.to_string(),
            key_group: m.name.msk_id.key_group,
            key_number: m.name.msk_id.key_number,
            seq_s: m.seq_s.value(),
            seq_u: m.seq_u.value(),
            state: if m.is_inactive() {
                "inactive".into()
            } else if m.seq_s.0.lt(m.seq_u.0) {
                "active".into()
            } else {
                "exhausted".into()
            },
            counter: m.counter,
        })
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    if proc.is_dir() {
        proc.join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Reads the status of the UE whose state directory is `dir`.
pub fn read(dir: &Path) -> Result<Status, StateError> {
    let gba = GbaSession::load(&dir.join(files::GBA))?;
    let mgvs = match FileStore::load(&dir.join(files::MGVS)) {
        // A UE that never ran (or never got past the start) has no MGV-S.
        Err(StoreError::Missing { .. }) if gba.is_none() => MgvState::default(),
        r => r?,
    };
    let regs: Registrations =
        state::read_json(&dir.join(files::REGISTRATIONS))?.unwrap_or_default();
    let runtime: Option<RuntimeStatus> = state::read_json(&dir.join(files::STATUS))?;
    let running = runtime
        .as_ref()
        .is_some_and(|r| r.running && pid_alive(r.pid));
    let last_used: BTreeMap<_, _> = mgvs.last_used_muk.values().map(|id| (id, ())).collect();
    Ok(Status {
        format: STATUS_FORMAT.into(),
        state_dir: dir.display().to_string(),
        running,
        btid: gba.as_ref().map(|g| g.btid.as_str().to_owned()),
        btid_expires: gba.as_ref().map(|g| g.lifetime.clone()),
        registrations: regs.services,
        msks: msk_infos(&mgvs),
        muks: mgvs
            .muks
            .values()
            .map(|m| MukInfo {
                idi: m.muk_id.idi.clone(),
                idr: m.muk_id.idr.clone(),
                counter: m.counter,
                last_used: last_used.contains_key(&m.muk_id),
                installed: mgvs.installed_muks.get(&m.muk_id.idi).and_then(|i| {
                    if i.current == m.muk_id {
                        Some(MukInstalled::Current)
                    } else if i.previous.as_ref() == Some(&m.muk_id) {
                        Some(MukInstalled::Previous)
                    } else {
                        None
                    }
                }),
            })
            .collect(),
        runtime,
    })
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

/// The status as text.
pub fn to_text(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "state directory: {}", s.state_dir);
    let _ = writeln!(
        o,
        "UE: {}",
        if s.running { "running" } else { "not running" }
    );
    let _ = writeln!(
        o,
        "B-TID: {} (expires {})",
        opt(&s.btid),
        opt(&s.btid_expires)
    );
    let _ = writeln!(o, "\nservices:");
    if s.registrations.is_empty() {
        let _ = writeln!(o, "  (none registered yet)");
    }
    for r in &s.registrations {
        let _ = writeln!(
            o,
            "  {}: {} (status {}, at {}){}",
            r.service,
            r.state,
            opt(&r.status),
            r.at,
            r.reason
                .as_ref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(o, "\nMSKs (MGV-S):");
    if s.msks.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for m in &s.msks {
        let _ = writeln!(
            o,
            "  {}/{} (key group {}, key number {}): window SEQs {} SEQu {}, {}, MTK counter {}",
            m.key_domain,
            m.msk_id,
            m.key_group,
            m.key_number,
            m.seq_s,
            m.seq_u,
            m.state,
            opt(&m.counter)
        );
    }
    let _ = writeln!(o, "\nMUKs:");
    for m in &s.muks {
        let _ = writeln!(
            o,
            "  IDi {} IDr {}: MSK counter {}{}{}",
            m.idi,
            m.idr,
            opt(&m.counter),
            match m.installed {
                Some(MukInstalled::Current) => " (current)",
                Some(MukInstalled::Previous) => " (previous)",
                None => "",
            },
            if m.last_used {
                " (last used by the BM-SC)"
            } else {
                ""
            }
        );
    }
    if let Some(r) = &s.runtime {
        let _ = writeln!(
            o,
            "\nruntime ({} since {}, updated {}, pid {}, MIKEY on {}):",
            if s.running { "running" } else { "stopped" },
            r.started_at,
            r.updated_at,
            r.pid,
            r.mikey_listen
        );
        let c = &r.counters;
        let _ = writeln!(
            o,
            "  bootstraps {}, registrations {}, MSK requests {}, MSK messages {}, acks {}, solicited pulls {}, MTK messages {} (+{} repeats), refused MIKEY {}, missed key updates {}",
            c.bootstraps, c.registrations, c.msk_requests, c.msk_messages, c.acks_sent,
            c.solicited_pulls, c.mtk_messages, c.mtk_repeats, c.mikey_refused, c.missed_key_updates
        );
        let _ = writeln!(o, "  MTKs in use:");
        if r.mtks.is_empty() {
            let _ = writeln!(o, "    (none)");
        }
        for m in &r.mtks {
            let _ = writeln!(
                o,
                "    MSK {} MTK {} (SSRCs {:?}, since {})",
                m.msk, m.mtk_id, m.ssrcs, m.received_at
            );
        }
        let _ = writeln!(o, "  sessions:");
        for x in &r.sessions {
            if x.kind == "streaming" {
                let _ = writeln!(
                    o,
                    "    {} ({} of {}, key group {}): in {}, RTP out {}, RTCP out {}, unknown MKI {}, refused {}, last MKI {}, output {} (SDP {})",
                    x.name, x.kind, x.service, x.key_group, x.packets_in, x.rtp_out, x.rtcp_out,
                    x.unknown_mki, x.refused, opt(&x.last_mki), opt(&x.rtp_output), opt(&x.sdp)
                );
            } else {
                let _ = writeln!(
                    o,
                    "    {} ({} of {}, key group {}): decrypted {}, refused {}",
                    x.name, x.kind, x.service, x.key_group, x.downloads_ok, x.downloads_refused
                );
            }
        }
        let _ = writeln!(o, "  last errors:");
        if r.last_errors.is_empty() {
            let _ = writeln!(o, "    (none)");
        }
        for e in &r.last_errors {
            let _ = writeln!(o, "    {} {}", e.at, e.what);
        }
    }
    o
}
