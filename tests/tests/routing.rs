//! Read routing against a real primary and two streaming replicas: where each kind of work
//! runs is read from the rows themselves (`inet_server_port()` of the server that ran the
//! statement), not from the proxy's counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use switchyard_tests::client::connect;
use switchyard_tests::{expect_sqlstate, skip_if_direct, ClusterOptions, PgResultExt, ProxyConfig, TestBed};
use tokio_postgres::Client;

/// A primary, two replicas, and the proxy probing them every 100 ms, with `configure`
/// applied on top.
fn bed(configure: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Result<TestBed> {
    bed_with(ClusterOptions::default(), configure)
}

/// [`bed`] with the servers' `options` (two replicas whatever they say).
fn bed_with(options: ClusterOptions, configure: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Result<TestBed> {
    TestBed::start_full(
        ClusterOptions {
            replicas: 2,
            ..options
        },
        |cfg, _| {
            Ok(configure(
                cfg.mode("transaction")
                    .with_admin()
                    .set("clusters.main.probe_user", "postgres")
                    .set("clusters.main.probe_interval", "100ms"),
            ))
        },
    )
}

/// The port of the server that ran `sql` (which must return `inet_server_port()` as its
/// first column).
async fn port_of(client: &Client, sql: &str) -> Result<u16> {
    let row = client.query_one(sql, &[]).await.ctx(sql)?;
    let port: i32 = row.get(0);
    Ok(u16::try_from(port)?)
}

/// The ports of the bed's primary and of its replicas.
fn ports(bed: &TestBed) -> (u16, Vec<u16>) {
    let pg = bed.pg();
    (
        pg.primary().port(),
        pg.replicas().iter().map(|r| r.port()).collect(),
    )
}

/// A client of database `app` whose reads run on one of `replicas` now: see
/// [`until_on_a_replica`].
async fn app_on_a_replica(bed: &TestBed, replicas: &[u16]) -> Result<Client> {
    let client = bed.endpoint().connect_app().await?;
    until_on_a_replica(&client, replicas).await?;
    Ok(client)
}

/// Reads `SELECT inet_server_port()` until it runs on one of `replicas` (the probes have
/// confirmed them and measured their lag), for at most 10 s.
async fn until_on_a_replica(client: &Client, replicas: &[u16]) -> Result<()> {
    let sql = "SELECT inet_server_port()";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if replicas.contains(&port_of(client, sql).await?) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("`{sql}` did not run on a replica ({replicas:?}) within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a [`reader`] saw: when each read started and the port of the server that ran it,
/// and the errors.
struct Reads {
    ran: Vec<(Instant, u16)>,
    errors: Vec<String>,
}

impl Reads {
    /// Reads per port, of those that started in `when`.
    fn per_port(&self, when: impl Fn(Instant) -> bool) -> BTreeMap<u16, u32> {
        let mut ports = BTreeMap::new();
        for (_, port) in self.ran.iter().filter(|(t, _)| when(*t)) {
            *ports.entry(*port).or_default() += 1;
        }
        ports
    }
}

/// A client reading `SELECT inet_server_port()` in a loop until `stop`.
fn reader(client: Client, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Reads> {
    tokio::spawn(async move {
        let mut reads = Reads {
            ran: Vec::new(),
            errors: Vec::new(),
        };
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            match client.query_one("SELECT inet_server_port()", &[]).await {
                Ok(row) => reads.ran.push((started, row.get::<_, i32>(0) as u16)),
                Err(e) => reads.errors.push(switchyard_tests::describe_error(&e)),
            }
        }
        reads
    })
}

/// With `read_routing = "replicas"`: 200 autocommit reads from one client all run on a
/// replica, both replicas serve some; every kind of write (INSERT, UPDATE ... RETURNING,
/// `FOR UPDATE`, `nextval`, a writing CTE, a multi-statement query with one write, a
/// volatile user function, a read-write transaction) runs on the primary.
#[tokio::test]
async fn reads_spread_over_both_replicas_and_writes_stay_on_the_primary() -> Result<()> {
    skip_if_direct!();
    let bed = bed(|cfg| cfg.set("databases.app.read_routing", "replicas"))?;
    let direct = bed.direct().connect_app().await?;
    direct
        .batch_execute(
            "CREATE TABLE routed (id serial PRIMARY KEY, v int);
             INSERT INTO routed (v) VALUES (1);
             CREATE SEQUENCE routed_seq;
             CREATE FUNCTION bump() RETURNS int LANGUAGE sql VOLATILE AS 'UPDATE routed SET v = v + 1 RETURNING v';",
        )
        .await
        .ctx("setup")?;
    bed.pg().wait_replica_caught_up()?;
    let (primary, replicas) = ports(&bed);
    let client = app_on_a_replica(&bed, &replicas).await?;

    let mut reads: BTreeMap<u16, u32> = BTreeMap::new();
    for _ in 0..200 {
        *reads
            .entry(port_of(&client, "SELECT inet_server_port(), count(*) FROM routed").await?)
            .or_default() += 1;
    }
    println!("200 reads ran on (port: count) {reads:?}; primary {primary}, replicas {replicas:?}");
    every_read_on_a_replica(&reads, primary, &replicas)?;

    for write in [
        "INSERT INTO routed (v) VALUES (2) RETURNING inet_server_port()",
        "UPDATE routed SET v = v WHERE id = 1 RETURNING inet_server_port()",
        "SELECT inet_server_port() FROM routed WHERE id = 1 FOR UPDATE",
        "SELECT inet_server_port(), nextval('routed_seq')",
        "WITH w AS (INSERT INTO routed (v) VALUES (3) RETURNING v) SELECT inet_server_port() FROM w",
        "SELECT inet_server_port(), bump()",
    ] {
        let port = port_of(&client, write).await?;
        ensure!(
            port == primary,
            "`{write}` ran on port {port}, not the primary {primary}"
        );
    }
    let messages = client
        .simple_query("SELECT inet_server_port(); INSERT INTO routed (v) VALUES (4)")
        .await
        .ctx("multi-statement")?;
    let port = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default();
    ensure!(
        port == primary.to_string(),
        "a query of a read and a write ran on {port}, not the primary {primary}"
    );
    client.batch_execute("BEGIN").await.ctx("BEGIN")?;
    let port = port_of(&client, "SELECT inet_server_port()").await?;
    client.batch_execute("COMMIT").await.ctx("COMMIT")?;
    ensure!(
        port == primary,
        "a read in a read-write transaction ran on {port}"
    );
    Ok(())
}

/// `BEGIN READ ONLY` opens a transaction a replica may run: all its statements run on one
/// replica; a database with `read_routing = "off"` (the default) runs everything on the
/// primary, unless the session asked for replicas with `-c switchyard.route=replica`, a
/// setting no server ever sees.
#[tokio::test]
async fn read_only_transactions_and_the_session_hint_route_to_replicas() -> Result<()> {
    skip_if_direct!();
    let bed = bed(|cfg| cfg.set("databases.postgres.read_routing", "replicas"))?;
    let (primary, replicas) = ports(&bed);
    let ep = bed.endpoint();

    let routed = ep.connect("app", "app", "postgres").await?;
    until_on_a_replica(&routed, &replicas).await?;
    routed
        .batch_execute("BEGIN READ ONLY")
        .await
        .ctx("BEGIN READ ONLY")?;
    let first = port_of(&routed, "SELECT inet_server_port()").await?;
    let second = port_of(&routed, "SELECT inet_server_port()").await?;
    routed.batch_execute("COMMIT").await.ctx("COMMIT")?;
    ensure!(
        replicas.contains(&first) && first == second,
        "a read-only transaction ran on {first} then {second} (replicas {replicas:?})"
    );

    let plain = ep.connect_app().await?;
    for _ in 0..20 {
        let port = port_of(&plain, "SELECT inet_server_port()").await?;
        ensure!(
            port == primary,
            "database app routes nothing, yet a read ran on {port}"
        );
    }

    let mut cfg = ep.config("app", "app", "app");
    cfg.options("-c switchyard.route=replica");
    let hinted = connect(&cfg).await?;
    until_on_a_replica(&hinted, &replicas).await?;
    let seen = hinted
        .simple_query("SELECT current_setting('switchyard.route', true)")
        .await
        .ctx("current_setting")?;
    let value = seen.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
        _ => None,
    });
    ensure!(
        value == Some(None),
        "the server saw switchyard.route = {value:?}; the proxy must consume it"
    );
    Ok(())
}

/// A lone `BEGIN` message is held back until the block's first statement: a
/// `SET TRANSACTION READ ONLY` sent as that next message lets a replica run the block (its
/// reads run on one replica, which reports `transaction_read_only = on`); a plain block runs
/// on the primary and its INSERT is committed there. The `BEGIN` really reaches the server
/// with the first statement: after an error in the block the next statement gets 25P02, and
/// `DISCARD ALL` in a block gets the server's 25001; an empty `BEGIN`/`COMMIT` works.
#[tokio::test]
async fn a_lone_begin_lets_set_transaction_read_only_route_the_block() -> Result<()> {
    skip_if_direct!();
    let bed = bed(|cfg| cfg.set("databases.app.read_routing", "replicas"))?;
    let (primary, replicas) = ports(&bed);
    bed.pg().primary().admin_sql(
        "app",
        "CREATE TABLE lone_begin (n int); GRANT ALL ON lone_begin TO app",
    )?;
    let client = app_on_a_replica(&bed, &replicas).await?;

    let step = |sql: &'static str| {
        let client = &client;
        async move { client.batch_execute(sql).await.ctx(sql) }
    };
    step("BEGIN").await?;
    step("SET TRANSACTION READ ONLY").await?;
    let first = port_of(&client, "SELECT inet_server_port()").await?;
    let read_only: String = client
        .query_one("SHOW transaction_read_only", &[])
        .await
        .ctx("SHOW transaction_read_only")?
        .get(0);
    let second = port_of(&client, "SELECT inet_server_port()").await?;
    step("COMMIT").await?;
    ensure!(
        replicas.contains(&first) && first == second && read_only == "on",
        "BEGIN, SET TRANSACTION READ ONLY as two messages ran on {first} then {second} \
         (replicas {replicas:?}) with transaction_read_only = {read_only}"
    );

    step("BEGIN").await?;
    let port = port_of(&client, "SELECT inet_server_port()").await?;
    client
        .execute("INSERT INTO lone_begin VALUES (1)", &[])
        .await
        .ctx("INSERT")?;
    step("COMMIT").await?;
    ensure!(
        port == primary,
        "a plain BEGIN block ran on {port}, not the primary {primary}"
    );
    let rows = bed
        .pg()
        .primary()
        .admin_sql("app", "SELECT count(*) FROM lone_begin")?;
    ensure!(
        rows.trim() == "1",
        "the block's INSERT left {} rows on the primary",
        rows.trim()
    );

    step("BEGIN").await?;
    step("COMMIT").await?;

    step("BEGIN").await?;
    expect_sqlstate(
        client.batch_execute("SELECT 1/0").await,
        &["22012"],
        "1/0 in a block",
    )?;
    expect_sqlstate(
        client.batch_execute("SELECT 1").await,
        &["25P02"],
        "a statement after an error in the block",
    )?;
    step("ROLLBACK").await?;

    step("BEGIN").await?;
    expect_sqlstate(
        client.batch_execute("DISCARD ALL").await,
        &["25001"],
        "DISCARD ALL in a block",
    )?;
    step("ROLLBACK").await?;
    ensure!(port_of(&client, "SELECT inet_server_port()").await? > 0);
    Ok(())
}

/// An unknown value of `switchyard.route` is refused at login with 22023 and a message
/// naming the setting.
#[tokio::test]
async fn an_invalid_route_hint_is_refused_at_login() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start()?;
    let mut cfg = bed.endpoint().config("app", "app", "app");
    cfg.options("-c switchyard.route=sideways");
    let err = expect_sqlstate(connect(&cfg).await, &["22023"], "login with a bad hint")?;
    ensure!(
        err.message().contains("switchyard.route"),
        "message: {}",
        err.message()
    );
    Ok(())
}

