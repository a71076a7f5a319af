//! The servers under test: a Postgres of the test bed ([`PgCluster`]) with the `bench`
//! role and pgbench's tables, PgBouncers, and Switchyards ([`Proxy`]) configured alike,
//! the plugin copy they load, and the login check that says a server is ready.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use switchyard_tests::proxy::{Launch, UserSection};
use switchyard_tests::tools::libpq_command;
use switchyard_tests::watchdog::Watchdog;
use switchyard_tests::{env, ports, ClusterOptions, PgCluster, Proxy, ProxyConfig};

use crate::interrupt;
use crate::options::Options;

/// PgBouncer as Debian installs it.
pub const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// Streaming replicas of the read-routing row.
pub const REPLICAS: usize = 2;

/// The database every Switchyard serves with `read_routing = "replicas"`: `bench` on the
/// server, like the database `bench`, which keeps routing off.
pub const READS_DB: &str = "bench_reads";

/// Runs `psql -c 'select 1'` as `bench` until it answers 1, for `secs` seconds, each login
/// given `login` seconds. The error names the server and psql's last words.
pub fn wait_ready(name: &str, port: u16, secs: u64, login: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = libpq_command("psql")?
            .args(["-X", "-Atq", "-c", "select 1"])
            .arg(format!(
                "host=127.0.0.1 port={port} user=bench dbname=bench connect_timeout={login}"
            ))
            .env("PGPASSWORD", "bench")
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && text == "1" {
            return Ok(());
        }
        last = format!("{text}{}", String::from_utf8_lossy(&out.stderr).trim());
        interrupt::sleep(Duration::from_millis(100))?;
    }
    bail!("{name} on port {port} not answering: {last}")
}

/// The private Postgres: the test bed's cluster with the benchmark's settings (and two
/// streaming replicas for the read-routing row), a `bench` role (SCRAM) owning database
/// `bench`, and `pgbench -i -s SCALE` in it, replayed by the replicas. Returns the cluster
/// and the role's SCRAM verifier (which PgBouncer needs).
pub fn start_postgres(opt: &Options, work: &Path) -> Result<(PgCluster, String)> {
    let max_clients = opt
        .clients
        .iter()
        .copied()
        .chain(
            opt.tax_cells
                .iter()
                .chain(&opt.routing_cells)
                .chain(&opt.pipeline_cells)
                .map(|c| c.clients),
        )
        .max()
        .unwrap_or(0);
    // direct clients, plus the pools of pgbouncer, switchyard, switchyard-plugin,
    // switchyard-pipelined, callgrind-*
    let max_connections = (max_clients + 5 * opt.pool_size + 20 + opt.session_pool_size()).max(300);
    let mut cluster_opts = ClusterOptions {
        replicas: if opt.routing { REPLICAS } else { 0 },
        ..Default::default()
    };
    for (k, v) in [
        ("max_connections", max_connections.to_string()),
        ("shared_buffers", "256MB".to_owned()),
        ("password_encryption", "scram-sha-256".to_owned()),
        ("log_connections", "off".to_owned()),
        ("log_disconnections", "off".to_owned()),
    ] {
        cluster_opts = cluster_opts.setting(k, v);
    }
    let pg = PgCluster::start_with(cluster_opts).context("starting postgres")?;
    let primary = pg.primary();
    crate::log!(
        "postgres on 127.0.0.1:{} ({}), max_connections {max_connections}{}",
        primary.port(),
        pg.dir().display(),
        if pg.replicas().is_empty() {
            String::new()
        } else {
            let ports: Vec<String> = pg.replicas().iter().map(|r| r.port().to_string()).collect();
            format!("; streaming replicas on {}", ports.join(", "))
        }
    );
    primary.admin_sql(
        "postgres",
        "SET password_encryption = 'scram-sha-256';\n\
         CREATE ROLE bench LOGIN PASSWORD 'bench';\n\
         CREATE DATABASE bench OWNER bench;\n",
    )?;
    wait_ready("postgres", primary.port(), 30, 2).context("postgres not reachable as bench over TCP")?;
    crate::log!("pgbench -i -s {}", opt.scale);
    let init_log = work.join("pgbench-init.log");
    let out = libpq_command("pgbench")?
        .args(["-i", "-q", "-s", &opt.scale.to_string(), "-h", "127.0.0.1", "-p"])
        .arg(primary.port().to_string())
        .args(["-U", "bench", "bench"])
        .env("PGPASSWORD", "bench")
        .stdin(Stdio::null())
        .output()
        .context("running pgbench -i")?;
    fs::write(&init_log, [out.stdout, out.stderr].concat())?;
    if !out.status.success() {
        bail!("pgbench -i failed:\n{}", env::tail(&init_log, 20));
    }
    primary.admin_sql("bench", "CHECKPOINT")?;
    pg.wait_replica_caught_up()
        .context("replicas replaying pgbench -i")?;
    let verifier = primary
        .admin_sql(
            "postgres",
            "select rolpassword from pg_authid where rolname = 'bench'",
        )?
        .trim()
        .to_owned();
    if !verifier.starts_with("SCRAM-SHA-256$") {
        bail!("unexpected verifier for bench: {verifier}");
    }
    Ok((pg, verifier))
}

