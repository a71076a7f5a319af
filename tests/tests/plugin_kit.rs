//! A plugin made as a new plugin author makes one: a crate outside this repository that
//! depends on the guest kit (`plugins/kit`, by absolute path), built with
//! `cargo build --target wasm32-wasip2 --release`, using Rust's std as anywhere else
//! (`HashMap`, `Instant`, `eprintln!`, a panic). The crate is `examples/rust-plugin`, the one
//! docs/plugins.md walks through, copied to a temporary directory at test time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_tests::admin::admin_rows;
use switchyard_tests::client::connect;
use switchyard_tests::plugin::{count, policy_row, with_plugin_path};
use switchyard_tests::tools::run_command;
use switchyard_tests::{describe_error, env, skip_if_direct, TestBed};
use tokio_postgres::Client;

/// The kit dependency line of examples/rust-plugin/Cargo.toml, relative to the example.
const KIT_DEPENDENCY: &str = r#"switchyard-plugin-kit = { path = "../../plugins/kit" }"#;
/// The application the test configures for session pooling (`session_apps`).
const SESSION_APP: &str = "reporting";
/// The application the test configures to make the plugin panic (`panic_app`).
const PANIC_APP: &str = "panic-now";
/// The message of the plugin's panic.
const PANIC: &str = r#"application_name "panic-now" is the panic_app setting"#;
/// How the kit's panic hook starts the line it writes to stderr.
const PANIC_HOOK: &str = "my-policy: panicked at src/lib.rs:";

/// A scratch directory outside the repository, removed when dropped.
struct OutOfTree(PathBuf);

