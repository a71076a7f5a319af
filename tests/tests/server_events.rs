//! What a server does on its own, outside any failover, and what the clients of a
//! transaction pool see of it: the server ends a transaction left idle
//! (`idle_in_transaction_session_timeout`) or a statement that ran too long
//! (`statement_timeout`), a DBA terminates a pooled server (`pg_terminate_backend`), idle or
//! busy, or in the middle of an extended-protocol pipeline, a COPY fails on either side.
//!
//! In each case only the client concerned gets an error, with the server's SQLSTATE, and
//! the pool goes on serving: other clients see nothing, and a server that survives is
//! handed to the next client clean.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, TryStreamExt};
use switchyard_tests::client::{backend_running, connect, Load};
use switchyard_tests::raw::{msg, Msg, RawConn};
use switchyard_tests::tools::signal;
use switchyard_tests::{describe_error, expect_sqlstate, skip_if_direct, Endpoint, PgResultExt, TestBed};
use tokio_postgres::Client;

const APP: [(&str, &str); 2] = [("user", "app"), ("database", "app")];

/// A superuser on the primary itself: the DBA.
async fn dba(bed: &TestBed) -> Result<Client> {
    bed.direct().connect("postgres", "postgres", "app").await
}

/// A fresh raw client of `endpoint` (only `user` and `database`).
async fn raw(endpoint: &Endpoint) -> Result<RawConn> {
    RawConn::login(&endpoint.addr(), &APP, "app").await
}

fn describe(msgs: &[Msg]) -> Vec<String> {
    msgs.iter().map(Msg::describe).collect()
}

/// Waits (up to 10 s) until none of `pids` is a backend any more.
async fn gone(dba: &Client, pids: &[i32]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = dba
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                &[&pids],
            )
            .await?
            .get(0);
        if n == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "backends {pids:?} still there after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The backends of user `app` that are not `idle` (pid and state), as the DBA sees them.
