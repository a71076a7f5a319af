//! Pool settings that change without a restart, through psql on the admin console against
//! real Postgres: `SET pool.size` and a `RELOAD` resizing a pool under load (what Postgres
//! sees, what the clients see; a replica's read servers too), `SET query_wait_timeout`
//! and `SET client_idle_timeout` applying to the next wait and the next sessions, a
//! database's `pool_size` and `pool_mode` changed by `RELOAD` (new sessions get the new
//! mode, running ones keep theirs), and `SET`'s errors and `SHOW CONFIG`'s `changeable`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::admin::{admin_rows, pool_row};
use switchyard_tests::client::app_backends;
use switchyard_tests::cluster::roles;
use switchyard_tests::peak::ServerPeak;
use switchyard_tests::raw::RawConn;
use switchyard_tests::tools::CmdOutput;
use switchyard_tests::{
    expect_sqlstate, skip_if_direct, ClusterOptions, Endpoint, PgResultExt, ProxyConfig, TestBed,
};

/// Errors of one load client, by SQLSTATE (`none` for an error without one).
type ErrorsByState = BTreeMap<String, u64>;

/// An admin command through psql on the console (`admin`/`admin`), with errors shown as
/// `ERROR:  <SQLSTATE>: <message>` (psql's `VERBOSITY verbose`).
async fn console(ep: &Endpoint, command: &str) -> Result<CmdOutput> {
    let script = format!("\\set VERBOSITY verbose\n{command};\n");
    let psql = ep.psql("admin", "admin", "switchyard");
    tokio::task::spawn_blocking(move || psql.run_script(&script)).await?
}

/// [`console`], which must succeed.
async fn console_ok(ep: &Endpoint, command: &str) -> Result<()> {
    let out = console(ep, command).await?;
    out.ensure_success()?;
    Ok(())
}

/// Polls [`app_backends`] every 20 ms until `done` holds for the count (within `limit`);
/// returns the count and how long it took.
async fn wait_for_backends(
    dba: &tokio_postgres::Client,
    limit: Duration,
    what: &str,
    done: impl Fn(i64) -> bool,
) -> Result<(i64, Duration)> {
    let started = Instant::now();
    loop {
        let n = app_backends(dba).await?;
        if done(n) {
            return Ok((n, started.elapsed()));
        }
        if started.elapsed() > limit {
            bail!("Postgres did not see {what} within {limit:?}: {n} backends of app");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `clients` `app` clients each running `SELECT pg_sleep(0.3)` in a loop until stopped;
/// each returns its successes and its errors by SQLSTATE.
struct SleepLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, ErrorsByState)>>,
}

impl SleepLoad {
    async fn start(ep: &Endpoint, clients: usize) -> Result<SleepLoad> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for id in 0..clients {
            let client = ep
                .connect_app()
                .await
                .with_context(|| format!("load client {id} logs in"))?;
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut errors) = (0, ErrorsByState::new());
                while !stop.load(Ordering::Relaxed) {
                    match client.simple_query("SELECT pg_sleep(0.3)").await {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            let code = switchyard_tests::sqlstate(&e).unwrap_or("none");
                            *errors.entry(code.to_string()).or_default() += 1;
                            if errors.values().sum::<u64>() >= 20 {
                                break;
                            }
                        }
                    }
                }
                (ok, errors)
            }));
        }
        Ok(SleepLoad { stop, tasks })
    }

    /// Stops the clients; per client, its successes and errors by SQLSTATE.
    async fn finish(self) -> Result<Vec<(u64, ErrorsByState)>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for task in self.tasks {
            results.push(tokio::time::timeout(Duration::from_secs(30), task).await??);
        }
        Ok(results)
    }
}

