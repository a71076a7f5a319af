//! Read routing through a planned Patroni switchover (three nodes, the shipped callbacks):
//! the write load sees no error and reads its own writes (the load counts stale reads);
//! read-only clients keep reading on a replica while writes wait for the new primary, so
//! their longest stall is measured against the physical switchover and reported.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use switchyard_tests::admin::{admin_rows, wait_for_primary};
use switchyard_tests::load::{Load, LoadOptions};
use switchyard_tests::patroni::{PatroniCluster, PatroniOptions};
use switchyard_tests::{describe_error, env, ports, skip_if_direct, Endpoint, Proxy, ProxyConfig};
use tokio::task::block_in_place;

/// Read-only clients beside the write load.
const READERS: usize = 2;

/// What one read-only client saw.
#[derive(Debug, Default)]
struct Reads {
    /// Reads per server port.
    ran: BTreeMap<u16, u64>,
    errors: Vec<String>,
    /// The longest time between two reads' answers.
    longest_stall: Duration,
}

/// A read-only client: reads the port of its server until `stop`.
async fn reader(endpoint: Endpoint, stop: Arc<AtomicBool>) -> Result<Reads> {
    let client = endpoint.connect_app().await?;
    let mut reads = Reads::default();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let answer = tokio::time::timeout(
            Duration::from_secs(30),
            client.query_one("SELECT inet_server_port()", &[]),
        )
        .await;
        match answer {
            Ok(Ok(row)) => *reads.ran.entry(row.get::<_, i32>(0) as u16).or_default() += 1,
            Ok(Err(e)) => reads.errors.push(describe_error(&e)),
            Err(_) => reads.errors.push("no answer within 30 s".into()),
        }
        reads.longest_stall = reads.longest_stall.max(last.elapsed());
        last = Instant::now();
    }
    Ok(reads)
}

/// `patronictl switchover` node0 → node1 of a three-node cluster with read routing on
/// (`replicas`, read-your-writes per session): the write load (4 clients, INSERT then
/// SELECT of the row) sees 0 errors, 0 lost or doubled writes and 0 stale reads; two
/// read-only clients see 0 errors. Measured and printed, not asserted: the read-only
/// clients' longest stall against the physical switchover (reads need not wait for the new
/// primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_with_read_routing_costs_no_client_an_error() -> Result<()> {
    skip_if_direct!();
    let port = ports::free_port()?;
    let script = env::workspace_dir().join("examples/patroni/switchyard-callback");
    let callback = format!(
        "{} --proxy 127.0.0.1:{port} --node 127.0.0.1:{{pg_port}} --user admin --password admin --budget 20",
        script.display()
    );
    let opts = PatroniOptions {
        nodes: 3,
        ..PatroniOptions::default()
    }
    .before_stop(&format!("{callback} before-stop"))
    .on_role_change(&callback);
    let cluster = block_in_place(|| PatroniCluster::start_with(opts))?;
    let mut cfg = ProxyConfig::for_patroni(&cluster)?
        .with_admin()
        .set("clusters.main.probe_user", "app")
        .set("clusters.main.probe_database", "app")
        .set("clusters.main.probe_interval", "100ms")
        .set("clusters.main.hold_timeout", "40s")
        .set("databases.app.read_routing", "replicas");
    cfg.proxy.listen = format!("127.0.0.1:{port}");
    let proxy = Proxy::start(cfg)?;
    let endpoint = Endpoint::new(&proxy.host(), proxy.port());
    let (old, new) = (cluster.nodes()[0].endpoint(), cluster.nodes()[1].endpoint());
    wait_for_primary(&endpoint, &old.addr(), Duration::from_secs(15)).await?;

    let load = Load::start(LoadOptions::new(vec![endpoint.clone()], 4)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|_| tokio::spawn(reader(endpoint.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let switchover = block_in_place(|| cluster.switchover(Some("node1")))?;
    wait_for_primary(&endpoint, &new.addr(), Duration::from_secs(20)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.finish(&new).await?;
    let timeline = cluster.timeline_since(switchover.started);
    println!("{report}\n{timeline}");
    let nodes = admin_rows(&endpoint, "SHOW NODES").await?;
    for n in &nodes {
        println!(
            "node {} ({}): {} reads, {} writes, skipped: {}",
            n["node"], n["role"], n["reads"], n["writes"], n["skipped"]
        );
    }
    let physical = timeline.physical();
    for (i, r) in readers.into_iter().enumerate() {
        let reads = r.await??;
        println!(
            "read-only client {i}: longest stall {:?} (physical switchover {physical:?}); reads per port {:?}",
            reads.longest_stall, reads.ran
        );
        ensure!(
            reads.errors.is_empty(),
            "read-only client {i} saw errors: {:?}",
            reads.errors
        );
    }
    ensure!(
        report.clean(),
        "the write load saw errors, or writes lost, doubled or read stale:\n{report}"
    );
    Ok(())
}
