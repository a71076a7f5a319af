//! Plugins in tests: the components built by `scripts/build-plugins` (in `plugins/dist`) and
//! by the examples' build scripts (other languages), configuration that loads one, a
//! `check-config` run that loads it once outside a test bed, and the admin console's view
//! of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::admin::admin_rows;
use crate::client::Endpoint;
use crate::env;
use crate::proxy::ProxyConfig;
use crate::tools::run_command;
use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};

/// `plugins/dist/<name>.wasm`, which must exist.
pub fn component(name: &str) -> Result<PathBuf> {
    let path = env::workspace_dir()
        .join("plugins/dist")
        .join(format!("{name}.wasm"));
    ensure!(
        path.exists(),
        "{} is missing: run scripts/build-plugins",
        path.display()
    );
    Ok(path)
}

/// The component an example's build script makes (`examples/<dir>/dist/<file>`, built by
/// `examples/<dir>/build`), or `None` when the test should skip (see [`env::skip`]). With
/// the environment variable `require` set (scripts/test builds the component and sets it), a
/// missing component is an error.
pub fn example_component(dir: &str, file: &str, require: &str) -> Result<Option<PathBuf>> {
    let path = env::workspace_dir()
        .join("examples")
        .join(dir)
        .join("dist")
        .join(file);
    if path.exists() {
        return Ok(Some(path));
    }
    ensure!(
        std::env::var_os(require).is_none(),
        "{} is missing and {require} is set: run examples/{dir}/build",
        path.display()
    );
    env::skip(&format!(
        "{} is not built (run examples/{dir}/build, which needs a package registry; \
         set {require}=1 to make this a failure)",
        path.display()
    ))?;
    Ok(None)
}

/// `switchyard check-config` on a configuration that loads `component` as plugin `policy`
/// serving `hook`, with `settings` (TOML lines of `[plugins.policy.settings]`); no server
/// is contacted. It uses the plugin cache the test bed's proxies use, so the first run
/// compiles a large component (a whole CPython or SpiderMonkey: tens of seconds in a debug
/// build, more than the test bed waits for a proxy to start) and caches it. Returns
/// (success, stderr).
pub fn check_config(component: &Path, hook: &str, settings: &str) -> Result<(bool, String)> {
    let dir = env::scratch_root()?.join(format!(
        "check-config-{}-{}",
        std::process::id(),
        component.file_stem().unwrap_or_default().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("check.toml");
    std::fs::write(
        &file,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:1\"\n\
             [clusters.main]\nnodes = [{{ host = \"127.0.0.1\", port = 1, role = \"primary\" }}]\n\
             [databases.app]\ncluster = \"main\"\n\
             [users.app]\npassword = \"app\"\n\
             [plugins.policy]\npath = {:?}\nhooks = [{hook:?}]\n\
             [plugins.policy.settings]\n{settings}\n",
            component.display().to_string()
        ),
    )?;
    let out = run_command(
        std::process::Command::new(env::proxy_binary()?)
            .arg("check-config")
            .arg(&file)
            // Where tests/src/proxy.rs points every proxy it starts.
            .env("XDG_CACHE_HOME", env::scratch_root()?.join("xdg-cache")),
        None,
        Duration::from_secs(600),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    Ok((out.status_ok, out.stderr))
}

/// `cfg` with plugin `name`: the component at `path` serving `hook` (`[plugins.<name>]`),
/// with `settings`.
pub fn with_component(
    cfg: ProxyConfig,
    name: &str,
    path: &Path,
    hook: &str,
    settings: &[(&str, &str)],
) -> ProxyConfig {
    let mut cfg = cfg
        .set(&format!("plugins.{name}.path"), path.display().to_string())
        .set(
            &format!("plugins.{name}.hooks"),
            toml::Value::Array(vec![hook.into()]),
        );
    for (k, v) in settings {
        cfg = cfg.set(&format!("plugins.{name}.settings.{k}"), *v);
    }
    cfg
}

/// `cfg` with the component at `path` serving pool mode (as plugin `policy`) for every
/// database, with `settings`, and the admin user `admin`/`admin`.
pub fn with_plugin_path(cfg: ProxyConfig, path: &Path, settings: &[(&str, &str)]) -> ProxyConfig {
    with_component(cfg, "policy", path, "pool-mode", settings).with_admin()
}

/// [`with_plugin_path`] for the built component `name` (see [`component`]).
pub fn with_plugin(cfg: ProxyConfig, name: &str, settings: &[(&str, &str)]) -> Result<ProxyConfig> {
    Ok(with_plugin_path(cfg, &component(name)?, settings))
}

/// The `SHOW PLUGINS` row of the plugin named `policy` (the one [`with_plugin`] configures).
pub async fn policy_row(endpoint: &Endpoint) -> Result<HashMap<String, String>> {
    admin_rows(endpoint, "SHOW PLUGINS")
        .await?
        .into_iter()
        .find(|r| r.get("name").map(String::as_str) == Some("policy"))
        .context("SHOW PLUGINS has no row for plugin \"policy\"")
}

/// A numeric column of a `SHOW PLUGINS` row.
pub fn count(row: &HashMap<String, String>, column: &str) -> Result<u64> {
    let text = row
        .get(column)
        .with_context(|| format!("SHOW PLUGINS has no column {column}"))?;
    text.parse()
        .with_context(|| format!("SHOW PLUGINS {column} = {text:?}"))
}

/// A plugin's cost as its `SHOW PLUGINS` row reports it, for a test to print: "p50 X, load
/// Y, N instances, C calls" (load: how long loading took and whether the code was compiled
/// or came from the cache).
pub fn cost(row: &HashMap<String, String>) -> Result<String> {
    Ok(format!(
        "p50 {}, load {}, {} instances, {} calls",
        row.get("p50").map_or("-", String::as_str),
        row.get("load").map_or("-", String::as_str),
        count(row, "instances")?,
        count(row, "calls")?
    ))
}

/// Decisions a plugin made: hook calls plus decisions it declared reusable and the proxy
/// answered for it.
pub fn decisions(row: &HashMap<String, String>) -> Result<u64> {
    Ok(count(row, "calls")? + count(row, "reused")?)
}

/// The first 12 hex digits of the SHA-256 of `bytes`: SHOW PLUGINS' `hash` of a component.
pub fn short_hash(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))[..12].to_string()
}

/// The component with a custom section appended: the same behaviour, another hash (a
/// rebuilt plugin, as far as the proxy can tell).
pub fn rebuilt(component: &[u8], label: &str) -> Vec<u8> {
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
pub fn install(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("wasm.new");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
