//! Replacing plugins while traffic flows: SIGHUP and the admin console's RELOAD re-read the
//! configuration, a changed component file is picked up by itself, and a version that fails
//! to compile, link or init leaves the previous one serving with the reason visible. The
//! compiled-artifact cache makes a restart skip compilation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use switchyard_tests::admin::admin_rows;
use switchyard_tests::plugin::{component, count, decisions, policy_row, with_plugin_path};
use switchyard_tests::{
    expect_sqlstate, scratch, skip_if_direct, Endpoint, Length, PgResultExt, Proxy, ProxyConfig, QueryMode,
    TestBed,
};

/// Polls `SHOW PLUGINS` until `check` accepts the `policy` row (or `limit` passes).
async fn wait_for_row(
    endpoint: &Endpoint,
    limit: Duration,
    what: &str,
    check: impl Fn(&HashMap<String, String>) -> bool,
) -> Result<HashMap<String, String>> {
    let deadline = Instant::now() + limit;
    loop {
        let row = policy_row(endpoint).await?;
        if check(&row) {
            return Ok(row);
        }
        if Instant::now() > deadline {
            bail!("{what}: not seen within {limit:?}; SHOW PLUGINS says {row:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A new client's `BEGIN`: accepted in transaction mode, refused with 25000 in statement
/// mode. Returns whether it was refused.
async fn begin_is_refused(endpoint: &Endpoint) -> Result<bool> {
    let c = endpoint.connect_app().await?;
    // BEGIN on its own: a transaction block inside one Query message ends before the
    // ReadyForQuery the pool-mode hook sees, and statement mode lets it through.
    match c.batch_execute("BEGIN").await {
        Ok(()) => {
            c.batch_execute("SELECT 1; COMMIT").await.ctx("COMMIT")?;
            Ok(false)
        }
        Err(e) => {
            expect_sqlstate(Err::<(), _>(e), &["25000"], "BEGIN")?;
            Ok(true)
        }
    }
}

fn short_hash(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))[..12].to_string()
}

/// The component with a custom section appended: the same behaviour, another hash (a
/// rebuilt plugin, as far as the proxy can tell).
fn rebuilt(component: &[u8], label: &str) -> Vec<u8> {
    let mut payload = vec![label.len() as u8];
    payload.extend_from_slice(label.as_bytes());
    payload.extend_from_slice(b"switchyard test build");
    let mut out = component.to_vec();
    out.push(0); // custom section
    out.push(payload.len() as u8); // LEB128, < 128
    out.extend_from_slice(&payload);
    out
}

/// Replaces `path` atomically (write aside, rename), as a deployment should.
fn install(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("wasm.new");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn plugin_dir(name: &str) -> Result<PathBuf> {
    scratch::fresh_dir(name)
}

/// pgbench -S -c 32 -T 30 runs while the plugin is swapped 10 times between statement and
/// transaction pooling (alternately by SIGHUP and by RELOAD): no failed transaction, no
/// dropped connection, and after each swap a new client sees the new version's behaviour.
#[tokio::test]
async fn swaps_under_load_lose_nothing_and_take_effect() -> Result<()> {
    skip_if_direct!();
    let plugin = component("pool-mode")?;
    let mut bed = TestBed::start_full(Default::default(), |cfg, _| {
        Ok(with_plugin_path(
            cfg.pool_size(4),
            &plugin,
            &[("mode", "transaction"), ("version_tag", "v0")],
        ))
    })?;
    bed.direct().pgbench("app", "app", "app").init(1)?;
    let endpoint = bed.endpoint();
    ensure!(!begin_is_refused(&endpoint).await?, "v0 is transaction mode");

    let bench = endpoint.pgbench("app", "app", "app").select_only();
    let load = tokio::spawn(async move {
        bench
            .run_async(QueryMode::Simple, 32, 2, Length::Seconds(30))
            .await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut swap_times = Vec::new();
    for i in 1..=10 {
        let statement = i % 2 == 1;
        let mode = if statement { "statement" } else { "transaction" };
        let tag = format!("v{i}-{mode}");
        let started = bed.proxy().context("proxy")?.config().clone();
        let cfg = with_plugin_path(started, &plugin, &[("mode", mode), ("version_tag", tag.as_str())]);
        let t0 = Instant::now();
        let proxy = bed.proxy().context("proxy")?;
        if statement {
            proxy.reload(cfg)?; // SIGHUP
        } else {
            proxy.write_config(cfg)?;
            let rows = admin_rows(&endpoint, "RELOAD").await?;
            let policy = rows
                .iter()
                .find(|r| r.get("item").map(String::as_str) == Some("plugin policy"))
                .with_context(|| format!("RELOAD answered {rows:?}"))?;
            ensure!(
                policy.get("outcome").map(String::as_str) == Some("loaded"),
                "RELOAD #{i}: {policy:?}"
            );
        }
        let suffix = format!("+{tag}");
        wait_for_row(
            &endpoint,
            Duration::from_secs(20),
            &format!("swap #{i} to {tag}"),
            |r| r.get("version").is_some_and(|v| v.ends_with(&suffix)),
        )
        .await?;
        swap_times.push(t0.elapsed());
        ensure!(
            begin_is_refused(&endpoint).await? == statement,
            "after swap #{i} to {tag}, a new client's BEGIN should be {}",
            if statement {
                "refused (statement mode)"
            } else {
                "accepted (transaction mode)"
            }
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    let result = load.await??;
    ensure!(
        result.status_ok && result.failed == 0 && result.processed > 0,
        "{}",
        result.output.describe(&format!(
            "pgbench during 10 swaps: expected 0 failed transactions and no aborted client, got {} failed",
            result.failed
        ))
    );
    let row = policy_row(&endpoint).await?;
    ensure!(count(&row, "failures")? == 0, "plugin call failures: {row:?}");
    eprintln!(
        "10 swaps under pgbench -S -c 32: {} transactions, {:.0} tps, 0 failed; swap to visible: {:?}",
        result.processed, result.tps, swap_times
    );
    bed.ensure_proxy_alive()
}

/// A changed component file is reloaded by itself; a broken replacement (bad init, another
/// WIT version, a sandbox escape, not a component at all) leaves the running version
/// serving, with the reason in SHOW PLUGINS; a good file after that is loaded again.
#[tokio::test]
async fn changed_plugin_files_reload_and_broken_ones_keep_the_old_version() -> Result<()> {
    skip_if_direct!();
    let dir = plugin_dir("reload-files")?;
    let path = dir.join("policy.wasm");
    let original = std::fs::read(component("pool-mode")?)?;
    install(&path, &original)?;
    let bed = TestBed::start_full(Default::default(), |cfg, _| {
        Ok(with_plugin_path(cfg.pool_size(2), &path, &[]).set("proxy.plugin_watch_interval", "200ms"))
    })?;
    let endpoint = bed.endpoint();
    let first = policy_row(&endpoint).await?;
    ensure!(first["hash"] == short_hash(&original), "{first:?}");

    let v2 = rebuilt(&original, "v2");
    install(&path, &v2)?;
    wait_for_row(&endpoint, Duration::from_secs(15), "the rebuilt file", |r| {
        r["hash"] == short_hash(&v2)
    })
    .await?;

    let client = endpoint.connect_app().await?;
    for (bad, bytes, expected) in [
        (
            "hostile-badinit",
            std::fs::read(component("hostile-badinit")?)?,
            "init failed",
        ),
        (
            "hostile-oldwit",
            std::fs::read(component("hostile-oldwit")?)?,
            "does not fit this proxy's interface",
        ),
        (
            "hostile-escape",
            std::fs::read(component("hostile-escape")?)?,
            "init failed",
        ),
        (
            "garbage",
            b"\0asm not really".to_vec(),
            "is not a valid component",
        ),
    ] {
        let calls_before = decisions(&policy_row(&endpoint).await?)?;
        install(&path, &bytes)?;
        let row = wait_for_row(
            &endpoint,
            Duration::from_secs(15),
            &format!("{bad} refused"),
            |r| r["last_error"].contains(expected),
        )
        .await?;
        ensure!(
            row["hash"] == short_hash(&v2),
            "after {bad}: the running version must stay v2 ({}), SHOW PLUGINS says {row:?}",
            short_hash(&v2)
        );
        // Still serving, through the plugin.
        for _ in 0..5 {
            let one: i32 = client.query_one("SELECT 1", &[]).await.ctx(bad)?.get(0);
            ensure!(one == 1);
        }
        let calls_after = decisions(&policy_row(&endpoint).await?)?;
        ensure!(
            calls_after >= calls_before + 5,
            "after {bad}: plugin decisions went from {calls_before} to {calls_after}: v2 is not serving"
        );
    }

    install(&path, &original)?;
    let row = wait_for_row(
        &endpoint,
        Duration::from_secs(15),
        "the original file again",
        |r| r["hash"] == short_hash(&original),
    )
    .await?;
    ensure!(
        row["last_error"].is_empty(),
        "a good load clears the error: {row:?}"
    );
    Ok(())
}

/// RELOAD of an invalid configuration changes nothing and says why (key and line); RELOAD
/// of a configuration naming a missing component keeps the running version.
#[tokio::test]
async fn reload_refuses_bad_configuration() -> Result<()> {
    skip_if_direct!();
    let plugin = component("pool-mode")?;
    let mut bed = TestBed::start_full(Default::default(), |cfg, _| {
        Ok(with_plugin_path(cfg, &plugin, &[("version_tag", "good")]))
    })?;
    let endpoint = bed.endpoint();
    let admin = endpoint.connect("admin", "admin", "switchyard").await?;
    let config_path = bed.proxy().context("proxy")?.config_path();
    let good = std::fs::read_to_string(&config_path)?;

    std::fs::write(&config_path, format!("{good}\n[pool]\nsize = \"many\"\n"))?;
    let err = admin.simple_query("RELOAD").await;
    let db = expect_sqlstate(err, &["F0000"], "RELOAD of an invalid file")?;
    ensure!(
        db.message().contains("reload refused") && db.message().contains("pool"),
        "{}",
        db.message()
    );

    let missing = with_plugin_path(
        bed.proxy().context("proxy")?.config().clone(),
        Path::new("/nonexistent/policy.wasm"),
        &[],
    );
    bed.proxy().context("proxy")?.write_config(missing)?;
    let rows = admin_rows(&endpoint, "RELOAD").await?;
    ensure!(
        rows.iter()
            .any(|r| r["outcome"] == "failed" && r["detail"].contains("cannot read")),
        "RELOAD with a missing component: {rows:?}"
    );
    let row = policy_row(&endpoint).await?;
    ensure!(row["version"].ends_with("+good"), "{row:?}");
    ensure!(row["last_error"].contains("cannot read"), "{row:?}");
    let c = endpoint.connect_app().await?;
    c.batch_execute("SELECT 1").await.ctx("after refused reloads")?;

    // Removing the plugin from the configuration hands pool mode back to the built-in.
    let without = bed
        .proxy()
        .context("proxy")?
        .config()
        .clone()
        .set("plugins", toml::Table::new());
    bed.proxy().context("proxy")?.write_config(without)?;
    let rows = admin_rows(&endpoint, "RELOAD").await?;
    ensure!(
        rows.iter()
            .any(|r| r["item"] == "plugin policy" && r["outcome"] == "removed"),
        "RELOAD without [plugins]: {rows:?}"
    );
    ensure!(
        admin_rows(&endpoint, "SHOW PLUGINS").await?.is_empty(),
        "no plugin should be listed"
    );
    c.batch_execute("BEGIN; SELECT 1; COMMIT")
        .await
        .ctx("built-in pool mode")?;
    bed.ensure_proxy_alive()
}

/// The first start compiles the component and caches the result; the next start loads it
/// from the cache. A cache directory others can write to is not used.
#[tokio::test]
async fn compiled_plugins_are_cached_across_restarts() -> Result<()> {
    skip_if_direct!();
    let pg = switchyard_tests::PgCluster::start()?;
    let plugin = component("pool-mode")?;
    let cache = plugin_dir("artifact-cache")?;
    let config = || {
        with_plugin_path(ProxyConfig::for_cluster(&pg), &plugin, &[])
            .set("proxy.plugin_cache_dir", cache.display().to_string())
    };
    let load_column = |proxy: &Proxy| {
        let endpoint = Endpoint {
            host: proxy.host(),
            port: proxy.port(),
        };
        async move { Ok::<_, anyhow::Error>(policy_row(&endpoint).await?["load"].clone()) }
    };

    let mut first = Proxy::start(config())?;
    let load = load_column(&first).await?;
    ensure!(load.ends_with("compiled"), "first start: {load}");
    first.stop();
    let artifacts = std::fs::read_dir(&cache)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .count();
    ensure!(artifacts == 1, "expected one cached artifact, found {artifacts}");

    let mut second = Proxy::start(config())?;
    let load = load_column(&second).await?;
    ensure!(load.ends_with("cached"), "second start: {load}");
    second.stop();

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777))?;
    let mut third = Proxy::start(config())?;
    let load = load_column(&third).await?;
    ensure!(load.ends_with("compiled"), "open cache directory: {load}");
    ensure!(
        third.log().contains("plugin cache disabled"),
        "the log should say why the cache is not used:\n{}",
        third.log_tail(20)
    );
    third.stop();
    Ok(())
}

/// `SHOW PLUGINS`' `last_error` follows what serves: a panic of the serving version
/// (`testing-std-user`, made to panic by a client named `panic-now`) shows with its message;
/// a broken file shows its load error instead; putting the serving version's file back
/// removes the load error (the panic, still this version's last failed call, shows again);
/// a new version loaded starts with an empty `last_error`.
#[tokio::test]
async fn last_error_follows_the_serving_version() -> Result<()> {
    skip_if_direct!();
    const PANIC: &str = "std-user: deliberate panic for application_name panic-now";
    let dir = plugin_dir("reload-last-error")?;
    let path = dir.join("policy.wasm");
    let original = std::fs::read(component("testing-std-user")?)?;
    install(&path, &original)?;
    let bed = TestBed::start_full(Default::default(), |cfg, _| {
        Ok(with_plugin_path(cfg.pool_size(2), &path, &[]).set("proxy.plugin_watch_interval", "200ms"))
    })?;
    let endpoint = bed.endpoint();
    let mut cfg = endpoint.config("app", "app", "app");
    cfg.application_name("panic-now");
    let panicking = switchyard_tests::client::connect(&cfg).await?;
    let one: i32 = panicking
        .query_one("SELECT 1", &[])
        .await
        .ctx("panic-now")?
        .get(0);
    ensure!(one == 1);
    let limit = Duration::from_secs(15);
    wait_for_row(&endpoint, limit, "the panic as last_error", |r| {
        r["last_error"].contains(PANIC)
    })
    .await?;

    install(&path, b"\0asm not really")?;
    wait_for_row(&endpoint, limit, "the broken file's load error", |r| {
        r["last_error"].contains("is not a valid component")
    })
    .await?;

    install(&path, &original)?;
    let row = wait_for_row(&endpoint, limit, "the load error cleared", |r| {
        !r["last_error"].contains("is not a valid component")
    })
    .await?;
    ensure!(
        row["hash"] == short_hash(&original) && row["last_error"].contains(PANIC),
        "the serving version's file is back: its own last failed call shows again: {row:?}"
    );

    let v2 = rebuilt(&original, "v2");
    install(&path, &v2)?;
    let row = wait_for_row(&endpoint, limit, "the new version", |r| {
        r["hash"] == short_hash(&v2)
    })
    .await?;
    ensure!(
        row["last_error"].is_empty(),
        "a new version starts with no last_error: {row:?}"
    );
    Ok(())
}
