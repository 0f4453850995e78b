//! The MBMS UE (TS 33.246). For now only its GBA bootstrapping client
//! ([`bootstrap`], Ub per TS 24.109 / RFC 3310, PROFILE.md section 4) and
//! the `mbms ue` command ([`cli`]); registration, MSK handling and the
//! MGV-F come later.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bootstrap;
pub mod cli;

pub use bootstrap::{Bootstrap, BootstrapClient, BootstrapError};
