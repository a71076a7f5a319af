//! The client-side timeouts of `[pool]`: a client idle too long, idle in a transaction too
//! long, with a statement running too long, or in one transaction too long gets one FATAL
//! error with the timeout's SQLSTATE and is disconnected; a statement still running is
//! cancelled on its server, a transaction is rolled back, and other clients go on.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_tests::client::Load;
use switchyard_tests::raw::{Msg, RawConn};
use switchyard_tests::{skip_if_direct, Endpoint, PgResultExt, ProxyConfig, TestBed};
use tokio_postgres::Client;

/// A transaction pool of one server with `key = value` among the `[pool]` settings.
fn bed(key: &str, value: &str) -> Result<TestBed> {
    TestBed::start_with(|c: ProxyConfig| {
        c.mode("transaction")
            .pool_size(1)
            .set(&format!("pool.{key}"), value)
    })
}

/// A superuser on the primary itself.
async fn dba(bed: &TestBed) -> Result<Client> {
    bed.direct().connect("postgres", "postgres", "app").await
}

async fn raw(endpoint: &Endpoint) -> Result<RawConn> {
    RawConn::login(&endpoint.addr(), &[("user", "app"), ("database", "app")], "app").await
}

/// Runs `sqls` on `conn`, each of which must succeed.
async fn run(conn: &mut RawConn, sqls: &[&str]) -> Result<()> {
    for sql in sqls {
        let r = conn.simple_query(sql).await?;
        ensure!(
            r.errors.is_empty(),
            "{sql}: {:?}",
            r.errors.iter().map(Msg::describe).collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// Reads what `conn` gets until the proxy closes it (within 10 s), and requires exactly one
/// FATAL ErrorResponse with `sqlstate`; returns how long that took.
async fn ended_with(conn: &mut RawConn, sqlstate: &str) -> Result<Duration> {
    let started = Instant::now();
    let got = conn.read_until_eof(Duration::from_secs(10)).await?;
    let took = started.elapsed();
    let described: Vec<String> = got.iter().map(Msg::describe).collect();
    ensure!(
        got.len() == 1
            && got[0].sqlstate().as_deref() == Some(sqlstate)
            && got[0].field(b'V').as_deref() == Some("FATAL"),
        "expected one FATAL {sqlstate} and the end of the connection, got {described:?}"
    );
    println!(
        "FATAL {sqlstate} after {took:?}: {}",
        got[0].field(b'M').unwrap_or_default()
    );
    Ok(took)
}

/// `client_idle_timeout = 500ms`: a client that sends nothing after logging in gets FATAL
/// 57P05 and is disconnected; a client that runs a query every 100 ms for 1.5 s meanwhile
/// gets all its rows.
#[tokio::test]
async fn client_idle_timeout_disconnects_only_the_idle_client() -> Result<()> {
    skip_if_direct!();
    let bed = bed("client_idle_timeout", "500ms")?;
    let ep = bed.endpoint();
    let mut idle = raw(&ep).await?;
    let busy = ep.connect_app().await?;
    let active = async {
        for i in 0..15 {
            let n: i32 = busy
                .query_one("SELECT $1::int", &[&i])
                .await
                .ctx("busy client")?
                .get(0);
            ensure!(n == i);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    };
    let (ended, active) = tokio::join!(ended_with(&mut idle, "57P05"), active);
    active?;
    ended?;
    Ok(())
}

/// `idle_transaction_timeout = 500ms`, one server: a client that opens a transaction,
/// inserts a row and goes quiet gets FATAL 25P03 and is disconnected; the row is not there;
/// the next client gets the same backend (rolled back and reused, not closed), outside the
/// abandoned transaction (its own has no transaction id yet).
#[tokio::test]
async fn idle_transaction_timeout_rolls_back_and_keeps_the_server() -> Result<()> {
    skip_if_direct!();
    let bed = bed("idle_transaction_timeout", "500ms")?;
    let ep = bed.endpoint();
    let dba = dba(&bed).await?;
    dba.batch_execute("CREATE TABLE idle_tx (n int); GRANT ALL ON idle_tx TO app")
        .await?;
    let mut a = raw(&ep).await?;
    run(&mut a, &["BEGIN", "INSERT INTO idle_tx VALUES (1)"]).await?;
    let pid = a
        .query_one_value("SELECT pg_backend_pid()")
        .await?
        .context("pid")?;
    ended_with(&mut a, "25P03").await?;
    let rows: i64 = dba.query_one("SELECT count(*) FROM idle_tx", &[]).await?.get(0);
    ensure!(rows == 0, "the abandoned transaction's row is there");
    let mut b = raw(&ep).await?;
    let row = b
        .simple_query("SELECT pg_backend_pid()::text, pg_current_xact_id_if_assigned() IS NULL")
        .await?
        .rows
        .pop()
        .context("no row")?;
    let next_pid = row[0].clone().unwrap_or_default();
    let own_transaction = row[1].as_deref() == Some("t");
    ensure!(
        next_pid == pid,
        "the next client got backend {next_pid}, not {pid}: the server was closed"
    );
    ensure!(
        own_transaction,
        "the next client ran inside the abandoned transaction"
    );
    Ok(())
}

/// `query_timeout = 500ms`: a client's `SELECT pg_sleep(5)` ends with FATAL 57014 well
/// before the 5 s, the statement is cancelled on the server (no backend runs it 3 s after
/// the start), and two other clients looping over transactions meanwhile see no error.
#[tokio::test]
async fn query_timeout_cancels_the_statement_and_spares_the_others() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|c| {
        c.mode("transaction")
            .pool_size(3)
            .set("pool.query_timeout", "500ms")
    })?;
    let ep = bed.endpoint();
    let dba = dba(&bed).await?;
    let load = Load::start(&ep, 2).await?;
    let mut a = raw(&ep).await?;
    let started = Instant::now();
    let mut query = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("SELECT pg_sleep(5)", &mut query)?;
    a.send(&query).await?;
    ended_with(&mut a, "57014").await?;
    ensure!(
        started.elapsed() < Duration::from_secs(4),
        "the statement was not cut short"
    );
    let running = loop {
        let n: i64 = dba
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)' AND state = 'active'", &[])
            .await?
            .get(0);
        if n == 0 || started.elapsed() > Duration::from_secs(3) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure!(
        running == 0,
        "the timed-out statement still runs on the server 3 s after it began"
    );
    let report = load.finish().await?;
    ensure!(
        report.errors.is_empty() && report.ok > 0,
        "other clients: {} ok, errors {:?}",
        report.ok,
        report.errors
    );
    Ok(())
}

/// `transaction_timeout = 800ms`: a client that keeps one transaction open, running a
/// statement every 100 ms (never idle long), gets FATAL 25P04 after about 0.8 s, and the
/// row it inserted at the start is rolled back.
#[tokio::test]
async fn transaction_timeout_ends_a_long_transaction() -> Result<()> {
    skip_if_direct!();
    let bed = bed("transaction_timeout", "800ms")?;
    let ep = bed.endpoint();
    let dba = dba(&bed).await?;
    dba.batch_execute("CREATE TABLE long_tx (n int); GRANT ALL ON long_tx TO app")
        .await?;
    let mut a = raw(&ep).await?;
    let started = Instant::now();
    run(&mut a, &["BEGIN", "INSERT INTO long_tx VALUES (1)"]).await?;
    let mut query = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("SELECT 1", &mut query)?;
    let ended = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.send(&query).await?;
        // Its replies up to ReadyForQuery, or a FATAL error.
        let mut fatal = None;
        while let Some(m) = a.read_msg_within(Duration::from_secs(5)).await? {
            if m.field(b'V').as_deref() == Some("FATAL") {
                fatal = Some(m.sqlstate());
                break;
            }
            if m.tag == b'Z' {
                break;
            }
        }
        if let Some(code) = fatal {
            break code;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(5),
            "no timeout within 5 s"
        );
    };
    println!("transaction ended after {:?}", started.elapsed());
    ensure!(
        ended.as_deref() == Some("25P04"),
        "ended with {ended:?}, not 25P04"
    );
    let rows: i64 = dba.query_one("SELECT count(*) FROM long_tx", &[]).await?.get(0);
    ensure!(rows == 0, "the timed-out transaction's row is there");
    Ok(())
}

/// `idle_transaction_timeout = 500ms` on a database that routes reads: a lone `BEGIN`,
/// which the proxy answers without a server (it waits for the block's first statement),
/// still opens a transaction, and a client idle in it gets FATAL 25P03.
#[tokio::test]
async fn idle_transaction_timeout_counts_a_begin_the_proxy_holds_back() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|c| {
        c.mode("transaction")
            .set("pool.idle_transaction_timeout", "500ms")
            .set("databases.app.read_routing", "replicas")
    })?;
    let mut a = raw(&bed.endpoint()).await?;
    let begin = a.simple_query("BEGIN").await?;
    ensure!(
        begin.errors.is_empty() && begin.status == b'T',
        "BEGIN: {begin:?}"
    );
    ended_with(&mut a, "25P03").await?;
    Ok(())
}
