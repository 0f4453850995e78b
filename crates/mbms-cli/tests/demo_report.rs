//! `mbms demo --report FILE.html` (issue 15, "Pictures") writes the page:
//! a chart per procedure and the results table, and says where it is. The
//! page itself is checked in depth by `crates/demo/tests/report.rs`.

use std::process::Command;

#[test]
fn demo_report_writes_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("demo.html");
    let out = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args(["demo", "--ues", "2", "--free-ports", "--report"])
        .arg(&page)
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("report: {}", page.display())),
        "{stderr}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..100]);
    // Every procedure but the capture check has its chart.
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 11);
    assert!(html.contains("<table class=\"results\">"));
    assert!(html.contains("SUCCESS"));
    // The table on stdout is unchanged.
    assert!(stdout.contains("SUCCESS"), "{stdout}");
}
