//! The Bootstrapping Server Function (BSF) of GBA (TS 33.220), as used by
//! MBMS security (TS 33.246): a thin async shell around the sans-IO `gba`
//! crate.
//!
//! * Ub (UE <-> BSF): HTTP Digest AKA bootstrapping, TS 24.109 clause 4 and
//!   Annex A, RFC 3310 (PROFILE.md section 4), served on `GET /`.
//! * Zn (NAF <-> BSF): `POST /zn/v1/naf-keys`, JSON with a bearer token
//!   (PROFILE.md section 5, a project choice instead of Diameter).
//! * `/healthz`.
//!
//! The BSF also plays the HSS role: it holds subscribers (IMPI, K, OPc, SQN,
//! AMF) and generates the authentication vectors itself (Milenage,
//! TS 35.206). State lives behind the [`store::Store`] trait, by default in
//! a SQLite file ([`sqlite::SqliteStore`]).
//!
//! Modules: [`config`] (TOML configuration), [`store`] and [`sqlite`]
//! (persistence), [`server`] (the HTTP service), [`cli`] (the `mbms bsf`
//! command).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod server;
pub mod sqlite;
pub mod store;

pub use config::{BsfConfig, ConfigError, ZnToken};
pub use mbms_service::db::Create;
pub use server::{Bsf, RunningBsf, Settings};
pub use sqlite::SqliteStore;
pub use store::{Done, GbaType, Session, Store, StoreError, Subscriber};

pub(crate) use mbms_service::ErrorChain;

/// The current time in Unix seconds.
pub use mbms_service::unix_now;

/// Formats Unix seconds as an RFC 3339 UTC time (`2030-01-01T00:00:00Z`),
/// the xs:dateTime of `<lifetime>` on Ub (TS 24.109 Annex A; PROFILE.md
/// section 4) and of `lifetime` on Zn (PROFILE.md section 5).
pub use mbms_service::rfc3339_secs as rfc3339;

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_format() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_893_456_000), "2030-01-01T00:00:00Z");
    }
}