async fn busy_app_backends(dba: &Client) -> Result<Vec<String>> {
    Ok(dba
        .query(
            "SELECT pid || ' ' || coalesce(state, '?') FROM pg_stat_activity \
             WHERE usename = 'app' AND state IS DISTINCT FROM 'idle'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

async fn count(client: &Client, table: &str) -> Result<i64> {
    Ok(client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .ctx(&format!("counting {table}"))?
        .get(0))
}

/// A new client is served (its `SELECT 1` returns 1), and the proxy is still running.
async fn still_serving(bed: &mut TestBed) -> Result<()> {
    let one: i32 = bed
        .endpoint()
        .connect_app()
        .await?
        .query_one("SELECT 1", &[])
        .await
        .ctx("a new client")?
        .get(0);
    ensure!(one == 1, "a new client's SELECT 1 returned {one}");
    bed.ensure_proxy_alive()
}

/// Stops the background load and requires that none of its transactions failed.
async fn load_unharmed(load: Load, what: &str) -> Result<()> {
    let report = load.finish().await?;
    ensure!(
        report.errors.is_empty() && report.ok > 0,
        "{what}: the other clients' transactions: {} ok, errors {:?}",
        report.ok,
        report.errors
    );
    println!("{what}: other clients ran {} transactions, 0 errors", report.ok);
    Ok(())
}

/// Client A sets `idle_in_transaction_session_timeout = '300ms'`, opens a transaction,
/// inserts a row and goes quiet, while two other clients loop over transactions on the
/// same pool (size 3). Checks that A receives, unasked, the server's ErrorResponse with
/// SQLSTATE 25P03 (severity FATAL) and then end of stream, within 15 s, with no error of
/// the proxy's after it (before the fix, an 08006 saying the transaction's outcome was
/// unknown, when the server had said it was rolled back); that
/// A's row was rolled back (0 rows); that the other clients had 0 errors; that no backend
/// of `app` is left idle in transaction; and that a new client is served (its query
/// returns 1).
#[tokio::test]
async fn idle_in_transaction_timeout_ends_only_that_client() -> Result<()> {
    let mut bed = TestBed::start_with(|c| c.mode("transaction").pool_size(3))?;
    let endpoint = bed.endpoint();
    endpoint
        .connect_app()
        .await?
        .batch_execute("CREATE TABLE abandoned (v int)")
        .await?;
    let dba = dba(&bed).await?;
    let load = Load::start(&endpoint, 2).await?;
    let mut a = raw(&endpoint).await?;
    for sql in [
        "SET idle_in_transaction_session_timeout = '300ms'",
        "BEGIN",
        "INSERT INTO abandoned VALUES (1)",
    ] {
        let r = a.simple_query(sql).await?;
        ensure!(r.errors.is_empty(), "{sql}: {r:?}");
    }
    let t0 = Instant::now();
    // A liveness bound, not a latency target (the time is printed): generous for a
    // machine under load.
    let got = a.read_until_eof(Duration::from_secs(15)).await?;
    println!(
        "idle in transaction: A's server ended it after {:?}; A got {:?}",
        t0.elapsed(),
        describe(&got)
    );
    let first = got.first().context("A's connection closed without a word")?;
    ensure!(
        first.sqlstate().as_deref() == Some("25P03")
            && first.field(b'V').as_deref() == Some("FATAL")
            && got.len() == 1,
        "A should get the server's FATAL 25P03 alone, got {:?}",
        describe(&got)
    );
    ensure!(count(&dba, "abandoned").await? == 0, "A's insert was kept");
    load_unharmed(load, "idle_in_transaction_session_timeout").await?;
    let busy = busy_app_backends(&dba).await?;
    ensure!(busy.is_empty(), "backends of app not idle: {busy:?}");
    still_serving(&mut bed).await
}

/// A DBA terminates every idle server of the pool (size 2) with `pg_terminate_backend`
/// while four clients are connected but idle. Checks that each client's next ten queries
/// (simple and extended protocol) all return their value with 0 errors, on new backends
/// (none of the terminated pids). Then a client pinned to its server (it created a
/// temporary table) has that server terminated while it is idle: checks that its next
/// statement gets an ErrorResponse with SQLSTATE 08006 saying its session state is gone,
/// and that the four other clients still run without error.
#[tokio::test]
async fn pg_terminate_backend_of_an_idle_pooled_server_costs_clients_nothing() -> Result<()> {
    skip_if_direct!(); // checks the pool's servers
    let mut bed = TestBed::start_with(|c| c.mode("transaction").pool_size(2).query_wait_timeout("10s"))?;
    let endpoint = bed.endpoint();
    let dba = dba(&bed).await?;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(endpoint.connect_app().await?);
    }
    // Two at once in transactions, so that the pool opens both servers.
    clients[0].batch_execute("BEGIN").await?;
    clients[1].batch_execute("BEGIN").await?;
    clients[0].batch_execute("COMMIT").await?;
    clients[1].batch_execute("COMMIT").await?;
    let killed: Vec<i32> = dba
        .query(
            "SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND state = 'idle'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    ensure!(
        killed.len() == 2,
        "expected the pool's 2 idle servers, found {killed:?}"
    );
    for pid in &killed {
        dba.execute("SELECT pg_terminate_backend($1)", &[pid]).await?;
    }
    gone(&dba, &killed).await?;
    let mut errors = Vec::new();
    let mut pids = std::collections::BTreeSet::new();
    for round in 0..10 {
        for (i, client) in clients.iter().enumerate() {
            let result = if round % 2 == 0 {
                client
                    .query_one("SELECT $1::int + 1, pg_backend_pid()", &[&round])
                    .await
                    .map(|r| (r.get::<_, i32>(0), r.get::<_, i32>(1)))
            } else {
                client
                    .simple_query(&format!("SELECT {round} + 1, pg_backend_pid()"))
                    .await
                    .map(|msgs| {
                        msgs.iter()
                            .find_map(|m| match m {
                                tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                                    r.get(0).and_then(|v| v.parse().ok()).unwrap_or(-1),
                                    r.get(1).and_then(|v| v.parse().ok()).unwrap_or(-1),
                                )),
                                _ => None,
                            })
                            .unwrap_or((-1, -1))
                    })
            };
            match result {
                Ok((v, pid)) if v == round + 1 => {
                    pids.insert(pid);
                }
                Ok(other) => errors.push(format!("client {i} round {round}: {other:?}")),
                Err(e) => errors.push(format!("client {i} round {round}: {}", describe_error(&e))),
            }
        }
    }
    ensure!(
        errors.is_empty(),
        "after the idle servers were terminated: {errors:?}"
    );
    ensure!(
        pids.iter().all(|p| !killed.contains(p)),
        "a terminated backend answered: {pids:?} includes one of {killed:?}"
    );

    // A pinned client's server, terminated while the client is idle.
    let mut pinned = raw(&endpoint).await?;
    let r = pinned.simple_query("CREATE TEMP TABLE mine (v int)").await?;
    ensure!(r.errors.is_empty(), "temp table: {r:?}");
    let pid: i32 = pinned
        .query_one_value("SELECT pg_backend_pid()")
        .await?
        .unwrap_or_default()
        .parse()?;
    dba.execute("SELECT pg_terminate_backend($1)", &[&pid]).await?;
    gone(&dba, &[pid]).await?;
    let mut out = BytesMut::new();
    msg::query(&mut out, "SELECT count(*) FROM mine");
    pinned.send(&out).await?;
    let got = pinned.read_until_eof(Duration::from_secs(5)).await?;
    ensure!(
        got.len() == 1
            && got[0].sqlstate().as_deref() == Some("08006")
            && got[0].message().is_some_and(|m| m.contains("session state")),
        "the pinned client should get one error 08006 saying its session state is gone, then \
         end of stream: {:?}",
        describe(&got)
    );
    for (i, client) in clients.iter().enumerate() {
        let v: i32 = client
            .query_one("SELECT 7", &[])
            .await
            .ctx(&format!("client {i} after the pinned server went"))?
            .get(0);
        ensure!(v == 7);
    }
    println!("idle servers terminated: 40 queries after, 0 errors, on backends {pids:?}");
    bed.ensure_proxy_alive()
}

