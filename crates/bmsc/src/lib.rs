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

/// Displays an error with its causes (`a: b: c`), for logs.
pub(crate) struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    unix_millis() / 1000
}

/// Unix time in milliseconds.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn rfc3339_millis(ms: u64) -> String {
    let t = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}
