//! Wire-protocol behaviour through the proxy in transaction mode: query
//! cancellation, malformed clients, extended-protocol pipelines, errors
//! inside transactions, and COPY in both directions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, TryStreamExt};
use switchyard_tests::client::{sqlstate, Load};
use switchyard_tests::raw::{msg, Msg, RawConn};
use switchyard_tests::{describe_error, expect_sqlstate, Endpoint, PgResultExt, TestBed};
use tokio_postgres::NoTls;

/// Wait (bounded) until the server shows `query` running.
async fn wait_until_running(direct: &Endpoint, query: &str) -> Result<()> {
    let admin = direct.connect("postgres", "postgres", "postgres").await?;
    for _ in 0..400 {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                &[&query],
            )
            .await
            .ctx("polling pg_stat_activity")?
            .get(0);
        if n > 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{query:?} never showed up as active on the server within 20 s")
}

#[tokio::test]
async fn cancel_long_query_then_reuse_connection() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(2))?;
    let client = Arc::new(bed.endpoint().connect_app().await?);
    // Simple protocol, then extended protocol.
    for (round, sql) in ["SELECT pg_sleep(30)", "SELECT pg_sleep(30.0::float8)"]
        .into_iter()
        .enumerate()
    {
        let c = client.clone();
        let extended = round == 1;
        let running = tokio::spawn(async move {
            if extended {
                c.query(sql, &[]).await.map(|_| ())
            } else {
                c.simple_query(sql).await.map(|_| ())
            }
        });
        wait_until_running(&bed.direct(), sql).await?;
        client
            .cancel_token()
            .cancel_query(NoTls)
            .await
            .ctx("sending the cancel request")?;
        let result = tokio::time::timeout(Duration::from_secs(20), running)
            .await
            .with_context(|| {
                format!("{sql}: still running 20 s after the cancel request; it was not cancelled")
            })??;
        expect_sqlstate(result, &["57014"], &format!("cancelled {sql}"))?;
        let v: i32 = client
            .query_one("SELECT 7", &[])
            .await
            .ctx("query on the connection after the cancel")?
            .get(0);
        ensure!(v == 7, "after cancel got {v}");
    }
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn cancel_with_a_wrong_key_cancels_nothing() -> Result<()> {
    let mut bed = TestBed::start()?;
    let client = Arc::new(bed.endpoint().connect_app().await?);
    let sql = "SELECT pg_sleep(1.5)";
    let c = client.clone();
    let running = tokio::spawn(async move { c.simple_query(sql).await.map(|_| ()) });
    wait_until_running(&bed.direct(), sql).await?;
    // CancelRequest: length 16, code 80877102, pid, secret.
    let mut raw = RawConn::connect(&bed.endpoint().addr()).await?;
    let mut req = Vec::new();
    req.extend_from_slice(&16i32.to_be_bytes());
    req.extend_from_slice(&80_877_102i32.to_be_bytes());
    req.extend_from_slice(&12345i32.to_be_bytes());
    req.extend_from_slice(&67890i32.to_be_bytes());
    raw.send(&req).await?;
    raw.read_until_eof(Duration::from_secs(20)).await?;
    let result = running.await?;
    ensure!(
        result.is_ok(),
        "a cancel request with a bogus key affected another session: {}",
        describe_error(&result.unwrap_err())
    );
    bed.ensure_proxy_alive()
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Ways to misbehave before login. After sending, the client closes its
/// write side, so a proxy waiting for more input sees EOF.
fn pre_login_garbage() -> Vec<(&'static str, Vec<u8>)> {
    let mut bogus_version = Vec::new();
    bogus_version.extend_from_slice(&8i32.to_be_bytes());
    bogus_version.extend_from_slice(&0x1234_5678i32.to_be_bytes());
    let mut huge = Vec::new();
    huge.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
    huge.extend_from_slice(&196_608i32.to_be_bytes());
    huge.extend_from_slice(&noise(100, 7));
    let mut tiny = Vec::new();
    tiny.extend_from_slice(&2i32.to_be_bytes());
    let mut unterminated = Vec::new();
    let body = b"user\0app\0database\0app"; // no final NULs
    unterminated.extend_from_slice(&(8 + body.len() as i32).to_be_bytes());
    unterminated.extend_from_slice(&196_608i32.to_be_bytes());
    unterminated.extend_from_slice(body);
    vec![
        ("4 KiB of random bytes", noise(4096, 0x5eed)),
        ("1 random byte", noise(1, 42)),
        ("startup with protocol version 0x12345678", bogus_version),
        ("startup claiming 2 GiB", huge),
        ("startup with length 2", tiny),
        ("startup with unterminated parameters", unterminated),
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: switchyard\r\n\r\n".to_vec(),
        ),
    ]
}

