//! The configuration files the test bed generates are valid for the real
//! binary (`switchyard check-config`), so a schema change in the proxy shows
//! up here as one clear failure instead of every suite failing at start-up.
//! Secrets in a configuration stay secret: `check-config` and the proxy never
//! echo a bad password value, and warn about a file with secrets that its
//! group or others can read (at start, at each reload and in `check-config`), and about a
//! metrics endpoint beyond loopback.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use switchyard_tests::proxy::{Launch, NodeEntry, UserSection};
use switchyard_tests::tools::{run_command, CmdOutput};
use switchyard_tests::{env, scratch, skip_if_direct, PgCluster, Proxy, ProxyConfig, TestBed};

#[test]
fn generated_configs_pass_check_config() -> Result<()> {
    skip_if_direct!();
    let binary = env::proxy_binary()?;
    let pg = PgCluster::start_with_replica()?;
    let verifier = postgres_protocol::password::scram_sha_256(b"app");
    let md5 = postgres_protocol::password::md5(b"md5pass", "md5user");
    let variants = [
        ("default", ProxyConfig::for_cluster(&pg)),
        (
            "session mode, small pool, timeouts",
            ProxyConfig::for_cluster(&pg)
                .mode("session")
                .pool_size(1)
                .query_wait_timeout("1s")
                .client_login_timeout("2s"),
        ),
        (
            "verifier and md5 hash",
            ProxyConfig::for_cluster(&pg)
                .user(
                    "app",
                    UserSection {
                        password: verifier,
                        server_password: Some("app".into()),
                        auth: Some("scram-sha-256".into()),
                    },
                )
                .user(
                    "md5user",
                    UserSection {
                        password: md5,
                        server_password: None,
                        auth: Some("md5".into()),
                    },
                ),
        ),
        (
            "per-database overrides and admin",
            ProxyConfig::for_cluster(&pg)
                .set("databases.app.pool_size", 2)
                .set("databases.app.pool_mode", "session")
                .set("databases.app.dbname", "app")
                .set("admin.users", vec!["postgres"]),
        ),
    ];
    let dir = switchyard_tests::scratch::fresh_dir("config-check")?;
    let mut failures = Vec::new();
    for (i, (what, mut cfg)) in variants.into_iter().enumerate() {
        cfg.proxy.listen = "127.0.0.1:6432".into();
        let text = cfg.to_toml()?;
        let path = dir.join(format!("variant-{i}.toml"));
        std::fs::write(&path, &text)?;
        let out = run_command(
            std::process::Command::new(&binary).arg("check-config").arg(&path),
            None,
            std::time::Duration::from_secs(30),
        )?;
        if !out.status_ok {
            failures.push(format!("{}\n--- config ---\n{text}", out.describe(what)));
        }
    }
    switchyard_tests::scratch::remove_dir(&dir);
    ensure!(
        failures.is_empty(),
        "generated configs rejected by `switchyard check-config`:\n{}",
        failures.join("\n\n")
    );
    Ok(())
}

#[tokio::test]
async fn proxy_starts_with_a_primary_and_a_replica() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_full(
        switchyard_tests::ClusterOptions {
            replicas: 1,
            ..Default::default()
        },
        |cfg, _| Ok(cfg),
    )?;
    let client = bed.endpoint().connect_app().await?;
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| anyhow::anyhow!(switchyard_tests::describe_error(&e)))?
        .get(0);
    ensure!(
        !in_recovery,
        "a read-write client of database app was routed to the replica"
    );
    client
        .batch_execute("CREATE TABLE written_through_proxy (x int)")
        .await
        .map_err(|e| anyhow::anyhow!(switchyard_tests::describe_error(&e)))?;
    bed.ensure_proxy_alive()
}

/// A configuration of one node that is never connected to (check-config does not connect).
fn offline_config() -> ProxyConfig {
    let mut cfg = ProxyConfig::for_nodes(vec![NodeEntry {
        host: "127.0.0.1".into(),
        port: 1,
        role: "primary".into(),
        patroni_api: None,
    }]);
    cfg.proxy.listen = "127.0.0.1:6432".into();
    cfg
}

