//! Harness of the UE integration tests: the real BSF and the real BM-SC on
//! loopback (ephemeral ports, temporary SQLite files), a UE built from the
//! library, an RTP source feeding the BM-SC's streaming session, and a UDP
//! relay in front of the UE's MIKEY listener (the UE advertises the relay's
//! port) that records MIKEY messages and can "go offline".
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::broadcast;

use bsf::{
    Bsf, BsfConfig, GbaType, RunningBsf, SqliteStore as BsfStore, Store as _, Subscriber, ZnToken,
};
use gba::{Opc, Sqn48, SubscriberKey};
use ue::{RunningUe, UeConfig, UeEvent};

pub const BMSC: &str = "bmsc.home1.net";
pub const BSF_FQDN: &str = "bsf.home1.net";
pub const ZN_TOKEN: &str = "zn-test-token";
pub const ADMIN: &str = "admin-test-token";
pub const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
pub const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
pub const IMPI: &str = "user1_private@home1.net";
/// A GBA_U subscriber.
pub const IMPI_U: &str = "user2_private@home1.net";
pub const NEWS: &str = "urn:mbms:service:news";
pub const PAY: &str = "urn:mbms:service:pay";
/// NEWS with key groups 1 and 7 (the BM-SC has no key group 7).
pub const GROUP7: &str = "news+7";

/// A free UDP port on loopback (bound and released; the tests bind it again
/// right away).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Ports of the streaming session.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// UE: MTK messages.
    pub mtk: u16,
    /// BM-SC: plain RTP in.
    pub rtp_in: u16,
    /// UE: SRTP in.
    pub srtp: u16,
    /// UE: plain RTP out (the test listens here).
    pub rtp_out: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            mtk: free_udp_port(),
            rtp_in: free_udp_port(),
            srtp: free_udp_port(),
            rtp_out: free_udp_port(),
        }
    }
}

/// A BSF, a BM-SC and a temporary directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub bsf: RunningBsf,
    pub bmsc: bmsc::RunningBmsc,
    pub ports: Ports,
    pub http: reqwest::Client,
    /// (confidentiality, integrity) of the NEWS sessions, if not the
    /// default (both, with the default suites).
    pub protection: Option<(bool, bool)>,
}

fn bmsc_config(env_dir: &Path, bsf_url: &str, p: Ports, prot: Option<(bool, bool)>) -> String {
    let d = env_dir.display();
    // With a protection choice: one MTK for the whole test, so that no MTK
    // change races the packets (MTK changes have their own test).
    let mtk_interval = if prot.is_some() { 3600 } else { 1 };
    let (video_extra, files_extra) = match prot {
        None => (String::new(), String::new()),
        Some((c, i)) => (
            format!(
                "srtp_encryption = \"{}\"\nsrtp_auth = \"{}\"\n",
                if c { "aes-cm-128" } else { "null" },
                if i { "hmac-sha1-80" } else { "null" }
            ),
            format!(
                "download_encryption = \"{}\"\ndownload_auth = \"{}\"\n",
                if c { "aes-128-cbc" } else { "null" },
                if i { "hmac-sha1-80" } else { "null" }
            ),
        ),
    };
    format!(
        r#"
fqdn = "{BMSC}"
listen = "127.0.0.1:0"
mikey_listen = "127.0.0.1:0"
db = "{d}/bmsc.db"
key_domain = "001-01"
admin_token = "{ADMIN}"
counter_block = 4

[bsf]
url = "{bsf_url}"
zn_token = "{ZN_TOKEN}"

[retransmit]
initial_ms = 150
factor = 2
max_interval_ms = 300
max_attempts = 3
jitter_permille = 0

[[key_group]]
id = 1
window_len = 100

[[key_group]]
id = 2
window_len = 100
charging = true

[[key_group]]
id = 3
window_len = 100

[[service]]
id = "{NEWS}"
key_groups = [1, 3]
open = true

[[service]]
id = "{PAY}"
key_groups = [2]
open = true

[[session]]
name = "video"
kind = "streaming"
key_group = 1
mtk_destinations = ["127.0.0.1:{mtk}"]
mtk_interval = {mtk_interval}
mtk_repeat = 1
rtp_listen = "127.0.0.1:{rtp_in}"
srtp_destinations = ["127.0.0.1:{srtp}"]
switch_delay_ms = 150
{video_extra}
[[session]]
name = "files"
kind = "download"
key_group = 3
watch_dir = "{d}/bmsc-watch"
out_dir = "{d}/bmsc-out"
scan_interval = 1
{files_extra}"#,
        mtk = p.mtk,
        rtp_in = p.rtp_in,
        srtp = p.srtp,
    )
}

