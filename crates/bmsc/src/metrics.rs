//! Prometheus metrics of one BM-SC (`GET /metrics`). A registry per server
//! instance (the `prometheus-client` crate, no global state), so several
//! servers in one process (tests) do not mix.
//!
//! Two expositions of the same registry, chosen by the request's `Accept`
//! header ([`Exposition::negotiate`]): OpenMetrics 1.0 (what
//! `prometheus-client` encodes, ending in `# EOF`; Prometheus asks for it)
//! and otherwise the Prometheus text format 0.0.4 (`promtool check
//! metrics`, curl), in which a counter family is named after its `_total`
//! samples and there is no `# EOF`.
//!
//! Every series whose labels take values from a known set is created at
//! start with value 0 ([`Metrics::new`], [`Metrics::add_session`]), so
//! that rates and alerts work before the first event.

use std::borrow::Cow;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::SessionKind;

/// Content-Type of the OpenMetrics exposition (OpenMetrics 1.0, section
/// "Overall structure"; what `prometheus_client::encoding::text` writes).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content-Type of the Prometheus text exposition format 0.0.4.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `requesttype` label values of `bmsc_ua_http_responses_total`: the
/// request types of `PROFILE.md` section 3, and `other` for a missing or
/// unknown one.
pub const UA_REQUEST_TYPES: [&str; 4] = ["register", "deregister", "msk-request", "other"];

/// `status` label values of `bmsc_ua_http_responses_total`: every HTTP
/// status the Ua handler answers with (see the table in [`crate::ua`]).
pub const UA_HTTP_STATUSES: [u16; 8] = [200, 400, 401, 405, 413, 415, 500, 503];

/// `requesttype` label values of `bmsc_ua_items_total`.
pub const UA_ITEM_REQUEST_TYPES: [&str; 3] = ["register", "deregister", "msk-request"];

/// `status` label values of `bmsc_ua_items_total`: the per-item status
/// codes of `PROFILE.md` section 3.
pub const UA_ITEM_STATUSES: [u16; 6] = [200, 400, 403, 404, 480, 500];

/// `kind` label values of `bmsc_msk_messages_sent_total`.
pub const MSK_STEPS: &[&str] = &["deliver", "inactive", "activate", "pull"];

/// `kind` label values of `bmsc_msk_acks_total`.
pub const ACK_RESULTS: &[&str] = &[
    "accepted",
    "stale",
    "unmatched",
    "bad_mac",
    "wrong_msk",
    "malformed",
];

/// `kind` label values of `bmsc_cluster_notices_received_total`: the
/// notices instances send each other ([`crate::cluster::Notice`]), and
/// `unknown` for a payload this version does not read.
pub const CLUSTER_NOTICE_KINDS: &[&str] = &[
    "barrier",
    "ue",
    "definitions",
    "adopt",
    "rotate",
    "pull",
    "unknown",
];

/// `kind` label values of `bmsc_cluster_lease_renewals_total`.
pub const CLUSTER_RENEWAL_RESULTS: &[&str] = &["ok", "failed"];

/// `kind` label values of `bmsc_cluster_anchor_changes_total`.
pub const CLUSTER_ANCHOR_CHANGES: &[&str] = &["gained", "lost"];

/// `kind` label values of `bmsc_zn_requests_total`.
pub const ZN_RESULTS: &[&str] = &["ok", "not_found", "error"];

/// The two expositions of `GET /metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0 text ([`OPENMETRICS_CONTENT_TYPE`]).
    OpenMetrics,
    /// Prometheus text format 0.0.4 ([`PROMETHEUS_TEXT_CONTENT_TYPE`]).
    PrometheusText,
}

impl Exposition {
    /// The exposition for an `Accept` header (RFC 9110 section 12.5.1):
    /// OpenMetrics when `application/openmetrics-text` is accepted with a
    /// quality at least that of `text/plain` (Prometheus sends
    /// `application/openmetrics-text;version=1.0.0,...,text/plain;version=0.0.4;q=0.5,...`),
    /// else the Prometheus text format (no header, `*/*`, `text/plain`).
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Exposition::PrometheusText;
        };
        let mut openmetrics = 0.0f32;
        let mut text = 0.0f32;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Exposition::OpenMetrics
        } else {
            Exposition::PrometheusText
        }
    }
}