/// `switchyard check-config path`.
fn check_config(path: &Path) -> Result<CmdOutput> {
    run_command(
        std::process::Command::new(env::proxy_binary()?)
            .arg("check-config")
            .arg(path),
        None,
        std::time::Duration::from_secs(30),
    )
}

/// Writes `text` to `path` with `mode`.
fn write_with_mode(path: &Path, text: &str, mode: u32) -> Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `check-config` on a file with passwords: mode 0644 passes with a warning naming the
/// file, its mode and `chmod 600`; mode 0600 passes without one. (The old binary printed
/// no warning.)
#[test]
fn check_config_warns_about_a_readable_file_with_secrets() -> Result<()> {
    skip_if_direct!();
    let dir = scratch::fresh_dir("config-secrets")?;
    let path = dir.join("switchyard.toml");
    let text = offline_config().to_toml()?;

    write_with_mode(&path, &text, 0o644)?;
    let out = check_config(&path)?;
    ensure!(out.status_ok, "{}", out.describe("check-config, mode 0644"));
    let shown = path.display().to_string();
    ensure!(
        out.stderr.contains("warning:")
            && out.stderr.contains(&shown)
            && out.stderr.contains("mode 0644")
            && out.stderr.contains("chmod 600"),
        "no warning about the readable file: {}",
        out.describe("check-config, mode 0644")
    );

    write_with_mode(&path, &text, 0o600)?;
    let out = check_config(&path)?;
    ensure!(out.status_ok, "{}", out.describe("check-config, mode 0600"));
    ensure!(
        !out.stderr.contains("warning:"),
        "a private file got a warning: {}",
        out.describe("check-config, mode 0600")
    );
    scratch::remove_dir(&dir);
    Ok(())
}

/// A bad value under `password` (an integer, an unterminated string) and under a mistyped
/// `passwrod`: `check-config` fails naming the key and the line, and the value appears
/// nowhere in its output. (The old binary printed the offending line, value included.)
#[test]
fn check_config_never_echoes_a_password() -> Result<()> {
    skip_if_direct!();
    let dir = scratch::fresh_dir("config-secrets")?;
    let path = dir.join("switchyard.toml");
    let text = offline_config().to_toml()?;
    let line = text
        .lines()
        .position(|l| l.starts_with("password = \"app\""))
        .map(|i| i + 1)
        .expect("the app user's password line");
    for (bad, key) in [
        ("password = 987654321", "password"),
        ("password = \"s3cr3t-Value", "password"),
        ("passwrod = \"s3cr3t-Value\"", "passwrod"),
    ] {
        let broken = text.replacen("password = \"app\"", bad, 1);
        write_with_mode(&path, &broken, 0o600)?;
        let out = check_config(&path)?;
        let all = format!("{}{}", out.stdout, out.stderr);
        println!("{bad:?}: {}", all.trim());
        ensure!(!out.status_ok, "check-config accepted {bad:?}");
        ensure!(
            !all.contains("987654321") && !all.contains("s3cr3t"),
            "check-config echoed the password: {all}"
        );
        ensure!(
            all.contains(&format!("line {line}")) && all.contains(key),
            "the error should name line {line} and {key:?}: {all}"
        );
    }
    scratch::remove_dir(&dir);
    Ok(())
}

