//! Batched UDP for the swarm: `sendmmsg(2)` / `recvmmsg(2)` through the
//! `nix` crate (the pattern of `crates/bmsc/src/udp.rs`, with receive
//! buffers kept between calls), and large socket buffers.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams per `sendmmsg` / `recvmmsg` call.
pub const BATCH: usize = 64;

/// Largest datagram received (MIKEY MSK messages are about 160 bytes).
pub const MAX_DATAGRAM: usize = 2048;

/// Binds a UDP socket on `addr` with `SO_RCVBUF` / `SO_SNDBUF` asked at
/// `buffer` bytes; returns the socket and the receive buffer the kernel
/// granted (capped by `net.core.rmem_max`).
pub fn bind(addr: SocketAddr, buffer: usize) -> io::Result<(UdpSocket, usize)> {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    let std_sock = std::net::UdpSocket::bind(addr)?;
    std_sock.set_nonblocking(true)?;
    // Best effort: the kernel caps both at its maxima.
    let _ = setsockopt(&std_sock, sockopt::RcvBuf, &buffer);
    let _ = setsockopt(&std_sock, sockopt::SndBuf, &buffer);
    let granted = getsockopt(&std_sock, sockopt::RcvBuf).unwrap_or(0);
    Ok((UdpSocket::from_std(std_sock)?, granted))
}

/// Receive buffers reused by [`Receiver::recv`].
pub struct Receiver {
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    got: Vec<(usize, SocketAddr)>,
}

impl Default for Receiver {
    fn default() -> Self {
        Self {
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH],
            got: Vec::with_capacity(BATCH),
        }
    }
}

impl Receiver {
    /// Waits for at least one datagram and takes what is queued, at most
    /// [`BATCH`]; then [`Self::datagrams`] lists them.
    pub async fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        loop {
            sock.readable().await?;
            let bufs = &mut self.bufs;
            let got = &mut self.got;
            match sock.try_io(tokio::io::Interest::READABLE, || {
                recv_chunk(sock, bufs, got)
            }) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The datagrams of the last [`Self::recv`] and their sources.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.got
            .iter()
            .zip(self.bufs.iter())
            .map(|((n, from), b)| (&b[..*n], *from))
    }
}

fn recv_chunk(
    sock: &UdpSocket,
    bufs: &mut [[u8; MAX_DATAGRAM]],
    got: &mut Vec<(usize, SocketAddr)>,
) -> io::Result<usize> {
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

    got.clear();
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
    for m in res {
        let from = m
            .address
            .and_then(|a| a.as_sockaddr_in().map(|v4| SocketAddr::V4((*v4).into())));
        let ok = !m.flags.contains(MsgFlags::MSG_TRUNC) && m.bytes <= MAX_DATAGRAM;
        // Keep the slot aligned with its buffer; a refused one gets length 0.
        match (from, ok) {
            (Some(f), true) => got.push((m.bytes, f)),
            (Some(f), false) => got.push((0, f)),
            (None, _) => got.push((0, SocketAddr::from(([0, 0, 0, 0], 0)))),
        }
    }
    Ok(got.len())
}

/// Sends every `(destination, datagram)` in batches of [`BATCH`]; returns
/// how many were handed to the kernel.
pub async fn send_batch(sock: &UdpSocket, msgs: &[(SocketAddr, Vec<u8>)]) -> usize {
    let mut sent = 0;
    let mut i = 0;
    while i < msgs.len() {
        let end = (i + BATCH).min(msgs.len());
        let chunk = &msgs[i..end];
        if sock.writable().await.is_err() {
            break;
        }
        match sock.try_io(tokio::io::Interest::WRITABLE, || send_chunk(sock, chunk)) {
            Ok(n) => {
                sent += n.max(1).min(chunk.len());
                i += n.max(1);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::debug!(to = %chunk[0].0, error = %e, "UDP send failed");
                i += 1;
            }
        }
    }
    sent
}

fn send_chunk(sock: &UdpSocket, chunk: &[(SocketAddr, Vec<u8>)]) -> io::Result<usize> {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};

    let addrs: Vec<Option<SockaddrStorage>> = chunk
        .iter()
        .map(|(a, _)| Some(SockaddrStorage::from(*a)))
        .collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(_, b)| [IoSlice::new(b)]).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_round_trip() {
        let (tx, _) = bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let (rx, granted) = bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert!(granted > 0);
        let to = rx.local_addr().unwrap();
        let msgs: Vec<(SocketAddr, Vec<u8>)> =
            (0..100u8).map(|i| (to, vec![i; 1 + i as usize])).collect();
        assert_eq!(send_batch(&tx, &msgs).await, 100);
        let mut r = Receiver::default();
        let mut got = Vec::new();
        while got.len() < 100 {
            r.recv(&rx).await.unwrap();
            got.extend(r.datagrams().map(|(d, f)| (d.to_vec(), f)));
        }
        for (i, (d, from)) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 1 + i]);
            assert_eq!(*from, tx.local_addr().unwrap());
        }
    }
}
