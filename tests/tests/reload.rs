//! Replacing plugins while traffic flows: SIGHUP and the admin console's RELOAD re-read the
//! configuration and swap one component for another (a transaction in flight finishes on
//! the old version, the next one runs on the new), a changed component file is picked up by itself, and a version that fails
//! to compile, link or init leaves the previous one serving with the reason visible. The
//! compiled-artifact cache makes a restart skip compilation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::admin::{admin_rows, pool_row};
use switchyard_tests::plugin::{
    component, count, decisions, install, policy_row, rebuilt, short_hash, with_plugin_path,
};
use switchyard_tests::{
    describe_error, expect_sqlstate, scratch, skip_if_direct, Endpoint, PgResultExt, Proxy, ProxyConfig,
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

fn plugin_dir(name: &str) -> Result<PathBuf> {
    scratch::fresh_dir(name)
}

/// The two different components the swap test alternates between, and what each decides
/// when a transaction ends: `testing-std-user` releases the server (transaction pooling,
/// version `…+std-user`), the bundled `pool-mode` in session mode keeps it (version
/// `…+v<i>`, the swap's number).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Version {
    StdUserReleases,
    PoolModeKeeps,
}

impl Version {
    /// The configuration serving this version as swap `i`.
    fn config(self, base: ProxyConfig, i: usize) -> Result<ProxyConfig> {
        Ok(match self {
            Version::StdUserReleases => with_plugin_path(base, &component("testing-std-user")?, &[]),
            Version::PoolModeKeeps => with_plugin_path(
                base,
                &component("pool-mode")?,
                &[("mode", "session"), ("version_tag", &format!("v{i}"))],
            ),
        })
    }

    /// Whether SHOW PLUGINS' `version` is this version as swap `i`.
    fn shown(self, version: &str, i: usize) -> bool {
        match self {
            Version::StdUserReleases => version.ends_with("+std-user"),
            Version::PoolModeKeeps => version.ends_with(&format!("+v{i}")),
        }
    }

    /// Checkouts the next transaction of a client makes after a transaction this version
    /// ended: 1 if it released the server, 0 if it kept it.
    fn checkouts_after(self) -> u64 {
        match self {
            Version::StdUserReleases => 1,
            Version::PoolModeKeeps => 0,
        }
    }

    fn other(self) -> Self {
        match self {
            Version::StdUserReleases => Version::PoolModeKeeps,
            Version::PoolModeKeeps => Version::StdUserReleases,
        }
    }
}

/// The `checkouts` counter of `pool` in SHOW POOLS.
async fn checkouts(endpoint: &Endpoint, pool: &str) -> Result<u64> {
    Ok(pool_row(endpoint, pool).await?["checkouts"].parse()?)
}

/// One transaction of the load: when it began and ended, and how it ended.
struct Tx {
    began: Instant,
    ended: Instant,
    outcome: Result<(), String>,
}

/// A load client: `BEGIN; SELECT pg_sleep(0.4); SELECT 1; COMMIT` (each its own statement,
/// so each ReadyForQuery inside the block asks the pool-mode plugin) until `stop`.
async fn hold_transactions(client: tokio_postgres::Client, stop: Arc<AtomicBool>) -> Vec<Tx> {
    let mut done = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        let run = async {
            for sql in ["BEGIN", "SELECT pg_sleep(0.4)", "SELECT 1", "COMMIT"] {
                client
                    .batch_execute(sql)
                    .await
                    .map_err(|e| format!("{sql}: {}", describe_error(&e)))?;
            }
            Ok(())
        };
        let outcome = match tokio::time::timeout(Duration::from_secs(20), run).await {
            Ok(outcome) => outcome,
            Err(_) => Err("no answer within 20 s".to_owned()),
        };
        let failed = outcome.is_err();
        done.push(Tx {
            began,
            ended: Instant::now(),
            outcome,
        });
        if failed {
            break;
        }
    }
    done
}

