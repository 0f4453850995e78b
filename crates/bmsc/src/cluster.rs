//! Several `mbms bmsc` instances on one PostgreSQL database form one BM-SC
//! (TS 33.246 6.3.4, "Multiple BM-SC deployments"; issue 13).
//!
//! # What each instance owns
//!
//! * **UE shards.** Every UE belongs to shard [`shard_of`]`(IMPI)`, one of
//!   [`UE_SHARDS`] (FNV-1a 32-bit of the IMPI's UTF-8 bytes, modulo the
//!   count: stable across processes and releases, not Rust's keyed
//!   hasher). An instance holds the leases of about a fair share of the
//!   shards ([`fair_share`]: `ceil(shards / live instances)`) in table
//!   `ue_shards`; only the holder of a UE's shard pushes MIKEY messages to
//!   it, so one UE's counters come from one instance at a time.
//! * **Key groups.** The holder of a key group's lease (table
//!   `key_group_leases`) is its MSK key management anchor (6.3.4.3): it
//!   rotates it (schedule and admin), issues its MTKs (the sessions of
//!   the other instances get an error and wait) and saves its state; the
//!   other instances adopt the saved state (`Engine::adopt_key_group`) and
//!   push the same MSKs under the same MSK IDs to the UEs they own
//!   (6.3.4.4).
//!
//! # Leases, renewal, takeover
//!
//! `lease_ms` is the takeover time. A lease is written for its *term*,
//! [`lease_term_ms`] (three quarters of `lease_ms`), and renewed every
//! eighth ([`LeaseClock::renew_every`]). Each time an instance (its lease
//! thread, on a database connection of its own, so that nothing else the
//! instance does holds a renewal back: `lease_thread`) writes its
//! heartbeat, then in one transaction per kind renews its leases
//! (`expires_at = now() + term`) and takes free or expired ones
//! (`expires_at < now()`, `FOR UPDATE SKIP LOCKED`, epoch raised) up to its
//! fair share; those beyond it are handed over (below). Expiry is judged by the database's clock only.
//! An instance that cannot renew stops using its leases once the term
//! minus a tenth has passed since it sent its last successful renewal
//! ([`LeaseClock`]), before the database lets anyone else take them: the
//! engine driver builds nothing and every MIKEY send is checked
//! ([`ClusterState::may_send`]) whatever the cluster task is doing, and the
//! cluster task drops the UEs and key groups. A
//! killed instance renewed at most one renewal period before its death,
//! so its leases expire at most a term after it, and a survivor takes them
//! at its next renewal: within term + period = seven eighths of
//! `lease_ms`; the last eighth is for loading what was taken (the UEs of
//! the shards) and for a busy machine's late timers.
//!
//! Taking UE shards: the instance first reserves a fresh block of MUK
//! counters above every block anyone reserved (`UPDATE muk_counters SET
//! reserved = GREATEST(reserved + block, upto) RETURNING`), so its
//! messages are above any counter the previous owner used (the MGV-F
//! drops replays, `PROFILE.md` section 7); then it loads the shards' UEs,
//! registrations and deliveries from the store and pushes what was not
//! acknowledged. Taking a key group: the instance adopts the saved state
//! first; MTK IDs and MTK-message counters are saved before each MTK is
//! sent, so a new anchor continues above anything the old one issued
//! (6.3.4.5: an MTK ID is never issued with two keys).
//!
//! # Hand-over: a delivery in flight when its shard moves
//!
//! An instance gives back the leases beyond its fair share (a new instance
//! joined) in this order (`Renewer::hand_over`): it stops using them
//! (the shards' UEs leave its engine: no more pushes, retransmissions or
//! acknowledgements accepted for them; the key groups are no longer
//! anchored), waits until every write queued before that is committed
//! (registrations answered or not yet, acknowledged deliveries, charging
//! records), and only then releases the leases ([`crate::store::ClusterStore::release`];
//! until then they stay renewed, so nobody else takes them). The next
//! holder loads the shard's UEs and deliveries from the store when it
//! takes it, so it reads all of it, and resumes each delivery from its
//! stored outcome: acknowledged ones are not resent, a charged subscriber
//! (4-way step 1 acknowledged) gets the activation, anything else is
//! pushed again from its first step (seed 004 6.3.2.3.3), with counters
//! above any the previous holder used. An acknowledgement that reaches the
//! previous holder after it let go is ignored there; the next holder's
//! message is acknowledged instead. A charge seen by both is recorded once
//! (below). Before this order (the lease given back in the claim
//! transaction, the UEs unloaded after it, their writes committed later)
//! a UE registered just before the move was missing from the new owner's
//! load and never pushed (issue 13: the 4-way stall of a CI run).
//!
//! # Fencing
//!
//! Key group writes carry the lease's epoch: `UPDATE key_groups ... WHERE
//! EXISTS (lease held by me with this epoch, unexpired)`; a refused write
//! ([`crate::store::StoreError::Fenced`]) changes nothing, and the
//! instance stops being the anchor at its next renewal. Charging records
//! are unique per (IMPI, MSK) (`ON CONFLICT DO NOTHING`), so a charge
//! seen by two instances is recorded once. Delivery outcomes are not
//! fenced: a hand-over commits them before the lease is given back, so a
//! late write of an old owner happens only after its lease expired
//! unrenewed (the database unreachable, the process paused); it can only
//! mark a delivery pending, acknowledged or given up again, which at worst
//! repeats a push at the next takeover, and a registration or request
//! among such writes carries a notice to the UE's owner
//! (`Core::notify_unowned_writes`).
//!
//! # Ua at any instance
//!
//! The instance that receives a Ua request verifies its Digest (the nonce
//! secret is shared through the database, table `cluster_secrets`),
//! learns the IMPI over Zn, and when another instance owns the UE's shard
//! it answers from the stored registration, writes the change (the UE's
//! record, a pending delivery for an MSK request) and a notice
//! ([`Notice::Ue`], PostgreSQL `NOTIFY` in the same transaction, delivered
//! only if it commits). The owner reloads the UE and pushes. The
//! listening connection is opened before the first claim, so a notice
//! committed after an owner loaded a shard reaches it. This differs
//! from forwarding the request over HTTP: no MUK crosses the network
//! between instances and no inter-instance credential is needed; the
//! guarantee (one UE's MIKEY from one instance) is the same. A notice lost
//! while the owner's listening connection is down delays the push until
//! the UE asks again or the shard changes hands (the takeover reloads the
//! pending deliveries).
//!
//! # PostgreSQL unreachable
//!
//! Requests that need a write get an error once their commit fails
//! (nothing answered 200 was lost); leases not renewed in time are given
//! up (no pushes); the instance keeps trying and takes leases again when
//! the database is back.
//!
//! SQLite: one process owns everything (no leases); `mbms bmsc` refuses to
//! start on a file another process serves
//! (`mbms_service::db::ServingLock`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::core::now_ts;
use crate::server::App;
use crate::store::{InstanceRow, Lease, LeaseKind, NoticeListener, Store, StoreError};