impl Env {
    pub async fn new() -> Env {
        Self::with_lifetime(3600).await
    }

    /// With the BSF's key lifetime (B-TID lifetime) in seconds.
    pub async fn with_lifetime(lifetime: u64) -> Env {
        Self::build(lifetime, None).await
    }

    /// The BM-SC's NEWS sessions (streaming and download) with this
    /// confidentiality and integrity (NULL cipher / NULL authentication
    /// where off), and the UE's NEWS service announcing the same (with key
    /// management on even when both are off).
    pub async fn with_protection(confidentiality: bool, integrity: bool) -> Env {
        Self::build(3600, Some((confidentiality, integrity))).await
    }

    async fn build(lifetime: u64, protection: Option<(bool, bool)>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let bsf_store = BsfStore::open(&dir.path().join("bsf.db")).unwrap();
        let sub = |impi: &str, gba_type| Subscriber {
            impi: impi.into(),
            k: SubscriberKey::from_hex(K).unwrap(),
            opc: Opc::from_hex(OPC).unwrap(),
            sqn: Sqn48::ZERO,
            amf: [0x80, 0x00],
            gba_type,
        };
        bsf_store
            .provision_subscribers(&[sub(IMPI, GbaType::GbaMe), sub(IMPI_U, GbaType::GbaU)])
            .unwrap();
        let mut bsf_cfg = BsfConfig::new(BSF_FQDN, ZnToken::new(ZN_TOKEN));
        bsf_cfg.session_lifetime = lifetime;
        let bsf = Bsf::new(bsf_cfg.settings(), Arc::new(bsf_store))
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let ports = Ports::new();
        let cfg = bmsc::BmscConfig::parse(&bmsc_config(dir.path(), &bsf.url(), ports, protection))
            .unwrap();
        let db = dir.path().join("bmsc.db");
        let store = tokio::task::spawn_blocking(move || {
            Arc::new(bmsc::store::SqliteStore::open(&db).unwrap()) as Arc<dyn bmsc::store::Store>
        })
        .await
        .unwrap();
        let bmsc = bmsc::start(&cfg, store).await.unwrap();
        Env {
            dir,
            bsf,
            bmsc,
            ports,
            http: reqwest::Client::new(),
            protection,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.bmsc.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The (current, next) MSK IDs (hex) of a key group of the BM-SC.
    pub async fn msks_of_group(&self, group: u16) -> (String, String) {
        let v = self.admin_get("/admin/v1/key-groups").await;
        let prefix = format!("{group:04X}");
        let g = v
            .as_array()
            .unwrap()
            .iter()
            .find(|g| {
                g["current"]["msk_id"]
                    .as_str()
                    .is_some_and(|m| m.to_uppercase().starts_with(&prefix))
            })
            .unwrap_or_else(|| panic!("key group {group} in {v}"));
        (
            g["current"]["msk_id"].as_str().unwrap().to_uppercase(),
            g["next"]["msk_id"].as_str().unwrap().to_uppercase(),
        )
    }

    /// A counter of the BM-SC's `/metrics` (summed over its labels).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.bmsc.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn admin_post(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.bmsc.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The UE configuration (state in `<dir>/<name>`), services `services`
    /// (NEWS with the streaming and download sessions, PAY on the 4-way key
    /// group, GROUP7: NEWS with key groups 1 and 7, which the BM-SC does
    /// not have), MIKEY on an ephemeral port, behind `relay` if given.
    pub fn ue_config(&self, name: &str, services: &[&str], relay: Option<&Relay>) -> UeConfig {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let (listen, adv) = match relay {
            Some(r) => {
                let p = free_udp_port();
                r.forward_to(SocketAddr::from(([127, 0, 0, 1], p)));
                (p, format!("mikey_advertised_port = {}\n", r.addr.port()))
            }
            None => (0, String::new()),
        };
        let text = format!(
            r#"
state_dir = "{state}"
services = "{d}/services.toml"
mikey_listen = "127.0.0.1:{listen}"
{adv}initial_msk_wait_ms = 1500
msk_delivery_timeout_ms = 1500
missed_key_backoff_ms = 200
msk_request_attempts = 2
http_timeout_s = 5

[identity]
impi = "{IMPI}"
k = "{K}"
opc = "{OPC}"
bsf = "{bsf}"
bsf_fqdn = "{BSF_FQDN}"
"#,
            state = d.join("state").display(),
            d = d.display(),
            bsf = self.bsf.url(),
        );
        let mut cfg = UeConfig::parse(&text).unwrap();
        let uri = format!("{}/keymanagement", self.bmsc.url());
        let mut svc = String::new();
        for s in services {
            if *s == NEWS {
                let announce = match self.protection {
                    None => String::new(),
                    Some((c, i)) => {
                        format!("confidentiality = {c}\nintegrity = {i}\nkey_management = true\n")
                    }
                };
                svc.push_str(&format!(
                    r#"
[[service]]
id = "{NEWS}"
key_management_uri = "{uri}"
bmsc_fqdn = "{BMSC}"
key_domain = "001-01"
key_groups = [1, 3]
{announce}
[[service.session]]
name = "video"
kind = "streaming"
mtk_listen = "127.0.0.1:{mtk}"
srtp_listen = "127.0.0.1:{srtp}"
rtp_output = "127.0.0.1:{out}"
sdp = "{d}/video.sdp"

[[service.session]]
name = "files"
kind = "download"
key_group = 3
input_dir = "{d}/in"
output_dir = "{d}/out"
scan_interval_ms = 100
"#,
                    mtk = self.ports.mtk,
                    srtp = self.ports.srtp,
                    out = self.ports.rtp_out,
                    d = d.display(),
                ));
            } else {
                let (id, groups) = if *s == PAY {
                    (PAY, "[2]")
                } else {
                    (NEWS, "[1, 7]")
                };
                svc.push_str(&format!(
                    r#"
[[service]]
id = "{id}"
key_management_uri = "{uri}"
bmsc_fqdn = "{BMSC}"
key_domain = "001-01"
key_groups = {groups}
"#
                ));
            }
        }
        cfg.service_list = ue::config::parse_services(&svc).unwrap();
        cfg.validate().unwrap();
        cfg
    }
}

/// Decides whether the relay drops a datagram (true = drop).
pub type DropFilter = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// A UDP relay in front of the UE's MIKEY listener.
pub struct Relay {
    pub addr: SocketAddr,
    pub online: Arc<AtomicBool>,
    /// The datagrams forwarded.
    pub seen: Arc<Mutex<Vec<Vec<u8>>>>,
    drop_if: Arc<Mutex<Option<DropFilter>>>,
    /// Relay what the UE sends back (acknowledgements) to the BM-SC.
    acks_back: Arc<AtomicBool>,
    target: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn new() -> Relay {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let online = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let drop_if: Arc<Mutex<Option<DropFilter>>> = Arc::new(Mutex::new(None));
        let acks_back = Arc::new(AtomicBool::new(false));
        let (o, s, t, d, a) = (
            online.clone(),
            seen.clone(),
            target.clone(),
            drop_if.clone(),
            acks_back.clone(),
        );
        let task = tokio::spawn(async move {
            let out = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut buf = vec![0u8; 65535];
            let mut back = vec![0u8; 65535];
            let mut last_src: Option<SocketAddr> = None;
            loop {
                let n = tokio::select! {
                    r = sock.recv_from(&mut buf) => match r {
                        Ok((n, from)) => {
                            last_src = Some(from);
                            n
                        }
                        Err(_) => continue,
                    },
                    r = out.recv_from(&mut back) => {
                        if let (Ok((n, _)), Some(to)) = (r, last_src) {
                            if a.load(Ordering::SeqCst) && o.load(Ordering::SeqCst) {
                                let _ = sock.send_to(&back[..n], to).await;
                            }
                        }
                        continue;
                    }
                };
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                if d.lock().unwrap().as_mut().is_some_and(|f| f(&buf[..n])) {
                    continue;
                }
                s.lock().unwrap().push(buf[..n].to_vec());
                let to = *t.lock().unwrap();
                if let Some(to) = to {
                    let _ = out.send_to(&buf[..n], to).await;
                }
            }
        });
        Relay {
            addr,
            online,
            seen,
            drop_if,
            acks_back,
            target,
            task,
        }
    }

    /// Relays what the UE sends back (its acknowledgements go to the source
    /// of the MSK message, the relay) to the BM-SC.
    pub fn relay_acks(&self) {
        self.acks_back.store(true, Ordering::SeqCst);
    }

    /// Drops the datagrams for which `f` returns true (lost on the way).
    pub fn drop_if(&self, f: impl FnMut(&[u8]) -> bool + Send + 'static) {
        *self.drop_if.lock().unwrap() = Some(Box::new(f));
    }

    pub fn forward_to(&self, a: SocketAddr) {
        *self.target.lock().unwrap() = Some(a);
    }

    pub fn set_online(&self, on: bool) {
        self.online.store(on, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for an event matching `f` (panics after `secs`).
pub async fn wait_event(
    rx: &mut broadcast::Receiver<UeEvent>,
    secs: u64,
    what: &str,
    mut f: impl FnMut(&UeEvent) -> bool,
) -> UeEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if f(&e) => return e,
            Ok(Ok(e)) => seen.push(e),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("waiting for {what}: {e}"),
            Err(_) => panic!("timed out waiting for {what}; other events: {seen:#?}"),
        }
    }
}

/// Waits for two events matching `f` and `g`, in either order (panics
/// after `secs`): the BM-SC's MIKEY push that an `msk-request` causes may
/// reach the UE before the HTTP answer to the request does.
pub async fn wait_events_any_order(
    rx: &mut broadcast::Receiver<UeEvent>,
    secs: u64,
    what: &str,
    mut f: impl FnMut(&UeEvent) -> bool,
    mut g: impl FnMut(&UeEvent) -> bool,
) -> (UeEvent, UeEvent) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let (mut a, mut b) = (None, None);
    let mut seen = Vec::new();
    while a.is_none() || b.is_none() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if a.is_none() && f(&e) => a = Some(e),
            Ok(Ok(e)) if b.is_none() && g(&e) => b = Some(e),
            Ok(Ok(e)) => seen.push(e),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("waiting for {what}: {e}"),
            Err(_) => panic!(
                "timed out waiting for {what} (first found: {}, second found: {}); other events: {seen:#?}",
                a.is_some(),
                b.is_some()
            ),
        }
    }
    (a.unwrap(), b.unwrap())
}

/// Polls `f` every 50 ms until it holds (panics after `secs`).
pub async fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An RTP packet: version 2, PT 33, the given SSRC, SEQ and timestamp, and a
/// payload that names its sequence number.
pub fn rtp(ssrc: u32, seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 33];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for i in 0..len {
        p.push((seq as usize * 31 + i) as u8);
    }
    p
}

/// Starts a UE with an event subscription taken before registration.
pub async fn start_ue(cfg: UeConfig) -> (RunningUe, broadcast::Receiver<UeEvent>) {
    RunningUe::start_subscribed(cfg).await.unwrap()
}
