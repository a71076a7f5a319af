//! A planned Patroni switchover (`patronictl switchover`, started outside the proxy) under
//! load through the proxy, with the shipped callback script (examples/patroni): the old
//! primary's `before_stop` pauses and drains the proxy, the proxy's probes confirm the new
//! primary and the pause lifts. Clients see a stall, not an error, and no acknowledged
//! write is lost.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patronictl_switchover_with_the_callbacks_gives_no_client_error() -> Result<()> {
    skip_if_direct!();
    const CLIENTS: usize = 4;
    let port = ports::free_port()?;
    let script = env::workspace_dir().join("examples/patroni/switchyard-callback");
    let callback = format!(
        "{} --proxy 127.0.0.1:{port} --node 127.0.0.1:{{pg_port}} --user admin --password admin --budget 20",
        script.display()
    );
    let opts = PatroniOptions::default()
        .before_stop(&format!("{callback} before-stop"))
        .on_role_change(&callback);
    let cluster = block_in_place(|| PatroniCluster::start_with(opts))?;
    let mut cfg = block_in_place(|| ProxyConfig::for_patroni(&cluster))?
        .with_admin()
        .set("clusters.main.probe_user", "app")
        .set("clusters.main.probe_database", "app")
        .set("clusters.main.probe_interval", "100ms")
        .set("clusters.main.hold_timeout", "20s");
    // The callbacks, configured before the cluster started, name this port.
    cfg.proxy.listen = format!("127.0.0.1:{port}");
    let proxy = block_in_place(|| Proxy::start(cfg))?;
    let endpoint = Endpoint::new(&proxy.host(), proxy.port());
    let old = cluster.nodes()[0].endpoint();
    let new = cluster.nodes()[1].endpoint();
    wait_for_primary(
        &endpoint,
        &format!("{}:{}", old.host, old.port),
        Duration::from_secs(15),
    )
    .await?;

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
