//! The admin console's PgBouncer-style commands, through psql and tokio-postgres:
//! `SHOW CLIENTS`, `SHOW SERVERS`, `SHOW CONFIG`, `SHOW LISTS`, `KILL db`, `SET key = value`,
//! `SHUTDOWN [IMMEDIATE]`, what `stats_users` may not run, and unknown commands.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::BytesMut;
use switchyard_tests::admin::{admin_rows, pool_row};
use switchyard_tests::client::connect;
use switchyard_tests::cluster::roles;
use switchyard_tests::raw::{msg, RawConn};
use switchyard_tests::{expect_sqlstate, skip_if_direct, Endpoint, PgResultExt, TestBed};

type Row = HashMap<String, String>;

/// The rows of `command` whose `column` is `value`.
async fn rows_where(ep: &Endpoint, command: &str, column: &str, value: &str) -> Result<Vec<Row>> {
    let rows = admin_rows(ep, command).await?;
    Ok(rows.into_iter().filter(|r| r[column] == value).collect())
}

/// Polls `command` every 50 ms until one of its rows satisfies `found` (within `limit`).
async fn wait_for_row(
    ep: &Endpoint,
    command: &str,
    limit: Duration,
    found: impl Fn(&Row) -> bool,
) -> Result<(Row, Duration)> {
    let started = Instant::now();
    loop {
        let rows = admin_rows(ep, command).await?;
        if let Some(row) = rows.iter().find(|r| found(r)) {
            return Ok((row.clone(), started.elapsed()));
        }
        if started.elapsed() > limit {
            bail!("no such row in {command} within {limit:?}: {rows:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// psql's unaligned output of an admin command as `admin`, one `Vec` of fields per row.
fn psql_rows(ep: &Endpoint, command: &str) -> Result<Vec<Vec<String>>> {
    let out = ep.psql("admin", "admin", "switchyard").run(command)?;
    out.ensure_success()?;
    Ok(out
        .stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect())
}

/// A tokio-postgres client of `app` with `application_name` set at startup.
async fn app_client_named(ep: &Endpoint, name: &str) -> Result<tokio_postgres::Client> {
    let (user, password) = roles::APP;
    let mut config = ep.config(user, password, roles::APP_DB);
    config.application_name(name);
    Ok(connect(&config).await?)
}

/// A client that logged in with `application_name = console-probe` and ran `SELECT 1` is
/// listed by `SHOW CLIENTS` through psql (user `app`, database `app`, state `idle`, its
/// application name, no `link`); while it runs `pg_sleep(2)` its row turns `active` with a
/// `link` naming a server `SHOW SERVERS` lists as `active` with this client as its `link`;
/// once the sleep returned it is `idle` again with no `link`.
#[tokio::test]
async fn show_clients_lists_a_client_with_its_application_name_and_state() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.with_admin())?;
    let ep = bed.endpoint();
    let client = app_client_named(&ep, "console-probe").await?;
    client.simple_query("SELECT 1").await.ctx("SELECT 1")?;
    let rows = psql_rows(&ep, "SHOW CLIENTS")?;
    let row = rows
        .iter()
        .find(|r| r.get(17).is_some_and(|a| a == "console-probe"))
        .with_context(|| format!("no console-probe client in psql's SHOW CLIENTS: {rows:?}"))?;
    println!("psql SHOW CLIENTS row: {row:?}");
    ensure!(
        row[0] == "C" && row[1] == "app" && row[2] == "app" && row[3] == "idle" && row[14].is_empty(),
        "idle client's row: {row:?}"
    );

    let sleeping = tokio::spawn(async move {
        client.simple_query("SELECT pg_sleep(2)").await?;
        Ok::<_, tokio_postgres::Error>(client)
    });
    let (active, after) = wait_for_row(&ep, "SHOW CLIENTS", Duration::from_millis(1500), |r| {
        r["application_name"] == "console-probe" && r["state"] == "active"
    })
    .await?;
    println!("active after {after:?}: {active:?}");
    ensure!(
        active["link"].starts_with('s'),
        "an active client without a link: {active:?}"
    );
    let server = rows_where(&ep, "SHOW SERVERS", "ptr", &active["link"]).await?;
    ensure!(
        server.len() == 1 && server[0]["state"] == "active" && server[0]["link"] == active["ptr"],
        "the server the client holds ({}) in SHOW SERVERS: {server:?}",
        active["link"]
    );
    let client = sleeping.await?.ctx("pg_sleep")?;
    let idle = rows_where(&ep, "SHOW CLIENTS", "application_name", "console-probe").await?;
    ensure!(
        idle.len() == 1 && idle[0]["state"] == "idle" && idle[0]["link"].is_empty(),
        "after the sleep: {idle:?}"
    );
    drop(client);
    Ok(())
}

/// With a pool of one, the backend pid `pg_backend_pid()` reports to an `app` client is
/// the `remote_pid` of the one `SHOW SERVERS` row of database `app` (user `app`, the
/// primary's address and port, `idle` between transactions); inside a transaction that row
/// is `active` and its `link` is the client's `ptr` in `SHOW CLIENTS`.
#[tokio::test]
async fn show_servers_shows_the_backend_pid_postgres_reports() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.with_admin().pool_size(1))?;
    let ep = bed.endpoint();
    let client = app_client_named(&ep, "pid-probe").await?;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ctx("pg_backend_pid")?
        .get(0);
    let servers = rows_where(&ep, "SHOW SERVERS", "database", "app").await?;
    println!("backend pid {pid}; SHOW SERVERS of app: {servers:?}");
    let primary = bed.pg().primary();
    ensure!(
        servers.len() == 1
            && servers[0]["remote_pid"] == pid.to_string()
            && servers[0]["user"] == "app"
            && servers[0]["addr"] == primary.host()
            && servers[0]["port"] == primary.port().to_string()
            && servers[0]["state"] == "idle",
        "expected one idle server of app with pid {pid}: {servers:?}"
    );
    client.batch_execute("BEGIN; SELECT 1").await.ctx("BEGIN")?;
    let me = rows_where(&ep, "SHOW CLIENTS", "application_name", "pid-probe").await?;
    let servers = rows_where(&ep, "SHOW SERVERS", "database", "app").await?;
    ensure!(
        me.len() == 1
            && me[0]["state"] == "active"
            && servers.len() == 1
            && servers[0]["state"] == "active"
            && servers[0]["link"] == me[0]["ptr"]
            && me[0]["link"] == servers[0]["ptr"],
        "in a transaction: client {me:?}, servers {servers:?}"
    );
    client.batch_execute("COMMIT").await.ctx("COMMIT")?;
    Ok(())
}

