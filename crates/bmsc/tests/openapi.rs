//! The admin API answers what `docs/bmsc-openapi.yaml` documents (issue 14
//! point 5): a real BM-SC runs in-process, every documented operation is
//! called for its success and each documented error status, and every
//! answer is checked against the document: the status is one the
//! operation lists, the Content-Type is one of that response's media types,
//! required headers are there, and the body validates against the schema
//! (JSON Schema 2020-12, the document being OpenAPI 3.1, `$ref`s resolved).
//! Every (operation, status) the document lists must have been seen, every
//! route of the router must be in the document (or in [`UNDOCUMENTED`]),
//! unknown paths answer 404 and unserved methods 405 with the error object.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use reqwest::header::{ALLOW, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};

use support::{Env, ADMIN, NEWS, PAY};

/// Routes of the router that the OpenAPI document leaves out on purpose:
/// (first argument of `.route(`, where it is described).
const UNDOCUMENTED: &[(&str, &str)] = &[(
    "ua::PATH",
    "the Ua interface (3GPP XML bodies, HTTP Digest): docs/bmsc.md, tests/ua_mikey.rs",
)];

/// Documented statuses this test cannot provoke: (method, path, status, why).
const NOT_PROVOKED: &[(&str, &str, u16, &str)] = &[
    (
        "get",
        "/admin/v1/cluster",
        503,
        "needs PostgreSQL going away; tests/cluster.rs covers the cluster",
    ),
    (
        "post",
        "/admin/v1/key-groups/{id}/rotate",
        503,
        "needs several instances and no anchor; tests/cluster.rs covers forwarding",
    ),
    (
        "post",
        "/admin/v1/key-groups/{id}/solicited-pull",
        500,
        "the store is not written by a pull",
    ),
    (
        "post",
        "/admin/v1/registrations/{impi}/solicited-pull",
        500,
        "the store is not written by a pull",
    ),
    (
        "post",
        "/admin/v1/sessions/{name}/objects",
        500,
        "needs an unwritable out_dir; the session tests cover write failures",
    ),
];

const METHODS: &[&str] = &["get", "post", "put", "delete", "patch"];

fn load_spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/bmsc-openapi.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let v: Value = serde_norway::from_str(&text).unwrap();
    assert!(
        v["openapi"].as_str().unwrap().starts_with("3.1."),
        "the schemas are read as JSON Schema 2020-12: the document must be OpenAPI 3.1"
    );
    v
}

/// `v` with every local `$ref` ("#/...") replaced by its target.
fn resolve(doc: &Value, v: &Value, depth: usize) -> Value {
    assert!(depth < 32, "$ref cycle");
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let ptr = r.strip_prefix('#').expect("only local $refs");
                let target = doc
                    .pointer(ptr)
                    .unwrap_or_else(|| panic!("dangling $ref {r}"));
                return resolve(doc, target, depth + 1);
            }
            Value::Object(
                m.iter()
                    .map(|(k, x)| (k.clone(), resolve(doc, x, depth + 1)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve(doc, x, depth + 1)).collect()),
        other => other.clone(),
    }
}

/// The media type of a Content-Type value (no parameters, lower case).
fn essence(ct: &str) -> String {
    ct.split(';').next().unwrap().trim().to_ascii_lowercase()
}

fn check_schema(schema: &Value, body: &Value, what: &str) {
    let mut schema = schema.clone();
    schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    let v = jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("{what}: the schema does not compile: {e}"));
    let errors: Vec<String> = v
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the body does not match the document:\n{}\nbody: {body:#}",
        errors.join("\n")
    );
}

enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>),
}

struct Checker {
    doc: Value,
    http: reqwest::Client,
    base: String,
    /// (method, path template, status) seen.
    seen: BTreeSet<(String, String, u16)>,
}

impl Checker {
    fn operation(&self, method: &str, template: &str) -> Value {
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not in the document");
        resolve(&self.doc, op, 0)
    }

