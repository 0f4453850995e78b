//! Digest client (RFC 7616 3.4 and 3.5; RFC 3310 3.2-3.4 for AKA), sans-IO.
//!
//! The caller feeds the parsed `WWW-Authenticate` challenge
//! ([`DigestClient::handle_challenge`]), asks for an `Authorization` for each
//! request ([`DigestClient::authorize`], or [`DigestClient::authorize_into`]
//! which writes the header value into a buffer the caller reuses, with a
//! fresh `cnonce` it generated), and checks the `Authentication-Info` of the
//! answer ([`DigestClient::verify_authentication_info`]). The client tracks
//! the nonce count per nonce and switches to `nextnonce` when the server
//! sends one.
//!
//! Security choices: the client refuses challenges without `qop` (RFC 2069
//! mode has no client nonce and no body protection; such challenges are
//! only parsed) and prefers `auth-int` when offered (PROFILE.md section 3).
//!
//! HA1 is kept per (username, realm, password, algorithm); HA2 and the
//! request-digest are computed for every request and answer (RFC 7616
//! 3.4.1-3.4.3): an `auth-int` request and its `rspauth` check cost six
//! hash computations, written as hex on the stack.

use core::fmt;
use core::fmt::Write as _;

use zeroize::Zeroizing;

use super::header::{AuthenticationInfo, Authorization, Challenge, HeaderError};
use super::{
    base_ha1, digest_eq, ha2, parse_nc, request_digest, session_ha1, Algorithm, HexDigest, Qop,
    QopParams,
};
use crate::aka::Auts;

/// Errors of the Digest client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No challenge has been received yet.
    #[error("no Digest challenge to answer")]
    NoChallenge,
    /// The challenge offers no `qop`; RFC 2069 mode is not used.
    #[error("challenge offers no qop (RFC 2069 mode is refused)")]
    QopRequired,
    /// The nonce count would wrap around: a new challenge is needed.
    #[error("nonce count exhausted for this nonce")]
    NonceCountExhausted,
    /// No request has been authorized whose answer could be checked.
    #[error("no outstanding request to match Authentication-Info against")]
    NoOutstandingRequest,
    /// `Authentication-Info` carries no `rspauth`.
    #[error("Authentication-Info without rspauth")]
    MissingRspauth,
    /// A parameter of `Authentication-Info` does not match the request.
    #[error("Authentication-Info parameter `{0}` does not match the request")]
    AuthInfoMismatch(&'static str),
    /// `rspauth` is wrong: the server does not know the password or the
    /// response body was modified.
    #[error("rspauth verification failed")]
    RspauthMismatch,
    /// A parameter of the `Authorization` cannot be written as a
    /// quoted-string (RFC 9110 5.6.4): it contains a control character.
    #[error("Authorization parameter `{0}` contains a control character")]
    Unwritable(&'static str),
    /// The `Authentication-Info` value does not parse.
    #[error("malformed Authentication-Info: {0}")]
    MalformedAuthenticationInfo(HeaderError),
}

/// An `Authentication-Info` value read in place (RFC 7616 3.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct InfoView<'a> {
    nextnonce: Option<&'a str>,
    qop: Option<Qop>,
    rspauth: Option<&'a str>,
    cnonce: Option<&'a str>,
    nc: Option<u32>,
}

impl<'a> InfoView<'a> {
    fn of(info: &'a AuthenticationInfo) -> Self {
        InfoView {
            nextnonce: info.nextnonce.as_deref(),
            qop: info.qop,
            rspauth: info.rspauth.as_deref(),
            cnonce: info.cnonce.as_deref(),
            nc: info.nc,
        }
    }