/// `SHOW CONFIG` through psql shows `shutdown_timeout` as configured (`7s`, default `30s`,
/// changeable `yes`, section `proxy`), the pool `size` (`3`, default `20`, changeable
/// `yes`), `auth_salt_secret` as `********`, and the secret's text nowhere in its output.
#[tokio::test]
async fn show_config_shows_configured_values_and_masks_secrets() -> Result<()> {
    skip_if_direct!();
    const SECRET: &str = "console-test-salt-secret-0123456789abcdef";
    let bed = TestBed::start_with(|cfg| {
        cfg.with_admin()
            .pool_size(3)
            .set("proxy.shutdown_timeout", "7s")
            .set("proxy.auth_salt_secret", SECRET)
    })?;
    let ep = bed.endpoint();
    let out = ep.psql("admin", "admin", "switchyard").run("SHOW CONFIG")?;
    out.ensure_success()?;
    ensure!(
        !out.stdout.contains(SECRET),
        "SHOW CONFIG shows the secret:\n{}",
        out.stdout
    );
    let rows = psql_rows(&ep, "SHOW CONFIG")?;
    let row = |key: &str| {
        rows.iter()
            .find(|r| r[0] == key)
            .cloned()
            .with_context(|| format!("no {key} in SHOW CONFIG: {rows:?}"))
    };
    for (key, expected) in [
        (
            "shutdown_timeout",
            ["shutdown_timeout", "7s", "30s", "yes", "proxy"],
        ),
        ("size", ["size", "3", "20", "yes", "pool"]),
        (
            "auth_salt_secret",
            ["auth_salt_secret", "********", "", "no", "proxy"],
        ),
    ] {
        let got = row(key)?;
        println!("{got:?}");
        ensure!(got == expected, "{key}: {got:?}, expected {expected:?}");
    }
    Ok(())
}