    /// Calls `method target` (the path of `template` filled in, with its
    /// query) and checks the answer against the document. Returns the
    /// status and the body (JSON, or a JSON string for other media types).
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        target: &str,
        token: bool,
        body: Body,
    ) -> (u16, Value) {
        let op = self.operation(method, template);
        let mut req = self.http.request(
            Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap(),
            format!("{}{target}", self.base),
        );
        if token {
            req = req.bearer_auth(ADMIN);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Raw(b) => req.header(CONTENT_TYPE, "application/octet-stream").body(b),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let what = format!("{method} {target} -> {status}");
        let response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{what}: status not documented for {method} {template}"
        );
        if let Some(headers) = response["headers"].as_object() {
            for (name, h) in headers {
                let got = resp.headers().get(name.as_str());
                if h["required"] == true {
                    let got = got.unwrap_or_else(|| panic!("{what}: header {name} missing"));
                    check_schema(
                        &h["schema"],
                        &json!(got.to_str().unwrap()),
                        &format!("{what}, header {name}"),
                    );
                }
            }
        }
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| essence(v.to_str().unwrap()))
            .unwrap_or_default();
        let content = response["content"]
            .as_object()
            .unwrap_or_else(|| panic!("{what}: the document gives no content"));
        let media = content.get(&ct).unwrap_or_else(|| {
            panic!(
                "{what}: Content-Type {ct:?} not among {:?}",
                content.keys().collect::<Vec<_>>()
            )
        });
        let bytes = resp.bytes().await.unwrap();
        let value = if ct == "application/json" {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {bytes:?}"))
        } else {
            Value::String(String::from_utf8(bytes.to_vec()).unwrap())
        };
        check_schema(&media["schema"], &value, &what);
        self.seen
            .insert((method.to_owned(), template.to_owned(), status));
        (status, value)
    }

    /// A request to a path or method the document does not have: checks the
    /// status and that the body is the documented error object.
    async fn undocumented(
        &self,
        method: &str,
        target: &str,
        want: u16,
    ) -> reqwest::header::HeaderMap {
        let resp = self
            .http
            .request(
                Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap(),
                format!("{}{target}", self.base),
            )
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let what = format!("{method} {target}");
        assert_eq!(resp.status().as_u16(), want, "{what}");
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap());
        assert_eq!(
            ct.map(essence).as_deref(),
            Some("application/json"),
            "{what}"
        );
        let headers = resp.headers().clone();
        let body: Value = resp.json().await.unwrap();
        check_schema(
            &resolve(&self.doc, &json!({"$ref": "#/components/schemas/Error"}), 0),
            &body,
            &what,
        );
        headers
    }
}

/// The routes of the router, read from the sources: (first argument of
/// `.route(`, methods). `any` stands for every method.
fn router_routes() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for src in [
        include_str!("../src/server.rs"),
        include_str!("../src/admin.rs"),
    ] {
        for bad in [".route_service(", ".nest(", ".nest_service("] {
            assert!(
                !src.contains(bad),
                "{bad} in the router: teach router_routes() to read it"
            );
        }
        let mut rest = src;
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            let args = balanced(rest);
            let (first, second) = split_top_comma(args);
            let path = first.trim();
            let path = path
                .strip_prefix('"')
                .and_then(|p| p.strip_suffix('"'))
                .unwrap_or(path);
            out.push((path.to_owned(), top_level_calls(second)));
        }
    }
    assert!(out.len() >= 12, "routes read from the sources: {out:?}");
    out
}

/// The text up to the parenthesis closing the one just opened (string
/// literals skipped).
fn balanced(s: &str) -> &str {
    let mut depth = 1;
    let mut in_str = false;
    let mut esc = false;
    for (i, c) in s.char_indices() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return &s[..i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced .route(");
}

fn split_top_comma(s: &str) -> (&str, &str) {
    let mut depth = 0;
    let mut in_str = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '(' | '[' | '{' if !in_str => depth += 1,
            ')' | ']' | '}' if !in_str => depth -= 1,
            ',' if !in_str && depth == 0 => return (&s[..i], &s[i + 1..]),
            _ => {}
        }
    }
    panic!(".route( with one argument: {s}");
}

/// Method-router calls at the top level of `s` (`get(a).post(b)`).
fn top_level_calls(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut ident = String::new();
    let mut in_str = false;
    for c in s.chars() {
        if c == '"' {
            in_str = !in_str;
        }
        if in_str {
            continue;
        }
        match c {
            '(' | '[' | '{' => {
                if depth == 0 && ["get", "post", "put", "delete", "patch", "any"].contains(&&*ident)
                {
                    out.push(ident.clone());
                }
                depth += 1;
                ident.clear();
            }
            ')' | ']' | '}' => {
                depth -= 1;
                ident.clear();
            }
            c if c.is_alphanumeric() || c == '_' => ident.push(c),
            _ => ident.clear(),
        }
    }
    assert!(!out.is_empty(), "no method in route: {s}");
    out
}