/// What [`reads_after_writes`] saw: reads per port, the reads that missed their row, and
/// each read's latency (sorted).
struct ReadsAfterWrites {
    ran: BTreeMap<u16, u32>,
    stale: u32,
    latencies: Vec<Duration>,
}

impl ReadsAfterWrites {
    /// Reads that ran on one of `ports`.
    fn on(&self, ports: &[u16]) -> u32 {
        ports.iter().filter_map(|p| self.ran.get(p)).sum()
    }
}

/// Creates table `table (id int PRIMARY KEY)` on the primary, and returns once both
/// replicas have it.
async fn replicated_table(bed: &TestBed, table: &str) -> Result<()> {
    bed.direct()
        .connect_app()
        .await?
        .batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
        .await
        .ctx("setup")?;
    bed.pg().wait_replica_caught_up()
}

/// `n` times: `client` inserts a row into `table` (see [`replicated_table`]) and at once
/// reads it back, noting where the read ran, whether it saw the row, and how long it took.
async fn reads_after_writes(client: &Client, table: &str, n: u32) -> Result<ReadsAfterWrites> {
    let mut seen = ReadsAfterWrites {
        ran: BTreeMap::new(),
        stale: 0,
        latencies: Vec::new(),
    };
    for id in 0..n {
        client
            .execute(&format!("INSERT INTO {table} VALUES ({id})"), &[])
            .await
            .ctx("insert")?;
        let started = Instant::now();
        let row = client
            .query_one(
                &format!("SELECT inet_server_port(), count(*) FROM {table} WHERE id = {id}"),
                &[],
            )
            .await
            .ctx("read back")?;
        seen.latencies.push(started.elapsed());
        let (port, count): (i32, i64) = (row.get(0), row.get(1));
        *seen.ran.entry(u16::try_from(port)?).or_default() += 1;
        if count != 1 {
            seen.stale += 1;
        }
    }
    seen.latencies.sort();
    Ok(seen)
}