/// The plugin serving pool mode is swapped 10 times between two different components
/// ([`Version`]: `testing-std-user`, which releases the server when a transaction ends, and
/// `pool-mode` in session mode, which keeps it), alternately by SIGHUP and by RELOAD, while
/// 4 clients hold transactions open (`BEGIN; SELECT pg_sleep(0.4); SELECT 1; COMMIT`) the
/// whole time. Around each swap a witness client (its own pool, `app/md5user`, so its
/// `checkouts` count is its own) opens a transaction before the swap and commits it after
/// the new version shows in SHOW PLUGINS; the checkouts its next two transactions make show
/// who decided: the first must make 1 checkout if the OLD version ended the in-flight
/// transaction by releasing, 0 if by keeping (so the in-flight transaction finished on the
/// old version), the second likewise for the NEW version (so the next transaction ran on
/// the new one). Asserts also: every load transaction commits, at least one was in flight
/// across each swap, every load client began a transaction between each swap and the next
/// and committed it (the load ran through all 10), and the plugin never failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_between_two_components_finish_transactions_on_the_old_and_start_the_next_on_the_new(
) -> Result<()> {
    skip_if_direct!();
    const CLIENTS: usize = 4;
    const WITNESS_POOL: &str = "app/md5user";
    let mut base = None;
    let mut bed = TestBed::start_full(Default::default(), |cfg, _| {
        let cfg = cfg.pool_size(8);
        base = Some(cfg.clone());
        Version::StdUserReleases.config(cfg, 0)
    })?;
    let base = base.context("base configuration")?;
    let endpoint = bed.endpoint();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..CLIENTS {
        let client = endpoint.connect_app().await?;
        load.push(tokio::spawn(hold_transactions(client, stop.clone())));
    }
    let (user, password) = switchyard_tests::roles::MD5;
    let witness = endpoint.connect(user, password, "app").await?;
    witness.batch_execute("SELECT 1").await.ctx("witness")?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut serving = Version::StdUserReleases;
    // (when the swap was asked for, when SHOW PLUGINS showed it)
    let mut swaps = Vec::new();
    for i in 1..=10 {
        let next = serving.other();
        // The witness's in-flight transaction begins on the serving version.
        witness.batch_execute("BEGIN").await.ctx("witness BEGIN")?;
        witness.batch_execute("SELECT 1").await.ctx("witness SELECT 1")?;
        let cfg = next.config(base.clone(), i)?;
        let asked = Instant::now();
        let proxy = bed.proxy().context("proxy")?;
        if i % 2 == 1 {
            proxy.reload(cfg)?; // SIGHUP
        } else {
            proxy.write_config(cfg)?;
            let rows = admin_rows(&endpoint, "RELOAD").await?;
            ensure!(
                rows.iter()
                    .any(|r| r["item"] == "plugin policy" && r["outcome"] == "loaded"),
                "RELOAD #{i}: {rows:?}"
            );
        }
        wait_for_row(
            &endpoint,
            Duration::from_secs(20),
            &format!("swap #{i} to {next:?}"),
            |r| next.shown(&r["version"], i),
        )
        .await?;
        let shown = Instant::now();
        swaps.push((asked, shown));
        // The in-flight transaction goes on and ends after the swap.
        for sql in ["SELECT pg_sleep(0.05)", "SELECT 2", "COMMIT"] {
            witness
                .batch_execute(sql)
                .await
                .with_context(|| format!("swap #{i}: the witness's in-flight transaction, {sql}"))?;
        }
        let mut made = Vec::new();
        for _ in 0..2 {
            let before = checkouts(&endpoint, WITNESS_POOL).await?;
            witness
                .batch_execute("BEGIN; SELECT 1; COMMIT")
                .await
                .with_context(|| format!("swap #{i}: the witness's next transaction"))?;
            made.push(checkouts(&endpoint, WITNESS_POOL).await? - before);
        }
        eprintln!(
            "swap #{i} to {next:?}: visible after {:?}; the witness's next two transactions made {made:?} checkouts",
            shown - asked
        );
        ensure!(
            made[0] == serving.checkouts_after(),
            "swap #{i}: the transaction in flight across the swap was ended by the new version \
             ({next:?}), not the old one ({serving:?}): the next transaction made {} checkouts, expected {}",
            made[0],
            serving.checkouts_after()
        );
        ensure!(
            made[1] == next.checkouts_after(),
            "swap #{i}: the first transaction after the swap did not run on the new version ({next:?}): \
             the one after it made {} checkouts, expected {}",
            made[1],
            next.checkouts_after()
        );
        serving = next;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let ended = Instant::now();
    let mut per_client = Vec::new();
    for task in load {
        per_client.push(task.await?);
    }

    let mut failures = Vec::new();
    for (c, txs) in per_client.iter().enumerate() {
        for tx in txs {
            if let Err(e) = &tx.outcome {
                failures.push(format!("client {c}: {e}"));
            }
        }
        // The client began a transaction between each swap and the next (or the end), on
        // the version that swap installed, and it committed.
        for (i, (_, shown)) in swaps.iter().enumerate() {
            let until = swaps.get(i + 1).map_or(ended, |(asked, _)| *asked);
            if !txs
                .iter()
                .any(|t| t.outcome.is_ok() && t.began >= *shown && t.began < until)
            {
                failures.push(format!(
                    "client {c}: no transaction began between swap #{} and the next and committed",
                    i + 1
                ));
            }
        }
    }
    let across: Vec<usize> = swaps
        .iter()
        .map(|(asked, _)| {
            per_client
                .iter()
                .flatten()
                .filter(|t| t.outcome.is_ok() && t.began < *asked && t.ended > *asked)
                .count()
        })
        .collect();
    let committed = per_client.iter().flatten().filter(|t| t.outcome.is_ok()).count();
    eprintln!("{committed} load transactions committed; in flight across each swap: {across:?}");
    ensure!(
        failures.is_empty(),
        "the load through 10 swaps:\n  {}",
        failures.join("\n  ")
    );
    ensure!(
        across.iter().all(|&n| n > 0),
        "some swap had no load transaction in flight across it: {across:?}"
    );
    let row = policy_row(&endpoint).await?;
    ensure!(count(&row, "failures")? == 0, "plugin call failures: {row:?}");
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
