//! The chart of `mbms bench rekey --plot FILE.svg`: one self-contained
//! SVG (no script, no external font or image) of a rotation's
//! [`RekeyTimeline`].
//!
//! - Upper panel, cumulative, against seconds since the rotation request:
//!   UEs holding the new MSK (swarm), acknowledgements processed, MSK
//!   messages sent and MSK retransmissions (the BM-SC's counters, sampled
//!   from `/metrics`), the line of N UEs and the end of the rekey.
//! - Lower panel, per time bin: MSK messages reaching the UEs, split into
//!   the first for each UE and the ones sent again (retransmissions,
//!   answers to MSK requests) above the axis, and datagrams dropped by
//!   `--loss` (MSK messages, acknowledgements) below it.
//! - MSK requests over Ua as vertical lines through both panels, a legend
//!   and the run's figures on the right.
//!
//! Rendering is pure: the input is the report's figures and timeline, the
//! output a string. See docs/bench.md.

use std::fmt::Write as _;

use crate::rekey::RekeyReport;
use crate::timeline::RekeyTimeline;

/// What the chart shows.
#[derive(Clone, Copy, Debug)]
pub struct RekeyPlot<'a> {
    /// UEs.
    pub ues: usize,
    /// `--loss` (fraction per direction).
    pub loss: f64,
    /// Rekey time, seconds (rotation request to the last acknowledgement
    /// processed).
    pub rekey_s: f64,
    /// Seconds until every UE held the new MSK.
    pub all_hold_s: f64,
    /// UEs holding the new MSK at the end.
    pub ues_holding: usize,
    /// BM-SC MSK messages sent during the rekey.
    pub messages_sent: u64,
    /// BM-SC MSK retransmissions during the rekey.
    pub retransmissions: u64,
    /// BM-SC acknowledgements processed during the rekey.
    pub acks_processed: u64,
    /// The command that produced the run, as typed.
    pub command_line: &'a str,
    /// The recorded timeline.
    pub timeline: &'a RekeyTimeline,
}

impl<'a> RekeyPlot<'a> {
    /// The chart of a report; `None` when it holds no timeline (the run
    /// was not asked to record one).
    pub fn from_report(r: &'a RekeyReport, command_line: &'a str) -> Option<Self> {
        Some(RekeyPlot {
            ues: r.ues,
            loss: r.loss,
            rekey_s: r.rekey.seconds,
            all_hold_s: r.rekey.all_hold_s,
            ues_holding: r.rekey.ues_holding,
            messages_sent: r.rekey.messages_sent,
            retransmissions: r.rekey.retransmissions,
            acks_processed: r.rekey.acks_processed,
            command_line,
            timeline: r.timeline.as_ref()?,
        })
    }

    /// The SVG document.
    pub fn svg(&self) -> String {
        Chart::new(self).render()
    }
}

/// Escapes text for XML character data and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A command line for display: the program's file name, then the
/// arguments, each quoted for a POSIX shell when it needs it.
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    let mut out = Vec::new();
    for (i, a) in args.into_iter().enumerate() {
        if i == 0 {
            let name = std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(a);
            out.push(name);
            continue;
        }
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
        out.push(if plain {
            a
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        });
    }
    out.join(" ")
}

// Layout (pixels).
const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 800.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 860.0;
const TOP_Y0: f64 = 118.0;
const TOP_Y1: f64 = 468.0;
const BOT_Y0: f64 = 520.0;
const BOT_Y1: f64 = 712.0;
const LEGEND_X: f64 = 890.0;
/// Bars across the lower panel, about.
const BINS: f64 = 120.0;
/// Characters of the command line per line of the header, and lines at
/// most (then it is cut with an ellipsis).
const COMMAND_MAX: usize = 150;
const COMMAND_LINES: usize = 2;

// Colours (colour-blind safe pairs: blue/orange, plus red for the
// retransmissions).
const C_HOLD: &str = "#1f77b4";
const C_ACK: &str = "#ff7f0e";
const C_SENT: &str = "#6b6b6b";
const C_RETX: &str = "#d62728";
const C_FIRST: &str = "#9ecae1";
const C_LOST_IN: &str = "#4d4d4d";
const C_LOST_OUT: &str = "#b3b3b3";
const C_REQ: &str = "#9467bd";
const C_GRID: &str = "#e6e6e6";
const FONT: &str = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\"";
/// A white outline behind text drawn over the series.
const HALO: &str =
    "stroke=\"#ffffff\" stroke-width=\"4\" stroke-linejoin=\"round\" paint-order=\"stroke\"";
const MONO: &str = "font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\"";

struct Chart<'p, 'a> {
    p: &'p RekeyPlot<'a>,
    out: String,
    x_max: f64,
    y_max: f64,
}

