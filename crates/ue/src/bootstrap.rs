//! The UE side of GBA bootstrapping on Ub (TS 33.220 4.5.2, TS 24.109
//! clause 4 and Annex A, RFC 3310; PROFILE.md section 4) over HTTP.
//!
//! Protocol logic comes from the sans-IO `gba` crate ([`Usim`] for AKA,
//! [`DigestClient`] for HTTP Digest AKAv1-MD5); this module only sends the
//! requests with reqwest (rustls) and interprets the status codes:
//!
//! 1. `GET /` with `Authorization: Digest username="<IMPI>",
//!    realm="<BSF FQDN>", nonce="", uri="/", response=""` and a
//!    `User-Agent` carrying the `3gpp-gba` product token (TS 24.109 A.3).
//! 2. 401: the nonce is `base64(RAND || AUTN || server data)`; the USIM
//!    checks AUTN.
//!    * MAC-A wrong: network authentication failure, the UE stops without
//!      answering (TS 24.109 4.4): [`BootstrapError::NetworkAuthenticationFailure`].
//!    * SQN out of range: the UE answers with `auts` and an empty password
//!      (RFC 3310 3.4, TS 24.109 4.5) and expects a new 401 challenge; this
//!      is done at most once ([`BootstrapError::ResyncFailed`]).
//!    * Otherwise: Digest response with password = RES, qop `auth-int`.
//! 3. 200: `rspauth` of `Authentication-Info` is checked over the body (a
//!    wrong one means the BSF did not know RES, or the body was altered),
//!    then the `BootstrappingInfo` XML gives B-TID and key lifetime. The
//!    B-TID must carry the RAND the USIM answered.
//!
//! The result, [`Bootstrap`], holds Ks = CK || IK (zeroized, redacted) and
//! derives Ks_NAF and the MBMS keys MRK / MUK (TS 33.220 Annex B;
//! PROFILE.md section 2).

use core::fmt;

