//! A request runs again only if it provably took no effect, and only when its node is going
//! away. `FATAL 57P01` is what both a fast shutdown and `pg_terminate_backend` send, so:
//!
//! - a query a DBA kills with `pg_terminate_backend` on a node that stays up ends with the
//!   server's error and is not run again;
//! - a procedure or `DO` block that may have committed part of its work before its
//!   backend ended is never run again (its committed rows stay exactly once), and its
//!   client is told the outcome is unknown (`08007`), whether the backend was terminated
//!   or the node shut down;
//! - an autocommit INSERT cut by a fast shutdown still runs once on the new primary.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::BytesMut;
use switchyard_tests::admin::wait_for_primary;
use switchyard_tests::client::{backend_running, backends_running};
use switchyard_tests::promotion::{probed, probed_pair};
use switchyard_tests::raw::{msg, RawConn};
use switchyard_tests::{
    describe_error, expect_sqlstate, roles, skip_if_direct, ClusterOptions, Endpoint, TestBed,
};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

/// Inserts step 1 for `tag`, commits, sleeps 3 s, inserts step 2.
const SETUP: &str = "
    CREATE TABLE steps (tag text, step int);
    CREATE TABLE killed (v int);
    CREATE PROCEDURE commit_then_sleep(tag text) LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO steps VALUES (tag, 1);
        COMMIT;
        PERFORM pg_sleep(3);
        INSERT INTO steps VALUES (tag, 2);
    END $$;";

/// The `DO` twin of `commit_then_sleep('do')`.
const DO_BLOCK: &str = "DO $$ BEGIN INSERT INTO steps VALUES ('do', 1); COMMIT; \
     PERFORM pg_sleep(3); INSERT INTO steps VALUES ('do', 2); END $$";

/// A superuser on `endpoint` (a node, not the proxy): the DBA.
async fn dba(endpoint: &Endpoint) -> Result<Client> {
    endpoint
        .connect(roles::SUPERUSER.0, roles::SUPERUSER.1, roles::APP_DB)
        .await
}

