//! The configuration files the test bed generates are valid for the real
//! binary (`switchyard check-config`), so a schema change in the proxy shows
//! up here as one clear failure instead of every suite failing at start-up.

use anyhow::{ensure, Result};
use switchyard_tests::proxy::UserSection;
use switchyard_tests::tools::run_command;
use switchyard_tests::{env, skip_if_direct, PgCluster, ProxyConfig, TestBed};

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
