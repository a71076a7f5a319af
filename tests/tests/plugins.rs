//! Pool mode decided by a WebAssembly plugin on the data path (plugins/dist, built by
//! scripts/build-plugins): the bundled pool-mode plugin in transaction, session and
//! statement mode, and hostile plugins that loop (keeping at least half the throughput of
//! no plugin), exhaust memory (the proxy's RSS stays under a stated cap), trap on every
//! call, flood the log and counters (both stay bounded), or try to escape the sandbox (the
//! attempts fail), while clients see no error, in
//! the simple and the extended protocol, plus plugins that must be refused at start-up, and a plugin
//! that uses Rust's std (HashMap, Instant, stderr, a panic) as any author would.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_tests::plugin::{count, decisions, policy_row, with_plugin};
use switchyard_tests::proxy::resident_memory;
use switchyard_tests::tools::run_command;
use switchyard_tests::{
    env, expect_sqlstate, skip_if_direct, Driver, Endpoint, Length, PgCluster, PgResultExt, Proxy,
    ProxyConfig, QueryMode, TestBed,
};

/// (decisions: calls plus reused decisions, failures) of the plugin, from SHOW PLUGINS.
async fn plugin_counts(bed: &TestBed) -> Result<(u64, u64)> {
    let row = policy_row(&bed.endpoint()).await?;
    Ok((decisions(&row)?, count(&row, "failures")?))
}

/// pgbench through a pool of 4 for 32 clients: every transaction must succeed.
async fn pgbench_ok(bed: &TestBed, mode: QueryMode, seconds: u32) -> Result<u64> {
    let result = bed
        .endpoint()
        .pgbench("app", "app", "app")
        .run_async(mode, 32, 2, Length::Seconds(seconds))
        .await?;
    ensure!(
        result.status_ok && result.failed == 0 && result.processed > 0,
        "{}",
        result.output.describe(&format!(
            "pgbench -M {}: expected 0 failed transactions, got {}",
            mode.as_str(),
            result.failed
        ))
    );
    Ok(result.processed)
}

#[tokio::test]
async fn transaction_mode_plugin_runs_pgbench_in_every_protocol() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_full(Default::default(), |cfg, _| {
        with_plugin(cfg.pool_size(4), "pool-mode", &[("mode", "transaction")])
    })?;
    bed.direct().pgbench("app", "app", "app").init(1)?;
    let mut processed = 0;
    for mode in [QueryMode::Simple, QueryMode::Extended, QueryMode::Prepared] {
        processed += pgbench_ok(&bed, mode, 3).await?;
    }
    let (decisions, failures) = plugin_counts(&bed).await?;
    ensure!(failures == 0, "the pool-mode plugin failed {failures} calls");
    ensure!(
        decisions >= processed,
        "{processed} transactions but only {decisions} plugin decisions: the plugin is not on the data path"
    );
    // Its decisions are declared reusable: a handful of calls answer every transaction.
    let row = policy_row(&bed.endpoint()).await?;
    ensure!(
        count(&row, "calls")? < processed / 10,
        "the plugin's reusable decisions were not reused: {row:?}"
    );
    bed.ensure_proxy_alive()
}

/// psycopg 3 (auto-prepared statements, transactions) through the plugin's transaction
/// pooling: every transaction commits, as with the built-in policy.
#[tokio::test]
async fn transaction_mode_plugin_serves_psycopg() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_full(Default::default(), |cfg, _| {
        with_plugin(cfg.pool_size(3), "pool-mode", &[("mode", "transaction")])
    })?;
    let target = bed.endpoint().client_target("app", "app", "app");
    let report = Driver::Psycopg.run_async(&target, 8, 60).await?;
    bed.ensure_proxy_alive()?;
    ensure!(
        report.errors == 0 && report.ok == 8 * 60,
        "{}",
        report.output.describe(&format!(
            "psycopg through the plugin: expected 480 committed transactions and 0 errors, got {} ok and {} errors",
            report.ok, report.errors
        ))
    );
    let (decisions, failures) = plugin_counts(&bed).await?;
    ensure!(
        failures == 0 && decisions >= 480,
        "plugin decisions {decisions}, failures {failures}"
    );
    Ok(())
}

