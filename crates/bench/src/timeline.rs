//! The timeline of one rotation, for `mbms bench rekey --plot`
//! ([`crate::plot`]): what the swarm saw, counted in fixed time buckets,
//! and the BM-SC's counters sampled from its `/metrics`.
//!
//! Recording costs the swarm one atomic load per received batch when it
//! is off; when it is on, a clock read per batch and a few relaxed atomic
//! additions per message (and a parse of each message `--loss` drops). Its memory is fixed when it starts: [`FINE_BUCKETS`] buckets of
//! [`FINE`] then buckets of [`COARSE`] up to the horizon, a few counters
//! each, and one byte per UE (how many MSK messages reached it); nothing
//! is allocated per message.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use mbms::messages::MskEnvelope;
use mbms::MskId;
use tokio::sync::oneshot;

use crate::procfs::Metrics;

/// Width of the first [`FINE_BUCKETS`] buckets (the first 65.5 s).
pub const FINE: Duration = Duration::from_millis(1);
/// Number of [`FINE`] buckets.
pub const FINE_BUCKETS: usize = 1 << 16;
/// Width of the buckets after the fine ones, up to the horizon.
pub const COARSE: Duration = Duration::from_millis(100);
/// How often the BM-SC's `/metrics` is read while recording.
pub const METRICS_PERIOD: Duration = Duration::from_millis(25);

/// The counters of a bucket, by position.
const HOLDING: usize = 0;
const FIRST: usize = 1;
const AGAIN: usize = 2;
const LOST_IN: usize = 3;
const LOST_OUT: usize = 4;
const EARLIER: usize = 5;
const SERIES: usize = 6;

/// The swarm's recorder: off until [`Timeline::start`], then counting.
#[derive(Default)]
pub struct Timeline {
    rec: OnceLock<Recording>,
}

/// A started recording (see [`Timeline::start`]).
struct Recording {
    start: Instant,
    /// Fine buckets, then coarse ones; the last takes everything later.
    buckets: Box<[[AtomicU32; SERIES]]>,
    /// MSK messages addressed to each UE (global index) since the start,
    /// lost ones included, saturating.
    seen: Box<[AtomicU8]>,
    /// MSK requests over Ua: (seconds since the start, UEs that asked).
    requests: Mutex<Vec<RequestEvent>>,
    /// MSKs of before the start: their messages (late retransmissions of
    /// an earlier delivery) are counted apart.
    earlier: Vec<MskId>,
}

impl Timeline {
    /// A recorder that records nothing until started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts recording: times count from `start`, UEs are numbered
    /// `0..ues`, buckets cover `horizon` after `start` (later events go
    /// to the last bucket); messages of the `earlier` MSKs (held before
    /// the rotation) are counted apart. Only the first call starts; it
    /// returns whether it did.
    pub fn start(&self, start: Instant, ues: usize, horizon: Duration, earlier: &[MskId]) -> bool {
        let mut started = false;
        self.rec.get_or_init(|| {
            started = true;
            let fine_span = FINE.as_micros() as u64 * FINE_BUCKETS as u64;
            let rest = (horizon.as_micros() as u64).saturating_sub(fine_span);
            let coarse = rest.div_ceil(COARSE.as_micros() as u64) as usize + 1;
            Recording {
                start,
                buckets: (0..FINE_BUCKETS + coarse)
                    .map(|_| Default::default())
                    .collect(),
                seen: (0..ues).map(|_| AtomicU8::new(0)).collect(),
                requests: Mutex::new(Vec::new()),
                earlier: earlier.to_vec(),
            }
        });
        started
    }

    /// Where events happening now go, or `None` when not recording. A
    /// shard takes one mark per received batch.
    #[inline]
    pub fn mark(&self) -> Option<Mark<'_>> {
        let rec = self.rec.get()?;
        let slot = rec.slot(rec.start.elapsed());
        Some(Mark { rec, slot })
    }

    /// `ues` UEs sent an MSK request over Ua now.
    pub fn requests(&self, ues: usize) {
        if let (Some(rec), true) = (self.rec.get(), ues > 0) {
            let t_s = rec.start.elapsed().as_secs_f64();
            rec.requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(RequestEvent { t_s, ues });
        }
    }

    /// What was recorded so far (empty when never started).
    pub fn snapshot(&self) -> SwarmTimeline {
        let Some(rec) = self.rec.get() else {
            return SwarmTimeline::default();
        };
        let mut buckets = Vec::new();
        for (i, b) in rec.buckets.iter().enumerate() {
            let c: [u32; SERIES] = std::array::from_fn(|k| b[k].load(Ordering::Relaxed));
            if c.iter().all(|&v| v == 0) {
                continue;
            }
            let (t0, width) = Recording::span(i);
            buckets.push(TimelineBucket {
                t_s: t0.as_secs_f64(),
                width_s: width.as_secs_f64(),
                holding: c[HOLDING],
                first: c[FIRST],
                again: c[AGAIN],
                lost_in: c[LOST_IN],
                lost_out: c[LOST_OUT],
                earlier: c[EARLIER],
            });
        }
        let requests = rec
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        SwarmTimeline { buckets, requests }
    }
}

