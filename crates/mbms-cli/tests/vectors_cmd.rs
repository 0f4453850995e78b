//! `mbms vectors` prints the published vectors, and the inspector opens
//! every one of them with its key.

use assert_cmd::Command;
use serde_json::Value;

const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testvectors/mbms-mikey.json"
);

fn mbms() -> Command {
    Command::cargo_bin("mbms").expect("binary")
}

#[test]
fn vectors_json_is_the_published_file() {
    let out = mbms().args(["vectors", "--json"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(FILE).unwrap()
    );
    let text = mbms().arg("vectors").output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("[mtk-streaming]") && text.contains("srtp_master_key"),
        "{text}"
    );
}

#[test]
fn the_inspector_opens_every_vector() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(FILE).unwrap()).unwrap();
    let muk = doc["key_chain"]["muk"].as_str().unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    let delivery = vectors
        .iter()
        .find(|v| v["name"] == "msk-delivery")
        .unwrap()["message"]
        .as_str()
        .unwrap();
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let msg = v["message"].as_str().unwrap();
        let psk = if v["psk"] == "MUK" {
            muk
        } else {
            v["inputs"]["msk"].as_str().unwrap()
        };
        let mut cmd = mbms();
        cmd.args(["mikey", "decode", msg, "--psk", psk, "--json"]);
        if name == "msk-acknowledgement" {
            cmd.args(["--initiator", delivery]);
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["verification"]["status"], "ok", "{name}");
        if let Some(mtk) = v["inputs"]["mtk"].as_str() {
            assert_eq!(j["verification"]["key_data"][0]["key"], mtk, "{name}");
            assert_eq!(
                j["verification"]["key_data"][0]["salt"], v["inputs"]["mtk_salt"],
                "{name}"
            );
        }
        if let Some(msk) = v["inputs"]["msk"].as_str().filter(|_| v["psk"] == "MUK") {
            assert_eq!(j["verification"]["key_data"][0]["key"], msk, "{name}");
        }
    }
}

#[test]
fn a_key_log_opens_every_vector() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(FILE).unwrap()).unwrap();
    let kc = &doc["key_chain"];
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("keys.log");
    let msk = doc["vectors"][0]["inputs"]["msk"].as_str().unwrap();
    std::fs::write(
        &log,
        format!(
            "# MUK and the MSK that protects the MTK messages\nMUK {} {} {}\nMSK 00f110 00010001 {msk}\n",
            kc["idi"].as_str().unwrap(),
            kc["idr"].as_str().unwrap(),
            kc["muk"].as_str().unwrap()
        ),
    )
    .unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    let delivery = vectors[0]["message"].as_str().unwrap();
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let mut cmd = mbms();
        cmd.args([
            "mikey",
            "decode",
            v["message"].as_str().unwrap(),
            "--json",
            "--keylog",
        ])
        .arg(&log);
        if name == "msk-acknowledgement" {
            cmd.args(["--initiator", delivery]);
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["verification"]["status"], "ok", "{name}");
    }
    // A log without the key: a clear error, exit 2.
    std::fs::write(
        &log,
        "MSK 00f110 00010009 00000000000000000000000000000000\n",
    )
    .unwrap();
    let out = mbms()
        .args(["mikey", "decode", delivery, "--keylog"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key for this message"));
}
