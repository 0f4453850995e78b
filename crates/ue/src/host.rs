//! Many UEs in one process sharing one host's sockets and HTTP connections
//! ([`UeHost`]): how `mbms demo --ues 10000` fits under a process's open
//! file limit.
//!
//! Every UE started with [`UeHost::start`] is a full [`RunningUe`] (its own
//! ME, MGV-F over its own durable MGV-S, its own key management task, state
//! folder and events), but the file descriptors are the host's:
//!
//! * **MIKEY**: one UDP socket per distinct `mikey_listen` address for all
//!   the UEs that name it. `PROFILE.md` section 3: the BM-SC sends MIKEY to
//!   the source IP of the Ua requests and the port the UE names with
//!   `mikey-port`, so UEs on one address share one port, and the host tells
//!   their MSK messages apart by IDr (the B-TID, which names the MUK: seed
//!   000 6.3.2.3.1), as a BM-SC's acknowledgements are matched by IDr too.
//!   Each UE's acknowledgements leave from that shared socket.
//! * Every shared socket is read in `recvmmsg` batches
//!   ([`mbms_service::udp::Receiver`]); a batch is copied once into memory
//!   its UEs share (each UE gets a slice of it), and the MIKEY
//!   demultiplexer reads IDr with the borrowed [`MskView`]. Datagrams
//!   longer than [`mbms_service::udp::MAX_DATAGRAM`] are dropped and
//!   counted ([`HostStats::truncated`]).
//! * **MTK messages and SRTP**: one UDP socket per distinct `mtk_listen` /
//!   `srtp_listen` address, every datagram handed to every UE whose session
//!   names it: one MBMS bearer received by many UEs (seed 004 6.4.2), as
//!   the point-to-multipoint delivery it stands for.
//! * **Plain RTP**: not forwarded to `rtp_output` (no socket per UE);
//!   [`RunningUe::plain_packets`] has every decrypted packet.
//! * **HTTP** (Ub and Ua): one `reqwest::Client` bound to the host's
//!   address, its connections kept alive and shared by every UE, with at
//!   most [`HostConfig::http_concurrency`] requests in flight at once (a
//!   UE's procedure waits for a slot), so the connections to the BSF and the
//!   BM-SC (and their server ends when the servers run in the same process)
//!   stay bounded whatever the number of UEs.
//!
//! A hosted UE's configuration names the shared addresses as a standalone
//! UE would name its own (`mikey_listen`, `mtk_listen`, `srtp_listen`); its
//! `http_local_address` is ignored (the host's client is used).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mbms::messages::MskView;
use mbms_service::udp::{Receiver, RecvBatch, BATCH};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::events::UeEvent;
use crate::runtime::{bind_udp, Inbox, RunningUe, UeError};
use crate::UeConfig;

/// Receive buffer asked for each shared socket, bytes (`SO_RCVBUF`): a
/// rotation pushes one MSK message per UE to the one shared MIKEY socket
/// at once (the BM-SC sends them in `sendmmsg` batches); with the default
/// 212 KB, about 270 of them fitted and a third of 1,000 UEs missed the
/// push (a 160-byte datagram takes about 1 KiB of buffer accounting). The
/// same as the BM-SC's `mikey_socket_buffer` default: room for about 64k.
pub const SHARED_SOCKET_BUFFER: usize = 64 << 20;

/// Binds a shared socket with a large receive buffer.
async fn bind_shared(addr: SocketAddr, what: &str) -> Result<UdpSocket, UeError> {
    let sock = bind_udp(addr, what).await?;
    // Best effort (the kernel caps it at `net.core.rmem_max` unless the
    // process may force it); what was granted is logged.
    let granted = mbms_service::udp::set_buffers(&sock, SHARED_SOCKET_BUFFER);
    debug!(%addr, ?granted, "shared socket receive buffer");
    Ok(sock)
}

/// A datagram handed to a hosted UE: a slice of the receive batch it came
/// in (shared by every UE it goes to), and its sender.
#[derive(Debug)]
pub(crate) struct Datagram {
    batch: Arc<Vec<u8>>,
    span: std::ops::Range<usize>,
    from: SocketAddr,
}