#[tokio::test]
async fn session_mode_plugin_keeps_the_server() -> Result<()> {
    skip_if_direct!();
    // The configured pool mode is transaction; the plugin says session.
    let bed = TestBed::start_full(Default::default(), |cfg, _| {
        with_plugin(
            cfg.mode("transaction").pool_size(2),
            "pool-mode",
            &[("mode", "session")],
        )
    })?;
    let a = bed.endpoint().connect_app().await?;
    a.batch_execute("CREATE TEMP TABLE mine(x int); INSERT INTO mine VALUES (7)")
        .await
        .ctx("create temp table")?;
    // Another client takes the other server; a's temp table must still be there.
    let b = bed.endpoint().connect_app().await?;
    b.batch_execute("SELECT 1").await.ctx("second client")?;
    let x: i32 = a
        .query_one("SELECT x FROM mine", &[])
        .await
        .ctx("temp table after other traffic")?
        .get(0);
    ensure!(x == 7, "expected 7 from the session's temp table, got {x}");
    Ok(())
}

#[tokio::test]
async fn statement_mode_plugin_refuses_transaction_blocks() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_full(Default::default(), |cfg, _| {
        with_plugin(cfg.pool_size(2), "pool-mode", &[("mode", "statement")])
    })?;
    let c = bed.endpoint().connect_app().await?;
    let one: i32 = c
        .query_one("SELECT 1", &[])
        .await
        .ctx("autocommit statement")?
        .get(0);
    ensure!(one == 1, "SELECT 1 gave {one}");
    let err = c.batch_execute("BEGIN").await;
    let db = expect_sqlstate(err, &["25000"], "BEGIN in statement mode")?;
    ensure!(
        db.message().contains("statement pooling"),
        "unexpected message: {}",
        db.message()
    );
    // The session goes on, outside any transaction.
    let two: i32 = c
        .query_one("SELECT 2", &[])
        .await
        .ctx("after the refused BEGIN")?
        .get(0);
    ensure!(two == 2, "SELECT 2 gave {two}");
    // SAVEPOINT is refused outside a transaction block (25P01): proof none is open.
    expect_sqlstate(
        c.batch_execute("SAVEPOINT s").await,
        &["25P01"],
        "SAVEPOINT after the refusal",
    )?;
    Ok(())
}

/// pgbench (32 clients, `seconds`) through `endpoint` in `mode`: every transaction must
/// succeed and at least one be processed. Returns its tps.
async fn tps(endpoint: &Endpoint, mode: QueryMode, seconds: u32, what: &str) -> Result<f64> {
    let result = endpoint
        .pgbench("app", "app", "app")
        .run_async(mode, 32, 2, Length::Seconds(seconds))
        .await?;
    ensure!(
        result.status_ok && result.failed == 0 && result.processed > 0,
        "{}",
        result.output.describe(&format!(
            "pgbench -M {} {what}: expected transactions and none failed, got {} processed, {} failed",
            mode.as_str(),
            result.processed,
            result.failed
        ))
    );
    Ok(result.tps)
}

/// A plugin whose `on-ready` never returns (`hostile-spin`, cut off at its deadline every
/// call, then switched off for a while by the circuit breaker) keeps at least half the
/// throughput of the same proxy configuration without a plugin, measured in the same test
/// against the same cluster with pgbench -M simple and -M extended (32 clients, pool of 4,
/// 4 s runs, alternating twice between the two proxies per mode, tps summed): every
/// transaction succeeds, the ratios are printed, the plugin's failures are counted, and
/// both proxies stay up.
#[tokio::test]
async fn a_spinning_plugin_keeps_at_least_half_the_throughput_without_a_plugin() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(4))?;
    bed.direct().pgbench("app", "app", "app").init(1)?;
    let mut spin = Proxy::start(with_plugin(
        ProxyConfig::for_cluster(bed.pg()).pool_size(4),
        "hostile-spin",
        &[],
    )?)?;
    let spinning = Endpoint::new(&spin.host(), spin.port());
    let mut ratios = Vec::new();
    for mode in [QueryMode::Simple, QueryMode::Extended] {
        let (mut plain, mut hostile) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            plain.push(tps(&bed.endpoint(), mode, 4, "without a plugin").await?);
            hostile.push(tps(&spinning, mode, 4, "with hostile-spin").await?);
        }
        let ratio = hostile.iter().sum::<f64>() / plain.iter().sum::<f64>();
        println!(
            "pgbench -M {}: tps without a plugin {plain:.0?}, with hostile-spin {hostile:.0?}: ratio {ratio:.2}",
            mode.as_str()
        );
        ratios.push((mode.as_str(), ratio));
    }
    let row = policy_row(&spinning).await?;
    ensure!(
        count(&row, "failures")? > 0,
        "hostile-spin should have failed calls (and been contained), SHOW PLUGINS says {row:?}"
    );
    spin.ensure_running()?;
    bed.ensure_proxy_alive()?;
    ensure!(
        ratios.iter().all(|(_, r)| *r >= 0.5),
        "with hostile-spin the proxy must keep at least half its throughput without a plugin: {ratios:?}"
    );
    Ok(())
}

