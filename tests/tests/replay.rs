//! Policy replay: the proxy records its hook calls (`[trace]`, admin `TRACE ON`), and
//! `switchyard replay` / `switchyard test-plugin` run a candidate plugin against a trace
//! or hand-written cases, printing where its decisions differ. A real Patroni switchover
//! is recorded with the bundled switchover plugin deciding, then replayed against that
//! plugin (no difference) and against it with another `hold_ms` (differences shown).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use switchyard_tests::admin::{admin_rows, wait_for_primary};
use switchyard_tests::patroni::cluster_behind_proxies;
use switchyard_tests::plugin::component;
use switchyard_tests::tools::{run_command, CmdOutput};
use switchyard_tests::{env, expect_sqlstate, scratch, skip_if_direct, Endpoint, TestBed};
use tokio::task::block_in_place;

/// `switchyard ARGS` (the built binary), its output and exit code.
fn switchyard(args: &[&str]) -> Result<CmdOutput> {
    let mut cmd = Command::new(env::proxy_binary()?);
    cmd.args(args);
    let out = run_command(&mut cmd, None, Duration::from_secs(60))?;
    println!("$ switchyard {}\n{}{}", args.join(" "), out.stdout, out.stderr);
    Ok(out)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The records of a trace file, as JSON.
fn records(trace: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(trace).with_context(|| format!("reading {}", trace.display()))?;
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("a trace line is not JSON: {l}")))
        .collect()
}

/// A `patronictl switchover` from node0 to node1 with the shipped callbacks, decided by
/// the bundled switchover plugin while `[trace] path` records: the trace holds switchover
/// calls, every one answered by the plugin, among them the old primary's planned stop
/// (answered with a hold of 30 s) and the new primary's confirmation. `switchyard replay`
/// of that trace against the same plugin exits 0 with 0 differences; against the same
/// plugin with `--settings hold_ms=40000` it exits 1 and prints the planned stop's line
/// with the recorded 30 s hold and the candidate's 40 s one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_patroni_switchover_replays_the_same_and_a_changed_plugin_differs() -> Result<()> {
    skip_if_direct!();
    let dir = scratch::fresh_dir("trace")?;
    let trace = dir.join("switchover.jsonl");
    let plugin = component("switchover")?;
    let (cluster, mut proxies) = block_in_place(|| {
        cluster_behind_proxies(false, true, 1, |cfg| {
            Ok(cfg
                .set("plugins.switchover.path", path(&plugin))
                .set("plugins.switchover.hooks", vec!["switchover"])
                .set("trace.path", path(&trace)))
        })
    })?;
    let proxy = proxies.remove(0);
    let endpoint = Endpoint::new(&proxy.host(), proxy.port());
    let addr = |e: &Endpoint| format!("{}:{}", e.host, e.port);
    let (old, new) = (cluster.nodes()[0].endpoint(), cluster.nodes()[1].endpoint());
    wait_for_primary(&endpoint, &addr(&old), Duration::from_secs(15)).await?;
    let switchover = block_in_place(|| cluster.switchover(Some("node1")))?;
    wait_for_primary(&endpoint, &addr(&new), Duration::from_secs(30)).await?;
    println!("{}", cluster.timeline_since(switchover.started));
    // Stopping writes out every record taken so far.
    let off = endpoint.psql("admin", "admin", "switchyard").run("TRACE OFF")?;
    off.ensure_success()?;
    let shown = admin_rows(&endpoint, "SHOW TRACE").await?;
    println!("SHOW TRACE: {shown:?}");

    let all = records(&trace)?;
    let decisions: Vec<&Value> = all.iter().filter(|r| r["hook"] == "switchover").collect();
    for r in &decisions {
        println!(
            "recorded: event {} -> {} by {}",
            r["event"], r["decision"], r["by"]
        );
    }
    println!("{} records, {} switchover calls", all.len(), decisions.len());
    ensure!(
        decisions
            .iter()
            .all(|r| r["by"] == "plugin" && r["plugin"] == "switchover"),
        "a switchover call not answered by the plugin: {decisions:?}"
    );
    let planned_stop = decisions
        .iter()
        .find(|r| r["event"]["planned-stop"] == 0)
        .with_context(|| format!("no planned stop of node 0 recorded:\n{}", proxy.log_tail(40)))?;
    ensure!(
        planned_stop["decision"][0]["hold"]["hold"] == "30s",
        "the planned stop was not answered with a 30 s hold: {planned_stop}"
    );
    ensure!(
        decisions.iter().any(|r| r["event"]["primary-confirmed"] == 1),
        "no confirmation of node 1 recorded: {decisions:?}"
    );

    let (plugin, trace) = (path(&plugin), path(&trace));
    let same = switchyard(&["replay", "--plugin", &plugin, "--trace", &trace])?;
    ensure!(
        same.code == Some(0),
        "{}",
        same.describe("replay against the same plugin")
    );
    ensure!(
        same.stdout.contains(" 0 different, 0 candidate errors"),
        "{}",
        same.describe("replay against the same plugin")
    );
    let changed = switchyard(&[
        "replay",
        "--plugin",
        &plugin,
        "--trace",
        &trace,
        "--hook",
        "switchover",
        "--settings",
        "hold_ms=40000",
    ])?;
    ensure!(
        changed.code == Some(1),
        "{}",
        changed.describe("replay with hold_ms=40000")
    );
    let difference = changed
        .stdout
        .lines()
        .find(|l| l.contains("switchover") && l.contains("planned-stop"))
        .with_context(|| changed.describe("no difference printed for the planned stop"))?;
    ensure!(
        difference.starts_with("line ")
            && difference.contains("recorded")
            && difference.contains("\"30s\"")
            && difference.contains("\"40s\""),
        "the difference line lacks its line number or the two holds: {difference}"
    );
    Ok(())
}

