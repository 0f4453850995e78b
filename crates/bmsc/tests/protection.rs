//! Seed 000 6.3.2.2.2 on the wire: a streaming session configured with each
//! confidentiality x integrity combination sends MTK messages whose SP
//! payload announces it, and SRTP/SRTCP packets that are exactly that (the
//! payload in clear without a cipher, no tag without authentication); a
//! receiver built from the MTK message alone recovers the plaintext. Bad
//! combinations are refused when the configuration is loaded.

mod support;

use std::time::Duration;

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

fn rtcp(ssrc: u32, i: u8) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[i; 20]);
    p
}

async fn wire(encryption: &str, auth: &str, expected: srtp::Suite) {
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
mtk_interval = 3600
mtk_repeat = 1
srtp_encryption = "{encryption}"
srtp_auth = "{auth}"
"#,
        srtp_rx.local_addr().unwrap(),
        mtk_rx.local_addr().unwrap()
    );
    let env = Env::new(&extra).await;
    let mut ue = env.ue(1).await;
    ue.register(&[NEWS]).await;
    env.wait_acknowledged(&mut ue).await;

    // The MTK message (a repetition once the UE holds the MSK).
    let mut buf = vec![0u8; 4096];
    let o = loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), mtk_rx.recv_from(&mut buf))
            .await
            .expect("an MTK message")
            .unwrap();
        if let Ok(o) = ue.mgvf.process_mtk_message(&buf[..n]) {
            break o;
        }
    };
    let policy = &o.streaming.as_ref().expect("streaming").policy;
    let cfg = mbms::traffic::srtp_config(policy).unwrap();
    assert_eq!(cfg.suite, expected, "{encryption} / {auth}: {policy:?}");
    let (k, s) = o.mtk.srtp_master();
    let mki = srtp::Mki::mbms(
        u32::from_be_bytes(o.msk.msk_id.to_bytes()),
        o.mtk_id.value(),
    );
    let mut rx = srtp::Receiver::new(cfg.clone()).unwrap();
    rx.add_key(&srtp::MasterKey::with_mki(*k, *s, mki)).unwrap();

    let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let enc = expected.cipher == srtp::Cipher::AesCm128;
    for i in 0..5u16 {
        let plain = rtp(
            100 + i,
            0x0bad_cafe,
            format!("packet number {i}").as_bytes(),
        );
        tx.send_to(&plain, ("127.0.0.1", rtp_port)).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), srtp_rx.recv_from(&mut buf))
            .await
            .expect("SRTP")
            .unwrap();
        let mut p = buf[..n].to_vec();
        assert_eq!(p.len(), plain.len() + 6 + expected.rtp_tag_len());
        assert_eq!(
            p[..plain.len()] == plain[..],
            !enc,
            "payload in clear iff no cipher"
        );
        assert_eq!(&p[plain.len()..plain.len() + 6], mki.as_bytes());
        let u = rx.unprotect_rtp_vec(&mut p).unwrap();
        assert_eq!(p, plain);
        assert_eq!(u.authenticated, expected.auth == srtp::Auth::HmacSha1);

        let plain = rtcp(0x0bad_cafe, i as u8);
        tx.send_to(&plain, ("127.0.0.1", rtp_port)).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), srtp_rx.recv_from(&mut buf))
            .await
            .expect("SRTCP")
            .unwrap();
        let mut p = buf[..n].to_vec();
        assert_eq!(p.len(), plain.len() + 4 + 6 + expected.rtcp_tag_len());
        assert_eq!(p[plain.len()] & 0x80 != 0, enc, "E bit");
        let u = rx.unprotect_rtcp_vec(&mut p).unwrap();
        assert_eq!(p, plain);
        assert_eq!(u.index, u32::from(i));
    }
}

#[tokio::test]
async fn aes_cm_with_hmac_sha1() {
    wire(
        "aes-cm-128",
        "hmac-sha1-80",
        srtp::Suite::AES_CM_128_HMAC_SHA1_80,
    )
    .await;
}

#[tokio::test]
async fn null_cipher_with_hmac_sha1() {
    wire("null", "hmac-sha1-80", srtp::Suite::NULL_HMAC_SHA1_80).await;
}

#[tokio::test]
async fn aes_cm_with_null_auth() {
    wire("aes-cm-128", "null", srtp::Suite::AES_CM_128_NULL_AUTH).await;
}

#[tokio::test]
async fn null_cipher_with_null_auth() {
    wire("null", "null", srtp::Suite::NULL_CIPHER_NULL_AUTH).await;
}

#[test]
fn impossible_combinations_are_refused_at_load() {
    let load = |lines: &str| {
        bmsc::BmscConfig::parse(&config_text(
            "http://127.0.0.1:1",
            "bmsc.db",
            &format!(
                r#"
[[session]]
name = "live"
kind = "streaming"
key_group = 1
rtp_listen = "127.0.0.1:1"
srtp_destinations = ["127.0.0.1:2"]
mtk_destinations = ["127.0.0.1:3"]
{lines}
"#
            ),
        ))
    };
    assert!(load("srtp_encryption = \"null\"\nsrtp_auth = \"null\"").is_ok());
    for (lines, want) in [
        (
            "srtp_auth = \"hmac-sha1-168\"",
            "HMAC-SHA-1 gives at most 20",
        ),
        (
            "srtp_encryption = \"null\"\nsrtcp_encryption = true",
            "needs a cipher",
        ),
        (
            "srtp_suite = \"AES_CM_128_HMAC_SHA1_32\"\nsrtp_auth = \"null\"",
            "both given",
        ),
        ("srtp_encryption = \"aes-f8\"", "srtp_encryption"),
    ] {
        match load(lines) {
            Err(e @ bmsc::config::ConfigError::Protection { .. }) => {
                let chain = format!("{e}");
                assert!(chain.contains("session live"), "{chain}");
                assert!(chain.contains(want), "{lines}: {chain}");
            }
            other => panic!("{lines}: {other:?}"),
        }
    }
}