impl Datagram {
    /// The datagram's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.batch[self.span.clone()]
    }

    /// Its sender.
    pub(crate) fn from(&self) -> SocketAddr {
        self.from
    }
}

/// How a [`UeHost`] shares its resources.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The local address of the shared HTTP client (the BM-SC sends MIKEY
    /// to the source IP of the Ua requests: the address of the hosted UEs'
    /// shared MIKEY socket).
    pub address: IpAddr,
    /// Ub and Ua requests in flight at once over all hosted UEs (each holds
    /// one connection while in flight).
    pub http_concurrency: usize,
    /// The shared HTTP client's timeout per request.
    pub http_timeout: Duration,
}

/// Counters of a host's shared sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// MIKEY datagrams whose IDr names no hosted UE (or that are no MSK
    /// message): dropped.
    pub unknown_idr: u64,
    /// Datagrams handed to hosted UEs (one per UE for a fanned-out one).
    pub delivered: u64,
    /// Datagrams dropped because they were longer than a shared socket
    /// reads (`mbms_service::udp::MAX_DATAGRAM`, 2,048 bytes; MIKEY
    /// messages are about 160 bytes, SRTP packets fit an MTU).
    pub truncated: u64,
}

/// The counters the shared sockets' tasks add to.
#[derive(Clone, Default)]
struct Counters {
    unknown_idr: Arc<AtomicU64>,
    delivered: Arc<AtomicU64>,
    truncated: Arc<AtomicU64>,
}

/// One shared socket.
struct Shared {
    sock: Arc<UdpSocket>,
    /// The UEs that receive every datagram of it (MTK, SRTP).
    fanout: Arc<Mutex<Vec<mpsc::UnboundedSender<Datagram>>>>,
    task: JoinHandle<()>,
}

pub(crate) struct HostInner {
    pub(crate) http: reqwest::Client,
    pub(crate) http_slots: Arc<Semaphore>,
    /// MIKEY sockets by address, and their UEs by B-TID (IDr).
    mikey: Mutex<HashMap<SocketAddr, Shared>>,
    by_btid: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Datagram>>>>,
    /// MTK and SRTP sockets by address.
    fanout: Mutex<HashMap<SocketAddr, Shared>>,
    /// Held while a shared socket is bound: UEs starting together that name
    /// the same new address bind it once (the second bind of a racing pair
    /// failed with "address in use": one UE of 10,000 in a demo run).
    binding: tokio::sync::Mutex<()>,
    counters: Counters,
}

