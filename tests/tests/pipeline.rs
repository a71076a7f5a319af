//! Pipelined transaction pooling (`[pool] pipeline = true`): standalone statements of many
//! clients written to a small pool's servers back to back. Each client gets exactly its own
//! rows in order; an error, a cancel or a server failure affects only the statement it
//! belongs to; sessions that SET something or open a transaction are never pipelined, nor
//! is anyone with pipelining off (the default) or under a pool-mode plugin, which has no
//! pipelining export yet. `SHOW POOLS` column `pipelined` proves which path ran.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::BytesMut;
use switchyard_tests::admin::admin_rows;
use switchyard_tests::client::{backend_running, backends_running};
use switchyard_tests::plugin::{decisions, policy_row, with_plugin};
use switchyard_tests::raw::{msg, RawConn};
use switchyard_tests::{describe_error, roles, skip_if_direct, sqlstate, Endpoint, PgResultExt, TestBed};
use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// A proxy in transaction pooling with a pool of `size` servers, the admin console, and
/// pipelining on or off.
fn bed(size: u32, pipeline: bool) -> Result<TestBed> {
    TestBed::start_with(|cfg| {
        cfg.mode("transaction")
            .pool_size(size)
            .with_admin()
            .set("pool.pipeline", pipeline)
    })
}

/// Statements answered through a pipeline, summed over every pool (`SHOW POOLS`).
async fn pipelined(ep: &Endpoint) -> Result<u64> {
    let mut total = 0;
    for row in admin_rows(ep, "SHOW POOLS").await? {
        total += row["pipelined"].parse::<u64>().context("SHOW POOLS pipelined")?;
    }
    Ok(total)
}

/// Requests run again, summed over every pool (`SHOW POOLS`).
async fn retried(ep: &Endpoint) -> Result<u64> {
    let mut total = 0;
    for row in admin_rows(ep, "SHOW POOLS").await? {
        total += row["retried"].parse::<u64>().context("SHOW POOLS retried")?;
    }
    Ok(total)
}

/// The text columns of every row `messages` hold.
fn rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<String>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Runs `SELECT id, seq` for seq in 0..`count` on `client` and checks each reply is exactly
/// that one row.
async fn own_rows(client: &Client, id: usize, count: usize) -> Result<()> {
    for seq in 0..count {
        let got = client
            .simple_query(&format!("SELECT {id}, {seq}"))
            .await
            .with_context(|| format!("client {id}, statement {seq}"))?;
        let want = vec![vec![id.to_string(), seq.to_string()]];
        let got = rows(&got);
        ensure!(
            got == want,
            "client {id}, statement {seq}: expected {want:?}, got {got:?}"
        );
    }
    Ok(())
}

/// `clients` clients each running [`own_rows`] with `count` statements at once; the first
/// failure, if any, with its client.
async fn many_own_rows(ep: &Endpoint, first_id: usize, clients: usize, count: usize) -> Result<()> {
    let mut set = JoinSet::new();
    for id in first_id..first_id + clients {
        let client = ep.connect_app().await?;
        set.spawn(async move { own_rows(&client, id, count).await });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(())
}

/// A superuser connection straight to Postgres (for pg_stat_activity and
/// pg_terminate_backend).
async fn dba(bed: &TestBed) -> Result<Client> {
    bed.direct()
        .connect(roles::SUPERUSER.0, roles::SUPERUSER.1, roles::APP_DB)
        .await
}

/// 16 tokio-postgres clients through a pool of 2 with pipelining on each run 300
/// simple-protocol statements returning (client id, sequence number): every client gets
/// exactly its own row for each statement, in order, and `SHOW POOLS` counts pipelined
/// statements (more than 0, printed), so the pipelined path is what served them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_gets_exactly_its_own_rows_in_order() -> Result<()> {
    skip_if_direct!();
    let bed = bed(2, true)?;
    let ep = bed.endpoint();
    let started = Instant::now();
    many_own_rows(&ep, 0, 16, 300).await?;
    let count = pipelined(&ep).await?;
    println!(
        "16 clients x 300 statements through a pool of 2 in {:?}; {count} of 4800 pipelined",
        started.elapsed()
    );
    ensure!(
        count > 0,
        "no statement was pipelined: the test did not exercise the pipeline"
    );
    Ok(())
}

