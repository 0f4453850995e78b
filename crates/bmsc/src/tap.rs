//! An optional datagram tap: a callback that sees every MIKEY, MTK and SRTP
//! datagram the BM-SC sends and every MIKEY datagram it receives, with the
//! real source and destination addresses. It is how `mbms demo --pcap`
//! records a run; unset (the default, [`crate::start`]) it costs one branch
//! per batch. The callback runs on the sending task: keep it short.

use std::net::SocketAddr;
use std::sync::Arc;

/// Sent or received by the BM-SC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapDirection {
    /// Handed to the kernel for sending (a send that then fails is still
    /// reported).
    Sent,
    /// Received.
    Received,
}

/// What a datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapKind {
    /// A MIKEY message on the BM-SC's MIKEY socket: MSK messages, solicited
    /// pulls (sent), acknowledgements (received).
    Mikey,
    /// An MTK message of a session.
    Mtk,
    /// An SRTP packet of a streaming session.
    Srtp,
}

/// One datagram seen by the tap.
#[derive(Clone, Copy, Debug)]
pub struct TapDatagram<'a> {
    /// Sent or received.
    pub direction: TapDirection,
    /// What it carries.
    pub kind: TapKind,
    /// Source address (the local socket's address for sent datagrams; its
    /// IP may be unspecified when the socket is bound to `0.0.0.0`).
    pub src: SocketAddr,
    /// Destination address.
    pub dst: SocketAddr,
    /// The UDP payload.
    pub bytes: &'a [u8],
}

/// The tap callback.
#[derive(Clone)]
pub struct Tap(pub Arc<dyn Fn(&TapDatagram<'_>) + Send + Sync>);

impl Tap {
    /// A tap from a closure.
    pub fn new(f: impl Fn(&TapDatagram<'_>) + Send + Sync + 'static) -> Self {
        Tap(Arc::new(f))
    }

    /// Reports sent datagrams `(destination, bytes)` from `src`.
    pub fn sent<B: AsRef<[u8]>>(&self, kind: TapKind, src: SocketAddr, msgs: &[(SocketAddr, B)]) {
        for (dst, b) in msgs {
            (self.0)(&TapDatagram {
                direction: TapDirection::Sent,
                kind,
                src,
                dst: *dst,
                bytes: b.as_ref(),
            });
        }
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}
