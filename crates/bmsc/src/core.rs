//! The BM-SC's state and decisions around the sans-IO key engine
//! ([`mbms::engine::Engine`]): services, key groups, registrations, the
//! UEs' MIKEY addresses, and persistence. Everything here is synchronous
//! (the store blocks); the server keeps one [`Core`] behind a mutex and
//! calls it from blocking threads ([`CoreHandle::run`]). Network I/O is
//! the caller's: methods return the datagrams to send.
//!
//! Order of effects: every change a client is told about (a 200 for a
//! registration) and every acknowledgement outcome (delivery acknowledged,
//! charging record) is committed to the store before the answer is given or
//! the next message depending on it (the activation) is built.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rand::rngs::{OsRng, StdRng};
use rand::SeedableRng as _;
use tokio::sync::Notify;

use mbms::engine::{
    AckError, Action, DeliveryState, Engine, EngineConfig, EngineError, KeyGroupConfig,
    KeyGroupInfo, MtkOutput, Step, Timestamp, UeHandle, UeId,
};
use mbms::messages::Streaming;
use mbms::{KeyDomainId, KeyGroupName, MskName, Muk, MukId};

use crate::config::{check_key_group, check_service};
use crate::metrics::Metrics;
use crate::store::{
    ChargingRow, DeliveryRecord, EngineStoreHandle, KeyGroupDef, Outcomes, ServiceDef, Store,
    StoreError, UeRecord, UeWrite, WriteBatch,
};

/// Per-item status codes (`PROFILE.md` section 3).
pub mod status {
    /// Success (for an MSK: it follows by MIKEY).
    pub const OK: u16 = 200;
    /// Malformed item.
    pub const BAD_REQUEST: u16 = 400;
    /// Not authorised.
    pub const FORBIDDEN: u16 = 403;
    /// Unknown service or MSK.
    pub const NOT_FOUND: u16 = 404;
    /// Temporarily unavailable.
    pub const UNAVAILABLE: u16 = 480;
    /// Server error.
    pub const SERVER_ERROR: u16 = 500;
}

/// A failure of a core operation. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key engine refused.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// No such object.
    #[error("not found: {0}")]
    NotFound(String),
    /// Invalid input.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Who sent an authenticated Ua request.
#[derive(Clone)]
pub struct UeContext {
    /// The subscriber (IMPI from Zn).
    pub impi: String,
    /// The B-TID (Digest username).
    pub btid: String,
    /// The MUK of that B-TID.
    pub muk: Muk,
    /// The source IP of the request and the UE's MIKEY port.
    pub mikey_addr: SocketAddr,
}

/// Settings of the core.
#[derive(Clone, Debug)]
pub struct CoreSettings {
    /// BM-SC FQDN (IDi).
    pub fqdn: String,
    /// The Key Domain ID of every key group.
    pub key_domain: KeyDomainId,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Key groups of the configuration (replace stored definitions).
    pub key_groups: Vec<KeyGroupDef>,
    /// Services of the configuration (replace stored definitions).
    pub services: Vec<ServiceDef>,
}

/// Datagrams to send.
pub type Datagrams = Vec<(SocketAddr, Vec<u8>)>;

/// A key group as the admin API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyGroupView {
    /// The definition.
    #[serde(flatten)]
    pub def: KeyGroupDef,
    /// Key Domain ID (hex).
    pub key_domain: String,
    /// Current MSK.
    pub current: MskView,
    /// Next MSK.
    pub next: MskView,
    /// UEs subscribed.
    pub members: usize,
}

/// An MSK without its key.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MskView {
    /// MSK ID (hex).
    pub msk_id: String,
    /// SEQs.
    pub seq_s: u16,
    /// SEQu.
    pub seq_u: u16,
    /// The last MTK ID issued.
    pub last_mtk_id: u16,
}

/// A UE as the admin API shows it (no key).
#[derive(Clone, Debug, serde::Serialize)]
pub struct UeView {
    /// IMPI.
    pub impi: String,
    /// B-TID of its last authenticated request.
    pub btid: String,
    /// MIKEY address.
    pub mikey_addr: String,
    /// Registered services.
    pub services: Vec<String>,
    /// Key groups it receives.
    pub key_groups: Vec<u16>,
    /// Last change, Unix milliseconds.
    pub updated_at: u64,
}

/// The delivery of one MSK to one UE as the admin API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeliveryView {
    /// Key group.
    pub key_group: u16,
    /// MSK ID (hex).
    pub msk_id: String,
    /// `current` or `next`.
    pub role: &'static str,
    /// `pending`, `sent`, `unconfirmed`, `acknowledged`, `given_up` or
    /// `none`.
    pub state: &'static str,
    /// `deliver`, `inactive` or `activate`.
    pub step: Option<&'static str>,
    /// Transmissions of the current step.
    pub attempt: Option<u32>,
    /// The subscriber was charged for the MSK.
    pub charged: bool,
}

fn step_name(s: Step) -> &'static str {
    match s {
        Step::Deliver => "deliver",
        Step::Inactive => "inactive",
        Step::Activate => "activate",
    }
}

fn state_name(s: &DeliveryState) -> &'static str {
    match s {
        DeliveryState::Pending => "pending",
        DeliveryState::Sent { .. } => "sent",
        DeliveryState::Unconfirmed => "unconfirmed",
        DeliveryState::Acknowledged => "acknowledged",
        DeliveryState::GivenUp => "given_up",
    }
}

fn msk_view(m: &mbms::engine::MskInfo) -> MskView {
    MskView {
        msk_id: m.name.msk_id.to_string(),
        seq_s: m.seq_s.value(),
        seq_u: m.seq_u.value(),
        last_mtk_id: m.last_mtk_id.value(),
    }
}

/// Charging records read per query when they are restored at start.
const CHARGING_PAGE: usize = 1000;

/// Deliveries sent per [`Core::poll`] at most: a rotation of many UEs goes
/// out in chunks, with the acknowledgements read (and the core lock free for
/// HTTP requests) between them.
pub const POLL_BATCH: usize = 4096;

/// Messages the engine driver builds on a runtime worker, without handing
/// the core to a blocking thread ([`CoreHandle::run_short`]): the pushes
/// that MSK requests and registrations make due come in a few at a time,
/// and a thread hand-off per request cost more than building them. A poll
/// that fills it (a rotation, many retransmissions) goes on in
/// [`POLL_BATCH`]es on a blocking thread, and so does one whose messages
/// need a new block of MIKEY counters (a store write, once per
/// [`EngineConfig::counter_block`](mbms::engine::EngineConfig::counter_block)
/// messages: [`Core::poll_short`] never writes).
pub const SHORT_POLL: usize = 64;

/// How far the group commit got: every write with a ticket at most
/// `committed` is durable; a request whose ticket is at most `failed` (and
/// above `committed`) saw its commit fail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitState {
    /// Highest ticket committed.
    pub committed: u64,
    /// Highest ticket whose commit failed.
    pub failed: u64,
}

/// The writes of one group commit, taken by [`Core::begin_commit`].
#[derive(Debug)]
pub struct PendingCommit {
    /// What to write, in order.
    pub batch: WriteBatch,
    /// The last ticket it covers.
    upto: u64,
}

impl PendingCommit {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

/// Current time for the engine.
pub fn now_ts() -> Timestamp {
    Timestamp(crate::unix_millis())
}

/// The services of a UE: bits of the services' indices in
/// [`Core::service_names`] (one word for the first 64 services configured;
/// more go to a set allocated only for UEs that use them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServiceSet {
    low: u64,
    /// Indices from 64 up, sorted; `None` when empty.
    high: Option<Box<[u16]>>,
}

impl ServiceSet {
    fn insert(&mut self, i: u16) {
        if i < 64 {
            self.low |= 1 << i;
        } else if !self.contains(i) {
            let mut v: Vec<u16> = self.high.take().map(Vec::from).unwrap_or_default();
            let at = v.partition_point(|x| *x < i);
            v.insert(at, i);
            self.high = Some(v.into_boxed_slice());
        }
    }

    fn remove(&mut self, i: u16) {
        if i < 64 {
            self.low &= !(1 << i);
        } else if let Some(h) = self.high.take() {
            let v: Vec<u16> = h.iter().copied().filter(|x| *x != i).collect();
            self.high = (!v.is_empty()).then(|| v.into_boxed_slice());
        }
    }

    fn contains(&self, i: u16) -> bool {
        if i < 64 {
            self.low & (1 << i) != 0
        } else {
            self.high
                .as_ref()
                .is_some_and(|h| h.binary_search(&i).is_ok())
        }
    }