/// Pool of 1, transaction mode. Client A (`application_name` `first`) runs a statement, so
/// the pool's one server carries A's settings. The DBA stops that backend (SIGSTOP), client
/// B (`application_name` `second`) sends `SELECT 41 + 1`: the proxy borrows the stopped
/// server (its socket is still open) and sends it B's settings first, which it cannot
/// answer. The DBA then terminates it (`pg_terminate_backend`, then SIGCONT): the backend
/// answers the settings with `FATAL 57P01` and closes. Nothing of B's statement reached
/// it. Checks that B gets `42` with no error, that its statement ran on another backend
/// with `application_name` `second`, and that A is still served.
#[tokio::test]
async fn a_server_lost_while_taking_a_clients_settings_costs_the_client_nothing() -> Result<()> {
    skip_if_direct!(); // checks the pool's servers
    let mut bed = TestBed::start_with(|c| c.mode("transaction").pool_size(1).query_wait_timeout("10s"))?;
    let endpoint = bed.endpoint();
    let dba = dba(&bed).await?;
    let named = |name: &str| {
        let mut config = endpoint.config("app", "app", "app");
        config.application_name(name);
        config
    };
    let first = connect(&named("first")).await?;
    let second = connect(&named("second")).await?;
    first.batch_execute("SELECT 1").await?;
    let pid: i32 = dba
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND application_name = 'first'",
            &[],
        )
        .await
        .ctx("the pool's server with the first client's settings")?
        .get(0);
    let backend = u32::try_from(pid)?;
    signal(backend, libc::SIGSTOP);
    let asked = tokio::spawn(async move {
        let row = second
            .query_one(
                "SELECT 41 + 1, pg_backend_pid(), current_setting('application_name')",
                &[],
            )
            .await;
        (second, row)
    });
    // The proxy borrows the stopped server and waits for it to take B's settings.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let terminated: bool = dba
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await?
        .get(0);
    signal(backend, libc::SIGCONT);
    ensure!(terminated, "pg_terminate_backend({pid}) found no backend");
    let (_second, row) = tokio::time::timeout(Duration::from_secs(15), asked)
        .await
        .context("the second client's statement did not return within 15 s")??;
    let row = row.map_err(|e| anyhow::anyhow!("the second client got an error: {}", describe_error(&e)))?;
    let (value, ran_on, name): (i32, i32, String) = (row.get(0), row.get(1), row.get(2));
    ensure!(
        value == 42 && ran_on != pid && name == "second",
        "expected 42 on a backend other than {pid} with application_name second, got {value} on {ran_on} with {name:?}"
    );
    let v: i32 = first
        .query_one("SELECT 7", &[])
        .await
        .ctx("the first client afterwards")?
        .get(0);
    ensure!(v == 7);
    bed.ensure_proxy_alive()
}

