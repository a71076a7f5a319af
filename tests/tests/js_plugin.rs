//! The example router written in JavaScript (examples/js-router, a component built by
//! componentize-js, a whole SpiderMonkey inside) deciding where real clients' work runs,
//! against a primary and two streaming replicas: where each statement ran is read from the
//! rows (`inet_server_port()`, `pg_is_in_recovery()`), not from the proxy's counters. The
//! test skips, saying so, when the component is not built, unless SWITCHYARD_REQUIRE_JS_PLUGIN
//! is set (scripts/test builds it and sets the variable) or SWITCHYARD_NO_SKIP is (`.ci/run`).
//!
//! It also prints what the plugin costs (load time, instances, p50 per call in
//! `SHOW PLUGINS`), beside the bundled Rust router measured the same way, for docs/plugins.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::client::connect;
use switchyard_tests::plugin::{
    check_config, component, cost, count, example_component, policy_row, with_component,
};
use switchyard_tests::{expect_sqlstate, skip_if_direct, ClusterOptions, PgResultExt, TestBed};
use tokio_postgres::Client;

const VERSION_TAG: &str = "js-test";
/// Reads of this application go to node 2 (the second replica), as the plugin's setting says.
const PINNED_APP: &str = "reporting";
/// Writes of this application are refused by the plugin with 25006.
const READ_ONLY_APP: &str = "dashboard";
/// Reads each client makes in the routing checks.
const READS: u32 = 50;

/// A primary and two replicas probed every 100 ms, `read_routing = "replicas"` for `app`
/// (with `pg_is_in_recovery()` counted as a read), and
/// `path` as plugin `policy` serving the `router` hook with `settings`.
fn bed(path: &Path, settings: &[(&str, &str)]) -> Result<TestBed> {
    TestBed::start_full(
        ClusterOptions {
            replicas: 2,
            ..Default::default()
        },
        |cfg, _| {
            let cfg = cfg
                .mode("transaction")
                .with_admin()
                .set("clusters.main.probe_user", "postgres")
                .set("clusters.main.probe_interval", "100ms")
                .set("databases.app.read_routing", "replicas")
                // Volatile in pg_proc, so it would keep a read on the primary.
                .set(
                    "databases.app.read_only_functions",
                    toml::Value::Array(vec!["pg_is_in_recovery".into()]),
                );
            Ok(with_component(cfg, "policy", path, "router", settings))
        },
    )
}

/// A client of `app` with `application_name`.
async fn client(bed: &TestBed, application: &str) -> Result<Client> {
    let mut cfg = bed.endpoint().config("app", "app", "app");
    cfg.application_name(application);
    connect(&cfg)
        .await
        .map_err(|e| anyhow::anyhow!(switchyard_tests::describe_error(&e)))
        .with_context(|| format!("connecting as {application}"))
}

/// Where `sql` ran: (`inet_server_port()`, `pg_is_in_recovery()`), its first two columns.
async fn ran_on(client: &Client, sql: &str) -> Result<(u16, bool)> {
    let row = client.query_one(sql, &[]).await.ctx(sql)?;
    Ok((u16::try_from(row.get::<_, i32>(0))?, row.get(1)))
}

const WHERE: &str = "SELECT inet_server_port(), pg_is_in_recovery()";

