//! Benchmarks of the real services (issue 12): the UE swarm ([`swarm`])
//! and the harnesses of `mbms bench rekey` ([`rekey`]) and `mbms bench
//! http` ([`http`]), over the BSF and BM-SC started as child processes
//! ([`services`]). Reports and their JSON schemas: docs/bench.md.
//!
//! A rekey run programmatically:
//!
//! ```no_run
//! # async fn demo() -> Result<(), mbms_bench::services::BenchError> {
//! let mut o = mbms_bench::rekey::RekeyOptions::new("target/release/mbms".into(), 20_000);
//! o.loss = 0.0;
//! let report = mbms_bench::rekey::run(&o).await?;
//! assert!(report.every_ue_holds_new_msk);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod admin;
pub mod http;
pub mod plot;
pub mod procfs;
pub mod rekey;
pub mod services;
pub mod swarm;
pub mod timeline;
pub mod udp;
