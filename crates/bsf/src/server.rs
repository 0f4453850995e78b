//! The BSF HTTP service: Ub (TS 24.109 clause 4 / Annex A, RFC 3310;
//! PROFILE.md section 4), Zn (PROFILE.md section 5) and `/healthz`.
//!
//! All protocol logic comes from the sans-IO `gba` crate; this module only
//! moves bytes, reads the clock, draws random numbers and calls the
//! [`Store`]: the writes of bootstrapping through its group commit (the
//! task waits for the commit, no thread waits with it), the reads by key
//! on the task itself (see `read`), the other calls on blocking threads.
//!
//! # Ub, `GET /`
//!
//! | request | answer |
//! |---|---|
//! | no `Authorization`, or not parseable as Digest | 400 (the IMPI is needed to build a challenge, TS 24.109 A.3) |
//! | initial request (`nonce=""`), unknown IMPI | 403 |
//! | initial request, known IMPI | 401, `WWW-Authenticate: Digest realm, nonce=base64(RAND \|\| AUTN \|\| server data), algorithm=AKAv1-MD5, qop="auth-int", opaque` |
//! | correct response (password = RES) | 200, `application/vnd.3gpp.bsf+xml` body, `Authentication-Info` with `rspauth` |
//! | wrong RES, replayed (nonce, nc), stale or foreign nonce | 401 with a fresh challenge (`stale=true` for an expired nonce); no session |
//! | any answer to a challenge already answered once (rightly or wrongly) | 401 with a fresh challenge; no session ([`UB_TRIED_NONCES_CAPACITY`]) |
//! | `auts` with a valid MAC-S (RFC 3310 3.4) | SQN re-synchronised, 401 with a fresh challenge |
//! | `auts` with a bad MAC-S | 403, SQN unchanged |
//! | other malformed credentials (realm, uri, qop, opaque...) | 400 |
//!
//! The server data of the nonce is `H(IMPI) (16 octets) || gba nonce
//! trailer (time, random, HMAC)`, see [`impi_binding`], so a challenge
//! answered under another IMPI is refused. The vector's XRES, CK and IK are
//! recomputed from RAND; the only per-challenge state is the bounded set of
//! nonces already answered (one vector, one try: TS 33.102 6.3.2).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, USER_AGENT, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use tracing::{debug, error, info, warn};

use gba::aka::{self, Auts, Rand};
use gba::digest::{Algorithm, DigestServer, Qop, Request, ServerConfig, VerifyError};
use gba::kdf::{derive_ks_ext_naf, derive_ks_int_naf, derive_ks_naf};
use gba::{BTid, Ks, Milenage, NafId};

use crate::config::ZnToken;
use crate::store::{Done, GbaType, Session, Store, StoreError};
use crate::{rfc3339, unix_now};

/// Media type of the Ub 200 OK body (TS 24.109 Annex A; PROFILE.md
/// section 4).
pub const BSF_XML_MEDIA_TYPE: &str = "application/vnd.3gpp.bsf+xml";

/// Path of the Zn key request (PROFILE.md section 5).
pub const ZN_NAF_KEYS_PATH: &str = "/zn/v1/naf-keys";

/// Length of the IMPI binding in the Ub nonce server data.
const IMPI_BINDING_LEN: usize = 16;

/// How many Ub nonces (challenges) the BSF remembers as tried or used: one
/// authentication vector, one try (TS 33.102 6.3.2: "each authentication
/// vector is good for one authentication and key agreement"; issue 11
/// point 13). An entry lives until its nonce expires (`nonce_lifetime`);
/// under a flood of more than this many answered challenges per nonce
/// lifetime the oldest entries are evicted and every nonce issued at or
/// before them is treated as stale (fresh challenge, `stale=true`), so an
/// eviction never re-opens a vector. About 200 octets per entry.
pub const UB_TRIED_NONCES_CAPACITY: usize = 65_536;

/// What the service needs from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The BSF FQDN (Digest realm, B-TID suffix).
    pub fqdn: String,
    /// Key lifetime of a session, seconds.
    pub session_lifetime: u64,
    /// Lifetime of a Ub nonce, seconds.
    pub nonce_lifetime: u64,
    /// Interval between purges of expired sessions.
    pub purge_interval: Duration,
    /// The Zn bearer token.
    pub zn_token: ZnToken,
    /// HTTP limits (timeouts, connection limit, shutdown bound).
    pub http: mbms_service::HttpLimits,
}