/// The number of UE shards (rows of table `ue_shards`, created by the
/// schema version 2 migration; a database with another count is refused).
pub const UE_SHARDS: u32 = 256;

/// The shard of a UE: FNV-1a (32 bits) of its IMPI's UTF-8 bytes, modulo
/// [`UE_SHARDS`]. Stable across processes and releases.
pub fn shard_of(impi: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in impi.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % UE_SHARDS
}

/// The term a lease is written for (`expires_at = now() + term`): three
/// quarters of `lease_ms`, renewed every eighth, so that an instance's
/// leases are taken by another within seven eighths of `lease_ms` of its
/// death and its work is loaded within `lease_ms` (issue 13: the takeover
/// within the configured time, 10 s by default; with five sixths renewed
/// every sixth, the leases alone took the whole `lease_ms` and one loaded
/// 5,000-UE bench run took 10.84 s).
pub fn lease_term_ms(lease_ms: u64) -> u64 {
    lease_ms.saturating_mul(3) / 4
}

/// How long after its last heartbeat an instance counts as live in the
/// fair share: five eighths of `lease_ms` (five renewal periods; a term
/// less one period). An instance killed between its heartbeat and its claim
/// renewed its leases a period before that heartbeat: it stops counting
/// no later than its leases expire, so the survivors' fair share grows at
/// the renewal that finds its UE shards expired and they take them with
/// its key groups, within `lease_ms` (with `lease_ms` here: a renewal or
/// two later, beyond it). Counting a live instance out too early is
/// harmless: a fair share only bounds what is taken among free or expired
/// leases, never another's live lease.
pub fn liveness_ms(lease_ms: u64) -> u64 {
    lease_ms.saturating_mul(5) / 8
}

/// How many of `items` leases one of `live` instances takes at most:
/// `ceil(items / live)`, so that the live instances cover all of them.
pub fn fair_share(items: usize, live: usize) -> usize {
    items.div_ceil(live.max(1))
}

/// How long a holder may use its leases after a renewal: until the
/// moment it sent its last successful renewal plus the lease time, minus
/// a tenth as a margin (the database's `expires_at` is later than that:
/// `now()` there was read after the request left). Sans-IO: times are
/// passed in.
#[derive(Clone, Copy, Debug)]
pub struct LeaseClock {
    lease: Duration,
    valid_until: Option<Instant>,
}

impl LeaseClock {
    /// No lease held yet.
    pub fn new(lease: Duration) -> Self {
        LeaseClock {
            lease,
            valid_until: None,
        }
    }

    /// A renewal sent at `sent_at` succeeded.
    pub fn renewed(&mut self, sent_at: Instant) {
        let margin = self.lease / 10;
        let until = sent_at + self.lease.saturating_sub(margin);
        self.valid_until = Some(self.valid_until.map_or(until, |u| u.max(until)));
    }

    /// Whether the leases may still be used at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|u| now < u)
    }

    /// How often to renew: a sixth of the term (an eighth of `lease_ms`),
    /// so that term + period = seven eighths of `lease_ms` bounds the
    /// leases' takeover and the holder keeps its leases through four
    /// renewals missed in a row.
    pub fn renew_every(&self) -> Duration {
        (self.lease / 6).max(Duration::from_millis(10))
    }
}

/// Items gained and lost between two sets of leases.
pub fn diff(before: &BTreeSet<u32>, after: &BTreeSet<u32>) -> (BTreeSet<u32>, BTreeSet<u32>) {
    (
        after.difference(before).copied().collect(),
        before.difference(after).copied().collect(),
    )
}

