//! The Zn client (`PROFILE.md` section 5): Ks_NAF for a B-TID from the BSF,
//! the MBMS keys derived from it (`PROFILE.md` section 2), cached until the
//! key lifetime ends.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use gba::{MbmsKeys, Mrk, Muk, NafId, NafKey};

use crate::config::Token;

/// Most cached B-TIDs; past it expired entries are dropped, then the
/// oldest.
const CACHE_CAPACITY: usize = 100_000;

/// The keys of one bootstrapping session for this BM-SC. Never printed.
#[derive(Clone)]
pub struct UeKeys {
    /// The subscriber (IMPI) the BSF names.
    pub impi: String,
    /// MRK: its base64 text is the Ua Digest password.
    pub mrk: Mrk,
    /// MUK: protects MIKEY MSK messages.
    pub muk: Muk,
    /// End of the key lifetime, Unix seconds.
    pub expires_at: u64,
}

impl fmt::Debug for UeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UeKeys")
            .field("impi", &self.impi)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A Zn failure other than "unknown B-TID".
#[derive(Debug, thiserror::Error)]
pub enum ZnError {
    /// The BSF could not be reached or answered with an error.
    #[error("BSF unavailable: {0}")]
    Unavailable(String),
    /// The BSF's answer is not what Zn specifies.
    #[error("malformed Zn answer: {0}")]
    Malformed(String),
}

#[derive(serde::Deserialize)]
struct ZnAnswer {
    impi: String,
    ks_naf: zeroize::Zeroizing<String>,
    #[serde(default)]
    ks_int_naf: Option<zeroize::Zeroizing<String>>,
    lifetime: String,
    gba_type: String,
}

/// Zn request body (PROFILE.md section 5).
#[derive(serde::Serialize)]
struct ZnRequest<'a> {
    btid: &'a str,
    naf_id: &'a str,
}

/// Zn client with a cache. Cheap to share (`Arc`).
pub struct ZnClient {
    http: reqwest::Client,
    /// The Zn URL, parsed once (a `&str` would be parsed, IDNA included, on
    /// every fetch).
    endpoint: reqwest::Url,
    token: Token,
    naf_id_hex: String,
    cache: Mutex<HashMap<String, Arc<UeKeys>>>,
}

impl fmt::Debug for ZnClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZnClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn decode_key(b64: &str, what: &str) -> Result<NafKey, ZnError> {
    let mut raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| ZnError::Malformed(format!("{what} is not base64")))?;
    let k = NafKey::from_slice(&raw).map_err(|_| ZnError::Malformed(format!("{what} length")));
    zeroize::Zeroize::zeroize(&mut raw);
    k
}

impl ZnClient {
    /// A client for the BSF at `bsf_url`, as the NAF `bmsc_fqdn`.
    pub fn new(
        bsf_url: &str,
        token: Token,
        bmsc_fqdn: &str,
        timeout: Duration,
    ) -> Result<Self, ZnError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ZnError::Unavailable(e.to_string()))?;
        let endpoint = format!("{}/zn/v1/naf-keys", bsf_url.trim_end_matches('/'));
        let endpoint = reqwest::Url::parse(&endpoint)
            .map_err(|e| ZnError::Unavailable(format!("BSF URL {endpoint:?}: {e}")))?;
        Ok(ZnClient {
            http,
            endpoint,
            token,
            naf_id_hex: hex::encode(NafId::mbms(bmsc_fqdn).as_bytes()),
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<UeKeys>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached keys of `btid`, if still valid at `now` (Unix seconds).
    pub fn cached(&self, btid: &str, now: u64) -> Option<Arc<UeKeys>> {
        let c = self.cache();
        c.get(btid).filter(|k| k.expires_at > now).cloned()
    }

    /// The keys of `btid`: from the cache, else from the BSF. `Ok(None)`
    /// when the BSF does not know the B-TID (or its lifetime ended): the UE
    /// must bootstrap again.
    pub async fn keys(&self, btid: &str, now: u64) -> Result<Option<Arc<UeKeys>>, ZnError> {
        if let Some(k) = self.cached(btid, now) {
            return Ok(Some(k));
        }
        let body = serde_json::to_vec(&ZnRequest {
            btid,
            naf_id: &self.naf_id_hex,
        })
        .map_err(|e| ZnError::Malformed(e.to_string()))?;
        let resp = self
            .http
            .post(self.endpoint.clone())
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ZnError::Unavailable(e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                self.cache().remove(btid);
                return Ok(None);
            }
            s => return Err(ZnError::Unavailable(format!("Zn answered HTTP {s}"))),
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ZnError::Unavailable(e.to_string()))?;
        let a: ZnAnswer =
            serde_json::from_slice(&bytes).map_err(|e| ZnError::Malformed(e.to_string()))?;
        let expires_at = time::OffsetDateTime::parse(
            &a.lifetime,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| ZnError::Malformed("lifetime is not RFC 3339".into()))?
        .unix_timestamp();
        let expires_at = u64::try_from(expires_at).unwrap_or(0);
        let ks_naf = decode_key(&a.ks_naf, "ks_naf")?;
        let keys = match a.gba_type.as_str() {
            "gba_me" => MbmsKeys::gba_me(&ks_naf),
            "gba_u" => {
                let int = a
                    .ks_int_naf
                    .as_deref()
                    .ok_or_else(|| ZnError::Malformed("gba_u without ks_int_naf".into()))?;
                MbmsKeys::gba_u(&ks_naf, &decode_key(int, "ks_int_naf")?)
            }
            other => return Err(ZnError::Malformed(format!("gba_type {other:?}"))),
        };
        let k = Arc::new(UeKeys {
            impi: a.impi,
            mrk: keys.mrk.clone(),
            muk: keys.muk.clone(),
            expires_at,
        });
        if expires_at > now {
            let mut c = self.cache();
            if c.len() >= CACHE_CAPACITY {
                c.retain(|_, v| v.expires_at > now);
                if c.len() >= CACHE_CAPACITY {
                    c.clear();
                }
            }
            c.insert(btid.to_owned(), k.clone());
            Ok(Some(k))
        } else {
            Ok(None)
        }
    }
}
