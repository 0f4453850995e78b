//! # mbms: the MBMS security core (3GPP TS 33.246), sans-IO
//!
//! * [`ids`]: Key Domain ID, MSK ID, MTK ID (RFC 1982), MUK ID.
//! * [`profile`]: every number of the project's MBMS MIKEY profile.
//! * [`keys`]: MSK, MTK, MUK and the traffic keys derived from an MTK.
//! * [`messages`]: builders and readers for every MBMS MIKEY message.
//! * [`mgvf`]: the UE's MGV-F and its store, the MGV-S.
//! * [`engine`]: the BM-SC key engine.
//! * [`traffic`]: the SRTP policy of MTK messages <-> SRTP configurations.
//! * [`ua`]: the Ua (UE <-> BM-SC HTTP) request and response bodies.
//!
//! No sockets, no clocks, no randomness inside: time and random bytes are
//! passed in by the services that drive this crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
pub mod ids;
pub mod keys;
pub mod messages;
pub mod mgvf;
pub mod profile;
pub mod serial;
pub mod traffic;
pub mod ua;
pub mod vectors;

pub use ids::{IdError, KeyDomainId, KeyGroupName, MskId, MskName, MtkId, MukId};
pub use keys::{DownloadKeys, Msk, Mtk, MtkKey, MtkSalt, Muk};
pub use serial::Serial16;
