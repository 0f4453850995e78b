//! The zero-allocation path of the MSK message, its acknowledgement and the
//! MTK message (issue 12): the published vectors go through it byte for
//! byte, it writes what the general `MessageBuilder` writes (the code the
//! MSK messages were built with before), and what it writes it reads back.

use mbms::ids::{KeyDomainId, MskId, MskName, MtkId, MukId};
use mbms::keys::{Msk, Muk};
use mbms::messages::{
    MskAck, MskAckView, MskEnvelope, MskKeyData, MskMessage, MskView, MtkEnvelope, MtkMessage,
    PreparedMsk, PreparedMuk,
};
use mbms::profile::*;
use mikey::crypto::InitiatorFields;
use mikey::{
    DataType, HmacSha1Key, KeyData, KeyKind, KeyValidity, MessageBuilder, SecretBytes, Timestamp,
};
use proptest::prelude::*;
use serde_json::Value;

const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testvectors/mbms-mikey.json"
);

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

fn msk_name(inputs: &Value) -> MskName {
    MskName {
        key_domain: inputs["key_domain_id"].as_str().unwrap().parse().unwrap(),
        msk_id: inputs["msk_id"].as_str().unwrap().parse().unwrap(),
    }
}

/// Every MSK-protected and MTK vector of `testvectors/mbms-mikey.json`,
/// built with `build_into` and read with `MskView`/`MskAckView`.
#[test]
fn published_vectors_through_the_fast_path() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(FILE).unwrap()).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    let by_name = |n: &str| vectors.iter().find(|v| v["name"] == n).unwrap();
    let mut out = Vec::with_capacity(256);
    let mut checked = 0;
    for name in [
        "msk-delivery",
        "solicited-pull",
        "inactive-msk",
        "activation",
    ] {
        let v = by_name(name);
        let i = &v["inputs"];
        let muk = PreparedMuk::new(&Muk::from_slice(&hex(&i["muk"])).unwrap());
        let key = i.get("msk").map(|m| MskKeyData {
            msk: Msk::from_slice(&hex(m)).unwrap(),
            seq_s: MtkId::new(i["seq_s"].as_u64().unwrap() as u16),
            seq_u: MtkId::new(i["seq_u"].as_u64().unwrap() as u16),
        });
        let m = MskMessage {
            muk_id: MukId::new(i["idi"].as_str().unwrap(), i["idr"].as_str().unwrap()),
            counter: i["counter"].as_u64().unwrap() as u32,
            rand: hex(&i["rand"]).try_into().unwrap(),
            msk: msk_name(i),
            v: i["v"].as_bool().unwrap(),
            key,
        };
        let keys = m.as_ref().build_into(&muk, &mut out).unwrap();
        assert_eq!(out, hex(&v["message"]), "{name}");
        assert_eq!(
            keys.encr_key[..],
            hex(&v["derived"]["encr_key"])[..],
            "{name}"
        );
        assert_eq!(
            keys.auth_key[..],
            hex(&v["derived"]["auth_key"])[..],
            "{name}"
        );
        assert_eq!(
            keys.salt_key[..],
            hex(&v["derived"]["salt_key"])[..],
            "{name}"
        );

        let bytes = hex(&v["message"]);
        let view = MskView::parse(&bytes).unwrap();
        assert_eq!(
            (view.idi, view.idr, view.counter, view.msk, view.v),
            (&*m.muk_id.idi, &*m.muk_id.idr, m.counter, m.msk, m.v),
            "{name}"
        );
        assert_eq!(view.rand, &m.rand);
        let opened = view.open(&muk).unwrap();
        assert_eq!(opened.key, m.key, "{name}");
        assert_eq!(opened.keys.auth_key, keys.auth_key);
        if name == "msk-delivery" {
            let ack = by_name("msk-acknowledgement");
            view.ack_into(&opened, &mut out).unwrap();
            assert_eq!(out, hex(&ack["message"]));
            let a = MskAckView::parse(&out).unwrap();
            assert_eq!((a.btid, a.counter, a.msk), (view.idr, 1, m.msk));
            let t = m.counter.to_be_bytes();
            a.verify(&HmacSha1Key::new(&keys.auth_key), m.as_ref().initiator(&t))
                .unwrap();
            assert_eq!(hex(&ack["derived"]["auth_key"]), keys.auth_key);
        }
        checked += 1;
    }
    for name in ["mtk-download", "mtk-streaming"] {
        let v = by_name(name);
        let i = &v["inputs"];
        let msk = PreparedMsk::new(&Msk::from_slice(&hex(&i["msk"])).unwrap());
        let bytes = hex(&v["message"]);
        let env = MtkEnvelope::parse(&bytes).unwrap();
        let mtk = env.open_prepared(&msk).unwrap();
        assert_eq!(mtk.key.as_bytes()[..], hex(&i["mtk"])[..]);
        assert_eq!(mtk.salt.as_bytes()[..], hex(&i["mtk_salt"])[..]);
        let m = MtkMessage {
            counter: env.counter,
            rand: env.rand,
            msk: env.msk,
            mtk_id: env.mtk_id,
            mtk,
            streaming: env.streaming.clone(),
        };
        m.build_into(&msk, &mut out).unwrap();
        assert_eq!(out, bytes, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 6);
}

