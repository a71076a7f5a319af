//! Pooling behaviour: what a client sees when the pool is exhausted, that
//! waiting clients are served once a server frees up, many clients sharing a
//! tiny pool, and session mode (where a client keeps its server, so
//! LISTEN/NOTIFY, temporary tables and SQL-level PREPARE work).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::admin::pool_row;
use switchyard_tests::client::{connect_with_messages, Load};
use switchyard_tests::peak::ServerPeak;
use switchyard_tests::proxy::worker_switches;
use switchyard_tests::{describe_error, skip_if_direct, PgResultExt, TestBed};
use tokio_postgres::AsyncMessage;

/// With a pool of one server held in another client's transaction, a client waiting for it
/// gets exactly SQLSTATE 53300 naming `query_wait_timeout` once the 1 s timeout passes: the
/// wait, measured from the client and printed, is at least 1 s and under 6 s. The holder is
/// unaffected, and the server serves again after its COMMIT.
#[tokio::test]
async fn exhausted_pool_gives_53300_after_query_wait_timeout() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(1).query_wait_timeout("1s"))?;
    let ep = bed.endpoint();
    let holder = ep.connect_app().await?;
    let waiter = ep.connect_app().await?;
    holder
        .batch_execute("BEGIN; SELECT 1")
        .await
        .ctx("holder opens a transaction")?;

    let asked = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), waiter.simple_query("SELECT 1"))
        .await
        .context(
            "a client waiting for the only (busy) server got no answer within 20 s, \
             although query_wait_timeout is 1s",
        )?;
    let waited = asked.elapsed();
    println!("the waiting client got its answer after {waited:?} (query_wait_timeout 1s)");
    match result {
        Ok(_) => {
            bail!("the waiting client was served while the only server was in another client's transaction")
        }
        Err(e) => {
            let Some(db) = e.as_db_error() else {
                bail!(
                    "expected an ErrorResponse 53300 for the pool wait timeout, got a non-server error: {}",
                    describe_error(&e)
                );
            };
            ensure!(
                db.code().code() == "53300" && db.message().contains("query_wait_timeout"),
                "expected SQLSTATE 53300 with a message naming query_wait_timeout, got {}",
                describe_error(&e)
            );
        }
    }
    ensure!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(6),
        "the wait timed out after {waited:?}; query_wait_timeout is 1s"
    );

    // The holder is unaffected.
    let v: i32 = holder
        .query_one("SELECT 2", &[])
        .await
        .ctx("holder after the other client's timeout")?
        .get(0);
    ensure!(v == 2);
    holder.batch_execute("COMMIT").await.ctx("holder COMMIT")?;
    // And the server is available again.
    ep.connect_app()
        .await?
        .simple_query("SELECT 1")
        .await
        .ctx("new client after the holder committed")?;
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn waiting_client_is_served_when_the_holder_commits() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(1).query_wait_timeout("30s"))?;
    let ep = bed.endpoint();
    let holder = ep.connect_app().await?;
    let waiter = ep.connect_app().await?;
    holder
        .batch_execute("BEGIN; SELECT 1")
        .await
        .ctx("holder opens a transaction")?;

    let committing = Arc::new(AtomicBool::new(false));
    let flag = committing.clone();
    let waiting = tokio::spawn(async move {
        let r = waiter.query_one("SELECT 'served'::text", &[]).await;
        (r.map(|row| row.get::<_, String>(0)), flag.load(Ordering::SeqCst))
    });
    // Give the waiter time to queue (sequencing only; nothing is asserted
    // about durations).
    tokio::time::sleep(Duration::from_millis(300)).await;
    committing.store(true, Ordering::SeqCst);
    holder.batch_execute("COMMIT").await.ctx("holder COMMIT")?;

    let (result, after_commit) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .context("waiting client not served within 20 s of the holder's COMMIT")??;
    let v = result.ctx("waiting client's query")?;
    ensure!(v == "served", "waiting client got {v:?}");
    if !TestBed::direct_mode() {
        ensure!(
            after_commit,
            "with a pool of 1, the waiting client was served while the holder's transaction was open"
        );
    }
    bed.ensure_proxy_alive()
}