/// Linear scale from `d0..d1` to `r0..r1`.
fn lin(v: f64, d0: f64, d1: f64, r0: f64, r1: f64) -> f64 {
    if d1 <= d0 {
        return r0;
    }
    r0 + (v - d0) / (d1 - d0) * (r1 - r0)
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving about `n`
/// intervals over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Ticks `0, step, ...` up to `max` (inclusive, with rounding slack).
fn ticks(max: f64, step: f64) -> Vec<f64> {
    let n = (max / step + 1e-9).floor() as usize;
    (0..=n.min(1000)).map(|i| i as f64 * step).collect()
}

/// A tick label with as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().max(0.0) as usize
    };
    let s = format!("{v:.decimals$}");
    if decimals == 0 && v.abs() >= 10_000.0 {
        group_thousands(v as u64)
    } else {
        s
    }
}

fn group_thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// Seconds for display: ms below 1 s.
fn seconds(s: f64) -> String {
    if !s.is_finite() {
        "n/a".into()
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.3} s")
    }
}

impl<'p, 'a> Chart<'p, 'a> {
    fn new(p: &'p RekeyPlot<'a>) -> Self {
        let tl = p.timeline;
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        let mut x_max = finite(p.rekey_s).max(finite(p.all_hold_s));
        if let Some(b) = tl.swarm.buckets.last() {
            x_max = x_max.max(b.t_s + b.width_s);
        }
        for r in &tl.swarm.requests {
            x_max = x_max.max(r.t_s);
        }
        if let Some(s) = tl.bmsc.last() {
            x_max = x_max.max(s.t_s);
        }
        if !x_max.is_finite() || x_max <= 0.0 {
            x_max = 0.001;
        }
        let x_max = x_max * 1.04;
        let mut y_max = p.ues as f64;
        for s in &tl.bmsc {
            y_max = y_max
                .max(s.acks_processed as f64)
                .max(s.messages_sent as f64)
                .max(s.retransmissions as f64);
        }
        let y_max = y_max.max(1.0) * 1.06;
        Chart {
            p,
            out: String::with_capacity(64 << 10),
            x_max,
            y_max,
        }
    }

