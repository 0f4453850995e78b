//! HTTP/1.1 serving with limits, shared by the BSF and the BM-SC: one accept
//! loop over hyper's HTTP/1 connection driver that bounds how long a peer
//! may hold a connection and how many connections exist at once (issue 11
//! point 11: before, an idle or half-sent connection stayed open for good,
//! blocked SIGTERM, and a slow client could exhaust the descriptors).
//!
//! | limit | what happens when it is reached |
//! |---|---|
//! | [`HttpLimits::header_read_timeout`] | the request line and headers of a request are not complete this long after the connection was accepted (first request) or after the first byte of the request arrived (later requests): the connection is closed without an answer |
//! | [`HttpLimits::body_read_timeout`] | the request body is not complete this long after its headers were read: the request is answered `408 Request Timeout` with `Connection: close`, and the connection is closed |
//! | [`HttpLimits::idle_timeout`] | a keep-alive connection waits this long for the first byte of its next request: it is closed |
//! | [`HttpLimits::max_connections`] | that many connections are open: no further connection is accepted until one closes (new ones wait in the listen backlog) |
//! | [`HttpLimits::shutdown_timeout`] | after the shutdown signal, connections still busy this long are dropped |
//!
//! On shutdown the listener is closed at once, idle connections are closed,
//! running requests may finish (their connections then close), and after
//! `shutdown_timeout` whatever is left is dropped: [`serve_http`] returns within
//! that bound.
//!
//! Every request carries the peer address as
//! [`axum::extract::ConnectInfo<SocketAddr>`].
//!
//! A client may half-close (RFC 9112 9.6): once its request is read, the
//! request is answered to the end even if the client closed its sending
//! side, and the connection closes after the answer. A request being
//! answered is never cut off because the peer's EOF was seen.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Deserializer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service as _;
use tracing::{debug, info, warn};

/// Default [`HttpLimits::header_read_timeout`]: 10 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`HttpLimits::body_read_timeout`]: 30 s.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`HttpLimits::idle_timeout`]: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`HttpLimits::max_connections`]: 512 (half the usual 1024
/// descriptor limit, leaving room for the database and the sockets).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default [`HttpLimits::shutdown_timeout`]: 10 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted value of any of the timeouts: one day.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The limits of an HTTP server (the `[http]` table of the BSF and BM-SC
/// configuration files; times in seconds, fractions allowed). See the
/// module documentation for what each one does.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// Time allowed for the request line and headers.
    #[serde(deserialize_with = "seconds")]
    pub header_read_timeout: Duration,
    /// Time allowed for the request body, from the end of the headers.
    #[serde(deserialize_with = "seconds")]
    pub body_read_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    #[serde(deserialize_with = "seconds")]
    pub idle_timeout: Duration,
    /// Maximum number of open connections.
    pub max_connections: usize,
    /// Time running requests get to finish after the shutdown signal.
    #[serde(deserialize_with = "seconds")]
    pub shutdown_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = f64::deserialize(d)?;
    Duration::try_from_secs_f64(v)
        .map_err(|_| serde::de::Error::custom(format!("{v} is not a number of seconds")))
}

impl HttpLimits {
    /// Checks the ranges; the error names the option (`http.NAME`).
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            if v < Duration::from_millis(1) || v > MAX_TIMEOUT {
                return Err(format!(
                    "http.{name} must be between 0.001 and {} seconds, got {}",
                    MAX_TIMEOUT.as_secs(),
                    v.as_secs_f64()
                ));
            }
        }
        if self.max_connections == 0 {
            return Err("http.max_connections must be at least 1".into());
        }
        Ok(())
    }
}

