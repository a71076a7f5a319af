//! Plugins in tests: the components built by `scripts/build-plugins` (in `plugins/dist`),
//! configuration that loads one for pool mode, and the admin console's view of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::admin::admin_rows;
use crate::client::Endpoint;
use crate::env;
use crate::proxy::ProxyConfig;
use anyhow::{ensure, Context, Result};

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

/// Decisions a plugin made: hook calls plus decisions it declared reusable and the proxy
/// answered for it.
pub fn decisions(row: &HashMap<String, String>) -> Result<u64> {
    Ok(count(row, "calls")? + count(row, "reused")?)
}
