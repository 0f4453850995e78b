//! The synchronous heart of the UE: the MGV-F over its durable MGV-S, and
//! the ME part (MTK cache keyed by (MSK, MTK ID), one SRTP receive context
//! per streaming session, download keys). It reads no clock, draws no
//! random number and touches no socket: the shell ([`crate::runtime`])
//! feeds it datagrams and carries out the [`Out`]puts it returns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use mbms::messages::{self, MessageKind, MtkEnvelope};
use mbms::mgvf::store::FileStore;
use mbms::mgvf::{MgvError, MgvF, MskOutcome};
use mbms::{KeyGroupName, MskId, MskName, Mtk, MtkKey, MtkSalt, Muk, MukId};
use mikey::{SrtpAuthAlg, SrtpPolicy};
use srtp::{MasterKey, Mki};

use crate::config::{Service, Session, SessionKind, UeConfig};
use crate::events::UeEvent;
use crate::state::{self, StateError};
use crate::status::{Counters, ErrorEntry, MtkInfo, RuntimeStatus, SessionStats};

/// MTKs kept per key group (current and next, plus the last ones of the
/// previous MSK: a sender may still use them while a rotation pushes a new
/// MSK that makes the MGV-F delete the older MSK).
pub const MTKS_PER_GROUP: usize = 8;

/// Errors kept for `status`.
const MAX_ERRORS: usize = 20;

/// What the shell must do after the core processed something.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send a datagram from the MIKEY socket (acknowledgements, to the
    /// source of the MSK message).
    Mikey { to: SocketAddr, bytes: Vec<u8> },
    /// Forward a plain RTP (or RTCP) packet of a streaming session.
    Rtp {
        stream: usize,
        bytes: Vec<u8>,
        rtcp: bool,
    },
    /// Key management work.
    Km(KmCmd),
    /// Report an event.
    Event(UeEvent),
}

/// Commands to the key management task.
#[derive(Debug)]
pub(crate) enum KmCmd {
    /// Traffic named an MSK we do not hold (or whose window ended).
    MissedKey { msk: MskName },
    /// A solicited pull for a key group.
    SolicitedPull { group: KeyGroupName },
}

/// What became of an MTK message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MtkStatus {
    /// The ME holds the MTK.
    Held,
    /// Not yet: the MSK is missing (a missed key update is scheduled) or
    /// inactive (awaiting activation).
    Waiting,
    /// Refused for good (replay, MTK ID behind the window, bad MAC, ...).
    Refused(String),
}

/// One cached MTK (ME side).
#[derive(Clone)]
pub(crate) struct CachedMtk {
    pub msk: MskName,
    pub mtk_id: u16,
    pub mtk: Mtk,
    pub csb_id: u32,
    pub rand: [u8; 16],
    pub streams: Vec<mikey::SrtpIdEntry>,
    pub policy: Option<SrtpPolicy>,
    pub received_at: String,
    pub seq: u64,
}

impl CachedMtk {
    fn master_key(&self) -> MasterKey {
        let (k, s) = self.mtk.srtp_master();
        MasterKey::with_mki(
            *k,
            *s,
            Mki::mbms(u32::from_be_bytes(self.msk.msk_id.to_bytes()), self.mtk_id),
        )
    }
}

#[derive(Serialize, Deserialize)]
struct MtkFileEntry {
    key_domain: String,
    msk_id: String,
    mtk_id: u16,
    key: Zeroizing<String>,
    salt: Zeroizing<String>,
    csb_id: u32,
    rand: String,
    streams: Vec<(u8, u32, u32)>,
    /// The SP parameters the SRTP context follows.
    #[serde(default)]
    policy: Option<SavedPolicy>,
    received_at: String,
    seq: u64,
}

/// The SP payload of a cached MTK, as saved.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SavedPolicy {
    /// Every parameter: (type, hex value) in wire order.
    Params { sp: Vec<(u8, String)> },
    /// Older files: (auth tag length, auth algorithm, ROC transmission
    /// rate, SRTCP encryption).
    Legacy(Option<u8>, Option<u8>, Option<u8>, Option<bool>),
}

