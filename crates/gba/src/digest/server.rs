//! Digest server (RFC 7616 3.3-3.5, RFC 2617 3.2.3), sans-IO: usable by a
//! BSF on Ub (TS 24.109 4, Annex A) and by a BM-SC on Ua (TS 24.109 5.2;
//! PROFILE.md section 3).
//!
//! # Nonces
//!
//! A nonce is the standard base64 of
//!
//! ```text
//! prefix || timestamp (8 octets, big-endian seconds) || random (16 octets)
//!        || HMAC-SHA-256(server secret, prefix || timestamp || random)
//! ```
//!
//! so the server can check it without keeping state, and it expires
//! `nonce_lifetime` seconds after `timestamp` (RFC 7616 5.4 suggests
//! exactly this kind of construction). `prefix` is caller content: empty on
//! Ua, `RAND || AUTN` on Ub, which gives the TS 24.109 Ub layout
//! `base64(RAND || AUTN || server data)` (PROFILE.md section 4). The caller
//! supplies `now` and the random bytes; nothing here reads a clock or an
//! RNG.
//!
//! # Replay protection
//!
//! Each (nonce, nc) pair is accepted at most once and `nc` must strictly
//! increase per nonce. The cache holds, per nonce, the highest `nc` seen and
//! is bounded by [`ServerConfig::replay_capacity`]: entries are dropped when
//! their nonce expires, and when the cache is full the entry of the oldest
//! nonce is evicted *and every nonce issued at or before that one is
//! treated as stale from then on* (a low-water mark), so eviction can never
//! re-open a replay; the client just retries with a new nonce.
//!
//! A nonce is known in the cache by its issue time and the first
//! [`NONCE_ID_LEN`] octets of its MAC (`NonceId`): fixed-size keys, so a
//! lookup allocates nothing. Only nonces whose MAC verified get there, and
//! two distinct nonces of one server share an ID only by a collision of
//! the truncated HMAC-SHA-256 (2^-64 after 2^32 nonces of one second).
//!
//! # Single-use nonces (Ub)
//!
//! With [`ServerConfig::single_use`] a nonce is good for one try: the first
//! response computed for it spends it, whether it verified or not, and
//! every later `Authorization` under it is refused with
//! [`VerifyError::NonceSpent`] before its response is even looked at. This
//! is what Ub needs: a Ub nonce carries one AKA authentication vector, and
//! "each authentication vector is good for one authentication and key
//! agreement" (TS 33.102 6.3.2), so a wrong RES must not leave the vector
//! open to further guesses. Spent nonces live in the same bounded cache as
//! the replay state (same expiry, same capacity and low-water mark).
//!
//! # Verification order
//!
//! realm, algorithm, qop, uri, opaque, nonce integrity, spent (single-use
//! only), response (constant time), then expiry (so that `stale` is only
//! reported for a correct response, as RFC 7616 3.3 asks), then replay.

use core::fmt;
use std::collections::BTreeMap;

use base64::Engine as _;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::header::{AuthenticationInfo, Authorization, Challenge};
use super::{
    base_ha1, digest_eq, ha2, request_digest, rspauth, session_ha1, Algorithm, HexDigest, Qop,
    QopParams,
};
use crate::kdf::hmac_sha256;

const TS_LEN: usize = 8;
const RANDOM_LEN: usize = 16;
const MAC_LEN: usize = 32;
const NONCE_TRAILER: usize = TS_LEN + RANDOM_LEN + MAC_LEN;

/// Octets of the nonce MAC that name a nonce in the replay cache.
pub const NONCE_ID_LEN: usize = 16;

/// A nonce as the replay cache knows it: issue time and the start of its
/// MAC (see the module documentation).
type NonceId = (u64, [u8; NONCE_ID_LEN]);

/// Nonces whose decoded form fits here are decoded on the stack (a Ua
/// nonce is 56 octets, a Ub nonce 88); longer ones on the heap.
const NONCE_STACK: usize = 192;

/// Default nonce lifetime, 300 s (PROFILE.md section 3).
pub const DEFAULT_NONCE_LIFETIME_SECS: u64 = 300;

/// Default bound on the number of nonces tracked by the replay cache.
pub const DEFAULT_REPLAY_CAPACITY: usize = 65_536;

