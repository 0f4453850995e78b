//! Writes the seed corpora under `seeds/<target>/` from valid messages.
//!
//! ```text
//! cargo +nightly run --example gen_seeds
//! ```
//!
//! The messages are protected with the fixed key of the `open_psk` target,
//! so that its seeds get past the MAC check.

use std::borrow::Cow;
use std::fs;
use std::path::Path;

use mikey::crypto::InitiatorFields;
use mikey::*;
use srtp::{Config, MasterKey, Rcc, RccMode, Receiver, Sender, Suite};

const PSK: [u8; 32] = [0x42; 32];
const BTID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net";
const MSK_KEY_ID: [u8; 7] = [0x00, 0xf1, 0x10, 0x00, 0x00, 0x00, 0x01];

fn msk_key(vf: u16, vt: u16) -> KeyData {
    KeyData {
        kind: KeyKind::Tgk,
        key: SecretBytes::new(vec![0x11; 16]),
        salt: None,
        validity: KeyValidity::Interval {
            from: vf.to_be_bytes().to_vec().into(),
            to: vt.to_be_bytes().to_vec().into(),
        },
    }
}

fn mtk_key() -> KeyData {
    KeyData {
        kind: KeyKind::Tek,
        key: SecretBytes::new(vec![0x22; 16]),
        salt: Some(SecretBytes::new(vec![0x33; 14])),
        validity: KeyValidity::SpiMki(vec![0, 0, 0, 1, 0, 2].into()),
    }
}

fn msk_delivery(v: bool, alg: EncrAlg, keys: &[KeyData]) -> Protected {
    MessageBuilder::new(DataType::PSK_INIT)
        .verification_requested(v)
        .timestamp(Timestamp::Counter(1))
        .rand([7u8; 16])
        .id(IdType::URI, "bmsc.home1.net")
        .id(IdType::NAI, BTID)
        .key_id(KeyIdType::MSK, MSK_KEY_ID)
        .protect(&PSK, alg, keys)
        .expect("protect")
}

fn mtk_delivery() -> Protected {
    let policy = SrtpPolicy {
        encr_alg: Some(SrtpEncrAlg::AES_CM),
        auth_alg: Some(SrtpAuthAlg::RCCM3),
        roc_transmission_rate: Some(1),
        ..SrtpPolicy::default()
    };
    MessageBuilder::new(DataType::PSK_INIT)
        .cs_id_map(CsIdMap::SrtpId(vec![
            SrtpIdEntry {
                policy_no: 0,
                ssrc: 0x1234_5678,
                roc: 0,
            },
            SrtpIdEntry {
                policy_no: 0,
                ssrc: 0x9abc_def0,
                roc: 1,
            },
        ]))
        .timestamp(Timestamp::Counter(9))
        .rand([8u8; 16])
        .key_id(KeyIdType::MSK, MSK_KEY_ID)
        .key_id(KeyIdType::MTK, [0, 2])
        .security_policy(policy.to_payload(0))
        .protect(&PSK, EncrAlg::AES_CM_128, &[mtk_key()])
        .expect("protect")
}

fn acknowledgement(of: &Protected) -> Protected {
    let opened = open_psk(of.bytes(), &PSK).expect("open");
    MessageBuilder::new(DataType::PSK_RESP)
        .timestamp(Timestamp::Counter(1))
        .id(IdType::NAI, BTID)
        .key_id(KeyIdType::MSK, MSK_KEY_ID)
        .sign_verification(&opened.keys.auth_key, &InitiatorFields::of(&opened.message))
        .expect("sign")
}

/// Every other payload type once, SIGN last.
fn all_payloads() -> Vec<u8> {
    let o = |v: &[u8]| Cow::Owned(v.to_vec());
    let payloads = vec![
        Payload::Timestamp(Timestamp::NtpUtc(0x0102_0304_0506_0708)),
        Payload::Timestamp(Timestamp::Ntp(1)),
        Payload::Pke(Pke {
            cache: 2,
            data: o(&[1, 2, 3]),
        }),
        Payload::Dh(Dh {
            group: DhGroup::Oakley1,
            value: o(&[5; 96]),
            reserved: 0,
            validity: KeyValidity::Null,
        }),
        Payload::Cert(Cert {
            cert_type: CertType::X509V3_URL,
            data: o(b"http://ca.example/c"),
        }),
        Payload::Chash(Chash {
            hash_func: HashFunc::Md5,
            hash: o(&[6; 16]),
        }),
        Payload::Verification(Verification {
            auth_alg: MacAlg::Null,
            mac: o(&[]),
        }),
        Payload::Error(ErrorPayload {
            code: ErrorCode::INVALID_TS,
            reserved: 0,
        }),
        Payload::GeneralExtension(GeneralExtension::VendorId(o(b"vendor"))),
        Payload::GeneralExtension(GeneralExtension::SdpIds(o(b"sdp"))),
        Payload::GeneralExtension(GeneralExtension::Unknown {
            ext_type: ExtType(200),
            data: o(&[9, 9]),
        }),
        Payload::Kemac(Kemac {
            encr_alg: EncrAlg::NULL,
            encr_data: o(&[]),
            mac_alg: MacAlg::Null,
            mac: o(&[]),
        }),
        Payload::Sign(Sign {
            s_type: 1,
            signature: o(&[0xaa; 8]),
        }),
    ];
    Message::new(CommonHeader::new(DataType::PK_INIT, 5), payloads)
        .expect("valid")
        .to_bytes()
}