    fn x(&self, t: f64) -> f64 {
        let t = if t.is_finite() { t } else { 0.0 };
        lin(t.clamp(0.0, self.x_max), 0.0, self.x_max, LEFT, RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        let v = if v.is_finite() { v } else { 0.0 };
        lin(v.clamp(0.0, self.y_max), 0.0, self.y_max, TOP_Y1, TOP_Y0)
    }

    fn w(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn text(&mut self, x: f64, y: f64, attrs: &str, text: &str) {
        let _ = writeln!(
            self.out,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" {attrs}>{}</text>",
            escape(text)
        );
    }

    /// A legend entry drawn as a short vertical line (`style`: its stroke
    /// attributes) with its label to the right, on baseline `y`.
    fn legend_line(&mut self, y: f64, style: &str, label: &str) {
        let _ = writeln!(
            self.out,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" {style}/>",
            LEGEND_X + 14.0,
            y - 13.0,
            LEGEND_X + 14.0,
            y + 3.0
        );
        self.text(LEGEND_X + 36.0, y, "class=\"legend-entry\"", label);
    }

    fn render(mut self) -> String {
        let _ = writeln!(
            self.out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" {FONT} font-size=\"13\">"
        );
        let title = format!(
            "mbms bench rekey: {} UEs, rekey {}",
            group_thousands(self.p.ues as u64),
            seconds(self.p.rekey_s)
        );
        let _ = writeln!(self.out, "<title>{}</title>", escape(&title));
        self.w("<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n");
        self.header(&title);
        self.top_panel();
        self.bottom_panel();
        self.requests();
        self.x_axis();
        self.legend();
        self.w("</svg>\n");
        self.out
    }

    fn header(&mut self, title: &str) {
        self.text(
            LEFT,
            34.0,
            "font-size=\"20\" font-weight=\"bold\" id=\"title\"",
            title,
        );
        let cmd = format!("$ {}", self.p.command_line);
        let lines = wrap(&cmd, COMMAND_MAX, COMMAND_LINES);
        let _ = write!(
            self.out,
            "<text x=\"{LEFT}\" y=\"56\" {MONO} font-size=\"12\" fill=\"#333\" id=\"command\" xml:space=\"preserve\">"
        );
        for (i, line) in lines.iter().enumerate() {
            let dy = if i == 0 { 0.0 } else { 15.0 };
            let _ = write!(
                self.out,
                "<tspan x=\"{LEFT}\" dy=\"{dy}\">{}</tspan>",
                escape(line)
            );
        }
        self.w("</text>\n");
        let facts_y = 80.0 + 15.0 * (lines.len().max(1) - 1) as f64;
        let mut facts = format!(
            "every UE holds the new MSK after {}; {} of {} hold it",
            seconds(self.p.all_hold_s),
            self.p.ues_holding,
            self.p.ues
        );
        if self.p.loss > 0.0 {
            let _ = write!(
                facts,
                "; --loss {}: {:.0} % of the datagrams dropped each way",
                self.p.loss,
                self.p.loss * 100.0
            );
        }
        self.text(LEFT, facts_y, "fill=\"#333\" id=\"facts\"", &facts);
    }

    fn grid_x(&mut self, y0: f64, y1: f64) {
        let step = nice_step(self.x_max, 10.0);
        for t in ticks(self.x_max, step) {
            let x = self.x(t);
            let _ = writeln!(
                self.out,
                "<line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\" stroke=\"{C_GRID}\"/>"
            );
        }
    }

    fn top_panel(&mut self) {
        self.w("<g id=\"panel-cumulative\">\n");
        self.grid_x(TOP_Y0, TOP_Y1);
        // Y axis with ticks.
        let step = nice_step(self.y_max, 8.0);
        self.w("<g id=\"y-axis\" font-size=\"12\" text-anchor=\"end\">\n");
        for v in ticks(self.y_max, step) {
            let y = self.y(v);
            self.y_tick(y, v, step);
        }
        let _ = writeln!(
            self.out,
            "<line x1=\"{LEFT}\" y1=\"{TOP_Y0}\" x2=\"{LEFT}\" y2=\"{TOP_Y1}\" stroke=\"#000\"/><line x1=\"{LEFT}\" y1=\"{TOP_Y1}\" x2=\"{RIGHT}\" y2=\"{TOP_Y1}\" stroke=\"#000\"/>"
        );
        let cy = (TOP_Y0 + TOP_Y1) / 2.0;
        self.text(
            24.0,
            cy,
            &format!(
                "font-size=\"13\" text-anchor=\"middle\" transform=\"rotate(-90 24 {cy:.1})\""
            ),
            "UEs / messages (cumulative)",
        );
        self.w("</g>\n");

        // N.
        let yn = self.y(self.p.ues as f64);
        let _ = writeln!(
            self.out,
            "<line id=\"n-line\" x1=\"{LEFT}\" y1=\"{yn:.1}\" x2=\"{RIGHT}\" y2=\"{yn:.1}\" stroke=\"#000\" stroke-dasharray=\"1 3\"/>"
        );
        // "N" just right of the panel, where nothing else is drawn.
        self.text(
            RIGHT + 5.0,
            yn + 4.0,
            "font-size=\"12\" id=\"n-label\"",
            "N",
        );

        // The end of the rekey.
        let xr = self.x(self.p.rekey_s);
        let _ = writeln!(
            self.out,
            "<line id=\"rekey-end\" x1=\"{xr:.1}\" y1=\"{TOP_Y0}\" x2=\"{xr:.1}\" y2=\"{BOT_Y1}\" stroke=\"#000\" stroke-dasharray=\"6 3\"/>"
        );
        let label = format!("rekey {}", seconds(self.p.rekey_s));
        let anchor = if xr > RIGHT - 120.0 { "end" } else { "start" };
        let dx = if anchor == "end" { -4.0 } else { 4.0 };
        self.text(
            xr + dx,
            TOP_Y0 + 14.0,
            &format!("text-anchor=\"{anchor}\" font-size=\"12\" font-weight=\"bold\" {HALO}"),
            &label,
        );

        // BM-SC series (sampled, drawn as steps), then the swarm's.
        let samples = &self.p.timeline.bmsc;
        let sent: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| (s.t_s, s.messages_sent as f64))
            .collect();
        let retx: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| (s.t_s, s.retransmissions as f64))
            .collect();
        let acks: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| (s.t_s, s.acks_processed as f64))
            .collect();
        self.steps("series-sent", &sent, C_SENT, 1.5, Some("7 4"));
        self.steps("series-retransmissions", &retx, C_RETX, 2.0, Some("3 2"));
        self.steps("series-acks", &acks, C_ACK, 2.0, None);
        let mut cum = 0.0;
        let mut hold: Vec<(f64, f64)> = self
            .p
            .timeline
            .swarm
            .buckets
            .iter()
            .filter(|b| b.holding > 0)
            .map(|b| {
                cum += f64::from(b.holding);
                (b.t_s + b.width_s, cum)
            })
            .collect();
        // Level until the end of the rekey (a plateau below N stays visible).
        if let Some(&(t, v)) = hold.last() {
            if self.p.rekey_s.is_finite() && self.p.rekey_s > t {
                hold.push((self.p.rekey_s, v));
            }
        }
        self.steps("series-holding", &hold, C_HOLD, 2.5, None);
        self.w("</g>\n");
    }

    /// A cumulative series as a step line from (0, 0), at most one
    /// vertex pair per pixel column.
    fn steps(
        &mut self,
        id: &str,
        pts: &[(f64, f64)],
        colour: &str,
        width: f64,
        dash: Option<&str>,
    ) {
        let mut d = format!("M{:.1},{:.1}", self.x(0.0), self.y(0.0));
        let mut last_y = self.y(0.0);
        let mut last_x = self.x(0.0);
        let mut pending: Option<(f64, f64)> = None;
        let flush = |d: &mut String, last_x: &mut f64, last_y: &mut f64, (px, py): (f64, f64)| {
            if (py - *last_y).abs() >= 0.05 {
                let _ = write!(d, "H{px:.1}V{py:.1}");
                *last_y = py;
                *last_x = px;
            }
        };
        for &(t, v) in pts {
            let px = (self.x(t) * 2.0).round() / 2.0;
            let py = self.y(v);
            match pending {
                Some((qx, _)) if (qx - px).abs() < 0.5 => pending = Some((qx, py)),
                Some(q) => {
                    flush(&mut d, &mut last_x, &mut last_y, q);
                    pending = Some((px, py));
                }
                None => pending = Some((px, py)),
            }
        }
        if let Some(q) = pending {
            flush(&mut d, &mut last_x, &mut last_y, q);
        }
        let end = pts.last().map_or(last_x, |&(t, _)| self.x(t).max(last_x));
        let _ = write!(d, "H{end:.1}");
        let dash = dash.map_or(String::new(), |v| format!(" stroke-dasharray=\"{v}\""));
        // The final value, for readers of the file (and the tests).
        let total = pts.last().map_or(0.0, |p| p.1);
        let _ = writeln!(
            self.out,
            "<path id=\"{id}\" data-total=\"{total}\" d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\" stroke-linejoin=\"round\"{dash}/>"
        );
    }

    fn bottom_panel(&mut self) {
        let buckets = &self.p.timeline.swarm.buckets;
        // Bin width: a nice step, no finer than the buckets in range.
        let finest = buckets
            .iter()
            .map(|b| b.width_s)
            .fold(crate::timeline::FINE.as_secs_f64(), f64::max);
        let bin = nice_step(self.x_max, BINS).max(finest);
        let nbins = ((self.x_max / bin).ceil() as usize).clamp(1, 100_000);
        let mut up = vec![(0u64, 0u64); nbins];
        let mut down = vec![(0u64, 0u64); nbins];
        for b in buckets {
            let i = ((b.t_s / bin) as usize).min(nbins - 1);
            up[i].0 += u64::from(b.first);
            up[i].1 += u64::from(b.again);
            down[i].0 += u64::from(b.lost_in);
            down[i].1 += u64::from(b.lost_out);
        }
        let max_up = up.iter().map(|(a, b)| a + b).max().unwrap_or(0) as f64;
        let max_down = down.iter().map(|(a, b)| a + b).max().unwrap_or(0) as f64;
        let (max_up, max_down) = if max_up + max_down == 0.0 {
            (1.0, 0.0)
        } else {
            (max_up * 1.08, max_down * 1.08)
        };
        let total = max_up + max_down;
        // The zero line splits the panel in proportion (at least 24 px
        // above it for the messages that arrived).
        let zero = lin(max_up, 0.0, total, BOT_Y0, BOT_Y1).max(BOT_Y0 + 24.0);
        // Both directions share one scale: pixels per message.
        let scale = (zero - BOT_Y0) / max_up;
        let scale = if max_down > 0.0 {
            scale.min((BOT_Y1 - zero) / max_down)
        } else {
            scale
        };

        self.w("<g id=\"panel-rate\">\n");
        self.grid_x(BOT_Y0, BOT_Y1);
        let step = nice_step(max_up.max(max_down), 3.0);
        self.w("<g font-size=\"12\" text-anchor=\"end\">\n");
        for v in ticks(max_up, step) {
            self.y_tick(zero - v * scale, v, step);
        }
        for v in ticks(max_down, step).into_iter().skip(1) {
            self.y_tick(zero + v * scale, v, step);
        }
        self.w("</g>\n");
        let cy = (BOT_Y0 + BOT_Y1) / 2.0;
        let label = format!("datagrams per {}", seconds_short(bin));
        self.text(
            24.0,
            cy,
            &format!(
                "font-size=\"13\" text-anchor=\"middle\" transform=\"rotate(-90 24 {cy:.1})\""
            ),
            &label,
        );

        let bar_w = (self.x(bin) - self.x(0.0)).max(0.5);
        let gap = if bar_w > 4.0 { 0.5 } else { 0.0 };
        let mut first = String::new();
        let mut again = String::new();
        let mut lost_in = String::new();
        let mut lost_out = String::new();
        let rect = |s: &mut String, x: f64, y: f64, h: f64| {
            if h > 0.0 {
                let _ = write!(
                    s,
                    "<rect x=\"{x:.2}\" y=\"{y:.2}\" width=\"{:.2}\" height=\"{h:.2}\"/>",
                    bar_w - gap
                );
            }
        };
        for i in 0..nbins {
            let x = self.x(i as f64 * bin);
            let (f, a) = (up[i].0 as f64 * scale, up[i].1 as f64 * scale);
            rect(&mut first, x, zero - f, f);
            rect(&mut again, x, zero - f - a, a);
            let (li, lo) = (down[i].0 as f64 * scale, down[i].1 as f64 * scale);
            rect(&mut lost_in, x, zero, li);
            rect(&mut lost_out, x, zero + li, lo);
        }
        let t = self.totals();
        let _ = writeln!(
            self.out,
            "<g id=\"bars-first\" data-total=\"{}\" fill=\"{C_FIRST}\">{first}</g>\n<g id=\"bars-again\" data-total=\"{}\" fill=\"{C_RETX}\">{again}</g>\n<g id=\"bars-lost-in\" data-total=\"{}\" fill=\"{C_LOST_IN}\">{lost_in}</g>\n<g id=\"bars-lost-out\" data-total=\"{}\" fill=\"{C_LOST_OUT}\">{lost_out}</g>\n<g id=\"earlier\" data-total=\"{}\"/>",
            t.first, t.again, t.lost_in, t.lost_out, t.earlier
        );
        let _ = writeln!(
            self.out,
            "<line x1=\"{LEFT}\" y1=\"{BOT_Y0}\" x2=\"{LEFT}\" y2=\"{BOT_Y1}\" stroke=\"#000\"/><line x1=\"{LEFT}\" y1=\"{zero:.1}\" x2=\"{RIGHT}\" y2=\"{zero:.1}\" stroke=\"#000\"/><line x1=\"{LEFT}\" y1=\"{BOT_Y1}\" x2=\"{RIGHT}\" y2=\"{BOT_Y1}\" stroke=\"#999\"/>"
        );
        self.w("</g>\n");
    }

    /// A Y tick of either panel: its grid line, its tick mark and its
    /// label `v` (shown to the precision of `step`) at height `y`.
    fn y_tick(&mut self, y: f64, v: f64, step: f64) {
        let _ = writeln!(
            self.out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{RIGHT}\" y2=\"{y:.1}\" stroke=\"{C_GRID}\"/><line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{LEFT}\" y2=\"{y:.1}\" stroke=\"#000\"/>",
            LEFT - 5.0
        );
        let label = tick_label(v, step);
        self.text(LEFT - 8.0, y + 4.0, "", &label);
    }

    fn requests(&mut self) {
        let reqs = self.p.timeline.swarm.requests.clone();
        if reqs.is_empty() {
            return;
        }
        self.w("<g id=\"requests\">\n");
        for (i, r) in reqs.iter().enumerate() {
            let x = self.x(r.t_s);
            let _ = writeln!(
                self.out,
                "<line x1=\"{x:.1}\" y1=\"{TOP_Y0}\" x2=\"{x:.1}\" y2=\"{BOT_Y1}\" stroke=\"{C_REQ}\" stroke-width=\"1.5\" stroke-dasharray=\"2 3\"/>"
            );
            let label = format!("{} MSK request{}", r.ues, if r.ues == 1 { "" } else { "s" });
            // Staggered so that close events stay readable.
            let y = TOP_Y0 + 34.0 + 16.0 * (i % 4) as f64;
            let anchor = if x > RIGHT - 120.0 { "end" } else { "start" };
            let dx = if anchor == "end" { -4.0 } else { 4.0 };
            self.text(
                x + dx,
                y,
                &format!("font-size=\"12\" fill=\"{C_REQ}\" text-anchor=\"{anchor}\" {HALO}"),
                &label,
            );
        }
        self.w("</g>\n");
    }

    fn x_axis(&mut self) {
        let step = nice_step(self.x_max, 10.0);
        self.w("<g id=\"x-axis\" font-size=\"12\" text-anchor=\"middle\">\n");
        for t in ticks(self.x_max, step) {
            let x = self.x(t);
            for y in [TOP_Y1, BOT_Y1] {
                let _ = writeln!(
                    self.out,
                    "<line x1=\"{x:.1}\" y1=\"{y}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#000\"/>",
                    y + 5.0
                );
            }
            let label = tick_label(t, step);
            self.text(x, BOT_Y1 + 19.0, "", &label);
        }
        self.text(
            (LEFT + RIGHT) / 2.0,
            BOT_Y1 + 44.0,
            "font-size=\"13\"",
            "seconds since the rotation request (s)",
        );
        self.w("</g>\n");
    }

    fn legend(&mut self) {
        let mut y = TOP_Y0 + 4.0;
        self.w("<g id=\"legend\">\n");
        self.text(LEGEND_X, y, "font-weight=\"bold\"", "Cumulative");
        y += 20.0;
        let lines: [(&str, &str, f64, Option<&str>); 4] = [
            (C_HOLD, "UEs holding the new MSK (swarm)", 2.5, None),
            (C_ACK, "acknowledgements processed (BM-SC)", 2.0, None),
            (C_SENT, "MSK messages sent (BM-SC)", 1.5, Some("7 4")),
            (C_RETX, "MSK retransmissions (BM-SC)", 2.0, Some("3 2")),
        ];
        for (colour, label, width, dash) in lines {
            let dash = dash.map_or(String::new(), |v| format!(" stroke-dasharray=\"{v}\""));
            let _ = writeln!(
                self.out,
                "<line x1=\"{LEGEND_X}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-width=\"{width}\"{dash}/>",
                y - 4.0,
                LEGEND_X + 28.0,
                y - 4.0
            );
            self.text(LEGEND_X + 36.0, y, "class=\"legend-entry\"", label);
            y += 20.0;
        }
        y += 10.0;
        self.text(LEGEND_X, y, "font-weight=\"bold\"", "Per bin (swarm)");
        if self.p.loss > 0.0 {
            y += 16.0;
            self.text(
                LEGEND_X,
                y,
                "font-size=\"11\" fill=\"#555\"",
                "above the axis: reached the UEs; below: dropped",
            );
        }
        y += 20.0;
        let mut bars = vec![
            (C_FIRST, "MSK message, the first for its UE", None),
            (
                C_RETX,
                "MSK message again for its UE",
                Some("(retransmission, or answer to a request)"),
            ),
        ];
        if self.p.loss > 0.0 {
            bars.push((C_LOST_IN, "MSK message dropped by --loss", None));
            bars.push((C_LOST_OUT, "acknowledgement dropped by --loss", None));
        }
        for (colour, label, more) in bars {
            let _ = writeln!(
                self.out,
                "<rect x=\"{LEGEND_X}\" y=\"{:.1}\" width=\"28\" height=\"11\" fill=\"{colour}\"/>",
                y - 10.0
            );
            self.text(LEGEND_X + 36.0, y, "class=\"legend-entry\"", label);
            if let Some(more) = more {
                y += 16.0;
                self.text(LEGEND_X + 36.0, y, "font-size=\"11\" fill=\"#555\"", more);
            }
            y += 20.0;
        }
        y += 10.0;
        self.legend_line(
            y,
            &format!("stroke=\"{C_REQ}\" stroke-width=\"1.5\" stroke-dasharray=\"2 3\""),
            "MSK requests over Ua",
        );
        y += 22.0;
        self.legend_line(
            y,
            "stroke=\"#000\" stroke-dasharray=\"6 3\"",
            "rekey done (last ack processed)",
        );
        y += 34.0;

        // The run's figures.
        let sw = self.totals();
        self.text(LEGEND_X, y, "font-weight=\"bold\"", "During the rekey");
        y += 20.0;
        let mut facts = vec![
            format!("BM-SC: {} MSK messages sent,", self.p.messages_sent),
            format!(
                "{} retransmitted, {} acks processed",
                self.p.retransmissions, self.p.acks_processed
            ),
            format!("swarm: {} MSK messages reached UEs,", sw.first + sw.again),
            format!("{} of them again", sw.again),
            format!(
                "MSK requests over Ua: {}",
                self.p
                    .timeline
                    .swarm
                    .requests
                    .iter()
                    .map(|r| r.ues)
                    .sum::<usize>()
            ),
        ];
        if self.p.loss > 0.0 {
            facts.push(format!(
                "dropped by --loss: {} in, {} acks out",
                sw.lost_in, sw.lost_out
            ));
        }
        if sw.earlier > 0 {
            facts.push(format!(
                "{} MSK messages of earlier MSKs (not drawn)",
                sw.earlier
            ));
        }
        for f in facts {
            self.text(LEGEND_X, y, "font-size=\"12\" class=\"fact\"", &f);
            y += 17.0;
        }
        self.w("</g>\n");
    }

    fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for b in &self.p.timeline.swarm.buckets {
            t.first += u64::from(b.first);
            t.again += u64::from(b.again);
            t.lost_in += u64::from(b.lost_in);
            t.lost_out += u64::from(b.lost_out);
            t.earlier += u64::from(b.earlier);
        }
        t
    }
}

