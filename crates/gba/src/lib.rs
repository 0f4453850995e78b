//! Sans-IO building blocks of the Generic Bootstrapping Architecture (GBA,
//! TS 33.220) as used by MBMS security (TS 33.246).
//!
//! Nothing in this crate opens a socket, reads a clock or draws random
//! numbers: time (`now`, in seconds) and random bytes are always passed in by
//! the caller, so every function is deterministic and testable.
//!
//! Modules:
//!
//! * [`milenage`]: the TS 35.206 algorithm set (f1, f1*, f2, f3, f4, f5,
//!   f5*, OPc from OP) on AES-128.
//! * [`aka`]: UMTS AKA (TS 33.102 6.3): authentication vectors and
//!   resynchronisation for the HSS role of the BSF, a USIM model with a
//!   simplified Annex C freshness check, the 48-bit [`aka::Sqn48`], and the
//!   Ub nonce layout `RAND || AUTN || server data` (TS 24.109 A.3).
//! * [`digest`]: HTTP Digest (RFC 7616, RFC 2617 compatible) with the AKA
//!   profile of RFC 3310: header parsing/formatting, a client, and a server
//!   with expiring stateless nonces and a bounded replay cache. Used on Ub
//!   (UE <-> BSF) and Ua (UE <-> BM-SC).
//! * [`kdf`]: the TS 33.220 Annex B KDF, Ks_NAF / Ks_ext_NAF / Ks_int_NAF,
//!   NAF_Id, B-TID, and the MBMS keys MRK and MUK (PROFILE.md section 2).
//! * [`keys`]: the key types; all zeroize on drop, compare in constant time
//!   and never print their bytes.
//!
//! A Ub bootstrapping run, end to end:
//!
//! 1. BSF: [`aka::generate_vector`], then
//!    [`digest::DigestServer::issue_nonce_with_prefix`] with
//!    [`aka::aka_nonce_prefix`] and a challenge with `algorithm=AKAv1-MD5`.
//! 2. UE: [`aka::parse_aka_nonce`], [`aka::Usim::authenticate`], then
//!    [`digest::DigestClient`] with RES as the password (or
//!    [`digest::DigestClient::authorize_resync`] with AUTS).
//! 3. BSF: [`digest::DigestServer::verify`] with XRES (or
//!    [`aka::resync`]), then [`digest::DigestServer::authentication_info`].
//! 4. Both: [`keys::Ks::from_ck_ik`], [`kdf::BTid::new`], and per NAF
//!    [`kdf::derive_ks_naf`] and [`kdf::MbmsKeys::gba_me`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aka;
pub mod digest;
pub mod kdf;
pub mod keys;
pub mod milenage;

pub use aka::{AkaError, AkaOutcome, AuthVector, Autn, Auts, Sqn48, Usim};
pub use kdf::{BTid, KdfError, MbmsKeys, NafId};
pub use keys::{Ck, Ik, KeyError, Ks, Mrk, Muk, NafKey, Op, Opc, Res, SubscriberKey};
pub use milenage::Milenage;

#[doc(hidden)]
pub mod __private {
    //! Re-exports for the exported `secret_bytes!` macro.
    pub use hex;
    pub use subtle;
    pub use zeroize;
}
