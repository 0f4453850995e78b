//! The BM-SC over loopback with a real BSF and UEs built from the MBMS core:
//! Ua registration, MSK request, deregistration with HTTP Digest; MIKEY
//! push, acknowledgement, retransmission; authorisation; bad input.

mod support;

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use support::*;

#[tokio::test]
async fn register_push_and_acknowledge() {
    let env = Env::new("").await;
    let mut ue = env.ue(1).await;
    assert_eq!(ue.register(&[NEWS]).await, [200]);
    let (cur, next) = env.key_group(1).await;
    ue.wait_msks(1, &[msk_of(&cur), msk_of(&next)]).await;
    env.wait_acknowledged(&mut ue).await;
    assert!(ue.errors.is_empty(), "{:?}", ue.errors);
    assert_eq!(env.metric("bmsc_msk_acks_total", "accepted"), 2.0);
    assert_eq!(env.metric("bmsc_registered_ues", ""), 1.0);
    assert!(env.metric("bmsc_ua_http_responses_total", "status=\"200\"") >= 1.0);
    // The registration is listed with the UE's MIKEY address: the request's
    // source IP and its mikey-port.
    let (s, v) = env.admin_get("/admin/v1/registrations").await;
    assert_eq!(s, 200);
    assert_eq!(v[0]["impi"], ue.impi.as_str());
    assert_eq!(v[0]["mikey_addr"], format!("127.0.0.1:{}", ue.mikey_port()));
    assert_eq!(v[0]["services"][0], NEWS);
}

#[tokio::test]
async fn msk_request_redelivers_the_current_msk() {
    let env = Env::new("").await;
    let mut ue = env.ue(1).await;
    ue.register(&[NEWS]).await;
    env.wait_acknowledged(&mut ue).await;
    let (cur, next) = env.key_group(1).await;
    // The UE lost its keys: it asks for the current MSK (Key Number 0), a
    // named one, an unknown key group, another Key Domain and a malformed
    // item; one status each, in order.
    ue.mgvf.delete_msks(group(1)).unwrap();
    let other_domain = mbms::MskName {
        key_domain: "262-01".parse().unwrap(),
        msk_id: mbms::MskId::new(1, 0),
    };
    let xml = bmsc::xml::msk_request(&[msk(1, 0), msk_of(&next), msk(7, 0), other_domain]);
    let xml = xml.replace(
        "</mbmsMskRequest>",
        "  <key keyDomainId=\"xyz\" mskId=\"1\"/>\n</mbmsMskRequest>",
    );
    let (s, body) = ue.post("msk-request", bmsc::xml::CT_MSK, &xml).await;
    assert_eq!(s, 200);
    assert_eq!(statuses(&body), [200, 200, 404, 404, 400]);
    ue.wait_msks(1, &[msk_of(&cur), msk_of(&next)]).await;
    env.wait_acknowledged(&mut ue).await;
    // Base64 body too (seed 002 G.2.3).
    ue.mgvf.delete_msks(group(1)).unwrap();
    assert_eq!(ue.request_msks(&[msk(1, 0)]).await, [200]);
    ue.wait_msks(1, &[msk_of(&cur)]).await;
    assert!(ue.errors.is_empty(), "{:?}", ue.errors);
}