/// With two `app` clients that each ran a query and the console connection asking,
/// `SHOW LISTS` counts 2 databases, 5 users, 1 pool, 3 used clients (the console's
/// included), 0 logging in, 9997 free client slots (of `max_client_conn = 10000`), 0 used
/// servers and 1 or 2 free ones.
#[tokio::test]
async fn show_lists_counts_databases_users_pools_clients_and_servers() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.with_admin().pool_size(2))?;
    let ep = bed.endpoint();
    let a = ep.connect_app().await?;
    let b = ep.connect_app().await?;
    a.simple_query("SELECT 1").await.ctx("a")?;
    b.simple_query("SELECT 1").await.ctx("b")?;
    let lists: HashMap<String, String> = admin_rows(&ep, "SHOW LISTS")
        .await?
        .into_iter()
        .map(|r| (r["list"].clone(), r["items"].clone()))
        .collect();
    println!("SHOW LISTS: {lists:?}");
    for (list, items) in [
        ("databases", "2"),
        ("users", "5"),
        ("pools", "1"),
        ("used_clients", "3"),
        ("login_clients", "0"),
        ("free_clients", "9997"),
        ("used_servers", "0"),
    ] {
        ensure!(
            lists.get(list).map(String::as_str) == Some(items),
            "{list}: {lists:?}"
        );
    }
    ensure!(
        matches!(lists.get("free_servers").map(String::as_str), Some("1" | "2")),
        "free_servers: {lists:?}"
    );
    Ok(())
}