/// Server configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The realm (e.g. `3GPP-bootstrapping@<bmsc-fqdn>` on Ua, the BSF FQDN
    /// on Ub).
    pub realm: String,
    /// Accepted algorithms; a challenge is issued for each, the first one is
    /// the preferred one (RFC 7616 3.7). Default: MD5.
    pub algorithms: Vec<Algorithm>,
    /// Offered qop values in order of preference. Default: `auth-int`,
    /// `auth` (PROFILE.md section 3). Requests without qop are refused.
    pub qops: Vec<Qop>,
    /// Nonce lifetime in seconds. Default [`DEFAULT_NONCE_LIFETIME_SECS`].
    pub nonce_lifetime: u64,
    /// Maximum number of nonces tracked for replay protection. Default
    /// [`DEFAULT_REPLAY_CAPACITY`]; at least 1 is used.
    pub replay_capacity: usize,
    /// `opaque` sent in challenges; when set, credentials must echo it.
    pub opaque: Option<String>,
    /// `domain` sent in challenges.
    pub domain: Option<String>,
    /// One try per nonce (see the module documentation): the first response
    /// under a nonce, right or wrong, spends it. Default `false` (Ua, where a
    /// nonce is reused with increasing nc); the BSF sets it on Ub.
    pub single_use: bool,
}

impl ServerConfig {
    /// Defaults for the given realm.
    pub fn new(realm: impl Into<String>) -> Self {
        Self {
            realm: realm.into(),
            algorithms: vec![Algorithm::Md5],
            qops: vec![Qop::AuthInt, Qop::Auth],
            nonce_lifetime: DEFAULT_NONCE_LIFETIME_SECS,
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
            opaque: None,
            domain: None,
            single_use: false,
        }
    }
}

/// The request being authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// HTTP method, e.g. `GET`, `POST`.
    pub method: &'a str,
    /// Request-target as received (must equal the `uri` parameter).
    pub uri: &'a str,
    /// Request body (hashed for `auth-int`).
    pub body: &'a [u8],
}

/// Why an `Authorization` was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The `realm` is not ours.
    #[error("realm does not match")]
    RealmMismatch,
    /// The algorithm is not one we accept.
    #[error("algorithm {0} not accepted")]
    AlgorithmNotAllowed(Algorithm),
    /// No `qop` (RFC 2069 credentials are refused).
    #[error("credentials without qop are refused")]
    QopRequired,
    /// The `qop` is not one we offer.
    #[error("qop {0} not accepted")]
    QopNotAllowed(Qop),
    /// A parameter required with `qop` is absent.
    #[error("missing parameter `{0}`")]
    MissingParameter(&'static str),
    /// The `uri` parameter differs from the request-target.
    #[error("uri parameter does not match the request-target")]
    UriMismatch,
    /// `opaque` was not echoed.
    #[error("opaque does not match")]
    OpaqueMismatch,
    /// The nonce was not issued by this server (bad encoding or MAC).
    #[error("nonce was not issued by this server")]
    InvalidNonce,
    /// The response digest is wrong (wrong password, or tampered request).
    #[error("response digest mismatch")]
    ResponseMismatch,
    /// The response is correct but the nonce expired: answer 401 with a new
    /// challenge carrying `stale=true` (RFC 7616 3.3).
    #[error("nonce is stale")]
    StaleNonce,
    /// This (nonce, nc) was already used, or nc did not increase.
    #[error("replayed or non-increasing nonce count")]
    Replay,
    /// A single-use nonce ([`ServerConfig::single_use`]) was already
    /// answered once, rightly or wrongly: answer with a new challenge.
    #[error("nonce already used once")]
    NonceSpent,
}

impl VerifyError {
    /// Whether the caller should re-challenge with `stale=true`.
    pub fn is_stale(&self) -> bool {
        matches!(self, Self::StaleNonce)
    }
}

/// What a valid server nonce carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonceInfo {
    /// Caller content placed before the server data (e.g. RAND || AUTN).
    pub prefix: Vec<u8>,
    /// Issue time, in the caller's seconds.
    pub issued_at: u64,
}

/// A successfully verified request; pass it to
/// [`DigestServer::authentication_info`]. It borrows the texts of the
/// `Authorization` it was verified from.
pub struct Verified<'a> {
    username: &'a str,
    algorithm: Algorithm,
    qop: Qop,
    nc: u32,
    cnonce: &'a str,
    nonce: &'a str,
    uri: &'a str,
    ha1: HexDigest,
    nonce_info: NonceInfo,
}

impl fmt::Debug for Verified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("username", &self.username)
            .field("algorithm", &self.algorithm)
            .field("qop", &self.qop)
            .field("nc", &self.nc)
            .field("nonce_info", &self.nonce_info)
            .field("ha1", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl<'a> Verified<'a> {
    /// The authenticated username.
    pub fn username(&self) -> &'a str {
        self.username
    }

    /// The algorithm used.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The qop used.
    pub fn qop(&self) -> Qop {
        self.qop
    }

    /// The nonce count used.
    pub fn nc(&self) -> u32 {
        self.nc
    }

    /// The client nonce used.
    pub fn cnonce(&self) -> &'a str {
        self.cnonce
    }

    /// The `uri` parameter (equal to the request-target).
    pub fn uri(&self) -> &'a str {
        self.uri
    }

    /// The nonce used.
    pub fn nonce(&self) -> &'a str {
        self.nonce
    }

    /// The decoded nonce (prefix and issue time).
    pub fn nonce_info(&self) -> &NonceInfo {
        &self.nonce_info
    }
}