/// A PgBouncer, daemonized (`-d`) as the old script ran it: a foreground PgBouncer holds
/// about 4 MiB more RSS, which would change the memory-per-idle-client comparison. Run as
/// the Postgres OS user when root, with its ini, user list and log in its own directory,
/// and a [`Watchdog`] on the daemon's pid.
pub struct PgBouncer {
    pub name: &'static str,
    pub port: u16,
    dir: PathBuf,
    pid: Option<u32>,
    watchdog: Option<Watchdog>,
}

/// Whether `pid` is alive and still the PgBouncer started with `ini` (not a reused pid).
fn is_pgbouncer(pid: u32, ini: &Path) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*ini.to_string_lossy()))
}

impl PgBouncer {
    /// Starts `name` in `mode` with pools of `size`, in front of Postgres on `pg_port`, and
    /// waits until `bench` can log in with SCRAM.
    pub fn start(
        name: &'static str,
        mode: &str,
        size: u32,
        pg_port: u16,
        verifier: &str,
        idle_clients: u32,
        work: &Path,
    ) -> Result<Self> {
        let max_client_conn = idle_clients + 2000;
        let port = ports::free_port()?;
        let dir = work.join(name);
        fs::create_dir_all(&dir)?;
        crate::log!("starting {name} on 127.0.0.1:{port} ({mode} mode, pool {size})");
        let userlist = dir.join("userlist.txt");
        fs::write(&userlist, format!("\"bench\" \"{verifier}\"\n"))?;
        env::set_mode(&userlist, 0o600)?;
        let pidfile = dir.join(format!("{name}.pid"));
        fs::write(
            dir.join(format!("{name}.ini")),
            format!(
                "[databases]\n\
                 bench = host=127.0.0.1 port={pg_port} dbname=bench\n\
                 \n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 logfile = {log}\n\
                 pidfile = {pid}\n\
                 auth_type = scram-sha-256\n\
                 auth_file = {userlist}\n\
                 pool_mode = {mode}\n\
                 default_pool_size = {size}\n\
                 min_pool_size = 0\n\
                 reserve_pool_size = 0\n\
                 max_client_conn = {max_client_conn}\n\
                 max_db_connections = 0\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n\
                 log_pooler_errors = 1\n\
                 stats_period = 3600\n",
                log = dir.join(format!("{name}.log")).display(),
                pid = pidfile.display(),
                userlist = userlist.display(),
            ),
        )?;
        env::chown_to_pg(&dir)?;
        let mut bouncer = Self {
            name,
            port,
            dir,
            pid: None,
            watchdog: None,
        };
        let mut cmd = Command::new(PGBOUNCER);
        cmd.args(["-d", "-q"]).arg(bouncer.ini()).stdin(Stdio::null());
        if let Some(user) = env::pg_os_user()? {
            cmd.uid(user.uid).gid(user.gid);
        }
        // Spawned directly (no runuser and its PAM session), PgBouncer keeps this process's
        // open-files limit, raised to the hard limit in main: the idle clients need it.
        let status = cmd.status().with_context(|| format!("running {PGBOUNCER}"))?;
        if !status.success() {
            bail!(
                "{name} did not start ({status})\n{}",
                env::tail(&bouncer.log_path(), 20)
            );
        }
        for _ in 0..50 {
            if let Some(pid) = fs::read_to_string(&pidfile)
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                bouncer.pid = Some(pid);
                bouncer.watchdog = Some(Watchdog::arm(pid, "KILL")?);
                break;
            }
            interrupt::sleep(Duration::from_millis(100))?;
        }
        if bouncer.pid.is_none() {
            bail!("{name} wrote no pidfile");
        }
        if let Some(nofile) = bouncer.open_files_limit() {
            if nofile < u64::from(idle_clients + 100) {
                crate::log!(
                    "WARNING: {name} may open only {nofile} files; it will refuse clients beyond that"
                );
            }
        }
        if let Err(e) = wait_ready(name, port, 30, 2) {
            bail!("{name} not ready: {e:#}\n{}", env::tail(&bouncer.log_path(), 20));
        }
        Ok(bouncer)
    }

    fn ini(&self) -> PathBuf {
        self.dir.join(format!("{}.ini", self.name))
    }

    fn open_files_limit(&self) -> Option<u64> {
        let limits = fs::read_to_string(format!("/proc/{}/limits", self.pid?)).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// `Err` with the log's tail when it died.
    pub fn ensure_running(&self) -> Result<()> {
        match self.pid {
            Some(pid) if is_pgbouncer(pid, &self.ini()) => Ok(()),
            _ => bail!("{} died\n{}", self.name, env::tail(&self.log_path(), 20)),
        }
    }

    /// SIGTERM (PgBouncer's immediate shutdown), SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        let ini = self.ini();
        if is_pgbouncer(pid, &ini) {
            crate::log!("stopping {} (pid {pid})", self.name);
            // SAFETY: kill(2) on the daemon we started, checked by its command line above.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while is_pgbouncer(pid, &ini) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if is_pgbouncer(pid, &ini) {
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        if let Some(mut w) = self.watchdog.take() {
            w.disarm();
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The pool-mode component the plugin proxies load, copied into the work directory so that
/// someone else's rebuild of `plugins/dist` cannot pull it away from a proxy that restarts.
pub struct PluginCopy {
    /// Where it came from, relative to the workspace when inside it.
    pub source: String,
    pub path: PathBuf,
    /// The first 12 hex digits of its SHA-256.
    pub sha: String,
}

/// `PLUGIN` as it is, or `plugins/dist/pool-mode.wasm`, rebuilt with `scripts/build-plugins`
/// when missing or older than its sources.
pub fn prepare_plugin(opt: &Options, work: &Path) -> Result<PluginCopy> {
    let root = env::workspace_dir();
    let src = match &opt.plugin {
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!("PLUGIN={} does not exist", p.display());
            }
            crate::log!("using the given plugin {}", p.display());
            p
        }
        None => {
            let dist = root.join("plugins/dist/pool-mode.wasm");
            let built = fs::metadata(&dist).and_then(|m| m.modified()).ok();
            let sources = [
                root.join("plugins/pool-mode"),
                root.join("wit"),
                root.join("plugins/Cargo.toml"),
                root.join("plugins/Cargo.lock"),
            ];
            let reason = match built {
                None => Some(format!("{} is missing", relative(&dist))),
                Some(built) => sources
                    .iter()
                    .find_map(|s| newer_file(s, built))
                    .map(|f| format!("{} is newer than {}", relative(&f), relative(&dist))),
            };
            if let Some(reason) = reason {
                crate::log!("building plugins (scripts/build-plugins): {reason}");
                let status = Command::new(root.join("scripts/build-plugins"))
                    // Its listing too: stdout is the report's.
                    .stdout(std::io::stderr())
                    .stderr(Stdio::inherit())
                    .status()
                    .context("running scripts/build-plugins")?;
                if !status.success() {
                    bail!("scripts/build-plugins failed");
                }
            }
            dist
        }
    };
    let path = work.join("pool-mode.wasm");
    let mut copied = false;
    for _ in 0..50 {
        if fs::copy(&src, &path).is_ok_and(|n| n > 0) {
            copied = true;
            break;
        }
        interrupt::sleep(Duration::from_millis(200))?; // plugins/dist being rebuilt by someone else
    }
    if !copied {
        bail!("could not copy {}", src.display());
    }
    let bytes = fs::read(&path)?;
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let copy = PluginCopy {
        source: relative(&src),
        path,
        sha: sha[..12].to_owned(),
    };
    crate::log!(
        "pool-mode plugin: {} (sha256 {}, {} bytes)",
        copy.source,
        copy.sha,
        bytes.len()
    );
    Ok(copy)
}

/// `path` relative to the workspace when inside it.
fn relative(path: &Path) -> String {
    path.strip_prefix(env::workspace_dir())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A file under `path` (outside `target/` directories) modified after `than`.
fn newer_file(path: &Path, than: std::time::SystemTime) -> Option<PathBuf> {
    let meta = fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta
            .modified()
            .ok()
            .filter(|m| *m > than)
            .map(|_| path.to_path_buf());
    }
    let entries = fs::read_dir(path).ok()?;
    entries
        .flatten()
        .filter(|e| e.file_name() != "target")
        .find_map(|e| newer_file(&e.path(), than))
}

/// Which Switchyard: the built-in policy, the pool-mode plugin, the pool-mode plugin with
/// `pipeline = true` in its settings (pipelined transaction pooling), or one of the first
/// two under callgrind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flavour {
    Builtin,
    Plugin,
    Pipelined,
    CallgrindBuiltin,
    CallgrindPlugin,
}

