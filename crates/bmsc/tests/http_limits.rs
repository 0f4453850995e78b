//! The BM-SC serves HTTP within its `[http]` limits (issue 11 point 11): a
//! silent connection is closed after the header timeout, a half-sent Ua
//! body is answered 408 after the body timeout, and a shutdown with an idle
//! and a half-sent connection open ends within the shutdown timeout. (The
//! limits themselves are tested in `mbms-service`.)

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::Env;

/// Bound for anything that must happen.
const BOUND: Duration = Duration::from_secs(10);

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

const HALF_UA: &[u8] = b"POST /keymanagement?requesttype=register HTTP/1.1\r\nHost: bmsc\r\nContent-Type: application/mbms-register+xml\r\nContent-Length: 100\r\n\r\n<?xml";

#[tokio::test]
async fn silent_and_half_sent_connections_are_closed() {
    let env = Env::new("[http]\nheader_read_timeout = 0.3\nbody_read_timeout = 0.3\n").await;
    let addr = env.bmsc().http_addr();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert_eq!(until_closed(&mut silent).await.as_deref(), Some(""));

    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(HALF_UA).await.unwrap();
    let got = until_closed(&mut half).await.expect("closed");
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");

    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: bmsc\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut ok).await.expect("closed");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test]
async fn shutdown_with_idle_and_half_sent_connections_is_bounded() {
    let mut env = Env::new("[http]\nshutdown_timeout = 0.3\n").await;
    let addr = env.bmsc().http_addr();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(HALF_UA).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bmsc = env.bmsc.take().unwrap();
    tokio::time::timeout(BOUND, bmsc.shutdown())
        .await
        .expect("the BM-SC stops within the bound")
        .unwrap();
    assert!(until_closed(&mut idle).await.is_some());
    assert!(until_closed(&mut half).await.is_some());
}