struct AppState {
    settings: Settings,
    store: Arc<dyn Store>,
    digest: Mutex<DigestServer>,
}

impl AppState {
    fn digest(&self) -> MutexGuard<'_, DigestServer> {
        self.digest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The BSF service, ready to serve.
#[derive(Clone)]
pub struct Bsf {
    state: Arc<AppState>,
}

impl core::fmt::Debug for Bsf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Bsf")
            .field("settings", &self.state.settings)
            .finish_non_exhaustive()
    }
}

/// A BSF running on a background task (see [`Bsf::spawn`]).
#[derive(Debug)]
pub struct RunningBsf {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningBsf {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets running requests finish (at most
    /// `http.shutdown_timeout`), and waits.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// The Digest server for Ub: AKAv1-MD5 only, qop `auth-int` only
/// (TS 24.109 A.3, Table A.4-1).
fn ub_digest_server(settings: &Settings) -> DigestServer {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let mut opaque = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut opaque);
    let mut cfg = ServerConfig::new(settings.fqdn.clone());
    cfg.algorithms = vec![Algorithm::AkaV1Md5];
    cfg.qops = vec![Qop::AuthInt];
    cfg.nonce_lifetime = settings.nonce_lifetime;
    cfg.opaque = Some(hex::encode(opaque));
    cfg.single_use = true;
    cfg.replay_capacity = UB_TRIED_NONCES_CAPACITY;
    let server = DigestServer::new(cfg, secret);
    zeroize::Zeroize::zeroize(&mut secret);
    server
}

impl Bsf {
    /// A BSF over `store`. The Digest nonce secret is drawn at random, so
    /// challenges issued before a restart are answered with a fresh one.
    pub fn new(settings: Settings, store: Arc<dyn Store>) -> Self {
        let digest = Mutex::new(ub_digest_server(&settings));
        Self {
            state: Arc::new(AppState {
                settings,
                store,
                digest,
            }),
        }
    }

    /// The axum router (Ub on `/`, Zn on [`ZN_NAF_KEYS_PATH`], `/healthz`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(ub))
            .route(ZN_NAF_KEYS_PATH, post(zn_naf_keys))
            .route("/healthz", get(healthz))
            .with_state(self.state.clone())
    }

    /// Serves on `listener` within the [`Settings::http`] limits until
    /// `shutdown` completes, then lets running requests finish for at most
    /// `http.shutdown_timeout`. Expired sessions are purged in the
    /// background.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let purge = tokio::spawn(purge_loop(self.state.clone()));
        let limits = self.state.settings.http.clone();
        let result = mbms_service::serve_http(listener, self.router(), limits, shutdown).await;
        purge.abort();
        result
    }

    /// Binds `addr` (port 0 for any) and serves on a background task.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<RunningBsf> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(listener, async {
            let _ = rx.await;
        }));
        Ok(RunningBsf {
            addr,
            shutdown: Some(tx),
            task,
        })
    }
}

async fn purge_loop(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(state.settings.purge_interval);
    loop {
        tick.tick().await;
        match db(&state, |s| s.purge_expired_sessions(unix_now())).await {
            Ok(0) => {}
            Ok(n) => info!(purged = n, "expired bootstrapping sessions purged"),
            Err(e) => error!(error = %crate::ErrorChain(&e), "purging expired sessions failed"),
        }
    }
}

/// Runs a store call on a blocking thread.
async fn db<T, F>(state: &Arc<AppState>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
}

/// Hands a write to the store's group commit (`submit` calls one of the
/// `Store::*_then` methods) and waits for the commit that holds it, without
/// holding a thread meanwhile: the store's writer wakes this task when the
/// result is durable.
async fn committed<T: Send + 'static>(submit: impl FnOnce(Done<T>)) -> Result<T, StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    submit(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    rx.await
        .map_err(|_| StoreError::Backend("the store dropped a write unanswered".into()))?
}

/// Runs a store read on the calling task. The reads of the request paths
/// (one subscriber, one session, by primary key) are answered from the
/// WAL by read-only connections that never wait for a commit: a few
/// microseconds, less than the two thread hand-offs of
/// [`tokio::task::spawn_blocking`] (which the rarer writes outside the
/// group commit still use, see [`db`]).
fn read<T>(
    state: &AppState,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    f(&*state.store)
}

async fn healthz() -> &'static str {
    "ok\n"
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    m.push('\n');
    (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], m).into_response()
}

