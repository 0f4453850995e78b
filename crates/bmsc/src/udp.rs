//! Batched UDP I/O on tokio sockets: `sendmmsg(2)` / `recvmmsg(2)` on
//! Linux through the `nix` crate (safe wrappers, so this crate keeps
//! `forbid(unsafe_code)`), one `send_to` / `recv_from` per datagram
//! elsewhere.
//!
//! Why `nix`: it is the maintained, widely used safe binding of these
//! system calls (quinn-udp batches only segments to one destination with
//! GSO; a rotation sends one different message to each UE, which is what
//! `sendmmsg` is for). A rotation for N UEs costs about N / [`BATCH`]
//! system calls.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams per `sendmmsg` / `recvmmsg` call.
pub const BATCH: usize = 64;

/// Default size of the MIKEY socket's receive and send buffers
/// (`mikey_socket_buffer`): room for the acknowledgements of about 64k UEs
/// (a 60-byte acknowledgement takes about 1 KiB of buffer accounting).
pub const DEFAULT_SOCKET_BUFFER: usize = 64 << 20;

/// Acknowledgements processed (and committed) together at most: what
/// arrived while the previous batch was being committed, up to this.
pub const ACK_BATCH_MAX: usize = 16_384;

/// Ask for `bytes` of receive and send buffer; returns what the kernel
/// granted (Linux reports twice the usable size), `None` where unsupported.
pub fn set_buffers(sock: &UdpSocket, bytes: usize) -> Option<(usize, usize)> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::socket::{getsockopt, setsockopt, sockopt};
        // Best effort: the kernel caps both at rmem_max / wmem_max, except
        // for a process with CAP_NET_ADMIN (the *BUFFORCE options).
        let _ = setsockopt(sock, sockopt::RcvBuf, &bytes);
        let _ = setsockopt(sock, sockopt::SndBuf, &bytes);
        let mut r = getsockopt(sock, sockopt::RcvBuf).ok()?;
        let mut s = getsockopt(sock, sockopt::SndBuf).ok()?;
        if r < bytes && setsockopt(sock, sockopt::RcvBufForce, &bytes).is_ok() {
            r = getsockopt(sock, sockopt::RcvBuf).ok()?;
        }
        if s < bytes && setsockopt(sock, sockopt::SndBufForce, &bytes).is_ok() {
            s = getsockopt(sock, sockopt::SndBuf).ok()?;
        }
        Some((r, s))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (sock, bytes);
        None
    }
}

/// Receive what is queued now, up to `max` datagrams, without waiting
/// (empty when nothing is queued).
pub fn try_recv_more(sock: &UdpSocket, out: &mut Vec<(Vec<u8>, SocketAddr)>, max: usize) {
    while out.len() < max {
        match sock.try_io(tokio::io::Interest::READABLE, || recv_chunk(sock)) {
            Ok(v) if !v.is_empty() => out.extend(v),
            _ => return,
        }
    }
}

/// Largest datagram received (MIKEY acknowledgements are ~100 bytes, RTP
/// packets fit an Ethernet MTU); longer ones are dropped as truncated.
pub const MAX_DATAGRAM: usize = 2048;

/// Result of [`send_batch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams handed to the kernel.
    pub sent: usize,
    /// Datagrams refused (the error of each is logged at debug level).
    pub failed: usize,
    /// System calls made.
    pub syscalls: usize,
}

/// Sends every `(destination, datagram)`, in batches.
pub async fn send_batch<B: AsRef<[u8]>>(sock: &UdpSocket, msgs: &[(SocketAddr, B)]) -> Sent {
    let mut out = Sent::default();
    let mut i = 0;
    while i < msgs.len() {
        let end = (i + BATCH).min(msgs.len());
        let chunk = &msgs[i..end];
        if sock.writable().await.is_err() {
            out.failed += msgs.len() - i;
            break;
        }
        out.syscalls += 1;
        match sock.try_io(tokio::io::Interest::WRITABLE, || send_chunk(sock, chunk)) {
            Ok(n) => {
                out.sent += n.max(1).min(chunk.len());
                i += n.max(1);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // The first datagram of the chunk was refused: skip it.
                tracing::debug!(to = %chunk[0].0, error = %e, "UDP send failed");
                out.failed += 1;
                i += 1;
            }
        }
    }
    out
}