fn key_data_list(list: &[KeyData]) -> Vec<u8> {
    let mut out = Vec::new();
    KeyData::emit_list(list, &mut out).expect("valid");
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(dir.join(name), bytes).expect("write");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    srtp_seeds(&root);
    let msk = msk_delivery(true, EncrAlg::AES_CM_128, &[msk_key(1, 100)]);
    let messages: Vec<(&str, Vec<u8>)> = vec![
        ("msk_delivery", msk.bytes().to_vec()),
        (
            "msk_inactive",
            msk_delivery(true, EncrAlg::AES_CM_128, &[msk_key(1, 0)]).into_bytes(),
        ),
        (
            "solicited_pull",
            msk_delivery(false, EncrAlg::AES_CM_128, &[]).into_bytes(),
        ),
        (
            "msk_delivery_null",
            msk_delivery(true, EncrAlg::NULL, &[msk_key(2, 3), mtk_key()]).into_bytes(),
        ),
        ("msk_ack", acknowledgement(&msk).into_bytes()),
        ("mtk_delivery", mtk_delivery().into_bytes()),
        ("all_payloads", all_payloads()),
    ];
    for (name, bytes) in &messages {
        Message::parse(bytes).expect("seed parses");
        write(&root.join("parse"), name, bytes);
        write(&root.join("open_psk"), name, bytes);
    }
    let lists: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("msk", key_data_list(&[msk_key(1, 100)])),
        ("mtk", key_data_list(&[mtk_key()])),
        (
            "three",
            key_data_list(&[
                msk_key(1, 2),
                mtk_key(),
                KeyData {
                    kind: KeyKind::Tek,
                    key: SecretBytes::new(vec![4; 16]),
                    salt: None,
                    validity: KeyValidity::Null,
                },
            ]),
        ),
    ];
    for (name, bytes) in &lists {
        KeyData::parse_list(bytes, 0).expect("seed parses");
        write(&root.join("key_data"), name, bytes);
    }
    println!(
        "wrote {} message and {} key data seeds under {}",
        messages.len(),
        lists.len(),
        root.display()
    );
}

/// The configuration byte of the `srtp_unprotect` target (same mapping).
fn srtp_config(sel: u8) -> Config {
    let mut c = Config {
        suite: if sel & 1 == 0 {
            Suite::AesCm128HmacSha1_80
        } else {
            Suite::AesCm128HmacSha1_32
        },
        mki_len: if sel & 2 == 0 { 0 } else { 6 },
        rcc: match (sel >> 2) & 3 {
            0 => None,
            m => Some(Rcc {
                mode: [RccMode::Rccm1, RccMode::Rccm2, RccMode::Rccm3][m as usize - 1],
                rate: (sel >> 4) as u16 + 1,
            }),
        },
        srtcp_encryption: sel & 4 == 0,
        ..Config::default()
    };
    if c.validate().is_err() {
        c.rcc = None;
    }
    c
}

fn rtp_packet(seq: u16, cc: u8, ext: bool, payload: usize) -> Vec<u8> {
    let mut p = vec![0x80 | cc | if ext { 0x10 } else { 0 }, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 1, 0, 0xca, 0xfe, 0xba, 0xbe]);
    p.extend((0..cc).flat_map(|i| [i; 4]));
    if ext {
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x12, 0x34, 0, 0]);
    }
    p.extend((0..payload).map(|i| i as u8));
    p
}

/// Seeds for `srtp_unprotect` / `srtcp_unprotect`: the configuration byte,
/// then length-prefixed packets protected with the targets' fixed key (so
/// they pass the tag check) mixed with plain ones.
fn srtp_seeds(root: &Path) {
    for sel in [0x00u8, 0x01, 0x02, 0x03, 0x06, 0x0a, 0x0e, 0x36, 0x4a] {
        let cfg = srtp_config(sel);
        let mki = [0u8, 1, 0, 2, 0, 3];
        let key = MasterKey::from_slices(&[0x42; 16], &[0x24; 14], &mki[..cfg.mki_len]).unwrap();
        let mut tx = Sender::new(cfg.clone()).unwrap();
        tx.add_key(&key).unwrap();
        let mut rx = Receiver::new(cfg.clone()).unwrap();
        rx.add_key(&key).unwrap();
        rx.set_roc(0xcafe_babe, 0).unwrap();
        let mut rtp_seed = vec![sel];
        let mut rtcp_seed = vec![sel];
        for (i, seq) in [65533u16, 65534, 65535, 0, 1, 3].into_iter().enumerate() {
            let plain = rtp_packet(seq, (i % 3) as u8, i % 2 == 0, 20 + i * 9);
            let mut p = plain.clone();
            tx.protect_rtp_vec(&mut p).unwrap();
            rx.unprotect_rtp(&mut p.clone()).expect("seed unprotects");
            for pkt in [&p, &plain] {
                rtp_seed.extend_from_slice(&(pkt.len() as u16).to_be_bytes());
                rtp_seed.extend_from_slice(pkt);
            }
            let mut c = vec![0x80, 200, 0, 6, 0xca, 0xfe, 0xba, 0xbe];
            c.extend((0..20 + i).map(|j| j as u8));
            let plain_c = c.clone();
            tx.protect_rtcp_vec(&mut c).unwrap();
            for pkt in [&c, &plain_c] {
                rtcp_seed.extend_from_slice(&(pkt.len() as u16).to_be_bytes());
                rtcp_seed.extend_from_slice(pkt);
            }
        }
        write(
            &root.join("srtp_unprotect"),
            &format!("config_{sel:02x}"),
            &rtp_seed,
        );
        write(
            &root.join("srtcp_unprotect"),
            &format!("config_{sel:02x}"),
            &rtcp_seed,
        );
    }
}
