//! Batched UDP on tokio sockets, the one home of the BM-SC's MIKEY and
//! RTP sockets and of the benchmark swarm's: `sendmmsg(2)` /
//! `recvmmsg(2)` on Linux through the `nix` crate (safe wrappers, so this
//! crate keeps `forbid(unsafe_code)`), one `send_to` / `recv_from` per
//! datagram elsewhere; large socket buffers.
//!
//! Why `nix`: it is the maintained, widely used safe binding of these
//! system calls (quinn-udp batches only segments to one destination with
//! GSO; a rotation sends one different message to each UE, which is what
//! `sendmmsg` is for). A rotation for N UEs costs about N / [`BATCH`]
//! system calls.
//!
//! Receiving allocates nothing per call once warm: a [`Receiver`] keeps
//! its [`BATCH`] datagram buffers, and the datagrams land in a
//! [`RecvBatch`], one byte buffer plus one slot per datagram, cleared and
//! refilled call after call.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mbms_service::udp::{bind, send_batch, Receiver, RecvBatch};
//! let (sock, _granted) = bind("127.0.0.1:0".parse().unwrap(), 4 << 20)?;
//! let mut rx = Receiver::new();
//! let mut got = RecvBatch::new();
//! loop {
//!     rx.recv(&sock, &mut got).await?;
//!     let replies: Vec<_> = got.iter().map(|(d, from)| (from, d.to_vec())).collect();
//!     send_batch(&sock, &replies).await;
//! }
//! # }
//! ```

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams per `sendmmsg` / `recvmmsg` call.
pub const BATCH: usize = 64;

/// Largest datagram received (MIKEY messages are 100 to 200 bytes, RTP
/// packets fit an Ethernet MTU); longer ones are dropped as truncated and
/// counted ([`Receiver::truncated`]).
pub const MAX_DATAGRAM: usize = 2048;

/// Asks for `bytes` of receive and send buffer on `sock`; returns what the
/// kernel granted (Linux reports twice the usable size), `None` where
/// unsupported. The kernel caps both at `net.core.rmem_max` /
/// `wmem_max`, except for a process with `CAP_NET_ADMIN` (the `*BUFFORCE`
/// options, tried when capped).
pub fn set_buffers<S: std::os::fd::AsFd>(sock: &S, bytes: usize) -> Option<(usize, usize)> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::socket::{getsockopt, setsockopt, sockopt};
        // Best effort: a refusal leaves the default, reported below.
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

/// Binds a UDP socket on `addr` with `bytes` of receive and send buffer
/// asked ([`set_buffers`]); returns the socket and the buffers granted.
/// Call within a tokio runtime.
pub fn bind(addr: SocketAddr, bytes: usize) -> io::Result<(UdpSocket, Option<(usize, usize)>)> {
    let std_sock = std::net::UdpSocket::bind(addr)?;
    std_sock.set_nonblocking(true)?;
    let granted = set_buffers(&std_sock, bytes);
    Ok((UdpSocket::from_std(std_sock)?, granted))
}

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

/// Sends every `(destination, datagram)`, [`BATCH`] per system call; a
/// datagram the kernel refuses is skipped (counted in [`Sent::failed`]),
/// the rest still leave.
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

/// Received datagrams and their sources, kept in one byte buffer: clear
/// and refill it without allocating once it has grown to its working
/// size.
#[derive(Clone, Debug, Default)]
pub struct RecvBatch {
    bytes: Vec<u8>,
    /// (offset in `bytes`, length, source).
    slots: Vec<(usize, usize, SocketAddr)>,
}

impl RecvBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `datagrams` datagrams of MIKEY size
    /// (256 bytes) before it grows.
    pub fn with_capacity(datagrams: usize) -> Self {
        RecvBatch {
            bytes: Vec::with_capacity(datagrams * 256),
            slots: Vec::with_capacity(datagrams),
        }
    }

    /// Forgets the datagrams, keeps the memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.slots.clear();
    }

    /// Number of datagrams.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No datagram.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Datagram `i` and its source.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let (at, len, from) = *self.slots.get(i)?;
        Some((&self.bytes[at..at + len], from))
    }

    /// The datagrams and their sources, in arrival order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], SocketAddr)> + '_ {
        self.slots
            .iter()
            .map(|&(at, len, from)| (&self.bytes[at..at + len], from))
    }

    /// Appends a datagram.
    pub fn push(&mut self, datagram: &[u8], from: SocketAddr) {
        self.slots.push((self.bytes.len(), datagram.len(), from));
        self.bytes.extend_from_slice(datagram);
    }
}

