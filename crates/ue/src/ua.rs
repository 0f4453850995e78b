//! The Ua client (UE <-> BM-SC, `PROFILE.md` section 3): registration,
//! deregistration and the MSK request, each an HTTP POST to the key
//! management URI with `requesttype=...` and `mikey-port=N`, authenticated
//! with HTTP Digest (username = B-TID, password = base64 of the MRK, realm
//! `3GPP-bootstrapping@<bmsc-fqdn>`), qop `auth-int` preferred, and the
//! server's `Authentication-Info` (`rspauth`) checked on every success.
//!
//! A request is first sent with an `Authorization` for the last nonce when
//! the client has one (seed 002 NOTE 2 lets the BM-SC serve it directly),
//! otherwise without; a 401 challenge is answered once. A 401 in answer to
//! a response computed for a fresh, non-stale challenge means the BM-SC does
//! not accept the B-TID (unknown or expired) or the MRK:
//! [`UaError::Unauthorized`], and the caller bootstraps again.

use rand::RngCore as _;
use reqwest::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use tracing::debug;

use gba::digest::{Algorithm, Challenge, DigestClient};
use gba::Mrk;
use mbms::MskName;

use crate::bootstrap::USER_AGENT_VALUE;
use crate::xml::{self, KeyStatus, RequestType, XmlError};

/// A Ua request failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UaError {
    /// The key management URI is not an absolute http(s) URL.
    #[error("invalid key management URI {0:?}")]
    InvalidUri(String),
    /// Transport failure.
    #[error("HTTP request to the BM-SC failed")]
    Http(#[from] reqwest::Error),
    /// 401 after answering a fresh challenge: B-TID unknown or expired at
    /// the BM-SC (or a wrong MRK). Bootstrap again.
    #[error("the BM-SC refused our credentials (401 for B-TID {btid}): bootstrap again")]
    Unauthorized {
        /// The B-TID used.
        btid: String,
    },
    /// No usable `WWW-Authenticate: Digest` challenge.
    #[error("no usable Digest challenge from the BM-SC: {0}")]
    BadChallenge(String),
    /// The Digest client refused to build a response.
    #[error("HTTP Digest: {0}")]
    Digest(gba::digest::ClientError),
    /// `Authentication-Info` missing or wrong: the answer is not from a
    /// BM-SC that knows our MRK, or was altered.
    #[error("the BM-SC's Authentication-Info does not verify: {0}")]
    ServerAuthentication(String),
    /// Another HTTP status.
    #[error("unexpected answer from the BM-SC: {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The response body could not be read.
    #[error("malformed response body: {0}")]
    Body(#[from] XmlError),
}

/// The URL of one request type and its request target (the Digest `uri`,
/// RFC 7616 3.4: path and query), prepared once per client: they do not
/// change between requests.
#[derive(Debug, Clone)]
struct Target {
    url: reqwest::Url,
    uri: String,
}

impl Target {
    /// `base?requesttype=RT&mikey-port=N` (`PROFILE.md` section 3).
    fn new(base: &reqwest::Url, rt: RequestType, mikey_port: u16) -> Self {
        let mut url = base.clone();
        url.query_pairs_mut()
            .append_pair("requesttype", rt.as_str())
            .append_pair("mikey-port", &mikey_port.to_string());
        let uri = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        Target { url, uri }
    }
}

/// A Ua client for one key management URI.
#[derive(Debug)]
pub struct UaClient {
    http: reqwest::Client,
    /// [`Target`]s of register, deregister, msk-request.
    targets: [Target; 3],
    btid: String,
    realm: String,
    digest: DigestClient,
    /// The `Authorization` value, written into this one buffer per request.
    authorization: String,
}

/// A fresh client nonce (RFC 7616 3.4: unpredictable): 16 bytes of the
/// thread's CSPRNG (ChaCha, seeded and reseeded from the OS), not a system
/// call per request, as 32 hex digits.
fn cnonce() -> [u8; 32] {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    let mut hex = [0u8; 32];
    // 32 bytes of room for 16 bytes: cannot fail.
    let _ = hex::encode_to_slice(b, &mut hex);
    hex
}

/// `Authentication-Info` (RFC 7615 3), on every success of the BM-SC.
const AUTHENTICATION_INFO: HeaderName = HeaderName::from_static("authentication-info");

/// The `User-Agent` of the UE's Ua requests.
const USER_AGENT_HEADER: HeaderValue = HeaderValue::from_static(USER_AGENT_VALUE);

/// The Digest realm of a BM-SC: `3GPP-bootstrapping@<bmsc-fqdn>`
/// (TS 24.109 5.2.1, `PROFILE.md` section 3). A challenge with another
/// realm is not a GBA challenge for this NAF and is not answered.
pub fn realm_of(bmsc_fqdn: &str) -> String {
    format!("3GPP-bootstrapping@{bmsc_fqdn}")
}

/// The first challenge of a 401 with the GBA realm, qop and an algorithm we
/// support (MD5 or SHA-256, in the server's order).
fn pick_challenge(headers: &reqwest::header::HeaderMap, realm: &str) -> Result<Challenge, UaError> {
    let mut last = String::from("no WWW-Authenticate header");
    for v in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(text) = v.to_str() else { continue };
        match Challenge::parse(text) {
            Ok(ch) if ch.realm != realm => last = format!("realm {:?} is not {realm:?}", ch.realm),
            Ok(ch)
                if matches!(ch.effective_algorithm(), Algorithm::Md5 | Algorithm::Sha256)
                    && !ch.qop.is_empty() =>
            {
                return Ok(ch)
            }
            Ok(ch) => last = format!("unsupported challenge (algorithm {:?})", ch.algorithm),
            Err(e) => last = e.to_string(),
        }
    }
    Err(UaError::BadChallenge(last))
}

