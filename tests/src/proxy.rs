//! The proxy under test: its TOML configuration and its process.
//!
//! [`ProxyConfig`] generates Switchyard's configuration file (format in the
//! project README) from typed fields, with [`ProxyConfig::set`] as an escape
//! hatch for keys this crate does not know yet. [`Proxy`] runs the real
//! binary (`switchyard --config <file>`) as a black box, waits until it
//! accepts TCP connections, keeps its output in a log file, shows the log's
//! tail when a test fails, and kills it on `Drop` (or via a [`Watchdog`] if
//! the test process dies). It runs in a process group of its own: a Ctrl-C on
//! the terminal reaches only the program that started it, which stops it.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::cluster::{roles, PgCluster};
use crate::{deadline::Deadline, env, ports, scratch, tools, watchdog::Watchdog};

/// `[proxy]`
#[derive(Clone, Debug, Serialize)]
pub struct ProxySection {
    pub listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_client_conn: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_login_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_connections: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_disconnections: Option<bool>,
}

/// `[pool]`: defaults for every database.
#[derive(Clone, Debug, Serialize)]
pub struct PoolSection {
    /// `"session"` or `"transaction"`.
    pub mode: String,
    pub size: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_wait_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<String>,
}

/// One backend server of a cluster.
#[derive(Clone, Debug, Serialize)]
pub struct NodeEntry {
    pub host: String,
    pub port: u16,
    /// `"primary"` or `"replica"`.
    pub role: String,
    /// Patroni's REST API (`host:port`) on this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patroni_api: Option<String>,
}

/// `[clusters.<name>]`
#[derive(Clone, Debug, Serialize)]
pub struct ClusterSection {
    pub nodes: Vec<NodeEntry>,
}

/// `[databases.<name>]`
#[derive(Clone, Debug, Default, Serialize)]
pub struct DatabaseSection {
    pub cluster: String,
    /// Server-side database name, when it differs from the client-facing one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dbname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_mode: Option<String>,
}

/// `[users.<name>]`
#[derive(Clone, Debug, Default, Serialize)]
pub struct UserSection {
    /// Plaintext, a `SCRAM-SHA-256$...` verifier, or an `md5...` hash.
    pub password: String,
    /// Password for server logins when `password` is not plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_password: Option<String>,
    /// Challenge sent to clients: `"scram-sha-256"` or `"md5"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

impl UserSection {
    /// A user with this password (plaintext, verifier or hash).
    pub fn with_password(password: &str) -> Self {
        Self {
            password: password.to_owned(),
            ..Default::default()
        }
    }
}

/// `[admin]`
#[derive(Clone, Debug, Default, Serialize)]
pub struct AdminSection {
    pub users: Vec<String>,
}

/// A complete Switchyard configuration.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyConfig {
    pub proxy: ProxySection,
    pub pool: PoolSection,
    pub clusters: BTreeMap<String, ClusterSection>,
    pub databases: BTreeMap<String, DatabaseSection>,
    pub users: BTreeMap<String, UserSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminSection>,
    /// Raw overrides applied last, keyed by dotted path (see [`Self::set`]).
    #[serde(skip)]
    pub overrides: Vec<(String, toml::Value)>,
}

impl ProxyConfig {
    /// The standard test configuration for `pg`: cluster `main` with its
    /// primary (and replica, if any); databases `app` and `postgres`; users
    /// `app`, `md5user`, `trustuser` and `postgres` with their plaintext
    /// passwords (see [`roles`]); transaction pooling with a pool of 20.
    /// The listen port is chosen by [`Proxy::start`] unless set here.
    pub fn for_cluster(pg: &PgCluster) -> Self {
        let mut nodes = vec![NodeEntry {
            host: pg.primary().host().to_owned(),
            port: pg.primary().port(),
            role: "primary".to_owned(),
            patroni_api: None,
        }];
        for replica in pg.replicas() {
            nodes.push(NodeEntry {
                host: replica.host().to_owned(),
                port: replica.port(),
                role: "replica".to_owned(),
                patroni_api: None,
            });
        }
        Self::for_nodes(nodes)
    }

