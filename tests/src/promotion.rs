//! The failover scenario without an HA manager, shared by the suites that run it with the
//! built-in policies and with plugins: a probed primary and streaming replica behind the
//! proxy; under load (tokio-postgres and psycopg 3 clients), the primary stops (fast) and the
//! replica is promoted (`pg_promote`).

use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Result};

use crate::admin::wait_for_primary;
use crate::load::{Load, LoadOptions, LoadReport, PsycopgLoad};
use crate::{ClusterOptions, Endpoint, ProxyConfig, TestBed};

/// `cfg` with the admin console, probing the cluster every 100 ms and holding transactions
/// up to 20 s while there is no primary.
pub fn probed(cfg: ProxyConfig) -> ProxyConfig {
    cfg.with_admin()
        .set("clusters.main.probe_user", "app")
        .set("clusters.main.probe_database", "app")
        .set("clusters.main.probe_interval", "100ms")
        .set("clusters.main.hold_timeout", "20s")
}

/// A primary and a streaming replica behind the proxy configured by `configure` (given the
/// [`probed`] configuration), once the proxy names the primary. Returns the bed, the
/// proxy's endpoint, and the primary's and the replica's addresses as the proxy names them.
pub async fn probed_pair(
    configure: impl FnOnce(ProxyConfig) -> Result<ProxyConfig>,
) -> Result<(TestBed, Endpoint, String, String)> {
    let bed = TestBed::start_full(
        ClusterOptions {
            replicas: 1,
            ..Default::default()
        },
        |cfg, _| configure(probed(cfg)),
    )?;
    let endpoint = bed.endpoint();
    let old = format!("{}:{}", bed.pg().primary().host(), bed.pg().primary().port());
    let new = format!("{}:{}", bed.pg().replica().host(), bed.pg().replica().port());
    wait_for_primary(&endpoint, &old, Duration::from_secs(10)).await?;
    Ok((bed, endpoint, old, new))
}

/// psycopg 3 clients running beside the tokio-postgres ones.
pub const PSYCOPG_CLIENTS: usize = 2;

/// What the clients saw, and when each step happened after the stop was requested.
pub struct Promotion {
    /// The tokio-postgres clients' report, then the psycopg clients'.
    pub reports: [LoadReport; 2],
    pub stopped: Duration,
    pub promoted: Duration,
    /// The proxy named the new primary.
    pub confirmed: Duration,
    /// The same instant on the wall clock: each client must complete work after it.
    pub confirmed_at: SystemTime,
}

impl std::fmt::Display for Promotion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n{}\nprimary stopped after {:?}, replica writable after {:?}, proxy confirmed it after {:?}",
            self.reports[0], self.reports[1], self.stopped, self.promoted, self.confirmed
        )
    }
}

/// Runs `clients` tokio-postgres and [`PSYCOPG_CLIENTS`] psycopg clients through the proxy, stops the primary and promotes the replica of a
/// [`probed_pair`] bed, and waits for the proxy to confirm it. Fails unless work resumed, no
/// acknowledged write was lost or applied twice, and no write reached a read-only node; the
/// error counts, per client, are the caller's to judge
/// ([`Allowance::check`](crate::tolerance::Allowance::check) with [`Promotion::confirmed_at`]).
pub async fn stop_and_promote_under_load(bed: &mut TestBed, clients: usize) -> Result<Promotion> {
    let endpoint = bed.endpoint();
    let new = format!("{}:{}", bed.pg().replica().host(), bed.pg().replica().port());
    let load = Load::start(LoadOptions::new(vec![endpoint.clone()], clients)).await?;
    let psycopg = PsycopgLoad::start(LoadOptions::new(vec![endpoint.clone()], PSYCOPG_CLIENTS)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ops_before = load.ops_ok();
    let t0 = Instant::now();
    bed.pg_mut().primary_mut().stop("fast")?;
    let stopped = t0.elapsed();
    bed.pg().replica().promote()?;
    let promoted = t0.elapsed();
    wait_for_primary(&endpoint, &new, Duration::from_secs(20)).await?;
    let confirmed = t0.elapsed();
    let confirmed_at = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ops_after = load.ops_ok();

    let direct_new = Endpoint::new(bed.pg().replica().host(), bed.pg().replica().port());
    let reports = [
        load.finish(&direct_new).await?,
        psycopg.finish(&direct_new).await?,
    ];
    let promotion = Promotion {
        reports,
        stopped,
        promoted,
        confirmed,
        confirmed_at,
    };
    eprintln!("{promotion}");
    ensure!(
        ops_after > ops_before + clients as u64,
        "work did not resume after the promotion: {ops_before} operations before, {ops_after} after\n{promotion}"
    );
    for report in &promotion.reports {
        ensure!(report.lost == 0, "acknowledged writes lost:\n{report}");
        ensure!(report.duplicated == 0, "writes applied twice:\n{report}");
        ensure!(
            report.errors_with("25006") == 0,
            "writes sent to a read-only node:\n{report}"
        );
    }
    Ok(promotion)
}
