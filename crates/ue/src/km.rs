//! The UE's key management task: every procedure that talks HTTP.
//!
//! * GBA bootstrapping with the BSF at start when the state directory holds
//!   no B-TID valid for more than `rebootstrap_margin_s`, again before the
//!   B-TID expires, and when the BM-SC answers 401 to a response computed
//!   for a fresh challenge (unknown or expired B-TID). Every bootstrapping
//!   installs the new MUK of each BM-SC in the MGV-F (which keeps the one
//!   the BM-SC last used, for solicited pulls) and registers again.
//! * Registration (at start) and deregistration (on request / shutdown).
//! * MSK requests (seed 002 6.3.2.2.1) for: initiation of key management
//!   (Key Number 0, unless `initial_msk_wait_ms` after registration the UE
//!   knows it holds the current MSK: [`crate::core::Core::holds_current_since`]; a
//!   later MSK that arrived first is not the current one),
//!   solicited pull (Key Number 0), missed key update (the MSK the traffic
//!   named, after a uniformly random back-off in 0..=`missed_key_backoff_ms`;
//!   if the BM-SC does not serve that MSK, the current one).
//!   One outstanding request per key group. 480/500, transport errors and a
//!   200 without a MIKEY delivery within `msk_delivery_timeout_ms` are
//!   retried (exponential back-off with jitter) up to
//!   `msk_request_attempts`; then, or on 400/403/404, the UE gives up on the
//!   key group and, unless it holds a still-valid older MSK of that group,
//!   leaves every service using it (seeds 000/001), deregistering best
//!   effort and deleting the keys of the key groups no remaining service
//!   uses.
//! * Activation requests (seed 004 6.3.2.3.3): an inactive MSK that traffic
//!   needs and whose activation did not arrive within
//!   `activation_timeout_ms` is requested again by its MSK ID, up to
//!   [`crate::ACTIVATION_REQUESTS`] times ([`crate::core::Core::poll_activations`]
//!   decides, this task keeps the timer); then the UE keeps a still-valid
//!   older MSK or leaves the services as above.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use gba::{Sqn48, Usim};
use mbms::{KeyGroupName, MskId, MskName, MukId};

use crate::bootstrap::BootstrapClient;
use crate::config::{Service, UeConfig};
use crate::core::{ActivationStep, KmCmd};
use crate::events::{RequestReason, UeEvent};
use crate::runtime::{groups_of, now_rfc3339, services_of, Shell, UeError};
use crate::state::{self, files, GbaSession, Registration, Registrations, UsimState};
use crate::ua::{UaClient, UaError};

/// Messages to the key management task.
#[derive(Debug)]
pub(crate) enum KmMsg {
    /// From the core (MIKEY / traffic).
    Core(KmCmd),
    /// Request the current MSKs of a service now.
    Manual { service: String },
    /// Bootstrap again now.
    Rebootstrap {
        reply: oneshot::Sender<Result<(), UeError>>,
    },
    /// Stop (deregistering first if asked).
    Shutdown {
        deregister: bool,
        reply: oneshot::Sender<Result<(), UeError>>,
    },
}

struct Pending {
    due: Instant,
    keys: BTreeSet<MskName>,
    reason: RequestReason,
    attempts: u32,
    /// Keys named by traffic, with the group's MSK arrivals at that time.
    missed: BTreeMap<MskName, u64>,
}

struct Awaiting {
    deadline: Instant,
    snapshot: u64,
    keys: BTreeSet<MskName>,
    reason: RequestReason,
    attempts: u32,
}