    fn is_empty(&self) -> bool {
        self.low == 0 && self.high.is_none()
    }

    fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..64u16)
            .filter(|i| self.low & (1 << i) != 0)
            .chain(self.high.iter().flat_map(|h| h.iter().copied()))
    }
}

/// What the core keeps of a registered UE, at the index of its engine
/// handle ([`UeHandle::index`]); its IMPI, B-TID and MUK are the engine's
/// (one copy per UE).
#[derive(Clone, PartialEq, Eq)]
struct UeEntry {
    /// Where MIKEY messages go (`PROFILE.md` section 3).
    mikey_addr: SocketAddr,
    /// The services it is registered to.
    services: ServiceSet,
    /// Last change, Unix milliseconds.
    updated_at: u64,
}

/// The state and decisions of the BM-SC. See the [module documentation](self).
pub struct Core {
    engine: Engine<EngineStoreHandle>,
    /// Writes of answered-but-not-yet-committed requests (group commit:
    /// the committer writes them in one transaction; a request is answered
    /// only when its [`ticket`](Core::write_ticket) is committed).
    pending: WriteBatch,
    /// Where the `pending` delivery record of an MSK request waits in
    /// `pending.outcomes.deliveries`, by subscriber and MSK, so that its
    /// acknowledgement, when it arrives before the commit begins, takes its
    /// place instead of a second write ([`Core::on_acks`]).
    queued_requests: HashMap<(String, MskName), usize>,
    /// Ticket of the last write put in `pending`.
    ticket: u64,
    /// Commit progress, for the requests waiting for their writes.
    commits: tokio::sync::watch::Sender<CommitState>,
    /// The ticket of the last charging records queued ([`Core::on_acks`]):
    /// no MSK message is built until it is committed ([`Core::poll_hold`]).
    charged_ticket: u64,
    /// UEs with at least one service (the `registered_ues` gauge).
    registered: usize,
    /// For retransmission jitter and solicited-pull RANDs: a CSPRNG seeded
    /// from the OS (one system call per message costs more than the
    /// message).
    rng: StdRng,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    fqdn: String,
    key_domain: KeyDomainId,
    groups: BTreeMap<u16, KeyGroupDef>,
    services: BTreeMap<String, ServiceDef>,
    /// Every service ID ever configured in this run, by index (the bits of
    /// a [`ServiceSet`]); never shrinks.
    service_names: Vec<String>,
    /// Registered UEs by engine handle (`None`: not registered).
    ues: Vec<Option<UeEntry>>,
    /// `Some` entries of `ues`.
    known: usize,
    last_rotation: BTreeMap<u16, u64>,
    /// Several instances on one database ([`crate::cluster`]): the UE
    /// shards and key groups this instance owns; `None`: it owns all.
    cluster: Option<CoreCluster>,
}

/// What this instance owns among several ([`crate::cluster`]).
#[derive(Debug, Default)]
struct CoreCluster {
    /// Owned UE shards (index: shard).
    shards: Vec<bool>,
    /// Key groups this instance is the anchor of (TS 33.246 6.3.4.3).
    anchored: BTreeSet<u16>,
    /// Solicited pulls asked lately in the cluster ([`Core::remember_pull`]):
    /// key group, the one UE or all, remembered until (ms).
    recent_pulls: Vec<(u16, Option<String>, u64)>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("fqdn", &self.fqdn)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// Opens the core: applies the configured definitions to the store,
    /// opens every key group, and restores the UEs, their subscriptions and
    /// the outcome of their deliveries (acknowledged MSKs are not resent;
    /// everything else is pushed again with fresh counters).
    pub fn open(
        settings: &CoreSettings,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        now: Timestamp,
    ) -> Result<Core, CoreError> {
        for d in &settings.key_groups {
            check_key_group(d).map_err(CoreError::Invalid)?;
            store.put_key_group_def(d)?;
        }
        for s in &settings.services {
            check_service(s).map_err(CoreError::Invalid)?;
            store.put_service(s)?;
        }
        let engine = Engine::new(settings.engine, EngineStoreHandle(store.clone()))?;
        let mut core = Core {
            engine,
            pending: WriteBatch::default(),
            queued_requests: HashMap::new(),
            ticket: 0,
            commits: tokio::sync::watch::Sender::new(CommitState::default()),
            charged_ticket: 0,
            registered: 0,
            rng: StdRng::from_rng(OsRng).map_err(|e| CoreError::Invalid(format!("OS RNG: {e}")))?,
            store: store.clone(),
            metrics,
            fqdn: settings.fqdn.clone(),
            key_domain: settings.key_domain,
            groups: BTreeMap::new(),
            services: BTreeMap::new(),
            service_names: Vec::new(),
            ues: Vec::new(),
            known: 0,
            last_rotation: BTreeMap::new(),
            cluster: store.cluster().map(|_| CoreCluster {
                shards: vec![false; crate::cluster::UE_SHARDS as usize],
                anchored: BTreeSet::new(),
                recent_pulls: Vec::new(),
            }),
        };
        for d in store.key_group_defs()? {
            core.open_group(&d, now)?;
        }
        for s in store.services()? {
            core.service_index(&s.id);
            core.services.insert(s.id.clone(), s);
        }
        // Several instances: the UEs are loaded shard by shard as their
        // leases are taken (`take_shards`).
        let all_ues = if core.cluster.is_some() {
            Vec::new()
        } else {
            store.ues()?
        };
        for ue in all_ues {
            let h = core.engine.register_ue(
                UeId(ue.impi),
                MukId::new(core.fqdn.clone(), ue.btid),
                ue.muk,
                now,
            );
            core.registered += usize::from(!ue.services.is_empty());
            let mut services = ServiceSet::default();
            for s in &ue.services {
                services.insert(core.service_index(s));
            }
            core.set_entry(
                h,
                Some(UeEntry {
                    mikey_addr: ue.mikey_addr,
                    services,
                    updated_at: ue.updated_at,
                }),
            );
            core.sync_groups(h, now)?;
        }
        core.ues.shrink_to_fit();
        let mut restored = 0usize;
        let all_deliveries = if core.cluster.is_some() {
            Vec::new()
        } else {
            store.deliveries(None)?
        };
        for d in all_deliveries {
            let acked = d.state == "acknowledged";
            if core
                .engine
                .restore_delivery(&UeId(d.impi.clone()), &d.msk, acked, d.charged)
            {
                restored += 1;
            }
        }
        let charges = core.restore_charges(now)?;
        core.update_gauge();
        tracing::info!(
            key_groups = core.groups.len(),
            services = core.services.len(),
            ues = core.known,
            restored_deliveries = restored,
            restored_charges = charges,
            backend = store.backend(),
            "BM-SC state loaded"
        );
        Ok(core)
    }

    /// Tells the engine who was charged for the current and next MSKs, from
    /// the durable charging records (seed 004 6.3.2.3.3: a subscriber is
    /// charged once per MSK): a charged subscriber who asks for the MSK
    /// again gets its activation, also after a deregistration (which
    /// forgets the UE's deliveries, not its charges). Returns the charges
    /// restored.
    fn restore_charges(&mut self, now: Timestamp) -> Result<usize, CoreError> {
        let mut after = 0i64;
        let mut restored = 0usize;
        loop {
            let page = self.store.charging_records(after, CHARGING_PAGE)?;
            for r in &page {
                if self.engine.mark_charged(&UeId(r.impi.clone()), &r.msk, now) {
                    restored += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() == CHARGING_PAGE => after = last.id,
                _ => return Ok(restored),
            }
        }
    }

    fn group_name(&self, g: u16) -> KeyGroupName {
        KeyGroupName {
            key_domain: self.key_domain,
            key_group: g,
        }
    }

    fn open_group(&mut self, d: &KeyGroupDef, now: Timestamp) -> Result<KeyGroupInfo, CoreError> {
        let cfg = KeyGroupConfig {
            window_len: d.window_len,
            charging: d.charging,
            ack_requested: d.ack,
        };
        let info = self
            .engine
            .open_key_group(self.group_name(d.key_group), cfg, &mut OsRng)?;
        self.groups.insert(d.key_group, d.clone());
        self.last_rotation.entry(d.key_group).or_insert(now.0);
        Ok(info)
    }

    fn update_gauge(&self) {
        self.metrics
            .registered_ues
            .set(i64::try_from(self.registered).unwrap_or(i64::MAX));
    }

    /// Keep the count of UEs with a service right when `impi`'s record
    /// changes from `before` to `after` (`None`: absent).
    fn count_registered(&mut self, before: Option<bool>, after: Option<bool>) {
        let had = before.unwrap_or(false);
        let has = after.unwrap_or(false);
        match (had, has) {
            (false, true) => self.registered += 1,
            (true, false) => self.registered = self.registered.saturating_sub(1),
            _ => {}
        }
    }

    /// Queue writes for the next group commit; returns their ticket.
    fn enqueue(&mut self, batch: WriteBatch) -> u64 {
        if !batch.is_empty() {
            self.pending.append(batch);
            self.ticket += 1;
        }
        self.ticket
    }

    /// The ticket a request must see committed before it is answered: the
    /// last write queued so far (its own included).
    pub fn write_ticket(&self) -> u64 {
        self.ticket
    }

    /// Whether writes wait for a commit.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Commit progress (see [`CommitState`]).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<CommitState> {
        self.commits.subscribe()
    }

