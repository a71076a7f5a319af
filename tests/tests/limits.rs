//! Limits under load (issue 18): partial Execute with a row limit (`PortalSuspended`)
//! through transaction pooling (tokio-postgres, raw protocol, pgjdbc's `setFetchSize`),
//! `pool.lifetime` and `idle_timeout` while clients keep working, `connect_timeout`
//! against a node that drops packets, graceful SIGTERM with transactions in flight (and
//! past `shutdown_timeout`), and a cluster with no primary for longer than `hold_timeout`
//! (also at start, and past `client_login_timeout`). Each test checks what the clients see
//! (rows, SQLSTATEs) and what the server keeps (`pg_stat_activity`, `pg_cursors`), and
//! prints the times it measured.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::BytesMut;
use switchyard_tests::client::app_backends;
use switchyard_tests::cluster::roles;
use switchyard_tests::raw::{msg, Msg, RawConn};
use switchyard_tests::{skip_if_direct, PgResultExt, TestBed};

/// A raw connection to the proxy as `app`.
async fn login(bed: &TestBed) -> Result<RawConn> {
    RawConn::login_app(&bed.endpoint().addr()).await
}

/// The tags of `replies`, as one string (`"12DDsZ"` style, for failure messages and
/// checks of a reply sequence's shape).
fn tags(replies: &[Msg]) -> String {
    replies.iter().map(Msg::tag_char).collect()
}

/// The single-column text values of the DataRows in `replies`, as integers.
fn int_rows(replies: &[Msg]) -> Result<Vec<i64>> {
    replies
        .iter()
        .filter_map(Msg::data_row)
        .map(|row| match row.as_slice() {
            [Some(v)] => v.parse::<i64>().with_context(|| format!("row value {v:?}")),
            other => bail!("expected one non-null column, got {other:?}"),
        })
        .collect()
}

/// Eight tokio-postgres clients over a transaction pool of three servers, each 10 times:
/// `BEGIN`, a portal over `generate_series(1, 1000)` bound with `Transaction::bind`, read
/// with `query_portal(&portal, 7)` until it returns no rows, `COMMIT`, and a statement
/// outside a transaction between rounds. Checks that every round got 1..=1000 exactly once
/// and in order (80 rounds, 80 000 rows), with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_read_in_chunks_through_transaction_pooling_gets_every_row_once() -> Result<()> {
    skip_if_direct!();
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 10;
    const ROWS: i64 = 1000;
    const CHUNK: i32 = 7;
    let bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(3))?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let mut client = bed.endpoint().connect_app().await?;
        tasks.push(tokio::spawn(async move {
            let mut chunks = 0usize;
            for round in 0..ROUNDS {
                let tx = client.transaction().await.ctx("BEGIN")?;
                let stmt = tx
                    .prepare("SELECT i::int8 FROM generate_series(1, $1::int8) i")
                    .await
                    .ctx("prepare")?;
                let portal = tx.bind(&stmt, &[&ROWS]).await.ctx("bind")?;
                let mut seen = Vec::new();
                loop {
                    let rows = tx.query_portal(&portal, CHUNK).await.ctx("query_portal")?;
                    if rows.is_empty() {
                        break;
                    }
                    chunks += 1;
                    ensure!(
                        rows.len() <= CHUNK as usize,
                        "client {id} round {round}: {} rows for a limit of {CHUNK}",
                        rows.len()
                    );
                    seen.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
                }
                tx.commit().await.ctx("COMMIT")?;
                ensure!(
                    seen == (1..=ROWS).collect::<Vec<_>>(),
                    "client {id} round {round}: {} rows, not 1..={ROWS} in order (first {:?})",
                    seen.len(),
                    &seen[..seen.len().min(10)]
                );
                let one: i32 = client.query_one("SELECT 1", &[]).await.ctx("SELECT 1")?.get(0);
                ensure!(one == 1);
            }
            Ok::<_, anyhow::Error>(chunks)
        }));
    }
    let mut chunks = 0;
    for t in tasks {
        chunks += t.await.context("client task")??;
    }
    println!(
        "{CLIENTS} clients x {ROUNDS} portals of {ROWS} rows read {CHUNK} at a time ({chunks} chunks) in {:?}",
        started.elapsed()
    );
    let expected = CLIENTS * ROUNDS * (ROWS as usize).div_ceil(CHUNK as usize);
    ensure!(chunks == expected, "{chunks} chunks read, expected {expected}");
    Ok(())
}