/// Read-your-writes (the default, per session) with one replica's replay paused: a client
/// that writes a row and reads it back 300 times through the proxy never misses it, and
/// after replay resumes, its reads run on the replicas again.
#[tokio::test]
async fn a_session_reads_its_own_writes_while_a_replica_is_paused() -> Result<()> {
    skip_if_direct!();
    let bed = bed(|cfg| cfg.set("databases.app.read_routing", "replicas"))?;
    replicated_table(&bed, "ryw").await?;
    let (_, replicas) = ports(&bed);
    let client = app_on_a_replica(&bed, &replicas).await?;
    bed.pg().replicas()[0].admin_sql("postgres", "SELECT pg_wal_replay_pause()")?;

    let seen = reads_after_writes(&client, "ryw", 300).await?;
    let ran = &seen.ran;
    println!(
        "reads after writes ran on (port: count) {ran:?}; paused replica {}",
        replicas[0]
    );
    ensure!(
        seen.stale == 0,
        "{} of 300 reads did not see the write just made",
        seen.stale
    );
    ensure!(
        !ran.contains_key(&replicas[0]),
        "reads ran on the paused replica {}: {ran:?}",
        replicas[0]
    );

    bed.pg().replicas()[0].admin_sql("postgres", "SELECT pg_wal_replay_resume()")?;
    bed.pg().wait_replica_caught_up()?;
    until_on_a_replica(&client, &replicas[..1]).await?;
    Ok(())
}

