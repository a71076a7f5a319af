//! Real-world drivers through the proxy in transaction mode, each using
//! server-side prepared statements the way it does by default, with more
//! concurrent connections than server connections so that statements are
//! prepared on one server and used on another:
//!
//! * psycopg 3: auto-prepares a query after 5 executions (`prepare_threshold`);
//! * node-postgres: named statements (`{name, text, values}`), parsed once per
//!   connection and then only bound;
//! * pgjdbc: `prepareThreshold=5`, then named `S_n` statements cached per
//!   connection.
//!
//! Each script checks every result and the committed row count, and reports
//! `ok`/`errors`; the test requires zero errors.

use anyhow::{ensure, Result};
use switchyard_tests::{Driver, TestBed};

const CONCURRENCY: u32 = 8;
const TRANSACTIONS: u32 = 60;
const POOL_SIZE: u32 = 3;

async fn driver_through_pool(driver: Driver) -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(POOL_SIZE))?;
    let target = bed.endpoint().client_target("app", "app", "app");
    let report = driver.run_async(&target, CONCURRENCY, TRANSACTIONS).await?;
    bed.ensure_proxy_alive()?;
    ensure!(
        report.errors == 0 && report.ok == u64::from(CONCURRENCY * TRANSACTIONS),
        "{}",
        report.output.describe(&format!(
            "{driver:?}: expected {} committed transactions and 0 errors, got {} ok and {} errors",
            CONCURRENCY * TRANSACTIONS,
            report.ok,
            report.errors
        ))
    );
    Ok(())
}

#[tokio::test]
async fn psycopg3_auto_prepared_statements() -> Result<()> {
    driver_through_pool(Driver::Psycopg).await
}

#[tokio::test]
async fn node_postgres_named_statements() -> Result<()> {
    driver_through_pool(Driver::NodePg).await
}

#[tokio::test]
async fn pgjdbc_server_prepared_statements() -> Result<()> {
    driver_through_pool(Driver::Jdbc).await
}

/// psycopg 3 preparing every statement at its first use (`prepare_threshold=0`), 8
/// connections over a pool of 3, 60 iterations each: every other iteration also rolls a
/// transaction back, after which psycopg drops its prepared statements with
/// `DEALLOCATE ALL` and prepares them again under new names. Outside pipeline mode that
/// `DEALLOCATE ALL` is a simple query the proxy answers for the client; in pipeline mode
/// (every third iteration) it is an extended-protocol statement that reaches the server
/// and drops the proxy's statements there while other connections use that server.
/// Checks that all 480 iterations succeed, every result checked, with 0 errors and all
/// their rows committed.
#[tokio::test]
async fn psycopg3_deallocate_all_after_rollback_in_and_out_of_pipelines() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(POOL_SIZE))?;
    let target = bed.endpoint().client_target("app", "app", "app");
    let report = tokio::task::spawn_blocking(move || {
        Driver::Psycopg.run_with(&target, CONCURRENCY, TRANSACTIONS, &["--resets", "true"])
    })
    .await??;
    bed.ensure_proxy_alive()?;
    ensure!(
        report.errors == 0 && report.ok == u64::from(CONCURRENCY * TRANSACTIONS),
        "{}",
        report.output.describe(&format!(
            "psycopg with DEALLOCATE ALL resets: expected {} iterations and 0 errors, got {} ok and {} errors",
            CONCURRENCY * TRANSACTIONS,
            report.ok,
            report.errors
        ))
    );
    Ok(())
}
