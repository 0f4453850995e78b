//! Published vectors: RFC 3711 B.2 (AES-CM keystream), B.3 (key derivation,
//! with the SRTCP labels 3-5) and a whole SRTP packet from the libsrtp test
//! driver, loaded from `testvectors/external/srtp.json`.

use serde_json::Value;
use srtp::keys::{aes_cm_keystream, derive, Label};
use srtp::{Config, MasterKey, Receiver, Sender, Suite};

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testvectors/external/srtp.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("srtp.json")).unwrap()
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let v = &vectors()["aes_cm_keystream"];
    let key: [u8; 16] = h(&v["key"]).try_into().unwrap();
    let iv: [u8; 16] = h(&v["iv"]).try_into().unwrap();
    let want = h(&v["keystream"]);
    let mut got = vec![0u8; want.len()];
    aes_cm_keystream(&key, &iv, &mut got);
    assert_eq!(hex::encode(got), hex::encode(want));
}

#[test]
fn rfc3711_b3_key_derivation_with_srtcp_labels() {
    let v = &vectors()["key_derivation"];
    assert_eq!(v["kdr"], 0);
    assert_eq!(v["index"], 0);
    let mk: [u8; 16] = h(&v["master_key"]).try_into().unwrap();
    let ms: [u8; 14] = h(&v["master_salt"]).try_into().unwrap();
    for (label, field) in [
        (Label::RtpEncryption, "srtp_cipher_key"),
        (Label::RtpAuthentication, "srtp_auth_key"),
        (Label::RtpSalt, "srtp_cipher_salt"),
        (Label::RtcpEncryption, "srtcp_cipher_key"),
        (Label::RtcpAuthentication, "srtcp_auth_key"),
        (Label::RtcpSalt, "srtcp_cipher_salt"),
    ] {
        let want = h(&v[field]);
        let mut got = vec![0u8; want.len()];
        derive(&mk, &ms, label, &mut got);
        assert_eq!(hex::encode(got), hex::encode(want), "{field}");
    }
}

#[test]
fn libsrtp_whole_packet() {
    let v = &vectors()["packet"];
    assert_eq!(v["suite"], "AES_CM_128_HMAC_SHA1_80");
    assert_eq!(v["roc"], 0);
    assert!(v["mki"].is_null());
    let key = MasterKey::from_slices(&h(&v["master_key"]), &h(&v["master_salt"]), &[]).unwrap();
    let rtp = h(&v["rtp"]);
    let want = h(&v["srtp"]);
    let cfg = Config {
        suite: Suite::AES_CM_128_HMAC_SHA1_80,
        ..Config::default()
    };
    let mut tx = Sender::new(cfg.clone()).unwrap();
    tx.add_key(&key).unwrap();
    let mut pkt = rtp.clone();
    tx.protect_rtp_vec(&mut pkt).unwrap();
    assert_eq!(hex::encode(&pkt), hex::encode(&want));

    let mut rx = Receiver::new(cfg).unwrap();
    rx.add_key(&key).unwrap();
    let got = rx.unprotect_rtp_vec(&mut pkt).unwrap();
    assert_eq!(pkt, rtp);
    assert_eq!(
        (got.seq, got.roc, got.index, got.ssrc),
        (0x1234, 0, 0x1234, 0xcafebabe)
    );
    assert!(got.authenticated);
}