/// `KILL app` through psql, with a pool of one and three clients of `app` (one idle, one
/// inside a transaction that inserted a row and so holds the only server, one whose
/// `SELECT 1` waits for it, `waiting` in `SHOW CLIENTS`) and one of database `other` (the
/// same server database): the three `app` clients get exactly one `FATAL 57P01` naming
/// KILL and are disconnected within 2 s, the row is rolled back (read directly), `SHOW
/// POOLS` counts no client waiting in `app/app`, `other`'s client goes on (`SELECT 1`),
/// and within 2 s `SHOW SERVERS` lists no server of `app`. As in PgBouncer `app` stays
/// paused: a new client's `SELECT 1` has not returned 500 ms later, and returns after
/// `RESUME app`.
#[tokio::test]
async fn kill_ends_the_databases_clients_and_spares_the_others() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| {
        cfg.with_admin()
            .pool_size(1)
            .set("databases.other.cluster", "main")
            .set("databases.other.dbname", "app")
    })?;
    let ep = bed.endpoint();
    let addr = ep.addr();
    let (user, password) = roles::APP;
    let mut idle = RawConn::login_app(&addr).await?;
    idle.query_one_value("CREATE TABLE kill_t (v int)").await.ok();
    let mut in_tx = RawConn::login_app(&addr).await?;
    let begun = in_tx.simple_query("BEGIN; INSERT INTO kill_t VALUES (1)").await?;
    ensure!(
        begun.errors.is_empty() && begun.status == b'T',
        "BEGIN: {begun:?}"
    );
    let mut other = RawConn::login(&addr, &[("user", user), ("database", "other")], password).await?;
    ensure!(other.query_one_value("SELECT 1").await?.as_deref() == Some("1"));
    let mut waiter = RawConn::login_app(&addr).await?;
    let mut query = BytesMut::new();
    msg::query(&mut query, "SELECT 1");
    waiter.send(&query).await?;
    let (waiting, after) = wait_for_row(&ep, "SHOW CLIENTS", Duration::from_secs(2), |r| {
        r["state"] == "waiting"
    })
    .await?;
    println!("waiting after {after:?}: {waiting:?}");

    let killed = Instant::now();
    psql_rows(&ep, "KILL app")?;
    for (conn, who) in [
        (&mut idle, "the idle app client"),
        (&mut in_tx, "the app client in a transaction"),
        (&mut waiter, "the app client waiting for a server"),
    ] {
        let told = conn
            .expect_closed_with("57P01", Duration::from_secs(2), who)
            .await?;
        println!("{who} told after {:?}: {}", killed.elapsed(), told.describe());
        ensure!(
            told.message().is_some_and(|m| m.contains("KILL")),
            "{who}: {}",
            told.describe()
        );
    }
    ensure!(
        other.query_one_value("SELECT 1").await?.as_deref() == Some("1"),
        "other's client after KILL app"
    );
    let direct = bed.direct().connect_app().await?;
    let rows: i64 = direct
        .query_one("SELECT count(*) FROM kill_t", &[])
        .await
        .ctx("count")?
        .get(0);
    ensure!(rows == 0, "the killed transaction's row is on the server");
    let pool = pool_row(&ep, "app/app").await?;
    ensure!(
        pool["waiting"] == "0",
        "clients still counted waiting after KILL: {pool:?}"
    );
    let started = Instant::now();
    loop {
        let left = rows_where(&ep, "SHOW SERVERS", "database", "app").await?;
        if left.is_empty() {
            println!("no server of app {:?} after KILL", killed.elapsed());
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(2),
            "servers of app still listed 2 s after KILL: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let newcomer = ep.connect_app().await?;
    let waiting = tokio::spawn(async move { newcomer.simple_query("SELECT 1").await.map(drop) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        !waiting.is_finished(),
        "a new transaction of app ran before RESUME"
    );
    psql_rows(&ep, "RESUME app")?;
    tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .context("SELECT 1 did not return within 2 s of RESUME")??
        .ctx("SELECT 1 after RESUME")?;
    Ok(())
}

/// `SET admin_reserved_conn = 1` then `SET max_client_conn = 4` through psql take effect:
/// `SHOW CONFIG` shows 4, and with the console and two `app` clients connected a third
/// `app` client is refused with 53300 (the last slot is the console's). `SET
/// shutdown_timeout = 'soon'` gets 22023 naming the key, `SET no_such_setting = 1` 42704,
/// `SET listen = '127.0.0.1:1'` 55P02 saying it needs a restart; the session goes on.
#[tokio::test]
async fn set_changes_a_reloadable_setting_and_refuses_bad_ones() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.with_admin())?;
    let ep = bed.endpoint();
    psql_rows(&ep, "SET admin_reserved_conn = 1")?;
    psql_rows(&ep, "SET max_client_conn = 4")?;
    let config = rows_where(&ep, "SHOW CONFIG", "key", "max_client_conn").await?;
    ensure!(
        config.len() == 1 && config[0]["value"] == "4",
        "SHOW CONFIG: {config:?}"
    );

    let console = ep.connect("admin", "admin", "switchyard").await?;
    let _a = ep.connect_app().await?;
    let _b = ep.connect_app().await?;
    let refused = expect_sqlstate(
        connect(&ep.config("app", "app", "app")).await,
        &["53300"],
        "a third app client with max_client_conn = 4",
    )?;
    println!("refused: {}", refused.message());

    for (command, code, says) in [
        ("SET shutdown_timeout = 'soon'", "22023", "shutdown_timeout"),
        ("SET no_such_setting = 1", "42704", "no_such_setting"),
        ("SET listen = '127.0.0.1:1'", "55P02", "restart"),
    ] {
        let e = expect_sqlstate(console.simple_query(command).await, &[code], command)?;
        println!("{command}: {} {}", e.code().code(), e.message());
        ensure!(e.message().contains(says), "{command}: {}", e.message());
    }
    console
        .simple_query("SHOW LISTS")
        .await
        .ctx("SHOW LISTS after the errors")?;
    Ok(())
}

/// `SHUTDOWN` through psql (answered `SHUTDOWN`) while a client is inside a transaction
/// that inserted a row: an idle client gets `FATAL 57P01` at once, the transaction goes on
/// (a second row, `COMMIT` succeeds) and its client then gets `FATAL 57P01`; the proxy
/// exits with status 0 within 5 s of the commit, and both rows are on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_running_transaction_finish_and_exits_0() -> Result<()> {
    shutdown_lets_a_running_transaction_finish(|cfg| cfg).await
}