    /// The layout `AuthenticationInfo::to_header_value` writes (lowercase
    /// names of RFC 7616 3.5, each once, `", "` between them, `qop` and
    /// `nc` as tokens, the others quoted without escapes or control
    /// characters), read without copying: `None` for anything else, which
    /// the caller hands to [`AuthenticationInfo::parse`] (for this layout
    /// both read the same values).
    fn read_layout(value: &'a str) -> Option<Self> {
        fn quoted(v: &str) -> Option<(&str, &str)> {
            let v = v.strip_prefix('"')?;
            let end = v.find('"')?;
            let (inner, rest) = v.split_at(end);
            if inner
                .bytes()
                .any(|b| b == b'\\' || (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return None;
            }
            Some((inner, &rest[1..]))
        }
        fn token(v: &str) -> (&str, &str) {
            let end = v.find(',').unwrap_or(v.len());
            v.split_at(end)
        }
        let mut view = InfoView::default();
        let mut rest = value;
        while !rest.is_empty() {
            let (name, v) = rest.split_once('=')?;
            rest = match name {
                "nextnonce" if view.nextnonce.is_none() => {
                    let (x, r) = quoted(v)?;
                    view.nextnonce = Some(x);
                    r
                }
                "rspauth" if view.rspauth.is_none() => {
                    let (x, r) = quoted(v)?;
                    view.rspauth = Some(x);
                    r
                }
                "cnonce" if view.cnonce.is_none() => {
                    let (x, r) = quoted(v)?;
                    view.cnonce = Some(x);
                    r
                }
                "qop" if view.qop.is_none() => {
                    let (x, r) = token(v);
                    view.qop = Some(match x {
                        "auth" => Qop::Auth,
                        "auth-int" => Qop::AuthInt,
                        _ => return None,
                    });
                    r
                }
                "nc" if view.nc.is_none() => {
                    let (x, r) = token(v);
                    view.nc = Some(parse_nc(x).ok()?);
                    r
                }
                _ => return None,
            };
            if !rest.is_empty() {
                rest = rest.strip_prefix(", ")?;
                if rest.is_empty() {
                    return None;
                }
            }
        }
        Some(view)
    }
}

/// What the client remembers about the last request, to check `rspauth`
/// (its buffers are reused from request to request).
#[derive(Default)]
struct Outstanding {
    /// Whether a request is outstanding.
    pending: bool,
    algorithm: Option<Algorithm>,
    ha1: Option<HexDigest>,
    nonce: String,
    cnonce: String,
    nc: u32,
    qop: Option<Qop>,
    uri: String,
}

/// `H(username ":" realm ":" password)` of the last request: the same for
/// every request until the password, the realm or the algorithm changes
/// (a UE keeps it per B-TID instead of hashing its MRK on every request).
struct BaseHa1 {
    algorithm: Algorithm,
    realm: String,
    ha1: HexDigest,
}

/// A Digest client for one set of credentials.
pub struct DigestClient {
    username: String,
    password: Zeroizing<Vec<u8>>,
    preferred_qop: Qop,
    challenge: Option<Challenge>,
    nc: u32,
    outstanding: Outstanding,
    base_ha1: Option<BaseHa1>,
}

impl fmt::Debug for DigestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestClient")
            .field("username", &self.username)
            .field(
                "password",
                &format_args!("<redacted {} bytes>", self.password.len()),
            )
            .field("preferred_qop", &self.preferred_qop)
            .field("challenge", &self.challenge)
            .field("nc", &self.nc)
            .finish_non_exhaustive()
    }
}

/// The parts of an `Authorization` computed for one request.
struct Computed {
    qop: Qop,
    nc: u32,
    response: HexDigest,
}

/// Appends `name="value"` (RFC 9110 5.6.4 quoted-string, `"` and `\`
/// escaped), as the `Authorization` formatter of `header.rs` writes it.
fn push_quoted(out: &mut String, name: &'static str, value: &str) -> Result<(), ClientError> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ClientError::Unwritable(name));
    }
    out.push_str(name);
    out.push_str("=\"");
    let mut run = 0;
    for (i, b) in value.bytes().enumerate() {
        if b == b'"' || b == b'\\' {
            out.push_str(&value[run..i]);
            out.push('\\');
            run = i;
        }
    }
    out.push_str(&value[run..]);
    out.push('"');
    Ok(())
}

