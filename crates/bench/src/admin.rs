//! The BM-SC's admin API and `/metrics` over every live instance of a
//! [`Services`] (one home for the harness's admin calls: `mbms bench
//! rekey` and the scale-out demo).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mbms::{MskId, MskName};

use crate::procfs::Metrics;
use crate::services::{self, BenchError, Services};

/// The BM-SC's admin API and `/metrics`, over every live instance.
#[derive(Clone)]
pub struct Admin {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// Base URL of each instance.
    pub bases: Vec<String>,
    /// Which instances run (a killed one is skipped).
    alive: Arc<Vec<AtomicBool>>,
    token: String,
}

impl Admin {
    /// A client of every instance of `services`.
    pub fn new(http: reqwest::Client, services: &Services) -> Self {
        Admin {
            http,
            bases: services.bmsc_urls.clone(),
            alive: Arc::new(
                (0..services.bmsc_urls.len())
                    .map(|_| AtomicBool::new(true))
                    .collect(),
            ),
            token: services.admin_token.clone(),
        }
    }

    /// A client of the instances at `bases` (all alive) with the admin
    /// bearer `token`.
    pub fn with_bases(http: reqwest::Client, bases: Vec<String>, token: &str) -> Self {
        Admin {
            http,
            alive: Arc::new((0..bases.len()).map(|_| AtomicBool::new(true)).collect()),
            bases,
            token: token.to_owned(),
        }
    }

    /// Whether instance `i` is alive (not [`Self::mark_dead`]).
    pub fn is_alive(&self, i: usize) -> bool {
        self.alive.get(i).is_some_and(|a| a.load(Ordering::SeqCst))
    }

    /// The live instances' base URLs.
    pub fn live(&self) -> impl Iterator<Item = (usize, &str)> {
        self.bases
            .iter()
            .enumerate()
            .filter(|(i, _)| self.alive[*i].load(Ordering::SeqCst))
            .map(|(i, b)| (i, b.as_str()))
    }

    /// The first live instance (admin requests work on any).
    pub fn base(&self) -> &str {
        self.live()
            .next()
            .map_or(self.bases[0].as_str(), |(_, b)| b)
    }

    /// Instance `i` was killed: skipped from now on.
    pub fn mark_dead(&self, i: usize) {
        self.alive[i].store(false, Ordering::SeqCst);
    }