/// Serves `router` over HTTP/1.1 on `listener` with `limits` until
/// `shutdown` completes, then shuts down within
/// [`HttpLimits::shutdown_timeout`] (see the module documentation).
/// Accept errors (e.g. out of descriptors) are logged and retried; the
/// result is an error only if the limits are invalid.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    limits
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Reap the connections that ended.
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE, ENFILE, ECONNABORTED...: the listener stays usable.
                warn!(error = %e, "HTTP accept failed; retrying");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let limits = limits.clone();
        let stop = stop_rx.clone();
        conns.spawn(async move {
            connection(stream, peer, router, &limits, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = conns.len();
    if open > 0 {
        debug!(open, "HTTP shutdown: waiting for open connections");
    }
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            dropped = conns.len(),
            timeout_s = limits.shutdown_timeout.as_secs_f64(),
            "HTTP shutdown: connections still busy after the shutdown timeout are dropped"
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// Where a connection is in its request cycle (for the header and idle
/// timeouts; the body timeout is on the body itself).
#[derive(Debug)]
struct Phase {
    /// Requests handed to the service whose response body is not finished.
    busy: usize,
    /// Whether no request was read yet on this connection.
    first: bool,
    /// When the connection started waiting for its next request.
    waiting_since: Instant,
    /// When the first byte of the next request arrived (while not busy).
    head_since: Option<Instant>,
}

/// A connection's request cycle, checked against its deadlines by
/// [`ConnState::expired`] without a wake-up per request: the state changes
/// (bytes read, a request begun or ended) only move a deadline later than
/// the one being waited for, never earlier (see [`ConnState::expired`]).
#[derive(Debug)]
struct ConnState {
    phase: Mutex<Phase>,
}

impl ConnState {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase {
                busy: 0,
                first: true,
                waiting_since: Instant::now(),
                head_since: None,
            }),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes arrived from the peer.
    fn on_read(&self) {
        let mut p = self.phase();
        if p.busy == 0 && p.head_since.is_none() {
            // The first request's header time counts from the accept.
            p.head_since = Some(if p.first {
                p.waiting_since
            } else {
                Instant::now()
            });
        }
    }

    /// A request's head was read and handed to the service.
    fn begin_request(&self) {
        let mut p = self.phase();
        p.busy += 1;
        p.first = false;
        p.head_since = None;
    }

    /// A response body was finished (or dropped).
    fn end_request(&self) {
        let mut p = self.phase();
        p.busy = p.busy.saturating_sub(1);
        if p.busy == 0 {
            p.waiting_since = Instant::now();
            p.head_since = None;
        }
    }

    /// When the connection must be closed, and why; `None` while busy.
    fn deadline(&self, limits: &HttpLimits) -> Option<(Instant, &'static str)> {
        let p = self.phase();
        if p.busy > 0 {
            return None;
        }
        Some(match (p.head_since, p.first) {
            (Some(t), _) => (t + limits.header_read_timeout, "header read timeout"),
            (None, true) => (
                p.waiting_since + limits.header_read_timeout,
                "header read timeout",
            ),
            (None, false) => (p.waiting_since + limits.idle_timeout, "idle timeout"),
        })
    }

    /// Resolves when the header or idle deadline passes.
    ///
    /// One timer, re-armed only when it fires: every deadline that a later
    /// state change can set is that change's time plus a timeout (the
    /// first request's header deadline is already in the state), so none
    /// is earlier than `now + min(header_read_timeout, idle_timeout)`. The
    /// timer is armed at the current deadline or at that bound, whichever
    /// comes first; when it fires the state is read again. No deadline is
    /// missed, and a request costs no timer registration and no wake-up
    /// (each state change notified this future and re-armed a timer:
    /// four timer operations and three extra polls of the connection per
    /// request).
    async fn expired(&self, limits: &HttpLimits) -> &'static str {
        let bound = limits.header_read_timeout.min(limits.idle_timeout);
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            let at = match self.deadline(limits) {
                Some((at, why)) if at <= now => return why,
                Some((at, _)) => at.min(now + bound),
                None => now + bound,
            };
            // Later than before: tokio extends an armed timer without
            // taking the timer wheel's lock.
            sleep.as_mut().reset(at);
            sleep.as_mut().await;
        }
    }
}

