//! The swarm's batched UDP: the module of `mbms-service`
//! ([`mbms_service::udp`], `sendmmsg(2)` / `recvmmsg(2)`, receive buffers
//! kept between calls, large socket buffers), shaped for the shard loop.

use std::io;
use std::net::SocketAddr;

use mbms_service::udp;
pub use mbms_service::udp::{BATCH, MAX_DATAGRAM};
use tokio::net::UdpSocket;

/// Binds a UDP socket on `addr` with `SO_RCVBUF` / `SO_SNDBUF` asked at
/// `buffer` bytes; returns the socket and the receive buffer the kernel
/// granted (capped by `net.core.rmem_max`; 0 when unknown).
pub fn bind(addr: SocketAddr, buffer: usize) -> io::Result<(UdpSocket, usize)> {
    let (sock, granted) = udp::bind(addr, buffer)?;
    Ok((sock, granted.map_or(0, |(r, _)| r)))
}

/// A receiver and the batch it fills, both kept between calls.
#[derive(Debug, Default)]
pub struct Receiver {
    rx: udp::Receiver,
    got: udp::RecvBatch,
}

impl Receiver {
    /// Waits for at least one datagram and takes what is queued, at most
    /// [`BATCH`]; then [`Self::datagrams`] lists them.
    pub async fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.rx.recv(sock, &mut self.got).await
    }

    /// The datagrams of the last [`Self::recv`] and their sources.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.got.iter()
    }
}

/// Sends every `(destination, datagram)` in batches of [`BATCH`]; returns
/// how many were handed to the kernel.
pub async fn send_batch(sock: &UdpSocket, msgs: &[(SocketAddr, Vec<u8>)]) -> usize {
    udp::send_batch(sock, msgs).await.sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_shard_loop_shape_round_trips() {
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
