//! Query cancellation through a shared pool: a client's CancelRequest cancels that client's
//! query and never the query of another client that borrowed the same server after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::client::sqlstate;
use switchyard_tests::{describe_error, expect_sqlstate, Endpoint, PgResultExt, TestBed};
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
/// in each of 200 rounds a fresh client A runs a 20 ms `pg_sleep` on the pool's only server
/// and disconnects as soon as it ends; a fresh client B, connected before, sends its own
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