/// The Digest server. See the module documentation.
pub struct DigestServer {
    config: ServerConfig,
    secret: Zeroizing<[u8; 32]>,
    /// Nonce -> highest nc accepted.
    seen: BTreeMap<NonceId, u32>,
    /// Nonces issued at or before this time are stale (after an eviction).
    low_water: Option<u64>,
}

impl fmt::Debug for DigestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestServer")
            .field("config", &self.config)
            .field("secret", &"<redacted>")
            .field("tracked_nonces", &self.seen.len())
            .field("low_water", &self.low_water)
            .finish()
    }
}

impl DigestServer {
    /// A server with the given configuration and a 32-byte secret for the
    /// nonce MAC (from the caller's CSPRNG; servers sharing a secret accept
    /// each other's nonces, but each keeps its own replay cache).
    pub fn new(config: ServerConfig, secret: [u8; 32]) -> Self {
        Self {
            config,
            secret: Zeroizing::new(secret),
            seen: BTreeMap::new(),
            low_water: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Number of nonces currently tracked by the replay cache.
    pub fn tracked_nonces(&self) -> usize {
        self.seen.len()
    }

    /// A fresh nonce with no caller content.
    pub fn issue_nonce(&self, now: u64, random: &[u8; 16]) -> String {
        self.issue_nonce_with_prefix(&[], now, random)
    }

    /// A fresh nonce that starts with caller content `prefix` (e.g.
    /// `RAND || AUTN` on Ub, see [`crate::aka::aka_nonce_prefix`]).
    pub fn issue_nonce_with_prefix(&self, prefix: &[u8], now: u64, random: &[u8; 16]) -> String {
        let ts = now.to_be_bytes();
        let mac = hmac_sha256(&*self.secret, &[prefix, &ts, random]);
        let b64 = &base64::engine::general_purpose::STANDARD;
        let parts: [&[u8]; 4] = [prefix, &ts, random, &mac];
        if prefix.len() + NONCE_TRAILER > NONCE_STACK {
            return b64.encode(parts.concat());
        }
        // Assembled on the stack: the text is the one allocation.
        let mut raw = [0u8; NONCE_STACK];
        let mut len = 0;
        for part in parts {
            raw[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        b64.encode(&raw[..len])
    }

    /// Checks that `nonce` was issued by this server (MAC in constant time)
    /// and returns its content. Does not check expiry.
    pub fn decode_nonce(&self, nonce: &str) -> Result<NonceInfo, VerifyError> {
        self.open_nonce(nonce).map(|(info, _)| info)
    }

    /// [`Self::decode_nonce`], and the nonce's ID in the replay cache.
    /// Decoded on the stack when it fits [`NONCE_STACK`]; the prefix is
    /// copied only when there is one (never on Ua).
    fn open_nonce(&self, nonce: &str) -> Result<(NonceInfo, NonceId), VerifyError> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        let mut stack = [0u8; NONCE_STACK];
        let heap;
        let raw: &[u8] = match b64.decode_slice(nonce, &mut stack) {
            Ok(n) => &stack[..n],
            Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
                heap = b64.decode(nonce).map_err(|_| VerifyError::InvalidNonce)?;
                &heap
            }
            Err(base64::DecodeSliceError::DecodeError(_)) => return Err(VerifyError::InvalidNonce),
        };
        let split = raw
            .len()
            .checked_sub(NONCE_TRAILER)
            .ok_or(VerifyError::InvalidNonce)?;
        let (prefix, trailer) = raw.split_at(split);
        let (ts, rest) = trailer
            .split_first_chunk::<TS_LEN>()
            .ok_or(VerifyError::InvalidNonce)?;
        let (random, mac) = rest
            .split_first_chunk::<RANDOM_LEN>()
            .ok_or(VerifyError::InvalidNonce)?;
        let expected = hmac_sha256(&*self.secret, &[prefix, ts, random]);
        if !bool::from(expected.as_slice().ct_eq(mac)) {
            return Err(VerifyError::InvalidNonce);
        }
        let issued_at = u64::from_be_bytes(*ts);
        let mut id = [0u8; NONCE_ID_LEN];
        id.copy_from_slice(&expected[..NONCE_ID_LEN]);
        Ok((
            NonceInfo {
                prefix: prefix.to_vec(),
                issued_at,
            },
            (issued_at, id),
        ))
    }

    /// The challenge for `nonce` with the first configured algorithm.
    pub fn challenge(&self, nonce: &str, stale: bool) -> Challenge {
        self.challenge_for(
            self.config
                .algorithms
                .first()
                .copied()
                .unwrap_or(Algorithm::Md5),
            nonce,
            stale,
        )
    }

    /// One challenge per configured algorithm, preferred first
    /// (RFC 7616 3.7), all with the same nonce.
    pub fn challenges(&self, nonce: &str, stale: bool) -> Vec<Challenge> {
        self.config
            .algorithms
            .iter()
            .map(|a| self.challenge_for(*a, nonce, stale))
            .collect()
    }

    fn challenge_for(&self, algorithm: Algorithm, nonce: &str, stale: bool) -> Challenge {
        Challenge {
            realm: self.config.realm.clone(),
            domain: self.config.domain.clone(),
            nonce: nonce.to_owned(),
            opaque: self.config.opaque.clone(),
            stale,
            algorithm: Some(algorithm),
            qop: self.config.qops.clone(),
        }
    }

    fn is_expired(&self, issued_at: u64, now: u64) -> bool {
        now > issued_at.saturating_add(self.config.nonce_lifetime)
            || self.low_water.is_some_and(|lw| issued_at <= lw)
    }

    /// Verifies credentials against the password the caller looked up for
    /// `auth.username` (on Ub: RES bytes, or `b""` when `auts` is present,
    /// RFC 3310 3.4; on Ua: the base64 text of the MRK). `now` is in the same
    /// seconds as the `now` given when issuing nonces.
    pub fn verify<'a>(
        &mut self,
        auth: &'a Authorization,
        request: &Request<'_>,
        password: &[u8],
        now: u64,
    ) -> Result<Verified<'a>, VerifyError> {
        if auth.realm != self.config.realm {
            return Err(VerifyError::RealmMismatch);
        }
        let algorithm = auth.effective_algorithm();
        if !self.config.algorithms.contains(&algorithm) {
            return Err(VerifyError::AlgorithmNotAllowed(algorithm));
        }
        let qop = auth.qop.ok_or(VerifyError::QopRequired)?;
        if !self.config.qops.contains(&qop) {
            return Err(VerifyError::QopNotAllowed(qop));
        }
        let nc = auth.nc.ok_or(VerifyError::MissingParameter("nc"))?;
        let cnonce = auth
            .cnonce
            .as_deref()
            .ok_or(VerifyError::MissingParameter("cnonce"))?;
        if auth.uri != request.uri {
            return Err(VerifyError::UriMismatch);
        }
        if let Some(expected) = &self.config.opaque {
            if auth.opaque.as_deref() != Some(expected.as_str()) {
                return Err(VerifyError::OpaqueMismatch);
            }
        }
        let (info, id) = self.open_nonce(&auth.nonce)?;
        if self.config.single_use && self.is_tracked(id, now) {
            return Err(VerifyError::NonceSpent);
        }

        // RFC 7616 3.4.2: the -sess algorithms hash the nonces into HA1.
        let base = base_ha1(algorithm, &auth.username, &auth.realm, password);
        let ha1 = session_ha1(algorithm, base, &auth.nonce, cnonce);
        let ha2 = ha2(
            algorithm,
            Some(qop),
            request.method,
            &auth.uri,
            request.body,
        );
        let expected = request_digest(
            algorithm,
            ha1.as_bytes(),
            &auth.nonce,
            Some(QopParams { qop, nc, cnonce }),
            ha2.as_bytes(),
        );
        if !digest_eq(&expected, &auth.response) {
            if self.config.single_use && !self.is_expired(info.issued_at, now) {
                // One try per vector (TS 33.102 6.3.2): a wrong answer
                // spends the nonce. An expired one needs no entry.
                self.remember(id, u32::MAX, now);
            }
            return Err(VerifyError::ResponseMismatch);
        }
        if self.is_expired(info.issued_at, now) {
            return Err(VerifyError::StaleNonce);
        }
        let nc_mark = if self.config.single_use { u32::MAX } else { nc };
        self.check_replay(id, nc, nc_mark, now)?;

        Ok(Verified {
            username: &auth.username,
            algorithm,
            qop,
            nc,
            cnonce,
            nonce: &auth.nonce,
            uri: &auth.uri,
            ha1,
            nonce_info: info,
        })
    }

