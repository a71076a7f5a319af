//! `PAUSE` and `RESUME` on the admin console: a pause waits for running transactions to
//! finish and holds new ones without an error; `RESUME` lets them go on; a pause nobody
//! lifts lifts itself after the cluster's `hold_timeout`. `RECONNECT` replaces servers
//! at transaction boundaries.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_tests::{skip_if_direct, PgResultExt, TestBed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_drains_and_holds_and_resume_releases() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| {
        cfg.pool_size(4)
            .with_admin()
            .set("clusters.main.hold_timeout", "60s")
    })?;
    let endpoint = bed.endpoint();
    let running = endpoint.connect_app().await?;
    running
        .batch_execute("BEGIN; SELECT 1")
        .await
        .ctx("open transaction")?;

    let admin = endpoint.connect("admin", "admin", "switchyard").await?;
    let pause = tokio::spawn(async move { admin.simple_query("PAUSE app").await.map(|_| Instant::now()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        !pause.is_finished(),
        "PAUSE answered while a transaction was still running"
    );

    let held = endpoint.connect_app().await?;
    let query = tokio::spawn(async move {
        let row = held.query_one("SELECT 42", &[]).await?;
        Ok::<_, tokio_postgres::Error>((row.get::<_, i32>(0), Instant::now()))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(!query.is_finished(), "a new transaction ran during PAUSE");

    running
        .batch_execute("COMMIT")
        .await
        .ctx("the running transaction commits")?;
    let paused_at = tokio::time::timeout(Duration::from_secs(10), pause)
        .await
        .context("PAUSE did not answer after the running transaction ended")??
        .ctx("PAUSE")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(!query.is_finished(), "a new transaction ran before RESUME");

    let admin2 = endpoint.connect("admin", "admin", "switchyard").await?;
    admin2.simple_query("RESUME app").await.ctx("RESUME")?;
    let (value, done_at) = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .context("the held query did not run after RESUME")??
        .ctx("held query")?;
    ensure!(value == 42, "held query returned {value}");
    eprintln!("held for {:?} after PAUSE answered", done_at - paused_at);
    Ok(())
}

#[tokio::test]
async fn a_pause_without_resume_lifts_after_hold_timeout() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.with_admin().set("clusters.main.hold_timeout", "1s"))?;
    let endpoint = bed.endpoint();
    let client = endpoint.connect_app().await?;
    client.batch_execute("SELECT 1").await.ctx("warm up")?;
    let admin = endpoint.connect("admin", "admin", "switchyard").await?;
    admin.simple_query("PAUSE").await.ctx("PAUSE")?;
    let started = Instant::now();
    let one: i32 = client.query_one("SELECT 1", &[]).await.ctx("held query")?.get(0);
    let waited = started.elapsed();
    ensure!(one == 1);
    ensure!(
        waited >= Duration::from_millis(800),
        "the query should have been held until the pause expired, ran after {waited:?}"
    );
    let err = admin.simple_query("PAUSE nosuchdb").await;
    switchyard_tests::expect_sqlstate(err, &["3D000"], "PAUSE of an unknown database")?;
    Ok(())
}

/// `RECONNECT`: the next transaction runs on a new server connection, and a transaction
/// running during the command finishes on its own server first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replaces_servers_at_transaction_boundaries() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.pool_size(1).with_admin())?;
    let endpoint = bed.endpoint();
    let client = endpoint.connect_app().await?;
    let pid = |row: tokio_postgres::Row| row.get::<_, i32>(0);
    let before = pid(client.query_one("SELECT pg_backend_pid()", &[]).await?);
    ensure!(
        before == pid(client.query_one("SELECT pg_backend_pid()", &[]).await?),
        "a pool of one should reuse its server"
    );
    client.batch_execute("BEGIN").await?;
    let admin = endpoint.connect("admin", "admin", "switchyard").await?;
    admin.simple_query("RECONNECT app").await.ctx("RECONNECT")?;
    let inside = pid(client.query_one("SELECT pg_backend_pid()", &[]).await?);
    client.batch_execute("COMMIT").await?;
    ensure!(inside == before, "the open transaction moved to another server");
    let after = pid(client.query_one("SELECT pg_backend_pid()", &[]).await?);
    ensure!(after != before, "RECONNECT kept the old server ({before})");
    Ok(())
}