impl HostInner {
    /// A hosted UE's B-TID (IDr of its MSK messages) now routes to `to`.
    pub(crate) fn route(&self, btid: &str, to: &mpsc::UnboundedSender<Datagram>) {
        lock(&self.by_btid).insert(btid.to_owned(), to.clone());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Many [`RunningUe`]s sharing sockets and HTTP connections (module docs).
pub struct UeHost {
    inner: Arc<HostInner>,
}

impl std::fmt::Debug for UeHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UeHost")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl UeHost {
    /// A host with no UE yet (sockets are bound as UEs name them).
    pub fn new(cfg: &HostConfig) -> Result<UeHost, UeError> {
        let http = reqwest::Client::builder()
            .user_agent(crate::bootstrap::USER_AGENT_VALUE)
            .timeout(cfg.http_timeout)
            .local_address(cfg.address)
            .pool_max_idle_per_host(cfg.http_concurrency.max(1))
            .build()?;
        Ok(UeHost {
            inner: Arc::new(HostInner {
                http,
                http_slots: Arc::new(Semaphore::new(cfg.http_concurrency.max(1))),
                mikey: Mutex::new(HashMap::new()),
                by_btid: Arc::new(Mutex::new(HashMap::new())),
                fanout: Mutex::new(HashMap::new()),
                binding: tokio::sync::Mutex::new(()),
                counters: Counters::default(),
            }),
        })
    }

    /// Counters of the shared sockets.
    pub fn stats(&self) -> HostStats {
        let c = &self.inner.counters;
        HostStats {
            unknown_idr: c.unknown_idr.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            truncated: c.truncated.load(Ordering::Relaxed),
        }
    }

    /// The local address of the shared socket bound for `addr` (as named
    /// in the UEs' configurations), if any.
    pub fn socket_addr(&self, addr: SocketAddr) -> Option<SocketAddr> {
        let m = lock(&self.inner.mikey);
        let f = lock(&self.inner.fanout);
        m.get(&addr)
            .or_else(|| f.get(&addr))
            .and_then(|s| s.sock.local_addr().ok())
    }

    /// Starts a hosted UE ([`RunningUe::start_subscribed`], with the
    /// host's sockets and HTTP client).
    pub async fn start(
        &self,
        cfg: UeConfig,
    ) -> Result<(RunningUe, broadcast::Receiver<UeEvent>), UeError> {
        RunningUe::start_hosted(cfg, self).await
    }

    pub(crate) fn inner(&self) -> &Arc<HostInner> {
        &self.inner
    }

    /// The shared MIKEY socket for `addr` (bound on first use).
    pub(crate) async fn mikey_socket(&self, addr: SocketAddr) -> Result<Arc<UdpSocket>, UeError> {
        if let Some(s) = lock(&self.inner.mikey).get(&addr) {
            return Ok(s.sock.clone());
        }
        let _binding = self.inner.binding.lock().await;
        if let Some(s) = lock(&self.inner.mikey).get(&addr) {
            return Ok(s.sock.clone());
        }
        let sock = Arc::new(bind_shared(addr, "shared MIKEY listener").await?);
        let mut m = lock(&self.inner.mikey);
        if let Some(s) = m.get(&addr) {
            return Ok(s.sock.clone());
        }
        let task = tokio::spawn(demux_task(
            sock.clone(),
            Arc::downgrade(&self.inner.by_btid),
            self.inner.counters.clone(),
        ));
        m.insert(
            addr,
            Shared {
                sock: sock.clone(),
                fanout: Arc::default(),
                task,
            },
        );
        Ok(sock)
    }

    /// A new inbox fed with every datagram of the shared socket for `addr`
    /// (bound on first use).
    pub(crate) async fn fanout_inbox(
        &self,
        addr: SocketAddr,
        what: &str,
    ) -> Result<Inbox, UeError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let exists = lock(&self.inner.fanout)
            .get(&addr)
            .map(|s| lock(&s.fanout).push(tx.clone()))
            .is_some();
        if !exists {
            let _binding = self.inner.binding.lock().await;
            if let Some(s) = lock(&self.inner.fanout).get(&addr) {
                lock(&s.fanout).push(tx);
                return Ok(Inbox::Channel(rx));
            }
            let sock = Arc::new(bind_shared(addr, what).await?);
            let mut f = lock(&self.inner.fanout);
            match f.get(&addr) {
                Some(s) => lock(&s.fanout).push(tx),
                None => {
                    let subs = Arc::new(Mutex::new(vec![tx]));
                    let task = tokio::spawn(fanout_task(
                        sock.clone(),
                        subs.clone(),
                        self.inner.counters.clone(),
                    ));
                    f.insert(
                        addr,
                        Shared {
                            sock,
                            fanout: subs,
                            task,
                        },
                    );
                }
            }
        }
        Ok(Inbox::Channel(rx))
    }
}

impl Drop for UeHost {
    fn drop(&mut self) {
        for s in lock(&self.inner.mikey).values() {
            s.task.abort();
        }
        for s in lock(&self.inner.fanout).values() {
            s.task.abort();
        }
    }
}

/// One receive batch of a shared socket, copied once into memory the
/// hosted UEs share: [`Datagram`]s are slices of it, so handing a datagram
/// to a UE (or to every UE of a fanned-out socket) allocates and copies
/// nothing more.
fn share(got: &RecvBatch) -> Arc<Vec<u8>> {
    let mut all = Vec::with_capacity(got.iter().map(|(d, _)| d.len()).sum());
    for (d, _) in got.iter() {
        all.extend_from_slice(d);
    }
    Arc::new(all)
}