/// Every route of the router is a documented operation (or listed in
/// [`UNDOCUMENTED`]), and every documented operation is a route.
#[test]
fn the_router_and_the_document_list_the_same_operations() {
    let doc = load_spec();
    let mut documented: BTreeSet<(String, String)> = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in item.as_object().unwrap().keys() {
            if METHODS.contains(&m.as_str()) {
                documented.insert((m.clone(), path.clone()));
            }
        }
    }
    let mut routed = BTreeSet::new();
    for (path, methods) in router_routes() {
        if let Some((_, why)) = UNDOCUMENTED.iter().find(|(p, _)| *p == path) {
            assert!(!why.is_empty());
            continue;
        }
        assert!(
            path.starts_with('/'),
            "route {path}: a constant; document it or list it in UNDOCUMENTED"
        );
        for m in methods {
            assert_ne!(m, "any", "{path}: any() route not in UNDOCUMENTED");
            assert!(
                documented.contains(&(m.clone(), path.clone())),
                "{m} {path} is routed but not in docs/bmsc-openapi.yaml"
            );
            routed.insert((m, path.clone()));
        }
    }
    let missing: Vec<_> = documented.difference(&routed).collect();
    assert!(missing.is_empty(), "documented but not routed: {missing:?}");
}

const DOWNLOAD: &str = r#"
[[session]]
name = "files"
kind = "download"
key_group = 1
watch_dir = "{DIR}/in"
out_dir = "{DIR}/out"
scan_interval = 60
"#;

