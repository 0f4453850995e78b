//! The admin REST API under `/admin/v1`: JSON, `Authorization: Bearer
//! <admin_token>`. Documented in `docs/bmsc-openapi.yaml`.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /admin/v1/services`, `POST /admin/v1/services` | list, create or replace a service |
//! | `GET /admin/v1/key-groups`, `POST /admin/v1/key-groups` | list, create or replace a key group |
//! | `POST /admin/v1/key-groups/{id}/rotate` | rotate the MSK now (pushed to every UE) |
//! | `GET /admin/v1/cluster` | the instances on a shared PostgreSQL database, their key groups and UE shards |
//! | `POST /admin/v1/key-groups/{id}/solicited-pull` | solicited pull to every UE of the key group |
//! | `GET /admin/v1/registrations` | the UEs and their services |
//! | `GET /admin/v1/registrations/{impi}/deliveries` | delivery status of the UE's MSKs |
//! | `POST /admin/v1/registrations/{impi}/solicited-pull[?key_group=N]` | solicited pull to one UE |
//! | `GET /admin/v1/charging-records[?after=ID&limit=N&format=csv]` | charging records export |
//! | `GET /admin/v1/sessions` | sessions and their current MTK |
//! | `POST /admin/v1/sessions/{name}/objects?name=FILE` | protect the body as a download object |
//!
//! Every error is the JSON object `{"error": "..."}` of the OpenAPI file:
//! also a malformed path or query parameter, a malformed or oversize body
//! (axum's extractor rejections are mapped here, after the token check),
//! and, for the whole server, an unknown path (`not_found`, 404) and a
//! method a path does not serve (`method_not_allowed`, 405).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::core::{now_ts, CoreError};
use crate::server::App;
use crate::store::{KeyGroupDef, ServiceDef};

/// Largest admin request body (a download object, a JSON definition): 2 MiB,
/// the limit `docs/bmsc-openapi.yaml` documents (413 above it).
pub const MAX_ADMIN_BODY: usize = 2 * 1024 * 1024;

/// The admin router (state: the app).
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/admin/v1/services", get(list_services).post(put_service))
        .route(
            "/admin/v1/key-groups",
            get(list_key_groups).post(put_key_group),
        )
        .route("/admin/v1/key-groups/{id}/rotate", post(rotate))
        .route("/admin/v1/cluster", get(cluster))
        .route("/admin/v1/key-groups/{id}/solicited-pull", post(pull_group))
        .route("/admin/v1/registrations", get(list_ues))
        .route("/admin/v1/registrations/{impi}/deliveries", get(deliveries))
        .route(
            "/admin/v1/registrations/{impi}/solicited-pull",
            post(pull_ue),
        )
        .route("/admin/v1/charging-records", get(charging))
        .route("/admin/v1/sessions", get(sessions))
        .route("/admin/v1/sessions/{name}/objects", post(post_object))
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY))
}

/// The documented error answer: `status` with `{"error": msg}`.
pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// The server's fallback for a path no route serves: 404 with the error
/// object.
pub(crate) async fn not_found(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such path {}", uri.path()),
    )
}

/// The server's fallback for a method a path does not serve: 405 with the
/// error object (axum adds `Allow`).
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// An extractor rejection (path or query parameter, body) as the error
/// object, with the rejection's status.
fn rejection(status: StatusCode, text: String) -> Response {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        error(status, format!("body larger than {MAX_ADMIN_BODY} bytes"))
    } else {
        error(status, text)
    }
}

/// Unwraps an extractor result (`Path`, `Query`, `Bytes`), or returns the
/// rejection as the error object.
macro_rules! extract {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(rej) => return rejection(rej.status(), rej.body_text()),
        }
    };
}

/// `None` when the bearer token is right, else the 401 to answer.
fn check(app: &App, headers: &HeaderMap) -> Option<Response> {
    let h = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    if app.admin_token.check_bearer(h) {
        None
    } else {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"bmsc-admin\""),
        );
        Some(r)
    }
}

fn core_error(e: CoreError) -> Response {
    match e {
        CoreError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        CoreError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        other => {
            tracing::error!(error = %crate::ErrorChain(&other), "admin API");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON: {e}"),
        ))
    })
}

async fn list_services(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    Json(app.core.run(|c| c.services()).await).into_response()
}