/// Receives the next batch of a shared socket into `got` (`what` names it
/// in the log); `false` after an error (logged, after a short pause).
async fn recv_batch(
    sock: &UdpSocket,
    rx: &mut Receiver,
    got: &mut RecvBatch,
    truncated: &AtomicU64,
    what: &str,
) -> bool {
    let before = rx.truncated();
    let r = rx.recv(sock, got).await;
    truncated.fetch_add(rx.truncated() - before, Ordering::Relaxed);
    match r {
        Ok(_) => true,
        Err(e) => {
            debug!(error = %e, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
            false
        }
    }
}

/// The shared MIKEY socket: each MSK message (or solicited pull) goes to
/// the UE its IDr names (seed 000 6.3.2.3.1: IDr is the B-TID), read with
/// the borrowed [`MskView`] (nothing copied or allocated to find it), in
/// `recvmmsg` batches.
async fn demux_task(
    sock: Arc<UdpSocket>,
    by_btid: Weak<Mutex<HashMap<String, mpsc::UnboundedSender<Datagram>>>>,
    counters: Counters,
) {
    let mut rx = Receiver::new();
    let mut got = RecvBatch::with_capacity(BATCH);
    loop {
        if !recv_batch(
            &sock,
            &mut rx,
            &mut got,
            &counters.truncated,
            "shared MIKEY socket",
        )
        .await
        {
            continue;
        }
        let Some(table) = by_btid.upgrade() else {
            return;
        };
        let shared = share(&got);
        let (mut delivered, mut unknown) = (0, 0);
        {
            let table = lock(&table);
            let mut at = 0;
            for (d, from) in got.iter() {
                let span = at..at + d.len();
                at = span.end;
                let to = MskView::parse(d).ok().and_then(|v| table.get(v.idr));
                let sent = to.is_some_and(|tx| {
                    tx.send(Datagram {
                        batch: shared.clone(),
                        span,
                        from,
                    })
                    .is_ok()
                });
                if sent {
                    delivered += 1;
                } else {
                    unknown += 1;
                    debug!(%from, "MIKEY datagram for no hosted UE");
                }
            }
        }
        counters.delivered.fetch_add(delivered, Ordering::Relaxed);
        counters.unknown_idr.fetch_add(unknown, Ordering::Relaxed);
    }
}

/// A shared MTK or SRTP socket: every datagram to every UE of it, in
/// `recvmmsg` batches.
async fn fanout_task(
    sock: Arc<UdpSocket>,
    subs: Arc<Mutex<Vec<mpsc::UnboundedSender<Datagram>>>>,
    counters: Counters,
) {
    let mut rx = Receiver::new();
    let mut got = RecvBatch::with_capacity(BATCH);
    loop {
        if !recv_batch(
            &sock,
            &mut rx,
            &mut got,
            &counters.truncated,
            "shared socket",
        )
        .await
        {
            continue;
        }
        let shared = share(&got);
        let mut s = lock(&subs);
        let mut at = 0;
        for (d, from) in got.iter() {
            let span = at..at + d.len();
            at = span.end;
            // A stopped UE's inbox is closed: forget it.
            s.retain(|tx| {
                tx.send(Datagram {
                    batch: shared.clone(),
                    span: span.clone(),
                    from,
                })
                .is_ok()
            });
            counters
                .delivered
                .fetch_add(s.len() as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mbms::messages::MskMessage;
    use mbms::{Muk, MukId};

    /// A solicited pull to the UE of B-TID `btid`.
    fn pull(btid: &str, counter: u32) -> Vec<u8> {
        MskMessage::solicited_pull(
            MukId::new("bmsc.home1.net", btid),
            counter,
            [counter as u8; 16],
            "001-01".parse().unwrap(),
            1,
        )
        .build(&Muk::from_bytes([0x6d; 32]))
        .unwrap()
        .bytes
    }

    fn host() -> UeHost {
        UeHost::new(&HostConfig {
            address: "127.0.0.1".parse().unwrap(),
            http_concurrency: 1,
            http_timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    async fn eventually(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// UEs starting together that name the same new address share one
    /// socket: neither fails with "address in use".
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn ues_naming_one_new_address_at_once_share_its_socket() {
        for _ in 0..50 {
            let host = Arc::new(host());
            let addr = addr_next("127.0.0.1:0".parse().unwrap());
            let mtk = addr_next(addr);
            let start = Arc::new(tokio::sync::Barrier::new(8));
            let mut tasks = Vec::new();
            for i in 0..8 {
                let (host, start) = (host.clone(), start.clone());
                tasks.push(tokio::spawn(async move {
                    start.wait().await;
                    if i % 2 == 0 {
                        host.mikey_socket(addr)
                            .await
                            .map(|s| Some(s.local_addr().unwrap()))
                    } else {
                        host.fanout_inbox(mtk, "MTK").await.map(|_| None)
                    }
                }));
            }
            for t in tasks {
                let r = t.await.unwrap().expect("no \"address in use\"");
                assert!(r.is_none_or(|a| a == addr));
            }
        }
    }

    /// A free port next to `a`'s (bound and released).
    fn addr_next(a: SocketAddr) -> SocketAddr {
        std::net::UdpSocket::bind((a.ip(), 0))
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// More datagrams than one `recvmmsg` batch, for two UEs interleaved
    /// with garbage, a message for no hosted UE and an oversize datagram:
    /// each UE gets exactly its own, byte-exact, in order, with the sender;
    /// the rest is counted, not delivered.
    #[tokio::test]
    async fn the_shared_mikey_socket_hands_each_message_to_the_ue_its_idr_names() {
        let host = host();
        let sock = host
            .mikey_socket("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let to = sock.local_addr().unwrap();
        let (ta, mut ra) = mpsc::unbounded_channel();
        let (tb, mut rb) = mpsc::unbounded_channel();
        host.inner().route("a@bsf.home1.net", &ta);
        host.inner().route("b@bsf.home1.net", &tb);
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let from = sender.local_addr().unwrap();
        let rounds = 2 * BATCH as u32;
        let (mut want_a, mut want_b) = (Vec::new(), Vec::new());
        for c in 1..=rounds {
            let (a, b) = (pull("a@bsf.home1.net", c), pull("b@bsf.home1.net", c));
            sender.send_to(&a, to).await.unwrap();
            sender.send_to(b"not MIKEY", to).await.unwrap();
            sender.send_to(&b, to).await.unwrap();
            want_a.push(a);
            want_b.push(b);
            if c % 16 == 0 {
                // Let the host read: the socket's buffer is not the point.
                tokio::task::yield_now().await;
            }
        }
        sender
            .send_to(&pull("nobody@bsf.home1.net", 1), to)
            .await
            .unwrap();
        sender.send_to(&vec![0u8; 4000], to).await.unwrap();
        for (rx, want) in [(&mut ra, &want_a), (&mut rb, &want_b)] {
            for w in want {
                let d = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(d.bytes(), &w[..]);
                assert_eq!(d.from(), from);
            }
        }
        eventually("the counters", || {
            host.stats()
                == HostStats {
                    unknown_idr: u64::from(rounds) + 1,
                    delivered: 2 * u64::from(rounds),
                    truncated: 1,
                }
        })
        .await;
        assert!(ra.try_recv().is_err() && rb.try_recv().is_err());
    }

    /// A fanned-out socket hands every datagram to every subscriber (one
    /// shared copy), and forgets a subscriber whose inbox closed.
    #[tokio::test]
    async fn a_fanned_out_socket_gives_every_datagram_to_every_ue() {
        let host = host();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let Inbox::Channel(mut first) = host.fanout_inbox(addr, "test").await.unwrap() else {
            panic!("a hosted inbox is a channel");
        };
        let Inbox::Channel(second) = host.fanout_inbox(addr, "test").await.unwrap() else {
            panic!("a hosted inbox is a channel");
        };
        let to = host.socket_addr(addr).unwrap();
        drop(second);
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..3u8 {
            sender.send_to(&[i; 100], to).await.unwrap();
        }
        for i in 0..3u8 {
            let d = tokio::time::timeout(Duration::from_secs(5), first.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(d.bytes(), &[i; 100]);
        }
        // The closed inbox was dropped on the first datagram.
        eventually("deliveries counted", || host.stats().delivered == 3).await;
    }
}