/// Ways to misbehave after a successful login; the proxy must end the session.
fn post_login_garbage() -> Vec<(&'static str, Vec<u8>)> {
    let mut bogus_type = BytesMut::new();
    msg::raw(&mut bogus_type, b'!', b"hello");
    let mut short_len = Vec::new();
    short_len.push(b'Q');
    short_len.extend_from_slice(&2i32.to_be_bytes());
    let mut negative_len = Vec::new();
    negative_len.push(b'P');
    negative_len.extend_from_slice(&(-5i32).to_be_bytes());
    vec![
        ("message type '!'", bogus_type.to_vec()),
        ("Query with length 2", short_len),
        ("Parse with negative length", negative_len),
        ("random bytes", noise(2048, 99)),
    ]
}

/// Malformed clients, before and after login, each get at most an ErrorResponse and are
/// closed, while 4 well-behaved clients go on with no error; a client that sends half a
/// startup packet and stalls is closed by `client_login_timeout` (2 s) within 2 to 5 s
/// (measured and printed); a fresh client is served after all of it.
#[tokio::test]
async fn garbage_clients_do_not_disturb_others() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(4).client_login_timeout("2s"))?;
    let ep = bed.endpoint();
    let load = Load::start(&ep, 4).await?;
    let mut failures = Vec::new();

    for (what, bytes) in pre_login_garbage() {
        let mut raw = RawConn::connect(&ep.addr()).await?;
        raw.send(&bytes).await?;
        raw.shutdown_write().await?;
        match raw.read_until_eof(Duration::from_secs(20)).await {
            Ok(msgs) if msgs.iter().all(|m| m.tag == b'E' || m.tag == b'N') => {}
            Ok(msgs) => failures.push(format!(
                "{what}: expected at most an ErrorResponse before close, got {:?}",
                msgs.iter().map(Msg::describe).collect::<Vec<_>>()
            )),
            Err(e) => failures.push(format!("{what}: {e:#}")),
        }
    }

    for (what, bytes) in post_login_garbage() {
        let mut raw = RawConn::login(&ep.addr(), &[("user", "app"), ("database", "app")], "app").await?;
        raw.send(&bytes).await?;
        // No shutdown here: the proxy must close on its own.
        match raw.read_until_eof(Duration::from_secs(20)).await {
            Ok(msgs) => {
                if let Some(m) = msgs.iter().find(|m| m.tag != b'E' && m.tag != b'N') {
                    failures.push(format!(
                        "{what}: expected an ErrorResponse and close, got {}",
                        m.describe()
                    ));
                }
            }
            Err(e) => failures.push(format!("{what}: {e:#}")),
        }
    }

    // A client that starts a startup packet and then stalls must be
    // dropped by client_login_timeout. (PostgreSQL's own limit is
    // authentication_timeout = 60 s, so this is checked only with the proxy.)
    // Closed within a few seconds of the setting: not before 2 s, and by 5 s.
    if !TestBed::direct_mode() {
        let sent = Instant::now();
        let mut stalled = RawConn::connect(&ep.addr()).await?;
        stalled.send(&100i32.to_be_bytes()).await?;
        match stalled.read_until_eof(Duration::from_secs(5)).await {
            Ok(_) => {
                let closed = sent.elapsed();
                println!("half-sent startup packet: closed after {closed:?} (client_login_timeout 2s)");
                if closed < Duration::from_millis(1900) {
                    failures.push(format!(
                        "half-sent startup packet: closed after {closed:?}, before client_login_timeout (2s)"
                    ));
                }
            }
            Err(e) => failures.push(format!(
                "half-sent startup packet: not closed within 5 s with client_login_timeout = 2s: {e:#}"
            )),
        }
    }

    let report = load.finish().await?;
    bed.ensure_proxy_alive()?;
    ensure!(
        failures.is_empty(),
        "malformed clients were not rejected cleanly:\n  {}",
        failures.join("\n  ")
    );
    ensure!(
        report.errors.is_empty() && report.ok > 0,
        "well-behaved clients were disturbed: {} ok, errors: {:#?}",
        report.ok,
        report.errors
    );
    // Still serving new clients.
    ep.connect_app()
        .await?
        .simple_query("SELECT 1")
        .await
        .ctx("fresh client")?;
    Ok(())
}