/// The same with `threading = "per-core"` and three workers: every worker's listener
/// takes the console's request, and the proxy exits 0 once the transaction committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_shutdown_lets_a_running_transaction_finish_and_exits_0() -> Result<()> {
    shutdown_lets_a_running_transaction_finish(|cfg| {
        cfg.set("proxy.threading", "per-core").set("proxy.workers", 3)
    })
    .await
}

/// The body of the two tests above, with the proxy configured further by `configure`.
async fn shutdown_lets_a_running_transaction_finish(
    configure: impl FnOnce(switchyard_tests::ProxyConfig) -> switchyard_tests::ProxyConfig,
) -> Result<()> {
    skip_if_direct!();
    let mut bed =
        TestBed::start_with(|cfg| configure(cfg).with_admin().set("proxy.shutdown_timeout", "20s"))?;
    let ep = bed.endpoint();
    let addr = ep.addr();
    let mut writer = RawConn::login_app(&addr).await?;
    writer
        .query_one_value("CREATE TABLE shutdown_t (v int)")
        .await
        .ok();
    let begun = writer
        .simple_query("BEGIN; INSERT INTO shutdown_t VALUES (1)")
        .await?;
    ensure!(begun.errors.is_empty(), "BEGIN: {begun:?}");
    let mut idle = RawConn::login_app(&addr).await?;
    idle.query_one_value("SELECT 1").await?;

    let out = ep.psql("admin", "admin", "switchyard").run("SHUTDOWN")?;
    println!("psql SHUTDOWN: {} {:?} {:?}", out.status, out.stdout, out.stderr);
    out.ensure_success()?;
    let asked = Instant::now();
    idle.expect_closed_with("57P01", Duration::from_secs(2), "the idle client")
        .await?;
    let second = writer.simple_query("INSERT INTO shutdown_t VALUES (2)").await?;
    ensure!(second.errors.is_empty(), "INSERT after SHUTDOWN: {second:?}");
    writer
        .commit_then_closed_with("57P01", Duration::from_secs(5), "the writer")
        .await?;
    let committed = Instant::now();
    let status = bed
        .proxy()
        .context("the proxy")?
        .wait_exit(Duration::from_secs(5))?;
    println!(
        "proxy exited with {status:?} {:?} after the commit, {:?} after SHUTDOWN",
        committed.elapsed(),
        asked.elapsed()
    );
    ensure!(status.is_some_and(|s| s.success()), "exit status {status:?}");
    let direct = bed.direct().connect_app().await?;
    let rows = direct
        .query("SELECT v FROM shutdown_t ORDER BY v", &[])
        .await
        .ctx("rows")?;
    let values: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    ensure!(values == [1, 2], "rows on the server: {values:?}");
    Ok(())
}

/// `SHUTDOWN IMMEDIATE` through psql, with `shutdown_timeout = 30s`, while a client is
/// inside a transaction that inserted a row: the client gets exactly one `FATAL 57P01`
/// naming `SHUTDOWN IMMEDIATE` within 3 s, the proxy exits with status 0 within 5 s, and
/// the row is not on the server (rolled back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_immediate_ends_a_running_transaction_with_57p01() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| cfg.with_admin().set("proxy.shutdown_timeout", "30s"))?;
    let ep = bed.endpoint();
    let mut writer = RawConn::login_app(&ep.addr()).await?;
    writer
        .query_one_value("CREATE TABLE immediate_t (v int)")
        .await
        .ok();
    let begun = writer
        .simple_query("BEGIN; INSERT INTO immediate_t VALUES (1)")
        .await?;
    ensure!(begun.errors.is_empty(), "BEGIN: {begun:?}");

    let asked = Instant::now();
    let out = ep
        .psql("admin", "admin", "switchyard")
        .run("SHUTDOWN IMMEDIATE")?;
    println!(
        "psql SHUTDOWN IMMEDIATE: {} {:?} {:?}",
        out.status, out.stdout, out.stderr
    );
    out.ensure_success()?;
    let told = writer
        .expect_closed_with("57P01", Duration::from_secs(3), "the writer")
        .await?;
    println!("writer told after {:?}: {}", asked.elapsed(), told.describe());
    ensure!(
        told.message().is_some_and(|m| m.contains("SHUTDOWN IMMEDIATE")),
        "{}",
        told.describe()
    );
    let status = bed
        .proxy()
        .context("the proxy")?
        .wait_exit(Duration::from_secs(5))?;
    println!(
        "proxy exited with {status:?} {:?} after SHUTDOWN IMMEDIATE",
        asked.elapsed()
    );
    ensure!(status.is_some_and(|s| s.success()), "exit status {status:?}");
    let direct = bed.direct().connect_app().await?;
    let rows: i64 = direct
        .query_one("SELECT count(*) FROM immediate_t", &[])
        .await
        .ctx("count")?
        .get(0);
    ensure!(rows == 0, "the transaction's row is on the server");
    Ok(())
}

