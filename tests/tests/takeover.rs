//! Online restart and upgrade (`switchyard --takeover`, issue 20): another binary (a copy
//! of the built one, started from another path) takes over a running proxy's listening
//! sockets and its clients under load (pgbench, psycopg 3 writers in autocommit and in
//! explicit transactions, new connections every few milliseconds), with no refused
//! connection, no failed transaction and no lost or doubled write; a client keeps its
//! settings, prepared statements and cancel key across; clients that cannot be handed
//! over (session pooling, TLS) are told once with 57P01. A takeover that cannot start (a
//! broken configuration or plugin, no proxy running) exits non-zero and leaves the
//! running proxy serving.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_tests::admin::admin_rows;
use switchyard_tests::client::connect;
use switchyard_tests::http;
use switchyard_tests::load::{LoadOptions, PsycopgLoad};
use switchyard_tests::pki::{CertKey, Pki};
use switchyard_tests::proxy::{DatabaseSection, Launch, NodeEntry};
use switchyard_tests::raw::RawConn;
use switchyard_tests::tls::{EndPoint, RustlsConnect};
use switchyard_tests::tools::run_command;
use switchyard_tests::{
    env, ports, roles, scratch, skip_if_direct, Endpoint, Length, PgResultExt, Proxy, ProxyConfig, QueryMode,
    TestBed,
};

/// A database in session mode on the same server database as `app`.
const SESSION_DB: &str = "sessiondb";

/// How long pgbench runs; the takeover starts [`TAKEOVER_AFTER`] after its clients are
/// all connected.
const PGBENCH_SECONDS: u32 = 10;
const TAKEOVER_AFTER: Duration = Duration::from_secs(2);

/// A copy of the built proxy binary at another path, as an upgrade installs a new one.
fn copied_binary(dir: &Path) -> Result<PathBuf> {
    let copy = dir.join("switchyard-next");
    std::fs::copy(env::proxy_binary()?, &copy).context("copying the proxy binary")?;
    Ok(copy)
}

/// The test configuration with the admin console, room for every client on both sides of
/// a takeover, `threading` with two workers, a Unix-domain socket in `unix_dir`, the
/// metrics endpoint on `metrics`, client TLS with `tls` (certificate, key), and a session-mode database [`SESSION_DB`];
/// `md5user` is challenged with md5 (see [`ConnectLoop`]).
fn configure(
    cfg: ProxyConfig,
    threading: &str,
    unix_dir: &Path,
    metrics: &str,
    tls: &CertKey,
) -> ProxyConfig {
    let mut cfg = cfg
        .with_admin()
        .pool_size(40)
        .set("proxy.shutdown_timeout", "20s")
        .set("proxy.threading", threading)
        .set("proxy.workers", 2)
        .set("users.md5user.auth", "md5")
        .set("proxy.unix_socket_dir", unix_dir.display().to_string())
        .set("proxy.metrics_listen", metrics);
    cfg.proxy.tls_cert = Some(tls.cert.display().to_string());
    cfg.proxy.tls_key = Some(tls.key.display().to_string());
    cfg.databases.insert(
        SESSION_DB.to_owned(),
        DatabaseSection {
            cluster: "main".to_owned(),
            dbname: Some(roles::APP_DB.to_owned()),
            pool_mode: Some("session".to_owned()),
            ..Default::default()
        },
    );
    cfg
}

/// Loops opening new connections one after another, a few milliseconds apart (md5user,
/// challenged with md5: a cheap login), each running `SELECT 1`, over TCP and over the
/// Unix-domain socket in turn: attempts, failures with their messages, and the longest
/// connect-and-query, all loops together.
struct ConnectLoop {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>, Duration)>>,
}

/// How many loops open connections at once.
const CONNECT_LOOPS: usize = 4;