impl Drop for OutOfTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes `examples/rust-plugin` a crate in a new directory under the system's temporary
/// directory (outside the repository), its kit dependency an absolute path, and builds it as
/// an author would, offline against the crates already in cargo's registry. The build uses
/// the plugins workspace's target directory and lock file so the kit's dependencies are not
/// compiled again; the time it took is printed. Returns the component, copied into `dir`.
fn build_out_of_tree(dir: &Path) -> Result<PathBuf> {
    let repo = env::workspace_dir();
    let example = repo.join("examples/rust-plugin");
    let manifest = std::fs::read_to_string(example.join("Cargo.toml"))?;
    ensure!(
        manifest.contains(KIT_DEPENDENCY),
        "examples/rust-plugin/Cargo.toml no longer has the line {KIT_DEPENDENCY:?}"
    );
    let kit = repo.join("plugins/kit");
    let manifest = manifest.replace(
        KIT_DEPENDENCY,
        &format!(
            "switchyard-plugin-kit = {{ path = {:?} }}",
            kit.display().to_string()
        ),
    );
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(dir.join("Cargo.toml"), manifest)?;
    std::fs::copy(example.join("src/lib.rs"), dir.join("src/lib.rs"))?;
    std::fs::copy(repo.join("plugins/Cargo.lock"), dir.join("Cargo.lock"))?;

    let target = repo.join("plugins/target");
    let started = Instant::now();
    let out = run_command(
        Command::new("cargo")
            .args(["build", "--offline", "--release", "--target", "wasm32-wasip2"])
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", &target),
        None,
        Duration::from_secs(600),
    )?;
    out.ensure_success().context(
        "building the out-of-tree plugin (offline: the kit's dependencies must be in cargo's \
         registry already, as scripts/build-plugins leaves them)",
    )?;
    eprintln!(
        "built {} from the kit in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    let component = dir.join("my-policy.wasm");
    std::fs::copy(target.join("wasm32-wasip2/release/my_policy.wasm"), &component)
        .context("the build made no my_policy.wasm")?;
    Ok(component)
}

async fn connect_as(bed: &TestBed, application_name: &str) -> Result<Client> {
    let mut config = bed.endpoint().config("app", "app", "app");
    config.application_name(application_name);
    connect(&config)
        .await
        .map_err(|e| anyhow::anyhow!(describe_error(&e)))
        .with_context(|| format!("connecting as {application_name:?}"))
}

async fn select(client: &Client, n: i32) -> Result<()> {
    let got: i32 = client.query_one("SELECT $1::int", &[&n]).await?.get(0);
    ensure!(got == n, "SELECT {n} returned {got}");
    Ok(())
}

/// `examples/rust-plugin` built from the kit in a directory outside the repository loads and
/// serves: its `init` line is logged (`my-policy 0.1.0: session pooling for ["reporting"]`),
/// `SHOW PLUGINS` gives its crate version with calls, no failures and no `last_error`; its
/// decisions, taken from the application name it keeps in a `HashMap`, are applied (with
/// both clients idle, only the `reporting` session holds a server: SHOW POOLS `in_use` 1);
/// its stderr line, with the time `Instant` measured, is in the proxy's log. A client named
/// `panic-now` makes it panic: that client still gets its row (the built-in policy answers),
/// the panic's message is in the proxy's log and in `SHOW PLUGINS` `last_error`, the failure
/// is counted, and the other sessions go on.
#[tokio::test]
async fn a_plugin_built_from_the_kit_outside_the_repository_serves_and_reports_its_panic() -> Result<()> {
    skip_if_direct!();
    let dir = OutOfTree(std::env::temp_dir().join(format!("switchyard-kit-plugin-{}", std::process::id())));
    ensure!(
        !dir.0.starts_with(env::workspace_dir()),
        "the temporary directory {} is inside the repository",
        dir.0.display()
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    let component = {
        let dir = dir.0.clone();
        tokio::task::spawn_blocking(move || build_out_of_tree(&dir)).await??
    };

    let settings = [("session_apps", SESSION_APP), ("panic_app", PANIC_APP)];
    let mut bed = TestBed::start_full(Default::default(), |cfg, _| {
        Ok(with_plugin_path(
            cfg.mode("transaction").pool_size(4),
            &component,
            &settings,
        ))
    })?;
    let endpoint = bed.endpoint();
    let reporting = connect_as(&bed, SESSION_APP).await?;
    let other = connect_as(&bed, "app").await?;
    for i in 0..5 {
        select(&reporting, i).await?;
        select(&other, i).await?;
    }
    let pools = admin_rows(&endpoint, "SHOW POOLS").await?;
    let in_use: Vec<&str> = pools
        .iter()
        .filter_map(|p| p.get("in_use").map(String::as_str))
        .collect();
    ensure!(
        in_use == ["1"],
        "SHOW POOLS: with both clients idle only the {SESSION_APP:?} session should hold a \
         server (the plugin's session pooling), got in_use {in_use:?}"
    );
    let row = policy_row(&endpoint).await?;
    ensure!(
        row["version"] == "0.1.0"
            && count(&row, "calls")? > 0
            && count(&row, "failures")? == 0
            && row["last_error"].is_empty(),
        "the kit plugin must answer without failures, version 0.1.0: {row:?}"
    );
    let proxy = bed.proxy().context("proxy")?;
    let log = proxy.log();
    for expected in [
        r#"my-policy 0.1.0: session pooling for ["reporting"]"#,
        r#"stderr: my-policy: session "#,
        r#"(application_name "reporting") looked up in "#,
    ] {
        ensure!(
            log.contains(expected),
            "{expected:?} is not in the proxy's log:\n{}",
            proxy.log_tail(40)
        );
    }

    let panicking = connect_as(&bed, PANIC_APP).await?;
    let n: i32 = panicking
        .query_one("SELECT 42", &[])
        .await
        .context("the client that made the plugin panic must get its answer")?
        .get(0);
    ensure!(n == 42, "SELECT 42 returned {n}");
    let row = policy_row(&endpoint).await?;
    ensure!(
        count(&row, "failures")? > 0
            && row["last_error"].contains(PANIC_HOOK)
            && row["last_error"].contains(PANIC),
        "SHOW PLUGINS must count the panic and give its message as last_error: {row:?}"
    );
    let proxy = bed.proxy().context("proxy")?;
    ensure!(
        proxy.log().contains(PANIC),
        "the panic's message is not in the proxy's log:\n{}",
        proxy.log_tail(40)
    );
    select(&other, 7).await?;
    select(&reporting, 8).await?;
    bed.ensure_proxy_alive()
}