    /// Drops the entries whose nonce has expired (ordered by issue time).
    fn expire(&mut self, now: u64) {
        let lifetime = self.config.nonce_lifetime;
        while let Some(entry) = self.seen.first_entry() {
            if now > entry.key().0.saturating_add(lifetime) {
                entry.remove();
            } else {
                break;
            }
        }
    }

    /// Whether the cache holds an entry for this nonce (after expiry).
    fn is_tracked(&mut self, id: NonceId, now: u64) -> bool {
        self.expire(now);
        self.seen.contains_key(&id)
    }

    /// Records `mark` as the highest nc seen for a nonce not yet tracked,
    /// evicting the oldest entries (and raising the low-water mark) when
    /// the cache is full. Returns `false` when the nonce itself fell under
    /// the low-water mark (it is stale from now on, nothing is recorded).
    fn remember(&mut self, id: NonceId, mark: u32, now: u64) -> bool {
        self.expire(now);
        if let Some(last) = self.seen.get_mut(&id) {
            *last = (*last).max(mark);
            return true;
        }
        let capacity = self.config.replay_capacity.max(1);
        while self.seen.len() >= capacity {
            match self.seen.pop_first() {
                Some(((evicted_at, _), _)) => {
                    self.low_water =
                        Some(self.low_water.map_or(evicted_at, |lw| lw.max(evicted_at)));
                }
                None => break,
            }
        }
        if self.is_expired(id.0, now) {
            return false;
        }
        self.seen.insert(id, mark);
        true
    }

