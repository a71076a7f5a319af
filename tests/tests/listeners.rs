//! Listeners (issue 20): the Unix-domain socket beside TCP (`unix_socket_dir`, Postgres'
//! `.s.PGSQL.<port>` naming, so `psql -h <dir>` works), several TCP addresses, IPv6, in
//! both threading modes; the socket file's life: a stale one replaced, a live one refusing
//! a second proxy, removed at a clean stop. TLS and `client_tls = "require"` over the Unix
//! socket are in `tls.rs`; `auth_hba_file`'s `local` lines are here.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{BufMut, BytesMut};
use switchyard_tests::proxy::worker_switches;
use switchyard_tests::raw::RawConn;
use switchyard_tests::tools::run_command;
use switchyard_tests::{
    env, expect_sqlstate, ports, roles, scratch, skip_if_direct, Endpoint, PgCluster, PgResultExt, Proxy,
    ProxyConfig,
};
use tokio::io::AsyncWriteExt;

/// The two threading modes, as `[proxy]` settings: `shared`, and `per-core` with two workers.
const THREADINGS: [(&str, i64); 2] = [("shared", 1), ("per-core", 2)];

/// A directory for the proxy's Unix-domain socket.
fn socket_dir() -> Result<PathBuf> {
    scratch::fresh_dir("sock")
}

/// The test configuration for `pg`, listening on `127.0.0.1:<port>` and in `dir`, with
/// `threading` and `workers`.
fn unix_config(pg: &PgCluster, dir: &Path, port: u16, threading: &str, workers: i64) -> ProxyConfig {
    let mut cfg = ProxyConfig::for_cluster(pg)
        .set("proxy.unix_socket_dir", dir.display().to_string())
        .set("proxy.threading", threading)
        .set("proxy.workers", workers);
    cfg.proxy.listen = format!("127.0.0.1:{port}");
    cfg
}

/// Where clients reach the proxy over its Unix-domain socket: libpq and tokio-postgres take a
/// directory as the host.
fn unix_endpoint(dir: &Path, port: u16) -> Endpoint {
    Endpoint::new(&dir.display().to_string(), port)
}