#[tokio::test]
async fn every_documented_answer_matches_the_document() {
    let env = Env::new(DOWNLOAD).await;
    let mut c = Checker {
        doc: load_spec(),
        http: reqwest::Client::new(),
        base: env.url(),
        seen: BTreeSet::new(),
    };
    // A UE registered to a plain and a charging service, all delivered: the
    // lists, deliveries and charging records have content.
    let mut ue = env.ue(1).await;
    ue.register(&[NEWS, PAY]).await;
    env.wait_acknowledged(&mut ue).await;
    let impi = support::impi(1);
    let big = vec![b'x'; bmsc::admin::MAX_ADMIN_BODY + 1];

    // --- health and metrics (no token) ---
    let (_, v) = c
        .call("get", "/healthz", "/healthz", false, Body::None)
        .await;
    assert_eq!(v, "ok\n");
    let (_, v) = c
        .call("get", "/metrics", "/metrics", false, Body::None)
        .await;
    assert!(v.as_str().unwrap().contains("bmsc_registered_ues"));

    // --- services ---
    let p = "/admin/v1/services";
    let (_, v) = c.call("get", p, p, true, Body::None).await;
    assert_eq!(v.as_array().unwrap().len(), 3);
    c.call("get", p, p, false, Body::None).await;
    let svc = json!({"id": "urn:mbms:service:extra", "key_groups": [1], "open": true});
    let (s, _) = c.call("post", p, p, true, Body::Json(svc.clone())).await;
    assert_eq!(s, 201);
    let (s, _) = c.call("post", p, p, false, Body::Json(svc)).await;
    assert_eq!(s, 401);
    let bad = json!({"id": "urn:x", "key_groups": [77], "open": true});
    let (s, _) = c.call("post", p, p, true, Body::Json(bad)).await;
    assert_eq!(s, 400, "unknown key group");
    let (s, _) = c
        .call("post", p, p, true, Body::Raw(b"{not json".to_vec()))
        .await;
    assert_eq!(s, 400, "bad JSON");
    let (s, _) = c.call("post", p, p, true, Body::Raw(big.clone())).await;
    assert_eq!(s, 413);

    // --- key groups ---
    let p = "/admin/v1/key-groups";
    let (_, v) = c.call("get", p, p, true, Body::None).await;
    assert_eq!(v.as_array().unwrap().len(), 2);
    c.call("get", p, p, false, Body::None).await;
    let kg = json!({"key_group": 3, "window_len": 50});
    let (s, _) = c.call("post", p, p, true, Body::Json(kg.clone())).await;
    assert_eq!(s, 201);
    let (s, _) = c.call("post", p, p, false, Body::Json(kg)).await;
    assert_eq!(s, 401);
    let (s, _) = c
        .call(
            "post",
            p,
            p,
            true,
            Body::Json(json!({"key_group": 4, "colour": 1})),
        )
        .await;
    assert_eq!(s, 400, "unknown field");
    let (s, _) = c
        .call(
            "post",
            p,
            p,
            true,
            Body::Json(json!({"key_group": 4, "window_len": 0})),
        )
        .await;
    assert_eq!(s, 400, "invalid window");
    let (s, _) = c.call("post", p, p, true, Body::Raw(big.clone())).await;
    assert_eq!(s, 413);

    // --- rotate and key-group pull ---
    for (t, op) in [
        ("/admin/v1/key-groups/{id}/rotate", "rotate"),
        ("/admin/v1/key-groups/{id}/solicited-pull", "solicited-pull"),
    ] {
        let path = |id: &str| format!("/admin/v1/key-groups/{id}/{op}");
        assert_eq!(c.call("post", t, &path("1"), true, Body::None).await.0, 200);
        assert_eq!(
            c.call("post", t, &path("1"), false, Body::None).await.0,
            401
        );
        assert_eq!(c.call("post", t, &path("9"), true, Body::None).await.0, 404);
        assert_eq!(
            c.call("post", t, &path("abc"), true, Body::None).await.0,
            400
        );
        assert_eq!(
            c.call("post", t, &path("70000"), true, Body::None).await.0,
            400
        );
        // The token is checked before the path.
        assert_eq!(
            c.call("post", t, &path("abc"), false, Body::None).await.0,
            401
        );
    }

    // --- registrations ---
    let p = "/admin/v1/registrations";
    let (_, v) = c.call("get", p, p, true, Body::None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    c.call("get", p, p, false, Body::None).await;
    let t = "/admin/v1/registrations/{impi}/deliveries";
    let (s, v) = c
        .call(
            "get",
            t,
            &format!("/admin/v1/registrations/{impi}/deliveries"),
            true,
            Body::None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["deliveries"].as_array().unwrap().len(), 4);
    let other = "/admin/v1/registrations/nobody@home1.net/deliveries";
    assert_eq!(c.call("get", t, other, true, Body::None).await.0, 404);
    assert_eq!(c.call("get", t, other, false, Body::None).await.0, 401);
    let t = "/admin/v1/registrations/{impi}/solicited-pull";
    let p = format!("/admin/v1/registrations/{impi}/solicited-pull");
    assert_eq!(c.call("post", t, &p, true, Body::None).await.0, 200);
    let q = format!("{p}?key_group=2");
    assert_eq!(c.call("post", t, &q, true, Body::None).await.0, 200);
    let q = format!("{p}?key_group=abc");
    assert_eq!(c.call("post", t, &q, true, Body::None).await.0, 400);
    let q = format!("{p}?key_group=9");
    assert_eq!(c.call("post", t, &q, true, Body::None).await.0, 404);
    assert_eq!(c.call("post", t, &p, false, Body::None).await.0, 401);
    let other = "/admin/v1/registrations/nobody@home1.net/solicited-pull";
    assert_eq!(c.call("post", t, other, true, Body::None).await.0, 404);

    // --- charging records ---
    let p = "/admin/v1/charging-records";
    let (s, v) = c.call("get", p, p, true, Body::None).await;
    assert_eq!(s, 200);
    assert!(!v["records"].as_array().unwrap().is_empty(), "{v}");
    let (_, v) = c
        .call(
            "get",
            p,
            &format!("{p}?format=csv&limit=1"),
            true,
            Body::None,
        )
        .await;
    assert!(v.as_str().unwrap().starts_with("id,time,impi"));
    for q in ["format=xml", "limit=abc", "after=x"] {
        let (s, _) = c
            .call("get", p, &format!("{p}?{q}"), true, Body::None)
            .await;
        assert_eq!(s, 400, "{q}");
    }
    c.call("get", p, p, false, Body::None).await;

    // --- cluster (this test runs on SQLite: one instance owning all) ---
    let p = "/admin/v1/cluster";
    let (s, v) = c.call("get", p, p, true, Body::None).await;
    assert_eq!(s, 200);
    assert_eq!(v["instances"][0]["alive"], true);
    assert_eq!(c.call("get", p, p, false, Body::None).await.0, 401);

    // --- sessions and objects ---
    let p = "/admin/v1/sessions";
    let (_, v) = c.call("get", p, p, true, Body::None).await;
    assert_eq!(v[0]["name"], "files");
    c.call("get", p, p, false, Body::None).await;
    let t = "/admin/v1/sessions/{name}/objects";
    let ok = "/admin/v1/sessions/files/objects?name=clip.bin";
    let data = || Body::Raw(b"hello".to_vec());
    assert_eq!(c.call("post", t, ok, true, data()).await.0, 201);
    assert_eq!(c.call("post", t, ok, false, data()).await.0, 401);
    let missing = "/admin/v1/sessions/nope/objects?name=clip.bin";
    assert_eq!(c.call("post", t, missing, true, data()).await.0, 404);
    for bad in [
        "/admin/v1/sessions/files/objects?name=../x",
        "/admin/v1/sessions/files/objects",
    ] {
        assert_eq!(c.call("post", t, bad, true, data()).await.0, 400, "{bad}");
    }
    assert_eq!(
        c.call("post", t, ok, true, Body::Raw(big.clone())).await.0,
        413
    );

    // --- internal errors: the store fails under the running server ---
    {
        let db = env.path("bmsc.db");
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .unwrap();
        conn.execute_batch(
            "DROP TABLE charging_records; DROP TABLE key_group_defs; DROP TABLE services;
             DROP TABLE key_groups;",
        )
        .unwrap();
    }
    let p = "/admin/v1/charging-records";
    assert_eq!(c.call("get", p, p, true, Body::None).await.0, 500);
    let p = "/admin/v1/services";
    let svc = json!({"id": "urn:mbms:service:late", "key_groups": [1], "open": true});
    assert_eq!(c.call("post", p, p, true, Body::Json(svc)).await.0, 500);
    let p = "/admin/v1/key-groups";
    let kg = json!({"key_group": 5});
    assert_eq!(c.call("post", p, p, true, Body::Json(kg)).await.0, 500);
    let t = "/admin/v1/key-groups/{id}/rotate";
    assert_eq!(
        c.call("post", t, "/admin/v1/key-groups/1/rotate", true, Body::None)
            .await
            .0,
        500
    );

    // --- every documented (operation, status) was seen ---
    let mut unseen = Vec::new();
    for (path, item) in c.doc["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            if !METHODS.contains(&m.as_str()) {
                continue;
            }
            for status in op["responses"].as_object().unwrap().keys() {
                let status: u16 = status.parse().unwrap();
                let key = (m.clone(), path.clone(), status);
                let excused = NOT_PROVOKED
                    .iter()
                    .any(|(em, ep, es, _)| (*em, *ep, *es) == (m.as_str(), path.as_str(), status));
                if !c.seen.contains(&key) && !excused {
                    unseen.push(key);
                }
            }
        }
    }
    assert!(
        unseen.is_empty(),
        "documented but never answered: {unseen:?}"
    );
}