/// Reads [`WHERE`] until it runs on a replica (the probes confirmed the replicas), for at
/// most 10 s.
async fn until_on_a_replica(client: &Client) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ran_on(client, WHERE).await?.1 {
        ensure!(Instant::now() < deadline, "no read ran on a replica within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// [`READS`] reads of [`WHERE`]: how many ran on each port, and whether every one ran on a
/// server in recovery.
async fn reads(client: &Client) -> Result<(BTreeMap<u16, u32>, bool)> {
    let mut ports = BTreeMap::new();
    let mut all_in_recovery = true;
    for _ in 0..READS {
        let (port, in_recovery) = ran_on(client, WHERE).await?;
        *ports.entry(port).or_default() += 1;
        all_in_recovery &= in_recovery;
    }
    Ok((ports, all_in_recovery))
}

/// The JavaScript router, loaded by the proxy, decides where real clients' work runs:
/// `check-config` loads it (and `init` refuses an unknown setting with the plugin's own
/// message); then, with `read_routing = "replicas"`, all 50 reads of the application it pins
/// to node 2 run on the second replica's port and in recovery; all 50 reads of another
/// application run on the replicas (in recovery) and its INSERT runs on the primary (not in
/// recovery); the read-only application's INSERT is refused with the plugin's 25006 and its
/// message, after which its session still reads. `SHOW PLUGINS` shows the plugin's version
/// with its tag, 0 failures, at least one call per routed statement, and its per-decision
/// counters (`route.node`, `route.any-replica`, `route.primary`, `route.reject`) at least
/// the statements the test routed each way. Load time, instances and p50 are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_router_routes_reads_pins_an_application_and_refuses_writes() -> Result<()> {
    skip_if_direct!();
    let Some(path) = example_component("js-router", "js-router.wasm", "SWITCHYARD_REQUIRE_JS_PLUGIN")? else {
        return Ok(());
    };
    eprintln!(
        "component: {} ({} bytes)",
        path.display(),
        std::fs::metadata(&path)?.len()
    );
    let started = Instant::now();
    let (ok, stderr) = check_config(
        &path,
        "router",
        &format!("node_applications = \"{PINNED_APP}=2\"\nversion_tag = \"{VERSION_TAG}\""),
    )?;
    ensure!(ok, "check-config refused the JavaScript plugin: {stderr}");
    eprintln!(
        "check-config loaded the JavaScript plugin in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (ok, stderr) = check_config(&path, "router", "mode = \"session\"")?;
    ensure!(
        !ok && stderr.contains(
            "unknown setting 'mode' (known settings: node_applications, read_only_applications, version_tag)"
        ),
        "check-config with an unknown setting: expected the plugin's refusal, got: {stderr}"
    );

    let mut bed = bed(
        &path,
        &[
            ("node_applications", &format!("{PINNED_APP}=2")),
            ("read_only_applications", READ_ONLY_APP),
            ("version_tag", VERSION_TAG),
        ],
    )?;
    let pg = bed.pg();
    let primary = pg.primary().port();
    let replicas: Vec<u16> = pg.replicas().iter().map(|r| r.port()).collect();
    let setup = bed.endpoint().connect_app().await?;
    setup
        .batch_execute("CREATE TABLE js_router_t (id int)")
        .await
        .ctx("CREATE TABLE")?;

    let web = client(&bed, "web").await?;
    until_on_a_replica(&web).await?;
    let (web_reads, web_in_recovery) = reads(&web).await?;
    println!("web: {READS} reads ran on {web_reads:?} (primary {primary}, replicas {replicas:?})");
    ensure!(
        web_in_recovery && web_reads.keys().all(|p| replicas.contains(p)),
        "the plugin answers any-replica for reads: every read of `web` should run on a \
         replica {replicas:?}, in recovery; they ran on {web_reads:?}"
    );
    let (port, in_recovery) = ran_on(
        &web,
        "INSERT INTO js_router_t VALUES (1) RETURNING inet_server_port(), pg_is_in_recovery()",
    )
    .await?;
    ensure!(
        port == primary && !in_recovery,
        "web's INSERT should run on the primary ({primary}), ran on {port} (in recovery: {in_recovery})"
    );

    let pinned = client(&bed, PINNED_APP).await?;
    let (pinned_reads, pinned_in_recovery) = reads(&pinned).await?;
    println!("{PINNED_APP}: {READS} reads ran on {pinned_reads:?}");
    ensure!(
        pinned_in_recovery && pinned_reads.keys().eq([&replicas[1]]),
        "the plugin sends {PINNED_APP}'s reads to node 2: all should run on {}, in recovery; \
         they ran on {pinned_reads:?}",
        replicas[1]
    );

    let read_only = client(&bed, READ_ONLY_APP).await?;
    let refused = expect_sqlstate(
        read_only.execute("INSERT INTO js_router_t VALUES (2)", &[]).await,
        &["25006"],
        "an INSERT by the read-only application",
    )?;
    println!(
        "{READ_ONLY_APP}'s INSERT: {} {}",
        refused.code().code(),
        refused.message()
    );
    ensure!(
        refused
            .message()
            .contains(&format!("application \"{READ_ONLY_APP}\" is read-only")),
        "the refusal should carry the plugin's message, got {:?}",
        refused.message()
    );
    let (port, in_recovery) = ran_on(&read_only, WHERE).await?;
    ensure!(
        in_recovery && replicas.contains(&port),
        "after the refusal {READ_ONLY_APP}'s read should run on a replica, ran on {port}"
    );
    // On the primary itself: a read through the proxy could run on a replica not yet there.
    let rows: i64 = bed
        .direct()
        .connect_app()
        .await?
        .query_one("SELECT count(*) FROM js_router_t", &[])
        .await
        .ctx("count")?
        .get(0);
    ensure!(rows == 1, "expected only web's row in js_router_t, found {rows}");

    let plugin = policy_row(&bed.endpoint()).await?;
    let version = plugin.get("version").map_or("", String::as_str);
    ensure!(
        version == format!("0.1.0-js+{VERSION_TAG}"),
        "SHOW PLUGINS: expected version 0.1.0-js+{VERSION_TAG}, got {version:?}"
    );
    let (calls, failures) = (count(&plugin, "calls")?, count(&plugin, "failures")?);
    ensure!(
        failures == 0,
        "the JavaScript plugin failed {failures} of {calls} calls"
    );
    // Routed here: 2 × READS + 1 reads (at least; until_on_a_replica made more), 1 INSERT,
    // the refused INSERT, and the CREATE TABLE.
    ensure!(
        calls >= 2 * u64::from(READS) + 4,
        "{calls} router calls for at least {} routed statements: the plugin is not deciding",
        2 * READS + 4
    );
    let counters = plugin.get("counters").map_or("", String::as_str);
    let counter = |name: &str| -> Result<u64> {
        counters
            .split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("SHOW PLUGINS counters {counters:?} have no {name}"))?
            .parse()
            .with_context(|| format!("counter {name} in {counters:?}"))
    };
    for (name, least) in [
        ("route.node", u64::from(READS)),
        ("route.any-replica", u64::from(READS) + 1),
        ("route.primary", 2),
        ("route.reject", 1),
    ] {
        let n = counter(name)?;
        ensure!(
            n >= least,
            "counter {name} = {n}, expected at least {least} ({counters})"
        );
    }
    println!("SHOW PLUGINS: version {version}, counters {counters}");
    println!("plugin cost (JavaScript router): {}", cost(&plugin)?);
    bed.ensure_proxy_alive()
}

