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