/// Session mode (pool of 2): a client with no server-side state keeps its server between
/// statements; a DBA terminates it while the client is idle, the client's next statement
/// is sent as soon as the backend is gone from `pg_stat_activity` (before the proxy may
/// have read the server's end of stream). In each of 20 rounds, checks that this
/// statement returns its value without error, on a new backend. (Before the fix the
/// proxy, which had read the server's unsolicited FATAL but not yet its end of stream,
/// wrote the statement to the dead server, and the client got 08006 "server connection
/// lost" in about one round in five.)
#[tokio::test]
async fn a_session_pooled_clients_idle_server_terminated_is_replaced_without_error() -> Result<()> {
    skip_if_direct!(); // checks the pool's servers
    let mut bed = TestBed::start_with(|c| c.mode("session").pool_size(2))?;
    let dba = dba(&bed).await?;
    let mut client = raw(&bed.endpoint()).await?;
    let mut failures = Vec::new();
    for round in 0..20 {
        let pid: i32 = client
            .query_one_value("SELECT pg_backend_pid()")
            .await?
            .unwrap_or_default()
            .parse()?;
        dba.execute("SELECT pg_terminate_backend($1)", &[&pid]).await?;
        gone(&dba, &[pid]).await?;
        let mut out = BytesMut::new();
        msg::query(
            &mut out,
            &format!("SELECT {round} + 1, pg_backend_pid() <> {pid}"),
        );
        client.send(&out).await?;
        let mut got = Vec::new();
        while let Some(m) = client.read_msg().await? {
            let ready = m.tag == b'Z';
            got.push(m);
            if ready {
                break;
            }
        }
        let rows: Vec<_> = got.iter().filter_map(Msg::data_row).collect();
        let ok = got.last().is_some_and(|m| m.tag == b'Z')
            && !got.iter().any(|m| m.tag == b'E')
            && rows == vec![vec![Some((round + 1).to_string()), Some("t".to_owned())]];
        if !ok {
            failures.push(format!("round {round}: {:?}", describe(&got)));
            client = raw(&bed.endpoint()).await?;
        }
    }
    ensure!(
        failures.is_empty(),
        "the statement after the idle server was terminated failed: {failures:?}"
    );
    bed.ensure_proxy_alive()
}

/// A DBA terminates the server running client A's `SELECT pg_sleep(30)` while two other
/// clients loop over transactions (pool of 3). Checks that A's query fails within 15 s with
/// the server's SQLSTATE 57P01, that A's query does not run again (no backend
/// runs it 1 s later), that the other clients had 0 errors, and that a new client is served.
#[tokio::test]
async fn pg_terminate_backend_of_a_busy_server_fails_only_its_client() -> Result<()> {
    let mut bed = TestBed::start_with(|c| c.mode("transaction").pool_size(3))?;
    let endpoint = bed.endpoint();
    let dba = dba(&bed).await?;
    let load = Load::start(&endpoint, 2).await?;
    let a = endpoint.connect_app().await?;
    let sql = "SELECT pg_sleep(30)";
    let running = tokio::spawn(async move { a.simple_query(sql).await.map(drop) });
    let pid = backend_running(&dba, sql).await?;
    let t0 = Instant::now();
    dba.execute("SELECT pg_terminate_backend($1)", &[&pid]).await?;
    // A liveness bound (the time is printed): the node's confirmation login alone may
    // take up to 2 s on a loaded machine.
    let result = tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .context("A's query did not end within 15 s of the termination")??;
    println!("busy server terminated: A's error after {:?}", t0.elapsed());
    expect_sqlstate(result, &["57P01"], "A's query on the terminated server")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again: i64 = dba
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
            &[&sql],
        )
        .await?
        .get(0);
    ensure!(again == 0, "the terminated query runs again");
    load_unharmed(load, "pg_terminate_backend of a busy server").await?;
    still_serving(&mut bed).await
}

