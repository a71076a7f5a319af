//! Who gets in: `max_client_conn` with slots reserved for the admin console,
//! `max_unauthenticated_conn` against connections that never log in, and the open-files
//! limit checked at start. Every refusal is a 53300 ErrorResponse the client can show, and
//! the clients already in go on.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_tests::client::connect;
use switchyard_tests::proxy::Launch;
use switchyard_tests::{
    expect_sqlstate, skip_if_direct, sqlstate, Endpoint, PgCluster, PgResultExt, Proxy, ProxyConfig, TestBed,
};
use tokio_postgres::Client;

/// `max_client_conn = 6` with `admin_reserved_conn = 1`: five `app` clients get in; the
/// sixth gets 53300 naming the reserved slot, while the admin console still logs in and
/// answers `SHOW POOLS` (the sixth connection); a seventh connection of any kind gets 53300
/// at once. The five clients keep running queries throughout, and once one of them and the
/// admin console leave, a new client gets in.
#[tokio::test]
async fn max_client_conn_refuses_with_53300_and_keeps_a_slot_for_the_admin_console() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| {
        cfg.mode("transaction")
            .with_admin()
            .set("proxy.max_client_conn", 6)
            .set("proxy.admin_reserved_conn", 1)
    })?;
    let ep = bed.endpoint();
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(ep.connect_app().await?);
    }
    let refused = expect_sqlstate(
        connect(&ep.config("app", "app", "app")).await,
        &["53300"],
        "a sixth app client",
    )?;
    ensure!(
        refused
            .detail()
            .is_some_and(|d| d.contains("reserved for the admin console")),
        "the refusal does not say why: {refused:?}"
    );
    // The refused client's slot is given back once the proxy has closed its connection,
    // which may be a moment after the client read the refusal.
    let admin = eventually_connect(&ep, "admin", "switchyard").await?;
    admin.simple_query("SHOW POOLS").await.ctx("SHOW POOLS")?;
    expect_sqlstate(
        connect(&ep.config("admin", "admin", "switchyard")).await,
        &["53300"],
        "a seventh connection (admin)",
    )?;
    for (i, client) in clients.iter().enumerate() {
        let n: i32 = client.query_one("SELECT 1", &[]).await.ctx("SELECT 1")?.get(0);
        ensure!(n == 1, "client {i} got {n}");
    }
    drop(clients.pop());
    drop(admin);
    // The proxy sees the clients leave when their sockets close.
    let newcomer = eventually_connect(&ep, "app", "app").await?;
    newcomer.query_one("SELECT 1", &[]).await.ctx("newcomer")?;
    Ok(())
}

/// Logs in as `user` (password the same) to `database`, trying again for up to 5 s while
/// the proxy answers 53300 (slots are given back when connections close).
async fn eventually_connect(ep: &Endpoint, user: &str, database: &str) -> Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match connect(&ep.config(user, user, database)).await {
            Ok(c) => return Ok(c),
            Err(e) if sqlstate(&e) == Some("53300") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting as {user} to {database}")),
        }
    }
}

/// `max_unauthenticated_conn = 3`, `client_login_timeout = 2s`: three TCP connections
/// that send nothing take the three login slots, so a real client is refused with 53300
/// while a client that logged in before them keeps working; the proxy closes the silent
/// connections at the login timeout, and a real client then logs in.
#[tokio::test]
async fn silent_connections_cannot_take_more_than_the_login_slots() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| {
        cfg.mode("transaction")
            .client_login_timeout("2s")
            .set("proxy.max_unauthenticated_conn", 3)
    })?;
    let ep = bed.endpoint();
    let early = ep.connect_app().await?;
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect((ep.host.as_str(), ep.port)))
        .collect::<Result<_, _>>()?;
    // Give the proxy time to accept all three.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = expect_sqlstate(
        connect(&ep.config("app", "app", "app")).await,
        &["53300"],
        "a client while three connections are silent",
    )?;
    ensure!(
        refused.message().contains("logging in"),
        "the refusal does not say why: {refused:?}"
    );
    early
        .query_one("SELECT 1", &[])
        .await
        .ctx("the client logged in before")?;

    let started = Instant::now();
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 64];
        // The proxy closes it (end of stream) without an answer: it never sent a startup packet.
        let n = s
            .read(&mut buf)
            .context("a silent connection was not closed within 10 s")?;
        ensure!(n == 0, "a silent connection got {n} bytes");
    }
    println!(
        "silent connections closed {:?} after the refusal",
        started.elapsed()
    );
    ep.connect_app()
        .await?
        .query_one("SELECT 1", &[])
        .await
        .ctx("a client after the silent ones were closed")?;
    Ok(())
}

