//! The UE against the real BSF and the real BM-SC over loopback: joining a
//! streaming service and decrypting byte-exactly across MTK changes and an
//! MSK rotation, solicited pull, the missed key update after an offline
//! period, the 4-way procedure, download objects (and a tampered one),
//! restart with the state kept, and leaving a service without MSKs.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use support::*;
use ue::{RequestReason, UeEvent};

/// Collects the datagrams arriving on `port`.
async fn collector(port: u16) -> (Arc<Mutex<Vec<Vec<u8>>>>, tokio::task::JoinHandle<()>) {
    let sock = UdpSocket::bind(("127.0.0.1", port)).await.unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let t = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, _)) = sock.recv_from(&mut buf).await {
            g.lock().unwrap().push(buf[..n].to_vec());
        }
    });
    (got, t)
}

/// Sends RTP packets `seqs` to the BM-SC's RTP input, every 10 ms.
async fn send_rtp(env: &Env, seqs: std::ops::Range<u16>) -> Vec<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut sent = Vec::new();
    for seq in seqs {
        let p = rtp(0x1234_5678, seq, 120);
        sock.send_to(&p, ("127.0.0.1", env.ports.rtp_in))
            .await
            .unwrap();
        sent.push(p);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sent
}

fn msk_id_of(e: &UeEvent) -> Option<String> {
    match e {
        UeEvent::MskStored { msk, .. } => Some(msk.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_decrypts_byte_exactly_across_mtk_change_and_msk_rotation() {
    let env = Env::new().await;
    let (got, _c) = collector(env.ports.rtp_out).await;
    let (ue, mut ev) = start_ue(env.ue_config("ue", &[NEWS], None)).await;

    // Registration makes the BM-SC push the current and the next MSK.
    let mut stored = BTreeSet::new();
    while stored.len() < 2 {
        let e = wait_event(&mut ev, 10, "two MSKs", |e| msk_id_of(e).is_some()).await;
        stored.insert(msk_id_of(&e).unwrap());
    }
    wait_event(&mut ev, 10, "an MTK", |e| {
        matches!(e, UeEvent::MtkAccepted { .. })
    })
    .await;

    // The SDP file describes the plain output.
    let sdp = std::fs::read_to_string(env.path("ue/video.sdp")).unwrap();
    assert!(
        sdp.contains(&format!("m=video {} RTP/AVP 33", env.ports.rtp_out)),
        "{sdp}"
    );
    assert!(sdp.contains("c=IN IP4 127.0.0.1"));

    let mut mtks = BTreeSet::new();
    let mut collect = |ev: &mut tokio::sync::broadcast::Receiver<UeEvent>| {
        while let Ok(e) = ev.try_recv() {
            if let UeEvent::MtkAccepted { msk, mtk_id } = e {
                mtks.insert((msk, mtk_id));
            }
        }
    };
    // 1.2 s of RTP (the BM-SC issues a new MTK every second), then an MSK
    // rotation, then 1.2 s more.
    let mut sent = send_rtp(&env, 0..120).await;
    collect(&mut ev);
    let (s, v) = env.admin_post("/admin/v1/key-groups/1/rotate").await;
    assert_eq!(s, 200, "{v}");
    let new_current = v["current"].as_str().unwrap().to_owned();
    sent.extend(send_rtp(&env, 120..240).await);
    // Until every packet came out, or a generous deadline: on a loaded
    // machine (two suites at once) the last ones may take a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().len() < sent.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    collect(&mut ev);

    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), sent.len(), "every packet decrypted");
    assert!(got == sent, "the plain RTP is byte-exact");
    let msks: BTreeSet<_> = mtks.iter().map(|(m, _)| m.clone()).collect();
    assert!(mtks.len() >= 2, "an MTK change during the stream: {mtks:?}");
    assert!(
        msks.iter().any(|m| m.ends_with(&new_current)),
        "an MTK under the rotated-in MSK {new_current}: {mtks:?}"
    );
    let st = ue.status().unwrap();
    let video = &st.runtime.as_ref().unwrap().sessions[0];
    assert_eq!(video.rtp_out, 240);
    assert!(
        video.last_mki.as_deref().unwrap().starts_with(&new_current),
        "{video:?}"
    );
    assert!(st
        .msks
        .iter()
        .any(|m| m.msk_id == new_current && m.state == "active"));
    ue.shutdown(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solicited_pull_leads_to_a_new_msk() {
    let env = Env::new().await;
    let (ue, mut ev) = start_ue(env.ue_config("ue", &[NEWS], None)).await;
    wait_until(10, "the pushed MSKs of key group 1", || {
        ue.status()
            .unwrap()
            .msks
            .iter()
            .filter(|m| m.key_group == 1)
            .count()
            == 2
    })
    .await;
    // The pull: the UE asks for the current MSK of the key group and gets
    // it again (a new MSK message, acknowledged).
    let (s, v) = env
        .admin_post("/admin/v1/key-groups/1/solicited-pull")
        .await;
    assert_eq!(s, 200, "{v}");
    wait_event(
        &mut ev,
        10,
        "the solicited pull",
        |e| matches!(e, UeEvent::SolicitedPull { key_group } if key_group == "00F110/0001"),
    )
    .await;
    // The request's answer and the MSK it brings, in either order.
    let (_, e) = wait_events_any_order(
        &mut ev,
        10,
        "the MSK request and the MSK",
        |e| {
            matches!(e, UeEvent::MskRequested { reason: RequestReason::SolicitedPull, statuses, keys }
            if statuses.iter().all(|s| *s == 200) && keys.contains(&"00F110/00010000".to_string()))
        },
        |e| msk_id_of(e).is_some(),
    )
    .await;
    let st = ue.status().unwrap();
    assert!(st
        .msks
        .iter()
        .any(|m| format!("{}/{}", m.key_domain, m.msk_id) == msk_id_of(&e).unwrap()));
    assert_eq!(st.runtime.unwrap().counters.solicited_pulls, 1);
    ue.shutdown(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_ue_recovers_through_the_missed_key_update() {
    let env = Env::new().await;
    let relay = Relay::new().await;
    let (got, _c) = collector(env.ports.rtp_out).await;
    let (ue, mut ev) = start_ue(env.ue_config("ue", &[NEWS], Some(&relay))).await;
    wait_event(&mut ev, 10, "an MTK", |e| {
        matches!(e, UeEvent::MtkAccepted { .. })
    })
    .await;

    // Offline: two rotations; the pushes of the new MSKs are lost and the
    // BM-SC gives up retransmitting them.
    relay.set_online(false);
    env.admin_post("/admin/v1/key-groups/1/rotate").await;
    let (_, v) = env.admin_post("/admin/v1/key-groups/1/rotate").await;
    let current = v["current"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!ue
        .status()
        .unwrap()
        .msks
        .iter()
        .any(|m| m.msk_id == current));
    relay.set_online(true);

    // The MTK messages (and the SRTP MKIs) name the MSK the UE missed.
    // The request's answer and the MSK it brings, in either order.
    wait_events_any_order(
        &mut ev,
        15,
        "the missed key update and the missed MSK",
        |e| {
            matches!(e, UeEvent::MskRequested { reason: RequestReason::MissedKeyUpdate | RequestReason::Retry, statuses, .. } if statuses.contains(&200))
        },
        |e| msk_id_of(e).is_some_and(|m| m.ends_with(&current)),
    )
    .await;
    assert!(
        ue.status()
            .unwrap()
            .runtime
            .unwrap()
            .counters
            .missed_key_updates
            >= 1
    );

    // Traffic under the recovered MSK decrypts.
    got.lock().unwrap().clear();
    let mut sent = Vec::new();
    for round in 0..5u16 {
        sent.extend(send_rtp(&env, 1000 + round * 50..1050 + round * 50).await);
        let st = ue.status().unwrap();
        let mki = st.runtime.unwrap().sessions[0].last_mki.clone();
        if mki.is_some_and(|m| m.starts_with(&current)) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = ue.status().unwrap();
    let s0 = &st.runtime.as_ref().unwrap().sessions[0];
    assert!(
        s0.last_mki
            .as_deref()
            .is_some_and(|m| m.starts_with(&current)),
        "{s0:?}"
    );
    let got = got.lock().unwrap().clone();
    assert!(got.iter().all(|p| sent.contains(p)));
    assert!(
        got.last() == sent.last(),
        "the last packet sent was decrypted"
    );
    ue.shutdown(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_way_procedure_keeps_the_msk_inactive_until_activation() {
    let env = Env::new().await;
    let (ue, mut ev) = start_ue(env.ue_config("ue", &[PAY], None)).await;
    let first = wait_event(&mut ev, 10, "an MSK", |e| msk_id_of(e).is_some()).await;
    let UeEvent::MskStored {
        msk,
        inactive,
        acknowledged,
        ..
    } = first
    else {
        unreachable!()
    };
    assert!(inactive, "step 1 delivers the MSK inactive");
    assert!(acknowledged, "and the UE acknowledges it");
    wait_event(&mut ev, 10, "the activation", |e| {
        matches!(e, UeEvent::MskStored { msk: m, inactive: false, acknowledged: true, .. } if *m == msk)
    })
    .await;
    wait_until(5, "both MSKs active", || {
        let st = ue.status().unwrap();
        st.msks.len() == 2 && st.msks.iter().all(|m| m.state == "active")
    })
    .await;
    ue.shutdown(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_objects_decrypt_and_a_tampered_object_is_refused() {
    let env = Env::new().await;
    let (ue, mut ev) = start_ue(env.ue_config("ue", &[NEWS], None)).await;
    wait_event(&mut ev, 10, "an MSK", |e| msk_id_of(e).is_some()).await;

    let plain: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::create_dir_all(env.path("bmsc-watch")).unwrap();
    std::fs::write(env.path("bmsc-watch/report.bin"), &plain).unwrap();
    let object = env.path("bmsc-out/report.bin");
    let mikey = env.path("bmsc-out/report.bin.mikey");
    wait_until(15, "the BM-SC protects the file", || {
        object.exists() && mikey.exists()
    })
    .await;
    let protected = std::fs::read(&object).unwrap();

    // A tampered copy (one ciphertext bit flipped) is refused, nothing written.
    let mut bad = protected.clone();
    bad[100] ^= 0x01;
    std::fs::copy(&mikey, env.path("ue/in/tampered.bin.mikey")).unwrap();
    std::fs::write(env.path("ue/in/tampered.bin"), &bad).unwrap();
    let e = wait_event(&mut ev, 10, "the refusal", |e| {
        matches!(e, UeEvent::DownloadRefused { .. })
    })
    .await;
    let UeEvent::DownloadRefused { reason, .. } = e else {
        unreachable!()
    };
    assert!(reason.contains("tag mismatch"), "{reason}");
    assert!(!env.path("ue/out/tampered.bin").exists());
    assert!(!env.path("ue/out/tampered.bin.partial").exists());

    // The genuine object decrypts byte-exactly.
    std::fs::copy(&mikey, env.path("ue/in/report.bin.mikey")).unwrap();
    std::fs::write(env.path("ue/in/report.bin"), &protected).unwrap();
    wait_event(
        &mut ev,
        10,
        "the decryption",
        |e| matches!(e, UeEvent::DownloadDecrypted { file, .. } if file.ends_with("report.bin")),
    )
    .await;
    assert_eq!(std::fs::read(env.path("ue/out/report.bin")).unwrap(), plain);
    let st = ue.status().unwrap();
    let files = &st.runtime.unwrap().sessions[1];
    assert_eq!((files.downloads_ok, files.downloads_refused), (1, 1));
    ue.shutdown(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_state_and_refuses_replays() {
    let env = Env::new().await;
    let relay = Relay::new().await;
    let cfg = env.ue_config("ue", &[NEWS], Some(&relay));
    let (ue, mut ev) = start_ue(cfg.clone()).await;
    let mut stored = BTreeSet::new();
    while stored.len() < 2 {
        let e = wait_event(&mut ev, 10, "two MSKs", |e| msk_id_of(e).is_some()).await;
        stored.insert(msk_id_of(&e).unwrap());
    }
    wait_event(&mut ev, 10, "an MTK", |e| {
        matches!(e, UeEvent::MtkAccepted { .. })
    })
    .await;
    let before = ue.status().unwrap();
    let first_msk_message = relay.seen.lock().unwrap()[0].clone();
    ue.shutdown(false).await.unwrap();

    let stopped = ue::status::read(&cfg.state_dir).unwrap();
    assert!(!stopped.running);
    for m in &before.msks {
        assert!(
            stopped
                .msks
                .iter()
                .any(|a| a.msk_id == m.msk_id && a.counter >= m.counter),
            "{m:?} kept"
        );
    }
    assert!(!stopped.runtime.as_ref().unwrap().mtks.is_empty());

    // Restart: same B-TID (no bootstrapping), same MSKs and counters.
    let (ue, _ev) = start_ue(cfg.clone()).await;
    let after = ue.status().unwrap();
    assert_eq!(after.btid, before.btid);
    assert_eq!(after.runtime.as_ref().unwrap().counters.bootstraps, 0);
    for m in &before.msks {
        assert!(
            after
                .msks
                .iter()
                .any(|a| a.msk_id == m.msk_id && a.counter >= m.counter),
            "{m:?} kept"
        );
    }
    for (b, a) in before.muks.iter().zip(&after.muks) {
        assert!(a.counter >= b.counter);
    }
    // A message accepted before the restart is a replay now.
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&first_msk_message, ue.mikey_addr())
        .await
        .unwrap();
    wait_until(5, "the replay refused", || {
        let r = ue.status().unwrap().runtime.unwrap();
        r.counters.mikey_refused >= 1 && r.last_errors.iter().any(|e| e.what.contains("replay"))
    })
    .await;
    ue.shutdown(true).await.unwrap();
    let regs = ue::status::read(&cfg.state_dir).unwrap().registrations;
    assert_eq!(regs[0].state, "deregistered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_a_service_when_no_msk_can_be_had() {
    let env = Env::new().await;
    let (ue, mut ev) = start_ue(env.ue_config("ue", &[GROUP7], None)).await;
    // Key group 1 is pushed; key group 7 does not exist at the BM-SC: the
    // initial MSK request for it fails and no older MSK of group 7 exists.
    let e = wait_event(&mut ev, 15, "leaving", |e| {
        matches!(e, UeEvent::LeftService { .. })
    })
    .await;
    let UeEvent::LeftService { service, reason } = e else {
        unreachable!()
    };
    assert_eq!(service, NEWS);
    assert!(reason.contains("00F110/0007"), "{reason}");
    // Seed 000 6.3.2.2.1: the keys of the service left are deleted (key
    // group 1 was pushed, no other service uses it; the BM-SC's NEWS also
    // pushes key group 3, which this UE's description does not name).
    wait_until(5, "left, without keys", || {
        let st = ue.status().unwrap();
        st.registrations[0].state == "left"
            && !st.msks.iter().any(|m| [1, 7].contains(&m.key_group))
    })
    .await;
    ue.shutdown(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_btid_at_the_bmsc_triggers_bootstrapping() {
    // A B-TID from another BSF: valid for the UE, unknown to this BM-SC's
    // BSF. The BM-SC answers 401 to the registration; the UE bootstraps
    // again (re-synchronising its SQN with this BSF) and registers.
    let other = Env::new().await;
    let env = Env::new().await;
    let first = other.ue_config("ue", &[NEWS], None);
    let (ue, _) = start_ue(first.clone()).await;
    let old_btid = ue.status().unwrap().btid.unwrap();
    ue.shutdown(false).await.unwrap();

    let mut cfg = env.ue_config("ue", &[NEWS], None);
    cfg.state_dir = first.state_dir.clone();
    let (ue, mut ev) = start_ue(cfg).await;
    let st = ue.status().unwrap();
    assert_ne!(st.btid.as_deref(), Some(old_btid.as_str()));
    assert_eq!(st.registrations[0].state, "registered");
    assert_eq!(st.runtime.unwrap().counters.bootstraps, 1);
    wait_event(&mut ev, 10, "an MSK under the new MUK", |e| {
        msk_id_of(e).is_some()
    })
    .await;
    ue.shutdown(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gba_u_mode_gets_msks() {
    let env = Env::new().await;
    let mut cfg = env.ue_config("ue", &[NEWS], None);
    cfg.identity.impi = IMPI_U.into();
    cfg.identity.gba = ue::GbaMode::GbaU;
    let (ue, mut ev) = start_ue(cfg).await;
    wait_event(&mut ev, 10, "an MSK under the GBA_U MUK", |e| {
        matches!(
            e,
            UeEvent::MskStored {
                acknowledged: true,
                ..
            }
        )
    })
    .await;
    ue.rebootstrap().await.unwrap();
    assert_eq!(ue.status().unwrap().runtime.unwrap().counters.bootstraps, 2);
    ue.shutdown(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstraps_again_before_the_btid_expires() {
    // A bootstrapping every 6 s: long enough for the MSK push under the
    // second B-TID to arrive before a third one on a busy machine (with
    // 6 s / 3 s, a third bootstrapping at load 50 replaced the B-TID the
    // status is compared with).
    let env = Env::with_lifetime(20).await;
    let mut cfg = env.ue_config("ue", &[NEWS], None);
    cfg.rebootstrap_margin_s = 14;
    let (ue, mut ev) = start_ue(cfg).await;
    let first = wait_event(&mut ev, 10, "the bootstrapping", |e| {
        matches!(e, UeEvent::Bootstrapped { .. })
    })
    .await;
    let second = wait_event(&mut ev, 10, "the second bootstrapping", |e| {
        matches!(e, UeEvent::Bootstrapped { .. })
    })
    .await;
    assert_ne!(first, second);
    // Registered again under the new B-TID: MSKs pushed under the new MUK.
    wait_event(&mut ev, 10, "an MSK under the new MUK", |e| {
        matches!(
            e,
            UeEvent::MskStored {
                acknowledged: true,
                ..
            }
        )
    })
    .await;
    let st = ue.status().unwrap();
    let UeEvent::Bootstrapped { btid, .. } = second else {
        unreachable!()
    };
    assert_eq!(st.btid.as_deref(), Some(btid.as_str()));
    assert_eq!(st.registrations[0].btid.as_deref(), Some(btid.as_str()));
    ue.shutdown(false).await.unwrap();
}