/// A notice between instances (PostgreSQL `NOTIFY` payload, JSON).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Notice {
    /// UE `impi`'s record changed in the store (and it asked for `keys`,
    /// MSK Key IDs in hex): its owner reloads it and pushes.
    Ue {
        /// The subscriber.
        impi: String,
        /// MSK Key IDs asked for (hex).
        keys: Vec<String>,
    },
    /// The anchor saved a new state of the key group: adopt it.
    Adopt {
        /// The Key Group.
        key_group: u16,
    },
    /// The admin API asked an instance that is not the anchor to rotate:
    /// the anchor rotates.
    Rotate {
        /// The Key Group.
        key_group: u16,
    },
    /// Key group or service definitions changed in the store (admin API):
    /// reload them.
    Definitions,
    /// Solicited pull for the key group: every instance pulls the UEs it
    /// owns (of them, `impi` only, when given).
    Pull {
        /// The Key Group; 0 with `impi`: every key group of that UE.
        key_group: u16,
        /// One UE.
        impi: Option<String>,
    },
    /// An instance's marker to itself ([`ClusterState::sync_notices`]):
    /// PostgreSQL delivers notices in the order their transactions
    /// committed, so once the instance handled its own barrier it has
    /// handled every notice committed before it.
    Barrier {
        /// The instance that sent it (the others ignore it).
        instance: String,
        /// Its sequence number.
        seq: u64,
    },
}

impl Notice {
    /// The notice's kind, the label of `bmsc_cluster_notices_received_total`
    /// ([`crate::metrics::CLUSTER_NOTICE_KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::Ue { .. } => "ue",
            Notice::Adopt { .. } => "adopt",
            Notice::Rotate { .. } => "rotate",
            Notice::Definitions => "definitions",
            Notice::Pull { .. } => "pull",
            Notice::Barrier { .. } => "barrier",
        }
    }

    /// The JSON payload.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a payload (`None`: not ours).
    pub fn parse(s: &str) -> Option<Notice> {
        serde_json::from_str(s).ok()
    }
}

/// The `[cluster]` settings of a running instance and what the admin API
/// shows.
pub struct ClusterState {
    /// This instance.
    pub instance_id: String,
    /// How the others reach its HTTP.
    pub url: String,
    /// The lease time.
    pub lease_ms: u64,
    store: Arc<dyn Store>,
    /// Leases renewed in time (else Ua and admin writes are refused).
    healthy: AtomicBool,
    /// The last [`Notice::Barrier`] sent, and the last one handled.
    barrier_sent: std::sync::atomic::AtomicU64,
    barrier_seen: watch::Sender<u64>,
    /// Until when the leases may be used: moved by the renewal thread,
    /// read before every MIKEY send ([`Self::may_send`]).
    clock: std::sync::Mutex<LeaseClock>,
    /// Key groups defined (the fair share of the key group leases), set by
    /// the cluster task for the renewal thread.
    key_groups: AtomicUsize,
    /// Bumped each time leases were given back: a claim begun before that
    /// may still list them and is not applied ([`lease_thread`]).
    released: AtomicU64,
    /// When the cluster task last made progress (nanoseconds since
    /// `started`): the renewal thread stops renewing for a task stalled
    /// for a whole `lease_ms`, so that a wedged process does not hold its
    /// leases for ever.
    task_beat: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for ClusterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterState")
            .field("instance_id", &self.instance_id)
            .field("url", &self.url)
            .field("lease_ms", &self.lease_ms)
            .finish_non_exhaustive()
    }
}

impl ClusterState {
    /// For a store with cluster functions.
    pub fn new(instance_id: String, url: String, lease_ms: u64, store: Arc<dyn Store>) -> Self {
        ClusterState {
            instance_id,
            url,
            lease_ms,
            store,
            healthy: AtomicBool::new(false),
            barrier_sent: std::sync::atomic::AtomicU64::new(0),
            barrier_seen: watch::Sender::new(0),
            clock: std::sync::Mutex::new(LeaseClock::new(Duration::from_millis(lease_term_ms(
                lease_ms,
            )))),
            key_groups: AtomicUsize::new(0),
            released: AtomicU64::new(0),
            task_beat: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, LeaseClock> {
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this instance may send MIKEY messages at `now`: its last
    /// successful lease renewal is recent enough ([`LeaseClock::valid`])
    /// that no other instance can have taken its UE shards. Checked just
    /// before each send, whatever the cluster task is doing: a process
    /// starved of CPU, or whose cluster task is busy, must not push to UEs
    /// another instance took meanwhile (their MGV-Fs would see counters go
    /// backwards; found by the 3-instance kill test on a loaded machine).
    pub fn may_send(&self, now: Instant) -> bool {
        self.clock().valid(now)
    }

    /// How often the leases are renewed.
    fn renew_every(&self) -> Duration {
        self.clock().renew_every()
    }

    /// The cluster task made progress.
    fn beat(&self) {
        let ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.task_beat.store(ns, Ordering::Release);
    }

    /// How long ago the cluster task last made progress.
    fn task_stalled_for(&self) -> Duration {
        let beat = Duration::from_nanos(self.task_beat.load(Ordering::Acquire));
        self.started.elapsed().saturating_sub(beat)
    }

    /// Returns once this instance has handled every notice committed
    /// before the call (a [`Notice::Barrier`] to itself, delivered after
    /// them). A rotation waits for it: a deregistration answered by
    /// another instance just before (written with a notice to this owner)
    /// is applied first, and the deregistered UE gets no MSK of the
    /// rotation. `false` when the barrier could not be sent or did not
    /// come back within half the lease (the rotation goes on; the window
    /// is then the notice's delay, as before).
    pub async fn sync_notices(&self) -> bool {
        let seq = self.barrier_sent.fetch_add(1, Ordering::AcqRel) + 1;
        let n = Notice::Barrier {
            instance: self.instance_id.clone(),
            seq,
        };
        if let Err(e) = self.notify(n).await {
            tracing::warn!(error = %crate::ErrorChain(&e), "cluster: notice barrier not sent");
            return false;
        }
        let mut rx = self.barrier_seen.subscribe();
        let wait = Duration::from_millis(self.lease_ms / 2);
        let seen = tokio::time::timeout(wait, rx.wait_for(|s| *s >= seq))
            .await
            .is_ok_and(|r| r.is_ok());
        seen
    }

    /// Whether the last renewal succeeded in time.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Every instance and what it holds (`GET /admin/v1/cluster`).
    pub async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        let store = self.store.clone();
        let lease = self.lease_ms;
        tokio::task::spawn_blocking(move || match store.cluster() {
            Some(c) => c.instances(lease),
            None => Ok(Vec::new()),
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Backend(Box::new(e))))
    }

    /// Sends a notice to every instance.
    pub async fn notify(&self, n: Notice) -> Result<(), StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || match store.cluster() {
            Some(c) => c.notify(&n.to_json()),
            None => Ok(()),
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Backend(Box::new(e))))
    }
}