impl SavedPolicy {
    fn of(p: &SrtpPolicy) -> SavedPolicy {
        SavedPolicy::Params {
            sp: p
                .to_params()
                .iter()
                .map(|x| (x.param_type, hex::encode(&x.value)))
                .collect(),
        }
    }

    fn policy(self) -> Result<SrtpPolicy, String> {
        match self {
            SavedPolicy::Params { sp } => {
                let params = sp
                    .into_iter()
                    .map(|(t, v)| {
                        Ok(mikey::PolicyParam {
                            param_type: t,
                            value: hex::decode(v).map_err(|e| e.to_string())?.into(),
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                SrtpPolicy::from_params(&params).map_err(|e| e.to_string())
            }
            SavedPolicy::Legacy(tag, alg, rate, srtcp) => Ok(SrtpPolicy {
                auth_tag_len: tag,
                auth_alg: alg.map(SrtpAuthAlg),
                roc_transmission_rate: rate,
                srtcp_encryption: srtcp,
                ..Default::default()
            }),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct MtkFile {
    format: String,
    mtks: Vec<MtkFileEntry>,
}

const MTK_FORMAT: &str = "mbms-ue-mtks/1";

/// A streaming session's receive context.
pub(crate) struct StreamCtx {
    pub group: KeyGroupName,
    pub protected: bool,
    /// What the service announces (seed 000 6.3.2.2.2); an MTK message
    /// whose SRTP policy gives less is refused.
    pub required: srtp::download::Protection,
    pub suite: srtp::Suite,
    pub config: srtp::Config,
    pub receiver: srtp::Receiver,
}

/// The UE core.
pub(crate) struct Core {
    pub mgvf: MgvF<FileStore>,
    mtks: BTreeMap<(MskName, u16), CachedMtk>,
    mtk_seq: u64,
    mtk_file: PathBuf,
    pub streams: Vec<StreamCtx>,
    /// Per session (streams first in config order, then downloads).
    pub stats: Vec<SessionStats>,
    /// Index in `stats` of each streaming session.
    pub stream_stats: Vec<usize>,
    pub counters: Counters,
    pub errors: Vec<ErrorEntry>,
    /// MSK messages accepted per key group (for "did a push arrive?").
    pub arrivals: BTreeMap<KeyGroupName, u64>,
    pub dirty: bool,
    /// The current time (RFC 3339), set by the shell before each call.
    pub now: String,
}

/// SRTP configuration of a session: what the SP payload of the newest MTK
/// message says (cipher, authentication, tag length, SRTP/SRTCP encryption,
/// RFC 4771 mode and rate: [`mbms::traffic::srtp_config`]), or the
/// session's configured suite before the first one.
pub(crate) fn srtp_config(
    suite: srtp::Suite,
    policy: Option<&SrtpPolicy>,
) -> Result<srtp::Config, mbms::traffic::PolicyRefused> {
    match policy {
        Some(p) => mbms::traffic::srtp_config(p),
        None => Ok(mbms::traffic::canonical(srtp::Config {
            suite,
            ..srtp::Config::mbms()
        })),
    }
}

/// How `status` shows an SRTP configuration.
pub(crate) fn describe(c: &srtp::Config) -> String {
    let mut d = c.suite.to_string();
    if c.suite.cipher != srtp::Cipher::Null {
        if !c.srtp_encryption {
            d.push_str(", SRTP unencrypted");
        }
        if !c.srtcp_encryption {
            d.push_str(", SRTCP unencrypted");
        }
    }
    if let Some(r) = c.rcc {
        d.push_str(&format!(", {:?} R={}", r.mode, r.rate));
    }
    d
}

/// Whether byte 1 of a datagram is an RTCP packet type (RFC 5761 4).
fn is_rtcp(b: &[u8]) -> bool {
    b.len() >= 2 && (192..=223).contains(&b[1])
}

fn msk_id_from_u32(v: u32) -> MskId {
    MskId::new((v >> 16) as u16, v as u16)
}

impl Core {
    /// The core over an opened MGV-S, with the MTK cache of the state
    /// directory and a context per session.
    pub fn new(cfg: &UeConfig, mgvf: MgvF<FileStore>) -> Result<Self, StateError> {
        let mtk_file = cfg.state_dir.join(state::files::MTKS);
        let mut core = Core {
            mgvf,
            mtks: BTreeMap::new(),
            mtk_seq: 0,
            mtk_file,
            streams: Vec::new(),
            stats: Vec::new(),
            stream_stats: Vec::new(),
            counters: Counters::default(),
            errors: Vec::new(),
            arrivals: BTreeMap::new(),
            dirty: true,
            now: String::new(),
        };
        core.load_mtks()?;
        let mut downloads = Vec::new();
        for svc in &cfg.service_list {
            for s in &svc.sessions {
                match s.kind {
                    SessionKind::Streaming => core.add_stream(cfg, svc, s),
                    SessionKind::Download => downloads.push(stats_of(svc, s, None)),
                }
            }
        }
        core.stats.extend(downloads);
        let groups: Vec<_> = core.streams.iter().map(|s| s.group).collect();
        for g in groups {
            core.install_group_keys(g);
        }
        Ok(core)
    }

    fn add_stream(&mut self, cfg: &UeConfig, svc: &Service, s: &Session) {
        let suite = crate::config::srtp_suite(s.srtp_suite.as_deref()).unwrap_or_default();
        // The configuration was validated: every named suite is valid.
        let config = srtp_config(suite, None).unwrap_or_else(|_| unreachable!());
        let receiver = srtp::Receiver::new(config.clone()).unwrap_or_else(|_| unreachable!());
        self.stream_stats.push(self.stats.len());
        self.stats.push(stats_of(
            svc,
            s,
            Some(cfg.sdp_path(s).display().to_string()),
        ));
        if let Some(st) = self.stats.last_mut() {
            st.srtp = Some(describe(&config));
        }
        self.streams.push(StreamCtx {
            group: svc.session_key_group(s),
            protected: svc.protected(),
            required: svc.required_protection(),
            suite,
            config,
            receiver,
        });
    }

    /// Records an error for `status` (and the log).
    pub fn error(&mut self, what: String) {
        warn!("{what}");
        if self.errors.len() >= MAX_ERRORS {
            self.errors.remove(0);
        }
        self.errors.push(ErrorEntry {
            at: self.now.clone(),
            what,
        });
        self.dirty = true;
    }

    /// Installs a MUK (after bootstrapping).
    pub fn add_muk(&mut self, muk_id: MukId, muk: Muk) -> Result<(), MgvError> {
        self.dirty = true;
        self.mgvf.add_muk(muk_id, muk)
    }

    /// Whether the MGV-S holds a usable MSK of the group: active, with MTK
    /// IDs left in its window ("a still-valid, older MSK", seed 000).
    pub fn usable_msk(&self, group: KeyGroupName) -> bool {
        self.mgvf
            .msks_of(group)
            .iter()
            .any(|m| !m.is_inactive() && m.seq_s.0.lt(m.seq_u.0))
    }

    /// MSK messages accepted for a group so far.
    pub fn arrivals(&self, group: KeyGroupName) -> u64 {
        self.arrivals.get(&group).copied().unwrap_or(0)
    }

    /// A datagram on the MIKEY port (or a session's MTK port, `stream`).
    pub fn on_mikey(&mut self, bytes: &[u8], from: SocketAddr) -> Vec<Out> {
        self.dirty = true;
        match messages::classify(bytes) {
            Ok(MessageKind::Msk) => self.on_msk(bytes, from),
            Ok(MessageKind::Mtk) => self.on_mtk(bytes).1,
            Ok(MessageKind::Ack) => {
                debug!(%from, "ignoring a MIKEY acknowledgement sent to the UE");
                Vec::new()
            }
            Err(e) => {
                self.counters.mikey_refused += 1;
                self.error(format!("MIKEY from {from}: {e}"));
                Vec::new()
            }
        }
    }

    fn on_msk(&mut self, bytes: &[u8], from: SocketAddr) -> Vec<Out> {
        let mut out = Vec::new();
        match self.mgvf.process_msk_message(bytes) {
            Ok(MskOutcome::Stored {
                msk,
                inactive,
                replaced,
                ack,
            }) => {
                self.counters.msk_messages += 1;
                *self.arrivals.entry(msk.key_group()).or_default() += 1;
                info!(%msk, inactive, replaced = ?replaced.map(|r| r.to_string()), ack = ack.is_some(), "MSK stored");
                let acknowledged = ack.is_some();
                if let Some(a) = ack {
                    self.counters.acks_sent += 1;
                    out.push(Out::Mikey { to: from, bytes: a });
                }
                if !inactive {
                    self.install_group_keys(msk.key_group());
                }
                out.push(Out::Event(UeEvent::MskStored {
                    msk: msk.to_string(),
                    inactive,
                    replaced: replaced.map(|r| r.to_string()),
                    acknowledged,
                }));
            }
            Ok(MskOutcome::SolicitedPull { key_group }) => {
                self.counters.solicited_pulls += 1;
                info!(%key_group, "solicited pull");
                out.push(Out::Km(KmCmd::SolicitedPull { group: key_group }));
                out.push(Out::Event(UeEvent::SolicitedPull {
                    key_group: key_group.to_string(),
                }));
            }
            Ok(MskOutcome::Duplicate { ack }) => {
                debug!(%from, "identical resend of an accepted MSK message");
                if let Some(a) = ack {
                    self.counters.acks_sent += 1;
                    out.push(Out::Mikey { to: from, bytes: a });
                }
            }
            Err(e) => {
                self.counters.mikey_refused += 1;
                self.error(format!("MSK message from {from} refused: {e}"));
            }
        }
        out
    }

    /// An MTK message (UDP or a `.mikey` file). Returns whether the ME now
    /// holds its MTK, and the outputs.
    pub fn on_mtk(&mut self, bytes: &[u8]) -> (MtkStatus, Vec<Out>) {
        self.dirty = true;
        let mut out = Vec::new();
        let env = match MtkEnvelope::parse(bytes) {
            Ok(e) => e,
            Err(e) => {
                self.counters.mikey_refused += 1;
                let why = format!("MTK message refused: {e}");
                self.error(why.clone());
                return (MtkStatus::Refused(why), out);
            }
        };
        if self.mtks.contains_key(&(env.msk, env.mtk_id.value())) {
            // A periodic repetition of an MTK message already processed.
            self.counters.mtk_repeats += 1;
            return (MtkStatus::Held, out);
        }
        if let Err(e) = self.check_announced(&env) {
            // Before the MGV-F: a refused message changes no state.
            self.counters.mikey_refused += 1;
            let why = format!("MTK message refused: {e}");
            self.error(why.clone());
            return (MtkStatus::Refused(why), out);
        }
        match self.mgvf.process_mtk_message(bytes) {
            Ok(o) => {
                self.counters.mtk_messages += 1;
                info!(msk = %o.msk, mtk_id = o.mtk_id.value(), "MTK accepted");
                self.mtk_seq += 1;
                let policy = o.streaming.as_ref().map(|s| s.policy.clone());
                let c = CachedMtk {
                    msk: o.msk,
                    mtk_id: o.mtk_id.value(),
                    streams: o.streams().to_vec(),
                    mtk: o.mtk,
                    csb_id: o.csb_id,
                    rand: o.rand,
                    policy,
                    received_at: self.now.clone(),
                    seq: self.mtk_seq,
                };
                self.mtks.insert((c.msk, c.mtk_id), c);
                self.prune_mtks(o.msk.key_group());
                self.install_group_keys(o.msk.key_group());
                if let Err(e) = self.save_mtks() {
                    self.error(format!("saving the MTK cache: {e}"));
                }
                out.push(Out::Event(UeEvent::MtkAccepted {
                    msk: o.msk.to_string(),
                    mtk_id: o.mtk_id.value(),
                }));
                (MtkStatus::Held, out)
            }
            Err(MgvError::UnknownMsk(n)) => {
                self.missed(n, &mut out);
                (MtkStatus::Waiting, out)
            }
            Err(MgvError::InactiveMsk(_)) => (MtkStatus::Waiting, out),
            Err(MgvError::MtkIdOutOfWindow {
                msk, mtk_id, seq_u, ..
            }) if mtk_id.0.gt(seq_u.0) => {
                // Beyond the window we hold: our copy of the MSK is stale.
                self.missed(msk, &mut out);
                (MtkStatus::Waiting, out)
            }
            Err(e @ MgvError::Replay { .. }) => {
                self.counters.mtk_repeats += 1;
                (MtkStatus::Refused(format!("MTK message refused: {e}")), out)
            }
            Err(e) => {
                self.counters.mikey_refused += 1;
                let why = format!("MTK message refused: {e}");
                self.error(why.clone());
                (MtkStatus::Refused(why), out)
            }
        }
    }

    /// Seed 000 6.3.2.2.2: the SRTP policy of a streaming MTK message must
    /// give the protections the services of its key group announce.
    fn check_announced(&self, env: &MtkEnvelope<'_>) -> Result<(), mbms::traffic::PolicyRefused> {
        let Some(s) = &env.streaming else {
            return Ok(());
        };
        let cfg = mbms::traffic::srtp_config(&s.policy)?;
        for st in self
            .streams
            .iter()
            .filter(|st| st.group == env.msk.key_group())
        {
            mbms::traffic::meets_announcement(
                &cfg,
                st.required.encryption,
                st.required.authentication,
            )?;
        }
        Ok(())
    }

    fn missed(&mut self, msk: MskName, out: &mut Vec<Out>) {
        debug!(%msk, "traffic names an MSK we do not hold");
        out.push(Out::Km(KmCmd::MissedKey { msk }));
    }

    /// An SRTP or SRTCP datagram of streaming session `i`.
    pub fn on_srtp(&mut self, i: usize, mut buf: Vec<u8>) -> Vec<Out> {
        self.dirty = true;
        let si = self.stream_stats[i];
        self.stats[si].packets_in += 1;
        let st = &mut self.streams[i];
        if !st.protected {
            let rtcp = is_rtcp(&buf);
            if rtcp {
                self.stats[si].rtcp_out += 1;
            } else {
                self.stats[si].rtp_out += 1;
            }
            return vec![Out::Rtp {
                stream: i,
                bytes: buf,
                rtcp,
            }];
        }
        if is_rtcp(&buf) {
            return match st.receiver.unprotect_rtcp_vec(&mut buf) {
                Ok(_) => {
                    self.stats[si].rtcp_out += 1;
                    vec![Out::Rtp {
                        stream: i,
                        bytes: buf,
                        rtcp: true,
                    }]
                }
                Err(e) => self.srtp_error(i, e),
            };
        }
        match st.receiver.unprotect_rtp_vec(&mut buf) {
            Ok(u) => {
                let s = &mut self.stats[si];
                s.rtp_out += 1;
                if let Some((m, t)) = u.mki.mbms_parts() {
                    let label = format!("{m:08X}/{t}");
                    if s.last_mki.as_deref() != Some(label.as_str()) {
                        s.last_mki = Some(label);
                    }
                }
                vec![Out::Rtp {
                    stream: i,
                    bytes: buf,
                    rtcp: false,
                }]
            }
            Err(e) => self.srtp_error(i, e),
        }
    }

    fn srtp_error(&mut self, i: usize, e: srtp::Error) -> Vec<Out> {
        let si = self.stream_stats[i];
        let mut out = Vec::new();
        match e {
            srtp::Error::UnknownMki { mki, .. } => {
                self.stats[si].unknown_mki += 1;
                if let Some((m, _)) = mki.mbms_parts() {
                    let name = MskName {
                        key_domain: self.streams[i].group.key_domain,
                        msk_id: msk_id_from_u32(m),
                    };
                    if self.mgvf.state().msks.contains_key(&name) {
                        // We hold the MSK: the MTK message will come.
                        debug!(%mki, "SRTP under an MTK not received yet");
                    } else if self.mtks.keys().any(|(m, _)| *m == name) {
                        // An MSK the MGV-F replaced: traffic of the past.
                        debug!(%mki, "SRTP under an MTK of a replaced MSK");
                    } else {
                        self.missed(name, &mut out);
                    }
                }
            }
            other => {
                self.stats[si].refused += 1;
                debug!(error = %other, "SRTP packet refused");
            }
        }
        out
    }

    /// The download keys of an object whose header names (Key Domain ID,
    /// MSK ID, MTK ID), if the ME holds that MTK.
    pub fn download_keys(
        &self,
        h: &srtp::download::ObjectHeader,
    ) -> Option<srtp::download::DownloadKeys> {
        let name = MskName {
            key_domain: mbms::KeyDomainId(h.key_domain_id),
            msk_id: msk_id_from_u32(h.msk_id),
        };
        let c = self.mtks.get(&(name, h.mtk_id))?;
        let k = c.mtk.download_keys(h.csb_id, &h.rand);
        Some(srtp::download::DownloadKeys::new(
            *k.encr.as_bytes(),
            *k.auth.as_bytes(),
        ))
    }

    fn prune_mtks(&mut self, group: KeyGroupName) {
        let mut of: Vec<(u64, (MskName, u16))> = self
            .mtks
            .values()
            .filter(|c| c.msk.key_group() == group)
            .map(|c| (c.seq, (c.msk, c.mtk_id)))
            .collect();
        of.sort();
        while of.len() > MTKS_PER_GROUP {
            let (_, k) = of.remove(0);
            self.mtks.remove(&k);
        }
    }

    /// Makes the SRTP contexts of the group's streams hold exactly the
    /// cached MTKs of the group (and follow the SP payload of the newest).
    fn install_group_keys(&mut self, group: KeyGroupName) {
        let mut cached: Vec<&CachedMtk> = self
            .mtks
            .values()
            .filter(|c| c.msk.key_group() == group)
            .collect();
        cached.sort_by_key(|c| c.seq);
        let newest_policy = cached.last().and_then(|c| c.policy.clone());
        for (i, st) in self.streams.iter_mut().enumerate() {
            if st.group != group {
                continue;
            }
            let want = match srtp_config(st.suite, newest_policy.as_ref()) {
                Ok(w) => w,
                Err(e) => {
                    warn!(error = %e, "SRTP policy of the MTK message not usable");
                    st.config.clone()
                }
            };
            if want != st.config {
                match srtp::Receiver::new(want.clone()) {
                    Ok(r) => {
                        st.receiver = r;
                        self.stats[self.stream_stats[i]].srtp = Some(describe(&want));
                        st.config = want;
                    }
                    Err(e) => warn!(error = %e, "SRTP policy of the MTK message not usable"),
                }
            }
            let wanted: Vec<Mki> = cached.iter().map(|c| c.master_key().mki()).collect();
            let have: Vec<Mki> = st.receiver.mkis().collect();
            for m in have.iter().filter(|m| !wanted.contains(m)) {
                let _ = st.receiver.remove_key(m);
            }
            for c in cached.iter().rev().take(srtp::MAX_KEYS) {
                let mk = c.master_key();
                if !have.contains(&mk.mki()) {
                    if let Err(e) = st.receiver.add_key(&mk) {
                        warn!(error = %e, "cannot install an MTK in the SRTP context");
                    }
                }
                for s in &c.streams {
                    if st.receiver.roc(s.ssrc).is_none() {
                        let _ = st.receiver.set_roc(s.ssrc, s.roc);
                    }
                }
            }
        }
    }

    fn load_mtks(&mut self) -> Result<(), StateError> {
        let Some(f) = state::read_json::<MtkFile>(&self.mtk_file)? else {
            return Ok(());
        };
        let corrupt = |why: String| StateError::Corrupt {
            path: self.mtk_file.clone(),
            why,
        };
        if f.format != MTK_FORMAT {
            return Err(corrupt(format!("unknown format {:?}", f.format)));
        }
        for e in f.mtks {
            let msk = MskName {
                key_domain: e.key_domain.parse().map_err(|x| corrupt(format!("{x}")))?,
                msk_id: e.msk_id.parse().map_err(|x| corrupt(format!("{x}")))?,
            };
            let mtk = Mtk {
                key: MtkKey::from_hex(&e.key).map_err(|x| corrupt(x.to_string()))?,
                salt: MtkSalt::from_hex(&e.salt).map_err(|x| corrupt(x.to_string()))?,
            };
            let rand: [u8; 16] = hex::decode(&e.rand)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| corrupt("rand".into()))?;
            self.mtk_seq = self.mtk_seq.max(e.seq);
            self.mtks.insert(
                (msk, e.mtk_id),
                CachedMtk {
                    msk,
                    mtk_id: e.mtk_id,
                    mtk,
                    csb_id: e.csb_id,
                    rand,
                    streams: e
                        .streams
                        .iter()
                        .map(|&(policy_no, ssrc, roc)| mikey::SrtpIdEntry {
                            policy_no,
                            ssrc,
                            roc,
                        })
                        .collect(),
                    policy: e
                        .policy
                        .map(SavedPolicy::policy)
                        .transpose()
                        .map_err(|x| corrupt(format!("policy: {x}")))?,
                    received_at: e.received_at,
                    seq: e.seq,
                },
            );
        }
        Ok(())
    }

    fn save_mtks(&self) -> Result<(), StateError> {
        let f = MtkFile {
            format: MTK_FORMAT.into(),
            mtks: self
                .mtks
                .values()
                .map(|c| MtkFileEntry {
                    key_domain: c.msk.key_domain.to_string(),
                    msk_id: c.msk.msk_id.to_string(),
                    mtk_id: c.mtk_id,
                    key: Zeroizing::new(hex::encode(c.mtk.key.as_bytes())),
                    salt: Zeroizing::new(hex::encode(c.mtk.salt.as_bytes())),
                    csb_id: c.csb_id,
                    rand: hex::encode(c.rand),
                    streams: c
                        .streams
                        .iter()
                        .map(|s| (s.policy_no, s.ssrc, s.roc))
                        .collect(),
                    policy: c.policy.as_ref().map(SavedPolicy::of),
                    received_at: c.received_at.clone(),
                    seq: c.seq,
                })
                .collect(),
        };
        state::write_json(&self.mtk_file, &f)
    }

    /// Deletes the MSKs (and MTKs) of a key group (after deregistration).
    pub fn delete_group(&mut self, group: KeyGroupName) {
        self.dirty = true;
        if let Err(e) = self.mgvf.delete_msks(group) {
            self.error(format!("deleting the MSKs of {group}: {e}"));
        }
        self.mtks.retain(|(m, _), _| m.key_group() != group);
        let _ = self.save_mtks();
        self.install_group_keys(group);
    }

    /// The runtime part of the status.
    pub fn runtime_status(&self, base: &RuntimeStatus) -> RuntimeStatus {
        let mut mtks: Vec<&CachedMtk> = self.mtks.values().collect();
        mtks.sort_by_key(|c| c.seq);
        RuntimeStatus {
            counters: self.counters.clone(),
            sessions: self.stats.clone(),
            mtks: mtks
                .iter()
                .map(|c| MtkInfo {
                    msk: c.msk.to_string(),
                    mtk_id: c.mtk_id,
                    ssrcs: c.streams.iter().map(|s| s.ssrc).collect(),
                    received_at: c.received_at.clone(),
                })
                .collect(),
            last_errors: self.errors.clone(),
            ..base.clone()
        }
    }
}

fn stats_of(svc: &Service, s: &Session, sdp: Option<String>) -> SessionStats {
    SessionStats {
        name: s.name.clone(),
        service: svc.id.clone(),
        kind: match s.kind {
            SessionKind::Streaming => "streaming".into(),
            SessionKind::Download => "download".into(),
        },
        key_group: svc.session_key_group(s).to_string(),
        sdp,
        rtp_output: s.rtp_output.map(|a| a.to_string()),
        ..Default::default()
    }
}