pub(crate) struct Km {
    cfg: Arc<UeConfig>,
    shell: Arc<Shell>,
    http: reqwest::Client,
    /// A hosted UE's share of its host's requests in flight ([`crate::host`]).
    http_slots: Option<Arc<tokio::sync::Semaphore>>,
    usim: Usim,
    session: Option<GbaSession>,
    clients: BTreeMap<String, UaClient>,
    regs: Registrations,
    /// Registered services awaiting the initiation of key management, with
    /// the core's [`crate::core::Core::mark`] at registration.
    initial: Vec<(Instant, String, u64)>,
    pending: BTreeMap<KeyGroupName, Pending>,
    awaiting: BTreeMap<KeyGroupName, Awaiting>,
    /// When each MSK named by traffic was last requested.
    recently_missed: BTreeMap<MskName, Instant>,
    rebootstrap_at: Option<Instant>,
    mikey_port: u16,
}

fn current(group: KeyGroupName) -> MskName {
    MskName {
        key_domain: group.key_domain,
        msk_id: MskId::current(group.key_group),
    }
}

fn jitter(max_ms: u64) -> Duration {
    if max_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rngs::OsRng.gen_range(0..=max_ms))
}

impl Km {
    pub fn new(cfg: Arc<UeConfig>, shell: Arc<Shell>, mikey_port: u16) -> Result<Self, UeError> {
        let dir = &cfg.state_dir;
        let sqn = match state::read_json::<UsimState>(&dir.join(files::USIM))? {
            Some(u) => u.sqn_ms,
            None => cfg.identity.sqn,
        };
        let usim = Usim::new(
            cfg.identity.k()?,
            cfg.identity.opc()?,
            Sqn48::new(sqn).unwrap_or(Sqn48::ZERO),
        );
        let session = GbaSession::load(&dir.join(files::GBA))?
            .filter(|s| s.impi == cfg.identity.impi && s.mode == cfg.identity.gba);
        let regs = state::read_json(&dir.join(files::REGISTRATIONS))?.unwrap_or_default();
        let (http, http_slots) = match shell.host_http() {
            Some((c, slots)) => (c, Some(slots)),
            None => (
                reqwest::Client::builder()
                    .user_agent(crate::bootstrap::USER_AGENT_VALUE)
                    .timeout(cfg.http_timeout())
                    .local_address(cfg.http_local_address)
                    .build()?,
                None,
            ),
        };
        Ok(Km {
            cfg,
            shell,
            http,
            http_slots,
            usim,
            session,
            clients: BTreeMap::new(),
            regs,
            initial: Vec::new(),
            pending: BTreeMap::new(),
            awaiting: BTreeMap::new(),
            recently_missed: BTreeMap::new(),
            rebootstrap_at: None,
            mikey_port,
        })
    }

