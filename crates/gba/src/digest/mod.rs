//! HTTP Digest access authentication: RFC 7616 (compatible with RFC 2617)
//! and its AKA profile RFC 3310 (AKAv1-MD5), sans-IO.
//!
//! Used on Ub (UE <-> BSF, TS 24.109 clause 4 / Annex A, PROFILE.md
//! section 4) and on Ua (UE <-> BM-SC, TS 24.109 clause 5.2 / Annex B,
//! PROFILE.md section 3).
//!
//! * [`header`]: parsing and formatting of `WWW-Authenticate`,
//!   `Authorization` and `Authentication-Info` (RFC 7616 3.3-3.5, RFC 7235
//!   2.1, RFC 3310 3.4 for `auts`).
//! * [`compute_ha1`], [`compute_ha2`], [`compute_response`],
//!   [`compute_rspauth`]: the formulas of RFC 7616 3.4.1-3.4.3 / RFC 2617
//!   3.2.2-3.2.3.
//! * [`DigestClient`]: answers challenges and checks `rspauth`.
//! * [`DigestServer`]: issues expiring, stateless-verifiable nonces, verifies
//!   `Authorization` headers with a replay cache, and builds
//!   `Authentication-Info`.
//!
//! ```text
//! HA1      = H(username ":" realm ":" password)
//! HA1-sess = H(H(username ":" realm ":" password) ":" nonce ":" cnonce)
//! HA2      = H(method ":" uri)                          qop=auth (or none)
//! HA2      = H(method ":" uri ":" H(entity-body))       qop=auth-int
//! response = H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2)
//! response = H(HA1 ":" nonce ":" HA2)                   no qop (RFC 2069)
//! rspauth  = response with method "" in HA2             (RFC 2617 3.2.3)
//! ```
//!
//! For AKAv1-MD5 (RFC 3310 3.1) H is MD5 and the password is RES as raw
//! octets, so the HA1 input is `username ":" realm ":" RES-bytes`.

use core::fmt;
use core::str::FromStr;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

pub mod client;
pub mod header;
pub mod server;

pub use client::{ClientError, DigestClient};
pub use header::{AuthenticationInfo, Authorization, Challenge, HeaderError};
pub use server::{DigestServer, NonceInfo, Request, ServerConfig, Verified, VerifyError};

/// A Digest algorithm (RFC 7616 3.3 and 6.1; RFC 3310 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// `MD5` (the default when the parameter is absent).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-512-256`.
    Sha512_256,
    /// `SHA-512-256-sess`.
    Sha512_256Sess,
    /// `AKAv1-MD5` (RFC 3310): MD5 with RES as the password.
    AkaV1Md5,
}

impl Algorithm {
    /// Every algorithm this crate knows (RFC 7616 3.3, RFC 3310 3.1).
    pub const ALL: [Algorithm; 7] = [
        Algorithm::Md5,
        Algorithm::Md5Sess,
        Algorithm::Sha256,
        Algorithm::Sha256Sess,
        Algorithm::Sha512_256,
        Algorithm::Sha512_256Sess,
        Algorithm::AkaV1Md5,
    ];

    /// The token used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
            Self::Sha512_256 => "SHA-512-256",
            Self::Sha512_256Sess => "SHA-512-256-sess",
            Self::AkaV1Md5 => "AKAv1-MD5",
        }
    }

    /// Whether this is a `-sess` variant (RFC 7616 3.4.2).
    pub fn is_session(self) -> bool {
        matches!(
            self,
            Self::Md5Sess | Self::Sha256Sess | Self::Sha512_256Sess
        )
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = HeaderError;

    /// Case-insensitive (RFC 7616 3.3 lists the tokens; servers differ in
    /// case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| HeaderError::UnsupportedAlgorithm(s.to_owned()))
    }
}

/// Quality of protection (RFC 7616 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Qop {
    /// `auth`: authentication only.
    Auth,
    /// `auth-int`: authentication with integrity protection of the body.
    AuthInt,
}

impl Qop {
    /// The token used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::AuthInt => "auth-int",
        }
    }
}

