//! The UE's MSK requests under loss, against the real BSF and the real BM-SC
//! over loopback (issue 11): a lost push of the current MSK is not hidden
//! by the next MSK arriving first (seed 002 6.3.2.2.1), and a lost
//! activation of the 4-way procedure is requested again (seed 004
//! 6.3.2.3.3) or, failing that, the UE leaves the service (seed 000
//! 6.3.2.2.1).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mbms::messages::{MskEnvelope, MtkMessage};
use mbms::{KeyDomainId, Msk, MskName, Mtk, MtkId, MtkKey, MtkSalt};
use support::*;
use ue::{RequestReason, UeEvent};

/// The MSK an MSK message names (`KeyDomainID/MSKID`), if it is one.
fn msk_of(datagram: &[u8]) -> Option<String> {
    MskEnvelope::parse(datagram).ok().map(|e| e.msk.to_string())
}

fn key_domain() -> KeyDomainId {
    "001-01".parse().unwrap()
}

fn full(msk_id: &str) -> String {
    format!("{}/{msk_id}", key_domain())
}

/// An MTK message naming `msk` (protected with a key the UE does not
/// hold: the MGV-F refuses an inactive MSK before the MAC, and traffic
/// naming it is what makes the UE need it).
fn mtk_message_naming(msk: &str) -> Vec<u8> {
    let (_, id) = msk.split_once('/').unwrap();
    MtkMessage {
        counter: 1,
        rand: [5; 16],
        msk: MskName {
            key_domain: key_domain(),
            msk_id: id.parse().unwrap(),
        },
        mtk_id: MtkId::new(1),
        mtk: Mtk {
            key: MtkKey::from_bytes([1; 16]),
            salt: MtkSalt::from_bytes([2; 14]),
        },
        streaming: None,
    }
    .build(&Msk::from_bytes([3; 16]))
    .unwrap()
}

/// Drops every MSK message for `msk` except copies of the first one (the
/// 4-way procedure's inactive delivery): the activation is lost, until
/// `release` is set.
fn lose_activation(relay: &Relay, msks: Vec<String>, release: Arc<AtomicBool>) {
    let mut first: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    relay.drop_if(move |d| {
        let Some(m) = msk_of(d) else { return false };
        if !msks.contains(&m) || release.load(Ordering::SeqCst) {
            return false;
        }
        let f = first.entry(m).or_insert_with(|| d.to_vec());
        f.as_slice() != d
    });
}

// Issue 11 point 1: the push of the current MSK is lost, the next MSK
// arrives; the UE does not count itself served and requests the current
// MSK (Key Number 0) when `initial_msk_wait_ms` has passed. On the old code
// the arrival of the next MSK suppressed the initial request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_msk_arriving_first_does_not_skip_the_initial_request() {
    let env = Env::new().await;
    let (current, next) = env.msks_of_group(1).await;
    let relay = Relay::new().await;
    let lost = full(&current);
    relay.drop_if(move |d| msk_of(d).as_deref() == Some(lost.as_str()));
    let mut cfg = env.ue_config("ue", &[NEWS], Some(&relay));
    // No traffic: the MTK messages go elsewhere, so that only the initial
    // request can notice the missing current MSK.
    let nowhere = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    cfg.service_list[0].sessions[0].mtk_listen = Some(nowhere);
    let (ue, mut ev) = start_ue(cfg).await;

    let next_full = full(&next);
    wait_event(
        &mut ev,
        10,
        "the next MSK",
        |e| matches!(e, UeEvent::MskStored { msk, .. } if *msk == next_full),
    )
    .await;
    let want = full(&format!("{}0000", &current[..4]));
    let e = wait_event(&mut ev, 15, "the initial request for the current MSK", |e| {
        matches!(e, UeEvent::MskRequested { reason: RequestReason::Initial, keys, .. } if keys.contains(&want))
    })
    .await;
    let UeEvent::MskRequested { statuses, .. } = e else {
        unreachable!()
    };
    assert_eq!(statuses, vec![200]);
    ue.shutdown(false).await.unwrap();
}

