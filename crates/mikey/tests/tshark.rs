//! Interoperability: Wireshark's MIKEY dissector (tshark) decodes the
//! messages this crate builds, with no malformed-packet errors. Skips, and
//! says so, where tshark is not installed (`.ci/run` installs it).

use std::process::Command;

use mikey::*;

fn pcap(messages: &[Vec<u8>]) -> Vec<u8> {
    // pcap global header: LINKTYPE_RAW (101), IPv4 packets.
    let mut f = Vec::new();
    for v in [
        0xa1b2_c3d4u32.to_le_bytes().to_vec(),
        2u16.to_le_bytes().to_vec(),
        4u16.to_le_bytes().to_vec(),
    ] {
        f.extend(v);
    }
    f.extend(0i32.to_le_bytes());
    f.extend(0u32.to_le_bytes());
    f.extend(65535u32.to_le_bytes());
    f.extend(101u32.to_le_bytes());
    for (i, m) in messages.iter().enumerate() {
        let udp_len = 8 + m.len();
        let total = 20 + udp_len;
        let mut ip = vec![0x45, 0];
        ip.extend((total as u16).to_be_bytes());
        ip.extend((i as u16).to_be_bytes());
        ip.extend([0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 2]);
        let mut sum: u32 = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        ip.extend(MIKEY_PORT.to_be_bytes());
        ip.extend(MIKEY_PORT.to_be_bytes());
        ip.extend((udp_len as u16).to_be_bytes());
        ip.extend([0, 0]);
        ip.extend(m);
        f.extend((i as u32).to_le_bytes());
        f.extend(0u32.to_le_bytes());
        f.extend((ip.len() as u32).to_le_bytes());
        f.extend((ip.len() as u32).to_le_bytes());
        f.extend(ip);
    }
    f
}

fn messages() -> Vec<Vec<u8>> {
    let muk = [7u8; 32];
    let msk = [9u8; 16];
    let interval = KeyValidity::Interval {
        from: vec![0, 0].into(),
        to: vec![0, 0xff].into(),
    };
    let msk_msg = MessageBuilder::new(DataType::PSK_INIT)
        .verification_requested(true)
        .timestamp(Timestamp::Counter(5))
        .rand([1u8; 16])
        .id(IdType::URI, "bmsc.home1.net")
        .id(IdType::NAI, "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net")
        .key_id(KeyIdType::MSK, [0, 0xf1, 0x10, 0, 1, 0, 1])
        .protect(
            &muk,
            EncrAlg::AES_CM_128,
            &[KeyData {
                kind: KeyKind::Tgk,
                key: SecretBytes::new(msk.to_vec()),
                salt: None,
                validity: interval,
            }],
        )
        .unwrap();
    let opened = open_psk(msk_msg.bytes(), &muk).unwrap();
    let ack = MessageBuilder::new(DataType::PSK_RESP)
        .timestamp(Timestamp::Counter(5))
        .id(IdType::NAI, "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net")
        .key_id(KeyIdType::MSK, [0, 0xf1, 0x10, 0, 1, 0, 1])
        .sign_verification(&opened.keys.auth_key, &InitiatorFields::of(&opened.message))
        .unwrap();
    let policy = SrtpPolicy {
        encr_alg: Some(SrtpEncrAlg::AES_CM),
        auth_alg: Some(SrtpAuthAlg::HMAC_SHA1),
        auth_tag_len: Some(10),
        key_derivation_rate: Some(0),
        ..Default::default()
    };
    let mtk = MessageBuilder::new(DataType::PSK_INIT)
        .cs_id_map(CsIdMap::SrtpId(vec![SrtpIdEntry {
            policy_no: 0,
            ssrc: 0x1234_5678,
            roc: 0,
        }]))
        .timestamp(Timestamp::Counter(1))
        .rand([2u8; 16])
        .key_id(KeyIdType::MSK, [0, 0xf1, 0x10, 0, 1, 0, 1])
        .key_id(KeyIdType::MTK, [0, 1])
        .security_policy(policy.to_payload(0))
        .protect(
            &msk,
            EncrAlg::AES_CM_128,
            &[KeyData {
                kind: KeyKind::Tek,
                key: SecretBytes::new(vec![3; 16]),
                salt: Some(SecretBytes::new(vec![4; 14])),
                validity: KeyValidity::SpiMki(vec![0, 1, 0, 1, 0, 1].into()),
            }],
        )
        .unwrap();
    vec![msk_msg.into_bytes(), ack.into_bytes(), mtk.into_bytes()]
}

#[test]
fn tshark_decodes_our_messages_without_errors() {
    let Ok(v) = Command::new("tshark").arg("--version").output() else {
        mbms_test_support::skip("tshark is not installed");
        return;
    };
    assert!(v.status.success());
    let dir = std::env::temp_dir().join(format!("mikey-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mikey.pcap");
    std::fs::write(&file, pcap(&messages())).unwrap();
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&file)
        .args(["-V", "-o", "udp.check_checksum:FALSE"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("Multimedia Internet KEYing").count(),
        3,
        "{text}"
    );
    for needle in [
        "Data Type: Pre-shared (0)",
        "Data Type: PSK ver msg (1)",
        "ID: bmsc.home1.net",
        "TS type: COUNTER (2)",
        "Encr alg: AES-CM-128 (1)",
        "Mac alg: HMAC-SHA-1-160 (1)",
        "CS ID map type: SRTP-ID (0)",
        "Security Policy (SP)",
    ] {
        assert!(
            text.contains(needle),
            "tshark output lacks {needle:?}:\n{text}"
        );
    }
    for bad in ["Malformed", "Expert Info (Error", "Expert Info (Warning"] {
        assert!(!text.contains(bad), "tshark reports {bad:?}:\n{text}");
    }
}
