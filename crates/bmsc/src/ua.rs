//! Ua: `POST /keymanagement?requesttype=register|deregister|msk-request`
//! (seed 002 G.2.3, `PROFILE.md` section 3), HTTP Digest with the MRK.
//!
//! | request | answer |
//! |---|---|
//! | `requesttype` missing or unknown, bad `mikey-port` | 400 |
//! | body over 64 KiB | 413 |
//! | no `Authorization`, a foreign or expired nonce, a wrong response, a replayed (nonce, nc), an unknown or expired B-TID | 401 with `WWW-Authenticate: Digest` (one per algorithm, `stale=true` for an expired nonce) |
//! | malformed `Authorization`, qop/algorithm/uri mismatch | 400 |
//! | BSF unreachable | 503 |
//! | authenticated, wrong `Content-Type` | 415 |
//! | authenticated, malformed body | 400 |
//! | authenticated, well-formed | 200, per-item statuses, `Authentication-Info` (rspauth over the body, nextnonce) |
//!
//! A request whose `Authorization` carries a nonce this server issued
//! earlier (e.g. a `nextnonce`) is served without a new challenge (seed 002
//! NOTE 2). Nothing changes before a request is authenticated and its body
//! understood.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::RngCore as _;

use gba::digest::{Request, VerifyError};

use crate::core::{now_ts, UeContext};
use crate::metrics::{HttpLabels, ItemLabels};
use crate::server::App;
use crate::xml::{self, RequestType};

/// The Ua path.
pub const PATH: &str = "/keymanagement";

/// The database did not answer or commit (PostgreSQL unreachable, a
/// disk failure): 503 with `Retry-After` (nothing was accepted; the UE
/// retries, issue 13). The cause is logged where it happened (the
/// committer, the handler).
fn store_unavailable() -> Response {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the BM-SC's database is unavailable; retry later",
    );
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    r
}

/// The answer to a failed core operation.
fn core_failure(e: &crate::core::CoreError, what: &str) -> Response {
    tracing::error!(error = %crate::ErrorChain(e), "Ua: {what}");
    match e {
        crate::core::CoreError::Store(_) => store_unavailable(),
        _ => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    m.push('\n');
    (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], m).into_response()
}

/// `requesttype` and `mikey-port` of the query (`PROFILE.md` section 3).
///
/// The query is read as `application/x-www-form-urlencoded` (the WHATWG URL
/// standard's parser, `form_urlencoded`): names and values are
/// percent-decoded (`requesttype=msk%2Drequest` is `msk-request`) and `+`
/// reads as a space. Other parameters are ignored; `requesttype` or
/// `mikey-port` given twice is refused, even with the same value (which one
/// would count is not said anywhere). A value that is not UTF-8 once decoded
/// reads with U+FFFD and is then refused like any unknown value.
fn parse_query(q: Option<&str>) -> Result<(RequestType, u16), String> {
    let mut rt = None;
    let mut port = None;
    for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "requesttype" => {
                if rt.is_some() {
                    return Err("requesttype given twice".into());
                }
                rt = Some(RequestType::parse(&v).ok_or_else(|| {
                    format!("unknown requesttype {v:?} (register, deregister or msk-request)")
                })?);
            }
            "mikey-port" => {
                let p: u16 = v
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("mikey-port {v:?} is not a port number"))?;
                if port.replace(p).is_some() {
                    return Err("mikey-port given twice".into());
                }
            }
            _ => {}
        }
    }
    let rt = rt.ok_or("the requesttype URI parameter is required")?;
    Ok((rt, port.unwrap_or(mbms::profile::MIKEY_UDP_PORT)))
}

impl App {
    fn challenge(&self, stale: bool) -> Response {
        let mut random = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let mut r = text(StatusCode::UNAUTHORIZED, "authentication required");
        let digest = self.digest();
        let nonce = digest.issue_nonce(crate::unix_now(), &random);
        mbms_service::digest::append_challenges(&mut r, &digest.challenges(&nonce, stale));
        r
    }
}

/// The Ua handler.
pub async fn keymanagement(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Parsed once: the label and the handler use the same result.
    let query = parse_query(uri.query());
    let rt_label = query.as_ref().map_or("other", |(rt, _)| rt.as_str());
    let resp = handle(&app, peer, &method, query, &uri, &headers, body).await;
    app.metrics
        .http
        .get_or_create(&HttpLabels {
            requesttype: rt_label.into(),
            status: crate::metrics::status_label(resp.status().as_u16()),
        })
        .inc();
    resp
}