fn internal(e: &StoreError) -> Response {
    error!(error = %crate::ErrorChain(e), "store failure");
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// The server data binding a Ub nonce to the IMPI it was issued for: the
/// first 16 octets of SHA-256("mbms-bsf-ub-impi" || IMPI). It sits between
/// AUTN and the `gba` nonce trailer, i.e. inside the "server specific data"
/// of TS 24.109 Table A.4-1, and is covered by the nonce HMAC.
pub fn impi_binding(impi: &str) -> [u8; IMPI_BINDING_LEN] {
    let h = Sha256::new()
        .chain_update(b"mbms-bsf-ub-impi")
        .chain_update(impi.as_bytes())
        .finalize();
    let mut out = [0u8; IMPI_BINDING_LEN];
    out.copy_from_slice(&h[..IMPI_BINDING_LEN]);
    out
}

/// Issues a fresh challenge for `impi` (TS 24.109 A.3 step 2-3): advances
/// and persists SQN_HE first, then builds the vector with a random RAND.
async fn challenge(state: &Arc<AppState>, impi: &str, now: u64, stale: bool) -> Response {
    let sub = match committed(|done| state.store.next_sqn_then(impi, done)).await {
        Ok(Some(sub)) => sub,
        Ok(None) => {
            info!(impi, "Ub: unknown IMPI");
            return text(StatusCode::FORBIDDEN, "unknown IMPI");
        }
        Err(e @ StoreError::SqnExhausted(_)) => {
            error!(impi, error = %crate::ErrorChain(&e), "Ub: cannot build a vector");
            return text(StatusCode::FORBIDDEN, "subscriber cannot be authenticated");
        }
        Err(e) => return internal(&e),
    };
    let mut rand: Rand = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut rand);
    let mut nonce_random = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce_random);
    let av = aka::generate_vector(&sub.k, &sub.opc, sub.sqn, sub.amf, rand);
    let mut prefix = Vec::with_capacity(32 + IMPI_BINDING_LEN);
    prefix.extend_from_slice(&aka::aka_nonce_prefix(&av.rand, &av.autn));
    prefix.extend_from_slice(&impi_binding(impi));
    let header = {
        let digest = state.digest();
        let nonce = digest.issue_nonce_with_prefix(&prefix, now, &nonce_random);
        digest.challenge(&nonce, stale).to_header_value()
    };
    let header = match mbms_service::digest::header_value(header) {
        Some(h) => h,
        None => {
            error!("Ub: challenge could not be formatted");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    debug!(impi, sqn = %sub.sqn, stale, "Ub: challenge issued");
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, header)],
        "authentication required\n",
    )
        .into_response()
}