    /// The standard test configuration (see [`ProxyConfig::for_cluster`]) for a cluster
    /// `main` of these nodes.
    pub fn for_nodes(nodes: Vec<NodeEntry>) -> Self {
        let mut databases = BTreeMap::new();
        for db in [roles::APP_DB, "postgres"] {
            databases.insert(
                db.to_owned(),
                DatabaseSection {
                    cluster: "main".to_owned(),
                    ..Default::default()
                },
            );
        }
        let mut users = BTreeMap::new();
        for (user, password) in [roles::APP, roles::MD5, roles::TRUST, roles::SUPERUSER] {
            users.insert(user.to_owned(), UserSection::with_password(password));
        }
        Self {
            proxy: ProxySection {
                listen: String::new(),
                max_client_conn: Some(10_000),
                client_login_timeout: Some("10s".to_owned()),
                tls_cert: None,
                tls_key: None,
                log_connections: None,
                log_disconnections: None,
            },
            pool: PoolSection {
                mode: "transaction".to_owned(),
                size: 20,
                connect_timeout: Some("5s".to_owned()),
                query_wait_timeout: Some("30s".to_owned()),
                idle_timeout: Some("10m".to_owned()),
                lifetime: Some("1h".to_owned()),
            },
            clusters: BTreeMap::from([("main".to_owned(), ClusterSection { nodes })]),
            databases,
            users,
            admin: None,
            overrides: Vec::new(),
        }
    }

    /// Pool mode for every database: `"session"` or `"transaction"`.
    pub fn mode(mut self, mode: &str) -> Self {
        self.pool.mode = mode.to_owned();
        self
    }

    /// Default server pool size.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool.size = size;
        self
    }

    /// How long a client waits for a server connection before an error.
    pub fn query_wait_timeout(mut self, timeout: &str) -> Self {
        self.pool.query_wait_timeout = Some(timeout.to_owned());
        self
    }

    /// How long a client may take to log in.
    pub fn client_login_timeout(mut self, timeout: &str) -> Self {
        self.proxy.client_login_timeout = Some(timeout.to_owned());
        self
    }

    /// Set (or replace) a user entry.
    /// Adds the admin user `admin`/`admin`, allowed on the admin console.
    pub fn with_admin(self) -> Self {
        let mut cfg = self.user(
            "admin",
            UserSection {
                password: "admin".into(),
                server_password: None,
                auth: None,
            },
        );
        cfg.admin = Some(AdminSection {
            users: vec!["admin".into()],
        });
        cfg
    }

    pub fn user(mut self, name: &str, user: UserSection) -> Self {
        self.users.insert(name.to_owned(), user);
        self
    }

    /// Set any key by dotted path, e.g. `set("databases.app.pool_size", 2)`.
    /// Applied after the typed fields, so it can also override them.
    pub fn set(mut self, path: &str, value: impl Into<toml::Value>) -> Self {
        self.overrides.push((path.to_owned(), value.into()));
        self
    }

    /// Render as TOML.
    pub fn to_toml(&self) -> Result<String> {
        let mut value = toml::Value::try_from(self).context("serializing proxy config")?;
        for (path, v) in &self.overrides {
            let mut cur = &mut value;
            let keys: Vec<&str> = path.split('.').collect();
            let (last, parents) = keys.split_last().expect("split yields one item");
            for key in parents {
                let table = cur
                    .as_table_mut()
                    .ok_or_else(|| anyhow!("config path {path}: {key} is not a table"))?;
                cur = table
                    .entry(key.to_string())
                    .or_insert_with(|| toml::Value::Table(Default::default()));
            }
            cur.as_table_mut()
                .ok_or_else(|| anyhow!("config path {path}: parent is not a table"))?
                .insert(last.to_string(), v.clone());
        }
        toml::to_string_pretty(&value).context("rendering proxy config")
    }
}