async fn put_service(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    let body = extract!(body);
    let d: ServiceDef = match parse_json(&body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    match app.core.run(move |c| c.put_service(d, now_ts())).await {
        Ok(d) => {
            app.core.wake();
            tracing::info!(service = %d.id, "admin: service stored");
            (StatusCode::CREATED, Json(d)).into_response()
        }
        Err(e) => core_error(e),
    }
}

async fn list_key_groups(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    Json(app.core.run(|c| c.key_groups()).await).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyGroupBody {
    key_group: u16,
    #[serde(default = "default_window")]
    window_len: u16,
    #[serde(default)]
    charging: bool,
    #[serde(default = "yes")]
    ack: bool,
    #[serde(default)]
    rotate_interval: u64,
}

fn default_window() -> u16 {
    mbms::engine::DEFAULT_WINDOW_LEN
}

fn yes() -> bool {
    true
}

async fn put_key_group(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    let body = extract!(body);
    let b: KeyGroupBody = match parse_json(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let d = KeyGroupDef {
        key_group: b.key_group,
        window_len: b.window_len,
        charging: b.charging,
        ack: b.ack,
        rotate_interval: b.rotate_interval,
    };
    match app.core.run(move |c| c.put_key_group(d, now_ts())).await {
        Ok(v) => {
            tracing::info!(key_group = v.def.key_group, "admin: key group stored");
            (StatusCode::CREATED, Json(v)).into_response()
        }
        Err(e) => core_error(e),
    }
}

async fn rotate(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    id: Result<Path<u16>, PathRejection>,
) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    let Path(id) = extract!(id);
    if let Some(r) = rotate_at_anchor(&app, id).await {
        return r;
    }
    if let Some(st) = &app.cluster {
        // Deregistrations answered elsewhere just before are applied
        // first: their UEs get no MSK of this rotation.
        st.sync_notices().await;
    }
    match app.core.run(move |c| c.rotate(id, now_ts())).await {
        Ok(info) => {
            app.core.wake();
            app.rotated();
            Json(json!({
                "key_group": id,
                "current": info.current.name.msk_id.to_string(),
                "next": info.next.name.msk_id.to_string(),
            }))
            .into_response()
        }
        Err(e) => core_error(e),
    }
}

/// Several instances, this one not the anchor of key group `id`: the
/// anchor rotates (notice), this instance answers once it adopted the new
/// MSKs; 503 with Retry-After when that takes longer than the lease time
/// (no anchor: it is being taken over). `None`: rotate here.
async fn rotate_at_anchor(app: &Arc<App>, id: u16) -> Option<Response> {
    let st = app.cluster.as_ref()?;
    let (anchor, before) = app
        .core
        .run_short(move |c| (c.is_anchor(id), c.key_group_info(id)))
        .await;
    if anchor {
        return None;
    }
    let before = before?.current.name;
    if let Err(e) = st
        .notify(crate::cluster::Notice::Rotate { key_group: id })
        .await
    {
        tracing::warn!(error = %crate::ErrorChain(&e), "admin: rotation not forwarded to the anchor");
        return Some(unavailable("the database is unreachable"));
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(st.lease_ms);
    loop {
        let info = app.core.run_short(move |c| c.key_group_info(id)).await;
        if let Some(info) = info.filter(|i| i.current.name != before) {
            return Some(
                Json(json!({
                    "key_group": id,
                    "current": info.current.name.msk_id.to_string(),
                    "next": info.next.name.msk_id.to_string(),
                }))
                .into_response(),
            );
        }
        if tokio::time::Instant::now() >= deadline {
            return Some(unavailable(
                "the key group's anchor did not rotate in time (being taken over?)",
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Several instances, UE `impi` owned by another one: its owner pulls
/// (notice), this instance answers `sent: 0, forwarded: true` (the key
/// groups are the UE's, or `key_group`). `None`: pull here.
async fn pull_at_owner(app: &Arc<App>, impi: &str, key_group: Option<u16>) -> Option<Response> {
    let st = app.cluster.as_ref()?;
    let i2 = impi.to_owned();
    if app.core.run_short(move |c| c.owns_ue(&i2)).await {
        return None;
    }
    // 0 (no Key Group has it): every key group of the UE.
    let g = key_group.unwrap_or(0);
    let (i2, keep) = (impi.to_owned(), crate::cluster::pull_memory_ms(app));
    app.core
        .run_short(move |c| c.remember_pull(g, Some(&i2), now_ts(), keep))
        .await;
    let n = crate::cluster::Notice::Pull {
        key_group: g,
        impi: Some(impi.to_owned()),
    };
    if let Err(e) = st.notify(n).await {
        tracing::warn!(error = %crate::ErrorChain(&e), "admin: solicited pull not forwarded");
        return Some(unavailable("the database is unreachable"));
    }
    Some(Json(json!({ "impi": impi, "sent": 0, "forwarded": true })).into_response())
}

/// 503 with `Retry-After: 1`.
fn unavailable(m: &str) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, m);
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    r
}

/// `GET /admin/v1/cluster`: this instance, every instance known with the
/// key groups it anchors and the UE shards it holds, the lease time. A
/// single instance on SQLite lists itself owning everything.
async fn cluster(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    let Some(st) = app.cluster.as_ref() else {
        let groups = app.core.run_short(|c| c.key_group_ids()).await;
        return Json(json!({
            "instance_id": "sqlite",
            "instances": [{
                "instance_id": "sqlite",
                "url": "",
                "alive": true,
                "key_groups": groups,
                "ue_shards": crate::cluster::UE_SHARDS,
            }],
            "lease_ms": 0,
        }))
        .into_response();
    };
    match st.instances().await {
        Ok(rows) => Json(json!({
            "instance_id": st.instance_id,
            "instances": rows,
            "lease_ms": st.lease_ms,
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %crate::ErrorChain(&e), "admin: cluster listing");
            unavailable("the database is unreachable")
        }
    }
}

#[derive(Deserialize)]
struct PullQuery {
    key_group: Option<u16>,
}

async fn pull_group(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    id: Result<Path<u16>, PathRejection>,
) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    let Path(id) = extract!(id);
    let keep = crate::cluster::pull_memory_ms(&app);
    let pulled = app
        .core
        .run(move |c| {
            c.remember_pull(id, None, now_ts(), keep);
            c.solicited_pull(id, None)
        })
        .await;
    match pulled {
        Ok(d) => {
            if let Some(st) = &app.cluster {
                // The other instances pull the UEs they own.
                let n = crate::cluster::Notice::Pull {
                    key_group: id,
                    impi: None,
                };
                if let Err(e) = st.notify(n).await {
                    tracing::warn!(error = %crate::ErrorChain(&e), "admin: solicited pull not forwarded");
                }
            }
            // Sent by the engine driver, in counter order with the
            // deliveries (`Core::solicited_pull`).
            app.core.wake();
            Json(json!({ "key_group": id, "sent": d })).into_response()
        }
        Err(e) => core_error(e),
    }
}

async fn pull_ue(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    impi: Result<Path<String>, PathRejection>,
    q: Result<Query<PullQuery>, QueryRejection>,
) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    let Path(impi) = extract!(impi);
    let Query(q) = extract!(q);
    if let Some(r) = pull_at_owner(&app, &impi, q.key_group).await {
        return r;
    }
    let i2 = impi.clone();
    let r = app
        .core
        .run(move |c| -> Result<_, CoreError> {
            let groups: Vec<u16> = match q.key_group {
                Some(g) => vec![g],
                None => {
                    c.ues()
                        .into_iter()
                        .find(|u| u.impi == i2)
                        .ok_or_else(|| CoreError::NotFound(format!("UE {i2}")))?
                        .key_groups
                }
            };
            let mut queued = 0;
            for g in groups {
                queued += c.solicited_pull(g, Some(&i2))?;
            }
            Ok(queued)
        })
        .await;
    match r {
        Ok(n) => {
            app.core.wake();
            Json(json!({ "impi": impi, "sent": n })).into_response()
        }
        Err(e) => core_error(e),
    }
}

async fn list_ues(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    Json(app.core.run(|c| c.ues()).await).into_response()
}

async fn deliveries(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    impi: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    let Path(impi) = extract!(impi);
    let i2 = impi.clone();
    match app.core.run(move |c| c.deliveries(&i2)).await {
        Some(d) => Json(json!({ "impi": impi, "deliveries": d })).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("UE {impi} is not registered"),
        ),
    }
}

#[derive(Deserialize)]
struct ChargingQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    format: Option<String>,
}

fn default_limit() -> usize {
    1000
}

async fn charging(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    q: Result<Query<ChargingQuery>, QueryRejection>,
) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    let Query(q) = extract!(q);
    let limit = q.limit.clamp(1, 100_000);
    let after = q.after;
    let store = app.core.run(|c| c.store().clone()).await;
    let rows = tokio::task::spawn_blocking(move || store.charging_records(after, limit)).await;
    let rows = match rows {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return core_error(CoreError::Store(e)),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    };
    match q.format.as_deref() {
        None | Some("json") => Json(json!({ "records": rows })).into_response(),
        Some("csv") => {
            let mut s = String::from("id,time,impi,btid,key_domain_id,msk_id,counter\n");
            for r in &rows {
                let t = crate::rfc3339_millis(r.time_ms);
                s.push_str(&format!(
                    "{},{},{},{},{},{},{}\n",
                    r.id,
                    t,
                    csv_field(&r.impi),
                    csv_field(&r.btid),
                    r.msk.key_domain,
                    r.msk.msk_id,
                    r.counter
                ));
            }
            ([(CONTENT_TYPE, "text/csv; charset=utf-8")], s).into_response()
        }
        Some(f) => error(StatusCode::BAD_REQUEST, format!("unknown format {f:?}")),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

async fn sessions(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    let v: Vec<_> = app.sessions.all().map(|s| s.status()).collect();
    Json(v).into_response()
}

#[derive(Deserialize)]
struct ObjectQuery {
    name: String,
}

async fn post_object(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    q: Result<Query<ObjectQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(r) = check(&app, &h) {
        return r;
    }
    let Path(name) = extract!(name);
    let Query(q) = extract!(q);
    let body = extract!(body);
    match crate::session::protect_object(
        &app.session_ctx(),
        &app.sessions,
        &name,
        &q.name,
        body.to_vec(),
    )
    .await
    {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e @ crate::session::SessionError::UnknownSession(_)) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e @ crate::session::SessionError::BadName(_)) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %crate::ErrorChain(&e), "admin: protecting an object");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}
