//! Checks that serde cannot express: references between sections and sane values.

use super::{line_col, Config, UserConfig};

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
    let at = |span: std::ops::Range<usize>, key: String, message: String| Violation {
        line: line_col(text, span.start).0,
        key,
        message,
    };

    if config.pool.size == 0 {
        return Err(Violation {
            line: key_line(text, "pool", "size"),
            key: "pool.size".into(),
            message: "must be at least 1".into(),
        });
    }
    if config.proxy.tls_cert.is_some() != config.proxy.tls_key.is_some() {
        return Err(Violation {
            line: key_line(text, "proxy", "tls_cert"),
            key: "proxy.tls_cert".into(),
            message: "tls_cert and tls_key must be given together".into(),
        });
    }
    if config
        .proxy
        .auth_salt_secret
        .as_ref()
        .is_some_and(|s| s.len() < crate::auth::MIN_SALT_SECRET_LEN)
    {
        return Err(Violation {
            line: key_line(text, "proxy", "auth_salt_secret"),
            key: "proxy.auth_salt_secret".into(),
            message: format!(
                "must be at least {} characters (it keys the salts shown to unknown users)",
                crate::auth::MIN_SALT_SECRET_LEN
            ),
        });
    }
    if config.proxy.metrics_listen == Some(config.proxy.listen) {
        return Err(Violation {
            line: key_line(text, "proxy", "metrics_listen"),
            key: "proxy.metrics_listen".into(),
            message: format!("{} is already `listen`", config.proxy.listen),
        });
    }
    let size = config.proxy.max_message_size.0;
    if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&size) {
        return Err(Violation {
            line: key_line(text, "proxy", "max_message_size"),
            key: "proxy.max_message_size".into(),
            message: format!(
                "{size} bytes is out of range: between 8KiB and 1GiB (Postgres refuses larger messages)"
            ),
        });
    }
    for (name, cluster) in &config.clusters {
        if cluster.nodes.is_empty() {
            return Err(Violation {
                line: header_line(text, "clusters", name),
                key: format!("clusters.{name}.nodes"),
                message: "a cluster needs at least one node".into(),
            });
        }
    }
    for (name, db) in &config.databases {
        if !config.clusters.contains_key(db.cluster.get_ref()) {
            let known: Vec<&str> = config.clusters.keys().map(String::as_str).collect();
            return Err(at(
                db.cluster.span(),
                format!("databases.{name}.cluster"),
                format!(
                    "unknown cluster {:?}; defined clusters: {}",
                    db.cluster.get_ref(),
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        if db.pool_size == Some(0) {
            return Err(Violation {
                line: key_line(text, &format!("databases.{name}"), "pool_size"),
                key: format!("databases.{name}.pool_size"),
                message: "must be at least 1".into(),
            });
        }
        if name == super::ADMIN_DATABASE {
            return Err(Violation {
                line: header_line(text, "databases", name),
                key: format!("databases.{name}"),
                message: format!("{name:?} is reserved for the admin console"),
            });
        }
    }
    for (name, user) in &config.users {
        check_user(name, user).map_err(|m| at(user.password.span(), format!("users.{name}.password"), m))?;
    }
    if let Some(aq) = &config.auth_query {
        if aq.pool_size == 0 {
            return Err(Violation {
                line: key_line(text, "auth_query", "pool_size"),
                key: "auth_query.pool_size".into(),
                message: "must be at least 1".into(),
            });
        }
        if aq.timeout.is_zero() {
            return Err(Violation {
                line: key_line(text, "auth_query", "timeout"),
                key: "auth_query.timeout".into(),
                message: "must be longer than 0s".into(),
            });
        }
        if !config.users.contains_key(aq.user.get_ref()) {
            return Err(at(
                aq.user.span(),
                "auth_query.user".into(),
                format!(
                    "{:?} is not defined in [users]; the proxy needs its password to run the query",
                    aq.user.get_ref()
                ),
            ));
        }
    }
    for (name, cluster) in &config.clusters {
        if let Some(probe) = &cluster.probe_user {
            match config.users.get(probe.get_ref()) {
                None => {
                    return Err(at(
                        probe.span(),
                        format!("clusters.{name}.probe_user"),
                        format!("{:?} is not defined in [users]", probe.get_ref()),
                    ))
                }
                Some(u) if !u.can_log_in_to_servers() => {
                    return Err(at(
                        probe.span(),
                        format!("clusters.{name}.probe_user"),
                        format!(
                            "{:?} has no password the proxy can log in to servers with (give a plaintext password or server_password)",
                            probe.get_ref()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    for (name, plugin) in &config.plugins {
        if plugin.hooks.is_empty() {
            return Err(Violation {
                line: header_line(text, "plugins", name),
                key: format!("plugins.{name}.hooks"),
                message: "list the hooks this plugin serves, e.g. hooks = [\"pool-mode\"]".into(),
            });
        }
        for db in plugin.databases.iter().flatten() {
            if !config.databases.contains_key(db.get_ref()) {
                return Err(at(
                    db.span(),
                    format!("plugins.{name}.databases"),
                    format!("unknown database {:?}", db.get_ref()),
                ));
            }
        }
        for cluster in plugin.clusters.iter().flatten() {
            if !config.clusters.contains_key(cluster.get_ref()) {
                let known: Vec<&str> = config.clusters.keys().map(String::as_str).collect();
                return Err(at(
                    cluster.span(),
                    format!("plugins.{name}.clusters"),
                    format!(
                        "unknown cluster {:?}; defined clusters: {}",
                        cluster.get_ref(),
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        if plugin.clusters.is_some() && !plugin.hooks.iter().any(|h| h.per_cluster()) {
            return Err(Violation {
                line: key_line(text, &format!("plugins.{name}"), "clusters"),
                key: format!("plugins.{name}.clusters"),
                message: "clusters applies to the health and switchover hooks, which this plugin does not serve (use databases)".into(),
            });
        }
        if plugin.databases.is_some() && plugin.hooks.iter().all(|h| h.per_cluster()) {
            return Err(Violation {
                line: key_line(text, &format!("plugins.{name}"), "databases"),
                key: format!("plugins.{name}.databases"),
                message: "databases applies to the pool-mode, router and retry hooks; health and switchover are assigned with clusters".into(),
            });
        }
    }
    let mut served = std::collections::BTreeMap::new();
    for (name, plugin) in &config.plugins {
        for db in config.databases.keys() {
            for hook in &plugin.hooks {
                if plugin.serves(*hook, db) {
                    if let Some(other) = served.insert((db.clone(), *hook), name.clone()) {
                        return Err(Violation {
                            line: header_line(text, "plugins", name),
                            key: format!("plugins.{name}.hooks"),
                            message: format!(
                                "plugins {other:?} and {name:?} both serve {hook:?} for database {db:?}"
                            ),
                        });
                    }
                }
            }
        }
    }
    let mut judged = std::collections::BTreeMap::new();
    for (name, plugin) in &config.plugins {
        for cluster in config.clusters.keys() {
            for hook in &plugin.hooks {
                if plugin.serves_cluster(*hook, cluster) {
                    if let Some(other) = judged.insert((cluster.clone(), *hook), name.clone()) {
                        return Err(Violation {
                            line: header_line(text, "plugins", name),
                            key: format!("plugins.{name}.hooks"),
                            message: format!(
                                "plugins {other:?} and {name:?} both serve {hook:?} for cluster {cluster:?}"
                            ),
                        });
                    }
                }
            }
        }
    }
    for admin in &config.admin.users {
        if !config.users.contains_key(admin.get_ref()) {
            return Err(at(
                admin.span(),
                "admin.users".into(),
                format!("{:?} is not defined in [users]", admin.get_ref()),
            ));
        }
    }
    Ok(())
}

fn check_user(name: &str, user: &UserConfig) -> Result<(), String> {
    use crate::auth::StoredPassword;
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
