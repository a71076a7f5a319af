//! Checks that serde cannot express: references between sections and sane values.

use super::{line_col, Config, UserConfig};
use std::path::Path;

/// Bounds of `proxy.max_message_size`: room for an ordinary statement, and Postgres' own
/// limit on a message (`PQ_LARGE_MESSAGE_LIMIT`, 1 GiB).
const MIN_MESSAGE_SIZE: usize = 8 * 1024;
const MAX_MESSAGE_SIZE: usize = 1 << 30;

/// One problem found, located in the source text.
pub(super) struct Violation {
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// Line of the `[section.name]` header (or `section.name` key) for errors on whole entries.
fn header_line(text: &str, section: &str, name: &str) -> usize {
    let candidates = [format!("[{section}.{name}]"), format!("[{section}.\"{name}\"]")];
    text.lines()
        .position(|l| candidates.iter().any(|c| l.trim_start().starts_with(c.as_str())))
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// Line of `key = ...` inside the table `[section]`, or of the header if the key is absent.
fn key_line(text: &str, section: &str, key: &str) -> usize {
    let header = format!("[{section}]");
    let mut in_section = false;
    let mut header_at = 1;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with('[') {
            in_section = t.starts_with(header.as_str());
            if in_section {
                header_at = i + 1;
            }
        } else if in_section
            && t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return i + 1;
        }
    }
    header_at
}

pub(super) fn validate(config: &Config, text: &str) -> Result<(), Violation> {
    let check = Check { config, text };
    check.proxy()?;
    check.clusters_and_databases()?;
    check.users()?;
    check.plugins()?;
    check.plugin_overlaps()?;
    check.trace()
}

/// The configuration under check and its source text, for locating each violation.
struct Check<'a> {
    config: &'a Config,
    text: &'a str,
}

