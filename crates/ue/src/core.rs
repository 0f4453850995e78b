//! The synchronous heart of the UE: the MGV-F over its durable MGV-S, and
//! the ME part (MTK cache keyed by (MSK, MTK ID), one SRTP receive context
//! per streaming session, download keys). It reads no clock, draws no
//! random number and touches no socket: the shell ([`crate::runtime`])
//! feeds it datagrams and carries out the [`Out`]puts it returns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

/// Requests the UE sends for one inactive MSK that traffic needs before it
/// gives up on its activation (seed 004 6.3.2.3.3: "the UE may request the
/// MSK again from the BM-SC"). Each request waits
/// [`UeConfig::activation_timeout_ms`] for the activation; after the last
/// one seed 000 6.3.2.2.1 applies: unless a still-valid older MSK of the key
/// group is held, the UE leaves the services using it.
pub const ACTIVATION_REQUESTS: u32 = 2;

/// MSKs of one key group stored since registration that show the UE holds
/// the current MSK without traffic having named it: the BM-SC pushes the
/// current and the next MSK at registration (docs/bmsc.md), so once two
/// distinct MSKs of the group arrived since then one of them is the current
/// one; a single arrival may be the next MSK while the push of the current
/// one was lost (seed 002 6.3.2.2.1, `PROFILE.md` section 1: Key Number 0 =
/// the current MSK).
pub const CURRENT_EVIDENCE_MSKS: usize = 2;

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
    /// Traffic needs an inactive MSK: an activation deadline now runs (the
    /// key management task wakes up to poll [`Core::poll_activations`]).
    ActivationNeeded { msk: MskName },
}

/// What the key management task must do for an inactive MSK that traffic
/// needs (decided by [`Core::poll_activations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ActivationStep {
    /// Request this MSK by its MSK ID (seed 004 6.3.2.3.3); `attempt`
    /// counts from 1.
    Request { msk: MskName, attempt: u32 },
    /// No activation after [`ACTIVATION_REQUESTS`] requests: keep a
    /// still-valid older MSK of the key group (`keep_older`) or leave its
    /// services (seed 000 6.3.2.2.1).
    GiveUp {
        msk: MskName,
        requests: u32,
        keep_older: bool,
    },
}

/// An inactive MSK awaiting its activation.
#[derive(Debug, Clone)]
struct AwaitedActivation {
    /// When it was stored inactive (or first needed, for one held before
    /// a restart).
    since: Instant,
    /// Traffic named it.
    needed: bool,
    /// Requests sent, and when the last one was.
    requests: u32,
    last_request: Option<Instant>,
    /// Given up (an older MSK is kept): no more requests.
    done: bool,
}

impl AwaitedActivation {
    fn new(since: Instant) -> Self {
        AwaitedActivation {
            since,
            needed: false,
            requests: 0,
            last_request: None,
            done: false,
        }
    }

    /// When the next step is due, if it is needed and not given up.
    fn due(&self, timeout: Duration) -> Option<Instant> {
        (self.needed && !self.done).then(|| self.last_request.unwrap_or(self.since) + timeout)
    }
}