impl DigestClient {
    /// A client with the given username and password bytes. On Ua the
    /// password is the base64 text of the NAF key / MRK (TS 24.109 5.2.2,
    /// PROFILE.md section 3); on Ub it is RES (RFC 3310 3.1), which is only
    /// known after the challenge, see [`Self::set_password`].
    pub fn new(username: impl Into<String>, password: &[u8]) -> Self {
        Self {
            username: username.into(),
            password: Zeroizing::new(password.to_vec()),
            preferred_qop: Qop::AuthInt,
            challenge: None,
            nc: 0,
            outstanding: Outstanding::default(),
            base_ha1: None,
        }
    }

    /// Replaces the password (e.g. with RES once the USIM has run).
    pub fn set_password(&mut self, password: &[u8]) {
        self.password = Zeroizing::new(password.to_vec());
        self.base_ha1 = None;
    }

    /// Chooses which qop to use when the server offers both (default
    /// `auth-int`). If only one is offered, that one is used.
    pub fn set_preferred_qop(&mut self, qop: Qop) {
        self.preferred_qop = qop;
    }

    /// The username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The challenge currently answered, if any.
    pub fn challenge(&self) -> Option<&Challenge> {
        self.challenge.as_ref()
    }

    /// Accepts a new challenge (from a 401, including one with
    /// `stale=true`). The nonce count restarts at 1.
    pub fn handle_challenge(&mut self, challenge: Challenge) -> Result<(), ClientError> {
        if challenge.qop.is_empty() {
            return Err(ClientError::QopRequired);
        }
        self.challenge = Some(challenge);
        self.nc = 0;
        self.outstanding.pending = false;
        Ok(())
    }

    /// The `Authorization` for a request. `cnonce` is a fresh client nonce
    /// supplied by the caller (e.g. base64 of 16 random bytes).
    pub fn authorize(
        &mut self,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce: &str,
    ) -> Result<Authorization, ClientError> {
        let c = self.compute(method, uri, body, cnonce, false)?;
        Ok(self.authorization(uri, cnonce, c, None))
    }

    /// As [`Self::authorize`], but writes the `Authorization` header value
    /// (the same text as `authorize(..)?.to_header_value()`) into `out`,
    /// which is cleared first: a client sending many requests reuses one
    /// buffer.
    pub fn authorize_into(
        &mut self,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce: &str,
        out: &mut String,
    ) -> Result<(), ClientError> {
        let c = self.compute(method, uri, body, cnonce, false)?;
        let ch = self.challenge.as_ref().ok_or(ClientError::NoChallenge)?;
        out.clear();
        out.push_str("Digest ");
        push_quoted(out, "username", &self.username)?;
        out.push_str(", ");
        push_quoted(out, "realm", &ch.realm)?;
        out.push_str(", ");
        push_quoted(out, "nonce", &ch.nonce)?;
        out.push_str(", ");
        push_quoted(out, "uri", uri)?;
        if let Some(a) = ch.algorithm {
            out.push_str(", algorithm=");
            out.push_str(a.as_str());
        }
        out.push_str(", ");
        push_quoted(out, "response", c.response.as_str())?;
        out.push_str(", qop=");
        out.push_str(c.qop.as_str());
        let _ = write!(out, ", nc={:08x}, ", c.nc);
        push_quoted(out, "cnonce", cnonce)?;
        if let Some(o) = &ch.opaque {
            out.push_str(", ");
            push_quoted(out, "opaque", o)?;
        }
        Ok(())
    }

    /// The `Authorization` that reports an AKA synchronisation failure
    /// (RFC 3310 3.4): it carries `auts` and its response is computed with
    /// an empty password.
    pub fn authorize_resync(
        &mut self,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce: &str,
        auts: &Auts,
    ) -> Result<Authorization, ClientError> {
        let c = self.compute(method, uri, body, cnonce, true)?;
        Ok(self.authorization(uri, cnonce, c, Some(auts.to_base64())))
    }