/// What one renewal brought back: the leases held (by item), and how
/// many of each kind this instance keeps (its fair share); those beyond
/// are handed over ([`split_share`]).
struct Claimed {
    /// Live instances, this one included.
    live: usize,
    shards: Vec<Lease>,
    key_groups: Vec<Lease>,
    want_shards: usize,
    want_key_groups: usize,
}

/// Splits the leases held (sorted by item) into those kept (the lowest
/// `want` items) and those to give back (the rest, highest items first
/// given back).
pub fn split_share(held: &[Lease], want: usize) -> (&[Lease], &[Lease]) {
    held.split_at(want.min(held.len()))
}

fn claim_all(st: &ClusterState, key_groups: usize) -> Result<Claimed, StoreError> {
    let Some(c) = st.store.cluster() else {
        return Err(StoreError::Invalid("no cluster functions".into()));
    };
    let live = c.heartbeat(&st.instance_id, &st.url, liveness_ms(st.lease_ms))?;
    let want_key_groups = fair_share(key_groups, live);
    let want_shards = fair_share(UE_SHARDS as usize, live);
    let key_groups = c.claim(
        LeaseKind::KeyGroup,
        &st.instance_id,
        lease_term_ms(st.lease_ms),
        want_key_groups,
    )?;
    let shards = c.claim(
        LeaseKind::UeShard,
        &st.instance_id,
        lease_term_ms(st.lease_ms),
        want_shards,
    )?;
    Ok(Claimed {
        live,
        shards,
        key_groups,
        want_shards,
        want_key_groups,
    })
}

/// One claim of the renewal thread ([`lease_thread`]), for the cluster
/// task to apply.
struct ClaimResult {
    claimed: Result<Claimed, StoreError>,
    /// [`ClusterState::released`] when the claim began.
    released: u64,
}

/// One renewal on the store (blocking): heartbeat and claims; on success
/// the lease clock moves on from the moment it was sent.
fn renew(st: &ClusterState, m: &crate::metrics::ClusterMetrics) -> ClaimResult {
    let released = st.released.load(Ordering::Acquire);
    let sent_at = Instant::now();
    let claimed = claim_all(st, st.key_groups.load(Ordering::Acquire));
    let result = if claimed.is_ok() {
        st.clock().renewed(sent_at);
        "ok"
    } else {
        "failed"
    };
    crate::metrics::Metrics::inc(&m.renewals, result);
    ClaimResult { claimed, released }
}

/// The renewal thread: every renewal period, the heartbeat and the claims
/// on the store's lease connection, whatever the cluster task, the core
/// and the runtime are busy with. Renewing in the cluster task, behind
/// the notices it handles, the core lock and the shared database
/// connection, let a loaded instance miss its renewals for longer than a
/// term: the others took its UE shards while it still pushed to their UEs
/// (the 3-instance kill test on a loaded machine, 9 runs in 10). The
/// results go to the cluster task, which applies them; a task stalled for
/// a whole `lease_ms` is no longer covered (its leases lapse).
fn lease_thread(
    st: Arc<ClusterState>,
    metrics: crate::metrics::ClusterMetrics,
    tx: mpsc::UnboundedSender<ClaimResult>,
    stop: Arc<AtomicBool>,
) {
    let every = st.renew_every();
    let mut next = Instant::now() + every;
    let mut stall_logged = false;
    loop {
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(20)));
        }
        let now = Instant::now();
        next += every;
        if next <= now {
            next = now + every;
        }
        let stalled = st.task_stalled_for();
        if stalled >= Duration::from_millis(st.lease_ms) {
            if !stall_logged {
                tracing::error!(
                    stalled_ms = stalled.as_millis() as u64,
                    "cluster: the cluster task is stalled; leases no longer renewed"
                );
                stall_logged = true;
            }
            continue;
        }
        stall_logged = false;
        if tx.send(renew(&st, &metrics)).is_err() {
            return;
        }
    }
}

/// The cluster task's memory of what it applied.
struct Renewer {
    /// Epochs of the key group leases held.
    anchored: BTreeMap<u16, i64>,
    /// The store's fenced writes already counted in the metrics.
    fenced_counted: u64,
}