    /// The ticket that must be committed before the next poll may build
    /// MSK messages, if any: the charging records of 4-way step-1
    /// acknowledgements ([`on_acks`](Self::on_acks)). Each such
    /// acknowledgement also made its activation due at once (seed 004
    /// 6.3.2.3.3); built before the commit, a UE could hold the MSK active
    /// with no charging record on disk if the BM-SC died then (module
    /// documentation: the order of effects). While it is `Some`, the polls
    /// build nothing; the engine driver waits for that commit, then polls.
    pub fn poll_hold(&self) -> Option<u64> {
        (self.charged_ticket > self.commits.borrow().committed).then_some(self.charged_ticket)
    }

    /// Takes every queued write for one group commit (the first of the
    /// committer's three steps, `crate::committer`). The caller writes
    /// `commit.batch` with [`Store::commit`] (on the [`store`](Self::store),
    /// the core need not be held) and hands the result to
    /// [`end_commit`](Self::end_commit) before it begins another commit, so
    /// that writes reach the store in the order they were queued.
    pub fn begin_commit(&mut self) -> PendingCommit {
        self.queued_requests.clear();
        let batch = std::mem::take(&mut self.pending);
        PendingCommit {
            upto: self.ticket,
            batch,
        }
    }

    /// Ends a commit begun with [`begin_commit`](Self::begin_commit):
    /// on success every ticket it covers is committed (the waiting requests
    /// are answered) and the charging records it wrote are counted; on a
    /// failure its writes go back in front of the queue (the next commit
    /// retries them, in order) and the waiting requests are told.
    pub fn end_commit(
        &mut self,
        commit: PendingCommit,
        result: Result<Vec<ChargingRow>, StoreError>,
    ) -> Result<Vec<ChargingRow>, CoreError> {
        let PendingCommit { upto, batch, .. } = commit;
        match result {
            Ok(rows) => {
                let writes = batch.writes();
                if writes > 0 {
                    self.metrics.group_commits.inc();
                    self.metrics.group_commit_writes.inc_by(writes as u64);
                }
                for r in &rows {
                    self.metrics.charging_records.inc();
                    tracing::debug!(impi = %r.impi, msk = %r.msk, id = r.id, "charging record written");
                }
                self.commits
                    .send_modify(|c| c.committed = c.committed.max(upto));
                Ok(rows)
            }
            Err(e) => {
                // The queued records move: none is replaced any more.
                self.queued_requests.clear();
                let later = std::mem::take(&mut self.pending);
                self.pending = batch;
                self.pending.append(later);
                // Shards given up meanwhile (a lease lost while the
                // database was unreachable): their owner must hear of
                // these writes once they commit.
                self.notify_unowned_writes();
                self.commits.send_modify(|c| c.failed = c.failed.max(upto));
                Err(e.into())
            }
        }
    }

    /// The index of service `id` in [`Core::service_names`], added if new.
    fn service_index(&mut self, id: &str) -> u16 {
        if let Some(i) = self.service_names.iter().position(|n| n == id) {
            return i as u16;
        }
        let i = u16::try_from(self.service_names.len()).expect("fewer than 65536 services");
        self.service_names.push(id.to_owned());
        i
    }

    fn service_known(&self, id: &str) -> Option<u16> {
        self.service_names
            .iter()
            .position(|n| n == id)
            .map(|i| i as u16)
    }

    /// The registered UE of handle `h`.
    fn entry(&self, h: UeHandle) -> Option<&UeEntry> {
        self.ues.get(h.index()).and_then(Option::as_ref)
    }

    /// The handle of the registered UE `impi`.
    fn registered_handle(&self, impi: &str) -> Option<UeHandle> {
        self.engine
            .ue_handle(impi)
            .filter(|h| self.entry(*h).is_some())
    }

    fn set_entry(&mut self, h: UeHandle, e: Option<UeEntry>) {
        if self.ues.len() <= h.index() {
            if e.is_none() {
                return;
            }
            self.ues.resize(h.index() + 1, None);
        }
        let slot = &mut self.ues[h.index()];
        self.known = self.known + usize::from(e.is_some()) - usize::from(slot.is_some());
        *slot = e;
    }

    /// The service names of a set.
    fn service_ids(&self, set: &ServiceSet) -> BTreeSet<String> {
        set.iter()
            .filter_map(|i| self.service_names.get(usize::from(i)).cloned())
            .collect()
    }

