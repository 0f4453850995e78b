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
pub use store::{GbaType, Session, Store, StoreError, Subscriber};

/// Displays an error with its chain of causes (`a: b: c`), for logs.
pub(crate) struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl core::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

/// The current time in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Formats Unix seconds as an RFC 3339 UTC time (`2030-01-01T00:00:00Z`),
/// the xs:dateTime of `<lifetime>` on Ub (TS 24.109 Annex A; PROFILE.md
/// section 4) and of `lifetime` on Zn (PROFILE.md section 5).
pub fn rfc3339(unix_secs: u64) -> String {
    let t = i64::try_from(unix_secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_format() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_893_456_000), "2030-01-01T00:00:00Z");
    }
}
