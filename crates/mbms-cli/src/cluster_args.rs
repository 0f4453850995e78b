//! The options of a run on several BM-SC instances (issue 13,
//! docs/scale-out.md), shared by `mbms demo` and `mbms bench rekey`.

use clap::Args;

/// `--postgres` and `--lease-ms`, for `--bmsc-instances K`.
#[derive(Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// The BM-SC store on PostgreSQL, needed by --bmsc-instances above 1:
    /// the run creates a database of its own from this URL (any database
    /// of the server) and drops it at the end.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// `[cluster] lease_ms` of the instances (default: the BM-SC's,
    /// 10000): how long a dead instance's key groups and UEs stay its own.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..))]
    pub lease_ms: Option<u64>,
}

impl ClusterArgs {
    /// The PostgreSQL URL for `instances` BM-SC instances (`--postgres` as
    /// given; one instance may use it too); an error naming the missing
    /// option when several are asked for without it.
    pub fn postgres_for(&self, instances: u64) -> Result<Option<String>, String> {
        if instances > 1 && self.postgres.is_none() {
            return Err("--bmsc-instances above 1 needs --postgres URL".into());
        }
        Ok(self.postgres.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_instances_need_postgres() {
        let none = ClusterArgs::default();
        assert_eq!(none.postgres_for(1), Ok(None));
        assert!(none.postgres_for(2).unwrap_err().contains("--postgres"));
        let pg = ClusterArgs {
            postgres: Some("postgres://x".into()),
            lease_ms: None,
        };
        assert_eq!(pg.postgres_for(1), Ok(Some("postgres://x".into())));
        assert_eq!(pg.postgres_for(3), Ok(Some("postgres://x".into())));
    }
}
