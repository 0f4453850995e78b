//! # mikey: MIKEY (RFC 3830) for MBMS, sans-IO
//!
//! A codec and the cryptography of the Multimedia Internet KEYing protocol as
//! 3GPP MBMS (TS 33.246) uses it, including the RFC 4563 Key ID extension and
//! the RFC 4771 SRTP policy parameters. No I/O, no clocks, no MBMS policy:
//! the `mbms` crate builds the MBMS profile on top of this one.
//!
//! * [`Message::parse`] walks the next-payload chain with bounds checks and
//!   borrows from the input; errors name the payload and the byte offset.
//!   It never panics, and `parse(b)?.to_bytes() == b` for every `b` it accepts.
//! * [`Message::new`] and [`MessageBuilder`] build messages whose lengths,
//!   next-payload fields and MACs are computed, never set by hand.
//! * [`MessageWriter`] writes a message straight into a caller's buffer and
//!   protects it in place, allocating nothing ([`MessageBuilder`] is a
//!   wrapper over it); [`Message::walk`] and [`KeyDataRef::parse_list`]
//!   read payload by payload without allocating.
//! * [`crypto`]: the MIKEY-1 PRF (correct for input keys of any length,
//!   32 bytes included), key derivation from a pre-shared key and from a TGK,
//!   KEMAC protection (AES-CM-128 or NULL, HMAC-SHA-1-160) and the
//!   verification message MAC. MACs are compared in constant time; keys are
//!   zeroized on drop. [`crypto::Prf`] and [`HmacSha1Key`] keep a key's HMAC
//!   state (RFC 2104 section 4) so that it is computed once per key, not
//!   once per message.
//!
//! ```
//! use mikey::*;
//! let psk = [9u8; 32];
//! let key = KeyData { kind: KeyKind::Tek, key: SecretBytes::new(vec![1; 16]),
//!                     salt: Some(SecretBytes::new(vec![2; 14])), validity: KeyValidity::Null };
//! let p = MessageBuilder::new(DataType::PSK_INIT)
//!     .timestamp(Timestamp::Counter(7))
//!     .rand([3u8; 16])
//!     .protect(&psk, EncrAlg::AES_CM_128, &[key.clone()])?;
//! let opened = open_psk(p.bytes(), &psk)?;
//! assert_eq!(opened.key_data, vec![key]);
//! assert_eq!(Message::parse(p.bytes())?.to_bytes(), p.bytes());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod builder;
pub mod codes;
pub mod crypto;
mod error;
mod hmac_sha1;
mod message;
mod payload;
mod policy;
mod reader;
mod secret;
mod writer;

pub use builder::{MessageBuilder, Protected};
pub use codes::*;
pub use crypto::{open_psk, HmacSha1Key, InitiatorFields, InitiatorRef, Opened, Prf, PskKeys};
pub use error::{BuildError, CryptoError, OpenError, ParseError, ParseErrorKind, PayloadName};
pub use message::{Message, PayloadWalk};
pub use payload::*;
pub use policy::{EffectiveSrtpPolicy, PolicyError, SrtpPolicy};
pub use secret::SecretBytes;
pub use writer::{MessageWriter, Written};
