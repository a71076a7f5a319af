//! Self-tests of the Patroni test bed (tests/src/patroni.rs, etcd.rs,
//! load.rs), without the proxy: clients connect straight to PostgreSQL,
//! listing both nodes with `target_session_attrs=read-write` so they follow
//! the leader. If these fail, the proxy's failover tests mean nothing.
//!
//! Timings (cluster start, switchover, failover) are printed, not asserted,
//! except that a killed leader is replaced within `ttl` + 15 s.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_tests::load::{Load, LoadOptions, PsycopgLoad};
use switchyard_tests::patroni::{PatroniCluster, PatroniOptions, MIN_TTL};
use switchyard_tests::{env, scratch, ProxyConfig};
use tokio::task::block_in_place;

/// A file the callbacks (run as the `postgres` user) can append to.
fn callback_log() -> Result<std::path::PathBuf> {
    let dir = scratch::fresh_dir("callbacks")?;
    env::set_mode(&dir, 0o777)?;
    Ok(dir.join("callbacks.log"))
}

/// Wait until `file` has a line containing every one of `needles`.
fn wait_for_line(file: &std::path::Path, needles: &[&str], timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return Ok(line.to_owned());
        }
        ensure!(
            Instant::now() < deadline,
            "no line with {needles:?} in {} within {timeout:?}; it holds:\n{text}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_starts_with_streaming_replica_and_serves_load() -> Result<()> {
    let started = Instant::now();
    let cluster = block_in_place(PatroniCluster::start)?;
    eprintln!(
        "Patroni cluster (2 nodes, etcd) started in {:.2?}",
        started.elapsed()
    );

    let state = block_in_place(|| cluster.cluster_state())?;
    let leader = state.leader().context("no leader")?;
    ensure!(
        leader.name == "node0" && leader.state == "running",
        "{}",
        state.raw
    );
    let replica = state.member("node1").context("no node1")?;
    ensure!(
        replica.state == "streaming",
        "node1 is not streaming: {}",
        state.raw
    );
    ensure!(block_in_place(|| cluster.replica())?.name() == "node1");

    // The proxy configuration mirrors the cluster's roles.
    let cfg = block_in_place(|| ProxyConfig::for_patroni(&cluster))?;
    let nodes = &cfg.clusters["main"].nodes;
    ensure!(nodes.len() == 2 && nodes[0].role == "primary" && nodes[1].role == "replica");
    ensure!(nodes[0].port == cluster.nodes()[0].port());

    // The application role from post_bootstrap works over TCP with SCRAM.
    let app = cluster.nodes()[0].endpoint().connect_app().await?;
    app.simple_query("SELECT 1").await?;
    drop(app);

    let opts = LoadOptions::new(cluster.endpoints(), 4);
    let load = Load::start(opts.clone()).await?;
    let py = PsycopgLoad::start(LoadOptions { clients: 2, ..opts }).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let primary = block_in_place(|| cluster.wait_for_leader(Duration::from_secs(10)))?.endpoint();
    let report = load.finish(&primary).await?;
    let py_report = py.finish(&primary).await?;
    eprintln!("{report}\n{py_report}");
    for r in [&report, &py_report] {
        ensure!(r.total_errors() == 0, "errors without any event:\n{r}");
        ensure!(
            r.lost == 0 && r.duplicated == 0 && r.unacknowledged_present == 0,
            "{r}"
        );
        ensure!(r.inserts_acked > 50, "too little work done:\n{r}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_moves_the_leader_and_runs_the_callbacks() -> Result<()> {
    let log = callback_log()?;
    let log_s = log.display().to_string();
    let opts = PatroniOptions::default()
        .before_stop(&format!(
            r#"sh -c 'echo "$(date +%s.%N) before_stop {{node}} args=$#" >> {log_s}'"#
        ))
        .on_role_change(&format!(
            r#"sh -c 'echo "$(date +%s.%N) on_role_change {{node}} args=$# $*" >> {log_s}' callback"#
        ));
    let started = Instant::now();
    let cluster = block_in_place(|| PatroniCluster::start_with(opts))?;
    eprintln!("Patroni cluster started in {:.2?}", started.elapsed());
    // Starting ran on_role_change on node1 (as replica); only what follows counts.
    std::fs::write(&log, "")?;
    env::set_mode(&log, 0o666)?;

    let load = Load::start(LoadOptions::new(cluster.endpoints(), 4)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = block_in_place(|| cluster.switchover(Some("node1")))?;
    eprintln!(
        "patronictl switchover {} -> {}: command {:.2?}, writable after {:.2?}, healthy after {:.2?}",
        s.from, s.to, s.command, s.writable, s.healthy
    );
    ensure!(s.from == "node0" && s.to == "node1");
    ensure!(block_in_place(|| cluster.leader())?.name() == "node1");
    let timeline = cluster.timeline_since(s.started);
    eprintln!("{timeline}");
    ensure!(
        timeline.physical().is_some(),
        "switchover steps missing from the logs:\n{timeline}"
    );

    // before_stop ran on the old leader with no arguments; on_role_change
    // got (action, role, scope) on both nodes.
    let wait = Duration::from_secs(15);
    let before = block_in_place(|| wait_for_line(&log, &["before_stop node0 args=0"], wait))?;
    let promoted = block_in_place(|| {
        wait_for_line(
            &log,
            &[
                "on_role_change node1 args=3 on_role_change primary",
                cluster.scope(),
            ],
            wait,
        )
    })?;
    let demoted = block_in_place(|| {
        wait_for_line(
            &log,
            &[
                "on_role_change node0 args=3 on_role_change replica",
                cluster.scope(),
            ],
            wait,
        )
    })?;
    let at = |line: &str| line.split_whitespace().next().and_then(|t| t.parse::<f64>().ok());
    ensure!(
        at(&before) < at(&promoted),
        "before_stop ran after the promotion:\n{before}\n{promoted}"
    );
    ensure!(
        at(&before) < at(&demoted),
        "before_stop ran after the demotion:\n{before}\n{demoted}"
    );
    eprintln!("callbacks:\n{}", std::fs::read_to_string(&log)?);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let primary = cluster.node("node1")?.endpoint();
    let report = load.finish(&primary).await?;
    eprintln!("load across the switchover (direct multi-host, no proxy):\n{report}");
    ensure!(report.lost == 0 && report.duplicated == 0, "{report}");

    // And back through the REST API.
    let s = block_in_place(|| cluster.switchover_rest(Some("node0")))?;
    eprintln!(
        "REST switchover {} -> {}: answered after {:.2?}, writable after {:.2?}",
        s.from, s.to, s.command, s.writable
    );
    ensure!(s.to == "node0" && block_in_place(|| cluster.leader())?.name() == "node0");
    block_in_place(|| wait_for_line(&log, &["before_stop node1 args=0"], wait))?;
    eprintln!("{}", cluster.timeline_since(s.started));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_within_ttl() -> Result<()> {
    let started = Instant::now();
    let mut cluster =
        block_in_place(|| PatroniCluster::start_with(PatroniOptions::default().synchronous(true)))?;
    eprintln!(
        "Patroni cluster (synchronous_mode) started in {:.2?}",
        started.elapsed()
    );
    let state = block_in_place(|| cluster.cluster_state())?;
    ensure!(
        state.member("node1").is_some_and(|m| m.role == "sync_standby"),
        "node1 is not the synchronous standby: {}",
        state.raw
    );

    let load = Load::start(LoadOptions::new(cluster.endpoints(), 4)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = block_in_place(|| cluster.kill_node("node0"))?;
    let t = Instant::now();
    eprintln!(
        "killed node0: Patroni {:?}, postmaster {:?} and {} children",
        killed.patroni_pid,
        killed.postmaster_pid,
        killed.children.len()
    );
    ensure!(killed.postmaster_pid.is_some() && !killed.children.is_empty());
    let limit = Duration::from_secs(u64::from(MIN_TTL) + 15);
    let new = block_in_place(|| cluster.wait_for_leader_except(Some("node0"), limit))?;
    let elapsed = t.elapsed();
    ensure!(new.name() == "node1");
    eprintln!("node1 took writes {elapsed:.2?} after the kill (ttl {MIN_TTL} s)");
    eprintln!("{}", cluster.timeline_since(killed.at));

    // Work resumes on the new leader.
    let before = load.ops_ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while load.ops_ok() < before + 20 {
        ensure!(Instant::now() < deadline, "the load did not resume on node1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let primary = cluster.node("node1")?.endpoint();
    let report = load.finish(&primary).await?;
    eprintln!("load across the crash (direct multi-host, no proxy):\n{report}");
    // Synchronous mode: what was acknowledged had reached node1.
    ensure!(report.lost == 0 && report.duplicated == 0, "{report}");
    ensure!(report.errors_with("25006") == 0, "{report}");

    // The dead node rejoins as a replica.
    let t = Instant::now();
    block_in_place(|| cluster.start_node("node0"))?;
    eprintln!("node0 rejoined as a replica in {:.2?}", t.elapsed());
    ensure!(block_in_place(|| cluster.leader())?.name() == "node1");
    Ok(())
}
