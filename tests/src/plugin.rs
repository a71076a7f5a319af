//! Plugins in tests: the components built by `scripts/build-plugins` (in `plugins/dist`),
//! configuration that loads one for pool mode, and the admin console's view of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::admin::admin_rows;
use crate::client::Endpoint;
use crate::env;
use crate::proxy::ProxyConfig;
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