/// Tags of messages as a string, e.g. "12DCZ".
fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(Msg::tag_char).collect()
}

/// Read until `n` ReadyForQuery messages have arrived.
async fn read_batches(raw: &mut RawConn, n: usize) -> Result<Vec<Msg>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend(raw.read_until_ready().await?);
    }
    Ok(out)
}

#[tokio::test]
async fn raw_pipeline_with_an_error_in_the_middle() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(1))?;
    let addr = bed.endpoint().addr();
    let params = [("user", "app"), ("database", "app")];
    let mut raw = RawConn::login(&addr, &params, "app").await?;
    // Another client shares the single server between our batches.
    let mut other = RawConn::login(&addr, &params, "app").await?;

    let mut buf = BytesMut::new();
    for i in 0..3 {
        msg::parse(&mut buf, "", "SELECT $1::int * 2");
        msg::bind(&mut buf, "", "", &[Some(&i.to_string())]);
        msg::execute(&mut buf, "", 0);
    }
    msg::sync(&mut buf);
    msg::parse(&mut buf, "", "SELEKT broken");
    msg::bind(&mut buf, "", "", &[]);
    msg::execute(&mut buf, "", 0);
    msg::sync(&mut buf);
    msg::parse(&mut buf, "", "SELECT 'after error'");
    msg::bind(&mut buf, "", "", &[]);
    msg::execute(&mut buf, "", 0);
    msg::sync(&mut buf);
    raw.send(&buf).await?;
    let got = read_batches(&mut raw, 3).await?;
    let expected = "12DC12DC12DCZEZ12DCZ";
    ensure!(
        tags(&got) == expected,
        "pipeline replies: expected tags {expected}, got {} ({:?})",
        tags(&got),
        got.iter().map(Msg::describe).collect::<Vec<_>>()
    );
    let rows: Vec<_> = got.iter().filter_map(Msg::data_row).collect();
    ensure!(
        rows == vec![
            vec![Some("0".into())],
            vec![Some("2".into())],
            vec![Some("4".into())],
            vec![Some("after error".into())]
        ],
        "pipeline rows: {rows:?}"
    );
    let err = got.iter().find(|m| m.tag == b'E').expect("tags contain E");
    ensure!(err.sqlstate().as_deref() == Some("42601"), "{}", err.describe());
    other.query_one_value("SELECT 1").await?;

    // Named statement, used across transactions (and servers) until closed.
    let mut buf = BytesMut::new();
    msg::parse(&mut buf, "stmt_a", "SELECT $1::text || '!'");
    msg::describe(&mut buf, b'S', "stmt_a");
    msg::sync(&mut buf);
    raw.send(&buf).await?;
    let got = raw.read_until_ready().await?;
    ensure!(
        tags(&got) == "1tTZ",
        "Parse+Describe: got {:?}",
        got.iter().map(Msg::describe).collect::<Vec<_>>()
    );
    for i in 0..6 {
        other.query_one_value("SELECT 1").await?;
        let mut buf = BytesMut::new();
        msg::bind(&mut buf, "", "stmt_a", &[Some(&format!("v{i}"))]);
        msg::execute(&mut buf, "", 0);
        msg::sync(&mut buf);
        raw.send(&buf).await?;
        let got = raw.read_until_ready().await?;
        let rows: Vec<_> = got.iter().filter_map(Msg::data_row).collect();
        ensure!(
            tags(&got) == "2DCZ" && rows == vec![vec![Some(format!("v{i}!"))]],
            "Bind of stmt_a in transaction {i}: got {:?}",
            got.iter().map(Msg::describe).collect::<Vec<_>>()
        );
    }
    let mut buf = BytesMut::new();
    msg::close(&mut buf, b'S', "stmt_a");
    msg::sync(&mut buf);
    msg::bind(&mut buf, "", "stmt_a", &[Some("x")]);
    msg::execute(&mut buf, "", 0);
    msg::sync(&mut buf);
    raw.send(&buf).await?;
    let got = read_batches(&mut raw, 2).await?;
    ensure!(
        tags(&got) == "3ZEZ" && got[2].sqlstate().as_deref() == Some("26000"),
        "Close then Bind of the closed statement: expected 3ZEZ with 26000, got {:?}",
        got.iter().map(Msg::describe).collect::<Vec<_>>()
    );
    raw.terminate().await?;
    other.terminate().await?;
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn error_in_transaction_until_rollback() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(1))?;
    let client = bed.endpoint().connect_app().await?;
    let other = bed.endpoint().connect_app().await?;

    // Extended protocol.
    client.batch_execute("BEGIN").await.ctx("BEGIN")?;
    client.query("SELECT 1", &[]).await.ctx("first query")?;
    expect_sqlstate(
        client.query("SELECT 1/0", &[]).await,
        &["22012"],
        "division by zero",
    )?;
    expect_sqlstate(
        client.query("SELECT 1", &[]).await,
        &["25P02"],
        "query in an aborted transaction (extended)",
    )?;
    expect_sqlstate(
        client.simple_query("SELECT 1").await,
        &["25P02"],
        "query in an aborted transaction (simple)",
    )?;
    client.batch_execute("ROLLBACK").await.ctx("ROLLBACK")?;
    let v: i32 = client
        .query_one("SELECT 3", &[])
        .await
        .ctx("after ROLLBACK")?
        .get(0);
    ensure!(v == 3);
    other
        .simple_query("SELECT 1")
        .await
        .ctx("other client, after the rollback")?;

    // Simple protocol, with the failing statement in a multi-statement query.
    client.batch_execute("BEGIN").await.ctx("BEGIN")?;
    expect_sqlstate(
        client.batch_execute("SELECT 1; SELECT 1/0; SELECT 2").await,
        &["22012"],
        "multi-statement query with an error",
    )?;
    expect_sqlstate(
        client.batch_execute("SELECT 1").await,
        &["25P02"],
        "after the failed multi-statement query",
    )?;
    // COMMIT of a failed transaction rolls back.
    let rows = client
        .simple_query("COMMIT")
        .await
        .ctx("COMMIT of failed transaction")?;
    let tag = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    });
    ensure!(tag.is_some(), "COMMIT returned no CommandComplete");
    client
        .simple_query("SELECT 1")
        .await
        .ctx("after COMMIT of failed transaction")?;

    // An error outside a transaction does not poison the next statement.
    expect_sqlstate(
        client.query("SELECT 1/0", &[]).await,
        &["22012"],
        "autocommit error",
    )?;
    client
        .query("SELECT 1", &[])
        .await
        .ctx("after autocommit error")?;

    // Savepoints work inside a pooled transaction.
    client
        .batch_execute("BEGIN; CREATE TEMP TABLE IF NOT EXISTS sp(x int) ON COMMIT DROP; SAVEPOINT a")
        .await
        .ctx("savepoint setup")?;
    expect_sqlstate(
        client.query("SELECT 1/0", &[]).await,
        &["22012"],
        "error after savepoint",
    )?;
    client
        .batch_execute("ROLLBACK TO SAVEPOINT a; INSERT INTO sp VALUES (1)")
        .await
        .ctx("rollback to savepoint")?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM sp", &[])
        .await
        .ctx("count")?
        .get(0);
    ensure!(n == 1, "savepoint: {n} rows");
    client.batch_execute("COMMIT").await.ctx("COMMIT")?;
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn pipelined_queries_with_tokio_postgres() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(2))?;
    let client = bed.endpoint().connect_app().await?;
    let stmt = client.prepare("SELECT $1::int + 1000").await.ctx("prepare")?;
    // tokio-postgres pipelines concurrently polled queries on one connection.
    for in_transaction in [false, true] {
        if in_transaction {
            client.batch_execute("BEGIN").await.ctx("BEGIN")?;
        }
        let futures = (0..50).map(|i| {
            let client = &client;
            let stmt = &stmt;
            async move { client.query_one(stmt, &[&i]).await.map(|r| r.get::<_, i32>(0)) }
        });
        let results = futures_util::future::join_all(futures).await;
        for (i, r) in results.into_iter().enumerate() {
            let v = r.ctx(&format!("pipelined query {i}"))?;
            ensure!(v == i as i32 + 1000, "pipelined query {i} returned {v}");
        }
        if in_transaction {
            client.batch_execute("COMMIT").await.ctx("COMMIT")?;
        }
    }
    // A pipeline where one query fails: the others still get their answers.
    let ok1 = client.query_one("SELECT 1", &[]);
    let bad = client.query_one("SELECT 1/0", &[]);
    let ok2 = client.query_one("SELECT 2", &[]);
    let (ok1, bad, ok2) = tokio::join!(ok1, bad, ok2);
    ok1.ctx("first of pipeline")?;
    expect_sqlstate(bad, &["22012"], "failing query in a pipeline")?;
    let v: i32 = ok2.ctx("query after the failing one in a pipeline")?.get(0);
    ensure!(v == 2);
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn copy_in_and_out() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(1))?;
    let client = bed.endpoint().connect_app().await?;
    let other = bed.endpoint().connect_app().await?;
    client
        .batch_execute("CREATE TABLE copy_t (id int PRIMARY KEY, name text)")
        .await
        .ctx("create table")?;

    const ROWS: usize = 20_000;
    let sink = client
        .copy_in("COPY copy_t FROM STDIN")
        .await
        .ctx("COPY FROM STDIN")?;
    futures_util::pin_mut!(sink);
    let mut chunk = String::new();
    for i in 0..ROWS {
        chunk.push_str(&format!("{i}\tname {i}\n"));
        if chunk.len() > 16 * 1024 {
            sink.send(Bytes::from(std::mem::take(&mut chunk)))
                .await
                .ctx("sending COPY data")?;
        }
    }
    sink.send(Bytes::from(chunk)).await.ctx("sending COPY data")?;
    let n = sink.finish().await.ctx("finishing COPY")?;
    ensure!(n == ROWS as u64, "COPY FROM STDIN reported {n} rows, sent {ROWS}");
    other
        .simple_query("SELECT 1")
        .await
        .ctx("other client after COPY")?;

    let stream = client
        .copy_out("COPY (SELECT * FROM copy_t ORDER BY id) TO STDOUT")
        .await
        .ctx("COPY TO STDOUT")?;
    let chunks: Vec<Bytes> = stream.try_collect().await.ctx("reading COPY data")?;
    let data: Vec<u8> = chunks.concat();
    let text = String::from_utf8(data)?;
    let lines: Vec<&str> = text.lines().collect();
    ensure!(
        lines.len() == ROWS
            && lines[0] == "0\tname 0"
            && lines[ROWS - 1] == format!("{}\tname {}", ROWS - 1, ROWS - 1),
        "COPY TO STDOUT returned {} lines (first {:?}, last {:?}), expected {ROWS}",
        lines.len(),
        lines.first(),
        lines.last()
    );

    // Bad COPY data fails with 22P02 and leaves the connection usable.
    let sink = client
        .copy_in("COPY copy_t FROM STDIN")
        .await
        .ctx("second COPY FROM STDIN")?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"not-a-number\tx\n")).await.ok();
    let bad = sink.finish().await;
    ensure!(
        sqlstate_of(&bad) == Some("22P02"),
        "bad COPY row: expected SQLSTATE 22P02, got {:?}",
        bad.as_ref().map_err(describe_error)
    );
    // COPY inside a transaction that rolls back.
    client.batch_execute("BEGIN").await.ctx("BEGIN")?;
    let sink = client
        .copy_in("COPY copy_t FROM STDIN")
        .await
        .ctx("COPY in transaction")?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"-1\trolled back\n"))
        .await
        .ctx("COPY data in transaction")?;
    sink.finish().await.ctx("finish COPY in transaction")?;
    client.batch_execute("ROLLBACK").await.ctx("ROLLBACK")?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM copy_t", &[])
        .await
        .ctx("count after rollback")?
        .get(0);
    ensure!(
        n == ROWS as i64,
        "after rolled-back COPY: {n} rows, expected {ROWS}"
    );
    bed.ensure_proxy_alive()
}

