//! Many databases and users in one configuration (100 databases × 10 users, generated
//! here, all on the server database `app`): pools are made only for the (database, user)
//! pairs clients use, and a reload that removes databases while clients use others costs
//! the others nothing, refuses new logins to the removed ones with 3D000, and ends their
//! sessions with 57P01 once their transaction is over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::admin::admin_rows;
use switchyard_tests::proxy::{DatabaseSection, UserSection};
use switchyard_tests::{describe_error, skip_if_direct, Endpoint, PgResultExt, ProxyConfig, TestBed};
use tokio_postgres::Client;

const DATABASES: usize = 100;
const USERS: usize = 10;
const PASSWORD: &str = "many-pw";

fn database(i: usize) -> String {
    format!("db{i:03}")
}

fn user(i: usize) -> String {
    format!("u{i}")
}

/// `cfg` with databases `db000`..`db099` (all the server's `app`; `db091` in session mode)
/// and users `u0`..`u9`, keeping only the databases `keep` accepts.
fn many(mut cfg: ProxyConfig, keep: impl Fn(usize) -> bool) -> ProxyConfig {
    cfg.databases.retain(|name, _| !name.starts_with("db"));
    for i in (0..DATABASES).filter(|&i| keep(i)) {
        cfg.databases.insert(
            database(i),
            DatabaseSection {
                cluster: "main".into(),
                dbname: Some("app".into()),
                pool_size: Some(2),
                pool_mode: (i == 91).then(|| "session".into()),
            },
        );
    }
    for u in 0..USERS {
        cfg = cfg.user(&user(u), UserSection::with_password(PASSWORD));
    }
    cfg
}

/// The databases the reload removes: `db090`..`db099`.
fn removed(i: usize) -> bool {
    i >= 90
}

async fn connect(ep: &Endpoint, db: usize, u: usize) -> Result<Client> {
    ep.connect(&user(u), PASSWORD, &database(db)).await
}

/// The SQLSTATE and message of a failed statement, or a failure if it succeeded.
fn refusal<T>(result: Result<T, tokio_postgres::Error>, what: &str) -> Result<(String, String)> {
    match result {
        Ok(_) => bail!("{what} succeeded"),
        Err(e) => match e.as_db_error() {
            Some(db) => Ok((db.code().code().to_string(), db.message().to_string())),
            None => bail!("{what}: expected an ErrorResponse, got {}", describe_error(&e)),
        },
    }
}