/// Rewrites `prometheus-client`'s OpenMetrics text as the Prometheus text
/// format 0.0.4: a counter family `x` (samples `x_total`) is announced as
/// `x_total`, unknown types become `untyped`, `# UNIT` and `# EOF` are
/// dropped. Samples and label escaping are the same in both formats.
fn openmetrics_to_prometheus_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').map_or("", |(_, h)| h));
            continue;
        }
        if let Some((name, ty)) = line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' ')) {
            let (name, ty) = match ty {
                "counter" => (format!("{name}_total"), ty),
                "gauge" | "histogram" | "summary" => (name.to_owned(), ty),
                _ => (name.to_owned(), "untyped"),
            };
            if let Some(h) = help.take() {
                out.push_str(&format!("# HELP {name} {h}\n"));
            }
            out.push_str(&format!("# TYPE {name} {ty}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Label: one word.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// The value (one of a fixed set: borrowed, nothing allocated per
    /// count).
    pub kind: Cow<'static, str>,
}

/// Labels of HTTP outcomes on Ua (borrowed static values: counting a
/// request allocates nothing, see [`status_label`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `register`, `deregister`, `msk-request` or `other`.
    pub requesttype: Cow<'static, str>,
    /// HTTP status code.
    pub status: Cow<'static, str>,
}

/// Labels of per-item results.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    /// `register`, `deregister`, `msk-request`.
    pub requesttype: Cow<'static, str>,
    /// Per-item status (`PROFILE.md` section 3).
    pub status: Cow<'static, str>,
}

/// The `status` label of an HTTP or item status code: a static string for
/// the codes Ua answers with ([`UA_HTTP_STATUSES`], [`UA_ITEM_STATUSES`],
/// 408), else the number written out.
pub fn status_label(code: u16) -> Cow<'static, str> {
    Cow::Borrowed(match code {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        415 => "415",
        480 => "480",
        500 => "500",
        503 => "503",
        other => return Cow::Owned(other.to_string()),
    })
}

/// Labels of a session.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// Session name.
    pub session: String,
}

/// The metrics.
pub struct Metrics {
    registry: Registry,
    /// Ua HTTP responses.
    pub http: Family<HttpLabels, Counter>,
    /// Per-item results of Ua requests (registrations, MSK requests).
    pub items: Family<ItemLabels, Counter>,
    /// UEs registered to at least one service.
    pub registered_ues: Gauge,
    /// MSK messages sent, by step (`deliver`, `inactive`, `activate`, `pull`).
    pub msk_sent: Family<Kind, Counter>,
    /// Of those, retransmissions.
    pub msk_retransmissions: Counter,
    /// Acknowledgements, by result (`accepted`, `stale`, `unmatched`,
    /// `bad_mac`, `malformed`, `wrong_msk`).
    pub acks: Family<Kind, Counter>,
    /// Deliveries given up.
    pub give_ups: Counter,
    /// Group commits (transactions writing queued Ua writes and
    /// acknowledgement outcomes).
    pub group_commits: Counter,
    /// Writes (registration changes, delivery outcomes, charging records)
    /// those commits carried.
    pub group_commit_writes: Counter,
    /// Charging records written.
    pub charging_records: Counter,
    /// MSK rotations.
    pub rotations: Counter,
    /// MTK messages sent (first transmissions and repetitions), by session.
    pub mtk_sent: Family<SessionLabels, Counter>,
    /// New MTKs issued, by session.
    pub mtks_issued: Family<SessionLabels, Counter>,
    /// SRTP packets sent (per destination), by session.
    pub srtp_packets: Family<SessionLabels, Counter>,
    /// RTP packets dropped (not RTP, protection failed), by session.
    pub rtp_dropped: Family<SessionLabels, Counter>,
    /// Protected download objects written, by session.
    pub download_objects: Family<SessionLabels, Counter>,
    /// UDP send failures.
    pub udp_send_errors: Counter,
    /// Zn requests, by result (`ok`, `not_found`, `error`).
    pub zn: Family<Kind, Counter>,
    /// Several instances on one database (issue 13); registered only then.
    pub cluster: ClusterMetrics,
}