impl fmt::Display for Qop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Qop {
    type Err = HeaderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auth") {
            Ok(Self::Auth)
        } else if s.eq_ignore_ascii_case("auth-int") {
            Ok(Self::AuthInt)
        } else {
            Err(HeaderError::UnsupportedQop(s.to_owned()))
        }
    }
}

/// The qop-dependent inputs of the response (RFC 7616 3.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QopParams<'a> {
    /// The chosen qop.
    pub qop: Qop,
    /// The nonce count.
    pub nc: u32,
    /// The client nonce.
    pub cnonce: &'a str,
}

/// Writes the lowercase hex of `bytes` into `out` (as many bytes as fit,
/// two digits each): the one table of the server's and the client's
/// digests.
pub(crate) fn write_lower_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// The longest hex digest of the supported algorithms (SHA-256 and
/// SHA-512/256: 32 bytes).
pub(crate) const MAX_HEX: usize = 64;

/// A lowercase hex digest on the stack, zeroed when dropped (it may be an
/// HA1, which stands for the password): the digests of a request and its
/// answer, server and client side, allocate nothing.
#[derive(Clone)]
pub(crate) struct HexDigest {
    buf: [u8; MAX_HEX],
    len: usize,
}

impl HexDigest {
    /// The lowercase hex of `bytes` (at most [`MAX_HEX`] digits).
    pub(crate) fn encode(bytes: &[u8]) -> Self {
        let mut buf = [0u8; MAX_HEX];
        let len = (2 * bytes.len()).min(MAX_HEX);
        write_lower_hex(bytes, &mut buf[..len]);
        HexDigest { buf, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only hex digits were written.
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl Drop for HexDigest {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

/// Lowercase hex of H(parts concatenated).
pub(crate) fn hash_hex(algorithm: Algorithm, parts: &[&[u8]]) -> HexDigest {
    fn run<D: Digest>(parts: &[&[u8]]) -> HexDigest {
        let mut d = D::new();
        for p in parts {
            d.update(p);
        }
        HexDigest::encode(&d.finalize())
    }
    match algorithm {
        Algorithm::Md5 | Algorithm::Md5Sess | Algorithm::AkaV1Md5 => run::<Md5>(parts),
        Algorithm::Sha256 | Algorithm::Sha256Sess => run::<Sha256>(parts),
        Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => run::<Sha512_256>(parts),
    }
}

/// The 8 lowercase hex digits of a nonce count (RFC 7616 3.4).
pub(crate) fn nc_hex(nc: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    write_lower_hex(&nc.to_be_bytes(), &mut out);
    out
}

/// HA1 (RFC 7616 3.4.2). `nonce` and `cnonce` are only used by the `-sess`
/// algorithms. For AKAv1-MD5 pass RES as `password` (RFC 3310 3.1).
pub fn compute_ha1(
    algorithm: Algorithm,
    username: &str,
    realm: &str,
    password: &[u8],
    nonce: &str,
    cnonce: &str,
) -> Zeroizing<String> {
    let base = base_ha1(algorithm, username, realm, password);
    Zeroizing::new(
        session_ha1(algorithm, base, nonce, cnonce)
            .as_str()
            .to_owned(),
    )
}

/// `H(username ":" realm ":" password)`: HA1 of the non-session
/// algorithms, the same for every request with the same credentials and
/// realm (RFC 7616 3.4.2), so a client may keep it.
pub(crate) fn base_ha1(
    algorithm: Algorithm,
    username: &str,
    realm: &str,
    password: &[u8],
) -> HexDigest {
    hash_hex(
        algorithm,
        &[username.as_bytes(), b":", realm.as_bytes(), b":", password],
    )
}

/// HA1 from [`base_ha1`]: itself, or for a `-sess` algorithm
/// `H(base ":" nonce ":" cnonce)` (RFC 7616 3.4.2).
pub(crate) fn session_ha1(
    algorithm: Algorithm,
    base: HexDigest,
    nonce: &str,
    cnonce: &str,
) -> HexDigest {
    if algorithm.is_session() {
        hash_hex(
            algorithm,
            &[
                base.as_bytes(),
                b":",
                nonce.as_bytes(),
                b":",
                cnonce.as_bytes(),
            ],
        )
    } else {
        base
    }
}

/// HA2 (RFC 7616 3.4.3): `H(method ":" uri)` for `auth` or no qop,
/// `H(method ":" uri ":" H(body))` for `auth-int`.
pub fn compute_ha2(
    algorithm: Algorithm,
    qop: Option<Qop>,
    method: &str,
    uri: &str,
    body: &[u8],
) -> String {
    ha2(algorithm, qop, method, uri, body).as_str().to_owned()
}

/// [`compute_ha2`] on the stack. Computed for every request and answer:
/// nothing is remembered from one body to the next (a memo of the last
/// body only ever pays off for a load generator repeating one request).
pub(crate) fn ha2(
    algorithm: Algorithm,
    qop: Option<Qop>,
    method: &str,
    uri: &str,
    body: &[u8],
) -> HexDigest {
    match qop {
        Some(Qop::AuthInt) => {
            let hbody = hash_hex(algorithm, &[body]);
            hash_hex(
                algorithm,
                &[
                    method.as_bytes(),
                    b":",
                    uri.as_bytes(),
                    b":",
                    hbody.as_bytes(),
                ],
            )
        }
        Some(Qop::Auth) | None => hash_hex(algorithm, &[method.as_bytes(), b":", uri.as_bytes()]),
    }
}

/// The request-digest (RFC 7616 3.4.1; RFC 2069 form when `qop` is `None`).
pub fn compute_response(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    qop: Option<QopParams<'_>>,
    ha2: &str,
) -> String {
    request_digest(algorithm, ha1.as_bytes(), nonce, qop, ha2.as_bytes())
        .as_str()
        .to_owned()
}

/// [`compute_response`] on the stack.
pub(crate) fn request_digest(
    algorithm: Algorithm,
    ha1: &[u8],
    nonce: &str,
    qop: Option<QopParams<'_>>,
    ha2: &[u8],
) -> HexDigest {
    match qop {
        Some(q) => hash_hex(
            algorithm,
            &[
                ha1,
                b":",
                nonce.as_bytes(),
                b":",
                &nc_hex(q.nc),
                b":",
                q.cnonce.as_bytes(),
                b":",
                q.qop.as_str().as_bytes(),
                b":",
                ha2,
            ],
        ),
        None => hash_hex(algorithm, &[ha1, b":", nonce.as_bytes(), b":", ha2]),
    }
}

/// `rspauth` of `Authentication-Info` (RFC 2617 3.2.3, RFC 7616 3.5): the
/// response formula with an empty method in HA2, and for `auth-int` the
/// hash of the *response* body.
pub fn compute_rspauth(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    qop: QopParams<'_>,
    uri: &str,
    response_body: &[u8],
) -> String {
    rspauth(algorithm, ha1.as_bytes(), nonce, qop, uri, response_body)
        .as_str()
        .to_owned()
}

/// [`compute_rspauth`] on the stack.
pub(crate) fn rspauth(
    algorithm: Algorithm,
    ha1: &[u8],
    nonce: &str,
    qop: QopParams<'_>,
    uri: &str,
    response_body: &[u8],
) -> HexDigest {
    let ha2 = ha2(algorithm, Some(qop.qop), "", uri, response_body);
    request_digest(algorithm, ha1, nonce, Some(qop), ha2.as_bytes())
}

/// Formats a nonce count as exactly 8 lowercase hex digits (RFC 7616 3.4).
pub fn format_nc(nc: u32) -> String {
    // Hex digits are ASCII.
    String::from_utf8_lossy(&nc_hex(nc)).into_owned()
}

/// Parses a nonce count: exactly 8 hex digits (RFC 7616 3.4).
pub fn parse_nc(text: &str) -> Result<u32, HeaderError> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HeaderError::InvalidValue {
            param: "nc".to_owned(),
            reason: "must be exactly 8 hexadecimal digits",
        });
    }
    u32::from_str_radix(text, 16).map_err(|_| HeaderError::InvalidValue {
        param: "nc".to_owned(),
        reason: "must be exactly 8 hexadecimal digits",
    })
}

/// Constant-time comparison of a hex digest with a received one, ignoring
/// the ASCII case of the received one (RFC 7616 asks for lowercase; some
/// peers send uppercase). The length is not secret.
pub(crate) fn digest_eq(expected: &HexDigest, received: &str) -> bool {
    let received = received.as_bytes();
    if received.len() != expected.len {
        return false;
    }
    let mut lower = [0u8; MAX_HEX];
    for (l, r) in lower.iter_mut().zip(received) {
        *l = r.to_ascii_lowercase();
    }
    bool::from(expected.as_bytes().ct_eq(&lower[..expected.len]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example() {
        let ha1 = compute_ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            b"Circle Of Life",
            "",
            "",
        );
        assert_eq!(&*ha1, "939e7578ed9e3c518a452acee763bce9");
        let ha2 = compute_ha2(
            Algorithm::Md5,
            Some(Qop::Auth),
            "GET",
            "/dir/index.html",
            b"",
        );
        assert_eq!(ha2, "39aff3a2bab6126f332b942af96d3366");
        let r = compute_response(
            Algorithm::Md5,
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(QopParams {
                qop: Qop::Auth,
                nc: 1,
                cnonce: "0a4f113b",
            }),
            &ha2,
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn sess_differs_from_plain() {
        let a = compute_ha1(Algorithm::Sha256, "u", "r", b"p", "n", "c");
        let b = compute_ha1(Algorithm::Sha256Sess, "u", "r", b"p", "n", "c");
        assert_ne!(*a, *b);
        let expected = hash_hex(Algorithm::Sha256, &[a.as_bytes(), b":n:c"]);
        assert_eq!(*b, expected.as_str());
        assert_eq!(
            compute_ha1(Algorithm::Sha512_256, "u", "r", b"p", "", "").len(),
            64
        );
    }

    #[test]
    fn lower_hex_matches_the_hex_crate() {
        let all: Vec<u8> = (0..=255).collect();
        for chunk in all.chunks(MAX_HEX / 2) {
            assert_eq!(HexDigest::encode(chunk).as_str(), hex::encode(chunk));
        }
        assert_eq!(HexDigest::encode(&[]).as_str(), "");
        assert_eq!(HexDigest::encode(&[0x01, 0xab, 0xff]).as_str(), "01abff");
        assert_eq!(&nc_hex(0xab), b"000000ab");
        let d = HexDigest::encode(&[0xab; 4]);
        assert!(digest_eq(&d, "ABABABAB"));
        assert!(!digest_eq(&d, "abababac"));
        assert!(!digest_eq(&d, "ababab"));
        assert!(!digest_eq(&d, &"ab".repeat(40)));
    }

    #[test]
    fn nc_parse_format() {
        assert_eq!(parse_nc("00000001").unwrap(), 1);
        assert_eq!(parse_nc("FFFFFFFF").unwrap(), u32::MAX);
        assert_eq!(format_nc(0xab), "000000ab");
        for bad in ["1", "000000001", "0000000g", "+0000001", "", "０0000001"] {
            assert!(parse_nc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn algorithm_tokens() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>().unwrap(), a);
            assert_eq!(a.as_str().to_lowercase().parse::<Algorithm>().unwrap(), a);
        }
        assert!("SHA-1".parse::<Algorithm>().is_err());
        assert_eq!("AUTH-INT".parse::<Qop>().unwrap(), Qop::AuthInt);
        assert!("auth-conf".parse::<Qop>().is_err());
    }

    #[test]
    fn digest_eq_case_insensitive_received() {
        let d = HexDigest::encode(&[0xab, 0xcd]);
        assert!(digest_eq(&d, "ABCD"));
        assert!(!digest_eq(&d, "abce"));
        assert!(!digest_eq(&d, "abc"));
    }
}
