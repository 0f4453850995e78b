//! `mbms bench rekey --plot FILE.svg` over the real binaries, at 200 UEs
//! with 30 % loss so that retransmissions show: the chart is well-formed
//! SVG with its axes, series, bars and legend, and its totals agree with
//! the JSON report of the same run. No timing is asserted.

use std::process::Command;

fn by_id<'a, 'i>(doc: &'a roxmltree::Document<'i>, id: &str) -> roxmltree::Node<'a, 'i> {
    doc.descendants()
        .find(|n| n.attribute("id") == Some(id))
        .unwrap_or_else(|| panic!("the chart has no element {id}"))
}

fn total(doc: &roxmltree::Document<'_>, id: &str) -> u64 {
    let v = by_id(doc, id).attribute("data-total").unwrap();
    v.parse::<f64>()
        .unwrap_or_else(|e| panic!("{id} data-total {v}: {e}")) as u64
}

#[test]
fn the_plot_of_a_lossy_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let svg_path = dir.path().join("rekey <&>.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args([
            "bench",
            "rekey",
            "--json",
            "--timeout",
            "120",
            "--ues",
            "200",
        ])
        .args(["--loss", "0.3", "--retransmit-initial-ms", "300"])
        .args(["--request-after", "2", "--seed", "7", "--plot"])
        .arg(&svg_path)
        .output()
        .expect("run mbms bench rekey");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mbms bench rekey --plot failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    // The JSON report keeps its schema: the timeline is only drawn.
    assert_eq!(r["schema"], "mbms-bench-rekey/1");
    assert!(r.get("timeline").is_none(), "{r}");

    let svg = std::fs::read_to_string(&svg_path).expect("the chart was written");
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let title = by_id(&doc, "title").text().unwrap();
    assert!(
        title.starts_with("mbms bench rekey: 200 UEs, rekey "),
        "{title}"
    );
    // The command line as typed, the file name with its quoting and the
    // XML escaping undone by the parser.
    let cmd = by_id(&doc, "command")
        .children()
        .filter_map(|l| l.text())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(cmd.starts_with("$ mbms bench rekey --json"), "{cmd}");
    assert!(cmd.contains("--loss 0.3"), "{cmd}");
    assert!(cmd.contains("rekey <&>.svg'"), "{cmd}");
    assert!(by_id(&doc, "facts").text().unwrap().contains("--loss 0.3"));
    for id in ["x-axis", "y-axis", "legend", "rekey-end", "n-line"] {
        by_id(&doc, id);
    }

    // Every UE ends holding the new MSK, on the chart too.
    assert_eq!(total(&doc, "series-holding"), 200);
    // Retransmissions show: the BM-SC counted some, and the swarm saw
    // MSK messages arrive again for their UEs.
    let retx = r["rekey"]["retransmissions"].as_u64().unwrap();
    assert!(retx > 0, "{r}");
    assert!(total(&doc, "series-retransmissions") > 0);
    assert!(total(&doc, "bars-again") > 0, "no MSK message seen twice");
    assert!(by_id(&doc, "bars-again")
        .children()
        .any(|n| n.has_tag_name("rect")));
    // The loss is marked, in both directions, and agrees with the
    // swarm's counters of the same rotation: the recording starts just
    // after the report's counters are read, while the BM-SC may still be
    // retransmitting the MSKs of the registrations (their acknowledgements
    // were lost too), so allow for one batch (udp::BATCH) either way.
    let near = |a: u64, b: u64| a <= b + 64 && a + 64 >= b;
    let swarm = &r["rekey"]["swarm"];
    let dropped_in = swarm["dropped_in"].as_u64().unwrap();
    assert!(dropped_in > 0, "{r}");
    assert!(total(&doc, "bars-lost-in") > 0);
    assert!(near(total(&doc, "bars-lost-in"), dropped_in), "{r}");
    let dropped_out = swarm["dropped_out"].as_u64().unwrap();
    assert!(near(total(&doc, "bars-lost-out"), dropped_out), "{r}");
    let on_chart = total(&doc, "bars-first")
        + total(&doc, "bars-again")
        + total(&doc, "bars-lost-in")
        + total(&doc, "earlier");
    let counted = swarm["datagrams_received"].as_u64().unwrap()
        - swarm["unknown_idr"].as_u64().unwrap()
        - swarm["refused"].as_u64().unwrap();
    assert!(
        near(on_chart, counted),
        "{on_chart} on the chart, {counted} counted: {r}"
    );
    // Self-contained.
    assert!(!svg.contains("<script") && !svg.contains("href="));
}