/// Receives datagrams into a [`RecvBatch`], [`BATCH`] per system call,
/// through buffers it keeps from call to call: nothing is allocated per
/// call once warm. The datagram buffers are the receiver's; the I/O
/// vectors live on the stack; on Linux the `recvmmsg` headers (their
/// source address slots) are allocated once per thread (`RECV_HEADERS`).
pub struct Receiver {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    /// The socket last received from and whether it is IPv6 (which set of
    /// [`RECV_HEADERS`] it uses).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    family: Option<(std::os::fd::RawFd, bool)>,
    truncated: u64,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
thread_local! {
    /// The `recvmmsg` headers of this thread's receivers, one set for IPv4
    /// sockets and one for IPv6 ones, allocated at first use. They live
    /// here, not in a [`Receiver`]: `nix`'s headers hold raw pointers, so
    /// they are not `Send`, and a receiver moves between tokio's threads.
    ///
    /// Why two sets: the kernel writes each source address's length into
    /// its header and `nix` does not reset it before the next call, so a
    /// header that carried an IPv4 source (16 bytes) would cut an IPv6 one
    /// (28 bytes) short. One socket never mixes the two (a dual-stack IPv6
    /// socket reports IPv4 peers as IPv4-mapped IPv6 addresses). A source of
    /// the other family (a socket closed and its descriptor reused for the
    /// other family under the same receiver) renews the set, and an IPv6
    /// source in the IPv4 set is dropped and counted as truncated.
    static RECV_HEADERS: std::cell::RefCell<[Option<nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>>; 2]> =
        const { std::cell::RefCell::new([None, None]) };
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("truncated", &self.truncated)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// A receiver with its [`BATCH`] buffers of [`MAX_DATAGRAM`] bytes.
    pub fn new() -> Self {
        Receiver {
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH].into_boxed_slice(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            family: None,
            truncated: 0,
        }
    }

    /// Datagrams dropped so far because they were longer than
    /// [`MAX_DATAGRAM`] (or came from an address that is not IP).
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// Clears `out`, waits for at least one datagram and puts in `out` what
    /// is queued, at most [`BATCH`]; returns how many.
    pub async fn recv(&mut self, sock: &UdpSocket, out: &mut RecvBatch) -> io::Result<usize> {
        out.clear();
        loop {
            sock.readable().await?;
            match sock.try_io(tokio::io::Interest::READABLE, || {
                self.recv_chunk(sock, out, BATCH)
            }) {
                // Only truncated datagrams: wait for more.
                Ok(_) if out.is_empty() => continue,
                Ok(_) => return Ok(out.len()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends to `out` what is queued now, until `out` holds `max`
    /// datagrams, without waiting; returns how many it added.
    pub fn try_recv_more(&mut self, sock: &UdpSocket, out: &mut RecvBatch, max: usize) -> usize {
        let before = out.len();
        while out.len() < max {
            let room = (max - out.len()).min(BATCH);
            match sock.try_io(tokio::io::Interest::READABLE, || {
                self.recv_chunk(sock, out, room)
            }) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        out.len() - before
    }

    /// One system call: at most `max` datagrams appended to `out`; returns
    /// how many the kernel gave (truncated ones included).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn recv_chunk(
        &mut self,
        sock: &UdpSocket,
        out: &mut RecvBatch,
        max: usize,
    ) -> io::Result<usize> {
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd as _;

        use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders};

        let max = max.clamp(1, BATCH);
        let fd = sock.as_raw_fd();
        let v6 = match self.family {
            Some((f, v6)) if f == fd => v6,
            _ => {
                let v6 = sock.local_addr()?.is_ipv6();
                self.family = Some((fd, v6));
                v6
            }
        };
        let mut lens = [(0usize, None::<SocketAddr>, false); BATCH];
        let mut other_family = false;
        let n = RECV_HEADERS.with_borrow_mut(|sets| -> io::Result<usize> {
            let set = &mut sets[usize::from(v6)];
            let headers = set.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None));
            // The I/O vectors on the stack, over the kept buffers.
            let mut bufs = self.bufs.iter_mut();
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = core::array::from_fn(|_| {
                [IoSliceMut::new(
                    &mut bufs.next().expect("BATCH buffers")[..],
                )]
            });
            let res = recvmmsg(fd, headers, iovs[..max].iter_mut(), MsgFlags::empty(), None)
                .map_err(io::Error::from)?;
            let mut n = 0;
            for m in res {
                let from = m.address.and_then(|a| {
                    if let Some(v4) = a.as_sockaddr_in() {
                        other_family |= v6;
                        Some(SocketAddr::V4((*v4).into()))
                    } else if !v6 {
                        // Possibly cut short (see `RECV_HEADERS`).
                        other_family = true;
                        None
                    } else {
                        a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
                    }
                });
                lens[n] = (m.bytes, from, m.flags.contains(MsgFlags::MSG_TRUNC));
                n += 1;
            }
            if other_family {
                *set = None;
            }
            Ok(n)
        })?;
        if other_family {
            self.family = None;
        }
        for (i, (len, from, truncated)) in lens[..n].iter().enumerate() {
            match from {
                Some(from) if !truncated && *len <= MAX_DATAGRAM => {
                    out.push(&self.bufs[i][..*len], *from)
                }
                _ => self.truncated += 1,
            }
        }
        Ok(n)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn recv_chunk(
        &mut self,
        sock: &UdpSocket,
        out: &mut RecvBatch,
        max: usize,
    ) -> io::Result<usize> {
        let buf = &mut self.bufs[0];
        let mut n = 0;
        while n < max.clamp(1, BATCH) {
            match sock.try_recv_from(&mut buf[..]) {
                Ok((len, from)) if len < MAX_DATAGRAM => out.push(&buf[..len], from),
                Ok(_) => self.truncated += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => break,
                Err(e) => return Err(e),
            }
            n += 1;
        }
        Ok(n)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap().0;
        let b = bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap().0;
        (a, b)
    }

    #[tokio::test]
    async fn batches_send_and_receive_many_datagrams() {
        let (tx, rx) = pair();
        let to = rx.local_addr().unwrap();
        let msgs: Vec<(SocketAddr, Vec<u8>)> =
            (0..150u8).map(|i| (to, vec![i; 1 + i as usize])).collect();
        let s = send_batch(&tx, &msgs).await;
        assert_eq!(s.sent, 150);
        assert_eq!(s.failed, 0);
        assert!(s.syscalls <= 150usize.div_ceil(BATCH) + 1, "{s:?}");
        let mut r = Receiver::new();
        let mut b = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < 150 {
            let n = r.recv(&rx, &mut b).await.unwrap();
            assert!(n == b.len() && n > 0 && n <= BATCH, "{n}");
            got.extend(b.iter().map(|(d, f)| (d.to_vec(), f)));
        }
        for (i, (d, from)) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 1 + i]);
            assert_eq!(*from, tx.local_addr().unwrap());
        }
        assert_eq!(r.truncated(), 0);
    }