/// Execute with a row limit in the raw protocol, over a pool of one server: in an implicit
/// transaction (`Parse`, `Bind`, `Execute(2)`, `Execute(2)`, `Execute(0)`, `Sync`) and in an
/// explicit one (`BEGIN`, then one `Execute(3)` + `Sync` per round trip). Checks the exact
/// reply sequence, a `PortalSuspended` ('s') after each limited Execute that had more rows,
/// the rows in order, and the ReadyForQuery statuses ('I', then 'T' inside the block).
/// Then the client leaves with a portal suspended inside its transaction, and the next
/// client (on the pool's only server, reset, or a new one) must be outside any transaction
/// with no open cursor (`pg_cursors`), and no server of `app` may be left idle in a
/// transaction (`pg_stat_activity`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_suspended_replies_and_a_clean_server_for_the_next_client() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(1))?;
    let mut conn = login(&bed).await?;

    // Implicit transaction: three Executes of one portal in one batch.
    let mut batch = BytesMut::new();
    msg::parse(&mut batch, "", "SELECT i FROM generate_series(1, 5) i");
    msg::bind(&mut batch, "", "", &[]);
    msg::execute(&mut batch, "", 2);
    msg::execute(&mut batch, "", 2);
    msg::execute(&mut batch, "", 0);
    msg::sync(&mut batch);
    conn.send(&batch).await?;
    let replies = conn.read_until_ready().await?;
    println!("implicit transaction: {}", tags(&replies));
    ensure!(
        tags(&replies) == "12DDsDDsDCZ",
        "replies: {:?}",
        replies.iter().map(Msg::describe).collect::<Vec<_>>()
    );
    ensure!(int_rows(&replies)? == [1, 2, 3, 4, 5]);
    ensure!(replies.last().and_then(Msg::ready_status) == Some(b'I'));

    // Explicit transaction: one round trip per chunk, the portal kept across Syncs.
    let begin = conn.simple_query("BEGIN").await?;
    ensure!(
        begin.errors.is_empty() && begin.status == b'T',
        "BEGIN: status {}",
        begin.status
    );
    let pid_inside = conn.query_one_value("SELECT pg_backend_pid()").await?;
    let mut bind = BytesMut::new();
    msg::parse(&mut bind, "", "SELECT i FROM generate_series(1, 8) i");
    msg::bind(&mut bind, "c1", "", &[]);
    msg::sync(&mut bind);
    conn.send(&bind).await?;
    let replies = conn.read_until_ready().await?;
    ensure!(tags(&replies) == "12Z", "Parse/Bind replies: {}", tags(&replies));
    let mut rows = Vec::new();
    let mut shapes = Vec::new();
    loop {
        let mut exec = BytesMut::new();
        msg::execute(&mut exec, "c1", 3);
        msg::sync(&mut exec);
        conn.send(&exec).await?;
        let replies = conn.read_until_ready().await?;
        shapes.push(tags(&replies));
        ensure!(
            replies.last().and_then(Msg::ready_status) == Some(b'T'),
            "inside the block, ReadyForQuery must say 'T': {}",
            tags(&replies)
        );
        rows.extend(int_rows(&replies)?);
        if replies.iter().any(|m| m.tag == b'C') {
            break;
        }
        ensure!(shapes.len() < 10, "the portal never completed: {shapes:?}");
    }
    println!("explicit transaction, 3 rows per Execute: {shapes:?}");
    ensure!(shapes == ["DDDsZ", "DDDsZ", "DDCZ"], "reply shapes {shapes:?}");
    ensure!(rows == (1..=8).collect::<Vec<_>>(), "rows {rows:?}");

    // Leave with a portal suspended inside the transaction.
    let mut bind = BytesMut::new();
    msg::parse(&mut bind, "", "SELECT i FROM generate_series(1, 1000000) i");
    msg::bind(&mut bind, "c2", "", &[]);
    msg::execute(&mut bind, "c2", 10);
    msg::sync(&mut bind);
    conn.send(&bind).await?;
    let replies = conn.read_until_ready().await?;
    ensure!(
        tags(&replies) == format!("12{}sZ", "D".repeat(10)),
        "replies {}",
        tags(&replies)
    );
    conn.terminate().await?;

    let mut next = login(&bed).await?;
    let res = next
        .simple_query(
            "SELECT pg_backend_pid()::text || ' ' || (SELECT count(*) FROM pg_cursors)::text \
             || ' ' || (now() = statement_timestamp())::text",
        )
        .await?;
    ensure!(
        res.errors.is_empty(),
        "next client: {:?}",
        res.errors.iter().map(Msg::describe).collect::<Vec<_>>()
    );
    ensure!(
        res.status == b'I',
        "the next client is in a transaction ({})",
        res.status as char
    );
    let seen = res
        .rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    println!(
        "next client: backend pid, open cursors, own transaction = {seen:?} (the portal's client had {pid_inside:?})"
    );
    let fields: Vec<&str> = seen.split(' ').collect();
    ensure!(
        fields.get(1..) == Some(&["0", "true"][..]),
        "the next client sees cursors or a transaction left behind: {seen:?}"
    );
    let direct = bed.direct().connect("postgres", "postgres", "postgres").await?;
    let in_tx: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
             AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .ctx("pg_stat_activity")?
        .get(0);
    ensure!(in_tx == 0, "{in_tx} server(s) of app left idle in transaction");
    Ok(())
}

