//! The proxy follows the primary by probing, with no HA manager: after the primary stops and
//! the replica is promoted (`pg_promote`), clients go on through the same proxy. Work in
//! flight at the stop that provably did not take effect (the server ended it with
//! `FATAL 57P01` before any result) runs again on the new primary; work whose outcome the
//! proxy cannot know (a transaction block) gets the error. No acknowledged write is lost
//! and none is applied twice. Allowances are per client and per SQLSTATE
//! ([`Allowance`]): at most one `08006` (a connection that broke with no FATAL, outcome
//! unknown) per client, 0 of anything else, and every client of both drivers
//! (tokio-postgres, psycopg 3) completes work after the proxy confirmed the new primary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use switchyard_tests::admin::{admin_rows, wait_for_primary};
use switchyard_tests::promotion::{probed_pair, stop_and_promote_under_load};
use switchyard_tests::tolerance::Allowance;
use switchyard_tests::{skip_if_direct, Endpoint};

/// `SHOW NODES` rows by node address.
async fn nodes(endpoint: &Endpoint) -> Result<HashMap<String, HashMap<String, String>>> {
    Ok(admin_rows(endpoint, "SHOW NODES")
        .await?
        .into_iter()
        .map(|r| (r["node"].clone(), r))
        .collect())
}

/// 4 tokio-postgres and 2 psycopg clients run INSERT/SELECT through the proxy while the
/// primary stops (fast) and the replica is promoted: every client completes work after the
/// proxy names the new primary, each client sees at most one `08006` (outcome unknown) and
/// no other error, no acknowledged write is lost or doubled, and `SHOW NODES` shows the old
/// primary down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_without_an_ha_manager_moves_every_client_on_with_at_most_one_unknown_outcome_each(
) -> Result<()> {
    skip_if_direct!();
    const CLIENTS: usize = 4;
    let (mut bed, endpoint, old, new) = probed_pair(|cfg| Ok(cfg.pool_size(8))).await?;
    let before = nodes(&endpoint).await?;
    ensure!(before[&new]["role"] == "replica", "{before:#?}");
    let promotion = stop_and_promote_under_load(&mut bed, CLIENTS).await?;
    if let Some(proxy) = bed.proxy() {
        let log = proxy.log();
        let decisions: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("running it again") || l.contains("not retried") || l.contains("session ended")
            })
            .collect();
        eprintln!("proxy decisions:\n{}", decisions.join("\n"));
    }
    // What the server ended with FATAL 57P01 runs again (0 errors in almost every run); a
    // connection that ends without the FATAL has an unknown outcome and is surfaced.
    let [tokio, psycopg] = &promotion.reports;
    Allowance::ONE_UNKNOWN_OUTCOME.check(&[tokio, psycopg], promotion.confirmed_at)?;
    let after = nodes(&endpoint).await?;
    ensure!(after[&old]["state"] == "down", "{after:#?}");
    bed.ensure_proxy_alive()
}

