//! pgbench through the proxy in transaction mode: 32 clients share a pool of
//! 4 server connections, in each query protocol. Every transaction must
//! succeed and every one must have written its pgbench_history row (no lost
//! or duplicated writes), and the proxy must stay within its pool size: the most server
//! connections Postgres saw at once, sampled all through the run, is at most the pool size.
//!
//! The same runs with `workers = 1`, where the proxy uses tokio's single-threaded
//! scheduler instead of the multi-threaded one.
//!
//! `SWITCHYARD_PGBENCH_SECONDS` sets the length of each run (default 5).

use anyhow::{ensure, Result};
use switchyard_tests::peak::ServerPeak;
use switchyard_tests::{Length, PgResultExt, QueryMode, TestBed};

const CLIENTS: u32 = 32;
const POOL_SIZE: u32 = 4;

fn seconds() -> u32 {
    std::env::var("SWITCHYARD_PGBENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

async fn pgbench_through_pool(mode: QueryMode, workers: Option<i64>) -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| {
        let cfg = cfg.mode("transaction").pool_size(POOL_SIZE);
        match workers {
            Some(n) => cfg.set("proxy.workers", n),
            None => cfg,
        }
    })?;
    // Initialise directly: the subject is the benchmark run, not pgbench -i.
    bed.direct().pgbench("app", "app", "app").init(1)?;

    let peak = ServerPeak::start(&bed.direct(), "app", "app").await?;
    let result = bed
        .endpoint()
        .pgbench("app", "app", "app")
        .run_async(mode, CLIENTS, 2, Length::Seconds(seconds()))
        .await?;
    let peak = peak.finish().await?;
    bed.ensure_proxy_alive()?;
    ensure!(
        result.status_ok && result.failed == 0,
        "{}",
        result.output.describe(&format!(
            "pgbench -M {} -c {CLIENTS}: expected 0 failed transactions and exit 0, got {} failed",
            mode.as_str(),
            result.failed
        ))
    );
    ensure!(
        result.processed > 0,
        "pgbench -M {} processed no transactions",
        mode.as_str()
    );

    let admin = bed.direct().connect("postgres", "postgres", "app").await?;
    let history: i64 = admin
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .ctx("counting pgbench_history")?
        .get(0);
    ensure!(
        history as u64 == result.processed,
        "pgbench -M {} reported {} transactions but pgbench_history has {history} rows \
         (lost or duplicated writes)",
        mode.as_str(),
        result.processed
    );
    // Balances must agree: each transaction adds the same delta to one
    // account, one teller, one branch, and one history row.
    let sums = admin
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts), \
                    (SELECT sum(tbalance) FROM pgbench_tellers), \
                    (SELECT sum(bbalance) FROM pgbench_branches), \
                    (SELECT coalesce(sum(delta), 0) FROM pgbench_history)",
            &[],
        )
        .await
        .ctx("summing balances")?;
    let sums: Vec<i64> = (0..4).map(|i| sums.get(i)).collect();
    ensure!(
        sums.iter().all(|s| *s == sums[0]),
        "balances disagree (accounts, tellers, branches, history): {sums:?}"
    );

    println!(
        "pgbench -M {}: at most {} server connections for app/app at once ({} samples), pool size {POOL_SIZE}",
        mode.as_str(),
        peak.max,
        peak.samples
    );
    if !TestBed::direct_mode() {
        ensure!(
            peak.max <= i64::from(POOL_SIZE),
            "the proxy held {} server connections for app/app at once, pool size is {POOL_SIZE}",
            peak.max
        );
    }
    Ok(())
}

#[tokio::test]
async fn pgbench_simple_protocol() -> Result<()> {
    pgbench_through_pool(QueryMode::Simple, None).await
}

#[tokio::test]
async fn pgbench_extended_protocol() -> Result<()> {
    pgbench_through_pool(QueryMode::Extended, None).await
}

#[tokio::test]
async fn pgbench_prepared_statements() -> Result<()> {
    pgbench_through_pool(QueryMode::Prepared, None).await
}

#[tokio::test]
async fn pgbench_simple_protocol_single_worker() -> Result<()> {
    pgbench_through_pool(QueryMode::Simple, Some(1)).await
}

#[tokio::test]
async fn pgbench_prepared_statements_single_worker() -> Result<()> {
    pgbench_through_pool(QueryMode::Prepared, Some(1)).await
}