/// pgjdbc with `setFetchSize(7)`: four connections over a transaction pool of two, 25
/// transactions each, every one of which reads `generate_series(1, 1000)` seven rows at a
/// time (pgjdbc's Execute with a row limit) besides its prepared statements and an insert.
/// Checks the script's report: 100 transactions committed, every row checked in order,
/// 0 errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_fetch_size_through_transaction_pooling_gets_every_row() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(2))?;
    let target = bed.endpoint().client_target("app", "app", "app");
    let started = Instant::now();
    let report = tokio::task::spawn_blocking(move || {
        switchyard_tests::Driver::Jdbc.run_with(&target, 4, 25, &["--fetch-size", "7"])
    })
    .await??;
    println!(
        "pgjdbc with setFetchSize(7): ok={} errors={} in {:?}",
        report.ok,
        report.errors,
        started.elapsed()
    );
    bed.ensure_proxy_alive()?;
    ensure!(
        report.errors == 0 && report.ok == 100,
        "{}",
        report.output.describe("pgjdbc with setFetchSize(7)")
    );
    Ok(())
}

/// What a sampler of `pg_stat_activity` saw of the servers of user `app` on database `app`.
#[derive(Debug, Default)]
struct Backends {
    /// Every backend pid seen.
    pids: BTreeSet<i32>,
    /// The oldest backend seen, by `now() - backend_start`, in milliseconds.
    oldest_ms: i64,
    samples: u64,
}

