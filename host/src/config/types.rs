//! The configuration schema. Field docs here are what `docs/configuration.md` describes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Secret;

/// Name of the virtual admin database (a configured database may not take it).
pub const ADMIN_DATABASE: &str = "switchyard";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub proxy: ProxySettings,
    #[serde(default)]
    pub pool: PoolDefaults,
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseConfig>,
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
    #[serde(default)]
    pub admin: AdminSettings,
    pub auth_query: Option<AuthQuerySettings>,
    /// `[plugins.NAME]`: WebAssembly policy plugins.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// `[trace]`: recording of hook inputs and decisions (off unless `path` is set).
    #[serde(default)]
    pub trace: TraceSettings,
}

/// `[trace]`: where every hook call's input and decision is recorded, one JSON line
/// each, for `switchyard replay` (reloadable; admin `TRACE ON` / `TRACE OFF` too).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceSettings {
    /// The trace file (appended to); recording is off when absent.
    pub path: Option<PathBuf>,
    /// When the file reaches this size it is renamed to `PATH.1` (replacing an older
    /// one) and a new file is started: the trace takes at most twice this on disk.
    pub max_bytes: u64,
}

/// Smallest `[trace] max_bytes`: room for a few hundred records.
pub const MIN_TRACE_BYTES: u64 = 64 * 1024;