/// Whether the test harness captures output (then printing log tails is
/// free: they are only shown for failing tests).
fn output_captured() -> bool {
    !std::env::args().any(|a| a == "--nocapture" || a == "--no-capture")
        && std::env::var_os("RUST_TEST_NOCAPTURE").is_none_or(|v| v == "0")
}

/// How [`Proxy::start_with`] runs the binary. The default is the tests' way.
#[derive(Clone, Debug)]
pub struct Launch {
    /// A program (with its arguments) that runs the proxy's command line, e.g.
    /// `valgrind --tool=callgrind`; it must exec the proxy in place (the pid is the proxy's).
    pub wrapper: Vec<String>,
    /// Arguments after `--config FILE` (e.g. `--log-format json`).
    pub args: Vec<String>,
    /// The proxy binary to run instead of the built one ([`env::proxy_binary`]): an
    /// upgrade test runs a copy.
    pub binary: Option<PathBuf>,
    /// How long start-up may take until the proxy accepts connections.
    pub ready_within: Duration,
    /// How long after SIGTERM [`Proxy::stop`] waits before SIGKILL.
    pub stop_grace: Duration,
    /// The tests' rule on drop: print the log tail (the harness shows it for failing tests)
    /// and fail when the log shows a panic. A benchmark checks [`Proxy::panics`] itself.
    pub checks_on_drop: bool,
    /// Where the config file (`switchyard.toml`) and the log (`switchyard.log`, appended)
    /// go. `None` (the default): a fresh scratch directory, removed on drop; a directory
    /// given here is the caller's and is kept (the demo's).
    pub dir: Option<PathBuf>,
    /// Environment variables set for the proxy beside the test bed's own (e.g.
    /// `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
}

impl Default for Launch {
    fn default() -> Self {
        Self {
            wrapper: Vec::new(),
            args: Vec::new(),
            binary: None,
            ready_within: Duration::from_secs(30),
            stop_grace: Duration::from_secs(5),
            checks_on_drop: true,
            dir: None,
            env: Vec::new(),
        }
    }
}

/// A running Switchyard process.
pub struct Proxy {
    dir: PathBuf,
    config: ProxyConfig,
    launch: Launch,
    addr: SocketAddr,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
    /// Last: disarmed only after the proxy has stopped.
    _deadline: Deadline,
}

impl Proxy {
    /// Write `config` (choosing a free listen port if `proxy.listen` is
    /// empty), start the binary, and wait until it accepts connections.
    pub fn start(config: ProxyConfig) -> Result<Self> {
        Self::start_with(config, Launch::default())
    }