impl UaClient {
    /// A client for `key_management_uri` of the BM-SC `bmsc_fqdn` whose
    /// MIKEY listener is on `mikey_port`, with the credentials of a
    /// bootstrapping.
    pub fn new(
        http: reqwest::Client,
        key_management_uri: &str,
        bmsc_fqdn: &str,
        mikey_port: u16,
        btid: &str,
        mrk: &Mrk,
    ) -> Result<Self, UaError> {
        let base = reqwest::Url::parse(key_management_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| UaError::InvalidUri(key_management_uri.to_owned()))?;
        let targets = [
            RequestType::Register,
            RequestType::Deregister,
            RequestType::MskRequest,
        ]
        .map(|rt| Target::new(&base, rt, mikey_port));
        Ok(UaClient {
            http,
            targets,
            btid: btid.to_owned(),
            realm: realm_of(bmsc_fqdn),
            digest: DigestClient::new(btid, mrk.to_base64().as_bytes()),
            authorization: String::with_capacity(512),
        })
    }

    /// The B-TID used as Digest username.
    pub fn btid(&self) -> &str {
        &self.btid
    }

    /// Registers to `services`: one status per service, in order.
    pub async fn register(&mut self, services: &[&str]) -> Result<Vec<(String, u16)>, UaError> {
        let body = xml::register_body(services)?;
        self.change_services(RequestType::Register, body).await
    }

    /// Deregisters from `services`: one status per service, in order.
    pub async fn deregister(&mut self, services: &[&str]) -> Result<Vec<(String, u16)>, UaError> {
        let body = xml::deregister_body(services)?;
        self.change_services(RequestType::Deregister, body).await
    }

    /// A registration or deregistration with `body`: one status per
    /// service, in order.
    async fn change_services(
        &mut self,
        rt: RequestType,
        body: Vec<u8>,
    ) -> Result<Vec<(String, u16)>, UaError> {
        let request = self.request(rt, body);
        self.post(rt, &request, xml::parse_register_response).await
    }