/// The MSK message as `MskMessage::build` wrote it before the fast path:
/// through the general `MessageBuilder`.
fn reference_msk(m: &MskMessage, muk: &Muk) -> Vec<u8> {
    let key_data: Vec<KeyData> = m
        .key
        .iter()
        .map(|k| KeyData {
            kind: KeyKind::Tgk,
            key: SecretBytes::from_slice(k.msk.as_bytes()),
            salt: None,
            validity: KeyValidity::Interval {
                from: k.seq_s.to_bytes().to_vec().into(),
                to: k.seq_u.to_bytes().to_vec().into(),
            },
        })
        .collect();
    MessageBuilder::new(DataType::PSK_INIT)
        .verification_requested(m.v)
        .csb_id(MSK_CSB_ID)
        .timestamp(Timestamp::Counter(m.counter))
        .rand(m.rand)
        .id(IDI_TYPE, m.muk_id.idi.as_bytes())
        .id(IDR_TYPE, m.muk_id.idr.as_bytes())
        .key_id(KEY_ID_TYPE_MSK, m.msk.key_id())
        .protect(muk.as_bytes(), KEMAC_ENCR, &key_data)
        .unwrap()
        .into_bytes()
}

/// The acknowledgement as `MskAck::build` wrote it before.
fn reference_ack(a: &MskAck, auth_key: &[u8], init: &InitiatorFields) -> Vec<u8> {
    MessageBuilder::new(DataType::PSK_RESP)
        .csb_id(a.csb_id)
        .timestamp(Timestamp::Counter(a.counter))
        .id(IDR_TYPE, a.btid.as_bytes())
        .key_id(KEY_ID_TYPE_MSK, a.msk.key_id())
        .sign_verification(auth_key, init)
        .unwrap()
        .into_bytes()
}

fn msk_message() -> impl Strategy<Value = MskMessage> {
    (
        "[a-z0-9.-]{0,40}|\\PC{0,12}",
        "[A-Za-z0-9+/=@.]{0,80}|\\PC{0,12}",
        any::<u32>(),
        any::<[u8; 16]>(),
        any::<[u8; 3]>(),
        any::<u16>(),
        0u16..4,
        any::<[u8; 16]>(),
        any::<(u16, u16, bool)>(),
    )
        .prop_map(
            |(idi, idr, counter, rand, kd, group, number, msk, (s, u, v))| {
                let pull = number == 0;
                MskMessage {
                    muk_id: MukId::new(idi, idr),
                    counter,
                    rand,
                    msk: MskName {
                        key_domain: KeyDomainId(kd),
                        msk_id: MskId::new(group, number),
                    },
                    v: v && !pull,
                    key: (!pull).then(|| MskKeyData {
                        msk: Msk::from_bytes(msk),
                        seq_s: MtkId::new(s),
                        seq_u: MtkId::new(u),
                    }),
                }
            },
        )
}

proptest! {
    /// Old path == new path byte for byte (same RAND), and parse(build(x))
    /// == x, for the message and its acknowledgement.
    #[test]
    fn old_and_new_paths_agree(m in msk_message(), muk in any::<[u8; 32]>()) {
        let muk = Muk::from_bytes(muk);
        let prepared = PreparedMuk::new(&muk);
        let mut out = Vec::new();
        let keys = m.build_into(&prepared, &mut out).unwrap();
        prop_assert_eq!(&out, &reference_msk(&m, &muk));
        let built = m.build(&muk).unwrap();
        prop_assert_eq!(&built.bytes, &out);
        prop_assert_eq!(built.keys.auth_key, keys.auth_key);

        let view = MskView::parse(&out).unwrap();
        prop_assert_eq!(
            (view.idi, view.idr, view.counter, view.msk, view.v, *view.rand),
            (&*m.muk_id.idi, &*m.muk_id.idr, m.counter, m.msk, m.v, m.rand)
        );
        let opened = view.open(&prepared).unwrap();
        prop_assert_eq!(&opened.key, &m.key);
        let env = MskEnvelope::parse(&out).unwrap();
        prop_assert_eq!(&env.muk_id, &m.muk_id);
        let old = env.open(&muk).unwrap();
        prop_assert_eq!(&old.key, &m.key);
        prop_assert_eq!(&old.initiator, &built.initiator);
        prop_assert!(view.open(&PreparedMuk::new(&Muk::from_bytes([0; 32]))).is_err());

        // The acknowledgement: the UE's fast build, the old build and the
        // reference agree; the BM-SC's fast and old verification accept it.
        let mut ack = Vec::new();
        view.ack_into(&opened, &mut ack).unwrap();
        let owned = MskAck::for_message(&env);
        prop_assert_eq!(&ack, &owned.build(&keys.auth_key, &built.initiator).unwrap());
        prop_assert_eq!(&ack, &reference_ack(&owned, &keys.auth_key, &built.initiator));
        let a = MskAckView::parse(&ack).unwrap();
        prop_assert_eq!(a.to_owned(), owned.clone());
        let t = m.counter.to_be_bytes();
        prop_assert!(a.verify(&HmacSha1Key::new(&keys.auth_key), m.as_ref().initiator(&t)).is_ok());
        prop_assert!(a.verify(&HmacSha1Key::new(&[0; 20]), m.as_ref().initiator(&t)).is_err());
        prop_assert_eq!(MskAck::verify(&ack, &keys.auth_key, &built.initiator).unwrap(), owned);
    }
}