impl ConnectLoop {
    fn start(endpoints: &[Endpoint]) -> ConnectLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let (user, password) = roles::MD5;
        let tasks = (0..CONNECT_LOOPS)
            .map(|i| {
                let config = endpoints[i % endpoints.len()].config(user, password, roles::APP_DB);
                ConnectLoop::spawn(config, stop.clone())
            })
            .collect();
        ConnectLoop { stop, tasks }
    }

    fn spawn(
        config: tokio_postgres::Config,
        flag: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<(u64, Vec<String>, Duration)> {
        tokio::spawn(async move {
            let (mut attempts, mut failures, mut longest) = (0u64, Vec::new(), Duration::ZERO);
            while !flag.load(Ordering::Relaxed) {
                attempts += 1;
                let started = Instant::now();
                let outcome = async {
                    let client = connect(&config).await?;
                    client.simple_query("SELECT 1").await?;
                    Ok::<_, tokio_postgres::Error>(())
                }
                .await;
                longest = longest.max(started.elapsed());
                if let Err(e) = outcome {
                    failures.push(format!(
                        "attempt {attempts}: {}",
                        switchyard_tests::describe_error(&e)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (attempts, failures, longest)
        })
    }

    async fn finish(self) -> Result<(u64, Vec<String>, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        let (mut attempts, mut failures, mut longest) = (0, Vec::new(), Duration::ZERO);
        for task in self.tasks {
            let (a, f, l) = task.await?;
            attempts += a;
            failures.extend(f);
            longest = longest.max(l);
        }
        Ok((attempts, failures, longest))
    }
}

/// How many clients `SHOW CLIENTS` lists with `application_name` pgbench, polled until 32
/// are (or `limit` passed).
async fn pgbench_clients(ep: &Endpoint, limit: Duration) -> Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let rows = admin_rows(ep, "SHOW CLIENTS").await?;
        let count = rows.iter().filter(|r| r["application_name"] == "pgbench").count();
        if count == 32 || Instant::now() >= deadline {
            return Ok(count);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tokio-postgres client over TLS (`sslmode=require`, the proxy verified against the CA
/// `ca`) whose connection's end is kept: the error it ended with, if any.
async fn tls_client(
    ep: &Endpoint,
    ca: &Path,
) -> Result<(
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
)> {
    let mut config = ep.config(roles::APP.0, roles::APP.1, roles::APP_DB);
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, connection) = config
        .connect(RustlsConnect::new(ca, None, EndPoint::Real)?)
        .await
        .context("TLS client")?;
    Ok((client, tokio::spawn(connection)))
}

/// The upgrade under load, with `threading` and pgbench's `mode` (see
/// [`an_upgrade_under_load_refuses_no_connection_and_fails_no_transaction`]).
async fn upgrade_under_load(threading: &str, mode: QueryMode) -> Result<()> {
    let dir = scratch::fresh_dir("takeover")?;
    let pki = Pki::new()?;
    let ca = pki.ca("proxy-ca")?;
    let tls = pki.issue(&ca, "proxy")?;
    let metrics = format!("127.0.0.1:{}", ports::free_port()?);
    let mut bed = TestBed::start_with(|cfg| configure(cfg, threading, &dir, &metrics, &tls))?;
    let ep = bed.endpoint();
    // tokio-postgres takes a host that is a path as a Unix-domain socket's directory.
    let unix = Endpoint::new(&dir.display().to_string(), ep.port);
    let direct = bed.direct();
    let (user, password) = roles::APP;
    direct.pgbench(user, password, roles::APP_DB).init(1)?;

    // A client with settings, a prepared statement and a cancel key to carry over.
    let mut carried_config = ep.config(user, password, roles::APP_DB);
    carried_config.application_name("takeover-carried");
    let carried = connect(&carried_config).await?;
    carried
        .batch_execute("SET statement_timeout = '12345ms'")
        .await
        .ctx("SET")?;
    let plus_one = carried.prepare("SELECT $1::int + 1").await.ctx("prepare")?;
    ensure!(carried.query_one(&plus_one, &[&1]).await?.get::<_, i32>(0) == 2);
    // Clients that cannot be handed over, idle between transactions.
    let mut session_client =
        RawConn::login(&ep.addr(), &[("user", user), ("database", SESSION_DB)], password).await?;
    let one = session_client.simple_query("SELECT 1").await?;
    ensure!(one.errors.is_empty(), "session-mode client: {one:?}");
    let mut pinned_client = RawConn::login_app(&ep.addr()).await?;
    let listen = pinned_client.simple_query("LISTEN takeover").await?;
    ensure!(listen.errors.is_empty(), "LISTEN: {listen:?}");
    let (tls_client, tls_connection) = tls_client(&ep, &ca.cert).await?;
    tls_client.simple_query("SELECT 1").await.ctx("TLS SELECT 1")?;

    let mut psycopg_options = LoadOptions::new(vec![ep.clone()], 6);
    psycopg_options.explicit_transactions = true;
    // Plaintext: a TLS client cannot be handed over (the TLS client below checks that).
    psycopg_options.sslmode = Some("disable".to_owned());
    let psycopg = PsycopgLoad::start(psycopg_options).await?;
    let connects = ConnectLoop::start(&[ep.clone(), unix.clone()]);
    let pgbench = ep
        .pgbench(user, password, roles::APP_DB)
        .env("PGSSLMODE", "disable");
    let bench = tokio::spawn(async move {
        pgbench
            .run_async(mode, 32, 2, Length::Seconds(PGBENCH_SECONDS))
            .await
    });

    // The takeover once pgbench's clients all run on the old process (and a little after).
    let connected = pgbench_clients(&ep, Duration::from_secs(30)).await?;
    ensure!(
        connected == 32,
        "{connected} pgbench clients on the old process within 30 s, expected 32"
    );
    tokio::time::sleep(TAKEOVER_AFTER).await;
    let old_config = bed.proxy().context("the bed's proxy")?.config().clone();
    let launch = Launch {
        binary: Some(copied_binary(&dir)?),
        args: vec!["--takeover".to_owned()],
        ..Default::default()
    };
    let started = Instant::now();
    let new = tokio::task::spawn_blocking(move || Proxy::start_with(old_config, launch)).await??;
    let old = bed.proxy().context("the bed's proxy")?;
    let status = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(40)))?;
    let took = started.elapsed();
    ensure!(
        status.is_some_and(|s| s.success()),
        "the old process exited with {status:?} (expected 0 within 40 s of the takeover)\n{}",
        old.log_tail(40)
    );
    println!("{threading}: the old process exited 0, {took:?} after the new one started");

    // The new process serves pgbench's clients (the console answers on the same port).
    let adopted = pgbench_clients(&ep, Duration::ZERO).await?;
    let rows = admin_rows(&ep, "SHOW CLIENTS").await?;
    ensure!(
        rows.iter().any(|r| r["application_name"] == "takeover-carried"),
        "SHOW CLIENTS on the new process has no client named takeover-carried: {rows:?}"
    );
    println!("SHOW CLIENTS on the new process: {adopted} pgbench clients");
    if adopted != 32 {
        let bench = bench.await?;
        anyhow::bail!("SHOW CLIENTS on the new process lists {adopted} pgbench clients, expected 32; pgbench: {bench:?}");
    }

    // The carried client's settings, prepared statement and cancel key work on the new one.
    let two = carried
        .query_one(&plus_one, &[&41])
        .await
        .ctx("prepared statement after the takeover")?;
    ensure!(
        two.get::<_, i32>(0) == 42,
        "the carried prepared statement answered wrongly"
    );
    let timeout = carried
        .query_one("SHOW statement_timeout", &[])
        .await?
        .get::<_, String>(0);
    ensure!(
        timeout == "12345ms",
        "statement_timeout after the takeover is {timeout:?}, not 12345ms"
    );
    let cancel = carried.cancel_token();
    let sleeping = carried.simple_query("SELECT pg_sleep(30)");
    let canceller = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel_query(tokio_postgres::NoTls).await
    };
    let (slept, cancelled) = tokio::join!(sleeping, canceller);
    cancelled.context("sending the cancel to the new process")?;
    let code = slept.err().and_then(|e| e.code().map(|c| c.code().to_owned()));
    ensure!(
        code.as_deref() == Some("57014"),
        "pg_sleep after a cancel sent to the new process ended with {code:?}, expected 57014"
    );

    // The clients that could not be handed over were told once, with the reason.
    for (who, conn) in [
        ("session-mode client", &mut session_client),
        ("client pinned by LISTEN", &mut pinned_client),
    ] {
        let told = conn
            .expect_closed_with("57P01", Duration::from_secs(5), who)
            .await?;
        let message = told.message().unwrap_or_default();
        println!("{who}: {}", told.describe());
        ensure!(message.contains("upgrade"), "the {who}'s 57P01 says {message:?}");
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), tls_connection)
        .await
        .context("the TLS client's connection was not ended")??;
    let db = ended.as_ref().err().and_then(|e| e.as_db_error()).cloned();
    println!("TLS client: {ended:?}");
    ensure!(
        db.as_ref()
            .is_some_and(|e| e.code().code() == "57P01" && e.message().contains("upgrade")),
        "the TLS client's connection ended with {ended:?}, expected one FATAL 57P01 about the upgrade"
    );
    drop(tls_client);

    let bench = bench.await??;
    println!(
        "pgbench -M {} -c 32: {} transactions, {} failed, {:.0} tps, exit ok {}",
        mode.as_str(),
        bench.processed,
        bench.failed,
        bench.tps,
        bench.status_ok
    );
    ensure!(
        bench.status_ok && bench.failed == 0 && bench.processed > 0,
        "{}",
        bench.output.describe("pgbench through the takeover")
    );
    let (attempts, failures, longest) = connects.finish().await?;
    println!(
        "new connections: {attempts} opened, {} failed, the slowest {longest:?}",
        failures.len()
    );
    ensure!(failures.is_empty(), "new connections failed: {failures:?}");
    let report = psycopg.finish(&direct).await?;
    println!("{report}");
    ensure!(
        report.total_errors() == 0 && report.lost == 0 && report.duplicated == 0 && report.inserts_acked > 0,
        "psycopg through the takeover: {}",
        report.summary()
    );
    if let Some(stall) = report.max_stall() {
        println!(
            "stall: the longest wait between two operations of a psycopg client, the takeover included: {:.3} s",
            stall.seconds
        );
    }
    // The new process serves the metrics endpoint it took.
    let scrape = tokio::task::block_in_place(|| http::get(&metrics, "/metrics", Duration::from_secs(10)))?;
    ensure!(
        scrape.is_success() && scrape.body.contains("switchyard_pool_checkouts"),
        "GET /metrics after the takeover: {} {:.200}",
        scrape.status,
        scrape.body
    );
    // The new process goes on serving, over TCP and over the Unix-domain socket it took.
    for (way, at) in [("TCP", &ep), ("the Unix-domain socket", &unix)] {
        let after = at
            .connect_app()
            .await
            .with_context(|| format!("over {way} after the takeover"))?;
        after
            .simple_query("SELECT 1")
            .await
            .ctx("SELECT 1 after the takeover")?;
    }
    drop(new);
    Ok(())
}

/// With shared threading: while `pgbench -M prepared -c 32 -j 2 -T 10`, six psycopg 3
/// writers (three in autocommit, three in explicit transactions) and four loops opening a
/// new connection every few ms (over TCP and over the Unix-domain socket) run through the
/// proxy, a copy of the proxy binary started from another path with `--takeover` takes
/// over. The old process exits 0; `SHOW CLIENTS` on the new one lists the 32 pgbench
/// clients and a client's application name; that client's prepared statement, its `SET
/// statement_timeout` and its cancel key (a cancel sent to the new process ends its
/// `pg_sleep` with 57014) still work; an idle session-mode client, an idle client pinned
/// to its server by `LISTEN` and an idle TLS client each get exactly one FATAL 57P01 whose
/// message mentions the upgrade; pgbench exits 0 with 0 failed transactions; every new
/// connection succeeded; psycopg saw no error and every acknowledged insert is present
/// exactly once; the new process serves over TCP, over the Unix-domain socket and on the
/// metrics endpoint after the old one exited. The longest psycopg stall is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_refuses_no_connection_and_fails_no_transaction() -> Result<()> {
    skip_if_direct!();
    upgrade_under_load("shared", QueryMode::Prepared).await
}