/// Samples the servers of `app` on `app` on the primary (directly, as the superuser) every
/// 50 ms until `stop` is set.
async fn sample_backends(
    bed: &TestBed,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<tokio::task::JoinHandle<Result<Backends>>> {
    let direct = bed.direct().connect("postgres", "postgres", "postgres").await?;
    Ok(tokio::spawn(async move {
        let mut seen = Backends::default();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let rows = direct
                .query(
                    "SELECT pid, (extract(epoch FROM now() - backend_start) * 1000)::int8 \
                     FROM pg_stat_activity WHERE usename = 'app' AND datname = 'app' \
                     AND backend_type = 'client backend'",
                    &[],
                )
                .await
                .ctx("sampling pg_stat_activity")?;
            for row in rows {
                seen.pids.insert(row.get(0));
                seen.oldest_ms = seen.oldest_ms.max(row.get(1));
            }
            seen.samples += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(seen)
    }))
}

/// Waits up to 5 s for the primary to have no server of user `app` on database `app`;
/// returns how many are left and how long it waited.
async fn wait_no_app_backends(bed: &TestBed) -> Result<(i64, Duration)> {
    let direct = bed.direct().connect("postgres", "postgres", "postgres").await?;
    let started = Instant::now();
    loop {
        let left = app_backends(&direct).await?;
        if left == 0 || started.elapsed() >= Duration::from_secs(5) {
            return Ok((left, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `lifetime = 1s`, `idle_timeout = 500ms`, a transaction pool of 4: six tokio-postgres
/// clients loop over `BEGIN; SELECT $1; SELECT $1 + 1; COMMIT` (prepared statements) for
/// 10 s while a sampler reads `pg_stat_activity`. Checks 0 failed transactions, that servers
/// were replaced (at least 16 distinct backend pids for a pool of 4, about one generation
/// per second), that no server was seen older than lifetime + 3 s (the reaper runs once a
/// second and a server is closed at its next transaction boundary), and that once the load
/// stops every server is closed within 5 s (idle_timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_and_idle_timeout_rotate_servers_under_load_without_errors() -> Result<()> {
    skip_if_direct!();
    const POOL: u32 = 4;
    let bed = TestBed::start_with(|cfg| {
        cfg.mode("transaction")
            .pool_size(POOL)
            .set("pool.lifetime", "1s")
            .set("pool.idle_timeout", "500ms")
    })?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_backends(&bed, stop.clone()).await?;
    let load = switchyard_tests::client::Load::start(&bed.endpoint(), 6).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = load.finish().await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = sampler.await.context("sampler")??;
    println!(
        "{} transactions, {} errors; {} distinct servers over {} samples, the oldest seen {} ms old",
        report.ok,
        report.errors.len(),
        seen.pids.len(),
        seen.samples,
        seen.oldest_ms
    );
    let (left, waited) = wait_no_app_backends(&bed).await?;
    println!("after the load: {left} servers left after {waited:?}");
    ensure!(
        report.errors.is_empty() && report.ok > 0,
        "{} transactions, errors: {:?}",
        report.ok,
        report.errors
    );
    ensure!(
        seen.pids.len() >= 4 * POOL as usize,
        "only {} distinct servers in 10 s with lifetime = 1s and a pool of {POOL}: servers were not replaced",
        seen.pids.len()
    );
    ensure!(
        seen.oldest_ms < 4000,
        "a server {} ms old was seen with lifetime = 1s",
        seen.oldest_ms
    );
    ensure!(
        left == 0,
        "{left} idle servers still open 5 s after the load stopped (idle_timeout = 500ms)"
    );
    Ok(())
}

/// Whether a TCP connect to `addr` is refused (nothing listens there any more).
fn connect_refused(addr: std::net::SocketAddr) -> bool {
    matches!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Sends a simple Query on `conn` and reads its replies up to ReadyForQuery; fails on an
/// ErrorResponse.
async fn run(conn: &mut RawConn, sql: &str) -> Result<Vec<Msg>> {
    let mut query = BytesMut::new();
    msg::query(&mut query, sql);
    conn.send(&query).await?;
    let replies = conn
        .read_until_ready()
        .await
        .with_context(|| format!("{sql:?}"))?;
    if let Some(e) = replies.iter().find(|m| m.tag == b'E') {
        bail!("{sql:?} failed: {}", e.describe());
    }
    Ok(replies)
}

/// The values in `sigterm_t` on the primary, read directly.
async fn stored_values(bed: &TestBed) -> Result<Vec<i32>> {
    let direct = bed.direct().connect_app().await?;
    let rows = direct
        .query("SELECT v FROM sigterm_t ORDER BY v", &[])
        .await
        .ctx("reading sigterm_t")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// SIGTERM with `shutdown_timeout = 20s`, transaction pooling, while four clients are
/// inside open transactions (one has inserted a row; one has only sent `BEGIN`; one has
/// only sent `BEGIN` on a database with read routing, where the proxy answers the `BEGIN`
/// itself and holds no server yet; one is on a session-mode database and has inserted a
/// row), three clients are idle (one of transaction mode, one of session mode, which keeps
/// its server, and an admin console client) and a tokio-postgres client runs a 2 s
/// `pg_sleep` outside a transaction. Checks that new connections are refused (TCP:
/// connection refused) within 2 s, that the three idle clients get `FATAL 57P01` and are
/// disconnected at once, that the four open transactions go on and their `COMMIT`s succeed
/// (rows 1 to 5 on the server, read directly), that each of those clients then gets `FATAL
/// 57P01` and is disconnected, that the running statement returns its row, and that the
/// proxy exits with status 0 within 5 s of the last commit, well before `shutdown_timeout`,
/// leaving no server of `app` on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_transactions_finish_then_exits_0() -> Result<()> {
    sigterm_lets_open_transactions_finish(|cfg| cfg).await
}

/// The same with `threading = "per-core"` and three workers, each with its own listener:
/// every listener stops accepting, every worker's clients are told or finish their
/// transactions, and the proxy exits 0 with no server left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_sigterm_lets_open_transactions_finish_then_exits_0() -> Result<()> {
    sigterm_lets_open_transactions_finish(per_core).await
}

/// `threading = "per-core"` with three workers.
fn per_core(cfg: switchyard_tests::ProxyConfig) -> switchyard_tests::ProxyConfig {
    cfg.set("proxy.threading", "per-core").set("proxy.workers", 3)
}

/// The body of the two tests above, with the proxy configured further by `configure`.
async fn sigterm_lets_open_transactions_finish(
    configure: impl FnOnce(switchyard_tests::ProxyConfig) -> switchyard_tests::ProxyConfig,
) -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| {
        configure(cfg)
            .mode("transaction")
            .pool_size(4)
            .set("proxy.shutdown_timeout", "20s")
            .with_admin()
            .set("databases.routed.cluster", "main")
            .set("databases.routed.dbname", "app")
            .set("databases.routed.read_routing", "replicas_or_primary")
            .set("databases.sessions.cluster", "main")
            .set("databases.sessions.dbname", "app")
            .set("databases.sessions.pool_mode", "session")
    })?;
    let mut first = login(&bed).await?;
    run(&mut first, "CREATE TABLE sigterm_t (v int)").await?;
    run(&mut first, "BEGIN; INSERT INTO sigterm_t VALUES (1)").await?;
    let mut second = login(&bed).await?;
    run(&mut second, "BEGIN").await?;
    let (user, password) = roles::APP;
    let mut routed = RawConn::login(
        &bed.endpoint().addr(),
        &[("user", user), ("database", "routed")],
        password,
    )
    .await?;
    run(&mut routed, "BEGIN").await?;
    let mut in_session = RawConn::login(
        &bed.endpoint().addr(),
        &[("user", user), ("database", "sessions")],
        password,
    )
    .await?;
    run(&mut in_session, "BEGIN; INSERT INTO sigterm_t VALUES (5)").await?;
    let mut idle_session = RawConn::login(
        &bed.endpoint().addr(),
        &[("user", user), ("database", "sessions")],
        password,
    )
    .await?;
    run(&mut idle_session, "SELECT 1").await?;
    let mut idle = login(&bed).await?;
    run(&mut idle, "SELECT 1").await?;
    let mut console = RawConn::login(
        &bed.endpoint().addr(),
        &[("user", "admin"), ("database", "switchyard")],
        "admin",
    )
    .await?;
    run(&mut console, "SHOW POOLS").await?;
    let sleeper = bed.endpoint().connect_app().await?;
    let sleeping = tokio::spawn(async move {
        sleeper
            .query_one("SELECT 7 FROM pg_sleep(2)", &[])
            .await
            .map(|r| r.get::<_, i32>(0))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let proxy = bed.proxy().context("the proxy")?;
    let addr = proxy.addr();
    let signalled = Instant::now();
    proxy.signal(libc::SIGTERM);
    for (conn, who) in [
        (&mut idle, "the idle client"),
        (&mut idle_session, "the idle session-mode client"),
        (&mut console, "the admin console client"),
    ] {
        let told = conn
            .expect_closed_with("57P01", Duration::from_secs(5), who)
            .await?;
        println!("{who} told after {:?}: {}", signalled.elapsed(), told.describe());
    }
    while !connect_refused(addr) {
        ensure!(
            signalled.elapsed() < Duration::from_secs(2),
            "new connections still accepted 2 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("new connections refused {:?} after SIGTERM", signalled.elapsed());

    run(&mut first, "INSERT INTO sigterm_t VALUES (2)").await?;
    run(&mut second, "INSERT INTO sigterm_t VALUES (3)").await?;
    run(&mut routed, "INSERT INTO sigterm_t VALUES (4)").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    first
        .commit_then_closed_with("57P01", Duration::from_secs(5), "the first client")
        .await?;
    routed
        .commit_then_closed_with("57P01", Duration::from_secs(5), "the read-routed client")
        .await?;
    in_session
        .commit_then_closed_with("57P01", Duration::from_secs(5), "the session-mode client")
        .await?;
    second
        .commit_then_closed_with("57P01", Duration::from_secs(5), "the second client")
        .await?;
    let last_commit = Instant::now();
    let slept = tokio::time::timeout(Duration::from_secs(10), sleeping)
        .await
        .context("the running statement did not return")?
        .context("sleeper task")?
        .ctx("the statement running at SIGTERM")?;
    ensure!(slept == 7, "the running statement returned {slept}");

    let proxy = bed.proxy().context("the proxy")?;
    let status = proxy.wait_exit(Duration::from_secs(5))?;
    println!(
        "proxy exited with {status:?} {:?} after the last COMMIT, {:?} after SIGTERM",
        last_commit.elapsed(),
        signalled.elapsed()
    );
    ensure!(
        status.is_some_and(|s| s.success()),
        "the proxy did not exit with status 0 within 5 s of the last transaction: {status:?}"
    );
    let stored = stored_values(&bed).await?;
    ensure!(stored == [1, 2, 3, 4, 5], "rows on the server: {stored:?}");
    let (left, _) = wait_no_app_backends(&bed).await?;
    ensure!(
        left == 0,
        "{left} servers of app still on the primary after the proxy exited"
    );
    Ok(())
}

/// SIGTERM with `shutdown_timeout = 2s` while a client stays inside a transaction that has
/// inserted a row and never commits. Checks that its connection is closed (with `FATAL
/// 57P01`) about `shutdown_timeout` after the signal (between 1.5 s and 10 s), that the
/// proxy exits with status 0, that the row is not on the server (the transaction was
/// rolled back) and that no server of `app` is left on the primary (`pg_stat_activity`,
/// within 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_shutdown_timeout_closes_clients_and_rolls_back() -> Result<()> {
    sigterm_past_shutdown_timeout(|cfg| cfg).await
}

/// The same with `threading = "per-core"` and three workers: the stuck client's worker
/// closes it at `shutdown_timeout` while the other workers have drained, the row is
/// rolled back, and the proxy exits 0 with no server left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_sigterm_past_shutdown_timeout_closes_clients_and_rolls_back() -> Result<()> {
    sigterm_past_shutdown_timeout(per_core).await
}

/// The body of the two tests above, with the proxy configured further by `configure`.
async fn sigterm_past_shutdown_timeout(
    configure: impl FnOnce(switchyard_tests::ProxyConfig) -> switchyard_tests::ProxyConfig,
) -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| {
        configure(cfg)
            .mode("transaction")
            .pool_size(2)
            .set("proxy.shutdown_timeout", "2s")
    })?;
    let mut stuck = login(&bed).await?;
    run(&mut stuck, "CREATE TABLE sigterm_t (v int)").await?;
    run(&mut stuck, "BEGIN; INSERT INTO sigterm_t VALUES (1)").await?;
    let proxy = bed.proxy().context("the proxy")?;
    let signalled = Instant::now();
    proxy.signal(libc::SIGTERM);
    let told = stuck
        .expect_closed_with(
            "57P01",
            Duration::from_secs(10),
            "the client left in its transaction",
        )
        .await;
    let closed_after = signalled.elapsed();
    println!(
        "client in a transaction closed {closed_after:?} after SIGTERM: {:?}",
        told.as_ref().map(Msg::describe)
    );
    let status = bed
        .proxy()
        .context("the proxy")?
        .wait_exit(Duration::from_secs(5))?;
    println!(
        "proxy exited with {status:?} {:?} after SIGTERM",
        signalled.elapsed()
    );
    let (left, _) = wait_no_app_backends(&bed).await?;
    let stored = stored_values(&bed).await?;
    told?;
    ensure!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(10),
        "the client was closed {closed_after:?} after SIGTERM (shutdown_timeout = 2s)"
    );
    ensure!(
        status.is_some_and(|s| s.success()),
        "the proxy did not exit with status 0: {status:?}"
    );
    ensure!(
        stored.is_empty(),
        "the unfinished transaction's rows are on the server: {stored:?}"
    );
    ensure!(
        left == 0,
        "{left} servers of app still on the primary after the proxy exited"
    );
    Ok(())
}

/// SIGTERM with `shutdown_timeout = 2s` while a client's autocommit write is still running
/// (`INSERT ... SELECT 1 FROM pg_sleep(8)`: it would insert its row 8 s after it started).
/// Checks that the client is closed with `FATAL 57P01` (between 1.5 s and 10 s after the
/// signal), that the proxy exits 0, that the statement's backend is gone from the primary
/// within 5 s of the exit (before the sleep could end) and that, once the 8 s have passed,
/// the row is not there: the statement was cancelled, not left to commit behind a client
/// that was told it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_shutdown_timeout_cancels_a_running_write() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| {
        cfg.mode("transaction")
            .pool_size(2)
            .set("proxy.shutdown_timeout", "2s")
    })?;
    let mut writer = login(&bed).await?;
    run(&mut writer, "CREATE TABLE sigterm_t (v int)").await?;
    let write = "INSERT INTO sigterm_t SELECT 1 FROM pg_sleep(8)";
    let mut query = BytesMut::new();
    msg::query(&mut query, write);
    writer.send(&query).await?;
    let started = Instant::now();
    let dba = bed.direct().connect("postgres", "postgres", "postgres").await?;
    switchyard_tests::client::backend_running(&dba, write).await?;
    let signalled = Instant::now();
    bed.proxy().context("the proxy")?.signal(libc::SIGTERM);
    let told = writer
        .expect_closed_with("57P01", Duration::from_secs(10), "the writer")
        .await;
    let closed_after = signalled.elapsed();
    println!(
        "writer closed {closed_after:?} after SIGTERM: {:?}",
        told.as_ref().map(Msg::describe)
    );
    let status = bed
        .proxy()
        .context("the proxy")?
        .wait_exit(Duration::from_secs(5))?;
    let (left, waited) = wait_no_app_backends(&bed).await?;
    println!(
        "{left} backends of app left {waited:?} after the proxy exited ({:?} after the write started)",
        started.elapsed()
    );
    told?;
    ensure!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(10),
        "the writer was closed {closed_after:?} after SIGTERM (shutdown_timeout = 2s)"
    );
    ensure!(
        status.is_some_and(|s| s.success()),
        "the proxy did not exit with status 0: {status:?}"
    );
    ensure!(
        left == 0,
        "the write's backend still runs {waited:?} after the proxy exited: not cancelled"
    );
    // Past the moment the uncancelled statement would have inserted its row.
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(started.elapsed())).await;
    let stored = stored_values(&bed).await?;
    ensure!(
        stored.is_empty(),
        "the write its client was told failed (57P01) committed: {stored:?}"
    );
    Ok(())
}