/// On the pool's only server, client A (statement_timeout 200 ms, set with `SET`) runs
/// `pg_sleep(5)` three ways: a simple query, an extended-protocol query, and inside a
/// transaction block. Checks that each fails with SQLSTATE 57014 (the time they took is
/// printed), that A's next statement works (in the block: 25P02 until ROLLBACK, then
/// works), and that a fresh
/// client B then gets the same backend (same `pg_backend_pid()`), outside any transaction,
/// with the default statement_timeout, and runs a 500 ms `pg_sleep` without error.
#[tokio::test]
async fn statement_timeout_gives_57014_and_the_server_is_reused_clean() -> Result<()> {
    skip_if_direct!(); // checks the pool's servers
    let mut bed = TestBed::start_with(|c| c.mode("transaction").pool_size(1).query_wait_timeout("10s"))?;
    let endpoint = bed.endpoint();
    let default: String = bed
        .direct()
        .connect_app()
        .await?
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .await?
        .get(0);
    let a = endpoint.connect_app().await?;
    a.batch_execute("SET statement_timeout = '200ms'").await?;
    let a_pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    let t0 = Instant::now();
    expect_sqlstate(a.batch_execute("SELECT pg_sleep(5)").await, &["57014"], "simple")?;
    expect_sqlstate(
        a.query("SELECT pg_sleep($1)", &[&5f64]).await,
        &["57014"],
        "extended",
    )?;
    a.batch_execute("BEGIN").await?;
    expect_sqlstate(
        a.batch_execute("SELECT pg_sleep(5)").await,
        &["57014"],
        "in a block",
    )?;
    expect_sqlstate(
        a.batch_execute("SELECT 1").await,
        &["25P02"],
        "after it in the block",
    )?;
    a.batch_execute("ROLLBACK").await?;
    println!("statement_timeout: three 200 ms timeouts took {:?}", t0.elapsed());
    let v: i32 = a.query_one("SELECT 41 + 1", &[]).await?.get(0);
    ensure!(v == 42, "A after its timeouts: {v}");

    let mut b = raw(&endpoint).await?;
    let r = b
        .simple_query(
            "SELECT pg_backend_pid(), current_setting('statement_timeout'), now() = statement_timestamp()",
        )
        .await?;
    ensure!(
        r.errors.is_empty()
            && r.status == b'I'
            && r.rows
                == vec![vec![
                    Some(a_pid.to_string()),
                    Some(default.clone()),
                    Some("t".to_owned())
                ]],
        "B should be on A's backend {a_pid}, outside any transaction, with statement_timeout {default:?}: {r:?}"
    );
    let r = b.simple_query("SELECT pg_sleep(0.5)").await?;
    ensure!(r.errors.is_empty(), "B's 500 ms sleep: {:?}", describe(&r.errors));
    bed.ensure_proxy_alive()
}

