//! Deterministic MBMS MIKEY test vectors: every message type of
//! `PROFILE.md` section 6 built from fixed inputs, with the derived keys.
//! No public MBMS MIKEY vectors existed; these are published in
//! `testvectors/mbms-mikey.json` and printed by `mbms vectors`.
//!
//! The key chain starts from public values: Milenage test set 1 (TS 35.208)
//! gives CK and IK, the TS 33.220 KDF gives Ks_NAF for `bmsc.home1.net`
//! (`testvectors/external/gba-kdf.json`), and the MUK is derived from Ks_NAF
//! as `PROFILE.md` section 2 says.

use mikey::crypto::PskKeys;
use mikey::{SrtpAuthAlg, SrtpEncrAlg, SrtpIdEntry, SrtpPolicy};
use serde_json::{json, Value};

use crate::ids::{KeyDomainId, MskId, MskName, MtkId, MukId};
use crate::keys::{Msk, Mtk, MtkKey, MtkSalt, Muk};
use crate::messages::{mki, MskAck, MskEnvelope, MskKeyData, MskMessage, MtkMessage, Streaming};
use crate::profile::{INACTIVE_WINDOW, MSK_CSB_ID};

/// The schema identifier of the JSON file.
pub const SCHEMA: &str = "mbms-mikey-vectors/1";

/// Ks_NAF of `testvectors/external/gba-kdf.json` (Milenage set 1, RAND
/// 23553cbe..., IMPI user1_private@home1.net, NAF bmsc.home1.net).
const KS_NAF: &str = "9e7f591d867c2c51bcf388beffa209771eed795d08db4a470895468faff293cb";
/// The B-TID of that bootstrapping.
const BTID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net";
const BMSC_FQDN: &str = "bmsc.home1.net";

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

fn fixed<const N: usize>(seed: u8) -> [u8; N] {
    let mut a = [0u8; N];
    for (i, x) in a.iter_mut().enumerate() {
        *x = seed.wrapping_add((i as u8).wrapping_mul(17));
    }
    a
}

fn psk_keys_json(k: &PskKeys) -> Value {
    json!({"encr_key": h(&k.encr_key), "auth_key": h(&k.auth_key), "salt_key": h(&k.salt_key)})
}

fn msk_vector(
    name: &str,
    description: &str,
    m: &MskMessage,
    muk: &Muk,
) -> (Value, crate::messages::BuiltMsk) {
    let built = m
        .build(muk)
        .unwrap_or_else(|e| unreachable!("fixed inputs build: {e}"));
    let mut inputs = json!({
        "muk": h(muk.as_bytes()),
        "idi": m.muk_id.idi, "idr": m.muk_id.idr,
        "counter": m.counter, "rand": h(&m.rand),
        "key_domain_id": m.msk.key_domain.to_string(), "msk_id": m.msk.msk_id.to_string(),
        "v": m.v, "csb_id": MSK_CSB_ID,
    });
    if let Some(k) = &m.key {
        inputs["msk"] = json!(h(k.msk.as_bytes()));
        inputs["seq_s"] = json!(k.seq_s.value());
        inputs["seq_u"] = json!(k.seq_u.value());
    }
    let v = json!({
        "name": name, "description": description, "psk": "MUK",
        "inputs": inputs,
        "derived": psk_keys_json(&built.keys),
        "message": h(&built.bytes),
    });
    (v, built)
}