/// 40 clients run 25 transactions each (INSERT, then count their own rows) over a pool of
/// two servers: every transaction sees its own rows, all 1000 rows are there, and the most
/// server connections Postgres saw at once, sampled every 5 ms through the whole run, is at
/// most 2.
#[tokio::test]
async fn many_clients_share_a_tiny_pool_never_over_its_size() -> Result<()> {
    share_a_tiny_pool(40, 25, |cfg| cfg).await
}

/// 300 clients run 4 transactions each the same way: past 128 clients a session that goes
/// quiet hands its buffers to the thread's spares and takes a set back for its next
/// transaction (with fewer, as in the other tests here, it keeps its own), so this runs
/// that exchange under a queue of 298 clients. Every transaction sees its own rows, all
/// 1200 rows are there, and Postgres never sees more than 2 server connections at once.
#[tokio::test]
async fn three_hundred_clients_share_a_tiny_pool_never_over_its_size() -> Result<()> {
    share_a_tiny_pool(300, 4, |cfg| cfg).await
}

/// The same on tokio's multi-threaded scheduler with two workers (the default is one),
/// where a server given back on one thread wakes a client waiting on the other: every
/// transaction sees its own rows, all 1000 rows are there, and Postgres never sees more
/// than 2 server connections at once.
#[tokio::test]
async fn two_workers_share_a_tiny_pool_never_over_its_size() -> Result<()> {
    share_a_tiny_pool(40, 25, |cfg| cfg.set("proxy.workers", 2)).await
}

/// The same with `threading = "per-core"` and four workers, so that the pool's two servers
/// sit in four threads' idle lists and checkouts take servers opened on other threads:
/// every transaction sees its own rows, all 1000 rows are there, and Postgres never sees
/// more than 2 server connections at once.
#[tokio::test]
async fn per_core_workers_share_a_tiny_pool_never_over_its_size() -> Result<()> {
    share_a_tiny_pool(40, 25, |cfg| {
        cfg.set("proxy.threading", "per-core").set("proxy.workers", 4)
    })
    .await
}