/// What arrived for a key group, marked with the core's sequence numbers
/// (for "does the UE hold the current MSK?").
#[derive(Debug, Default, Clone)]
struct GroupSeen {
    /// MSKs stored with a key, and the sequence number of their last store.
    msks: BTreeMap<MskName, u64>,
    /// The MSK of the last accepted MTK message, and its sequence number.
    mtk: Option<(MskName, u64)>,
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
    /// Sequence of MSK stores and MTK acceptances ([`Core::mark`]).
    seen_seq: u64,
    seen: BTreeMap<KeyGroupName, GroupSeen>,
    /// Inactive MSKs awaiting their activation (seed 004 6.3.2.3.3).
    awaited: BTreeMap<MskName, AwaitedActivation>,
    activation_timeout: Duration,
    pub dirty: bool,
    /// The current time (RFC 3339), set by the shell before each call.
    pub now: String,
    /// The shell's monotonic clock, set before each call (the core reads
    /// no clock).
    pub clock: Instant,
    /// The clock at start: the MGV-F's monotonic time is measured from it.
    epoch: Instant,
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
    pub fn new(cfg: &UeConfig, mgvf: MgvF<FileStore>, clock: Instant) -> Result<Self, StateError> {
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
            seen_seq: 0,
            seen: BTreeMap::new(),
            awaited: BTreeMap::new(),
            activation_timeout: cfg.activation_timeout(),
            dirty: true,
            now: String::new(),
            clock,
            epoch: clock,
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

    /// A mark of "now" in the sequence of MSK stores and MTK acceptances,
    /// for [`Core::holds_current_since`].
    pub fn mark(&self) -> u64 {
        self.seen_seq
    }

    fn seen_msk(&mut self, msk: MskName) {
        self.seen_seq += 1;
        let seq = self.seen_seq;
        self.seen
            .entry(msk.key_group())
            .or_default()
            .msks
            .insert(msk, seq);
    }

    fn seen_mtk(&mut self, msk: MskName) {
        self.seen_seq += 1;
        let seq = self.seen_seq;
        self.seen.entry(msk.key_group()).or_default().mtk = Some((msk, seq));
    }

    /// Initiation of key management (seed 002 6.3.2.2.1): whether, since
    /// `mark` (taken at registration), the UE got hold of the *current*
    /// MSK of `group`, so that its request for the current MSK (Key Number
    /// 0) may be skipped. An MSK that arrived is not necessarily the
    /// current one (it may be the next, pushed after the current one whose
    /// push was lost): the UE knows it holds the current MSK when an MTK
    /// message under an MSK it still holds was accepted since `mark`
    /// (traffic uses the current MSK), or when
    /// [`CURRENT_EVIDENCE_MSKS`] distinct MSKs of the group arrived since
    /// `mark` and are still held (the current and the next push).
    pub fn holds_current_since(&self, group: KeyGroupName, mark: u64) -> bool {
        let Some(seen) = self.seen.get(&group) else {
            return false;
        };
        let held = &self.mgvf.state().msks;
        if seen
            .mtk
            .is_some_and(|(m, at)| at > mark && held.contains_key(&m))
        {
            return true;
        }
        seen.msks
            .iter()
            .filter(|(m, at)| **at > mark && held.contains_key(m))
            .count()
            >= CURRENT_EVIDENCE_MSKS
    }

    /// Traffic needs `msk`: if the MGV-S holds it inactive, its activation
    /// deadline runs (from when it was stored inactive).
    fn need_activation(&mut self, msk: MskName, out: &mut Vec<Out>) {
        if !self
            .mgvf
            .state()
            .msks
            .get(&msk)
            .is_some_and(|m| m.is_inactive())
        {
            return;
        }
        let clock = self.clock;
        let a = self
            .awaited
            .entry(msk)
            .or_insert_with(|| AwaitedActivation::new(clock));
        if !a.needed {
            a.needed = true;
            debug!(%msk, "traffic needs an inactive MSK");
            out.push(Out::Km(KmCmd::ActivationNeeded { msk }));
        }
    }

    /// When [`Core::poll_activations`] has something to do next.
    pub fn next_activation_due(&self) -> Option<Instant> {
        self.awaited
            .values()
            .filter_map(|a| a.due(self.activation_timeout))
            .min()
    }

    /// The 4-way procedure's safety net (seed 004 6.3.2.3.3), at
    /// [`Core::clock`]: for each inactive MSK that traffic needs and whose
    /// activation did not arrive within the activation timeout (counted from
    /// its storage, then from each request), request it again, up to
    /// [`ACTIVATION_REQUESTS`] times; then give up, keeping a still-valid
    /// older MSK of the key group if one is held (seed 000 6.3.2.2.1).
    pub fn poll_activations(&mut self) -> Vec<ActivationStep> {
        let now = self.clock;
        let timeout = self.activation_timeout;
        // Forget what is no longer held inactive (activated, replaced, deleted).
        let held = &self.mgvf.state().msks;
        self.awaited
            .retain(|m, _| held.get(m).is_some_and(|r| r.is_inactive()));
        let mut steps = Vec::new();
        let mut gave_up = Vec::new();
        for (msk, a) in self.awaited.iter_mut() {
            if a.due(timeout).is_none_or(|d| d > now) {
                continue;
            }
            if a.requests < ACTIVATION_REQUESTS {
                a.requests += 1;
                a.last_request = Some(now);
                steps.push(ActivationStep::Request {
                    msk: *msk,
                    attempt: a.requests,
                });
            } else {
                a.done = true;
                gave_up.push((*msk, a.requests));
            }
        }
        for (msk, requests) in gave_up {
            steps.push(ActivationStep::GiveUp {
                msk,
                requests,
                keep_older: self.usable_msk(msk.key_group()),
            });
        }
        if !steps.is_empty() {
            self.dirty = true;
        }
        steps
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
        match self
            .mgvf
            .process_msk_message(bytes, self.clock.saturating_duration_since(self.epoch))
        {
            Ok(MskOutcome::Stored {
                msk,
                inactive,
                replaced,
                ack,
            }) => {
                self.counters.msk_messages += 1;
                *self.arrivals.entry(msk.key_group()).or_default() += 1;
                if let Some(r) = replaced {
                    self.awaited.remove(&r);
                }
                if self.mgvf.state().msks.contains_key(&msk) {
                    self.seen_msk(msk);
                    if inactive {
                        // The activation clock starts now (seed 004 6.3.2.3.3).
                        let clock = self.clock;
                        self.awaited
                            .entry(msk)
                            .or_insert_with(|| AwaitedActivation::new(clock));
                    } else {
                        self.awaited.remove(&msk);
                    }
                }
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
            Ok(MskOutcome::Superseded { msk, ack }) => {
                // Valid, but lower than the two MSKs held for its key group
                // (seed 000 6.3.2.1): acknowledged, not stored.
                self.counters.msk_messages += 1;
                info!(%msk, ack = ack.is_some(), "MSK older than the two held: not stored");
                if let Some(a) = ack {
                    self.counters.acks_sent += 1;
                    out.push(Out::Mikey { to: from, bytes: a });
                }
            }
            Ok(MskOutcome::DuplicateSuppressed { msk }) => {
                debug!(%from, %msk, "identical resend: acknowledged again less than a second ago");
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
                self.seen_mtk(o.msk);
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
            Err(MgvError::InactiveMsk(n)) => {
                // Seed 004 6.3.2.3.3: the activation is awaited; if it does
                // not come, the UE requests the MSK again.
                self.need_activation(n, &mut out);
                (MtkStatus::Waiting, out)
            }
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
                    let held = self.mgvf.state().msks.get(&name).map(|m| m.is_inactive());
                    if held == Some(true) {
                        // Traffic under an MSK awaiting its activation.
                        self.need_activation(name, &mut out);
                    } else if held == Some(false) {
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
        self.awaited.retain(|m, _| m.key_group() != group);
        self.seen.remove(&group);
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

#[cfg(test)]
mod tests {
    //! The key management decisions of the core, with injected time.

    use super::*;
    use mbms::messages::{MskKeyData, MskMessage, MtkMessage};
    use mbms::{KeyDomainId, Msk, MtkId};

    use crate::config::tests::UE;

    const SVC: &str = r#"
[[service]]
id = "urn:mbms:service:news"
key_management_uri = "http://127.0.0.1:8081/keymanagement"
bmsc_fqdn = "bmsc.home1.net"
key_domain = "001-01"
key_groups = [1]

[[service.session]]
name = "video"
kind = "streaming"
mtk_listen = "127.0.0.1:5002"
srtp_listen = "127.0.0.1:5004"
rtp_output = "127.0.0.1:6004"
"#;

    const TIMEOUT: Duration = Duration::from_millis(1000);
    const BTID: &str = "cmFuZA==@bsf.home1.net";

    struct T {
        _dir: tempfile::TempDir,
        core: Core,
        muk: Muk,
        counter: u32,
        msks: BTreeMap<u16, Msk>,
        t0: Instant,
    }

    fn kd() -> KeyDomainId {
        "001-01".parse().unwrap()
    }

    fn group() -> KeyGroupName {
        KeyGroupName {
            key_domain: kd(),
            key_group: 1,
        }
    }

    fn name(n: u16) -> MskName {
        MskName {
            key_domain: kd(),
            msk_id: MskId::new(1, n),
        }
    }

    impl T {
        fn new() -> T {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = UeConfig::parse(UE).unwrap();
            cfg.activation_timeout_ms = TIMEOUT.as_millis() as u64;
            cfg.state_dir = dir.path().to_path_buf();
            cfg.service_list = crate::config::parse_services(SVC).unwrap();
            let store = FileStore::create(dir.path().join(state::files::MGVS)).unwrap();
            let t0 = Instant::now();
            let mut core = Core::new(&cfg, MgvF::new(store), t0).unwrap();
            let muk = Muk::from_bytes([7; 32]);
            core.add_muk(MukId::new("bmsc.home1.net", BTID), muk.clone())
                .unwrap();
            T {
                _dir: dir,
                core,
                muk,
                counter: 0,
                msks: BTreeMap::new(),
                t0,
            }
        }

        fn at(&mut self, ms: u64) {
            self.core.clock = self.t0 + Duration::from_millis(ms);
        }

        /// Delivers MSK `n` of key group 1 with the window (seq_s, seq_u].
        fn msk(&mut self, n: u16, seq_s: u16, seq_u: u16) -> Vec<Out> {
            self.counter += 1;
            let msk = self
                .msks
                .entry(n)
                .or_insert_with(|| Msk::from_bytes([n as u8; 16]))
                .clone();
            let m = MskMessage {
                muk_id: MukId::new("bmsc.home1.net", BTID),
                counter: self.counter,
                rand: [self.counter as u8; 16],
                msk: name(n),
                v: true,
                key: Some(MskKeyData {
                    msk,
                    seq_s: MtkId::new(seq_s),
                    seq_u: MtkId::new(seq_u),
                }),
            };
            let bytes = m.build(&self.muk).unwrap().bytes;
            self.core
                .on_mikey(&bytes, "127.0.0.1:2269".parse().unwrap())
        }

        /// An MTK message under MSK `n` (with its key if the test knows it).
        fn mtk(&mut self, n: u16, mtk_id: u16, counter: u32) -> (MtkStatus, Vec<Out>) {
            let msk = self
                .msks
                .get(&n)
                .cloned()
                .unwrap_or_else(|| Msk::from_bytes([0xEE; 16]));
            let m = MtkMessage {
                counter,
                rand: [9; 16],
                msk: name(n),
                mtk_id: MtkId::new(mtk_id),
                mtk: Mtk {
                    key: MtkKey::from_bytes([mtk_id as u8; 16]),
                    salt: MtkSalt::from_bytes([3; 14]),
                },
                streaming: None,
            };
            self.core.on_mtk(&m.build(&msk).unwrap())
        }
    }

    fn needed(outs: &[Out]) -> Vec<MskName> {
        outs.iter()
            .filter_map(|o| match o {
                Out::Km(KmCmd::ActivationNeeded { msk }) => Some(*msk),
                _ => None,
            })
            .collect()
    }

    // Issue 11 point 1 (seed 002 6.3.2.2.1): the push of the current MSK
    // #1 is lost and the next MSK #2 arrives first; the UE does not hold the
    // current MSK and must not skip its initial request.
    #[test]
    fn a_later_msk_arriving_first_does_not_serve_the_initial_request() {
        let mut t = T::new();
        let mark = t.core.mark();
        assert!(!t.core.holds_current_since(group(), mark));
        t.msk(2, 0, 100);
        assert!(
            !t.core.holds_current_since(group(), mark),
            "the next MSK alone is not the current one"
        );
        // The retransmitted current MSK arrives: current and next are held.
        t.msk(1, 0, 100);
        assert!(t.core.holds_current_since(group(), mark));
        // Arrivals before the mark (e.g. before a re-registration) count
        // for nothing.
        assert!(!t.core.holds_current_since(group(), t.core.mark()));
    }

    #[test]
    fn traffic_under_a_held_msk_shows_it_is_the_current_one() {
        let mut t = T::new();
        let mark = t.core.mark();
        t.msk(1, 0, 100);
        assert!(!t.core.holds_current_since(group(), mark));
        let (st, _) = t.mtk(1, 1, 1);
        assert_eq!(st, MtkStatus::Held);
        assert!(t.core.holds_current_since(group(), mark));
        // Deleting the group's keys forgets the evidence.
        t.core.delete_group(group());
        assert!(!t.core.holds_current_since(group(), mark));
    }

    // Issue 11 point 2 (seed 004 6.3.2.3.3, seed 000 6.3.2.2.1).
    #[test]
    fn a_needed_inactive_msk_is_requested_after_the_timeout_then_given_up() {
        let mut t = T::new();
        t.at(0);
        t.msk(1, 1, 0); // step 1: inactive (SEQs > SEQu)
                        // Not needed yet: nothing to do, whatever the time.
        t.at(5 * 1000);
        assert!(t.core.poll_activations().is_empty());
        assert_eq!(t.core.next_activation_due(), None);
        // Traffic names it; the activation clock started at its storage.
        t.at(200);
        let (st, outs) = t.mtk(1, 1, 1);
        assert_eq!(st, MtkStatus::Waiting);
        assert_eq!(needed(&outs), vec![name(1)]);
        // Named again: no second wake-up.
        assert!(needed(&t.mtk(1, 2, 2).1).is_empty());
        assert_eq!(t.core.next_activation_due(), Some(t.t0 + TIMEOUT));
        t.at(999);
        assert!(t.core.poll_activations().is_empty());
        t.at(1000);
        assert_eq!(
            t.core.poll_activations(),
            vec![ActivationStep::Request {
                msk: name(1),
                attempt: 1
            }]
        );
        assert!(
            t.core.poll_activations().is_empty(),
            "one request per timeout"
        );
        assert_eq!(
            t.core.next_activation_due(),
            Some(t.t0 + Duration::from_millis(2000))
        );
        t.at(2000);
        assert_eq!(
            t.core.poll_activations(),
            vec![ActivationStep::Request {
                msk: name(1),
                attempt: 2
            }]
        );
        assert_eq!(ACTIVATION_REQUESTS, 2);
        t.at(3000);
        assert_eq!(
            t.core.poll_activations(),
            vec![ActivationStep::GiveUp {
                msk: name(1),
                requests: ACTIVATION_REQUESTS,
                keep_older: false
            }]
        );
        // Given up: no more requests.
        t.at(60_000);
        assert!(t.core.poll_activations().is_empty());
        assert_eq!(t.core.next_activation_due(), None);
    }

    #[test]
    fn the_activation_ends_the_wait() {
        let mut t = T::new();
        t.at(0);
        t.msk(1, 1, 0);
        t.at(100);
        assert_eq!(needed(&t.mtk(1, 1, 1).1), vec![name(1)]);
        t.at(1000);
        assert_eq!(t.core.poll_activations().len(), 1);
        // The BM-SC answers the request with the activation.
        t.at(1200);
        t.msk(1, 0, 100);
        assert_eq!(t.core.next_activation_due(), None);
        t.at(10_000);
        assert!(t.core.poll_activations().is_empty());
        assert_eq!(t.mtk(1, 1, 3).0, MtkStatus::Held);
    }

    #[test]
    fn giving_up_keeps_a_still_valid_older_msk() {
        let mut t = T::new();
        t.at(0);
        t.msk(1, 0, 100);
        t.msk(2, 1, 0);
        t.at(10);
        assert_eq!(needed(&t.mtk(2, 1, 1).1), vec![name(2)]);
        t.at(1000);
        t.core.poll_activations();
        t.at(2000);
        t.core.poll_activations();
        t.at(3000);
        assert_eq!(
            t.core.poll_activations(),
            vec![ActivationStep::GiveUp {
                msk: name(2),
                requests: ACTIVATION_REQUESTS,
                keep_older: true
            }]
        );
    }

    #[test]
    fn an_inactive_msk_held_before_a_restart_counts_from_when_it_is_needed() {
        let mut t = T::new();
        t.at(0);
        t.msk(1, 1, 0);
        // As after a restart: the wait list is empty, the MGV-S holds it.
        t.core.awaited.clear();
        t.at(5000);
        assert_eq!(needed(&t.mtk(1, 1, 1).1), vec![name(1)]);
        t.at(5999);
        assert!(t.core.poll_activations().is_empty());
        t.at(6000);
        assert_eq!(t.core.poll_activations().len(), 1);
    }

    #[test]
    fn an_srtp_mki_naming_an_inactive_msk_needs_it() {
        let mut t = T::new();
        t.at(0);
        t.msk(1, 1, 0);
        let mut tx = srtp::Sender::new(srtp::Config::mbms()).unwrap();
        tx.add_key(&MasterKey::with_mki(
            [1; 16],
            [2; 14],
            Mki::mbms(u32::from_be_bytes(MskId::new(1, 1).to_bytes()), 1),
        ))
        .unwrap();
        let mut pkt = vec![0x80, 33, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xAA, 0xBB];
        tx.protect_rtp_vec(&mut pkt).unwrap();
        let outs = t.core.on_srtp(0, pkt);
        assert_eq!(needed(&outs), vec![name(1)]);
        // An unknown MSK is a missed key update instead.
        let mut tx = srtp::Sender::new(srtp::Config::mbms()).unwrap();
        tx.add_key(&MasterKey::with_mki(
            [1; 16],
            [2; 14],
            Mki::mbms(u32::from_be_bytes(MskId::new(1, 9).to_bytes()), 1),
        ))
        .unwrap();
        let mut pkt = vec![0x80, 33, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0xAA];
        tx.protect_rtp_vec(&mut pkt).unwrap();
        let outs = t.core.on_srtp(0, pkt);
        assert!(needed(&outs).is_empty());
        assert!(outs
            .iter()
            .any(|o| matches!(o, Out::Km(KmCmd::MissedKey { msk }) if *msk == name(9))));
    }
}