/// The proxy configuration of the no-primary tests: the cluster probed every 100 ms as
/// `app`, transactions held up to 2 s while there is no primary.
fn probed_with_short_hold(cfg: switchyard_tests::ProxyConfig) -> switchyard_tests::ProxyConfig {
    cfg.mode("transaction")
        .pool_size(2)
        .set("clusters.main.probe_user", "app")
        .set("clusters.main.probe_database", "app")
        .set("clusters.main.probe_interval", "100ms")
        .set("clusters.main.hold_timeout", "2s")
}

/// The only node stopped (fast) under a connected tokio-postgres client, with
/// `hold_timeout = 2s` and probing. Checks that the client's next statement fails with
/// `57P03` and a message naming `hold_timeout`, after between 1.5 s and 10 s (about
/// `hold_timeout`), that the client's connection survives it (an ERROR, not a FATAL), and
/// that once the node is started again the same client's next statement and a new
/// client's succeed, without restarting the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_primary_past_hold_timeout_gives_57p03_then_recovers() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(probed_with_short_hold)?;
    let client = bed.endpoint().connect_app().await?;
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .ctx("before the stop")?
        .get(0);
    ensure!(one == 1);
    bed.pg_mut().primary_mut().stop("fast")?;
    let started = Instant::now();
    let err = client.query_one("SELECT 2", &[]).await;
    let waited = started.elapsed();
    let db = switchyard_tests::expect_sqlstate(err, &["57P03"], "a statement with no primary")?;
    println!("no primary: 57P03 after {waited:?}: {}", db.message());
    ensure!(
        db.message().contains("hold_timeout"),
        "the message should name hold_timeout: {}",
        db.message()
    );
    ensure!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "57P03 came {waited:?} after the statement (hold_timeout = 2s)"
    );
    ensure!(!client.is_closed(), "the client was disconnected by the 57P03");

    bed.pg_mut().primary_mut().start()?;
    let restarted = Instant::now();
    let two: i32 = client
        .query_one("SELECT 2", &[])
        .await
        .ctx("the same client once the node is back")?
        .get(0);
    ensure!(two == 2);
    println!(
        "the same client served {:?} after the node started",
        restarted.elapsed()
    );
    let fresh = bed.endpoint().connect_app().await?;
    let three: i32 = fresh.query_one("SELECT 3", &[]).await.ctx("a new client")?.get(0);
    ensure!(three == 3);
    bed.ensure_proxy_alive()
}

