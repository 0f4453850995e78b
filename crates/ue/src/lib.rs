//! The MBMS UE (TS 33.246): the ME and its MGV-F, from GBA bootstrapping to
//! decrypted media. A library that a media middleware can embed
//! ([`RunningUe`]) and the `mbms ue` command ([`cli`]).
//!
//! * [`bootstrap`]: the GBA Ub client (TS 24.109, RFC 3310).
//! * [`config`]: `ue.toml` and the service description file.
//! * [`ua`] and [`xml`]: registration, deregistration and MSK requests over
//!   HTTP Digest (`PROFILE.md` section 3).
//! * [`RunningUe`] ([`runtime`]): the async shell around the MGV-F over a
//!   durable MGV-S ([`mbms::mgvf`]) and the ME (MTK cache, SRTP receive
//!   contexts, download objects), with the key management task: MIKEY
//!   listener with acknowledgements, solicited pull, initiation of key
//!   management, missed key update with random back-off, activation
//!   requests for inactive MSKs ([`ACTIVATION_REQUESTS`]), re-bootstrapping,
//!   leaving services.
//! * [`state`]: the state directory; [`status`]: `mbms ue status`.
//! * [`UeHost`] ([`host`]): many UEs in one process sharing sockets and
//!   HTTP connections (`mbms demo --ues 10000`).
//! * [`sdp`]: the SDP file of the plain RTP output, for ffplay or VLC.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bootstrap;
pub mod cli;
pub mod config;
mod core;
pub mod download;
pub mod events;
pub mod host;
mod km;
pub mod runtime;
pub mod sdp;
pub mod state;
pub mod status;
pub mod ua;
pub mod xml;

pub use crate::core::ACTIVATION_REQUESTS;
pub use bootstrap::{Bootstrap, BootstrapClient, BootstrapError};
pub use config::{ConfigError, GbaMode, Service, Session, SessionKind, UeConfig};
pub use events::{RequestReason, UeEvent};
pub use host::{HostConfig, HostStats, UeHost};
pub use runtime::{PlainPacket, RunningUe, SessionAddrs, UeError};
pub use status::Status;