/// The proxy started on a group-readable file with passwords (mode 0640) logs the warning
/// naming the file; on a private one (0600) it does not. (The old binary logged nothing.)
#[test]
fn proxy_warns_at_start_about_a_readable_file_with_secrets() -> Result<()> {
    skip_if_direct!();
    let pg = PgCluster::start()?;
    for (mode, warned) in [(0o640, true), (0o600, false)] {
        let dir = scratch::fresh_dir("config-secrets")?;
        let path = dir.join("switchyard.toml");
        // The launcher rewrites this file, which keeps its mode.
        write_with_mode(&path, "", mode)?;
        let launch = Launch {
            dir: Some(dir.clone()),
            ..Default::default()
        };
        let proxy = Proxy::start_with(ProxyConfig::for_cluster(&pg), launch)?;
        ensure!(
            proxy.config_path() == path,
            "the launcher wrote {}",
            proxy.config_path().display()
        );
        let log = proxy.log();
        let logged = log.lines().any(|l| {
            l.contains("WARN") && l.contains(&path.display().to_string()) && l.contains("chmod 600")
        });
        ensure!(
            logged == warned,
            "mode {mode:04o}: expected the warning {}:\n{}",
            if warned { "logged" } else { "absent" },
            proxy.log_tail(20)
        );
        drop(proxy);
        scratch::remove_dir(&dir);
    }
    Ok(())
}

/// `[proxy] auth_hba_file`: `check-config` reads the rule file too. A good file passes; a
/// file with an unknown method on line 3 fails naming the file, line 3 and the methods to
/// use; a `cert` rule without `tls_client_ca` fails naming its line (each message printed
/// once: the first version printed it twice); a missing file fails naming its path.
#[test]
fn check_config_reads_the_auth_hba_file() -> Result<()> {
    skip_if_direct!();
    let dir = scratch::fresh_dir("config-hba")?;
    let path = dir.join("switchyard.toml");
    let hba = dir.join("hba.conf");
    let text = offline_config()
        .set("proxy.auth_hba_file", hba.display().to_string())
        .to_toml()?;
    write_with_mode(&path, &text, 0o600)?;
    let good = "# rules\nhostssl all all 10.0.0.0/8 scram-sha-256\nhost all all all reject\n";
    for (rules, expected) in [
        (good.to_owned(), None),
        (
            good.replace("reject", "trust"),
            Some(format!(
                "{}:3: unknown method \"trust\": use scram-sha-256, md5, password, cert or reject",
                hba.display()
            )),
        ),
        (
            good.replace("reject", "cert").replace("host all", "hostssl all"),
            Some(format!("{}:3: cert needs [proxy] tls_client_ca", hba.display())),
        ),
    ] {
        std::fs::write(&hba, &rules)?;
        let out = check_config(&path)?;
        let all = format!("{}{}", out.stdout, out.stderr);
        println!("{:?}: {}", rules.lines().nth(2).unwrap_or(""), all.trim());
        match expected {
            None => ensure!(out.status_ok, "{}", out.describe("check-config with good rules")),
            Some(message) => ensure!(
                !out.status_ok && all.matches(&message).count() == 1,
                "expected {message:?}, once: {}",
                out.describe("check-config with a bad rule file")
            ),
        }
    }
    std::fs::remove_file(&hba)?;
    let out = check_config(&path)?;
    ensure!(
        !out.status_ok && out.stderr.contains(&format!("cannot read {}", hba.display())),
        "{}",
        out.describe("check-config with a missing rule file")
    );
    scratch::remove_dir(&dir);
    Ok(())
}

/// `check-config` on a private (0600) file with `metrics_listen = "0.0.0.0:9127"`: passes
/// with a warning naming `proxy.metrics_listen`, the address, that the endpoint has no
/// authentication, and loopback; with `"127.0.0.1:9127"` it passes without a warning.
#[test]
fn check_config_warns_about_metrics_beyond_loopback() -> Result<()> {
    skip_if_direct!();
    let dir = scratch::fresh_dir("config-metrics")?;
    let path = dir.join("switchyard.toml");
    let exposed = offline_config()
        .set("proxy.metrics_listen", "0.0.0.0:9127")
        .to_toml()?;
    write_with_mode(&path, &exposed, 0o600)?;
    let out = check_config(&path)?;
    ensure!(
        out.status_ok,
        "{}",
        out.describe("check-config, metrics on 0.0.0.0")
    );
    println!("check-config, metrics on 0.0.0.0:\n{}", out.stderr.trim());
    ensure!(
        out.stderr.contains("warning:")
            && out.stderr.contains("proxy.metrics_listen")
            && out.stderr.contains("0.0.0.0:9127")
            && out.stderr.contains("no authentication")
            && out.stderr.contains("loopback"),
        "no warning about the metrics endpoint: {}",
        out.describe("check-config, metrics on 0.0.0.0")
    );

    let private = offline_config()
        .set("proxy.metrics_listen", "127.0.0.1:9127")
        .to_toml()?;
    write_with_mode(&path, &private, 0o600)?;
    let out = check_config(&path)?;
    ensure!(
        out.status_ok,
        "{}",
        out.describe("check-config, metrics on loopback")
    );
    ensure!(
        !out.stderr.contains("warning:"),
        "metrics on loopback got a warning: {}",
        out.describe("check-config, metrics on loopback")
    );
    scratch::remove_dir(&dir);
    Ok(())
}