    /// [`Proxy::start`], run as `launch` says.
    pub fn start_with(mut config: ProxyConfig, launch: Launch) -> Result<Self> {
        let binary = match &launch.binary {
            Some(binary) => binary.clone(),
            None => env::proxy_binary()?,
        };
        let dir = match &launch.dir {
            Some(dir) => dir.clone(),
            None => scratch::fresh_dir("proxy")?,
        };
        let pick_port = config.proxy.listen.is_empty();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if pick_port {
                config.proxy.listen = format!("127.0.0.1:{}", ports::free_port()?);
            }
            let mut proxy = Self {
                dir: dir.clone(),
                addr: config
                    .proxy
                    .listen
                    .parse()
                    .with_context(|| format!("proxy.listen = {:?}", config.proxy.listen))?,
                config: config.clone(),
                launch: launch.clone(),
                child: None,
                watchdog: None,
                _deadline: Deadline::arm(
                    format!("the proxy on {}", config.proxy.listen),
                    Some(dir.join("switchyard.log")),
                ),
            };
            match proxy.spawn(&binary) {
                Ok(()) => return Ok(proxy),
                Err(e) if pick_port && attempt < 4 && proxy.log().contains("in use") => {
                    let _ = e;
                    proxy.kill();
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn(&mut self, binary: &Path) -> Result<()> {
        self.save_config()?;
        let config_path = self.config_path();
        // A kept directory keeps its log too.
        let mut open = OpenOptions::new();
        match self.launch.dir {
            Some(_) => open.create(true).append(true),
            None => open.create(true).write(true).truncate(true),
        };
        let log = open.open(self.log_path())?;
        let mut cmd = match self.launch.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        cmd.arg("--config")
            .arg(&config_path)
            .args(&self.launch.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.env("NO_COLOR", "1");
        // A session (and process group) of its own, as a service's own cgroup or a daemon
        // has (the bench's PgBouncer runs with -d): with the kernel's autogroup
        // scheduling, a process left in the session of the tests' Postgres and pgbench
        // shares their CPU group, and each of them it wakes may preempt it.
        // SAFETY: setsid is async-signal-safe and touches no memory of this process.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // Compiled plugins are cached per user; tests share one cache of their own.
        cmd.env("XDG_CACHE_HOME", env::scratch_root()?.join("xdg-cache"));
        cmd.envs(self.launch.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        scratch::record_process(&self.dir, "switchyard", child.id());
        self.watchdog = Some(Watchdog::arm(child.id(), "KILL")?);
        self.child = Some(child);
        self.wait_ready(self.launch.ready_within)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "switchyard exited during start-up with {status}\n--- config ---\n{}\n--- log ---\n{}",
                    self.config.to_toml().unwrap_or_default(),
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "switchyard did not accept connections on {} within {limit:?}\n--- log ---\n{}",
                    self.addr,
                    env::tail(&self.log_path(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Host clients connect to.
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// Port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Process id of the running proxy (for reading its `/proc/<pid>/status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The proxy's resident memory now (see [`resident_memory`]).
    pub fn memory(&self) -> Result<ResidentMemory> {
        resident_memory(self.pid().context("the proxy is not running")?)
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// Path of the combined stdout/stderr log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("switchyard.log")
    }

    /// Whole log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// Last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        env::tail(&self.log_path(), lines)
    }

    /// Whether the process is still alive (a crash is a test failure).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Fail with the log tail if the proxy died.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "switchyard died ({status})\n--- log tail ---\n{}",
                    self.log_tail(60)
                );
            }
            Ok(())
        } else {
            bail!("switchyard is not running")
        }
    }

    /// Send a signal (e.g. `libc::SIGHUP` for a reload).
    pub fn signal(&mut self, signal: i32) {
        if let Some(child) = self.child.as_mut() {
            // Once reaped, the pid may belong to another process: never signal it then.
            if matches!(child.try_wait(), Ok(None)) {
                tools::signal(child.id(), signal);
            }
        }
    }

    /// Rewrite the config file (keeping the listen address), without telling the proxy.
    pub fn write_config(&mut self, config: ProxyConfig) -> Result<()> {
        let listen = self.config.proxy.listen.clone();
        self.config = config;
        self.config.proxy.listen = listen;
        self.save_config()
    }

    /// Writes the config file. A new one is readable by its owner only (it holds
    /// passwords: the proxy warns about a file others can read); one that exists keeps its
    /// mode (a test may have chosen it).
    fn save_config(&self) -> Result<()> {
        let path = self.config_path();
        let new = !path.exists();
        std::fs::write(&path, self.config.to_toml()?)
            .with_context(|| format!("writing {}", path.display()))?;
        if new {
            env::set_mode(&path, 0o600)?;
        }
        Ok(())
    }

    /// The config file the proxy was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("switchyard.toml")
    }

    /// Rewrite the config file and send SIGHUP.
    pub fn reload(&mut self, config: ProxyConfig) -> Result<()> {
        self.write_config(config)?;
        self.signal(libc::SIGHUP);
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it is still running after the launch's grace (5 s).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // Once reaped, the pid may belong to another process: never signal it then.
        if matches!(child.try_wait(), Ok(None)) {
            tools::signal(child.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + self.launch.stop_grace;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    break child.wait().ok();
                }
            }
        };
        if let Some(mut w) = self.watchdog.take() {
            w.disarm();
        }
        status
    }

    /// Waits up to `limit` for the process to exit by itself (after a signal the test sent
    /// with [`Proxy::signal`]); its exit status, or `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
        let child = self.child.as_mut().context("switchyard is not running")?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                if let Some(mut w) = self.watchdog.take() {
                    w.disarm();
                }
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut w) = self.watchdog.take() {
            w.disarm();
        }
    }

    /// Lines of the log where the proxy itself panicked: Rust's panic message, which starts
    /// a line, unlike a plugin's captured stderr, which the proxy logs inside its own lines.
    pub fn panics(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.starts_with("thread '") && l.contains("panicked at"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Proxy {
    /// Stops the proxy; fails the test if its log shows a panic, even when the clients
    /// tolerated the errors it caused.
    fn drop(&mut self) {
        let crashed = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        self.stop();
        if !self.launch.checks_on_drop {
            if self.launch.dir.is_none() {
                scratch::remove_dir(&self.dir);
            }
            return;
        }
        let panics = self.panics();
        if std::thread::panicking() || output_captured() || crashed.is_some() || !panics.is_empty() {
            eprintln!(
                "---- switchyard log tail ({}){} ----\n{}\n---- end of switchyard log ----",
                self.log_path().display(),
                match crashed {
                    Some(status) => format!(", PROXY HAD EXITED: {status}"),
                    None => String::new(),
                },
                self.log_tail(80)
            );
        }
        if std::thread::panicking() {
            return;
        }
        assert!(
            panics.is_empty(),
            "the proxy panicked (log: {}):\n{}",
            self.log_path().display(),
            panics.join("\n")
        );
        if self.launch.dir.is_none() {
            scratch::remove_dir(&self.dir);
        }
    }
}

/// A process's resident memory, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct ResidentMemory {
    /// The peak so far (`VmHWM`).
    pub peak: u64,
    /// Now (`VmRSS`).
    pub now: u64,
}

/// The resident memory of process `pid`, from `/proc/<pid>/status`.
pub fn resident_memory(pid: u32) -> Result<ResidentMemory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} in /proc/{pid}/status"))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("parsing {line:?}"))?;
        Ok(kib * 1024)
    };
    Ok(ResidentMemory {
        peak: field("VmHWM:")?,
        now: field("VmRSS:")?,
    })
}