impl Flavour {
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Builtin => "switchyard",
            Flavour::Plugin => "switchyard-plugin",
            Flavour::Pipelined => "switchyard-pipelined",
            Flavour::CallgrindBuiltin => "callgrind-builtin",
            Flavour::CallgrindPlugin => "callgrind-plugin",
        }
    }

    pub fn has_plugin(self) -> bool {
        matches!(
            self,
            Flavour::Plugin | Flavour::Pipelined | Flavour::CallgrindPlugin
        )
    }

    fn under_callgrind(self) -> bool {
        matches!(self, Flavour::CallgrindBuiltin | Flavour::CallgrindPlugin)
    }
}

/// Every Switchyard of the benchmark is this one: transaction mode, pool POOL_SIZE, SCRAM
/// client auth of bench/bench, an admin console for SHOW PLUGINS and SHOW NODES, no
/// compiled-plugin cache (nothing written to the home directory; the startup Ir under
/// callgrind includes compiling the plugin); with `plugin` (the pool-mode component, given
/// for the plugin flavours) serving every database, deciding pipelining too for
/// [`Flavour::Pipelined`] (`pipeline = "true"` in its settings, as a user would turn it on);
/// with login and connect timeouts that survive valgrind under callgrind. Two databases on the server's `bench`: `bench` with routing off and
/// [`READS_DB`] with `read_routing = "replicas"`; with replicas, the proxy probes the nodes
/// as `postgres` (routing needs the probes: lag and roles come from them).
pub fn proxy_config(
    flavour: Flavour,
    opt: &Options,
    pg: &PgCluster,
    plugin: Option<&Path>,
    listen: Option<String>,
) -> ProxyConfig {
    let mut cfg = ProxyConfig::for_cluster(pg).with_admin();
    cfg.proxy.listen = listen.unwrap_or_default();
    cfg.proxy.max_client_conn = Some(opt.idle_clients + 2000);
    cfg.proxy.client_login_timeout = None;
    // As the PgBouncers' `log_connections = 0` and `log_disconnections = 0`: two log lines
    // per connection would weigh on the `-C` row.
    cfg.proxy.log_connections = Some(false);
    cfg.proxy.log_disconnections = Some(false);
    cfg.pool.size = opt.pool_size;
    cfg.pool.connect_timeout = None;
    cfg.pool.idle_timeout = None;
    cfg.pool.lifetime = None;
    cfg.databases.retain(|_, _| false);
    for db in ["bench", READS_DB] {
        cfg.databases.insert(
            db.to_owned(),
            switchyard_tests::proxy::DatabaseSection {
                cluster: "main".to_owned(),
                dbname: Some("bench".to_owned()),
                ..Default::default()
            },
        );
    }
    let probe_user = switchyard_tests::roles::SUPERUSER.0;
    let probing = !pg.replicas().is_empty();
    cfg.users
        .retain(|name, _| name == "admin" || (probing && name == probe_user));
    let mut cfg = cfg
        .mode("transaction")
        .query_wait_timeout("30s")
        .user("bench", UserSection::with_password("bench"))
        .set("proxy.shutdown_timeout", "2s")
        .set("proxy.plugin_cache_dir", "")
        .set(&format!("databases.{READS_DB}.read_routing"), "replicas");
    if probing {
        cfg = cfg.set("clusters.main.probe_user", probe_user);
    }
    if flavour.under_callgrind() {
        cfg = cfg
            .client_login_timeout("600s")
            .set("proxy.workers", i64::from(opt.cg_workers))
            .set("pool.connect_timeout", "120s");
    } else if let Some(w) = opt.workers {
        cfg = cfg.set("proxy.workers", i64::from(w));
    }
    if let Some(t) = &opt.threading {
        cfg = cfg.set("proxy.threading", t.as_str());
    }
    if let Some(plugin) = plugin {
        cfg = cfg
            .set("plugins.pool-mode.path", plugin.display().to_string())
            .set(
                "plugins.pool-mode.hooks",
                toml::Value::Array(vec!["pool-mode".into()]),
            )
            .set("plugins.pool-mode.settings.mode", "transaction");
        if flavour == Flavour::Pipelined {
            cfg = cfg.set("plugins.pool-mode.settings.pipeline", "true");
        }
    }
    cfg
}