/// 8 clients run `pg_sleep(0.3)` in a loop on a pool of 2 (transaction pooling): Postgres
/// sees at most 2 backends of the pool. `SET pool.size = 6` through psql: Postgres sees
/// more than 2 (waiting clients let in at once) and, over the next 1.5 s, at most 6; `SHOW
/// POOLS` says 6 and the log has a `setting changed` line for `pool.size` from 2 to 6. Then a `RELOAD` of the file with `size = 1`: Postgres is down to at most
/// 1 backend (servers closed as they are given back), stays at most 1 over the next 1.5 s,
/// and `SHOW POOLS` says 1. No client got any error, and each completed statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resizing_a_pool_under_load_by_set_and_reload_gives_no_client_error() -> Result<()> {
    resize_under_load(|cfg| cfg).await
}

/// The same with `threading = "per-core"` on two workers (a queue of waiters and a list
/// of idle servers per worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_resizing_a_pool_under_load_gives_no_client_error() -> Result<()> {
    resize_under_load(|cfg| cfg.set("proxy.threading", "per-core").set("proxy.workers", 2)).await
}

/// See [`resizing_a_pool_under_load_by_set_and_reload_gives_no_client_error`].
async fn resize_under_load(configure: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| configure(cfg.with_admin().pool_size(2)))?;
    let ep = bed.endpoint();
    let (su, password) = roles::SUPERUSER;
    let dba = bed.direct().connect(su, password, "postgres").await?;
    let load = SleepLoad::start(&ep, 8).await?;

    let peak = ServerPeak::start(&bed.direct(), "app", "app").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_2 = peak.finish().await?;
    println!("size 2: at most {} backends ({} samples)", at_2.max, at_2.samples);
    ensure!(at_2.max <= 2, "size 2: Postgres saw {} backends of app", at_2.max);

    console_ok(&ep, "SET pool.size = 6").await?;
    let (n, took) = wait_for_backends(&dba, Duration::from_secs(5), "more than 2", |n| n > 2).await?;
    println!("SET pool.size = 6: {n} backends after {took:?}");
    let peak = ServerPeak::start(&bed.direct(), "app", "app").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_6 = peak.finish().await?;
    println!("size 6: at most {} backends ({} samples)", at_6.max, at_6.samples);
    ensure!(at_6.max <= 6, "size 6: Postgres saw {} backends of app", at_6.max);
    let size = pool_row(&ep, "app/app").await?["size"].clone();
    ensure!(size == "6", "SHOW POOLS after SET pool.size = 6: size {size}");
    let log = bed.proxy().context("a proxy")?.log();
    let line = log
        .lines()
        .find(|l| l.contains("setting changed") && l.contains("key=pool.size"))
        .with_context(|| format!("no `setting changed` line for pool.size in the log:\n{log}"))?;
    println!("log: {line}");
    ensure!(
        line.contains("from=2") && line.contains("to=6"),
        "the log line: {line}"
    );

    let proxy = bed.proxy().context("a proxy")?;
    let config = proxy.config().clone().pool_size(1);
    proxy.write_config(config)?;
    console_ok(&ep, "RELOAD").await?;
    let (n, took) = wait_for_backends(&dba, Duration::from_secs(10), "at most 1", |n| n <= 1).await?;
    println!("RELOAD with size = 1: {n} backends after {took:?}");
    let peak = ServerPeak::start(&bed.direct(), "app", "app").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_1 = peak.finish().await?;
    println!("size 1: at most {} backends ({} samples)", at_1.max, at_1.samples);
    ensure!(at_1.max <= 1, "size 1: Postgres saw {} backends of app", at_1.max);
    let size = pool_row(&ep, "app/app").await?["size"].clone();
    ensure!(size == "1", "SHOW POOLS after RELOAD with size = 1: size {size}");

    let results = load.finish().await?;
    for (id, (ok, errors)) in results.iter().enumerate() {
        println!("client {id}: {ok} statements, errors {errors:?}");
    }
    for (id, (ok, errors)) in results.iter().enumerate() {
        ensure!(errors.is_empty(), "client {id} got errors: {errors:?}");
        ensure!(*ok > 0, "client {id} completed no statement");
    }
    bed.ensure_proxy_alive()
}