/// Voluntary plus nonvoluntary context switches from the text of a `/proc/.../status`
/// (one thread's when read from `/proc/PID/task/TID/status`).
pub fn parse_ctx_switches(status: &str) -> Option<u64> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(field("voluntary_ctxt_switches:")? + field("nonvoluntary_ctxt_switches:")?)
}

/// One thread of a process: its id, its name (`comm`, at most 15 bytes) and its context
/// switches so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadSwitches {
    pub tid: u32,
    pub name: String,
    pub switches: u64,
}

/// Every live thread of process `pid`, from `/proc/<pid>/task/*/{comm,status}`.
pub fn thread_switches(pid: u32) -> Result<Vec<ThreadSwitches>> {
    let dir = format!("/proc/{pid}/task");
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let path = entry.with_context(|| format!("listing {dir}"))?.path();
        let Some(tid) = path.file_name().and_then(|n| n.to_str()?.parse().ok()) else {
            continue;
        };
        // A thread that ended between the listing and the reading is left out.
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("status")),
        ) else {
            continue;
        };
        let switches = parse_ctx_switches(&status)
            .with_context(|| format!("context switches in {}/status", path.display()))?;
        threads.push(ThreadSwitches {
            tid,
            name: name.trim_end().to_string(),
            switches,
        });
    }
    Ok(threads)
}

/// The context switches so far of each of the proxy's per-core worker threads (the main
/// thread, worker 0, and the threads named `switchyard-worker-N`), by thread id.
pub fn worker_switches(pid: u32) -> Result<BTreeMap<u32, u64>> {
    Ok(thread_switches(pid)?
        .into_iter()
        // `comm` keeps 15 bytes: "switchyard-work".
        .filter(|t| t.tid == pid || t.name.starts_with("switchyard-work"))
        .map(|t| (t.tid, t.switches))
        .collect())
}