impl Default for TraceSettings {
    fn default() -> TraceSettings {
        TraceSettings {
            path: None,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Hook kinds a plugin can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookKind {
    PoolMode,
    Router,
    Retry,
    Switchover,
    Health,
}

impl HookKind {
    pub const ALL: [HookKind; 5] = [
        HookKind::PoolMode,
        HookKind::Router,
        HookKind::Retry,
        HookKind::Switchover,
        HookKind::Health,
    ];

    /// The name used in the config and in the WIT package (`switchyard:policy/<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::PoolMode => "pool-mode",
            HookKind::Router => "router",
            HookKind::Retry => "retry",
            HookKind::Switchover => "switchover",
            HookKind::Health => "health",
        }
    }
}

impl HookKind {
    /// Topology hooks (`health`, `switchover`) are assigned per cluster (`clusters`); the
    /// others per database (`databases`).
    pub fn per_cluster(self) -> bool {
        matches!(self, HookKind::Health | HookKind::Switchover)
    }
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[plugins.NAME]`: one WebAssembly component and the hooks it serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The component file (`.wasm`), relative to the working directory.
    pub path: Spanned<PathBuf>,
    /// Hooks this plugin serves; each must be exported by the component.
    pub hooks: Vec<HookKind>,
    /// Databases whose sessions use it (hooks `pool-mode`, `router`, `retry`); all when
    /// absent.
    pub databases: Option<Vec<Spanned<String>>>,
    /// Clusters whose topology it judges (hooks `health`, `switchover`); all when absent.
    pub clusters: Option<Vec<Spanned<String>>>,
    /// Passed to the plugin's `init` as text key/value pairs.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
}

impl PluginConfig {
    /// Settings as the text pairs `init` receives.
    pub fn settings_text(&self) -> Vec<(String, String)> {
        self.settings
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect()
    }

    /// Whether it serves `hook` for `database` (a session hook).
    pub fn serves(&self, hook: HookKind, database: &str) -> bool {
        !hook.per_cluster()
            && self.hooks.contains(&hook)
            && self
                .databases
                .as_ref()
                .is_none_or(|dbs| dbs.iter().any(|d| d.get_ref() == database))
    }

    /// Whether it serves `hook` for `cluster` (a topology hook).
    pub fn serves_cluster(&self, hook: HookKind, cluster: &str) -> bool {
        hook.per_cluster()
            && self.hooks.contains(&hook)
            && self
                .clusters
                .as_ref()
                .is_none_or(|cs| cs.iter().any(|c| c.get_ref() == cluster))
    }
}

/// `[auth_query]`: users not in `[users]` are looked up on the server, as PgBouncer does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthQuerySettings {
    /// A `[users]` entry the proxy logs in as to run the query.
    pub user: Spanned<String>,
    /// Takes the user name as `$1`; the second column is the stored password (a SCRAM
    /// verifier or md5 hash), NULL or no row for an unknown user.
    #[serde(default = "default_auth_query")]
    pub query: String,
    /// Server database to run the query in; by default the client's.
    pub database: Option<String>,
    /// How long an answer (a password, or that there is none) is reused before asking the
    /// server again.
    #[serde(default = "default_auth_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Server connections the lookups share, per server database they run in.
    #[serde(default = "default_auth_pool_size")]
    pub pool_size: usize,
    /// A lookup (waiting for a connection, connecting, the query) taking longer has failed.
    #[serde(default = "default_auth_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// `pg_shadow` lists the roles that may log in; a password past its `valuntil` is not
/// returned, so such a role fails like a wrong password, as on Postgres.
fn default_auth_query() -> String {
    "SELECT usename, passwd FROM pg_shadow WHERE usename = $1 AND (valuntil IS NULL OR valuntil > now())"
        .into()
}

fn default_auth_cache_ttl() -> Duration {
    Duration::from_secs(30)
}

fn default_auth_pool_size() -> usize {
    2
}

fn default_auth_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[proxy]`: the client-facing side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// Addresses clients connect to over TCP: one (`"127.0.0.1:6432"`, `"[::1]:6432"`) or
    /// an array of them (`["127.0.0.1:6432", "[::1]:6432"]`).
    #[serde(deserialize_with = "listen_addrs")]
    pub listen: Vec<SocketAddr>,
    /// A directory to listen in on a Unix-domain socket too, named as Postgres names its
    /// own, `.s.PGSQL.<port>` with the port of the first `listen` address (so
    /// `psql -h <dir> -p <port>` finds it); none when absent.
    pub unix_socket_dir: Option<PathBuf>,
    /// Permissions of the Unix-domain socket file (PgBouncer's `unix_socket_mode`), as an
    /// octal string (`"0770"`) or a TOML octal integer (`0o770`); connecting needs write
    /// permission.
    #[serde(deserialize_with = "file_mode")]
    pub unix_socket_mode: u32,
    /// The Unix-domain socket a new process started with `--takeover` asks this one on
    /// for its listening sockets and clients (mode 0600, same user or root only); by
    /// default `.s.switchyard.<port>.takeover` in `unix_socket_dir`, else in the
    /// temporary directory (`$TMPDIR`, `/tmp`).
    pub takeover_socket: Option<PathBuf>,
    /// Clients beyond this many are refused with 53300.
    pub max_client_conn: usize,
    /// Connections still logging in (startup packet, TLS handshake, authentication) beyond
    /// this many are refused at once with 53300, so that connections that send nothing or
    /// send slowly cannot take every client slot: each is held at most
    /// `client_login_timeout`.
    pub max_unauthenticated_conn: usize,
    /// Of `max_client_conn`, this many are kept for the admin console (database
    /// `switchyard`): other clients are refused with 53300 once only these are left.
    pub admin_reserved_conn: usize,
    /// A client must finish startup and authentication within this time.
    #[serde(with = "humantime_serde")]
    pub client_login_timeout: Duration,
    /// On SIGINT/SIGTERM, running transactions get this long to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// PEM certificate chain for client-facing TLS; without it SSLRequest is answered 'N'.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle client certificates are verified against (PgBouncer's
    /// `client_tls_ca_file`); with it clients are asked for a certificate, which the `cert`
    /// method requires.
    pub tls_client_ca: Option<PathBuf>,
    /// Whether clients may or must use TLS (PgBouncer's `client_tls_sslmode`); by default
    /// `allow` with a `tls_cert`, `disable` without.
    pub client_tls: Option<ClientTlsMode>,
    /// Address-based rules in the spirit of `pg_hba.conf` (PgBouncer's `auth_hba_file`):
    /// which connections may log in and with which method. Re-read on reload.
    pub auth_hba_file: Option<PathBuf>,
    /// Tokio worker threads; 0 means one per core. Unset: one with `threading = "shared"`
    /// (tokio's single-threaded scheduler, as PgBouncer and Odyssey run by default: on a
    /// machine Postgres shares, it leaves the cores to Postgres and skips the wake-ups
    /// between worker threads), one per core with `"per-core"`.
    pub workers: Option<usize>,
    /// How the workers share the work: one multi-threaded scheduler (`shared`), or one
    /// single-threaded runtime per worker with its own listener (`per-core`).
    pub threading: Threading,
    /// Where compiled plugins are cached so restarts skip compilation; by default
    /// `$XDG_CACHE_HOME/switchyard` or `~/.cache/switchyard`. An empty path disables it.
    pub plugin_cache_dir: Option<PathBuf>,
    /// How often plugin files are checked for changes (a changed file is reloaded); 0
    /// disables the check (SIGHUP and `RELOAD` still reload).
    #[serde(with = "humantime_serde")]
    pub plugin_watch_interval: Duration,
    /// The window of `SHOW STATS`' averages (PgBouncer's `stats_period`): they cover the
    /// last whole period (until one has passed, the time since counting started).
    #[serde(with = "humantime_serde")]
    pub stats_period: Duration,
    /// Address of the Prometheus endpoint (`GET /metrics`); none when absent.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub metrics_listen: Option<SocketAddr>,
    /// Key of the SCRAM salts the proxy makes up (unknown users, plaintext passwords); by
    /// default derived from the secrets in `[users]`.
    pub auth_salt_secret: Option<Secret>,
    /// Log each client's login at info (PgBouncer's `log_connections`).
    pub log_connections: bool,
    /// Log each client's disconnection at info (PgBouncer's `log_disconnections`); a
    /// session that ends with an error is logged whatever this says.
    pub log_disconnections: bool,
    /// Largest message a client may send, in bytes or as a size (`"64MiB"`); a larger one
    /// is refused from its header with 54000 and ends that session. At most 1 GiB,
    /// Postgres' own limit. A named Parse is held whole, so this also bounds what one
    /// client can make the proxy hold; larger messages of other kinds stream through.
    pub max_message_size: ByteSize,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            listen: vec!["127.0.0.1:6432".parse().expect("literal address")],
            unix_socket_dir: None,
            unix_socket_mode: 0o777,
            takeover_socket: None,
            max_client_conn: 10_000,
            max_unauthenticated_conn: 1_000,
            admin_reserved_conn: 3,
            client_login_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            client_tls: None,
            auth_hba_file: None,
            workers: None,
            threading: Threading::Shared,
            plugin_cache_dir: None,
            plugin_watch_interval: Duration::from_secs(1),
            stats_period: Duration::from_secs(60),
            metrics_listen: None,
            auth_salt_secret: None,
            log_connections: true,
            log_disconnections: true,
            max_message_size: ByteSize(64 * 1024 * 1024),
        }
    }
}

