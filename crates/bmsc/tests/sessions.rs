//! Delivery sessions: streaming (MTK messages, RTP in, SRTP out with
//! MKI = MSK ID || MTK ID, MTK switches without a gap, the switch to the
//! next MSK at rotation) and download (protected objects and their `.mikey`
//! MTK messages, from a watched folder and from the admin API). The UE side
//! is the MGV-F and the `srtp` crate.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mbms::mgvf::MtkOutcome;
use support::*;
use tokio::net::UdpSocket;

fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn master_key(o: &MtkOutcome) -> srtp::MasterKey {
    let (k, s) = o.mtk.srtp_master();
    srtp::MasterKey::with_mki(
        *k,
        *s,
        srtp::Mki::mbms(
            u32::from_be_bytes(o.msk.msk_id.to_bytes()),
            o.mtk_id.value(),
        ),
    )
}

#[tokio::test]
async fn streaming_session_protects_rtp_and_switches_keys_without_a_gap() {
    let mtk_rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let srtp_rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtp_port = free_udp_port();
    let extra = format!(
        r#"
[[session]]
name = "live"
kind = "streaming"
key_group = 1
rtp_listen = "127.0.0.1:{rtp_port}"
srtp_destinations = ["{}"]
mtk_destinations = ["{}"]
mtk_interval = 1
mtk_repeat = 1
switch_delay_ms = 250
"#,
        srtp_rx.local_addr().unwrap(),
        mtk_rx.local_addr().unwrap()
    );
    let env = Env::new(&extra).await;
    let mut ue = env.ue(1).await;
    ue.register(&[NEWS]).await;
    env.wait_acknowledged(&mut ue).await;
    let (first_msk, _) = env.key_group(1).await;

    let mut rx = srtp::Receiver::new(srtp::Config::mbms()).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ssrc = 0x1234_5678;
    let mut seq: u16 = 65_480; // wraps: the ROC moves to 1
    let mut sent = 0u32;
    let mut ok = 0u32;
    let mut mkis = BTreeSet::new();
    let mut mtks = 0;
    let mut rotated = false;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut mbuf = vec![0u8; 4096];
    let mut sbuf = vec![0u8; 4096];
    while start.elapsed() < Duration::from_secs(5) {
        tokio::select! {
            _ = tick.tick() => {
                // Send RTP only once the UE holds an MTK (a receiver
                // joining later is the repetition's job).
                if mtks > 0 {
                    let p = rtp(seq, ssrc, format!("packet {sent}").as_bytes());
                    tx.send_to(&p, ("127.0.0.1", rtp_port)).await.unwrap();
                    seq = seq.wrapping_add(1);
                    sent += 1;
                }
                if !rotated && start.elapsed() > Duration::from_millis(2500) {
                    let (s, _) = env.admin_post("/admin/v1/key-groups/1/rotate", serde_json::json!({})).await;
                    assert_eq!(s, 200);
                    rotated = true;
                }
                ue.pump(Duration::from_millis(1)).await;
            }
            r = mtk_rx.recv_from(&mut mbuf) => {
                let (n, _) = r.unwrap();
                // Repetitions of an MTK message already taken are replays.
                if let Ok(o) = ue.mgvf.process_mtk_message(&mbuf[..n]) {
                    assert_eq!(o.streams()[0].policy_no, 0);
                    rx.add_key(&master_key(&o)).unwrap();
                    mtks += 1;
                }
            }
            r = srtp_rx.recv_from(&mut sbuf) => {
                let (n, _) = r.unwrap();
                let mut p = sbuf[..n].to_vec();
                let u = rx.unprotect_rtp_vec(&mut p).expect("every packet decrypts: no gap");
                mkis.insert(u.mki.mbms_parts().unwrap());
                let body = String::from_utf8(p[12..].to_vec()).unwrap();
                assert!(body.starts_with("packet "), "{body}");
                ok += 1;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok((n, _)) = srtp_rx.try_recv_from(&mut sbuf) {
        let mut p = sbuf[..n].to_vec();
        rx.unprotect_rtp_vec(&mut p).expect("decrypts");
        ok += 1;
    }
    assert!(sent > 100, "{sent}");
    assert_eq!(ok, sent, "every RTP packet arrived protected and decrypted");
    let msk_ids: BTreeSet<u32> = mkis.iter().map(|(m, _)| *m).collect();
    let mtk_ids: BTreeSet<u16> = mkis.iter().map(|(_, t)| *t).collect();
    assert!(mtk_ids.len() >= 3, "MTKs switched: {mkis:?}");
    assert_eq!(
        msk_ids.len(),
        2,
        "the rotation moved to the next MSK: {mkis:?}"
    );
    assert!(msk_ids.contains(&u32::from_str_radix(&first_msk, 16).unwrap()));
    assert_eq!(rx.roc(ssrc), Some(1));
    let (_, v) = env.admin_get("/admin/v1/sessions").await;
    assert_eq!(v[0]["name"], "live");
    assert!(v[0]["mtks_issued"].as_u64().unwrap() >= 3);
    assert!(env.metric("bmsc_srtp_packets_sent_total", "live") >= f64::from(sent));
    assert!(env.metric("bmsc_mtk_messages_sent_total", "live") >= 3.0);
}

fn open_object(ue: &mut TestUe, object: &std::path::Path) -> Vec<u8> {
    let mikey = std::fs::read(format!("{}.mikey", object.display())).unwrap();
    let o = ue.mgvf.process_mtk_message(&mikey).unwrap();
    let k = o.mtk.download_keys(o.csb_id, &o.rand);
    let keys = srtp::download::DownloadKeys::new(*k.encr.as_bytes(), *k.auth.as_bytes());
    let out = object.with_extension("plain");
    let h = srtp::download::unprotect_file(&keys, object, &out).unwrap();
    assert_eq!(h.mtk_id, o.mtk_id.value());
    std::fs::read(out).unwrap()
}

#[tokio::test]
async fn download_session_protects_dropped_and_posted_files() {
    let extra = r#"
[[session]]
name = "files"
kind = "download"
key_group = 1
watch_dir = "{DIR}/in"
out_dir = "{DIR}/out"
scan_interval = 1
"#;
    let env = Env::new(extra).await;
    let mut ue = env.ue(1).await;
    ue.register(&[NEWS]).await;
    env.wait_acknowledged(&mut ue).await;
    // A file dropped in the folder.
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(env.path("in/report.bin.tmp"), &content).unwrap();
    std::fs::rename(env.path("in/report.bin.tmp"), env.path("in/report.bin")).unwrap();
    let object = env.path("out/report.bin");
    for _ in 0..60 {
        if object.exists() && !env.path("in/report.bin").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(object.exists(), "protected object written");
    assert!(!env.path("in/report.bin").exists(), "source removed");
    assert_eq!(open_object(&mut ue, &object), content);
    // Posted to the admin API.
    let r = env
        .http
        .post(format!(
            "{}/admin/v1/sessions/files/objects?name=clip.bin",
            env.url()
        ))
        .bearer_auth(ADMIN)
        .body(b"hello download".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["msk_id"], "00010001");
    assert_eq!(
        open_object(&mut ue, &env.path("out/clip.bin")),
        b"hello download"
    );
    for (path, want) in [
        ("/admin/v1/sessions/files/objects?name=../x", 400),
        ("/admin/v1/sessions/nope/objects?name=x", 404),
    ] {
        let r = env
            .http
            .post(format!("{}{path}", env.url()))
            .bearer_auth(ADMIN)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{path}");
    }
    let (_, v) = env.admin_get("/admin/v1/sessions").await;
    assert_eq!(v[0]["objects"], 2);
}

/// After a rotation, with no RTP flowing, the new MSK's first MTK message
/// is sent at the rotation (not at `mtk_interval`, 60 s here) and the
/// retired MSK's MTK message is no longer repeated: a UE that registers
/// after the rotation (it holds only the new current and next MSKs) can use
/// every MTK message it receives from then on.
#[tokio::test]
async fn after_a_rotation_no_mtk_message_under_the_retired_msk_is_repeated() {
    let mtk_rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let extra = format!(
        r#"
[[session]]
name = "live"
kind = "streaming"
key_group = 1
rtp_listen = "127.0.0.1:0"
srtp_destinations = ["127.0.0.1:9"]
mtk_destinations = ["{}"]
mtk_interval = 60
mtk_repeat = 1
switch_delay_ms = 200
"#,
        mtk_rx.local_addr().unwrap()
    );
    let env = Env::new(&extra).await;
    let (old, _) = env.key_group(1).await;
    let old = msk_of(&old);
    let mut buf = vec![0u8; 4096];
    // MTK messages as (when, MSK).
    async fn collect(
        rx: &UdpSocket,
        buf: &mut [u8],
        dur: Duration,
    ) -> Vec<(Instant, mbms::MskName)> {
        let mut out = vec![];
        let end = tokio::time::Instant::now() + dur;
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(end, rx.recv_from(buf)).await {
            let env = mbms::messages::MtkEnvelope::parse(&buf[..n]).unwrap();
            out.push((Instant::now(), env.msk));
        }
        out
    }
    let before = collect(&mtk_rx, &mut buf, Duration::from_millis(2500)).await;
    assert!(
        before.len() >= 2 && before.iter().all(|m| m.1 == old),
        "sent and repeated: {before:?}"
    );

    let (s, _) = env
        .admin_post("/admin/v1/key-groups/1/rotate", serde_json::json!({}))
        .await;
    assert_eq!(s, 200);
    let (new, _) = env.key_group(1).await;
    let new = msk_of(&new);
    assert_ne!(new, old);
    let after = collect(&mtk_rx, &mut buf, Duration::from_millis(4000)).await;
    let first_new = after
        .iter()
        .position(|m| m.1 == new)
        .expect("the new MSK's MTK message is issued at the rotation");
    let late_old: Vec<_> = after[first_new..].iter().filter(|m| m.1 != new).collect();
    assert!(
        late_old.is_empty(),
        "MTK messages under the retired MSK after the new one: {late_old:?}"
    );
    assert!(
        after[first_new..].len() >= 2,
        "the new MTK message is repeated: {after:?}"
    );

    // A UE that joins now holds the new current and next MSK only; every
    // MTK message it receives opens.
    let mut ue = env.ue(1).await;
    ue.register(&[NEWS]).await;
    env.wait_acknowledged(&mut ue).await;
    assert!(!ue.msk_names(1).contains(&old));
    let held = ue.msk_names(1);
    let mut opened = 0;
    let mut received = 0;
    let end = tokio::time::Instant::now() + Duration::from_millis(3500);
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(end, mtk_rx.recv_from(&mut buf)).await {
        received += 1;
        let msk = mbms::messages::MtkEnvelope::parse(&buf[..n]).unwrap().msk;
        assert!(
            held.contains(&msk),
            "an MTK message under {msk}, an MSK the UE does not hold"
        );
        // Repeats of the MTK already taken are refused (not new).
        if ue.mgvf.process_mtk_message(&buf[..n]).is_ok() {
            opened += 1;
        }
    }
    assert!(received >= 2, "repeated: {received}");
    assert_eq!(opened, 1, "the new MTK, taken once");
}

/// A download session repeats the MTK messages of its recent objects only
/// while their MSK is the current one.
#[tokio::test]
async fn a_download_session_stops_repeating_mtk_messages_of_a_retired_msk() {
    let mtk_rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let extra = format!(
        r#"
[[session]]
name = "files"
kind = "download"
key_group = 1
watch_dir = "{{DIR}}/in"
out_dir = "{{DIR}}/out"
scan_interval = 1
mtk_destinations = ["{}"]
mtk_repeat = 1
"#,
        mtk_rx.local_addr().unwrap()
    );
    let env = Env::new(&extra).await;
    let (old, _) = env.key_group(1).await;
    let old = msk_of(&old);
    std::fs::create_dir_all(env.path("in")).unwrap();
    std::fs::write(env.path("in/a.bin"), b"object under the first MSK").unwrap();
    let mut buf = vec![0u8; 4096];
    let mut seen = 0;
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen < 2 {
        let (n, _) = tokio::time::timeout_at(end, mtk_rx.recv_from(&mut buf))
            .await
            .expect("the object's MTK message is sent and repeated")
            .unwrap();
        let msk = mbms::messages::MtkEnvelope::parse(&buf[..n]).unwrap().msk;
        assert_eq!(msk, old);
        seen += 1;
    }
    let (s, _) = env
        .admin_post("/admin/v1/key-groups/1/rotate", serde_json::json!({}))
        .await;
    assert_eq!(s, 200);
    // At most one repeat already under way; then nothing under the old MSK.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    while mtk_rx.try_recv_from(&mut buf).is_ok() {}
    let r = tokio::time::timeout(Duration::from_millis(2500), mtk_rx.recv_from(&mut buf)).await;
    assert!(
        r.is_err(),
        "an MTK message under the retired MSK was repeated"
    );
}
