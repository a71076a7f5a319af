//! The topology on plugins: the bundled `health` and `switchover` plugins (and `retry`)
//! judge a probed primary + replica cluster and decide what its events do to traffic. The
//! stop + promote scenario of `failover.rs` gives the same guarantees with them (no lost or
//! duplicated write, no write sent to a read-only node, at most one error per client, work
//! resumes on the new primary), and a plugin that traps on every health and switchover
//! call leaves the topology to the built-in policies, its failures counted.

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use switchyard_tests::admin::admin_rows;
use switchyard_tests::plugin::{component, count};
use switchyard_tests::promotion::{probed_pair, stop_and_promote_under_load};
use switchyard_tests::tolerance::Allowance;
use switchyard_tests::{skip_if_direct, Endpoint, ProxyConfig, TestBed};

const CLIENTS: usize = 4;

/// `cfg` with the component `plugins/dist/<file>.wasm` loaded as plugin `name` for `hooks`
/// with `settings`.
fn plugin(
    cfg: ProxyConfig,
    name: &str,
    file: &str,
    hooks: &[&str],
    settings: &[(&str, &str)],
) -> Result<ProxyConfig> {
    let hooks = hooks.iter().map(|&h| h.into()).collect();
    let mut cfg = cfg
        .set(
            &format!("plugins.{name}.path"),
            component(file)?.display().to_string(),
        )
        .set(&format!("plugins.{name}.hooks"), toml::Value::Array(hooks));
    for (k, v) in settings {
        cfg = cfg.set(&format!("plugins.{name}.settings.{k}"), *v);
    }
    Ok(cfg)
}

/// `SHOW PLUGINS` rows by plugin name.
async fn plugins(endpoint: &Endpoint) -> Result<HashMap<String, HashMap<String, String>>> {
    Ok(admin_rows(endpoint, "SHOW PLUGINS")
        .await?
        .into_iter()
        .map(|r| (r["name"].clone(), r))
        .collect())
}

/// The stop + promote scenario under [`CLIENTS`] tokio-postgres clients and psycopg ones:
/// the checks of [`stop_and_promote_under_load`], every client completes work after the new
/// primary is confirmed, and each sees at most one `08006` and no other error
/// ([`Allowance::ONE_UNKNOWN_OUTCOME`]).
async fn stop_and_promote(bed: &mut TestBed) -> Result<()> {
    let promotion = stop_and_promote_under_load(bed, CLIENTS).await?;
    let [tokio, psycopg] = &promotion.reports;
    Allowance::ONE_UNKNOWN_OUTCOME.check(&[tokio, psycopg], promotion.confirmed_at)
}

/// The bundled health, switchover and retry plugins judge the stop + promote scenario: the
/// checks of [`stop_and_promote`], both plugins called without failure, and the switchover
/// plugin saw (and logged) the new primary confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_health_and_switchover_plugins_follow_a_promotion_with_at_most_one_unknown_outcome_per_client(
) -> Result<()> {
    skip_if_direct!();
    let (mut bed, _, _, _) = probed_pair(|cfg| {
        let cfg = plugin(
            cfg.pool_size(8),
            "health",
            "health",
            &["health"],
            &[("failures_before_down", "1")],
        )?;
        let cfg = plugin(
            cfg,
            "switchover",
            "switchover",
            &["switchover"],
            &[("hold_ms", "20000"), ("drain_ms", "2000")],
        )?;
        plugin(cfg, "retry", "retry", &["retry"], &[("max_attempts", "5")])
    })
    .await?;
    stop_and_promote(&mut bed).await?;
    let rows = plugins(&bed.endpoint()).await?;
    eprintln!("SHOW PLUGINS: {rows:#?}");
    for name in ["health", "switchover"] {
        let row = rows
            .get(name)
            .with_context(|| format!("no SHOW PLUGINS row for {name}"))?;
        ensure!(
            count(row, "calls")? > 0,
            "the {name} plugin was never called: {row:?}"
        );
        ensure!(count(row, "failures")? == 0, "the {name} plugin failed: {row:?}");
    }
    let switchover = &rows["switchover"];
    ensure!(
        switchover["counters"].contains("events.primary-confirmed="),
        "the switchover plugin did not see the new primary confirmed: {switchover:?}"
    );
    let log = bed.proxy().context("proxy")?.log();
    ensure!(
        log.contains("switchover plugin switchover: event primary-confirmed"),
        "no decision line from the switchover plugin in the log"
    );
    bed.ensure_proxy_alive()
}

/// A plugin that traps on every health and switchover call: the checks of
/// [`stop_and_promote`] hold with the built-ins answering, its failures are counted, and the
/// fallback is logged when it starts (1 to 10 lines per hook), not at every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_health_and_switchover_plugin_leaves_the_topology_to_the_built_ins() -> Result<()> {
    skip_if_direct!();
    let (mut bed, _, _, _) = probed_pair(|cfg| {
        plugin(
            cfg.pool_size(8),
            "hostile",
            "hostile-trap",
            &["health", "switchover"],
            &[],
        )
    })
    .await?;
    stop_and_promote(&mut bed).await?;
    let rows = plugins(&bed.endpoint()).await?;
    let row = rows.get("hostile").context("no SHOW PLUGINS row for hostile")?;
    ensure!(
        count(row, "failures")? > 0,
        "the trapping plugin's failures were not counted: {row:?}"
    );
    let log = bed.proxy().context("proxy")?.log();
    for hook in ["health", "switchover"] {
        let warnings = log
            .matches(&format!(
                "{hook} plugin failed; the built-in {hook} policy answers"
            ))
            .count();
        ensure!(
            (1..=10).contains(&warnings),
            "the {hook} fallback should be logged when it starts, not at every call: {warnings} lines"
        );
    }
    ensure!(
        log.contains("switchover built-in (plugin hostile failed): event primary-confirmed"),
        "no decision line from the built-in standing in for the switchover plugin"
    );
    bed.ensure_proxy_alive()
}
