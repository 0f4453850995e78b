//! The BSF serves HTTP within its `[http]` limits (issue 11 point 11): a
//! silent connection is closed after the header timeout, a half-sent Zn
//! body is answered 408 after the body timeout, and a shutdown with an idle
//! and a half-sent connection open ends within the shutdown timeout. (The
//! limits themselves are tested in `mbms-service`.)

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use bsf::{Bsf, BsfConfig, RunningBsf, SqliteStore, ZnToken};
use mbms_service::HttpLimits;

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(60);
/// Bound for anything that must happen.
const BOUND: Duration = Duration::from_secs(10);

async fn start(dir: &tempfile::TempDir, http: HttpLimits) -> RunningBsf {
    let store = SqliteStore::open(&dir.path().join("bsf.db")).unwrap();
    let mut cfg = BsfConfig::new("bsf.home1.net", ZnToken::new("zn-test-token"));
    cfg.http = http;
    cfg.validate().unwrap();
    Bsf::new(cfg.settings(), Arc::new(store))
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Everything the server sends until it closes; `None` if it did not close
/// within [`BOUND`].
async fn until_closed(s: &mut TcpStream) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let r = tokio::time::timeout(BOUND, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    r.ok().map(|()| String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn silent_and_half_sent_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let bsf = start(
        &dir,
        HttpLimits {
            header_read_timeout: SHORT,
            body_read_timeout: SHORT,
            ..HttpLimits::default()
        },
    )
    .await;
    let mut silent = TcpStream::connect(bsf.local_addr()).await.unwrap();
    assert_eq!(until_closed(&mut silent).await.as_deref(), Some(""));

    let mut half = TcpStream::connect(bsf.local_addr()).await.unwrap();
    half.write_all(
        b"POST /zn/v1/naf-keys HTTP/1.1\r\nHost: bsf\r\nAuthorization: Bearer zn-test-token\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"btid\":",
    )
    .await
    .unwrap();
    let got = until_closed(&mut half).await.expect("closed");
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");

    // The service still answers.
    let mut ok = TcpStream::connect(bsf.local_addr()).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: bsf\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut ok).await.expect("closed");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    bsf.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_with_idle_and_half_sent_connections_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let bsf = start(
        &dir,
        HttpLimits {
            header_read_timeout: LONG,
            body_read_timeout: LONG,
            idle_timeout: LONG,
            shutdown_timeout: SHORT,
            ..HttpLimits::default()
        },
    )
    .await;
    let mut idle = TcpStream::connect(bsf.local_addr()).await.unwrap();
    let mut half = TcpStream::connect(bsf.local_addr()).await.unwrap();
    half.write_all(
        b"POST /zn/v1/naf-keys HTTP/1.1\r\nHost: bsf\r\nContent-Length: 40\r\n\r\n{\"bt",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(BOUND, bsf.shutdown())
        .await
        .expect("the BSF stops within the bound")
        .unwrap();
    assert!(until_closed(&mut idle).await.is_some());
    assert!(until_closed(&mut half).await.is_some());
}