    /// The key groups a UE should receive: those of its services.
    fn wanted_groups(&self, h: UeHandle) -> BTreeSet<u16> {
        self.entry(h)
            .map(|u| {
                u.services
                    .iter()
                    .filter_map(|i| self.service_names.get(usize::from(i)))
                    .filter_map(|s| self.services.get(s))
                    .flat_map(|s| s.key_groups.iter().copied())
                    .filter(|g| self.groups.contains_key(g))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The key groups of this BM-SC's key domain UE `h` is subscribed to in
    /// the engine.
    fn subscribed_groups(&self, h: UeHandle) -> BTreeSet<u16> {
        self.engine
            .subscriptions(h)
            .filter(|n| n.key_domain == self.key_domain)
            .map(|n| n.key_group)
            .collect()
    }

    /// Whether UE `h` (when known) is subscribed in the engine to key group
    /// `group` of this BM-SC's key domain ([`Self::subscribed_groups`]
    /// without collecting them).
    fn is_subscribed(&self, h: Option<UeHandle>, group: u16) -> bool {
        h.is_some_and(|h| self.engine.is_subscribed(h, &self.group_name(group)))
    }

    /// Subscribe / unsubscribe the UE in the engine to match its services.
    fn sync_groups(&mut self, h: UeHandle, now: Timestamp) -> Result<(), CoreError> {
        let want = self.wanted_groups(h);
        let have = self.subscribed_groups(h);
        if want == have {
            return Ok(());
        }
        let Some(impi) = self.engine.ue_id(h) else {
            return Ok(());
        };
        let ue = UeId(impi.to_owned());
        for g in have.difference(&want) {
            self.engine.unsubscribe(&ue, &self.group_name(*g));
        }
        for g in want.difference(&have) {
            self.engine.subscribe(&ue, &self.group_name(*g), now)?;
        }
        Ok(())
    }

    /// Record the UE's B-TID, MUK and MIKEY address from an authenticated
    /// request, with `services` as its registrations. Persisted first.
    /// Returns its handle.
    fn put_ue(
        &mut self,
        ctx: &UeContext,
        services: ServiceSet,
        now: Timestamp,
    ) -> Result<UeHandle, CoreError> {
        let entry = UeEntry {
            mikey_addr: ctx.mikey_addr,
            services,
            updated_at: now.0,
        };
        let known = self.registered_handle(&ctx.impi);
        if let Some(h) = known {
            if self.entry(h) == Some(&entry) && self.same_keys(h, ctx) {
                return Ok(h);
            }
        }
        let before = known
            .and_then(|h| self.entry(h))
            .map(|u| !u.services.is_empty());
        self.count_registered(before, Some(!entry.services.is_empty()));
        let rec = UeRecord {
            impi: ctx.impi.clone(),
            btid: ctx.btid.clone(),
            muk: ctx.muk.clone(),
            mikey_addr: ctx.mikey_addr,
            services: self.service_ids(&entry.services),
            updated_at: now.0,
        };
        self.enqueue(WriteBatch {
            ues: vec![UeWrite::Put(rec)],
            ..Default::default()
        });
        let h = self.engine.register_ue(
            UeId(ctx.impi.clone()),
            MukId::new(self.fqdn.clone(), ctx.btid.clone()),
            ctx.muk.clone(),
            now,
        );
        self.set_entry(h, Some(entry));
        Ok(h)
    }

    /// Whether the engine holds the B-TID and MUK of `ctx` for UE `h`.
    fn same_keys(&self, h: UeHandle, ctx: &UeContext) -> bool {
        self.engine.has_muk(h, &self.fqdn, &ctx.btid, &ctx.muk)
    }

    fn same_ue(&self, h: UeHandle, ctx: &UeContext) -> bool {
        self.entry(h)
            .is_some_and(|u| u.mikey_addr == ctx.mikey_addr && self.same_keys(h, ctx))
    }

    /// MBMS User Service Registration: one status per service, in order
    /// (`PROFILE.md` section 3). Accepted services start the push of the
    /// current and next MSK of their key groups.
    pub fn register(
        &mut self,
        ctx: &UeContext,
        services: &[String],
        now: Timestamp,
    ) -> Result<Vec<u16>, CoreError> {
        if !self.owns_ue(&ctx.impi) {
            return self.change_remote_ue(ctx, services, true, now);
        }
        self.load_if_registered_elsewhere(&ctx.impi, now)?;
        let known = self.registered_handle(&ctx.impi);
        let mut set = known
            .and_then(|h| self.entry(h))
            .map(|u| u.services.clone())
            .unwrap_or_default();
        let statuses: Vec<u16> = services
            .iter()
            .map(|id| {
                if id.is_empty() {
                    return status::BAD_REQUEST;
                }
                match self.services.get(id) {
                    None => status::NOT_FOUND,
                    Some(s) if !s.allows(&ctx.impi) => status::FORBIDDEN,
                    Some(_) => {
                        if let Some(i) = self.service_known(id) {
                            set.insert(i);
                        }
                        status::OK
                    }
                }
            })
            .collect();
        if known.is_some() || statuses.contains(&status::OK) {
            let h = self.put_ue(ctx, set, now)?;
            self.sync_groups(h, now)?;
        }
        self.update_gauge();
        Ok(statuses)
    }

    /// MBMS User Service Deregistration: one status per service. Key groups
    /// no longer used by the UE's services stop being pushed; a UE left
    /// with no service is forgotten.
    pub fn deregister(
        &mut self,
        ctx: &UeContext,
        services: &[String],
        now: Timestamp,
    ) -> Result<Vec<u16>, CoreError> {
        if !self.owns_ue(&ctx.impi) {
            return self.change_remote_ue(ctx, services, false, now);
        }
        self.load_if_registered_elsewhere(&ctx.impi, now)?;
        let known = self.registered_handle(&ctx.impi);
        let mut set = known
            .and_then(|h| self.entry(h))
            .map(|u| u.services.clone())
            .unwrap_or_default();
        let statuses: Vec<u16> = services
            .iter()
            .map(|id| {
                if id.is_empty() {
                    status::BAD_REQUEST
                } else if !self.services.contains_key(id) {
                    status::NOT_FOUND
                } else {
                    if let Some(i) = self.service_known(id) {
                        set.remove(i);
                    }
                    status::OK
                }
            })
            .collect();
        if let Some(h) = known {
            if set.is_empty() {
                let before = self.entry(h).map(|u| !u.services.is_empty());
                self.count_registered(before, None);
                self.enqueue(WriteBatch {
                    ues: vec![UeWrite::Remove(ctx.impi.clone())],
                    ..Default::default()
                });
                let ue = UeId(ctx.impi.clone());
                self.engine.remove_ue(&ue);
                self.set_entry(h, None);
            } else {
                let h = self.put_ue(ctx, set, now)?;
                self.sync_groups(h, now)?;
            }
        }
        self.update_gauge();
        Ok(statuses)
    }

    /// The basic MSK request (seed 002 6.3.2.2.1): one status per key, in
    /// order. `None` items are malformed (400). A UE registered to no
    /// service using the key gets 403. Each accepted key's delivery is due
    /// at once, whatever its state (the caller wakes the engine driver,
    /// which sends the MIKEY message); a charged subscriber gets the
    /// activation (seed 004 6.3.2.3.3).
    pub fn request_msks(
        &mut self,
        ctx: &UeContext,
        keys: &[Option<MskName>],
        now: Timestamp,
    ) -> Result<Vec<u16>, CoreError> {
        if !self.owns_ue(&ctx.impi) {
            return self.request_msks_remote(ctx, keys, now);
        }
        self.load_if_registered_elsewhere(&ctx.impi, now)?;
        let known = self.registered_handle(&ctx.impi);
        if let Some(h) = known {
            if !self.same_ue(h, ctx) {
                let services = self
                    .entry(h)
                    .map(|u| u.services.clone())
                    .unwrap_or_default();
                self.put_ue(ctx, services, now)?;
            }
        }
        let ue = UeId(ctx.impi.clone());
        let mut out = Vec::with_capacity(keys.len());
        let mut pending = Outcomes::default();
        for k in keys {
            let st = match k {
                None => status::BAD_REQUEST,
                Some(k) if k.key_domain != self.key_domain => status::NOT_FOUND,
                Some(k) if !self.groups.contains_key(&k.msk_id.key_group) => status::NOT_FOUND,
                Some(k) if !self.is_subscribed(known, k.msk_id.key_group) => status::FORBIDDEN,
                Some(k) => match self.engine.request_msk(&ue, *k, now) {
                    Ok(name) => {
                        pending.deliveries.push(DeliveryRecord {
                            impi: ctx.impi.clone(),
                            msk: name,
                            state: "pending".into(),
                            charged: self.engine.is_charged(&ue, &name),
                            updated_at: now.0,
                        });
                        status::OK
                    }
                    Err(EngineError::NotSubscribed { .. } | EngineError::UnknownUe(_)) => {
                        status::FORBIDDEN
                    }
                    Err(EngineError::UnknownMsk(_) | EngineError::UnknownKeyGroup(_)) => {
                        status::NOT_FOUND
                    }
                    Err(e) => {
                        tracing::error!(error = %crate::ErrorChain(&e), "MSK request");
                        status::SERVER_ERROR
                    }
                },
            };
            out.push(st);
        }
        // The UE asked again: an earlier "acknowledged" must not stop the
        // re-delivery after a restart.
        let at = self.pending.outcomes.deliveries.len();
        for (i, d) in pending.deliveries.iter().enumerate() {
            self.queued_requests.insert((d.impi.clone(), d.msk), at + i);
        }
        self.enqueue(WriteBatch {
            outcomes: pending,
            ..Default::default()
        });
        Ok(out)
    }

    /// When the engine has work next.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.engine.next_deadline()
    }

    /// Builds what is due (pushes, retransmissions), at most
    /// [`POLL_BATCH`] messages, records give-ups, and returns the datagrams.
    /// Nothing while [`poll_hold`](Self::poll_hold) awaits a commit.
    pub fn poll(&mut self, now: Timestamp) -> Result<Datagrams, CoreError> {
        self.poll_at_most(now, POLL_BATCH)
    }

    /// [`poll`](Self::poll) of at most `max` messages (at least one).
    pub fn poll_at_most(&mut self, now: Timestamp, max: usize) -> Result<Datagrams, CoreError> {
        if self.poll_hold().is_some() {
            return Ok(Vec::new());
        }
        let actions = self.engine.poll_at_most(now, max.max(1), &mut self.rng)?;
        Ok(self.sent_actions(actions, now))
    }

    /// The engine driver's short poll ([`SHORT_POLL`]) of the request path,
    /// on an async worker thread: like [`poll_at_most`](Self::poll_at_most)
    /// but never writes to the store; `None`, with nothing changed, when
    /// the messages due need a new block of MUK counters (a store write:
    /// poll from a blocking thread then).
    pub fn poll_short(
        &mut self,
        now: Timestamp,
        max: usize,
    ) -> Result<Option<Datagrams>, CoreError> {
        if self.poll_hold().is_some() {
            return Ok(Some(Vec::new()));
        }
        let Some(actions) = self.engine.poll_reserved(now, max.max(1), &mut self.rng)? else {
            return Ok(None);
        };
        Ok(Some(self.sent_actions(actions, now)))
    }

    /// The datagrams of the engine's actions; give-ups queued for the next
    /// group commit.
    fn sent_actions(&mut self, actions: Vec<Action>, now: Timestamp) -> Datagrams {
        let mut out = Vec::new();
        let mut outcomes = Outcomes::default();
        for a in actions {
            match a {
                Action::SendMikey {
                    ue,
                    handle,
                    msk,
                    step,
                    attempt,
                    bytes,
                    ..
                } => {
                    let Some(u) = self.entry(handle) else {
                        continue;
                    };
                    let kind = step.map_or("pull", step_name);
                    Metrics::inc(&self.metrics.msk_sent, kind);
                    if attempt > 1 && step.is_some() {
                        self.metrics.msk_retransmissions.inc();
                        tracing::debug!(ue = %ue, msk = %msk, attempt, "MSK message retransmitted");
                    }
                    out.push((u.mikey_addr, bytes));
                }
                Action::GaveUp {
                    ue,
                    msk,
                    step,
                    attempts,
                    charged,
                    ..
                } => {
                    self.metrics.give_ups.inc();
                    tracing::warn!(ue = %ue, msk = %msk, step = step_name(step), attempts, "MSK delivery given up");
                    outcomes.deliveries.push(DeliveryRecord {
                        impi: ue.0,
                        msk,
                        state: "given_up".into(),
                        charged,
                        updated_at: now.0,
                    });
                }
                Action::Acknowledged { .. } | Action::ChargingRecord(_) => {}
            }
        }
        self.enqueue(WriteBatch {
            outcomes,
            ..Default::default()
        });
        out
    }

    /// Feeds received MIKEY acknowledgements to the engine and queues their
    /// outcomes (acknowledged deliveries, charging records) for the next
    /// group commit (the committer's [`begin_commit`](Self::begin_commit));
    /// they are reported (metrics,
    /// admin API) only once written. Returns the [write
    /// ticket](Self::write_ticket) that covers them. Forged, replayed,
    /// unmatched or malformed datagrams change nothing.
    pub fn on_acks<'a>(
        &mut self,
        datagrams: impl IntoIterator<Item = (&'a [u8], SocketAddr)>,
        now: Timestamp,
    ) -> u64 {
        let mut outcomes = Outcomes::default();
        for (bytes, from) in datagrams {
            match self.engine.on_ack(bytes, now) {
                Ok(actions) => {
                    Metrics::inc(&self.metrics.acks, "accepted");
                    for a in actions {
                        match a {
                            Action::Acknowledged {
                                ue,
                                msk,
                                step,
                                charged,
                                ..
                            } => {
                                tracing::debug!(ue = %ue, msk = %msk, step = step_name(step), "MSK acknowledged");
                                let acked = matches!(step, Step::Deliver | Step::Activate);
                                let record = DeliveryRecord {
                                    impi: ue.0,
                                    msk,
                                    state: if acked { "acknowledged" } else { "pending" }.into(),
                                    charged,
                                    updated_at: now.0,
                                };
                                // The request's `pending` record is still
                                // queued (no commit began since): this
                                // outcome replaces it, one write instead of
                                // two, the same state once committed.
                                match self.queued_requests.remove(&(record.impi.clone(), msk)) {
                                    Some(i) => match self.pending.outcomes.deliveries.get_mut(i) {
                                        Some(d) if d.impi == record.impi && d.msk == msk => {
                                            *d = record;
                                        }
                                        _ => outcomes.deliveries.push(record),
                                    },
                                    None => outcomes.deliveries.push(record),
                                }
                            }
                            Action::ChargingRecord(r) => {
                                outcomes.charging.push(ChargingRow {
                                    id: 0,
                                    impi: r.ue.0,
                                    btid: r.muk_id.idr,
                                    msk: r.msk,
                                    counter: r.counter,
                                    time_ms: r.time.0,
                                });
                            }
                            Action::SendMikey { .. } | Action::GaveUp { .. } => {}
                        }
                    }
                }
                Err(e) => {
                    let kind = match &e {
                        AckError::Malformed(_) => "malformed",
                        AckError::Unmatched { .. } => "unmatched",
                        AckError::BadMac => "bad_mac",
                        AckError::WrongMsk { .. } => "wrong_msk",
                        AckError::Stale { .. } => "stale",
                    };
                    Metrics::inc(&self.metrics.acks, kind);
                    tracing::debug!(from = %from, error = %e, "MIKEY datagram ignored");
                }
            }
        }
        // Group commit: the outcomes go with the next commit (the
        // committer's), not one transaction of their own per batch; the
        // charging records are counted once written (`end_commit`), and
        // the activations wait for them (`poll_hold`).
        let charged = !outcomes.charging.is_empty();
        let ticket = self.enqueue(WriteBatch {
            outcomes,
            ..Default::default()
        });
        if charged {
            self.charged_ticket = ticket;
        }
        ticket
    }

    /// Rotates a key group now (seed 000 6.3.2.3.1): the new MSKs are
    /// pushed to its UEs at the next poll.
    pub fn rotate(&mut self, g: u16, now: Timestamp) -> Result<KeyGroupInfo, CoreError> {
        if !self.groups.contains_key(&g) {
            return Err(CoreError::NotFound(format!("key group {g}")));
        }
        if !self.is_anchor(g) {
            return Err(CoreError::Invalid(format!(
                "key group {g}: this instance is not its anchor"
            )));
        }
        let info = self.engine.rotate(&self.group_name(g), now, &mut OsRng)?;
        self.last_rotation.insert(g, now.0);
        if let Some(c) = self.store.cluster() {
            // The snapshot is saved: the other instances adopt it now
            // rather than at their next poll.
            if let Err(e) = c.notify(&crate::cluster::Notice::Adopt { key_group: g }.to_json()) {
                tracing::warn!(key_group = g, error = %crate::ErrorChain(&e), "notice of a rotation not sent (the others adopt it at their next poll)");
            }
        }
        self.metrics.rotations.inc();
        tracing::info!(key_group = g, current = %info.current.name, next = %info.next.name, "MSK rotated");
        Ok(info)
    }

    /// Rotates the key groups whose `rotate_interval` has passed; returns
    /// them.
    pub fn rotate_due(&mut self, now: Timestamp) -> Vec<u16> {
        let due: Vec<u16> = self
            .groups
            .values()
            .filter(|d| d.rotate_interval > 0)
            .filter(|d| self.is_anchor(d.key_group))
            .filter(|d| {
                let last = self
                    .last_rotation
                    .get(&d.key_group)
                    .copied()
                    .unwrap_or(now.0);
                now.0 >= last.saturating_add(d.rotate_interval.saturating_mul(1000))
            })
            .map(|d| d.key_group)
            .collect();
        due.into_iter()
            .filter(|g| match self.rotate(*g, now) {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(key_group = g, error = %crate::ErrorChain(&e), "scheduled rotation failed");
                    false
                }
            })
            .collect()
    }

    /// When the next scheduled rotation is due.
    pub fn next_rotation(&self) -> Option<Timestamp> {
        self.groups
            .values()
            .filter(|d| d.rotate_interval > 0)
            .filter(|d| self.is_anchor(d.key_group))
            .map(|d| {
                let last = self.last_rotation.get(&d.key_group).copied().unwrap_or(0);
                Timestamp(last.saturating_add(d.rotate_interval.saturating_mul(1000)))
            })
            .min()
    }

    /// BM-SC solicited pull (seeds 002/003 6.3.2.2.4) for key group `g`: to
    /// one UE, or to every UE of the key group; protected with the last MUK
    /// known for each, V not set. The pulls are queued in the engine and
    /// sent by the engine driver's next [`poll`](Self::poll), in counter
    /// order with the deliveries (the caller wakes the driver); returns how
    /// many were queued.
    pub fn solicited_pull(&mut self, g: u16, impi: Option<&str>) -> Result<usize, CoreError> {
        if !self.groups.contains_key(&g) {
            return Err(CoreError::NotFound(format!("key group {g}")));
        }
        let name = self.group_name(g);
        let targets: Vec<UeHandle> = match impi {
            Some(i) => vec![self
                .registered_handle(i)
                .ok_or_else(|| CoreError::NotFound(format!("UE {i}")))?],
            None => (0..self.ues.len())
                .filter_map(|i| {
                    let h = self.engine.ue_handle_at(i)?;
                    (self.entry(h).is_some() && self.engine.is_subscribed(h, &name)).then_some(h)
                })
                .collect(),
        };
        let mut queued = 0;
        for h in targets {
            let Some(i) = self.engine.ue_id(h) else {
                continue;
            };
            let ue = UeId(i.to_owned());
            self.engine.solicited_pull(&ue, &name)?;
            queued += 1;
        }
        Ok(queued)
    }

    /// The next MTK of key group `g` and its MTK message; rotates first when
    /// the current MSK's window is exhausted (returned `true`).
    pub fn next_mtk(
        &mut self,
        g: u16,
        streaming: Option<Streaming>,
        now: Timestamp,
    ) -> Result<(MtkOutput, bool), CoreError> {
        if !self.is_anchor(g) {
            return Err(CoreError::Invalid(format!(
                "key group {g}: MTKs are issued by its anchor, not this instance"
            )));
        }
        let name = self.group_name(g);
        match self.engine.next_mtk(&name, streaming.clone(), &mut OsRng) {
            Ok(o) => Ok((o, false)),
            Err(EngineError::WindowExhausted { .. } | EngineError::MtkCounterExhausted { .. }) => {
                tracing::warn!(key_group = g, "MTK ID window exhausted: rotating the MSK");
                self.rotate(g, now)?;
                Ok((self.engine.next_mtk(&name, streaming, &mut OsRng)?, true))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The current and next MSK of a key group.
    pub fn key_group_info(&self, g: u16) -> Option<KeyGroupInfo> {
        self.engine.key_group(&self.group_name(g))
    }

    /// Creates or replaces a key group definition (admin API).
    pub fn put_key_group(
        &mut self,
        d: KeyGroupDef,
        now: Timestamp,
    ) -> Result<KeyGroupView, CoreError> {
        check_key_group(&d).map_err(CoreError::Invalid)?;
        self.store.put_key_group_def(&d)?;
        self.open_group(&d, now)?;
        self.notify_definitions();
        self.key_group_view(d.key_group)
            .ok_or_else(|| CoreError::NotFound(format!("key group {}", d.key_group)))
    }

    /// Creates or replaces a service (admin API); UEs registered to it are
    /// subscribed to its new key groups.
    pub fn put_service(&mut self, d: ServiceDef, now: Timestamp) -> Result<ServiceDef, CoreError> {
        check_service(&d).map_err(CoreError::Invalid)?;
        if let Some(g) = d.key_groups.iter().find(|g| !self.groups.contains_key(g)) {
            return Err(CoreError::Invalid(format!("key group {g} does not exist")));
        }
        self.store.put_service(&d)?;
        self.notify_definitions();
        self.apply_service(d, now)
    }

    /// Several instances: the others reload the definitions.
    fn notify_definitions(&self) {
        if let Some(c) = self.store.cluster() {
            if let Err(e) = c.notify(&crate::cluster::Notice::Definitions.to_json()) {
                tracing::warn!(error = %crate::ErrorChain(&e), "notice of new definitions not sent (the other instances see them at their next start)");
            }
        }
    }

    /// Several instances: takes the key group and service definitions
    /// another instance stored (admin API). Returns whether any changed.
    pub fn reload_definitions(&mut self, now: Timestamp) -> Result<bool, CoreError> {
        let mut changed = false;
        for d in self.store.key_group_defs()? {
            if self.groups.get(&d.key_group) != Some(&d) {
                self.open_group(&d, now)?;
                changed = true;
            }
        }
        for d in self.store.services()? {
            if self.services.get(&d.id) != Some(&d) {
                self.apply_service(d, now)?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Takes service `d` (stored): UEs registered to it are subscribed to
    /// its key groups.
    fn apply_service(&mut self, d: ServiceDef, now: Timestamp) -> Result<ServiceDef, CoreError> {
        let bit = self.service_index(&d.id);
        self.services.insert(d.id.clone(), d.clone());
        let affected: Vec<UeHandle> = (0..self.ues.len())
            .filter(|i| {
                self.ues[*i]
                    .as_ref()
                    .is_some_and(|u| u.services.contains(bit))
            })
            .filter_map(|i| self.engine.ue_handle_at(i))
            .collect();
        for h in affected {
            self.sync_groups(h, now)?;
        }
        Ok(d)
    }

    /// Key groups (admin API).
    pub fn key_groups(&self) -> Vec<KeyGroupView> {
        self.groups
            .keys()
            .filter_map(|g| self.key_group_view(*g))
            .collect()
    }

    fn key_group_view(&self, g: u16) -> Option<KeyGroupView> {
        let def = self.groups.get(&g)?.clone();
        let info = self.key_group_info(g)?;
        Some(KeyGroupView {
            def,
            key_domain: self.key_domain.to_string(),
            current: msk_view(&info.current),
            next: msk_view(&info.next),
            members: self.engine.members(&self.group_name(g)),
        })
    }

    /// Services (admin API).
    pub fn services(&self) -> Vec<ServiceDef> {
        self.services.values().cloned().collect()
    }

    /// Whether a key group exists.
    pub fn has_key_group(&self, g: u16) -> bool {
        self.groups.contains_key(&g)
    }

    /// Registered UEs (admin API).
    pub fn ues(&self) -> Vec<UeView> {
        let mut out: Vec<UeView> = (0..self.ues.len())
            .filter_map(|i| {
                let h = self.engine.ue_handle_at(i)?;
                let u = self.entry(h)?;
                Some(UeView {
                    impi: self.engine.ue_id(h)?.to_owned(),
                    btid: self.engine.ue_btid(h).unwrap_or_default().to_owned(),
                    mikey_addr: u.mikey_addr.to_string(),
                    services: self.service_ids(&u.services).into_iter().collect(),
                    key_groups: self.subscribed_groups(h).into_iter().collect(),
                    updated_at: u.updated_at,
                })
            })
            .collect();
        out.sort_unstable_by(|a, b| a.impi.cmp(&b.impi));
        out
    }

    /// Delivery status of the current and next MSK of every key group of a
    /// UE (admin API).
    pub fn deliveries(&self, impi: &str) -> Option<Vec<DeliveryView>> {
        let h = self.registered_handle(impi)?;
        let groups = self.subscribed_groups(h);
        let ue = UeId(impi.to_owned());
        let mut out = Vec::new();
        for g in groups {
            let Some(info) = self.key_group_info(g) else {
                continue;
            };
            for (role, m) in [("current", info.current), ("next", info.next)] {
                let d = self.engine.delivery(&ue, &m.name);
                out.push(DeliveryView {
                    key_group: g,
                    msk_id: m.name.msk_id.to_string(),
                    role,
                    state: d.as_ref().map_or("none", |d| state_name(&d.state)),
                    step: d.as_ref().map(|d| step_name(d.step)),
                    attempt: d.as_ref().and_then(|d| match d.state {
                        DeliveryState::Sent { attempt, .. } => Some(attempt),
                        _ => None,
                    }),
                    charged: d.as_ref().is_some_and(|d| d.charged),
                });
            }
        }
        Some(out)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

// ---------------------------------------------------------------------
// Several instances on one database (crate::cluster).

impl Core {
    /// Whether this instance owns UE `impi`'s deliveries (always, alone).
    pub fn owns_ue(&self, impi: &str) -> bool {
        self.cluster.as_ref().is_none_or(|c| {
            c.shards
                .get(crate::cluster::shard_of(impi) as usize)
                .copied()
                .unwrap_or(false)
        })
    }

    /// Whether this instance is the anchor of key group `g` (always, alone).
    pub fn is_anchor(&self, g: u16) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|c| c.anchored.contains(&g))
    }

    /// Whether several instances may share the database.
    pub fn is_clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// The key groups defined.
    pub fn key_group_ids(&self) -> Vec<u16> {
        self.groups.keys().copied().collect()
    }

    /// The UE shards owned.
    pub fn owned_shards(&self) -> BTreeSet<u32> {
        self.cluster
            .as_ref()
            .map(|c| {
                c.shards
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| **o)
                    .map(|(i, _)| i as u32)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Takes over UE shards whose leases this instance just got: a fresh
    /// block of MUK counters first (the previous owner may have used
    /// counters up to its own mark, `PROFILE.md` section 7), then the
    /// shards' UEs, their registrations and deliveries from the store;
    /// what was not acknowledged is pushed again. Returns the UEs loaded.
    pub fn take_shards(
        &mut self,
        shards: &BTreeSet<u32>,
        now: Timestamp,
    ) -> Result<usize, CoreError> {
        if shards.is_empty() {
            return Ok(0);
        }
        let Some(c) = self.cluster.as_mut() else {
            return Ok(0);
        };
        for s in shards {
            if let Some(o) = c.shards.get_mut(*s as usize) {
                *o = true;
            }
        }
        self.engine.fresh_counter_block()?;
        let mine = |impi: &str| shards.contains(&crate::cluster::shard_of(impi));
        let ues: Vec<UeRecord> = self
            .store
            .ues()?
            .into_iter()
            .filter(|u| mine(&u.impi))
            .collect();
        let n = ues.len();
        let taken: Vec<String> = ues.iter().map(|u| u.impi.clone()).collect();
        for ue in ues {
            self.load_ue(ue, now)?;
        }
        for d in self.store.deliveries(None)? {
            if mine(&d.impi) {
                let acked = d.state == "acknowledged";
                self.engine
                    .restore_delivery(&UeId(d.impi.clone()), &d.msk, acked, d.charged);
            }
        }
        self.pull_taken(&taken, now)?;
        self.update_gauge();
        Ok(n)
    }

    /// Several instances: remembers a solicited pull asked of the cluster
    /// (at this instance or by another's notice) for `keep_ms`. A pull of
    /// UEs whose shard no live instance holds (its owner died, its lease
    /// has not run out) reaches nobody when it is asked; the instance that
    /// takes such a shard within the lease carries the remembered pulls out
    /// for its UEs ([`take_shards`](Self::take_shards)). A UE whose shard
    /// merely moved may be pulled twice; the MGV-F answers each pull
    /// (seeds 002/003 6.3.2.2.4), so nothing is lost either way. Alone:
    /// nothing to remember.
    pub fn remember_pull(&mut self, g: u16, impi: Option<&str>, now: Timestamp, keep_ms: u64) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.recent_pulls.retain(|p| p.2 >= now.0);
        let until = now.0.saturating_add(keep_ms);
        match c
            .recent_pulls
            .iter_mut()
            .find(|p| p.0 == g && p.1.as_deref() == impi)
        {
            Some(p) => p.2 = p.2.max(until),
            None => c.recent_pulls.push((g, impi.map(str::to_owned), until)),
        }
    }

    /// The remembered pulls ([`remember_pull`](Self::remember_pull)) for
    /// the UEs of shards just taken.
    fn pull_taken(&mut self, taken: &[String], now: Timestamp) -> Result<(), CoreError> {
        let Some(c) = self.cluster.as_mut() else {
            return Ok(());
        };
        c.recent_pulls.retain(|p| p.2 >= now.0);
        let pulls = c.recent_pulls.clone();
        for (g, impi, _) in pulls {
            // Key group 0: every key group of the one UE (`Notice::Pull`).
            let groups: Vec<u16> = if g == 0 {
                self.groups.keys().copied().collect()
            } else if self.groups.contains_key(&g) {
                vec![g]
            } else {
                continue;
            };
            for g in groups {
                let name = self.group_name(g);
                for ue in taken {
                    if impi.as_deref().is_some_and(|i| i != ue) {
                        continue;
                    }
                    let Some(h) = self.registered_handle(ue) else {
                        continue;
                    };
                    if self.engine.is_subscribed(h, &name) {
                        self.engine.solicited_pull(&UeId(ue.clone()), &name)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether a Ua request of UE `impi` is answered from memory alone: it
    /// is this instance's and, with several instances, already loaded.
    fn answers_from_memory(&self, impi: &str) -> bool {
        self.owns_ue(impi) && (self.cluster.is_none() || self.registered_handle(impi).is_some())
    }

    /// Several instances: a UE this instance owns but does not know yet may
    /// have registered at another instance a moment ago (its notice is on
    /// the way): its stored registration is loaded before a Ua request of
    /// the UE is answered here, or the owner answered 403 to an MSK request
    /// that any other instance would have served (`mbms demo
    /// --bmsc-instances 3`: a UE's missed key update right after its
    /// registration). Alone, memory is the whole truth: nothing is read.
    fn load_if_registered_elsewhere(
        &mut self,
        impi: &str,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        if self.cluster.is_none() || self.registered_handle(impi).is_some() {
            return Ok(());
        }
        if let Some(rec) = self.store.ue(impi)? {
            self.load_ue(rec, now)?;
            self.update_gauge();
        }
        Ok(())
    }

    /// Puts a UE read from the store in the engine (no write).
    fn load_ue(&mut self, ue: UeRecord, now: Timestamp) -> Result<UeHandle, CoreError> {
        let before = self
            .registered_handle(&ue.impi)
            .and_then(|h| self.entry(h))
            .map(|u| !u.services.is_empty());
        let h = self.engine.register_ue(
            UeId(ue.impi),
            MukId::new(self.fqdn.clone(), ue.btid),
            ue.muk,
            now,
        );
        let mut services = ServiceSet::default();
        for s in &ue.services {
            services.insert(self.service_index(s));
        }
        self.count_registered(before, Some(!services.is_empty()));
        self.set_entry(
            h,
            Some(UeEntry {
                mikey_addr: ue.mikey_addr,
                services,
                updated_at: ue.updated_at,
            }),
        );
        self.sync_groups(h, now)?;
        Ok(h)
    }

    /// Forgets a UE in this instance only (its state stays in the store).
    fn unload_ue(&mut self, impi: &str) {
        if let Some(h) = self.registered_handle(impi) {
            let before = self.entry(h).map(|u| !u.services.is_empty());
            self.count_registered(before, None);
            self.engine.remove_ue(&UeId(impi.to_owned()));
            self.set_entry(h, None);
        }
    }

    /// Gives up UE shards (lease lost or handed over): their UEs leave this
    /// instance's engine at once (no more pushes); their state stays in
    /// the store for the next owner.
    pub fn drop_shards(&mut self, shards: &BTreeSet<u32>) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        for s in shards {
            if let Some(o) = c.shards.get_mut(*s as usize) {
                *o = false;
            }
        }
        self.notify_unowned_writes();
        let gone: Vec<String> = (0..self.ues.len())
            .filter_map(|i| {
                let h = self.engine.ue_handle_at(i)?;
                self.entry(h)?;
                let id = self.engine.ue_id(h)?;
                shards
                    .contains(&crate::cluster::shard_of(id))
                    .then(|| id.to_owned())
            })
            .collect();
        for impi in gone {
            self.unload_ue(&impi);
        }
        self.update_gauge();
    }

    /// Queued writes (not yet committed) of UEs this instance does not own
    /// (any more) get a notice in the same batch ([`crate::cluster::Notice::Ue`],
    /// with the MSKs of their pending deliveries): whoever owns the UE
    /// when they commit reloads it and pushes. After a hand-over the next
    /// owner has read them already (it takes the shard once they are
    /// committed); after a lease lost with the database unreachable, these
    /// writes commit (and their requests are answered) only when it is
    /// back, after the next owner loaded the shard.
    fn notify_unowned_writes(&mut self) {
        if self.cluster.is_none() {
            return;
        }
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for w in &self.pending.ues {
            let impi = match w {
                UeWrite::Put(r) => &r.impi,
                UeWrite::Remove(i) => i,
            };
            if !self.owns_ue(impi) {
                keys.entry(impi.clone()).or_default();
            }
        }
        for d in &self.pending.outcomes.deliveries {
            if d.state == "pending" && !self.owns_ue(&d.impi) {
                keys.entry(d.impi.clone())
                    .or_default()
                    .push(crate::store::msk_to_text(&d.msk));
            }
        }
        for (impi, keys) in keys {
            self.pending
                .notices
                .push(crate::cluster::Notice::Ue { impi, keys }.to_json());
        }
    }

    /// Becomes (`true`) or stops being the anchor of key group `g`.
    pub fn set_anchor(&mut self, g: u16, anchor: bool, now: Timestamp) {
        if let Some(c) = self.cluster.as_mut() {
            if anchor {
                if c.anchored.insert(g) {
                    self.last_rotation.entry(g).or_insert(now.0);
                }
            } else {
                c.anchored.remove(&g);
            }
        }
    }

    /// Adopts the stored state of key group `g` (the anchor's): returns
    /// whether its MSKs changed (the new ones are then pushed to the UEs
    /// this instance owns, TS 33.246 6.3.4.4).
    pub fn adopt_key_group(&mut self, g: u16, now: Timestamp) -> Result<bool, CoreError> {
        if !self.groups.contains_key(&g) {
            return Ok(false);
        }
        let Some(snap) = self.store.load_key_group(&self.group_name(g))? else {
            return Ok(false);
        };
        let changed = self.engine.adopt_key_group(snap, now)?.is_some();
        if changed {
            self.last_rotation.insert(g, now.0);
            tracing::info!(key_group = g, "MSKs of the anchor adopted");
        }
        Ok(changed)
    }

    /// A notice of another instance about a UE this instance owns: its
    /// registration changed in the store, and it asked for `keys`. Reloads
    /// it and marks the keys due. Returns whether it did anything.
    pub fn apply_remote_ue(
        &mut self,
        impi: &str,
        keys: &[MskName],
        now: Timestamp,
    ) -> Result<bool, CoreError> {
        if !self.owns_ue(impi) || self.cluster.is_none() {
            return Ok(false);
        }
        match self.store.ue(impi)? {
            None => self.unload_ue(impi),
            Some(rec) => {
                self.load_ue(rec, now)?;
                let ue = UeId(impi.to_owned());
                for k in keys {
                    if let Err(e) = self.engine.request_msk(&ue, *k, now) {
                        tracing::debug!(ue = %ue, msk = %k, error = %e, "MSK request of another instance not served");
                    }
                }
            }
        }
        self.update_gauge();
        Ok(true)
    }

    /// Registration or deregistration of a UE another instance owns:
    /// answered here from the store's record, written in the store with a
    /// notice to the owner (which pushes), so that one UE's MIKEY messages
    /// always come from one instance.
    fn change_remote_ue(
        &mut self,
        ctx: &UeContext,
        services: &[String],
        register: bool,
        now: Timestamp,
    ) -> Result<Vec<u16>, CoreError> {
        let rec = self.store.ue(&ctx.impi)?;
        let mut set: BTreeSet<String> =
            rec.as_ref().map(|r| r.services.clone()).unwrap_or_default();
        let statuses: Vec<u16> = services
            .iter()
            .map(|id| {
                if id.is_empty() {
                    return status::BAD_REQUEST;
                }
                match self.services.get(id) {
                    None => status::NOT_FOUND,
                    Some(s) if register && !s.allows(&ctx.impi) => status::FORBIDDEN,
                    Some(_) => {
                        if register {
                            set.insert(id.clone());
                        } else {
                            set.remove(id);
                        }
                        status::OK
                    }
                }
            })
            .collect();
        let write = if register {
            (rec.is_some() || statuses.contains(&status::OK)).then(|| {
                UeWrite::Put(UeRecord {
                    impi: ctx.impi.clone(),
                    btid: ctx.btid.clone(),
                    muk: ctx.muk.clone(),
                    mikey_addr: ctx.mikey_addr,
                    services: set,
                    updated_at: now.0,
                })
            })
        } else if rec.is_none() {
            None
        } else if set.is_empty() {
            Some(UeWrite::Remove(ctx.impi.clone()))
        } else {
            Some(UeWrite::Put(UeRecord {
                impi: ctx.impi.clone(),
                btid: ctx.btid.clone(),
                muk: ctx.muk.clone(),
                mikey_addr: ctx.mikey_addr,
                services: set,
                updated_at: now.0,
            }))
        };
        if let Some(w) = write {
            self.enqueue(WriteBatch {
                ues: vec![w],
                notices: vec![crate::cluster::Notice::Ue {
                    impi: ctx.impi.clone(),
                    keys: Vec::new(),
                }
                .to_json()],
                ..Default::default()
            });
        }
        Ok(statuses)
    }

    /// The basic MSK request of a UE another instance owns: checked here,
    /// recorded as a pending delivery with a notice to the owner.
    fn request_msks_remote(
        &mut self,
        ctx: &UeContext,
        keys: &[Option<MskName>],
        now: Timestamp,
    ) -> Result<Vec<u16>, CoreError> {
        let rec = self.store.ue(&ctx.impi)?;
        let subscribed: BTreeSet<u16> = rec
            .as_ref()
            .map(|r| {
                r.services
                    .iter()
                    .filter_map(|s| self.services.get(s))
                    .flat_map(|s| s.key_groups.iter().copied())
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(keys.len());
        let mut asked = Vec::new();
        let mut pending = Outcomes::default();
        for k in keys {
            let st = match k {
                None => status::BAD_REQUEST,
                Some(k) if k.key_domain != self.key_domain => status::NOT_FOUND,
                Some(k) if !self.groups.contains_key(&k.msk_id.key_group) => status::NOT_FOUND,
                Some(k) if !subscribed.contains(&k.msk_id.key_group) => status::FORBIDDEN,
                Some(k) => match self.key_group_info(k.msk_id.key_group) {
                    None => status::NOT_FOUND,
                    Some(info) => {
                        let name = if k.msk_id.is_current_request() {
                            Some(info.current.name)
                        } else {
                            [info.current.name, info.next.name]
                                .into_iter()
                                .find(|n| n == k)
                        };
                        match name {
                            None => status::NOT_FOUND,
                            Some(name) => {
                                asked.push(*k);
                                pending.deliveries.push(DeliveryRecord {
                                    impi: ctx.impi.clone(),
                                    msk: name,
                                    state: "pending".into(),
                                    charged: false,
                                    updated_at: now.0,
                                });
                                status::OK
                            }
                        }
                    }
                },
            };
            out.push(st);
        }
        let mut ues = Vec::new();
        if let Some(r) = rec {
            if r.btid != ctx.btid || r.muk != ctx.muk || r.mikey_addr != ctx.mikey_addr {
                ues.push(UeWrite::Put(UeRecord {
                    impi: ctx.impi.clone(),
                    btid: ctx.btid.clone(),
                    muk: ctx.muk.clone(),
                    mikey_addr: ctx.mikey_addr,
                    services: r.services,
                    updated_at: now.0,
                }));
            }
        }
        if !asked.is_empty() || !ues.is_empty() {
            self.enqueue(WriteBatch {
                ues,
                outcomes: pending,
                notices: vec![crate::cluster::Notice::Ue {
                    impi: ctx.impi.clone(),
                    keys: asked.iter().map(crate::store::msk_to_text).collect(),
                }
                .to_json()],
            });
        }
        Ok(out)
    }
}

/// A shared [`Core`] and the wake-up of the engine driver.
#[derive(Clone)]
pub struct CoreHandle {
    core: Arc<Mutex<Core>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for CoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoreHandle")
    }
}

impl CoreHandle {
    /// Wraps a core.
    pub fn new(core: Core) -> Self {
        CoreHandle {
            core: Arc::new(Mutex::new(core)),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Runs `f` on the core on a blocking thread (the store blocks).
    pub async fn run<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Core) -> T + Send + 'static,
    {
        let core = self.core.clone();
        match tokio::task::spawn_blocking(move || {
            let mut c = core.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down and drops this task;
            // there is no value to return and nothing left to do.
            Err(_) => std::future::pending().await,
        }
    }

    /// Like [`run_short`](Self::run_short) for a Ua request of UE `impi`:
    /// inline only when this instance owns the UE; a UE of another
    /// instance is served from the store ([`crate::cluster`]), which
    /// blocks, so on a blocking thread.
    pub async fn run_short_for_ue<T, F>(&self, impi: &str, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Core) -> T + Send + 'static,
    {
        // Checked under the lock that runs `f`: ownership cannot change in
        // between. A UE this instance owns but does not know yet is read
        // from the store first (`Core::load_if_registered_elsewhere`): on
        // a blocking thread.
        self.run_short_if(|c| c.answers_from_memory(impi), f).await
    }

    /// Runs `f` on the core on this thread when the core is free, for the
    /// short in-memory operations of the request path (an MSK request, a
    /// registration, a batch of acknowledgements, a commit's bookkeeping):
    /// handing each to a blocking thread cost more than the operation.
    /// When the core is busy (a poll building a rotation's messages, an
    /// admin change writing to the store) `f` goes to a blocking thread as
    /// with [`run`](Self::run), so that no runtime worker waits for the
    /// lock. Commits do not hold the core across the disk sync (the
    /// committer writes between [`Core::begin_commit`] and
    /// [`Core::end_commit`]).
    pub async fn run_short<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Core) -> T + Send + 'static,
    {
        self.run_short_if(|_| true, f).await
    }

    /// `f` on this thread when the core is free and `inline` holds for it
    /// (checked under the same lock), else on a blocking thread.
    async fn run_short_if<T, F>(&self, inline: impl FnOnce(&Core) -> bool, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Core) -> T + Send + 'static,
    {
        let f = {
            let guard = match self.core.try_lock() {
                Ok(c) => Some(c),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            match guard {
                Some(mut c) if inline(&c) => return f(&mut c),
                _ => f,
            }
        };
        self.run(f).await
    }

    /// Runs `f` on the core on this thread, waiting for the lock (for
    /// setup, where no request is served yet).
    pub fn with<T>(&self, f: impl FnOnce(&mut Core) -> T) -> T {
        let mut c = self.core.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c)
    }

    /// Tells the engine driver that work may be due now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits for [`wake`](Self::wake).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::ServiceSet;

    #[test]
    fn service_set_holds_low_and_high_indices_and_forgets_removed_ones() {
        let mut s = ServiceSet::default();
        assert!(s.is_empty());
        for i in [3, 0, 63, 64, 300, 65] {
            s.insert(i);
        }
        s.insert(300);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 3, 63, 64, 65, 300]);
        assert!(s.contains(65) && s.contains(0) && !s.contains(1) && !s.contains(299));
        for i in [64, 65, 300, 0, 3] {
            s.remove(i);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![63]);
        assert!(s.high.is_none());
        s.remove(63);
        assert!(s.is_empty());
        assert_eq!(s, ServiceSet::default());
    }
}