/// A `COPY ... TO STDOUT` whose query fails with division by zero after 4999 rows, by a
/// raw client through the proxy (pool of one) and directly to Postgres. Checks that the
/// client gets exactly what Postgres sends: CopyOutResponse, 4999 CopyData, an
/// ErrorResponse 22012, ReadyForQuery 'I'; and the same inside a transaction block
/// (ReadyForQuery 'E', then ROLLBACK works). With tokio-postgres (extended protocol) the
/// copy stream ends in error 22012. After each, the same client's next query works and a
/// fresh client gets the same backend, outside any transaction.
#[tokio::test]
async fn an_error_during_copy_out_reaches_the_client_and_the_server_serves_on() -> Result<()> {
    skip_if_direct!(); // checks the pool's servers
    let mut bed = TestBed::start_with(|c| c.mode("transaction").pool_size(1).query_wait_timeout("10s"))?;
    let endpoint = bed.endpoint();
    let copy = "COPY (SELECT CASE WHEN i < 5000 THEN i ELSE 1 / (i - i) END \
                FROM generate_series(1, 10000) i) TO STDOUT";
    let summary = |msgs: &[Msg]| -> String {
        let data = msgs.iter().filter(|m| m.tag == b'd').count();
        let others: Vec<String> = msgs.iter().filter(|m| m.tag != b'd').map(Msg::describe).collect();
        format!("{data} CopyData; {others:?}")
    };
    let expected = |status: char| {
        format!(
            "4999 CopyData; [\"'H' (5 bytes)\", \"ErrorResponse 22012 division by zero\", \"ReadyForQuery {status}\"]"
        )
    };
    let mut direct = raw(&bed.direct()).await?;
    let mut a = raw(&endpoint).await?;
    let pid = a.query_one_value("SELECT pg_backend_pid()").await?;
    for in_block in [false, true] {
        let mut seen = Vec::new();
        for conn in [&mut direct, &mut a] {
            if in_block {
                conn.simple_query("BEGIN").await?;
            }
            let mut out = BytesMut::new();
            msg::query(&mut out, copy);
            conn.send(&out).await?;
            seen.push(summary(&conn.read_until_ready().await?));
            if in_block {
                let r = conn.simple_query("ROLLBACK").await?;
                ensure!(r.errors.is_empty() && r.status == b'I', "ROLLBACK: {r:?}");
            }
            let v = conn.query_one_value("SELECT 6 * 7").await?;
            ensure!(v.as_deref() == Some("42"), "after the failed COPY: {v:?}");
        }
        let want = expected(if in_block { 'E' } else { 'I' });
        ensure!(
            seen[0] == want && seen[1] == want,
            "in block: {in_block}: expected {want}; direct: {}; through the proxy: {}",
            seen[0],
            seen[1]
        );
    }
    let client = endpoint.connect_app().await?;
    let stream = client.copy_out(copy).await.ctx("COPY TO STDOUT")?;
    let result: Result<Vec<Bytes>, _> = stream.try_collect().await;
    expect_sqlstate(result.map(|c| c.len()), &["22012"], "tokio-postgres copy_out")?;
    let v: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .ctx("after copy_out")?
        .get(0);
    ensure!(v == 1);
    drop(client);
    a.terminate().await?;
    let mut b = raw(&endpoint).await?;
    let r = b
        .simple_query("SELECT pg_backend_pid(), now() = statement_timestamp()")
        .await?;
    ensure!(
        r.errors.is_empty() && r.status == b'I' && r.rows == vec![vec![pid.clone(), Some("t".into())]],
        "a fresh client should be on backend {pid:?}, outside any transaction: {r:?}"
    );
    bed.ensure_proxy_alive()
}

/// A client ends its `COPY ... FROM STDIN` with CopyFail after sending two rows, on the
/// pool's only server: by the simple protocol (checks ErrorResponse 57014 whose message
/// carries the client's reason, then ReadyForQuery 'I'), inside a transaction block
/// (ReadyForQuery 'E', then ROLLBACK gives 'I'), and with tokio-postgres, which sends
/// CopyFail when its copy sink is dropped unfinished. Checks after each that the table is
/// empty and the client's next query works, and at the end that a fresh client gets the
/// same backend, outside any transaction.
#[tokio::test]
async fn copy_fail_from_the_client_leaves_the_server_usable() -> Result<()> {
    skip_if_direct!(); // checks the pool's servers
    let mut bed = TestBed::start_with(|c| c.mode("transaction").pool_size(1).query_wait_timeout("10s"))?;
    let endpoint = bed.endpoint();
    let dba = dba(&bed).await?;
    bed.direct()
        .connect_app()
        .await?
        .batch_execute("CREATE TABLE copied (v int)")
        .await?;
    let mut a = raw(&endpoint).await?;
    let pid = a.query_one_value("SELECT pg_backend_pid()").await?;
    for in_block in [false, true] {
        if in_block {
            a.simple_query("BEGIN").await?;
        }
        let mut out = BytesMut::new();
        msg::query(&mut out, "COPY copied FROM STDIN");
        a.send(&out).await?;
        let start = a.expect_msg().await?;
        ensure!(start.tag == b'G', "no CopyInResponse: {}", start.describe());
        out.clear();
        msg::raw(&mut out, b'd', b"1\n2\n");
        msg::raw(&mut out, b'f', b"client gave up\0");
        a.send(&out).await?;
        let got = a.read_until_ready().await?;
        let status = if in_block { b'E' } else { b'I' };
        ensure!(
            got.len() == 2
                && got[0].sqlstate().as_deref() == Some("57014")
                && got[0].message().is_some_and(|m| m.contains("client gave up"))
                && got[1].ready_status() == Some(status),
            "CopyFail (in block: {in_block}): expected ErrorResponse 57014 with the reason, then \
             ReadyForQuery {}; got {:?}",
            status as char,
            describe(&got)
        );
        if in_block {
            let r = a.simple_query("ROLLBACK").await?;
            ensure!(r.errors.is_empty() && r.status == b'I', "ROLLBACK: {r:?}");
        }
        ensure!(
            count(&dba, "copied").await? == 0,
            "rows of a failed COPY were stored"
        );
        let v = a.query_one_value("SELECT 6 * 7").await?;
        ensure!(v.as_deref() == Some("42"), "after CopyFail: {v:?}");
    }
    a.terminate().await?;

    let client = endpoint.connect_app().await?;
    {
        let sink = client
            .copy_in::<_, Bytes>("COPY copied FROM STDIN")
            .await
            .ctx("copy_in")?;
        futures_util::pin_mut!(sink);
        sink.send(Bytes::from_static(b"3\n4\n")).await.ctx("COPY data")?;
        // Dropped unfinished: tokio-postgres sends CopyFail.
    }
    let v: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .ctx("tokio-postgres after its CopyFail")?
        .get(0);
    ensure!(v == 1);
    ensure!(
        count(&dba, "copied").await? == 0,
        "rows of the abandoned copy_in were stored"
    );
    drop(client);
    let mut b = raw(&endpoint).await?;
    let r = b
        .simple_query("SELECT pg_backend_pid(), now() = statement_timestamp()")
        .await?;
    ensure!(
        r.errors.is_empty() && r.status == b'I' && r.rows == vec![vec![pid.clone(), Some("t".into())]],
        "a fresh client should be on backend {pid:?}, outside any transaction: {r:?}"
    );
    bed.ensure_proxy_alive()
}

