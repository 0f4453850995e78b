//! End-to-end tests of the BSF over loopback: the real server on
//! 127.0.0.1:0 with a temporary SQLite file, the `ue` bootstrapping client,
//! and hand-made requests for the failure cases (TS 24.109 clause 4,
//! RFC 3310; PROFILE.md sections 4 and 5).

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde_json::Value;

use bsf::{Bsf, BsfConfig, GbaType, RunningBsf, SqliteStore, Store, Subscriber, ZnToken};
use gba::aka::{self, AkaOutcome, Auts};
use gba::digest::{Authorization, Challenge, DigestClient};
use gba::{Milenage, NafId, Opc, Sqn48, SubscriberKey, Usim};
use ue::bootstrap::{BootstrapClient, BootstrapError};

const IMPI: &str = "user1_private@home1.net";
const IMPI_U: &str = "user2_private@home1.net";
const BSF_FQDN: &str = "bsf.home1.net";
const BMSC: &str = "bmsc.home1.net";
const TOKEN: &str = "zn-test-token";
const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";

fn k() -> SubscriberKey {
    SubscriberKey::from_hex(K).unwrap()
}
fn opc() -> Opc {
    Opc::from_hex(OPC).unwrap()
}

fn subscriber(impi: &str, gba_type: GbaType) -> Subscriber {
    Subscriber {
        impi: impi.into(),
        k: k(),
        opc: opc(),
        sqn: Sqn48::ZERO,
        amf: [0x80, 0x00],
        gba_type,
    }
}

async fn start(db: &Path, session_lifetime: u64) -> RunningBsf {
    let store = SqliteStore::open(db).unwrap();
    store
        .provision_subscribers(&[
            subscriber(IMPI, GbaType::GbaMe),
            subscriber(IMPI_U, GbaType::GbaU),
        ])
        .unwrap();
    let mut cfg = BsfConfig::new(BSF_FQDN, ZnToken::new(TOKEN));
    cfg.session_lifetime = session_lifetime;
    Bsf::new(cfg.settings(), Arc::new(store))
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn store(db: &Path) -> SqliteStore {
    SqliteStore::open(db).unwrap()
}

fn usim(sqn: u64) -> Usim {
    Usim::new(k(), opc(), Sqn48::new(sqn).unwrap())
}

async fn zn(bsf: &RunningBsf, token: &str, body: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/zn/v1/naf-keys", bsf.url()))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn zn_body(btid: &str, naf: &str) -> String {
    serde_json::json!({"btid": btid, "naf_id": hex::encode(NafId::mbms(naf).as_bytes())})
        .to_string()
}

async fn get(bsf: &RunningBsf, authorization: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(format!("{}/", bsf.url()))
        .header("user-agent", "test 3gpp-gba");
    if let Some(a) = authorization {
        req = req.header(AUTHORIZATION, a);
    }
    req.send().await.unwrap()
}

async fn initial(bsf: &RunningBsf, impi: &str) -> reqwest::Response {
    let a = Authorization::initial(impi, BSF_FQDN, "/")
        .to_header_value()
        .unwrap();
    get(bsf, Some(&a)).await
}

fn challenge_of(resp: &reqwest::Response) -> Challenge {
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    Challenge::parse(resp.headers()[WWW_AUTHENTICATE].to_str().unwrap()).unwrap()
}

/// SQN carried in a challenge's AUTN: (SQN xor AK) xor f5(RAND).
fn sqn_of(ch: &Challenge) -> u64 {
    let (rand, autn) = aka::parse_aka_nonce(&ch.nonce).unwrap();
    let ak = Milenage::new(&k(), &opc()).f5(&rand);
    let mut sqn = autn.sqn_xor_ak();
    for (s, a) in sqn.iter_mut().zip(ak) {
        *s ^= a;
    }
    Sqn48::from_bytes(sqn).value()
}

/// Answers a challenge as a USIM + Digest client would.
fn answer(ch: Challenge, usim: &mut Usim, cnonce: &str) -> (DigestClient, Authorization) {
    let (rand, autn) = aka::parse_aka_nonce(&ch.nonce).unwrap();
    let mut client = DigestClient::new(IMPI, b"");
    client.handle_challenge(ch).unwrap();
    let a = match usim.authenticate(&rand, &autn).unwrap() {
        AkaOutcome::Success { res, .. } => {
            client.set_password(res.as_bytes());
            client.authorize("GET", "/", b"", cnonce).unwrap()
        }
        AkaOutcome::SyncFailure { auts } => client
            .authorize_resync("GET", "/", b"", cnonce, &auts)
            .unwrap(),
    };
    (client, a)
}

#[tokio::test]
async fn bootstrap_then_zn_returns_the_ue_ks_naf() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bsf.db");
    let bsf = start(&db, 3600).await;
    let mut usim = usim(0);
    let b = BootstrapClient::new(&bsf.url())
        .unwrap()
        .bootstrap(IMPI, &mut usim)
        .await
        .unwrap();
    assert!(b.btid.as_str().ends_with("@bsf.home1.net"));
    assert_eq!(
        b.btid.as_str(),
        format!(
            "{}@{BSF_FQDN}",
            base64::engine::general_purpose::STANDARD.encode(b.rand)
        )
    );
    assert!(!format!("{b:?}").contains(&hex::encode(b.ks().as_bytes())));
    let (ks_naf, _keys) = b.mbms_keys(BMSC).unwrap();

    let (status, v) = zn(&bsf, TOKEN, &zn_body(b.btid.as_str(), BMSC)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["impi"], IMPI);
    assert_eq!(
        v["ks_naf"],
        base64::engine::general_purpose::STANDARD.encode(ks_naf.as_bytes())
    );
    assert_eq!(v["ks_int_naf"], Value::Null);
    assert_eq!(v["gba_type"], "gba_me");
    assert_eq!(v["lifetime"], b.lifetime.as_str());
    // Another NAF gets another key.
    let (_, other) = zn(&bsf, TOKEN, &zn_body(b.btid.as_str(), "other.home1.net")).await;
    assert_ne!(other["ks_naf"], v["ks_naf"]);
    bsf.shutdown().await.unwrap();
}