/// Read routing on a primary and one replica (`read_routing = "replicas"`, `pg_sleep`
/// counted as a read): 6 clients run `SELECT pg_sleep(0.3)` in a loop on a pool of 1; the
/// replica sees at most 1 backend of `app` over 1.5 s. After `SET pool.size = 3` through
/// psql the replica sees more than 1 (the node's read servers follow the size) and at most
/// 3 over the next 1.5 s; no client got any error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_read_servers_follow_the_pool_size() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_full(
        ClusterOptions {
            replicas: 1,
            ..ClusterOptions::default()
        },
        |cfg, _| {
            Ok(cfg
                .with_admin()
                .pool_size(1)
                .set("clusters.main.probe_user", "postgres")
                .set("clusters.main.probe_interval", "100ms")
                .set("databases.app.read_routing", "replicas")
                .set("databases.app.read_only_functions", vec!["pg_sleep"]))
        },
    )?;
    let ep = bed.endpoint();
    let replica = Endpoint::new(bed.pg().replica().host(), bed.pg().replica().port());
    let (su, password) = roles::SUPERUSER;
    let dba = replica.connect(su, password, "postgres").await?;
    // Reads go to the replica once the probes have seen it.
    let probe = ep.connect_app().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let port: i32 = probe
            .query_one("SELECT inet_server_port()", &[])
            .await
            .ctx("where a read runs")?
            .get(0);
        if port == i32::from(replica.port) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "reads did not reach the replica within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let load = SleepLoad::start(&ep, 6).await?;
    let peak = ServerPeak::start(&replica, "app", "app").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_1 = peak.finish().await?;
    println!(
        "size 1: at most {} backends on the replica ({} samples)",
        at_1.max, at_1.samples
    );
    ensure!(
        at_1.max <= 1,
        "size 1: the replica saw {} backends of app",
        at_1.max
    );

    console_ok(&ep, "SET pool.size = 3").await?;
    let (n, took) = wait_for_backends(&dba, Duration::from_secs(5), "more than 1", |n| n > 1).await?;
    println!("SET pool.size = 3: {n} backends on the replica after {took:?}");
    let peak = ServerPeak::start(&replica, "app", "app").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_3 = peak.finish().await?;
    println!(
        "size 3: at most {} backends on the replica ({} samples)",
        at_3.max, at_3.samples
    );
    ensure!(
        at_3.max <= 3,
        "size 3: the replica saw {} backends of app",
        at_3.max
    );

    let results = load.finish().await?;
    for (id, (ok, errors)) in results.iter().enumerate() {
        println!("client {id}: {ok} statements, errors {errors:?}");
        ensure!(errors.is_empty(), "client {id} got errors: {errors:?}");
    }
    bed.ensure_proxy_alive()
}

/// On a pool of 1 with `query_wait_timeout = 30s`, held by a client inside a transaction:
/// after `SET query_wait_timeout = '500ms'` through psql, a second client's `SELECT 1` gets
/// 53300 (printed with how long it waited) within 5 s, far below the old 30 s, and the
/// message names the new limit. The holder's transaction then commits.
#[tokio::test]
async fn set_query_wait_timeout_applies_to_the_next_wait() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| cfg.with_admin().pool_size(1).query_wait_timeout("30s"))?;
    let ep = bed.endpoint();
    let holder = ep.connect_app().await?;
    holder
        .batch_execute("BEGIN; SELECT 1")
        .await
        .ctx("holder's BEGIN")?;
    console_ok(&ep, "SET query_wait_timeout = '500ms'").await?;

    let waiter = ep.connect_app().await?;
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiter.simple_query("SELECT 1"))
        .await
        .context("the waiter was not answered within 5 s: the old query_wait_timeout (30 s) applied")?;
    let waited = started.elapsed();
    let e = expect_sqlstate(outcome, &["53300"], "a wait on a busy pool of 1")?;
    println!("waited {waited:?}: {} {}", e.code().code(), e.message());
    ensure!(
        e.message().contains("500ms"),
        "53300 without the new limit: {}",
        e.message()
    );
    holder.batch_execute("COMMIT").await.ctx("holder's COMMIT")?;
    bed.ensure_proxy_alive()
}