impl Recording {
    fn slot(&self, since_start: Duration) -> usize {
        let us = since_start.as_micros() as u64;
        let fine = FINE.as_micros() as u64;
        let i = if us < fine * FINE_BUCKETS as u64 {
            (us / fine) as usize
        } else {
            FINE_BUCKETS + ((us - fine * FINE_BUCKETS as u64) / COARSE.as_micros() as u64) as usize
        };
        i.min(self.buckets.len() - 1)
    }

    /// Start and width of bucket `i`.
    fn span(i: usize) -> (Duration, Duration) {
        if i < FINE_BUCKETS {
            (FINE * i as u32, FINE)
        } else {
            (
                FINE * FINE_BUCKETS as u32 + COARSE * (i - FINE_BUCKETS) as u32,
                COARSE,
            )
        }
    }
}

/// The bucket of the moment a shard received a batch.
#[derive(Clone, Copy)]
pub struct Mark<'a> {
    rec: &'a Recording,
    slot: usize,
}

impl Mark<'_> {
    fn add(&self, series: usize, n: u32) {
        self.rec.buckets[self.slot][series].fetch_add(n, Ordering::Relaxed);
    }

    /// An MSK message for UE `ue` (global index) reached the swarm and
    /// went on to its MGV-F: the UE's first since the start, or again (a
    /// retransmission, or the answer to an MSK request), or one of an
    /// earlier MSK.
    #[inline]
    pub fn msk_message(&self, ue: usize, msk: MskId) {
        if self.rec.earlier.contains(&msk) {
            self.add(EARLIER, 1);
            return;
        }
        let again = self.count_for(ue);
        self.add(if again { AGAIN } else { FIRST }, 1);
    }

    /// A datagram dropped by the simulated loss before its UE saw it;
    /// `ue_of` names the UE (global index) of an IDr. A dropped MSK
    /// message still counts for its UE, so the next one is marked as
    /// sent again.
    pub fn msk_message_lost(&self, datagram: &[u8], ue_of: impl FnOnce(&str) -> Option<usize>) {
        if let Ok(env) = MskEnvelope::parse(datagram) {
            if let Some(ue) = ue_of(env.muk_id.idr.as_str()) {
                if !self.rec.earlier.contains(&env.msk.msk_id) {
                    self.count_for(ue);
                }
            }
        }
        self.add(LOST_IN, 1);
    }

    /// Counts a message for `ue`; whether it had one before.
    fn count_for(&self, ue: usize) -> bool {
        match self.rec.seen.get(ue) {
            Some(c) => {
                let before = c.load(Ordering::Relaxed);
                if before < u8::MAX {
                    c.store(before + 1, Ordering::Relaxed);
                }
                before > 0
            }
            None => false,
        }
    }

    /// `n` UEs started holding every MSK of the swarm's target.
    #[inline]
    pub fn holders(&self, n: usize) {
        if n > 0 {
            self.add(HOLDING, n.min(u32::MAX as usize) as u32);
        }
    }

    /// An acknowledgement was dropped by the simulated loss.
    #[inline]
    pub fn ack_lost(&self) {
        self.add(LOST_OUT, 1);
    }
}

/// MSK requests over Ua at one moment.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct RequestEvent {
    /// Seconds since the rotation request.
    pub t_s: f64,
    /// UEs that asked.
    pub ues: usize,
}

/// One bucket of the swarm's timeline with something in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct TimelineBucket {
    /// Start, seconds since the rotation request.
    pub t_s: f64,
    /// Width, seconds.
    pub width_s: f64,
    /// UEs that started holding the new MSK.
    pub holding: u32,
    /// MSK messages that reached a UE's MGV-F, the first for that UE.
    pub first: u32,
    /// MSK messages that reached a UE's MGV-F, not the first for that UE
    /// (a BM-SC retransmission or the answer to an MSK request).
    pub again: u32,
    /// MSK messages dropped by `--loss`.
    pub lost_in: u32,
    /// Acknowledgements dropped by `--loss`.
    pub lost_out: u32,
    /// MSK messages of an MSK held before the rotation that reached a
    /// UE's MGV-F (late retransmissions of an earlier delivery).
    pub earlier: u32,
}

/// What the swarm recorded (non-empty buckets in time order).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SwarmTimeline {
    /// Buckets with something in them.
    pub buckets: Vec<TimelineBucket>,
    /// MSK requests over Ua.
    pub requests: Vec<RequestEvent>,
}

/// The BM-SC's counters at one moment, as deltas from the rotation.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct BmscSample {
    /// Seconds since the rotation request (when the answer arrived).
    pub t_s: f64,
    /// `bmsc_msk_messages_sent_total`.
    pub messages_sent: u64,
    /// `bmsc_msk_retransmissions_total`.
    pub retransmissions: u64,
    /// `bmsc_msk_acks_total`, every kind.
    pub acks_processed: u64,
}