/// An unknown path answers 404 and a method a documented path does not
/// serve answers 405 with `Allow`, both with the documented error object.
#[tokio::test]
async fn unknown_paths_and_methods_answer_the_error_object() {
    let env = Env::new("").await;
    let c = Checker {
        doc: load_spec(),
        http: reqwest::Client::new(),
        base: env.url(),
        seen: BTreeSet::new(),
    };
    for p in [
        "/nope",
        "/admin/v1/nope",
        "/admin/v1/key-groups/1/nope",
        "/admin/v2/services",
    ] {
        for m in ["get", "post"] {
            c.undocumented(m, p, 404).await;
        }
    }
    let mut allowed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, item) in c.doc["paths"].as_object().unwrap() {
        for m in item.as_object().unwrap().keys() {
            if METHODS.contains(&m.as_str()) {
                allowed.entry(path.clone()).or_default().insert(m.clone());
            }
        }
    }
    for (path, ms) in &allowed {
        let target = path
            .replace("{id}", "1")
            .replace("{impi}", "user1_private@home1.net")
            .replace("{name}", "files");
        for m in METHODS.iter().filter(|m| !ms.contains(**m)) {
            let headers = c.undocumented(m, &target, 405).await;
            let allow = headers
                .get(ALLOW)
                .unwrap_or_else(|| panic!("{m} {target}: no Allow"))
                .to_str()
                .unwrap()
                .to_ascii_lowercase();
            for want in ms {
                assert!(allow.contains(want.as_str()), "{m} {target}: Allow {allow}");
            }
        }
    }
}