    #[tokio::test]
    async fn an_unusable_destination_is_skipped() {
        let (tx, rx) = pair();
        let to = rx.local_addr().unwrap();
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let s = send_batch(&tx, &[(v6, vec![1u8]), (to, vec![2u8])]).await;
        assert_eq!((s.sent, s.failed), (1, 1));
        let (mut r, mut b) = (Receiver::new(), RecvBatch::new());
        r.recv(&rx, &mut b).await.unwrap();
        assert_eq!(b.get(0).unwrap().0, [2u8]);
    }

    #[tokio::test]
    async fn truncated_datagrams_are_dropped_and_counted() {
        let (tx, rx) = pair();
        let to = rx.local_addr().unwrap();
        let msgs = [
            (to, vec![1u8; 10]),
            (to, vec![2u8; MAX_DATAGRAM + 1]),
            (to, vec![3u8; MAX_DATAGRAM]),
            (to, vec![4u8; 60_000]),
            (to, vec![5u8; 1]),
        ];
        assert_eq!(send_batch(&tx, &msgs).await.sent, 5);
        let (mut r, mut b) = (Receiver::new(), RecvBatch::new());
        let mut got = Vec::new();
        while got.len() < 3 {
            r.recv(&rx, &mut b).await.unwrap();
            got.extend(b.iter().map(|(d, _)| d.to_vec()));
        }
        assert_eq!(got, [vec![1u8; 10], vec![3u8; MAX_DATAGRAM], vec![5u8; 1]]);
        assert_eq!(r.truncated(), 2);
        // Only truncated datagrams queued: recv keeps waiting for a good one.
        send_batch(&tx, &[(to, vec![6u8; MAX_DATAGRAM + 7])]).await;
        send_batch(&tx, &[(to, vec![7u8; 3])]).await;
        r.recv(&rx, &mut b).await.unwrap();
        assert_eq!(
            b.iter().map(|(d, _)| d.to_vec()).collect::<Vec<_>>(),
            [vec![7u8; 3]]
        );
        assert_eq!(r.truncated(), 3);
    }

