//! The settings as they are in force: what the admin console's `SHOW CONFIG` lists, and
//! which of them `SET key = value` and a reload change without a restart
//! ([`RELOADABLE`]). A `SET` is checked exactly as the file is: the running file's text
//! with the value put in is parsed and validated again ([`with_setting`]).

use std::time::Duration;

use super::{Config, ConfigError, PoolDefaults, ProxySettings};

/// The `[proxy]` keys that apply without a restart (`SET`, SIGHUP, `RELOAD`): they are
/// read when a client connects or logs in, or when the proxy stops, never kept beside a
/// session or a pool.
pub const RELOADABLE: [&str; 5] = [
    "max_client_conn",
    "max_unauthenticated_conn",
    "admin_reserved_conn",
    "client_login_timeout",
    "shutdown_timeout",
];

/// One row of `SHOW CONFIG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingRow {
    pub key: &'static str,
    pub value: String,
    pub default: String,
    pub changeable: bool,
    /// The file's section: `proxy`, `pool` or `admin`.
    pub section: &'static str,
}

/// How a secret's value is shown.
pub const MASK: &str = "********";

/// Why a `SET` was refused.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("unrecognized configuration parameter \"{0}\"")]
    Unknown(String),
    #[error("parameter \"{0}\" cannot be changed without restarting the proxy")]
    NeedsRestart(String),
    #[error("invalid value for parameter \"{key}\": {source}")]
    Invalid { key: String, source: ConfigError },
    #[error("the proxy was started without a configuration file")]
    NoFile,
}

/// Every `[proxy]`, `[pool]` and `[admin]` setting of `config`, with `proxy` (the `[proxy]`
/// in force) for the reloadable keys; secrets masked.
pub fn rows(config: &Config, proxy: &ProxySettings) -> Vec<SettingRow> {
    let mut rows = Vec::new();
    let defaults = proxy_values(&ProxySettings::default());
    for ((key, value), (_, default)) in proxy_values(proxy).into_iter().zip(defaults) {
        rows.push(SettingRow {
            key,
            value,
            default,
            changeable: RELOADABLE.contains(&key),
            section: "proxy",
        });
    }
    let defaults = pool_values(&PoolDefaults::default());
    for ((key, value), (_, default)) in pool_values(&config.pool).into_iter().zip(defaults) {
        rows.push(SettingRow {
            key,
            value,
            default,
            changeable: false,
            section: "pool",
        });
    }
    let names = |users: &[toml::Spanned<String>]| {
        users
            .iter()
            .map(|u| u.get_ref().as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    for (key, value) in [
        ("users", names(&config.admin.users)),
        ("stats_users", names(&config.admin.stats_users)),
    ] {
        rows.push(SettingRow {
            key,
            value,
            default: String::new(),
            changeable: false,
            section: "admin",
        });
    }
    rows
}

/// The section of a setting `SHOW CONFIG` lists, if any.
fn section_of(key: &str) -> Option<&'static str> {
    rows(&Config::empty(), &ProxySettings::default())
        .into_iter()
        .find(|r| r.key == key)
        .map(|r| r.section)
}

impl Config {
    /// A configuration with every setting at its default and nothing configured.
    fn empty() -> Config {
        toml::from_str("").expect("an empty configuration deserializes")
    }
}

/// The configuration `text` (the running file) would have with the reloadable keys at
/// their values in force (`proxy`) and `key` set to `literal` (`30s`, `'30s'`, `100`,
/// `true`), parsed and validated as a file is. Only a [`RELOADABLE`] key may be set.
pub fn with_setting(
    text: Option<&str>,
    proxy: &ProxySettings,
    key: &str,
    literal: &str,
) -> Result<Config, SetError> {
    let key = key.strip_prefix("proxy.").unwrap_or(key);
    if section_of(key).is_none() {
        return Err(SetError::Unknown(key.to_string()));
    }
    if !RELOADABLE.contains(&key) {
        return Err(SetError::NeedsRestart(key.to_string()));
    }
    let text = text.ok_or(SetError::NoFile)?;
    let invalid = |source| SetError::Invalid {
        key: key.to_string(),
        source,
    };
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        invalid(ConfigError::Parse {
            path: "the running configuration".into(),
            message: e.to_string(),
        })
    })?;
    let section = table
        .entry("proxy")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(section) = section {
        for (name, value) in reloadable_values(proxy) {
            section.insert(name.to_string(), value);
        }
        section.insert(key.to_string(), value_of(literal));
    }
    let text = toml::to_string(&table).map_err(|e| {
        invalid(ConfigError::Parse {
            path: "SET".into(),
            message: e.to_string(),
        })
    })?;
    Config::parse(&text, "SET").map_err(invalid)
}

