//! pgbench through the proxy in transaction mode: 32 clients share a pool of
//! 4 server connections, in each query protocol. Every transaction must
//! succeed and every one must have written its pgbench_history row (no lost
//! or duplicated writes), and the proxy must stay within its pool size: the most server
//! connections Postgres saw at once, sampled all through the run, is at most the pool size.
//!
//! The same runs with `workers = 2`, where the proxy uses tokio's multi-threaded
//! (work-stealing) scheduler instead of the single-threaded one of the default.
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
async fn pgbench_simple_protocol_two_workers() -> Result<()> {
    pgbench_through_pool(QueryMode::Simple, Some(2)).await
}

#[tokio::test]
async fn pgbench_prepared_statements_two_workers() -> Result<()> {
    pgbench_through_pool(QueryMode::Prepared, Some(2)).await
}

/// The pool's `max_prepared_statements`, set low for the test below.
const STATEMENT_CAP: i64 = 4;

/// A pgbench script of 16 distinct statements (a transaction block of six SELECTs, six
/// more SELECTs, and an INSERT into `prepared_log`), four times `STATEMENT_CAP`.
fn many_statements_script() -> String {
    let mut script = String::from("\\set a random(1, 1000)\nBEGIN;\n");
    for i in 1..=12 {
        script.push_str(&format!("SELECT :a + {i};\n"));
        if i == 6 {
            script.push_str("COMMIT;\n");
        }
    }
    script.push_str("INSERT INTO prepared_log VALUES (:a);\n");
    script
}

/// `pgbench -M prepared` with a custom script of 16 distinct statements, 8 clients, 50
/// transactions each, through a transaction pool of 2 servers whose
/// `max_prepared_statements` is 4: each client prepares every statement once and then
/// only binds it, while each server can keep only 4 of them prepared. Checks that
/// pgbench exits 0 with 0 failed transactions and all 400 processed, that
/// `prepared_log` has exactly 400 rows, and that neither server holds more than 4
/// prepared statements afterwards, all of them the proxy's `sy_<n>` (`pg_prepared_statements`,
/// both servers held at once). One pgbench thread per client: pgbench prepares each
/// statement synchronously at its first use, and a thread blocked there while another of
/// its clients holds a server in a transaction would wait for itself.
/// Before the fix, a client's 5th statement made the proxy forget its least recently
/// used one, whose next Bind failed with 26000 and aborted the pgbench client.
#[tokio::test]
async fn pgbench_prepared_with_more_statements_than_max_prepared_statements() -> Result<()> {
    switchyard_tests::skip_if_direct!(); // the cap is the proxy's
    let mut bed = TestBed::start_with(|cfg| {
        cfg.mode("transaction")
            .pool_size(2)
            .set("pool.max_prepared_statements", STATEMENT_CAP)
    })?;
    bed.direct()
        .connect_app()
        .await?
        .batch_execute("CREATE TABLE prepared_log (a int)")
        .await
        .ctx("creating prepared_log")?;
    let dir = switchyard_tests::scratch::fresh_dir("pgbench-script")?;
    let script = dir.join("many_statements.sql");
    std::fs::write(&script, many_statements_script())?;
    let result = bed
        .endpoint()
        .pgbench("app", "app", "app")
        .script(&script)
        .run_async(QueryMode::Prepared, 8, 8, Length::Transactions(50))
        .await?;
    bed.ensure_proxy_alive()?;
    ensure!(
        result.status_ok && result.failed == 0 && result.processed == 400,
        "{}",
        result.output.describe(&format!(
            "pgbench -M prepared, 16 statements, max_prepared_statements {STATEMENT_CAP}: expected \
             400 transactions, 0 failed and exit 0; got {} processed, {} failed",
            result.processed, result.failed
        ))
    );
    let rows: i64 = bed
        .direct()
        .connect_app()
        .await?
        .query_one("SELECT count(*) FROM prepared_log", &[])
        .await
        .ctx("counting prepared_log")?
        .get(0);
    ensure!(rows == 400, "prepared_log has {rows} rows, expected 400");
    let ep = bed.endpoint();
    let (a, b) = (ep.connect_app().await?, ep.connect_app().await?);
    a.batch_execute("BEGIN").await.ctx("BEGIN")?;
    b.batch_execute("BEGIN").await.ctx("BEGIN")?;
    for (name, c) in [("a", &a), ("b", &b)] {
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE name LIKE 'sy\\_%'), count(*) FROM pg_prepared_statements",
                &[],
            )
            .await
            .ctx("pg_prepared_statements")?;
        let (proxy, all): (i64, i64) = (row.get(0), row.get(1));
        println!("server of client {name}: {proxy} of the proxy's statements prepared, {all} in all");
        ensure!(
            proxy <= STATEMENT_CAP && all == proxy,
            "client {name}'s server holds {all} prepared statements, {proxy} of them the proxy's \
             (sy_n); expected at most {STATEMENT_CAP}, all the proxy's"
        );
        c.batch_execute("COMMIT").await.ctx("COMMIT")?;
    }
    println!(
        "pgbench -M prepared, 16 statements over a cap of {STATEMENT_CAP}: {:.0} tps",
        result.tps
    );
    Ok(())
}
