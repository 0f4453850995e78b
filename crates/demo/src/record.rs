//! The recording behind `mbms demo --report` (issue 15, "Pictures"): the
//! run's real messages as sequence-chart items (UE, BM-SC and BSF lanes),
//! one chart per procedure, for one representative UE.
//!
//! Where the messages are seen:
//! - HTTP (Ub, Ua, Zn): a recording reverse proxy in front of the BSF and
//!   the BM-SC for each watched UE, which sends every request on from the
//!   UE's own address (the BM-SC sends MIKEY to the source IP of the Ua
//!   requests, `PROFILE.md` section 3), and one in front of the BSF's Zn
//!   service for the BM-SC. Only exchanges of the watched UEs are kept (Zn:
//!   by the B-TIDs their Ub answers named).
//! - MIKEY, MTK and SRTP: the run's capture (the BM-SC's datagram tap,
//!   [`bmsc::Tap`]), read when the run ends.
//!
//! Nothing secret is kept. Every message is described when it is seen —
//! method and request type, B-TID, MSK ID, MTK ID, counter, V bit, key
//! validity, statuses — and its bytes are dropped: the Digest responses,
//! the Zn bearer token and the Zn answer's Ks_NAF never enter a
//! description, nor does any key (K, Ks, MUK, MSK, MTK). The key validity
//! of an MSK message (the "inactive" MSK of the 4-way procedure, seed 004
//! 6.3.2.3.3) is read by opening the message with the run's MUK, of which
//! only SEQs and SEQu are kept.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse as _, Response};
use base64::Engine as _;

use bmsc::TapKind;
use mbms::ua::RequestType;

use crate::{Captured, PROCEDURES};

/// A lane of the charts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The UE (ME with its MGV-F).
    Ue,
    /// The BM-SC.
    Bmsc,
    /// The BSF.
    Bsf,
}

impl Lane {
    /// The lane's name.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Ue => "UE",
            Lane::Bmsc => "BM-SC",
            Lane::Bsf => "BSF",
        }
    }
}

/// How an arrow is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// An HTTP request (Ub, Ua, Zn).
    Http,
    /// An HTTP answer.
    HttpAnswer,
    /// A MIKEY message (MSK delivery, solicited pull, MTK delivery).
    Mikey,
    /// A MIKEY acknowledgement (verification message).
    MikeyAck,
    /// SRTP packets (aggregated).
    Srtp,
    /// A file handed over (the download object and its MTK message).
    File,
    /// A datagram sent to a UE that was offline: dropped on the way.
    Dropped,
}

impl Style {
    /// A short name (the `data-kind` of the arrow in the HTML page).
    pub fn name(self) -> &'static str {
        match self {
            Style::Http => "http",
            Style::HttpAnswer => "http-answer",
            Style::Mikey => "mikey",
            Style::MikeyAck => "mikey-ack",
            Style::Srtp => "srtp",
            Style::File => "file",
            Style::Dropped => "dropped",
        }
    }
}

/// One message (or several alike, aggregated) between two lanes.
#[derive(Clone, Debug)]
pub struct Arrow {
    /// When it was sent, from the start of the run.
    pub at: Duration,
    /// Sender.
    pub from: Lane,
    /// Receiver.
    pub to: Lane,
    /// Drawing.
    pub style: Style,
    /// First label line (what the message is).
    pub title: String,
    /// Further label lines (its key identifiers).
    pub details: Vec<String>,
}

/// A remark on a lane (an administrative action, a charging record, the
/// UE going offline, ...).
#[derive(Clone, Debug)]
pub struct Note {
    /// When, from the start of the run.
    pub at: Duration,
    /// Where.
    pub lane: Lane,
    /// What.
    pub text: String,
}

/// An element of a chart, in time order.
#[derive(Clone, Debug)]
pub enum Item {
    /// A message.
    Arrow(Arrow),
    /// A remark.
    Note(Note),
}

impl Item {
    /// When it happened, from the start of the run.
    pub fn at(&self) -> Duration {
        match self {
            Item::Arrow(a) => a.at,
            Item::Note(n) => n.at,
        }
    }
}

/// The sequence chart of one procedure.
#[derive(Clone, Debug)]
pub struct Chart {
    /// The procedure ([`PROCEDURES`]).
    pub procedure: &'static str,
    /// A heading.
    pub title: &'static str,
    /// The seed clause and figure it corresponds to.
    pub reference: &'static str,
    /// The UE drawn (index, IMPI, address).
    pub ue: String,
    /// The messages and remarks in time order.
    pub items: Vec<Item>,
}

/// What the report draws: one chart per procedure of the run (every entry
/// of [`PROCEDURES`] but the capture check), in order.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    /// The charts.
    pub charts: Vec<Chart>,
}

/// Heading and seed reference of the chart of procedure `i`.
const CHART_TEXT: [(&str, &str); 11] = [
    (
        "GBA bootstrapping over Ub (HTTP Digest AKA)",
        "TS 33.220 4.5.2; 002 6.3.2.2.1 (the UE bootstraps before it registers)",
    ),
    (
        "Registration over Ua, with the BM-SC's Zn request to the BSF",
        "002 G.2.3 (register), TS 33.220 4.5.3 (Zn)",
    ),
    (
        "MSK push with acknowledgement (key groups 1 and 3)",
        "000 6.3.2.3.1, figure 6.2 (Pushing the MSKs to the UE); 004 6.4.2 (V bit)",
    ),
    (
        "Basic MSK request",
        "002 6.3.2.2.1, figure 6.1 (Basic MSK request procedure); G.2.3",
    ),
    (
        "Key group rotation: the new MSK pushed",
        "000 6.3.2.1, 6.3.2.3.1, figure 6.2",
    ),
    (
        "BM-SC solicited pull",
        "002/003 6.3.2.2.4, figure 6.2b (BM-SC solicited pull)",
    ),
    (
        "4-way procedure with charging (key group 2)",
        "004 6.3.2.3.3, figure 6.3a (inactive MSK, acknowledgement, activation)",
    ),
    (
        "MTK delivery and the SRTP stream (key group 1)",
        "004 6.4.2, 6.5.4; PROFILE.md 8 (MKI = MSK ID || MTK ID)",
    ),
    (
        "MTK delivery with a download object (key group 3)",
        "004 6.4.2, 6.5.4; PROFILE.md 8 (protected object and its .mikey)",
    ),
    (
        "Missed key update: a UE offline during a rotation",
        "000 6.3.2.2.3; 002 6.3.2.2.1 (request of missed MSKs)",
    ),
    (
        "Deregistration",
        "002 G.2.3 (deregister): no push reaches the UE afterwards",
    ),
];

