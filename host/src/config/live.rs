//! The settings as they are in force: what the admin console's `SHOW CONFIG` lists, and
//! which of them `SET key = value` and a reload change without a restart
//! ([`RELOADABLE`], [`POOL_RELOADABLE`], [`DATABASE_RELOADABLE`]). A `SET` is checked
//! exactly as the file is: the running file's text with the values in force and the new
//! value put in is parsed and validated again ([`with_setting`]).

use std::time::Duration;

use super::{Config, ConfigError, DatabaseConfig, PoolDefaults, ProxySettings};

/// The `[proxy]` keys that apply without a restart (`SET`, SIGHUP, `RELOAD`): they are
/// read when a client connects or logs in, or when the proxy stops, never kept beside a
/// session or a pool.
pub const RELOADABLE: [&str; 7] = [
    "max_client_conn",
    "max_unauthenticated_conn",
    "admin_reserved_conn",
    "client_login_timeout",
    "shutdown_timeout",
    "log_connections",
    "log_disconnections",
];

/// The `[pool]` keys that apply without a restart: the size at once (`pool::Pool::apply`),
/// the limits of waits, connects and reaping at the next one, and what a session reads at
/// its start (mode, pipelining, prepared statements, client timeouts) to the sessions that
/// start after the change. `server_tls`, `server_tls_ca` and `server_auth_methods` (shared
/// with the probes, and a CA file that could fail to load mid-reload) and the caps
/// `max_db_connections` / `max_user_connections` (which pools they bind is fixed when a
/// pool is made) apply at restart.
pub const POOL_RELOADABLE: [&str; 12] = [
    "mode",
    "size",
    "connect_timeout",
    "query_wait_timeout",
    "idle_timeout",
    "lifetime",
    "max_prepared_statements",
    "client_idle_timeout",
    "idle_transaction_timeout",
    "query_timeout",
    "transaction_timeout",
    "pipeline",
];

/// A database's keys (`[databases.NAME]`) that apply without a restart, as `[pool]`'s
/// `size` and `mode` do.
pub const DATABASE_RELOADABLE: [&str; 2] = ["pool_size", "pool_mode"];

/// PgBouncer's names of `[pool]` keys, which `SET` takes too (PgBouncer's other names of
/// reloadable settings are Switchyard's own: `query_wait_timeout`, `client_idle_timeout`,
/// `idle_transaction_timeout`, `query_timeout`, `max_prepared_statements`, ...).
pub const ALIASES: [(&str, &str); 5] = [
    ("default_pool_size", "size"),
    ("pool_mode", "mode"),
    ("server_connect_timeout", "connect_timeout"),
    ("server_idle_timeout", "idle_timeout"),
    ("server_lifetime", "lifetime"),
];

/// When a change of the live key `key` (of `[proxy]`, `[pool]` or a database) applies, for
/// the log line that reports it.
pub fn applies(key: &str) -> &'static str {
    match key {
        "size" | "pool_size" => {
            "now: waiting clients get the new servers at once; over a smaller size, idle servers close at once and lent ones when given back"
        }
        "connect_timeout" | "query_wait_timeout" => "to the next connect or wait",
        "idle_timeout" | "lifetime" => "to every server, at the next reap (once a second) or release",
        "mode"
        | "pool_mode"
        | "pipeline"
        | "max_prepared_statements"
        | "client_idle_timeout"
        | "idle_transaction_timeout"
        | "query_timeout"
        | "transaction_timeout" => {
            "to sessions that start from now on; running sessions keep what they started with"
        }
        "shutdown_timeout" => "to the next stop",
        _ => "to the next client that connects or logs in",
    }
}

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
    #[error("invalid value for parameter \"{key}\": {}", reason(source))]
    Invalid { key: String, source: ConfigError },
    #[error("the proxy was started without a configuration file")]
    NoFile,
}