/// The metrics of an instance of several on one PostgreSQL database
/// ([`crate::cluster`], docs/scale-out.md): what it holds, its lease
/// renewals, takeovers and the notices it handled. Registered by
/// [`Metrics::with_cluster`] only.
#[derive(Clone, Debug, Default)]
pub struct ClusterMetrics {
    /// Live instances seen at the last renewal (this one included).
    pub live_instances: Gauge,
    /// 1 while the leases are renewed in time, 0 once they expired
    /// (PostgreSQL unreachable: Ua answers 503, nothing is pushed).
    pub healthy: Gauge,
    /// Lease renewals by result (`ok`, `failed`).
    pub renewals: Family<Kind, Counter>,
    /// UE shards held (of [`crate::cluster::UE_SHARDS`]).
    pub ue_shards: Gauge,
    /// Key groups this instance anchors.
    pub key_groups_anchored: Gauge,
    /// UE shards taken (from a dead instance, from a released lease, at
    /// the start) and given up (hand-over, expiry).
    pub ue_shards_taken: Counter,
    /// See [`ue_shards_taken`](Self::ue_shards_taken).
    pub ue_shards_given_up: Counter,
    /// Anchor leases gained and lost, by `kind`.
    pub anchor_changes: Family<Kind, Counter>,
    /// Notices handled, by kind ([`CLUSTER_NOTICE_KINDS`]).
    pub notices: Family<Kind, Counter>,
    /// Key group writes refused by the lease fence
    /// ([`crate::store::StoreError::Fenced`]).
    pub fenced_writes: Counter,
    /// MIKEY messages built but not sent because this instance's leases
    /// were not known to be renewed in time ([`crate::cluster::ClusterState::may_send`]).
    pub mikey_withheld: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric of a single instance.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// [`new`](Self::new) plus the [`ClusterMetrics`] of an instance of
    /// several on one database.
    pub fn with_cluster() -> Self {
        Self::build(true)
    }

    fn build(cluster: bool) -> Self {
        let mut r = Registry::with_prefix("bmsc");
        let m = Metrics {
            registry: Registry::default(),
            http: Family::default(),
            items: Family::default(),
            registered_ues: Gauge::default(),
            msk_sent: Family::default(),
            msk_retransmissions: Counter::default(),
            acks: Family::default(),
            give_ups: Counter::default(),
            group_commits: Counter::default(),
            group_commit_writes: Counter::default(),
            charging_records: Counter::default(),
            rotations: Counter::default(),
            mtk_sent: Family::default(),
            mtks_issued: Family::default(),
            srtp_packets: Family::default(),
            rtp_dropped: Family::default(),
            download_objects: Family::default(),
            udp_send_errors: Counter::default(),
            zn: Family::default(),
            cluster: ClusterMetrics::default(),
        };
        r.register(
            "ua_http_responses",
            "Ua HTTP responses by request type and status",
            m.http.clone(),
        );
        r.register(
            "ua_items",
            "Per-item results of Ua requests by request type and item status",
            m.items.clone(),
        );
        r.register(
            "registered_ues",
            "UEs registered to at least one service",
            m.registered_ues.clone(),
        );
        r.register(
            "msk_messages_sent",
            "MIKEY MSK messages sent, by step (deliver, inactive, activate, pull)",
            m.msk_sent.clone(),
        );
        r.register(
            "msk_retransmissions",
            "MSK messages that were retransmissions",
            m.msk_retransmissions.clone(),
        );
        r.register(
            "msk_acks",
            "MIKEY MSK acknowledgements by result",
            m.acks.clone(),
        );
        r.register(
            "msk_give_ups",
            "MSK deliveries given up after the last retransmission",
            m.give_ups.clone(),
        );
        r.register(
            "group_commits",
            "Store transactions of the group commit (Ua writes and acknowledgement outcomes)",
            m.group_commits.clone(),
        );
        r.register(
            "group_commit_writes",
            "Writes carried by the group commits (writes / commits = the mean group size)",
            m.group_commit_writes.clone(),
        );
        r.register(
            "charging_records",
            "Charging records written (4-way procedure)",
            m.charging_records.clone(),
        );
        r.register("msk_rotations", "MSK rotations", m.rotations.clone());
        r.register(
            "mtk_messages_sent",
            "MIKEY MTK messages sent (with repetitions) by session",
            m.mtk_sent.clone(),
        );
        r.register(
            "mtks_issued",
            "New MTKs issued by session",
            m.mtks_issued.clone(),
        );
        r.register(
            "srtp_packets_sent",
            "SRTP packets sent (per destination) by session",
            m.srtp_packets.clone(),
        );
        r.register(
            "rtp_packets_dropped",
            "RTP packets that could not be protected",
            m.rtp_dropped.clone(),
        );
        r.register(
            "download_objects",
            "Protected download objects written by session",
            m.download_objects.clone(),
        );
        r.register(
            "udp_send_errors",
            "UDP datagrams that could not be sent",
            m.udp_send_errors.clone(),
        );
        r.register("zn_requests", "Zn key requests by result", m.zn.clone());
        if cluster {
            let c = &m.cluster;
            r.register(
                "cluster_live_instances",
                "Live BM-SC instances on the database at the last lease renewal",
                c.live_instances.clone(),
            );
            r.register(
                "cluster_healthy",
                "1 while this instance's leases are renewed in time, 0 once they expired",
                c.healthy.clone(),
            );
            r.register(
                "cluster_lease_renewals",
                "Lease renewals by result (ok, failed)",
                c.renewals.clone(),
            );
            r.register(
                "cluster_ue_shards",
                "UE shards this instance holds (of 256)",
                c.ue_shards.clone(),
            );
            r.register(
                "cluster_key_groups_anchored",
                "Key groups this instance anchors (rotates, issues MTKs for)",
                c.key_groups_anchored.clone(),
            );
            r.register(
                "cluster_ue_shards_taken",
                "UE shards taken (start, takeover of a dead instance, hand-over)",
                c.ue_shards_taken.clone(),
            );
            r.register(
                "cluster_ue_shards_given_up",
                "UE shards given up (hand-over to a new instance, leases expired)",
                c.ue_shards_given_up.clone(),
            );
            r.register(
                "cluster_anchor_changes",
                "Anchor leases gained and lost, by kind",
                c.anchor_changes.clone(),
            );
            r.register(
                "cluster_notices_received",
                "Notices from the instances handled, by kind",
                c.notices.clone(),
            );
            r.register(
                "cluster_fenced_writes",
                "Key group writes refused because this instance's anchor lease had passed to another",
                c.fenced_writes.clone(),
            );
            r.register(
                "cluster_mikey_withheld",
                "MIKEY messages not sent because this instance's leases were not known to be renewed in time",
                c.mikey_withheld.clone(),
            );
            for (family, kinds) in [
                (&c.renewals, CLUSTER_RENEWAL_RESULTS),
                (&c.anchor_changes, CLUSTER_ANCHOR_CHANGES),
                (&c.notices, CLUSTER_NOTICE_KINDS),
            ] {
                for k in kinds {
                    let _ = family.get_or_create(&Kind {
                        kind: Cow::Borrowed(k),
                    });
                }
            }
        }
        // Every label set of a known value set, from the start.
        for rt in UA_REQUEST_TYPES {
            for st in UA_HTTP_STATUSES {
                let _ = m.http.get_or_create(&HttpLabels {
                    requesttype: rt.into(),
                    status: status_label(st),
                });
            }
        }
        for rt in UA_ITEM_REQUEST_TYPES {
            for st in UA_ITEM_STATUSES {
                let _ = m.items.get_or_create(&ItemLabels {
                    requesttype: rt.into(),
                    status: status_label(st),
                });
            }
        }
        for (family, kinds) in [
            (&m.msk_sent, MSK_STEPS),
            (&m.acks, ACK_RESULTS),
            (&m.zn, ZN_RESULTS),
        ] {
            for k in kinds {
                let _ = family.get_or_create(&Kind {
                    kind: Cow::Borrowed(k),
                });
            }
        }
        Metrics { registry: r, ..m }
    }