#[tokio::test]
async fn gba_u_subscriber_gets_ks_int_naf() {
    let dir = tempfile::tempdir().unwrap();
    let bsf = start(&dir.path().join("bsf.db"), 3600).await;
    let b = BootstrapClient::new(&bsf.url())
        .unwrap()
        .bootstrap(IMPI_U, &mut usim(0))
        .await
        .unwrap();
    let (status, v) = zn(&bsf, TOKEN, &zn_body(b.btid.as_str(), BMSC)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["gba_type"], "gba_u");
    let naf = NafId::mbms(BMSC);
    let ext = gba::kdf::derive_ks_ext_naf(b.ks(), &b.rand, IMPI_U, &naf).unwrap();
    let int = gba::kdf::derive_ks_int_naf(b.ks(), &b.rand, IMPI_U, &naf).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(v["ks_naf"], b64.encode(ext.as_bytes()));
    assert_eq!(v["ks_int_naf"], b64.encode(int.as_bytes()));
    bsf.shutdown().await.unwrap();
}

#[tokio::test]
async fn sqn_out_of_range_resynchronises_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bsf.db");
    let bsf = start(&db, 3600).await;
    // The USIM is far ahead of the BSF's SQN_HE (0).
    let mut usim = usim(1_000_000);
    BootstrapClient::new(&bsf.url())
        .unwrap()
        .bootstrap(IMPI, &mut usim)
        .await
        .unwrap();
    assert_eq!(usim.sqn_ms().value(), 1_000_001);
    assert_eq!(
        store(&db).subscriber(IMPI).unwrap().unwrap().sqn.value(),
        1_000_001
    );
    bsf.shutdown().await.unwrap();
}

#[tokio::test]
async fn forged_auts_is_refused_and_sqn_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bsf.db");
    let bsf = start(&db, 3600).await;
    let ch = challenge_of(&initial(&bsf, IMPI).await);
    let (_, mut a) = answer(ch, &mut usim(1_000_000), "c1");
    let mut auts = Auts::from_base64(a.auts.as_deref().unwrap()).unwrap();
    auts.0[13] ^= 1;
    a.auts = Some(auts.to_base64());
    let r = get(&bsf, Some(&a.to_header_value().unwrap())).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(store(&db).subscriber(IMPI).unwrap().unwrap().sqn.value(), 1);
    bsf.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_k_is_a_network_authentication_failure_and_no_session() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bsf.db");
    let bsf = start(&db, 3600).await;
    let mut wrong = Usim::new(
        SubscriberKey::from_hex("565b5ce8b199b49faa5f0a2ee238a6bc").unwrap(),
        opc(),
        Sqn48::ZERO,
    );
    let err = BootstrapClient::new(&bsf.url())
        .unwrap()
        .bootstrap(IMPI, &mut wrong)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BootstrapError::NetworkAuthenticationFailure),
        "{err}"
    );
    assert_eq!(wrong.sqn_ms().value(), 0);
    assert_eq!(store(&db).session_count().unwrap(), 0);
    bsf.shutdown().await.unwrap();
}

