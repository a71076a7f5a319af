//! The proxy follows the primary by probing, with no HA manager: after the primary stops and
//! the replica is promoted (`pg_promote`), clients go on through the same proxy, with errors
//! only for work in flight at the stop and no acknowledged write lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use switchyard_tests::admin::{admin_rows, wait_for_primary};
use switchyard_tests::load::{Load, LoadOptions};
use switchyard_tests::{skip_if_direct, ClusterOptions, Endpoint, TestBed};

/// `SHOW NODES` rows by node address.
async fn nodes(endpoint: &Endpoint) -> Result<HashMap<String, HashMap<String, String>>> {
    Ok(admin_rows(endpoint, "SHOW NODES")
        .await?
        .into_iter()
        .map(|r| (r["node"].clone(), r))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_without_an_ha_manager_moves_clients_to_the_new_primary() -> Result<()> {
    skip_if_direct!();
    const CLIENTS: usize = 4;
    let mut bed = TestBed::start_full(
        ClusterOptions {
            replica: true,
            ..Default::default()
        },
        |cfg, _| {
            Ok(cfg
                .pool_size(8)
                .with_admin()
                .set("clusters.main.probe_user", "app")
                .set("clusters.main.probe_database", "app")
                .set("clusters.main.probe_interval", "100ms")
                .set("clusters.main.hold_timeout", "20s"))
        },
    )?;
    let endpoint = bed.endpoint();
    let old = format!("{}:{}", bed.pg().primary().host(), bed.pg().primary().port());
    let new = format!("{}:{}", bed.pg().replica().host(), bed.pg().replica().port());
    wait_for_primary(&endpoint, &old, Duration::from_secs(10)).await?;
    let before = nodes(&endpoint).await?;
    ensure!(before[&new]["role"] == "replica", "{before:#?}");

    let load = Load::start(LoadOptions::new(vec![endpoint.clone()], CLIENTS)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ops_before = load.ops_ok();

    let t0 = Instant::now();
    bed.pg_mut().primary_mut().stop("fast")?;
    let stopped = t0.elapsed();
    bed.pg().replica().promote()?;
    let promoted = t0.elapsed();
    wait_for_primary(&endpoint, &new, Duration::from_secs(20)).await?;
    let confirmed = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ops_after = load.ops_ok();

    let direct_new = Endpoint::new(bed.pg().replica().host(), bed.pg().replica().port());
    let report = load.finish(&direct_new).await?;
    eprintln!(
        "{report}\nprimary stopped after {stopped:?}, replica writable after {promoted:?}, proxy confirmed it after {confirmed:?}"
    );
    ensure!(
        ops_after > ops_before + CLIENTS as u64,
        "work did not resume after the promotion: {ops_before} operations before, {ops_after} after\n{report}"
    );
    ensure!(report.lost == 0, "acknowledged writes lost:\n{report}");
    ensure!(report.duplicated == 0, "writes applied twice:\n{report}");
    ensure!(
        report.errors_with("25006") == 0,
        "writes sent to a read-only node:\n{report}"
    );
    ensure!(
        report.total_errors() <= CLIENTS as u64,
        "at most one error per client (its work in flight at the stop) was expected:\n{report}"
    );
    let after = nodes(&endpoint).await?;
    ensure!(after[&old]["state"] == "down", "{after:#?}");
    bed.ensure_proxy_alive()
}