/// Over the Unix-domain socket, in each threading mode (`shared`; `per-core` with two
/// workers accepting on the one socket): psql (`-h <dir> -p <port>`) logs in as `app`
/// (SCRAM) and as `md5user` (md5) and prints the rows of its queries; tokio-postgres gets
/// 1000 from `count(*)`, eight tokio-postgres clients at once each run 20 queries with the
/// right answers; a `pg_sleep(30)` started over the socket and cancelled through
/// tokio-postgres' cancel token (which connects over the same socket) ends with 57014
/// within 5 s; and a query started over TCP (RawConn) is cancelled by a CancelRequest
/// sent over the Unix socket with its key (57014): the cancel key is found whichever
/// listener the cancel arrives on. The start-up line names the socket, and logins over it
/// are logged with `peer=unix`.
#[tokio::test]
async fn unix_socket_serves_psql_and_tokio_postgres_and_cancels_in_both_threadings() -> Result<()> {
    skip_if_direct!();
    let pg = PgCluster::start()?;
    for (threading, workers) in THREADINGS {
        let dir = socket_dir()?;
        let port = ports::free_port()?;
        let mut proxy = Proxy::start(unix_config(&pg, &dir, port, threading, workers))?;
        let socket = dir.join(format!(".s.PGSQL.{port}"));
        ensure!(
            socket.exists(),
            "{threading}: no socket file at {}",
            socket.display()
        );
        let ep = unix_endpoint(&dir, port);

        for (user, password) in [roles::APP, roles::MD5] {
            let out = ep
                .psql(user, password, roles::APP_DB)
                .run_async("SELECT current_user, n FROM generate_series(1, 3) n")
                .await?;
            out.ensure_success()
                .with_context(|| format!("{threading}: psql -h {} as {user}", dir.display()))?;
            let expected = format!("{user}|1\n{user}|2\n{user}|3");
            ensure!(
                out.stdout.trim() == expected,
                "{threading}: psql over the Unix socket as {user} printed {:?}",
                out.stdout
            );
            println!("{threading}: psql -h <dir> as {user}: {:?}", out.stdout.trim());
        }

        let client = ep.connect_app().await?;
        let count: i64 = client
            .query_one("SELECT count(*) FROM generate_series(1, 1000)", &[])
            .await
            .ctx("count over the Unix socket")?
            .get(0);
        ensure!(
            count == 1000,
            "{threading}: tokio-postgres over the Unix socket counted {count}"
        );

        let pid = proxy.pid().context("the proxy's pid")?;
        let before = worker_switches(pid)?;
        let started = Instant::now();
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..8i32 {
            let ep = ep.clone();
            clients.spawn(async move {
                let client = ep.connect_app().await?;
                for q in 0..20i32 {
                    let n: i32 = client
                        .query_one("SELECT $1::int4 * 2", &[&(c * 100 + q)])
                        .await
                        .ctx("doubling")?
                        .get(0);
                    ensure!(n == (c * 100 + q) * 2, "client {c} query {q}: got {n}");
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = clients.join_next().await {
            done??;
        }
        // Which workers served them, as context switches per worker thread (printed: with
        // per-core, the first worker to wake takes each client, so both usually do).
        let after = worker_switches(pid)?;
        let per_worker: Vec<u64> = after
            .iter()
            .map(|(tid, n)| n - before.get(tid).copied().unwrap_or(0))
            .collect();
        println!(
            "{threading}: 8 clients x 20 queries over the Unix socket in {:?}; context switches per worker thread: {per_worker:?}",
            started.elapsed()
        );

        // A query started over the socket, cancelled over the socket.
        let running = {
            let client = ep.connect_app().await?;
            let token = client.cancel_token();
            let run =
                tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
            tokio::time::sleep(Duration::from_millis(300)).await;
            let sent = Instant::now();
            token
                .cancel_query(tokio_postgres::NoTls)
                .await
                .ctx("sending the cancel over the Unix socket")?;
            let result = tokio::time::timeout(Duration::from_secs(5), run)
                .await
                .context("pg_sleep(30) still ran 5 s after its cancel")??;
            expect_sqlstate(
                result,
                &["57014"],
                "the pg_sleep(30) cancelled over the Unix socket",
            )?;
            sent.elapsed()
        };
        println!(
            "{threading}: a query over the Unix socket was cancelled over it {running:?} after the cancel"
        );

        // A query started over TCP, cancelled over the socket with its key.
        let mut tcp = RawConn::login_app(&format!("127.0.0.1:{port}")).await?;
        let (pid, secret) = tcp.backend_key.context("no BackendKeyData over TCP")?;
        let mut query = BytesMut::new();
        switchyard_tests::raw::msg::query(&mut query, "SELECT pg_sleep(30)");
        tcp.send(&query).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut cancel = BytesMut::new();
        cancel.put_i32(16);
        cancel.put_i32(80877102);
        cancel.put_i32(pid);
        cancel.put_i32(secret);
        let mut unix = tokio::net::UnixStream::connect(&socket)
            .await
            .context("connecting to the socket")?;
        unix.write_all(&cancel).await?;
        let sent = Instant::now();
        let replies = tokio::time::timeout(Duration::from_secs(5), tcp.read_until_ready())
            .await
            .context("the TCP query still ran 5 s after a cancel sent over the Unix socket")??;
        let codes: Vec<String> = replies.iter().filter_map(|m| m.sqlstate()).collect();
        ensure!(
            codes == ["57014"],
            "{threading}: the TCP query cancelled over the Unix socket ended with {codes:?}, not 57014"
        );
        println!(
            "{threading}: a query over TCP was cancelled over the Unix socket {:?} after the cancel",
            sent.elapsed()
        );

        let log = proxy.log();
        ensure!(
            log.contains("listening") && log.contains(&socket.display().to_string()),
            "{threading}: the start-up line does not name the socket:\n{log}"
        );
        ensure!(
            log.lines()
                .any(|l| l.contains("client logged in") && l.contains("peer=unix")),
            "{threading}: no login logged with peer=unix:\n{}",
            proxy.log_tail(30)
        );
        proxy.ensure_running()?;
    }
    Ok(())
}

/// `listen` as an array of three addresses, 127.0.0.1, 127.0.0.2 (another loopback
/// address) and `[::1]`, each on its own port, in each threading mode: a tokio-postgres
/// client on each address gets its query's answer, and all three sessions run at once.
/// IPv6 is skipped (a failure under SWITCHYARD_NO_SKIP) only on a machine without `::1`.
#[tokio::test]
async fn every_listen_address_serves_in_both_threadings() -> Result<()> {
    skip_if_direct!();
    let ipv6 = env::has_ipv6_loopback();
    if !ipv6 {
        env::skip("this machine has no IPv6 loopback address (::1): the IPv6 address is left out")?;
    }
    let pg = PgCluster::start()?;
    for (threading, workers) in THREADINGS {
        let mut hosts = vec!["127.0.0.1", "127.0.0.2"];
        if ipv6 {
            hosts.push("::1");
        }
        let mut addrs = Vec::new();
        for host in &hosts {
            let port = ports::free_port()?;
            addrs.push(match host.contains(':') {
                true => format!("[{host}]:{port}"),
                false => format!("{host}:{port}"),
            });
        }
        let mut proxy = Proxy::start(listening_on(&pg, threading, workers, &addrs))?;
        let mut clients = Vec::new();
        for (host, addr) in hosts.iter().zip(&addrs) {
            let port: u16 = addr.rsplit(':').next().unwrap_or_default().parse()?;
            let client = Endpoint::new(host, port)
                .connect_app()
                .await
                .with_context(|| format!("{threading}: connecting to {addr}"))?;
            clients.push((addr, client));
        }
        for (i, (addr, client)) in clients.iter().enumerate() {
            let row = client
                .query_one("SELECT $1::int4 + 1", &[&(i as i32)])
                .await
                .ctx("a query")?;
            let n: i32 = row.get(0);
            ensure!(n == i as i32 + 1, "{threading}: the client on {addr} got {n}");
            println!("{threading}: the client on {addr} got {n}");
        }
        proxy.ensure_running()?;
    }
    Ok(())
}

/// The test configuration for `pg` with `listen` the array `addrs` (the first one is where
/// [`Proxy::start`] waits for the proxy), `threading` and `workers`.
fn listening_on(pg: &PgCluster, threading: &str, workers: i64, addrs: &[String]) -> ProxyConfig {
    let mut cfg = ProxyConfig::for_cluster(pg)
        .set("proxy.threading", threading)
        .set("proxy.workers", workers)
        .set(
            "proxy.listen",
            toml::Value::Array(addrs.iter().cloned().map(toml::Value::String).collect()),
        );
    cfg.proxy.listen = addrs[0].clone();
    cfg
}

/// `listen = ["127.0.0.1:P", "[::]:P"]`, an IPv4 address and the IPv6 wildcard on one port
/// (Postgres' `listen_addresses = '*'` case), in each threading mode: the proxy starts
/// (the IPv6 socket is made IPv6-only, else its bind fails with "address in use") and a
/// client over 127.0.0.1 and one over `::1` each get their query's answer. Skipped (a
/// failure under SWITCHYARD_NO_SKIP) only on a machine without `::1`.
#[tokio::test]
async fn ipv4_address_and_ipv6_wildcard_share_a_port() -> Result<()> {
    skip_if_direct!();
    if !env::has_ipv6_loopback() {
        return env::skip("this machine has no IPv6 loopback address (::1)");
    }
    let pg = PgCluster::start()?;
    for (threading, workers) in THREADINGS {
        let port = ports::free_port()?;
        let addrs = [format!("127.0.0.1:{port}"), format!("[::]:{port}")];
        let mut proxy = Proxy::start(listening_on(&pg, threading, workers, &addrs))?;
        for (i, host) in ["127.0.0.1", "::1"].into_iter().enumerate() {
            let n: i32 = Endpoint::new(host, port)
                .connect_app()
                .await
                .with_context(|| format!("{threading}: connecting over {host}"))?
                .query_one("SELECT $1::int4 * 10", &[&(i as i32 + 1)])
                .await
                .ctx("a query")?
                .get(0);
            ensure!(
                n == (i as i32 + 1) * 10,
                "{threading}: the client over {host} got {n}"
            );
            println!("{threading}: [\"127.0.0.1:{port}\", \"[::]:{port}\"]: the client over {host} got {n}");
        }
        proxy.ensure_running()?;
    }
    Ok(())
}

/// A socket file left by a process that died (bound, then closed: nothing answers on it)
/// is replaced: the proxy starts, logs that it replaced it, and serves a query over it.
/// A second proxy with the same socket while the first runs refuses to start (exit
/// status not 0) with a message naming the socket and saying another process listens on
/// it, and the first proxy's socket still serves. After SIGTERM the first proxy exits
/// with status 0 and its socket file is gone.
#[tokio::test]
async fn socket_file_stale_replaced_live_refused_and_removed_at_stop() -> Result<()> {
    skip_if_direct!();
    let pg = PgCluster::start()?;
    let dir = socket_dir()?;
    let port = ports::free_port()?;
    let socket = dir.join(format!(".s.PGSQL.{port}"));
    drop(std::os::unix::net::UnixListener::bind(&socket).context("making a stale socket file")?);
    ensure!(socket.exists(), "the stale socket file is not there");

    let mut proxy = Proxy::start(unix_config(&pg, &dir, port, "shared", 1))?;
    ensure!(
        proxy.log().contains("replacing a stale Unix-domain socket file"),
        "the proxy did not say it replaced the stale socket:\n{}",
        proxy.log()
    );
    let ep = unix_endpoint(&dir, port);
    let n: i32 = ep
        .connect_app()
        .await?
        .query_one("SELECT 41 + 1", &[])
        .await
        .ctx("query")?
        .get(0);
    ensure!(n == 42, "over the replaced socket: {n}");

    // The second proxy, run on the first one's configuration file, fails before it binds
    // TCP (where the first listens too): the socket is checked first.
    let second = run_command(
        std::process::Command::new(env::proxy_binary()?)
            .arg("--config")
            .arg(proxy.config_path()),
        None,
        Duration::from_secs(30),
    )?;
    ensure!(
        !second.status_ok
            && second
                .stderr
                .contains("another process is listening on the Unix-domain socket")
            && second.stderr.contains(&socket.display().to_string()),
        "{}",
        second.describe("a second proxy on the same Unix-domain socket should refuse to start, saying why")
    );
    println!(
        "the second proxy refused ({}): {}",
        second.status,
        second.stderr.trim()
    );
    ensure!(
        socket.exists(),
        "the second proxy removed the first one's socket file"
    );
    let n: i32 = ep
        .connect_app()
        .await?
        .query_one("SELECT 6 * 7", &[])
        .await
        .ctx("query")?
        .get(0);
    ensure!(n == 42, "the first proxy's socket after the refusal: {n}");

    let status = proxy.stop().context("the proxy was not running")?;
    ensure!(status.success(), "the proxy exited with {status} after SIGTERM");
    ensure!(
        !socket.exists(),
        "the socket file {} is still there after a clean stop",
        socket.display()
    );
    Ok(())
}

/// `auth_hba_file` with `local` lines: a Unix client of database `postgres` is refused by
/// `local postgres all reject` with 28000 and Postgres' wording for a Unix client
/// (`host "[local]"`), and the proxy logs it as `peer=unix`; a Unix client of `app` logs in
/// by `local all all scram-sha-256`; no `local` line matches a TCP client and no `host`
/// line a Unix one: a TCP client of `postgres` logs in by `host all all all scram-sha-256`.
#[tokio::test]
async fn hba_local_lines_decide_for_unix_clients_only() -> Result<()> {
    skip_if_direct!();
    let pg = PgCluster::start()?;
    let dir = socket_dir()?;
    let port = ports::free_port()?;
    let hba = dir.join("hba.conf");
    std::fs::write(
        &hba,
        "local postgres all reject\nlocal all all scram-sha-256\nhost all all all scram-sha-256\n",
    )?;
    let cfg = unix_config(&pg, &dir, port, "shared", 1).set("proxy.auth_hba_file", hba.display().to_string());
    let mut proxy = Proxy::start(cfg)?;
    let unix = unix_endpoint(&dir, port);
    let (user, password) = roles::APP;

    let refused = unix.connect(user, password, "postgres").await;
    let e = match refused {
        Ok(_) => bail!("a Unix client of database postgres logged in past `local postgres all reject`"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        e.contains("28000") && e.contains("host \"[local]\""),
        "the refusal of a Unix client: {e}"
    );
    println!("a Unix client of postgres: {e}");
    ensure!(
        proxy.log().contains("peer=unix"),
        "the proxy's log does not show the Unix client as unix:\n{}",
        proxy.log_tail(20)
    );
    let n: i32 = unix
        .connect(user, password, roles::APP_DB)
        .await?
        .query_one("SELECT 1 + 1", &[])
        .await
        .ctx("query")?
        .get(0);
    ensure!(n == 2, "a Unix client of app: {n}");
    let n: i32 = Endpoint::new("127.0.0.1", port)
        .connect(user, password, "postgres")
        .await?
        .query_one("SELECT 2 + 1", &[])
        .await
        .ctx("query")?
        .get(0);
    ensure!(n == 3, "a TCP client of postgres: {n}");
    proxy.ensure_running()
}
