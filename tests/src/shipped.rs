//! The shipped configuration, as `scripts/demo` runs it: each Patroni node's configuration
//! (`examples/patroni/patroni.yml`, the template users copy, with Switchyard's callbacks
//! pointed at the proxy) and the proxy's (the five bundled plugins, read routing). The demo
//! and the tests that must prove the demo's setup (a crash of the leader's node loses no
//! acknowledged write; transfers stay consistent through switchover, reload and restart)
//! share it.

use std::path::Path;

use crate::patroni::{ConfigTemplate, PatroniCluster, PatroniOptions};
use crate::proxy::{Proxy, ProxyConfig};
use crate::{env, plugin, ports, roles, scratch};
use anyhow::{ensure, Context, Result};

/// The callback's longest before-stop wait (see examples/patroni/README.md); the proxy's
/// hold_timeout (40 s) is above it and above Patroni's ttl (20 s).
const CALLBACK_BUDGET: &str = "20";

/// Each node's Patroni configuration: `examples/patroni/patroni.yml` with Switchyard's
/// callbacks (`examples/patroni/switchyard-callback`) pointed at the proxy.
pub fn template(proxy_addr: &str, password_file: &Path) -> ConfigTemplate {
    let examples = env::workspace_dir().join("examples/patroni");
    ConfigTemplate {
        path: examples.join("patroni.yml"),
        vars: [
            (
                "CALLBACK",
                examples.join("switchyard-callback").display().to_string(),
            ),
            ("PROXY", proxy_addr.to_owned()),
            ("ADMIN_PASSWORD_FILE", password_file.display().to_string()),
            ("CALLBACK_BUDGET", CALLBACK_BUDGET.to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into(),
    }
}

/// The admin password for the callbacks (`--password-file`), readable only by the OS user
/// that runs Patroni.
pub fn write_admin_password(path: &Path) -> Result<()> {
    std::fs::write(path, "admin\n").with_context(|| format!("writing {}", path.display()))?;
    env::set_mode(path, 0o600)?;
    env::chown_to_pg(path)
}

/// The proxy's configuration: cluster `main` of both nodes (with their REST APIs, for the
/// admin console's SWITCHOVER), database `app` for user app/app with read routing on (reads
/// on the replica, read-your-writes per session), the admin console for admin/admin,
/// transaction pooling (20 per pool), and the five bundled plugins.
pub fn proxy_config(cluster: &PatroniCluster, listen: &str) -> Result<ProxyConfig> {
    let mut config = ProxyConfig::for_patroni(cluster)?;
    config.proxy.listen = listen.to_owned();
    config.databases.retain(|name, _| name == roles::APP_DB);
    config.users.retain(|name, _| name == roles::APP.0);
    // Roles are only a hint: the proxy probes every node (as probe_user) and follows the
    // primary. hold_timeout is above Patroni's ttl (20 s): after a crash, transactions
    // wait for the election.
    let config = config
        .with_admin()
        .set("clusters.main.probe_user", roles::APP.0)
        .set("clusters.main.probe_database", roles::APP_DB)
        .set("clusters.main.probe_interval", "100ms")
        .set("clusters.main.hold_timeout", "40s")
        .set("databases.app.read_routing", "replicas")
        .set("databases.app.read_your_writes", "session");
    // The bundled plugins decide pool mode, node health, what a topology event does to
    // traffic, and which failed requests run again (SHOW PLUGINS on the admin console).
    let config = plugin::with_component(
        config,
        "pool",
        &plugin::component("pool-mode")?,
        "pool-mode",
        &[("mode", "transaction")],
    );
    let config = plugin::with_component(config, "health", &plugin::component("health")?, "health", &[]);
    let config = plugin::with_component(
        config,
        "switchover",
        &plugin::component("switchover")?,
        "switchover",
        &[("hold_ms", "40000"), ("drain_ms", "20000")],
    );
    let config = plugin::with_component(config, "retry", &plugin::component("retry")?, "retry", &[]);
    // Reads go to the replica, except a session's reads right after its own commit, which
    // go to the primary until the replica has replayed it (SHOW NODES shows reads and
    // writes per node).
    Ok(plugin::with_component(
        config,
        "router",
        &plugin::component("router")?,
        "router",
        &[],
    ))
}

/// The demo's setup on free ports: the cluster from the template (synchronous mode, the
/// callbacks; fails if the template no longer sets synchronous mode) and the proxy of
/// [`proxy_config`], adjusted by `configure`, in front of it.
pub fn start_on_free_ports(
    configure: impl FnOnce(ProxyConfig) -> ProxyConfig,
) -> Result<(PatroniCluster, Proxy)> {
    let listen = format!("127.0.0.1:{}", ports::free_port()?);
    let password_file = scratch::fresh_dir("shipped")?.join("admin.pass");
    write_admin_password(&password_file)?;
    let cluster =
        PatroniCluster::start_with(PatroniOptions::default().template(template(&listen, &password_file)))?;
    ensure!(
        cluster.options().synchronous_mode,
        "examples/patroni/patroni.yml no longer sets synchronous_mode: true"
    );
    let proxy = Proxy::start(configure(proxy_config(&cluster, &listen)?))?;
    Ok((cluster, proxy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patroni::{render_template, TEMPLATE_VARS};

    /// The template users copy has a value for every placeholder from the cluster or the
    /// demo (a new placeholder, or one in a comment, fails here before it fails the demo).
    #[test]
    fn the_patroni_template_renders_with_the_demos_values() {
        let t = template("127.0.0.1:6432", Path::new("/d/admin.pass"));
        let text = std::fs::read_to_string(&t.path).unwrap();
        let value = |name: &str| {
            let demo = t.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            demo.or_else(|| TEMPLATE_VARS.contains(&name).then(|| format!("<{name}>")))
        };
        let config = render_template(&text, value).unwrap();
        assert!(config.contains(
            "--proxy 127.0.0.1:6432 --node <NODE_HOST>:<PG_PORT> --password-file /d/admin.pass --budget 20"
        ));
    }
}