/// Waits (up to 10 s) until step 1 of `tag` is committed, as seen by `dba`.
async fn first_step_committed(dba: &Client, tag: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while steps(dba, tag).await? == (0, 0) {
        ensure!(Instant::now() < deadline, "step 1 of {tag} never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// (rows of step 1, rows of step 2) for `tag`.
async fn steps(client: &Client, tag: &str) -> Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE step = 1), count(*) FILTER (WHERE step = 2) \
             FROM steps WHERE tag = $1",
            &[&tag],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// A client's result and when it came.
type Answer = (Result<(), tokio_postgres::Error>, Instant);

/// A client of `endpoint` running `sql` in the background, with the extended protocol
/// (a prepared statement) or a simple query.
async fn run(endpoint: &Endpoint, sql: &'static str, extended: bool) -> Result<JoinHandle<Answer>> {
    let client = endpoint.connect_app().await?;
    Ok(tokio::spawn(async move {
        let result = if extended {
            client.execute(sql, &[]).await.map(drop)
        } else {
            client.batch_execute(sql).await
        };
        (result, Instant::now())
    }))
}

/// The client's answer, which must come within `limit`; prints how long after `t0` it came.
async fn answer(
    client: JoinHandle<Answer>,
    t0: Instant,
    limit: Duration,
    what: &str,
) -> Result<Result<(), tokio_postgres::Error>> {
    let (result, at) = tokio::time::timeout(limit, client)
        .await
        .with_context(|| {
            format!("{what}: the client got no answer within {limit:?} (the statement runs again?)")
        })?
        .context("client task")?;
    eprintln!("{what}: answered {:?} after the cut", at.duration_since(t0));
    Ok(result)
}

/// A bed with the probed configuration of the failover tests (probes every 100 ms) on a
/// primary alone, and the tables and procedure of [`SETUP`].
async fn single_node() -> Result<(TestBed, Endpoint, Client)> {
    let bed = TestBed::start_full(ClusterOptions::default(), |cfg, _| Ok(probed(cfg.pool_size(4))))?;
    let endpoint = bed.endpoint();
    endpoint.connect_app().await?.batch_execute(SETUP).await?;
    let dba = dba(&bed.direct()).await?;
    Ok((bed, endpoint, dba))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committing_procedure_or_do_block_cut_by_pg_terminate_backend_runs_once_and_its_outcome_is_unknown(
) -> Result<()> {
    skip_if_direct!(); // Postgres itself sends 57P01 here; the proxy says more
    let (mut bed, endpoint, dba) = single_node().await?;
    let cases: [(&str, &'static str, bool); 3] = [
        ("call-simple", "CALL commit_then_sleep('call-simple')", false),
        ("call-extended", "CALL commit_then_sleep('call-extended')", true),
        ("do", DO_BLOCK, false),
    ];
    for (tag, sql, extended) in cases {
        let client = run(&endpoint, sql, extended).await?;
        first_step_committed(&dba, tag).await?;
        let pid = backend_running(&dba, sql).await?;
        let t0 = Instant::now();
        dba.execute("SELECT pg_terminate_backend($1)", &[&pid]).await?;
        let result = answer(client, t0, Duration::from_secs(2), tag).await?;
        let error = expect_sqlstate(result, &["08007"], &format!("{tag} cut by pg_terminate_backend"))?;
        ensure!(
            error.message().contains("outcome is unknown"),
            "{tag}: the client should be told the outcome is unknown: {error:?}"
        );
        // Long enough for a rerun to commit its step 1 and reach pg_stat_activity.
        tokio::time::sleep(Duration::from_secs(1)).await;
        ensure!(backends_running(&dba, sql).await? == 0, "{tag} runs again");
        let rows = steps(&dba, tag).await?;
        ensure!(
            rows == (1, 0),
            "{tag}: step 1 committed before the termination must be there exactly once and step 2 never: {rows:?}"
        );
    }

    // The unnamed statement, parsed in the same request (as psycopg and pgjdbc send it).
    let sql = "CALL commit_then_sleep('call-unnamed')";
    let mut raw = RawConn::login(
        &endpoint.addr(),
        &[("user", roles::APP.0), ("database", roles::APP_DB)],
        roles::APP.1,
    )
    .await?;
    let mut batch = BytesMut::new();
    msg::parse(&mut batch, "", sql);
    msg::bind(&mut batch, "", "", &[]);
    msg::execute(&mut batch, "", 0);
    msg::sync(&mut batch);
    raw.send(&batch).await?;
    first_step_committed(&dba, "call-unnamed").await?;
    let pid = backend_running(&dba, sql).await?;
    dba.execute("SELECT pg_terminate_backend($1)", &[&pid]).await?;
    let got = raw.read_until_eof(Duration::from_secs(2)).await?;
    let codes: Vec<String> = got.iter().filter_map(|m| m.sqlstate()).collect();
    ensure!(
        codes == ["08007"],
        "the unnamed CALL cut by pg_terminate_backend should get 08007 alone: {:?}",
        got.iter().map(|m| m.describe()).collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rows = steps(&dba, "call-unnamed").await?;
    ensure!(rows == (1, 0), "call-unnamed: {rows:?}");
    bed.ensure_proxy_alive()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_killed_by_pg_terminate_backend_on_a_node_that_stays_up_gets_the_error_and_does_not_run_again(
) -> Result<()> {
    let (mut bed, endpoint, dba) = single_node().await?;

    // A runaway query, simple protocol.
    let runaway = "SELECT pg_sleep(30)";
    let client = run(&endpoint, runaway, false).await?;
    let pid = backend_running(&dba, runaway).await?;
    let t0 = Instant::now();
    dba.execute("SELECT pg_terminate_backend($1)", &[&pid]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        backends_running(&dba, runaway).await? == 0,
        "the terminated query was sent again"
    );
    let result = answer(client, t0, Duration::from_secs(2), "runaway SELECT").await?;
    expect_sqlstate(
        result,
        &["57P01"],
        "runaway SELECT killed by pg_terminate_backend",
    )?;

    // An autocommit INSERT killed before it commits, extended protocol.
    let insert = "INSERT INTO killed SELECT 1 FROM pg_sleep(2)";
    let client = run(&endpoint, insert, true).await?;
    let pid = backend_running(&dba, insert).await?;
    let t0 = Instant::now();
    dba.execute("SELECT pg_terminate_backend($1)", &[&pid]).await?;
    let result = answer(client, t0, Duration::from_millis(1500), "INSERT").await?;
    expect_sqlstate(result, &["57P01"], "INSERT killed by pg_terminate_backend")?;
    // Past the time a rerun would have taken to commit.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ensure!(
        backends_running(&dba, insert).await? == 0,
        "the terminated INSERT runs again"
    );
    let rows: i64 = dba.query_one("SELECT count(*) FROM killed", &[]).await?.get(0);
    ensure!(rows == 0, "the terminated INSERT was run again: {rows} rows");

    // The proxy goes on serving.
    let after: i32 = endpoint
        .connect_app()
        .await?
        .query_one("SELECT 1", &[])
        .await?
        .get(0);
    ensure!(after == 1);
    bed.ensure_proxy_alive()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_shutdown_reruns_an_autocommit_insert_once_but_never_a_committing_procedure_or_do_block(
) -> Result<()> {
    skip_if_direct!();
    let (mut bed, endpoint, _, new) = probed_pair(|cfg| Ok(cfg.pool_size(8))).await?;
    endpoint.connect_app().await?.batch_execute(SETUP).await?;
    let direct_new = Endpoint::new(bed.pg().replica().host(), bed.pg().replica().port());
    let replica = dba(&direct_new).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica
        .query_opt("SELECT 1 FROM pg_proc WHERE proname = 'commit_then_sleep'", &[])
        .await?
        .is_none()
    {
        ensure!(Instant::now() < deadline, "the replica did not replay the setup");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // All three are running when the primary stops; the procedure and the DO block have
    // committed their step 1.
    let old = dba(&bed.direct()).await?;
    let call = run(&endpoint, "CALL commit_then_sleep('call')", false).await?;
    let do_block = run(&endpoint, DO_BLOCK, false).await?;
    let insert = run(&endpoint, "INSERT INTO killed SELECT 1 FROM pg_sleep(3)", true).await?;
    first_step_committed(&old, "call").await?;
    first_step_committed(&old, "do").await?;
    backend_running(&old, "INSERT INTO killed SELECT 1 FROM pg_sleep(3)").await?;
    drop(old);
    let t0 = Instant::now();
    bed.pg_mut().primary_mut().stop("fast")?;
    bed.pg().replica().promote()?;
    wait_for_primary(&endpoint, &new, Duration::from_secs(20)).await?;
    eprintln!("new primary confirmed {:?} after the stop", t0.elapsed());

    for (tag, client) in [("call", call), ("do", do_block)] {
        let result = answer(client, t0, Duration::from_secs(10), tag).await?;
        let error = expect_sqlstate(result, &["08007"], &format!("{tag} cut by a fast shutdown"))?;
        ensure!(
            error.message().contains("outcome is unknown"),
            "{tag}: the client should be told the outcome is unknown: {error:?}"
        );
    }
    if let Err(e) = answer(insert, t0, Duration::from_secs(20), "INSERT").await? {
        bail!(
            "the INSERT cut by the shutdown should have run again on the new primary: {}",
            describe_error(&e)
        );
    }
    // Long enough for a rerun of the procedure to commit its step 1.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for tag in ["call", "do"] {
        let rows = steps(&replica, tag).await?;
        ensure!(
            rows == (1, 0),
            "{tag}: step 1 committed before the shutdown must be there exactly once and step 2 never: {rows:?}"
        );
    }
    let inserted: i64 = replica
        .query_one("SELECT count(*) FROM killed", &[])
        .await?
        .get(0);
    ensure!(
        inserted == 1,
        "the INSERT should have run exactly once: {inserted} rows"
    );
    bed.ensure_proxy_alive()
}