    /// Accepts `nc` for a nonce once, strictly increasing; records `mark`
    /// (`nc`, or `u32::MAX` to spend a single-use nonce).
    fn check_replay(
        &mut self,
        id: NonceId,
        nc: u32,
        mark: u32,
        now: u64,
    ) -> Result<(), VerifyError> {
        self.expire(now);
        if let Some(last) = self.seen.get_mut(&id) {
            if nc <= *last {
                return Err(VerifyError::Replay);
            }
            *last = mark;
            return Ok(());
        }
        if nc == 0 {
            return Err(VerifyError::Replay);
        }
        if !self.remember(id, mark, now) {
            // Our own nonce fell under the low-water mark.
            return Err(VerifyError::StaleNonce);
        }
        Ok(())
    }

    /// The `Authentication-Info` for a verified request (RFC 7616 3.5,
    /// RFC 2617 3.2.3): `rspauth` over ":" uri (and the response body for
    /// `auth-int`), echoing `qop`, `nc` and `cnonce`, plus an optional
    /// `nextnonce` (e.g. from [`Self::issue_nonce`]).
    pub fn authentication_info(
        &self,
        verified: &Verified<'_>,
        response_body: &[u8],
        nextnonce: Option<String>,
    ) -> AuthenticationInfo {
        let rspauth = rspauth(
            verified.algorithm,
            verified.ha1.as_bytes(),
            verified.nonce,
            QopParams {
                qop: verified.qop,
                nc: verified.nc,
                cnonce: verified.cnonce,
            },
            verified.uri,
            response_body,
        );
        AuthenticationInfo {
            nextnonce,
            qop: Some(verified.qop),
            rspauth: Some(rspauth.as_str().to_owned()),
            cnonce: Some(verified.cnonce.to_owned()),
            nc: Some(verified.nc),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{compute_ha1, compute_ha2, compute_response, DigestClient};
    use super::*;

    const SECRET: [u8; 32] = [0x5a; 32];

    fn server() -> DigestServer {
        let mut cfg = ServerConfig::new("3GPP-bootstrapping@bmsc.example");
        cfg.algorithms = vec![Algorithm::Md5, Algorithm::Sha256];
        cfg.opaque = Some("op".into());
        DigestServer::new(cfg, SECRET)
    }

    fn req(body: &[u8]) -> Request<'_> {
        Request {
            method: "POST",
            uri: "/keymanagement?requesttype=register",
            body,
        }
    }

    fn client_for(ch: Challenge) -> DigestClient {
        let mut c = DigestClient::new("btid@bsf", b"password");
        c.handle_challenge(ch).unwrap();
        c
    }

    #[test]
    fn nonce_round_trip_and_tamper() {
        let s = server();
        let n = s.issue_nonce_with_prefix(b"RANDAUTN", 1000, &[1; 16]);
        let info = s.decode_nonce(&n).unwrap();
        assert_eq!(info.prefix, b"RANDAUTN");
        assert_eq!(info.issued_at, 1000);
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(&n)
            .unwrap();
        raw[0] ^= 1;
        let bad = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert_eq!(s.decode_nonce(&bad), Err(VerifyError::InvalidNonce));
        assert_eq!(s.decode_nonce("AAAA"), Err(VerifyError::InvalidNonce));
        assert_eq!(
            s.decode_nonce("not base64!"),
            Err(VerifyError::InvalidNonce)
        );
        let other = DigestServer::new(ServerConfig::new("x"), [0; 32]);
        assert_eq!(other.decode_nonce(&n), Err(VerifyError::InvalidNonce));
    }

    #[test]
    fn full_exchange_with_sha256_and_rspauth() {
        let mut s = server();
        let nonce = s.issue_nonce(100, &[2; 16]);
        let chs = s.challenges(&nonce, false);
        assert_eq!(chs.len(), 2);
        let mut c = client_for(chs[1].clone());
        let a = c.authorize("POST", req(b"").uri, b"<xml/>", "cn1").unwrap();
        assert_eq!(a.algorithm, Some(Algorithm::Sha256));
        let v = s.verify(&a, &req(b"<xml/>"), b"password", 150).unwrap();
        assert_eq!(v.username(), "btid@bsf");
        assert_eq!(v.qop(), Qop::AuthInt);
        assert!(!format!("{v:?}").contains(&*compute_ha1(
            Algorithm::Sha256,
            "btid@bsf",
            "3GPP-bootstrapping@bmsc.example",
            b"password",
            "",
            ""
        )));
        let next = s.issue_nonce(150, &[3; 16]);
        let info = s.authentication_info(&v, b"<ok/>", Some(next.clone()));
        c.verify_authentication_info(&info, b"<ok/>").unwrap();
        // The client moved to nextnonce and the server accepts it.
        let a2 = c.authorize("POST", req(b"").uri, b"", "cn2").unwrap();
        assert_eq!(a2.nonce, next);
        s.verify(&a2, &req(b""), b"password", 160).unwrap();
    }

    #[test]
    fn wrong_password_body_uri_realm_opaque() {
        let mut s = server();
        let nonce = s.issue_nonce(0, &[2; 16]);
        let mut c = client_for(s.challenge(&nonce, false));
        let a = c.authorize("POST", req(b"").uri, b"body", "cn").unwrap();
        assert_eq!(
            s.verify(&a, &req(b"body"), b"wrong", 1).unwrap_err(),
            VerifyError::ResponseMismatch
        );
        assert_eq!(
            s.verify(&a, &req(b"other"), b"password", 1).unwrap_err(),
            VerifyError::ResponseMismatch
        );
        let mut r = req(b"body");
        r.uri = "/elsewhere";
        assert_eq!(
            s.verify(&a, &r, b"password", 1).unwrap_err(),
            VerifyError::UriMismatch
        );
        let mut bad = a.clone();
        bad.realm = "x".into();
        assert_eq!(
            s.verify(&bad, &req(b"body"), b"password", 1).unwrap_err(),
            VerifyError::RealmMismatch
        );
        let mut bad = a.clone();
        bad.opaque = None;
        assert_eq!(
            s.verify(&bad, &req(b"body"), b"password", 1).unwrap_err(),
            VerifyError::OpaqueMismatch
        );
        let mut bad = a.clone();
        bad.qop = None;
        assert_eq!(
            s.verify(&bad, &req(b"body"), b"password", 1).unwrap_err(),
            VerifyError::QopRequired
        );
        let mut bad = a.clone();
        bad.algorithm = Some(Algorithm::Md5Sess);
        assert_eq!(
            s.verify(&bad, &req(b"body"), b"password", 1).unwrap_err(),
            VerifyError::AlgorithmNotAllowed(Algorithm::Md5Sess)
        );
        // None of the failures consumed the nc.
        s.verify(&a, &req(b"body"), b"password", 1).unwrap();
    }

    #[test]
    fn stale_only_after_expiry_and_only_for_good_response() {
        let mut s = server();
        let nonce = s.issue_nonce(1000, &[2; 16]);
        let mut c = client_for(s.challenge(&nonce, false));
        let a = c.authorize("POST", req(b"").uri, b"", "cn").unwrap();
        assert_eq!(
            s.verify(
                &a,
                &req(b""),
                b"password",
                1000 + DEFAULT_NONCE_LIFETIME_SECS + 1
            )
            .unwrap_err(),
            VerifyError::StaleNonce
        );
        assert!(VerifyError::StaleNonce.is_stale());
        assert_eq!(
            s.verify(
                &a,
                &req(b""),
                b"nope",
                1000 + DEFAULT_NONCE_LIFETIME_SECS + 1
            )
            .unwrap_err(),
            VerifyError::ResponseMismatch
        );
        // At exactly the lifetime it is still valid.
        s.verify(
            &a,
            &req(b""),
            b"password",
            1000 + DEFAULT_NONCE_LIFETIME_SECS,
        )
        .unwrap();
        let stale_ch = s.challenge(&s.issue_nonce(2000, &[4; 16]), true);
        assert!(stale_ch.to_header_value().unwrap().contains("stale=true"));
    }

    #[test]
    fn replay_and_nc_ordering() {
        let mut s = server();
        let nonce = s.issue_nonce(0, &[2; 16]);
        let mut c = client_for(s.challenge(&nonce, false));
        let a1 = c.authorize("POST", req(b"").uri, b"", "cn").unwrap();
        let a2 = c.authorize("POST", req(b"").uri, b"", "cn").unwrap();
        let a3 = c.authorize("POST", req(b"").uri, b"", "cn").unwrap();
        s.verify(&a2, &req(b""), b"password", 1).unwrap();
        assert_eq!(
            s.verify(&a2, &req(b""), b"password", 1).unwrap_err(),
            VerifyError::Replay
        );
        assert_eq!(
            s.verify(&a1, &req(b""), b"password", 1).unwrap_err(),
            VerifyError::Replay
        );
        s.verify(&a3, &req(b""), b"password", 1).unwrap();
        assert_eq!(s.tracked_nonces(), 1);
        // Expired entries are dropped.
        let n2 = s.issue_nonce(1000, &[5; 16]);
        let mut c2 = client_for(s.challenge(&n2, false));
        let b = c2.authorize("POST", req(b"").uri, b"", "cn").unwrap();
        s.verify(&b, &req(b""), b"password", 1000).unwrap();
        assert_eq!(s.tracked_nonces(), 1);
    }

    #[test]
    fn nonces_too_long_for_the_stack_work_the_same() {
        let mut s = server();
        // 136 octets of prefix fill the stack buffer exactly; 137 and more
        // are assembled and decoded on the heap.
        for len in [
            0,
            32,
            NONCE_STACK - NONCE_TRAILER,
            NONCE_STACK - NONCE_TRAILER + 1,
            400,
        ] {
            let prefix: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let nonce = s.issue_nonce_with_prefix(&prefix, 10, &[len as u8; 16]);
            let info = s.decode_nonce(&nonce).unwrap();
            assert_eq!((info.prefix.as_slice(), info.issued_at), (&prefix[..], 10));
            let mut c = client_for(s.challenge(&nonce, false));
            let a1 = c.authorize("POST", req(b"").uri, b"", "cn").unwrap();
            let v = s.verify(&a1, &req(b""), b"password", 11).unwrap();
            assert_eq!(v.nonce_info().prefix, prefix);
            assert_eq!(
                s.verify(&a1, &req(b""), b"password", 11).unwrap_err(),
                VerifyError::Replay,
                "prefix of {len} octets"
            );
            let mut raw = base64::engine::general_purpose::STANDARD
                .decode(&nonce)
                .unwrap();
            let last = raw.len() - 1;
            raw[last] ^= 1;
            let bad = base64::engine::general_purpose::STANDARD.encode(&raw);
            assert_eq!(s.decode_nonce(&bad), Err(VerifyError::InvalidNonce));
        }
        assert_eq!(s.tracked_nonces(), 5);
    }

    #[test]
    fn two_nonces_of_one_second_are_tracked_apart() {
        // The replay cache names a nonce by issue time and MAC: two nonces
        // of the same second, one used, leave the other fresh.
        let mut s = server();
        let n1 = s.issue_nonce(5, &[1; 16]);
        let n2 = s.issue_nonce(5, &[2; 16]);
        let mut c1 = client_for(s.challenge(&n1, false));
        let mut c2 = client_for(s.challenge(&n2, false));
        let a1 = c1.authorize("POST", req(b"").uri, b"", "cn").unwrap();
        let a2 = c2.authorize("POST", req(b"").uri, b"", "cn").unwrap();
        s.verify(&a1, &req(b""), b"password", 6).unwrap();
        s.verify(&a2, &req(b""), b"password", 6).unwrap();
        assert_eq!(s.tracked_nonces(), 2);
        assert_eq!(
            s.verify(&a2, &req(b""), b"password", 6).unwrap_err(),
            VerifyError::Replay
        );
    }

    #[test]
    fn nc_zero_is_refused() {
        let mut s = server();
        let nonce = s.issue_nonce(0, &[2; 16]);
        let ch = s.challenge(&nonce, false);
        let ha1 = compute_ha1(Algorithm::Md5, "u", &ch.realm, b"p", "", "");
        let ha2 = compute_ha2(Algorithm::Md5, Some(Qop::Auth), "POST", req(b"").uri, b"");
        let q = QopParams {
            qop: Qop::Auth,
            nc: 0,
            cnonce: "c",
        };
        let a = Authorization {
            username: "u".into(),
            realm: ch.realm.clone(),
            nonce: nonce.clone(),
            uri: req(b"").uri.into(),
            response: compute_response(Algorithm::Md5, &ha1, &nonce, Some(q), &ha2),
            algorithm: None,
            cnonce: Some("c".into()),
            opaque: Some("op".into()),
            qop: Some(Qop::Auth),
            nc: Some(0),
            auts: None,
        };
        assert_eq!(
            s.verify(&a, &req(b""), b"p", 1).unwrap_err(),
            VerifyError::Replay
        );
    }

    fn single_use_server(capacity: usize) -> DigestServer {
        let mut cfg = ServerConfig::new("r");
        cfg.single_use = true;
        cfg.replay_capacity = capacity;
        DigestServer::new(cfg, SECRET)
    }

    fn get_req() -> Request<'static> {
        Request {
            method: "GET",
            uri: "/",
            body: b"",
        }
    }