    /// The `Authorization` of a computed request.
    fn authorization(
        &self,
        uri: &str,
        cnonce: &str,
        c: Computed,
        auts: Option<String>,
    ) -> Authorization {
        // `compute` succeeded, so there is a challenge.
        let (realm, nonce, algorithm, opaque) = match &self.challenge {
            Some(ch) => (
                ch.realm.clone(),
                ch.nonce.clone(),
                ch.algorithm,
                ch.opaque.clone(),
            ),
            None => Default::default(),
        };
        Authorization {
            username: self.username.clone(),
            realm,
            nonce,
            uri: uri.to_owned(),
            response: c.response.as_str().to_owned(),
            algorithm,
            cnonce: Some(cnonce.to_owned()),
            opaque,
            qop: Some(c.qop),
            nc: Some(c.nc),
            auts,
        }
    }

    /// HA1 before the session step: kept from the last request when the
    /// algorithm and realm are the same (the password is the same: a new
    /// one clears it), else computed and kept.
    fn base_ha1(&mut self, algorithm: Algorithm, realm: &str) -> HexDigest {
        match &self.base_ha1 {
            Some(b) if b.algorithm == algorithm && b.realm == realm => b.ha1.clone(),
            _ => {
                let ha1 = base_ha1(algorithm, &self.username, realm, &self.password);
                self.base_ha1 = Some(BaseHa1 {
                    algorithm,
                    realm: realm.to_owned(),
                    ha1: ha1.clone(),
                });
                ha1
            }
        }
    }

    /// Computes the response of a request and remembers what checking its
    /// `rspauth` needs; with `empty_password` (RFC 3310 3.4, `auts`) the
    /// response is computed with an empty password.
    fn compute(
        &mut self,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce: &str,
        empty_password: bool,
    ) -> Result<Computed, ClientError> {
        let ch = self.challenge.as_ref().ok_or(ClientError::NoChallenge)?;
        let qop = if ch.qop.contains(&self.preferred_qop) {
            self.preferred_qop
        } else {
            *ch.qop.first().ok_or(ClientError::QopRequired)?
        };
        let nc = self
            .nc
            .checked_add(1)
            .ok_or(ClientError::NonceCountExhausted)?;
        let algorithm = ch.effective_algorithm();
        let base = if empty_password {
            base_ha1(algorithm, &self.username, &ch.realm, b"")
        } else {
            let realm = ch.realm.clone();
            self.base_ha1(algorithm, &realm)
        };
        let ch = self.challenge.as_ref().ok_or(ClientError::NoChallenge)?;
        // RFC 7616 3.4.2: the -sess algorithms hash the nonces into HA1.
        let ha1 = session_ha1(algorithm, base, &ch.nonce, cnonce);
        let ha2 = ha2(algorithm, Some(qop), method, uri, body);
        let response = request_digest(
            algorithm,
            ha1.as_bytes(),
            &ch.nonce,
            Some(QopParams { qop, nc, cnonce }),
            ha2.as_bytes(),
        );
        let out = &mut self.outstanding;
        out.pending = true;
        out.algorithm = Some(algorithm);
        out.ha1 = Some(ha1);
        out.nonce.clear();
        out.nonce.push_str(&ch.nonce);
        out.cnonce.clear();
        out.cnonce.push_str(cnonce);
        out.nc = nc;
        out.qop = Some(qop);
        out.uri.clear();
        out.uri.push_str(uri);
        self.nc = nc;
        Ok(Computed { qop, nc, response })
    }

    /// Checks the `Authentication-Info` of the answer to the last request
    /// (RFC 7616 3.5, RFC 2617 3.2.3): `rspauth` must be present and correct
    /// for `response_body` (which matters for `auth-int`), and `qop`, `nc`,
    /// `cnonce`, when present, must echo the request. On success a
    /// `nextnonce` replaces the current nonce (nonce count restarts).
    pub fn verify_authentication_info(
        &mut self,
        info: &AuthenticationInfo,
        response_body: &[u8],
    ) -> Result<(), ClientError> {
        self.verify(InfoView::of(info), response_body)
    }