/// `clients` clients (all logged in first), `transactions` transactions each, over a
/// transaction pool of two servers, with the proxy configured further by `configure`: checks every transaction's
/// own rows, the row total and the peak of server connections.
async fn share_a_tiny_pool(
    clients: usize,
    transactions: usize,
    configure: impl FnOnce(switchyard_tests::ProxyConfig) -> switchyard_tests::ProxyConfig,
) -> Result<()> {
    const POOL: u32 = 2;
    let mut bed = TestBed::start_with(|cfg| configure(cfg.mode("transaction").pool_size(POOL)))?;
    let ep = bed.endpoint();
    ep.connect_app()
        .await?
        .batch_execute("CREATE TABLE shared (client int, i int)")
        .await
        .ctx("create table")?;
    let peak = ServerPeak::start(&bed.direct(), "app", "app").await?;
    // All logged in before any starts, so that all of them are the proxy's clients at once.
    let mut logged_in = Vec::new();
    for _ in 0..clients {
        logged_in.push(ep.connect_app().await?);
    }
    let mut tasks = Vec::new();
    for (id, client) in (0..).zip(logged_in) {
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for i in 0..transactions as i32 {
                let r = async {
                    client.batch_execute("BEGIN").await?;
                    client
                        .execute("INSERT INTO shared VALUES ($1, $2)", &[&id, &i])
                        .await?;
                    let n: i64 = client
                        .query_one("SELECT count(*) FROM shared WHERE client = $1", &[&id])
                        .await?
                        .get(0);
                    client.batch_execute("COMMIT").await?;
                    Ok::<_, tokio_postgres::Error>(n)
                }
                .await;
                match r {
                    Ok(n) if n == i64::from(i) + 1 => {}
                    Ok(n) => errors.push(format!("client {id} tx {i}: sees {n} rows, expected {}", i + 1)),
                    Err(e) => errors.push(format!("client {id} tx {i}: {}", describe_error(&e))),
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await?);
    }
    let peak = peak.finish().await?;
    bed.ensure_proxy_alive()?;
    ensure!(
        errors.is_empty(),
        "{} errors among {clients} clients x {transactions} transactions, first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    let admin = bed.direct().connect("postgres", "postgres", "app").await?;
    let n: i64 = admin
        .query_one("SELECT count(*) FROM shared", &[])
        .await
        .ctx("count")?
        .get(0);
    ensure!(
        n == (clients * transactions) as i64,
        "{n} rows, expected {}",
        clients * transactions
    );
    println!(
        "{clients} clients: at most {} server connections at once ({} samples), pool size {POOL}",
        peak.max, peak.samples
    );
    if !TestBed::direct_mode() {
        ensure!(
            peak.max <= i64::from(POOL),
            "{} server connections at once during the run, pool size {POOL}",
            peak.max
        );
    }
    Ok(())
}

/// With `threading = "per-core"` on four workers and a pool of two servers, 48 clients
/// (spread over the workers by the kernel's `SO_REUSEPORT` hash) each run 40 transactions
/// (`SELECT <client>, <i>`) back to back, so that clients queue for the pool on several
/// workers at once: every client gets all 40 answers, each its own (none starves:
/// `query_wait_timeout` is 30 s, so a starved client would get 53300), at least two worker
/// threads served clients (at least 100 context switches each during the run, from
/// `/proc/PID/task`), and Postgres never sees more than 2 server connections. Each
/// worker's context switches and the longest wait for one transaction are printed.
#[tokio::test]
async fn per_core_clients_queued_on_several_workers_all_finish() -> Result<()> {
    skip_if_direct!();
    const CLIENTS: usize = 48;
    const TRANSACTIONS: usize = 40;
    const POOL: u32 = 2;
    const WORKERS: usize = 4;
    let mut bed = TestBed::start_with(|cfg| {
        cfg.mode("transaction")
            .pool_size(POOL)
            .query_wait_timeout("30s")
            .set("proxy.threading", "per-core")
            .set("proxy.workers", WORKERS as i64)
    })?;
    let ep = bed.endpoint();
    let pid = bed.proxy().and_then(|p| p.pid()).context("the proxy's pid")?;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(ep.connect_app().await?);
    }
    let peak = ServerPeak::start(&bed.direct(), "app", "app").await?;
    let before = worker_switches(pid)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (id, client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut errors = Vec::new();
            for i in 0..TRANSACTIONS {
                let asked = Instant::now();
                let r = client.simple_query(&format!("SELECT {id}, {i}")).await;
                longest = longest.max(asked.elapsed());
                match r {
                    Ok(messages) => {
                        let got = messages.iter().find_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(row) => {
                                Some((row.get(0).map(str::to_owned), row.get(1).map(str::to_owned)))
                            }
                            _ => None,
                        });
                        let want = (Some(id.to_string()), Some(i.to_string()));
                        if got.as_ref() != Some(&want) {
                            errors.push(format!("client {id} tx {i}: got {got:?}, expected {want:?}"));
                        }
                    }
                    Err(e) => errors.push(format!("client {id} tx {i}: {}", describe_error(&e))),
                }
            }
            (longest, errors)
        }));
    }
    let mut longest = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (l, e) = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .context("a client had not finished its transactions after 120 s")??;
        longest.push(l);
        errors.extend(e);
    }
    let elapsed = started.elapsed();
    let after = worker_switches(pid)?;
    let peak = peak.finish().await?;
    bed.ensure_proxy_alive()?;
    longest.sort();
    println!(
        "{CLIENTS} clients x {TRANSACTIONS} transactions on {WORKERS} workers, pool {POOL}: {elapsed:?}; \
         longest wait for one transaction: {:?} (median of the clients' longest {:?}); \
         at most {} server connections at once",
        longest[CLIENTS - 1],
        longest[CLIENTS / 2],
        peak.max
    );
    let served: Vec<(u32, u64)> = after
        .iter()
        .map(|(tid, n)| (*tid, n - before.get(tid).copied().unwrap_or(0)))
        .collect();
    println!("context switches per worker thread during the run (tid, switches): {served:?}");
    ensure!(
        errors.is_empty(),
        "{} errors among {CLIENTS} clients x {TRANSACTIONS} transactions, first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    ensure!(
        served.iter().filter(|(_, n)| *n >= 100).count() >= 2,
        "fewer than two worker threads served clients: {served:?}"
    );
    ensure!(
        peak.max <= i64::from(POOL),
        "{} server connections at once during the run, pool size {POOL}",
        peak.max
    );
    Ok(())
}

