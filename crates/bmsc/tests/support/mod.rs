//! Shared harness of the BM-SC integration tests: a real BSF and a real
//! BM-SC on loopback (ephemeral ports, a temporary SQLite file or a
//! PostgreSQL schema), and UEs built from the MBMS core: GBA bootstrapping
//! (`ue::BootstrapClient`), the Ua Digest client (`gba::digest`), and the
//! MGV-F (`mbms::mgvf`) behind a UDP socket that answers MSK messages with
//! acknowledgements (or drops them when told to).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use tokio::net::UdpSocket;

use bmsc::store::{SqliteStore, Store};
use bmsc::{BmscConfig, RunningBmsc};
use bsf::{
    Bsf, BsfConfig, GbaType, RunningBsf, SqliteStore as BsfStore, Store as _, Subscriber, ZnToken,
};
use gba::digest::{AuthenticationInfo, Challenge, DigestClient};
use gba::{Mrk, Opc, Sqn48, SubscriberKey, Usim};
use mbms::messages::{MskEnvelope, MskKeyData};
use mbms::mgvf::store::MemoryStore as MgvMemory;
use mbms::mgvf::{MgvError, MgvF, MskOutcome};
use mbms::{KeyDomainId, KeyGroupName, MskId, MskName, Muk, MukId};

pub const BMSC: &str = "bmsc.home1.net";
pub const BSF_FQDN: &str = "bsf.home1.net";
pub const ZN_TOKEN: &str = "zn-test-token";
pub const ADMIN: &str = "admin-test-token";
pub const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
pub const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
pub const NEWS: &str = "urn:mbms:service:news";
pub const PAY: &str = "urn:mbms:service:pay";
pub const CLOSED: &str = "urn:mbms:service:closed";

pub fn impi(n: usize) -> String {
    format!("user{n}_private@home1.net")
}

pub fn kd() -> KeyDomainId {
    "001-01".parse().unwrap()
}

pub fn group(g: u16) -> KeyGroupName {
    KeyGroupName {
        key_domain: kd(),
        key_group: g,
    }
}

pub fn msk(g: u16, n: u16) -> MskName {
    MskName {
        key_domain: kd(),
        msk_id: MskId::new(g, n),
    }
}

/// The BM-SC configuration of the tests: key group 1 (plain push with
/// acknowledgements, fast retransmission) for the open service "news",
/// key group 2 (charging: 4-way) for the open service "pay", and a closed
/// service on key group 1 that only user9 may use. `extra` is appended.
pub fn config_text(bsf_url: &str, db: &str, extra: &str) -> String {
    format!(
        r#"
fqdn = "{BMSC}"
listen = "127.0.0.1:0"
mikey_listen = "127.0.0.1:0"
db = "{db}"
key_domain = "001-01"
admin_token = "{ADMIN}"
counter_block = 4

[bsf]
url = "{bsf_url}"
zn_token = "{ZN_TOKEN}"

[retransmit]
initial_ms = 300
factor = 2
max_interval_ms = 1200
max_attempts = 5
jitter_permille = 0

[[key_group]]
id = 1
window_len = 100

[[key_group]]
id = 2
window_len = 100
charging = true

[[service]]
id = "{NEWS}"
key_groups = [1]
open = true

[[service]]
id = "{PAY}"
key_groups = [2]
open = true

[[service]]
id = "{CLOSED}"
key_groups = [1]
allowed = ["user9_private@home1.net"]
{extra}
"#
    )
}

/// Which database the BM-SC of a test uses.
#[derive(Clone, Debug)]
pub enum Db {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL and schema.
    Postgres(String, String),
}

impl Db {
    pub fn open(&self) -> Arc<dyn Store> {
        match self {
            Db::Sqlite(p) => Arc::new(SqliteStore::open(p).unwrap()),
            Db::Postgres(url, schema) => {
                Arc::new(bmsc::store::PgStore::open_in_schema(url, schema).unwrap())
            }
        }
    }

    pub fn label(&self) -> String {
        match self {
            Db::Sqlite(p) => p.display().to_string(),
            Db::Postgres(..) => "postgres".into(),
        }
    }
}

