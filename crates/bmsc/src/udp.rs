//! The BM-SC's batched UDP: the module of `mbms-service`
//! ([`mbms_service::udp`], `sendmmsg(2)` / `recvmmsg(2)` with buffers kept
//! between calls), and the BM-SC's own sizes of the MIKEY socket.

pub use mbms_service::udp::{
    send_batch, set_buffers, Receiver, RecvBatch, Sent, BATCH, MAX_DATAGRAM,
};

/// Default size of the MIKEY socket's receive and send buffers
/// (`mikey_socket_buffer`): room for the acknowledgements of about 64k UEs
/// (a 60-byte acknowledgement takes about 1 KiB of buffer accounting).
pub const DEFAULT_SOCKET_BUFFER: usize = 64 << 20;

/// Acknowledgements processed (and committed) together at most: what
/// arrived while the previous batch was being committed, up to this.
pub const ACK_BATCH_MAX: usize = 16_384;