impl Renewer {
    /// Applies a renewal: the changes of ownership, then the hand-over of
    /// what is beyond this instance's share.
    async fn on_claim(&mut self, app: &Arc<App>, st: &Arc<ClusterState>, r: ClaimResult) {
        let claimed = match r.claimed {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %crate::ErrorChain(&e), "cluster: leases not renewed (PostgreSQL unreachable?)");
                self.expire_if_due(app, st).await;
                return;
            }
        };
        if r.released != st.released.load(Ordering::Acquire) {
            // Begun before leases were given back: it may list them.
            return;
        }
        if !st.may_send(Instant::now()) {
            // Applied too late to be trusted (the leases may have passed on).
            self.expire_if_due(app, st).await;
            return;
        }
        st.healthy.store(true, Ordering::Release);
        let m = &app.metrics.cluster;
        if let Some(c) = st.store.cluster() {
            let fenced = c.fenced_writes();
            m.fenced_writes
                .inc_by(fenced.saturating_sub(self.fenced_counted));
            self.fenced_counted = fenced;
        }
        m.healthy.set(1);
        m.live_instances
            .set(i64::try_from(claimed.live).unwrap_or(i64::MAX));
        let (kept_shards, extra_shards) = split_share(&claimed.shards, claimed.want_shards);
        let (kept_groups, extra_groups) = split_share(&claimed.key_groups, claimed.want_key_groups);
        let shards: BTreeSet<u32> = kept_shards.iter().map(|l| l.item).collect();
        let anchored: BTreeMap<u16, i64> = kept_groups
            .iter()
            .filter_map(|l| u16::try_from(l.item).ok().map(|g| (g, l.epoch)))
            .collect();
        let ticket = self.apply(app, st, shards, anchored).await;
        let extra_shards: Vec<u32> = extra_shards.iter().map(|l| l.item).collect();
        let extra_groups: Vec<u32> = extra_groups.iter().map(|l| l.item).collect();
        if let Some(ticket) = ticket {
            self.hand_over(app, st, ticket, extra_shards, extra_groups)
                .await;
        }
    }

    /// Gives back the leases beyond this instance's share, which
    /// [`apply`](Self::apply) already stopped using (their UEs unloaded:
    /// no more pushes or retransmissions from here; the key groups no
    /// longer anchored): once every write queued before that (`ticket`:
    /// registrations, acknowledged deliveries, charging records of those
    /// UEs) is committed, so that the next holder, which loads the UEs and
    /// their deliveries from the store when it takes a shard, reads all of
    /// it. A delivery in flight is resumed by the next holder from the
    /// stored outcome (seed 004 6.3.2.3.3: a charged subscriber gets the
    /// activation), with counters above any this instance used. Not
    /// committed in time (the database slow or unreachable): the leases
    /// stay held (renewed, unused) and are given back at a later renewal.
    async fn hand_over(
        &mut self,
        app: &Arc<App>,
        st: &Arc<ClusterState>,
        ticket: u64,
        shards: Vec<u32>,
        key_groups: Vec<u32>,
    ) {
        if shards.is_empty() && key_groups.is_empty() {
            return;
        }
        let wait = st.renew_every();
        match tokio::time::timeout(wait, app.committed(ticket)).await {
            Ok(true) => {}
            _ => {
                tracing::info!(
                    ue_shards = shards.len(),
                    key_groups = key_groups.len(),
                    "cluster: hand-over waits for the commit of earlier writes"
                );
                return;
            }
        }
        let store = st.store.clone();
        let id = st.instance_id.clone();
        let r = tokio::task::spawn_blocking(move || {
            let Some(c) = store.cluster() else {
                return Ok(());
            };
            c.release(LeaseKind::KeyGroup, &id, &key_groups)?;
            c.release(LeaseKind::UeShard, &id, &shards)
        })
        .await;
        // A claim begun before this may list what was given back.
        st.released.fetch_add(1, Ordering::AcqRel);
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::ErrorChain(&e), "cluster: leases not given back; retried at the next renewal")
            }
            Err(_) => {}
        }
    }

    /// Leases not renewed in time: stop using them.
    async fn expire_if_due(&mut self, app: &Arc<App>, st: &Arc<ClusterState>) {
        if st.may_send(Instant::now()) {
            return;
        }
        app.metrics.cluster.healthy.set(0);
        if st.healthy.swap(false, Ordering::AcqRel) {
            tracing::error!(
                "cluster: leases expired without renewal: this instance stops pushing and \
                 anchoring until PostgreSQL answers again"
            );
        }
        let _ = self.apply(app, st, BTreeSet::new(), BTreeMap::new()).await;
    }

    /// Applies the leases kept: UE shards and key groups no longer kept
    /// are dropped first (no more pushes, no more anchoring), new ones
    /// taken. Returns the write ticket queued when the drop happened
    /// (`None`: applying failed).
    async fn apply(
        &mut self,
        app: &Arc<App>,
        st: &Arc<ClusterState>,
        shards: BTreeSet<u32>,
        anchored: BTreeMap<u16, i64>,
    ) -> Option<u64> {
        let store = st.store.clone();
        let id = st.instance_id.clone();
        let before = std::mem::replace(&mut self.anchored, anchored.clone());
        let m = app.metrics.cluster.clone();
        let (gained_anchors, lost_anchors) = (
            anchored.keys().filter(|g| !before.contains_key(g)).count(),
            before.keys().filter(|g| !anchored.contains_key(g)).count(),
        );
        let anchored_now = anchored.len();
        let all_groups = app.core.run_short(|c| c.key_group_ids()).await;
        st.key_groups.store(all_groups.len(), Ordering::Release);
        let r = app
            .core
            .run(
                move |c| -> Result<(usize, u64, bool), crate::core::CoreError> {
                    let now = now_ts();
                    let (gained, lost) = diff(&c.owned_shards(), &shards);
                    c.drop_shards(&lost);
                    m.ue_shards_given_up.inc_by(lost.len() as u64);
                    // Every write of the dropped UEs is queued by now.
                    let ticket = c.write_ticket();
                    let mut rotated = false;
                    // Lost anchors first, whatever happens next.
                    for g in &all_groups {
                        let epoch = anchored.get(g).copied();
                        if let Some(cl) = store.cluster() {
                            cl.set_fence(&id, *g, epoch);
                        }
                        if epoch.is_none() && c.is_anchor(*g) {
                            tracing::info!(key_group = g, "cluster: anchor lease given up");
                            c.set_anchor(*g, false, now);
                        }
                    }
                    for g in &all_groups {
                        match anchored.get(g) {
                            Some(_) if !before.contains_key(g) || !c.is_anchor(*g) => {
                                // A new anchor continues from the saved
                                // state (it anchors once that is read).
                                rotated |= c.adopt_key_group(*g, now)?;
                                c.set_anchor(*g, true, now);
                                tracing::info!(
                                    key_group = g,
                                    "cluster: this instance is the anchor"
                                );
                            }
                            Some(_) => {}
                            None => match c.adopt_key_group(*g, now) {
                                Ok(r) => rotated |= r,
                                Err(e) => tracing::debug!(
                                    key_group = g,
                                    error = %crate::ErrorChain(&e),
                                    "cluster: key group not adopted"
                                ),
                            },
                        }
                    }
                    let loaded = c.take_shards(&gained, now)?;
                    m.ue_shards_taken.inc_by(gained.len() as u64);
                    m.ue_shards
                        .set(i64::try_from(c.owned_shards().len()).unwrap_or(i64::MAX));
                    if !gained.is_empty() || !lost.is_empty() {
                        tracing::info!(
                            gained = gained.len(),
                            lost = lost.len(),
                            ues_loaded = loaded,
                            "cluster: UE shards changed hands"
                        );
                    }
                    Ok((gained.len(), ticket, rotated))
                },
            )
            .await;
        match r {
            Ok((gained, ticket, rotated)) => {
                let a = &app.metrics.cluster;
                use crate::metrics::Metrics;
                Metrics::inc_by(&a.anchor_changes, "gained", gained_anchors as u64);
                Metrics::inc_by(&a.anchor_changes, "lost", lost_anchors as u64);
                a.key_groups_anchored
                    .set(i64::try_from(anchored_now).unwrap_or(i64::MAX));
                if rotated {
                    app.rotated();
                }
                if gained > 0 || rotated {
                    app.core.wake();
                }
                Some(ticket)
            }
            Err(e) => {
                tracing::warn!(error = %crate::ErrorChain(&e), "cluster: applying the leases failed; retried at the next renewal");
                // Retry the takeover next time: forget what was applied.
                self.anchored.clear();
                None
            }
        }
    }
}

