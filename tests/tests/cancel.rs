//! Query cancellation through a shared pool: a client's CancelRequest cancels that client's
//! query and never the query of another client that borrowed the same server after it (two
//! clients or four on one server), a real key with a wrong secret cancels nothing, a cancel
//! sent while its client waits for a server reaches no one, and a cancel during COPY (in or
//! out) ends the COPY with 57014 and leaves the server serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, TryStreamExt};
use switchyard_tests::client::sqlstate;
use switchyard_tests::raw::RawConn;
use switchyard_tests::{describe_error, expect_sqlstate, skip_if_direct, Endpoint, PgResultExt, TestBed};
use tokio::task::JoinHandle;
use tokio_postgres::{CancelToken, Client, NoTls};

/// Client A's short query; the cancels are aimed around its end.
const A_SQL: &str = "SELECT pg_sleep(0.02)";
/// Client B's query, queued behind A's for the pool's only server.
const B_SQL: &str = "SELECT pg_sleep(0.02)";
/// How far before the measured end of A's query the first cancel of the sweep is sent; the
/// sweep then walks in 0.5 ms steps to `SWEEP_AFTER` past the end, and starts over.
const SWEEP_BEFORE: Duration = Duration::from_millis(10);
const SWEEP_AFTER: Duration = Duration::from_millis(2);

/// Runs `sql` on `client` in a task, so that the caller can do something while it runs.
fn spawn_query(client: &Arc<Client>, sql: &'static str) -> JoinHandle<Result<(), tokio_postgres::Error>> {
    let c = client.clone();
    tokio::spawn(async move { c.simple_query(sql).await.map(|_| ()) })
}

/// The two clients of one round: A holds the pool's only server, B waits for it.
struct Pair {
    a: Arc<Client>,
    b: Arc<Client>,
}

/// What the rounds of a race came to.
#[derive(Default)]
struct Tally {
    a_cancelled: u32,
    a_completed: u32,
    /// B's failures: a cancel that reached B's query, sent for A's.
    foreign: Vec<String>,
}

impl Tally {
    fn report(&self, mode: &str, rounds: u32, took: Duration) -> Result<()> {
        println!(
            "{mode}: {rounds} rounds in {took:?}: A's query cancelled {} times, completed {} times; B's query failed {} times",
            self.a_cancelled,
            self.a_completed,
            self.foreign.len()
        );
        ensure!(
            self.foreign.is_empty(),
            "client B's query failed although only client A sent cancels ({} of {rounds} rounds):\n{}",
            self.foreign.len(),
            self.foreign.join("\n")
        );
        Ok(())
    }
}

/// One round of the race: A starts `A_SQL`, B sends `B_SQL` 3 ms later (so it waits for A's
/// server), a cancel with A's key goes out `cancel_at` after A's query started, and the
/// pair's handle on A is dropped as soon as A's query has ended (which disconnects A when it
/// was the last). Records how A's and B's queries ended in `tally`.
async fn race_round(
    pair: Pair,
    a_cancel: &CancelToken,
    cancel_at: Duration,
    tally: &mut Tally,
) -> Result<()> {
    let start = Instant::now();
    let a_run = spawn_query(&pair.a, A_SQL);
    tokio::time::sleep(Duration::from_millis(3)).await;
    let b_run = spawn_query(&pair.b, B_SQL);
    tokio::time::sleep_until((start + cancel_at).into()).await;
    a_cancel
        .cancel_query(NoTls)
        .await
        .ctx("sending client A's cancel")?;
    let a_result = a_run.await?;
    drop(pair.a);
    match a_result {
        Ok(()) => tally.a_completed += 1,
        Err(e) if sqlstate(&e) == Some("57014") => tally.a_cancelled += 1,
        Err(e) => bail!("client A's query failed: {}", describe_error(&e)),
    }
    if let Err(e) = b_run.await? {
        tally.foreign.push(format!(
            "cancel sent {cancel_at:?} after A's query started: {}",
            describe_error(&e)
        ));
    }
    Ok(())
}