/// With `threading = "per-core"` on four workers, a pool of two servers both held in open
/// transactions and `query_wait_timeout` 3 s, eight clients that ask for a server at once
/// each get exactly SQLSTATE 53300 naming `query_wait_timeout` after at least 3 s (and under
/// 15 s, a liveness bound); while they wait (`SHOW POOLS` 400 ms after they asked, with
/// 2.6 s to spare on a loaded machine) `SHOW POOLS` counts 8 waiting, afterwards 0 waiting
/// and 8 wait timeouts; once the holders commit, every one of the eight is served (the slots the
/// waiters gave up were not lost).
#[tokio::test]
async fn per_core_waiting_clients_each_get_53300_when_no_server_frees_up() -> Result<()> {
    skip_if_direct!();
    const WAITERS: usize = 8;
    let mut bed = TestBed::start_with(|cfg| {
        cfg.mode("transaction")
            .pool_size(2)
            .query_wait_timeout("3s")
            .set("proxy.threading", "per-core")
            .set("proxy.workers", 4)
            .with_admin()
    })?;
    let ep = bed.endpoint();
    let mut holders = Vec::new();
    for i in 0..2 {
        let holder = ep.connect_app().await?;
        holder
            .batch_execute("BEGIN; SELECT 1")
            .await
            .ctx(&format!("holder {i} opens a transaction"))?;
        holders.push(holder);
    }
    let mut waiters = Vec::new();
    for _ in 0..WAITERS {
        waiters.push(Arc::new(ep.connect_app().await?));
    }
    let asked = Instant::now();
    let tasks: Vec<_> = waiters
        .iter()
        .map(|w| {
            let w = w.clone();
            tokio::spawn(async move {
                let r = w.simple_query("SELECT 1").await;
                (r, asked.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let during = pool_row(&ep, "app/app").await?;
    let mut problems = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let (r, waited) = tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .context("a waiting client got no answer within 20 s (query_wait_timeout 3s)")??;
        println!("waiter {i}: answered after {waited:?}");
        match r {
            Ok(_) => problems.push(format!("waiter {i} was served while both servers were held")),
            Err(e) => match e.as_db_error() {
                Some(db) if db.code().code() == "53300" && db.message().contains("query_wait_timeout") => {
                    if waited < Duration::from_secs(3) || waited >= Duration::from_secs(15) {
                        problems.push(format!(
                            "waiter {i} timed out after {waited:?}; query_wait_timeout is 3s"
                        ));
                    }
                }
                _ => problems.push(format!(
                    "waiter {i}: expected 53300 naming query_wait_timeout, got {}",
                    describe_error(&e)
                )),
            },
        }
    }
    let after = pool_row(&ep, "app/app").await?;
    println!(
        "SHOW POOLS while waiting: waiting {}, in_use {}; after: waiting {}, wait_timeouts {}",
        during["waiting"], during["in_use"], after["waiting"], after["wait_timeouts"]
    );
    ensure!(problems.is_empty(), "{problems:#?}");
    ensure!(
        during["waiting"] == WAITERS.to_string() && during["in_use"] == "2",
        "SHOW POOLS while {WAITERS} clients waited for 2 held servers: {during:?}"
    );
    ensure!(
        after["waiting"] == "0" && after["wait_timeouts"] == WAITERS.to_string(),
        "SHOW POOLS after {WAITERS} wait timeouts: {after:?}"
    );
    for (i, holder) in holders.iter().enumerate() {
        holder
            .batch_execute("COMMIT")
            .await
            .ctx(&format!("holder {i} COMMIT"))?;
    }
    for (i, w) in waiters.iter().enumerate() {
        w.simple_query("SELECT 1")
            .await
            .ctx(&format!("waiter {i} after the holders committed"))?;
    }
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn session_mode_listen_notify() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.mode("session").pool_size(4))?;
    let ep = bed.endpoint();
    let (listener, mut messages) = connect_with_messages(&ep.config("app", "app", "app"))
        .await
        .ctx("listener connect")?;
    listener.batch_execute("LISTEN jobs").await.ctx("LISTEN")?;
    let notifier = ep.connect_app().await?;
    notifier
        .batch_execute("NOTIFY jobs, 'first'")
        .await
        .ctx("NOTIFY")?;
    notifier
        .batch_execute("BEGIN; SELECT pg_notify('jobs', 'second'); COMMIT")
        .await
        .ctx("pg_notify in a transaction")?;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            next_notification(&mut messages)
                .await
                .with_context(|| format!("notifications so far: {got:?}"))?,
        );
    }
    ensure!(
        got == vec![
            ("jobs".to_owned(), "first".to_owned()),
            ("jobs".to_owned(), "second".to_owned())
        ],
        "notifications: {got:?}"
    );
    // UNLISTEN stops delivery; a query round trip proves nothing was queued.
    listener.batch_execute("UNLISTEN jobs").await.ctx("UNLISTEN")?;
    notifier
        .batch_execute("NOTIFY jobs, 'third'")
        .await
        .ctx("NOTIFY")?;
    listener.simple_query("SELECT 1").await.ctx("round trip")?;
    notifier.simple_query("SELECT 1").await.ctx("round trip")?;
    listener.simple_query("SELECT 1").await.ctx("round trip")?;
    if let Ok(AsyncMessage::Notification(n)) = messages.try_recv() {
        bail!("notification after UNLISTEN: {} {}", n.channel(), n.payload());
    }
    bed.ensure_proxy_alive()
}

#[tokio::test]
async fn session_mode_keeps_session_state() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.mode("session").pool_size(2))?;
    let ep = bed.endpoint();
    let client = ep.connect_app().await?;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ctx("pid")?
        .get(0);
    client
        .batch_execute(
            "CREATE TEMP TABLE scratch(x int); INSERT INTO scratch VALUES (1); \
             PREPARE plus(int) AS SELECT $1 + 1; \
             SELECT pg_advisory_lock(42)",
        )
        .await
        .ctx("session state setup")?;
    for _ in 0..3 {
        client
            .batch_execute("BEGIN; INSERT INTO scratch VALUES (2); COMMIT")
            .await
            .ctx("tx")?;
    }
    let rows = client
        .simple_query("EXECUTE plus(41)")
        .await
        .ctx("EXECUTE of a SQL-prepared statement")?;
    let v = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    ensure!(v.as_deref() == Some("42"), "EXECUTE plus(41) returned {v:?}");
    let n: i64 = client
        .query_one("SELECT count(*) FROM scratch", &[])
        .await
        .ctx("temp table")?
        .get(0);
    ensure!(n == 4, "temp table has {n} rows, expected 4");
    let pid2: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ctx("pid")?
        .get(0);
    ensure!(
        pid == pid2,
        "session mode moved the client from backend {pid} to {pid2}"
    );
    // Another client cannot take the advisory lock held by this session.
    let other = ep.connect_app().await?;
    let got: bool = other
        .query_one("SELECT pg_try_advisory_lock(42)", &[])
        .await
        .ctx("try lock")?
        .get(0);
    ensure!(
        !got,
        "advisory lock held by a session-mode client was available to another client"
    );
    drop(client);
    bed.ensure_proxy_alive()
}