/// `proxy` with the reloadable keys taken from `new`.
pub fn with_reloadable(proxy: &ProxySettings, new: &ProxySettings) -> ProxySettings {
    ProxySettings {
        max_client_conn: new.max_client_conn,
        max_unauthenticated_conn: new.max_unauthenticated_conn,
        admin_reserved_conn: new.admin_reserved_conn,
        client_login_timeout: new.client_login_timeout,
        shutdown_timeout: new.shutdown_timeout,
        ..proxy.clone()
    }
}

/// The reloadable keys' values in `proxy`, as TOML values ([`RELOADABLE`]'s order).
fn reloadable_values(proxy: &ProxySettings) -> [(&'static str, toml::Value); 5] {
    let count = |n: usize| toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    let duration = |d: Duration| toml::Value::String(humantime::format_duration(d).to_string());
    [
        ("max_client_conn", count(proxy.max_client_conn)),
        ("max_unauthenticated_conn", count(proxy.max_unauthenticated_conn)),
        ("admin_reserved_conn", count(proxy.admin_reserved_conn)),
        ("client_login_timeout", duration(proxy.client_login_timeout)),
        ("shutdown_timeout", duration(proxy.shutdown_timeout)),
    ]
}

/// An admin's value as TOML: quotes taken off; then an integer, a float or a boolean if
/// it reads as one, else a string (`30s` needs no quotes).
fn value_of(literal: &str) -> toml::Value {
    let literal = literal.trim();
    let unquoted = ['\'', '"']
        .iter()
        .find_map(|q| literal.strip_prefix(*q).and_then(|l| l.strip_suffix(*q)))
        .unwrap_or(literal);
    format!("v = {unquoted}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !matches!(v, toml::Value::Table(_) | toml::Value::Array(_)))
        .unwrap_or_else(|| toml::Value::String(unquoted.to_string()))
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn path(p: &Option<std::path::PathBuf>) -> String {
    p.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
}

/// `Debug` of a kebab-case enum as the file writes it (`PerCore` → `per-core`).
fn kebab(value: impl std::fmt::Debug) -> String {
    let mut out = String::new();
    for (i, c) in format!("{value:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn proxy_values(p: &ProxySettings) -> Vec<(&'static str, String)> {
    vec![
        (
            "listen",
            p.listen
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("unix_socket_dir", path(&p.unix_socket_dir)),
        ("unix_socket_mode", format!("{:04o}", p.unix_socket_mode)),
        ("takeover_socket", p.takeover_socket_path().display().to_string()),
        ("max_client_conn", p.max_client_conn.to_string()),
        ("max_unauthenticated_conn", p.max_unauthenticated_conn.to_string()),
        ("admin_reserved_conn", p.admin_reserved_conn.to_string()),
        ("client_login_timeout", duration(p.client_login_timeout)),
        ("shutdown_timeout", duration(p.shutdown_timeout)),
        ("tls_cert", path(&p.tls_cert)),
        ("tls_key", path(&p.tls_key)),
        ("tls_client_ca", path(&p.tls_client_ca)),
        ("client_tls", p.client_tls().name().to_string()),
        ("auth_hba_file", path(&p.auth_hba_file)),
        ("workers", p.workers.to_string()),
        ("threading", kebab(p.threading)),
        ("plugin_cache_dir", path(&p.plugin_cache_dir)),
        ("plugin_watch_interval", duration(p.plugin_watch_interval)),
        (
            "metrics_listen",
            p.metrics_listen.map(|a| a.to_string()).unwrap_or_default(),
        ),
        (
            "auth_salt_secret",
            p.auth_salt_secret
                .as_ref()
                .map(|_| MASK.to_string())
                .unwrap_or_default(),
        ),
        ("max_message_size", p.max_message_size.0.to_string()),
    ]
}

fn pool_values(p: &PoolDefaults) -> Vec<(&'static str, String)> {
    let methods: Vec<&str> = p.server_auth_methods.iter().map(|m| m.name()).collect();
    vec![
        ("mode", kebab(p.mode)),
        ("size", p.size.to_string()),
        ("connect_timeout", duration(p.connect_timeout)),
        ("query_wait_timeout", duration(p.query_wait_timeout)),
        ("idle_timeout", duration(p.idle_timeout)),
        ("lifetime", duration(p.lifetime)),
        ("max_prepared_statements", p.max_prepared_statements.to_string()),
        ("client_idle_timeout", duration(p.client_idle_timeout)),
        ("idle_transaction_timeout", duration(p.idle_transaction_timeout)),
        ("query_timeout", duration(p.query_timeout)),
        ("transaction_timeout", duration(p.transaction_timeout)),
        ("server_tls", kebab(p.server_tls)),
        ("server_tls_ca", path(&p.server_tls_ca)),
        ("server_auth_methods", methods.join(",")),
        ("max_db_connections", p.max_db_connections.to_string()),
        ("max_user_connections", p.max_user_connections.to_string()),
        ("pipeline", p.pipeline.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[proxy]
max_client_conn = 50
auth_salt_secret = "a-long-enough-secret-for-the-salts-0123456789"

[clusters.main]
nodes = [{ host = "127.0.0.1", port = 5432 }]

[databases.app]
cluster = "main"
"#;

    /// The keys serde expects in `section`, read from its unknown-field error.
    fn expected_keys(section: &str) -> Vec<String> {
        let e = toml::from_str::<Config>(&format!("[{section}]\nnot_a_key = 1\n"))
            .unwrap_err()
            .to_string();
        let list = e.split("expected one of").nth(1).expect("serde lists the fields");
        list.split('`').skip(1).step_by(2).map(str::to_string).collect()
    }

    /// `SHOW CONFIG`'s `[proxy]` and `[pool]` keys are exactly those serde accepts there;
    /// a configured value, its default, `changeable` and a masked secret are as expected.
    #[test]
    fn show_config_lists_every_proxy_and_pool_key() {
        let config = Config::parse(FILE, "t.toml").unwrap();
        let rows = rows(&config, &config.proxy);
        for section in ["proxy", "pool"] {
            let mut listed: Vec<String> = rows
                .iter()
                .filter(|r| r.section == section)
                .map(|r| r.key.to_string())
                .collect();
            let mut expected = expected_keys(section);
            listed.sort();
            expected.sort();
            assert_eq!(listed, expected, "[{section}]");
        }
        let row = |k: &str| rows.iter().find(|r| r.key == k).unwrap().clone();
        assert_eq!(row("max_client_conn").value, "50");
        assert_eq!(row("max_client_conn").default, "10000");
        assert!(row("max_client_conn").changeable);
        assert!(!row("listen").changeable);
        assert_eq!(row("auth_salt_secret").value, MASK);
        assert_eq!(row("threading").value, "shared");
        assert_eq!(row("shutdown_timeout").value, "30s");
    }

    /// `SET` parses values as the file does (quoted or not, with the `proxy.` prefix or
    /// not), refuses unknown and restart-only keys, and checks the new value against the
    /// other reloadable keys in force (`admin_reserved_conn` below `max_client_conn`).
    #[test]
    fn set_is_validated_as_the_file_is() {
        let running = Config::parse(FILE, "t.toml").unwrap();
        let set = |k: &str, v: &str| with_setting(Some(FILE), &running.proxy, k, v);
        assert_eq!(
            set("shutdown_timeout", "'5s'").unwrap().proxy.shutdown_timeout,
            Duration::from_secs(5)
        );
        assert_eq!(set("max_client_conn", "7").unwrap().proxy.max_client_conn, 7);
        assert_eq!(
            set("proxy.max_client_conn", "'8'").unwrap().proxy.max_client_conn,
            8
        );
        assert!(matches!(set("no_such_key", "1"), Err(SetError::Unknown(k)) if k == "no_such_key"));
        assert!(matches!(
            set("listen", "'127.0.0.1:1'"),
            Err(SetError::NeedsRestart(_))
        ));
        assert!(matches!(set("size", "3"), Err(SetError::NeedsRestart(_))));
        let e = set("shutdown_timeout", "soon").unwrap_err().to_string();
        assert!(e.contains("shutdown_timeout"), "{e}");
        // Checked against the other keys in force, as the file is.
        let e = set("admin_reserved_conn", "50").unwrap_err().to_string();
        assert!(e.contains("below max_client_conn (50)"), "{e}");
        let lowered = ProxySettings {
            max_client_conn: 5,
            ..running.proxy.clone()
        };
        let e = with_setting(Some(FILE), &lowered, "admin_reserved_conn", "5").unwrap_err();
        assert!(e.to_string().contains("below max_client_conn (5)"), "{e}");
    }

    /// A file whose `[proxy]` changed only in reloadable keys reports no section needing a
    /// restart; any other `[proxy]` change does.
    #[test]
    fn a_reload_that_changes_only_reloadable_keys_needs_no_restart() {
        let changed = FILE.replace(
            "max_client_conn = 50",
            "max_client_conn = 60\nshutdown_timeout = \"1s\"",
        );
        assert!(Config::changed_sections(FILE, &changed).is_empty());
        let changed = FILE.replace("max_client_conn = 50", "workers = 2");
        assert_eq!(Config::changed_sections(FILE, &changed), ["proxy"]);
    }
}