/// `log_connections` and `log_disconnections` (on by default): a client that logs in and
/// leaves puts one `client logged in` and one `client disconnected` line with its pid in
/// the proxy's log. After `SET log_connections = false` and `SET log_disconnections =
/// false` on the console, a second client's login and exit put neither line there (its
/// `SELECT 1` still answers 1); `SHOW CONFIG` lists both keys as `false`, changeable.
#[tokio::test]
async fn set_log_connections_and_disconnections_silences_the_per_client_lines() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| cfg.with_admin())?;
    let ep = bed.endpoint();
    // The console's own logins (psql) are logged too: only lines of database `app` count.
    let lines = |bed: &mut TestBed, what: &str| -> usize {
        bed.proxy().map_or(0, |p| {
            p.log()
                .lines()
                .filter(|l| {
                    l.contains(what) && (l.contains("database=app") || l.contains("database=\"app\""))
                })
                .count()
        })
    };
    let (logged_in, left) = ("client logged in", "client disconnected");
    let first = ep.connect_app().await?;
    first.batch_execute("SELECT 1").await?;
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines(&mut bed, left) < 1 {
        ensure!(Instant::now() < deadline, "no `{left}` line for the first client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(lines(&mut bed, logged_in) == 1, "expected one `{logged_in}` line");

    console_ok(&ep, "SET log_connections = false").await?;
    console_ok(&ep, "SET log_disconnections = false").await?;
    let config = admin_rows(&ep, "SHOW CONFIG").await?;
    for key in ["log_connections", "log_disconnections"] {
        let row = config
            .iter()
            .find(|r| r["key"] == key)
            .with_context(|| format!("SHOW CONFIG lists no {key}"))?;
        ensure!(
            row["value"] == "false" && row["changeable"] == "yes",
            "SHOW CONFIG {key}: {row:?}"
        );
    }
    let second = ep.connect_app().await?;
    let v: i32 = second.query_one("SELECT 1", &[]).await?.get(0);
    ensure!(v == 1);
    drop(second);
    // The console's own sessions log nothing either now; wait for the second client's end
    // to have been handled (its slot given back) before reading the log.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let clients = admin_rows(&ep, "SHOW CLIENTS").await?;
        if clients.iter().all(|r| r["database"] != "app") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the second client is still listed: {clients:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(
        lines(&mut bed, logged_in) == 1 && lines(&mut bed, left) == 1,
        "after SET ... = false: {} `{logged_in}` and {} `{left}` lines, expected 1 and 1",
        lines(&mut bed, logged_in),
        lines(&mut bed, left)
    );
    bed.ensure_proxy_alive()
}

/// `client_idle_timeout` off at start: a client logged in before `SET client_idle_timeout =
/// '500ms'` through psql stays silent for 1.5 s and its next `SELECT 1` succeeds (a running
/// session keeps the limits it started with); a client logged in after it, silent, is
/// closed with one FATAL 57P05 within 5 s (printed when).
#[tokio::test]
async fn set_client_idle_timeout_applies_to_sessions_that_start_after_it() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| cfg.with_admin())?;
    let ep = bed.endpoint();
    let mut old = RawConn::login_app(&ep.addr()).await?;
    console_ok(&ep, "SET client_idle_timeout = '500ms'").await?;
    let mut new = RawConn::login_app(&ep.addr()).await?;
    let started = Instant::now();
    let told = new
        .expect_closed_with(
            "57P05",
            Duration::from_secs(5),
            "the client that logged in after SET",
        )
        .await?;
    println!("new client after {:?}: {}", started.elapsed(), told.describe());
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed())).await;
    let answer = old.simple_query("SELECT 1").await?;
    ensure!(
        answer.errors.is_empty() && answer.tags == ["SELECT 1"],
        "the client that logged in before SET, after {:?} silent: {answer:?}",
        started.elapsed()
    );
    bed.ensure_proxy_alive()
}