/// How long A's query takes from the client's side with B queued behind it (median of 10
/// rounds without cancels); `pair` makes the clients of each round.
async fn a_query_time(mode: &str, mut pair: impl AsyncFnMut() -> Result<Pair>) -> Result<Duration> {
    let mut took = Vec::new();
    for _ in 0..10 {
        let Pair { a, b } = pair().await?;
        let start = Instant::now();
        let a_run = spawn_query(&a, A_SQL);
        tokio::time::sleep(Duration::from_millis(3)).await;
        let b_run = spawn_query(&b, B_SQL);
        a_run.await?.ctx("client A's query, no cancel")?;
        took.push(start.elapsed());
        drop(a);
        b_run.await?.ctx("client B's query, no cancel")?;
    }
    took.sort();
    let median = took[took.len() / 2];
    println!(
        "{mode}: client A's query takes {median:?} (median of 10; range {:?} to {:?})",
        took[0],
        took[took.len() - 1]
    );
    Ok(median)
}

/// When round `round` sends its cancel: swept across the last `SWEEP_BEFORE` of A's query
/// and `SWEEP_AFTER` past its end.
fn sweep(a_takes: Duration, round: u32) -> Duration {
    let steps = (SWEEP_BEFORE + SWEEP_AFTER).as_micros() as u32 / 500;
    (a_takes + Duration::from_micros(500 * u64::from(round % steps))).saturating_sub(SWEEP_BEFORE)
}

/// A cancel sent while `client`'s long query runs does stop it (three times), so that the
/// races above do not pass merely because cancels are dropped.
async fn cancels_take_effect(mode: &str, client: &Arc<Client>) -> Result<()> {
    let token = client.cancel_token();
    for round in 0..3 {
        let run = spawn_query(client, "SELECT pg_sleep(10)");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        token.cancel_query(NoTls).await.ctx("sending the cancel")?;
        let result = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .with_context(|| format!("round {round}: pg_sleep(10) still ran 5 s after its cancel"))??;
        expect_sqlstate(
            result,
            &["57014"],
            &format!("round {round}: the cancelled pg_sleep(10)"),
        )?;
        println!(
            "{mode}: round {round}: the long query was cancelled {:?} after the cancel was sent",
            sent.elapsed()
        );
    }
    Ok(())
}

/// Two clients, A and B, share a pool of one server in transaction mode. In each of 300
/// rounds A runs a 20 ms `pg_sleep`, B sends its own 20 ms `pg_sleep` while A holds the
/// server (so B waits for that server and gets it the moment A's query ends), and a
/// CancelRequest with A's key is sent at a moment swept across the last 10 ms of A's query
/// and the 2 ms after it. A cancel that reached the proxy while A's query ran but reached
/// Postgres after the server had gone to B would cancel B's query: before the fix this
/// happened in one round in ten or more (33 and 83 of 300 in two runs on 5e4167b; the
/// window is the time the proxy takes to connect to Postgres and have the cancel signalled,
/// a millisecond or two, against the 12 ms swept).
///
/// Asserts that B's query never fails (in particular never with 57014, "canceling statement
/// due to user request", which nobody asked for B) and that A's query either completes or
/// is cancelled (57014), nothing else; prints how many of A's queries the cancels stopped.
/// Then checks that A's cancels are not simply dropped: three times, A runs a 10 s
/// `pg_sleep`, a cancel is sent 200 ms in, and A's query must end with 57014 within 5 s.
#[tokio::test]
async fn a_late_cancel_never_reaches_the_next_clients_query() -> Result<()> {
    const ROUNDS: u32 = 300;
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(1))?;
    let ep = bed.endpoint();
    let a = Arc::new(ep.connect_app().await.context("client A connects")?);
    let b = Arc::new(ep.connect_app().await.context("client B connects")?);
    let a_cancel = a.cancel_token();
    let a_takes = a_query_time("transaction mode", async || {
        Ok(Pair {
            a: a.clone(),
            b: b.clone(),
        })
    })
    .await?;

    let mut tally = Tally::default();
    let started = Instant::now();
    for round in 0..ROUNDS {
        let pair = Pair {
            a: a.clone(),
            b: b.clone(),
        };
        race_round(pair, &a_cancel, sweep(a_takes, round), &mut tally)
            .await
            .with_context(|| format!("round {round}"))?;
    }
    tally.report("transaction mode", ROUNDS, started.elapsed())?;
    cancels_take_effect("transaction mode", &a).await?;
    b.simple_query("SELECT 1")
        .await
        .ctx("client B after the cancels")?;
    bed.ensure_proxy_alive()
}