/// The most the proxy's resident memory may reach with `hostile-membomb`: a plugin
/// instance's memory is capped at 64 MiB and an instance that hit the cap is dropped, so
/// the proxy holds at most one full instance per call running at once (one per proxy worker
/// thread) on top of what it needs without the plugin. Measured on 2 cores (debug build):
/// 22 MiB at start, peak 78–85 MiB. Without the host's cap the bomb would fill the 4 GiB a
/// wasm32 instance can address.
const MEMBOMB_RSS_CAP: u64 = 512 << 20;

/// A plugin whose `on-ready` allocates until its allocation fails (`hostile-membomb`):
/// pgbench -M simple and -M extended (32 clients, pool of 4, 5 s each) see no failed
/// transaction, the proxy's resident memory, sampled every 20 ms through both runs
/// (`VmRSS`) and its peak (`VmHWM`), stays under [`MEMBOMB_RSS_CAP`] (printed), the
/// plugin's failures are counted and the proxy stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_plugin_leaves_the_proxys_rss_under_the_cap() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_full(Default::default(), |cfg, _| {
        with_plugin(cfg.pool_size(4), "hostile-membomb", &[])
    })?;
    bed.direct().pgbench("app", "app", "app").init(1)?;
    let pid = bed.proxy().and_then(|p| p.pid()).context("the proxy's pid")?;
    let at_start = resident_memory(pid)?;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut max = 0;
            while sampling.load(Ordering::Relaxed) {
                max = max.max(resident_memory(pid)?.now);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, anyhow::Error>(max)
        })
    };
    let endpoint = bed.endpoint();
    let mut runs = Vec::new();
    for mode in [QueryMode::Simple, QueryMode::Extended] {
        runs.push(
            tps(&endpoint, mode, 5, "with hostile-membomb")
                .await
                .map(|t| (mode.as_str(), t)),
        );
    }
    sampling.store(false, Ordering::Relaxed);
    let sampled = sampler.await??;
    let at_end = resident_memory(pid)?;
    const MIB: u64 = 1 << 20;
    println!(
        "hostile-membomb: proxy RSS {} MiB at start, at most {} MiB sampled during pgbench, peak (VmHWM) {} MiB, {} MiB after; cap {} MiB; runs {runs:?}",
        at_start.now / MIB,
        sampled / MIB,
        at_end.peak / MIB,
        at_end.now / MIB,
        MEMBOMB_RSS_CAP / MIB
    );
    for run in runs {
        run?;
    }
    let (_, failures) = plugin_counts(&bed).await?;
    ensure!(
        failures > 0,
        "hostile-membomb should have failed calls (and been contained), SHOW PLUGINS says 0"
    );
    ensure!(
        at_end.peak <= MEMBOMB_RSS_CAP && sampled <= MEMBOMB_RSS_CAP,
        "the proxy's resident memory reached {} MiB (sampled) / {} MiB (peak), over the cap of {} MiB",
        sampled / MIB,
        at_end.peak / MIB,
        MEMBOMB_RSS_CAP / MIB
    );
    bed.ensure_proxy_alive()
}

/// A plugin that traps on every call (`hostile-trap`): pgbench -M simple and -M extended
/// (32 clients, pool of 4) see no failed transaction, the plugin's failures are counted and
/// the proxy stays up.
#[tokio::test]
async fn a_trapping_plugin_costs_clients_no_error() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_full(Default::default(), |cfg, _| {
        with_plugin(cfg.pool_size(4), "hostile-trap", &[])
    })?;
    bed.direct().pgbench("app", "app", "app").init(1)?;
    for mode in [QueryMode::Simple, QueryMode::Extended] {
        let t = tps(&bed.endpoint(), mode, 3, "with hostile-trap").await?;
        println!("pgbench -M {} with hostile-trap: {t:.0} tps", mode.as_str());
    }
    let (_, failures) = plugin_counts(&bed).await?;
    ensure!(
        failures > 0,
        "hostile-trap should have failed calls (and been contained), SHOW PLUGINS says 0"
    );
    bed.ensure_proxy_alive()
}