#[derive(Default)]
struct Totals {
    first: u64,
    again: u64,
    lost_in: u64,
    lost_out: u64,
    earlier: u64,
}

/// `text` in lines of at most `width` characters, broken at spaces where
/// possible, at most `max_lines` (the last cut with an ellipsis).
fn wrap(text: &str, width: usize, max_lines: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut lines = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        if lines.len() + 1 == max_lines && chars.len() - start > width {
            let mut last: String = chars[start..start + width - 1].iter().collect();
            last.push('\u{2026}');
            lines.push(last);
            return lines;
        }
        let mut end = (start + width).min(chars.len());
        if end < chars.len() {
            // Break after the last space of the line, if there is one.
            if let Some(sp) = chars[start..end].iter().rposition(|c| *c == ' ') {
                if sp > 0 {
                    end = start + sp + 1;
                }
            }
        }
        lines.push(
            chars[start..end]
                .iter()
                .collect::<String>()
                .trim_end()
                .to_owned(),
        );
        start = end;
    }
    lines
}

/// A bin width for an axis label: "1 ms", "20 ms", "0.5 s", "2 s".
fn seconds_short(s: f64) -> String {
    if s < 1.0 {
        let ms = s * 1000.0;
        if (ms - ms.round()).abs() < 1e-6 {
            format!("{} ms", ms.round())
        } else {
            format!("{ms:.1} ms")
        }
    } else if (s - s.round()).abs() < 1e-9 {
        format!("{} s", s.round())
    } else {
        format!("{s} s")
    }
}

