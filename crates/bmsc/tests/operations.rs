//! Operating the BM-SC: a crash in the middle of a rotation (SQLite and
//! PostgreSQL), the 4-way procedure with charging records, solicited pull,
//! the admin API, metrics, and a plain `curl --digest` client.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::*;

/// Three UEs registered and acknowledged; a rotation; the BM-SC is killed
/// before the UEs saw the pushes (and one UE's acknowledgements are lost);
/// a new BM-SC on the same database pushes again: every UE ends with the
/// current and next MSK, and no MGV-F ever saw a counter twice.
async fn crash_mid_rotation(mut env: Env) {
    let mut ues = Vec::new();
    for n in 1..=3 {
        let mut ue = env.ue(n).await;
        assert_eq!(ue.register(&[NEWS]).await, [200]);
        ues.push(ue);
    }
    for ue in &mut ues {
        env.wait_acknowledged(ue).await;
    }
    let (s, _) = env
        .admin_post("/admin/v1/key-groups/1/rotate", serde_json::json!({}))
        .await;
    assert_eq!(s, 200);
    let (cur, next) = env.key_group(1).await;
    // UE 1 receives the push but its acknowledgement is lost; UE 2 and 3
    // have not read their sockets yet when the BM-SC dies.
    ues[0].drop_acks = 1;
    ues[0].pump(Duration::from_millis(150)).await;
    env.kill();
    tokio::time::sleep(Duration::from_millis(100)).await;
    env.start().await;
    assert_eq!(
        env.key_group(1).await,
        (cur.clone(), next.clone()),
        "the rotation survived"
    );
    for ue in &mut ues {
        ue.wait_msks(1, &[msk_of(&cur), msk_of(&next)]).await;
        env.wait_acknowledged(ue).await;
        assert!(
            !ue.errors.iter().any(|e| e == "replay"),
            "{}: a counter was reused: {:?}",
            ue.impi,
            ue.errors
        );
        let distinct: BTreeSet<u32> = ue.counters.iter().copied().collect();
        assert_eq!(distinct.len(), ue.counters.len(), "{:?}", ue.counters);
    }
    // Registrations survived too.
    let (_, v) = env.admin_get("/admin/v1/registrations").await;
    assert_eq!(v.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn crash_mid_rotation_sqlite() {
    crash_mid_rotation(Env::new("").await).await;
}

#[tokio::test]
async fn crash_mid_rotation_postgresql() {
    let Some(env) = Env::postgres("crash", "").await else {
        return;
    };
    crash_mid_rotation(env).await;
}

/// Acknowledged deliveries are not pushed again after a restart.
#[tokio::test]
async fn a_restart_does_not_resend_acknowledged_msks() {
    let mut env = Env::new("").await;
    let mut ue = env.ue(1).await;
    ue.register(&[NEWS]).await;
    env.wait_acknowledged(&mut ue).await;
    env.bmsc.take().unwrap().shutdown().await.unwrap();
    env.start().await;
    assert_eq!(ue.pump(Duration::from_millis(500)).await, 0);
    let d = env.deliveries(&ue.impi).await;
    assert_eq!(d.len(), 2);
    assert!(d.iter().all(|x| x.2 == "acknowledged"), "{d:?}");
}

async fn four_way(env: Env) {
    let mut ue = env.ue(1).await;
    assert_eq!(ue.register(&[PAY]).await, [200]);
    let (cur, next) = env.key_group(2).await;
    ue.wait_msks(2, &[msk_of(&cur), msk_of(&next)]).await;
    env.wait_acknowledged(&mut ue).await;
    // Inactive, acknowledged, charged, activated, acknowledged.
    let d = env.deliveries(&ue.impi).await;
    assert!(d.iter().all(|x| x.2 == "acknowledged" && x.3), "{d:?}");
    assert!(ue.mgvf.msks_of(group(2)).iter().all(|m| !m.is_inactive()));
    assert_eq!(ue.counters.len(), 4, "two MSKs, two steps each");
    let (s, v) = env.admin_get("/admin/v1/charging-records").await;
    assert_eq!(s, 200);
    let recs = v["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["impi"], ue.impi.as_str());
    assert_eq!(recs[0]["btid"], ue.btid.as_str());
    let msks: BTreeSet<&str> = recs.iter().map(|r| r["msk"].as_str().unwrap()).collect();
    assert_eq!(
        msks,
        [format!("00F110/{cur}"), format!("00F110/{next}")]
            .iter()
            .map(String::as_str)
            .collect()
    );
    // CSV export, paging.
    let r = env
        .http
        .get(format!(
            "{}/admin/v1/charging-records?format=csv&after={}",
            env.url(),
            recs[0]["id"]
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,time,impi,btid,key_domain_id,msk_id,counter");
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].contains(&ue.impi));
    assert_eq!(env.metric("bmsc_charging_records_total", ""), 2.0);
    // A re-request of a charged MSK is not charged again.
    assert_eq!(ue.request_msks(&[msk(2, 0)]).await, [200]);
    ue.pump(Duration::from_millis(400)).await;
    let (_, v) = env.admin_get("/admin/v1/charging-records").await;
    assert_eq!(v["records"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn four_way_procedure_writes_charging_records_sqlite() {
    four_way(Env::new("").await).await;
}

#[tokio::test]
async fn four_way_procedure_writes_charging_records_postgresql() {
    let Some(env) = Env::postgres("fourway", "").await else {
        return;
    };
    four_way(env).await;
}

#[tokio::test]
async fn solicited_pull_for_a_key_group_and_a_ue() {
    let env = Env::new("").await;
    let mut a = env.ue(1).await;
    let mut b = env.ue(2).await;
    a.register(&[NEWS]).await;
    b.register(&[NEWS]).await;
    env.wait_acknowledged(&mut a).await;
    env.wait_acknowledged(&mut b).await;
    let (s, v) = env
        .admin_post(
            "/admin/v1/key-groups/1/solicited-pull",
            serde_json::json!({}),
        )
        .await;
    assert_eq!((s, v["sent"].as_u64()), (200, Some(2)));
    a.pump(Duration::from_millis(200)).await;
    b.pump(Duration::from_millis(200)).await;
    assert_eq!(a.pulls, [group(1)]);
    assert_eq!(b.pulls, [group(1)]);
    // V is never set: no acknowledgement was sent for the pull.
    let acks = a.acks_sent.len();
    // The UE answers the pull with the basic MSK request.
    assert_eq!(a.request_msks(&[msk(1, 0)]).await, [200]);
    let (cur, _) = env.key_group(1).await;
    a.pump(Duration::from_millis(300)).await;
    assert_eq!(a.acks_sent.len(), acks + 1);
    assert!(a.msk_names(1).contains(&msk_of(&cur)));
    // To one UE.
    let (s, v) = env
        .admin_post(
            &format!(
                "/admin/v1/registrations/{}/solicited-pull?key_group=1",
                b.impi
            ),
            serde_json::json!({}),
        )
        .await;
    assert_eq!((s, v["sent"].as_u64()), (200, Some(1)));
    b.pump(Duration::from_millis(200)).await;
    assert_eq!(b.pulls.len(), 2);
    let (s, _) = env
        .admin_post(
            "/admin/v1/registrations/nobody@x/solicited-pull",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = env
        .admin_post(
            "/admin/v1/key-groups/99/solicited-pull",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 404);
    assert!(a.errors.is_empty() && b.errors.is_empty());
}

#[tokio::test]
async fn admin_api_services_key_groups_auth_metrics() {
    let env = Env::new("").await;
    let url = env.url();
    // Bearer token required.
    for (path, token) in [
        ("/admin/v1/services", None),
        ("/admin/v1/services", Some("wrong")),
    ] {
        let mut r = env.http.get(format!("{url}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        assert_eq!(r.send().await.unwrap().status(), 401);
    }
    // A new key group with charging and a service on it.
    let (s, v) = env
        .admin_post(
            "/admin/v1/key-groups",
            serde_json::json!({"key_group": 5, "window_len": 50, "charging": false}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["current"]["msk_id"], "00050001");
    assert_eq!(v["next"]["seq_s"], 50);
    let (s, _) = env
        .admin_post(
            "/admin/v1/services",
            serde_json::json!({"id": "urn:mbms:service:sport", "key_groups": [5, 1], "open": true}),
        )
        .await;
    assert_eq!(s, 201);
    for (body, want) in [
        (
            serde_json::json!({"id": "urn:x", "key_groups": [77], "open": true}),
            400,
        ),
        (serde_json::json!({"id": "", "key_groups": [1]}), 400),
        (serde_json::json!({"key_group": 0}), 400),
        (serde_json::json!({"nonsense": true}), 400),
    ] {
        let path = if body.get("id").is_some() {
            "/admin/v1/services"
        } else {
            "/admin/v1/key-groups"
        };
        let (s, v) = env.admin_post(path, body.clone()).await;
        assert_eq!(s, want, "{body} -> {v}");
    }
    let (_, v) = env.admin_get("/admin/v1/services").await;
    assert_eq!(v.as_array().unwrap().len(), 4);
    let mut ue = env.ue(4).await;
    assert_eq!(ue.register(&["urn:mbms:service:sport"]).await, [200]);
    ue.wait_msks(5, &[msk(5, 1), msk(5, 2)]).await;
    ue.wait_msks(1, &[msk(1, 1), msk(1, 2)]).await;
    let (s, _) = env
        .admin_post("/admin/v1/key-groups/77/rotate", serde_json::json!({}))
        .await;
    assert_eq!(s, 404);
    let (s, _) = env
        .admin_get("/admin/v1/registrations/nobody/deliveries")
        .await;
    assert_eq!(s, 404);
    // Health and metrics.
    let r = env.http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok\n");
    let m = env.http.get(format!("{url}/metrics")).send().await.unwrap();
    let text = m.text().await.unwrap();
    for name in [
        "bmsc_registered_ues 1",
        "bmsc_msk_messages_sent_total{kind=\"deliver\"}",
        "bmsc_ua_http_responses_total{",
        "bmsc_msk_acks_total{kind=\"accepted\"}",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
    // No secret in the metrics or the admin answers.
    assert!(!text.contains(&ue.password()));
    let (_, v) = env.admin_get("/admin/v1/registrations").await;
    assert!(!v.to_string().contains(&ue.password()));
}

#[tokio::test]
async fn curl_digest_registers() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        mbms_test_support::skip("curl is not installed");
        return;
    }
    let env = Env::new("").await;
    let mut ue = env.ue(1).await;
    let url = format!(
        "{}/keymanagement?requesttype=register&mikey-port={}",
        env.url(),
        ue.mikey_port()
    );
    let body = bmsc::xml::register_request(&[NEWS]);
    let user = format!("{}:{}", ue.btid, ue.password());
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--digest", "-u", &user, "-H"])
        .arg(format!("Content-Type: {}", bmsc::xml::CT_REGISTER))
        .args(["--data-binary", &body, "-D", "-", &url]);
    let out = process_output(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HTTP/1.1 401"), "{text}");
    assert!(text.contains("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("authentication-info: "),
        "{text}"
    );
    assert!(
        text.contains("serviceStatus serviceId=\"urn:mbms:service:news\" status=\"200\""),
        "{text}"
    );
    let (cur, next) = env.key_group(1).await;
    ue.wait_msks(1, &[msk_of(&cur), msk_of(&next)]).await;
    env.wait_acknowledged(&mut ue).await;
}

/// Runs a command on a blocking thread.
async fn process_output(mut cmd: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Charging records of MSK `hex` (admin API).
async fn charges_of(env: &Env, hex: &str) -> usize {
    let (_, v) = env.admin_get("/admin/v1/charging-records").await;
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["msk"] == format!("00F110/{hex}").as_str())
        .count()
}

/// Whether an MSK message carries the activation (the real window: SEQs <=
/// SEQu, not the inactive VF > VT window).
fn is_activation(k: Option<&mbms::messages::MskKeyData>) -> bool {
    k.is_some_and(|k| !k.is_inactive() && k.seq_s.value() <= k.seq_u.value())
}

/// The 4-way procedure (seed 004 6.3.2.3.3): the subscriber acknowledged the
/// inactive MSK and was charged, every activation is lost, the BM-SC
/// restarts on the same database (retransmission timers: 30 s), the
/// activation after the restart is lost too, and the UE asks for the MSK by
/// its MSK ID. The answer comes at once and is the activation (parsed with
/// the mbms readers: the real window), never the inactive MSK again; the
/// subscriber is charged once.
#[tokio::test]
async fn a_lost_activation_is_answered_on_request_after_a_restart_without_a_second_charge() {
    let mut env = Env::new_replacing(
        "",
        &[
            ("initial_ms = 300", "initial_ms = 30000"),
            ("max_interval_ms = 1200", "max_interval_ms = 60000"),
        ],
    )
    .await;
    let mut ue = env.ue(1).await;
    assert_eq!(ue.register(&[PAY]).await, [200]);
    let (cur, next) = env.key_group(2).await;
    // Step 1 of both MSKs is acknowledged (charged); the activations are
    // lost.
    for _ in 0..200 {
        ue.pump_dropping(Duration::from_millis(50), is_activation)
            .await;
        if charges_of(&env, &cur).await == 1 && charges_of(&env, &next).await == 1 {
            break;
        }
    }
    assert_eq!(charges_of(&env, &cur).await, 1);
    assert!(ue.mgvf.msks_of(group(2)).iter().all(|m| m.is_inactive()));
    for _ in 0..200 {
        if ue
            .received
            .iter()
            .filter(|r| is_activation(r.2.as_ref()))
            .count()
            >= 2
        {
            break;
        }
        ue.pump_dropping(Duration::from_millis(50), is_activation)
            .await;
    }
    assert!(
        ue.received
            .iter()
            .filter(|r| is_activation(r.2.as_ref()))
            .count()
            >= 2,
        "the activations were sent (and lost)"
    );

    env.kill();
    env.start().await;
    ue.base = env.url();
    // After the restart the activations are pushed again, and lost again.
    let restart = ue.received.len();
    ue.pump_dropping(Duration::from_millis(500), is_activation)
        .await;
    // The UE asks for the current MSK by its MSK ID.
    assert_eq!(ue.request_msks(&[msk_of(&cur)]).await, [200]);
    for _ in 0..200 {
        let active = ue
            .mgvf
            .msks_of(group(2))
            .iter()
            .any(|m| m.name == msk_of(&cur) && !m.is_inactive());
        if active {
            break;
        }
        ue.pump(Duration::from_millis(50)).await;
    }
    let held = ue.mgvf.msks_of(group(2));
    let m = held.iter().find(|m| m.name == msk_of(&cur)).unwrap();
    assert!(!m.is_inactive(), "the UE holds the MSK active");
    // Every message after the restart was an activation.
    let after: Vec<_> = ue.received[restart..].to_vec();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|r| is_activation(r.2.as_ref())),
        "{after:?}"
    );
    let (_, v) = env.admin_get("/admin/v1/key-groups").await;
    let kg = v
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_group"] == 2)
        .unwrap()
        .clone();
    let answer = after.iter().rev().find(|r| r.1 == msk_of(&cur)).unwrap();
    let k = answer.2.as_ref().unwrap();
    assert_eq!(
        (u64::from(k.seq_s.value()), u64::from(k.seq_u.value())),
        (
            kg["current"]["seq_s"].as_u64().unwrap(),
            kg["current"]["seq_u"].as_u64().unwrap()
        )
    );
    // Acknowledged, and charged once.
    for _ in 0..200 {
        let d = env.deliveries(&ue.impi).await;
        if d.iter().any(|x| x.1 == "current" && x.2 == "acknowledged") {
            break;
        }
        ue.pump(Duration::from_millis(50)).await;
    }
    let d = env.deliveries(&ue.impi).await;
    assert!(
        d.iter()
            .any(|x| x.1 == "current" && x.2 == "acknowledged" && x.3),
        "{d:?}"
    );
    assert_eq!(charges_of(&env, &cur).await, 1);
    assert_eq!(charges_of(&env, &next).await, 1);
    assert_eq!(env.metric("bmsc_charging_records_total", ""), 0.0);
}

/// A subscriber charged for an MSK who deregisters and registers again
/// (before and after a restart of the BM-SC) gets the activation directly
/// and is not charged again: the charging records are the durable fact.
async fn not_charged_twice(mut env: Env) {
    let mut ue = env.ue(1).await;
    assert_eq!(ue.register(&[PAY]).await, [200]);
    let (cur, next) = env.key_group(2).await;
    env.wait_acknowledged(&mut ue).await;
    assert_eq!(charges_of(&env, &cur).await, 1);
    assert_eq!(charges_of(&env, &next).await, 1);
    for restart in [false, true] {
        assert_eq!(ue.deregister(&[PAY]).await, [200]);
        assert_eq!(env.deliveries(&ue.impi).await, vec![]);
        if restart {
            env.bmsc.take().unwrap().shutdown().await.unwrap();
            env.start().await;
            ue.base = env.url();
        }
        let seen = ue.received.len();
        assert_eq!(ue.register(&[PAY]).await, [200]);
        env.wait_acknowledged(&mut ue).await;
        let again: Vec<_> = ue.received[seen..].to_vec();
        assert!(!again.is_empty());
        assert!(
            again.iter().all(|r| is_activation(r.2.as_ref())),
            "restart {restart}: {again:?}"
        );
        assert_eq!(charges_of(&env, &cur).await, 1, "restart {restart}");
        assert_eq!(charges_of(&env, &next).await, 1, "restart {restart}");
    }
    let d = env.deliveries(&ue.impi).await;
    assert!(d.iter().all(|x| x.2 == "acknowledged" && x.3), "{d:?}");
}

#[tokio::test]
async fn leaving_and_registering_again_is_not_charged_twice_even_across_a_restart_sqlite() {
    not_charged_twice(Env::new("").await).await;
}

#[tokio::test]
async fn leaving_and_registering_again_is_not_charged_twice_even_across_a_restart_postgresql() {
    let Some(env) = Env::postgres("charged_once", "").await else {
        return;
    };
    not_charged_twice(env).await;
}
