//! Caps on server connections shared by several pools (`max_db_connections`,
//! `max_user_connections`, PgBouncer's names): Postgres never sees more than the cap, the
//! clients over it wait and are served, a wait past `query_wait_timeout` gets 53300 naming
//! the cap, an idle server of another pool is closed to make room, and users found by
//! `auth_query` count together.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_tests::cluster::roles;
use switchyard_tests::peak::ServerPeak;
use switchyard_tests::{describe_error, skip_if_direct, Endpoint, PgResultExt, TestBed};

/// Transactions each client runs in the load tests.
const TRANSACTIONS: usize = 10;

/// Clients (user, password, database) each run [`TRANSACTIONS`] transactions that hold
/// their server 20 ms, all at once; returns every failed transaction's error.
async fn run_clients(ep: &Endpoint, clients: &[(&str, &str, &str)]) -> Result<Vec<String>> {
    let mut tasks = Vec::new();
    for (id, &(user, password, db)) in clients.iter().enumerate() {
        let client = ep
            .connect(user, password, db)
            .await
            .with_context(|| format!("client {id} ({user} on {db}) logs in"))?;
        let who = format!("client {id} ({user} on {db})");
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for i in 0..TRANSACTIONS {
                let r = async {
                    client.batch_execute("BEGIN").await?;
                    let n: i32 = client
                        .query_one("SELECT 1 FROM pg_sleep(0.02)", &[])
                        .await?
                        .get(0);
                    client.batch_execute("COMMIT").await?;
                    Ok::<_, tokio_postgres::Error>(n)
                }
                .await;
                match r {
                    Ok(1) => {}
                    Ok(n) => errors.push(format!("{who} tx {i}: got {n}, expected 1")),
                    Err(e) => errors.push(format!("{who} tx {i}: {}", describe_error(&e))),
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await?);
    }
    Ok(errors)
}

/// Twelve clients under a cap of three: every transaction succeeds and the most server
/// connections Postgres saw at once (of `users` on `dbs`, sampled every 5 ms) is at most 3.
async fn twelve_clients_under_a_cap_of_three(
    bed: &mut TestBed,
    clients: &[(&str, &str, &str)],
    users: &[&str],
    dbs: &[&str],
    cap: &str,
) -> Result<()> {
    let ep = bed.endpoint();
    let peak = ServerPeak::start_where(&bed.direct(), users, dbs).await?;
    let started = Instant::now();
    let errors = run_clients(&ep, clients).await?;
    let took = started.elapsed();
    let peak = peak.finish().await?;
    bed.ensure_proxy_alive()?;
    println!(
        "{} clients x {TRANSACTIONS} transactions in {took:?}: {} errors; at most {} server \
         connections of {users:?} on {dbs:?} at once ({} samples), {cap} 3, pool size 5",
        clients.len(),
        errors.len(),
        peak.max,
        peak.samples
    );
    ensure!(
        errors.is_empty(),
        "{} failed transactions, first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    ensure!(
        peak.max <= 3,
        "{} server connections at once, {cap} is 3",
        peak.max
    );
    ensure!(peak.max > 0, "the sampler saw no server connection at all");
    Ok(())
}

/// `max_db_connections = 3` on database `app`, two users with pools of 5 and 12 clients (6
/// each) running 10 transactions of 20 ms at once: all 120 transactions succeed (clients
/// over the cap wait), and Postgres never shows more than 3 backends of the two users on
/// `app`.
#[tokio::test]
async fn max_db_connections_caps_all_users_of_a_database() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| {
        cfg.pool_size(5)
            .query_wait_timeout("30s")
            .set("databases.app.max_db_connections", 3)
    })?;
    let (app, md5) = (roles::APP, roles::MD5);
    let clients: Vec<_> = (0..12)
        .map(|i| {
            if i % 2 == 0 {
                (app.0, app.1, "app")
            } else {
                (md5.0, md5.1, "app")
            }
        })
        .collect();
    twelve_clients_under_a_cap_of_three(
        &mut bed,
        &clients,
        &[app.0, md5.0],
        &["app"],
        "max_db_connections",
    )
    .await
}