/// Procedure indices the charts use (positions in [`PROCEDURES`]).
const P_BOOT: usize = 0;
const P_REG: usize = 1;
const P_PUSH: usize = 2;
const P_4WAY: usize = 6;
const P_MTK: usize = 7;
const P_DOWNLOAD: usize = 8;
const P_MISSED: usize = 9;
const P_DEREG: usize = 10;
/// Key group 2 is the charging key group of the demo (the 4-way procedure).
const CHARGING_GROUP: u16 = 2;
/// The SRTP authentication tag of the demo's streaming session
/// (AES_CM_128_HMAC_SHA1_80, `PROFILE.md` section 8).
const SRTP_TAG_LEN: usize = 10;
/// The MKI length, MSK ID || MTK ID (`PROFILE.md` section 8).
const MKI_LEN: usize = 6;
/// Largest HTTP body the proxy forwards.
const MAX_BODY: usize = 1 << 20;

/// What decides the chart of an entry.
#[derive(Clone, Debug)]
enum Class {
    Ub,
    Ua {
        rt: Option<RequestType>,
        group: Option<u16>,
        exchange: (SystemTime, SystemTime),
    },
    Zn,
    Msk {
        group: Option<u16>,
        /// The counter of an acknowledgement.
        ack_counter: Option<u32>,
    },
    Mtk {
        same: String,
    },
    Srtp,
    Download,
    Admin,
    Charging {
        counter: u32,
    },
    Offline,
}

/// A recorded item before it is placed in a chart.
#[derive(Clone, Debug)]
struct Entry {
    at: SystemTime,
    /// The watched UE it concerns (index into `State::watched`), or none
    /// (administrative actions).
    ue: Option<usize>,
    class: Class,
    item: Item,
    /// For aggregated items (MTK repeats, SRTP): how many and the last time.
    count: usize,
    last: SystemTime,
}

/// A UE whose messages are recorded.
#[derive(Clone, Debug)]
struct Watched {
    index: usize,
    impi: String,
    ip: Ipv4Addr,
    /// The UE of the missed key update (drawn only there); else the UE of
    /// every other chart.
    offline_ue: bool,
    btids: Vec<String>,
    offline: Vec<(SystemTime, Option<SystemTime>)>,
}

#[derive(Default)]
struct State {
    windows: Vec<SystemTime>,
    watched: Vec<Watched>,
    entries: Vec<Entry>,
}

struct Inner {
    start: SystemTime,
    state: Mutex<State>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// Whether `ip` is the BM-SC's: 127.0.0.1 in process, 127.0.2.x for the
/// instances of `--bmsc-instances` ([`crate::instance_ip`]).
fn is_bmsc(ip: Ipv4Addr) -> bool {
    ip == Ipv4Addr::LOCALHOST || ip.octets()[..3] == [127, 0, 2]
}

/// The recording hooks of the run: all no-ops unless recording is on.
#[derive(Clone, Default)]
pub(crate) struct Recorder(Option<Arc<Inner>>);

impl Recorder {
    /// A recorder that records; the run started now.
    pub(crate) fn on() -> Recorder {
        Recorder(Some(Arc::new(Inner {
            start: SystemTime::now(),
            state: Mutex::new(State::default()),
            tasks: Mutex::new(Vec::new()),
        })))
    }

