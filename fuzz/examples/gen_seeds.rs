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