    /// Requests MSKs (Key Number 0 = the current MSK of the key group): one
    /// status per key, in order; the keys themselves follow by MIKEY.
    pub async fn msk_request(&mut self, keys: &[MskName]) -> Result<Vec<KeyStatus>, UaError> {
        // Built for every call (nothing remembered from the last one):
        // the request without `Authorization`, cloned per attempt.
        let request = self.request(RequestType::MskRequest, xml::msk_request_body(keys));
        self.post(RequestType::MskRequest, &request, xml::parse_msk_response)
            .await
    }

    /// The request of type `rt` with `body`, without `Authorization`.
    fn request(&self, rt: RequestType, body: Vec<u8>) -> reqwest::Request {
        let target = &self.targets[Self::target_index(rt)];
        let mut req = reqwest::Request::new(Method::POST, target.url.clone());
        let h = req.headers_mut();
        h.insert(USER_AGENT, USER_AGENT_HEADER);
        h.insert(CONTENT_TYPE, HeaderValue::from_static(rt.content_type()));
        *req.body_mut() = Some(body.into());
        req
    }

    /// The index of `rt` in [`UaClient::targets`].
    fn target_index(rt: RequestType) -> usize {
        match rt {
            RequestType::Register => 0,
            RequestType::Deregister => 1,
            RequestType::MskRequest => 2,
        }
    }

    /// Sends `request` (cloned per attempt) with Digest, answering a
    /// challenge once, and reads the checked answer with `parse`.
    async fn post<T>(
        &mut self,
        rt: RequestType,
        request: &reqwest::Request,
        parse: impl FnOnce(&[u8]) -> Result<T, XmlError>,
    ) -> Result<T, UaError> {
        let target = &self.targets[Self::target_index(rt)];
        let body = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .unwrap_or_default();
        // Whether the Authorization we send answers a challenge received in
        // the immediately preceding response.
        let mut fresh = false;
        for _ in 0..3 {
            // A body of bytes is always cloneable.
            let Some(mut req) = request.try_clone() else {
                return Err(UaError::InvalidUri(target.url.to_string()));
            };
            let authorized = self.digest.challenge().is_some();
            if authorized {
                let cnonce = cnonce();
                self.digest
                    .authorize_into(
                        "POST",
                        &target.uri,
                        body,
                        std::str::from_utf8(&cnonce).unwrap_or_default(),
                        &mut self.authorization,
                    )
                    .map_err(UaError::Digest)?;
                let h = HeaderValue::from_str(&self.authorization)
                    .map_err(|e| UaError::BadChallenge(e.to_string()))?;
                req.headers_mut().insert(AUTHORIZATION, h);
            }
            let resp = self.http.execute(req).await?;
            match resp.status() {
                StatusCode::UNAUTHORIZED => {
                    let ch = pick_challenge(resp.headers(), &self.realm)?;
                    if authorized && fresh && !ch.stale {
                        return Err(UaError::Unauthorized {
                            btid: self.btid.clone(),
                        });
                    }
                    debug!(request = rt.as_str(), stale = ch.stale, "Ua: challenged");
                    self.digest
                        .handle_challenge(ch)
                        .map_err(|e| UaError::BadChallenge(e.to_string()))?;
                    fresh = true;
                }
                StatusCode::OK => {
                    // The value is shared, not copied, while the body is read.
                    let info = resp
                        .headers()
                        .get(AUTHENTICATION_INFO)
                        .cloned()
                        .ok_or_else(|| {
                            UaError::ServerAuthentication("no Authentication-Info".into())
                        })?;
                    let info = info
                        .to_str()
                        .map_err(|_| UaError::ServerAuthentication("not ASCII".into()))?;
                    let bytes = resp.bytes().await?;
                    self.digest
                        .verify_authentication_info_value(info, &bytes)
                        .map_err(|e| UaError::ServerAuthentication(e.to_string()))?;
                    return Ok(parse(&bytes)?);
                }
                s => {
                    let text = resp.text().await.unwrap_or_default();
                    return Err(UaError::Status {
                        status: s.as_u16(),
                        body: text.trim().chars().take(200).collect(),
                    });
                }
            }
        }
        Err(UaError::Unauthorized {
            btid: self.btid.clone(),
        })
    }
}