impl ProxySettings {
    /// Worker threads to run: `workers`, one per core for 0; unset, one with `shared`
    /// threading and one per core with `per-core`.
    pub fn worker_threads(&self) -> usize {
        match (self.workers, self.threading) {
            (Some(0), _) | (None, Threading::PerCore) => {
                std::thread::available_parallelism().map_or(1, usize::from)
            }
            (Some(n), _) => n,
            (None, Threading::Shared) => 1,
        }
    }

    /// How many idle lists each pool keeps: one per worker with `threading = "per-core"`
    /// (a server stays with the thread whose reactor its socket is registered with), else
    /// one.
    pub fn pool_shards(&self) -> usize {
        match self.threading {
            Threading::Shared => 1,
            Threading::PerCore => self.worker_threads(),
        }
    }

    /// The port of the first `listen` address, which names the Unix-domain socket.
    pub fn first_port(&self) -> u16 {
        self.listen.first().map_or(0, SocketAddr::port)
    }

    /// The Unix-domain socket's path, `<unix_socket_dir>/.s.PGSQL.<port>`, if there is one.
    pub fn unix_socket_path(&self) -> Option<PathBuf> {
        let dir = self.unix_socket_dir.as_ref()?;
        Some(dir.join(format!(".s.PGSQL.{}", self.first_port())))
    }

