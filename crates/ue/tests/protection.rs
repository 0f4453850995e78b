//! Seed 000 6.3.2.2.2: confidentiality and integrity are announced
//! independently. For each of the four combinations, end to end over
//! loopback: the BM-SC's sessions are configured that way (NULL cipher /
//! NULL authentication where off) -> its MTK messages carry that SRTP
//! policy and its download objects that header -> the UE builds the
//! matching SRTP context -> the RTP and RTCP it forwards, and the files it
//! writes, are exactly what was sent. And an MTK message or an object
//! giving less than the service announces is refused.

mod support;

use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::broadcast;

use support::*;
use ue::{PlainPacket, UeEvent};

const SSRC: u32 = 0x5eed_0001;

/// An RTCP sender report of `SSRC` whose body names `i`.
fn rtcp(i: u8) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend_from_slice(&[i; 20]);
    p
}

async fn wait_mtk(ev: &mut broadcast::Receiver<UeEvent>) {
    wait_event(ev, 20, "an MTK", |e| {
        matches!(e, UeEvent::MtkAccepted { .. })
    })
    .await;
}

/// Streaming and download with `confidentiality` and `integrity`.
async fn end_to_end(confidentiality: bool, integrity: bool) {
    let label = format!("confidentiality {confidentiality}, integrity {integrity}");
    let env = Env::with_protection(confidentiality, integrity).await;
    let (ue, mut ev) = start_ue(env.ue_config("ue", &[NEWS], None)).await;
    let mut plain = ue.plain_packets();
    wait_mtk(&mut ev).await;

    // The UE follows the SP payload of the MTK message.
    let expected_suite = match (confidentiality, integrity) {
        (true, true) => "AES_CM_128_HMAC_SHA1_80",
        (false, true) => "NULL_HMAC_SHA1_80",
        (true, false) => "AES_CM_128_NULL_AUTH",
        (false, false) => "NULL_CIPHER_NULL_AUTH",
    };
    wait_until(10, "the SRTP context follows the policy", || {
        ue.status().unwrap().runtime.unwrap().sessions[0]
            .srtp
            .as_deref()
            == Some(expected_suite)
    })
    .await;

    // RTP and multiplexed RTCP into the BM-SC, plain out of the UE.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut sent_rtp = Vec::new();
    let mut sent_rtcp = Vec::new();
    for seq in 0..40u16 {
        let p = rtp(SSRC, seq, 100);
        sock.send_to(&p, ("127.0.0.1", env.ports.rtp_in))
            .await
            .unwrap();
        sent_rtp.push(p);
        if seq % 10 == 5 {
            let c = rtcp(seq as u8);
            sock.send_to(&c, ("127.0.0.1", env.ports.rtp_in))
                .await
                .unwrap();
            sent_rtcp.push(c);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (mut got_rtp, mut got_rtcp) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while got_rtp.len() < sent_rtp.len() || got_rtcp.len() < sent_rtcp.len() {
        match tokio::time::timeout_at(deadline, plain.recv()).await {
            Ok(Ok(PlainPacket {
                rtcp: true, bytes, ..
            })) => got_rtcp.push(bytes),
            Ok(Ok(PlainPacket { bytes, .. })) => got_rtp.push(bytes),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => panic!("{label}: lagged"),
            Ok(Err(e)) => panic!("{label}: {e}"),
            Err(_) => panic!(
                "{label}: {} of {} RTP, {} of {} RTCP; status {:#?}",
                got_rtp.len(),
                sent_rtp.len(),
                got_rtcp.len(),
                sent_rtcp.len(),
                ue.status().unwrap().runtime.unwrap().sessions[0]
            ),
        }
    }
    assert_eq!(got_rtp, sent_rtp, "{label}: RTP byte-exact");
    assert_eq!(got_rtcp, sent_rtcp, "{label}: RTCP byte-exact");
    let st = ue.status().unwrap().runtime.unwrap();
    assert_eq!(st.sessions[0].refused, 0, "{label}");

    // Download: the object's header says which protections apply.
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 13 + i / 97) as u8).collect();
    std::fs::create_dir_all(env.path("bmsc-watch")).unwrap();
    std::fs::write(env.path("bmsc-watch/doc.bin"), &data).unwrap();
    let object = env.path("bmsc-out/doc.bin");
    let mikey = env.path("bmsc-out/doc.bin.mikey");
    wait_until(15, "the BM-SC protects the file", || {
        object.exists() && mikey.exists()
    })
    .await;
    let protected = std::fs::read(&object).unwrap();
    let (h, hlen) = srtp::download::ObjectHeader::parse(&protected).unwrap();
    assert_eq!(
        h.protection,
        srtp::download::Protection {
            encryption: confidentiality,
            authentication: integrity
        },
        "{label}"
    );
    assert_eq!(
        protected[hlen..].starts_with(&data[..64]),
        !confidentiality,
        "{label}: the file is in clear exactly without confidentiality"
    );
    std::fs::copy(&mikey, env.path("ue/in/doc.bin.mikey")).unwrap();
    std::fs::write(env.path("ue/in/doc.bin"), &protected).unwrap();
    wait_event(
        &mut ev,
        15,
        "the decryption",
        |e| matches!(e, UeEvent::DownloadDecrypted { file, .. } if file.ends_with("doc.bin")),
    )
    .await;
    assert_eq!(
        std::fs::read(env.path("ue/out/doc.bin")).unwrap(),
        data,
        "{label}"
    );
    ue.shutdown(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_and_authentication() {
    end_to_end(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_cipher_with_authentication() {
    end_to_end(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_with_null_authentication() {
    end_to_end(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_cipher_and_null_authentication() {
    end_to_end(false, false).await;
}

/// The BM-SC protects with the NULL cipher, the service announces
/// confidentiality: the UE refuses the MTK messages (nothing held, no
/// context switched to NULL) and the download objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn less_than_announced_is_refused() {
    let mut env = Env::with_protection(false, true).await;
    env.protection = Some((true, true));
    let (ue, mut ev) = start_ue(env.ue_config("ue", &[NEWS], None)).await;
    wait_event(&mut ev, 20, "an MSK", |e| {
        matches!(e, UeEvent::MskStored { .. })
    })
    .await;
    wait_until(15, "an MTK message refused", || {
        ue.status()
            .unwrap()
            .runtime
            .unwrap()
            .last_errors
            .iter()
            .any(|e| e.what.contains("lacks the confidentiality"))
    })
    .await;
    let st = ue.status().unwrap().runtime.unwrap();
    assert!(st.mtks.is_empty(), "{:?}", st.mtks);
    assert_eq!(
        st.sessions[0].srtp.as_deref(),
        Some("AES_CM_128_HMAC_SHA1_80")
    );

    std::fs::create_dir_all(env.path("bmsc-watch")).unwrap();
    std::fs::write(env.path("bmsc-watch/doc.bin"), b"in clear").unwrap();
    let object = env.path("bmsc-out/doc.bin");
    let mikey = env.path("bmsc-out/doc.bin.mikey");
    wait_until(15, "the BM-SC protects the file", || {
        object.exists() && mikey.exists()
    })
    .await;
    std::fs::copy(&mikey, env.path("ue/in/doc.bin.mikey")).unwrap();
    std::fs::copy(&object, env.path("ue/in/doc.bin")).unwrap();
    let e = wait_event(&mut ev, 15, "the refusal", |e| {
        matches!(e, UeEvent::DownloadRefused { .. })
    })
    .await;
    let UeEvent::DownloadRefused { reason, .. } = e else {
        unreachable!()
    };
    assert!(reason.contains("is required"), "{reason}");
    assert!(!env.path("ue/out/doc.bin").exists());
    ue.shutdown(false).await.unwrap();
}

/// The ME's MTK cache keeps the whole SP payload: after a restart, with no
/// new MTK message (repetitions of a cached one are skipped), the context
/// still uses the NULL cipher and the stream decrypts. (The cache used to
/// keep only the tag length, RFC 4771 mode, rate and SRTCP flag: the
/// restarted UE fell back to AES-CM.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_survives_a_restart() {
    let env = Env::with_protection(false, true).await;
    let cfg = env.ue_config("ue", &[NEWS], None);
    let (ue, mut ev) = start_ue(cfg.clone()).await;
    wait_mtk(&mut ev).await;
    ue.shutdown(false).await.unwrap();

    let (ue, _ev) = start_ue(cfg).await;
    let mut plain = ue.plain_packets();
    wait_until(10, "the cached policy is in force", || {
        ue.status().unwrap().runtime.unwrap().sessions[0]
            .srtp
            .as_deref()
            == Some("NULL_HMAC_SHA1_80")
    })
    .await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let p = rtp(SSRC, 7, 50);
    sock.send_to(&p, ("127.0.0.1", env.ports.rtp_in))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), plain.recv())
        .await
        .expect("a plain packet")
        .unwrap();
    assert_eq!(got.bytes, p);
    ue.shutdown(false).await.unwrap();
}