/// The same race in session mode, where the server changes hands when its client leaves:
/// in each of 200 rounds a fresh client A, which holds the pool's only server from its first
/// statement, runs a 20 ms `pg_sleep` and disconnects as soon as it ends; a fresh client B, connected before, sends its own
/// 20 ms `pg_sleep` 3 ms after A's started and gets the server once the proxy has reset it
/// (`DISCARD ALL`); a cancel with A's key is sent at a moment swept across the end of A's
/// query as above. Before the fix, a cancel that reached the proxy while A held the server
/// was delivered whenever Postgres got to it, after the server had been reset and lent to B
/// (34 of 150 rounds on 5e4167b).
///
/// Asserts that B's query never fails and A's query completes or gets 57014; prints the
/// counts. Then checks that a session-mode client's cancel does stop its long query.
#[tokio::test]
async fn a_cancel_sent_before_its_client_left_never_reaches_the_next_session() -> Result<()> {
    const ROUNDS: u32 = 200;
    // md5 logins: two per round, and SCRAM's key derivation is slow in debug builds.
    let mut bed = TestBed::start_with(|cfg| cfg.mode("session").pool_size(1).set("users.app.auth", "md5"))?;
    let ep = bed.endpoint();
    let fresh_pair = async |ep: &Endpoint| -> Result<Pair> {
        let a = ep.connect_app().await.context("client A connects")?;
        // A holds the only server from its first statement to its end (session mode), so B
        // queues behind A however the machine schedules the two queries. (With only the
        // 3 ms head start, a loaded machine sometimes ran B's query first: B then held the
        // server for its whole session and A waited out query_wait_timeout.)
        a.simple_query("SELECT 1")
            .await
            .context("client A takes the server")?;
        let b = ep.connect_app().await.context("client B connects")?;
        Ok(Pair {
            a: Arc::new(a),
            b: Arc::new(b),
        })
    };
    let a_takes = a_query_time("session mode", async || fresh_pair(&ep).await).await?;

    let mut tally = Tally::default();
    let started = Instant::now();
    for round in 0..ROUNDS {
        let pair = fresh_pair(&ep).await?;
        let a_cancel = pair.a.cancel_token();
        race_round(pair, &a_cancel, sweep(a_takes, round), &mut tally)
            .await
            .with_context(|| format!("round {round}"))?;
    }
    tally.report("session mode", ROUNDS, started.elapsed())?;
    let client = Arc::new(ep.connect_app().await.context("a last client connects")?);
    cancels_take_effect("session mode", &client).await?;
    bed.ensure_proxy_alive()
}

/// Four clients share the pool's only server in transaction mode. In each of 120 rounds one
/// of them (in turn) runs a 20 ms `pg_sleep`, the three others send theirs 3 ms later (so
/// they queue for that server and get it one after another), and a CancelRequest with the
/// first client's key is sent at a moment swept across the end of its query, as in
/// [`a_late_cancel_never_reaches_the_next_clients_query`]. Asserts that no queued client's
/// query ever fails and the first client's query completes or gets 57014; prints the
/// counts.
#[tokio::test]
async fn with_four_clients_on_one_server_a_late_cancel_reaches_none_of_the_others() -> Result<()> {
    const ROUNDS: u32 = 120;
    const CLIENTS: usize = 4;
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(1))?;
    let ep = bed.endpoint();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(Arc::new(
            ep.connect_app()
                .await
                .with_context(|| format!("client {i} connects"))?,
        ));
    }
    let a_takes = a_query_time("four clients", async || {
        Ok(Pair {
            a: clients[0].clone(),
            b: clients[1].clone(),
        })
    })
    .await?;
    let (mut cancelled, mut completed, mut foreign) = (0u32, 0u32, Vec::new());
    for round in 0..ROUNDS {
        let first = round as usize % CLIENTS;
        let start = Instant::now();
        let a_run = spawn_query(&clients[first], A_SQL);
        tokio::time::sleep(Duration::from_millis(3)).await;
        let queued: Vec<_> = (0..CLIENTS)
            .filter(|&i| i != first)
            .map(|i| (i, spawn_query(&clients[i], B_SQL)))
            .collect();
        tokio::time::sleep_until((start + sweep(a_takes, round)).into()).await;
        clients[first]
            .cancel_token()
            .cancel_query(NoTls)
            .await
            .ctx("sending the first client's cancel")?;
        match a_run.await? {
            Ok(()) => completed += 1,
            Err(e) if sqlstate(&e) == Some("57014") => cancelled += 1,
            Err(e) => bail!(
                "round {round}: client {first}'s query failed: {}",
                describe_error(&e)
            ),
        }
        for (i, run) in queued {
            if let Err(e) = run.await? {
                foreign.push(format!(
                    "round {round}: client {i}'s query, queued behind client {first}'s: {}",
                    describe_error(&e)
                ));
            }
        }
    }
    println!(
        "four clients: {ROUNDS} rounds: the first client's query cancelled {cancelled} times, completed {completed} times; queued queries failed {} times",
        foreign.len()
    );
    ensure!(
        foreign.is_empty(),
        "a cancel reached a query of a client that did not send it:\n{}",
        foreign.join("\n")
    );
    bed.ensure_proxy_alive()
}