    fn state(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        self.0
            .as_ref()
            .map(|i| i.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Procedure `idx` of [`PROCEDURES`] starts now.
    pub(crate) fn procedure(&self, idx: usize) {
        if let Some(mut s) = self.state() {
            let now = SystemTime::now();
            while s.windows.len() <= idx {
                s.windows.push(now);
            }
        }
    }

    /// Records UE `index` (`offline_ue`: the UE of the missed key update).
    pub(crate) fn watch(&self, index: usize, impi: &str, ip: Ipv4Addr, offline_ue: bool) {
        if let Some(mut s) = self.state() {
            s.watched.push(Watched {
                index,
                impi: impi.to_owned(),
                ip,
                offline_ue,
                btids: Vec::new(),
                offline: Vec::new(),
            });
        }
    }

    /// The BSF and BM-SC base URLs UE `index` is to use: recording proxies
    /// when it is watched, else `bsf` and `bmsc` as they are.
    pub(crate) async fn ue_urls(
        &self,
        index: usize,
        bsf: &str,
        bmsc: &str,
    ) -> anyhow::Result<(String, String)> {
        let Some(inner) = &self.0 else {
            return Ok((bsf.to_owned(), bmsc.to_owned()));
        };
        let w = {
            let s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            s.watched
                .iter()
                .position(|w| w.index == index)
                .map(|p| (p, s.watched[p].ip))
        };
        let Some((w, ip)) = w else {
            return Ok((bsf.to_owned(), bmsc.to_owned()));
        };
        let ub = spawn_proxy(inner, bsf, Some(ip.into()), Hop::Ub(w)).await?;
        let ua = spawn_proxy(inner, bmsc, Some(ip.into()), Hop::Ua(w)).await?;
        Ok((ub, ua))
    }

    /// The BSF URL the BM-SC is to use for Zn: a recording proxy when on.
    pub(crate) async fn zn_url(&self, bsf: &str) -> anyhow::Result<String> {
        match &self.0 {
            Some(inner) => spawn_proxy(inner, bsf, None, Hop::Zn).await,
            None => Ok(bsf.to_owned()),
        }
    }

    /// The demo calls the BM-SC's admin API (`path`) now.
    pub(crate) fn admin(&self, path: &str) {
        let text = match path.rsplit('/').next() {
            Some("rotate") => format!("admin API: rotate key group {}", group_in(path)),
            Some("solicited-pull") => {
                format!("admin API: solicited pull of key group {}", group_in(path))
            }
            _ => format!("admin API: {path}"),
        };
        self.push(None, Class::Admin, Lane::Bmsc, text);
    }

    /// The BM-SC's charging records (the JSON of
    /// `GET /admin/v1/charging-records`): those of the watched UEs.
    pub(crate) fn charging(&self, json: &str) {
        let Some(mut s) = self.state() else { return };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
            return;
        };
        let Some(records) = v["records"].as_array() else {
            return;
        };
        let start = self
            .0
            .as_ref()
            .map(|i| i.start)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for r in records {
            let impi = r["impi"].as_str().unwrap_or_default();
            let Some(w) = s
                .watched
                .iter()
                .position(|w| w.impi == impi && !w.offline_ue)
            else {
                continue;
            };
            let at =
                SystemTime::UNIX_EPOCH + Duration::from_millis(r["time_ms"].as_u64().unwrap_or(0));
            let text = format!(
                "charging record #{}: {impi}, MSK {}, counter {}",
                r["id"].as_i64().unwrap_or(0),
                r["msk"].as_str().unwrap_or("?"),
                r["counter"].as_u64().unwrap_or(0)
            );
            s.entries.push(Entry {
                at,
                ue: Some(w),
                class: Class::Charging {
                    counter: r["counter"]
                        .as_u64()
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(0),
                },
                item: Item::Note(Note {
                    at: since(start, at),
                    lane: Lane::Bmsc,
                    text,
                }),
                count: 1,
                last: at,
            });
        }
    }

    /// UE `index` goes offline (its relay drops MIKEY and MTK datagrams)
    /// or comes back.
    pub(crate) fn offline(&self, index: usize, offline: bool) {
        let now = SystemTime::now();
        let w = {
            let Some(mut s) = self.state() else { return };
            let Some(w) = s.watched.iter().position(|w| w.index == index) else {
                return;
            };
            let o = &mut s.watched[w].offline;
            if offline {
                o.push((now, None));
            } else if let Some(last) = o.last_mut() {
                last.1 = Some(now);
            }
            w
        };
        let text = if offline {
            "offline: the relay in front of the UE drops MIKEY and MTK datagrams"
        } else {
            "back online"
        };
        self.push(Some(w), Class::Offline, Lane::Ue, text.to_owned());
    }

    /// The download object and its MTK message (`mikey`, the `.mikey`
    /// file) were handed to UE `index` now.
    pub(crate) fn file_delivered(&self, index: usize, object: &str, mikey: &[u8]) {
        let Some(inner) = &self.0 else { return };
        let now = SystemTime::now();
        let mut s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = s.watched.iter().position(|w| w.index == index) else {
            return;
        };
        let d = describe_mikey(mikey, TapKind::Mtk, &BTreeMap::new());
        let mut details = vec![format!("{object} + {object}.mikey (copied by the demo)")];
        details.extend(d.details);
        s.entries.push(Entry {
            at: now,
            ue: Some(w),
            class: Class::Download,
            item: Item::Arrow(Arrow {
                at: since(inner.start, now),
                from: Lane::Bmsc,
                to: Lane::Ue,
                style: Style::File,
                title: "download object with its MIKEY MTK message (file)".to_owned(),
                details,
            }),
            count: 1,
            last: now,
        });
    }

    /// The run's captured datagrams, with the MUKs of its key log (by
    /// B-TID) to read the key validity of MSK messages. Stops the proxies.
    pub(crate) fn datagrams(&self, caps: &[Captured], muks: &BTreeMap<String, [u8; 32]>) {
        let Some(inner) = &self.0 else { return };
        for t in inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        let mut s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let ips: Vec<Ipv4Addr> = s.watched.iter().map(|w| w.ip).collect();
        // SRTP aggregated per (UE, window, MKI).
        let mut srtp: BTreeMap<(usize, usize, Vec<u8>), usize> = BTreeMap::new();
        let mut inactive: std::collections::BTreeSet<(usize, String)> = Default::default();
        for c in caps {
            let (w, to_ue) = if let Some(w) = ips.iter().position(|ip| c.dst.ip() == ip) {
                (w, true)
            } else if let Some(w) = ips.iter().position(|ip| c.src.ip() == ip) {
                (w, false)
            } else {
                continue;
            };
            let (from, to) = if to_ue {
                (Lane::Bmsc, Lane::Ue)
            } else {
                (Lane::Ue, Lane::Bmsc)
            };
            let dropped = to_ue
                && s.watched[w]
                    .offline
                    .iter()
                    .any(|(a, b)| c.time >= *a && b.is_none_or(|b| c.time <= b));
            if c.kind == TapKind::Srtp {
                let mki = srtp_mki(&c.bytes).unwrap_or_default();
                let win = window(&s.windows, c.time);
                let key = (w, win, mki.clone());
                if let Some(&e) = srtp.get(&key) {
                    let e = &mut s.entries[e];
                    e.count += 1;
                    e.last = c.time;
                    continue;
                }
                let mut details = Vec::new();
                if mki.len() == MKI_LEN {
                    details.push(format!(
                        "MKI = MSK ID {} || MTK ID {}",
                        msk_id_text(&mki[..4]),
                        u16::from_be_bytes([mki[4], mki[5]])
                    ));
                }
                srtp.insert(key, s.entries.len());
                s.entries.push(Entry {
                    at: c.time,
                    ue: Some(w),
                    class: Class::Srtp,
                    item: Item::Arrow(Arrow {
                        at: since(inner.start, c.time),
                        from,
                        to,
                        style: if dropped { Style::Dropped } else { Style::Srtp },
                        title: "SRTP / UDP".to_owned(),
                        details,
                    }),
                    count: 1,
                    last: c.time,
                });
                continue;
            }
            let d = describe_mikey(&c.bytes, c.kind, muks);
            let mut details = d.details;
            // Seed 004 6.3.2.3.3: the activation follows the inactive MSK.
            if d.title.contains("MSK delivery") {
                let key = (w, d.same.clone());
                if d.inactive {
                    inactive.insert(key);
                } else if inactive.remove(&key) {
                    details.insert(
                        2,
                        "activation of the inactive MSK (4-way step 3)".to_owned(),
                    );
                }
            }
            let style = if dropped {
                details.push("dropped: the UE is offline".to_owned());
                Style::Dropped
            } else if d.ack {
                Style::MikeyAck
            } else {
                Style::Mikey
            };
            let class = if c.kind == TapKind::Mtk {
                let same = if dropped {
                    format!("{} (dropped)", d.same)
                } else {
                    d.same
                };
                Class::Mtk { same }
            } else {
                Class::Msk {
                    group: d.group,
                    ack_counter: if d.ack { d.counter } else { None },
                }
            };
            s.entries.push(Entry {
                at: c.time,
                ue: Some(w),
                class,
                item: Item::Arrow(Arrow {
                    at: since(inner.start, c.time),
                    from,
                    to,
                    style,
                    title: d.title,
                    details,
                }),
                count: 1,
                last: c.time,
            });
        }
        // SRTP counts and spans.
        for e in s.entries.iter_mut() {
            if let (Class::Srtp, Item::Arrow(a)) = (&e.class, &mut e.item) {
                a.title = format!("SRTP / UDP x {} packets", e.count);
                a.details.push(format!(
                    "{:.3}\u{a0}s to {:.3}\u{a0}s",
                    since(inner.start, e.at).as_secs_f64(),
                    since(inner.start, e.last).as_secs_f64()
                ));
            }
        }
        // Deregistration: what the rotation after it sent to this UE.
        let dereg_window = s.windows.get(P_DEREG).copied();
        if let Some(from) = dereg_window {
            let watched_ues: Vec<(usize, Ipv4Addr)> = s
                .watched
                .iter()
                .enumerate()
                .filter(|(_, w)| !w.offline_ue)
                .map(|(i, w)| (i, w.ip))
                .collect();
            for (w, ip) in watched_ues {
                let answered = s.entries.iter().rev().find_map(|e| match &e.class {
                    Class::Ua {
                        rt: Some(RequestType::Deregister),
                        exchange,
                        ..
                    } if e.ue == Some(w) => Some(exchange.1),
                    _ => None,
                });
                let Some(answered) = answered else { continue };
                let until = s.windows.get(P_DEREG + 1).copied();
                let in_window = |t: SystemTime| t >= from && until.is_none_or(|u| t < u);
                let mikey = |c: &&Captured| {
                    c.kind == TapKind::Mikey && c.time >= answered && in_window(c.time)
                };
                let to_it = caps
                    .iter()
                    .filter(mikey)
                    .filter(|c| *c.dst.ip() == ip)
                    .count();
                let others = caps
                    .iter()
                    .filter(mikey)
                    .filter(|c| *c.dst.ip() != ip && !is_bmsc(*c.dst.ip()))
                    .count();
                let at = caps
                    .iter()
                    .filter(mikey)
                    .map(|c| c.time)
                    .max()
                    .unwrap_or(answered);
                let text = format!(
                    "after the deregistration: {to_it} MIKEY datagrams to this UE, {others} to the other UEs"
                );
                s.entries.push(Entry {
                    at,
                    ue: Some(w),
                    class: Class::Admin,
                    item: Item::Note(Note {
                        at: since(inner.start, at) + Duration::from_millis(1),
                        lane: Lane::Ue,
                        text,
                    }),
                    count: 1,
                    last: at,
                });
            }
        }
    }

    /// The charts (empty when recording was off).
    pub(crate) fn recording(&self) -> Recording {
        let Some(mut s) = self.state() else {
            return Recording::default();
        };
        // A charging record is made when the acknowledgement arrives; its
        // time has millisecond resolution: draw it after that ack.
        let acks: Vec<(Option<usize>, u32, SystemTime)> = s
            .entries
            .iter()
            .filter_map(|e| match e.class {
                Class::Msk {
                    ack_counter: Some(c),
                    group: Some(CHARGING_GROUP),
                } => Some((e.ue, c, e.at)),
                _ => None,
            })
            .collect();
        let start0 = self
            .0
            .as_ref()
            .map(|i| i.start)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for e in s.entries.iter_mut() {
            if let Class::Charging { counter } = e.class {
                if let Some(&(_, _, t)) = acks.iter().find(|(u, c, _)| *u == e.ue && *c == counter)
                {
                    if t > e.at
                        && t.checked_sub(Duration::from_millis(1))
                            .is_some_and(|x| x <= e.at)
                    {
                        // Just after the ack (same millisecond).
                        e.at = t + Duration::from_nanos(1);
                        if let Item::Note(n) = &mut e.item {
                            n.at = since(start0, t);
                        }
                    }
                }
            }
        }
        let mut charts: Vec<Chart> = (0..CHART_TEXT.len())
            .map(|i| {
                let want_offline = i == P_MISSED;
                let ue = s
                    .watched
                    .iter()
                    .find(|w| w.offline_ue == want_offline)
                    .map(|w| format!("UE {} ({}, {})", w.index, w.impi, w.ip))
                    .unwrap_or_default();
                Chart {
                    procedure: PROCEDURES[i],
                    title: CHART_TEXT[i].0,
                    reference: CHART_TEXT[i].1,
                    ue,
                    items: Vec::new(),
                }
            })
            .collect();
        // Aggregation of repeated MTK messages: (chart, same) -> item.
        let mut repeats: BTreeMap<(usize, String), (usize, usize, SystemTime)> = BTreeMap::new();
        let mut order: Vec<&Entry> = s.entries.iter().collect();
        order.sort_by_key(|e| e.at);
        for e in order {
            let Some(c) = chart_of(&s, e) else { continue };
            if let Class::Mtk { same } = &e.class {
                let key = (c, same.clone());
                if let Some(r) = repeats.get_mut(&key) {
                    r.1 += 1;
                    r.2 = e.at;
                    continue;
                }
                repeats.insert(key, (charts[c].items.len(), 1, e.at));
            }
            charts[c].items.push(e.item.clone());
        }
        let start = self
            .0
            .as_ref()
            .map(|i| i.start)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for ((c, _), (idx, count, last)) in repeats {
            if count > 1 {
                if let Item::Arrow(a) = &mut charts[c].items[idx] {
                    a.details.push(format!(
                        "{count} times to this UE, the last at {:.3}\u{a0}s",
                        since(start, last).as_secs_f64()
                    ));
                }
            }
        }
        for ch in &mut charts {
            ch.items.sort_by_key(Item::at);
        }
        Recording { charts }
    }

    fn push(&self, ue: Option<usize>, class: Class, lane: Lane, text: String) {
        let Some(inner) = &self.0 else { return };
        let now = SystemTime::now();
        inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .push(Entry {
                at: now,
                ue,
                class,
                item: Item::Note(Note {
                    at: since(inner.start, now),
                    lane,
                    text,
                }),
                count: 1,
                last: now,
            });
    }
}

fn since(start: SystemTime, t: SystemTime) -> Duration {
    t.duration_since(start).unwrap_or_default()
}

/// The procedure running at `t` (0 before the first).
fn window(windows: &[SystemTime], t: SystemTime) -> usize {
    windows.iter().rposition(|w| *w <= t).unwrap_or(0)
}

/// The key group number in an admin path `/admin/v1/key-groups/N/...`.
fn group_in(path: &str) -> &str {
    path.split('/')
        .skip_while(|p| *p != "key-groups")
        .nth(1)
        .unwrap_or("?")
}

/// The chart (procedure index) an entry belongs to, if any.
fn chart_of(s: &State, e: &Entry) -> Option<usize> {
    let win = window(&s.windows, e.at);
    let Some(w) = e.ue else {
        // Administrative actions: where they happened.
        return (win < P_MISSED + 2).then_some(win);
    };
    if s.watched.get(w)?.offline_ue {
        return (win == P_MISSED).then_some(P_MISSED);
    }
    // The key procedures at UE start-up (windows 0 to 2) are one chart.
    let by_window = |win: usize| match win {
        0..=P_PUSH => Some(P_PUSH),
        P_DEREG => Some(P_DEREG),
        w if w < P_MTK => Some(w),
        _ => None,
    };
    match &e.class {
        Class::Ub => Some(P_BOOT),
        Class::Ua { rt, group, .. } => match rt {
            Some(RequestType::Register) => Some(P_REG),
            Some(RequestType::Deregister) => Some(P_DEREG),
            _ if *group == Some(CHARGING_GROUP) => Some(P_4WAY),
            _ => by_window(win),
        },
        Class::Zn => {
            // With the Ua request it answers.
            let ua = s.entries.iter().find(|o| match &o.class {
                Class::Ua { exchange, .. } => {
                    o.ue == Some(w) && exchange.0 <= e.at && e.at <= exchange.1
                }
                _ => false,
            });
            match ua {
                Some(o) => chart_of(s, o),
                None => Some(P_REG),
            }
        }
        Class::Msk { group, .. } if *group == Some(CHARGING_GROUP) => Some(P_4WAY),
        Class::Msk { .. } => by_window(win),
        Class::Charging { .. } => Some(P_4WAY),
        Class::Mtk { .. } => (win <= P_MTK).then_some(P_MTK),
        Class::Srtp => (win == P_MTK).then_some(P_MTK),
        Class::Download => Some(P_DOWNLOAD),
        Class::Admin | Class::Offline => (win < P_MISSED + 2).then_some(win),
    }
}

// ---- MIKEY descriptions ---------------------------------------------------------

struct MikeyText {
    title: String,
    details: Vec<String>,
    ack: bool,
    group: Option<u16>,
    counter: Option<u32>,
    /// An MSK delivery whose key validity makes the MSK inactive.
    inactive: bool,
    /// What makes two MTK messages alike (MSK ID and MTK ID).
    same: String,
}

/// An MSK ID (4 bytes: Key Group || Key Number) as text.
fn msk_id_text(id: &[u8]) -> String {
    if id.len() != 4 {
        return hex::encode_upper(id);
    }
    let group = u16::from_be_bytes([id[0], id[1]]);
    let number = u16::from_be_bytes([id[2], id[3]]);
    format!("{} (group {group}, key {number})", hex::encode_upper(id))
}

/// RFC 1982 "greater than" for serial numbers of `bits` bits.
fn serial_gt(a: u32, b: u32, bits: u32) -> bool {
    let half = 1u64 << (bits - 1);
    let (a, b) = (u64::from(a), u64::from(b));
    (a < b && b - a > half) || (a > b && a - b < half)
}

fn be(b: &[u8]) -> Option<u32> {
    (!b.is_empty() && b.len() <= 4).then(|| b.iter().fold(0u32, |v, x| (v << 8) | u32::from(*x)))
}

/// Describes a MIKEY datagram: what it is and its key identifiers.
fn describe_mikey(bytes: &[u8], kind: TapKind, muks: &BTreeMap<String, [u8; 32]>) -> MikeyText {
    let Ok(m) = mikey::Message::parse(bytes) else {
        return MikeyText {
            title: format!("MIKEY / UDP ({} bytes, not parsed)", bytes.len()),
            details: Vec::new(),
            ack: false,
            group: None,
            counter: None,
            inactive: false,
            same: String::new(),
        };
    };
    let v = m.header().v;
    let ctr = match m.timestamp() {
        Some(mikey::Timestamp::Counter(c)) => Some(*c),
        _ => None,
    };
    let counter = match m.timestamp() {
        Some(mikey::Timestamp::Counter(c)) => format!("counter {c}"),
        Some(_) => "NTP timestamp".to_owned(),
        None => "no timestamp".to_owned(),
    };
    let msk = m
        .key_ids()
        .find(|k| k.key_id_type == mikey::KeyIdType::MSK)
        .map(|k| k.key_id.to_vec());
    let mtk = m
        .key_ids()
        .find(|k| k.key_id_type == mikey::KeyIdType::MTK)
        .and_then(|k| be(&k.key_id));
    let (domain, msk_id) = match &msk {
        Some(k) if k.len() == 7 => {
            let kd = mbms::KeyDomainId::from_slice(&k[..3])
                .ok()
                .and_then(|d| d.mcc_mnc())
                .map(|(mcc, mnc)| format!("{mcc}-{mnc}"))
                .unwrap_or_else(|| hex::encode_upper(&k[..3]));
            (Some(kd), Some(k[3..].to_vec()))
        }
        _ => (None, None),
    };
    let group = msk_id.as_ref().map(|i| u16::from_be_bytes([i[0], i[1]]));
    let number = msk_id.as_ref().map(|i| u16::from_be_bytes([i[2], i[3]]));
    let msk_text = msk_id
        .as_ref()
        .map(|i| format!("MSK ID {}", msk_id_text(i)))
        .unwrap_or_else(|| "no MSK ID".to_owned());
    let domain_text = domain
        .map(|d| format!("key domain {d}"))
        .unwrap_or_default();
    let idr = m
        .ids()
        .nth(1)
        .or_else(|| m.ids().last())
        .and_then(|i| std::str::from_utf8(&i.data).ok())
        .map(str::to_owned);
    let mut details = Vec::new();
    let same = format!("{msk_text}/{mtk:?}");
    let vbit = if v { "V=1" } else { "V=0" };
    if kind == TapKind::Mtk || mtk.is_some() {
        details.push(format!(
            "{msk_text}, MTK ID {}",
            mtk.map(|x| x.to_string()).unwrap_or_else(|| "?".into())
        ));
        let mut l = format!("{counter}, {vbit}");
        if let mikey::CsIdMap::SrtpId(entries) = &m.header().cs_id_map {
            for e in entries {
                l.push_str(&format!(", SSRC {:08x} ROC {}", e.ssrc, e.roc));
            }
        }
        details.push(l);
        return MikeyText {
            title: "MIKEY MTK delivery / UDP".to_owned(),
            details,
            ack: false,
            group,
            counter: ctr,
            inactive: false,
            same,
        };
    }
    if m.verification().is_some() {
        details.push(format!("{msk_text}, {counter}"));
        if let Some(b) = idr {
            details.push(format!("IDr = B-TID {b}, MAC verification payload"));
        }
        return MikeyText {
            title: "MIKEY acknowledgement / UDP".to_owned(),
            details,
            ack: true,
            group,
            counter: ctr,
            inactive: false,
            same,
        };
    }
    if m.kemac().is_some() && number == Some(0) {
        details.push(format!("{msk_text}: request the current MSK"));
        details.push(format!("{counter}, {vbit}, KEMAC without key (MAC only)"));
        return MikeyText {
            title: "MIKEY solicited pull / UDP".to_owned(),
            details,
            ack: false,
            group,
            counter: ctr,
            inactive: false,
            same,
        };
    }
    details.push(format!("{msk_text}, {domain_text}"));
    let mut l = format!("{counter}, {vbit}");
    if v {
        l.push_str(" (acknowledgement wanted)");
    }
    details.push(l);
    // Key validity: open with the MUK of IDr (only SEQs/SEQu kept).
    let validity = idr.as_ref().and_then(|b| muks.get(b)).and_then(|muk| {
        let o = mikey::open_psk(bytes, muk).ok()?;
        let kd = o.key_data.first()?;
        match &kd.validity {
            mikey::KeyValidity::Interval { from, to } => {
                let bits = 8 * from.len().clamp(1, 4) as u32;
                Some((be(from)?, be(to)?, bits))
            }
            _ => None,
        }
    });
    let inactive = validity.is_some_and(|(s, u, bits)| serial_gt(s, u, bits));
    match validity {
        Some((s, u, _)) if inactive => details.push(format!(
            "key validity SEQs {s} > SEQu {u}: inactive (4-way step 1)"
        )),
        Some((s, u, _)) => details.push(format!("key validity MTK IDs {s} (SEQs) to {u} (SEQu)")),
        None => {}
    }
    if let Some(b) = idr {
        details.push(format!("IDr = B-TID {b}"));
    }
    MikeyText {
        title: "MIKEY MSK delivery / UDP".to_owned(),
        details,
        ack: false,
        group,
        counter: ctr,
        inactive,
        same,
    }
}

/// The MKI of an SRTP packet of the demo (RTP header without CSRCs or
/// extension, `SRTP_TAG_LEN` tag).
fn srtp_mki(p: &[u8]) -> Option<Vec<u8>> {
    let end = p.len().checked_sub(SRTP_TAG_LEN)?;
    let start = end.checked_sub(MKI_LEN)?;
    (start >= 12).then(|| p[start..end].to_vec())
}

// ---- HTTP: the recording proxies ---------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Hop {
    /// Ub of watched UE `.0`.
    Ub(usize),
    /// Ua of watched UE `.0`.
    Ua(usize),
    /// The BM-SC's Zn.
    Zn,
}

struct Proxy {
    target: String,
    client: reqwest::Client,
    hop: Hop,
    inner: Arc<Inner>,
}

/// Starts a recording proxy on 127.0.0.1 in front of `target`, sending
/// from `local` (the UE's address); returns its base URL.
async fn spawn_proxy(
    inner: &Arc<Inner>,
    target: &str,
    local: Option<IpAddr>,
    hop: Hop,
) -> anyhow::Result<String> {
    let client = reqwest::Client::builder()
        .local_address(local)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .context("the report's HTTP proxy client")?;
    let proxy = Arc::new(Proxy {
        target: target.trim_end_matches('/').to_owned(),
        client,
        hop,
        inner: inner.clone(),
    });
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .context("the report's HTTP proxy")?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    inner
        .tasks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(task);
    Ok(url)
}

fn hop_by_hop(h: &HeaderName) -> bool {
    matches!(
        h.as_str(),
        "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive" | "upgrade"
    )
}

async fn forward(
    axum::extract::State(p): axum::extract::State<Arc<Proxy>>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|x| x.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let mut rb = p
        .client
        .request(parts.method.clone(), format!("{}{path}", p.target))
        .body(body.clone());
    for (k, v) in &parts.headers {
        if !hop_by_hop(k) {
            rb = rb.header(k, v);
        }
    }
    let sent = SystemTime::now();
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_GATEWAY, format!("report proxy: {e}\n")).into_response();
        }
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let Ok(answer) = resp.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let answered = SystemTime::now();
    p.record(
        (sent, answered),
        &parts.method,
        &path,
        &parts.headers,
        &body,
        status,
        &headers,
        &answer,
    );
    let mut b = axum::http::Response::builder().status(status);
    for (k, v) in &headers {
        if !hop_by_hop(k) {
            b = b.header(k, v);
        }
    }
    b.body(Body::from(answer))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// A described HTTP message.