/// Handles one notice.
async fn on_notice(app: &Arc<App>, payload: &str) {
    let Some(n) = Notice::parse(payload) else {
        crate::metrics::Metrics::inc(&app.metrics.cluster.notices, "unknown");
        tracing::debug!(payload, "cluster: unknown notice ignored");
        return;
    };
    crate::metrics::Metrics::inc(&app.metrics.cluster.notices, n.kind());
    match n {
        Notice::Barrier { instance, seq } => {
            if let Some(st) = app.cluster.as_ref().filter(|st| st.instance_id == instance) {
                st.barrier_seen.send_modify(|s| *s = (*s).max(seq));
            }
        }
        Notice::Ue { impi, keys } => {
            let keys: Vec<mbms::MskName> = keys
                .iter()
                .filter_map(|k| crate::store::msk_from_text(k).ok())
                .collect();
            let r = app
                .core
                .run(move |c| c.apply_remote_ue(&impi, &keys, now_ts()))
                .await;
            match r {
                Ok(true) => app.core.wake(),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::ErrorChain(&e), "cluster: a UE notice failed")
                }
            }
        }
        Notice::Definitions => {
            let r = app.core.run(|c| c.reload_definitions(now_ts())).await;
            match r {
                Ok(true) => app.core.wake(),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::ErrorChain(&e), "cluster: reloading the definitions failed")
                }
            }
        }
        Notice::Adopt { key_group } => {
            let r = app
                .core
                .run(move |c| {
                    if c.is_anchor(key_group) {
                        Ok(false)
                    } else {
                        c.adopt_key_group(key_group, now_ts())
                    }
                })
                .await;
            match r {
                Ok(true) => {
                    app.rotated();
                    app.core.wake();
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(key_group, error = %crate::ErrorChain(&e), "cluster: adopting a key group failed")
                }
            }
        }
        Notice::Rotate { key_group } => {
            // On a task of its own: the rotation first waits for the
            // notices committed until now (`ClusterState::sync_notices`),
            // which this loop delivers.
            let app = app.clone();
            tokio::spawn(async move {
                if let Some(st) = &app.cluster {
                    st.sync_notices().await;
                }
                let r = app
                    .core
                    .run(move |c| {
                        c.is_anchor(key_group)
                            .then(|| c.rotate(key_group, now_ts()))
                            .transpose()
                    })
                    .await;
                match r {
                    Ok(Some(_)) => {
                        app.rotated();
                        app.core.wake();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(key_group, error = %crate::ErrorChain(&e), "cluster: rotation asked by another instance failed")
                    }
                }
            });
        }
        Notice::Pull { key_group, impi } => {
            let keep = pull_memory_ms(app);
            let r = app
                .core
                .run(move |c| {
                    c.remember_pull(key_group, impi.as_deref(), now_ts(), keep);
                    pull_here(c, key_group, impi)
                })
                .await;
            match r {
                Ok(_) => app.core.wake(),
                Err(e) => {
                    tracing::debug!(key_group, error = %crate::ErrorChain(&e), "cluster: solicited pull of another instance")
                }
            }
        }
    }
}