/// The escape plugin (`hostile-escape`) tries, in `init`, to read `/etc/passwd` and to open a
/// TCP connection, logging each attempt and its outcome. `check-config` refuses it, and its
/// log shows both attempts failed: the file read is denied (no directory is given to
/// plugins), and the socket attempt either is denied or traps on the `wasi:sockets` import
/// the proxy does not provide; never `READ` nor `CONNECTED`.
#[test]
fn the_escape_plugins_file_and_socket_attempts_fail() -> Result<()> {
    skip_if_direct!();
    let pg = PgCluster::start()?;
    let dir = tempdir_in_target()?;
    let cfg =
        with_plugin(ProxyConfig::for_cluster(&pg), "hostile-escape", &[])?.set("proxy.listen", "127.0.0.1:1");
    let file = dir.join("hostile-escape-attempts.toml");
    std::fs::write(&file, cfg.to_toml()?)?;
    let out = run_command(
        std::process::Command::new(env::proxy_binary()?)
            .arg("check-config")
            .arg(&file),
        None,
        std::time::Duration::from_secs(60),
    )?;
    let log = format!("{}{}", out.stdout, out.stderr);
    println!("check-config with hostile-escape:\n{log}");
    ensure!(!out.status_ok, "check-config accepted hostile-escape");
    ensure!(
        log.contains("escape: fs /etc/passwd: denied"),
        "the file read was not shown denied"
    );
    ensure!(
        log.contains("escape: trying tcp 127.0.0.1:5432")
            && (log.contains("escape: tcp 127.0.0.1:5432: denied") || log.contains("wasi:sockets")),
        "the socket attempt was not shown failing (denied, or a trap on wasi:sockets)"
    );
    ensure!(
        !log.contains("READ") && !log.contains("CONNECTED"),
        "the plugin escaped its sandbox"
    );
    Ok(())
}

#[test]
fn broken_plugins_are_refused_at_start_with_the_reason() -> Result<()> {
    skip_if_direct!();
    let pg = PgCluster::start()?;
    let binary = env::proxy_binary()?;
    let dir = tempdir_in_target()?;
    for (plugin, expected) in [
        ("hostile-badinit", "init failed: refusing to start"),
        ("hostile-oldwit", "does not fit this proxy's interface"),
        ("hostile-escape", "init failed"),
    ] {
        let cfg = with_plugin(ProxyConfig::for_cluster(&pg), plugin, &[])?.set("proxy.listen", "127.0.0.1:1");
        let file = dir.join(format!("{plugin}.toml"));
        std::fs::write(&file, cfg.to_toml()?)?;
        let out = run_command(
            std::process::Command::new(&binary).arg("check-config").arg(&file),
            None,
            std::time::Duration::from_secs(60),
        )?;
        ensure!(!out.status_ok, "check-config accepted {plugin}");
        ensure!(
            out.stderr.contains(expected) && out.stderr.contains("policy"),
            "check-config on {plugin}: expected the plugin's name and {expected:?}, got: {}",
            out.stderr
        );
    }
    Ok(())
}

