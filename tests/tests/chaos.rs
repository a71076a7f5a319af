//! A bad network between the proxy and Postgres (`switchyard_tests::relay`): a reset in the
//! middle of a result, a stall, added latency, a connection gone silent (half-open). After
//! each, checked on the server: no backend left running the work of a broken connection,
//! every `app` backend has a live connection to the proxy (none leaked), and the proxy
//! hands out only servers that work (no wrong rows, no error for clients not involved).
//!
//! Every node address in these tests is the relay's; the DBA's checks go straight to the
//! primary. The proxy probes the node as `postgres` through the relay, so counting `app`
//! backends counts exactly the pooled servers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::BytesMut;
use switchyard_tests::cluster::ClusterOptions;
use switchyard_tests::proxy::ProxyConfig;
use switchyard_tests::raw::{msg, RawConn};
use switchyard_tests::relay::{Fault, Relay};
use switchyard_tests::{describe_error, skip_if_direct, Endpoint, TestBed};
use tokio_postgres::Client;

/// A primary, a relay in front of it, and the proxy whose only node is the relay (probed
/// every 100 ms as `postgres`, pool of 4), further configured by `configure`.
fn chaos_bed(configure: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Result<(TestBed, Relay)> {
    let mut relay = None;
    let bed = TestBed::start_full(ClusterOptions::default(), |cfg, pg| {
        let primary = SocketAddr::new(pg.primary().host().parse()?, pg.primary().port());
        let r = Relay::start(primary)?;
        let mut cfg = configure(
            cfg.pool_size(4)
                .set("clusters.main.probe_user", "postgres")
                .set("clusters.main.probe_interval", "100ms"),
        );
        let node = &mut cfg.clusters.get_mut("main").context("no cluster main")?.nodes[0];
        node.host = "127.0.0.1".to_owned();
        node.port = r.port();
        relay = Some(r);
        Ok(cfg)
    })?;
    Ok((bed, relay.context("the proxy was not configured (direct mode?)")?))
}

async fn dba(bed: &TestBed) -> Result<Client> {
    bed.direct().connect("postgres", "postgres", "app").await
}

/// Waits up to 10 s until no backend runs `sql` and every backend of `app` has a live
/// connection through the relay (the pool's servers, none left over). Returns the number
/// of `app` backends.
async fn backends_clean(dba: &Client, relay: &Relay, sql: &str) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = dba
            .query_one(
                "SELECT count(*) FILTER (WHERE query = $1 AND state <> 'idle'), \
                        count(*) FILTER (WHERE usename = 'app') \
                 FROM pg_stat_activity WHERE backend_type = 'client backend'",
                &[&sql],
            )
            .await?;
        let (running, app): (i64, i64) = (row.get(0), row.get(1));
        let relayed = relay.connections() as i64;
        if running == 0 && app <= relayed {
            return Ok(app);
        }
        if Instant::now() > deadline {
            bail!(
                "after 10 s: {running} backend(s) still run {sql:?}; {app} app backends, \
                 {relayed} connections through the relay (probes included)"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clients that each borrowed a server once, now idle: `n` connections of user `app`.
async fn idle_clients(endpoint: &Endpoint, n: usize) -> Result<Vec<Client>> {
    let mut clients = Vec::new();
    for i in 0..n {
        let c = endpoint.connect_app().await?;
        let v: i32 = c.query_one("SELECT $1::int", &[&(i as i32)]).await?.get(0);
        ensure!(v == i as i32, "client {i} got {v}");
        clients.push(c);
    }
    Ok(clients)
}

/// Each client runs `SELECT $1` with its own numbers, one after another, for `length`;
/// returns, per client, the errors (SQLSTATE and message, or a wrong row), the queries run
/// and the longest one.
async fn echo_for(clients: &[Client], length: Duration) -> Vec<(Vec<String>, usize, Duration)> {
    let end = Instant::now() + length;
    let runs = clients.iter().enumerate().map(|(i, c)| async move {
        let mut errors = Vec::new();
        let mut longest = Duration::ZERO;
        let mut queries = 0;
        while Instant::now() < end {
            let want = (i * 1_000_000 + queries) as i32;
            queries += 1;
            let started = Instant::now();
            match c.query_one("SELECT $1::int", &[&want]).await {
                Ok(row) if row.get::<_, i32>(0) == want => {}
                Ok(row) => errors.push(format!("wrong row: {} for {want}", row.get::<_, i32>(0))),
                Err(e) => errors.push(describe_error(&e)),
            }
            longest = longest.max(started.elapsed());
        }
        (errors, queries, longest)
    });
    futures_util::future::join_all(runs).await
}

/// Fails unless every client ran queries and saw no error; prints each client's count and
/// longest query.
fn no_errors(what: &str, results: &[(Vec<String>, usize, Duration)]) -> Result<()> {
    for (i, (errors, queries, longest)) in results.iter().enumerate() {
        println!(
            "{what}: client {i}: {queries} queries, {} error(s), longest {longest:?}",
            errors.len()
        );
        ensure!(*queries > 0, "{what}: client {i} ran no query");
        ensure!(errors.is_empty(), "{what}: client {i} got {errors:?}");
    }
    Ok(())
}

const BIG: &str = "SELECT g FROM generate_series(1, 20000000) g";

/// Every connection through the relay is reset (RST both ways) while one client is
/// receiving a 20-million-row result. Checks: that client gets rows 1..k in order, then a
/// FATAL 08006 and no CommandComplete (no truncated result passed off as complete); three
/// other clients, whose pooled servers were idle and were reset too, then run queries for
/// 1 s with 0 errors and the right rows (the dead servers are replaced unseen); the
/// server runs the big query no more and keeps no `app` backend beyond the relay's live
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_in_the_middle_of_a_result_costs_only_that_client_and_leaves_no_backend() -> Result<()> {
    skip_if_direct!();
    let (bed, relay) = chaos_bed(|cfg| cfg)?;
    let dba = dba(&bed).await?;
    let others = idle_clients(&bed.endpoint(), 3).await?;
    let mut conn = RawConn::login_app(&bed.endpoint().addr()).await?;
    let mut query = BytesMut::new();
    msg::query(&mut query, BIG);
    conn.send(&query).await?;
    let mut rows = 0u64;
    let mut reset_at = None;
    let end = loop {
        let m = conn
            .read_msg_within(Duration::from_secs(30))
            .await?
            .context("the proxy closed the connection without an error")?;
        match m.tag {
            b'D' => {
                rows += 1;
                let value = m.data_row().and_then(|r| r[0].clone());
                ensure!(value == Some(rows.to_string()), "row {rows} was {value:?}");
                if rows == 10_000 {
                    relay.reset_all();
                    reset_at = Some(Instant::now());
                }
            }
            b'T' => {}
            _ => break m,
        }
    };
    let reset_at = reset_at.context("the reset was never made")?;
    println!(
        "{rows} rows in order, then {} {:?} after {:?}",
        end.describe(),
        end.message(),
        reset_at.elapsed()
    );
    ensure!(
        end.tag == b'E' && end.sqlstate().as_deref() == Some("08006"),
        "expected FATAL 08006 after {rows} rows, got {}",
        end.describe()
    );
    ensure!(
        rows < 20_000_000,
        "all rows arrived: the reset came too late to test anything"
    );
    let after = conn.read_until_eof(Duration::from_secs(5)).await?;
    ensure!(after.is_empty(), "after the FATAL: {after:?}");

    no_errors(
        "after the reset",
        &echo_for(&others, Duration::from_secs(1)).await,
    )?;
    let app = backends_clean(&dba, &relay, BIG).await?;
    println!(
        "{app} app backend(s), {} connection(s) through the relay",
        relay.connections()
    );
    Ok(())
}

/// Four clients run `SELECT $1` one after another for 4 s while every connection through
/// the relay stalls for 2 s, from 1 s in (nothing read or forwarded; the proxy's probes time
/// out too). Checks: 0 errors and every row right for every client; prints each client's
/// longest query (about the stall).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_second_stall_fails_no_query() -> Result<()> {
    skip_if_direct!();
    let (bed, relay) = chaos_bed(|cfg| cfg)?;
    let clients = idle_clients(&bed.endpoint(), 4).await?;
    let stall = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        relay.set(Fault::Stall);
        tokio::time::sleep(Duration::from_secs(2)).await;
        relay.set(Fault::Latency(Duration::ZERO));
    };
    let (results, ()) = tokio::join!(echo_for(&clients, Duration::from_secs(4)), stall);
    no_errors("a 2 s stall", &results)?;
    Ok(())
}

/// 5 ms added to every chunk each way. Eight clients each commit 25 transactions (an
/// INSERT of their own row and an UPDATE of a shared counter). Checks: 0 errors, exactly
/// 200 rows, each (client, n) once, and the counter at 200; prints the time taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_latency_breaks_and_loses_no_transaction() -> Result<()> {
    skip_if_direct!();
    let (bed, relay) = chaos_bed(|cfg| cfg)?;
    let dba = dba(&bed).await?;
    dba.batch_execute(
        "CREATE TABLE chaos_rows (client int, n int, PRIMARY KEY (client, n)); \
         CREATE TABLE chaos_counter (total int); INSERT INTO chaos_counter VALUES (0); \
         GRANT ALL ON chaos_rows, chaos_counter TO app",
    )
    .await?;
    relay.set(Fault::Latency(Duration::from_millis(5)));
    let started = Instant::now();
    let endpoint = bed.endpoint();
    let runs = (0..8).map(|client: i32| {
        let endpoint = endpoint.clone();
        async move {
            let mut c = endpoint.connect_app().await?;
            for n in 0..25i32 {
                let tx = c.transaction().await?;
                tx.execute("INSERT INTO chaos_rows VALUES ($1, $2)", &[&client, &n])
                    .await?;
                tx.execute("UPDATE chaos_counter SET total = total + 1", &[])
                    .await?;
                tx.commit().await?;
            }
            anyhow::Ok(())
        }
    });
    for (i, r) in futures_util::future::join_all(runs).await.into_iter().enumerate() {
        r.with_context(|| format!("client {i}"))?;
    }
    println!("200 transactions with 5 ms latency in {:?}", started.elapsed());
    let row = dba
        .query_one(
            "SELECT (SELECT count(DISTINCT (client, n)) FROM chaos_rows), \
                    (SELECT count(*) FROM chaos_rows), (SELECT total FROM chaos_counter)",
            &[],
        )
        .await?;
    let (distinct, count, total): (i64, i64, i32) = (row.get(0), row.get(1), row.get(2));
    ensure!(
        (distinct, count, total) == (200, 200, 200),
        "rows {count} ({distinct} distinct), counter {total}: expected 200 each"
    );
    Ok(())
}