/// Started with a soft open-files limit of 256 (hard 4096) and `max_client_conn = 1000`,
/// the proxy raises its own soft limit to what the configuration needs (1000 clients, 2
/// databases × 4 users × 5 servers, a margin of 100: 1140), as `/proc/PID/limits` shows;
/// with a hard limit of 512 it cannot, and its log says so, naming `max_client_conn` and
/// the numbers.
#[test]
fn a_low_open_files_limit_is_raised_or_named_at_start() -> Result<()> {
    skip_if_direct!();
    let pg = PgCluster::start()?;
    let start = |hard: u32| {
        let config = ProxyConfig::for_cluster(&pg)
            .pool_size(5)
            .set("proxy.max_client_conn", 1000);
        let launch = Launch {
            wrapper: vec!["prlimit".into(), format!("--nofile=256:{hard}"), "--".into()],
            ..Launch::default()
        };
        Proxy::start_with(config, launch)
    };
    let proxy = start(4096)?;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid().context("pid")?))?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or_default()
        .to_owned();
    ensure!(
        soft == "1140",
        "soft open-files limit {soft}, expected 1140:\n{limits}"
    );
    ensure!(
        proxy.log().contains("raised the open-files limit"),
        "the log does not say the limit was raised:\n{}",
        proxy.log_tail(20)
    );
    drop(proxy);

    let proxy = start(512)?;
    let log = proxy.log();
    ensure!(
        log.contains("open-files limit is below")
            && log.contains("max_client_conn=1000")
            && log.contains("needed=1140"),
        "no warning naming the limit and max_client_conn:\n{}",
        proxy.log_tail(20)
    );
    Ok(())
}

/// `[admin] stats_users = ["md5user"]` (and `admin` in `[admin] users`): once an `app`
/// client has run a query, `md5user` on the console gets rows from `SHOW POOLS`, `SHOW
/// DATABASES`, `SHOW CLUSTERS` and `SHOW VERSION`; `PAUSE`, `PAUSE app`, `RESUME`, `RECONNECT`, `RELOAD` and `SWITCHOVER` are each
/// refused with 42501 naming `stats_users`, and nothing was paused (an `app` client is
/// served at once); the same session still answers `SHOW POOLS` afterwards. `admin` may
/// `PAUSE app` and `RESUME app`. `app`, in neither list, is refused at login with 28000.
#[tokio::test]
async fn stats_users_may_only_show_and_others_are_refused_at_login() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.with_admin().set("admin.stats_users", vec!["md5user"]))?;
    let ep = bed.endpoint();
    let app = ep.connect_app().await?;
    app.simple_query("SELECT 1").await.ctx("app before the console")?;
    let stats = ep.connect("md5user", "md5pass", "switchyard").await?;
    for show in ["SHOW POOLS", "SHOW DATABASES", "SHOW CLUSTERS", "SHOW VERSION"] {
        let messages = stats.simple_query(show).await.ctx(show)?;
        let rows = messages
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        println!("stats user: {show}: {rows} rows");
        ensure!(rows > 0, "{show} returned no rows to a stats user");
    }
    for command in [
        "PAUSE",
        "PAUSE app",
        "RESUME",
        "RECONNECT",
        "RELOAD",
        "SWITCHOVER",
    ] {
        let e = expect_sqlstate(stats.simple_query(command).await, &["42501"], command)?;
        println!("stats user: {command}: {} {}", e.code().code(), e.message());
        ensure!(
            e.message().contains("stats_users"),
            "the refusal of {command} does not say why: {}",
            e.message()
        );
    }
    tokio::time::timeout(Duration::from_secs(5), app.simple_query("SELECT 1"))
        .await
        .context("an app client waited: a stats user's PAUSE took effect")?
        .ctx("app after the refused commands")?;
    stats
        .simple_query("SHOW POOLS")
        .await
        .ctx("SHOW POOLS after the refusals")?;

    let admin = ep.connect("admin", "admin", "switchyard").await?;
    admin.simple_query("PAUSE app").await.ctx("admin PAUSE app")?;
    admin.simple_query("RESUME app").await.ctx("admin RESUME app")?;

    let refused = ep.connect("app", "app", "switchyard").await;
    let e = match refused {
        Ok(_) => anyhow::bail!("user app, in neither admin list, logged in to the console"),
        Err(e) => e,
    };
    println!("app on the console: {e:#}");
    ensure!(
        format!("{e:#}").contains("28000"),
        "expected SQLSTATE 28000 for a user in neither admin list, got {e:#}"
    );
    Ok(())
}