/// The vectors as a JSON document (schema [`SCHEMA`]).
pub fn generate() -> Value {
    let ks_naf = gba::keys::NafKey::from_hex(KS_NAF).unwrap_or_else(|_| unreachable!());
    let muk = gba::kdf::derive_muk(&ks_naf);
    let muk_id = MukId::new(BMSC_FQDN, BTID);
    let key_domain: KeyDomainId = KeyDomainId([0x00, 0xf1, 0x10]); // MCC 001, MNC 01
    let msk1 = MskName {
        key_domain,
        msk_id: MskId::new(1, 1),
    };
    let msk2 = MskName {
        key_domain,
        msk_id: MskId::new(1, 2),
    };
    let msk1_key = Msk::from_bytes(fixed(0x10));
    let msk2_key = Msk::from_bytes(fixed(0x20));

    let mut out = Vec::new();

    let delivery = MskMessage {
        muk_id: muk_id.clone(),
        counter: 1,
        rand: fixed(0xa0),
        msk: msk1,
        v: true,
        key: Some(MskKeyData {
            msk: msk1_key.clone(),
            seq_s: MtkId::new(0),
            seq_u: MtkId::new(1000),
        }),
    };
    let (v, built) = msk_vector(
        "msk-delivery",
        "MSK delivery with acknowledgement requested (V = 1), MSK 00010001, MTK ID window (0, 1000]",
        &delivery,
        &muk,
    );
    out.push(v);

    let env = MskEnvelope::parse(&built.bytes).unwrap_or_else(|e| unreachable!("{e}"));
    let ack = MskAck::for_message(&env);
    let ack_bytes = ack
        .build(&built.keys.auth_key, &built.initiator)
        .unwrap_or_else(|e| unreachable!("{e}"));
    out.push(json!({
        "name": "msk-acknowledgement",
        "description": "The UE's acknowledgement of msk-delivery: MAC keyed with its auth_key over the acknowledgement, IDi, IDr and T of msk-delivery",
        "psk": "MUK",
        "inputs": {
            "acknowledges": "msk-delivery", "csb_id": ack.csb_id, "counter": ack.counter, "idr": ack.btid,
            "key_domain_id": ack.msk.key_domain.to_string(), "msk_id": ack.msk.msk_id.to_string(),
            "initiator_idi": String::from_utf8_lossy(&built.initiator.idi),
            "initiator_idr": String::from_utf8_lossy(&built.initiator.idr),
            "initiator_t": h(&built.initiator.t),
        },
        "derived": {"auth_key": h(&built.keys.auth_key)},
        "message": h(&ack_bytes),
    }));

    let pull = MskMessage::solicited_pull(muk_id.clone(), 2, fixed(0xb0), key_domain, 1);
    out.push(
        msk_vector(
            "solicited-pull",
            "BM-SC solicited pull for key group 1: Key Number 0, no key (Encr data len 0), V = 0",
            &pull,
            &muk,
        )
        .0,
    );

    let inactive = MskMessage {
        muk_id: muk_id.clone(),
        counter: 3,
        rand: fixed(0xc0),
        msk: msk2,
        v: true,
        key: Some(MskKeyData {
            msk: msk2_key.clone(),
            seq_s: MtkId::new(INACTIVE_WINDOW.0),
            seq_u: MtkId::new(INACTIVE_WINDOW.1),
        }),
    };
    out.push(
        msk_vector(
            "inactive-msk",
            "4-way procedure step 1: MSK 00010002 delivered inactive (VF 1 > VT 0)",
            &inactive,
            &muk,
        )
        .0,
    );

    let activation = MskMessage {
        counter: 4,
        rand: fixed(0xd0),
        key: Some(MskKeyData {
            msk: msk2_key.clone(),
            seq_s: MtkId::new(1000),
            seq_u: MtkId::new(2000),
        }),
        ..inactive.clone()
    };
    out.push(
        msk_vector(
            "activation",
            "4-way procedure step 3: the same MSK 00010002 with its real window (1000, 2000]",
            &activation,
            &muk,
        )
        .0,
    );

    let mtk1 = Mtk {
        key: MtkKey::from_bytes(fixed(0x30)),
        salt: MtkSalt::from_bytes(fixed(0x40)),
    };
    let download = MtkMessage {
        counter: 1,
        rand: fixed(0xe0),
        msk: msk1,
        mtk_id: MtkId::new(1),
        mtk: mtk1.clone(),
        streaming: None,
    };
    let bytes = download
        .build(&msk1_key)
        .unwrap_or_else(|e| unreachable!("{e}"));
    let dk = mtk1.download_keys(crate::messages::MTK_CSB_ID, &download.rand);
    out.push(json!({
        "name": "mtk-download",
        "description": "MTK delivery for a download session, protected by MSK 00010001; the download keys come from the MTK by RFC 3830 4.1.3",
        "psk": "MSK",
        "inputs": {
            "msk": h(msk1_key.as_bytes()), "counter": download.counter, "rand": h(&download.rand),
            "key_domain_id": key_domain.to_string(), "msk_id": msk1.msk_id.to_string(), "mtk_id": 1,
            "mtk": h(mtk1.key.as_bytes()), "mtk_salt": h(mtk1.salt.as_bytes()), "csb_id": crate::messages::MTK_CSB_ID,
        },
        "derived": {
            "message_keys": psk_keys_json(&PskKeys::derive(msk1_key.as_bytes(), crate::messages::MTK_CSB_ID, &download.rand)),
            "spi_mki": h(&mki(msk1.msk_id, MtkId::new(1))),
            "download_encr_key": h(dk.encr.as_bytes()), "download_auth_key": h(dk.auth.as_bytes()),
        },
        "message": h(&bytes),
    }));

    let mtk2 = Mtk {
        key: MtkKey::from_bytes(fixed(0x50)),
        salt: MtkSalt::from_bytes(fixed(0x60)),
    };
    let policy = SrtpPolicy {
        encr_alg: Some(SrtpEncrAlg::AES_CM),
        encr_key_len: Some(16),
        auth_alg: Some(SrtpAuthAlg::HMAC_SHA1),
        auth_key_len: Some(20),
        salt_key_len: Some(14),
        key_derivation_rate: Some(0),
        auth_tag_len: Some(10),
        ..Default::default()
    };
    let streaming = MtkMessage {
        counter: 2,
        rand: fixed(0xf0),
        msk: msk1,
        mtk_id: MtkId::new(2),
        mtk: mtk2.clone(),
        streaming: Some(Streaming {
            streams: vec![SrtpIdEntry {
                policy_no: 0,
                ssrc: 0x1234_5678,
                roc: 0,
            }],
            policy,
        }),
    };
    let bytes = streaming
        .build(&msk1_key)
        .unwrap_or_else(|e| unreachable!("{e}"));
    let (mk, ms) = mtk2.srtp_master();
    out.push(json!({
        "name": "mtk-streaming",
        "description": "MTK delivery for a streaming session (SRTP-ID map: SSRC 0x12345678, ROC 0; SP: AES_CM_128_HMAC_SHA1_80, KDR 0); SRTP master key = MTK, master salt = the KEMAC salt",
        "psk": "MSK",
        "inputs": {
            "msk": h(msk1_key.as_bytes()), "counter": streaming.counter, "rand": h(&streaming.rand),
            "key_domain_id": key_domain.to_string(), "msk_id": msk1.msk_id.to_string(), "mtk_id": 2,
            "mtk": h(mtk2.key.as_bytes()), "mtk_salt": h(mtk2.salt.as_bytes()), "csb_id": crate::messages::MTK_CSB_ID,
            "ssrc": 0x1234_5678u32, "roc": 0,
        },
        "derived": {
            "message_keys": psk_keys_json(&PskKeys::derive(msk1_key.as_bytes(), crate::messages::MTK_CSB_ID, &streaming.rand)),
            "spi_mki": h(&mki(msk1.msk_id, MtkId::new(2))),
            "srtp_master_key": h(mk), "srtp_master_salt": h(ms),
        },
        "message": h(&bytes),
    }));

    json!({
        "schema": SCHEMA,
        "description": "Deterministic MBMS MIKEY messages (TS 33.246 as profiled by PROFILE.md section 6). Regenerate with `mbms vectors --json`.",
        "key_chain": {
            "ks_naf": KS_NAF,
            "source": "testvectors/external/gba-kdf.json (Milenage test set 1, IMPI user1_private@home1.net, NAF bmsc.home1.net)",
            "muk": h(muk.as_bytes()),
            "muk_derivation": "MUK = KDF(Ks_NAF, FC 0x01, P0 = \"mbms-muk\") (PROFILE.md section 2)",
            "mrk": h(gba::kdf::derive_mrk(&ks_naf).as_bytes()),
            "idi": BMSC_FQDN, "idr": BTID,
        },
        "vectors": out,
    })
}