// Issue 11 point 2: the activation of the 4-way procedure is lost; traffic
// names the inactive MSK; after `activation_timeout_ms` the UE requests it
// by its MSK ID, the BM-SC answers with the activation (charging once) and
// the MSK becomes usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_activation_is_requested_again() {
    let env = Env::new().await;
    let (current, _) = env.msks_of_group(2).await;
    let x = full(&current);
    let relay = Relay::new().await;
    relay.relay_acks();
    let release = Arc::new(AtomicBool::new(false));
    lose_activation(&relay, vec![x.clone()], release.clone());
    let mut cfg = env.ue_config("ue", &[PAY], Some(&relay));
    cfg.activation_timeout_ms = 1000;
    let (ue, mut ev) = start_ue(cfg).await;

    wait_event(
        &mut ev,
        10,
        "the inactive MSK",
        |e| matches!(e, UeEvent::MskStored { msk, inactive: true, .. } if *msk == x),
    )
    .await;
    // Traffic needs it.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&mtk_message_naming(&x), ue.mikey_addr())
        .await
        .unwrap();
    wait_event(&mut ev, 10, "the activation request", |e| {
        matches!(e, UeEvent::MskRequested { reason: RequestReason::Activation, keys, statuses } if *keys == [x.clone()] && *statuses == [200])
    })
    .await;
    release.store(true, Ordering::SeqCst);
    // The answer (or, if it raced the release, the answer to the second
    // request) activates the MSK.
    let e = wait_event(&mut ev, 10, "the activation", |e| {
        matches!(e, UeEvent::MskStored { msk, inactive: false, .. } if *msk == x)
            || matches!(
                e,
                UeEvent::LeftService { .. } | UeEvent::ActivationFailed { .. }
            )
    })
    .await;
    assert!(matches!(e, UeEvent::MskStored { .. }), "{e:?}");
    let st = ue.status().unwrap();
    assert_eq!(st.registrations[0].state, "registered");
    let m = st
        .msks
        .iter()
        .find(|m| full(&m.msk_id.to_uppercase()) == x)
        .unwrap();
    assert_eq!(m.state, "active", "{m:?}");
    // Charged once per MSK (the current and the next), not again for the
    // re-delivered activation.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while env.metric("bmsc_charging_records_total").await < 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "both MSKs charged");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(env.metric("bmsc_charging_records_total").await, 2.0);
    ue.shutdown(false).await.unwrap();
}

// Issue 11 point 2, then seed 000 6.3.2.2.1: no activation comes even after
// the requests and no still-valid older MSK is held: the UE leaves the
// service, deletes its keys and reports why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_msk_never_activated_makes_the_ue_leave_the_service() {
    let env = Env::new().await;
    let (current, next) = env.msks_of_group(2).await;
    let (x, y) = (full(&current), full(&next));
    let relay = Relay::new().await;
    relay.relay_acks();
    lose_activation(
        &relay,
        vec![x.clone(), y.clone()],
        Arc::new(AtomicBool::new(false)),
    );
    let mut cfg = env.ue_config("ue", &[PAY], Some(&relay));
    cfg.activation_timeout_ms = 600;
    let (ue, mut ev) = start_ue(cfg).await;
    for m in [&x, &y] {
        wait_event(
            &mut ev,
            10,
            "an inactive MSK",
            |e| matches!(e, UeEvent::MskStored { msk, inactive: true, .. } if msk == m),
        )
        .await;
    }
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&mtk_message_naming(&x), ue.mikey_addr())
        .await
        .unwrap();
    for attempt in 1..=ue::ACTIVATION_REQUESTS {
        wait_event(&mut ev, 10, &format!("activation request {attempt}"), |e| {
            matches!(e, UeEvent::MskRequested { reason: RequestReason::Activation, keys, .. } if *keys == [x.clone()])
        })
        .await;
    }
    let e = wait_event(&mut ev, 10, "the activation failure", |e| {
        matches!(e, UeEvent::ActivationFailed { .. })
    })
    .await;
    assert_eq!(
        e,
        UeEvent::ActivationFailed {
            msk: x.clone(),
            requests: ue::ACTIVATION_REQUESTS,
            kept_older: false
        }
    );
    let e = wait_event(&mut ev, 10, "leaving", |e| {
        matches!(e, UeEvent::LeftService { .. })
    })
    .await;
    let UeEvent::LeftService { service, reason } = e else {
        unreachable!()
    };
    assert_eq!(service, PAY);
    assert!(reason.contains(&x), "{reason}");
    wait_until(5, "the keys of the service deleted", || {
        let st = ue.status().unwrap();
        st.registrations[0].state == "left" && st.msks.is_empty()
    })
    .await;
    ue.shutdown(false).await.unwrap();
}