/// `pool_size` and `pool_mode` of database `app` changed by a `RELOAD` of the file (1 and
/// transaction to 2 and session, `query_wait_timeout = 1s`): `SHOW DATABASES` and `SHOW
/// POOLS` show 2 and session; a client that logs in after the reload runs `SELECT
/// pg_backend_pid()` twice and sees the same backend both times, and keeps that server
/// while idle (`SHOW POOLS` in_use 1); a client logged in before the reload (transaction
/// mode) is served by another backend (room for it: the size is 2) and, idle after
/// its statement, holds no server (in_use still 1): it kept transaction pooling.
#[tokio::test]
async fn reload_changes_a_databases_pool_size_and_mode_for_new_sessions_only() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| {
        cfg.with_admin()
            .query_wait_timeout("1s")
            .set("databases.app.pool_size", 1)
            .set("databases.app.pool_mode", "transaction")
    })?;
    let ep = bed.endpoint();
    let old = ep.connect_app().await?;
    old.simple_query("SELECT 1")
        .await
        .ctx("old client before the reload")?;

    let proxy = bed.proxy().context("a proxy")?;
    let config = proxy
        .config()
        .clone()
        .set("databases.app.pool_size", 2)
        .set("databases.app.pool_mode", "session");
    proxy.write_config(config)?;
    let reload = console(&ep, "RELOAD").await?;
    reload.ensure_success()?;
    println!("RELOAD:\n{}", reload.stdout.trim_end());
    ensure!(
        !reload.stdout.contains("needs restart"),
        "RELOAD says a restart is needed:\n{}",
        reload.stdout
    );
    let databases = admin_rows(&ep, "SHOW DATABASES").await?;
    let app = databases
        .iter()
        .find(|r| r["database"] == "app")
        .context("app in SHOW DATABASES")?;
    ensure!(
        (app["pool_size"].as_str(), app["pool_mode"].as_str()) == ("2", "session"),
        "SHOW DATABASES after the reload: {app:?}"
    );
    let pool = pool_row(&ep, "app/app").await?;
    ensure!(
        (pool["size"].as_str(), pool["mode"].as_str()) == ("2", "session"),
        "SHOW POOLS after the reload: {pool:?}"
    );

    let new = ep.connect_app().await?;
    let pid = |rows: Vec<tokio_postgres::Row>| -> i32 { rows[0].get(0) };
    let first = pid(new
        .query("SELECT pg_backend_pid()", &[])
        .await
        .ctx("new client, 1st")?);
    let second = pid(new
        .query("SELECT pg_backend_pid()", &[])
        .await
        .ctx("new client, 2nd")?);
    println!("new client (session mode): backends {first} and {second}");
    ensure!(
        first == second,
        "a new session in session mode changed backend: {first} then {second}"
    );
    let in_use = pool_row(&ep, "app/app").await?["in_use"].clone();
    ensure!(
        in_use == "1",
        "the idle session-mode client holds no server: in_use {in_use}"
    );

    let theirs = pid(old
        .query("SELECT pg_backend_pid()", &[])
        .await
        .ctx("old client after the reload")?);
    println!("old client (transaction mode): backend {theirs}");
    ensure!(
        theirs != first,
        "the old client ran on the new client's server {first}"
    );
    let in_use = pool_row(&ep, "app/app").await?["in_use"].clone();
    ensure!(
        in_use == "1",
        "the idle old client kept its server (session mode?): in_use {in_use}"
    );
    bed.ensure_proxy_alive()
}