    /// One vector, one try (TS 33.102 6.3.2): a wrong response spends a
    /// single-use nonce, so the right one with a higher nc is refused.
    #[test]
    fn single_use_nonce_is_spent_by_a_wrong_response() {
        let mut s = single_use_server(16);
        let nonce = s.issue_nonce(0, &[7; 16]);
        let mut c = client_for(s.challenge(&nonce, false));
        c.set_password(b"wrong");
        let bad = c.authorize("GET", "/", b"", "c").unwrap();
        assert_eq!(
            s.verify(&bad, &get_req(), b"password", 1).unwrap_err(),
            VerifyError::ResponseMismatch
        );
        c.set_password(b"password");
        let good = c.authorize("GET", "/", b"", "c").unwrap();
        assert!(good.nc > bad.nc);
        assert_eq!(
            s.verify(&good, &get_req(), b"password", 2).unwrap_err(),
            VerifyError::NonceSpent
        );
        // A fresh nonce works, once.
        let n2 = s.issue_nonce(2, &[8; 16]);
        let mut c2 = client_for(s.challenge(&n2, false));
        let a = c2.authorize("GET", "/", b"", "c").unwrap();
        s.verify(&a, &get_req(), b"password", 3).unwrap();
        let again = c2.authorize("GET", "/", b"", "c").unwrap();
        assert_eq!(
            s.verify(&again, &get_req(), b"password", 3).unwrap_err(),
            VerifyError::NonceSpent
        );
        // Without single_use the same sequence is accepted (Ua).
        let mut ua = DigestServer::new(ServerConfig::new("r"), SECRET);
        let n3 = ua.issue_nonce(0, &[9; 16]);
        let mut c3 = client_for(ua.challenge(&n3, false));
        c3.set_password(b"wrong");
        let bad = c3.authorize("GET", "/", b"", "c").unwrap();
        assert!(ua.verify(&bad, &get_req(), b"password", 1).is_err());
        c3.set_password(b"password");
        let good = c3.authorize("GET", "/", b"", "c").unwrap();
        ua.verify(&good, &get_req(), b"password", 1).unwrap();
    }