/// The proxy's own `SHOW POOLS` counter of requests it ran again.
async fn retried(endpoint: &Endpoint) -> Result<u64> {
    let rows = admin_rows(endpoint, "SHOW POOLS").await?;
    Ok(rows
        .iter()
        .map(|r| r["retried"].parse::<u64>().unwrap_or(0))
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autocommit_write_cut_by_a_shutdown_runs_once_on_the_new_primary_and_a_transaction_block_gets_the_error(
) -> Result<()> {
    skip_if_direct!();
    let (mut bed, endpoint, _, new) = probed_pair(Ok).await?;
    let setup = endpoint.connect_app().await?;
    setup.batch_execute("CREATE TABLE retried (v int)").await?;
    let direct_new = Endpoint::new(bed.pg().replica().host(), bed.pg().replica().port());
    let replica = direct_new.connect_app().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica
        .query_opt("SELECT 1 FROM pg_class WHERE relname = 'retried'", &[])
        .await?
        .is_none()
    {
        ensure!(Instant::now() < deadline, "the replica did not replay the table");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One client's autocommit INSERT and another's open transaction block are both running
    // when the primary stops.
    let autocommit = endpoint.connect_app().await?;
    let in_block = endpoint.connect_app().await?;
    in_block
        .batch_execute("BEGIN; INSERT INTO retried VALUES (2)")
        .await?;
    let write = tokio::spawn(async move {
        autocommit
            .execute("INSERT INTO retried SELECT 1 FROM pg_sleep(1.5)", &[])
            .await
    });
    let block = tokio::spawn(async move { in_block.batch_execute("SELECT pg_sleep(1.5)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    bed.pg_mut().primary_mut().stop("fast")?;
    bed.pg().replica().promote()?;
    wait_for_primary(&endpoint, &new, Duration::from_secs(20)).await?;

    let written = write.await?;
    eprintln!(
        "autocommit INSERT: {written:?}, {:?} after the stop",
        t0.elapsed()
    );
    ensure!(
        matches!(written, Ok(1)),
        "the INSERT cut by the shutdown should have run again on the new primary: {written:?}"
    );
    let blocked = block.await?;
    let code = blocked
        .as_ref()
        .err()
        .and_then(|e| e.code())
        .map(|c| c.code().to_string());
    ensure!(
        code.as_deref() == Some("57P01"),
        "a transaction block cut by the shutdown must get the server's error, not a retry: {blocked:?}"
    );
    let rows: Vec<i32> = replica
        .query("SELECT v FROM retried ORDER BY v", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    ensure!(
        rows == vec![1],
        "expected the retried INSERT exactly once and nothing of the rolled-back block: {rows:?}"
    );
    ensure!(
        retried(&endpoint).await? >= 1,
        "SHOW POOLS counts no retried request"
    );
    // The event is summarized a moment after the new primary is confirmed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cluster = admin_rows(&endpoint, "SHOW CLUSTERS").await?.remove(0);
    eprintln!("SHOW CLUSTERS: {cluster:?}");
    ensure!(
        cluster["events"] != "0" && cluster["retried"] != "0" && cluster["client_errors"] != "0",
        "SHOW CLUSTERS should count the event, the retried INSERT and the block's error: {cluster:?}"
    );
    ensure!(
        cluster["last_event"].contains("retried"),
        "no event summary: {cluster:?}"
    );
    bed.ensure_proxy_alive()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_pooled_client_moves_on_unless_it_kept_state_on_the_lost_server() -> Result<()> {
    skip_if_direct!();
    let (mut bed, endpoint, _, new) =
        probed_pair(|cfg| Ok(cfg.set("databases.app.pool_mode", "session"))).await?;

    // Both clients are idle in session pooling when the primary stops. One only set a
    // setting and prepared a statement (both carried by the proxy); the other created a
    // temporary table, which lived on the lost server.
    let stateless = endpoint.connect_app().await?;
    stateless
        .batch_execute("SET application_name = 'stateless'")
        .await?;
    let statement = stateless
        .prepare("SELECT current_setting('application_name')")
        .await?;
    let stateful = endpoint.connect_app().await?;
    stateful
        .batch_execute("CREATE TEMP TABLE scratch (a int)")
        .await?;

    bed.pg_mut().primary_mut().stop("fast")?;
    bed.pg().replica().promote()?;
    wait_for_primary(&endpoint, &new, Duration::from_secs(20)).await?;

    let name: String = stateless.query_one(&statement, &[]).await?.get(0);
    ensure!(
        name == "stateless",
        "the session's setting did not follow it to the new server: {name}"
    );
    let lost = stateful.batch_execute("SELECT count(*) FROM scratch").await;
    let error = lost
        .as_ref()
        .err()
        .and_then(|e| e.as_db_error())
        .map(|e| (e.code().code().to_string(), e.message().to_string()));
    ensure!(
        matches!(&error, Some((code, message)) if code == "08006" && message.contains("temporary tables")),
        "a session whose server-side state was lost must be told so: {lost:?}"
    );
    bed.ensure_proxy_alive()
}
