//! Prometheus metrics of one BM-SC (`GET /metrics`, text exposition
//! format). A registry per server instance (the `prometheus-client` crate,
//! no global state), so several servers in one process (tests) do not mix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label: one word.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// The value.
    pub kind: String,
}

/// Labels of HTTP outcomes on Ua.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `register`, `deregister`, `msk-request` or `other`.
    pub requesttype: String,
    /// HTTP status code.
    pub status: String,
}

/// Labels of per-item results.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    /// `register`, `deregister`, `msk-request`.
    pub requesttype: String,
    /// Per-item status (`PROFILE.md` section 3).
    pub status: String,
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
    /// Zn requests, by result (`ok`, `not_found`, `error`, `cached`).
    pub zn: Family<Kind, Counter>,
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
    /// A fresh registry with every metric.
    pub fn new() -> Self {
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
            charging_records: Counter::default(),
            rotations: Counter::default(),
            mtk_sent: Family::default(),
            mtks_issued: Family::default(),
            srtp_packets: Family::default(),
            rtp_dropped: Family::default(),
            download_objects: Family::default(),
            udp_send_errors: Counter::default(),
            zn: Family::default(),
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
        Metrics { registry: r, ..m }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Count one with a single `kind` label.
    pub fn inc(family: &Family<Kind, Counter>, kind: &str) {
        family
            .get_or_create(&Kind {
                kind: kind.to_owned(),
            })
            .inc();
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