/// Ub: `GET /` (TS 24.109 clause 4 and Annex A; PROFILE.md section 4).
async fn ub(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = unix_now();
    let auth = match mbms_service::digest::authorization(&headers) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return text(
                StatusCode::BAD_REQUEST,
                "Ub needs an `Authorization: Digest username=\"<IMPI>\", realm, nonce=\"\", uri, response=\"\"` header (TS 24.109 A.3)",
            )
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let impi = auth.username.clone();
    let ua = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth.nonce.is_empty() {
        // Initial request, TS 24.109 Table A.3-1.
        debug!(impi = %impi, user_agent = ua, "Ub: initial request");
        return challenge(&state, &impi, now, false).await;
    }

    let sub = match read(&state, |s| s.subscriber(&impi)) {
        Ok(Some(s)) => s,
        Ok(None) => {
            info!(impi = %impi, "Ub: unknown IMPI");
            return text(StatusCode::FORBIDDEN, "unknown IMPI");
        }
        Err(e) => return internal(&e),
    };

    // The nonce must be ours (HMAC) and issued for this IMPI.
    let info = state.digest().decode_nonce(&auth.nonce);
    let rand: Rand = match info {
        Ok(info)
            if info.prefix.len() == 32 + IMPI_BINDING_LEN
                && info.prefix[32..] == impi_binding(&impi) =>
        {
            let mut r = [0u8; 16];
            r.copy_from_slice(&info.prefix[..16]);
            r
        }
        _ => {
            debug!(impi = %impi, "Ub: nonce not issued by this BSF for this IMPI; new challenge");
            return challenge(&state, &impi, now, false).await;
        }
    };
    let path = mbms_service::digest::request_target(&uri);
    let request = Request {
        method: method.as_str(),
        uri: &path,
        body: &body,
    };

    if let Some(auts_text) = &auth.auts {
        // Synchronisation failure: RFC 3310 3.4 (response over an empty
        // password), TS 33.102 6.3.5 (MAC-S check, SQN_MS recovery).
        let verified = state.digest().verify(&auth, &request, b"", now);
        if let Err(e) = verified {
            return verify_failure(&state, &impi, now, e).await;
        }
        let auts = match Auts::from_base64(auts_text) {
            Ok(a) => a,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("auts: {e}")),
        };
        let sqn_ms = match aka::resync(&sub.k, &sub.opc, &rand, &auts) {
            Ok(s) => s,
            Err(e) => {
                warn!(impi = %impi, error = %crate::ErrorChain(&e), "Ub: re-synchronisation refused");
                return text(
                    StatusCode::FORBIDDEN,
                    "re-synchronisation failed: AUTS MAC-S does not verify",
                );
            }
        };
        let owned = impi.clone();
        match db(&state, move |s| s.resync_sqn(&owned, sqn_ms)).await {
            Ok(sqn_he) => {
                info!(impi = %impi, sqn_ms = %sqn_ms, sqn_he = %sqn_he, "Ub: SQN re-synchronised")
            }
            Err(e) => return internal(&e),
        }
        return challenge(&state, &impi, now, false).await;
    }

    let out = Milenage::new(&sub.k, &sub.opc).f2345(&rand);
    let verified = state
        .digest()
        .verify(&auth, &request, out.res.as_bytes(), now);
    let verified = match verified {
        Ok(v) => v,
        Err(e) => return verify_failure(&state, &impi, now, e).await,
    };

    let btid = BTid::new(&rand, &state.settings.fqdn);
    let expires_at = now.saturating_add(state.settings.session_lifetime);
    let session = Session {
        btid: btid.clone(),
        impi: impi.clone(),
        rand,
        ks: Ks::from_ck_ik(&out.ck, &out.ik),
        gba_type: sub.gba_type,
        created_at: now,
        expires_at,
    };
    match committed(|done| state.store.insert_session_then(&session, done)).await {
        Ok(()) => {}
        Err(StoreError::SessionExists(_)) => {
            // The same challenge answered twice with a higher nc: an AKA
            // nonce is good for one bootstrapping only.
            warn!(impi = %impi, "Ub: challenge already used; new challenge");
            return challenge(&state, &impi, now, false).await;
        }
        Err(e) => return internal(&e),
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<BootstrappingInfo xmlns=\"uri:3gpp-gba\"><btid>{btid}</btid><lifetime>{}</lifetime></BootstrappingInfo>\n",
        rfc3339(expires_at)
    );
    let info = state
        .digest()
        .authentication_info(&verified, body.as_bytes(), None);
    let Some(info) = mbms_service::digest::authentication_info(&info) else {
        error!("Ub: Authentication-Info could not be formatted");
        return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    // One line per request: DEBUG (INFO is for start, stop and failures).
    debug!(impi = %impi, btid = %btid, lifetime = %rfc3339(expires_at), "Ub: bootstrapped");
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, HeaderValue::from_static(BSF_XML_MEDIA_TYPE)),
            (mbms_service::digest::AUTHENTICATION_INFO, info),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// Maps a Digest verification failure (TS 24.109 4.3 user authentication
/// failure) to an answer: a fresh 401 challenge when the client can recover
/// by answering it, 400 for credentials that can never be right.
async fn verify_failure(state: &Arc<AppState>, impi: &str, now: u64, e: VerifyError) -> Response {
    match e {
        VerifyError::ResponseMismatch => {
            info!(impi, "Ub: user authentication failed (wrong RES)");
            challenge(state, impi, now, false).await
        }
        VerifyError::Replay => {
            warn!(impi, "Ub: replayed Authorization refused");
            challenge(state, impi, now, false).await
        }
        VerifyError::NonceSpent => {
            warn!(impi, "Ub: challenge already answered once; new challenge");
            challenge(state, impi, now, false).await
        }
        VerifyError::StaleNonce => {
            debug!(impi, "Ub: stale nonce");
            challenge(state, impi, now, true).await
        }
        VerifyError::InvalidNonce => challenge(state, impi, now, false).await,
        other => {
            info!(impi, error = %other, "Ub: malformed credentials");
            text(
                StatusCode::BAD_REQUEST,
                format!("Digest credentials refused: {other}"),
            )
        }
    }
}

/// Zn request body (PROFILE.md section 5).
#[derive(serde::Deserialize)]
struct ZnRequest {
    btid: String,
    naf_id: String,
}