    /// Spent nonces are bounded: expired with the nonce lifetime, capped by
    /// the capacity, and an evicted nonce is stale, never open again.
    #[test]
    fn spent_nonces_are_bounded() {
        let mut s = single_use_server(4);
        let mut spent = Vec::new();
        for t in 0..10u8 {
            let n = s.issue_nonce(u64::from(t), &[t; 16]);
            let mut c = client_for(s.challenge(&n, false));
            c.set_password(b"wrong");
            let bad = c.authorize("GET", "/", b"", "c").unwrap();
            assert!(s.verify(&bad, &get_req(), b"password", 10).is_err());
            assert!(s.tracked_nonces() <= 4);
            c.set_password(b"password");
            spent.push(c.authorize("GET", "/", b"", "c").unwrap());
        }
        for good in &spent {
            let e = s.verify(good, &get_req(), b"password", 10).unwrap_err();
            assert!(
                matches!(e, VerifyError::NonceSpent | VerifyError::StaleNonce),
                "{e:?}"
            );
        }
        // Everything expires with the nonce lifetime.
        let late = 10 + DEFAULT_NONCE_LIFETIME_SECS + 1;
        let n = s.issue_nonce(late, &[99; 16]);
        let mut c = client_for(s.challenge(&n, false));
        let a = c.authorize("GET", "/", b"", "c").unwrap();
        s.verify(&a, &get_req(), b"password", late).unwrap();
        assert_eq!(s.tracked_nonces(), 1);
    }