/// While 8 clients pipeline reads through a pool of 2, one client runs `SELECT 1/0` 100
/// times, each followed by `SELECT 'after', n`: each `1/0` fails with exactly 22012, the
/// statement after it returns its row, and none of the 8 other clients (whose statements
/// run in the same batches) gets an error or a wrong row. Pipelined statements > 0, and
/// the metrics count exactly 100 errors 22012 for the pool, pipelined or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_stays_with_its_statement() -> Result<()> {
    skip_if_direct!();
    let metrics = format!("127.0.0.1:{}", switchyard_tests::ports::free_port()?);
    let bed = TestBed::start_with(|cfg| {
        cfg.mode("transaction")
            .pool_size(2)
            .with_admin()
            .set("pool.pipeline", true)
            .set("proxy.metrics_listen", metrics.as_str())
    })?;
    let ep = bed.endpoint();
    let others = {
        let ep = ep.clone();
        tokio::spawn(async move { many_own_rows(&ep, 0, 8, 300).await })
    };
    let failing = ep.connect_app().await?;
    for n in 0..100 {
        let result = failing.simple_query("SELECT 1/0").await;
        match &result {
            Err(e) if sqlstate(e) == Some("22012") => {}
            Err(e) => bail!("SELECT 1/0 number {n}: expected 22012, got {}", describe_error(e)),
            Ok(_) => bail!("SELECT 1/0 number {n} succeeded"),
        }
        let after = failing
            .simple_query(&format!("SELECT 'after', {n}"))
            .await
            .with_context(|| format!("the statement after SELECT 1/0 number {n}"))?;
        let want = vec![vec!["after".to_string(), n.to_string()]];
        ensure!(
            rows(&after) == want,
            "after 1/0 number {n}: expected {want:?}, got {:?}",
            rows(&after)
        );
    }
    others
        .await?
        .context("a client pipelined beside the failing one")?;
    let count = pipelined(&ep).await?;
    println!("{count} statements pipelined");
    ensure!(count > 0, "no statement was pipelined");
    let scrape = tokio::task::spawn_blocking(move || {
        switchyard_tests::http::get(&metrics, "/metrics", Duration::from_secs(10))
    })
    .await??;
    let counted: Vec<&str> = scrape
        .body
        .lines()
        .filter(|l| l.starts_with("switchyard_client_errors_total{") && l.contains("sqlstate=\"22012\""))
        .collect();
    ensure!(
        counted.len() == 1 && counted[0].ends_with(" 100"),
        "expected one series of 100 errors 22012, got {counted:?}"
    );
    Ok(())
}