/// Through psql on the admin console: `TRACE ON FILE` succeeds and `SHOW TRACE` then
/// shows `on` and the file; an app client's statements are recorded (pool-mode calls
/// answered by the built-in with `release`); `TRACE OFF` succeeds, after which
/// `SHOW TRACE` shows `off`, none dropped, and as many records written as the file holds
/// lines. A stats user's `TRACE ON` gets 42501; `TRACE ON` with no file and no
/// `[trace] path` gets 22023.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_on_and_off_through_psql_record_hook_calls() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.with_admin().set("admin.stats_users", vec!["md5user"]))?;
    let ep = bed.endpoint();
    let trace = scratch::fresh_dir("trace")?.join("psql.jsonl");
    let psql = ep.psql("admin", "admin", "switchyard");
    let on = psql.run(&format!("TRACE ON {}", path(&trace)))?;
    on.ensure_success()?;
    let shown = psql.run("SHOW TRACE")?;
    shown.ensure_success()?;
    println!("{}", shown.stdout);
    ensure!(
        shown.stdout.starts_with(&format!("on|{}|", path(&trace))),
        "SHOW TRACE after TRACE ON: {}",
        shown.stdout
    );
    let app = ep.connect_app().await?;
    for _ in 0..5 {
        app.simple_query("SELECT 1").await?;
    }
    let off = psql.run("TRACE OFF")?;
    off.ensure_success()?;
    let report = admin_rows(&ep, "SHOW TRACE").await?;
    println!("SHOW TRACE: {report:?}");
    let all = records(&trace)?;
    ensure!(report[0]["state"] == "off", "{report:?}");
    ensure!(report[0]["dropped"] == "0", "{report:?}");
    ensure!(
        report[0]["written"] == all.len().to_string(),
        "SHOW TRACE says {} written, the file holds {}",
        report[0]["written"],
        all.len()
    );
    let released = all
        .iter()
        .filter(|r| r["hook"] == "pool-mode" && r["by"] == "built-in" && r["decision"] == "release")
        .count();
    println!("{} records, {released} pool-mode releases", all.len());
    ensure!(
        released >= 5,
        "{released} pool-mode releases recorded for 5 statements"
    );

    let stats = ep.connect("md5user", "md5pass", "switchyard").await?;
    let e = expect_sqlstate(
        stats.simple_query("TRACE ON /tmp/x").await,
        &["42501"],
        "stats TRACE ON",
    )?;
    println!("stats user: TRACE ON: {} {}", e.code().code(), e.message());
    let admin = ep.connect("admin", "admin", "switchyard").await?;
    let e = expect_sqlstate(
        admin.simple_query("TRACE ON").await,
        &["22023"],
        "TRACE ON without a file",
    )?;
    println!("TRACE ON without a file: {} {}", e.code().code(), e.message());
    Ok(())
}

