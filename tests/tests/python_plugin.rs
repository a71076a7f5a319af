//! The example pool-mode policy written in Python (examples/python-pool-mode, a component
//! built by componentize-py) on the data path: proof that the plugin interface is not tied to
//! Rust. The test skips, saying so, when the component is not built, unless
//! SWITCHYARD_REQUIRE_PYTHON_PLUGIN is set (scripts/test builds it and sets the variable) or
//! SWITCHYARD_NO_SKIP is (`.ci/run`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_tests::admin::admin_rows;
use switchyard_tests::client::connect;
use switchyard_tests::plugin::{
    check_config, cost, count, decisions, example_component, policy_row, with_plugin_path,
};
use switchyard_tests::{describe_error, skip_if_direct, Length, PgResultExt, QueryMode, TestBed};
use tokio_postgres::Client;

/// An application the plugin gives session pooling (its `session_apps` setting).
const SESSION_APP: &str = "sticky-reporter";
const VERSION_TAG: &str = "python-test";

async fn backend_pid(client: &Client) -> Result<i32> {
    Ok(client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ctx("SELECT pg_backend_pid()")?
        .get(0))
}

#[tokio::test]
async fn python_plugin_pools_transactions_and_pins_session_apps() -> Result<()> {
    skip_if_direct!();
    let Some(component) = example_component(
        "python-pool-mode",
        "python-pool-mode.wasm",
        "SWITCHYARD_REQUIRE_PYTHON_PLUGIN",
    )?
    else {
        return Ok(());
    };
    let started = Instant::now();
    let (ok, stderr) = check_config(
        &component,
        "pool-mode",
        &format!("session_apps = \"{SESSION_APP}\"\nversion_tag = \"{VERSION_TAG}\""),
    )?;
    ensure!(ok, "check-config refused the Python plugin: {stderr}");
    eprintln!(
        "check-config loaded the Python plugin in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // init refuses settings it does not know, and the operator reads why.
    let (ok, stderr) = check_config(&component, "pool-mode", "mode = \"session\"")?;
    ensure!(
        !ok && stderr.contains("unknown setting 'mode' (known settings: session_apps, version_tag)"),
        "check-config with an unknown setting: expected the plugin's refusal, got: {stderr}"
    );

    // Pool mode "transaction" in the configuration too: only the plugin can pin a session.
    let settings = [
        ("session_apps", &*format!("some-other-app, {SESSION_APP}")),
        ("version_tag", VERSION_TAG),
    ];
    let mut bed = TestBed::start_full(Default::default(), |cfg, _| {
        Ok(with_plugin_path(
            cfg.mode("transaction").pool_size(4),
            &component,
            &settings,
        ))
    })?;
    bed.direct().pgbench("app", "app", "app").init(1)?;

    let mut sticky_config = bed.endpoint().config("app", "app", "app");
    sticky_config.application_name(SESSION_APP);
    let sticky = connect(&sticky_config)
        .await
        .map_err(|e| anyhow::anyhow!(describe_error(&e)))
        .context("connecting the session-pooled client")?;
    let other = bed.endpoint().connect_app().await?;

    // pgbench's 8 clients share the pool while the session app and another client run
    // transactions between theirs.
    let pgbench = bed.endpoint().pgbench("app", "app", "app");
    let pgbench = pgbench.run_async(QueryMode::Extended, 8, 2, Length::Seconds(4));
    let probes = async {
        let first = backend_pid(&sticky).await?;
        let mut other_pids = BTreeSet::new();
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let pid = backend_pid(&sticky).await?;
            ensure!(
                pid == first,
                "session app {SESSION_APP:?} moved from server {first} to {pid} after {i} \
                 transactions: the plugin did not keep its server"
            );
            other_pids.insert(backend_pid(&other).await?);
        }
        anyhow::Ok(other_pids)
    };
    let (bench, other_pids) = tokio::join!(pgbench, probes);
    let (bench, other_pids) = (bench?, other_pids?);
    ensure!(
        bench.status_ok && bench.failed == 0 && bench.processed > 0,
        "{}",
        bench
            .output
            .describe("pgbench -c 8 through the Python plugin: expected 0 failed transactions")
    );
    eprintln!(
        "pgbench: {} transactions; a transaction-pooled client saw {} server(s)",
        bench.processed,
        other_pids.len()
    );

    // All clients idle now: the session app still holds its server, the other client none.
    let pools = admin_rows(&bed.endpoint(), "SHOW POOLS").await?;
    let in_use: Vec<&str> = pools
        .iter()
        .filter_map(|p| p.get("in_use").map(String::as_str))
        .collect();
    ensure!(
        in_use == ["1"],
        "SHOW POOLS: expected exactly the session app's server in use while every client is \
         idle, got in_use {in_use:?}"
    );

    let plugin = policy_row(&bed.endpoint()).await?;
    let version = plugin.get("version").map_or("", String::as_str);
    ensure!(
        version.contains("python") && version.ends_with(&format!("+{VERSION_TAG}")),
        "SHOW PLUGINS: expected the Python plugin's version with tag {VERSION_TAG:?}, got {version:?}"
    );
    let (calls, failures) = (count(&plugin, "calls")?, count(&plugin, "failures")?);
    ensure!(
        failures == 0,
        "the Python plugin failed {failures} of {calls} calls"
    );
    // Its decisions are reusable per session (they depend on the application name), so
    // each session calls it about once per input and the proxy answers the rest.
    let decided = decisions(&plugin)?;
    ensure!(
        calls > 0 && decided >= bench.processed,
        "{} transactions but only {decided} plugin decisions ({calls} calls): the plugin is not on the data path",
        bench.processed
    );
    eprintln!("SHOW PLUGINS: version {version}, {decided} decisions");
    eprintln!("plugin cost (Python pool-mode): {}", cost(&plugin)?);
    bed.ensure_proxy_alive()
}
