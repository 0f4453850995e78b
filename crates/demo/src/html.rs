//! The report page of `mbms demo --report FILE.html` (issue 15,
//! "Pictures"): one self-contained HTML page — inline CSS and inline SVG,
//! no script, no font or image to fetch — with the results table and a
//! sequence chart per procedure drawn from the run's [`Recording`], in the
//! manner of the seeds' figures 6.1 to 6.3a (UE, BM-SC and BSF lanes; HTTP
//! and MIKEY arrows labelled with their key identifiers and times).
//!
//! The markup is well-formed XML as well as HTML (every element closed,
//! attributes quoted, only the five XML entities), so an XML parser reads
//! it; every text from the run is escaped.

use std::fmt::Write as _;

use crate::record::{Arrow, Chart, Item, Lane, Note, Recording, Style};
use crate::DemoReport;

/// Width of a chart.
const WIDTH: f64 = 1200.0;
/// Left edge of the time column.
const TIME_X: f64 = 10.0;
/// Lane positions (x of the lifelines).
const LANE_X: [f64; 3] = [290.0, 720.0, 1070.0];
/// Top of the lifelines (below the lane heads).
const HEAD_BOTTOM: f64 = 62.0;
/// Line height of label text.
const LINE: f64 = 15.0;
/// Average glyph width of the 12 px label font (for wrapping).
const GLYPH: f64 = 6.3;
/// Width of a note box.
const NOTE_W: f64 = 400.0;

/// Escapes text for HTML/XML character data and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // Characters XML cannot carry.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

fn lane_x(l: Lane) -> f64 {
    match l {
        Lane::Ue => LANE_X[0],
        Lane::Bmsc => LANE_X[1],
        Lane::Bsf => LANE_X[2],
    }
}

/// Greedy word wrap at `max` characters (longer words are cut).
fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(8);
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        let mut word = word.to_owned();
        while word.chars().count() > max {
            if !cur.is_empty() {
                lines.push(std::mem::take(&mut cur));
            }
            let head: String = word.chars().take(max).collect();
            word = word.chars().skip(max).collect();
            lines.push(head);
        }
        let need = cur.chars().count() + usize::from(!cur.is_empty()) + word.chars().count();
        if need > max && !cur.is_empty() {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&word);
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