/// Starts a Switchyard of `flavour` (on `listen`, or a free port) and waits until `bench`
/// logs in. Under callgrind it runs under valgrind, writing `<name>.out*` into `cg_dir`.
pub fn start_switchyard(
    flavour: Flavour,
    opt: &Options,
    pg: &PgCluster,
    plugin: Option<&Path>,
    listen: Option<String>,
    cg_dir: &Path,
) -> Result<Proxy> {
    let name = flavour.name();
    let plugin = match plugin {
        Some(p) if flavour.has_plugin() => Some(p),
        None if flavour.has_plugin() => bail!("{name}: no pool-mode plugin was prepared"),
        _ => None,
    };
    let mut launch = Launch {
        checks_on_drop: false,
        stop_grace: Duration::from_secs(10),
        ..Launch::default()
    };
    let (ready_secs, login) = if flavour.under_callgrind() {
        launch.wrapper = vec![
            "valgrind".to_owned(),
            "--tool=callgrind".to_owned(),
            "--separate-threads=yes".to_owned(),
            "--trace-children=yes".to_owned(),
            format!("--cache-sim={}", if opt.cg_cache_sim { "yes" } else { "no" }),
            format!(
                "--callgrind-out-file={}",
                cg_dir.join(format!("{name}.out")).display()
            ),
            format!(
                "--log-file={}",
                cg_dir.join(format!("{name}.valgrind.log")).display()
            ),
        ];
        launch.ready_within = Duration::from_secs(600);
        // The graceful shutdown and the final callgrind dump take a while under valgrind.
        launch.stop_grace = Duration::from_secs(120);
        (600, 120)
    } else {
        (30, 2)
    };
    let cfg = proxy_config(flavour, opt, pg, plugin, listen);
    let proxy = Proxy::start_with(cfg, launch).with_context(|| format!("{name} did not start"))?;
    crate::log!(
        "started {name} on {} (transaction mode, pool {}{})",
        proxy.addr(),
        opt.pool_size,
        match flavour {
            Flavour::Pipelined => ", pool-mode plugin, pipeline = true",
            f if f.has_plugin() => ", pool-mode plugin",
            _ => "",
        }
    );
    if let Err(e) = wait_ready(name, proxy.port(), ready_secs, login) {
        bail!("{name} not ready: {e:#}\n{}", proxy.log_tail(20));
    }
    Ok(proxy)
}