    /// The takeover socket's path: `takeover_socket`, or `.s.switchyard.<port>.takeover`
    /// (the first `listen` port) in `unix_socket_dir` or the temporary directory.
    pub fn takeover_socket_path(&self) -> PathBuf {
        self.takeover_socket.clone().unwrap_or_else(|| {
            self.unix_socket_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir)
                .join(format!(".s.switchyard.{}.takeover", self.first_port()))
        })
    }

    /// The effective `client_tls`.
    pub fn client_tls(&self) -> ClientTlsMode {
        self.client_tls.unwrap_or(if self.tls_cert.is_some() {
            ClientTlsMode::Allow
        } else {
            ClientTlsMode::Disable
        })
    }
}

/// `[proxy] threading`: how the `workers` threads share clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Threading {
    /// One tokio scheduler for all workers (work-stealing when there are several): any
    /// thread may run any session.
    Shared,
    /// One single-threaded runtime per worker, each accepting on its own socket bound
    /// with `SO_REUSEPORT`; a session stays on the thread that accepted it, and pools
    /// prefer servers opened on that thread.
    PerCore,
}

/// `[proxy] client_tls`: TLS towards clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// SSLRequest is answered `N`.
    Disable,
    /// Clients choose: TLS or plaintext.
    Allow,
    /// A startup packet over plaintext is refused with 28000 (cancel requests excepted).
    Require,
}

impl ClientTlsMode {
    pub fn name(self) -> &'static str {
        match self {
            ClientTlsMode::Disable => "disable",
            ClientTlsMode::Allow => "allow",
            ClientTlsMode::Require => "require",
        }
    }
}

/// An `address:port` to listen on, with a message that shows both forms when it is not one.
fn socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an address and port: write \"127.0.0.1:6432\" for IPv4, and an IPv6 address in brackets, \"[::1]:6432\""
        ))
    })
}

/// `listen`: one address, or an array of them.
fn listen_addrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let texts = match OneOrMany::deserialize(d)? {
        OneOrMany::One(text) => vec![text],
        OneOrMany::Many(texts) => texts,
    };
    texts
        .into_iter()
        .map(|text| socket_addr(serde::de::value::StringDeserializer::<D::Error>::new(text)))
        .collect()
}

/// A file mode: an octal string (`"0777"`, `"770"`) or an integer (`0o777` in TOML).
fn file_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Number(i64),
        Octal(String),
    }
    let mode = match Mode::deserialize(d)? {
        Mode::Number(n) => u32::try_from(n).ok(),
        Mode::Octal(text) => u32::from_str_radix(text.trim(), 8).ok(),
    };
    mode.filter(|m| *m <= 0o777).ok_or_else(|| {
        serde::de::Error::custom(
            "not a file mode: write permission bits in octal, as a string (\"0770\") or a TOML octal integer (0o770)",
        )
    })
}

fn optional_socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(d).map(Some)
}

/// A size in bytes, written as an integer or as a string with a unit: `B`, `kB`/`KiB`,
/// `MB`/`MiB`, `GB`/`GiB`, all powers of 1024 as in `postgresql.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl ByteSize {
    /// Parses `"64MiB"`, `"512 kB"`, `"1GB"`, `"4096"`.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let number: usize = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size; write e.g. 65536, \"64MiB\" or \"1GiB\""))?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "kB" | "KB" | "KiB" => 10,
            "MB" | "MiB" => 20,
            "GB" | "GiB" => 30,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; use B, kB, MB or GB (or KiB, MiB, GiB)"
                ))
            }
        };
        number
            .checked_mul(1 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => usize::try_from(n).map(ByteSize).map_err(serde::de::Error::custom),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// When a server connection goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// The client keeps its server until it disconnects.
    Session,
    /// The server returns to the pool at the end of each transaction.
    Transaction,
    /// The server returns to the pool after each statement; transaction blocks are refused.
    Statement,
}