/// tokio-postgres starts COPY FROM STDIN with Bind, Execute *and Sync*, and
/// sends CopyDone and another Sync later. PostgreSQL ignores Sync (and Flush)
/// while in copy-in mode, so only one ReadyForQuery follows; a proxy that
/// expects one per Sync gets out of step with the server.
#[tokio::test]
async fn sync_during_copy_in_is_ignored() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(1))?;
    bed.direct()
        .connect_app()
        .await?
        .batch_execute("CREATE TABLE copy_sync (x int)")
        .await
        .ctx("create table")?;
    let addr = bed.endpoint().addr();
    let mut raw = RawConn::login(&addr, &[("user", "app"), ("database", "app")], "app").await?;
    let mut buf = BytesMut::new();
    msg::parse(&mut buf, "copy_stmt", "COPY copy_sync FROM STDIN");
    msg::describe(&mut buf, b'S', "copy_stmt");
    msg::sync(&mut buf);
    raw.send(&buf).await?;
    let got = raw.read_until_ready().await?;
    ensure!(
        tags(&got) == "1tnZ",
        "Parse+Describe of COPY: {:?}",
        got.iter().map(Msg::describe).collect::<Vec<_>>()
    );

    let mut buf = BytesMut::new();
    msg::bind(&mut buf, "", "copy_stmt", &[]);
    msg::execute(&mut buf, "", 0);
    msg::sync(&mut buf);
    raw.send(&buf).await?;
    let mut got = vec![raw.expect_msg().await?, raw.expect_msg().await?];
    ensure!(
        tags(&got) == "2G",
        "Bind+Execute+Sync of COPY: {:?}",
        got.iter().map(Msg::describe).collect::<Vec<_>>()
    );

    let mut buf = BytesMut::new();
    msg::raw(&mut buf, b'd', b"1\n2\n");
    msg::raw(&mut buf, b'c', b"");
    msg::sync(&mut buf);
    msg::close(&mut buf, b'S', "copy_stmt");
    msg::sync(&mut buf);
    raw.send(&buf).await?;
    got = read_batches(&mut raw, 2).await?;
    ensure!(
        tags(&got) == "CZ3Z" && got[0].command_tag().as_deref() == Some("COPY 2"),
        "after CopyDone+Sync and Close+Sync: expected CommandComplete COPY 2, ReadyForQuery, \
         CloseComplete, ReadyForQuery (one ReadyForQuery per Sync outside copy mode), got {:?}",
        got.iter().map(Msg::describe).collect::<Vec<_>>()
    );
    let v = raw.query_one_value("SELECT count(*) FROM copy_sync").await?;
    ensure!(v.as_deref() == Some("2"), "count after COPY: {v:?}");
    raw.terminate().await?;
    bed.ensure_proxy_alive()
}

fn sqlstate_of<T>(r: &Result<T, tokio_postgres::Error>) -> Option<&str> {
    r.as_ref().err().and_then(sqlstate)
}