/// A CancelRequest with a client's real process id but a wrong secret key (the real one
/// plus 1), sent through the proxy while that client runs `SELECT pg_sleep(1)`, cancels
/// nothing: the query returns its row. The same request with the right secret does cancel
/// the next such query (57014), so the key was real.
#[tokio::test]
async fn a_cancel_with_a_real_key_and_a_wrong_secret_cancels_nothing() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(2))?;
    let ep = bed.endpoint();
    let mut client = RawConn::login(&ep.addr(), &[("user", "app"), ("database", "app")], "app").await?;
    let (pid, secret) = client.backend_key.context("no BackendKeyData")?;
    let send_cancel = async |secret: i32| -> Result<()> {
        let mut conn = RawConn::connect(&ep.addr()).await?;
        let mut request = Vec::with_capacity(16);
        request.extend_from_slice(&16i32.to_be_bytes());
        request.extend_from_slice(&80877102i32.to_be_bytes());
        request.extend_from_slice(&pid.to_be_bytes());
        request.extend_from_slice(&secret.to_be_bytes());
        conn.send(&request).await?;
        // The proxy answers nothing and closes the connection.
        conn.read_until_eof(Duration::from_secs(5)).await?;
        Ok(())
    };
    for (secret, expect_cancel) in [(secret.wrapping_add(1), false), (secret, true)] {
        let mut buf = bytes::BytesMut::new();
        switchyard_tests::raw::msg::query(&mut buf, "SELECT pg_sleep(1)");
        client.send(&buf).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        send_cancel(secret).await?;
        let msgs = client.read_until_ready().await?;
        let error = msgs.iter().find(|m| m.tag == b'E').and_then(|m| m.sqlstate());
        let rows = msgs.iter().filter(|m| m.tag == b'D').count();
        println!(
            "cancel with {} secret: error {error:?}, {rows} rows",
            if expect_cancel { "the right" } else { "a wrong" }
        );
        if expect_cancel {
            ensure!(
                error.as_deref() == Some("57014"),
                "the cancel with the right key should have cancelled pg_sleep(1): error {error:?}"
            );
        } else {
            ensure!(
                error.is_none() && rows == 1,
                "a cancel with a wrong secret cancelled the query: error {error:?}, {rows} rows"
            );
        }
    }
    client.terminate().await?;
    bed.ensure_proxy_alive()
}