/// Pool of 1: client A's `SELECT pg_sleep(10)` runs alone in the pipeline (its backend
/// seen active), 6 other clients' statements queue behind it, then A sends a cancel: A gets
/// exactly 57014 well before its 10 s (the time is printed), every other client gets all
/// its 50 rows right and no error (no one else gets 57014), and A's next statement works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_only_its_own_pipelined_statement() -> Result<()> {
    skip_if_direct!();
    let bed = bed(1, true)?;
    let ep = bed.endpoint();
    let dba = dba(&bed).await?;
    let a = Arc::new(ep.connect_app().await?);
    let sleep = "SELECT pg_sleep(10)";
    let a_run = {
        let a = a.clone();
        tokio::spawn(async move { a.simple_query(sleep).await.map(|_| ()) })
    };
    backend_running(&dba, sleep).await?;
    let others = {
        let ep = ep.clone();
        tokio::spawn(async move { many_own_rows(&ep, 1, 6, 50).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    a.cancel_token().cancel_query(NoTls).await.ctx("A's cancel")?;
    let a_result = tokio::time::timeout(Duration::from_secs(20), a_run)
        .await
        .context("A got no answer in 20 s")??;
    println!("A's statement ended {:?} after its cancel", asked.elapsed());
    match a_result {
        Err(e) if sqlstate(&e) == Some("57014") => {}
        Err(e) => bail!("A: expected 57014, got {}", describe_error(&e)),
        Ok(()) => bail!("A's pg_sleep(10) completed although A cancelled it"),
    }
    ensure!(
        asked.elapsed() < Duration::from_secs(8),
        "A's cancel took effect only after its sleep ended"
    );
    others
        .await?
        .context("a client queued behind the cancelled statement")?;
    own_rows(&a, 0, 3).await.context("A after its cancel")?;
    println!("{} statements pipelined", pipelined(&ep).await?);
    Ok(())
}

/// What a statement run in a task returned, and when it ended.
type Ended = (Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>, Instant);

/// Runs `sql` on `client` in a task.
fn spawn_query(client: &Arc<Client>, sql: &'static str) -> tokio::task::JoinHandle<Ended> {
    let c = client.clone();
    tokio::spawn(async move {
        let result = c.simple_query(sql).await;
        (result, Instant::now())
    })
}

/// Starts `SELECT pg_sleep(secs), 'starter'` on `starter` and waits until its backend runs
/// it: the pool's only pipeline is busy, so statements sent now queue and go out together
/// in its next batch.
async fn occupy(
    starter: &Arc<Client>,
    dba: &Client,
    sql: &'static str,
) -> Result<tokio::task::JoinHandle<Ended>> {
    let run = spawn_query(starter, sql);
    backend_running(dba, sql).await?;
    Ok(run)
}

/// Pool of 1. Phase 1, 20 rounds: A's `SELECT pg_sleep(0.15), 'A'` runs alone (its backend
/// seen active); B's `SELECT pg_sleep(0.15), 'B'` queues behind it, not written; B cancels:
/// B gets exactly 57014 before A is answered, and A its row. Phase 2, 10 rounds: A's and B's statements queue
/// behind a starter and are written in one batch, A first; once A's backend runs it, B
/// cancels: the cancel waits until A is answered, so A gets its row, and B (then running
/// alone) is answered after A: 57014, or its row when the cancel landed while its backend
/// was reading B (Postgres ignores it then); at least one phase-2 round must end in 57014. In no round does A fail: a cancel from a client whose
/// statement waits behind another's never cancels the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_a_statement_queued_behind_another_never_cancels_the_other() -> Result<()> {
    skip_if_direct!();
    let bed = bed(1, true)?;
    let ep = bed.endpoint();
    let dba = dba(&bed).await?;
    let a = Arc::new(ep.connect_app().await?);
    let b = Arc::new(ep.connect_app().await?);
    let starter = Arc::new(ep.connect_app().await?);
    let a_sql = "SELECT pg_sleep(0.15), 'A'";
    let b_sql = "SELECT pg_sleep(0.15), 'B'";
    let a_row = vec![vec![String::new(), "A".to_string()]];
    let (mut b_cancelled, mut b_completed) = (0, 0);
    for round in 0..30 {
        let batched = round >= 20;
        let starter_run = if batched {
            Some(occupy(&starter, &dba, "SELECT pg_sleep(0.1), 'starter'").await?)
        } else {
            None
        };
        let a_run = spawn_query(&a, a_sql);
        if !batched {
            backend_running(&dba, a_sql).await?;
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let b_run = spawn_query(&b, b_sql);
        if batched {
            backend_running(&dba, a_sql).await?;
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let asked = Instant::now();
        b.cancel_token().cancel_query(NoTls).await.ctx("B's cancel")?;
        let (a_result, a_end) = a_run.await?;
        match a_result {
            Ok(m) => ensure!(rows(&m) == a_row, "round {round}: A got {:?}", rows(&m)),
            Err(e) => bail!(
                "round {round}: A's statement failed although only B cancelled: {}",
                describe_error(&e)
            ),
        }
        let (b_result, b_end) = b_run.await?;
        match b_result {
            Err(e) if sqlstate(&e) == Some("57014") => b_cancelled += 1,
            // Postgres ignores a cancel that lands while the backend reads its next
            // command, as it does for its own clients (the statement then completes).
            Ok(m) if batched && rows(&m) == vec![vec![String::new(), "B".to_string()]] => b_completed += 1,
            Ok(m) => bail!(
                "round {round} (batched: {batched}): B's statement completed ({:?}) although B cancelled it",
                rows(&m)
            ),
            Err(e) => bail!("round {round}: B: expected 57014, got {}", describe_error(&e)),
        }
        if batched {
            ensure!(
                b_end >= a_end,
                "round {round}: B, written behind A, was answered before A"
            );
        } else {
            ensure!(
                b_end < a_end,
                "round {round}: B, not written yet, was answered only after A"
            );
        }
        if let Some(run) = starter_run {
            run.await?.0.ctx("the starter")?;
        }
        if round == 0 || round == 20 {
            println!(
                "round {round} (A and B in one batch: {batched}): after B's cancel, A answered in {:?}, B got 57014 in {:?}",
                a_end - asked,
                b_end - asked
            );
        }
    }
    println!(
        "30 rounds: A never failed; B got 57014 {b_cancelled} times, completed {b_completed} times (batched rounds only); {} pipelined",
        pipelined(&ep).await?
    );
    ensure!(
        b_cancelled > 20,
        "no cancel of a statement written behind another took effect: the forwarding path did not run"
    );
    Ok(())
}

/// Pool of 1, 3 rounds: while a starter statement keeps the pool's only pipeline busy,
/// client V's `SELECT pg_sleep(5), 'victim'`, then 5 readers' `SELECT id, seq` and a
/// writer's INSERT queue and are written in one batch, V first; V's backend is terminated
/// while it sleeps. Allowed per client: V exactly 57P01 (its statement was the one
/// terminated, as without pipelining); each reader no error and its own row (a read with
/// no reply byte runs again: `SHOW POOLS` retried grows by 5 each round); the writer
/// exactly 08006 (written behind the terminated statement, the proxy cannot know it never
/// ran), and its row is absent (Postgres never read it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_failure_mid_pipeline_fails_only_the_running_statement() -> Result<()> {
    skip_if_direct!();
    let bed = bed(1, true)?;
    let ep = bed.endpoint();
    let dba = dba(&bed).await?;
    ep.connect_app()
        .await?
        .batch_execute("CREATE TABLE pipe_writes (round int PRIMARY KEY)")
        .await
        .ctx("create pipe_writes")?;
    let starter = Arc::new(ep.connect_app().await?);
    for round in 0..3 {
        let victim = Arc::new(ep.connect_app().await?);
        let mut readers = Vec::new();
        for _ in 0..5 {
            readers.push(ep.connect_app().await?);
        }
        let writer = ep.connect_app().await?;
        let before = retried(&ep).await?;
        let starter_run = occupy(&starter, &dba, "SELECT pg_sleep(0.3), 'starter'").await?;
        let sleep = "SELECT pg_sleep(5), 'victim'";
        let v_run = spawn_query(&victim, sleep);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut reads = JoinSet::new();
        for (i, r) in readers.into_iter().enumerate() {
            reads.spawn(async move { own_rows(&r, 100 + i, 1).await });
        }
        let write = tokio::spawn(async move {
            writer
                .simple_query(&format!("INSERT INTO pipe_writes VALUES ({round})"))
                .await
                .map(|_| ())
        });
        starter_run.await?.0.ctx("the starter")?;
        let pid = backend_running(&dba, sleep).await?;
        dba.execute("SELECT pg_terminate_backend($1)", &[&pid]).await?;
        match v_run.await?.0 {
            Err(e) if sqlstate(&e) == Some("57P01") => {}
            Err(e) => bail!(
                "round {round}: the terminated statement's client: expected 57P01, got {}",
                describe_error(&e)
            ),
            Ok(m) => bail!(
                "round {round}: the terminated statement completed: {:?}",
                rows(&m)
            ),
        }
        while let Some(done) = reads.join_next().await {
            done?.with_context(|| {
                format!("round {round}: a reader written behind the terminated statement")
            })?;
        }
        match write.await? {
            Err(e) if sqlstate(&e) == Some("08006") => {}
            Err(e) => bail!(
                "round {round}: the writer: expected 08006, got {}",
                describe_error(&e)
            ),
            Ok(()) => bail!("round {round}: the writer written behind the terminated statement succeeded"),
        }
        let stored: i64 = dba
            .query_one("SELECT count(*) FROM pipe_writes WHERE round = $1", &[&round])
            .await?
            .get(0);
        ensure!(
            stored == 0,
            "round {round}: the writer got 08006, yet its row is there"
        );
        let rerun = retried(&ep).await? - before;
        println!("round {round}: {rerun} reads ran again after the termination");
        ensure!(
            rerun == 5,
            "round {round}: {rerun} of the 5 reads behind the terminated statement ran again"
        );
    }
    Ok(())
}

/// Pipelining on, pool of 2: 8 clients that ran `SET application_name` and 8 that run
/// every statement inside `BEGIN`/`COMMIT` each run 50 statements at once: all their rows
/// are right and `SHOW POOLS` counts 0 pipelined statements. The same proxy then pipelines
/// plain clients (count > 0), so the count could have moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_with_settings_or_transactions_are_not_pipelined() -> Result<()> {
    skip_if_direct!();
    let bed = bed(2, true)?;
    let ep = bed.endpoint();
    let mut set = JoinSet::new();
    for id in 0..16usize {
        let client = ep.connect_app().await?;
        set.spawn(async move {
            if id < 8 {
                client
                    .batch_execute(&format!("SET application_name = 'set{id}'"))
                    .await
                    .ctx("SET")?;
                own_rows(&client, id, 50).await
            } else {
                for seq in 0..50 {
                    client.simple_query("BEGIN").await.ctx("BEGIN")?;
                    let got = client
                        .simple_query(&format!("SELECT {id}, {seq}"))
                        .await
                        .ctx("in block")?;
                    ensure!(
                        rows(&got) == vec![vec![id.to_string(), seq.to_string()]],
                        "client {id}: {:?}",
                        rows(&got)
                    );
                    client.simple_query("COMMIT").await.ctx("COMMIT")?;
                }
                Ok(())
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    let count = pipelined(&ep).await?;
    ensure!(
        count == 0,
        "{count} statements of sessions with settings or transactions were pipelined"
    );
    many_own_rows(&ep, 100, 16, 50).await?;
    let plain = pipelined(&ep).await?;
    println!("pipelined: 0 for SET/transaction sessions, {plain} for plain ones");
    ensure!(
        plain > 0,
        "plain sessions were not pipelined either: the check above proves nothing"
    );
    Ok(())
}

/// Pipelining off (the default), pool of 2: 16 clients x 100 statements all get their own
/// rows and `SHOW POOLS` counts 0 pipelined statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_is_off_by_default() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.mode("transaction").pool_size(2).with_admin())?;
    let ep = bed.endpoint();
    many_own_rows(&ep, 0, 16, 100).await?;
    let count = pipelined(&ep).await?;
    ensure!(
        count == 0,
        "{count} statements pipelined with pipelining off by default"
    );
    Ok(())
}

/// `pipeline = true` with a pool-mode component built against the WIT world without the
/// `pipelining` export (`testing-std-user`, world `pool-mode-plugin`): it loads, serves 8
/// clients x 50 statements with their own rows, makes pool-mode decisions (more than 0),
/// and pipelines nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_mode_plugin_without_the_pipelining_export_loads_and_never_pipelines() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| {
        let cfg = cfg.mode("transaction").pool_size(2).set("pool.pipeline", true);
        with_plugin(cfg, "testing-std-user", &[]).expect("the testing-std-user component is built")
    })?;
    let ep = bed.endpoint();
    many_own_rows(&ep, 0, 8, 50).await?;
    let made = decisions(&policy_row(&ep).await?)?;
    println!("the plugin made {made} pool-mode decisions");
    ensure!(
        made > 0,
        "the plugin made no decision: it did not serve these clients"
    );
    let count = pipelined(&ep).await?;
    ensure!(
        count == 0,
        "{count} statements pipelined under a plugin that cannot allow it"
    );
    Ok(())
}

/// `clients` clients named `application` each running [`own_rows`] with `count` statements.
async fn named_own_rows(ep: &Endpoint, application: &str, clients: usize, count: usize) -> Result<()> {
    let mut set = JoinSet::new();
    for id in 0..clients {
        let mut cfg = ep.config(roles::APP.0, roles::APP.1, roles::APP_DB);
        cfg.application_name(application);
        let client = switchyard_tests::client::connect(&cfg)
            .await
            .map_err(|e| anyhow::anyhow!(describe_error(&e)))?;
        set.spawn(async move { own_rows(&client, id, count).await });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(())
}

/// The bundled pool-mode plugin with `pipeline = "true"` and
/// `pipeline_applications = "piped"` (and `[pool] pipeline` left off: the plugin decides):
/// 8 clients named `other` x 50 statements are not pipelined (count stays 0), then 8 named
/// `piped` are (count > 0); every client gets its own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_mode_plugin_decides_who_is_pipelined() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| {
        let cfg = cfg.mode("transaction").pool_size(2);
        with_plugin(
            cfg,
            "pool-mode",
            &[
                ("mode", "transaction"),
                ("pipeline", "true"),
                ("pipeline_applications", "piped"),
            ],
        )
        .expect("the bundled pool-mode component is built")
    })?;
    let ep = bed.endpoint();
    named_own_rows(&ep, "other", 8, 50).await?;
    let others = pipelined(&ep).await?;
    ensure!(
        others == 0,
        "{others} statements of clients the plugin did not name were pipelined"
    );
    named_own_rows(&ep, "piped", 8, 50).await?;
    let piped = pipelined(&ep).await?;
    println!("pipelined: 0 for application other, {piped} for application piped");
    ensure!(
        piped > 0,
        "clients of the application the plugin names were not pipelined"
    );
    Ok(())
}