/// Why a value was refused, without the line and column of the text `SET` made (which the
/// operator never saw): the validation's message, or a parse error's last line.
fn reason(e: &ConfigError) -> String {
    match e {
        ConfigError::Invalid { message, .. } => message.clone(),
        ConfigError::Parse { message, .. } => message
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(message)
            .trim()
            .to_string(),
        ConfigError::Read { .. } => e.to_string(),
    }
}

/// Where a key `SET` names lives in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// `[proxy]` or `[pool]`.
    Section(&'static str, String),
    /// `[databases.NAME]`.
    Database(String, String),
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
            changeable: POOL_RELOADABLE.contains(&key),
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

/// Where `key` (as `SET` names it: `max_client_conn`, `proxy.max_client_conn`,
/// `pool.size`, `size`, `default_pool_size`, `databases.app.pool_size`) lives, if it can
/// change without a restart. `databases` names the databases that may be set. Keys are
/// read in any case; a database's name as written in the file.
fn place_of(typed: &str, databases: &Config) -> Result<Place, SetError> {
    let unknown = || SetError::Unknown(typed.to_string());
    let restart = || SetError::NeedsRestart(typed.to_string());
    let key = typed.to_ascii_lowercase();
    if key.starts_with("databases.") {
        let rest = &typed["databases.".len()..];
        let (name, field) = rest.rsplit_once('.').ok_or_else(unknown)?;
        let field = field.to_ascii_lowercase();
        let field = field.as_str();
        if !databases.databases.contains_key(name) {
            return Err(unknown());
        }
        if DATABASE_RELOADABLE.contains(&field) {
            return Ok(Place::Database(name.to_string(), field.to_string()));
        }
        return Err(if is_database_key(field) {
            restart()
        } else {
            unknown()
        });
    }
    let (wanted, bare) = match key.split_once('.') {
        Some((section, bare)) => (Some(section), bare),
        None => (None, key.as_str()),
    };
    let bare = match wanted {
        None => ALIASES
            .iter()
            .find(|(alias, _)| *alias == bare)
            .map_or(bare, |(_, name)| *name),
        Some(_) => bare,
    };
    let section = section_of(bare)
        .filter(|s| wanted.is_none_or(|w| w == *s))
        .ok_or_else(unknown)?;
    let live = match section {
        "proxy" => RELOADABLE.contains(&bare),
        "pool" => POOL_RELOADABLE.contains(&bare),
        _ => false,
    };
    if !live {
        return Err(restart());
    }
    Ok(Place::Section(section, bare.to_string()))
}

/// Whether `field` is a key of `[databases.NAME]` (serde's unknown-field error says not).
fn is_database_key(field: &str) -> bool {
    if !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return false;
    }
    match toml::from_str::<DatabaseConfig>(&format!("cluster = \"c\"\n{field} = 0\n")) {
        Ok(_) => true,
        Err(e) => !e.to_string().contains("unknown field"),
    }
}

/// The configuration `text` (the running file) would have with the live keys at their
/// values in force (`in_force`) and `key` set to `literal` (`30s`, `'30s'`, `100`, `true`),
/// parsed and validated as a file is. Only a live key may be set (see [`place_of`]).
pub fn with_setting(
    text: Option<&str>,
    in_force: &Config,
    key: &str,
    literal: &str,
) -> Result<Config, SetError> {
    let place = place_of(key, in_force)?;
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
    put_in_force(&mut table, in_force);
    let value = value_of(literal);
    match &place {
        Place::Section(section, key) => {
            table_at(&mut table, &[section]).insert(key.clone(), value);
        }
        Place::Database(name, key) => {
            table_at(&mut table, &["databases", name]).insert(key.clone(), value);
        }
    }
    let text = toml::to_string(&table).map_err(|e| {
        invalid(ConfigError::Parse {
            path: "SET".into(),
            message: e.to_string(),
        })
    })?;
    Config::parse(&text, "SET").map_err(invalid)
}

/// The table at `path` in `table`, made (empty) where missing or not a table.
fn table_at<'a>(table: &'a mut toml::Table, path: &[&str]) -> &'a mut toml::Table {
    path.iter().fold(table, |t, key| {
        let entry = t
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        entry.as_table_mut().expect("made a table above")
    })
}