/// The proxy started on a private (0600) file logs no warning about it; after the file is
/// made readable by others (0644) and the proxy gets SIGHUP, the reload logs the warning
/// naming the file and `chmod 600` (within 10 s), and the proxy still serves.
#[tokio::test]
async fn reload_repeats_the_warning_about_a_readable_file_with_secrets() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start()?;
    let proxy = bed.proxy().context("a proxy")?;
    let path = proxy.config_path();
    let warned = |log: &str| {
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&path.display().to_string()) && l.contains("chmod 600"))
    };
    ensure!(!warned(&proxy.log()), "a private file got a warning at start");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    let config = proxy.config().clone();
    proxy.reload(config)?;
    let started = std::time::Instant::now();
    while !warned(&proxy.log()) {
        ensure!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no warning about the readable file 10 s after SIGHUP:\n{}",
            proxy.log_tail(20)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!("warned {:?} after SIGHUP", started.elapsed());
    bed.endpoint()
        .connect_app()
        .await?
        .simple_query("SELECT 1")
        .await
        .map_err(|e| anyhow::anyhow!(switchyard_tests::describe_error(&e)))?;
    bed.ensure_proxy_alive()
}

/// `[proxy] listen = "[::1]:PORT"` and the cluster's node at `host = "::1"` (Postgres
/// listening on `::1` too): tokio-postgres connects to the proxy over `::1` and runs a
/// query, and the server connection the proxy opened comes from `::1` as Postgres sees it
/// (`inet_client_addr()`). Skipped (a failure under SWITCHYARD_NO_SKIP) only on a machine
/// without `::1`.
#[tokio::test]
async fn proxy_listens_and_connects_over_ipv6() -> Result<()> {
    skip_if_direct!();
    if !env::has_ipv6_loopback() {
        return env::skip("this machine has no IPv6 loopback address (::1)");
    }
    let opts = switchyard_tests::ClusterOptions::default()
        .setting("listen_addresses", "127.0.0.1,::1")
        .hba_first("host all all ::1/128 scram-sha-256")?;
    let mut bed = TestBed::start_full(opts, |mut cfg, _| {
        cfg.proxy.listen = format!("[::1]:{}", switchyard_tests::ports::free_port()?);
        for cluster in cfg.clusters.values_mut() {
            for node in &mut cluster.nodes {
                node.host = "::1".into();
            }
        }
        Ok(cfg)
    })?;
    let ep = bed.endpoint();
    println!("the proxy listens on {}", bed.proxy().context("a proxy")?.addr());
    let client = ep.connect_app().await?;
    let row = client
        .query_one("SELECT inet_client_addr()::text, 6 * 7", &[])
        .await
        .map_err(|e| anyhow::anyhow!(switchyard_tests::describe_error(&e)))?;
    let (from, answer): (String, i32) = (row.get(0), row.get(1));
    println!("through the proxy over ::1: {answer}; Postgres sees the proxy's server connection from {from}");
    ensure!(answer == 42, "got {answer}");
    ensure!(
        from.starts_with("::1"),
        "the proxy's server connection came from {from}, not ::1"
    );
    bed.ensure_proxy_alive()
}
