//! `switchyard-soak`: the soak run of `scripts/soak`. The demo's setup
//! ([`switchyard_tests::shipped`]: Patroni in synchronous mode with the callbacks, the proxy
//! with the bundled plugins and read routing) on free ports, under mixed load for a while:
//! tokio-postgres clients (named prepared statements) and psycopg 3 clients (unnamed
//! extended-protocol statements) alternating INSERT and SELECT ([`switchyard_tests::load`]),
//! and `pgbench -S -M simple` in 30 s rounds. A RELOAD every 30 s and one `patronictl
//! switchover` half-way.
//!
//! Every 10 s a progress line on stderr: time, operations, the proxy's resident memory.
//! At the end: errors by SQLSTATE per driver, failed pgbench transactions, lost or doubled
//! writes, and the proxy's memory after the first tenth of the run (warm) against the end.
//! Exit status 0 when no client saw an error and no acknowledged write was lost; 1 otherwise;
//! 2 if the run could not be set up.
//!
//! Settings (environment): `SOAK_SECONDS` (default 600), `SOAK_CLIENTS` (tokio-postgres
//! clients, default 6; psycopg gets a third as many, at least 1), `SOAK_PGBENCH_CLIENTS`
//! (default 4).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use switchyard_tests::admin::{admin_rows, wait_for_primary};
use switchyard_tests::load::{Load, LoadOptions, PsycopgLoad};
use switchyard_tests::tools::{Length, Pgbench, QueryMode};
use switchyard_tests::{roles, shipped, Endpoint};

const KIB: f64 = 1024.0;

fn setting(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn main() -> ExitCode {
    // The soak runs for minutes by design: the test bed's per-test deadline must not end it.
    switchyard_tests::deadline::disable();
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool> {
    let seconds = setting("SOAK_SECONDS", 600)?;
    let clients = setting("SOAK_CLIENTS", 6)? as usize;
    let pgbench_clients = setting("SOAK_PGBENCH_CLIENTS", 4)? as u32;
    let length = Duration::from_secs(seconds);
    eprintln!(
        "==> soak: starting Patroni (synchronous mode, callbacks) and the proxy with the bundled plugins"
    );
    let (cluster, proxy) = shipped::start_on_free_ports(|cfg| cfg)?;
    let pid = proxy.pid().context("the proxy has no pid")?;
    let endpoint = Endpoint::new(&proxy.host(), proxy.port());
    let leader = cluster.leader()?.endpoint();
    let (user, password) = roles::APP;
    Pgbench::new(&leader.host, leader.port, user, password, roles::APP_DB).init(1)?;
    let pgbench = Pgbench::new(
        &endpoint.host,
        endpoint.port,
        roles::APP.0,
        roles::APP.1,
        roles::APP_DB,
    )
    .select_only();

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        wait_for_primary(&endpoint, &leader.addr(), Duration::from_secs(15)).await?;
        let load = Load::start(LoadOptions::new(vec![endpoint.clone()], clients)).await?;
        let psycopg = PsycopgLoad::start(LoadOptions::new(vec![endpoint.clone()], (clients / 3).max(1))).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let bench = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut rounds = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let round = pgbench
                        .run_async(QueryMode::Simple, pgbench_clients, 1, Length::Seconds(30))
                        .await;
                    let failed = round.is_err();
                    rounds.push(round);
                    if failed {
                        break;
                    }
                }
                rounds
            })
        };

        let started = Instant::now();
        let mut memory = Vec::new();
        let mut switched = false;
        let mut reloads = 0;
        let mut next_reload = Duration::from_secs(30);
        while started.elapsed() < length {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let now = started.elapsed();
            let rss = switchyard_tests::proxy::resident_memory(pid)?.now;
            memory.push((now, rss));
            eprintln!(
                "==> soak: {:>4} s: {} load operations, proxy resident memory {:.0} KiB",
                now.as_secs(),
                load.ops_ok(),
                rss as f64 / KIB
            );
            if now >= next_reload {
                admin_rows(&endpoint, "RELOAD").await?;
                reloads += 1;
                next_reload += Duration::from_secs(30);
            }
            if !switched && now >= length / 2 {
                switched = true;
                let to = cluster.replica()?.name().to_owned();
                let s = tokio::task::block_in_place(|| cluster.switchover(Some(&to)))?;
                eprintln!("==> soak: switched over {} -> {} ({:?})", s.from, s.to, s.command);
            }
        }
        stop.store(true, Ordering::SeqCst);
        let primary = cluster.leader()?.endpoint();
        let reports = [load.finish(&primary).await?, psycopg.finish(&primary).await?];
        let rounds = bench.await?;

        println!("\nsoak: {} s, {reloads} RELOADs, one switchover", length.as_secs());
        let mut clean = true;
        for r in &reports {
            println!("{r}");
            clean &= r.total_errors() == 0 && r.lost == 0 && r.duplicated == 0;
        }
        let (mut processed, mut failed) = (0, 0);
        for round in rounds {
            match round {
                Ok(r) => {
                    processed += r.processed;
                    failed += r.failed;
                    clean &= r.status_ok;
                }
                Err(e) => {
                    println!("pgbench round failed: {e:#}");
                    clean = false;
                }
            }
        }
        clean &= failed == 0;
        println!("pgbench -S -M simple, {pgbench_clients} clients: {processed} transactions, {failed} failed");
        let warm = memory
            .iter()
            .find(|(t, _)| *t >= length / 10)
            .or(memory.first())
            .map_or(0, |m| m.1);
        let (end, peak) = (
            memory.last().map_or(0, |m| m.1),
            memory.iter().map(|m| m.1).max().unwrap_or(0),
        );
        println!(
            "proxy resident memory: {:.0} KiB warm (after {} s), {:.0} KiB at the end ({:+.1} %), peak {:.0} KiB",
            warm as f64 / KIB,
            (length / 10).as_secs(),
            end as f64 / KIB,
            (end as f64 / warm.max(1) as f64 - 1.0) * 100.0,
            peak as f64 / KIB
        );
        println!("soak: {}", if clean { "PASS (no client error, no lost write)" } else { "FAIL" });
        Ok(clean)
    })
}