/// `[users.app] max_user_connections = 3`, user `app` in two databases (`app`, `postgres`)
/// with pools of 5 and 12 clients (6 each) running 10 transactions of 20 ms at once: all 120
/// succeed, and Postgres never shows more than 3 backends of `app` on the two databases.
#[tokio::test]
async fn max_user_connections_caps_a_user_across_databases() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| {
        cfg.pool_size(5)
            .query_wait_timeout("30s")
            .set("users.app.max_user_connections", 3)
    })?;
    let app = roles::APP;
    let clients: Vec<_> = (0..12)
        .map(|i| (app.0, app.1, if i % 2 == 0 { "app" } else { "postgres" }))
        .collect();
    twelve_clients_under_a_cap_of_three(
        &mut bed,
        &clients,
        &[app.0],
        &["app", "postgres"],
        "max_user_connections",
    )
    .await
}

/// A client (user, password, database).
type Login = (&'static str, &'static str, &'static str);

/// Under a cap of 3 (`cap`, set by `key`), `holders` hold the three servers it allows in
/// open transactions; `waiter` then waits for one and must get SQLSTATE 53300 naming `cap`
/// once `query_wait_timeout` (1 s) has passed (the wait is printed; it must be at least 1 s
/// and under 10 s); the holders are unaffected, and after the first commits a new client
/// like `waiter` is served.
async fn a_wait_under_a_full_cap_times_out(
    key: &str,
    cap: &str,
    holders: [Login; 3],
    waiter: Login,
) -> Result<()> {
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(5).query_wait_timeout("1s").set(key, 3))?;
    let ep = bed.endpoint();
    let mut held = Vec::new();
    for (user, password, db) in holders {
        let c = ep.connect(user, password, db).await?;
        c.batch_execute("BEGIN; SELECT 1")
            .await
            .ctx("a holder opens a transaction")?;
        held.push(c);
    }
    let (user, password, db) = waiter;
    let client = ep.connect(user, password, db).await?;
    let asked = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), client.simple_query("SELECT 1"))
        .await
        .context("the waiting client got no answer within 20 s; query_wait_timeout is 1s")?;
    let waited = asked.elapsed();
    println!("the client over {cap} got its answer after {waited:?} (query_wait_timeout 1s)");
    let e = match result {
        Ok(_) => anyhow::bail!("a fourth server was lent while {cap} is 3 and three are in transactions"),
        Err(e) => e,
    };
    let err = e
        .as_db_error()
        .with_context(|| format!("expected an ErrorResponse 53300, got {}", describe_error(&e)))?;
    ensure!(
        err.code().code() == "53300" && err.message().contains(cap),
        "expected 53300 naming {cap}, got {}",
        describe_error(&e)
    );
    ensure!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "the wait ended after {waited:?}; query_wait_timeout is 1s"
    );
    for (i, h) in held.iter().enumerate() {
        let v: i32 = h
            .query_one("SELECT 2", &[])
            .await
            .ctx("a holder after the timeout")?
            .get(0);
        ensure!(v == 2, "holder {i} got {v}");
    }
    held[0].batch_execute("COMMIT").await.ctx("holder COMMIT")?;
    let late = ep.connect(user, password, db).await?;
    late.simple_query("SELECT 1")
        .await
        .ctx("a new client once a server is free")?;
    bed.ensure_proxy_alive()
}

/// `[pool] max_db_connections = 3`, its three servers held in transactions (two by `app`,
/// one by `md5user`): a fourth client (`md5user`) gets 53300 naming `max_db_connections`
/// after `query_wait_timeout`, as [`a_wait_under_a_full_cap_times_out`] checks.
#[tokio::test]
async fn a_wait_for_room_under_max_db_connections_times_out_with_53300() -> Result<()> {
    skip_if_direct!();
    let (app, md5) = (roles::APP, roles::MD5);
    a_wait_under_a_full_cap_times_out(
        "pool.max_db_connections",
        "max_db_connections",
        [
            (app.0, app.1, "app"),
            (app.0, app.1, "app"),
            (md5.0, md5.1, "app"),
        ],
        (md5.0, md5.1, "app"),
    )
    .await
}