/// The bundled router with `read_your_writes_wait_ms = 2000` (probes every 2 s, so only
/// the probes a waiting read wakes bring news in time; `synchronous_commit = on`, as in
/// production, so a commit streams to the replicas at once rather than at the WAL writer's
/// next round, 200 ms later): a client that writes a row and reads
/// it back at once, 200 times, always sees its row, and more than half of those reads run on
/// a replica after waiting for it to replay the write (with no wait budget every one of them
/// would run on the primary: the write's position is not known yet when the read comes).
/// SHOW PLUGINS' counters show the waits; the reads' median and longest latency are printed.
#[tokio::test]
async fn the_router_plugin_waits_for_a_replica_to_replay_the_sessions_write() -> Result<()> {
    skip_if_direct!();
    use switchyard_tests::plugin::{component, with_component};
    let servers = ClusterOptions::default().setting("synchronous_commit", "on");
    let bed = bed_with(servers, |cfg| {
        let cfg = cfg
            .set("databases.app.read_routing", "replicas")
            .set("clusters.main.probe_interval", "2s");
        with_component(
            cfg,
            "router",
            &component("router").expect("router.wasm"),
            "router",
            &[("read_your_writes_wait_ms", "2000")],
        )
    })?;
    replicated_table(&bed, "ryw_wait").await?;
    let (_, replicas) = ports(&bed);
    let client = app_on_a_replica(&bed, &replicas).await?;

    let seen = reads_after_writes(&client, "ryw_wait", 200).await?;
    let (stale, on_replicas, latencies) = (seen.stale, seen.on(&replicas), &seen.latencies);
    let rows = switchyard_tests::admin::admin_rows(&bed.endpoint(), "SHOW PLUGINS").await?;
    let counters = rows
        .iter()
        .find(|r| r["name"] == "router")
        .map(|r| r["counters"].clone())
        .unwrap_or_default();
    println!(
        "200 reads right after a write: {on_replicas} on a replica; latency median {:?}, longest {:?}; router counters: {counters}",
        latencies[100], latencies[199]
    );
    ensure!(stale == 0, "{stale} of 200 reads did not see the write just made");
    ensure!(
        on_replicas > 100,
        "only {on_replicas} of 200 reads after a write ran on a replica; the router's wait does not work (counters: {counters})"
    );
    Ok(())
}