async fn handle(
    app: &Arc<App>,
    peer: SocketAddr,
    method: &Method,
    query: Result<(RequestType, u16), String>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if method != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    let (rt, mikey_port) = match query {
        Ok(x) => x,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            let status = rej.status();
            return text(
                status,
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!("body larger than {} bytes", crate::config::MAX_UA_BODY)
                } else {
                    rej.body_text()
                },
            );
        }
    };
    let now = crate::unix_now();

    // --- HTTP Digest (PROFILE.md section 3) ---
    let auth = match mbms_service::digest::authorization(headers) {
        Ok(Some(a)) => a,
        Ok(None) => return app.challenge(false),
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // Cheap checks before asking the BSF: our nonce, our realm.
    if app.digest().decode_nonce(&auth.nonce).is_err() || auth.realm != app.realm {
        return app.challenge(false);
    }
    let btid = auth.username.clone();
    let keys = match app.zn.keys(&btid, now).await {
        Ok(Some(k)) => {
            crate::metrics::Metrics::inc(&app.metrics.zn, "ok");
            k
        }
        Ok(None) => {
            crate::metrics::Metrics::inc(&app.metrics.zn, "not_found");
            tracing::info!(btid = %btid, "Ua: unknown or expired B-TID; the UE must bootstrap again");
            return app.challenge(false);
        }
        Err(e) => {
            crate::metrics::Metrics::inc(&app.metrics.zn, "error");
            tracing::error!(error = %e, "Zn failed");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the bootstrapping server is unavailable; retry later",
            );
        }
    };
    let target = mbms_service::digest::request_target(uri);
    let password = keys.mrk.password();
    let verified = app.digest().verify(
        &auth,
        &Request {
            method: method.as_str(),
            uri: &target,
            body: &body,
        },
        &*password,
        now,
    );
    let verified = match verified {
        Ok(v) => v,
        Err(VerifyError::StaleNonce) => return app.challenge(true),
        Err(
            e @ (VerifyError::ResponseMismatch
            | VerifyError::Replay
            | VerifyError::InvalidNonce
            | VerifyError::RealmMismatch),
        ) => {
            tracing::info!(btid = %btid, error = %e, "Ua: authentication failed");
            return app.challenge(false);
        }
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Digest credentials refused: {e}"),
            )
        }
    };

    // --- the request itself ---
    // The media type, case-insensitive (RFC 9110 8.3.1), parameters aside.
    let ct_ok = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(rt.content_type())
        });
    if !ct_ok {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "requesttype={} needs Content-Type: {}",
                rt.as_str(),
                rt.content_type()
            ),
        );
    }
    let xml_text = match xml::decode_body(&body) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let ip = peer.ip().to_canonical();
    let ctx = UeContext {
        impi: keys.impi.clone(),
        btid: btid.clone(),
        muk: keys.muk.clone(),
        mikey_addr: SocketAddr::new(ip, mikey_port),
    };
    let ts = now_ts();
    let (response_body, items) = match rt {
        RequestType::Register | RequestType::Deregister => {
            let services = match xml::parse_services(&xml_text, rt) {
                Ok(s) => s,
                Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
            };
            // In-memory work and a queued write: on this thread (the
            // commit happens outside the core, see `crate::committer`).
            let (c2, s2) = (ctx.clone(), services.clone());
            let r = app
                .core
                .run_short_for_ue(&ctx.impi, move |c| {
                    let before = c.write_ticket();
                    let r = if rt == RequestType::Register {
                        c.register(&c2, &s2, ts)
                    } else {
                        c.deregister(&c2, &s2, ts)
                    };
                    r.map(|s| (s, c.write_ticket(), c.write_ticket() != before))
                })
                .await;
            let statuses = match r {
                Ok((s, ticket, queued)) => {
                    if !app.committed_then_pushed(ticket, queued).await {
                        return store_unavailable();
                    }
                    s
                }
                Err(e) => {
                    app.core.wake();
                    return core_failure(&e, rt.as_str());
                }
            };
            // One line per request: DEBUG (INFO is for start, stop and failures).
            tracing::debug!(impi = %ctx.impi, btid = %btid, mikey = %ctx.mikey_addr, request = rt.as_str(), services = ?services, statuses = ?statuses, "Ua");
            let items: Vec<(String, u16)> =
                services.into_iter().zip(statuses.iter().copied()).collect();
            (xml::register_response(&items), statuses)
        }
        RequestType::MskRequest => {
            let keys_req = match xml::parse_msk_request(&xml_text) {
                Ok(k) => k,
                Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
            };
            let names: Vec<_> = keys_req.iter().map(|k| k.name).collect();
            let c2 = ctx.clone();
            let r = app
                .core
                .run_short_for_ue(&ctx.impi, move |c| {
                    let before = c.write_ticket();
                    c.request_msks(&c2, &names, ts)
                        .map(|s| (s, c.write_ticket(), c.write_ticket() != before))
                })
                .await;
            let statuses = match r {
                Ok((s, ticket, queued)) => {
                    if !app.committed_then_pushed(ticket, queued).await {
                        return store_unavailable();
                    }
                    s
                }
                Err(e) => {
                    app.core.wake();
                    return core_failure(&e, "msk-request");
                }
            };
            tracing::debug!(impi = %ctx.impi, btid = %btid, mikey = %ctx.mikey_addr, keys = keys_req.len(), statuses = ?statuses, "Ua: msk-request");
            let items: Vec<_> = keys_req.into_iter().zip(statuses.iter().copied()).collect();
            (xml::msk_response(&items), statuses)
        }
    };
    for st in items {
        app.metrics
            .items
            .get_or_create(&ItemLabels {
                requesttype: rt.as_str().into(),
                status: crate::metrics::status_label(st),
            })
            .inc();
    }

    // The nextnonce's random part: the thread's CSPRNG (ChaCha, seeded and
    // reseeded from the OS), not a system call per request; the nonce is
    // MACed with the server secret anyway.
    let mut random = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut random);
    let info = {
        let d = app.digest();
        let next = d.issue_nonce(now, &random);
        d.authentication_info(&verified, response_body.as_bytes(), Some(next))
    };
    let mut r = (
        StatusCode::OK,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static(rt.response_content_type()),
        )],
        response_body,
    )
        .into_response();
    if let Some(v) = mbms_service::digest::authentication_info(&info) {
        r.headers_mut()
            .insert(mbms_service::digest::AUTHENTICATION_INFO, v);
    }
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        assert_eq!(
            parse_query(Some("requesttype=register")).unwrap(),
            (RequestType::Register, 2269)
        );
        assert_eq!(
            parse_query(Some("x=1&requesttype=msk-request&mikey-port=4000")).unwrap(),
            (RequestType::MskRequest, 4000)
        );
        for bad in [
            None,
            Some(""),
            Some("requesttype=join"),
            Some("requesttype=register&requesttype=register"),
            Some("requesttype=register&mikey-port=0"),
            Some("requesttype=register&mikey-port=70000"),
        ] {
            assert!(parse_query(bad).is_err(), "{bad:?}");
        }
    }

    /// Issue 14 point 11: the query is percent-decoded (it was split by
    /// hand, so `msk%2Drequest` was an unknown request type).
    #[test]
    fn query_is_percent_decoded() {
        assert_eq!(
            parse_query(Some("requesttype=msk%2Drequest")).unwrap(),
            (RequestType::MskRequest, 2269)
        );
        assert_eq!(
            parse_query(Some("requesttype=%72egister&mikey-port=%32%32%36%39")).unwrap(),
            (RequestType::Register, 2269)
        );
        assert_eq!(
            parse_query(Some("mikey%2Dport=4000&requesttype=deregister")).unwrap(),
            (RequestType::Deregister, 4000)
        );
        // Unknown parameters, also malformed or not UTF-8 once decoded, and
        // empty pairs are ignored.
        assert_eq!(
            parse_query(Some("&x=%ZZ&&y=%FF%FE&z&requesttype=register&")).unwrap(),
            (RequestType::Register, 2269)
        );
        // A repeated parameter is refused, however it is spelt.
        assert!(parse_query(Some("requesttype=register&request%74ype=register")).is_err());
        assert!(parse_query(Some(
            "requesttype=register&mikey-port=2269&mikey%2Dport=2269"
        ))
        .is_err());
        // Decoding does not make bad values good.
        for bad in [
            "requesttype=register%00",
            "requesttype=register+",
            "requesttype=%FF",
            "requesttype=register&mikey-port=2269%20",
            "requesttype=register&mikey-port=-1",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