/// A raw client pipelines, in one extended-protocol batch, `SELECT 1`, a
/// `pg_sleep(30)`, an INSERT and `SELECT 3`, then Sync; a DBA terminates its server while
/// the sleep runs, and two other clients loop over transactions meanwhile (pool of 3).
/// Checks that the client receives the first statement's ParseComplete, BindComplete,
/// DataRow and CommandComplete, the second's ParseComplete and BindComplete, then the
/// server's ErrorResponse FATAL 57P01 and nothing else (no row of `SELECT 3`, no
/// ReadyForQuery, no error of the proxy's) before its connection closes within 5 s; that the INSERT never ran (0 rows, and the batch is not run again); that the other
/// clients had 0 errors; and that a new client is served.
#[tokio::test]
async fn a_fatal_in_the_middle_of_a_pipeline_ends_only_that_client() -> Result<()> {
    let mut bed = TestBed::start_with(|c| c.mode("transaction").pool_size(3))?;
    let endpoint = bed.endpoint();
    let dba = dba(&bed).await?;
    bed.direct()
        .connect_app()
        .await?
        .batch_execute("CREATE TABLE after_fatal (v int)")
        .await?;
    let load = Load::start(&endpoint, 2).await?;
    let mut a = raw(&endpoint).await?;
    let sleep = "SELECT pg_sleep(30)";
    let mut batch = BytesMut::new();
    for sql in [
        "SELECT 1",
        sleep,
        "INSERT INTO after_fatal VALUES (1)",
        "SELECT 3",
    ] {
        msg::parse(&mut batch, "", sql);
        msg::bind(&mut batch, "", "", &[]);
        msg::execute(&mut batch, "", 0);
    }
    msg::sync(&mut batch);
    a.send(&batch).await?;
    let pid = backend_running(&dba, sleep).await?;
    dba.execute("SELECT pg_terminate_backend($1)", &[&pid]).await?;
    let got = a.read_until_eof(Duration::from_secs(5)).await?;
    let tags: String = got.iter().map(Msg::tag_char).collect();
    let first_error = got.iter().find(|m| m.tag == b'E');
    ensure!(
        tags == "12DC12E"
            && got[2].data_row() == Some(vec![Some("1".to_owned())])
            && first_error.and_then(Msg::sqlstate).as_deref() == Some("57P01")
            && first_error.and_then(|m| m.field(b'V')).as_deref() == Some("FATAL"),
        "expected 1, 2, D(1), C, 1, 2, then the server's FATAL 57P01 alone; got {:?}",
        describe(&got)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        count(&dba, "after_fatal").await? == 0,
        "the INSERT after the FATAL ran"
    );
    let again: i64 = dba
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1",
            &[&sleep],
        )
        .await?
        .get(0);
    ensure!(again == 0, "the pipeline runs again");
    load_unharmed(load, "a FATAL in a pipeline").await?;
    still_serving(&mut bed).await
}
