//! Planned events of a Patroni cluster under load through the proxy, with the shipped
//! callback script (examples/patroni): a switchover started outside the proxy
//! (`patronictl switchover`) and a rolling restart. The primary's `before_stop` pauses and
//! drains the proxy; the proxy's probes confirm the primary again and the pause lifts.
//! Clients see a stall, not an error, and no acknowledged write is lost.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use switchyard_tests::load::{Load, LoadOptions};
use switchyard_tests::patroni::{PatroniCluster, PatroniOptions};
use switchyard_tests::plugin::admin_rows;
use switchyard_tests::{env, ports, skip_if_direct, Endpoint, Proxy, ProxyConfig};
use tokio::task::block_in_place;

async fn wait_for_primary(endpoint: &Endpoint, node: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let rows = admin_rows(endpoint, "SHOW NODES").await?;
        if rows.iter().any(|r| r["node"] == node && r["primary"] == "true") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{node} not the proxy's primary within {limit:?}: {rows:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const CLIENTS: usize = 4;

/// A Patroni cluster whose nodes run the shipped callback against a proxy, and that proxy
/// (probing every 100 ms, holding up to 40 s).
fn cluster_behind_proxy(synchronous: bool) -> Result<(PatroniCluster, Proxy, Endpoint)> {
    let port = ports::free_port()?;
    let script = env::workspace_dir().join("examples/patroni/switchyard-callback");
    let callback = format!(
        "{} --proxy 127.0.0.1:{port} --node 127.0.0.1:{{pg_port}} --user admin --password admin --budget 20",
        script.display()
    );
    let opts = PatroniOptions::default()
        .before_stop(&format!("{callback} before-stop"))
        .on_role_change(&callback)
        .synchronous(synchronous);
    let cluster = PatroniCluster::start_with(opts)?;
    let mut cfg = ProxyConfig::for_patroni(&cluster)?
        .with_admin()
        .set("clusters.main.probe_user", "app")
        .set("clusters.main.probe_database", "app")
        .set("clusters.main.probe_interval", "100ms")
        // Longer than Patroni's ttl (20 s): after a crash, transactions wait for the election.
        .set("clusters.main.hold_timeout", "40s");
    // The callbacks, configured before the cluster started, name this port.
    cfg.proxy.listen = format!("127.0.0.1:{port}");
    let proxy = Proxy::start(cfg)?;
    let endpoint = Endpoint::new(&proxy.host(), proxy.port());
    Ok((cluster, proxy, endpoint))
}

fn addr(e: &Endpoint) -> String {
    format!("{}:{}", e.host, e.port)
}

async fn switchover_without_client_errors(synchronous: bool) -> Result<()> {
    let (cluster, proxy, endpoint) = block_in_place(|| cluster_behind_proxy(synchronous))?;
    let old = cluster.nodes()[0].endpoint();
    let new = cluster.nodes()[1].endpoint();
    wait_for_primary(&endpoint, &addr(&old), Duration::from_secs(15)).await?;

    let load = Load::start(LoadOptions::new(vec![endpoint.clone()], CLIENTS)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = block_in_place(|| cluster.switchover(Some("node1")))?;
    wait_for_primary(
        &endpoint,
        &format!("{}:{}", new.host, new.port),
        Duration::from_secs(20),
    )
    .await?;
    let before = load.ops_ok();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = load.ops_ok();
    let report = load.finish(&new).await?;
    let timeline = cluster.timeline_since(s.started);
    eprintln!("{report}\n{timeline}\nproxy log:\n{}", proxy.log_tail(40));
    anyhow::ensure!(after > before, "no work after the switchover:\n{report}");
    anyhow::ensure!(
        report.lost == 0 && report.duplicated == 0,
        "writes lost or doubled:\n{report}"
    );
    anyhow::ensure!(
        report.total_errors() == 0,
        "a planned switchover must cost clients no error:\n{report}\nproxy log:\n{}",
        proxy.log_tail(80)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patronictl_switchover_with_the_callbacks_gives_no_client_error() -> Result<()> {
    skip_if_direct!();
    switchover_without_client_errors(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_in_synchronous_mode() -> Result<()> {
    skip_if_direct!();
    switchover_without_client_errors(true).await
}

/// The proxy's own `SWITCHOVER` (which holds and drains, then drives Patroni's REST API)
/// under load: no client error, no lost write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_switchover_gives_no_client_error() -> Result<()> {
    skip_if_direct!();
    let (cluster, proxy, endpoint) = block_in_place(|| cluster_behind_proxy(false))?;
    let old = cluster.nodes()[0].endpoint();
    let new = cluster.nodes()[1].endpoint();
    wait_for_primary(&endpoint, &addr(&old), Duration::from_secs(15)).await?;
    let load = Load::start(LoadOptions::new(vec![endpoint.clone()], CLIENTS)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = std::time::SystemTime::now();
    let rows = admin_rows(&endpoint, &format!("SWITCHOVER {}", addr(&new))).await?;
    anyhow::ensure!(
        rows.first().is_some_and(|r| r["primary"] == addr(&new)),
        "SWITCHOVER answered {rows:?}"
    );
    let before = load.ops_ok();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = load.ops_ok();
    let report = load.finish(&new).await?;
    eprintln!(
        "{report}\n{}\nproxy log:\n{}",
        cluster.timeline_since(started),
        proxy.log_tail(30)
    );
    anyhow::ensure!(after > before, "no work after the switchover:\n{report}");
    anyhow::ensure!(
        report.lost == 0 && report.duplicated == 0,
        "writes lost or doubled:\n{report}"
    );
    anyhow::ensure!(
        report.total_errors() == 0,
        "the proxy's switchover must cost clients no error:\n{report}"
    );
    Ok(())
}

/// A rolling restart through Patroni's REST API, replica first, then the primary (which
/// stays primary): the callback pauses the proxy before the primary stops, the pause lifts
/// when the probes see it back, and clients see no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_gives_no_client_error() -> Result<()> {
    skip_if_direct!();
    let (cluster, proxy, endpoint) = block_in_place(|| cluster_behind_proxy(false))?;
    let primary = cluster.nodes()[0].endpoint();
    wait_for_primary(&endpoint, &addr(&primary), Duration::from_secs(15)).await?;
    let load = Load::start(LoadOptions::new(vec![endpoint.clone()], CLIENTS)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let replica_restart = block_in_place(|| cluster.restart("node1"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let primary_restart = block_in_place(|| cluster.restart("node0"))?;
    wait_for_primary(&endpoint, &addr(&primary), Duration::from_secs(20)).await?;
    let before = load.ops_ok();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = load.ops_ok();
    let report = load.finish(&primary).await?;
    eprintln!(
        "{report}\nreplica restart took {replica_restart:?}, primary restart {primary_restart:?}\nproxy log:\n{}",
        proxy.log_tail(30)
    );
    anyhow::ensure!(after > before, "no work after the restarts:\n{report}");
    anyhow::ensure!(
        report.lost == 0 && report.duplicated == 0,
        "writes lost or doubled:\n{report}"
    );
    anyhow::ensure!(
        report.total_errors() == 0,
        "a rolling restart must cost clients no error:\n{report}\nproxy log:\n{}",
        proxy.log_tail(80)
    );
    Ok(())
}

/// The primary's node dies (SIGKILL of its Patroni, postmaster and backends) in
/// synchronous mode: errors only for work in flight at the crash (at most one per client),
/// never a write sent to a read-only node, no acknowledged write lost, and work resumes
/// once Patroni has elected the new primary (after `ttl`, 20 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_primary_costs_only_the_work_in_flight() -> Result<()> {
    skip_if_direct!();
    let (mut cluster, proxy, endpoint) = block_in_place(|| cluster_behind_proxy(true))?;
    let old = cluster.nodes()[0].endpoint();
    let new = cluster.nodes()[1].endpoint();
    wait_for_primary(&endpoint, &addr(&old), Duration::from_secs(15)).await?;
    let load = Load::start(LoadOptions::new(vec![endpoint.clone()], CLIENTS)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = block_in_place(|| cluster.kill_node("node0"))?;
    wait_for_primary(&endpoint, &addr(&new), Duration::from_secs(45)).await?;
    let elected = killed.at.elapsed().unwrap_or_default();
    let before = load.ops_ok();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = load.ops_ok();
    let report = load.finish(&new).await?;
    eprintln!(
        "{report}\nnew primary confirmed by the proxy {elected:?} after the kill\nproxy log:\n{}",
        proxy.log_tail(30)
    );
    anyhow::ensure!(after > before, "no work after the failover:\n{report}");
    anyhow::ensure!(
        report.lost == 0 && report.duplicated == 0,
        "writes lost or doubled:\n{report}"
    );
    anyhow::ensure!(
        report.errors_with("25006") == 0,
        "a write reached a read-only node:\n{report}"
    );
    anyhow::ensure!(
        report.total_errors() <= CLIENTS as u64,
        "at most one error per client (its work in flight at the crash) was expected:\n{report}"
    );
    Ok(())
}