/// The bundled Rust router under the same load as the JavaScript one (the same bed, 100
/// reads by two applications, a CREATE TABLE and an INSERT), for the cost comparison in docs/plugins.md:
/// every read ran on a replica, the write on the primary, and `SHOW PLUGINS` shows 0
/// failures and at least one call per routed statement. Load time, instances and p50 are
/// printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_router_under_the_same_load_for_comparison() -> Result<()> {
    skip_if_direct!();
    let mut bed = bed(&component("router")?, &[])?;
    let pg = bed.pg();
    let primary = pg.primary().port();
    let web = client(&bed, "web").await?;
    until_on_a_replica(&web).await?;
    for app in [&web, &client(&bed, PINNED_APP).await?] {
        let (ports, in_recovery) = reads(app).await?;
        if !in_recovery {
            bail!("a read ran on the primary ({primary}): {ports:?}");
        }
    }
    web.batch_execute("CREATE TABLE rust_router_t (id int)")
        .await
        .ctx("CREATE TABLE")?;
    let (port, _) = ran_on(
        &web,
        "INSERT INTO rust_router_t VALUES (1) RETURNING inet_server_port(), pg_is_in_recovery()",
    )
    .await?;
    ensure!(
        port == primary,
        "the INSERT ran on {port}, not the primary {primary}"
    );
    let plugin = policy_row(&bed.endpoint()).await?;
    let (calls, failures) = (count(&plugin, "calls")?, count(&plugin, "failures")?);
    ensure!(
        failures == 0 && calls > 2 * u64::from(READS),
        "the Rust router: {calls} calls, {failures} failures"
    );
    println!("plugin cost (Rust router): {}", cost(&plugin)?);
    bed.ensure_proxy_alive()
}