/// The vectors as the text `mbms vectors` prints.
pub fn to_text(doc: &Value) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "MBMS MIKEY test vectors ({})",
        doc["schema"].as_str().unwrap_or_default()
    );
    let kc = &doc["key_chain"];
    let _ = writeln!(
        o,
        "key chain: Ks_NAF {}",
        kc["ks_naf"].as_str().unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "           MUK    {}",
        kc["muk"].as_str().unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "           MRK    {}",
        kc["mrk"].as_str().unwrap_or_default()
    );
    for v in doc["vectors"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "\n[{}] {}",
            v["name"].as_str().unwrap_or_default(),
            v["description"].as_str().unwrap_or_default()
        );
        let _ = writeln!(
            o,
            "  protected with: {}",
            v["psk"].as_str().unwrap_or_default()
        );
        for section in ["inputs", "derived"] {
            let _ = writeln!(o, "  {section}:");
            if let Some(m) = v[section].as_object() {
                for (k, val) in m {
                    match val {
                        Value::Object(inner) => {
                            for (k2, v2) in inner {
                                let _ = writeln!(
                                    o,
                                    "    {k}.{k2}: {}",
                                    v2.as_str().map_or(v2.to_string(), str::to_owned)
                                );
                            }
                        }
                        other => {
                            let _ = writeln!(
                                o,
                                "    {k}: {}",
                                other.as_str().map_or(other.to_string(), str::to_owned)
                            );
                        }
                    }
                }
            }
        }
        let _ = writeln!(
            o,
            "  message: {}",
            v["message"].as_str().unwrap_or_default()
        );
    }
    o
}