/// Writes every live key's value in force (`in_force`) into `table` (the running file's):
/// `[proxy]`'s and `[pool]`'s, and each database's `pool_size` and `pool_mode` (taken out
/// where none is in force, so that the database follows `[pool]`).
fn put_in_force(table: &mut toml::Table, in_force: &Config) {
    let proxy = table_at(table, &["proxy"]);
    for (name, value) in reloadable_values(&in_force.proxy) {
        proxy.insert(name.to_string(), value);
    }
    let pool = table_at(table, &["pool"]);
    for (name, value) in pool_live_values(&in_force.pool) {
        pool.insert(name.to_string(), value);
    }
    for (name, db) in &in_force.databases {
        let section = table_at(table, &["databases", name]);
        for (key, value) in database_live_values(db) {
            match value {
                Some(value) => section.insert(key.to_string(), value),
                None => section.remove(key),
            };
        }
    }
}

/// `in_force` with every live key taken from `new` (a reloaded file, or a `SET`'s
/// configuration); the others stay as in force (they apply at restart).
pub fn with_live(in_force: &Config, new: &Config) -> Config {
    let mut applied = in_force.clone();
    applied.proxy = with_reloadable(&in_force.proxy, &new.proxy);
    let p = &new.pool;
    applied.pool = PoolDefaults {
        mode: p.mode,
        size: p.size,
        connect_timeout: p.connect_timeout,
        query_wait_timeout: p.query_wait_timeout,
        idle_timeout: p.idle_timeout,
        lifetime: p.lifetime,
        max_prepared_statements: p.max_prepared_statements,
        client_idle_timeout: p.client_idle_timeout,
        idle_transaction_timeout: p.idle_transaction_timeout,
        query_timeout: p.query_timeout,
        transaction_timeout: p.transaction_timeout,
        pipeline: p.pipeline,
        ..in_force.pool.clone()
    };
    for (name, db) in &mut applied.databases {
        if let Some(new) = new.databases.get(name) {
            db.pool_size = new.pool_size;
            db.pool_mode = new.pool_mode;
        }
    }
    applied
}

/// One live setting that differs between two configurations: `key` as `SET` names it
/// (`max_client_conn`, `pool.size`, `databases.app.pool_size`), its values as the file
/// writes them (`unset` for a database's key that follows `[pool]`), and when the change
/// applies ([`applies`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub from: String,
    pub to: String,
    pub applies: &'static str,
}

/// The live settings that differ from `old` to `new`, one per key.
pub fn changes(old: &Config, new: &Config) -> Vec<Change> {
    let mut changes: Vec<Change> = rows(old, &old.proxy)
        .into_iter()
        .zip(rows(new, &new.proxy))
        .filter(|(was, now)| now.changeable && was.value != now.value)
        .map(|(was, now)| Change {
            key: match now.section {
                "proxy" => now.key.to_string(),
                section => format!("{section}.{}", now.key),
            },
            from: was.value,
            to: now.value,
            applies: applies(now.key),
        })
        .collect();
    for (name, was) in &old.databases {
        let Some(now) = new.databases.get(name) else {
            continue;
        };
        let shown = |v: Option<toml::Value>| {
            v.map_or_else(
                || "unset".to_string(),
                |v| v.to_string().trim_matches('"').to_string(),
            )
        };
        for ((key, from), (_, to)) in database_live_values(was)
            .into_iter()
            .zip(database_live_values(now))
        {
            if from != to {
                changes.push(Change {
                    key: format!("databases.{name}.{key}"),
                    from: shown(from),
                    to: shown(to),
                    applies: applies(key),
                });
            }
        }
    }
    changes
}

