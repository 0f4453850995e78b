//! `mbms mikey decode` against the README example message.

use assert_cmd::Command;
use serde_json::Value;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/examples/msk-delivery.hex"
);
const MUK: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn mbms() -> Command {
    Command::cargo_bin("mbms").expect("binary")
}

fn example_hex() -> String {
    std::fs::read_to_string(EXAMPLE).unwrap().trim().to_string()
}

#[test]
fn decodes_the_tree_without_a_key() {
    let out = mbms()
        .args(["mikey", "decode", &format!("@{EXAMPLE}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Data Type: Pre-shared (0)",
        "V: 1",
        "CS ID map type: Empty map (1, RFC 4563)",
        "TS Type: COUNTER (2)",
        "TS Value: 1 (0x00000001)",
        "ID Data: bmsc.home1.net",
        "Key ID Type: MSK ID (1)",
        "Key Domain ID 00f110 (001-01), MSK ID 00010001 (Key Group 1, Key Number 1)",
        "Encr Alg: AES-CM-128 (1)",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in\n{s}");
    }
    assert!(!s.contains("3c2a77e5"), "key shown without --psk");
}

#[test]
fn opens_with_the_right_key() {
    let out = mbms()
        .args(["mikey", "decode", &example_hex(), "--psk", MUK])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("MAC OK"), "{s}");
    assert!(s.contains("Key: 3c2a77e5b8f0d1946a0b5e21c7d48f90"), "{s}");
    assert!(
        s.contains("KV: Interval VF 0000 VT 00ff (SEQs 0, SEQu 255)"),
        "{s}"
    );
}

#[test]
fn wrong_key_is_a_mac_mismatch_with_exit_1() {
    let mut wrong = MUK.to_string();
    wrong.replace_range(0..2, "ff");
    let out = mbms()
        .args(["mikey", "decode", &example_hex(), "--psk", &wrong])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("MAC mismatch"), "{err}");
    assert!(!String::from_utf8(out.stdout).unwrap().contains("3c2a77e5"));
}

#[test]
fn malformed_input_is_exit_2_with_offset_and_payload() {
    let hex = example_hex();
    let out = mbms()
        .args(["mikey", "decode", &hex[..hex.len() - 10]])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("in KEMAC at byte offset 139"), "{err}");

    let out = mbms()
        .args(["mikey", "decode", "not hex"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn base64_and_stdin_inputs() {
    use base64::Engine as _;
    let bytes = hex::decode(example_hex()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    mbms()
        .args(["mikey", "decode", &format!("base64:{b64}"), "--psk", MUK])
        .assert()
        .success();
    mbms()
        .args(["mikey", "decode", "-", "--psk", MUK])
        .write_stdin(bytes)
        .assert()
        .success();
}

#[test]
fn json_schema() {
    let out = mbms()
        .args(["mikey", "decode", &example_hex(), "--psk", MUK, "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "mbms-mikey-decode/1");
    assert_eq!(v["length"], 159);
    assert_eq!(v["header"]["data_type"], 0);
    assert_eq!(v["header"]["v"], true);
    assert_eq!(v["header"]["cs_id_map_type"], 1);
    let p = v["payloads"].as_array().unwrap();
    let names: Vec<&str> = p.iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["T", "RAND", "ID", "ID", "General Extension", "KEMAC"]
    );
    assert_eq!(p[0]["value"], 1);
    assert_eq!(p[0]["offset"], 10);
    assert_eq!(p[2]["role"], "IDi");
    assert_eq!(p[3]["text"], "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net");
    assert_eq!(p[4]["mbms"]["key_domain"], "001-01");
    assert_eq!(p[4]["mbms"]["key_group"], 1);
    assert_eq!(p[4]["mbms"]["key_number"], 1);
    assert_eq!(v["verification"]["status"], "ok");
    let kd = &v["verification"]["key_data"][0];
    assert_eq!(kd["type_name"], "TGK");
    assert_eq!(kd["key"], "3c2a77e5b8f0d1946a0b5e21c7d48f90");
    assert_eq!(kd["validity"]["seq_u"], 255);
}

#[test]
fn acknowledgement_verifies_against_its_initiator() {
    let init_bytes = hex::decode(example_hex()).unwrap();
    let muk = hex::decode(MUK).unwrap();
    let opened = mikey::open_psk(&init_bytes, &muk).unwrap();
    let fields = mikey::InitiatorFields::of(&opened.message);
    let ack = mikey::MessageBuilder::new(mikey::DataType::PSK_RESP)
        .timestamp(mikey::Timestamp::Counter(1))
        .id(mikey::IdType::NAI, "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net")
        .key_id(mikey::KeyIdType::MSK, [0, 0xf1, 0x10, 0, 1, 0, 1])
        .sign_verification(&opened.keys.auth_key, &fields)
        .unwrap();
    let ack_hex = hex::encode(ack.bytes());
    let out = mbms()
        .args([
            "mikey",
            "decode",
            &ack_hex,
            "--psk",
            MUK,
            "--initiator",
            &format!("@{EXAMPLE}"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("initiator message: MAC OK"));
    let out = mbms()
        .args(["mikey", "decode", &ack_hex, "--psk", MUK])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("--initiator"));
    let mut wrong = muk.clone();
    wrong[0] ^= 1;
    let out = mbms()
        .args([
            "mikey",
            "decode",
            &ack_hex,
            "--psk",
            &hex::encode(wrong),
            "--initiator",
            &format!("@{EXAMPLE}"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
