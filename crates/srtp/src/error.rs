//! Typed errors. Every rejection of a packet names what was wrong; none of
//! them allocates, so the error path is as cheap as the hot path.

use crate::keys::Mki;

/// Which kind of packet an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// An RTP / SRTP packet.
    Rtp,
    /// An RTCP / SRTCP packet.
    Rtcp,
}

impl std::fmt::Display for PacketKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PacketKind::Rtp => "RTP",
            PacketKind::Rtcp => "RTCP",
        })
    }
}

/// A packet could not be protected or unprotected.
///
/// On any error the buffer content is unspecified for `protect_*` and left
/// undecrypted (but possibly still holding the received bytes) for
/// `unprotect_*`; the context's state (ROC, replay window) is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Too few bytes for the structure being read.
    #[error("{kind} packet truncated: {len} byte(s), at least {needed} needed ({what})")]
    Truncated {
        /// RTP or RTCP.
        kind: PacketKind,
        /// The length that was available.
        len: usize,
        /// The length that was needed.
        needed: usize,
        /// Which part did not fit.
        what: &'static str,
    },
    /// The version field is not 2.
    #[error("{kind} version {version}, expected 2")]
    BadVersion {
        /// RTP or RTCP.
        kind: PacketKind,
        /// The version found.
        version: u8,
    },
    /// `rtp_len`/`rtcp_len` is larger than the buffer.
    #[error("packet length {len} exceeds the buffer length {buffer}")]
    LengthExceedsBuffer {
        /// The claimed packet length.
        len: usize,
        /// The buffer length.
        buffer: usize,
    },
    /// The caller's buffer has no room for the MKI and tag.
    #[error(
        "buffer too small: {needed} byte(s) needed for the protected packet, {available} available"
    )]
    BufferTooSmall {
        /// Bytes needed in total.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// No master key with this MKI is installed. MBMS: the MKI is MSK ID ||
    /// MTK ID; the UE treats this as a missing MTK (wait for the MTK
    /// message) or a missing MSK (missed key update).
    #[error("unknown MKI {mki} ({kind})")]
    UnknownMki {
        /// RTP or RTCP.
        kind: PacketKind,
        /// The MKI found in the packet.
        mki: Mki,
    },
    /// The context has no master key at all (sender: none active).
    #[error("no master key installed")]
    NoKey,
    /// The authentication tag did not verify: the packet was altered,
    /// or it was protected with another key or another ROC.
    #[error("{kind} authentication failed (SSRC {ssrc:#010x}, index {index}): tag mismatch")]
    AuthenticationFailed {
        /// RTP or RTCP.
        kind: PacketKind,
        /// SSRC of the packet.
        ssrc: u32,
        /// The packet index that was tried (48-bit SRTP / 31-bit SRTCP).
        index: u64,
    },
    /// The index was already received (or, for a sender, already used:
    /// protecting it again would reuse keystream).
    #[error("{kind} replay: index {index} of SSRC {ssrc:#010x} was already seen")]
    Replayed {
        /// RTP or RTCP.
        kind: PacketKind,
        /// SSRC of the packet.
        ssrc: u32,
        /// The packet index.
        index: u64,
    },
    /// The index is older than the replay window.
    #[error("{kind} packet too old: index {index} of SSRC {ssrc:#010x} is behind the replay window (highest {highest}, window {window})")]
    TooOld {
        /// RTP or RTCP.
        kind: PacketKind,
        /// SSRC of the packet.
        ssrc: u32,
        /// The packet index.
        index: u64,
        /// The highest index received so far.
        highest: u64,
        /// The window size.
        window: u64,
    },
    /// RFC 4771 is configured and the ROC of this SSRC is not known yet:
    /// the packet does not carry the ROC. Wait for a packet with
    /// SEQ mod R == 0, or set the ROC from the MTK message's SRTP-ID map.
    #[error("ROC of SSRC {ssrc:#010x} unknown (SEQ {seq}): waiting for a ROC-carrying packet (RFC 4771) or the SRTP-ID map")]
    RocUnknown {
        /// SSRC of the packet.
        ssrc: u32,
        /// SEQ of the packet.
        seq: u16,
    },
    /// The packet index space (2^48 SRTP, 2^31 SRTCP) is exhausted, or the
    /// estimated index would be negative. Rekey.
    #[error("{kind} packet index out of range for SSRC {ssrc:#010x}")]
    IndexOutOfRange {
        /// RTP or RTCP.
        kind: PacketKind,
        /// SSRC of the packet.
        ssrc: u32,
    },
    /// The context already tracks its maximum number of SSRCs.
    #[error("too many streams: the context already tracks {max} SSRCs")]
    TooManyStreams {
        /// The configured maximum.
        max: usize,
    },
}

/// A context, key or configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The MKI length is over [`crate::MAX_MKI_LEN`].
    #[error("MKI length {0} exceeds the maximum of {max}", max = crate::MAX_MKI_LEN)]
    MkiTooLong(usize),
    /// A key's MKI length differs from the configured MKI length.
    #[error("key MKI is {got} byte(s), the context uses {expected}")]
    MkiLengthMismatch {
        /// Configured length.
        expected: usize,
        /// The key's MKI length.
        got: usize,
    },
    /// A key with this MKI is already installed.
    #[error("a key with MKI {0} is already installed")]
    DuplicateMki(Mki),
    /// No key has this MKI.
    #[error("no key with MKI {0}")]
    NoSuchMki(Mki),
    /// More keys than [`crate::MAX_KEYS`].
    #[error("too many master keys (at most {max})", max = crate::MAX_KEYS)]
    TooManyKeys,
    /// The replay window size is out of range.
    #[error("replay window {0} out of range (64 to 32768 packets)")]
    ReplayWindow(usize),
    /// The RFC 4771 rate R is 0.
    #[error("RFC 4771 ROC transmission rate R must be at least 1")]
    ZeroRate,
    /// RCCm1/RCCm2 need a tag longer than the 4-byte ROC.
    #[error("RFC 4771 {mode:?} needs an authentication tag longer than 4 bytes (the suite's tag is {tag_len})")]
    RccTagTooShort {
        /// The mode.
        mode: crate::RccMode,
        /// The suite's tag length.
        tag_len: usize,
    },
    /// RFC 4771 ROC transport without HMAC-SHA-1 (the RCC modes are
    /// integrity transforms; MIKEY signals them as authentication
    /// algorithms 2 to 4).
    #[error("RFC 4771 {mode:?} needs HMAC-SHA-1 authentication (the suite has none)")]
    RccNeedsAuthentication {
        /// The mode.
        mode: crate::RccMode,
    },
    /// A tag length with the NULL authentication transform.
    #[error("a {tag_len}-byte authentication tag needs an authentication transform (the suite's is NULL)")]
    TagWithoutAuthentication {
        /// The tag length asked for.
        tag_len: usize,
    },
    /// A tag longer than the HMAC-SHA-1 output.
    #[error("authentication tag of {tag_len} bytes: HMAC-SHA-1 gives at most {max}", max = crate::MAX_TAG_LEN)]
    TagTooLong {
        /// The tag length asked for.
        tag_len: usize,
    },
    /// A key or salt had the wrong length.
    #[error("{what} must be {expected} bytes, got {got}")]
    KeyLength {
        /// Which key.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// `max_streams` is 0.
    #[error("max_streams must be at least 1")]
    ZeroStreams,
}