fn tempdir_in_target() -> Result<PathBuf> {
    let dir = env::scratch_root()?.join(format!("plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A plugin written with Rust's std and no precautions (`testing-std-user`: a `HashMap`,
/// `Instant::now()` and `eprintln!` on every `on-ready`, std's default panic hook) serves:
/// with ordinary clients its calls succeed (SHOW PLUGINS: calls > 0, failures 0, empty
/// `last_error`) and its stderr line is in the proxy's log. A client whose
/// `application_name` is `panic-now` makes it panic: that client still gets its rows (the
/// built-in policy answers), the proxy stays up, and the panic's message is in the proxy's
/// log and in SHOW PLUGINS' `last_error`, with the failure counted.
#[tokio::test]
async fn std_using_plugin_serves_and_its_panic_message_is_reported() -> Result<()> {
    skip_if_direct!();
    const PANIC: &str = "std-user: deliberate panic for application_name panic-now";
    let mut bed = TestBed::start_full(Default::default(), |cfg, _| {
        with_plugin(cfg.pool_size(4), "testing-std-user", &[])
    })?;
    let endpoint = bed.endpoint();
    let client = endpoint.connect_app().await?;
    for i in 0..5 {
        let n: i32 = client.query_one("SELECT $1::int", &[&i]).await?.get(0);
        ensure!(n == i, "SELECT {i} returned {n}");
    }
    let row = policy_row(&endpoint).await?;
    ensure!(
        count(&row, "calls")? > 0 && count(&row, "failures")? == 0 && row["last_error"].is_empty(),
        "a plugin using HashMap, Instant and stderr must answer without failures: {row:?}"
    );
    let log = bed.proxy().context("proxy")?.log();
    ensure!(
        log.contains("stderr: std-user: on-ready session"),
        "the plugin's stderr line is not in the proxy's log:\n{}",
        bed.proxy().context("proxy")?.log_tail(40)
    );

    let mut cfg = endpoint.config("app", "app", "app");
    cfg.application_name("panic-now");
    let panicking = switchyard_tests::client::connect(&cfg).await?;
    let n: i32 = panicking
        .query_one("SELECT 42", &[])
        .await
        .context("the client that made the plugin panic must get its answer")?
        .get(0);
    ensure!(n == 42, "SELECT 42 returned {n}");
    let row = policy_row(&endpoint).await?;
    ensure!(
        count(&row, "failures")? > 0 && row["last_error"].contains(PANIC),
        "SHOW PLUGINS must count the panic and give its message as last_error: {row:?}"
    );
    let log = bed.proxy().context("proxy")?.log();
    ensure!(
        log.contains(PANIC),
        "the panic's message is not in the proxy's log:\n{}",
        bed.proxy().context("proxy")?.log_tail(40)
    );
    // Other sessions go on, through the plugin again.
    let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    ensure!(one == 1);
    bed.ensure_proxy_alive()
}

/// Lines of the proxy's log where `testing-std-user` reports an on-ready call for a
/// session named `application_name` (its stderr line, captured into the log).
fn on_ready_lines(bed: &mut TestBed, application_name: &str) -> Result<usize> {
    let needle = format!("(application_name {application_name:?})");
    let log = bed.proxy().context("proxy")?.log();
    Ok(log
        .lines()
        .filter(|l| l.contains("std-user: on-ready session") && l.contains(&needle))
        .count())
}

/// `host.current-session` follows the client's own `SET application_name`, not only the
/// name it logged in with: through `testing-std-user` (which logs the name it is told on
/// every on-ready), a client that logged in as `at-login` and then ran
/// `SET application_name = 'set-later'` is reported as `set-later` at its next statements,
/// and as `at-login` again after `RESET application_name`. A later
/// `SET application_name = 'panic-now'` makes the plugin panic: the failure is counted in
/// SHOW PLUGINS while the client still gets its rows. (Before, the facts kept the startup
/// name: no `set-later` line, and no failure after the SET.)
#[tokio::test]
async fn current_session_follows_set_application_name() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_full(Default::default(), |cfg, _| {
        with_plugin(cfg.pool_size(2), "testing-std-user", &[])
    })?;
    let endpoint = bed.endpoint();
    let mut cfg = endpoint.config("app", "app", "app");
    cfg.application_name("at-login");
    let client = switchyard_tests::client::connect(&cfg).await?;
    let select = |n: i32| {
        let client = &client;
        async move {
            let got: i32 = client.query_one("SELECT $1::int", &[&n]).await?.get(0);
            ensure!(got == n, "SELECT {n} returned {got}");
            anyhow::Ok(())
        }
    };
    select(1).await?;
    let at_login = on_ready_lines(&mut bed, "at-login")?;
    ensure!(
        at_login > 0,
        "the plugin was not told the login name:\n{}",
        bed.proxy().context("proxy")?.log_tail(20)
    );

    client.batch_execute("SET application_name = 'set-later'").await?;
    select(2).await?;
    select(3).await?;
    let set_later = on_ready_lines(&mut bed, "set-later")?;
    println!("on-ready calls told: at-login {at_login}, set-later {set_later}");
    ensure!(
        set_later >= 2,
        "after SET application_name the plugin must be told the new name ({set_later} calls were):\n{}",
        bed.proxy().context("proxy")?.log_tail(20)
    );

    client.batch_execute("RESET application_name").await?;
    select(4).await?;
    ensure!(
        on_ready_lines(&mut bed, "at-login")? > at_login,
        "after RESET application_name the plugin must be told the login name again:\n{}",
        bed.proxy().context("proxy")?.log_tail(20)
    );

    let (_, failures_before) = plugin_counts(&bed).await?;
    ensure!(
        failures_before == 0,
        "the plugin failed {failures_before} calls before the SET"
    );
    client.batch_execute("SET application_name = 'panic-now'").await?;
    select(5).await?;
    let (_, failures) = plugin_counts(&bed).await?;
    ensure!(
        failures > 0,
        "a session renamed panic-now by SET must make the plugin panic (failures counted: {failures})"
    );
    bed.ensure_proxy_alive()
}

/// Lines the proxy logs for one plugin per second at most (the host's
/// `LOG_LINES_PER_SECOND`).
const PLUGIN_LINES_PER_SECOND: usize = 100;

/// A plugin that floods the host on every decision (`hostile-chatty`: a 64 KiB log line,
/// 200 short lines, a counter with a 1 KiB name and 10 new counter names per call), under
/// pgbench -M simple and -M extended (32 clients, pool of 4, 4 s each): no failed
/// transaction; the plugin's lines in the log are at most 100 per second of the proxy's
/// life (counted and printed), with at least one `lines dropped` summary; every long line is
/// cut to under 4 KiB + a `[truncated: ...]` marker; `SHOW PLUGINS` shows at most 256
/// counters and none with the long name, and each counter refusal is logged exactly once;
/// the log file and the proxy's peak resident memory are printed, and the memory stays under
/// 256 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_plugin_leaves_the_log_and_counters_bounded() -> Result<()> {
    skip_if_direct!();
    let started = std::time::Instant::now();
    let mut bed = TestBed::start_full(Default::default(), |cfg, _| {
        with_plugin(cfg.pool_size(4), "hostile-chatty", &[])
    })?;
    bed.direct().pgbench("app", "app", "app").init(1)?;
    let endpoint = bed.endpoint();
    let mut processed = Vec::new();
    for mode in [QueryMode::Simple, QueryMode::Extended] {
        let t = tps(&endpoint, mode, 4, "with hostile-chatty").await?;
        processed.push((mode.as_str(), t));
    }
    let row = policy_row(&endpoint).await?;
    let (calls, _) = plugin_counts(&bed).await?;
    let proxy = bed.proxy().context("a proxy")?;
    let life = started.elapsed();
    let pid = proxy.pid().context("the proxy's pid")?;
    let memory = resident_memory(pid)?;
    let log = proxy.log();
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let short = lines("chatty: line");
    let long: Vec<&str> = log.lines().filter(|l| l.contains("chatty: long")).collect();
    let summaries = lines("lines dropped");
    let counters = row.get("counters").cloned().unwrap_or_default();
    let names: Vec<&str> = counters.split_whitespace().collect();
    const MIB: u64 = 1 << 20;
    println!(
        "hostile-chatty: {calls} calls in {life:?} ({processed:?} tps); log: {short} short and {} long plugin lines, \
         {summaries} 'lines dropped' summaries, {} bytes; {} counters shown; proxy RSS {} MiB, peak {} MiB",
        long.len(),
        log.len(),
        names.len(),
        memory.now / MIB,
        memory.peak / MIB
    );
    let allowed = PLUGIN_LINES_PER_SECOND * (life.as_secs() as usize + 2);
    ensure!(
        short + long.len() <= allowed,
        "{} plugin lines in the log over {life:?}; at most {PLUGIN_LINES_PER_SECOND} per second ({allowed})",
        short + long.len()
    );
    ensure!(
        calls > 0 && short > 0,
        "the plugin was not called or logged nothing"
    );
    ensure!(summaries > 0, "no 'lines dropped' summary in the log");
    for l in &long {
        ensure!(
            l.len() < 4096 + 512 && l.contains("[truncated: "),
            "a long plugin line was not cut: {} bytes",
            l.len()
        );
    }
    ensure!(
        names.len() <= 256,
        "{} plugin counters shown; at most 256",
        names.len()
    );
    ensure!(
        !counters.contains(&"n".repeat(200)),
        "the counter with a 1 KiB name was kept"
    );
    ensure!(
        lines("plugin counter refused") == 1 && lines("counters already") == 1,
        "each counter refusal should be logged once: {} and {}",
        lines("plugin counter refused"),
        lines("counters already")
    );
    ensure!(
        memory.peak < 256 * MIB,
        "the proxy's peak resident memory was {} MiB",
        memory.peak / MIB
    );
    bed.ensure_proxy_alive()
}