/// The same upgrade under load as
/// [`an_upgrade_under_load_refuses_no_connection_and_fails_no_transaction`], with
/// `threading = "per-core"` (two workers: the adopted sessions go to the workers in turn)
/// and `pgbench -M simple`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_core_upgrade_under_simple_pgbench_refuses_no_connection_and_fails_no_transaction() -> Result<()>
{
    skip_if_direct!();
    upgrade_under_load("per-core", QueryMode::Simple).await
}

/// `listen` set to `addrs` (127.0.0.1 ports), the first one also the endpoint's.
fn listening_on(cfg: ProxyConfig, addrs: &[u16]) -> ProxyConfig {
    let listen: Vec<toml::Value> = addrs
        .iter()
        .map(|port| toml::Value::String(format!("127.0.0.1:{port}")))
        .collect();
    let mut cfg = cfg.set("proxy.listen", toml::Value::Array(listen));
    cfg.proxy.listen = format!("127.0.0.1:{}", addrs[0]);
    cfg
}

/// The running proxy listens on ports A and B; a `--takeover` whose configuration lists A
/// and C takes A over (a client connected to A before keeps its session: its prepared
/// statement answers after the old process exited 0), binds C anew (a client connects
/// there), and B, which it dropped, is closed with the old process (a connection to B is
/// refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_binds_the_addresses_it_adds_and_the_old_closes_those_it_drops() -> Result<()> {
    skip_if_direct!();
    let dir = scratch::fresh_dir("takeover")?;
    let (a, b, c) = (ports::free_port()?, ports::free_port()?, ports::free_port()?);
    let mut bed = TestBed::start_with(|cfg| listening_on(cfg, &[a, b]))?;
    let on = |port| Endpoint::new("127.0.0.1", port);
    let kept = on(a).connect_app().await?;
    let statement = kept.prepare("SELECT $1::int * 2").await.ctx("prepare")?;
    on(b).connect_app().await.context("B before the takeover")?;
    let new_config = listening_on(bed.proxy().context("the bed's proxy")?.config().clone(), &[a, c]);
    let launch = Launch {
        binary: Some(copied_binary(&dir)?),
        args: vec!["--takeover".to_owned()],
        ..Default::default()
    };
    let new = tokio::task::spawn_blocking(move || Proxy::start_with(new_config, launch)).await??;
    let old = bed.proxy().context("the bed's proxy")?;
    let status = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(30)))?;
    ensure!(
        status.is_some_and(|s| s.success()),
        "the old process exited with {status:?}, expected 0"
    );
    let n: i32 = kept
        .query_one(&statement, &[&21])
        .await
        .ctx("A's client after")?
        .get(0);
    ensure!(n == 42, "A's client got {n}");
    let on_c = on(c).connect_app().await.context("C after the takeover")?;
    on_c.simple_query("SELECT 1").await.ctx("SELECT 1 on C")?;
    let refused = std::net::TcpStream::connect(("127.0.0.1", b));
    println!("a connection to the dropped address B after the takeover: {refused:?}");
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "B still accepts connections after the takeover dropped it: {refused:?}"
    );
    drop(new);
    Ok(())
}