    /// A slot for one HTTP request (Digest exchange included) of a hosted
    /// UE: its host bounds the requests in flight over all its UEs.
    async fn http_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match &self.http_slots {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        }
    }

    fn error(&self, what: String) {
        self.shell.core().error(what.clone());
        self.shell.event(UeEvent::Error { what });
    }

    /// Bootstraps if needed, installs the MUKs, registers.
    pub async fn startup(&mut self) -> Result<(), UeError> {
        let now = time::OffsetDateTime::now_utc();
        let valid = self
            .session
            .as_ref()
            .is_some_and(|s| !s.expires_within(now, self.cfg.rebootstrap_margin_s));
        if valid {
            self.install_muks()?;
            self.schedule_rebootstrap();
        } else {
            self.bootstrap().await?;
        }
        self.register_all().await
    }

    async fn bootstrap(&mut self) -> Result<(), UeError> {
        let id = &self.cfg.identity;
        let mut client = BootstrapClient::with_http_client(self.http.clone(), &id.bsf)?;
        if let Some(f) = &id.bsf_fqdn {
            client = client.with_bsf_fqdn(f.clone());
        }
        self.shell.core().counters.bootstraps += 1;
        let r = {
            let _slot = self.http_slot().await;
            client.bootstrap(&id.impi, &mut self.usim).await
        };
        // SQN_MS moves only forward; persist it whatever happened.
        state::write_json(
            &self.cfg.state_dir.join(files::USIM),
            &UsimState {
                sqn_ms: self.usim.sqn_ms().value(),
            },
        )?;
        let b = r?;
        let s = GbaSession::from_bootstrap(&b, id.gba);
        s.save(&self.cfg.state_dir.join(files::GBA))?;
        info!(btid = %s.btid, lifetime = %s.lifetime, "bootstrapped");
        self.shell.event(UeEvent::Bootstrapped {
            btid: s.btid.as_str().to_owned(),
            expires: s.lifetime.clone(),
        });
        self.session = Some(s);
        self.clients.clear();
        self.install_muks()?;
        self.schedule_rebootstrap();
        Ok(())
    }

    fn schedule_rebootstrap(&mut self) {
        let Some(s) = &self.session else { return };
        let now = time::OffsetDateTime::now_utc();
        let left = (s.expires_at - now).whole_seconds() - self.cfg.rebootstrap_margin_s as i64;
        let left = u64::try_from(left.max(1)).unwrap_or(1);
        self.rebootstrap_at = Some(Instant::now() + Duration::from_secs(left));
    }

    /// Installs the MUK of every BM-SC of the protected services.
    fn install_muks(&mut self) -> Result<(), UeError> {
        let Some(s) = &self.session else {
            return Ok(());
        };
        let fqdns: BTreeSet<String> = self
            .cfg
            .service_list
            .iter()
            .filter(|x| x.protected())
            .map(Service::bmsc)
            .collect();
        self.shell.route_btid(s.btid.as_str());
        for f in fqdns {
            let keys = s.mbms_keys(&f)?;
            self.shell
                .core()
                .add_muk(MukId::new(f.clone(), s.btid.as_str()), keys.muk.clone())?;
        }
        Ok(())
    }

    fn client(&mut self, svc: &Service) -> Result<&mut UaClient, UeError> {
        let key = format!("{} {}", svc.key_management_uri, svc.bmsc());
        if !self.clients.contains_key(&key) {
            let s = self.session.as_ref().ok_or(UeError::Stopped)?;
            let fqdn = svc.bmsc();
            let keys = s.mbms_keys(&fqdn)?;
            let c = UaClient::new(
                self.http.clone(),
                &svc.key_management_uri,
                &fqdn,
                self.mikey_port,
                s.btid.as_str(),
                &keys.mrk,
            )?;
            self.clients.insert(key.clone(), c);
        }
        Ok(self.clients.get_mut(&key).unwrap_or_else(|| unreachable!()))
    }

    fn save_regs(&self) {
        if let Err(e) =
            state::write_json(&self.cfg.state_dir.join(files::REGISTRATIONS), &self.regs)
        {
            self.error(format!("saving registrations: {e}"));
        }
    }

    fn set_reg(&mut self, service: &str, st: &str, status: Option<u16>, reason: Option<String>) {
        let btid = self.session.as_ref().map(|s| s.btid.as_str().to_owned());
        self.regs.set(Registration {
            service: service.to_owned(),
            state: st.to_owned(),
            status,
            at: now_rfc3339(),
            btid,
            reason,
        });
    }

    fn is_active(&self, service: &str) -> bool {
        self.regs
            .get(service)
            .is_some_and(|r| r.state == "registered")
    }

    /// Services grouped by (key management URI, BM-SC): one request each.
    fn by_server<'a>(services: impl Iterator<Item = &'a Service>) -> Vec<Vec<Service>> {
        let mut m: BTreeMap<String, Vec<Service>> = BTreeMap::new();
        for s in services {
            m.entry(format!("{} {}", s.key_management_uri, s.bmsc()))
                .or_default()
                .push(s.clone());
        }
        m.into_values().collect()
    }

    /// Registers to every protected service that was not left.
    async fn register_all(&mut self) -> Result<(), UeError> {
        let cfg = self.cfg.clone();
        for s in cfg.service_list.iter().filter(|s| !s.protected()) {
            self.set_reg(&s.id, "unprotected", None, None);
        }
        let groups = Self::by_server(cfg.service_list.iter().filter(|s| s.protected()));
        let mut first_err = None;
        for svcs in groups {
            if let Err(e) = self.register(&svcs).await {
                self.error(format!("registration failed: {e}"));
                first_err.get_or_insert(e);
            }
        }
        self.save_regs();
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn register(&mut self, svcs: &[Service]) -> Result<(), UeError> {
        let ids: Vec<&str> = svcs.iter().map(|s| s.id.as_str()).collect();
        // The mark before the registration: the BM-SC pushes as soon as it
        // registered us, possibly before its answer arrives.
        let mark = self.shell.core().mark();
        let mut retried = false;
        let statuses = loop {
            self.shell.core().counters.registrations += 1;
            let r = {
                let _slot = self.http_slot().await;
                self.client(&svcs[0])?.register(&ids).await
            };
            match r {
                Err(UaError::Unauthorized { .. }) if !retried => {
                    retried = true;
                    self.bootstrap().await?;
                }
                other => break other?,
            }
        };
        for (i, s) in svcs.iter().enumerate() {
            let st = statuses
                .iter()
                .find(|(id, _)| *id == s.id)
                .or(statuses.get(i))
                .map(|x| x.1)
                .unwrap_or(500);
            info!(service = %s.id, status = st, "registration");
            self.shell.event(UeEvent::Registered {
                service: s.id.clone(),
                status: st,
            });
            if st == 200 {
                self.set_reg(&s.id, "registered", Some(st), None);
                self.initial.push((
                    Instant::now() + Duration::from_millis(self.cfg.initial_msk_wait_ms),
                    s.id.clone(),
                    mark,
                ));
            } else {
                let why = format!("the BM-SC refused the registration ({st})");
                self.set_reg(&s.id, "refused", Some(st), Some(why.clone()));
                self.error(format!("service {}: {why}", s.id));
            }
        }
        Ok(())
    }

    async fn deregister(&mut self, svcs: &[Service]) -> Result<(), UeError> {
        let ids: Vec<&str> = svcs.iter().map(|s| s.id.as_str()).collect();
        let mut retried = false;
        let statuses = loop {
            let r = {
                let _slot = self.http_slot().await;
                self.client(&svcs[0])?.deregister(&ids).await
            };
            match r {
                Err(UaError::Unauthorized { .. }) if !retried => {
                    retried = true;
                    self.bootstrap().await?;
                }
                other => break other?,
            }
        };
        for (i, s) in svcs.iter().enumerate() {
            let st = statuses.get(i).map(|x| x.1);
            info!(service = %s.id, status = ?st, "deregistered");
            self.set_reg(&s.id, "deregistered", st, None);
            self.shell.event(UeEvent::Deregistered {
                service: s.id.clone(),
            });
        }
        Ok(())
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<KmMsg>) {
        loop {
            let next = self.next_deadline();
            tokio::select! {
                m = rx.recv() => match m {
                    None => return,
                    Some(KmMsg::Shutdown { deregister, reply }) => {
                        let r = self.shutdown(deregister).await;
                        let _ = reply.send(r);
                        return;
                    }
                    Some(m) => self.on_msg(m).await,
                },
                _ = tokio::time::sleep_until(next) => self.on_timer().await,
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut t = self.rebootstrap_at.unwrap_or(far).min(far);
        for (d, _, _) in &self.initial {
            t = t.min(*d);
        }
        for p in self.pending.values() {
            t = t.min(p.due);
        }
        for a in self.awaiting.values() {
            t = t.min(a.deadline);
        }
        if let Some(d) = self.shell.core().next_activation_due() {
            t = t.min(Instant::from_std(d));
        }
        t
    }

    async fn on_msg(&mut self, m: KmMsg) {
        match m {
            KmMsg::Core(KmCmd::MissedKey { msk }) => {
                let group = msk.key_group();
                if services_of(&self.cfg, group).all(|s| !self.is_active(&s.id)) {
                    return;
                }
                if self.pending.contains_key(&group) || self.awaiting.contains_key(&group) {
                    return;
                }
                let cooldown = Duration::from_millis(self.cfg.msk_delivery_timeout_ms);
                if self
                    .recently_missed
                    .get(&msk)
                    .is_some_and(|t| t.elapsed() < cooldown)
                {
                    return;
                }
                self.recently_missed.insert(msk, Instant::now());
                self.shell.core().counters.missed_key_updates += 1;
                info!(%msk, "missed key update scheduled");
                self.shell.event(UeEvent::MissedKeyUpdate {
                    msk: msk.to_string(),
                });
                let delay = jitter(self.cfg.missed_key_backoff_ms);
                self.schedule(group, [msk], RequestReason::MissedKeyUpdate, delay, 0);
                let arrivals = self.shell.core().arrivals(group);
                if let Some(p) = self.pending.get_mut(&group) {
                    p.missed.insert(msk, arrivals);
                }
            }
            KmMsg::Core(KmCmd::ActivationNeeded { msk }) => {
                // The loop's next deadline now includes its activation
                // timeout (Core::next_activation_due).
                info!(%msk, "traffic needs an inactive MSK: awaiting its activation");
            }
            KmMsg::Core(KmCmd::SolicitedPull { group }) => {
                if services_of(&self.cfg, group).all(|s| !self.is_active(&s.id)) {
                    return;
                }
                let delay = jitter(self.cfg.solicited_pull_backoff_ms);
                self.awaiting.remove(&group);
                self.schedule(
                    group,
                    [current(group)],
                    RequestReason::SolicitedPull,
                    delay,
                    0,
                );
            }
            KmMsg::Manual { service } => {
                let Some(s) = self.cfg.service_list.iter().find(|s| s.id == service) else {
                    return;
                };
                for g in s.key_group_names() {
                    self.awaiting.remove(&g);
                    self.schedule(g, [current(g)], RequestReason::Manual, Duration::ZERO, 0);
                }
            }
            KmMsg::Rebootstrap { reply } => {
                let r = self.rebootstrap().await;
                let _ = reply.send(r);
            }
            KmMsg::Shutdown { .. } => {}
        }
    }

    async fn rebootstrap(&mut self) -> Result<(), UeError> {
        self.bootstrap().await?;
        let cfg = self.cfg.clone();
        let active: Vec<Service> = cfg
            .service_list
            .iter()
            .filter(|s| s.protected() && self.is_active(&s.id))
            .cloned()
            .collect();
        for svcs in Self::by_server(active.iter()) {
            self.register(&svcs).await?;
        }
        self.save_regs();
        Ok(())
    }

    fn schedule(
        &mut self,
        group: KeyGroupName,
        keys: impl IntoIterator<Item = MskName>,
        reason: RequestReason,
        delay: Duration,
        attempts: u32,
    ) {
        let due = Instant::now() + delay;
        let p = self.pending.entry(group).or_insert(Pending {
            due,
            keys: BTreeSet::new(),
            reason,
            attempts,
            missed: BTreeMap::new(),
        });
        p.keys.extend(keys);
        p.due = p.due.min(due);
        if matches!(reason, RequestReason::SolicitedPull | RequestReason::Manual) {
            p.reason = reason;
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if self.rebootstrap_at.is_some_and(|t| t <= now) {
            info!("the B-TID expires soon: bootstrapping again");
            self.rebootstrap_at = None;
            if let Err(e) = self.rebootstrap().await {
                self.error(format!("re-bootstrapping failed: {e}"));
                self.rebootstrap_at = Some(Instant::now() + Duration::from_secs(30));
            }
        }
        // Initiation of key management.
        let due: Vec<_> = {
            let (due, keep) = std::mem::take(&mut self.initial)
                .into_iter()
                .partition(|(t, _, _)| *t <= now);
            self.initial = keep;
            due
        };
        for (_, service, mark) in due {
            if !self.is_active(&service) {
                continue;
            }
            let groups = self
                .cfg
                .service_list
                .iter()
                .find(|s| s.id == service)
                .map(Service::key_group_names)
                .unwrap_or_default();
            for g in groups {
                // Seed 002 6.3.2.2.1: a pushed MSK that is not (known to be)
                // the current one does not serve the initial request.
                let served = self.shell.core().holds_current_since(g, mark);
                if !served && !self.awaiting.contains_key(&g) {
                    info!(key_group = %g, "the current MSK is not known to be held since registration: requesting it");
                    self.schedule(g, [current(g)], RequestReason::Initial, Duration::ZERO, 0);
                }
            }
        }
        // Activations that did not come (seed 004 6.3.2.3.3).
        let steps = self.shell.core().poll_activations();
        for step in steps {
            self.on_activation_step(step).await;
        }
        // Deliveries that did not come.
        let expired: Vec<KeyGroupName> = self
            .awaiting
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(g, _)| *g)
            .collect();
        for g in expired {
            let Some(a) = self.awaiting.remove(&g) else {
                continue;
            };
            if self.shell.core().arrivals(g) > a.snapshot {
                continue;
            }
            self.retry_or_give_up(
                g,
                a.keys,
                a.reason,
                a.attempts + 1,
                "no MSK message arrived after the MSK request".into(),
            )
            .await;
        }
        // Requests due.
        let due: Vec<KeyGroupName> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(g, _)| *g)
            .collect();
        for g in due {
            if let Some(p) = self.pending.remove(&g) {
                self.execute(g, p).await;
            }
        }
    }

    async fn execute(&mut self, group: KeyGroupName, p: Pending) {
        let cfg = self.cfg.clone();
        let Some(svc) = services_of(&cfg, group).find(|s| self.is_active(&s.id)) else {
            return;
        };
        // A missed key update whose MSK arrived meanwhile (pushed during the
        // back-off) is not sent: that is what the back-off is for.
        let keys: Vec<MskName> = {
            let core = self.shell.core();
            let held = &core.mgvf.state().msks;
            let arrived = core.arrivals(group);
            p.keys
                .iter()
                .copied()
                .filter(|k| {
                    !p.missed.get(k).is_some_and(|at| {
                        arrived > *at && held.get(k).is_some_and(|m| !m.is_inactive())
                    })
                })
                .collect()
        };
        if keys.is_empty() {
            info!(key_group = %group, "the missed MSK arrived during the back-off: no request");
            return;
        }
        let snapshot = self.shell.core().arrivals(group);
        let r = self.msk_request(svc, &keys).await;
        match r {
            Ok(statuses) => {
                let codes: Vec<u16> = statuses.iter().map(|s| s.status).collect();
                info!(key_group = %group, keys = ?keys.iter().map(ToString::to_string).collect::<Vec<_>>(), statuses = ?codes, reason = ?p.reason, "MSK request answered");
                self.shell.event(UeEvent::MskRequested {
                    keys: keys.iter().map(ToString::to_string).collect(),
                    reason: p.reason,
                    statuses: codes.clone(),
                });
                let ok: BTreeSet<MskName> = keys
                    .iter()
                    .zip(&codes)
                    .filter(|(_, c)| **c == 200)
                    .map(|(k, _)| *k)
                    .collect();
                let failed_specific: Vec<MskName> = keys
                    .iter()
                    .zip(&codes)
                    .filter(|(k, c)| **c != 200 && !k.msk_id.is_current_request())
                    .map(|(k, _)| *k)
                    .collect();
                if !ok.is_empty() {
                    self.awaiting.insert(
                        group,
                        Awaiting {
                            deadline: Instant::now()
                                + Duration::from_millis(self.cfg.msk_delivery_timeout_ms),
                            snapshot,
                            keys: ok,
                            reason: p.reason,
                            attempts: p.attempts,
                        },
                    );
                } else if !failed_specific.is_empty() && !keys.contains(&current(group)) {
                    // The BM-SC does not serve the MSK the traffic named:
                    // ask for the current one (seed 000 6.3.2.2.3).
                    self.schedule(
                        group,
                        [current(group)],
                        RequestReason::Retry,
                        Duration::ZERO,
                        p.attempts,
                    );
                } else if codes.iter().any(|c| matches!(c, 480 | 500)) {
                    self.retry_or_give_up(
                        group,
                        p.keys,
                        p.reason,
                        p.attempts + 1,
                        format!("the BM-SC answered {codes:?}"),
                    )
                    .await;
                } else {
                    self.give_up(
                        group,
                        format!("the BM-SC refused the MSK request ({codes:?})"),
                    )
                    .await;
                }
            }
            Err(e) => {
                self.error(format!("MSK request for {group} failed: {e}"));
                self.retry_or_give_up(group, p.keys, p.reason, p.attempts + 1, e.to_string())
                    .await;
            }
        }
    }

    /// One MSK request (bootstrapping again once on 401).
    async fn msk_request(
        &mut self,
        svc: &Service,
        keys: &[MskName],
    ) -> Result<Vec<crate::xml::KeyStatus>, UeError> {
        self.shell.core().counters.msk_requests += 1;
        let mut retried = false;
        loop {
            let r = {
                let _slot = self.http_slot().await;
                match self.client(svc) {
                    Ok(c) => c.msk_request(keys).await.map_err(UeError::from),
                    Err(e) => Err(e),
                }
            };
            match r {
                Err(UeError::Ua(UaError::Unauthorized { .. })) if !retried => {
                    retried = true;
                    self.rebootstrap().await?;
                }
                other => return other,
            }
        }
    }

    /// Carries out what [`crate::core::Core::poll_activations`] decided.
    async fn on_activation_step(&mut self, step: ActivationStep) {
        match step {
            ActivationStep::Request { msk, attempt } => {
                let group = msk.key_group();
                let cfg = self.cfg.clone();
                let Some(svc) = services_of(&cfg, group).find(|s| self.is_active(&s.id)) else {
                    return;
                };
                info!(%msk, attempt, "no activation of the inactive MSK: requesting it again");
                match self.msk_request(svc, &[msk]).await {
                    Ok(statuses) => {
                        let codes: Vec<u16> = statuses.iter().map(|s| s.status).collect();
                        self.shell.event(UeEvent::MskRequested {
                            keys: vec![msk.to_string()],
                            reason: RequestReason::Activation,
                            statuses: codes.clone(),
                        });
                        if codes != [200] {
                            self.error(format!(
                                "request for the activation of MSK {msk}: the BM-SC answered {codes:?}"
                            ));
                        }
                    }
                    Err(e) => self.error(format!(
                        "request for the activation of MSK {msk} failed: {e}"
                    )),
                }
                // Core::poll_activations decides again after the timeout.
            }
            ActivationStep::GiveUp {
                msk,
                requests,
                keep_older,
            } => {
                let group = msk.key_group();
                if services_of(&self.cfg, group).all(|s| !self.is_active(&s.id)) {
                    return;
                }
                let why =
                    format!("MSK {msk} stayed inactive: no activation after {requests} requests");
                self.shell.event(UeEvent::ActivationFailed {
                    msk: msk.to_string(),
                    requests,
                    kept_older: keep_older,
                });
                if keep_older {
                    self.error(format!(
                        "key group {group}: {why}; keeping the still-valid older MSK"
                    ));
                } else {
                    self.leave(group, why).await;
                }
            }
        }
    }

    async fn retry_or_give_up(
        &mut self,
        group: KeyGroupName,
        keys: BTreeSet<MskName>,
        reason: RequestReason,
        attempts: u32,
        why: String,
    ) {
        if attempts < self.cfg.msk_request_attempts {
            let base = 500u64.saturating_mul(1 << attempts.min(6));
            let delay = Duration::from_millis(base) + jitter(base / 2);
            warn!(key_group = %group, attempts, %why, "MSK request will be retried");
            let _ = reason;
            self.schedule(group, keys, RequestReason::Retry, delay, attempts);
        } else {
            self.give_up(group, why).await;
        }
    }

    /// No usable MSK of `group` could be had: keep a still-valid older one,
    /// or leave the services (seeds 000/001).
    async fn give_up(&mut self, group: KeyGroupName, why: String) {
        self.pending.remove(&group);
        self.awaiting.remove(&group);
        if self.shell.core().usable_msk(group) {
            warn!(key_group = %group, %why, "no new MSK; keeping the still-valid older MSK");
            self.error(format!(
                "key group {group}: {why}; keeping the still-valid older MSK"
            ));
            return;
        }
        self.leave(group, why).await;
    }

    /// Leaves every service that uses `group` (seed 000 6.3.2.2.1: "the UE
    /// shall leave the MBMS user service"): marks them `left`, reports
    /// [`UeEvent::LeftService`], stops every procedure of the key groups no
    /// remaining service uses and deletes their MSKs and MTKs (as after a
    /// deregistration), then deregisters best effort.
    async fn leave(&mut self, group: KeyGroupName, why: String) {
        let cfg = self.cfg.clone();
        let leaving: Vec<Service> = services_of(&cfg, group)
            .filter(|s| self.is_active(&s.id))
            .cloned()
            .collect();
        let mut events = Vec::new();
        for s in &leaving {
            let reason = format!("no usable MSK for key group {group}: {why}");
            self.error(format!("leaving service {}: {reason}", s.id));
            self.set_reg(&s.id, "left", None, Some(reason.clone()));
            events.push(UeEvent::LeftService {
                service: s.id.clone(),
                reason,
            });
        }
        self.save_regs();
        for e in events {
            self.shell.event(e);
        }
        let still: BTreeSet<KeyGroupName> = groups_of(
            cfg.service_list
                .iter()
                .filter(|s| s.protected() && self.is_active(&s.id)),
        );
        for g in groups_of(leaving.iter()).into_iter().chain([group]) {
            if !still.contains(&g) {
                self.pending.remove(&g);
                self.awaiting.remove(&g);
                self.recently_missed.retain(|m, _| m.key_group() != g);
                self.shell.core().delete_group(g);
            }
        }
        // Tell the BM-SC (best effort), keeping the state "left".
        for svcs in Self::by_server(leaving.iter()) {
            let ids: Vec<&str> = svcs.iter().map(|s| s.id.as_str()).collect();
            let r = {
                let _slot = self.http_slot().await;
                match self.client(&svcs[0]) {
                    Ok(c) => c.deregister(&ids).await.map_err(UeError::from),
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = r {
                warn!(error = %e, "deregistration after leaving failed");
            }
        }
    }

    async fn shutdown(&mut self, deregister: bool) -> Result<(), UeError> {
        if !deregister {
            return Ok(());
        }
        let cfg = self.cfg.clone();
        let active: Vec<Service> = cfg
            .service_list
            .iter()
            .filter(|s| s.protected() && self.is_active(&s.id))
            .cloned()
            .collect();
        let mut first_err = None;
        for svcs in Self::by_server(active.iter()) {
            if let Err(e) = self.deregister(&svcs).await {
                self.error(format!("deregistration failed: {e}"));
                first_err.get_or_insert(e);
            }
        }
        // The UE deletes the MSKs of services it no longer uses (TS 33.246
        // 6.3.2.1B as DIGEST 5.2 reads it).
        let still: BTreeSet<KeyGroupName> = groups_of(
            cfg.service_list
                .iter()
                .filter(|s| s.protected() && self.is_active(&s.id)),
        );
        for g in groups_of(active.iter()) {
            if !still.contains(&g) {
                self.shell.core().delete_group(g);
            }
        }
        self.save_regs();
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