/// How long every instance remembers a solicited pull
/// ([`crate::core::Core::remember_pull`]): twice the lease, so that the
/// instance taking a dead owner's shards (within `lease_ms`) still knows.
pub(crate) fn pull_memory_ms(app: &App) -> u64 {
    app.cluster.as_ref().map_or(0, |c| 2 * c.lease_ms)
}

/// A pull notice's part for this instance: the UEs it owns.
fn pull_here(
    c: &mut crate::core::Core,
    key_group: u16,
    impi: Option<String>,
) -> Result<usize, crate::core::CoreError> {
    match impi {
        Some(i) if c.owns_ue(&i) => {
            let groups = if key_group == 0 {
                c.ues()
                    .into_iter()
                    .find(|u| u.impi == i)
                    .map(|u| u.key_groups)
                    .unwrap_or_default()
            } else {
                vec![key_group]
            };
            let mut queued = 0;
            for g in groups {
                queued += c.solicited_pull(g, Some(&i))?;
            }
            Ok(queued)
        }
        Some(_) => Ok(0),
        None => c.solicited_pull(key_group, None),
    }
}

/// The listening thread: blocks on the notices of a connection of its
/// own, hands them to the runtime; reconnects after a failure.
fn listen_thread(
    store: Arc<dyn Store>,
    first: Option<Box<dyn NoticeListener>>,
    tx: mpsc::UnboundedSender<String>,
    stop: Arc<AtomicBool>,
) {
    let mut listener = first;
    while !stop.load(Ordering::Acquire) {
        let l = match listener.as_mut() {
            Some(l) => l,
            None => match store.cluster().map(|c| c.listen()) {
                Some(Ok(l)) => listener.insert(l),
                Some(Err(e)) => {
                    tracing::warn!(error = %crate::ErrorChain(&e), "cluster: cannot listen for notices; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                None => return,
            },
        };
        match l.wait(Duration::from_millis(200)) {
            Ok(v) => {
                for n in v {
                    if tx.send(n).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::ErrorChain(&e), "cluster: notice connection lost; reconnecting");
                listener = None;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// The first renewal, before the instance serves: a lone instance owns
/// everything at once.
///
/// The listening connection is opened first: a notice about a UE of a
/// shard taken here, committed after the shard's UEs were loaded, must
/// reach this instance (one sent before is in what was loaded).
pub(crate) async fn first_claim(app: &Arc<App>, st: &Arc<ClusterState>) -> Renewal {
    let store = st.store.clone();
    let listener = tokio::task::spawn_blocking(move || store.cluster().map(|c| c.listen()))
        .await
        .ok()
        .flatten()
        .and_then(|r| {
            r.map_err(|e| {
                tracing::warn!(error = %crate::ErrorChain(&e), "cluster: cannot listen for notices yet; retrying");
            })
            .ok()
        });
    let mut r = Renewer {
        anchored: BTreeMap::new(),
        fenced_counted: 0,
    };
    let groups = app.core.run_short(|c| c.key_group_ids().len()).await;
    st.key_groups.store(groups, Ordering::Release);
    let (st2, m) = (st.clone(), app.metrics.cluster.clone());
    if let Ok(c) = tokio::task::spawn_blocking(move || renew(&st2, &m)).await {
        r.on_claim(app, st, c).await;
    }
    st.beat();
    Renewal(r, listener)
}

/// The renewal state carried from [`first_claim`] to [`run`], with the
/// listening connection.
pub(crate) struct Renewal(Renewer, Option<Box<dyn NoticeListener>>);

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(drop);
}

/// The cluster task: applies the renewals of the lease thread (every
/// `lease_ms / 8`, [`lease_thread`]) as changes of ownership, handles the
/// notices, stops using the leases once they were not renewed in time,
/// and gives everything back at a graceful stop.
pub(crate) async fn run(
    app: Arc<App>,
    st: Arc<ClusterState>,
    renewal: Renewal,
    mut stop: watch::Receiver<bool>,
) {
    let Renewal(mut renewer, first) = renewal;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop_flag = Arc::new(AtomicBool::new(false));
    let listener = {
        let store = st.store.clone();
        let flag = stop_flag.clone();
        std::thread::Builder::new()
            .name("bmsc-cluster-listen".into())
            .spawn(move || listen_thread(store, first, tx, flag))
            .ok()
    };
    // Stops the listening thread however this task ends (also when
    // aborted by `RunningBmsc::kill`).
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let _guard = StopOnDrop(stop_flag.clone());
    let (claims_tx, mut claims) = mpsc::unbounded_channel();
    let lease = {
        let (st, m, flag) = (st.clone(), app.metrics.cluster.clone(), stop_flag.clone());
        std::thread::Builder::new()
            .name("bmsc-cluster-lease".into())
            .spawn(move || lease_thread(st, m, claims_tx, flag))
            .ok()
    };
    if lease.is_none() {
        tracing::error!("cluster: the lease thread could not start; leases lapse");
    }
    // The expiry check: leases not renewed in time are no longer used,
    // even when no renewal result comes (the database hangs).
    let mut ticker = tokio::time::interval(st.renew_every());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            Some(mut c) = claims.recv() => {
                // The notices received before the renewal first: a renewal
                // that adopts a key group's new MSKs comes after the
                // deregistrations already received. Only those: under a
                // stream of notices the renewals are applied all the same.
                for _ in 0..rx.len() {
                    let Ok(n) = rx.try_recv() else { break };
                    on_notice(&app, &n).await;
                    st.beat();
                }
                // Each claim lists every lease held: the latest is enough.
                while let Ok(later) = claims.try_recv() {
                    if let Err(e) = &c.claimed {
                        tracing::warn!(error = %crate::ErrorChain(e), "cluster: leases not renewed (PostgreSQL unreachable?)");
                    }
                    c = later;
                }
                renewer.on_claim(&app, &st, c).await;
            }
            _ = ticker.tick() => renewer.expire_if_due(&app, &st).await,
            Some(n) = rx.recv() => on_notice(&app, &n).await,
        }
        st.beat();
    }
    stop_flag.store(true, Ordering::Release);
    // No claim after the leases are given back below (unless the thread
    // hangs in the database: then they expire as after a crash).
    if let Some(t) = lease {
        let wait = Duration::from_millis(lease_term_ms(st.lease_ms));
        if tokio::time::timeout(wait, tokio::task::spawn_blocking(move || t.join()))
            .await
            .is_err()
        {
            tracing::warn!("cluster: the lease thread did not stop in time");
        }
    }
    // A graceful stop hands everything over: nothing used any more, the
    // writes queued so far committed (the committer writes them at its
    // stop), then every lease given back at once.
    if let Some(ticket) = renewer
        .apply(&app, &st, BTreeSet::new(), BTreeMap::new())
        .await
    {
        let wait = Duration::from_millis(lease_term_ms(st.lease_ms) / 2);
        if !matches!(
            tokio::time::timeout(wait, app.committed(ticket)).await,
            Ok(true)
        ) {
            tracing::warn!("cluster: writes not committed at the stop; leases given back anyway");
        }
    }
    let store = st.store.clone();
    let id = st.instance_id.clone();
    let released = tokio::task::spawn_blocking(move || match store.cluster() {
        Some(c) => c.release_all(&id),
        None => Ok(()),
    })
    .await;
    if let Ok(Err(e)) = released {
        tracing::warn!(error = %crate::ErrorChain(&e), "cluster: leases not given back (they expire)");
    }
    if let Some(t) = listener {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        // FNV-1a 32 of "a" is 0xe40c292c.
        assert_eq!(shard_of("a"), 0xe40c_292c % UE_SHARDS);
        assert_eq!(shard_of(""), 0x811c_9dc5 % UE_SHARDS);
        let mut counts = vec![0u32; UE_SHARDS as usize];
        for i in 0..25_600 {
            counts[shard_of(&format!("user{i}_private@home1.net")) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (50..=150).contains(c)), "{counts:?}");
    }

    #[test]
    fn fair_shares_cover_everything() {
        assert_eq!(fair_share(256, 3), 86);
        assert!(fair_share(256, 3) * 3 >= 256);
        assert_eq!(fair_share(256, 0), 256);
        assert_eq!(fair_share(1, 3), 1);
        assert_eq!(fair_share(0, 3), 0);
    }

    #[test]
    fn a_lease_is_used_only_until_its_renewal_time_minus_a_margin() {
        let t0 = Instant::now();
        let mut c = LeaseClock::new(Duration::from_millis(1000));
        assert!(!c.valid(t0));
        c.renewed(t0);
        assert!(c.valid(t0 + Duration::from_millis(899)));
        assert!(!c.valid(t0 + Duration::from_millis(900)));
        // An older renewal's answer arriving late does not shorten it.
        c.renewed(t0 + Duration::from_millis(500));
        c.renewed(t0);
        assert!(c.valid(t0 + Duration::from_millis(1399)));
        assert_eq!(c.renew_every().as_millis(), 166);
        // Term + renewal period = 7/8 of lease_ms: the takeover bound of
        // the leases, an eighth left to load what was taken.
        let term = lease_term_ms(12_000);
        let period = LeaseClock::new(Duration::from_millis(term)).renew_every();
        assert_eq!(u128::from(term) + period.as_millis(), 10_500);
    }

    #[test]
    fn the_share_beyond_want_is_handed_over_highest_items_first() {
        let held: Vec<Lease> = [3u32, 7, 9, 200]
            .iter()
            .map(|i| Lease { item: *i, epoch: 1 })
            .collect();
        let (kept, extra) = split_share(&held, 2);
        assert_eq!(kept.iter().map(|l| l.item).collect::<Vec<_>>(), [3, 7]);
        assert_eq!(extra.iter().map(|l| l.item).collect::<Vec<_>>(), [9, 200]);
        let (kept, extra) = split_share(&held, 10);
        assert_eq!(kept.len(), 4);
        assert!(extra.is_empty());
        // A dead instance stops counting as live no later than its leases
        // expire, even when killed between its heartbeat and its renewal
        // (the renewal a period before): liveness <= term - period.
        let lease = 12_000;
        let period = LeaseClock::new(Duration::from_millis(lease_term_ms(lease)))
            .renew_every()
            .as_millis() as u64;
        assert!(liveness_ms(lease) <= lease_term_ms(lease) - period);
        assert!(liveness_ms(lease) >= 3 * period);
    }

    #[test]
    fn diffs_and_notices() {
        let a: BTreeSet<u32> = [1, 2, 3].into();
        let b: BTreeSet<u32> = [2, 3, 4].into();
        assert_eq!(diff(&a, &b), ([4].into(), [1].into()));
        for n in [
            Notice::Ue {
                impi: "u@x".into(),
                keys: vec!["AB".into()],
            },
            Notice::Adopt { key_group: 1 },
            Notice::Definitions,
            Notice::Rotate { key_group: 2 },
            Notice::Pull {
                key_group: 3,
                impi: None,
            },
        ] {
            assert_eq!(Notice::parse(&n.to_json()), Some(n));
        }
        assert_eq!(Notice::parse("garbage"), None);
    }
}