/// A function that writes but is declared `STABLE` (it takes a sequence's next value) fools
/// the classification: the read it is called in goes to a replica, which refuses it with
/// 25006. The client gets its row from the primary (where the sequence moved once), not
/// the 25006.
#[tokio::test]
async fn a_write_declared_stable_runs_on_the_primary_after_the_replica_refuses_it() -> Result<()> {
    skip_if_direct!();
    let bed = bed(|cfg| cfg.set("databases.app.read_routing", "replicas"))?;
    let direct = bed.direct().connect_app().await?;
    direct
        .batch_execute(
            "CREATE SEQUENCE sneaky;
             CREATE FUNCTION sneaky_write() RETURNS bigint LANGUAGE sql STABLE
               AS 'SELECT nextval(''sneaky'')';",
        )
        .await
        .ctx("setup")?;
    bed.pg().wait_replica_caught_up()?;
    let (primary, replicas) = ports(&bed);
    let client = app_on_a_replica(&bed, &replicas).await?;

    let port = port_of(&client, "SELECT inet_server_port(), sneaky_write()").await?;
    ensure!(
        port == primary,
        "the misrouted write ran on {port}, not the primary {primary}"
    );
    let row = direct
        .query_one("SELECT last_value, is_called FROM sneaky", &[])
        .await
        .ctx("sequence")?;
    let (last, called): (i64, bool) = (row.get(0), row.get(1));
    ensure!(
        called && last == 1,
        "the sequence moved to {last} (called {called}) on the primary: the write did not run there exactly once"
    );
    Ok(())
}

