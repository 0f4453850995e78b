//! The published MBMS MIKEY vectors (`testvectors/mbms-mikey.json`) are
//! reproducible from their inputs, and the UE side (the MGV-F) accepts every
//! one of them in order, producing the published acknowledgement.
//!
//! To rewrite the file after an intended change:
//! `MBMS_WRITE_VECTORS=1 cargo test -p mbms --test vectors`.

use std::time::Duration;

use mbms::mgvf::store::MemoryStore;
use mbms::mgvf::{MgvF, MskOutcome};
use mbms::{Muk, MukId};
use serde_json::Value;

const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testvectors/mbms-mikey.json"
);

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

#[test]
fn published_vectors_are_reproducible() {
    let generated = serde_json::to_string_pretty(&mbms::vectors::generate()).unwrap() + "\n";
    if std::env::var_os("MBMS_WRITE_VECTORS").is_some() {
        std::fs::write(FILE, &generated).unwrap();
    }
    let published = std::fs::read_to_string(FILE).expect("testvectors/mbms-mikey.json");
    assert_eq!(
        published, generated,
        "regenerate with MBMS_WRITE_VECTORS=1 if the change is intended"
    );
}

#[test]
fn the_ue_side_accepts_every_vector() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(FILE).unwrap()).unwrap();
    let kc = &doc["key_chain"];
    let muk = Muk::from_slice(&hex(&kc["muk"])).unwrap();
    let mut f = MgvF::new(MemoryStore::new());
    f.add_muk(
        MukId::new(kc["idi"].as_str().unwrap(), kc["idr"].as_str().unwrap()),
        muk,
    )
    .unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    let names: Vec<&str> = vectors
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "msk-delivery",
            "msk-acknowledgement",
            "solicited-pull",
            "inactive-msk",
            "activation",
            "mtk-download",
            "mtk-streaming"
        ]
    );
    let by_name = |n: &str| vectors.iter().find(|v| v["name"] == n).unwrap();

    let out = f
        .process_msk_message(&hex(&by_name("msk-delivery")["message"]), Duration::ZERO)
        .unwrap();
    let MskOutcome::Stored {
        ack: Some(ack),
        inactive: false,
        ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(ack, hex(&by_name("msk-acknowledgement")["message"]));

    let out = f
        .process_msk_message(&hex(&by_name("solicited-pull")["message"]), Duration::ZERO)
        .unwrap();
    assert!(matches!(out, MskOutcome::SolicitedPull { .. }));

    let out = f
        .process_msk_message(&hex(&by_name("inactive-msk")["message"]), Duration::ZERO)
        .unwrap();
    assert!(matches!(
        out,
        MskOutcome::Stored {
            inactive: true,
            ack: Some(_),
            ..
        }
    ));
    let out = f
        .process_msk_message(&hex(&by_name("activation")["message"]), Duration::ZERO)
        .unwrap();
    assert!(matches!(
        out,
        MskOutcome::Stored {
            inactive: false,
            ack: Some(_),
            ..
        }
    ));

    let v = by_name("mtk-download");
    let got = f.process_mtk_message(&hex(&v["message"])).unwrap();
    assert_eq!(got.mtk.key.as_bytes()[..], hex(&v["inputs"]["mtk"])[..]);
    let dk = got.mtk.download_keys(got.csb_id, &got.rand);
    assert_eq!(
        dk.encr.as_bytes()[..],
        hex(&v["derived"]["download_encr_key"])[..]
    );
    assert_eq!(
        dk.auth.as_bytes()[..],
        hex(&v["derived"]["download_auth_key"])[..]
    );

    let v = by_name("mtk-streaming");
    let got = f.process_mtk_message(&hex(&v["message"])).unwrap();
    let (k, s) = got.mtk.srtp_master();
    assert_eq!(k[..], hex(&v["derived"]["srtp_master_key"])[..]);
    assert_eq!(s[..], hex(&v["derived"]["srtp_master_salt"])[..]);
    assert_eq!(got.streams()[0].ssrc, 0x1234_5678);
}

#[test]
fn the_muk_comes_from_the_published_gba_vector() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(FILE).unwrap()).unwrap();
    let gba: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testvectors/external/gba-kdf.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(doc["key_chain"]["ks_naf"], gba["ks_naf"]);
    assert_eq!(doc["key_chain"]["idr"], gba["btid"]);
    let ks_naf = gba::keys::NafKey::from_hex(gba["ks_naf"].as_str().unwrap()).unwrap();
    assert_eq!(
        hex::encode(gba::kdf::derive_muk(&ks_naf).as_bytes()),
        doc["key_chain"]["muk"].as_str().unwrap()
    );
}