    /// `GET <first live instance><path>` with the admin token, as JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, BenchError> {
        Ok(self
            .http
            .get(format!("{}{path}", self.base()))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// The live instances' `/metrics`, each.
    pub async fn metrics_each(&self) -> Result<Vec<Option<Metrics>>, BenchError> {
        let mut all = vec![None; self.bases.len()];
        for (i, b) in self.live() {
            all[i] = Some(Metrics::scrape(&self.http, &format!("{b}/metrics")).await?);
        }
        Ok(all)
    }

    /// The live instances' `/metrics`, added.
    pub async fn metrics(&self) -> Result<Metrics, BenchError> {
        Ok(sum_metrics(self.metrics_each().await?.iter().flatten()))
    }

    /// The current and the next MSK ID of key group `id`.
    pub async fn key_group(&self, id: u16) -> Result<(MskId, MskId), BenchError> {
        let v = self.get_json("/admin/v1/key-groups").await?;
        let g = v
            .as_array()
            .and_then(|a| a.iter().find(|g| g["key_group"] == id))
            .ok_or_else(|| BenchError::Service(format!("key group {id} not listed: {v}")))?;
        Ok((
            msk_id(&g["current"]["msk_id"])?,
            msk_id(&g["next"]["msk_id"])?,
        ))
    }

    /// The instance (index) that is the live anchor of key group `id`
    /// according to `GET /admin/v1/cluster` of the first live instance.
    pub async fn anchor(&self, id: u16) -> Result<Option<usize>, BenchError> {
        let v = self.get_json("/admin/v1/cluster").await?;
        Ok(anchor_of(&v, id, &self.bases))
    }

    /// With several instances: polls `GET /admin/v1/cluster` every 20 ms
    /// until every instance is alive and holds UE shards, all
    /// `bmsc::cluster::UE_SHARDS` (256) of them are held, and key group
    /// `id` has an anchor: the starting instances have shared out the work
    /// (the first one up holds everything until the others join). The run
    /// starts from there. An error after `limit`.
    pub async fn wait_settled(
        &self,
        id: u16,
        limit: std::time::Duration,
    ) -> Result<(), BenchError> {
        if self.bases.len() < 2 {
            return Ok(());
        }
        let start = std::time::Instant::now();
        let mut last = serde_json::Value::Null;
        while start.elapsed() < limit {
            if let Ok(v) = self.get_json("/admin/v1/cluster").await {
                if settled(&v, self.bases.len()) && anchor_of(&v, id, &self.bases).is_some() {
                    return Ok(());
                }
                last = v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(BenchError::Service(format!(
            "the {} instances did not share out the UE shards within {limit:?}: {last}",
            self.bases.len()
        )))
    }

    /// Polls `GET /admin/v1/cluster` every 20 ms until a live instance
    /// other than `victim` is named the anchor of key group `id` and the
    /// other instances hold all 256 UE shards (the victim's key group and
    /// UEs taken over); the instant it was seen, `None` after `limit`.
    pub async fn wait_takeover(
        &self,
        id: u16,
        victim: usize,
        limit: std::time::Duration,
    ) -> Option<std::time::Instant> {
        let start = std::time::Instant::now();
        let victim_id = services::instance_id(victim);
        while start.elapsed() < limit {
            if let Ok(v) = self.get_json("/admin/v1/cluster").await {
                let anchored = anchor_of(&v, id, &self.bases).is_some_and(|i| i != victim);
                // The victim's UE shards too: the others hold all 256.
                let shards: u64 = v["instances"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter(|x| x["instance_id"] != victim_id.as_str())
                            .map(|x| x["ue_shards"].as_u64().unwrap_or(0))
                            .sum()
                    })
                    .unwrap_or(0);
                if anchored && shards == 256 {
                    return Some(std::time::Instant::now());
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        None
    }

    /// Counts the charging records of `msk` per UE (by the index in its
    /// IMPI `ue<i>@...`), paging through `GET /admin/v1/charging-records`;
    /// returns the records of `msk` and the count per UE.
    pub async fn charges(&self, msk: &MskName, n: usize) -> Result<(u64, Vec<u32>), BenchError> {
        const PAGE: usize = 100_000;
        let want = msk.to_string();
        let mut per_ue = vec![0u32; n];
        let (mut after, mut records) = (0i64, 0u64);
        loop {
            let v = self
                .get_json(&format!(
                    "/admin/v1/charging-records?after={after}&limit={PAGE}"
                ))
                .await?;
            let page = v["records"]
                .as_array()
                .ok_or_else(|| BenchError::Service(format!("charging records: {v}")))?;
            for r in page {
                after = after.max(r["id"].as_i64().unwrap_or(after));
                if r["msk"].as_str() != Some(want.as_str()) {
                    continue;
                }
                records += 1;
                let ix = r["impi"]
                    .as_str()
                    .and_then(|i| i.strip_prefix("ue"))
                    .and_then(|i| i.split_once('@'))
                    .and_then(|(i, _)| i.parse::<usize>().ok())
                    .filter(|i| *i < n)
                    .ok_or_else(|| {
                        BenchError::Service(format!("charging record of an unknown UE: {r}"))
                    })?;
                per_ue[ix] += 1;
            }
            if page.len() < PAGE {
                return Ok((records, per_ue));
            }
        }
    }

    /// Rotates key group `id` through the last live instance (any instance
    /// forwards it to the anchor).
    pub async fn rotate(&self, id: u16) -> Result<MskId, BenchError> {
        self.rotate_at(id, None).await
    }

    /// [`Self::rotate`] through instance `at` (e.g. the anchor, which
    /// answers as soon as it rotated; another instance answers once it
    /// adopted the new MSKs); `None`: the last live instance.
    pub async fn rotate_at(&self, id: u16, at: Option<usize>) -> Result<MskId, BenchError> {
        let base = match at {
            Some(i) => self.bases[i].as_str(),
            None => self.live().last().map_or(self.base(), |(_, b)| b),
        };
        let v: serde_json::Value = self
            .http
            .post(format!("{base}/admin/v1/key-groups/{id}/rotate"))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        msk_id(&v["next"])
    }
}

/// The counters of several instances as one.
pub fn sum_metrics<'a>(each: impl Iterator<Item = &'a Metrics>) -> Metrics {
    let mut m = Metrics::default();
    for x in each {
        m.add(x);
    }
    m
}

/// The index (in `bases`) of the live instance that `GET /admin/v1/cluster`
/// (`v`) names as the anchor of key group `id`: by `instance_id`
/// (`bmsc-<i>`, [`services::instance_id`]) or by its URL.
pub fn anchor_of(v: &serde_json::Value, id: u16, bases: &[String]) -> Option<usize> {
    let holder = v["instances"].as_array()?.iter().find(|x| {
        x["alive"] != false
            && x["key_groups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|k| *k == id))
    })?;
    let by_id = (0..bases.len()).find(|i| holder["instance_id"] == services::instance_id(*i));
    by_id.or_else(|| {
        let url = holder["url"].as_str()?.trim_end_matches('/');
        bases.iter().position(|b| b == url)
    })
}

/// Whether `GET /admin/v1/cluster` (`v`) shows `k` live instances that
/// each hold UE shards and hold all 256 between them.
fn settled(v: &serde_json::Value, k: usize) -> bool {
    let Some(list) = v["instances"].as_array() else {
        return false;
    };
    let live: Vec<u64> = list
        .iter()
        .filter(|x| x["alive"] != false)
        .map(|x| x["ue_shards"].as_u64().unwrap_or(0))
        .collect();
    live.len() == k && live.iter().all(|n| *n > 0) && live.iter().sum::<u64>() == 256
}

/// An MSK ID in JSON (a string).
pub fn msk_id(v: &serde_json::Value) -> Result<MskId, BenchError> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BenchError::Service(format!("not an MSK ID: {v}")))
}