/// The proxy started while its only node is down (probed, `hold_timeout = 2s`). Checks that
/// it starts and keeps running, that a client's login fails with `57P03` (the pool's first
/// login needs a server) after between 1.5 s and 10 s, and that once Postgres starts a
/// new client logs in and runs a statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_started_with_every_node_down_serves_once_one_starts() -> Result<()> {
    skip_if_direct!();
    let mut pg = switchyard_tests::PgCluster::start()?;
    let config = probed_with_short_hold(switchyard_tests::ProxyConfig::for_cluster(&pg));
    pg.primary_mut().stop("fast")?;
    let mut proxy = switchyard_tests::Proxy::start(config)?;
    let endpoint = switchyard_tests::Endpoint::new(&proxy.host(), proxy.port());
    let started = Instant::now();
    let (user, password) = roles::APP;
    let refused = switchyard_tests::client::connect(&endpoint.config(user, password, roles::APP_DB)).await;
    let waited = started.elapsed();
    let db = switchyard_tests::expect_sqlstate(refused, &["57P03"], "a login with every node down")?;
    println!(
        "login with every node down: 57P03 after {waited:?}: {}",
        db.message()
    );
    ensure!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "57P03 came {waited:?} after the login (hold_timeout = 2s)"
    );
    proxy.ensure_running()?;

    pg.primary_mut().start()?;
    let restarted = Instant::now();
    let client = endpoint.connect_app().await?;
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .ctx("once the node is up")?
        .get(0);
    ensure!(one == 1);
    println!("served {:?} after the node started", restarted.elapsed());
    proxy.ensure_running()
}