use rand::RngCore as _;
use reqwest::header::{HeaderMap, AUTHORIZATION, USER_AGENT, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use tracing::debug;

use gba::aka::{self, AkaError, AkaOutcome, Rand};
use gba::digest::{
    Algorithm, AuthenticationInfo, Authorization, Challenge, ClientError, DigestClient,
};
use gba::kdf::{derive_ks_naf, KdfError};
use gba::{BTid, Ks, MbmsKeys, NafId, NafKey, Usim};

/// The `User-Agent` sent on Ub: our product plus the `3gpp-gba` token that
/// tells the BSF the UE supports GBA (TS 24.109 A.3, Table A.3-1).
pub const USER_AGENT_VALUE: &str = concat!("mbms-ue/", env!("CARGO_PKG_VERSION"), " 3gpp-gba");

/// Default NAF (BM-SC) FQDN of the command-line tools.
pub const DEFAULT_NAF_FQDN: &str = "bmsc.home1.net";

/// Errors of a bootstrapping run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// The BSF URL is not an absolute http(s) URL.
    #[error("invalid BSF URL {0:?}")]
    InvalidUrl(String),
    /// The IMPI is empty or not usable in a Digest header.
    #[error("invalid IMPI {0:?}")]
    InvalidImpi(String),
    /// Transport failure (connection, TLS, timeout...).
    #[error("HTTP request to the BSF failed")]
    Http(#[from] reqwest::Error),
    /// AUTN's MAC-A is wrong: the network is not authentic (or K / OPc are
    /// wrong). The UE stops (TS 24.109 4.4, TS 33.102 6.3.3).
    #[error("network authentication failure: AUTN MAC-A does not verify (wrong K/OPc, or not the home network); bootstrapping stopped")]
    NetworkAuthenticationFailure,
    /// The USIM asked for re-synchronisation twice in a row.
    #[error("SQN re-synchronisation failed: the USIM rejected the SQN again after AUTS")]
    ResyncFailed,
    /// 403: the BSF does not know or refuses this IMPI.
    #[error("the BSF refused the bootstrapping (403 Forbidden): {0}")]
    Forbidden(String),
    /// 401 in answer to our RES: user authentication failure (TS 24.109
    /// 4.3).
    #[error("the BSF rejected our authentication response (401 after RES)")]
    AuthenticationRejected,
    /// Any other status.
    #[error("unexpected answer from the BSF: {status}: {body}")]
    UnexpectedStatus {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// No usable `WWW-Authenticate: Digest ... algorithm=AKAv1-MD5`.
    #[error("no usable Digest AKAv1-MD5 challenge from the BSF: {0}")]
    BadChallenge(String),
    /// The AKA nonce could not be decoded, or the USIM failed otherwise.
    #[error("AKA: {0}")]
    Aka(AkaError),
    /// Digest client error (building the response).
    #[error("HTTP Digest: {0}")]
    Digest(ClientError),
    /// `Authentication-Info` missing or `rspauth` wrong: the BSF is not
    /// authenticated (or the answer was altered).
    #[error("the BSF's Authentication-Info does not verify: {0}")]
    ServerAuthentication(String),
    /// The 200 OK body is not a usable `BootstrappingInfo`.
    #[error("malformed BootstrappingInfo: {0}")]
    MalformedBody(String),
}

/// The result of a successful bootstrapping (TS 33.220 4.5.2): B-TID, key
/// lifetime, RAND and Ks. `Debug` never shows Ks.
#[derive(Clone)]
pub struct Bootstrap {
    /// The bootstrapping transaction identifier.
    pub btid: BTid,
    /// The key lifetime as sent by the BSF (RFC 3339 / xs:dateTime).
    pub lifetime: String,
    /// The key lifetime, parsed.
    pub expires_at: time::OffsetDateTime,
    /// The IMPI used.
    pub impi: String,
    /// The RAND of the successful challenge.
    pub rand: Rand,
    ks: Ks,
}

impl fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bootstrap")
            .field("btid", &self.btid)
            .field("lifetime", &self.lifetime)
            .field("impi", &self.impi)
            .field("ks", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Bootstrap {
    /// Ks = CK || IK (TS 33.220 4.5.2).
    pub fn ks(&self) -> &Ks {
        &self.ks
    }

    /// Ks_NAF (GBA_ME) for a NAF (TS 33.220 Annex B.3).
    pub fn ks_naf(&self, naf_id: &NafId) -> Result<NafKey, KdfError> {
        derive_ks_naf(&self.ks, &self.rand, &self.impi, naf_id)
    }

    /// Ks_NAF for the BM-SC `bmsc_fqdn` (NAF_Id = FQDN || 01 00 00 00 01,
    /// PROFILE.md section 1) and the GBA_ME MBMS keys MRK and MUK derived
    /// from it (PROFILE.md section 2).
    pub fn mbms_keys(&self, bmsc_fqdn: &str) -> Result<(NafKey, MbmsKeys), KdfError> {
        let ks_naf = self.ks_naf(&NafId::mbms(bmsc_fqdn))?;
        let keys = MbmsKeys::gba_me(&ks_naf);
        Ok((ks_naf, keys))
    }
}

/// The default BSF FQDN for an IMPI: `bsf.` + the IMPI's home domain
/// (the pattern of TS 23.003 16.2, applied to the IMPI realm; a project
/// choice), e.g. `user1_private@home1.net` -> `bsf.home1.net`.
pub fn default_bsf_fqdn(impi: &str) -> Option<String> {
    let (_, domain) = impi.rsplit_once('@')?;
    (!domain.is_empty()).then(|| format!("bsf.{domain}"))
}

/// A Ub client for one BSF.
#[derive(Clone, Debug)]
pub struct BootstrapClient {
    http: reqwest::Client,
    url: reqwest::Url,
    bsf_fqdn: Option<String>,
}

impl BootstrapClient {
    /// A client for the BSF at `bsf_url` (e.g. `http://bsf.home1.net/` or
    /// `http://127.0.0.1:8080`), with a 30 s timeout.
    pub fn new(bsf_url: &str) -> Result<Self, BootstrapError> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT_VALUE)
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Self::with_http_client(http, bsf_url)
    }

    /// A client using the given reqwest client.
    pub fn with_http_client(http: reqwest::Client, bsf_url: &str) -> Result<Self, BootstrapError> {
        let url = reqwest::Url::parse(bsf_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| BootstrapError::InvalidUrl(bsf_url.to_owned()))?;
        Ok(Self {
            http,
            url,
            bsf_fqdn: None,
        })
    }

    /// Sets the BSF FQDN used as realm in the initial request (default:
    /// [`default_bsf_fqdn`] of the IMPI, else the URL host).
    pub fn with_bsf_fqdn(mut self, fqdn: impl Into<String>) -> Self {
        self.bsf_fqdn = Some(fqdn.into());
        self
    }

    /// The digest-uri: the request-target of the BSF URL (TS 24.109 A.3
    /// uses `/`).
    fn digest_uri(&self) -> String {
        match self.url.query() {
            Some(q) => format!("{}?{q}", self.url.path()),
            None => self.url.path().to_owned(),
        }
    }

    async fn get(&self, authorization: &str) -> Result<reqwest::Response, BootstrapError> {
        Ok(self
            .http
            .get(self.url.clone())
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(AUTHORIZATION, authorization)
            .send()
            .await?)
    }

    /// Runs Ub bootstrapping for `impi` with `usim` (whose SQN_MS advances
    /// on success; the caller persists it). See the module documentation
    /// for the flow and the errors.
    pub async fn bootstrap(
        &self,
        impi: &str,
        usim: &mut Usim,
    ) -> Result<Bootstrap, BootstrapError> {
        if impi.is_empty()
            || impi
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\')
        {
            return Err(BootstrapError::InvalidImpi(impi.to_owned()));
        }
        let realm = self
            .bsf_fqdn
            .clone()
            .or_else(|| default_bsf_fqdn(impi))
            .or_else(|| self.url.host_str().map(str::to_owned))
            .unwrap_or_default();
        let uri = self.digest_uri();
        let initial = Authorization::initial(impi, &realm, &uri)
            .to_header_value()
            .map_err(|e| BootstrapError::InvalidImpi(format!("{impi}: {e}")))?;
        debug!(impi, url = %self.url, "Ub: initial request");
        let mut resp = self.get(&initial).await?;
        let mut client = DigestClient::new(impi, b"");
        let mut resynchronised = false;
        loop {
            resp = expect_challenge(resp).await?;
            let challenge = pick_challenge(resp.headers())?;
            let (rand, autn) =
                aka::parse_aka_nonce(&challenge.nonce).map_err(BootstrapError::Aka)?;
            client
                .handle_challenge(challenge)
                .map_err(|e| BootstrapError::BadChallenge(e.to_string()))?;
            let cnonce = random_cnonce();
            match usim.authenticate(&rand, &autn) {
                Err(AkaError::MacFailure) => {
                    return Err(BootstrapError::NetworkAuthenticationFailure)
                }
                Err(e) => return Err(BootstrapError::Aka(e)),
                Ok(AkaOutcome::SyncFailure { auts }) => {
                    if resynchronised {
                        return Err(BootstrapError::ResyncFailed);
                    }
                    resynchronised = true;
                    debug!(impi, "Ub: SQN out of range, sending AUTS");
                    let a = client
                        .authorize_resync("GET", &uri, b"", &cnonce, &auts)
                        .map_err(BootstrapError::Digest)?;
                    resp = self.get(&header(&a)?).await?;
                }
                Ok(AkaOutcome::Success { res, ck, ik }) => {
                    client.set_password(res.as_bytes());
                    let a = client
                        .authorize("GET", &uri, b"", &cnonce)
                        .map_err(BootstrapError::Digest)?;
                    let resp = self.get(&header(&a)?).await?;
                    // Ks = CK || IK (TS 33.220 4.5.2).
                    let ks = Ks::from_ck_ik(&ck, &ik);
                    return finish(resp, &mut client, impi, rand, ks).await;
                }
            }
        }
    }
}

/// Handles the answer to our RES (TS 24.109 A.5-A.6 / 4.3).
async fn finish(
    resp: reqwest::Response,
    client: &mut DigestClient,
    impi: &str,
    rand: Rand,
    ks: Ks,
) -> Result<Bootstrap, BootstrapError> {
    match resp.status() {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => return Err(BootstrapError::AuthenticationRejected),
        StatusCode::FORBIDDEN => return Err(BootstrapError::Forbidden(body_excerpt(resp).await)),
        s => {
            return Err(BootstrapError::UnexpectedStatus {
                status: s.as_u16(),
                body: body_excerpt(resp).await,
            })
        }
    }
    let info = resp
        .headers()
        .get("authentication-info")
        .ok_or_else(|| BootstrapError::ServerAuthentication("no Authentication-Info".into()))?
        .to_str()
        .map_err(|_| BootstrapError::ServerAuthentication("not ASCII".into()))
        .and_then(|v| {
            AuthenticationInfo::parse(v)
                .map_err(|e| BootstrapError::ServerAuthentication(e.to_string()))
        })?;
    let body = resp.bytes().await?;
    client
        .verify_authentication_info(&info, &body)
        .map_err(|e| BootstrapError::ServerAuthentication(e.to_string()))?;
    let body = std::str::from_utf8(&body)
        .map_err(|_| BootstrapError::MalformedBody("not UTF-8".into()))?;
    let (btid, lifetime) = parse_bootstrapping_info(body)?;
    let btid =
        BTid::parse(&btid).map_err(|e| BootstrapError::MalformedBody(format!("B-TID: {e}")))?;
    if btid.rand() != &rand {
        return Err(BootstrapError::MalformedBody(
            "the B-TID does not carry the RAND of the challenge".into(),
        ));
    }
    let expires_at =
        time::OffsetDateTime::parse(&lifetime, &time::format_description::well_known::Rfc3339)
            .map_err(|e| BootstrapError::MalformedBody(format!("lifetime {lifetime:?}: {e}")))?;
    debug!(impi, btid = %btid, "Ub: bootstrapped");
    Ok(Bootstrap {
        btid,
        lifetime,
        expires_at,
        impi: impi.to_owned(),
        rand,
        ks,
    })
}

fn header(a: &Authorization) -> Result<String, BootstrapError> {
    a.to_header_value()
        .map_err(|e| BootstrapError::BadChallenge(e.to_string()))
}

fn random_cnonce() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

async fn body_excerpt(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let text = text.trim();
    text.chars().take(200).collect()
}

/// A challenge must come as 401 (TS 24.109 A.4); 403 means the BSF refuses
/// the IMPI (or a forged AUTS).
async fn expect_challenge(resp: reqwest::Response) -> Result<reqwest::Response, BootstrapError> {
    match resp.status() {
        StatusCode::UNAUTHORIZED => Ok(resp),
        StatusCode::FORBIDDEN => Err(BootstrapError::Forbidden(body_excerpt(resp).await)),
        s => Err(BootstrapError::UnexpectedStatus {
            status: s.as_u16(),
            body: body_excerpt(resp).await,
        }),
    }
}

/// The `WWW-Authenticate: Digest` challenge with `algorithm=AKAv1-MD5`.
fn pick_challenge(headers: &HeaderMap) -> Result<Challenge, BootstrapError> {
    let mut last_err = String::from("no WWW-Authenticate header");
    for v in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(text) = v.to_str() else { continue };
        match Challenge::parse(text) {
            Ok(ch) if ch.algorithm == Some(Algorithm::AkaV1Md5) => return Ok(ch),
            Ok(ch) => last_err = format!("algorithm {:?} is not AKAv1-MD5", ch.algorithm),
            Err(e) => last_err = e.to_string(),
        }
    }
    Err(BootstrapError::BadChallenge(last_err))
}

