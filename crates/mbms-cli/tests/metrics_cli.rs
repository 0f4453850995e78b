//! `GET /metrics` of a live `mbms bmsc` (the example configuration on free
//! loopback ports), scraped before any event: the Content-Type matches the
//! body (OpenMetrics when asked for in `Accept`, else the Prometheus text
//! format 0.0.4), every family has HELP and TYPE, and the series exported
//! are exactly those documented in docs/bmsc.md, every label value from
//! the start. `promtool check metrics` (Debian package `prometheus`) checks
//! the text exposition where it is installed; `.ci/run` installs it and
//! sets `MBMS_REQUIRE_PROMTOOL=1` so that the check cannot be skipped there.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/bmsc.md");

/// What Prometheus 2.x sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Bmsc(Child);

impl Drop for Bmsc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mbms bmsc` from examples/bmsc.toml in `dir`, its RTP input moved to a
/// free port and its HTTP and MIKEY sockets on port 0; returns the HTTP
/// port once it serves.
fn start_bmsc(dir: &std::path::Path) -> (Bmsc, u16) {
    let cfg = std::fs::read_to_string(format!("{EXAMPLES}/bmsc.toml"))
        .unwrap()
        .replace("127.0.0.1:5004", &format!("127.0.0.1:{}", free_udp_port()));
    let cfg_path = dir.join("bmsc.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mbms"))
        .args(["bmsc", "--config"])
        .arg(&cfg_path)
        .args(["--listen", "127.0.0.1:0", "--mikey-listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let child = Bmsc(child);
    let port = loop {
        let line = lines.next().expect("mbms bmsc exited").unwrap();
        if let Some(rest) = line.split("http=127.0.0.1:").nth(1) {
            break rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, port)
}

/// `GET /metrics` over a plain HTTP/1.1 connection: (Content-Type, body).
fn scrape(port: u16, accept: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let content_type = header("content-type").expect("a Content-Type");
    assert_eq!(header("vary").as_deref(), Some("accept"), "{head}");
    (content_type, body.to_owned())
}

type Series = (String, BTreeSet<(String, String)>);

/// The samples of an exposition: (name, labels) -> value.
fn samples(body: &str) -> BTreeMap<Series, String> {
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let labels = rest
                    .strip_suffix('}')
                    .unwrap()
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (n.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeSet::new()),
        };
        assert!(
            out.insert((name, labels), value.to_owned()).is_none(),
            "{line} twice"
        );
    }
    out
}

/// The series of docs/bmsc.md's metrics table, for the example
/// configuration (streaming session `news-live`, download session
/// `news-files`).
fn documented_series() -> BTreeSet<Series> {
    let docs = std::fs::read_to_string(DOCS).unwrap();
    let table = docs
        .split("<!-- metrics:begin")
        .nth(1)
        .and_then(|t| t.split("<!-- metrics:end -->").next())
        .expect("the metrics table in docs/bmsc.md");
    let mut out = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `bmsc_")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_owned();
        // Label sets: the cartesian product of each label's values.
        let mut sets: Vec<BTreeSet<(String, String)>> = vec![BTreeSet::new()];
        for label in cells[2].split(';').filter(|l| !l.trim().is_empty()) {
            let (key, values) = label.split_once(':').unwrap();
            let key = key.trim().trim_matches('`');
            let values: Vec<&str> = match values.trim() {
                "every session" => vec!["news-live", "news-files"],
                "streaming sessions" => vec!["news-live"],
                "download sessions" => vec!["news-files"],
                v => v.split(',').map(str::trim).collect(),
            };
            sets = sets
                .iter()
                .flat_map(|s| {
                    values.iter().map(move |v| {
                        let mut s = s.clone();
                        s.insert((key.to_owned(), (*v).to_owned()));
                        s
                    })
                })
                .collect();
        }
        for s in sets {
            out.insert((name.clone(), s));
        }
    }
    assert!(out.len() > 60, "{out:?}");
    out
}

/// Every family announced with HELP (non-empty) and TYPE; returns the
/// (family name, type) pairs.
fn families(body: &str) -> BTreeMap<String, String> {
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap();
            assert!(!text.trim().is_empty(), "empty HELP: {line}");
            help.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), ty.to_owned());
        }
    }
    assert_eq!(
        help,
        types.keys().cloned().collect::<BTreeSet<_>>(),
        "HELP and TYPE for every family"
    );
    types
}

#[test]
fn metrics_content_type_help_and_every_documented_series_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_bmsc, port) = start_bmsc(dir.path());
    let documented = documented_series();

    // OpenMetrics, as Prometheus asks for it.
    let (ct, om) = scrape(port, Some(PROMETHEUS_ACCEPT));
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(om.matches("# EOF").count(), 1);
    let om_families = families(&om);
    let om_samples = samples(&om);
    for (name, _) in om_samples.keys() {
        let family = match om_families.get(name) {
            Some(_) => name.as_str(),
            None => name.strip_suffix("_total").unwrap_or(name),
        };
        assert!(om_families.contains_key(family), "{name}: no HELP/TYPE");
    }
    let exported: BTreeSet<Series> = om_samples.keys().cloned().collect();
    assert_eq!(
        exported, documented,
        "exported (left) and documented in docs/bmsc.md (right) differ"
    );

    // The Prometheus text format for anyone else (curl, promtool).
    for accept in [None, Some("*/*"), Some("text/plain;version=0.0.4")] {
        let (ct, text) = scrape(port, accept);
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8", "{accept:?}");
        assert!(!text.contains("# EOF"), "{text}");
        let text_families = families(&text);
        let text_samples = samples(&text);
        // Each sample is announced under its own name.
        for (name, _) in text_samples.keys() {
            assert!(text_families.contains_key(name), "{name}: no HELP/TYPE");
        }
        for (name, ty) in &text_families {
            assert_eq!(ty == "counter", name.ends_with("_total"), "{name} {ty}");
        }
        assert_eq!(
            text_samples.keys().cloned().collect::<BTreeSet<_>>(),
            documented
        );
    }

    // promtool check metrics on the live text exposition.
    let (_, text) = scrape(port, None);
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut p) => {
            p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = p.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => {
            assert!(
                std::env::var_os("MBMS_REQUIRE_PROMTOOL").is_none(),
                "MBMS_REQUIRE_PROMTOOL is set but promtool cannot run: {e}"
            );
            eprintln!("skipped: promtool check metrics (promtool not installed: {e})");
        }
    }
}
