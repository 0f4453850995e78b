//! # srtp: MBMS traffic protection, sans-IO
//!
//! SRTP and SRTCP (RFC 3711) as 3GPP MBMS (TS 33.246) uses them, and the
//! protected download objects of the project profile. No sockets, no clocks,
//! no randomness inside: keys, IVs and packets are passed in.
//!
//! * Confidentiality and integrity chosen independently ([`Suite`]): the
//!   AES-CM or the NULL cipher, HMAC-SHA-1 with a tag of 0 to 20 bytes or
//!   NULL authentication (AES_CM_128_HMAC_SHA1_80 is the default, _32,
//!   NULL_HMAC_SHA1_80/_32, AES_CM_128_NULL_AUTH, NULL_CIPHER_NULL_AUTH are
//!   named), SRTP and SRTCP encryption switched separately; key derivation
//!   rate 0 ([`keys::derive`], RFC 3711 4.3).
//! * An MKI of configurable length in every packet (MBMS: 6 bytes, MSK ID
//!   || MTK ID, [`Mki::mbms`]); several master keys per context selected by
//!   MKI, so a receiver holds the current and the next MTK; an unknown MKI
//!   is its own error, [`Error::UnknownMki`].
//! * Per-SSRC ROC tracking and index estimation (RFC 3711 3.3.1 and
//!   Appendix A), replay windows (3.3.2; 64 packets by default, up to
//!   32768), SRTCP with its 31-bit index and E bit (3.4).
//! * RFC 4771 ROC transport ([`Rcc`], modes [`RccMode`] RCCm1-3): a
//!   receiver that joins late learns the ROC from a packet with
//!   SEQ mod R == 0, or from the MTK message's SRTP-ID map
//!   ([`Receiver::set_roc`]).
//! * In-place processing into the caller's buffer with no heap allocation
//!   per packet: [`Sender::protect_rtp`] / [`Receiver::unprotect_rtp`].
//!   AES key schedules and HMAC pad states are computed once per key.
//! * Tamper, truncation, replay, unknown keys: typed [`Error`]s; nothing
//!   panics on any input (property-tested and fuzzed).
//! * [`download`]: protected download objects (AES-128-CBC + HMAC-SHA-1-80,
//!   streaming, no plaintext output unless the tag verified).
//!
//! ```
//! use srtp::*;
//! // MBMS: master key = MTK, master salt = the KEMAC salt, MKI = MSK ID || MTK ID.
//! let mtk1 = MasterKey::with_mki([0x11; 16], [0x22; 14], Mki::mbms(0x0001_0005, 1));
//! let mtk2 = MasterKey::with_mki([0x33; 16], [0x44; 14], Mki::mbms(0x0001_0005, 2));
//! let mut bmsc = Sender::new(Config::mbms())?;
//! let mut ue = Receiver::new(Config::mbms())?;
//! bmsc.add_key(&mtk1)?;
//! ue.add_key(&mtk1)?;
//! ue.add_key(&mtk2)?; // the next MTK, before the sender switches
//!
//! let mut pkt = vec![0x80, 96, 0xff, 0xff, 0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe, 1, 2, 3];
//! bmsc.protect_rtp_vec(&mut pkt)?;
//! assert_eq!(ue.unprotect_rtp_vec(&mut pkt)?.mki, Mki::mbms(0x0001_0005, 1));
//!
//! bmsc.add_key(&mtk2)?;
//! bmsc.set_active_key(&Mki::mbms(0x0001_0005, 2))?;
//! let mut pkt = vec![0x80, 96, 0x00, 0x00, 0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe, 4, 5];
//! bmsc.protect_rtp_vec(&mut pkt)?;
//! let got = ue.unprotect_rtp_vec(&mut pkt)?;
//! assert_eq!((got.mki, got.roc), (Mki::mbms(0x0001_0005, 2), 1)); // SEQ wrapped: ROC 1
//!
//! // A packet under an MTK the UE does not have: its own error.
//! let mut rx = Receiver::new(Config::mbms())?;
//! rx.add_key(&mtk2)?;
//! let mut tx = Sender::new(Config::mbms())?;
//! tx.add_key(&mtk1)?;
//! let mut pkt = vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
//! tx.protect_rtp_vec(&mut pkt)?;
//! assert!(matches!(rx.unprotect_rtp_vec(&mut pkt), Err(Error::UnknownMki { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod context;
pub mod download;
mod error;
pub mod keys;
mod packet;
mod replay;

pub use context::{
    Auth, Cipher, Config, Rcc, RccMode, Receiver, RtcpUnprotected, Sender, Suite, Unprotected,
    DEFAULT_MAX_STREAMS, DEFAULT_REPLAY_WINDOW, MAX_KEYS, MAX_REPLAY_WINDOW, MAX_TAG_LEN,
    MBMS_MKI_LEN, MIN_RTCP_TAG_LEN,
};
pub use error::{ConfigError, Error, PacketKind};
pub use keys::{MasterKey, Mki, MAX_MKI_LEN};
