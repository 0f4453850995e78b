//! Digest client (RFC 7616 3.4 and 3.5; RFC 3310 3.2-3.4 for AKA), sans-IO.
//!
//! The caller feeds the parsed `WWW-Authenticate` challenge
//! ([`DigestClient::handle_challenge`]), asks for an `Authorization` for each
//! request ([`DigestClient::authorize`], with a fresh `cnonce` it generated),
//! and checks the `Authentication-Info` of the answer
//! ([`DigestClient::verify_authentication_info`]). The client tracks the
//! nonce count per nonce and switches to `nextnonce` when the server sends
//! one.
//!
//! Security choices: the client refuses challenges without `qop` (RFC 2069
//! mode has no client nonce and no body protection; such challenges are
//! only parsed) and prefers `auth-int` when offered (PROFILE.md section 3).

use core::fmt;

use zeroize::Zeroizing;

use super::header::{AuthenticationInfo, Authorization, Challenge};
use super::{
    base_ha1, compute_ha2, compute_response, compute_rspauth, digest_eq, session_ha1, Algorithm,
    Qop, QopParams,
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
}

/// What the client remembers about the last request, to check `rspauth`.
struct Outstanding {
    algorithm: Algorithm,
    ha1: Zeroizing<String>,
    nonce: String,
    cnonce: String,
    nc: u32,
    qop: Qop,
    uri: String,
}

/// `H(username ":" realm ":" password)` of the last request: the same for
/// every request until the password, the realm or the algorithm changes
/// (a UE keeps it per B-TID instead of hashing its MRK on every request).
struct BaseHa1 {
    algorithm: Algorithm,
    realm: String,
    ha1: Zeroizing<String>,
}

/// A Digest client for one set of credentials.
pub struct DigestClient {
    username: String,
    password: Zeroizing<Vec<u8>>,
    preferred_qop: Qop,
    challenge: Option<Challenge>,
    nc: u32,
    outstanding: Option<Outstanding>,
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
            outstanding: None,
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
        self.outstanding = None;
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
        self.build(method, uri, body, cnonce, None)
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
        self.build(method, uri, body, cnonce, Some(auts.to_base64()))
    }

    /// HA1 before the session step: kept from the last request when the
    /// algorithm and realm are the same (the password is the same: a new
    /// one clears it), else computed and kept.
    fn base_ha1(&mut self, algorithm: Algorithm, realm: &str) -> Zeroizing<String> {
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

    /// Builds the `Authorization`; with `auts` (RFC 3310 3.4) the response
    /// is computed with an empty password.
    fn build(
        &mut self,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce: &str,
        auts: Option<String>,
    ) -> Result<Authorization, ClientError> {
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
        let base = if auts.is_some() {
            base_ha1(algorithm, &self.username, &ch.realm, b"")
        } else {
            let realm = ch.realm.clone();
            self.base_ha1(algorithm, &realm)
        };
        let ch = self.challenge.as_ref().ok_or(ClientError::NoChallenge)?;
        let ha1 = session_ha1(algorithm, base, &ch.nonce, cnonce);
        let ha2 = compute_ha2(algorithm, Some(qop), method, uri, body);
        let qp = QopParams { qop, nc, cnonce };
        let response = compute_response(algorithm, &ha1, &ch.nonce, Some(qp), &ha2);
        let auth = Authorization {
            username: self.username.clone(),
            realm: ch.realm.clone(),
            nonce: ch.nonce.clone(),
            uri: uri.to_owned(),
            response,
            algorithm: ch.algorithm,
            cnonce: Some(cnonce.to_owned()),
            opaque: ch.opaque.clone(),
            qop: Some(qop),
            nc: Some(nc),
            auts,
        };
        self.outstanding = Some(Outstanding {
            algorithm,
            ha1,
            nonce: ch.nonce.clone(),
            cnonce: cnonce.to_owned(),
            nc,
            qop,
            uri: uri.to_owned(),
        });
        self.nc = nc;
        Ok(auth)
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
        let out = self
            .outstanding
            .as_ref()
            .ok_or(ClientError::NoOutstandingRequest)?;
        let rspauth = info.rspauth.as_deref().ok_or(ClientError::MissingRspauth)?;
        if info.qop.is_some_and(|q| q != out.qop) {
            return Err(ClientError::AuthInfoMismatch("qop"));
        }
        if info.nc.is_some_and(|n| n != out.nc) {
            return Err(ClientError::AuthInfoMismatch("nc"));
        }
        if info.cnonce.as_deref().is_some_and(|c| c != out.cnonce) {
            return Err(ClientError::AuthInfoMismatch("cnonce"));
        }
        let expected = compute_rspauth(
            out.algorithm,
            &out.ha1,
            &out.nonce,
            QopParams {
                qop: out.qop,
                nc: out.nc,
                cnonce: &out.cnonce,
            },
            &out.uri,
            response_body,
        );
        if !digest_eq(&expected, rspauth) {
            return Err(ClientError::RspauthMismatch);
        }
        self.outstanding = None;
        if let (Some(next), Some(ch)) = (&info.nextnonce, self.challenge.as_mut()) {
            if *next != ch.nonce {
                ch.nonce = next.clone();
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
    use crate::digest::compute_ha1;

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
}