/// Receives what is queued (at least one datagram; waits for the first):
/// `(datagram, source)` pairs, at most [`BATCH`].
pub async fn recv_batch(sock: &UdpSocket) -> io::Result<Vec<(Vec<u8>, SocketAddr)>> {
    loop {
        sock.readable().await?;
        match sock.try_io(tokio::io::Interest::READABLE, || recv_chunk(sock)) {
            Ok(v) => return Ok(v),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_chunk<B: AsRef<[u8]>>(sock: &UdpSocket, chunk: &[(SocketAddr, B)]) -> io::Result<usize> {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};

    let addrs: Vec<Option<SockaddrStorage>> = chunk
        .iter()
        .map(|(a, _)| Some(SockaddrStorage::from(*a)))
        .collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = chunk
        .iter()
        .map(|(_, b)| [IoSlice::new(b.as_ref())])
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), None);
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    let sent = sendmmsg(
        sock.as_raw_fd(),
        &mut headers,
        &iovs,
        &addrs,
        no_cmsgs,
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    Ok(sent.count())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn recv_chunk(sock: &UdpSocket) -> io::Result<Vec<(Vec<u8>, SocketAddr)>> {
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

    let mut bufs = vec![[0u8; MAX_DATAGRAM]; BATCH];
    let got: Vec<(usize, Option<SocketAddr>, bool)> = {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let res = recvmmsg(
            sock.as_raw_fd(),
            &mut headers,
            &mut iovs,
            MsgFlags::empty(),
            None,
        )
        .map_err(io::Error::from)?;
        res.map(|m| {
            let from = m.address.and_then(|a| {
                if let Some(v4) = a.as_sockaddr_in() {
                    Some(SocketAddr::V4((*v4).into()))
                } else {
                    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
                }
            });
            (m.bytes, from, m.flags.contains(MsgFlags::MSG_TRUNC))
        })
        .collect()
    };
    Ok(got
        .into_iter()
        .zip(bufs.iter())
        .filter_map(|((n, from, truncated), buf)| {
            (!truncated && n <= MAX_DATAGRAM).then_some((buf[..n].to_vec(), from?))
        })
        .collect())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_chunk<B: AsRef<[u8]>>(sock: &UdpSocket, chunk: &[(SocketAddr, B)]) -> io::Result<usize> {
    let mut n = 0;
    for (to, b) in chunk {
        match sock.try_send_to(b.as_ref(), *to) {
            Ok(_) => n += 1,
            Err(e) if n == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(n)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn recv_chunk(sock: &UdpSocket) -> io::Result<Vec<(Vec<u8>, SocketAddr)>> {
    let mut out = Vec::new();
    let mut buf = [0u8; MAX_DATAGRAM];
    while out.len() < BATCH {
        match sock.try_recv_from(&mut buf) {
            Ok((n, from)) if n < MAX_DATAGRAM => out.push((buf[..n].to_vec(), from)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !out.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_send_and_receive_many_datagrams() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let msgs: Vec<(SocketAddr, Vec<u8>)> =
            (0..150u8).map(|i| (to, vec![i; 1 + i as usize])).collect();
        let s = send_batch(&tx, &msgs).await;
        assert_eq!(s.sent, 150);
        assert_eq!(s.failed, 0);
        assert!(s.syscalls <= 150usize.div_ceil(BATCH) + 1, "{s:?}");
        let mut got = Vec::new();
        while got.len() < 150 {
            let b = recv_batch(&rx).await.unwrap();
            assert!(!b.is_empty() && b.len() <= BATCH);
            got.extend(b);
        }
        for (i, (d, from)) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 1 + i]);
            assert_eq!(*from, tx.local_addr().unwrap());
        }
        // An unusable destination is skipped, the rest is sent.
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let s = send_batch(&tx, &[(v6, vec![1u8]), (to, vec![2u8])]).await;
        assert_eq!((s.sent, s.failed), (1, 1));
        assert_eq!(recv_batch(&rx).await.unwrap()[0].0, [2u8]);
    }
}
