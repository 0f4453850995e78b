//! Hosted UEs ([`ue::UeHost`]) against the real BSF and BM-SC: two UEs on
//! one MIKEY socket get their own MSK messages (told apart by IDr, the
//! B-TID), acknowledge them from the shared socket, and both decrypt the
//! stream the BM-SC sends once to the shared MTK and SRTP sockets.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use ue::{HostConfig, UeEvent, UeHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_ues_share_sockets_and_each_gets_its_own_keys_and_the_stream() {
    let env = Env::new().await;
    let host = UeHost::new(&HostConfig {
        address: "127.0.0.1".parse().unwrap(),
        http_concurrency: 1,
        http_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let mikey = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let mut a = env.ue_config("a", &[NEWS], None);
    let mut b = env.ue_config("b", &[NEWS], None);
    b.identity.impi = IMPI_U.into();
    b.identity.gba = ue::GbaMode::GbaU;
    a.mikey_listen = mikey;
    b.mikey_listen = mikey;
    let (ua, mut eva) = host.start(a).await.unwrap();
    let (ub, mut evb) = host.start(b).await.unwrap();
    // One MIKEY socket, one MTK and one SRTP socket for both.
    assert_eq!(ua.mikey_addr(), ub.mikey_addr());
    assert_eq!(ua.session_addrs("video"), ub.session_addrs("video"));

    let plain: Vec<Arc<Mutex<Vec<Vec<u8>>>>> = [&ua, &ub]
        .iter()
        .map(|u| {
            let got = Arc::new(Mutex::new(Vec::new()));
            let (g, mut rx) = (got.clone(), u.plain_packets());
            tokio::spawn(async move {
                while let Ok(p) = rx.recv().await {
                    g.lock().unwrap().push(p.bytes);
                }
            });
            got
        })
        .collect();
    let mut btids = Vec::new();
    for ev in [&mut eva, &mut evb] {
        let e = wait_event(ev, 10, "bootstrapped", |e| {
            matches!(e, UeEvent::Bootstrapped { .. })
        })
        .await;
        let UeEvent::Bootstrapped { btid, .. } = e else {
            unreachable!()
        };
        btids.push(btid);
        wait_event(ev, 10, "an acknowledged MSK", |e| {
            matches!(
                e,
                UeEvent::MskStored {
                    acknowledged: true,
                    ..
                }
            )
        })
        .await;
        wait_event(ev, 10, "an MTK", |e| {
            matches!(e, UeEvent::MtkAccepted { .. })
        })
        .await;
    }
    assert_ne!(btids[0], btids[1]);
    // Each UE's acknowledgements reached the BM-SC: nothing pending.
    for impi in [IMPI, IMPI_U] {
        let v = env
            .admin_get(&format!("/admin/v1/registrations/{impi}/deliveries"))
            .await;
        let busy = v
            .as_array()
            .or_else(|| v["deliveries"].as_array())
            .is_some_and(|a| {
                a.iter()
                    .any(|d| matches!(d["state"].as_str(), Some("pending" | "sent")))
            });
        assert!(!busy, "{impi}: {v}");
    }

    // The stream, sent once per destination, decrypts at both UEs.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut sent = Vec::new();
    for seq in 0..40u16 {
        let p = rtp(0x1234_5678, seq, 120);
        sock.send_to(&p, ("127.0.0.1", env.ports.rtp_in))
            .await
            .unwrap();
        sent.push(p);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_until(20, "both UEs decrypted the last packet", || {
        plain
            .iter()
            .all(|g| g.lock().unwrap().last() == sent.last())
    })
    .await;
    for g in &plain {
        let g = g.lock().unwrap();
        // Early packets may come before the UE holds the MTK of the new
        // SSRC; what came out is byte-exact, in order.
        let first = sent.iter().position(|p| Some(p) == g.first()).unwrap();
        assert_eq!(&g[..], &sent[first..]);
    }
    assert_eq!(host.stats().unknown_idr, 0);
    assert_eq!(host.stats().truncated, 0);
    ua.shutdown(true).await.unwrap();
    ub.shutdown(true).await.unwrap();
}