/// Pool of 1: raw client R sends `SELECT repeat('x', 10000) FROM generate_series(1, 5000)`
/// (50 MB) and reads nothing; meanwhile client C runs 20 statements, which queue behind R's
/// on the pool's only pipeline: all 20 get their own rows (within 30 s; the time is
/// printed), so a client that does not read holds the pipeline only for a bounded time.
/// When R finally reads, it gets part of its rows and then the end of its connection, with
/// no ReadyForQuery (its reply was dropped) and no error but 54000 (if the part it got
/// ended between messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_holds_the_pipeline_only_for_a_bounded_time() -> Result<()> {
    skip_if_direct!();
    let bed = bed(1, true)?;
    let ep = bed.endpoint();
    let c = ep.connect_app().await?;
    let mut r = RawConn::login_app(&ep.addr()).await?;
    let mut query = BytesMut::new();
    msg::query(
        &mut query,
        "SELECT repeat('x', 10000) FROM generate_series(1, 5000)",
    );
    r.send(&query).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), own_rows(&c, 1, 20))
        .await
        .context("the statements behind an unread reply were held for 30 s")??;
    println!(
        "20 statements behind an unread 50 MB reply took {:?}",
        started.elapsed()
    );
    let got = r.read_until_eof(Duration::from_secs(30)).await?;
    let rows = got.iter().filter(|m| m.tag == b'D').count();
    let errors: Vec<String> = got.iter().filter_map(|m| m.sqlstate()).collect();
    println!("R got {rows} of 5000 rows, then errors {errors:?} and the end of its connection");
    ensure!(
        rows < 5000,
        "R got its whole reply although it did not read for seconds"
    );
    ensure!(
        !got.iter().any(|m| m.tag == b'Z'),
        "R got a ReadyForQuery although its reply was dropped"
    );
    ensure!(
        errors.iter().all(|e| e == "54000"),
        "R: expected no error but 54000, got {errors:?}"
    );
    Ok(())
}