    /// [`Self::verify_authentication_info`] of an `Authentication-Info`
    /// header value: the usual layout is read in place, any other goes
    /// through [`AuthenticationInfo::parse`].
    pub fn verify_authentication_info_value(
        &mut self,
        value: &str,
        response_body: &[u8],
    ) -> Result<(), ClientError> {
        match InfoView::read_layout(value) {
            Some(view) => self.verify(view, response_body),
            None => {
                let info = AuthenticationInfo::parse(value)
                    .map_err(ClientError::MalformedAuthenticationInfo)?;
                self.verify(InfoView::of(&info), response_body)
            }
        }
    }

    fn verify(&mut self, info: InfoView<'_>, response_body: &[u8]) -> Result<(), ClientError> {
        let out = &self.outstanding;
        let (true, Some(algorithm), Some(ha1), Some(qop)) =
            (out.pending, out.algorithm, out.ha1.as_ref(), out.qop)
        else {
            return Err(ClientError::NoOutstandingRequest);
        };
        let rspauth = info.rspauth.ok_or(ClientError::MissingRspauth)?;
        if info.qop.is_some_and(|q| q != qop) {
            return Err(ClientError::AuthInfoMismatch("qop"));
        }
        if info.nc.is_some_and(|n| n != out.nc) {
            return Err(ClientError::AuthInfoMismatch("nc"));
        }
        if info.cnonce.is_some_and(|c| c != out.cnonce) {
            return Err(ClientError::AuthInfoMismatch("cnonce"));
        }
        // RFC 2617 3.2.3: rspauth is the request-digest with an empty
        // method in HA2 and, for auth-int, the hash of the response body.
        let expected = super::rspauth(
            algorithm,
            ha1.as_bytes(),
            &out.nonce,
            QopParams {
                qop,
                nc: out.nc,
                cnonce: &out.cnonce,
            },
            &out.uri,
            response_body,
        );
        if !digest_eq(&expected, rspauth) {
            return Err(ClientError::RspauthMismatch);
        }
        self.outstanding.pending = false;
        if let (Some(next), Some(ch)) = (info.nextnonce, self.challenge.as_mut()) {
            if next != ch.nonce {
                ch.nonce.clear();
                ch.nonce.push_str(next);
                ch.stale = false;
                self.nc = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{compute_ha1, compute_ha2, compute_response, compute_rspauth, QopParams};

    fn challenge(qop: Vec<Qop>) -> Challenge {
        Challenge {
            realm: "testrealm@host.com".into(),
            domain: None,
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            opaque: Some("5ccc069c403ebaf9f0171e9517f40e41".into()),
            stale: false,
            algorithm: None,
            qop,
        }
    }

    #[test]
    fn rfc2617_example_response_and_nc() {
        let mut c = DigestClient::new("Mufasa", b"Circle Of Life");
        c.handle_challenge(challenge(vec![Qop::Auth])).unwrap();
        let a = c
            .authorize("GET", "/dir/index.html", b"", "0a4f113b")
            .unwrap();
        assert_eq!(a.response, "6629fae49393a05397450978507c4ef1");
        assert_eq!(a.nc, Some(1));
        assert_eq!(
            a.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
        let b = c
            .authorize("GET", "/dir/index.html", b"", "0a4f113b")
            .unwrap();
        assert_eq!(b.nc, Some(2));
        assert_ne!(a.response, b.response);
    }

    #[test]
    fn prefers_auth_int_and_refuses_no_qop() {
        let mut c = DigestClient::new("u", b"p");
        assert_eq!(
            c.authorize("GET", "/", b"", "c").unwrap_err(),
            ClientError::NoChallenge
        );
        assert_eq!(
            c.handle_challenge(challenge(vec![])),
            Err(ClientError::QopRequired)
        );
        c.handle_challenge(challenge(vec![Qop::Auth, Qop::AuthInt]))
            .unwrap();
        assert_eq!(
            c.authorize("GET", "/", b"", "c").unwrap().qop,
            Some(Qop::AuthInt)
        );
        c.set_preferred_qop(Qop::Auth);
        assert_eq!(
            c.authorize("GET", "/", b"", "c").unwrap().qop,
            Some(Qop::Auth)
        );
        assert!(!format!("{c:?}").contains("p\""));
    }

    #[test]
    fn rspauth_checks() {
        let mut c = DigestClient::new("u", b"p");
        assert_eq!(
            c.verify_authentication_info(&AuthenticationInfo::default(), b""),
            Err(ClientError::NoOutstandingRequest)
        );
        c.handle_challenge(challenge(vec![Qop::AuthInt])).unwrap();
        c.authorize("POST", "/x", b"req", "cn").unwrap();
        let ha1 = compute_ha1(Algorithm::Md5, "u", "testrealm@host.com", b"p", "", "");
        let good = compute_rspauth(
            Algorithm::Md5,
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            QopParams {
                qop: Qop::AuthInt,
                nc: 1,
                cnonce: "cn",
            },
            "/x",
            b"resp",
        );
        let mut info = AuthenticationInfo {
            rspauth: Some(good.clone()),
            nc: Some(2),
            ..Default::default()
        };
        assert_eq!(
            c.verify_authentication_info(&info, b"resp"),
            Err(ClientError::AuthInfoMismatch("nc"))
        );
        info.nc = Some(1);
        assert_eq!(
            c.verify_authentication_info(&info, b"tampered"),
            Err(ClientError::RspauthMismatch)
        );
        info.rspauth = None;
        assert_eq!(
            c.verify_authentication_info(&info, b"resp"),
            Err(ClientError::MissingRspauth)
        );
        info.rspauth = Some(good);
        info.nextnonce = Some("fresh".into());
        c.verify_authentication_info(&info, b"resp").unwrap();
        assert_eq!(c.challenge().unwrap().nonce, "fresh");
        let next = c.authorize("POST", "/x", b"", "cn2").unwrap();
        assert_eq!(next.nonce, "fresh");
        assert_eq!(next.nc, Some(1));
    }

    /// The kept HA1 answers exactly as a fresh computation would, and a new
    /// password, realm or algorithm is never answered with the old one.
    #[test]
    fn the_kept_ha1_follows_password_realm_and_algorithm() {
        let fresh = |password: &[u8], ch: Challenge| {
            let mut c = DigestClient::new("u", password);
            c.handle_challenge(ch).unwrap();
            c.authorize("POST", "/x", b"body", "cn").unwrap().response
        };
        let mut c = DigestClient::new("u", b"p");
        c.handle_challenge(challenge(vec![Qop::AuthInt])).unwrap();
        let first = c.authorize("POST", "/x", b"body", "cn").unwrap();
        assert_eq!(first.response, fresh(b"p", challenge(vec![Qop::AuthInt])));
        // Same credentials, next request: the nonce count changes the
        // response, the kept HA1 does not.
        c.handle_challenge(challenge(vec![Qop::AuthInt])).unwrap();
        assert_eq!(
            c.authorize("POST", "/x", b"body", "cn").unwrap().response,
            first.response
        );
        // A new password.
        c.set_password(b"q");
        c.handle_challenge(challenge(vec![Qop::AuthInt])).unwrap();
        let q = c.authorize("POST", "/x", b"body", "cn").unwrap().response;
        assert_eq!(q, fresh(b"q", challenge(vec![Qop::AuthInt])));
        assert_ne!(q, first.response);
        // A new realm.
        let mut other = challenge(vec![Qop::AuthInt]);
        other.realm = "other@host.com".into();
        c.handle_challenge(other.clone()).unwrap();
        assert_eq!(
            c.authorize("POST", "/x", b"body", "cn").unwrap().response,
            fresh(b"q", other)
        );
        // Another algorithm, and a session one (HA1 per nonce and cnonce).
        for algorithm in [Algorithm::Sha256, Algorithm::Sha256Sess, Algorithm::Md5Sess] {
            let mut ch = challenge(vec![Qop::AuthInt]);
            ch.algorithm = Some(algorithm);
            c.handle_challenge(ch.clone()).unwrap();
            assert_eq!(
                c.authorize("POST", "/x", b"body", "cn").unwrap().response,
                fresh(b"q", ch),
                "{algorithm}"
            );
        }
    }

    /// `authorize_into` writes exactly what `authorize` formats, and the
    /// response is the RFC 7616 3.4.1 formula of `mod.rs`, for every
    /// algorithm, qop, with and without opaque, with quotes to escape, and
    /// for a repeated request and a changed body.
    #[test]
    fn authorize_into_writes_what_authorize_formats() {
        let mut buf = String::new();
        for algorithm in Algorithm::ALL {
            for qop in [Qop::Auth, Qop::AuthInt] {
                for opaque in [None, Some("op\\aq\"ue".to_owned())] {
                    let mut ch = challenge(vec![qop]);
                    ch.algorithm = Some(algorithm);
                    ch.opaque = opaque.clone();
                    let mut a = DigestClient::new("us\"er", b"pw");
                    let mut b = DigestClient::new("us\"er", b"pw");
                    a.handle_challenge(ch.clone()).unwrap();
                    b.handle_challenge(ch.clone()).unwrap();
                    for (i, body) in [&b"one"[..], b"one", b"two", b"", b"two"]
                        .iter()
                        .enumerate()
                    {
                        let cnonce = format!("cn{i}");
                        let auth = a.authorize("POST", "/k?x=1", body, &cnonce).unwrap();
                        b.authorize_into("POST", "/k?x=1", body, &cnonce, &mut buf)
                            .unwrap();
                        assert_eq!(buf, auth.to_header_value().unwrap(), "{algorithm} {qop}");
                        let ha1 =
                            compute_ha1(algorithm, "us\"er", &ch.realm, b"pw", &ch.nonce, &cnonce);
                        let ha2 = compute_ha2(algorithm, Some(qop), "POST", "/k?x=1", body);
                        let qp = QopParams {
                            qop,
                            nc: i as u32 + 1,
                            cnonce: &cnonce,
                        };
                        assert_eq!(
                            auth.response,
                            compute_response(algorithm, &ha1, &ch.nonce, Some(qp), &ha2)
                        );
                        // The answer's rspauth checks, with a remembered
                        // HA2 too, and a changed answer body does not.
                        for (k, answer) in [&b"ok"[..], b"ok"].into_iter().enumerate() {
                            if k > 0 {
                                // The same request again (same nc, so
                                // the same rspauth).
                                b.nc = i as u32;
                                b.authorize_into("POST", "/k?x=1", body, &cnonce, &mut buf)
                                    .unwrap();
                            }
                            let info = AuthenticationInfo {
                                rspauth: Some(
                                    compute_rspauth(
                                        algorithm, &ha1, &ch.nonce, qp, "/k?x=1", answer,
                                    )
                                    .to_uppercase(),
                                ),
                                ..Default::default()
                            };
                            if qop == Qop::AuthInt {
                                assert_eq!(
                                    b.verify_authentication_info(&info, b"changed"),
                                    Err(ClientError::RspauthMismatch)
                                );
                            }
                            b.verify_authentication_info(&info, answer).unwrap();
                            assert_eq!(
                                b.verify_authentication_info(&info, answer),
                                Err(ClientError::NoOutstandingRequest)
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn control_characters_are_not_written() {
        let mut c = DigestClient::new("bad\nname", b"pw");
        c.handle_challenge(challenge(vec![Qop::AuthInt])).unwrap();
        let mut buf = String::new();
        assert_eq!(
            c.authorize_into("POST", "/", b"", "cn", &mut buf),
            Err(ClientError::Unwritable("username"))
        );
        assert!(c
            .authorize("POST", "/", b"", "cn")
            .unwrap()
            .to_header_value()
            .is_err());
    }

    /// The in-place reader of `Authentication-Info` reads what the server
    /// side writes exactly as the general parser does, and leaves every
    /// other form (escapes, spacing, case, duplicates, unknown parameters,
    /// damage) to it.
    #[test]
    fn authentication_info_layout_agrees_with_the_parser() {
        let mut written = Vec::new();
        for nextnonce in [None, Some("n/x+=="), Some("")] {
            for qop in [None, Some(Qop::Auth), Some(Qop::AuthInt)] {
                for cnonce in [None, Some("c0ffee")] {
                    for nc in [None, Some(1), Some(u32::MAX)] {
                        let info = AuthenticationInfo {
                            nextnonce: nextnonce.map(str::to_owned),
                            qop,
                            rspauth: Some("0123456789abcdef".into()),
                            cnonce: cnonce.map(str::to_owned),
                            nc,
                        };
                        written.push(info.to_header_value().unwrap());
                    }
                }
            }
        }
        for w in &written {
            let parsed = AuthenticationInfo::parse(w).unwrap();
            assert_eq!(InfoView::read_layout(w), Some(InfoView::of(&parsed)), "{w}");
        }
        let others = [
            r#"rspauth="a\"b""#,
            r#"rspauth = "ab""#,
            r#"RSPAUTH="ab""#,
            r#"rspauth="ab",rspauth="cd""#,
            r#"rspauth="ab", rspauth="cd""#,
            r#"rspauth="ab", foo=bar"#,
            r#"rspauth="ab", "#,
            r#"rspauth="ab"#,
            r#"rspauth=ab"#,
            r#"qop="auth", rspauth="ab""#,
            r#"qop=AUTH, rspauth="ab""#,
            r#"nc=1, rspauth="ab""#,
            ",",
        ];
        for o in others {
            assert_eq!(InfoView::read_layout(o), None, "{o}");
        }
        assert_eq!(InfoView::read_layout(""), Some(InfoView::default()));
        // Every prefix of every written value: the reader takes it whole
        // or leaves it, and agrees with the parser when it takes it.
        for w in &written {
            for end in 0..w.len() {
                if let Some(view) = InfoView::read_layout(&w[..end]) {
                    let parsed = AuthenticationInfo::parse(&w[..end]).unwrap();
                    assert_eq!(view, InfoView::of(&parsed), "{}", &w[..end]);
                }
            }
        }
    }

    #[test]
    fn verify_authentication_info_value_reads_both_forms() {
        let mut c = DigestClient::new("u", b"p");
        c.handle_challenge(challenge(vec![Qop::AuthInt])).unwrap();
        let ha1 = compute_ha1(Algorithm::Md5, "u", "testrealm@host.com", b"p", "", "");
        for (i, form) in ["usual", "spaced"].into_iter().enumerate() {
            let cnonce = format!("cn{i}");
            c.authorize("POST", "/x", b"req", &cnonce).unwrap();
            let qp = QopParams {
                qop: Qop::AuthInt,
                nc: i as u32 + 1,
                cnonce: &cnonce,
            };
            let rspauth = compute_rspauth(
                Algorithm::Md5,
                &ha1,
                "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                qp,
                "/x",
                b"resp",
            );
            let value = match form {
                "usual" => format!(
                    r#"qop=auth-int, rspauth="{rspauth}", cnonce="{cnonce}", nc=0000000{}"#,
                    i + 1
                ),
                _ => format!(r#" RSPAUTH = "{rspauth}" ,cnonce="{cnonce}""#),
            };
            assert_eq!(
                c.verify_authentication_info_value(&value, b"tampered"),
                Err(ClientError::RspauthMismatch)
            );
            c.verify_authentication_info_value(&value, b"resp").unwrap();
        }
        c.authorize("POST", "/x", b"req", "cn").unwrap();
        assert!(matches!(
            c.verify_authentication_info_value("rspauth=\"x", b""),
            Err(ClientError::MalformedAuthenticationInfo(_))
        ));
        assert_eq!(
            c.verify_authentication_info_value(r#"rspauth="00", nc=00000002"#, b""),
            Err(ClientError::AuthInfoMismatch("nc"))
        );
    }
}