impl Check<'_> {
    /// A violation at a value whose span serde kept.
    fn at(&self, span: std::ops::Range<usize>, key: String, message: String) -> Violation {
        Violation {
            line: line_col(self.text, span.start).0,
            key,
            message,
        }
    }

    /// A violation of `key` in the table `[section]`.
    fn key(&self, section: &str, key: &str, message: String) -> Violation {
        Violation {
            line: key_line(self.text, section, key),
            key: format!("{section}.{key}"),
            message,
        }
    }

    /// A violation of a whole `[section.name]` entry, reported as `key`.
    fn entry(&self, section: &str, name: &str, key: String, message: String) -> Violation {
        Violation {
            line: header_line(self.text, section, name),
            key,
            message,
        }
    }

    /// `unknown cluster "x"; defined clusters: a, b`.
    fn unknown_cluster(&self, name: &str) -> String {
        let known: Vec<&str> = self.config.clusters.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        format!("unknown cluster {name:?}; defined clusters: {known}")
    }

    /// `[trace]`.
    fn trace(&self) -> Result<(), Violation> {
        let trace = &self.config.trace;
        if trace.max_bytes < super::types::MIN_TRACE_BYTES {
            return Err(self.key(
                "trace",
                "max_bytes",
                format!("must be at least {} (64 KiB)", super::types::MIN_TRACE_BYTES),
            ));
        }
        if trace.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(self.key(
                "trace",
                "path",
                "must not be empty (leave it out to record nothing)".into(),
            ));
        }
        Ok(())
    }

    /// `[pool]` and `[proxy]`.
    fn proxy(&self) -> Result<(), Violation> {
        let proxy = &self.config.proxy;
        if self.config.pool.size == 0 {
            return Err(self.key("pool", "size", "must be at least 1".into()));
        }
        if self.config.pool.pipeline && self.config.pool.mode == super::PoolMode::Session {
            return Err(self.key(
                "pool",
                "pipeline",
                "needs transaction or statement pooling: in session pooling a client keeps its server".into(),
            ));
        }
        if proxy.max_unauthenticated_conn == 0 {
            return Err(self.key(
                "proxy",
                "max_unauthenticated_conn",
                "must be at least 1 (no client could log in)".into(),
            ));
        }
        if proxy.admin_reserved_conn >= proxy.max_client_conn {
            return Err(self.key(
                "proxy",
                "admin_reserved_conn",
                format!(
                    "must be below max_client_conn ({}): no other client could connect",
                    proxy.max_client_conn
                ),
            ));
        }
        if proxy.tls_cert.is_some() != proxy.tls_key.is_some() {
            return Err(self.key(
                "proxy",
                "tls_cert",
                "tls_cert and tls_key must be given together".into(),
            ));
        }
        if proxy.tls_client_ca.is_some() && proxy.tls_cert.is_none() {
            return Err(self.key(
                "proxy",
                "tls_client_ca",
                "client certificates need client-facing TLS: give tls_cert and tls_key".into(),
            ));
        }
        if proxy.tls_client_ca.is_some() && proxy.client_tls() == super::ClientTlsMode::Disable {
            return Err(self.key(
                "proxy",
                "tls_client_ca",
                "client_tls = \"disable\" turns client-facing TLS off, so no certificate could be presented"
                    .into(),
            ));
        }
        if proxy
            .client_tls
            .is_some_and(|m| m != super::ClientTlsMode::Disable)
            && proxy.tls_cert.is_none()
        {
            return Err(self.key(
                "proxy",
                "client_tls",
                format!(
                    "{:?} needs client-facing TLS: give tls_cert and tls_key",
                    proxy.client_tls().name()
                ),
            ));
        }
        if proxy
            .auth_salt_secret
            .as_ref()
            .is_some_and(|s| s.len() < super::MIN_SALT_SECRET_LEN)
        {
            return Err(self.key(
                "proxy",
                "auth_salt_secret",
                format!(
                    "must be at least {} characters (it keys the salts shown to unknown users)",
                    super::MIN_SALT_SECRET_LEN
                ),
            ));
        }
        if proxy.stats_period < std::time::Duration::from_secs(1) {
            return Err(self.key(
                "proxy",
                "stats_period",
                "must be at least 1s (the averages are kept once a second)".into(),
            ));
        }
        self.listeners()?;
        let size = proxy.max_message_size.0;
        if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&size) {
            return Err(self.key(
                "proxy",
                "max_message_size",
                format!(
                    "{size} bytes is out of range: between 8KiB and 1GiB (Postgres refuses larger messages)"
                ),
            ));
        }
        Ok(())
    }

    /// `listen`, `metrics_listen` and `unix_socket_dir`.
    fn listeners(&self) -> Result<(), Violation> {
        let proxy = &self.config.proxy;
        if proxy.listen.is_empty() {
            return Err(self.key(
                "proxy",
                "listen",
                "needs at least one address (the first one's port names the Unix-domain socket)".into(),
            ));
        }
        for (i, addr) in proxy.listen.iter().enumerate() {
            if proxy.listen[..i].contains(addr) {
                return Err(self.key("proxy", "listen", format!("{addr} is listed twice")));
            }
        }
        if let Some(addr) = proxy.metrics_listen.filter(|a| proxy.listen.contains(a)) {
            return Err(self.key(
                "proxy",
                "metrics_listen",
                format!("{addr} is already in `listen`"),
            ));
        }
        self.takeover_socket()?;
        if let Some(dir) = &proxy.unix_socket_dir {
            let path = proxy.unix_socket_path().unwrap_or_default();
            let problem = if proxy.first_port() == 0 {
                "the socket is named after the first `listen` port, which is 0 (any): give a port".to_owned()
            } else if path.as_os_str().len() > 107 {
                // sun_path holds 108 bytes, the last one a NUL.
                format!(
                    "{} is too long for a socket path (at most 107 bytes): choose a shorter directory",
                    path.display()
                )
            } else {
                match std::fs::metadata(dir) {
                    Ok(m) if m.is_dir() => return Ok(()),
                    Ok(_) => format!("{} is not a directory", dir.display()),
                    Err(e) => format!("{} cannot be used: {e}", dir.display()),
                }
            };
            return Err(self.key("proxy", "unix_socket_dir", problem));
        }
        Ok(())
    }

    /// `takeover_socket`: a socket path that fits (107 bytes), in an existing directory,
    /// not the clients' Unix-domain socket.
    fn takeover_socket(&self) -> Result<(), Violation> {
        let proxy = &self.config.proxy;
        let Some(path) = &proxy.takeover_socket else {
            return Ok(());
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let problem = if path.as_os_str().len() > 107 {
            format!(
                "{} is too long for a socket path (at most 107 bytes)",
                path.display()
            )
        } else if proxy.unix_socket_path().as_ref() == Some(path) {
            format!(
                "{} is the clients' Unix-domain socket (unix_socket_dir)",
                path.display()
            )
        } else if path.file_name().is_none() {
            format!("{} names no file", path.display())
        } else {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => return Ok(()),
                Ok(_) => format!("{} is not a directory", dir.display()),
                Err(e) => format!("its directory {} cannot be used: {e}", dir.display()),
            }
        };
        Err(self.key("proxy", "takeover_socket", problem))
    }

    /// `[clusters]` and the `[databases]` on them.
    fn clusters_and_databases(&self) -> Result<(), Violation> {
        let config = self.config;
        for (name, cluster) in &config.clusters {
            if cluster.nodes.is_empty() {
                return Err(self.entry(
                    "clusters",
                    name,
                    format!("clusters.{name}.nodes"),
                    "a cluster needs at least one node".into(),
                ));
            }
            for node in &cluster.nodes {
                if let Some(message) = bad_host(&node.get_ref().host) {
                    return Err(self.at(node.span(), format!("clusters.{name}.nodes"), message));
                }
            }
            if let Some(probe) = &cluster.probe_user {
                let problem = match config.users.get(probe.get_ref()) {
                    None => Some(format!("{:?} is not defined in [users]", probe.get_ref())),
                    Some(u) if !u.can_log_in_to_servers() => Some(format!(
                        "{:?} has no password the proxy can log in to servers with (give a plaintext password or server_password)",
                        probe.get_ref()
                    )),
                    Some(_) => None,
                };
                if let Some(message) = problem {
                    return Err(self.at(probe.span(), format!("clusters.{name}.probe_user"), message));
                }
            }
        }
        for (name, db) in &config.databases {
            if !config.clusters.contains_key(db.cluster.get_ref()) {
                return Err(self.at(
                    db.cluster.span(),
                    format!("databases.{name}.cluster"),
                    self.unknown_cluster(db.cluster.get_ref()),
                ));
            }
            if db.pool_size == Some(0) {
                return Err(self.key(
                    &format!("databases.{name}"),
                    "pool_size",
                    "must be at least 1".into(),
                ));
            }
            if name == super::ADMIN_DATABASE {
                return Err(self.entry(
                    "databases",
                    name,
                    format!("databases.{name}"),
                    format!("{name:?} is reserved for the admin console"),
                ));
            }
        }
        Ok(())
    }

    /// `[users]`, `[auth_query]` and `[admin] users`.
    fn users(&self) -> Result<(), Violation> {
        let config = self.config;
        for (name, user) in &config.users {
            check_user(name, user)
                .map_err(|m| self.at(user.password.span(), format!("users.{name}.password"), m))?;
            if user.auth == Some(super::ClientAuthMethod::Cert) {
                let problem = if config.proxy.tls_client_ca.is_none() {
                    Some("auth = \"cert\" needs [proxy] tls_client_ca (the CA client certificates must lead to)")
                } else if !user.can_log_in_to_servers() {
                    Some("a cert user proves no password, so the proxy needs one to log in to servers: give a plaintext password or server_password")
                } else {
                    None
                };
                if let Some(message) = problem {
                    return Err(self.key(&format!("users.{name}"), "auth", message.into()));
                }
            }
        }
        if let Some(aq) = &config.auth_query {
            if aq.pool_size == 0 {
                return Err(self.key("auth_query", "pool_size", "must be at least 1".into()));
            }
            if aq.timeout.is_zero() {
                return Err(self.key("auth_query", "timeout", "must be longer than 0s".into()));
            }
            if !config.users.contains_key(aq.user.get_ref()) {
                return Err(self.at(
                    aq.user.span(),
                    "auth_query.user".into(),
                    format!(
                        "{:?} is not defined in [users]; the proxy needs its password to run the query",
                        aq.user.get_ref()
                    ),
                ));
            }
        }
        let admins = config.admin.users.iter().map(|u| ("admin.users", u));
        let stats = config.admin.stats_users.iter().map(|u| ("admin.stats_users", u));
        for (key, admin) in admins.chain(stats) {
            if !config.users.contains_key(admin.get_ref()) {
                return Err(self.at(
                    admin.span(),
                    key.into(),
                    format!("{:?} is not defined in [users]", admin.get_ref()),
                ));
            }
        }
        Ok(())
    }

    /// Each `[plugins.NAME]` entry on its own.
    fn plugins(&self) -> Result<(), Violation> {
        let config = self.config;
        for (name, plugin) in &config.plugins {
            let section = format!("plugins.{name}");
            if plugin.hooks.is_empty() {
                return Err(self.entry(
                    "plugins",
                    name,
                    format!("{section}.hooks"),
                    "list the hooks this plugin serves, e.g. hooks = [\"pool-mode\"]".into(),
                ));
            }
            for db in plugin.databases.iter().flatten() {
                if !config.databases.contains_key(db.get_ref()) {
                    return Err(self.at(
                        db.span(),
                        format!("{section}.databases"),
                        format!("unknown database {:?}", db.get_ref()),
                    ));
                }
            }
            for cluster in plugin.clusters.iter().flatten() {
                if !config.clusters.contains_key(cluster.get_ref()) {
                    return Err(self.at(
                        cluster.span(),
                        format!("{section}.clusters"),
                        self.unknown_cluster(cluster.get_ref()),
                    ));
                }
            }
            if plugin.clusters.is_some() && !plugin.hooks.iter().any(|h| h.per_cluster()) {
                return Err(self.key(&section, "clusters", "clusters applies to the health and switchover hooks, which this plugin does not serve (use databases)".into()));
            }
            if plugin.databases.is_some() && plugin.hooks.iter().all(|h| h.per_cluster()) {
                return Err(self.key(&section, "databases", "databases applies to the pool-mode, router and retry hooks; health and switchover are assigned with clusters".into()));
            }
        }
        Ok(())
    }

    /// No two plugins serve one hook of one database, or of one cluster.
    fn plugin_overlaps(&self) -> Result<(), Violation> {
        let config = self.config;
        let databases = config.databases.keys().map(|db| ("database", db));
        let clusters = config.clusters.keys().map(|c| ("cluster", c));
        let mut served = std::collections::BTreeMap::new();
        for (name, plugin) in &config.plugins {
            for (kind, target) in databases.clone().chain(clusters.clone()) {
                for hook in &plugin.hooks {
                    let serves = match kind {
                        "database" => plugin.serves(*hook, target),
                        _ => plugin.serves_cluster(*hook, target),
                    };
                    if !serves {
                        continue;
                    }
                    if let Some(other) = served.insert((kind, target, *hook), name) {
                        return Err(self.entry(
                            "plugins",
                            name,
                            format!("plugins.{name}.hooks"),
                            format!(
                                "plugins {other:?} and {name:?} both serve {hook:?} for {kind} {target:?}"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// What is wrong with a node's `host`, if anything: it is a name or an address without a
/// port, and an IPv6 address goes without brackets (the port has its own key).
fn bad_host(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("host is empty".into());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') && (bare != host || bare.parse::<std::net::Ipv6Addr>().is_err()) {
        return Some(format!(
            "host {host:?} is not a host name or an address: give the port in `port` and an IPv6 address without brackets, e.g. host = \"::1\""
        ));
    }
    None
}

fn check_user(name: &str, user: &UserConfig) -> Result<(), String> {
    use super::StoredPassword;
    let stored = StoredPassword::parse(user.password.get_ref()).map_err(|e| format!("user {name:?}: {e}"))?;
    if user.auth == Some(super::ClientAuthMethod::ScramSha256) && matches!(stored, StoredPassword::Md5(_)) {
        return Err(
            "an md5 hash cannot verify a SCRAM client; give a plaintext password or a SCRAM verifier".into(),
        );
    }
    if user.auth == Some(super::ClientAuthMethod::Md5) && matches!(stored, StoredPassword::Scram(_)) {
        return Err(
            "a SCRAM verifier cannot verify an md5 client; give a plaintext password or an md5 hash".into(),
        );
    }
    Ok(())
}