/// The pool's only server is in client H's transaction, running `SELECT pg_sleep(1)`; client
/// W's query waits for that server, and W's cancel is sent while it waits. W holds no
/// server, so the proxy sends the cancel nowhere (docs: "nothing is sent when the client
/// holds no server"): H's query is not cancelled (it returns its row), and W's query runs
/// once H commits and returns its row.
#[tokio::test]
async fn a_cancel_while_queued_for_a_server_never_reaches_the_server_holder() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(1).query_wait_timeout("30s"))?;
    let ep = bed.endpoint();
    let holder = Arc::new(ep.connect_app().await?);
    let waiter = Arc::new(ep.connect_app().await?);
    holder.batch_execute("BEGIN").await.ctx("holder BEGIN")?;
    let held = spawn_query(&holder, "SELECT pg_sleep(1)");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let queued = {
        let w = waiter.clone();
        tokio::spawn(async move {
            w.query_one("SELECT 'served'::text", &[])
                .await
                .map(|r| r.get::<_, String>(0))
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    waiter
        .cancel_token()
        .cancel_query(NoTls)
        .await
        .ctx("sending the queued client's cancel")?;
    let held = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .context("the holder's pg_sleep(1) did not end within 10 s")??;
    ensure!(
        held.is_ok(),
        "the queued client's cancel reached the holder's query: {}",
        held.err().map(|e| describe_error(&e)).unwrap_or_default()
    );
    holder.batch_execute("COMMIT").await.ctx("holder COMMIT")?;
    let served = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .context("the queued client was not served within 10 s of the holder's COMMIT")??;
    println!("the queued client's query after its cancel: {served:?}");
    ensure!(
        matches!(served.as_deref(), Ok("served")),
        "the queued query should have run once the server was free: {}",
        served.err().map(|e| describe_error(&e)).unwrap_or_default()
    );
    bed.ensure_proxy_alive()
}

/// Cancels during COPY, on the pool's only server, in transaction mode: a cancel sent while
/// `COPY ... FROM STDIN` waits for more data ends the COPY with 57014 (no row is stored), and
/// one sent while a slow `COPY ... TO STDOUT` streams ends it with 57014; after each, the
/// same client and another client sharing the server run queries without error.
#[tokio::test]
async fn a_cancel_during_copy_ends_the_copy_with_57014_and_the_server_serves_on() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(1))?;
    let ep = bed.endpoint();
    let client = ep.connect_app().await?;
    let other = ep.connect_app().await?;
    client
        .batch_execute("CREATE TABLE cancel_copy (v int)")
        .await
        .ctx("create table")?;
    let token = client.cancel_token();

    let copy_in = async {
        let sink = client.copy_in("COPY cancel_copy FROM STDIN").await?;
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"1\n2\n")).await?;
        sink.flush().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(NoTls).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        sink.send(bytes::Bytes::from_static(b"3\n")).await?;
        sink.finish().await
    };
    let result = tokio::time::timeout(Duration::from_secs(20), copy_in)
        .await
        .context("COPY FROM STDIN with a cancel did not end within 20 s")?;
    expect_sqlstate(
        result,
        &["57014"],
        "COPY FROM STDIN cancelled while waiting for data",
    )?;
    let stored: i64 = client
        .query_one("SELECT count(*) FROM cancel_copy", &[])
        .await
        .ctx("the client after its cancelled COPY FROM")?
        .get(0);
    ensure!(stored == 0, "the cancelled COPY stored {stored} rows");
    other
        .batch_execute("SELECT 1")
        .await
        .ctx("the other client after COPY FROM")?;

    let copy_out = async {
        let stream = client
            .copy_out("COPY (SELECT g, pg_sleep(0.01) FROM generate_series(1, 10000) g) TO STDOUT")
            .await?;
        futures_util::pin_mut!(stream);
        let mut rows = 0u64;
        let mut cancel_sent = false;
        while let Some(chunk) = stream.try_next().await? {
            rows += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            if rows >= 5 && !cancel_sent {
                token.cancel_query(NoTls).await?;
                cancel_sent = true;
            }
        }
        Ok::<u64, tokio_postgres::Error>(rows)
    };
    let result = tokio::time::timeout(Duration::from_secs(30), copy_out)
        .await
        .context("COPY TO STDOUT with a cancel did not end within 30 s")?;
    expect_sqlstate(result, &["57014"], "COPY TO STDOUT cancelled while streaming")?;
    client
        .batch_execute("SELECT 1")
        .await
        .ctx("the client after its cancelled COPY TO")?;
    other
        .batch_execute("SELECT 1")
        .await
        .ctx("the other client after COPY TO")?;
    bed.ensure_proxy_alive()
}
