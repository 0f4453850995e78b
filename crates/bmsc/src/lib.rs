//! # bmsc: the BM-SC key management server (3GPP TS 33.246)
//!
//! The network side of MBMS security as a service (`mbms bmsc`), a thin
//! async shell around the sans-IO key engine of the `mbms` crate:
//!
//! * [`ua`]: `POST /keymanagement?requesttype=register|deregister|msk-request`
//!   with HTTP Digest (realm `3GPP-bootstrapping@<fqdn>`, username B-TID,
//!   password base64(MRK)), Ks_NAF from the BSF over Zn ([`zn`]); bodies in
//!   [`xml`].
//! * [`core`]: services, key groups, registrations and the key engine
//!   (push, acknowledgement, retransmission, 4-way procedure and charging,
//!   solicited pull, MTKs), with every outcome persisted in a [`store`]
//!   (SQLite or PostgreSQL) before it is acted upon.
//! * [`udp`]: MIKEY over UDP with `sendmmsg` / `recvmmsg` batches.
//! * [`session`]: MTK messages for streaming and download sessions, SRTP
//!   protection of RTP, protected download objects; [`protection`]: what
//!   each session's confidentiality and integrity are.
//! * [`tap`]: an optional callback that sees every datagram (captures).
//! * [`admin`]: the admin REST API; [`metrics`]: Prometheus.
//! * [`server`]: wiring; [`cli`]: `mbms bmsc`; [`config`]: the TOML file.
//!
//! Reference: `docs/bmsc.md` and `docs/bmsc-openapi.yaml`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod cluster;
mod committer;
pub mod config;
pub mod core;
pub mod metrics;
pub mod protection;
pub mod server;
pub mod session;
pub mod store;
pub mod tap;
pub mod ua;
pub mod udp;
pub mod xml;
pub mod zn;

pub use config::{BmscConfig, ConfigError, Token};
pub use server::{start, start_with_tap, RunningBmsc, ServerError};
pub use tap::{Tap, TapDatagram, TapDirection, TapKind};

pub(crate) use mbms_service::ErrorChain;

/// Unix time in seconds.
pub use mbms_service::unix_now;

/// Unix time in milliseconds.
pub use mbms_service::unix_millis;

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
pub use mbms_service::rfc3339_millis;