/// The PostgreSQL test URL, or `None` after printing the skip message.
pub fn postgres_url() -> Option<String> {
    match std::env::var("MBMS_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            mbms_test_support::skip("PostgreSQL: MBMS_TEST_POSTGRES_URL not set");
            None
        }
    }
}

/// A BSF, a BM-SC and a temporary directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub bsf: RunningBsf,
    pub bmsc: Option<RunningBmsc>,
    pub db: Db,
    pub extra: String,
    /// Text replacements applied to the configuration of [`config_text`]
    /// (e.g. other retransmission timers).
    pub replace: Vec<(String, String)>,
    pub http: reqwest::Client,
}

impl Env {
    pub async fn new(extra: &str) -> Env {
        Self::new_replacing(extra, &[]).await
    }

    /// Like [`new`](Self::new), with `(from, to)` replacements in the
    /// configuration text (each `from` must occur).
    pub async fn new_replacing(extra: &str, replace: &[(&str, &str)]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::Sqlite(dir.path().join("bmsc.db"));
        let replace = replace
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        Self::with_db(dir, db, extra, replace).await
    }

    pub async fn postgres(name: &str, extra: &str) -> Option<Env> {
        let url = postgres_url()?;
        let schema = format!("bmsc_it_{}_{name}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        Some(Self::with_db(dir, Db::Postgres(url, schema), extra, vec![]).await)
    }

    async fn with_db(
        dir: tempfile::TempDir,
        db: Db,
        extra: &str,
        replace: Vec<(String, String)>,
    ) -> Env {
        let bsf_store = BsfStore::open(&dir.path().join("bsf.db")).unwrap();
        let subs: Vec<Subscriber> = (1..=9)
            .map(|n| Subscriber {
                impi: impi(n),
                k: SubscriberKey::from_hex(K).unwrap(),
                opc: Opc::from_hex(OPC).unwrap(),
                sqn: Sqn48::ZERO,
                amf: [0x80, 0x00],
                gba_type: GbaType::GbaMe,
            })
            .collect();
        bsf_store.provision_subscribers(&subs).unwrap();
        let bsf = Bsf::new(
            BsfConfig::new(BSF_FQDN, ZnToken::new(ZN_TOKEN)).settings(),
            Arc::new(bsf_store),
        )
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
        let mut env = Env {
            dir,
            bsf,
            bmsc: None,
            db,
            extra: extra.to_owned(),
            replace,
            http: reqwest::Client::new(),
        };
        env.start().await;
        env
    }

    pub fn config(&self) -> BmscConfig {
        let extra = self
            .extra
            .replace("{DIR}", &self.dir.path().display().to_string());
        let mut text = config_text(&self.bsf.url(), &self.db.label(), &extra);
        for (from, to) in &self.replace {
            assert!(
                text.contains(from.as_str()),
                "{from:?} not in the configuration"
            );
            text = text.replace(from.as_str(), to);
        }
        BmscConfig::parse(&text).unwrap()
    }

    pub async fn start(&mut self) {
        assert!(self.bmsc.is_none());
        let cfg = self.config();
        let db = self.db.clone();
        let store = tokio::task::spawn_blocking(move || db.open())
            .await
            .unwrap();
        self.bmsc = Some(bmsc::start(&cfg, store).await.unwrap());
    }

    /// A crash: every task of the BM-SC stops at once.
    pub fn kill(&mut self) {
        self.bmsc.take().unwrap().kill();
    }

    pub fn bmsc(&self) -> &RunningBmsc {
        self.bmsc.as_ref().unwrap()
    }

    pub fn url(&self) -> String {
        self.bmsc().url()
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub async fn ue(&self, n: usize) -> TestUe {
        TestUe::bootstrap(&self.bsf.url(), &impi(n), self.url()).await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn admin_post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url()))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The delivery states of a UE: (key group, role) -> (state, charged).
    pub async fn deliveries(&self, impi: &str) -> Vec<(u16, String, String, bool)> {
        let (s, v) = self
            .admin_get(&format!("/admin/v1/registrations/{impi}/deliveries"))
            .await;
        if s != 200 {
            return vec![];
        }
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["key_group"].as_u64().unwrap() as u16,
                    d["role"].as_str().unwrap().to_owned(),
                    d["state"].as_str().unwrap().to_owned(),
                    d["charged"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    /// Waits until every delivery of the UE is acknowledged.
    pub async fn wait_acknowledged(&self, ue: &mut TestUe) {
        let impi = ue.impi.clone();
        let impi = impi.as_str();
        for _ in 0..100 {
            ue.pump(Duration::from_millis(50)).await;
            let d = self.deliveries(impi).await;
            if !d.is_empty() && d.iter().all(|x| x.2 == "acknowledged") {
                return;
            }
        }
        panic!(
            "deliveries of {impi} never all acknowledged: {:?}",
            self.deliveries(impi).await
        );
    }

    /// A metric's value (sum over label sets whose text contains `filter`).
    pub fn metric(&self, name: &str, filter: &str) -> f64 {
        self.bmsc()
            .metrics()
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn key_group(&self, g: u16) -> (String, String) {
        let (_, v) = self.admin_get("/admin/v1/key-groups").await;
        msk_ids_of(&v, g)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(b) = self.bmsc.take() {
            b.kill();
        }
        // A PostgreSQL schema of the test is dropped (from a plain thread:
        // the synchronous client must not run inside the async runtime).
        if let Db::Postgres(url, schema) = self.db.clone() {
            let _ = std::thread::spawn(move || {
                if let Ok(mut c) = postgres::Client::connect(&url, postgres::NoTls) {
                    let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
                }
            })
            .join();
        }
    }
}

/// Monotonic time for the MGV-F (it limits re-acknowledgements of
/// identical resends), from the first call.
pub fn mono_now() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// A UE: GBA keys, a Digest client for Ua, the MGV-F on a UDP socket.
pub struct TestUe {
    pub impi: String,
    pub btid: String,
    pub mrk: Mrk,
    /// The MUK (to read MSK messages beside the MGV-F).
    pub muk: Muk,
    pub mgvf: MgvF<MgvMemory>,
    pub sock: UdpSocket,
    pub base: String,
    pub http: reqwest::Client,
    pub digest: Option<DigestClient>,
    pub prefer_sha256: bool,
    /// Acknowledgements still to drop (the harness "loses" them).
    pub drop_acks: usize,
    /// Every acknowledgement sent, with where it went.
    pub acks_sent: Vec<(Vec<u8>, SocketAddr)>,
    /// Counters of every MSK message the MGV-F accepted.
    pub counters: Vec<u32>,
    /// MGV-F refusals.
    pub errors: Vec<String>,
    /// Solicited pulls received.
    pub pulls: Vec<KeyGroupName>,
    /// Every MSK message received (also those dropped before the MGV-F),
    /// read with the MUK: counter, MSK, key data.
    pub received: Vec<(u32, MskName, Option<MskKeyData>)>,
    /// 401 answers received.
    pub challenges: usize,
}

impl TestUe {
    pub async fn bootstrap(bsf_url: &str, impi: &str, base: String) -> TestUe {
        let mut usim = Usim::new(
            SubscriberKey::from_hex(K).unwrap(),
            Opc::from_hex(OPC).unwrap(),
            Sqn48::ZERO,
        );
        let b = ue::BootstrapClient::new(bsf_url)
            .unwrap()
            .bootstrap(impi, &mut usim)
            .await
            .unwrap();
        let (_, keys) = b.mbms_keys(BMSC).unwrap();
        let mut mgvf = MgvF::new(MgvMemory::new());
        mgvf.add_muk(MukId::new(BMSC, b.btid.as_str()), keys.muk.clone())
            .unwrap();
        TestUe {
            impi: impi.to_owned(),
            btid: b.btid.as_str().to_owned(),
            mrk: keys.mrk.clone(),
            muk: keys.muk.clone(),
            mgvf,
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            base,
            http: reqwest::Client::new(),
            digest: None,
            prefer_sha256: false,
            drop_acks: 0,
            acks_sent: Vec::new(),
            counters: Vec::new(),
            errors: Vec::new(),
            pulls: Vec::new(),
            received: Vec::new(),
            challenges: 0,
        }
    }

    pub fn mikey_port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    pub fn password(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.mrk.as_bytes())
    }

    fn pick(&self, resp: &reqwest::Response) -> Challenge {
        let chs: Vec<Challenge> = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .map(|v| Challenge::parse(v.to_str().unwrap()).unwrap())
            .collect();
        assert!(!chs.is_empty(), "401 without a challenge");
        let want = if self.prefer_sha256 { "SHA-256" } else { "MD5" };
        chs.iter()
            .find(|c| c.algorithm.map(|a| a.as_str()) == Some(want))
            .cloned()
            .unwrap_or_else(|| chs[0].clone())
    }

    /// POSTs a Ua request with Digest (answering challenges, at most two),
    /// checks Authentication-Info, returns (status, body).
    pub async fn post(
        &mut self,
        requesttype: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, String) {
        let path = format!(
            "/keymanagement?requesttype={requesttype}&mikey-port={}",
            self.mikey_port()
        );
        for _ in 0..3 {
            let mut req = self
                .http
                .post(format!("{}{path}", self.base))
                .header(CONTENT_TYPE, content_type)
                .header("user-agent", "bmsc-test 3gpp-gba")
                .body(body.to_owned());
            if let Some(d) = &mut self.digest {
                let cnonce = hex::encode(rand_bytes());
                let a = d
                    .authorize("POST", &path, body.as_bytes(), &cnonce)
                    .unwrap();
                req = req.header(AUTHORIZATION, a.to_header_value().unwrap());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            if status == 401 {
                self.challenges += 1;
                let ch = self.pick(&resp);
                let mut d = DigestClient::new(self.btid.clone(), self.password().as_bytes());
                d.handle_challenge(ch).unwrap();
                self.digest = Some(d);
                continue;
            }
            let info = resp
                .headers()
                .get("authentication-info")
                .map(|v| v.to_str().unwrap().to_owned());
            let text = resp.text().await.unwrap();
            if status == 200 {
                let info = AuthenticationInfo::parse(&info.expect("Authentication-Info")).unwrap();
                self.digest
                    .as_mut()
                    .unwrap()
                    .verify_authentication_info(&info, text.as_bytes())
                    .expect("rspauth verifies");
            }
            return (status, text);
        }
        panic!("still challenged after two answers");
    }

    pub async fn register(&mut self, services: &[&str]) -> Vec<u16> {
        let (s, body) = self
            .post(
                "register",
                bmsc::xml::CT_REGISTER,
                &bmsc::xml::register_request(services),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        statuses(&body)
    }

    pub async fn deregister(&mut self, services: &[&str]) -> Vec<u16> {
        let (s, body) = self
            .post(
                "deregister",
                bmsc::xml::CT_DEREGISTER,
                &bmsc::xml::deregister_request(services),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        statuses(&body)
    }

    /// An MSK request, Base64-encoded as seed 002 G.2.3 says.
    pub async fn request_msks(&mut self, keys: &[MskName]) -> Vec<u16> {
        let xml = bmsc::xml::msk_request(keys);
        let b64 = base64::engine::general_purpose::STANDARD.encode(xml);
        let (s, body) = self.post("msk-request", bmsc::xml::CT_MSK, &b64).await;
        assert_eq!(s, 200, "{body}");
        statuses(&body)
    }

    /// Receives MIKEY messages for `dur`, hands them to the MGV-F, sends the
    /// acknowledgements back to the sender (unless dropping). Returns the
    /// number of datagrams received.
    pub async fn pump(&mut self, dur: Duration) -> usize {
        self.pump_dropping(dur, |_| false).await
    }

    /// Like [`pump`](Self::pump), but the MSK messages whose key data
    /// (read with the MUK) `lose` selects are lost on the way: the MGV-F
    /// never sees them. They are still listed in `received`.
    pub async fn pump_dropping(
        &mut self,
        dur: Duration,
        lose: impl Fn(Option<&MskKeyData>) -> bool,
    ) -> usize {
        let deadline = tokio::time::Instant::now() + dur;
        let mut n = 0;
        let mut buf = vec![0u8; 4096];
        loop {
            let r = tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf)).await;
            let Ok(Ok((len, from))) = r else { return n };
            n += 1;
            if let Ok(env) = MskEnvelope::parse(&buf[..len]) {
                let key = env.open(&self.muk).ok().and_then(|o| o.key);
                let lost = lose(key.as_ref());
                self.received.push((env.counter, env.msk, key));
                if lost {
                    continue;
                }
            }
            match self.mgvf.process_msk_message(&buf[..len], mono_now()) {
                Ok(out) => {
                    if let Ok(env) = mbms::messages::MskEnvelope::parse(&buf[..len]) {
                        self.counters.push(env.counter);
                    }
                    let ack = match out {
                        MskOutcome::Stored { ack, .. }
                        | MskOutcome::Superseded { ack, .. }
                        | MskOutcome::Duplicate { ack } => ack,
                        MskOutcome::DuplicateSuppressed { .. } => None,
                        MskOutcome::SolicitedPull { key_group } => {
                            self.pulls.push(key_group);
                            None
                        }
                    };
                    if let Some(ack) = ack {
                        if self.drop_acks > 0 {
                            self.drop_acks -= 1;
                        } else {
                            self.sock.send_to(&ack, from).await.unwrap();
                            self.acks_sent.push((ack, from));
                        }
                    }
                }
                Err(e) => self.errors.push(error_kind(&e)),
            }
        }
    }

    /// Pumps until the MGV-F holds exactly `names` for key group `g`.
    pub async fn wait_msks(&mut self, g: u16, names: &[MskName]) {
        let want: BTreeSet<MskName> = names.iter().copied().collect();
        for _ in 0..100 {
            if self.msk_names(g) == want {
                return;
            }
            self.pump(Duration::from_millis(50)).await;
        }
        panic!(
            "{}: MSKs {:?}, want {:?}; errors {:?}",
            self.impi,
            self.msk_names(g),
            want,
            self.errors
        );
    }

    pub fn msk_names(&self, g: u16) -> BTreeSet<MskName> {
        self.mgvf.msks_of(group(g)).iter().map(|m| m.name).collect()
    }
}

pub fn error_kind(e: &MgvError) -> String {
    match e {
        MgvError::Replay { .. } => "replay".into(),
        other => other.to_string(),
    }
}

pub fn statuses(body: &str) -> Vec<u16> {
    bmsc::xml::response_statuses(body)
        .unwrap()
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

pub fn rand_bytes() -> [u8; 16] {
    use rand::RngCore as _;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// MSK name from the admin API's hex MSK ID.
/// The current and next MSK IDs (hex) of key group `g` in a
/// `GET /admin/v1/key-groups` answer.
pub fn msk_ids_of(v: &serde_json::Value, g: u16) -> (String, String) {
    let k = v
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_group"] == g)
        .unwrap();
    (
        k["current"]["msk_id"].as_str().unwrap().to_owned(),
        k["next"]["msk_id"].as_str().unwrap().to_owned(),
    )
}

pub fn msk_of(hex_id: &str) -> MskName {
    MskName {
        key_domain: kd(),
        msk_id: hex_id.parse().unwrap(),
    }
}

/// A free UDP port on loopback (bound then released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// One group commit as the BM-SC's committer (`bmsc::committer`, a private module) makes
/// it, in its three steps: [`Core::begin_commit`], [`Store::commit`] of the
/// batch (the core need not be held), [`Core::end_commit`]; repeated until
/// nothing is queued, as the committer does. Nothing queued: no commit.
pub fn group_commit(core: &mut bmsc::core::Core) -> Result<(), bmsc::core::CoreError> {
    loop {
        let commit = core.begin_commit();
        if commit.is_empty() {
            return Ok(());
        }
        let r = core.store().commit(&commit.batch);
        core.end_commit(commit, r)?;
    }
}