/// `switchyard test-plugin` with examples/switchover-cases.toml against the bundled
/// switchover plugin exits 0 ("6 calls: 6 same"); the same cases with the first case's
/// expected hold changed from 30 s to 31 s exit 1, printing that case by number and name
/// with the expected 31 s and the plugin's 30 s ("5 same, 1 different").
#[test]
fn test_plugin_passes_the_example_cases_and_reports_a_wrong_expectation() -> Result<()> {
    let plugin = path(&component("switchover")?);
    let cases = env::workspace_dir().join("examples/switchover-cases.toml");
    let pass = switchyard(&["test-plugin", "--plugin", &plugin, "--cases", &path(&cases)])?;
    ensure!(pass.code == Some(0), "{}", pass.describe("the example cases"));
    ensure!(
        pass.stdout.contains("6 calls: 6 same"),
        "{}",
        pass.describe("the example cases")
    );

    let text = std::fs::read_to_string(&cases)?;
    let wrong_text = text.replacen("hold = \"30s\"", "hold = \"31s\"", 1);
    ensure!(
        wrong_text != text,
        "the example cases have no 30 s hold to change"
    );
    let wrong = scratch::fresh_dir("cases")?.join("wrong.toml");
    std::fs::write(&wrong, wrong_text)?;
    let fail = switchyard(&["test-plugin", "--plugin", &plugin, "--cases", &path(&wrong)])?;
    ensure!(fail.code == Some(1), "{}", fail.describe("a wrong expectation"));
    ensure!(
        fail.stdout.contains("5 same, 1 different"),
        "{}",
        fail.describe("a wrong expectation")
    );
    let line = fail
        .stdout
        .lines()
        .find(|l| l.starts_with("case 1 (a planned stop of the primary"))
        .with_context(|| fail.describe("the wrong case is not printed"))?;
    ensure!(
        line.contains("expected") && line.contains("\"31s\"") && line.contains("\"30s\""),
        "{line}"
    );
    Ok(())
}

/// `switchyard replay` exits 2 with the file and line named when a trace line is not a
/// record, and names the plugin file when it cannot be read.
#[test]
fn replay_of_an_unusable_trace_or_plugin_exits_2_naming_the_file() -> Result<()> {
    let plugin = path(&component("switchover")?);
    let trace = scratch::fresh_dir("trace")?.join("bad.jsonl");
    std::fs::write(&trace, "\n{\"hook\": \"switchover\"}\n")?;
    let bad = switchyard(&["replay", "--plugin", &plugin, "--trace", &path(&trace)])?;
    ensure!(bad.code == Some(2), "{}", bad.describe("a bad trace"));
    ensure!(
        bad.stderr.contains(&format!("{}:2: ", path(&trace))),
        "{}",
        bad.describe("a bad trace")
    );
    let empty = trace.with_file_name("empty.jsonl");
    std::fs::write(&empty, "")?;
    let missing = switchyard(&[
        "replay",
        "--plugin",
        "/nonexistent/p.wasm",
        "--trace",
        &path(&empty),
    ])?;
    ensure!(
        missing.code == Some(2),
        "{}",
        missing.describe("a missing plugin")
    );
    ensure!(
        missing.stderr.contains("/nonexistent/p.wasm"),
        "{}",
        missing.describe("a missing plugin")
    );
    Ok(())
}

/// `[trace]` is reloadable: a proxy started without it shows `SHOW TRACE` off; once its
/// file gains `[trace] path` and an admin `RELOAD` runs, `SHOW TRACE` shows on with that
/// path; an app client's statements are then recorded (pool-mode calls in the file after
/// the next reload, the one that removes `[trace]` again and leaves `SHOW TRACE` off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_starts_and_stops_recording_as_trace_says() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| cfg.with_admin())?;
    let ep = bed.endpoint();
    let state = |rows: &[std::collections::HashMap<String, String>]| {
        (rows[0]["state"].clone(), rows[0]["path"].clone())
    };
    let before = admin_rows(&ep, "SHOW TRACE").await?;
    ensure!(state(&before) == ("off".into(), String::new()), "{before:?}");

    let trace = scratch::fresh_dir("trace")?.join("reload.jsonl");
    let proxy = bed.proxy().context("proxy")?;
    let plain = proxy.config().clone();
    proxy.write_config(plain.clone().set("trace.path", path(&trace)))?;
    admin_rows(&ep, "RELOAD").await?;
    let on = admin_rows(&ep, "SHOW TRACE").await?;
    println!("after the reload with [trace]: {on:?}");
    ensure!(state(&on) == ("on".into(), path(&trace)), "{on:?}");
    let app = ep.connect_app().await?;
    for _ in 0..3 {
        app.simple_query("SELECT 1").await?;
    }

    bed.proxy().context("proxy")?.write_config(plain)?;
    admin_rows(&ep, "RELOAD").await?;
    let off = admin_rows(&ep, "SHOW TRACE").await?;
    println!("after the reload without [trace]: {off:?}");
    ensure!(state(&off).0 == "off", "{off:?}");
    let all = records(&trace)?;
    let pool_mode = all.iter().filter(|r| r["hook"] == "pool-mode").count();
    println!("{} records, {pool_mode} pool-mode calls", all.len());
    ensure!(
        pool_mode >= 3,
        "{pool_mode} pool-mode calls recorded for 3 statements"
    );
    Ok(())
}