    #[test]
    fn bounded_cache_evicts_with_low_water_mark() {
        let mut cfg = ServerConfig::new("r");
        cfg.replay_capacity = 2;
        let mut s = DigestServer::new(cfg, SECRET);
        let mut clients = Vec::new();
        for t in 0..3u8 {
            let n = s.issue_nonce(u64::from(t), &[t; 16]);
            clients.push(client_for(s.challenge(&n, false)));
        }
        let uri = "/";
        let r = Request {
            method: "GET",
            uri,
            body: b"",
        };
        let first: Vec<_> = clients
            .iter_mut()
            .map(|c| c.authorize("GET", uri, b"", "c").unwrap())
            .collect();
        s.verify(&first[0], &r, b"password", 10).unwrap();
        s.verify(&first[1], &r, b"password", 10).unwrap();
        s.verify(&first[2], &r, b"password", 10).unwrap(); // evicts nonce issued at 0
        assert_eq!(s.tracked_nonces(), 2);
        // The evicted nonce cannot be replayed: it is now stale.
        assert_eq!(
            s.verify(&first[0], &r, b"password", 10).unwrap_err(),
            VerifyError::StaleNonce
        );
        // The others still enforce nc ordering.
        assert_eq!(
            s.verify(&first[2], &r, b"password", 10).unwrap_err(),
            VerifyError::Replay
        );
    }
}
