//! Query cancellation through a shared pool: a client's CancelRequest cancels that client's
//! query and never the query of another client that borrowed the same server after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_tests::client::sqlstate;
use switchyard_tests::{describe_error, expect_sqlstate, PgResultExt, TestBed};
use tokio_postgres::{Client, NoTls};

/// Client A's short query; the cancels are aimed around its end.
const A_SQL: &str = "SELECT pg_sleep(0.02)";
/// Client B's query, queued behind A's for the pool's only server.
const B_SQL: &str = "SELECT pg_sleep(0.02)";
/// Rounds of the race; about 60 ms each.
const ROUNDS: u32 = 300;
/// How far before the measured end of A's query the first cancel of the sweep is sent; the
/// sweep then walks in 0.5 ms steps to `SWEEP_AFTER` past the end, and starts over.
const SWEEP_BEFORE: Duration = Duration::from_millis(10);
const SWEEP_AFTER: Duration = Duration::from_millis(2);

/// Runs `sql` on `client` in a task, so that the caller can do something while it runs.
fn spawn_query(
    client: &Arc<Client>,
    sql: &'static str,
) -> tokio::task::JoinHandle<Result<(), tokio_postgres::Error>> {
    let c = client.clone();
    tokio::spawn(async move { c.simple_query(sql).await.map(|_| ()) })
}

/// Two clients, A and B, share a pool of one server in transaction mode. In each of
/// `ROUNDS` rounds A runs a 20 ms `pg_sleep`, B sends its own 20 ms `pg_sleep` while A holds
/// the server (so B waits for that server and gets it the moment A's query ends), and a
/// CancelRequest with A's key is sent at a moment swept across the last 10 ms of A's query
/// and the 2 ms after it. A cancel that reached the proxy while A's query ran but reached
/// Postgres after the server had gone to B would cancel B's query: before the fix this
/// happened in a share of the rounds (the window is the time the proxy takes to connect to
/// Postgres and have the cancel signalled, about a millisecond, against the 12 ms swept).
///
/// Asserts that B's query never fails (in particular never with 57014, "canceling statement
/// due to user request", which nobody asked for B) and that A's query either completes or
/// is cancelled (57014), nothing else. Prints how many of A's queries the cancels stopped
/// and how long A's queries took. Then checks that the cancels are not simply dropped:
/// three times, A runs a 10 s `pg_sleep`, a cancel is sent 200 ms in, and A's query must end
/// with 57014 within 5 s.
#[tokio::test]
async fn a_late_cancel_never_reaches_the_next_clients_query() -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(1))?;
    let ep = bed.endpoint();
    let a = Arc::new(ep.connect_app().await.context("client A connects")?);
    let b = Arc::new(ep.connect_app().await.context("client B connects")?);
    let a_cancel = a.cancel_token();

    // How long A's query takes from the client's side, with B queued behind it.
    let mut took = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let a_run = spawn_query(&a, A_SQL);
        tokio::time::sleep(Duration::from_millis(3)).await;
        let b_run = spawn_query(&b, B_SQL);
        a_run.await?.ctx("client A's query, no cancel")?;
        took.push(start.elapsed());
        b_run.await?.ctx("client B's query, no cancel")?;
    }
    took.sort();
    let a_takes = took[took.len() / 2];
    println!(
        "client A's query takes {a_takes:?} (median of 10; range {:?} to {:?})",
        took[0],
        took[took.len() - 1]
    );

    let sweep_len = (SWEEP_BEFORE + SWEEP_AFTER).as_micros() as u32 / 500;
    let (mut a_cancelled, mut a_completed, mut foreign) = (0u32, 0u32, Vec::new());
    let started = Instant::now();
    for round in 0..ROUNDS {
        let at = (a_takes + Duration::from_micros(500 * u64::from(round % sweep_len)))
            .saturating_sub(SWEEP_BEFORE);
        let start = Instant::now();
        let a_run = spawn_query(&a, A_SQL);
        tokio::time::sleep(Duration::from_millis(3)).await;
        let b_run = spawn_query(&b, B_SQL);
        tokio::time::sleep_until((start + at).into()).await;
        a_cancel
            .cancel_query(NoTls)
            .await
            .ctx("sending client A's cancel")?;
        match a_run.await? {
            Ok(()) => a_completed += 1,
            Err(e) if sqlstate(&e) == Some("57014") => a_cancelled += 1,
            Err(e) => anyhow::bail!("round {round}: client A's query failed: {}", describe_error(&e)),
        }
        if let Err(e) = b_run.await? {
            foreign.push(format!(
                "round {round} (cancel sent {at:?} after A's query started): {}",
                describe_error(&e)
            ));
        }
    }
    println!(
        "{ROUNDS} rounds in {:?}: A's query cancelled {a_cancelled} times, completed {a_completed} times; B's query failed {} times",
        started.elapsed(),
        foreign.len()
    );
    ensure!(
        foreign.is_empty(),
        "client B's query failed although only client A sent cancels ({} of {ROUNDS} rounds):\n{}",
        foreign.len(),
        foreign.join("\n")
    );

    // A cancel sent while A's query runs does stop it.
    for round in 0..3 {
        let a_run = spawn_query(&a, "SELECT pg_sleep(10)");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        a_cancel
            .cancel_query(NoTls)
            .await
            .ctx("sending client A's cancel")?;
        let result = tokio::time::timeout(Duration::from_secs(5), a_run)
            .await
            .with_context(|| {
                format!("round {round}: client A's pg_sleep(10) still ran 5 s after its cancel")
            })??;
        expect_sqlstate(
            result,
            &["57014"],
            &format!("round {round}: client A's cancelled pg_sleep(10)"),
        )?;
        println!(
            "round {round}: A's long query cancelled {:?} after the cancel was sent",
            sent.elapsed()
        );
    }
    b.simple_query("SELECT 1")
        .await
        .ctx("client B after the cancels")?;
    bed.ensure_proxy_alive()
}