/// Runs `binary --config <cfg> --takeover` (written to `dir/name.toml`) and returns its
/// output; it must exit by itself within 60 s.
fn takeover_with(
    binary: &Path,
    dir: &Path,
    name: &str,
    cfg: &ProxyConfig,
) -> Result<switchyard_tests::tools::CmdOutput> {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, cfg.to_toml()?)?;
    let mut cmd = std::process::Command::new(binary);
    cmd.arg("--config")
        .arg(&file)
        .arg("--takeover")
        .env("NO_COLOR", "1");
    run_command(&mut cmd, None, Duration::from_secs(60))
}

/// A `--takeover` whose configuration does not load (`max_client_conn = "many"`) or whose
/// plugin does not (a `.wasm` file that is no component) exits non-zero naming the key or
/// the plugin, and the running proxy goes on serving: a query through it works after each,
/// and the proxy is still running.
#[tokio::test]
async fn a_takeover_with_a_broken_config_or_plugin_exits_non_zero_and_the_old_serves_on() -> Result<()> {
    skip_if_direct!();
    let dir = scratch::fresh_dir("takeover")?;
    let binary = copied_binary(&dir)?;
    let mut bed = TestBed::start()?;
    let ep = bed.endpoint();
    let good = bed.proxy().context("the bed's proxy")?.config().clone();
    let garbage = dir.join("broken.wasm");
    std::fs::write(&garbage, b"this is not a WebAssembly component")?;
    let broken_plugin = good
        .clone()
        .set("plugins.broken.path", garbage.display().to_string())
        .set("plugins.broken.hooks", vec!["pool-mode"]);
    for (name, cfg, expected) in [
        (
            "config",
            good.clone().set("proxy.max_client_conn", "many"),
            "max_client_conn",
        ),
        ("plugin", broken_plugin, "broken"),
    ] {
        let out = takeover_with(&binary, &dir, name, &cfg)?;
        println!(
            "--takeover with a broken {name}: {}\n{}",
            out.status,
            out.stderr.trim()
        );
        ensure!(!out.status_ok, "--takeover with a broken {name} exited 0");
        ensure!(
            out.stderr.contains(expected),
            "--takeover with a broken {name}: expected {expected:?} in its error, got {}",
            out.stderr
        );
        let client = ep.connect_app().await?;
        let n: i64 = client
            .query_one("SELECT 7::int8", &[])
            .await
            .ctx("SELECT after")?
            .get(0);
        ensure!(n == 7, "SELECT 7 through the old proxy answered {n}");
    }
    bed.ensure_proxy_alive()
}

/// A `--takeover` with no proxy running on its configuration's takeover socket exits
/// non-zero with an error saying that no running switchyard answers there.
#[test]
fn a_takeover_with_no_running_proxy_is_a_clear_error() -> Result<()> {
    skip_if_direct!();
    let dir = scratch::fresh_dir("takeover")?;
    let cfg = ProxyConfig::for_nodes(vec![NodeEntry {
        host: "127.0.0.1".to_owned(),
        port: 1,
        role: "primary".to_owned(),
        patroni_api: None,
    }])
    .set("proxy.listen", format!("127.0.0.1:{}", ports::free_port()?));
    let out = takeover_with(&env::proxy_binary()?, &dir, "alone", &cfg)?;
    println!(
        "--takeover with nothing running: {}\n{}",
        out.status,
        out.stderr.trim()
    );
    ensure!(!out.status_ok, "--takeover with nothing running exited 0");
    ensure!(
        out.stderr
            .contains("no running switchyard answers on the takeover socket"),
        "expected a clear error, got: {}",
        out.stderr
    );
    Ok(())
}