/// A replica stopped (fast shutdown) under a read load of 4 clients: no client sees an
/// error; reads go on on the other replica; started again, it serves reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_under_read_load_costs_no_client_an_error() -> Result<()> {
    skip_if_direct!();
    let mut bed = bed(|cfg| cfg.set("databases.app.read_routing", "replicas"))?;
    let (_, replicas) = ports(&bed);
    let ep = bed.endpoint();
    let probe = ep.connect_app().await?;
    until_on_a_replica(&probe, &replicas).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(reader(ep.connect_app().await?, stop.clone()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped_at = Instant::now();
    tokio::task::block_in_place(|| bed.pg_mut().replica_mut(0).stop("fast"))?;
    println!("replica {} stopped in {:?}", replicas[0], stopped_at.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| bed.pg_mut().replica_mut(0).start())?;
    until_on_a_replica(&probe, &replicas[..1]).await?;
    stop.store(true, Ordering::Relaxed);
    for (i, c) in clients.into_iter().enumerate() {
        let reads = c.await?;
        let (ran, errors) = (reads.per_port(|_| true), &reads.errors);
        println!("client {i}: reads ran on {ran:?}; errors {errors:?}");
        ensure!(errors.is_empty(), "client {i} saw errors: {errors:?}");
        ensure!(
            ran.get(&replicas[1]).copied().unwrap_or(0) > 0,
            "client {i} never read on the replica that stayed up: {ran:?}"
        );
    }
    Ok(())
}

/// A custom router built in the suite (`plugins/testing/app-router`: the reads of
/// application `reporting` go to node 2, the second replica; everything else to the primary)
/// replaces the bundled router by hot reload (SIGHUP) while two clients read in a loop, one
/// as `reporting`: no client sees an error, and every read that starts after `SHOW PLUGINS`
/// shows the new router runs where it says (reporting's on node 2's port, the other's on
/// the primary's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_router_swapped_in_under_load_routes_as_it_says() -> Result<()> {
    skip_if_direct!();
    use switchyard_tests::plugin::{component, with_component};
    let mut base = None;
    let mut bed = bed(|cfg| {
        let cfg = cfg.set("databases.app.read_routing", "replicas");
        base = Some(cfg.clone());
        with_component(
            cfg,
            "router",
            &component("router").expect("router.wasm"),
            "router",
            &[],
        )
    })?;
    let base = base.expect("configured");
    let (primary, replicas) = ports(&bed);
    let ep = bed.endpoint();
    let probe = ep.connect_app().await?;
    until_on_a_replica(&probe, &replicas).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for app in ["reporting", "web"] {
        let mut cfg = ep.config("app", "app", "app");
        cfg.application_name(app);
        readers.push(reader(connect(&cfg).await?, stop.clone()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let custom = with_component(
        base,
        "router",
        &component("testing-app-router")?,
        "router",
        &[
            ("application", "reporting"),
            ("node", "2"),
            ("version_tag", "custom"),
        ],
    );
    bed.proxy().expect("a proxy").reload(custom)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let rows = switchyard_tests::admin::admin_rows(&ep, "SHOW PLUGINS").await?;
        if rows
            .iter()
            .any(|r| r["name"] == "router" && r["version"].ends_with("+custom"))
        {
            break Instant::now();
        }
        ensure!(
            Instant::now() < deadline,
            "the custom router not loaded within 20 s: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let expected = [("reporting", replicas[1]), ("web", primary)];
    for (task, (app, port)) in readers.into_iter().zip(expected) {
        let reads = task.await?;
        ensure!(reads.errors.is_empty(), "{app} saw errors: {:?}", reads.errors);
        let before = reads.per_port(|t| t < shown);
        let after = reads.per_port(|t| t >= shown);
        println!("{app}: before the swap reads ran on {before:?}; after it on {after:?}");
        ensure!(!after.is_empty(), "{app} read nothing after the swap");
        ensure!(
            after.keys().all(|p| *p == port),
            "after the swap {app}'s reads should all run on port {port}: {after:?}"
        );
    }
    Ok(())
}

/// Read-your-writes with real drivers while one replica's replay is paused: psycopg 3 and
/// pgjdbc clients (2 connections each, autocommit) write a row and at once read it back,
/// 1,000 times per connection: 0 stale reads and 0 errors, and no read on the paused
/// replica. The ports the reads ran on are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_read_their_own_writes_while_a_replica_is_paused() -> Result<()> {
    skip_if_direct!();
    use switchyard_tests::tools::Driver;
    let bed = bed(|cfg| cfg.set("databases.app.read_routing", "replicas"))?;
    let (_, replicas) = ports(&bed);
    // Once the probes let reads onto the replicas.
    app_on_a_replica(&bed, &replicas).await?;
    bed.pg().replicas()[0].admin_sql("postgres", "SELECT pg_wal_replay_pause()")?;
    let target = bed.endpoint().client_target("app", "app", "app");
    for driver in [Driver::Psycopg, Driver::Jdbc] {
        let t = target.clone();
        let report = tokio::task::spawn_blocking(move || {
            driver.run_with(&t, 2, 1000, &["--read-your-writes", "true"])
        })
        .await??;
        let ports = report.ports();
        println!(
            "{driver:?}: {} ok, {} errors, reads per port {ports:?}",
            report.ok, report.errors
        );
        ensure!(
            report.errors == 0 && report.ok == 2000,
            "{driver:?}: {} ok, {} errors (stale reads count as errors):\n{}",
            report.ok,
            report.errors,
            report.output.stderr
        );
        ensure!(
            !ports.contains_key(&replicas[0]),
            "{driver:?} read on the paused replica {}: {ports:?}",
            replicas[0]
        );
    }
    Ok(())
}

/// A rolling restart of both replicas (fast stop, start, wait until it streams; one after
/// the other) under a mixed load: 4 clients writing and reading back their rows, and 2
/// read-only clients. No client sees an error, no acknowledged write is lost or read stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_the_replicas_costs_no_client_an_error() -> Result<()> {
    skip_if_direct!();
    use switchyard_tests::load::{Load, LoadOptions};
    let mut bed = bed(|cfg| cfg.set("databases.app.read_routing", "replicas"))?;
    let (_, replicas) = ports(&bed);
    let ep = bed.endpoint();
    let probe = ep.connect_app().await?;
    until_on_a_replica(&probe, &replicas).await?;
    let load = Load::start(LoadOptions::new(vec![ep.clone()], 4)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..2 {
        readers.push(reader(ep.connect_app().await?, stop.clone()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, port) in replicas.iter().enumerate() {
        let took = Instant::now();
        tokio::task::block_in_place(|| -> Result<()> {
            bed.pg_mut().replica_mut(i).stop("fast")?;
            bed.pg_mut().replica_mut(i).start()?;
            bed.pg().wait_streaming()
        })?;
        println!(
            "replica {port} restarted and streaming after {:?}",
            took.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let primary = bed.direct();
    let report = load.finish(&primary).await?;
    println!("{report}");
    for (i, r) in readers.into_iter().enumerate() {
        let reads = r.await?;
        println!(
            "read-only client {i}: reads per port {:?}",
            reads.per_port(|_| true)
        );
        ensure!(
            reads.errors.is_empty(),
            "read-only client {i} saw errors: {:?}",
            reads.errors
        );
    }
    ensure!(
        report.clean(),
        "the mixed load saw errors, or writes lost, doubled or read stale:\n{report}"
    );
    Ok(())
}

/// The session's transaction defaults route as the client set them: after
/// `SET default_transaction_isolation = serializable` its reads run on the primary (a hot
/// standby refuses serializable transactions: a replica would give an error), and after
/// `SET default_transaction_read_only = on` a plain `BEGIN` block runs on a replica.
#[tokio::test]
async fn session_transaction_defaults_route_as_set() -> Result<()> {
    skip_if_direct!();
    let bed = bed(|cfg| cfg.set("databases.app.read_routing", "replicas"))?;
    let (primary, replicas) = ports(&bed);
    let client = app_on_a_replica(&bed, &replicas).await?;

    client
        .batch_execute("SET default_transaction_isolation = serializable")
        .await
        .ctx("SET serializable")?;
    for _ in 0..10 {
        let port = port_of(&client, "SELECT inet_server_port()").await?;
        ensure!(port == primary, "a serializable session's read ran on {port}");
    }
    client
        .batch_execute("RESET default_transaction_isolation; SET default_transaction_read_only = on")
        .await
        .ctx("SET read only")?;
    // The SET ran on the primary, so read-your-writes keeps the session there until the
    // probes show a replica past it (milliseconds): a few tries.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        client.batch_execute("BEGIN").await.ctx("BEGIN")?;
        let port = port_of(&client, "SELECT inet_server_port()").await?;
        client.batch_execute("COMMIT").await.ctx("COMMIT")?;
        if replicas.contains(&port) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "a BEGIN in a read-only session still ran on {port}, not a replica {replicas:?}, after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `threading = "per-core"` with three workers, `read_routing = "replicas"` and a pool of
/// 2: once reads reach a replica, 12 clients at once run 40 autocommit reads each (`SELECT
/// inet_server_port()`), so read servers are taken across the workers' idle lists. Checks
/// 0 errors, that every read
/// ran on a replica and each replica served some, and that neither replica ever saw more
/// than 2 server connections of `app` at once (sampled every 5 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_reads_spread_over_replicas_never_over_the_pool_size() -> Result<()> {
    skip_if_direct!();
    const CLIENTS: usize = 12;
    const READS: usize = 40;
    const POOL: u32 = 2;
    let bed = bed(|cfg| {
        cfg.pool_size(POOL)
            .set("databases.app.read_routing", "replicas")
            .set("proxy.threading", "per-core")
            .set("proxy.workers", 3)
    })?;
    let (primary, replicas) = ports(&bed);
    // Once one client's reads run on a replica, the probes have seen both replicas.
    drop(app_on_a_replica(&bed, &replicas).await?);
    let mut peaks = Vec::new();
    for r in bed.pg().replicas() {
        let at = switchyard_tests::client::Endpoint::new(r.host(), r.port());
        peaks.push(switchyard_tests::peak::ServerPeak::start(&at, "app", "app").await?);
    }
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let client = bed.endpoint().connect_app().await?;
        tasks.push(tokio::spawn(async move {
            let mut ran: BTreeMap<u16, u32> = BTreeMap::new();
            let mut errors = Vec::new();
            for _ in 0..READS {
                match client.query_one("SELECT inet_server_port()", &[]).await {
                    Ok(row) => *ran.entry(row.get::<_, i32>(0) as u16).or_default() += 1,
                    Err(e) => errors.push(switchyard_tests::describe_error(&e)),
                }
            }
            (ran, errors)
        }));
    }
    let mut reads: BTreeMap<u16, u32> = BTreeMap::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (ran, errs) = t.await?;
        for (port, n) in ran {
            *reads.entry(port).or_default() += n;
        }
        errors.extend(errs);
    }
    let mut most = Vec::new();
    for peak in peaks {
        let peak = peak.finish().await?;
        most.push((peak.max, peak.samples));
    }
    println!(
        "{} reads ran on (port: count) {reads:?}; primary {primary}, replicas {replicas:?}; \
         most servers at once per replica (max, samples) {most:?}; {} errors",
        CLIENTS * READS,
        errors.len()
    );
    ensure!(errors.is_empty(), "errors: {:?}", &errors[..errors.len().min(5)]);
    every_read_on_a_replica(&reads, primary, &replicas)?;
    for ((max, _), r) in most.iter().zip(&replicas) {
        ensure!(
            *max <= i64::from(POOL),
            "replica {r} saw {max} servers of app at once, pool size {POOL}"
        );
    }
    Ok(())
}

/// `reads` (reads counted by the port that served them) ran on no primary port and on
/// every replica port at least once.
fn every_read_on_a_replica(reads: &BTreeMap<u16, u32>, primary: u16, replicas: &[u16]) -> Result<()> {
    ensure!(
        !reads.contains_key(&primary),
        "reads ran on the primary: {reads:?}"
    );
    for r in replicas {
        ensure!(
            reads.get(r).copied().unwrap_or(0) > 0,
            "replica {r} served no read: {reads:?}"
        );
    }
    Ok(())
}
