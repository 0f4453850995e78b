//! Checks every value of the external vector files in
//! `testvectors/external/`: `milenage.json` (TS 35.208 sets, DIGEST.md
//! 12.1), `gba-kdf.json` (DIGEST.md 12.4) and `digest.json` (RFC 2617 3.5,
//! RFC 7616 3.9.1, RFC 3310 example of DIGEST.md 12.5).

use gba::aka::{self, Sqn48};
use gba::digest::{self, Algorithm, Qop, QopParams};
use gba::kdf::{self, BTid, NafId};
use gba::keys::{Ck, Ik, Ks, Op, SubscriberKey};
use gba::milenage::{opc_from_op, Milenage};
use serde_json::Value;

const MILENAGE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testvectors/external/milenage.json"
));
const GBA_KDF: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testvectors/external/gba-kdf.json"
));
const DIGEST: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testvectors/external/digest.json"
));

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("missing string field {key}"))
}

fn h<const N: usize>(v: &Value, key: &str) -> [u8; N] {
    hex::decode(s(v, key))
        .unwrap_or_else(|e| panic!("{key}: {e}"))
        .try_into()
        .unwrap_or_else(|_| panic!("{key}: wrong length"))
}

#[test]
fn milenage_all_sets() {
    let doc: Value = serde_json::from_str(MILENAGE).unwrap();
    let sets = doc["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 7, "expected 7 Milenage sets");
    for (i, set) in sets.iter().enumerate() {
        let k = SubscriberKey::from_bytes(h(set, "k"));
        let op = Op::from_bytes(h(set, "op"));
        let rand: [u8; 16] = h(set, "rand");
        let sqn: [u8; 6] = h(set, "sqn");
        let amf: [u8; 2] = h(set, "amf");

        let opc = opc_from_op(&k, &op);
        assert_eq!(opc.as_bytes(), &h::<16>(set, "opc"), "set {i}: OPc");

        let m = Milenage::new(&k, &opc);
        assert_eq!(m.f1(&rand, &sqn, &amf), h::<8>(set, "f1"), "set {i}: f1");
        assert_eq!(
            m.f1_star(&rand, &sqn, &amf),
            h::<8>(set, "f1star"),
            "set {i}: f1*"
        );
        assert_eq!(m.f2(&rand).as_bytes(), &h::<8>(set, "f2"), "set {i}: f2");
        assert_eq!(m.f3(&rand).as_bytes(), &h::<16>(set, "f3"), "set {i}: f3");
        assert_eq!(m.f4(&rand).as_bytes(), &h::<16>(set, "f4"), "set {i}: f4");
        assert_eq!(m.f5(&rand), h::<6>(set, "f5"), "set {i}: f5");
        assert_eq!(m.f5_star(&rand), h::<6>(set, "f5star"), "set {i}: f5*");

        // The combined call and the AKA layer agree with the vectors too.
        let all = m.f2345(&rand);
        assert_eq!(all.res.as_bytes(), &h::<8>(set, "f2"), "set {i}: f2345 res");
        assert_eq!(all.ak, h::<6>(set, "f5"), "set {i}: f2345 ak");
        let av = aka::generate_vector(&k, &opc, Sqn48::from_bytes(sqn), amf, rand);
        let f5: [u8; 6] = h(set, "f5");
        let mut sqn_xor_ak = sqn;
        for (a, b) in sqn_xor_ak.iter_mut().zip(f5) {
            *a ^= b;
        }
        assert_eq!(av.autn.sqn_xor_ak(), sqn_xor_ak, "set {i}: AUTN SQN^AK");
        assert_eq!(av.autn.amf(), amf, "set {i}: AUTN AMF");
        assert_eq!(av.autn.mac_a(), h::<8>(set, "f1"), "set {i}: AUTN MAC-A");
        assert_eq!(av.ck.as_bytes(), &h::<16>(set, "f3"), "set {i}: AV CK");
        assert_eq!(av.ik.as_bytes(), &h::<16>(set, "f4"), "set {i}: AV IK");
    }
}

#[test]
fn gba_kdf_example() {
    let v: Value = serde_json::from_str(GBA_KDF).unwrap();
    let ks_bytes: [u8; 32] = h(&v, "ks");
    let rand: [u8; 16] = h(&v, "rand");
    let impi = s(&v, "impi");
    let fqdn = s(&v, "naf_fqdn");
    let ua_id: [u8; 5] = h(&v, "ua_protocol_id");
    assert_eq!(ua_id, kdf::UA_PROTOCOL_ID_MBMS);

    // Ks = CK || IK (Milenage set 1).
    let ck = Ck::from_slice(&ks_bytes[..16]).unwrap();
    let ik = Ik::from_slice(&ks_bytes[16..]).unwrap();
    let ks = Ks::from_ck_ik(&ck, &ik);
    assert_eq!(ks.as_bytes(), &ks_bytes);

    let naf_id = NafId::mbms(fqdn);
    assert_eq!(naf_id, NafId::new(fqdn, ua_id));
    let s_me = kdf::naf_kdf_input(kdf::GBA_ME_LABEL, &rand, impi, &naf_id).unwrap();
    assert_eq!(hex::encode(&s_me), s(&v, "s_gba_me"));

    let ks_naf = kdf::derive_ks_naf(&ks, &rand, impi, &naf_id).unwrap();
    assert_eq!(hex::encode(ks_naf.as_bytes()), s(&v, "ks_naf"));
    let ks_ext = kdf::derive_ks_ext_naf(&ks, &rand, impi, &naf_id).unwrap();
    assert_eq!(ks_ext, ks_naf);
    let ks_int = kdf::derive_ks_int_naf(&ks, &rand, impi, &naf_id).unwrap();
    assert_eq!(hex::encode(ks_int.as_bytes()), s(&v, "ks_int_naf"));
    // The generic KDF gives the same result.
    let generic = kdf::kdf(
        ks.as_bytes(),
        kdf::FC_NAF_KEY,
        &[kdf::GBA_U_LABEL, &rand, impi.as_bytes(), naf_id.as_bytes()],
    )
    .unwrap();
    assert_eq!(&*generic, ks_int.as_bytes());

    let btid = BTid::new(&rand, "bsf.home1.net");
    assert_eq!(btid.as_str(), s(&v, "btid"));
    assert_eq!(BTid::parse(s(&v, "btid")).unwrap().rand(), &rand);
    assert_eq!(&*ks_naf.to_base64(), s(&v, "ks_naf_base64"));
}

#[test]
fn digest_all_cases() {
    let doc: Value = serde_json::from_str(DIGEST).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4, "expected 4 Digest cases");
    for case in cases {
        let src = s(case, "source");
        let alg: Algorithm = s(case, "algorithm").parse().unwrap();
        let password: Vec<u8> = match case.get("password_hex") {
            Some(Value::String(hx)) => hex::decode(hx).unwrap(),
            _ => s(case, "password").as_bytes().to_vec(),
        };
        let nonce = s(case, "nonce");
        let cnonce = s(case, "cnonce");
        let qop: Qop = s(case, "qop").parse().unwrap();
        let nc = digest::parse_nc(s(case, "nc")).unwrap();
        assert_eq!(digest::format_nc(nc), s(case, "nc"));
        let body = case.get("body").and_then(Value::as_str).unwrap_or("");

        let ha1 = digest::compute_ha1(
            alg,
            s(case, "username"),
            s(case, "realm"),
            &password,
            nonce,
            cnonce,
        );
        if let Some(Value::String(expected)) = case.get("ha1") {
            assert_eq!(&*ha1, expected, "{src}: HA1");
        }
        let ha2 = digest::compute_ha2(
            alg,
            Some(qop),
            s(case, "method"),
            s(case, "uri"),
            body.as_bytes(),
        );
        if let Some(Value::String(expected)) = case.get("ha2") {
            assert_eq!(&ha2, expected, "{src}: HA2");
        }
        let response =
            digest::compute_response(alg, &ha1, nonce, Some(QopParams { qop, nc, cnonce }), &ha2);
        assert_eq!(response, s(case, "response"), "{src}: response");

        // The same through the client state machine and the header codec.
        let challenge = digest::Challenge {
            realm: s(case, "realm").to_owned(),
            domain: None,
            nonce: nonce.to_owned(),
            opaque: None,
            stale: false,
            algorithm: Some(alg),
            qop: vec![qop],
        };
        let mut client = digest::DigestClient::new(s(case, "username"), &password);
        client
            .handle_challenge(
                digest::Challenge::parse(&challenge.to_header_value().unwrap()).unwrap(),
            )
            .unwrap();
        let auth = client
            .authorize(s(case, "method"), s(case, "uri"), body.as_bytes(), cnonce)
            .unwrap();
        assert_eq!(auth.response, s(case, "response"), "{src}: client response");
        let parsed = digest::Authorization::parse(&auth.to_header_value().unwrap()).unwrap();
        assert_eq!(parsed, auth, "{src}: Authorization round trip");
    }
}