/// Writes the chart of `report` to `path` (`mbms bench rekey --plot`).
pub fn write(
    path: &std::path::Path,
    report: &RekeyReport,
    command_line: &str,
) -> std::io::Result<()> {
    let plot = RekeyPlot::from_report(report, command_line).ok_or_else(|| {
        std::io::Error::other("the run recorded no timeline (RekeyOptions::timeline)")
    })?;
    std::fs::write(path, plot.svg())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{BmscSample, RequestEvent, SwarmTimeline, TimelineBucket};

    fn bucket(t_ms: u32, holding: u32, first: u32, again: u32, lost: u32) -> TimelineBucket {
        TimelineBucket {
            t_s: f64::from(t_ms) / 1000.0,
            width_s: 0.001,
            holding,
            first,
            again,
            lost_in: lost,
            lost_out: lost / 2,
            earlier: 0,
        }
    }

    fn timeline() -> RekeyTimeline {
        RekeyTimeline {
            swarm: SwarmTimeline {
                buckets: vec![
                    bucket(20, 60, 60, 0, 30),
                    bucket(21, 10, 10, 0, 0),
                    bucket(320, 20, 0, 25, 10),
                    bucket(900, 8, 0, 9, 2),
                    bucket(2010, 2, 0, 2, 0),
                ],
                requests: vec![RequestEvent { t_s: 2.0, ues: 2 }],
            },
            bmsc: (0u32..90)
                .map(|i| BmscSample {
                    t_s: f64::from(i) * 0.025,
                    messages_sent: 100 + u64::from(i),
                    retransmissions: u64::from(i),
                    acks_processed: u64::from(i).min(100),
                })
                .collect(),
        }
    }

    fn plot<'a>(tl: &'a RekeyTimeline, cmd: &'a str) -> RekeyPlot<'a> {
        RekeyPlot {
            ues: 100,
            loss: 0.3,
            rekey_s: 2.05,
            all_hold_s: 2.011,
            ues_holding: 100,
            messages_sent: 190,
            retransmissions: 89,
            acks_processed: 100,
            command_line: cmd,
            timeline: tl,
        }
    }

    fn by_id<'a, 'i>(doc: &'a roxmltree::Document<'i>, id: &str) -> roxmltree::Node<'a, 'i> {
        doc.descendants()
            .find(|n| n.attribute("id") == Some(id))
            .unwrap_or_else(|| panic!("no element with id {id}"))
    }

    fn texts(node: roxmltree::Node<'_, '_>) -> Vec<String> {
        // A <text> of its own, or each <tspan> line of one.
        node.descendants()
            .filter(|n| {
                n.has_tag_name("tspan")
                    || (n.has_tag_name("text") && !n.children().any(|c| c.is_element()))
            })
            .map(|n| n.text().unwrap_or("").to_owned())
            .collect()
    }

    #[test]
    fn the_chart_parses_and_has_axes_series_and_legend() {
        let tl = timeline();
        let svg = plot(&tl, "mbms bench rekey --ues 100 --loss 0.3").svg();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        assert_eq!(
            by_id(&doc, "title").text(),
            Some("mbms bench rekey: 100 UEs, rekey 2.050 s")
        );
        assert_eq!(
            texts(by_id(&doc, "command")),
            ["$ mbms bench rekey --ues 100 --loss 0.3"]
        );
        assert!(by_id(&doc, "facts").text().unwrap().contains("30 %"));

        // Axes: seconds 0..2 on x (x_max 2.05 * 1.04), UEs 0..100 on y.
        let x = texts(by_id(&doc, "x-axis"));
        for want in [
            "0.0",
            "0.5",
            "1.0",
            "2.0",
            "seconds since the rotation request (s)",
        ] {
            assert!(x.iter().any(|t| t == want), "x axis {x:?} lacks {want}");
        }
        let y = texts(by_id(&doc, "y-axis"));
        assert!(
            y.iter().any(|t| t == "0") && y.iter().any(|t| t == "100"),
            "{y:?}"
        );

        // Series: steps that end where the data ends.
        for id in [
            "series-holding",
            "series-acks",
            "series-sent",
            "series-retransmissions",
        ] {
            let d = by_id(&doc, id).attribute("d").unwrap();
            assert!(d.starts_with('M') && d.contains('V'), "{id}: {d}");
        }
        // Holding reaches N: its last V is at the N line's height.
        let n_y = by_id(&doc, "n-line").attribute("y1").unwrap().to_owned();
        let hold = by_id(&doc, "series-holding").attribute("d").unwrap();
        let last_v = hold.rsplit('V').next().unwrap();
        assert!(last_v.starts_with(&n_y), "{hold} vs N at {n_y}");

        // Bars: first arrivals, retransmissions, and both directions of loss.
        for id in ["bars-first", "bars-again", "bars-lost-in", "bars-lost-out"] {
            assert!(
                by_id(&doc, id).children().any(|n| n.has_tag_name("rect")),
                "{id} has no bar"
            );
        }
        let total = |id: &str| by_id(&doc, id).attribute("data-total").unwrap().to_owned();
        assert_eq!(total("series-holding"), "100");
        assert_eq!(total("series-acks"), "89");
        assert_eq!(total("bars-again"), "36");
        assert_eq!(total("bars-lost-in"), "42");
        let req = texts(by_id(&doc, "requests"));
        assert_eq!(req, ["2 MSK requests"]);

        let legend = texts(by_id(&doc, "legend"));
        for want in [
            "UEs holding the new MSK (swarm)",
            "acknowledgements processed (BM-SC)",
            "MSK retransmissions (BM-SC)",
            "MSK message again for its UE",
            "MSK message dropped by --loss",
            "MSK requests over Ua",
        ] {
            assert!(
                legend.iter().any(|t| t == want),
                "legend {legend:?} lacks {want}"
            );
        }
        // Self-contained: nothing fetched, nothing run.
        assert!(!svg.contains("<script") && !svg.contains("href") && !svg.contains("@import"));
    }

    #[test]
    fn text_is_escaped() {
        let tl = timeline();
        let cmd = "mbms bench rekey --plot '</text><script>x()</script>&\"'";
        let svg = plot(&tl, cmd).svg();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        assert_eq!(texts(by_id(&doc, "command")), [format!("$ {cmd}")]);
        assert!(!doc.descendants().any(|n| n.has_tag_name("script")));
        assert_eq!(
            escape("a<b>&\"c'\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&apos;\u{fffd}"
        );
    }

    #[test]
    fn long_command_lines_are_cut() {
        let tl = timeline();
        let cmd = "mbms ".to_owned() + &"--x ".repeat(100);
        let svg = plot(&tl, &cmd).svg();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let lines = texts(by_id(&doc, "command"));
        assert_eq!(lines.len(), COMMAND_LINES, "{lines:?}");
        assert!(lines.iter().all(|l| l.chars().count() <= COMMAND_MAX));
        assert!(lines[1].ends_with('\u{2026}'));
        assert_eq!(wrap("ab cd ef", 5, 3), ["ab", "cd ef"]);
        assert_eq!(wrap("abcdefgh", 3, 2), ["abc", "de\u{2026}"]);
        assert_eq!(wrap("", 3, 2), Vec::<String>::new());
    }

    #[test]
    fn no_loss_no_loss_legend_and_empty_or_odd_input_still_draws() {
        let tl = RekeyTimeline::default();
        let mut p = plot(&tl, "mbms");
        p.loss = 0.0;
        let svg = p.svg();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let legend = texts(by_id(&doc, "legend"));
        assert!(!legend.iter().any(|t| t.contains("--loss")), "{legend:?}");
        assert!(!by_id(&doc, "bars-first").children().any(|n| n.is_element()));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));

        p.rekey_s = f64::NAN;
        p.all_hold_s = f64::INFINITY;
        p.ues = 0;
        let svg = p.svg();
        roxmltree::Document::parse(&svg).unwrap();
        assert!(!svg.contains("NaN"), "{svg}");
    }

    #[test]
    fn steps_keep_one_vertex_pair_per_pixel() {
        let tl = RekeyTimeline {
            swarm: SwarmTimeline {
                buckets: (0..20_000)
                    .map(|i| TimelineBucket {
                        t_s: f64::from(i) * 0.001,
                        width_s: 0.001,
                        holding: 50,
                        first: 50,
                        ..TimelineBucket::default()
                    })
                    .collect(),
                requests: vec![],
            },
            bmsc: vec![],
        };
        let mut p = plot(&tl, "mbms");
        p.ues = 1_000_000;
        p.rekey_s = 20.0;
        let svg = p.svg();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let d = by_id(&doc, "series-holding").attribute("d").unwrap();
        let vertices = d.matches('V').count();
        assert!(
            vertices > 100 && vertices <= 2 * (RIGHT - LEFT) as usize,
            "{vertices}"
        );
        // 20 s in 120 bins: 200 ms bars, at most one per bin.
        assert!(by_id(&doc, "bars-first").children().count() <= 120);
        assert!(svg.len() < 200_000, "{} bytes", svg.len());
    }

    #[test]
    fn nice_steps_ticks_and_labels() {
        assert_eq!(nice_step(2.13, 10.0), 0.5);
        assert_eq!(nice_step(0.083, 10.0), 0.01);
        assert_eq!(nice_step(1_060_000.0, 8.0), 200_000.0);
        assert_eq!(ticks(2.13, 0.5), [0.0, 0.5, 1.0, 1.5, 2.0]);
        assert_eq!(tick_label(0.03, 0.01), "0.03");
        assert_eq!(tick_label(400_000.0, 200_000.0), "400\u{2009}000");
        assert_eq!(seconds(0.0782), "78.2 ms");
        assert_eq!(seconds(2.3234), "2.323 s");
        assert_eq!(seconds_short(0.05), "50 ms");
        assert_eq!(seconds_short(0.2), "200 ms");
        assert_eq!(seconds_short(2.0), "2 s");
    }

    #[test]
    fn command_lines_are_quoted_for_a_shell() {
        let args = [
            "/x/target/debug/mbms",
            "bench",
            "rekey",
            "--plot",
            "a b.svg",
            "it's",
            "",
        ];
        assert_eq!(
            command_line(args.iter().map(|s| s.to_string())),
            "mbms bench rekey --plot 'a b.svg' 'it'\\''s' ''"
        );
    }
}