/// A TCP address on loopback that drops connection attempts: a listener with a backlog of
/// 0 that never accepts, its queue filled, so that the kernel drops further SYNs and a
/// connect hangs until its own timeout, like a host behind a firewall that drops packets.
struct BlackHole {
    listener: std::net::TcpListener,
    /// The connections that fill the queue.
    _queued: Vec<std::net::TcpStream>,
}

impl BlackHole {
    fn new() -> Result<Self> {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        // SAFETY: listen(2) on a socket this function owns; it only changes the backlog.
        ensure!(
            unsafe { libc::listen(listener.as_raw_fd(), 0) } == 0,
            "listen(backlog 0): {}",
            std::io::Error::last_os_error()
        );
        let addr = listener.local_addr()?;
        let mut queued = Vec::new();
        while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            queued.push(s);
            ensure!(queued.len() < 16, "the listen queue does not fill up");
        }
        Ok(Self {
            listener,
            _queued: queued,
        })
    }

    fn port(&self) -> Result<u16> {
        Ok(self.listener.local_addr()?.port())
    }
}

/// `connect_timeout = 1s`, a database `dark` on a cluster whose only node drops packets
/// ([`BlackHole`]). Checks that a client logging in to `dark` gets `FATAL 08006` whose
/// message says the connect timed out after 1s, between 0.8 s and 5 s after it started, twice in a
/// row, while a client of `app` (on another cluster) runs a statement every 50 ms without an
/// error (at least 10 of them meanwhile; the slowest is printed); and that the proxy is
/// still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_against_a_dropping_node_fails_only_its_clients() -> Result<()> {
    skip_if_direct!();
    let hole = BlackHole::new()?;
    let port = i64::from(hole.port()?);
    let mut bed = TestBed::start_with(|cfg| {
        cfg.pool_size(2)
            .set("pool.connect_timeout", "1s")
            .set(
                "clusters.dark.nodes",
                toml::Value::Array(vec![toml::Value::Table(
                    [
                        ("host".to_owned(), toml::Value::from("127.0.0.1")),
                        ("port".to_owned(), toml::Value::from(port)),
                        ("role".to_owned(), toml::Value::from("primary")),
                    ]
                    .into_iter()
                    .collect(),
                )]),
            )
            .set("databases.dark.cluster", "dark")
            .set("databases.dark.dbname", "app")
    })?;
    let endpoint = bed.endpoint();
    let other = endpoint.connect_app().await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let steady = tokio::spawn(async move {
        let (mut ok, mut slowest) = (0u32, Duration::ZERO);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            let v: i32 = other
                .query_one("SELECT 1", &[])
                .await
                .ctx("app meanwhile")?
                .get(0);
            ensure!(v == 1);
            slowest = slowest.max(t.elapsed());
            ok += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<_, anyhow::Error>((ok, slowest))
    });
    for attempt in 1..=2 {
        let started = Instant::now();
        let result = switchyard_tests::client::connect(&endpoint.config("app", "app", "dark")).await;
        let waited = started.elapsed();
        let db = switchyard_tests::expect_sqlstate(result, &["08006"], "a login to the dropping node")?;
        println!(
            "login {attempt} to dark: {} after {waited:?}: {}",
            db.code().code(),
            db.message()
        );
        ensure!(
            db.message().contains("timed out after 1s"),
            "the message should say the connect timed out after 1s: {}",
            db.message()
        );
        ensure!(
            waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
            "08006 came {waited:?} after the login (connect_timeout = 1s)"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, slowest) = steady.await.context("steady client")??;
    println!("the app client ran {ok} statements meanwhile, the slowest in {slowest:?}");
    ensure!(
        ok >= 10,
        "the app client ran only {ok} statements in two connect timeouts"
    );
    bed.ensure_proxy_alive()
}