/// The keys `SHOW CONFIG` marks `changeable = yes`: exactly the seven `[proxy]` keys read per
/// client and the twelve live `[pool]` keys.
const LIVE_KEYS: [&str; 19] = [
    "max_client_conn",
    "max_unauthenticated_conn",
    "admin_reserved_conn",
    "client_login_timeout",
    "shutdown_timeout",
    "log_connections",
    "log_disconnections",
    "mode",
    "size",
    "connect_timeout",
    "query_wait_timeout",
    "idle_timeout",
    "lifetime",
    "max_prepared_statements",
    "client_idle_timeout",
    "idle_transaction_timeout",
    "query_timeout",
    "transaction_timeout",
    "pipeline",
];

/// Through psql: `SHOW CONFIG`'s `changeable` is `yes` exactly for [`LIVE_KEYS`]. `SET
/// default_pool_size = 5` shows `size` 5; `SET databases.app.pool_size = 3` shows in `SHOW
/// DATABASES`; a `RELOAD` of the unchanged file brings both back to the file's values (20,
/// and `app` following it). Errors, each with psql's SQLSTATE and the session going on:
/// `SET pool.size = 'many'` and `SET default_pool_size = 0` 22023 naming the key as given,
/// `SET no_such_key = 1` and `SET databases.nope.pool_size = 1` 42704, `SET server_tls =
/// 'require'`, `SET max_db_connections = 5` and `SET databases.app.dbname = 'x'` 55P02.
#[tokio::test]
async fn set_checks_pool_keys_as_the_file_does_and_show_config_marks_the_live_ones() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| cfg.with_admin())?;
    let ep = bed.endpoint();
    let rows = admin_rows(&ep, "SHOW CONFIG").await?;
    let changeable: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r["changeable"] == "yes")
        .map(|r| r["key"].as_str())
        .collect();
    ensure!(
        changeable == LIVE_KEYS.into_iter().collect(),
        "SHOW CONFIG's changeable keys: {changeable:?}"
    );

    console_ok(&ep, "SET default_pool_size = 5").await?;
    console_ok(&ep, "SET databases.app.pool_size = 3").await?;
    let size_and_app = || async {
        let size = admin_rows(&ep, "SHOW CONFIG")
            .await?
            .into_iter()
            .find(|r| r["key"] == "size")
            .context("size in SHOW CONFIG")?["value"]
            .clone();
        let app = admin_rows(&ep, "SHOW DATABASES")
            .await?
            .into_iter()
            .find(|r| r["database"] == "app")
            .context("app in SHOW DATABASES")?["pool_size"]
            .clone();
        anyhow::Ok((size, app))
    };
    let after_set = size_and_app().await?;
    println!("after SET: size, app's pool_size = {after_set:?}");
    ensure!(after_set == ("5".into(), "3".into()), "after SET: {after_set:?}");
    console_ok(&ep, "RELOAD").await?;
    let after_reload = size_and_app().await?;
    println!("after RELOAD: size, app's pool_size = {after_reload:?}");
    ensure!(
        after_reload == ("20".into(), "20".into()),
        "after RELOAD: {after_reload:?}"
    );

    for (command, code, says) in [
        ("SET pool.size = 'many'", "22023", "pool.size"),
        ("SET default_pool_size = 0", "22023", "default_pool_size"),
        ("SET no_such_key = 1", "42704", "no_such_key"),
        (
            "SET databases.nope.pool_size = 1",
            "42704",
            "databases.nope.pool_size",
        ),
        ("SET server_tls = 'require'", "55P02", "restart"),
        ("SET max_db_connections = 5", "55P02", "restart"),
        ("SET databases.app.dbname = 'x'", "55P02", "restart"),
    ] {
        let out = console(&ep, command).await?;
        let error = out.stderr.trim();
        println!("{command}: {error}");
        ensure!(!out.status_ok, "{command} succeeded:\n{}", out.stdout);
        ensure!(
            error.contains(&format!("ERROR:  {code}:")) && error.contains(says),
            "{command}: expected {code} naming {says:?}, got {error}"
        );
    }
    console_ok(&ep, "SHOW POOLS").await?;
    bed.ensure_proxy_alive()
}