/// How the proxy connects to servers: libpq's `sslmode` values that make sense for a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    #[default]
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

/// `[pool]`: defaults for every database's pools.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolDefaults {
    pub mode: PoolMode,
    /// Server connections per (database, user).
    pub size: usize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a client waits for a free server connection before it gets an error.
    #[serde(with = "humantime_serde")]
    pub query_wait_timeout: Duration,
    /// Idle server connections older than this are closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Server connections are closed after this age, at a transaction boundary.
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// Prepared statements kept on one server connection; past it the least recently used
    /// is closed there (and prepared again when next used). A client may hold ten times as
    /// many names (`session::statements`).
    pub max_prepared_statements: usize,
    /// A client that sends nothing for this long while it holds no transaction open is
    /// disconnected (57P05). 0: never.
    #[serde(with = "humantime_serde")]
    pub client_idle_timeout: Duration,
    /// A client that sends nothing for this long inside a transaction is disconnected
    /// (25P03) and its transaction rolled back. 0: never.
    #[serde(with = "humantime_serde")]
    pub idle_transaction_timeout: Duration,
    /// A statement whose results have not all arrived after this long is cancelled on the
    /// server and its client disconnected (57014). 0: never.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// A client that has held a server in one stretch of work (a transaction, or a
    /// statement outside one) for this long is disconnected (25P04), its work cancelled
    /// and rolled back. 0: never.
    #[serde(with = "humantime_serde")]
    pub transaction_timeout: Duration,
    pub server_tls: ServerTlsMode,
    /// CA bundle (PEM) used to verify servers in `verify-full`; system roots otherwise.
    pub server_tls_ca: Option<PathBuf>,
    /// Authentication methods a server may ask the proxy for; a server asking for another
    /// one is not answered and the connect fails naming this setting. `password` (the
    /// password in clear) is left out by default: a server, or whoever sits on the network
    /// in front of it without `server_tls = "verify-full"`, would learn the password.
    /// A server that asks for none (`trust`) is always accepted: it learns nothing.
    pub server_auth_methods: Vec<ServerAuthMethod>,
    /// Server connections of one database, all its users' pools together; 0: no limit.
    /// A database's own `max_db_connections` overrides it.
    pub max_db_connections: usize,
    /// Server connections of one user, its pools in every database together; 0: no
    /// limit. A user's own `max_user_connections` overrides it (users found by
    /// `auth_query` get this one).
    pub max_user_connections: usize,
    /// Pipelined transaction pooling (`pool::pipeline`): a client's standalone statement
    /// (one simple-protocol Query outside a transaction, no session command, the client's
    /// startup settings) may be written to a server right behind other clients'. Off by
    /// default; a pool-mode plugin decides instead when one is configured.
    pub pipeline: bool,
}

/// An authentication request a server may send the proxy (`[pool] server_auth_methods`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ServerAuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    /// Cleartext password.
    #[serde(rename = "password")]
    Password,
}

impl ServerAuthMethod {
    /// The name the configuration (and Postgres' `pg_hba.conf`) uses.
    pub fn name(self) -> &'static str {
        match self {
            ServerAuthMethod::ScramSha256 => "scram-sha-256",
            ServerAuthMethod::Md5 => "md5",
            ServerAuthMethod::Password => "password",
        }
    }
}

