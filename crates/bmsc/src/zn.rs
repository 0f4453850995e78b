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
/// eighth that expires first ([`make_room`]).
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

/// Room for one more entry in a cache of at most `capacity`: when it is
/// full, the expired entries go; if that is not enough, the eighth of the
/// entries that expire first (all bootstrapping sessions have the BSF's
/// one lifetime, so these are about the oldest). Dropping an eighth at a
/// time keeps the cost per insertion constant (one scan per `capacity / 8`
/// insertions), and the entries in use stay: clearing the whole cache
/// would send every UE's next request to the BSF at once.
fn make_room(c: &mut HashMap<String, Arc<UeKeys>>, now: u64, capacity: usize) {
    if c.len() < capacity {
        return;
    }
    c.retain(|_, v| v.expires_at > now);
    if c.len() < capacity {
        return;
    }
    let mut ends: Vec<u64> = c.values().map(|v| v.expires_at).collect();
    let cut = (ends.len() / 8).max(1);
    let (_, nth, _) = ends.select_nth_unstable(cut - 1);
    let limit = *nth;
    // The strictly earlier ones (fewer than `cut`), then ties at the limit
    // until `cut` are gone: many sessions share one expiry second.
    c.retain(|_, v| v.expires_at >= limit);
    let mut more = cut.saturating_sub(ends.len() - c.len());
    c.retain(|_, v| {
        if more > 0 && v.expires_at == limit {
            more -= 1;
            false
        } else {
            true
        }
    });
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
            make_room(&mut c, now, CACHE_CAPACITY);
            c.insert(btid.to_owned(), k.clone());
            Ok(Some(k))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(expires_at: u64) -> Arc<UeKeys> {
        Arc::new(UeKeys {
            impi: "ue@home1.net".into(),
            mrk: Mrk::from_bytes([1; 32]),
            muk: Muk::from_bytes([2; 32]),
            expires_at,
        })
    }

    #[test]
    fn a_full_cache_drops_the_expired_then_an_eighth_expiring_first() {
        let mut c = HashMap::new();
        for i in 0..16u64 {
            c.insert(format!("b{i}"), keys(100 + i));
        }
        // Not full: nothing goes.
        make_room(&mut c, 0, 17);
        assert_eq!(c.len(), 16);
        // Two expired at now = 101 (100 and 101): they go, nothing else.
        make_room(&mut c, 101, 16);
        assert_eq!(c.len(), 14);
        assert!(!c.contains_key("b0") && !c.contains_key("b1"));
        // Full, none expired: the eighth (1 of 14) that expires first.
        make_room(&mut c, 0, 14);
        assert_eq!(c.len(), 13);
        assert!(!c.contains_key("b2") && c.contains_key("b3"));
    }

    #[test]
    fn ties_at_the_limit_do_not_empty_the_cache() {
        let mut c = HashMap::new();
        for i in 0..64u64 {
            c.insert(format!("b{i}"), keys(500));
        }
        make_room(&mut c, 0, 64);
        assert_eq!(c.len(), 56, "one eighth of 64 goes, not every tie");
    }
}