/// The proxy started while its only node is down, with `hold_timeout = 30s` longer than
/// `client_login_timeout = 1s`: the first login of a pool waits for a server. Checks that
/// the client gets `FATAL 57P03` naming `client_login_timeout` (not a connection closed
/// without a word) between 0.8 s and 5 s after it started, and that the proxy keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_waiting_for_a_primary_past_client_login_timeout_gets_57p03() -> Result<()> {
    skip_if_direct!();
    let mut pg = switchyard_tests::PgCluster::start()?;
    let config = probed_with_short_hold(switchyard_tests::ProxyConfig::for_cluster(&pg))
        .set("clusters.main.hold_timeout", "30s")
        .client_login_timeout("1s");
    pg.primary_mut().stop("fast")?;
    let mut proxy = switchyard_tests::Proxy::start(config)?;
    let endpoint = switchyard_tests::Endpoint::new(&proxy.host(), proxy.port());
    let (user, password) = roles::APP;
    let started = Instant::now();
    let refused = switchyard_tests::client::connect(&endpoint.config(user, password, roles::APP_DB)).await;
    let waited = started.elapsed();
    let db = switchyard_tests::expect_sqlstate(refused, &["57P03"], "a login past client_login_timeout")?;
    println!(
        "login with every node down: 57P03 after {waited:?}: {}",
        db.message()
    );
    ensure!(
        db.message().contains("client_login_timeout"),
        "the message should name client_login_timeout: {}",
        db.message()
    );
    ensure!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "57P03 came {waited:?} after the login (client_login_timeout = 1s)"
    );
    proxy.ensure_running()
}