#[tokio::test]
async fn replayed_authorization_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bsf.db");
    let bsf = start(&db, 3600).await;
    let ch = challenge_of(&initial(&bsf, IMPI).await);
    let (mut client, a) = answer(ch.clone(), &mut usim(0), "c1");
    let header = a.to_header_value().unwrap();
    let ok = get(&bsf, Some(&header)).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["content-type"], "application/vnd.3gpp.bsf+xml");
    let info = gba::digest::AuthenticationInfo::parse(
        ok.headers()["authentication-info"].to_str().unwrap(),
    )
    .unwrap();
    let body = ok.bytes().await.unwrap();
    client.verify_authentication_info(&info, &body).unwrap();

    // Same nonce, same nc: refused with a fresh challenge.
    let replay = get(&bsf, Some(&header)).await;
    let fresh = challenge_of(&replay);
    assert_ne!(fresh.nonce, ch.nonce);
    // Same nonce with a higher nc: an AKA challenge is good for one
    // bootstrapping only.
    let again = client.authorize("GET", "/", b"", "c2").unwrap();
    let r = get(&bsf, Some(&again.to_header_value().unwrap())).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(store(&db).session_count().unwrap(), 1);
    bsf.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_res_gets_a_fresh_challenge_and_no_session() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bsf.db");
    let bsf = start(&db, 3600).await;
    let ch = challenge_of(&initial(&bsf, IMPI).await);
    let mut client = DigestClient::new(IMPI, b"");
    client.handle_challenge(ch.clone()).unwrap();
    client.set_password(&[0u8; 8]);
    let a = client.authorize("GET", "/", b"", "c1").unwrap();
    let r = get(&bsf, Some(&a.to_header_value().unwrap())).await;
    let fresh = challenge_of(&r);
    assert_ne!(fresh.nonce, ch.nonce);
    assert!(sqn_of(&fresh) > sqn_of(&ch));
    assert_eq!(store(&db).session_count().unwrap(), 0);

    // A correct answer given under another IMPI is refused too.
    let (_, mut a) = answer(fresh, &mut usim(0), "c2");
    a.username = IMPI_U.into();
    let r = get(&bsf, Some(&a.to_header_value().unwrap())).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(store(&db).session_count().unwrap(), 0);
    bsf.shutdown().await.unwrap();
}