/// Extracts `btid` and `lifetime` from
/// `<BootstrappingInfo xmlns="uri:3gpp-gba"><btid>..</btid><lifetime>..</lifetime></BootstrappingInfo>`
/// (TS 24.109 Annex C schema; PROFILE.md section 4). A minimal reader: it
/// accepts namespace prefixes on the child elements and the five predefined
/// XML entities, nothing else.
pub fn parse_bootstrapping_info(xml: &str) -> Result<(String, String), BootstrapError> {
    if !xml.contains("BootstrappingInfo") {
        return Err(BootstrapError::MalformedBody(
            "no BootstrappingInfo element".into(),
        ));
    }
    let btid = element_text(xml, "btid")
        .ok_or_else(|| BootstrapError::MalformedBody("no <btid>".into()))?;
    let lifetime = element_text(xml, "lifetime")
        .ok_or_else(|| BootstrapError::MalformedBody("no <lifetime>".into()))?;
    Ok((btid, lifetime))
}

fn element_text(xml: &str, name: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let end = after.find('>')?;
        let tag = &after[..end];
        let local = tag.rsplit(':').next().unwrap_or(tag).trim();
        if local == name && !tag.starts_with('/') {
            let content = &after[end + 1..];
            let close = content.find("</")?;
            return Some(unescape(content[..close].trim()));
        }
        rest = &after[end + 1..];
    }
    None
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrapping_info_parsing() {
        let xml = "<?xml version=\"1.0\"?>\n<BootstrappingInfo xmlns=\"uri:3gpp-gba\"><btid>I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net</btid><lifetime>2030-01-01T00:00:00Z</lifetime></BootstrappingInfo>";
        let (b, l) = parse_bootstrapping_info(xml).unwrap();
        assert_eq!(b, "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net");
        assert_eq!(l, "2030-01-01T00:00:00Z");
        let prefixed = "<g:BootstrappingInfo xmlns:g=\"uri:3gpp-gba\"><g:btid>a&amp;b</g:btid><g:lifetime>x</g:lifetime></g:BootstrappingInfo>";
        assert_eq!(parse_bootstrapping_info(prefixed).unwrap().0, "a&b");
        assert!(
            parse_bootstrapping_info("<BootstrappingInfo><btid>x</btid></BootstrappingInfo>")
                .is_err()
        );
        assert!(parse_bootstrapping_info("<foo/>").is_err());
    }

    #[test]
    fn default_fqdn() {
        assert_eq!(
            default_bsf_fqdn("user1_private@home1.net").as_deref(),
            Some("bsf.home1.net")
        );
        assert_eq!(default_bsf_fqdn("nodomain"), None);
        assert_eq!(default_bsf_fqdn("x@"), None);
    }

    #[test]
    fn user_agent_has_gba_token() {
        assert!(USER_AGENT_VALUE.ends_with(" 3gpp-gba"));
    }
}