/// 100 databases × 10 users: 20 clients log in to 20 (database, user) pairs and `SHOW
/// POOLS` then lists exactly those 20 pools. Ten clients of kept databases run
/// transactions without pause while a reload (SIGHUP) removes `db090`..`db099`: they see 0
/// errors (counts printed). After the reload a new login to `db095` gets 3D000; a client of
/// `db090` that was inside a transaction finishes it (a statement and COMMIT succeed), then
/// its next statement gets 57P01 saying the database was removed; an idle client of `db092`
/// and a session-mode client of `db091` holding a temporary table get 57P01 at their next
/// statement. `SHOW DATABASES` lists 90 of the generated databases, `SHOW POOLS` none of the
/// removed ones,
/// and the log says the databases were removed without asking for a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_removes_databases_while_others_are_used() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| many(cfg.with_admin(), |_| true))?;
    let direct = bed.direct().connect("postgres", "postgres", "app").await?;
    for u in 0..USERS {
        direct
            .batch_execute(&format!("CREATE ROLE {} LOGIN PASSWORD '{PASSWORD}'", user(u)))
            .await
            .ctx("create a role")?;
    }
    let ep = bed.endpoint();
    let dbs = admin_rows(&ep, "SHOW DATABASES").await?;
    ensure!(
        dbs.iter().filter(|r| r["database"].starts_with("db")).count() == DATABASES,
        "SHOW DATABASES lists {} databases",
        dbs.len()
    );

    // Ten kept pairs (db000..db009, one user each) and ten to be removed (db090..db099).
    let kept: Vec<(usize, usize)> = (0..10).map(|i| (i, i)).collect();
    let mut kept_clients = Vec::new();
    for &(db, u) in &kept {
        let c = connect(&ep, db, u).await?;
        c.simple_query("SELECT 1").await.ctx("a kept database's client")?;
        kept_clients.push(c);
    }
    let mut doomed = Vec::new();
    for i in 90..100 {
        let c = connect(&ep, i, i % USERS).await?;
        c.simple_query("SELECT 1")
            .await
            .ctx("a doomed database's client")?;
        doomed.push(c);
    }
    let pools = admin_rows(&ep, "SHOW POOLS").await?;
    let mut names: Vec<&str> = pools
        .iter()
        .map(|r| r["pool"].as_str())
        .filter(|p| p.starts_with("db"))
        .collect();
    names.sort();
    println!("{} pools after 20 clients of 20 pairs: {names:?}", names.len());
    ensure!(
        names.len() == 20,
        "SHOW POOLS lists {} pools of the generated databases, 20 pairs were used",
        names.len()
    );

    // The doomed clients: db090 inside a transaction, db091 (session mode) with a
    // temporary table, db092 idle.
    doomed[0]
        .batch_execute("BEGIN; SELECT 1")
        .await
        .ctx("db090 opens a transaction")?;
    doomed[1]
        .batch_execute("CREATE TEMP TABLE kept_here (i int)")
        .await
        .ctx("db091 creates a temporary table")?;

    // Load on the kept databases.
    let running = Arc::new(AtomicBool::new(true));
    let mut load = Vec::new();
    for (client, (db, _)) in kept_clients.into_iter().zip(&kept) {
        let running = running.clone();
        let db = *db;
        load.push(tokio::spawn(async move {
            let (mut done, mut errors) = (0u64, Vec::new());
            while running.load(Ordering::Relaxed) {
                let r = client
                    .batch_execute("BEGIN; SELECT count(*) FROM pg_class; COMMIT")
                    .await;
                match r {
                    Ok(()) => done += 1,
                    Err(e) => errors.push(format!("{}: {}", database(db), describe_error(&e))),
                }
            }
            (done, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let reloaded_at = Instant::now();
    let proxy = bed.proxy().context("a proxy")?;
    let config = many(proxy.config().clone(), |i| !removed(i));
    proxy.reload(config)?;
    // The reload is done when a new login to a removed database is refused.
    let (code, message) = loop {
        match connect(&ep, 95, 5).await {
            Ok(_) if reloaded_at.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(_) => bail!("10 s after SIGHUP a new login to db095 still succeeds"),
            Err(e) => {
                let text = format!("{e:#}");
                break (if text.contains("3D000") { "3D000" } else { "other" }, text);
            }
        }
    };
    println!(
        "new login to db095 after the reload ({:?}): {message}",
        reloaded_at.elapsed()
    );
    ensure!(code == "3D000", "a new login to a removed database: {message}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::Relaxed);
    let mut done = 0;
    let mut errors = Vec::new();
    for t in load {
        let (d, e) = t.await?;
        done += d;
        errors.extend(e);
    }
    println!(
        "kept databases: {done} transactions by 10 clients across the reload, {} errors",
        errors.len()
    );
    ensure!(
        errors.is_empty(),
        "errors on kept databases: {:#?}",
        &errors[..errors.len().min(10)]
    );
    ensure!(done > 0, "the kept databases' clients ran nothing");

    // db090: its transaction finishes, then the session ends.
    let v: i32 = doomed[0]
        .query_one("SELECT 2", &[])
        .await
        .ctx("db090's open transaction after the reload")?
        .get(0);
    ensure!(v == 2);
    doomed[0]
        .batch_execute("COMMIT")
        .await
        .ctx("db090 commits after the reload")?;
    for (name, client) in [
        ("db090 after its COMMIT", &doomed[0]),
        ("db091 (session mode)", &doomed[1]),
        ("db092 (idle)", &doomed[2]),
    ] {
        let (code, message) = refusal(client.simple_query("SELECT 3").await, name)?;
        println!("{name}: {code} {message}");
        ensure!(
            code == "57P01" && message.contains("removed"),
            "{name}: expected 57P01 saying the database was removed, got {code} {message}"
        );
    }

    let dbs = admin_rows(&ep, "SHOW DATABASES").await?;
    let listed = dbs.iter().filter(|r| r["database"].starts_with("db")).count();
    let pools = admin_rows(&ep, "SHOW POOLS").await?;
    let stale: Vec<&str> = pools
        .iter()
        .map(|r| r["pool"].as_str())
        .filter(|p| p.starts_with("db09"))
        .collect();
    println!("after the reload: {listed} databases listed, removed pools still shown: {stale:?}");
    ensure!(
        listed == 90,
        "SHOW DATABASES lists {listed} generated databases, expected 90"
    );
    ensure!(stale.is_empty(), "SHOW POOLS still lists {stale:?}");
    let log = bed.proxy().context("a proxy")?.log();
    ensure!(
        log.contains("database removed by reload") && !log.contains("take effect at restart"),
        "the log should report the removal and ask for no restart:\n{}",
        bed.proxy().context("a proxy")?.log_tail(20)
    );
    bed.ensure_proxy_alive()
}
