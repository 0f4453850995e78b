//! `mbms bench srtp`: runs, prints both figures, JSON schema.

use assert_cmd::Command;
use serde_json::Value;

fn mbms() -> Command {
    Command::cargo_bin("mbms").expect("binary")
}

#[test]
fn bench_srtp_json() {
    for suite in ["80", "32"] {
        let out = mbms()
            .args([
                "bench",
                "srtp",
                "--payload",
                "160",
                "--packets",
                "3000",
                "--suite",
                suite,
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["schema"], "mbms-bench-srtp/1");
        assert_eq!(v["suite"], format!("AES_CM_128_HMAC_SHA1_{suite}"));
        assert_eq!(v["payload_bytes"], 160);
        assert_eq!(v["packets"], 3000);
        for op in ["protect", "unprotect"] {
            assert!(v[op]["mb_per_s"].as_f64().unwrap() > 0.0, "{op}");
            assert!(v[op]["ns_per_packet"].as_f64().unwrap() > 0.0, "{op}");
        }
    }
}

#[test]
fn bench_srtp_text_and_bad_arguments() {
    let out = mbms()
        .args(["bench", "srtp", "--packets", "500"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(
        s.contains("AES_CM_128_HMAC_SHA1_80, 1200-byte payload"),
        "{s}"
    );
    assert!(
        s.contains("protect") && s.contains("unprotect") && s.contains("MB/s"),
        "{s}"
    );
    for bad in [
        ["--suite", "64"],
        ["--packets", "0"],
        ["--payload", "70000"],
    ] {
        let out = mbms().args(["bench", "srtp"]).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}