/// A configuration text without its live keys (nor sections left empty by that): what a
/// reload compares to tell the changes that need a restart.
pub fn without_live_keys(text: &str) -> toml::Table {
    let mut table = text.parse::<toml::Table>().unwrap_or_default();
    for (section, keys) in [("proxy", &RELOADABLE[..]), ("pool", &POOL_RELOADABLE[..])] {
        if let Some(toml::Value::Table(t)) = table.get_mut(section) {
            t.retain(|k, _| !keys.contains(&k));
            if t.is_empty() {
                table.remove(section);
            }
        }
    }
    if let Some(toml::Value::Table(databases)) = table.get_mut("databases") {
        for (_, db) in databases.iter_mut() {
            if let toml::Value::Table(db) = db {
                db.retain(|k, _| !DATABASE_RELOADABLE.contains(&k));
            }
        }
    }
    table
}

/// `proxy` with the reloadable keys taken from `new`.
pub fn with_reloadable(proxy: &ProxySettings, new: &ProxySettings) -> ProxySettings {
    ProxySettings {
        max_client_conn: new.max_client_conn,
        max_unauthenticated_conn: new.max_unauthenticated_conn,
        admin_reserved_conn: new.admin_reserved_conn,
        client_login_timeout: new.client_login_timeout,
        shutdown_timeout: new.shutdown_timeout,
        log_connections: new.log_connections,
        log_disconnections: new.log_disconnections,
        ..proxy.clone()
    }
}