/// The next notification on `messages` within 10 s, as (channel, payload).
async fn next_notification(
    messages: &mut tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
) -> Result<(String, String)> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), messages.recv())
            .await
            .context("no notification within 10 s")?
        {
            Some(AsyncMessage::Notification(n)) => {
                return Ok((n.channel().to_owned(), n.payload().to_owned()))
            }
            Some(_) => {}
            None => bail!("the listener's connection closed"),
        }
    }
}

/// Transaction mode, pool of two, two other clients looping over transactions: a
/// tokio-postgres client runs `LISTEN jobs` and then sits idle, sending nothing. Checks
/// that it receives, unprompted and in order, the notifications sent by another client
/// through the proxy (`NOTIFY`, then `pg_notify` in a committed transaction) and by a
/// connection straight to Postgres; that SHOW POOLS counts one pinned client and the
/// listener stays on one backend (same `pg_backend_pid()` over three transactions); that
/// after `UNLISTEN jobs` a notification on `jobs` does not arrive; that the other clients
/// had 0 errors; and, once the listener (listening on another channel) has left, that
/// SHOW POOLS counts 0 pinned and neither server of the pool listens on any channel.
#[tokio::test]
async fn transaction_mode_listen_pins_the_server_and_notifications_arrive() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(2).with_admin())?;
    let ep = bed.endpoint();
    let pinned =
        |row: std::collections::HashMap<String, String>| -> Result<u64> { Ok(row["pinned"].parse()?) };
    let load = Load::start(&ep, 2).await?;
    let (listener, mut messages) = connect_with_messages(&ep.config("app", "app", "app"))
        .await
        .ctx("listener connect")?;
    listener.batch_execute("LISTEN jobs").await.ctx("LISTEN")?;
    let pid: i32 = listener
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ctx("pid")?
        .get(0);
    let notifier = ep.connect_app().await?;
    notifier
        .batch_execute("NOTIFY jobs, 'first'")
        .await
        .ctx("NOTIFY")?;
    notifier
        .batch_execute("BEGIN; SELECT pg_notify('jobs', 'second'); COMMIT")
        .await
        .ctx("pg_notify in a transaction")?;
    bed.direct()
        .connect_app()
        .await?
        .batch_execute("NOTIFY jobs, 'third'")
        .await
        .ctx("NOTIFY straight to Postgres")?;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            next_notification(&mut messages)
                .await
                .with_context(|| format!("the idle listener got {got:?} so far"))?,
        );
    }
    let want: Vec<(String, String)> = ["first", "second", "third"]
        .iter()
        .map(|p| ("jobs".to_owned(), p.to_string()))
        .collect();
    ensure!(got == want, "notifications: {got:?}");
    let count = pinned(pool_row(&ep, "app/app").await?)?;
    ensure!(count == 1, "SHOW POOLS counts {count} pinned clients, expected 1");
    for _ in 0..3 {
        let now: i32 = listener
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .ctx("pid")?
            .get(0);
        ensure!(now == pid, "the listener moved from backend {pid} to {now}");
    }

    listener
        .batch_execute("UNLISTEN jobs; LISTEN other")
        .await
        .ctx("UNLISTEN")?;
    notifier
        .batch_execute("NOTIFY jobs, 'fourth'")
        .await
        .ctx("NOTIFY")?;
    // A round trip on each side: a notification sent before it would have come first.
    notifier.simple_query("SELECT 1").await.ctx("round trip")?;
    listener.simple_query("SELECT 1").await.ctx("round trip")?;
    if let Ok(AsyncMessage::Notification(n)) = messages.try_recv() {
        bail!("notification after UNLISTEN: {} {}", n.channel(), n.payload());
    }
    let report = load.finish().await?;
    ensure!(
        report.errors.is_empty() && report.ok > 0,
        "the other clients: {} ok, errors {:?}",
        report.ok,
        report.errors
    );
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pinned(pool_row(&ep, "app/app").await?)? != 0 {
        ensure!(
            Instant::now() < deadline,
            "still pinned 5 s after the listener left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both servers, held at once: neither listens on anything.
    let second = ep.connect_app().await?;
    for c in [&notifier, &second] {
        c.batch_execute("BEGIN").await.ctx("BEGIN")?;
    }
    for (name, c) in [("notifier", &notifier), ("second", &second)] {
        let channels: i64 = c
            .query_one("SELECT count(*) FROM pg_listening_channels()", &[])
            .await
            .ctx("pg_listening_channels")?
            .get(0);
        ensure!(channels == 0, "{name}'s server listens on {channels} channels");
        c.batch_execute("COMMIT").await.ctx("COMMIT")?;
    }
    println!("other clients ran {} transactions meanwhile, 0 errors", report.ok);
    bed.ensure_proxy_alive()
}