fn secs(d: std::time::Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// The page: summary, results table, legend and one chart per procedure.
pub fn render_html(report: &DemoReport, rec: &Recording) -> String {
    let mut h = String::new();
    let verdict = if report.success { "SUCCESS" } else { "FAILED" };
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    let _ = writeln!(
        h,
        "<title>mbms demo: {} UEs, {}</title>",
        report.ues,
        esc(verdict)
    );
    h.push_str("<style>\n");
    h.push_str(CSS);
    h.push_str("</style>\n</head>\n<body>\n");
    let _ = writeln!(
        h,
        "<h1>mbms demo: {} UEs, <span class=\"{}\">{}</span></h1>",
        report.ues,
        if report.success { "ok" } else { "fail" },
        esc(verdict)
    );
    let _ = writeln!(
        h,
        "<p class=\"summary\">A BSF, a BM-SC and {} UEs on loopback through every procedure of 3GPP TS 33.246 \
         (MBMS security), in {:.1} s. Ports: MIKEY {}, MTK {}, SRTP {}{}. \
         Capture: {} datagrams ({} MIKEY, {} SRTP), {} MIKEY messages opened with the run's key log. \
         Page written by <code>mbms demo --report</code> (mbms {}).</p>",
        report.ues,
        report.wall_millis as f64 / 1000.0,
        report.mikey_port,
        report.mtk_port,
        report.srtp_port,
        if report.port_fallback {
            " (a default port was taken)"
        } else {
            ""
        },
        report.capture.datagrams,
        report.capture.mikey,
        report.capture.srtp,
        report.capture.mikey_opened,
        esc(env!("CARGO_PKG_VERSION")),
    );
    results_table(&mut h, report);
    h.push_str("<h2 id=\"charts\">Sequence charts</h2>\n");
    h.push_str(
        "<p>Drawn from the messages of this run: HTTP as seen by a recording proxy between the \
         UE and the BSF or BM-SC (and between the BM-SC and the BSF for Zn), MIKEY, MTK and SRTP \
         from the BM-SC's capture. Times are seconds from the start of the run. One UE per chart \
         (the demo may run many); MTK messages repeated with the same keys and SRTP packets are \
         drawn once with their count. No key is shown: only key identifiers.</p>\n",
    );
    legend(&mut h);
    h.push_str("<nav><ol>\n");
    for (i, c) in rec.charts.iter().enumerate() {
        let _ = writeln!(
            h,
            "<li><a href=\"#chart-{i}\">{}</a>: {}</li>",
            esc(c.procedure),
            esc(c.title)
        );
    }
    h.push_str("</ol></nav>\n");
    for (i, c) in rec.charts.iter().enumerate() {
        chart(&mut h, i, c);
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn results_table(h: &mut String, r: &DemoReport) {
    h.push_str("<h2 id=\"results\">Results</h2>\n<table class=\"results\">\n<thead><tr><th>#</th><th>procedure</th><th>succeeded</th><th>time</th><th>seed clause</th><th>detail</th></tr></thead>\n<tbody>\n");
    for (i, p) in r.procedures.iter().enumerate() {
        let ok = p.ok();
        let _ = writeln!(
            h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td class=\"num\">{} {}/{}</td><td class=\"num\">{:.2} s</td><td>{}</td><td>{}</td></tr>",
            if ok { "ok" } else { "fail" },
            i + 1,
            esc(p.procedure),
            if ok { "\u{2713}" } else { "\u{2717}" },
            p.succeeded,
            p.total,
            p.millis as f64 / 1000.0,
            esc(p.clause),
            esc(p.detail.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

fn legend(h: &mut String) {
    let items: [(Style, &str); 7] = [
        (Style::Http, "HTTP request"),
        (Style::HttpAnswer, "HTTP answer"),
        (Style::Mikey, "MIKEY message"),
        (Style::MikeyAck, "MIKEY acknowledgement"),
        (Style::Srtp, "SRTP packets"),
        (Style::File, "file handed over"),
        (Style::Dropped, "dropped (UE offline)"),
    ];
    let w = WIDTH;
    let _ = writeln!(
        h,
        "<svg class=\"legend\" width=\"{w}\" height=\"34\" viewBox=\"0 0 {w} 34\" role=\"img\" aria-label=\"legend\">"
    );
    let mut x = 10.0;
    for (st, label) in items.iter() {
        let _ = writeln!(
            h,
            "<line class=\"{}\" x1=\"{x}\" y1=\"17\" x2=\"{}\" y2=\"17\"/>{}<text class=\"legend-text\" x=\"{}\" y=\"21\">{}</text>",
            st.name(),
            x + 40.0,
            head(x + 40.0, 17.0, 1.0, *st),
            x + 48.0,
            esc(label)
        );
        x += 48.0 + label.chars().count() as f64 * 6.6 + 22.0;
    }
    h.push_str("</svg>\n");
}

/// An arrowhead with its tip at (x, y) pointing in direction `dir` (+1
/// right, -1 left).
fn head(x: f64, y: f64, dir: f64, st: Style) -> String {
    format!(
        "<polygon class=\"head-{}\" points=\"{x:.1},{y:.1} {:.1},{:.1} {:.1},{:.1}\"/>",
        st.name(),
        x - dir * 10.0,
        y - 5.0,
        x - dir * 10.0,
        y + 5.0
    )
}

/// One laid-out row of a chart.
enum Row<'a> {
    Arrow(&'a Arrow, Vec<String>),
    Note(&'a Note, Vec<String>),
}

impl Row<'_> {
    fn height(&self) -> f64 {
        match self {
            Row::Arrow(_, lines) => lines.len() as f64 * LINE + 24.0,
            Row::Note(_, lines) => lines.len() as f64 * LINE + 22.0,
        }
    }
}

fn arrow_lines(a: &Arrow) -> Vec<String> {
    let span = (lane_x(a.to) - lane_x(a.from)).abs();
    let max = ((span - 30.0) / GLYPH) as usize;
    let mut lines = wrap(&a.title, max);
    for d in &a.details {
        lines.extend(wrap(d, max));
    }
    lines
}

fn chart(h: &mut String, i: usize, c: &Chart) {
    let rows: Vec<Row<'_>> = c
        .items
        .iter()
        .map(|it| match it {
            Item::Arrow(a) => Row::Arrow(a, arrow_lines(a)),
            Item::Note(n) => Row::Note(n, wrap(&n.text, ((NOTE_W - 20.0) / GLYPH) as usize)),
        })
        .collect();
    let body: f64 = rows.iter().map(Row::height).sum();
    let empty = rows.is_empty();
    let height = HEAD_BOTTOM + 16.0 + body + if empty { 50.0 } else { 0.0 } + 18.0;
    let _ = writeln!(
        h,
        "<section class=\"chart\" id=\"chart-{i}\">\n<h3>{}. {} <span class=\"proc\">({})</span></h3>\n<p class=\"ref\">Seed reference: {}. {}.</p>",
        i + 1,
        esc(c.title),
        esc(c.procedure),
        esc(c.reference),
        esc(&c.ue)
    );
    let _ = writeln!(
        h,
        "<svg class=\"chart\" data-procedure=\"{}\" width=\"{WIDTH}\" height=\"{height:.0}\" viewBox=\"0 0 {WIDTH} {height:.0}\" role=\"img\" aria-label=\"{}\">",
        esc(c.procedure),
        esc(&format!("sequence chart: {}", c.title))
    );
    let _ = writeln!(h, "<title>{}</title>", esc(c.title));
    // Lane heads and lifelines.
    let ue_sub =
        c.ue.split_once(" (")
            .map(|(_, rest)| rest.trim_end_matches(')').to_owned())
            .unwrap_or_default();
    let heads = [
        (
            Lane::Ue,
            c.ue.split(" (").next().unwrap_or("UE").to_owned(),
            ue_sub,
        ),
        (Lane::Bmsc, "BM-SC".to_owned(), crate::BMSC_FQDN.to_owned()),
        (Lane::Bsf, "BSF".to_owned(), crate::BSF_FQDN.to_owned()),
    ];
    let bottom = height - 10.0;
    for (lane, name, sub) in &heads {
        let x = lane_x(*lane);
        let w = 250.0;
        let _ = writeln!(
            h,
            "<g class=\"lane\" data-lane=\"{}\"><line class=\"lifeline\" x1=\"{x}\" y1=\"{HEAD_BOTTOM}\" x2=\"{x}\" y2=\"{bottom:.0}\"/><rect class=\"lane-head\" x=\"{:.1}\" y=\"8\" width=\"{w}\" height=\"{:.0}\" rx=\"6\"/><text class=\"lane-name\" x=\"{x}\" y=\"29\">{}</text><text class=\"lane-sub\" x=\"{x}\" y=\"47\">{}</text></g>",
            esc(lane.name()),
            x - w / 2.0,
            HEAD_BOTTOM - 8.0,
            esc(name),
            esc(sub)
        );
    }
    let mut y = HEAD_BOTTOM + 16.0;
    if empty {
        let _ = writeln!(
            h,
            "<text class=\"empty\" x=\"{}\" y=\"{:.0}\">no message of this UE was seen in this procedure</text>",
            LANE_X[1],
            y + 24.0
        );
    }
    for r in &rows {
        match r {
            Row::Arrow(a, lines) => draw_arrow(h, a, lines, y),
            Row::Note(n, lines) => draw_note(h, n, lines, y),
        }
        y += r.height();
    }
    h.push_str("</svg>\n</section>\n");
}

fn draw_arrow(h: &mut String, a: &Arrow, lines: &[String], y: f64) {
    let (x1, x2) = (lane_x(a.from), lane_x(a.to));
    let dir = if x2 >= x1 { 1.0 } else { -1.0 };
    let ya = y + lines.len() as f64 * LINE + 8.0;
    let mid = (x1 + x2) / 2.0;
    let tip = if a.style == Style::Dropped {
        x2 - dir * 60.0
    } else {
        x2 - dir * 1.5
    };
    let full = std::iter::once(a.title.as_str())
        .chain(a.details.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("\n");
    let _ = write!(
        h,
        "<g class=\"arrow\" data-kind=\"{}\" data-from=\"{}\" data-to=\"{}\" data-title=\"{}\"><title>{} {}\n{}</title>",
        a.style.name(),
        esc(a.from.name()),
        esc(a.to.name()),
        esc(&a.title),
        esc(&secs(a.at)),
        esc(&format!("{} \u{2192} {}", a.from.name(), a.to.name())),
        esc(&full)
    );
    let _ = write!(
        h,
        "<text class=\"time\" x=\"{TIME_X}\" y=\"{:.1}\">{}</text>",
        ya + 4.0,
        esc(&secs(a.at))
    );
    let _ = write!(
        h,
        "<line class=\"{}\" x1=\"{x1:.1}\" y1=\"{ya:.1}\" x2=\"{tip:.1}\" y2=\"{ya:.1}\"/>{}",
        a.style.name(),
        head(tip, ya, dir, a.style)
    );
    if a.style == Style::Dropped {
        let cx = tip + dir * 16.0;
        let _ = write!(
            h,
            "<path class=\"cross\" d=\"M{:.1},{:.1} L{:.1},{:.1} M{:.1},{:.1} L{:.1},{:.1}\"/>",
            cx - 6.0,
            ya - 6.0,
            cx + 6.0,
            ya + 6.0,
            cx - 6.0,
            ya + 6.0,
            cx + 6.0,
            ya - 6.0
        );
    }
    for (k, l) in lines.iter().enumerate() {
        let class = if k == 0 { "label-title" } else { "label" };
        let _ = write!(
            h,
            "<text class=\"{class} {}\" x=\"{mid:.1}\" y=\"{:.1}\">{}</text>",
            a.style.name(),
            y + (k as f64 + 1.0) * LINE - 3.0,
            esc(l)
        );
    }
    h.push_str("</g>\n");
}

fn draw_note(h: &mut String, n: &Note, lines: &[String], y: f64) {
    let cx = lane_x(n.lane).clamp(110.0 + NOTE_W / 2.0, WIDTH - 10.0 - NOTE_W / 2.0);
    let bh = lines.len() as f64 * LINE + 10.0;
    let top = y + 4.0;
    let _ = write!(
        h,
        "<g class=\"note\" data-lane=\"{}\"><title>{} {}: {}</title><text class=\"time\" x=\"{TIME_X}\" y=\"{:.1}\">{}</text><rect class=\"note-box\" x=\"{:.1}\" y=\"{top:.1}\" width=\"{NOTE_W}\" height=\"{bh:.1}\" rx=\"4\"/>",
        esc(n.lane.name()),
        esc(&secs(n.at)),
        esc(n.lane.name()),
        esc(&n.text),
        top + 15.0,
        esc(&secs(n.at)),
        cx - NOTE_W / 2.0,
    );
    for (k, l) in lines.iter().enumerate() {
        let _ = write!(
            h,
            "<text class=\"note-text\" x=\"{cx:.1}\" y=\"{:.1}\">{}</text>",
            top + 5.0 + (k as f64 + 1.0) * LINE - 3.0,
            esc(l)
        );
    }
    h.push_str("</g>\n");
}

/// The page's style sheet (inline: the page needs nothing from outside).
const CSS: &str = r#"body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color: #1a1a1a; max-width: 1220px; margin: 1.5em auto; padding: 0 10px; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1em; margin: 1.8em 0 0.2em 0; }
h3 .proc { font-weight: normal; color: #555; }
p.ref { margin: 0 0 0.5em 0; color: #444; font-size: 0.92em; }
.ok { color: #166534; }
.fail { color: #b91c1c; }
code { font-family: "DejaVu Sans Mono", monospace; }
table.results { border-collapse: collapse; font-size: 0.92em; }
table.results th, table.results td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
table.results th { background: #f1f1f1; }
table.results td.num { text-align: right; white-space: nowrap; }
table.results tr.fail td { background: #fde8e8; }
nav ol { columns: 2; font-size: 0.92em; }
section.chart { break-inside: avoid; }
svg.chart { display: block; background: #fff; border: 1px solid #ddd; border-radius: 4px; }
svg text { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; font-size: 12px; }
.lane-head { fill: #eef2f7; stroke: #50607a; stroke-width: 1.2; }
.lane-name { font-weight: bold; font-size: 14px; text-anchor: middle; }
.lane-sub { font-size: 11px; fill: #444; text-anchor: middle; }
.lifeline { stroke: #8a94a6; stroke-width: 1.2; stroke-dasharray: 6 4; }
.time { fill: #555; font-size: 11px; font-family: "DejaVu Sans Mono", monospace; }
.label, .label-title { text-anchor: middle; paint-order: stroke; stroke: #fff; stroke-width: 4px; stroke-linejoin: round; }
.label { fill: #333; font-size: 11.5px; }
.label-title { font-weight: bold; }
.empty { fill: #777; text-anchor: middle; font-style: italic; }
line.http, line.http-answer { stroke: #1d4ed8; stroke-width: 1.6; }
line.http-answer, line.mikey-ack { stroke-dasharray: 7 4; }
line.mikey, line.mikey-ack { stroke: #15803d; stroke-width: 1.8; }
line.srtp { stroke: #b45309; stroke-width: 3; }
line.file { stroke: #7e22ce; stroke-width: 2; stroke-dasharray: 2 3; }
line.dropped { stroke: #b91c1c; stroke-width: 1.8; }
.head-http, .head-http-answer { fill: #1d4ed8; }
.head-mikey, .head-mikey-ack { fill: #15803d; }
.head-srtp { fill: #b45309; }
.head-file { fill: #7e22ce; }
.head-dropped { fill: #b91c1c; }
.label-title.http, .label-title.http-answer { fill: #1d3f9e; }
.label-title.mikey, .label-title.mikey-ack { fill: #11632f; }
.label-title.srtp { fill: #8a4508; }
.label-title.file { fill: #6b1fa8; }
.label-title.dropped { fill: #b91c1c; }
.cross { stroke: #b91c1c; stroke-width: 2.5; fill: none; }
.note-box { fill: #fef9c3; stroke: #ca8a04; stroke-width: 1; }
.note-text { text-anchor: middle; font-size: 11.5px; fill: #3f3200; }
.legend-text { font-size: 12px; fill: #333; }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(esc("a\u{1}b"), "a\u{fffd}b");
    }

    #[test]
    fn wrapping_keeps_words_and_cuts_long_ones() {
        assert_eq!(wrap("aaa bbb ccc", 8), vec!["aaa bbb", "ccc"]);
        let long = "x".repeat(20);
        let w = wrap(&long, 8);
        assert_eq!(w.concat(), long);
        assert!(w.iter().all(|l| l.chars().count() <= 8));
        assert_eq!(wrap("", 10), vec![""]);
    }

    #[test]
    fn text_from_the_run_is_escaped_in_the_charts() {
        let rec = Recording {
            charts: vec![Chart {
                procedure: "bootstrapping",
                title: "t",
                reference: "r",
                ue: "UE 1 (<script>, 127.0.1.2)".into(),
                items: vec![
                    Item::Arrow(Arrow {
                        at: Duration::from_millis(1234),
                        from: Lane::Ue,
                        to: Lane::Bsf,
                        style: Style::Http,
                        title: "GET /?a=<b>&c".into(),
                        details: vec!["\"quoted\" 'x'".into()],
                    }),
                    Item::Note(Note {
                        at: Duration::from_millis(2000),
                        lane: Lane::Bmsc,
                        text: "</svg><script>alert(1)</script>".into(),
                    }),
                ],
            }],
        };
        let mut h = String::new();
        chart(&mut h, 0, &rec.charts[0]);
        assert!(!h.contains("<script>"), "{h}");
        assert!(!h.contains("<b>"), "{h}");
        assert!(h.contains("GET /?a=&lt;b&gt;&amp;c"), "{h}");
        assert!(h.contains("1.234 s"), "{h}");
        let doc = roxmltree::Document::parse(&h).expect("well-formed");
        let svg = doc.root_element();
        assert_eq!(svg.tag_name().name(), "section");
        assert_eq!(
            doc.descendants()
                .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("arrow"))
                .count(),
            1
        );
    }
}