#[tokio::test]
async fn authorisation_of_registrations_and_msk_requests() {
    let env = Env::new("").await;
    let mut ue = env.ue(2).await;
    // Not registered: 403 for every MSK (seed 002).
    assert_eq!(ue.request_msks(&[msk(1, 0), msk(2, 0)]).await, [403, 403]);
    // A closed service it may not use, an unknown one, an empty ID.
    let (s, body) = ue
        .post(
            "register",
            bmsc::xml::CT_REGISTER,
            &bmsc::xml::register_request(&[CLOSED, "urn:mbms:service:nope", ""]),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(statuses(&body), [403, 404, 400]);
    let (_, v) = env.admin_get("/admin/v1/registrations").await;
    assert_eq!(v, serde_json::json!([]), "nothing was registered");
    // Registered to news (key group 1) only: key group 2 stays forbidden.
    assert_eq!(ue.register(&[NEWS]).await, [200]);
    assert_eq!(ue.request_msks(&[msk(1, 0), msk(2, 0)]).await, [200, 403]);
    // user9 is on the allow list of the closed service.
    let mut ue9 = env.ue(9).await;
    assert_eq!(ue9.register(&[CLOSED]).await, [200]);
    assert_eq!(
        env.metric("bmsc_ua_items_total", "status=\"403\""),
        4.0,
        "{}",
        env.bmsc().metrics()
    );
}

#[tokio::test]
async fn deregistration_stops_pushes() {
    let env = Env::new("").await;
    let mut a = env.ue(1).await;
    let mut b = env.ue(2).await;
    a.register(&[NEWS]).await;
    b.register(&[NEWS]).await;
    env.wait_acknowledged(&mut a).await;
    env.wait_acknowledged(&mut b).await;
    assert_eq!(a.deregister(&[NEWS, "urn:unknown"]).await, [200, 404]);
    let (s, _) = env
        .admin_post("/admin/v1/key-groups/1/rotate", serde_json::json!({}))
        .await;
    assert_eq!(s, 200);
    let (cur, next) = env.key_group(1).await;
    b.wait_msks(1, &[msk_of(&cur), msk_of(&next)]).await;
    assert_eq!(
        a.pump(Duration::from_millis(700)).await,
        0,
        "no push after deregistration"
    );
    assert_eq!(env.deliveries(&a.impi).await, vec![]);
    let (_, v) = env.admin_get("/admin/v1/registrations").await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    // An MSK request is now refused.
    assert_eq!(a.request_msks(&[msk(1, 0)]).await, [403]);
}

#[tokio::test]
async fn a_dropped_acknowledgement_is_retransmitted() {
    let env = Env::new("").await;
    let mut ue = env.ue(1).await;
    ue.drop_acks = 2; // both first acknowledgements are lost
    ue.register(&[NEWS]).await;
    let (cur, next) = env.key_group(1).await;
    ue.wait_msks(1, &[msk_of(&cur), msk_of(&next)]).await;
    assert_eq!(ue.acks_sent.len(), 0);
    env.wait_acknowledged(&mut ue).await;
    assert!(env.metric("bmsc_msk_retransmissions_total", "") >= 2.0);
    // Each retransmission was a new message with a fresh counter: the MGV-F
    // refused none of them as a replay.
    assert!(ue.errors.is_empty(), "{:?}", ue.errors);
    let mut c = ue.counters.clone();
    c.dedup();
    assert_eq!(c.len(), ue.counters.len());
    assert!(ue.counters.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn forged_and_replayed_acknowledgements_are_ignored() {
    let env = Env::new("").await;
    let mut ue = env.ue(1).await;
    ue.register(&[NEWS]).await;
    env.wait_acknowledged(&mut ue).await;
    let (ack, to) = ue.acks_sent[0].clone();
    assert_eq!(
        to,
        env.bmsc().mikey_addr(),
        "acknowledgements go to the sender"
    );
    let accepted = env.metric("bmsc_msk_acks_total", "accepted");
    // A replay of an accepted acknowledgement: stale, nothing changes.
    ue.sock.send_to(&ack, to).await.unwrap();
    // A forgery (last MAC byte flipped): bad MAC.
    let mut forged = ack.clone();
    *forged.last_mut().unwrap() ^= 1;
    ue.sock.send_to(&forged, to).await.unwrap();
    // Not MIKEY at all.
    ue.sock.send_to(b"not mikey", to).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.metric("bmsc_msk_acks_total", "accepted"), accepted);
    assert_eq!(env.metric("bmsc_msk_acks_total", "stale"), 1.0);
    assert_eq!(env.metric("bmsc_msk_acks_total", "bad_mac"), 1.0);
    assert_eq!(env.metric("bmsc_msk_acks_total", "malformed"), 1.0);
    let d = env.deliveries(&ue.impi).await;
    assert!(d.iter().all(|x| x.2 == "acknowledged"), "{d:?}");
}

#[tokio::test]
async fn forged_acknowledgement_before_the_genuine_one_changes_nothing() {
    let env = Env::new("").await;
    let mut ue = env.ue(1).await;
    ue.drop_acks = 100;
    ue.register(&[NEWS]).await;
    let (cur, next) = env.key_group(1).await;
    ue.wait_msks(1, &[msk_of(&cur), msk_of(&next)]).await;
    // Build an acknowledgement for the last message with the wrong MUK.
    let d = env.deliveries(&ue.impi).await;
    assert!(d.iter().all(|x| x.2 == "sent"), "{d:?}");
    // An acknowledgement with this B-TID and a plausible counter but a MAC
    // under another key.
    let last = *ue.counters.last().unwrap();
    let fake = mbms::messages::MskAck {
        csb_id: 0,
        counter: last,
        btid: ue.btid.clone(),
        msk: msk_of(&cur),
    };
    let initiator = mikey::crypto::InitiatorFields {
        idi: BMSC.as_bytes().to_vec(),
        idr: ue.btid.as_bytes().to_vec(),
        t: last.to_be_bytes().to_vec(),
    };
    let bytes = fake.build(&[0x55; 20], &initiator).unwrap();
    let to = env.bmsc().mikey_addr();
    ue.sock.send_to(&bytes, to).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(env.metric("bmsc_msk_acks_total", "bad_mac"), 1.0);
    let d = env.deliveries(&ue.impi).await;
    assert!(d.iter().all(|x| x.2 == "sent" || x.2 == "pending"), "{d:?}");
    ue.drop_acks = 0;
    env.wait_acknowledged(&mut ue).await;
}

#[tokio::test]
async fn digest_details() {
    let env = Env::new("").await;
    let mut ue = env.ue(1).await;
    ue.register(&[NEWS]).await;
    assert_eq!(ue.challenges, 1);
    // With the nextnonce of Authentication-Info the UE sends Authorization
    // right away and is served without a new challenge (seed 002 NOTE 2).
    assert_eq!(ue.request_msks(&[msk(1, 0)]).await, [200]);
    assert_eq!(ue.challenges, 1);
    // SHA-256 works as well.
    let mut u2 = env.ue(2).await;
    u2.prefer_sha256 = true;
    assert_eq!(u2.register(&[NEWS]).await, [200]);
    let alg = u2.digest.as_ref().unwrap().challenge().unwrap().algorithm;
    assert_eq!(alg.map(|a| a.as_str()), Some("SHA-256"));
    // A replayed request (same Authorization, same nonce count) is refused.
    let path = format!(
        "/keymanagement?requesttype=register&mikey-port={}",
        ue.mikey_port()
    );
    let body = bmsc::xml::register_request(&[NEWS]);
    let a = ue
        .digest
        .as_mut()
        .unwrap()
        .authorize("POST", &path, body.as_bytes(), "cafebabe")
        .unwrap()
        .to_header_value()
        .unwrap();
    let send = || {
        env.http
            .post(format!("{}{path}", env.url()))
            .header(CONTENT_TYPE, bmsc::xml::CT_REGISTER)
            .header(AUTHORIZATION, a.clone())
            .body(body.clone())
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let r = send().await.unwrap();
    assert_eq!(r.status(), 401, "replayed (nonce, nc)");
    assert!(r.headers().get("www-authenticate").is_some());
    // auth-int covers the body: a body changed in transit is refused.
    let a2 = ue
        .digest
        .as_mut()
        .unwrap()
        .authorize("POST", &path, body.as_bytes(), "cafebab1")
        .unwrap()
        .to_header_value()
        .unwrap();
    let r = env
        .http
        .post(format!("{}{path}", env.url()))
        .header(CONTENT_TYPE, bmsc::xml::CT_REGISTER)
        .header(AUTHORIZATION, a2)
        .body(bmsc::xml::register_request(&[CLOSED]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A wrong password (another MRK) is challenged again.
    let mut bad = gba::digest::DigestClient::new(ue.btid.clone(), b"d3JvbmcgcGFzc3dvcmQ=");
    bad.handle_challenge(ue.digest.as_ref().unwrap().challenge().unwrap().clone())
        .unwrap();
    let wrong = bad
        .authorize("POST", &path, body.as_bytes(), "0badc0de")
        .unwrap()
        .to_header_value()
        .unwrap();
    let r = env
        .http
        .post(format!("{}{path}", env.url()))
        .header(CONTENT_TYPE, bmsc::xml::CT_REGISTER)
        .header(AUTHORIZATION, wrong)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Without Authorization: the challenges.
    let r = env
        .http
        .post(format!("{}/keymanagement?requesttype=register", env.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let chs: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
    assert_eq!(chs.len(), 2, "one challenge per algorithm: {chs:?}");
    let first = chs[0].to_str().unwrap();
    assert!(
        first.contains("realm=\"3GPP-bootstrapping@bmsc.home1.net\""),
        "{first}"
    );
    assert!(first.contains("qop=\"auth-int,auth\""), "{first}");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let env = Env::new("").await;
    let url = env.url();
    let c = &env.http;
    // Unknown or missing request type, bad mikey-port: 400 before anything.
    for q in ["requesttype=join", "", "requesttype=register&mikey-port=x"] {
        let r = c
            .post(format!("{url}/keymanagement?{q}"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        assert!(!r.text().await.unwrap().is_empty());
    }
    // GET: 405.
    let r = c
        .get(format!("{url}/keymanagement?requesttype=register"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // Over 64 KiB: 413.
    let r = c
        .post(format!("{url}/keymanagement?requesttype=register"))
        .header(CONTENT_TYPE, bmsc::xml::CT_REGISTER)
        .body(vec![b'<'; 64 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Authenticated but malformed: 400 / 415, nothing registered.
    let mut ue = env.ue(1).await;
    let (s, _) = ue
        .post("register", bmsc::xml::CT_REGISTER, "<mbmsRegister")
        .await;
    assert_eq!(s, 400);
    let (s, _) = ue
        .post(
            "register",
            bmsc::xml::CT_REGISTER,
            "<mbmsRegister xmlns=\"urn:other\"><serviceId>urn:mbms:service:news</serviceId></mbmsRegister>",
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = ue
        .post(
            "register",
            "text/plain",
            &bmsc::xml::register_request(&[NEWS]),
        )
        .await;
    assert_eq!(s, 415);
    let (s, _) = ue.post("register", bmsc::xml::CT_REGISTER, "%%%%").await;
    assert_eq!(s, 400);
    let (s, _) = ue
        .post(
            "msk-request",
            bmsc::xml::CT_MSK,
            &format!(
                "<!DOCTYPE x [<!ENTITY a \"b\">]><mbmsMskRequest xmlns=\"{}\"/>",
                bmsc::xml::NS_MSK_REQUEST
            ),
        )
        .await;
    assert_eq!(s, 400);
    let (_, v) = env.admin_get("/admin/v1/registrations").await;
    assert_eq!(v, serde_json::json!([]));
    assert_eq!(ue.pump(Duration::from_millis(300)).await, 0);
}

#[tokio::test]
async fn an_unknown_btid_is_challenged_again() {
    let env = Env::new("").await;
    let mut ue = env.ue(1).await;
    ue.btid = "bm90IGEgcmVhbCBidGlk@bsf.home1.net".into();
    let path = "/keymanagement?requesttype=register";
    let r = env
        .http
        .post(format!("{}{path}", env.url()))
        .send()
        .await
        .unwrap();
    let ch =
        gba::digest::Challenge::parse(r.headers()["www-authenticate"].to_str().unwrap()).unwrap();
    let mut d = gba::digest::DigestClient::new(ue.btid.clone(), ue.password().as_bytes());
    d.handle_challenge(ch).unwrap();
    let body = bmsc::xml::register_request(&[NEWS]);
    let a = d
        .authorize("POST", path, body.as_bytes(), "0a0b0c0d")
        .unwrap();
    let r = env
        .http
        .post(format!("{}{path}", env.url()))
        .header(CONTENT_TYPE, bmsc::xml::CT_REGISTER)
        .header(AUTHORIZATION, a.to_header_value().unwrap())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "the BSF does not know the B-TID: bootstrap again"
    );
    assert_eq!(env.metric("bmsc_zn_requests_total", "not_found"), 1.0);
}

/// Receives and loses MSK messages until `n` have arrived (10 s at most).
async fn lose_pushes(ue: &mut TestUe, n: usize) {
    let before = ue.received.len();
    for _ in 0..200 {
        if ue.received.len() >= before + n {
            return;
        }
        ue.pump_dropping(Duration::from_millis(50), |_| true).await;
    }
    panic!("{}: {n} MSK messages never arrived", ue.impi);
}

/// Pumps until the MGV-F holds `name` (active); panics after about 10 s
/// (well before the 30 s retransmission timers of the tests).
async fn wait_active(ue: &mut TestUe, g: u16, name: mbms::MskName) {
    for _ in 0..200 {
        if ue
            .mgvf
            .msks_of(group(g))
            .iter()
            .any(|m| m.name == name && !m.is_inactive())
        {
            return;
        }
        ue.pump(Duration::from_millis(50)).await;
    }
    panic!("{}: {name} never arrived: {:?}", ue.impi, ue.msk_names(g));
}

/// An MSK request made while the push of the same MSK waits for its
/// retransmission timer (30 s here) is answered with a MIKEY message at
/// once (seed 002 6.3.2.2.1), and retransmission goes on from there.
#[tokio::test]
async fn an_msk_request_is_answered_at_once_while_the_push_waits_for_its_timer() {
    let env = Env::new_replacing(
        "",
        &[
            ("initial_ms = 300", "initial_ms = 30000"),
            ("max_interval_ms = 1200", "max_interval_ms = 60000"),
        ],
    )
    .await;
    let mut ue = env.ue(1).await;
    assert_eq!(ue.register(&[NEWS]).await, [200]);
    let (cur, next) = env.key_group(1).await;
    // Both pushes are lost.
    lose_pushes(&mut ue, 2).await;
    assert!(ue.msk_names(1).is_empty());
    let d = env.deliveries(&ue.impi).await;
    assert!(d.iter().all(|x| x.2 == "sent"), "{d:?}");
    // The UE asks for the current MSK (Key Number 0): it arrives long
    // before the 20 s timer, and its acknowledgement is accepted.
    assert_eq!(ue.request_msks(&[msk(1, 0)]).await, [200]);
    wait_active(&mut ue, 1, msk_of(&cur)).await;
    for _ in 0..200 {
        let d = env.deliveries(&ue.impi).await;
        if d.iter().any(|x| x.1 == "current" && x.2 == "acknowledged") {
            break;
        }
        ue.pump(Duration::from_millis(50)).await;
    }
    let d = env.deliveries(&ue.impi).await;
    assert!(
        d.iter().any(|x| x.1 == "current" && x.2 == "acknowledged"),
        "{d:?}"
    );
    assert!(!ue.msk_names(1).contains(&msk_of(&next)), "not asked for");
    // The next MSK's push still waits for its own timer: the UE asks for
    // it by its MSK ID.
    assert_eq!(ue.request_msks(&[msk_of(&next)]).await, [200]);
    wait_active(&mut ue, 1, msk_of(&next)).await;
    env.wait_acknowledged(&mut ue).await;
    assert!(ue.errors.is_empty(), "{:?}", ue.errors);
}

/// An MSK request while the last attempt's timer runs (the delivery would
/// be given up at its end) is answered at once, and so is the next one.
#[tokio::test]
async fn an_msk_request_at_the_last_attempt_is_answered_at_once() {
    let env = Env::new_replacing(
        "",
        &[
            ("initial_ms = 300", "initial_ms = 30000"),
            ("max_interval_ms = 1200", "max_interval_ms = 60000"),
            ("max_attempts = 5", "max_attempts = 1"),
        ],
    )
    .await;
    let mut ue = env.ue(1).await;
    assert_eq!(ue.register(&[NEWS]).await, [200]);
    let (cur, _) = env.key_group(1).await;
    // The only attempt is lost; its timer runs for 30 s.
    lose_pushes(&mut ue, 2).await;
    assert_eq!(ue.request_msks(&[msk(1, 0)]).await, [200]);
    // The answer (at once: long before the timer) is lost as well, and the
    // UE asks again.
    lose_pushes(&mut ue, 1).await;
    assert_eq!(ue.request_msks(&[msk(1, 0)]).await, [200]);
    wait_active(&mut ue, 1, msk_of(&cur)).await;
    assert!(ue.errors.is_empty(), "{:?}", ue.errors);
}

/// A given-up delivery is revived by a request too.
#[tokio::test]
async fn an_msk_request_revives_a_given_up_delivery() {
    let env = Env::new_replacing("", &[("max_attempts = 5", "max_attempts = 2")]).await;
    let mut ue = env.ue(1).await;
    assert_eq!(ue.register(&[NEWS]).await, [200]);
    let (cur, _) = env.key_group(1).await;
    for _ in 0..200 {
        ue.pump_dropping(Duration::from_millis(50), |_| true).await;
        let d = env.deliveries(&ue.impi).await;
        if d.iter().all(|x| x.2 == "given_up") {
            break;
        }
    }
    let d = env.deliveries(&ue.impi).await;
    assert!(d.iter().all(|x| x.2 == "given_up"), "{d:?}");
    assert_eq!(ue.request_msks(&[msk_of(&cur)]).await, [200]);
    wait_active(&mut ue, 1, msk_of(&cur)).await;
    assert!(ue.errors.is_empty(), "{:?}", ue.errors);
}