/// Serves one connection until it ends, a deadline passes, or (after the
/// stop signal) its running request is done.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: &HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        state: state.clone(),
    });
    let service = ConnService {
        router,
        peer,
        state: state.clone(),
        body_read_timeout: limits.body_read_timeout,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header timeout is enforced here (it must not run while a
    // keep-alive connection is idle, which has its own limit).
    //
    // Half-close (RFC 9112 9.6): a client may close its sending side once
    // its request is out, and still gets the answer. hyper then does not
    // read the socket while a request is being answered. Without it hyper
    // reads once more to look for an EOF, which reserved a new 8 KiB read
    // buffer per request (the body still held the old one) and cut the
    // request off mid-answer when the client had half-closed.
    builder
        .keep_alive(true)
        .half_close(true)
        .header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            why = state.expired(limits) => {
                debug!(%peer, reason = why, "HTTP connection closed");
                return;
            }
            r = stop.changed(), if !stopping => {
                let _ = r;
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The socket, noting when bytes arrive.
struct Tracked {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The per-connection hyper service around the router.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: SocketAddr,
    state: Arc<ConnState>,
    body_read_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.state.begin_request();
        let guard = RequestGuard(self.state.clone());
        let timed_out = Arc::new(AtomicBool::new(false));
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let body = DeadlineBody {
            inner: body,
            due: Instant::now() + self.body_read_timeout,
            deadline: None,
            timed_out: timed_out.clone(),
        };
        let req = Request::from_parts(parts, axum::body::Body::new(body));
        let mut router = self.router.clone();
        let peer = self.peer;
        Box::pin(async move {
            let resp = match router.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let resp = if timed_out.load(Ordering::Relaxed) {
                info!(%peer, "HTTP request body not received in time: 408");
                let mut r = Response::new(axum::body::Body::from(
                    "request body not received in time\n",
                ));
                *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            } else {
                resp
            };
            Ok(resp.map(|inner| TrackedBody {
                inner,
                _guard: guard,
            }))
        })
    }
}

/// Ends the request (for the idle timeout) when dropped.
struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// A response body that ends its request when it is dropped (hyper drops
/// it once written).
struct TrackedBody {
    inner: axum::body::Body,
    _guard: RequestGuard,
}

impl HttpBody for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body was not complete by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within the body read timeout")]
pub struct BodyTimeout;

/// A request body that fails once its deadline passes (a total deadline,
/// not reset by progress, so trickling bytes does not extend it).
struct DeadlineBody {
    inner: Incoming,
    /// `body_read_timeout` after the head was read.
    due: Instant,
    /// The timer, armed only once the body has to be waited for: a body
    /// that came with its head (the usual small request) costs no timer.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl HttpBody for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        let due = self.due;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if deadline.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_with_defaults_and_fractions() {
        let l: HttpLimits = toml::from_str("").unwrap();
        assert_eq!(l, HttpLimits::default());
        let l: HttpLimits =
            toml::from_str("header_read_timeout = 0.25\nidle_timeout = 5\nmax_connections = 3\n")
                .unwrap();
        assert_eq!(l.header_read_timeout, Duration::from_millis(250));
        assert_eq!(l.idle_timeout, Duration::from_secs(5));
        assert_eq!(l.max_connections, 3);
        assert_eq!(l.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT);
        l.validate().unwrap();
        assert!(toml::from_str::<HttpLimits>("idle_timeout = -1").is_err());
        assert!(toml::from_str::<HttpLimits>("bogus = 1").is_err());
        let zero: HttpLimits = toml::from_str("body_read_timeout = 0").unwrap();
        assert!(zero
            .validate()
            .unwrap_err()
            .contains("http.body_read_timeout"));
        let none: HttpLimits = toml::from_str("max_connections = 0").unwrap();
        assert!(none.validate().unwrap_err().contains("max_connections"));
        let huge: HttpLimits = toml::from_str("shutdown_timeout = 1e9").unwrap();
        assert!(huge.validate().is_err());
    }
}