struct Said {
    title: String,
    details: Vec<String>,
}

impl Proxy {
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        (sent, answered): (SystemTime, SystemTime),
        method: &Method,
        path: &str,
        req_headers: &HeaderMap,
        req_body: &[u8],
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) {
        let mut s = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let (ue, class, lanes, request, answer) = match self.hop {
            Hop::Ub(w) => {
                let (req, ans, btid) =
                    describe_ub(method, path, req_headers, status, headers, body);
                if let Some(b) = btid {
                    s.watched[w].btids.push(b);
                }
                (w, Class::Ub, (Lane::Ue, Lane::Bsf), req, ans)
            }
            Hop::Ua(w) => {
                let (req, ans, rt, group) =
                    describe_ua(method, path, req_headers, req_body, status, headers, body);
                let class = Class::Ua {
                    rt,
                    group,
                    exchange: (sent, answered),
                };
                (w, class, (Lane::Ue, Lane::Bmsc), req, ans)
            }
            Hop::Zn => {
                let (req, ans, btid) = describe_zn(path, req_body, status, body);
                let Some(w) = btid
                    .as_ref()
                    .and_then(|b| s.watched.iter().position(|w| w.btids.contains(b)))
                else {
                    return;
                };
                (w, Class::Zn, (Lane::Bmsc, Lane::Bsf), req, ans)
            }
        };
        let start = self.inner.start;
        for (at, from, to, style, said) in [
            (sent, lanes.0, lanes.1, Style::Http, request),
            (answered, lanes.1, lanes.0, Style::HttpAnswer, answer),
        ] {
            s.entries.push(Entry {
                at,
                ue: Some(ue),
                class: class.clone(),
                item: Item::Arrow(Arrow {
                    at: since(start, at),
                    from,
                    to,
                    style,
                    title: said.title,
                    details: said.details,
                }),
                count: 1,
                last: at,
            });
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn status_line(status: StatusCode) -> String {
    format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_owned()
}

/// The Digest challenge of a 401, without the nonce itself.
fn challenge_text(h: &HeaderMap) -> String {
    match header(h, "www-authenticate").map(gba::digest::Challenge::parse) {
        Some(Ok(c)) => {
            let qop: Vec<&str> = c.qop.iter().map(|q| q.as_str()).collect();
            let mut t = format!(
                "WWW-Authenticate: Digest {}",
                c.algorithm.map(|a| a.as_str()).unwrap_or("MD5")
            );
            if !qop.is_empty() {
                t.push_str(&format!(", qop {}", qop.join("/")));
            }
            if c.stale {
                t.push_str(", stale");
            }
            t
        }
        _ => "WWW-Authenticate (digest challenge)".to_owned(),
    }
}

fn describe_ub(
    method: &Method,
    path: &str,
    req: &HeaderMap,
    status: StatusCode,
    h: &HeaderMap,
    body: &[u8],
) -> (Said, Said, Option<String>) {
    let mut rd = Vec::new();
    match header(req, "authorization").map(gba::digest::Authorization::parse) {
        Some(Ok(a)) if a.response.is_empty() && a.auts.is_none() => {
            rd.push(format!(
                "Authorization: Digest username = IMPI {}",
                a.username
            ));
            rd.push("(no credentials yet: asks for a challenge)".to_owned());
        }
        Some(Ok(a)) => {
            rd.push(format!(
                "Authorization: Digest username = IMPI {}",
                a.username
            ));
            rd.push(if a.auts.is_some() {
                "auts: SQN resynchronisation".to_owned()
            } else {
                format!(
                    "response with password RES, qop {}",
                    a.qop.map(|q| q.as_str()).unwrap_or("none")
                )
            });
        }
        _ => rd.push("no Authorization".to_owned()),
    }
    let request = Said {
        title: format!("HTTP {method} {path} (Ub)"),
        details: rd,
    };
    let mut ad = Vec::new();
    let mut btid = None;
    match status.as_u16() {
        401 => {
            ad.push(challenge_text(h));
            if let Some(Ok(c)) = header(h, "www-authenticate").map(gba::digest::Challenge::parse) {
                if let Ok(n) = base64::engine::general_purpose::STANDARD.decode(c.nonce.as_bytes())
                {
                    if n.len() >= 32 {
                        ad.push(format!(
                            "nonce = base64(RAND || AUTN), RAND {}...",
                            hex::encode(&n[..4])
                        ));
                    }
                }
            }
        }
        200 => {
            if let Ok((b, lifetime)) = std::str::from_utf8(body)
                .map_err(|_| ())
                .and_then(|t| ue::bootstrap::parse_bootstrapping_info(t).map_err(|_| ()))
            {
                ad.push(format!("B-TID {b}"));
                ad.push(format!("key lifetime {lifetime}"));
                btid = Some(b);
            }
            if header(h, "authentication-info").is_some() {
                ad.push("Authentication-Info (rspauth over the body)".to_owned());
            }
        }
        _ => {}
    }
    let answer = Said {
        title: status_line(status),
        details: ad,
    };
    (request, answer, btid)
}

#[allow(clippy::type_complexity)]
fn describe_ua(
    method: &Method,
    path: &str,
    req: &HeaderMap,
    req_body: &[u8],
    status: StatusCode,
    h: &HeaderMap,
    body: &[u8],
) -> (Said, Said, Option<RequestType>, Option<u16>) {
    let query: BTreeMap<String, String> = path
        .split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let rt = query.get("requesttype").and_then(|r| RequestType::parse(r));
    let mut rd = Vec::new();
    match header(req, "authorization").map(gba::digest::Authorization::parse) {
        Some(Ok(a)) => rd.push(format!(
            "Authorization: Digest username = B-TID {}",
            a.username
        )),
        _ => rd.push("no Authorization (first request)".to_owned()),
    }
    let mut group = None;
    let text = mbms::ua::decode_body(req_body).ok();
    match (rt, text) {
        (Some(r @ (RequestType::Register | RequestType::Deregister)), Some(t)) => {
            if let Ok(v) = mbms::ua::parse_services(&t, r) {
                rd.push(format!("services: {}", v.join(", ")));
            }
        }
        (Some(RequestType::MskRequest), Some(t)) => {
            if let Ok(v) = mbms::ua::parse_msk_request(&t) {
                let keys: Vec<String> = v
                    .iter()
                    .map(|k| match &k.name {
                        Some(n) => {
                            group.get_or_insert(n.msk_id.key_group);
                            if n.msk_id.key_number == 0 {
                                format!("group {} (current)", n.msk_id.key_group)
                            } else {
                                format!(
                                    "{} (group {}, key {})",
                                    n.msk_id, n.msk_id.key_group, n.msk_id.key_number
                                )
                            }
                        }
                        None => format!("{}/{}", k.key_domain_text, k.msk_id_text),
                    })
                    .collect();
                rd.push(format!("MSK IDs: {}", keys.join(", ")));
            }
        }
        _ => {}
    }
    if let Some(p) = query.get("mikey-port") {
        rd.push(format!("mikey-port={p}"));
    }
    let shown = path.split('&').next().unwrap_or(path);
    let request = Said {
        title: format!("HTTP {method} {shown}"),
        details: rd,
    };
    let mut ad = Vec::new();
    match status.as_u16() {
        401 => ad.push(challenge_text(h)),
        200 => {
            if header(h, "authentication-info").is_some() {
                ad.push("Authentication-Info (rspauth over the body)".to_owned());
            }
            let statuses = mbms::ua::decode_body(body)
                .ok()
                .and_then(|t| mbms::ua::response_statuses(&t).ok())
                .unwrap_or_default();
            if !statuses.is_empty() {
                let v: Vec<String> = statuses
                    .iter()
                    .map(|(id, s)| format!("{id}\u{a0}{s}"))
                    .collect();
                ad.push(format!("status {}", v.join(", ")));
            }
        }
        _ => {}
    }
    let answer = Said {
        title: status_line(status),
        details: ad,
    };
    (request, answer, rt, group)
}

fn describe_zn(
    path: &str,
    req_body: &[u8],
    status: StatusCode,
    body: &[u8],
) -> (Said, Said, Option<String>) {
    let v: serde_json::Value = serde_json::from_slice(req_body).unwrap_or_default();
    let btid = v["btid"].as_str().map(str::to_owned);
    let mut rd = Vec::new();
    if let Some(b) = &btid {
        rd.push(format!("B-TID {b}"));
    }
    if let Some(naf) = v["naf_id"].as_str().and_then(|h| hex::decode(h).ok()) {
        // NAF-ID = FQDN || Ua security protocol identifier (5 bytes).
        let split = naf.len().saturating_sub(5);
        rd.push(format!(
            "NAF-ID = {} || Ua protocol {}",
            String::from_utf8_lossy(&naf[..split]),
            hex::encode(&naf[split..])
        ));
    }
    let request = Said {
        title: format!("HTTP POST {path} (Zn)"),
        details: rd,
    };
    let mut ad = Vec::new();
    if status == StatusCode::OK {
        let a: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        // Only the names: Ks_NAF stays out of the report.
        ad.push("Ks_NAF for the BM-SC (not shown)".to_owned());
        let mut l = Vec::new();
        if let Some(i) = a["impi"].as_str() {
            l.push(format!("IMPI {i}"));
        }
        if let Some(g) = a["gba_type"].as_str() {
            l.push(g.to_owned());
        }
        if let Some(t) = a["lifetime"].as_str() {
            l.push(format!("lifetime {t}"));
        }
        if !l.is_empty() {
            ad.push(l.join(", "));
        }
    }
    let answer = Said {
        title: status_line(status),
        details: ad,
    };
    (request, answer, btid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_comparison_follows_rfc_1982() {
        assert!(serial_gt(1, 0, 16));
        assert!(!serial_gt(0, 1000, 16));
        assert!(serial_gt(1001, 1000, 16));
        // Wrapped: 2 comes after 65535.
        assert!(serial_gt(2, 65535, 16));
        assert!(!serial_gt(65535, 2, 16));
    }

    #[test]
    fn srtp_mki_sits_before_the_tag() {
        let mut p = vec![0x80u8; 12];
        p.extend_from_slice(&[9; 20]);
        p.extend_from_slice(&[0, 1, 0, 3, 0, 7]);
        p.extend_from_slice(&[0xee; SRTP_TAG_LEN]);
        assert_eq!(srtp_mki(&p).unwrap(), vec![0, 1, 0, 3, 0, 7]);
        assert_eq!(srtp_mki(&[0u8; 20]), None);
    }

    #[test]
    fn windows_and_admin_paths() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let w = [t0, t0 + Duration::from_secs(1), t0 + Duration::from_secs(2)];
        assert_eq!(window(&w, t0 - Duration::from_secs(1)), 0);
        assert_eq!(window(&w, t0 + Duration::from_millis(1500)), 1);
        assert_eq!(window(&w, t0 + Duration::from_secs(9)), 2);
        assert_eq!(group_in("/admin/v1/key-groups/1/rotate"), "1");
        assert_eq!(msk_id_text(&[0, 1, 0, 3]), "00010003 (group 1, key 3)");
    }

    #[test]
    fn zn_answers_never_show_the_key() {
        let ks_naf = "a".repeat(64);
        let body = format!(
            r#"{{"ks_naf":"{ks_naf}","impi":"ue00001@home1.net","gba_type":"gba_me","lifetime":"2030-01-01T00:00:00Z"}}"#
        );
        let req = br#"{"btid":"abc@bsf.home1.net","naf_id":"62"}"#;
        let (q, a, btid) = describe_zn("/zn/v1/naf-keys", req, StatusCode::OK, body.as_bytes());
        assert_eq!(btid.as_deref(), Some("abc@bsf.home1.net"));
        let all = [q.title, a.title]
            .into_iter()
            .chain(q.details)
            .chain(a.details)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!all.contains(&ks_naf), "{all}");
        assert!(all.contains("ue00001@home1.net"), "{all}");
    }

    #[test]
    fn an_unparsable_datagram_is_named_not_dropped() {
        let d = describe_mikey(&[1, 2, 3], TapKind::Mikey, &BTreeMap::new());
        assert!(d.title.contains("not parsed"), "{}", d.title);
    }
}