/// The reloadable keys' values in `proxy`, as TOML values ([`RELOADABLE`]'s order).
fn reloadable_values(proxy: &ProxySettings) -> [(&'static str, toml::Value); 7] {
    let count = |n: usize| toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    let duration = |d: Duration| toml::Value::String(humantime::format_duration(d).to_string());
    [
        ("max_client_conn", count(proxy.max_client_conn)),
        ("max_unauthenticated_conn", count(proxy.max_unauthenticated_conn)),
        ("admin_reserved_conn", count(proxy.admin_reserved_conn)),
        ("client_login_timeout", duration(proxy.client_login_timeout)),
        ("shutdown_timeout", duration(proxy.shutdown_timeout)),
        ("log_connections", toml::Value::Boolean(proxy.log_connections)),
        (
            "log_disconnections",
            toml::Value::Boolean(proxy.log_disconnections),
        ),
    ]
}

/// The live `[pool]` keys' values in `pool`, as TOML values ([`POOL_RELOADABLE`]'s order).
fn pool_live_values(pool: &PoolDefaults) -> [(&'static str, toml::Value); 12] {
    let count = |n: usize| toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    let duration = |d: Duration| toml::Value::String(duration(d));
    [
        ("mode", toml::Value::String(kebab(pool.mode))),
        ("size", count(pool.size)),
        ("connect_timeout", duration(pool.connect_timeout)),
        ("query_wait_timeout", duration(pool.query_wait_timeout)),
        ("idle_timeout", duration(pool.idle_timeout)),
        ("lifetime", duration(pool.lifetime)),
        ("max_prepared_statements", count(pool.max_prepared_statements)),
        ("client_idle_timeout", duration(pool.client_idle_timeout)),
        (
            "idle_transaction_timeout",
            duration(pool.idle_transaction_timeout),
        ),
        ("query_timeout", duration(pool.query_timeout)),
        ("transaction_timeout", duration(pool.transaction_timeout)),
        ("pipeline", toml::Value::Boolean(pool.pipeline)),
    ]
}

/// A database's live keys as TOML values, `None` where unset ([`DATABASE_RELOADABLE`]'s
/// order).
fn database_live_values(db: &DatabaseConfig) -> [(&'static str, Option<toml::Value>); 2] {
    [
        (
            "pool_size",
            db.pool_size
                .map(|n| toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))),
        ),
        ("pool_mode", db.pool_mode.map(|m| toml::Value::String(kebab(m)))),
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
        ("workers", p.worker_threads().to_string()),
        ("threading", kebab(p.threading)),
        ("plugin_cache_dir", path(&p.plugin_cache_dir)),
        ("plugin_watch_interval", duration(p.plugin_watch_interval)),
        ("stats_period", duration(p.stats_period)),
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
        ("log_connections", p.log_connections.to_string()),
        ("log_disconnections", p.log_disconnections.to_string()),
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

[databases.other]
cluster = "main"
pool_size = 4
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
        for row in rows.iter().filter(|r| r.section == "pool") {
            assert_eq!(row.changeable, POOL_RELOADABLE.contains(&row.key), "{}", row.key);
        }
        assert!(row("size").changeable && !row("server_tls").changeable);
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
        let set = |k: &str, v: &str| with_setting(Some(FILE), &running, k, v);
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
        assert!(matches!(
            set("server_tls", "'require'"),
            Err(SetError::NeedsRestart(_))
        ));
        assert!(matches!(
            set("pool.max_db_connections", "3"),
            Err(SetError::NeedsRestart(_))
        ));
        let e = set("shutdown_timeout", "soon").unwrap_err().to_string();
        assert!(e.contains("shutdown_timeout"), "{e}");
        // Checked against the other keys in force, as the file is.
        let e = set("admin_reserved_conn", "50").unwrap_err().to_string();
        assert!(e.contains("below max_client_conn (50)"), "{e}");
        let lowered = Config {
            proxy: ProxySettings {
                max_client_conn: 5,
                ..running.proxy.clone()
            },
            ..running.clone()
        };
        let e = with_setting(Some(FILE), &lowered, "admin_reserved_conn", "5").unwrap_err();
        assert!(e.to_string().contains("below max_client_conn (5)"), "{e}");
    }

    /// `SET` of `[pool]` keys: with the `pool.` prefix, bare, and by PgBouncer's names, in
    /// any case; a database's `pool_size` / `pool_mode` by `databases.NAME.KEY` (the name
    /// as the file writes it); an unknown database or
    /// key is unknown, another key of a database needs a restart; a value is checked as the
    /// file's is (size 0, pipelining in session mode), naming the key as given.
    #[test]
    fn set_of_pool_keys_takes_prefixes_aliases_and_databases() {
        let running = Config::parse(FILE, "t.toml").unwrap();
        let set = |k: &str, v: &str| with_setting(Some(FILE), &running, k, v);
        assert_eq!(set("pool.size", "30").unwrap().pool.size, 30);
        assert_eq!(set("size", "'31'").unwrap().pool.size, 31);
        assert_eq!(set("default_pool_size", "32").unwrap().pool.size, 32);
        assert_eq!(
            set("server_connect_timeout", "'2s'")
                .unwrap()
                .pool
                .connect_timeout,
            Duration::from_secs(2)
        );
        assert_eq!(
            set("query_wait_timeout", "500ms")
                .unwrap()
                .pool
                .query_wait_timeout,
            Duration::from_millis(500)
        );
        assert_eq!(
            set("pool_mode", "session").unwrap().pool.mode,
            super::super::PoolMode::Session
        );
        assert_eq!(set("POOL.Size", "33").unwrap().pool.size, 33, "keys in any case");
        let upper = set("Databases.other.POOL_SIZE", "2").unwrap();
        assert_eq!(upper.databases["other"].pool_size, Some(2));
        assert!(matches!(
            set("databases.OTHER.pool_size", "2"),
            Err(SetError::Unknown(_))
        ));
        let db = set("databases.app.pool_size", "3").unwrap();
        assert_eq!(db.databases["app"].pool_size, Some(3));
        assert_eq!(db.pool.size, 20, "[pool] untouched");
        let db = set("databases.other.pool_mode", "'session'").unwrap();
        assert_eq!(
            db.databases["other"].pool_mode,
            Some(super::super::PoolMode::Session)
        );
        assert_eq!(db.databases["other"].pool_size, Some(4));
        for unknown in [
            "proxy.size",
            "pool.max_client_conn",
            "databases.nope.pool_size",
            "databases.app.nope",
        ] {
            assert!(
                matches!(set(unknown, "1"), Err(SetError::Unknown(_))),
                "{unknown}"
            );
        }
        assert!(matches!(
            set("databases.app.dbname", "'x'"),
            Err(SetError::NeedsRestart(_))
        ));
        for (key, value, says) in [
            ("default_pool_size", "0", "at least 1"),
            ("pool.size", "many", "pool.size"),
            ("pipeline", "true", "session"),
        ] {
            let in_session = Config {
                pool: PoolDefaults {
                    mode: super::super::PoolMode::Session,
                    ..running.pool.clone()
                },
                ..running.clone()
            };
            let e = with_setting(Some(FILE), &in_session, key, value).unwrap_err();
            assert!(matches!(e, SetError::Invalid { .. }), "{key}: {e}");
            let e = e.to_string();
            assert!(e.contains(key) && e.contains(says), "{key}: {e}");
            // The text SET made is not the operator's: no line or column of it.
            assert!(
                !e.contains("at line") && !e.contains("column") && !e.contains("SET:"),
                "{key}: {e}"
            );
        }
    }

    /// A `SET` keeps the live values in force that differ from the file (an earlier `SET`),
    /// a database's own `pool_size` included, and a database whose override is no longer
    /// in force follows `[pool]`; [`with_live`] takes only live keys from the new
    /// configuration, and [`changes`] names each changed key once.
    #[test]
    fn set_keeps_the_values_in_force_and_changes_name_each_key() {
        let running = Config::parse(FILE, "t.toml").unwrap();
        let first = with_setting(Some(FILE), &running, "size", "7").unwrap();
        let in_force = with_live(&running, &first);
        let second = with_setting(Some(FILE), &in_force, "databases.other.pool_size", "9").unwrap();
        assert_eq!(
            (second.pool.size, second.databases["other"].pool_size),
            (7, Some(9))
        );
        let mut no_override = in_force.clone();
        no_override.databases.get_mut("other").unwrap().pool_size = None;
        let third = with_setting(Some(FILE), &no_override, "query_timeout", "'1m'").unwrap();
        assert_eq!(third.databases["other"].pool_size, None);
        assert_eq!(third.pool_size(&third.databases["other"]), 7);

        let mut new = second.clone();
        new.proxy.workers = Some(9);
        new.pool.server_tls = super::super::ServerTlsMode::Require;
        let applied = with_live(&in_force, &new);
        assert_eq!(
            (applied.proxy.workers, applied.pool.server_tls),
            (in_force.proxy.workers, in_force.pool.server_tls)
        );
        let keys: Vec<(String, String, String)> = changes(&running, &applied)
            .into_iter()
            .map(|c| (c.key, c.from, c.to))
            .collect();
        assert_eq!(
            keys,
            [
                ("pool.size".to_string(), "20".to_string(), "7".to_string()),
                (
                    "databases.other.pool_size".to_string(),
                    "4".to_string(),
                    "9".to_string()
                ),
            ]
        );
        assert!(applies("pool_mode").contains("sessions that start from now on"));
    }

    /// A file whose `[proxy]`, `[pool]` or databases changed only in live keys reports no
    /// section needing a restart; any other change there does; a database whose only change
    /// is its pool size counts as unchanged for removals.
    #[test]
    fn a_reload_that_changes_only_reloadable_keys_needs_no_restart() {
        let changed = FILE.replace(
            "max_client_conn = 50",
            "max_client_conn = 60\nshutdown_timeout = \"1s\"",
        );
        assert!(Config::changed_sections(FILE, &changed).is_empty());
        let changed = FILE.replace("max_client_conn = 50", "workers = 2");
        assert_eq!(Config::changed_sections(FILE, &changed), ["proxy"]);
        let changed = format!("{FILE}\n[pool]\nsize = 3\nquery_wait_timeout = \"1s\"\nmode = \"session\"\n")
            .replace("pool_size = 4", "pool_size = 5\npool_mode = \"statement\"");
        assert!(Config::changed_sections(FILE, &changed).is_empty());
        assert!(Config::databases_only_removed(FILE, &changed));
        let changed = format!("{FILE}\n[pool]\nsize = 3\nserver_tls = \"require\"\n");
        assert_eq!(Config::changed_sections(FILE, &changed), ["pool"]);
        let changed = FILE.replace("pool_size = 4", "max_db_connections = 4");
        assert_eq!(Config::changed_sections(FILE, &changed), ["databases"]);
    }
}