impl Default for PoolDefaults {
    fn default() -> Self {
        PoolDefaults {
            mode: PoolMode::Transaction,
            size: 20,
            connect_timeout: Duration::from_secs(5),
            query_wait_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            lifetime: Duration::from_secs(3600),
            max_prepared_statements: 500,
            client_idle_timeout: Duration::ZERO,
            idle_transaction_timeout: Duration::ZERO,
            query_timeout: Duration::ZERO,
            transaction_timeout: Duration::ZERO,
            server_tls: ServerTlsMode::Disable,
            server_tls_ca: None,
            server_auth_methods: vec![ServerAuthMethod::ScramSha256, ServerAuthMethod::Md5],
            max_db_connections: 0,
            max_user_connections: 0,
            pipeline: false,
        }
    }
}

/// `[clusters.NAME]`: a set of Postgres nodes holding the same data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub nodes: Vec<Spanned<NodeConfig>>,
    /// A `[users]` entry the proxy logs in as to probe every node (role, timeline, LSNs).
    /// Its password must be usable for a server login (plaintext, or `server_password`).
    /// Without it the nodes are not probed and the configured roles are trusted.
    pub probe_user: Option<Spanned<String>>,
    /// Database the probes connect to.
    #[serde(default = "default_probe_database")]
    pub probe_database: String,
    /// Time between probes of one node.
    #[serde(default = "default_probe_interval", with = "humantime_serde")]
    pub probe_interval: Duration,
    /// A probe (connect and query) that takes longer has failed.
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// While the cluster has no confirmed primary (a switchover or failover in progress), a
    /// transaction that needs one waits up to this long for it, then gets an error.
    #[serde(default = "default_hold_timeout", with = "humantime_serde")]
    pub hold_timeout: Duration,
}

fn default_probe_database() -> String {
    "postgres".into()
}

fn default_probe_interval() -> Duration {
    Duration::from_millis(250)
}

fn default_probe_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_hold_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One Postgres server of a cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub host: String,
    pub port: u16,
    /// What the operator believes this node is; probing has the last word.
    #[serde(default)]
    pub role: NodeRole,
    /// Patroni's REST API on this node (`host:port`, plain HTTP), for the admin console's
    /// `SWITCHOVER`.
    pub patroni_api: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Primary,
    Replica,
    #[default]
    Unknown,
}

/// `[databases.NAME]`: a database clients can ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub cluster: Spanned<String>,
    /// Name of the database on the server; the key by default.
    pub dbname: Option<String>,
    pub pool_size: Option<usize>,
    pub pool_mode: Option<PoolMode>,
    /// Overrides `[pool] max_db_connections` for this database; 0: no limit.
    pub max_db_connections: Option<usize>,
    /// Which work may run on the cluster's replicas (docs/routing.md); the database's
    /// router (plugin or built-in) reads it as a hint, the host's safety rules apply
    /// whatever it answers.
    #[serde(default)]
    pub read_routing: ReadRouting,
    /// A replica further behind the primary than this, in WAL bytes, gets no reads.
    #[serde(default = "default_max_replica_lag_bytes")]
    pub max_replica_lag_bytes: ByteSize,
    /// A replica further behind the primary than this, in time, gets no reads.
    #[serde(default = "default_max_replica_lag", with = "humantime_serde")]
    pub max_replica_lag: Duration,
    /// Whose writes a read must see: after a commit in this scope, reads go only to a
    /// replica that replayed past it (or to the primary).
    #[serde(default)]
    pub read_your_writes: ReadYourWrites,
    /// Functions that count as reads whatever `pg_proc.provolatile` says.
    #[serde(default)]
    pub read_only_functions: Vec<String>,
    /// Functions that count as writes (they win over `read_only_functions`).
    #[serde(default)]
    pub write_functions: Vec<String>,
}

/// `read_routing`: where reads may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadRouting {
    /// Everything runs on the primary.
    #[default]
    Off,
    /// Reads run on replicas; on the primary only when no replica may take them.
    Replicas,
    /// Reads are spread over the replicas and the primary.
    ReplicasOrPrimary,
}

