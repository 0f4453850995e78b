//! Several BM-SC instances on one PostgreSQL database (issue 13), in
//! process over loopback with a real BSF and UEs: any instance answers Ua
//! for any UE, exactly one anchor per key group rotates, every instance
//! delivers the same MSKs, no UE ever sees a counter twice (its MGV-F
//! would refuse a replay), a killed instance's UE shards and key groups
//! are taken over within the lease time and its deliveries finished, and
//! every charging record exists once. Skipped without
//! `MBMS_TEST_POSTGRES_URL` (each test in its own schema).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bmsc::RunningBmsc;
use serde_json::Value;
use support::*;

/// A short lease, so that a takeover fits in a test.
const LEASE_MS: u64 = 1000;

fn extra(id: &str) -> String {
    format!("\n[cluster]\ninstance_id = \"{id}\"\nlease_ms = {LEASE_MS}\n")
}

/// Starts another instance of the environment's BM-SC (same database,
/// same configuration but its instance ID).
async fn another(env: &Env, id: &str) -> RunningBmsc {
    let mut cfg = env.config();
    cfg.cluster.instance_id = Some(id.to_owned());
    let db = env.db.clone();
    let store = tokio::task::spawn_blocking(move || db.open())
        .await
        .unwrap();
    bmsc::start(&cfg, store).await.unwrap()
}