const SLOW: &str = "SELECT pg_sleep(1), 'half-open'";

/// A server connection goes silent (half-open: nothing gets through, no FIN, no RST) while
/// it runs a client's query, with `query_timeout = 2s`. Checks: that client gets FATAL
/// 57014 (printed: how long after the query); once the relay heals (resetting the silent
/// connections), a new client is served with the right row; the server runs the query no
/// more and keeps no `app` backend beyond the relay's live connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_server_gives_its_client_57014_at_query_timeout_and_leaves_no_backend() -> Result<()> {
    skip_if_direct!();
    let (bed, relay) = chaos_bed(|cfg| cfg.set("pool.query_timeout", "2s"))?;
    let dba = dba(&bed).await?;
    let client = bed.endpoint().connect_app().await?;
    let started = Instant::now();
    let query = client.simple_query(SLOW);
    let silence = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        relay.set(Fault::Silence);
    };
    let (result, ()) = tokio::join!(query, silence);
    let waited = started.elapsed();
    let e = match result {
        Ok(rows) => bail!("the query through a silent server answered: {rows:?}"),
        Err(e) => e,
    };
    println!("the client was told after {waited:?}: {}", describe_error(&e));
    ensure!(
        e.code().map(|c| c.code()) == Some("57014"),
        "expected 57014 (query_timeout), got {}",
        describe_error(&e)
    );
    relay.heal();
    let next = bed.endpoint().connect_app().await?;
    let v: i32 = next.query_one("SELECT 41 + 1", &[]).await?.get(0);
    ensure!(v == 42, "the next client got {v}");
    let app = backends_clean(&dba, &relay, SLOW).await?;
    println!("{app} app backend(s) after healing");
    Ok(())
}
