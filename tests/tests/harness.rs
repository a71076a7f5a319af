//! Self-tests of the test bed against plain PostgreSQL (no proxy involved):
//! if these fail, proxy test failures mean nothing. They check that clusters
//! start with the documented roles and authentication methods, that the
//! replica streams, and that every tool and client driver the proxy tests
//! rely on works when pointed at a real server. One test checks the bed's own rule that a
//! panic in the proxy's log fails the test.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use switchyard_tests::raw::{RawConn, Startup};
use switchyard_tests::{
    expect_sqlstate, roles, Driver, Endpoint, Length, PgCluster, PgResultExt, ProxyConfig, QueryMode,
};

fn direct(pg: &PgCluster) -> Endpoint {
    Endpoint::new(pg.primary().host(), pg.primary().port())
}

#[tokio::test]
async fn cluster_roles_and_auth_methods() -> Result<()> {
    let started = Instant::now();
    let pg = PgCluster::start()?;
    eprintln!("cluster started in {:?}", started.elapsed());
    let ep = direct(&pg);

    // SCRAM user owning database app.
    let app = ep.connect_app().await?;
    let row = app
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .ctx("whoami")?;
    ensure!(row.get::<_, String>(0) == "app" && row.get::<_, String>(1) == "app");
    let method = app
        .query_one(
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'app'",
            &[],
        )
        .await;
    // Non-superusers cannot read pg_authid; that's fine, check via postgres below.
    drop(method);

    let su = ep
        .connect(roles::SUPERUSER.0, roles::SUPERUSER.1, "postgres")
        .await?;
    let rows = su
        .query(
            "SELECT rolname::text, left(rolpassword, 6) FROM pg_authid \
             WHERE rolname IN ('app','md5user','postgres') ORDER BY 1",
            &[],
        )
        .await
        .ctx("reading pg_authid")?;
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    ensure!(
        got == vec![
            ("app".into(), "SCRAM-".into()),
            ("md5user".into(), "md5".to_owned() + &got[1].1[3..]),
            ("postgres".into(), "SCRAM-".into())
        ] && got[1].1.starts_with("md5"),
        "unexpected password storage: {got:?}"
    );

    // md5 user, trust user.
    let (u, p) = roles::MD5;
    let md5 = ep.connect(u, p, roles::APP_DB).await?;
    md5.execute("CREATE TABLE md5_owned(x int)", &[])
        .await
        .ctx("md5user creates a table")?;
    let trust = ep.connect(roles::TRUST.0, "", roles::APP_DB).await?;
    trust.simple_query("SELECT 1").await.ctx("trustuser query")?;

    // Wrong password, unknown user, unknown database.
    let wrong = switchyard_tests::client::connect(&ep.config("app", "nope", "app")).await;
    expect_sqlstate(wrong, &["28P01"], "wrong password")?;
    let nouser = switchyard_tests::client::connect(&ep.config("nosuchuser", "x", "app")).await;
    expect_sqlstate(nouser, &["28P01"], "unknown user")?;
    let nodb = switchyard_tests::client::connect(&ep.config("app", "app", "nosuchdb")).await;
    expect_sqlstate(nodb, &["3D000"], "unknown database")?;

    // psql with a password over TCP.
    let out = ep.psql("app", "app", "app").run("SELECT 40 + 2")?;
    out.ensure_success()?;
    ensure!(out.stdout.trim() == "42", "psql printed {:?}", out.stdout);
    Ok(())
}

#[tokio::test]
async fn raw_client_handles_every_auth_method() -> Result<()> {
    let pg = PgCluster::start()?;
    let addr = direct(&pg).addr();
    for (user, password) in [("app", "app"), ("md5user", "md5pass"), ("trustuser", "")] {
        let mut conn = RawConn::login(&addr, &[("user", user), ("database", "app")], password).await?;
        let v = conn.query_one_value("SELECT current_user").await?;
        ensure!(v.as_deref() == Some(user), "raw login as {user} got {v:?}");
        ensure!(conn.backend_key.is_some(), "no BackendKeyData");
        conn.terminate().await?;
    }
    let mut conn = RawConn::connect(&addr).await?;
    match conn
        .startup(&[("user", "app"), ("database", "app")], "bad")
        .await?
    {
        Startup::Error(e) => ensure!(e.sqlstate().as_deref() == Some("28P01"), "{}", e.describe()),
        Startup::Ready => anyhow::bail!("login with a bad password succeeded"),
    }
    Ok(())
}