async fn get(http: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let r = http
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn post(http: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let r = http
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Waits until `n` instances are alive, share the 256 UE shards with at
/// least one each, and key group `g` has one anchor; returns the listing.
async fn wait_spread(http: &reqwest::Client, base: &str, n: usize, g: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (s, v) = get(http, base, "/admin/v1/cluster").await;
        assert_eq!(s, 200, "{v}");
        let alive: Vec<&Value> = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["alive"] == true)
            .collect();
        let shards: u64 = alive.iter().map(|i| i["ue_shards"].as_u64().unwrap()).sum();
        let anchors = alive
            .iter()
            .filter(|i| {
                i["key_groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k.as_u64() == Some(g))
            })
            .count();
        if alive.len() == n
            && shards == 256
            && alive.iter().all(|i| i["ue_shards"].as_u64().unwrap() > 0)
            && anchors == 1
        {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("instances never spread: {last}");
}

/// The instance ID anchoring key group `g` in a listing.
fn anchor_of(listing: &Value, g: u64) -> String {
    let anchors: Vec<String> = listing["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["alive"] == true)
        .filter(|i| {
            i["key_groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k.as_u64() == Some(g))
        })
        .map(|i| i["instance_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(anchors.len(), 1, "exactly one anchor of {g}: {listing}");
    anchors[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_the_work_and_survive_the_anchors_death() {
    let Some(mut env) = Env::postgres("cluster3", &extra("a")).await else {
        return;
    };
    let http = reqwest::Client::new();
    let mut instances: BTreeMap<String, RunningBmsc> = BTreeMap::new();
    instances.insert("a".into(), env.bmsc.take().unwrap());
    for id in ["b", "c"] {
        instances.insert(id.into(), another(&env, id).await);
    }
    let urls: BTreeMap<String, String> = instances
        .iter()
        .map(|(k, v)| (k.clone(), v.url()))
        .collect();
    let base = urls["a"].clone();
    let listing = wait_spread(&http, &base, 3, 1).await;
    assert_eq!(listing["lease_ms"], LEASE_MS);
    assert_eq!(listing["instance_id"], "a");

    // UEs register through every instance in turn; each asks for the
    // current MSK at yet another one.
    let ids: Vec<String> = urls.keys().cloned().collect();
    let mut ues = Vec::new();
    for n in 1..=6usize {
        let mut ue = TestUe::bootstrap(&env.bsf.url(), &impi(n), urls[&ids[n % 3]].clone()).await;
        assert_eq!(ue.register(&[NEWS, PAY]).await, [200, 200]);
        ue.base = urls[&ids[(n + 1) % 3]].clone();
        ues.push(ue);
    }
    // Every instance shows the same MSKs of key group 1 (6.3.4.4).
    let kg = |v: &Value, g: u64| -> (String, String) {
        let k = v
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_group"] == g)
            .unwrap()
            .clone();
        (
            k["current"]["msk_id"].as_str().unwrap().to_owned(),
            k["next"]["msk_id"].as_str().unwrap().to_owned(),
        )
    };
    let mut views = Vec::new();
    for u in urls.values() {
        views.push(kg(&get(&http, u, "/admin/v1/key-groups").await.1, 1));
    }
    assert!(views.windows(2).all(|w| w[0] == w[1]), "{views:?}");
    let (cur, next) = views[0].clone();
    for ue in &mut ues {
        ue.wait_msks(1, &[msk_of(&cur), msk_of(&next)]).await;
        assert_eq!(
            ue.request_msks(&[msk(1, 0)]).await,
            [200],
            "any instance answers the MSK request"
        );
    }
    for ue in &mut ues {
        ue.pump(Duration::from_millis(300)).await;
    }

    // A rotation asked at an instance that is not the anchor: the anchor
    // rotates, every UE gets the same new MSK.
    let anchor = anchor_of(&listing, 1);
    let other = ids.iter().find(|i| **i != anchor).unwrap().clone();
    let (s, v) = post(&http, &urls[&other], "/admin/v1/key-groups/1/rotate").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["current"], next.as_str());
    let next2 = v["next"].as_str().unwrap().to_owned();
    for ue in &mut ues {
        ue.wait_msks(1, &[msk_of(&next), msk_of(&next2)]).await;
    }

    // The anchor dies (a crash): a survivor takes key group 1 and the
    // dead instance's UE shards within the lease time (plus a renewal).
    let killed_at = Instant::now();
    instances.remove(&anchor).unwrap().kill();
    let survivors: Vec<String> = ids.iter().filter(|i| **i != anchor).cloned().collect();
    let (rotated, took) = loop {
        let (s, v) = post(&http, &urls[&survivors[0]], "/admin/v1/key-groups/1/rotate").await;
        if s == 200 {
            break (v, killed_at.elapsed());
        }
        assert_eq!(s, 503, "{v}");
        assert!(
            killed_at.elapsed() < Duration::from_millis(LEASE_MS * 6),
            "no new anchor"
        );
    };
    eprintln!("key group 1 anchored again and rotated {took:?} after the kill");
    assert_eq!(rotated["current"], next2.as_str());
    let next3 = rotated["next"].as_str().unwrap().to_owned();
    let listing = wait_spread(&http, &urls[&survivors[0]], 2, 1).await;
    assert!(survivors.contains(&anchor_of(&listing, 1)));
    // Every UE, also those of the dead instance, gets the new MSKs from a
    // survivor, with counters above everything it saw (no replay).
    for ue in &mut ues {
        ue.wait_msks(1, &[msk_of(&next2), msk_of(&next3)]).await;
    }
    for ue in &mut ues {
        ue.pump(Duration::from_millis(200)).await;
        assert!(
            ue.errors.iter().all(|e| e != "replay"),
            "{}: {:?}",
            ue.impi,
            ue.errors
        );
        assert!(
            ue.counters.windows(2).all(|w| w[0] < w[1]),
            "{}: counters {:?}",
            ue.impi,
            ue.counters
        );
    }
    // Key group 2 (4-way, charging): every UE charged once per MSK,
    // whichever instance saw the acknowledgement.
    let (pay_cur, pay_next) = kg(
        &get(&http, &urls[&survivors[0]], "/admin/v1/key-groups")
            .await
            .1,
        2,
    );
    for ue in &mut ues {
        ue.wait_msks(2, &[msk_of(&pay_cur), msk_of(&pay_next)])
            .await;
    }
    let store = {
        let db = env.db.clone();
        tokio::task::spawn_blocking(move || db.open())
            .await
            .unwrap()
    };
    let mut charged = BTreeMap::new();
    for _ in 0..100 {
        for ue in &mut ues {
            ue.pump(Duration::from_millis(20)).await;
        }
        let s2 = store.clone();
        let rows = tokio::task::spawn_blocking(move || s2.charging_records(0, 10_000))
            .await
            .unwrap()
            .unwrap();
        charged = BTreeMap::new();
        for r in rows {
            *charged.entry((r.impi, r.msk)).or_insert(0usize) += 1;
        }
        if charged.len() >= 2 * ues.len() {
            break;
        }
    }
    assert!(charged.len() >= 2 * ues.len(), "{charged:?}");
    assert!(charged.values().all(|n| *n == 1), "{charged:?}");
    drop(store);
    for (_, b) in instances {
        b.shutdown().await.unwrap();
    }
}