impl BmscSample {
    fn new(t_s: f64, m: &Metrics, base: &Metrics) -> Self {
        let d = |name: &str| (m.sum(name) - base.sum(name)).max(0.0) as u64;
        BmscSample {
            t_s,
            messages_sent: d("bmsc_msk_messages_sent_total"),
            retransmissions: d("bmsc_msk_retransmissions_total"),
            acks_processed: d("bmsc_msk_acks_total"),
        }
    }
}

/// The timeline of a rotation: the swarm's and the BM-SC's.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RekeyTimeline {
    /// What the swarm saw.
    pub swarm: SwarmTimeline,
    /// The BM-SC's counters, every [`METRICS_PERIOD`].
    pub bmsc: Vec<BmscSample>,
}

/// Reads a BM-SC's `/metrics` every [`METRICS_PERIOD`] until
/// [`MetricsSampler::finish`].
pub struct MetricsSampler {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<BmscSample>>,
}

impl MetricsSampler {
    /// Starts sampling `metrics_url`; times count from `start`, counters
    /// from `baseline` (a scrape just before `start`).
    pub fn start(
        http: reqwest::Client,
        metrics_url: String,
        start: Instant,
        baseline: Metrics,
    ) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(METRICS_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let last = tokio::select! {
                    _ = tick.tick() => false,
                    _ = &mut stopped => true,
                };
                if let Ok(m) = Metrics::scrape(&http, &metrics_url).await {
                    samples.push(BmscSample::new(
                        start.elapsed().as_secs_f64(),
                        &m,
                        &baseline,
                    ));
                }
                if last {
                    return samples;
                }
            }
        });
        MetricsSampler { stop, task }
    }

    /// Takes a last sample and returns them all.
    pub async fn finish(self) -> Vec<BmscSample> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_until_started_then_counts_in_buckets() {
        let t = Timeline::new();
        assert!(t.mark().is_none());
        t.requests(3);
        assert_eq!(t.snapshot(), SwarmTimeline::default());

        let start = Instant::now() - Duration::from_millis(5);
        assert!(t.start(start, 4, Duration::from_secs(10), &[MskId::new(1, 1)]));
        assert!(!t.start(Instant::now(), 4, Duration::from_secs(10), &[]));
        let m = t.mark().unwrap();
        let new = MskId::new(1, 2);
        m.msk_message(0, new);
        m.msk_message(1, new);
        m.msk_message(0, new);
        m.msk_message(1, MskId::new(1, 1));
        m.holders(2);
        m.ack_lost();
        m.msk_message_lost(b"not MIKEY", |_| Some(2));
        m.msk_message(9, new); // no such UE: counted as a first message
        t.requests(2);
        t.requests(0);

        let s = t.snapshot();
        assert_eq!(s.buckets.len(), 1, "{s:?}");
        let b = s.buckets[0];
        assert!(b.t_s >= 0.005 && b.width_s == 0.001, "{b:?}");
        assert_eq!((b.first, b.again, b.holding), (3, 1, 2));
        assert_eq!((b.lost_in, b.lost_out, b.earlier), (1, 1, 1));
        assert_eq!(s.requests.len(), 1);
        assert_eq!(s.requests[0].ues, 2);
    }

    #[test]
    fn buckets_are_fine_then_coarse_and_capped() {
        let t = Timeline::new();
        t.start(Instant::now(), 0, Duration::from_secs(70), &[]);
        let rec = t.rec.get().unwrap();
        assert_eq!(rec.slot(Duration::from_micros(1_500)), 1);
        let fine_end = FINE * FINE_BUCKETS as u32;
        assert_eq!(rec.slot(fine_end), FINE_BUCKETS);
        assert_eq!(rec.slot(fine_end + COARSE * 3), FINE_BUCKETS + 3);
        let last = rec.buckets.len() - 1;
        assert_eq!(rec.slot(Duration::from_secs(3600)), last);
        assert_eq!(Recording::span(FINE_BUCKETS + 2).0, fine_end + COARSE * 2);
        // 70 s: 65.536 s fine, then 4.464 s in 100 ms buckets (+1 spare).
        assert_eq!(rec.buckets.len(), FINE_BUCKETS + 45 + 1);
    }

    #[test]
    fn lost_message_makes_the_next_one_again() {
        use mbms::messages::MskMessage;
        use mbms::{Muk, MukId};
        let pull = MskMessage::solicited_pull(
            MukId::new("bmsc.test", "b1@bsf.test"),
            1,
            [7; 16],
            "001-01".parse().unwrap(),
            1,
        )
        .build(&Muk::from_bytes([1; 32]))
        .unwrap();
        let t = Timeline::new();
        t.start(Instant::now(), 3, Duration::from_secs(1), &[]);
        let m = t.mark().unwrap();
        let mut asked = None;
        m.msk_message_lost(&pull.bytes, |idr| {
            asked = Some(idr.to_owned());
            Some(1)
        });
        assert_eq!(asked.as_deref(), Some("b1@bsf.test"));
        m.msk_message(1, MskId::new(1, 2));
        m.msk_message(2, MskId::new(1, 2));
        let total = t.snapshot().buckets.iter().fold((0, 0, 0), |a, b| {
            (a.0 + b.first, a.1 + b.again, a.2 + b.lost_in)
        });
        assert_eq!(total, (1, 1, 1));
    }
}
