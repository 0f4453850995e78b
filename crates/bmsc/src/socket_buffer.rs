//! The MIKEY socket's buffer sizes (`[mikey] socket_buffer`, issue 12).

use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use tracing::{debug, warn};

/// Asks for `bytes` of receive and send buffer on `sock` (SO_RCVBUF,
/// SO_SNDBUF) and returns what the kernel granted (receive, send; Linux
/// reports twice the usable size and caps the request at
/// `net.core.rmem_max` / `wmem_max`). A cap is logged with the sysctl that
/// lifts it; a failure is logged and leaves the defaults.
pub fn size<S: AsFd>(sock: &S, bytes: usize) -> (usize, usize) {
    let set = |rcv: bool| {
        let r = if rcv {
            setsockopt(sock, sockopt::RcvBuf, &bytes)
                .and_then(|()| getsockopt(sock, sockopt::RcvBuf))
        } else {
            setsockopt(sock, sockopt::SndBuf, &bytes)
                .and_then(|()| getsockopt(sock, sockopt::SndBuf))
        };
        let (what, sysctl) = if rcv {
            ("SO_RCVBUF", "net.core.rmem_max")
        } else {
            ("SO_SNDBUF", "net.core.wmem_max")
        };
        match r {
            Ok(granted) if granted < bytes => {
                warn!(
                    asked = bytes,
                    granted, "MIKEY socket {what} capped by the kernel (raise {sysctl})"
                );
                granted
            }
            Ok(granted) => {
                debug!(asked = bytes, granted, "MIKEY socket {what}");
                granted
            }
            Err(e) => {
                warn!(asked = bytes, error = %e, "cannot set the MIKEY socket's {what}");
                0
            }
        }
    };
    (set(true), set(false))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn grants_at_least_the_default() {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (rcv, snd) = super::size(&s, 1 << 20);
        // Linux doubles the request up to the cap; any kernel grants more
        // than a few KB.
        assert!(rcv >= 64 * 1024 && snd >= 64 * 1024, "{rcv} {snd}");
    }
}
