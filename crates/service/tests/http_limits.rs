//! The HTTP limits of `mbms_service::serve_http` over loopback (issue 11
//! point 11): header, body and idle timeouts, the connection limit and a
//! bounded graceful shutdown. Timeouts are small (300 ms) and every wait for
//! something that must happen has a generous bound (10 s).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use mbms_service::HttpLimits;

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(30);
/// Bound for anything that must happen.
const BOUND: Duration = Duration::from_secs(10);

fn limits() -> HttpLimits {
    HttpLimits {
        header_read_timeout: LONG,
        body_read_timeout: LONG,
        idle_timeout: LONG,
        max_connections: 64,
        shutdown_timeout: LONG,
    }
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(limits: HttpLimits) -> Self {
        let router = Router::new()
            .route("/", get(|| async { "ok\n" }))
            .route("/echo", post(|body: Bytes| async move { body }))
            .route(
                "/slow",
                get(|| async {
                    SLOW_STARTED.store(true, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    "slow\n"
                }),
            )
            .route(
                "/later",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "later\n"
                }),
            )
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(mbms_service::serve_http(listener, router, limits, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            stop: Some(tx),
            task,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Sends the stop signal and waits (at most [`BOUND`]) for the server.
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(BOUND, self.task)
            .await
            .expect("the server stops within the bound")
            .unwrap()
            .unwrap();
    }
}

/// Reads until the peer closes (a reset counts as closed); `None` if it
/// did not close within `within`.
async fn until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let r = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    r.ok().map(|()| out)
}

/// Reads one response with a Content-Length body.
async fn response(s: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(BOUND, async {
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if raw.len() >= end + 4 + len {
                    let status = head[9..12].parse().unwrap();
                    let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + len]).into();
                    return (status, body);
                }
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before a full response");
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a response within the bound")
}

/// Set when the `/slow` handler runs (only one test uses it).
static SLOW_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let server = Server::start(HttpLimits {
        header_read_timeout: SHORT,
        ..limits()
    })
    .await;
    let start = Instant::now();
    let mut silent = server.connect().await;
    let got = until_closed(&mut silent, BOUND).await.expect("closed");
    assert!(got.is_empty());
    assert!(start.elapsed() >= SHORT - Duration::from_millis(50));

    // Half a request line and headers: closed too, without an answer.
    let mut partial = server.connect().await;
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut partial, BOUND).await.expect("closed");
    assert!(got.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn a_half_sent_body_is_cut_after_the_body_timeout() {
    let server = Server::start(HttpLimits {
        body_read_timeout: SHORT,
        ..limits()
    })
    .await;
    let mut half = server.connect().await;
    half.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcde")
        .await
        .unwrap();
    let got = until_closed(&mut half, BOUND).await.expect("closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"));

    // The deadline is for the whole body: trickling bytes does not extend it.
    let mut trickle = server.connect().await;
    trickle
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while start.elapsed() < BOUND {
        if trickle.write_all(b"x").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(50), trickle.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");

    // A complete body within the limit is served.
    let mut ok = server.connect().await;
    ok.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    assert_eq!(response(&mut ok).await, (200, "hello".into()));
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = Server::start(HttpLimits {
        idle_timeout: SHORT,
        ..limits()
    })
    .await;
    let mut c = server.connect().await;
    c.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, peer) = response(&mut c).await;
    assert_eq!(status, 200);
    assert_eq!(peer, c.local_addr().unwrap().to_string());
    let start = Instant::now();
    let rest = until_closed(&mut c, BOUND).await.expect("closed");
    assert!(rest.is_empty());
    assert!(start.elapsed() >= SHORT - Duration::from_millis(50));
    server.shutdown().await;
}

#[tokio::test]
async fn the_idle_time_between_requests_is_not_limited_by_the_header_timeout() {
    let server = Server::start(HttpLimits {
        header_read_timeout: SHORT,
        ..limits()
    })
    .await;
    let mut c = server.connect().await;
    c.write_all(GET).await.unwrap();
    assert_eq!(response(&mut c).await.0, 200);
    tokio::time::sleep(SHORT * 3).await;
    c.write_all(GET).await.unwrap();
    assert_eq!(response(&mut c).await.0, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let server = Server::start(HttpLimits {
        max_connections: 1,
        ..limits()
    })
    .await;
    let holder = server.connect().await;
    // Let the server accept the first connection before the second.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut waiting = server.connect().await;
    waiting.write_all(GET).await.unwrap();
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut buf)).await;
    assert!(early.is_err(), "served over the limit: {early:?}");
    drop(holder);
    assert_eq!(response(&mut waiting).await.0, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_within_the_shutdown_timeout() {
    let server = Server::start(HttpLimits {
        shutdown_timeout: SHORT,
        ..limits()
    })
    .await;
    let mut idle = server.connect().await;
    idle.write_all(GET).await.unwrap();
    assert_eq!(response(&mut idle).await.0, 200);
    let mut silent = server.connect().await;
    let mut partial = server.connect().await;
    partial.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut half = server.connect().await;
    half.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await;
    for c in [&mut idle, &mut silent, &mut partial, &mut half] {
        until_closed(c, BOUND)
            .await
            .expect("closed by the shutdown");
    }
}

#[tokio::test]
async fn shutdown_lets_a_running_request_finish() {
    let server = Server::start(limits()).await;
    let mut c = server.connect().await;
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    while !SLOW_STARTED.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stop = tokio::spawn(server.shutdown());
    assert_eq!(response(&mut c).await, (200, "slow\n".into()));
    until_closed(&mut c, BOUND)
        .await
        .expect("closed after the response");
    stop.await.unwrap();
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    // RFC 9112 9.6: a client may close its sending side once the request
    // is out. The request is served to the end (not cut when the server
    // sees the EOF while the handler runs) and the answer sent.
    let server = Server::start(limits()).await;
    let mut c = server.connect().await;
    c.write_all(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(response(&mut c).await, (200, "later\n".into()));
    until_closed(&mut c, BOUND)
        .await
        .expect("closed after the response");
    server.shutdown().await;
}