#[tokio::test]
async fn replica_streams_from_primary() -> Result<()> {
    let started = Instant::now();
    let pg = PgCluster::start_with_replica()?;
    eprintln!("primary + replica started in {:?}", started.elapsed());
    let primary = direct(&pg).connect_app().await?;
    primary
        .batch_execute("CREATE TABLE rep(x int); INSERT INTO rep SELECT generate_series(1, 100)")
        .await
        .ctx("writing on primary")?;
    pg.wait_replica_caught_up()?;
    let replica_ep = Endpoint::new(pg.replica().host(), pg.replica().port());
    let replica = replica_ep.connect_app().await?;
    let n: i64 = replica
        .query_one("SELECT count(*) FROM rep", &[])
        .await
        .ctx("reading on replica")?
        .get(0);
    ensure!(n == 100, "replica sees {n} rows, expected 100");
    let in_recovery: bool = replica
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .ctx("pg_is_in_recovery")?
        .get(0);
    ensure!(in_recovery, "replica is not in recovery");
    let err = replica.batch_execute("INSERT INTO rep VALUES (1)").await;
    expect_sqlstate(err, &["25006"], "write on replica")?;
    Ok(())
}

#[tokio::test]
async fn node_restart_keeps_port_and_promote_works() -> Result<()> {
    let mut pg = PgCluster::start_with_replica()?;
    let port = pg.primary().port();
    pg.primary_mut().stop("fast")?;
    pg.primary_mut().start()?;
    ensure!(pg.primary().port() == port, "restart changed the port");
    direct(&pg).connect_app().await?;
    pg.primary_mut().stop("immediate")?;
    pg.replica().promote()?;
    let replica_ep = Endpoint::new(pg.replica().host(), pg.replica().port());
    replica_ep
        .connect_app()
        .await?
        .batch_execute("CREATE TABLE after_promote(x int)")
        .await
        .ctx("write on promoted replica")?;
    Ok(())
}

#[tokio::test]
async fn pgbench_helpers_parse_results() -> Result<()> {
    let pg = PgCluster::start()?;
    let bench = direct(&pg).pgbench("app", "app", "app");
    bench.init(1)?;
    for mode in [QueryMode::Simple, QueryMode::Extended, QueryMode::Prepared] {
        let before = count_history(&pg).await?;
        let r = bench.run_async(mode, 4, 2, Length::Transactions(50)).await?;
        ensure!(r.status_ok, "{}", r.output.describe("pgbench failed"));
        ensure!(r.processed == 200 && r.failed == 0, "{mode:?}: {r:?}");
        ensure!(r.tps > 0.0, "no tps parsed: {}", r.output.stdout);
        let after = count_history(&pg).await?;
        ensure!(after - before == 200, "history grew by {}", after - before);
    }
    Ok(())
}

async fn count_history(pg: &PgCluster) -> Result<i64> {
    let c = direct(pg).connect_app().await?;
    Ok(c.query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .ctx("count history")?
        .get(0))
}

async fn run_driver(driver: Driver) -> Result<()> {
    let pg = PgCluster::start()?;
    let target = direct(&pg).client_target("app", "app", "app");
    let report = driver.run_async(&target, 4, 30).await?;
    ensure!(
        report.errors == 0 && report.ok > 0,
        "{}",
        report
            .output
            .describe(&format!("{driver:?}: {} ok, {} errors", report.ok, report.errors))
    );
    Ok(())
}

#[tokio::test]
async fn psycopg_client_script_works_directly() -> Result<()> {
    run_driver(Driver::Psycopg).await
}

#[tokio::test]
async fn node_pg_client_script_works_directly() -> Result<()> {
    run_driver(Driver::NodePg).await
}

#[tokio::test]
async fn jdbc_client_script_works_directly() -> Result<()> {
    run_driver(Driver::Jdbc).await
}

#[test]
fn proxy_config_renders_the_documented_format() -> Result<()> {
    let pg = PgCluster::start_with_replica()?;
    let cfg = ProxyConfig::for_cluster(&pg)
        .pool_size(4)
        .query_wait_timeout("1s")
        .set("databases.app.pool_mode", "session")
        .set("proxy.listen", "127.0.0.1:6432");
    let text = cfg.to_toml()?;
    let parsed: toml::Value = toml::from_str(&text)?;
    let get = |path: &str| -> Option<toml::Value> {
        let mut v = &parsed;
        for k in path.split('.') {
            v = v.get(k)?;
        }
        Some(v.clone())
    };
    ensure!(get("proxy.listen") == Some("127.0.0.1:6432".into()), "{text}");
    ensure!(get("pool.mode") == Some("transaction".into()), "{text}");
    ensure!(get("pool.size") == Some(4.into()), "{text}");
    ensure!(get("pool.query_wait_timeout") == Some("1s".into()), "{text}");
    ensure!(get("databases.app.cluster") == Some("main".into()), "{text}");
    ensure!(get("databases.app.pool_mode") == Some("session".into()), "{text}");
    ensure!(get("users.app.password") == Some("app".into()), "{text}");
    ensure!(get("users.trustuser").is_some(), "{text}");
    let nodes = get("clusters.main.nodes").and_then(|n| n.as_array().cloned());
    let nodes = nodes.unwrap_or_default();
    ensure!(nodes.len() == 2, "{text}");
    ensure!(nodes[0].get("role") == Some(&"primary".into()), "{text}");
    ensure!(
        nodes[1].get("port") == Some(&i64::from(pg.replica().port()).into()),
        "{text}"
    );
    Ok(())
}