/// Pool of 1, `query_timeout = "500ms"`: client A's `SELECT pg_sleep(5), 'timed'` runs alone
/// in the pipeline and 4 clients' statements queue behind it. A gets exactly FATAL 57014
/// naming query_timeout (after about 0.5 s, printed), its backend stops running the sleep
/// (the cancel reached it), and every other client gets its 20 rows right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_cancels_a_pipelined_statement_by_the_cancel_path() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| {
        cfg.mode("transaction")
            .pool_size(1)
            .with_admin()
            .set("pool.pipeline", true)
            .set("pool.query_timeout", "500ms")
    })?;
    let ep = bed.endpoint();
    let dba = dba(&bed).await?;
    let a = Arc::new(ep.connect_app().await?);
    let sleep = "SELECT pg_sleep(5), 'timed'";
    let started = Instant::now();
    let a_run = spawn_query(&a, sleep);
    backend_running(&dba, sleep).await?;
    let others = {
        let ep = ep.clone();
        tokio::spawn(async move { many_own_rows(&ep, 1, 4, 20).await })
    };
    let (a_result, a_end) = a_run.await?;
    println!("A's statement ended after {:?}", a_end - started);
    match a_result {
        Err(e) if sqlstate(&e) == Some("57014") => ensure!(
            e.as_db_error()
                .is_some_and(|d| d.message().contains("query_timeout")),
            "A: 57014 without naming query_timeout: {}",
            describe_error(&e)
        ),
        Err(e) => bail!("A: expected 57014 for query_timeout, got {}", describe_error(&e)),
        Ok(m) => bail!(
            "A's pg_sleep(5) completed under a query_timeout of 500ms: {:?}",
            rows(&m)
        ),
    }
    others
        .await?
        .context("a client queued behind the timed-out statement")?;
    let still = backends_running(&dba, sleep).await?;
    ensure!(still == 0, "the timed-out statement still runs on its backend");
    ensure!(pipelined(&ep).await? > 0, "nothing was pipelined");
    Ok(())
}