/// Zn answer (PROFILE.md section 5). Holds keys: never logged.
#[derive(serde::Serialize)]
struct ZnResponse {
    impi: String,
    ks_naf: String,
    ks_int_naf: Option<String>,
    lifetime: String,
    gba_type: GbaType,
}

fn zn_error(status: StatusCode, msg: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": msg.into() });
    (status, axum::Json(body)).into_response()
}

/// Parses NAF_Id = FQDN (UTF-8) || 5-octet Ua security protocol identifier
/// (TS 33.220 Annex H; PROFILE.md section 1).
fn parse_naf_id(bytes: &[u8]) -> Result<NafId, String> {
    if bytes.len() < 6 {
        return Err("naf_id must hold a FQDN and the 5-octet Ua protocol identifier".into());
    }
    let (fqdn, ua) = bytes.split_at(bytes.len() - 5);
    let fqdn = std::str::from_utf8(fqdn).map_err(|_| "naf_id: FQDN is not UTF-8".to_owned())?;
    let mut ua_id = [0u8; 5];
    ua_id.copy_from_slice(ua);
    let naf = NafId::new(fqdn, ua_id);
    if naf.as_bytes() != bytes {
        return Err("naf_id: FQDN is not in NFKC form".into());
    }
    Ok(naf)
}

/// Zn: `POST /zn/v1/naf-keys` (PROFILE.md section 5; TS 33.220 4.5.3 for
/// what the BSF hands to the NAF).
async fn zn_naf_keys(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let presented = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !state.settings.zn_token.check_bearer(presented) {
        warn!("Zn: missing or wrong bearer token");
        let mut r = zn_error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"zn\""),
        );
        return r;
    }
    let req: ZnRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return zn_error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    let naf_bytes = match hex::decode(req.naf_id.trim()) {
        Ok(b) => b,
        Err(_) => return zn_error(StatusCode::BAD_REQUEST, "naf_id is not hexadecimal"),
    };
    let naf_id = match parse_naf_id(&naf_bytes) {
        Ok(n) => n,
        Err(e) => return zn_error(StatusCode::BAD_REQUEST, e),
    };
    let session = match read(&state, |s| s.session(&req.btid, unix_now())) {
        Ok(Some(s)) => s,
        Ok(None) => {
            info!(btid = %req.btid, "Zn: unknown or expired B-TID");
            return zn_error(StatusCode::NOT_FOUND, "unknown or expired B-TID");
        }
        Err(e) => {
            error!(error = %crate::ErrorChain(&e), "store failure");
            return zn_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    // TS 33.220 Annex B.3: GBA_ME Ks_NAF, or GBA_U Ks_ext_NAF + Ks_int_NAF.
    let keys = match session.gba_type {
        GbaType::GbaMe => {
            derive_ks_naf(&session.ks, &session.rand, &session.impi, &naf_id).map(|k| (k, None))
        }
        GbaType::GbaU => derive_ks_ext_naf(&session.ks, &session.rand, &session.impi, &naf_id)
            .and_then(|ext| {
                derive_ks_int_naf(&session.ks, &session.rand, &session.impi, &naf_id)
                    .map(|int| (ext, Some(int)))
            }),
    };
    let (ks_naf, ks_int_naf) = match keys {
        Ok(k) => k,
        Err(e) => return zn_error(StatusCode::BAD_REQUEST, format!("key derivation: {e}")),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let answer = ZnResponse {
        impi: session.impi.clone(),
        ks_naf: b64.encode(ks_naf.as_bytes()),
        ks_int_naf: ks_int_naf.map(|k| b64.encode(k.as_bytes())),
        lifetime: rfc3339(session.expires_at),
        gba_type: session.gba_type,
    };
    debug!(btid = %session.btid, naf = naf_id.fqdn(), gba_type = %session.gba_type, "Zn: NAF keys delivered");
    let mut r = axum::Json(&answer).into_response();
    // Wipe the base64 key texts now that they are serialised.
    let mut answer = answer;
    zeroize::Zeroize::zeroize(&mut answer.ks_naf);
    zeroize::Zeroize::zeroize(&mut answer.ks_int_naf);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naf_id_parsing() {
        let naf = NafId::mbms("bmsc.home1.net");
        assert_eq!(parse_naf_id(naf.as_bytes()).unwrap(), naf);
        assert!(parse_naf_id(b"\x01\0\0\0\x01").is_err());
        assert!(parse_naf_id(b"\xff\xfe\x01\0\0\0\x01").is_err());
    }

    #[test]
    fn impi_binding_differs() {
        assert_ne!(impi_binding("a@x"), impi_binding("b@x"));
    }
}