/// `[admin] stats_users = ["md5user"]`: `md5user` gets rows from `SHOW CLIENTS`, `SHOW
/// SERVERS`, `SHOW CONFIG` and `SHOW LISTS`, and 42501 for `KILL app`, `SET
/// max_client_conn = 5`, `SHUTDOWN` and `SHUTDOWN IMMEDIATE`; afterwards an `app` client
/// is served and `SHOW CONFIG` still says `max_client_conn` 10000 (nothing changed).
#[tokio::test]
async fn stats_users_are_refused_kill_set_and_shutdown_with_42501() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.with_admin().set("admin.stats_users", vec!["md5user"]))?;
    let ep = bed.endpoint();
    let app = ep.connect_app().await?;
    app.simple_query("SELECT 1").await.ctx("SELECT 1")?;
    let (user, password) = roles::MD5;
    let stats = ep.connect(user, password, "switchyard").await?;
    for command in ["SHOW CLIENTS", "SHOW SERVERS", "SHOW CONFIG", "SHOW LISTS"] {
        let rows = stats
            .simple_query(command)
            .await
            .ctx(command)?
            .into_iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        println!("{command}: {rows} rows");
        ensure!(rows > 0, "{command} gave a stats user no rows");
    }
    for command in [
        "KILL app",
        "SET max_client_conn = 5",
        "SHUTDOWN",
        "SHUTDOWN IMMEDIATE",
    ] {
        let e = expect_sqlstate(stats.simple_query(command).await, &["42501"], command)?;
        println!("{command}: {}", e.message());
        ensure!(e.message().contains("stats_users"), "{command}: {}", e.message());
    }
    app.simple_query("SELECT 1")
        .await
        .ctx("SELECT 1 after the refusals")?;
    let config = rows_where(&ep, "SHOW CONFIG", "key", "max_client_conn").await?;
    ensure!(config.len() == 1 && config[0]["value"] == "10000", "{config:?}");
    Ok(())
}

/// An unknown command (`SHOW NONSENSE`, `FROBNICATE`) gets 42601 with a hint naming `SHOW
/// HELP`, and the session goes on; `SHOW HELP` has a line for each of `SHOW CLIENTS`, `SHOW
/// SERVERS`, `SHOW CONFIG`, `SHOW LISTS`, `KILL`, `SET`, `SHUTDOWN` and `SHUTDOWN
/// IMMEDIATE`, as for the older commands.
#[tokio::test]
async fn unknown_commands_get_42601_and_show_help_lists_every_command() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.with_admin())?;
    let ep = bed.endpoint();
    let console = ep.connect("admin", "admin", "switchyard").await?;
    for command in ["SHOW NONSENSE", "FROBNICATE"] {
        let e = expect_sqlstate(console.simple_query(command).await, &["42601"], command)?;
        ensure!(
            e.hint().is_some_and(|h| h.contains("SHOW HELP")),
            "{command}: no hint to SHOW HELP: {e:?}"
        );
    }
    let help: Vec<String> = psql_rows(&ep, "SHOW HELP")?
        .into_iter()
        .map(|r| r.join("|"))
        .collect();
    for command in [
        "SHOW CLIENTS",
        "SHOW SERVERS",
        "SHOW CONFIG",
        "SHOW LISTS",
        "SHOW POOLS",
        "KILL db",
        "SET key = value",
        "SHUTDOWN ",
        "SHUTDOWN IMMEDIATE",
        "RELOAD",
    ] {
        ensure!(
            help.iter().any(|l| l.starts_with(command)),
            "SHOW HELP has no line for {command}: {help:#?}"
        );
    }
    Ok(())
}