    /// The OpenMetrics 1.0 exposition (ends with `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The Prometheus text exposition 0.0.4 of the same registry.
    pub fn render_prometheus_text(&self) -> String {
        openmetrics_to_prometheus_text(&self.render())
    }

    /// The body and its Content-Type in `exposition`.
    pub fn exposition(&self, exposition: Exposition) -> (&'static str, String) {
        match exposition {
            Exposition::OpenMetrics => (OPENMETRICS_CONTENT_TYPE, self.render()),
            Exposition::PrometheusText => {
                (PROMETHEUS_TEXT_CONTENT_TYPE, self.render_prometheus_text())
            }
        }
    }

    /// Creates the label sets of the session `name` (value 0), by kind:
    /// MTK series for every session, SRTP and RTP series for streaming
    /// sessions, download objects for download sessions.
    pub fn add_session(&self, name: &str, kind: SessionKind) {
        let mut families = vec![&self.mtk_sent, &self.mtks_issued];
        match kind {
            SessionKind::Streaming => families.extend([&self.srtp_packets, &self.rtp_dropped]),
            SessionKind::Download => families.push(&self.download_objects),
        }
        for f in families {
            Self::inc_session(f, name, 0);
        }
    }

    /// Count one with a single `kind` label.
    pub fn inc(family: &Family<Kind, Counter>, kind: &'static str) {
        Self::inc_by(family, kind, 1);
    }

    /// Count `n` with a single `kind` label.
    pub fn inc_by(family: &Family<Kind, Counter>, kind: &'static str, n: u64) {
        family
            .get_or_create(&Kind {
                kind: Cow::Borrowed(kind),
            })
            .inc_by(n);
    }