#[test]
fn watchdog_kills_servers_of_a_killed_test_process() -> Result<()> {
    // Re-run this binary as a child that starts a cluster and then hangs;
    // SIGKILL it and check that its postmaster goes away.
    if std::env::var_os("SWITCHYARD_WATCHDOG_CHILD").is_some() {
        let pg = PgCluster::start()?;
        println!("POSTMASTER_DATA {}", pg.primary().data_dir().display());
        use std::io::Write;
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_secs(600));
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "watchdog_kills_servers_of_a_killed_test_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SWITCHYARD_WATCHDOG_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            // libtest may print "test <name> ... " on the same line.
            if let Some(i) = line.find("POSTMASTER_DATA ") {
                let _ = tx.send(line[i + "POSTMASTER_DATA ".len()..].trim().to_owned());
                return;
            }
        }
    });
    let data = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(d) => d,
        Err(_) => {
            child.kill()?;
            anyhow::bail!("child test process did not report its cluster within 60 s");
        }
    };
    let pid_file = std::path::Path::new(&data).join("postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)?
        .lines()
        .next()
        .unwrap_or("")
        .parse()?;
    child.kill()?;
    child.wait()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        ensure!(
            Instant::now() < deadline,
            "postmaster {pid} still alive 20 s after its test process was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A test that keeps its cluster past the deadline (`SWITCHYARD_TEST_DEADLINE`, here 3 s)
/// is ended: its process exits with status 124 within seconds, says which test ran over,
/// and its postmaster is gone afterwards. Checked on a child run of this binary whose test
/// hangs in a wait with no bound of its own.
#[test]
fn a_test_that_hangs_is_ended_at_its_deadline() -> Result<()> {
    if std::env::var_os("SWITCHYARD_DEADLINE_CHILD").is_some() {
        let pg = PgCluster::start()?;
        println!("POSTMASTER_DATA {}", pg.primary().data_dir().display());
        std::thread::sleep(Duration::from_secs(600));
        return Ok(());
    }
    let started = Instant::now();
    let output = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "a_test_that_hangs_is_ended_at_its_deadline",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SWITCHYARD_DEADLINE_CHILD", "1")
        .env("SWITCHYARD_TEST_DEADLINE", "3")
        .output()?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "the hanging child test ended after {took:?} with {}",
        output.status
    );
    ensure!(
        output.status.code() == Some(124),
        "the child should exit with 124 at its deadline, got {}\n{stdout}\n{stderr}",
        output.status
    );
    ensure!(
        stderr.contains("a_test_that_hangs_is_ended_at_its_deadline") && stderr.contains("after 3 s"),
        "the message should name the test and its bound:\n{stderr}"
    );
    let data = stdout
        .lines()
        .find_map(|l| l.split_once("POSTMASTER_DATA ").map(|(_, d)| d.trim().to_owned()))
        .ok_or_else(|| anyhow::anyhow!("the child did not report its cluster:\n{stdout}"))?;
    let pid_file = std::path::Path::new(&data).join("postmaster.pid");
    let gone_by = Instant::now() + Duration::from_secs(20);
    while pid_file.exists() {
        ensure!(
            Instant::now() < gone_by,
            "{} still exists 20 s after the test process ended",
            pid_file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The proxy's log is read when its test ends: a line where the proxy itself panicked fails
/// the test (the drop of the bed panics), even if every client got its answer; a plugin's
/// captured stderr that mentions a panic, which the proxy logs inside its own lines, does not.
#[test]
fn a_panic_in_the_proxys_log_fails_the_test() -> Result<()> {
    switchyard_tests::skip_if_direct!();
    fn bed_with_log_line(line: &str) -> std::thread::Result<()> {
        let line = line.to_owned();
        std::panic::catch_unwind(move || {
            let mut bed = switchyard_tests::TestBed::start().expect("bed");
            let proxy = bed.proxy().expect("a proxy (direct mode was ruled out)");
            // After the proxy stopped: its own writes do not append, and would overwrite.
            proxy.stop();
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(proxy.log_path())
                .expect("proxy log");
            writeln!(log, "{line}").expect("append to the proxy log");
            drop(bed);
        })
    }
    let plugin_output = bed_with_log_line(
        "2026-12-06T10:00:00.000000Z  WARN plugin call failed plugin=p error=stderr: thread '<unnamed>' (1) panicked at src/lib.rs:1:1: boom",
    );
    assert!(
        plugin_output.is_ok(),
        "a plugin's captured panic text failed the test"
    );
    let proxy_panic =
        bed_with_log_line("thread 'tokio-runtime-worker' (7) panicked at host/src/session/mod.rs:1:1:");
    assert!(
        proxy_panic.is_err(),
        "a panic line in the proxy's log did not fail the test"
    );
    Ok(())
}