/// `[pool] max_user_connections = 3`, the three servers of `app` held in transactions (two
/// in database `app`, one in `postgres`): a fourth client of `app` in `postgres` gets 53300
/// naming `max_user_connections` after `query_wait_timeout`, as
/// [`a_wait_under_a_full_cap_times_out`] checks.
#[tokio::test]
async fn a_wait_for_room_under_max_user_connections_times_out_with_53300() -> Result<()> {
    skip_if_direct!();
    let app = roles::APP;
    a_wait_under_a_full_cap_times_out(
        "pool.max_user_connections",
        "max_user_connections",
        [
            (app.0, app.1, "app"),
            (app.0, app.1, "app"),
            (app.0, app.1, "postgres"),
        ],
        (app.0, app.1, "postgres"),
    )
    .await
}

/// With `max_db_connections = 3`, user `app` leaves three idle servers in its pool; a
/// client of `md5user` is then served within `query_wait_timeout` (2 s; without room it
/// would wait for `idle_timeout`, 10 min) because the proxy closes one of `app`'s idle
/// servers, as PgBouncer does: Postgres then shows 2 backends of `app` and 1 of `md5user`.
#[tokio::test]
async fn an_idle_server_of_another_pool_is_closed_to_make_room() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| {
        cfg.pool_size(5)
            .query_wait_timeout("2s")
            .set("databases.app.max_db_connections", 3)
    })?;
    let ep = bed.endpoint();
    let (app, md5) = (roles::APP, roles::MD5);
    let mut holders = Vec::new();
    for _ in 0..3 {
        let c = ep.connect(app.0, app.1, "app").await?;
        c.batch_execute("BEGIN; SELECT 1")
            .await
            .ctx("app opens a transaction")?;
        holders.push(c);
    }
    for h in &holders {
        h.batch_execute("COMMIT").await.ctx("app commits")?;
    }
    let direct = bed
        .direct()
        .connect(roles::SUPERUSER.0, roles::SUPERUSER.1, "postgres")
        .await?;
    let backends = |user: &'static str| {
        let direct = &direct;
        async move {
            let n: i64 = direct
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND datname = 'app'",
                    &[&user],
                )
                .await
                .ctx("count backends")?
                .get(0);
            Ok::<_, anyhow::Error>(n)
        }
    };
    let before = backends(app.0).await?;
    ensure!(
        before == 3,
        "app should hold 3 idle servers, Postgres shows {before}"
    );
    let other = ep.connect(md5.0, md5.1, "app").await?;
    let asked = Instant::now();
    let v: i32 = other
        .query_one("SELECT 7", &[])
        .await
        .ctx("md5user while app's three servers are idle")?
        .get(0);
    println!(
        "md5user was served after {:?} (query_wait_timeout 2s)",
        asked.elapsed()
    );
    ensure!(v == 7);
    let (after_app, after_md5) = (backends(app.0).await?, backends(md5.0).await?);
    println!("backends on app after: app {after_app}, md5user {after_md5}");
    ensure!(
        after_app == 2 && after_md5 == 1,
        "expected 2 backends of app and 1 of md5user, Postgres shows {after_app} and {after_md5}"
    );
    bed.ensure_proxy_alive()
}

/// Two roles known only to the server, found by `auth_query` (their pools made on
/// demand): with `max_db_connections = 3` on `app`, pools of 5 and 12 clients (6 each)
/// running 10 transactions of 20 ms at once, all 120 succeed and Postgres never shows more
/// than 3 backends of the two on `app`: the cap is the total across looked-up users.
#[tokio::test]
async fn max_db_connections_caps_users_found_by_auth_query_together() -> Result<()> {
    skip_if_direct!();
    const ROLES: [(&str, &str); 2] = [("cap_a", "cap-a-secret"), ("cap_b", "cap-b-secret")];
    let mut bed = TestBed::start_with(|cfg| {
        cfg.pool_size(5)
            .query_wait_timeout("30s")
            .set("databases.app.max_db_connections", 3)
            .set("auth_query.user", roles::SUPERUSER.0)
    })?;
    for (role, password) in ROLES {
        bed.pg().primary().admin_sql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
        )?;
    }
    let clients: Vec<_> = (0..12)
        .map(|i| {
            let (role, password) = ROLES[i % 2];
            (role, password, "app")
        })
        .collect();
    twelve_clients_under_a_cap_of_three(
        &mut bed,
        &clients,
        &[ROLES[0].0, ROLES[1].0],
        &["app"],
        "max_db_connections",
    )
    .await
}