    /// Count for a session.
    pub fn inc_session(family: &Family<SessionLabels, Counter>, session: &str, n: u64) {
        family
            .get_or_create(&SessionLabels {
                session: session.to_owned(),
            })
            .inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_static_for_every_ua_status_and_spell_the_code() {
        for code in UA_HTTP_STATUSES
            .into_iter()
            .chain(UA_ITEM_STATUSES)
            .chain([408])
        {
            let l = status_label(code);
            assert!(matches!(l, Cow::Borrowed(_)), "{code}");
            assert_eq!(l, code.to_string());
        }
        assert_eq!(status_label(418), "418");
        assert!(matches!(status_label(418), Cow::Owned(_)));
    }

    #[test]
    fn accept_negotiation() {
        use Exposition::*;
        for (accept, want) in [
            (None, PrometheusText),
            (Some("*/*"), PrometheusText),
            (Some("text/plain"), PrometheusText),
            (Some("text/plain;version=0.0.4"), PrometheusText),
            // What Prometheus 2.x sends.
            (
                Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
                OpenMetrics,
            ),
            (Some("Application/OpenMetrics-Text; version=1.0.0"), OpenMetrics),
            (Some("application/openmetrics-text;q=0.2, text/plain"), PrometheusText),
            (Some("application/openmetrics-text;q=0"), PrometheusText),
        ] {
            assert_eq!(Exposition::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn every_known_series_exists_before_any_event() {
        let m = Metrics::new();
        m.add_session("live", SessionKind::Streaming);
        m.add_session("files", SessionKind::Download);
        let om = m.render();
        for want in [
            "bmsc_ua_http_responses_total{requesttype=\"msk-request\",status=\"401\"} 0",
            "bmsc_ua_items_total{requesttype=\"register\",status=\"480\"} 0",
            "bmsc_msk_messages_sent_total{kind=\"pull\"} 0",
            "bmsc_msk_acks_total{kind=\"bad_mac\"} 0",
            "bmsc_zn_requests_total{kind=\"not_found\"} 0",
            "bmsc_mtks_issued_total{session=\"files\"} 0",
            "bmsc_srtp_packets_sent_total{session=\"live\"} 0",
            "bmsc_rtp_packets_dropped_total{session=\"live\"} 0",
            "bmsc_download_objects_total{session=\"files\"} 0",
        ] {
            assert!(om.lines().any(|l| l == want), "{want} missing in\n{om}");
        }
        assert!(!om.contains("bmsc_download_objects_total{session=\"live\"}"));
        assert!(!om.contains("bmsc_srtp_packets_sent_total{session=\"files\"}"));
    }

    #[test]
    fn cluster_series_exist_only_for_an_instance_of_several() {
        assert!(!Metrics::new().render().contains("bmsc_cluster_"));
        let om = Metrics::with_cluster().render();
        for want in [
            "bmsc_cluster_live_instances 0",
            "bmsc_cluster_healthy 0",
            "bmsc_cluster_lease_renewals_total{kind=\"failed\"} 0",
            "bmsc_cluster_ue_shards 0",
            "bmsc_cluster_key_groups_anchored 0",
            "bmsc_cluster_ue_shards_taken_total 0",
            "bmsc_cluster_ue_shards_given_up_total 0",
            "bmsc_cluster_anchor_changes_total{kind=\"lost\"} 0",
            "bmsc_cluster_notices_received_total{kind=\"barrier\"} 0",
            "bmsc_cluster_notices_received_total{kind=\"unknown\"} 0",
            "bmsc_cluster_fenced_writes_total 0",
            "bmsc_cluster_mikey_withheld_total 0",
        ] {
            assert!(om.lines().any(|l| l == want), "{want} missing in\n{om}");
        }
    }

    #[test]
    fn prometheus_text_names_counter_families_after_their_samples() {
        let m = Metrics::new();
        let om = m.render();
        assert!(om.ends_with("# EOF\n"));
        assert!(om.contains("# TYPE bmsc_msk_rotations counter\n"));
        let text = m.render_prometheus_text();
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# HELP bmsc_msk_rotations_total MSK rotations.\n# TYPE bmsc_msk_rotations_total counter\nbmsc_msk_rotations_total 0\n"), "{text}");
        assert!(text.contains("# TYPE bmsc_registered_ues gauge\nbmsc_registered_ues 0\n"));
        // Same samples, in the same order.
        let samples = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(samples(&om), samples(&text));
    }
}