    #[tokio::test]
    async fn try_recv_more_appends_what_is_queued_up_to_max() {
        let (tx, rx) = pair();
        let to = rx.local_addr().unwrap();
        let msgs: Vec<(SocketAddr, [u8; 4])> = (0..300u32).map(|i| (to, i.to_be_bytes())).collect();
        assert_eq!(send_batch(&tx, &msgs).await.sent, 300);
        let (mut r, mut b) = (Receiver::new(), RecvBatch::with_capacity(300));
        r.recv(&rx, &mut b).await.unwrap();
        let first = b.len();
        // Loopback delivers at once: the rest is queued. Stop at 200.
        let added = r.try_recv_more(&rx, &mut b, 200);
        assert_eq!(b.len(), 200, "first {first}, added {added}");
        assert_eq!(added, 200 - first);
        let more = r.try_recv_more(&rx, &mut b, 1000);
        assert_eq!(b.len(), 300, "{more}");
        for (i, (d, _)) in b.iter().enumerate() {
            assert_eq!(d, (i as u32).to_be_bytes());
        }
        // Nothing queued: returns at once, adds nothing.
        assert_eq!(r.try_recv_more(&rx, &mut b, 1000), 0);
        // recv clears the batch before filling it.
        send_batch(&tx, &[(to, [9u8; 4])]).await;
        r.recv(&rx, &mut b).await.unwrap();
        assert_eq!(b.len(), 1);
    }

    /// The kept buffers and headers, reused call after call with different
    /// counts (1, 5, a full batch, 3, more than a batch): every datagram
    /// keeps its own bytes and its own source, none left over from an
    /// earlier, longer call.
    #[tokio::test]
    async fn kept_buffers_and_headers_stay_right_across_calls() {
        let rx = bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap().0;
        let to = rx.local_addr().unwrap();
        let senders: Vec<UdpSocket> = (0..3)
            .map(|_| bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap().0)
            .collect();
        let (mut r, mut b) = (Receiver::new(), RecvBatch::new());
        for (round, count) in [1usize, 5, BATCH, 3, BATCH + 7, 2].into_iter().enumerate() {
            let mut want = Vec::new();
            for i in 0..count {
                // Longer datagrams in the first calls: a later, shorter
                // one must not show their tail.
                let len = 1 + (count - i) * 3 + (5 - round.min(5)) * 20;
                let d: Vec<u8> = (0..len).map(|j| (round * 31 + i * 7 + j) as u8).collect();
                let from = &senders[(round + i) % senders.len()];
                assert_eq!(send_batch(from, &[(to, d.clone())]).await.sent, 1);
                want.push((d, from.local_addr().unwrap()));
            }
            let mut got = Vec::new();
            while got.len() < count {
                r.recv(&rx, &mut b).await.unwrap();
                r.try_recv_more(&rx, &mut b, count - got.len());
                got.extend(b.iter().map(|(d, f)| (d.to_vec(), f)));
            }
            assert_eq!(got, want, "round {round}, {count} datagrams");
        }
        assert_eq!(r.truncated(), 0);
    }

    /// One receiver (and one thread's headers) going back and forth
    /// between an IPv4 and an IPv6 socket: every source is right, none is
    /// dropped (an IPv4 source's shorter address never cuts an IPv6 one).
    #[tokio::test]
    async fn ipv4_and_ipv6_sockets_in_turn_report_right_sources() {
        let Ok((rx6, _)) = bind("[::1]:0".parse().unwrap(), 1 << 20) else {
            mbms_test_support::skip("no IPv6 loopback");
            return;
        };
        let tx6 = bind("[::1]:0".parse().unwrap(), 1 << 20).unwrap().0;
        let (tx4, rx4) = pair();
        let (mut r, mut b) = (Receiver::new(), RecvBatch::new());
        for round in 0..3u8 {
            for (tx, rx) in [(&tx4, &rx4), (&tx6, &rx6)] {
                let to = rx.local_addr().unwrap();
                let msgs: Vec<(SocketAddr, [u8; 1])> =
                    (0..5).map(|i| (to, [round * 10 + i])).collect();
                assert_eq!(send_batch(tx, &msgs).await.sent, 5);
                let mut got = Vec::new();
                while got.len() < 5 {
                    r.recv(rx, &mut b).await.unwrap();
                    got.extend(b.iter().map(|(d, f)| (d[0], f)));
                }
                let want: Vec<_> = (0..5)
                    .map(|i| (round * 10 + i, tx.local_addr().unwrap()))
                    .collect();
                assert_eq!(got, want, "round {round}, to {to}");
            }
        }
        assert_eq!(r.truncated(), 0);
    }

    #[tokio::test]
    async fn granted_buffers_are_reported() {
        let (s, granted) = bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let (r, w) = granted.unwrap();
        assert!(r > 0 && w > 0);
        assert_eq!(set_buffers(&s, 1 << 16).map(|(r, _)| r > 0), Some(true));
    }
}
