//! Published and independent vectors for the MIKEY-1 PRF and key derivation.

use mikey::crypto::{derive_from_tgk, prf, prf_label, TgkKey};
use mikey::PskKeys;
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!(
        "{}/../../testvectors/external/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("valid JSON")
}

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

/// `mikey-prf.json`: outputs of an independent C implementation (minisip
/// libmikey) for input keys of 1 to 65 bytes and outputs of 16 to 46 bytes.
#[test]
fn prf_matches_independent_implementation() {
    let v = load("mikey-prf.json");
    let inkey_full = hex(&v["inkey_full"]);
    let csb_id = u32::from_str_radix(v["csb_id"].as_str().unwrap(), 16).unwrap();
    let rand = hex(&v["rand"]);
    let constant = u32::from_str_radix(v["prf"]["constant"].as_str().unwrap(), 16).unwrap();
    let cs_id = u8::from_str_radix(v["prf"]["cs_id"].as_str().unwrap(), 16).unwrap();
    let label = prf_label(constant, cs_id, csb_id, &rand);
    let cases = v["prf"]["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        let inlen = case[0].as_u64().unwrap() as usize;
        let outlen = case[1].as_u64().unwrap() as usize;
        let expected = hex(&case[2]);
        let got = prf(&inkey_full[..inlen], &label, outlen);
        assert_eq!(got.expose(), &expected[..], "inlen {inlen} outlen {outlen}");
    }
}

#[test]
fn derivations_match_independent_implementation() {
    let v = load("mikey-prf.json");
    let inkey = &hex(&v["inkey_full"])[..16];
    let csb_id = u32::from_str_radix(v["csb_id"].as_str().unwrap(), 16).unwrap();
    let rand = hex(&v["rand"]);
    let rows = v["derivations_inlen16_out20"].as_array().unwrap();
    assert_eq!(rows.len(), 7);
    for row in rows {
        let constant = u32::from_str_radix(row[0].as_str().unwrap(), 16).unwrap();
        let cs_id = u8::from_str_radix(row[1].as_str().unwrap(), 16).unwrap();
        let expected = hex(&row[2]);
        let got = prf(inkey, &prf_label(constant, cs_id, csb_id, &rand), 20);
        assert_eq!(got.expose(), &expected[..], "constant {constant:08x}");
    }
    // The same numbers through the named derivations.
    let keys = PskKeys::derive(inkey, csb_id, &rand);
    assert_eq!(keys.encr_key[..], hex(&rows[2][2])[..16]);
    assert_eq!(keys.salt_key[..], hex(&rows[3][2])[..14]);
    assert_eq!(keys.auth_key[..], hex(&rows[4][2])[..]);
    let tek = derive_from_tgk(inkey, TgkKey::Tek, 0, csb_id, &rand, 20);
    assert_eq!(tek.expose(), &hex(&rows[1][2])[..]);
    let salt = derive_from_tgk(inkey, TgkKey::Salt, 0, csb_id, &rand, 20);
    assert_eq!(salt.expose(), &hex(&rows[0][2])[..]);
    let enc = derive_from_tgk(inkey, TgkKey::Encryption, 0, csb_id, &rand, 20);
    assert_eq!(enc.expose(), &hex(&rows[5][2])[..]);
    let auth = derive_from_tgk(inkey, TgkKey::Authentication, 0, csb_id, &rand, 20);
    assert_eq!(auth.expose(), &hex(&rows[6][2])[..]);
}

/// A 32-byte input key (a MUK-sized key: exactly one 256-bit PRF piece), the
/// case the C implementation above gets wrong. Values from `DIGEST.md` 12.6,
/// re-computed there with independent code.
#[test]
fn prf_with_a_32_byte_key() {
    let ks_int_naf =
        hex::decode("61fe786b6a0f4085328da62347d1cbd314cb7cfd9dcbf71f4121efd1cf2c91aa").unwrap();
    let rand = hex::decode("000102030405060708090a0b0c0d0e0f").unwrap();
    let keys = PskKeys::derive(&ks_int_naf, 1, &rand);
    assert_eq!(
        hex::encode(keys.encr_key),
        "061198ee2f5820762d28140b6f36e5fb"
    );
    assert_eq!(
        hex::encode(keys.auth_key),
        "741226beec48f3d3fdc5824d767d31ffcf9f6691"
    );
    assert_eq!(hex::encode(keys.salt_key), "4367517d8c982bade83b2868b43f");
    let tek = derive_from_tgk(&ks_int_naf, TgkKey::Tek, 0, 1, &rand, 16);
    assert_eq!(
        hex::encode(tek.expose()),
        "278c2b9d58949548d616392c2aeddb81"
    );
}

/// A 64-byte key is two full pieces whose P outputs are XORed: check against
/// a direct computation of the RFC 3830 4.1.2 formula.
#[test]
fn prf_with_two_full_pieces_xors_them() {
    let key: Vec<u8> = (0..64u8).collect();
    let label = prf_label(0x1505_33E1, 0xff, 7, &[1; 16]);
    let whole = prf(&key, &label, 46);
    let a = prf(&key[..32], &label, 46);
    let b = prf(&key[32..], &label, 46);
    let xored: Vec<u8> = a
        .expose()
        .iter()
        .zip(b.expose())
        .map(|(x, y)| x ^ y)
        .collect();
    assert_eq!(whole.expose(), &xored[..]);
    assert_ne!(whole.expose(), a.expose());
}