/// `read_your_writes`: the scope of the commits a later read must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadYourWrites {
    Off,
    /// A session's reads see its own commits.
    #[default]
    Session,
    /// Every session of a user sees that user's commits.
    User,
    /// Every session sees every commit made through the proxy to the database.
    Database,
}

fn default_max_replica_lag_bytes() -> ByteSize {
    ByteSize(16 * 1024 * 1024)
}

fn default_max_replica_lag() -> Duration {
    Duration::from_secs(2)
}

/// How the proxy asks a client to prove who it is (Postgres' `pg_hba.conf` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// md5, or SCRAM for a user whose stored password is a SCRAM verifier (as Postgres).
    Md5,
    /// The password in clear (over TLS only, sensibly), checked against what is stored.
    Password,
    /// A TLS client certificate verified against `tls_client_ca` whose common name is the
    /// user name; no password.
    Cert,
}

impl ClientAuthMethod {
    /// The name the configuration and `pg_hba.conf` use.
    pub fn name(self) -> &'static str {
        match self {
            ClientAuthMethod::ScramSha256 => "scram-sha-256",
            ClientAuthMethod::Md5 => "md5",
            ClientAuthMethod::Password => "password",
            ClientAuthMethod::Cert => "cert",
        }
    }

    /// Parses a `pg_hba.conf` method name.
    pub fn parse(name: &str) -> Option<ClientAuthMethod> {
        [
            ClientAuthMethod::ScramSha256,
            ClientAuthMethod::Md5,
            ClientAuthMethod::Password,
            ClientAuthMethod::Cert,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }
}

/// `[users.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Plaintext, a SCRAM verifier (`SCRAM-SHA-256$...`) or an md5 hash (`md5...`).
    pub password: Spanned<Secret>,
    /// Password the proxy uses to log in to servers when `password` is not plaintext.
    pub server_password: Option<Secret>,
    /// Challenge sent to clients; by default SCRAM, or md5 for an md5 hash. An
    /// `auth_hba_file` rule's method takes its place.
    pub auth: Option<ClientAuthMethod>,
    /// Overrides `[pool] max_user_connections` for this user; 0: no limit.
    pub max_user_connections: Option<usize>,
}

/// `[admin]`: the virtual `switchyard` database.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Users (from `[users]`) allowed to connect to the admin console.
    pub users: Vec<Spanned<String>>,
    /// Users (from `[users]`) allowed on the admin console for `SHOW` commands only
    /// (PgBouncer's `stats_users`).
    pub stats_users: Vec<Spanned<String>>,
}

impl UserConfig {
    /// Whether the proxy can log in to servers as this user without a client's help: a
    /// plaintext password, an md5 hash (answered by md5 pass-through) or a
    /// `server_password`. A SCRAM verifier alone needs a client's login first.
    pub fn can_log_in_to_servers(&self) -> bool {
        self.server_password.is_some() || !self.password.get_ref().starts_with("SCRAM-SHA-256$")
    }
}

impl Config {
    /// Effective pool mode of a database.
    pub fn pool_mode(&self, db: &DatabaseConfig) -> PoolMode {
        db.pool_mode.unwrap_or(self.pool.mode)
    }

    /// Effective pool size of a database.
    pub fn pool_size(&self, db: &DatabaseConfig) -> usize {
        db.pool_size.unwrap_or(self.pool.size)
    }

    /// Effective `max_db_connections` of a database; 0: no limit.
    pub fn max_db_connections(&self, db: &DatabaseConfig) -> usize {
        db.max_db_connections.unwrap_or(self.pool.max_db_connections)
    }

    /// Effective `max_user_connections` of a user (one not in `[users]` was found by
    /// `auth_query` and gets the default); 0: no limit.
    pub fn max_user_connections(&self, user: &str) -> usize {
        self.users
            .get(user)
            .and_then(|u| u.max_user_connections)
            .unwrap_or(self.pool.max_user_connections)
    }
}