/// SIGTERM with `shutdown_timeout = 2s` while a pipelined autocommit write runs
/// (`INSERT ... SELECT 1 FROM pg_sleep(8)`; the counter shows it took the pipeline). Checks
/// that its client gets 57P01 between 1.5 s and 10 s after the signal (the statement is
/// not between transactions, so only `shutdown_timeout` ends it), that the proxy exits 0,
/// that the statement's backend stops running it within 5 s of the exit (before the sleep
/// could end), and that once the 8 s have passed the row is not there: the statement was
/// cancelled, not left to commit behind a client told it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_shutdown_timeout_cancels_a_pipelined_write() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| {
        cfg.mode("transaction")
            .pool_size(1)
            .with_admin()
            .set("pool.pipeline", true)
            .set("proxy.shutdown_timeout", "2s")
    })?;
    let ep = bed.endpoint();
    let dba = dba(&bed).await?;
    let a = Arc::new(ep.connect_app().await?);
    a.simple_query("CREATE TABLE piped_sigterm (v int)").await?;
    // The same write with no sleep and no row shows that such writes take the pipeline
    // (the counter moves when a statement's reply is complete).
    let before = pipelined(&ep).await?;
    a.simple_query("INSERT INTO piped_sigterm SELECT 1 FROM pg_sleep(0) WHERE false")
        .await?;
    ensure!(pipelined(&ep).await? == before + 1, "A's write was not pipelined");
    let write = "INSERT INTO piped_sigterm SELECT 1 FROM pg_sleep(8)";
    let a_run = spawn_query(&a, write);
    let started = Instant::now();
    backend_running(&dba, write).await?;
    let proxy = bed.proxy().context("the proxy")?;
    let signalled = Instant::now();
    proxy.signal(libc::SIGTERM);
    let (a_result, a_end) = tokio::time::timeout(Duration::from_secs(15), a_run)
        .await
        .context("A's statement was not ended within 15 s of SIGTERM")??;
    let after = a_end - signalled;
    println!(
        "A ended {after:?} after SIGTERM: {:?}",
        a_result.as_ref().map_err(describe_error).map(|m| rows(m))
    );
    match a_result {
        Err(e) if sqlstate(&e) == Some("57P01") => {}
        Err(e) => bail!("A: expected 57P01, got {}", describe_error(&e)),
        Ok(m) => bail!("A's write completed: {:?}", rows(&m)),
    }
    ensure!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(10),
        "A was ended {after:?} after SIGTERM (shutdown_timeout = 2s)"
    );
    let status = bed
        .proxy()
        .context("the proxy")?
        .wait_exit(Duration::from_secs(5))?;
    ensure!(
        status.is_some_and(|s| s.success()),
        "the proxy did not exit with status 0: {status:?}"
    );
    // The statement's backend, polled directly for up to 5 s after the exit.
    let exited = Instant::now();
    let mut still_running = true;
    while still_running && exited.elapsed() < Duration::from_secs(5) {
        still_running = backends_running(&dba, write).await? > 0;
        if still_running {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "the write's backend stopped running it {:?} after the proxy exited",
        exited.elapsed()
    );
    ensure!(
        !still_running,
        "the write still runs on its backend 5 s after the proxy exited: not cancelled"
    );
    // Past the moment the uncancelled statement would have inserted its row.
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(started.elapsed())).await;
    let stored: i64 = dba
        .query_one("SELECT count(*) FROM piped_sigterm", &[])
        .await?
        .get(0);
    ensure!(
        stored == 0,
        "the write its client was told failed (57P01) committed"
    );
    Ok(())
}
