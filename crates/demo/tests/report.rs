//! The report page of `mbms demo --report` (issue 15, "Pictures"), from a
//! run with 3 UEs through the library: the page parses (it is well-formed
//! XML as well as HTML, read here with `roxmltree`), holds one chart
//! (`<svg>`) per procedure with the arrows that procedure must have, the
//! results table, none of the run's keys, and nothing that needs the
//! network. Hermetic: free ports, temporary folders.

use base64::Engine as _;
use mbms_demo::{render_html, run_with_recording, DemoOptions, DemoPorts, PROCEDURES};

/// An arrow of a chart as the page names it.
#[derive(Debug)]
struct Drawn {
    kind: String,
    from: String,
    to: String,
    title: String,
    /// The tooltip: time, lanes, title and every detail line.
    full: String,
}

/// (kind, from, to, text in the title) that a chart must contain.
type Need = (&'static str, &'static str, &'static str, &'static str);

const UE: &str = "UE";
const BMSC: &str = "BM-SC";
const BSF: &str = "BSF";

fn needed(procedure: &str) -> Vec<Need> {
    let ua = |rt: &'static str| ("http", UE, BMSC, rt);
    let ok = ("http-answer", BMSC, UE, "HTTP 200");
    let msk = ("mikey", BMSC, UE, "MIKEY MSK delivery");
    let ack = ("mikey-ack", UE, BMSC, "MIKEY acknowledgement");
    match procedure {
        "bootstrapping" => vec![
            ("http", UE, BSF, "HTTP GET / (Ub)"),
            ("http-answer", BSF, UE, "HTTP 401"),
            ("http-answer", BSF, UE, "HTTP 200"),
        ],
        "registration" => vec![
            ua("requesttype=register"),
            ok,
            ("http", BMSC, BSF, "(Zn)"),
            ("http-answer", BSF, BMSC, "HTTP 200"),
        ],
        "msk push + ack" | "key group rotation" => vec![msk, ack],
        "basic msk request" => vec![ua("requesttype=msk-request"), ok, msk, ack],
        "solicited pull" => vec![
            ("mikey", BMSC, UE, "MIKEY solicited pull"),
            ua("requesttype=msk-request"),
            ok,
            msk,
            ack,
        ],
        "4-way + charging" => vec![msk, ack],
        "mtk + srtp stream" => vec![
            ("mikey", BMSC, UE, "MIKEY MTK delivery"),
            ("srtp", BMSC, UE, "SRTP / UDP"),
        ],
        "mtk + download" => vec![("file", BMSC, UE, "download object")],
        "missed key update" => vec![
            ("dropped", BMSC, UE, "MIKEY MSK delivery"),
            ua("requesttype=msk-request"),
            ok,
            msk,
            ack,
            ("srtp", BMSC, UE, "SRTP / UDP"),
        ],
        "deregistration" => vec![ua("requesttype=deregister"), ok],
        other => panic!("no chart expected for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_page_charts_every_procedure_without_keys_or_network() {
    let dir = tempfile::tempdir().unwrap();
    let keylog = dir.path().join("demo.keys");
    let opts = DemoOptions {
        ues: 3,
        pcap: None,
        keylog: Some(keylog.clone()),
        work_dir: None,
        ports: DemoPorts::DEFAULT,
        free_ports: true,
        ..Default::default()
    };
    let (report, rec) = run_with_recording(opts, &|_| {}).await.unwrap();
    let table = mbms_demo::render_table(&report);
    assert!(report.success, "{table}");
    let html = render_html(&report, &rec);
    std::fs::write(dir.path().join("report.html"), &html).unwrap();

    // It parses.
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&html, opt).expect("the page is well-formed");
    assert_eq!(doc.root_element().tag_name().name(), "html");

    // The results table: a row per procedure.
    let rows = doc
        .descendants()
        .filter(|n| n.has_tag_name("tbody"))
        .flat_map(|t| t.children().filter(|r| r.has_tag_name("tr")))
        .count();
    assert_eq!(rows, PROCEDURES.len());

    // One chart per procedure (every one but the capture check), in order.
    let charts: Vec<roxmltree::Node<'_, '_>> = doc
        .descendants()
        .filter(|n| n.has_tag_name("svg") && n.attribute("class") == Some("chart"))
        .collect();
    let names: Vec<&str> = charts
        .iter()
        .map(|c| c.attribute("data-procedure").unwrap_or(""))
        .collect();
    assert_eq!(names, PROCEDURES[..PROCEDURES.len() - 1].to_vec());

    for c in &charts {
        let procedure = c.attribute("data-procedure").unwrap();
        let drawn: Vec<Drawn> = c
            .descendants()
            .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("arrow"))
            .map(|g| Drawn {
                kind: g.attribute("data-kind").unwrap_or("").to_owned(),
                from: g.attribute("data-from").unwrap_or("").to_owned(),
                to: g.attribute("data-to").unwrap_or("").to_owned(),
                title: g.attribute("data-title").unwrap_or("").to_owned(),
                full: g
                    .children()
                    .find(|t| t.has_tag_name("title"))
                    .and_then(|t| t.text())
                    .unwrap_or("")
                    .to_owned(),
            })
            .collect();
        for (kind, from, to, text) in needed(procedure) {
            assert!(
                drawn.iter().any(|d| d.kind == kind
                    && d.from == from
                    && d.to == to
                    && d.title.contains(text)),
                "{procedure}: no {kind} arrow {from} -> {to} \"{text}\" among {drawn:#?}"
            );
        }
        // Every arrow has its time and MIKEY arrows their key identifiers.
        for d in &drawn {
            assert!(d.full.contains(" s "), "{procedure}: no time in {d:?}");
            if d.title.contains("MIKEY MSK delivery") || d.title.contains("acknowledgement") {
                assert!(
                    d.full.contains("MSK ID ") && d.full.contains("counter "),
                    "{procedure}: {d:?}"
                );
            }
            if d.title.contains("MSK delivery") {
                assert!(d.full.contains("V=1") && d.full.contains("B-TID "), "{d:?}");
            }
            if d.title.contains("MTK delivery") {
                assert!(d.full.contains("MTK ID "), "{d:?}");
            }
        }
        let notes: Vec<String> = c
            .descendants()
            .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("note"))
            .filter_map(|g| g.children().find(|t| t.has_tag_name("title")))
            .filter_map(|t| t.text().map(str::to_owned))
            .collect();
        match procedure {
            // Seed 004 figure 6.3a: the inactive MSK, then the activation,
            // and the charging record of the acknowledgement.
            "4-way + charging" => {
                let msks: Vec<&Drawn> = drawn
                    .iter()
                    .filter(|d| d.title.contains("MSK delivery"))
                    .collect();
                let inactive = msks.iter().position(|d| d.full.contains("inactive"));
                let active = msks.iter().rposition(|d| d.full.contains("activation"));
                assert!(
                    inactive.is_some() && active > inactive,
                    "inactive MSK then activation: {msks:#?}"
                );
                assert!(
                    notes.iter().any(|n| n.contains("charging record")),
                    "{notes:?}"
                );
            }
            // No push reaches the UE after its deregistration.
            "deregistration" => {
                assert!(
                    !drawn.iter().any(|d| d.kind.starts_with("mikey")),
                    "{drawn:#?}"
                );
                assert!(
                    notes
                        .iter()
                        .any(|n| n.contains("0 MIKEY datagrams to this UE")),
                    "{notes:?}"
                );
            }
            "missed key update" => {
                assert!(notes.iter().any(|n| n.contains("offline")), "{notes:?}");
            }
            _ => {}
        }
    }

    // No key of the run: neither the key log's MUKs, MSKs, MTKs and salts
    // (in hex or Base64) nor any 128-bit or longer hex string at all (K,
    // OPc, Ks, Ks_NAF would be one).
    let log = std::fs::read_to_string(&keylog).unwrap();
    let mut secrets = Vec::new();
    for l in log.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.first() {
            Some(&"MUK") | Some(&"MSK") => secrets.push(f[3].to_owned()),
            Some(&"MTK") => secrets.extend([f[4].to_owned(), f[5].to_owned()]),
            _ => {}
        }
    }
    assert!(secrets.len() >= 6, "{log}");
    let lower = html.to_lowercase();
    for s in &secrets {
        let bytes = hex::decode(s).unwrap();
        assert!(!lower.contains(&s.to_lowercase()), "key {s} in the page");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert!(
            !html.contains(b64.trim_end_matches('=')),
            "key {s} (Base64) in the page"
        );
    }
    let mut run = 0;
    for ch in html.chars() {
        run = if ch.is_ascii_hexdigit() { run + 1 } else { 0 };
        assert!(run < 32, "a hex string of 128 bits or more in the page");
    }

    // Nothing to fetch: no script, stylesheet, image, frame or font, and no
    // attribute pointing outside the page (links are in-page fragments).
    for n in doc.descendants().filter(|n| n.is_element()) {
        let name = n.tag_name().name();
        assert!(
            !matches!(
                name,
                "script"
                    | "link"
                    | "img"
                    | "iframe"
                    | "object"
                    | "embed"
                    | "image"
                    | "use"
                    | "audio"
                    | "video"
            ),
            "<{name}> in the page"
        );
        for a in n.attributes() {
            let v = a.value().trim().to_lowercase();
            assert!(
                !v.contains("http://") && !v.contains("https://") && !v.starts_with("//"),
                "<{name} {}=\"{v}\">",
                a.name()
            );
            if a.name() == "href" {
                assert!(v.starts_with('#'), "<{name} href=\"{v}\">");
            }
        }
        if name == "style" {
            let css = n.text().unwrap_or("").to_lowercase();
            assert!(!css.contains("url(") && !css.contains("@import"), "{css}");
        }
    }
}