/// Issue 11 point 13: one authentication vector, one try. A challenge
/// answered with a wrong RES is spent: the right RES under the same nonce
/// with a higher nc gets a fresh challenge, not a session.
#[tokio::test]
async fn a_wrong_res_spends_the_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bsf.db");
    let bsf = start(&db, 3600).await;
    let ch = challenge_of(&initial(&bsf, IMPI).await);
    let (mut client, _) = answer(ch.clone(), &mut usim(0), "c0");
    let good_password = {
        let (rand, autn) = aka::parse_aka_nonce(&ch.nonce).unwrap();
        match usim(0).authenticate(&rand, &autn).unwrap() {
            AkaOutcome::Success { res, .. } => res.as_bytes().to_vec(),
            AkaOutcome::SyncFailure { .. } => panic!("unexpected sync failure"),
        }
    };
    // nc=2: a guess with a wrong RES.
    client.set_password(&[0u8; 8]);
    let guess = client.authorize("GET", "/", b"", "c1").unwrap();
    let r = get(&bsf, Some(&guess.to_header_value().unwrap())).await;
    assert_ne!(challenge_of(&r).nonce, ch.nonce);
    // nc=3: the right RES under the same nonce.
    client.set_password(&good_password);
    let right = client.authorize("GET", "/", b"", "c2").unwrap();
    assert!(right.nc > guess.nc);
    let r = get(&bsf, Some(&right.to_header_value().unwrap())).await;
    let fresh = challenge_of(&r);
    assert_ne!(fresh.nonce, ch.nonce);
    assert_eq!(store(&db).session_count().unwrap(), 0);

    // The fresh challenge works once; a success spends it as well.
    let (mut client, a) = answer(fresh, &mut usim(0), "c3");
    let ok = get(&bsf, Some(&a.to_header_value().unwrap())).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let again = client.authorize("GET", "/", b"", "c4").unwrap();
    let r = get(&bsf, Some(&again.to_header_value().unwrap())).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(store(&db).session_count().unwrap(), 1);
    bsf.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_impi_and_missing_authorization() {
    let dir = tempfile::tempdir().unwrap();
    let bsf = start(&dir.path().join("bsf.db"), 3600).await;
    assert_eq!(
        initial(&bsf, "nobody@home1.net").await.status(),
        StatusCode::FORBIDDEN
    );
    let err = BootstrapClient::new(&bsf.url())
        .unwrap()
        .bootstrap("nobody@home1.net", &mut usim(0))
        .await
        .unwrap_err();
    assert!(matches!(err, BootstrapError::Forbidden(_)), "{err}");
    assert_eq!(get(&bsf, None).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        get(&bsf, Some("Basic dXNlcjpwYXNz")).await.status(),
        StatusCode::BAD_REQUEST
    );
    let health = reqwest::get(format!("{}/healthz", bsf.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    bsf.shutdown().await.unwrap();
}

#[tokio::test]
async fn zn_refuses_bad_token_unknown_btid_and_malformed_input() {
    let dir = tempfile::tempdir().unwrap();
    let bsf = start(&dir.path().join("bsf.db"), 3600).await;
    let b = BootstrapClient::new(&bsf.url())
        .unwrap()
        .bootstrap(IMPI, &mut usim(0))
        .await
        .unwrap();
    let good = zn_body(b.btid.as_str(), BMSC);
    assert_eq!(zn(&bsf, "wrong", &good).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(zn(&bsf, "", &good).await.0, StatusCode::UNAUTHORIZED);
    let no_auth = reqwest::Client::new()
        .post(format!("{}/zn/v1/naf-keys", bsf.url()))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_auth.status(), StatusCode::UNAUTHORIZED);
    let unknown = zn_body("AAAAAAAAAAAAAAAAAAAAAA==@bsf.home1.net", BMSC);
    assert_eq!(zn(&bsf, TOKEN, &unknown).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        zn(&bsf, TOKEN, "{\"btid\": ").await.0,
        StatusCode::BAD_REQUEST
    );
    let bad_hex = serde_json::json!({"btid": b.btid.as_str(), "naf_id": "zz"}).to_string();
    assert_eq!(zn(&bsf, TOKEN, &bad_hex).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(zn(&bsf, TOKEN, &good).await.0, StatusCode::OK);
    bsf.shutdown().await.unwrap();
}

#[tokio::test]
async fn expired_session_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let bsf = start(&dir.path().join("bsf.db"), 1).await;
    let b = BootstrapClient::new(&bsf.url())
        .unwrap()
        .bootstrap(IMPI, &mut usim(0))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, _) = zn(&bsf, TOKEN, &zn_body(b.btid.as_str(), BMSC)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    bsf.shutdown().await.unwrap();
}

#[tokio::test]
async fn restart_keeps_subscribers_sessions_and_never_reuses_an_sqn() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bsf.db");
    let mut usim = usim(0);

    let bsf = start(&db, 3600).await;
    let mut sqns = vec![sqn_of(&challenge_of(&initial(&bsf, IMPI).await))];
    let ch = challenge_of(&initial(&bsf, IMPI).await);
    sqns.push(sqn_of(&ch));
    let (_, a) = answer(ch, &mut usim, "c1");
    let r = get(&bsf, Some(&a.to_header_value().unwrap())).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    let (btid, _) = ue::bootstrap::parse_bootstrapping_info(&body).unwrap();
    let before = zn(&bsf, TOKEN, &zn_body(&btid, BMSC)).await.1;
    bsf.shutdown().await.unwrap();

    // A new BSF process on the same database file.
    let bsf = start(&db, 3600).await;
    let (status, after) = zn(&bsf, TOKEN, &zn_body(&btid, BMSC)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["ks_naf"], before["ks_naf"]);
    sqns.push(sqn_of(&challenge_of(&initial(&bsf, IMPI).await)));
    let b = BootstrapClient::new(&bsf.url())
        .unwrap()
        .bootstrap(IMPI, &mut usim)
        .await
        .unwrap();
    assert_ne!(b.btid.as_str(), btid);
    sqns.push(usim.sqn_ms().value());
    assert!(
        sqns.windows(2).all(|w| w[0] < w[1]),
        "SQNs must strictly increase: {sqns:?}"
    );
    assert_eq!(
        store(&db).subscribers().unwrap().len(),
        2,
        "subscribers survive"
    );
    bsf.shutdown().await.unwrap();
}
