//! A real Patroni cluster on loopback: a private [`Etcd`] and (by default)
//! two Patroni 4.1.5 nodes, each running its own PostgreSQL 15.
//!
//! Each node gets two free ports (Postgres and Patroni's REST API), a
//! directory in scratch (config, logs, Unix socket, `data/`), and runs as
//! the `postgres` OS user when the tests run as root, like
//! [`crate::cluster`]. The scope (cluster name) is unique per cluster, and
//! each cluster has its own etcd anyway.
//!
//! Patroni settings: `loop_wait: 1`, `ttl: 20` (Patroni raises any smaller
//! `ttl` to 20, its minimum, so an unplanned failover takes about 20 s
//! before the replica may take the leader key), `retry_timeout: 5` (etcd
//! answers on loopback in milliseconds; Patroni requires
//! `loop_wait + 2 * retry_timeout <= ttl`), optional `synchronous_mode`,
//! and optional `before_stop` and `on_role_change` commands from the
//! caller (see [`PatroniOptions`] for how Patroni runs them).
//!
//! Roles: Patroni 4 dropped `bootstrap.users`, so `post_bootstrap` runs the
//! test bed's own `tests/pg/setup.sql`: the same roles as every
//! [`crate::cluster::PgCluster`] (see [`crate::cluster::roles`]: `app/app`
//! owning database `app`, `md5user`, `trustuser`, `postgres/postgres`),
//! plus Patroni's `replicator/replicator`. `pg_hba.conf` is the test bed's
//! (`tests/pg/pg_hba.conf`: SCRAM on 127.0.0.1, trust on the private Unix
//! socket). [`ProxyConfig::for_patroni`] mirrors [`ProxyConfig::for_cluster`].
//!
//! Server settings are the test bed's, except that `synchronous_commit`
//! stays `on` (acknowledged means replicated in synchronous mode, and is
//! what the load tool's lost-write check counts on) and `full_page_writes`
//! stays `on` (pg_rewind needs it). `fsync = off` is kept: a killed process
//! loses nothing the kernel already has.
//!
//! Logs: Patroni's output (and the postmaster's until its logging collector
//! starts) is in `<node>/patroni.log`, PostgreSQL's in
//! `<node>/pglog/postgresql.log`; both are stamped in UTC with milliseconds
//! ([`LogEvent`], [`SwitchoverTimeline`] read them). Errors from waits carry
//! the tails of every log ([`PatroniCluster::logs_tail`]).
//!
//! The demo's variant (`scripts/demo`): a [`FixedLayout`] puts the cluster at
//! fixed ports in a directory of the caller's, which is kept (a second start
//! finds the data and starts every node at once; any may become the leader),
//! and a [`ConfigTemplate`] renders each node's `patroni.yml` from a template
//! (`examples/patroni/patroni.yml`) instead of the test bed's own. Patroni and
//! etcd run in process groups of their own: a Ctrl-C on the terminal reaches
//! only the program that started them, which stops them
//! ([`PatroniCluster::stop`]: replicas first, then the leader, then etcd).
//!
//! Teardown: everything is killed on `Drop` (Patroni with SIGKILL, then each
//! postmaster with SIGQUIT, i.e. immediate shutdown; data is scratch), also
//! when a test panics. Patroni starts PostgreSQL detached (its own session,
//! reparented to init), so each node has a watchdog of its own that, if the
//! test process dies, kills Patroni and then the postmaster named in the
//! data directory's `postmaster.pid`, whatever it is by then.
//!
//! The API is blocking: call it from `tokio::task::block_in_place` in a
//! multi-threaded tokio test while a [`crate::load::Load`] runs.
//!
//! Patroni comes from `SWITCHYARD_PATRONI_VENV` (default
//! `/opt/switchyard/patroni-4.1.5`, made by `scripts/lib.sh install`).

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::json;

use crate::client::Endpoint;
use crate::cluster::roles;
use crate::deadline::Deadline;
use crate::etcd::Etcd;
use crate::proxy::{NodeEntry, ProxyConfig};
use crate::tools::{run_command, signal, CmdOutput, Psql};
use crate::watchdog::Watchdog;
use crate::{env, http, ports, scratch};

/// Patroni's minimum `ttl`: it raises anything smaller to this.
pub const MIN_TTL: u32 = 20;

/// Patroni version the venv is expected to hold.
pub const PATRONI_VERSION: &str = "4.1.5";

/// `pg_hba.conf` of the test bed (same rules as [`crate::cluster`]).
const HBA: &str = include_str!("../pg/pg_hba.conf");

/// Roles and databases, run by `post_bootstrap`.
const SETUP_SQL: &str = include_str!("../pg/setup.sql");

/// Patroni's replication user (created by Patroni itself at bootstrap).
pub const REPLICATION: (&str, &str) = ("replicator", "replicator");

/// The venv holding Patroni: `SWITCHYARD_PATRONI_VENV`, else
/// `/opt/switchyard/patroni-4.1.5`.
pub fn patroni_venv() -> PathBuf {
    std::env::var_os("SWITCHYARD_PATRONI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/opt/switchyard/patroni-{PATRONI_VERSION}")))
}

/// A program of the Patroni venv (`patroni`, `patronictl`).
pub fn patroni_program(name: &str) -> Result<PathBuf> {
    let path = patroni_venv().join("bin").join(name);
    if !path.exists() {
        bail!(
            "{} not found (set SWITCHYARD_PATRONI_VENV, or run `scripts/lib.sh install` to make the \
             Patroni {PATRONI_VERSION} venv)",
            path.display()
        );
    }
    Ok(path)
}

/// How to build a [`PatroniCluster`].
///
/// Command strings (`before_stop`, `on_role_change`) are split by Patroni
/// with `shlex` and run without a shell (write `sh -c '...'` for one), as
/// the `postgres` OS user, in an environment holding only `PATH`, `HOME`
/// (the node's directory), `TZ=UTC` and `LANG`. In each command, `{node}`,
/// `{scope}`, `{pg_port}`, `{api_url}` and `{dir}` (the node's directory)
/// are replaced per node before Patroni sees it.
///
/// - `before_stop` runs synchronously, with no arguments and no timeout,
///   before every stop of PostgreSQL (switchover, restart, Patroni's own
///   shutdown; on replicas too), after Patroni's CHECKPOINT on a primary;
///   its exit code is only logged (`before_stop script `...` exited with N`).
/// - `on_role_change` gets three arguments appended: `on_role_change`, the
///   new role (`primary`, `replica`, `standby_leader`, `demoted`) and the
///   scope. Patroni runs callbacks one at a time per node, asynchronously,
///   and *kills* one still running when the next callback (`on_start`,
///   `on_stop`, another `on_role_change`) starts.
#[derive(Clone, Debug)]
pub struct PatroniOptions {
    /// Number of nodes (default 2). `node0` bootstraps and is the first leader.
    pub nodes: usize,
    /// Patroni's `synchronous_mode` (off by default).
    pub synchronous_mode: bool,
    /// `postgresql.before_stop` command.
    pub before_stop: Option<String>,
    /// `postgresql.callbacks.on_role_change` command.
    pub on_role_change: Option<String>,
    /// `ttl` in seconds (default and minimum [`MIN_TTL`]).
    pub ttl: u32,
    /// `loop_wait` in seconds (default 1).
    pub loop_wait: u32,
    /// `retry_timeout` in seconds (default 5).
    pub retry_timeout: u32,
    /// Extra PostgreSQL settings for every node (`postgresql.parameters`).
    pub parameters: Vec<(String, String)>,
    /// Fixed ports and directory instead of free ports in scratch (see [`FixedLayout`]).
    pub layout: Option<FixedLayout>,
    /// Each node's `patroni.yml` from this template instead of the test bed's own (see
    /// [`ConfigTemplate`]).
    pub template: Option<ConfigTemplate>,
    /// Called with a progress line at each step of start-up that may take a while
    /// (default: nothing is said).
    pub progress: fn(&str),
    /// Asked while start-up and the other waits poll: `true` ends the wait with an
    /// "interrupted" error (the demo's Ctrl-C). Default: never.
    pub interrupted: fn() -> bool,
}

/// Where a cluster with fixed ports lives (the demo's layout).
///
/// `dir` holds `etcd/` (data and `etcd.log`), one directory per node (`node0/`, ...),
/// `patronictl.yml` and the bootstrap scripts. It is the caller's: created if missing,
/// never removed. When a node other than `node0` already has a data directory (an earlier
/// run), every node starts at once and any may become the leader.
#[derive(Clone, Debug)]
pub struct FixedLayout {
    pub dir: PathBuf,
    /// Patroni's scope (cluster name).
    pub scope: String,
    /// Per node, `node0` first: (PostgreSQL port, REST API port). As many as
    /// [`PatroniOptions::nodes`].
    pub ports: Vec<(u16, u16)>,
    /// etcd's client port on 127.0.0.1; its peer port is the next one.
    pub etcd_port: u16,
}

/// A Patroni configuration file with `${NAME}` placeholders (such as
/// `examples/patroni/patroni.yml`), rendered once per node.
///
/// The cluster gives [`TEMPLATE_VARS`] (`SCOPE`, `NODE_NAME`, `NODE_HOST`, `PG_PORT`,
/// `API_PORT`, `NODE_DIR`, `PG_BIN`, `ETCD_HOSTS`, and `POST_BOOTSTRAP`: the test bed's roles
/// and databases); `vars` gives the others. A placeholder without a value fails the start, naming it and its
/// line. The template decides Patroni's settings, so the options that shape the test bed's
/// own file (`before_stop`, `on_role_change`, `parameters`, `synchronous_mode`) are refused
/// with one; the cluster reads the template's `synchronous_mode` for its own waits.
#[derive(Clone, Debug)]
pub struct ConfigTemplate {
    pub path: PathBuf,
    pub vars: Vec<(String, String)>,
}

impl ConfigTemplate {
    /// The template's `synchronous_mode` (Patroni's default, off, when it has none): the
    /// cluster waits for a synchronous standby at start when it is on.
    pub fn synchronous_mode(&self) -> Result<bool> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let value = text.lines().find_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            line.strip_prefix("synchronous_mode:").map(str::trim)
        });
        match value {
            None => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => bail!(
                "{}: synchronous_mode: {other:?} (the test bed reads true or false)",
                self.path.display()
            ),
        }
    }
}

/// The placeholders of a [`ConfigTemplate`] the cluster fills, per node.
pub const TEMPLATE_VARS: [&str; 9] = [
    "SCOPE",
    "NODE_NAME",
    "NODE_HOST",
    "PG_PORT",
    "API_PORT",
    "NODE_DIR",
    "PG_BIN",
    "ETCD_HOSTS",
    "POST_BOOTSTRAP",
];

/// `text` with every `${NAME}` replaced by `value(NAME)`; an error names the first
/// placeholder without a value (or left open) and its line.
pub fn render_template(text: &str, value: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let line = text[..text.len() - rest.len() + start].matches('\n').count() + 1;
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .with_context(|| format!("line {line}: `${{` without a closing `}}`"))?;
        let name = &after[..end];
        let v = value(name).with_context(|| format!("line {line}: placeholder ${{{name}}} has no value"))?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Default for PatroniOptions {
    fn default() -> Self {
        Self {
            nodes: 2,
            synchronous_mode: false,
            before_stop: None,
            on_role_change: None,
            ttl: MIN_TTL,
            loop_wait: 1,
            retry_timeout: 5,
            parameters: Vec::new(),
            layout: None,
            template: None,
            progress: |_| {},
            interrupted: || false,
        }
    }
}

impl PatroniOptions {
    /// Turn Patroni's `synchronous_mode` on or off.
    pub fn synchronous(mut self, on: bool) -> Self {
        self.synchronous_mode = on;
        self
    }

    /// Set the `before_stop` command (placeholders: see [`PatroniOptions`]).
    pub fn before_stop(mut self, cmd: &str) -> Self {
        self.before_stop = Some(cmd.to_owned());
        self
    }

    /// Set the `on_role_change` command (placeholders: see [`PatroniOptions`]).
    pub fn on_role_change(mut self, cmd: &str) -> Self {
        self.on_role_change = Some(cmd.to_owned());
        self
    }

    /// Add a PostgreSQL setting for every node.
    pub fn parameter(mut self, name: &str, value: impl ToString) -> Self {
        self.parameters.push((name.to_owned(), value.to_string()));
        self
    }

    /// Fixed ports and directory (see [`FixedLayout`]); also sets the number of nodes.
    pub fn layout(mut self, layout: FixedLayout) -> Self {
        self.nodes = layout.ports.len();
        self.layout = Some(layout);
        self
    }

    /// Render each node's configuration from a template (see [`ConfigTemplate`]).
    pub fn template(mut self, template: ConfigTemplate) -> Self {
        self.template = Some(template);
        self
    }

    /// Report start-up's steps (see [`PatroniOptions::progress`]).
    pub fn progress(mut self, progress: fn(&str)) -> Self {
        self.progress = progress;
        self
    }

    /// End waits early when `interrupted` says so (see [`PatroniOptions::interrupted`]).
    pub fn interruptible(mut self, interrupted: fn() -> bool) -> Self {
        self.interrupted = interrupted;
        self
    }
}

/// One member as Patroni's `GET /cluster` shows it.
#[derive(Clone, Debug, Deserialize)]
pub struct Member {
    pub name: String,
    /// `leader`, `replica`, `sync_standby`, `quorum_standby`, `standby_leader`.
    pub role: String,
    /// `running`, `streaming`, `in archive recovery`, `starting`, `stopped`, ...
    pub state: String,
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub timeline: Option<u64>,
    /// Bytes, or `"unknown"`.
    #[serde(default)]
    pub lag: Option<serde_json::Value>,
}

/// Patroni's `GET /cluster`.
#[derive(Clone, Debug, Deserialize)]
pub struct ClusterState {
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default)]
    pub scope: Option<String>,
    /// The raw JSON, for messages.
    #[serde(skip)]
    pub raw: String,
}

impl ClusterState {
    /// The member holding the leader key.
    pub fn leader(&self) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.role == "leader" || m.role == "standby_leader")
    }

    /// Members that replicate from the leader by streaming.
    pub fn streaming(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.state == "streaming")
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// What [`PatroniCluster::switchover`] did.
#[derive(Clone, Debug)]
pub struct Switchover {
    /// Leader before.
    pub from: String,
    /// Leader after.
    pub to: String,
    /// When the request was sent.
    pub started: SystemTime,
    /// How long `patronictl` (or the REST call) took to return.
    pub command: Duration,
    /// From the request until the new leader answered `pg_is_in_recovery() = f`
    /// (as seen by polling every 50 ms).
    pub writable: Duration,
    /// From the request until the old leader streamed from the new one.
    pub healthy: Duration,
    /// Output of the command or body of the REST answer.
    pub output: String,
}

/// What [`PatroniCluster::kill_node`] killed.
#[derive(Clone, Debug)]
pub struct Killed {
    pub node: String,
    /// When the first SIGKILL was sent.
    pub at: SystemTime,
    pub patroni_pid: Option<u32>,
    pub postmaster_pid: Option<u32>,
    /// The postmaster's children killed with it (backends, walsender,
    /// checkpointer, ...).
    pub children: Vec<u32>,
}

/// A Patroni cluster and its etcd. Fields drop in order: nodes first.
pub struct PatroniCluster {
    nodes: Vec<PatroniNode>,
    etcd: Etcd,
    dir: PathBuf,
    scope: String,
    opts: PatroniOptions,
    /// Last: disarmed only after every node and etcd are down.
    _deadline: Deadline,
}

impl PatroniCluster {
    /// Two nodes with default options.
    pub fn start() -> Result<Self> {
        Self::start_with(PatroniOptions::default())
    }

    /// Start etcd, bootstrap `node0`, wait until it is a writable leader,
    /// then start the other nodes and wait until each streams from it (and,
    /// in synchronous mode, until one is the synchronous standby). Retries
    /// from scratch with new ports if a port was taken meanwhile.
    pub fn start_with(opts: PatroniOptions) -> Result<Self> {
        if opts.nodes == 0 {
            bail!("a Patroni cluster needs at least one node");
        }
        if opts.loop_wait + 2 * opts.retry_timeout > opts.ttl.max(MIN_TTL) {
            bail!("Patroni requires loop_wait + 2 * retry_timeout <= ttl");
        }
        if let Some(layout) = &opts.layout {
            if layout.ports.len() != opts.nodes {
                bail!(
                    "the layout has ports for {} nodes, not {}",
                    layout.ports.len(),
                    opts.nodes
                );
            }
        }
        if let Some(t) = &opts.template {
            if opts.before_stop.is_some()
                || opts.on_role_change.is_some()
                || !opts.parameters.is_empty()
                || opts.synchronous_mode
            {
                bail!(
                    "with a config template ({}), before_stop, on_role_change, parameters and \
                     synchronous_mode are the template's",
                    t.path.display()
                );
            }
        }
        let mut opts = opts;
        if let Some(t) = &opts.template {
            opts.synchronous_mode = t.synchronous_mode()?;
        }
        patroni_program("patroni")?;
        env::pg_program("postgres")?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(opts.clone()) {
                Ok(c) => return Ok(c),
                // Free ports were taken meanwhile: others are free (fixed ones are not).
                Err(e) if attempt < 3 && opts.layout.is_none() && format!("{e:#}").contains(PORT_IN_USE) => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_start(opts: PatroniOptions) -> Result<Self> {
        let (dir, scope, etcd, ports) = match &opts.layout {
            Some(layout) => {
                std::fs::create_dir_all(&layout.dir)
                    .with_context(|| format!("creating {}", layout.dir.display()))?;
                env::set_mode(&layout.dir, 0o755)?;
                let etcd = Etcd::start_at(&layout.dir.join("etcd"), layout.etcd_port)?;
                (
                    layout.dir.clone(),
                    layout.scope.clone(),
                    etcd,
                    layout.ports.clone(),
                )
            }
            None => {
                let dir = scratch::fresh_dir("patroni")?;
                let scope = format!(
                    "sy-{}-{}",
                    std::process::id(),
                    dir.file_name().and_then(|n| n.to_str()).unwrap_or("patroni")
                );
                let ports = (0..opts.nodes)
                    .map(|_| Ok((ports::free_port()?, ports::free_port()?)))
                    .collect::<Result<Vec<_>>>()?;
                (dir, scope, Etcd::start()?, ports)
            }
        };
        (opts.progress)(&format!(
            "etcd on {} (log {})",
            etcd.client_addr(),
            etcd.log_path().display()
        ));
        std::fs::write(dir.join("setup.sql"), SETUP_SQL)?;
        env::set_mode(&dir.join("setup.sql"), 0o644)?;
        let script = dir.join("post_bootstrap.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n# Patroni's post_bootstrap: roles and databases of the test bed.\n\
                 # $1 is a connection string to the new primary.\nexec '{}' -X -q -v ON_ERROR_STOP=1 -d \"$1\" -f '{}'\n",
                env::pg_program("psql")?.display(),
                dir.join("setup.sql").display()
            ),
        )?;
        env::set_mode(&script, 0o755)?;
        let mut nodes = Vec::new();
        for (i, (pg_port, api_port)) in ports.into_iter().enumerate() {
            let name = format!("node{i}");
            let node_dir = dir.join(&name);
            std::fs::create_dir_all(&node_dir)?;
            nodes.push(PatroniNode {
                name,
                dir: node_dir,
                pg_port,
                api_port,
                child: None,
                watchdog: None,
            });
        }
        let deadline = Deadline::arm(format!("the Patroni cluster in {}", dir.display()), None);
        let mut cluster = Self {
            nodes,
            etcd,
            dir,
            scope,
            opts,
            _deadline: deadline,
        };
        for i in 0..cluster.nodes.len() {
            cluster.write_config(i)?;
        }
        cluster.write_ctl_config()?;
        // Patroni (as the `postgres` OS user) writes only in its node's directory.
        for node in &cluster.nodes {
            env::chown_to_pg(&node.dir)?;
        }

        // A cluster made by an earlier run (a kept layout): every node at once, as any of
        // them may have been the leader. Otherwise node0 bootstraps and the others copy it.
        let existing = cluster.nodes[1..]
            .iter()
            .any(|n| n.data_dir().join("PG_VERSION").exists());
        let first = if existing { cluster.nodes.len() } else { 1 };
        for i in 0..first {
            cluster.spawn_node(i)?;
        }
        if !existing {
            (cluster.opts.progress)("waiting for node0 to bootstrap");
            cluster
                .wait_for_leader(Duration::from_secs(90))
                .context("waiting for node0 to bootstrap")?;
            for i in 1..cluster.nodes.len() {
                cluster.spawn_node(i)?;
            }
        }
        (cluster.opts.progress)(&format!(
            "waiting for a leader{}",
            if cluster.nodes.len() > 1 {
                " and every other node streaming from it"
            } else {
                ""
            }
        ));
        cluster.wait_healthy(Duration::from_secs(120))?;
        Ok(cluster)
    }

    /// Start node `i`'s Patroni and say so.
    fn spawn_node(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        node.spawn()?;
        (self.opts.progress)(&format!(
            "Patroni {}: Postgres {}, REST API {} (log {})",
            node.name,
            node.addr(),
            node.api_addr(),
            node.patroni_log_path().display()
        ));
        Ok(())
    }

    fn substitute(&self, cmd: &str, node: &PatroniNode) -> String {
        cmd.replace("{node}", &node.name)
            .replace("{scope}", &self.scope)
            .replace("{pg_port}", &node.pg_port.to_string())
            .replace("{api_url}", &node.api_url())
            .replace("{dir}", &node.dir.to_string_lossy())
    }

    fn write_config(&self, i: usize) -> Result<()> {
        match &self.opts.template {
            Some(t) => self.render_config(i, t),
            None => self.write_own_config(i),
        }
    }

    /// Node `i`'s configuration from `template` (see [`ConfigTemplate`]).
    fn render_config(&self, i: usize, template: &ConfigTemplate) -> Result<()> {
        let node = &self.nodes[i];
        let text = std::fs::read_to_string(&template.path)
            .with_context(|| format!("reading {}", template.path.display()))?;
        // In the order of TEMPLATE_VARS.
        let own: Vec<(&str, String)> = TEMPLATE_VARS
            .into_iter()
            .zip([
                self.scope.clone(),
                node.name.clone(),
                node.host().to_owned(),
                node.pg_port.to_string(),
                node.api_port.to_string(),
                node.dir.display().to_string(),
                env::pg_bin_dir().display().to_string(),
                self.etcd.client_addr(),
                self.dir.join("post_bootstrap.sh").display().to_string(),
            ])
            .collect();
        let config = render_template(&text, |name| {
            own.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| {
                    template
                        .vars
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                })
        })
        .with_context(|| format!("rendering {}", template.path.display()))?;
        std::fs::write(node.config_path(), config)?;
        Ok(())
    }

    /// Node `i`'s configuration: the test bed's own, from the options.
    fn write_own_config(&self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let hba: Vec<String> = HBA
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let mut parameters = serde_json::Map::new();
        for (k, v) in [
            ("unix_socket_directories", node.dir.to_string_lossy().into_owned()),
            ("shared_buffers", "32MB".into()),
            ("fsync", "off".into()),
            ("logging_collector", "on".into()),
            (
                "log_directory",
                node.dir.join("pglog").to_string_lossy().into_owned(),
            ),
            ("log_filename", "postgresql.log".into()),
            ("log_file_mode", "0644".into()),
            ("log_rotation_age", "0".into()),
            ("log_rotation_size", "0".into()),
            ("log_line_prefix", "%m [%p] %q%u@%d ".into()),
            ("log_timezone", "UTC".into()),
            ("log_min_messages", "warning".into()),
        ] {
            parameters.insert(k.to_owned(), json!(v));
        }
        for (k, v) in &self.opts.parameters {
            parameters.insert(k.clone(), json!(v));
        }
        let mut postgresql = json!({
            "listen": node.addr(),
            "connect_address": node.addr(),
            "data_dir": node.data_dir(),
            "bin_dir": env::pg_bin_dir(),
            "pgpass": node.dir.join("pgpass"),
            "use_unix_socket": true,
            "authentication": {
                "superuser": {"username": roles::SUPERUSER.0, "password": roles::SUPERUSER.1},
                "replication": {"username": REPLICATION.0, "password": REPLICATION.1},
                "rewind": {"username": roles::SUPERUSER.0, "password": roles::SUPERUSER.1},
            },
            "parameters": parameters,
            "pg_hba": hba,
            // A replica's pg_basebackup would otherwise wait for a spread
            // checkpoint: minutes on a quiet server.
            "basebackup": [{"checkpoint": "fast"}],
            "remove_data_directory_on_rewind_failure": true,
            "remove_data_directory_on_diverged_timelines": true,
        });
        if let Some(cmd) = &self.opts.before_stop {
            postgresql["before_stop"] = json!(self.substitute(cmd, node));
        }
        if let Some(cmd) = &self.opts.on_role_change {
            postgresql["callbacks"] = json!({"on_role_change": self.substitute(cmd, node)});
        }
        let config = json!({
            "scope": self.scope,
            "namespace": "/switchyard/",
            "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {"listen": node.api_addr(), "connect_address": node.api_addr()},
            "etcd3": {"hosts": [self.etcd.client_addr()]},
            "watchdog": {"mode": "off"},
            "bootstrap": {
                "dcs": {
                    "ttl": self.opts.ttl,
                    "loop_wait": self.opts.loop_wait,
                    "retry_timeout": self.opts.retry_timeout,
                    "maximum_lag_on_failover": 1_048_576,
                    "synchronous_mode": self.opts.synchronous_mode,
                    "postgresql": {
                        "use_pg_rewind": true,
                        "use_slots": true,
                        "parameters": {
                            "max_connections": 300,
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "wal_level": "replica",
                            "wal_log_hints": "on",
                            "wal_keep_size": "128MB",
                            "hot_standby": "on",
                            "hot_standby_feedback": "on",
                        },
                    },
                },
                "initdb": [
                    {"encoding": "UTF8"},
                    {"locale": "C"},
                    {"auth-local": "trust"},
                    {"auth-host": "scram-sha-256"},
                    {"wal-segsize": "1"},
                    "no-sync",
                ],
                "post_bootstrap": self.dir.join("post_bootstrap.sh"),
            },
            "postgresql": postgresql,
        });
        // JSON is YAML: Patroni reads it as its configuration file.
        std::fs::write(node.config_path(), serde_json::to_string_pretty(&config)?)?;
        Ok(())
    }

    fn write_ctl_config(&self) -> Result<()> {
        let config = json!({
            "scope": self.scope,
            "namespace": "/switchyard/",
            "etcd3": {"hosts": [self.etcd.client_addr()]},
        });
        std::fs::write(self.ctl_config_path(), serde_json::to_string_pretty(&config)?)?;
        env::set_mode(&self.ctl_config_path(), 0o644)
    }

    /// Patroni's scope (cluster name) in etcd.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Directory holding every node's directory, the scripts and configs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The etcd.
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// The options it was started with.
    pub fn options(&self) -> &PatroniOptions {
        &self.opts
    }

    /// All nodes, `node0` first.
    pub fn nodes(&self) -> &[PatroniNode] {
        &self.nodes
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Result<&PatroniNode> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no Patroni node named {name:?}"))
    }

    fn node_mut(&mut self, name: &str) -> Result<&mut PatroniNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no Patroni node named {name:?}"))
    }

    /// Every node's Postgres endpoint, for multi-host clients (`node0` first).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.nodes.iter().map(PatroniNode::endpoint).collect()
    }

    /// The config file for `patronictl -c`.
    pub fn ctl_config_path(&self) -> PathBuf {
        self.dir.join("patronictl.yml")
    }

    /// Patroni's `GET /cluster`, asked of the first node whose REST API answers.
    pub fn cluster_state(&self) -> Result<ClusterState> {
        let mut errors = Vec::new();
        for node in &self.nodes {
            match node.cluster_state() {
                Ok(s) => return Ok(s),
                Err(e) => errors.push(format!("{}: {e:#}", node.name)),
            }
        }
        bail!("no Patroni REST API answered GET /cluster: {}", errors.join("; "))
    }

    /// The node holding the leader key right now (by `/cluster`); it may
    /// still be promoting, see [`Self::wait_for_leader`].
    pub fn leader(&self) -> Result<&PatroniNode> {
        let state = self.cluster_state()?;
        let leader = state
            .leader()
            .ok_or_else(|| anyhow!("no leader in /cluster: {}", state.raw))?;
        self.node(&leader.name)
    }

    /// A node streaming from the leader right now (by `/cluster`).
    pub fn replica(&self) -> Result<&PatroniNode> {
        let state = self.cluster_state()?;
        let replica = state
            .streaming()
            .next()
            .ok_or_else(|| anyhow!("no streaming replica in /cluster: {}", state.raw))?;
        self.node(&replica.name)
    }

    /// Wait until some node holds the leader key and its PostgreSQL accepts
    /// writes (`pg_is_in_recovery()` is false).
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<&PatroniNode> {
        self.wait_for_leader_except(None, timeout)
    }

    /// Like [`Self::wait_for_leader`], for a leader other than `old`.
    pub fn wait_for_leader_except(&self, old: Option<&str>, timeout: Duration) -> Result<&PatroniNode> {
        let deadline = Instant::now() + timeout;
        let mut last;
        let mut checked = Instant::now();
        loop {
            self.check_interrupted()?;
            if checked.elapsed() > Duration::from_secs(1) {
                self.check_ports()?;
                checked = Instant::now();
            }
            match self.cluster_state() {
                Ok(state) => match state.leader() {
                    Some(l) if Some(l.name.as_str()) != old && l.state == "running" => {
                        let node = self.node(&l.name)?;
                        match node.admin_sql("postgres", "SELECT pg_is_in_recovery()") {
                            Ok(r) if r.trim() == "f" => {
                                node.record_postmaster();
                                return Ok(node);
                            }
                            Ok(r) => last = format!("leader {} still in recovery ({})", l.name, r.trim()),
                            Err(e) => last = format!("leader {}: {e:#}", l.name),
                        }
                    }
                    _ => last = state.raw,
                },
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!(
                    "no writable leader{} within {timeout:?}; last seen: {last}\n{}",
                    old.map(|o| format!(" other than {o}")).unwrap_or_default(),
                    self.logs_tail(25)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fail when [`PatroniOptions::interrupted`] says so.
    fn check_interrupted(&self) -> Result<()> {
        if (self.opts.interrupted)() {
            bail!("interrupted");
        }
        Ok(())
    }

    /// Fail fast (with [`PORT_IN_USE`] in the message, so that start-up
    /// retries with other ports) when a node's PostgreSQL or REST API lost
    /// its port to another process between the check and the bind.
    fn check_ports(&self) -> Result<()> {
        for node in &self.nodes {
            let tail = env::tail(&node.patroni_log_path(), 50);
            if tail.contains("Address already in use") || tail.contains("could not bind") {
                bail!("{PORT_IN_USE} on {}:\n{tail}", node.name);
            }
        }
        Ok(())
    }

    /// Wait until there is a writable leader and every node whose Patroni
    /// runs streams from it (and, in synchronous mode with more than one
    /// node, one of them is the synchronous standby).
    pub fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let leader = self.wait_for_leader(timeout)?.name.clone();
        let mut last;
        loop {
            self.check_interrupted()?;
            let alive: Vec<&str> = self
                .nodes
                .iter()
                .filter(|n| n.child.is_some() && n.name != leader)
                .map(|n| n.name.as_str())
                .collect();
            match self.cluster_state() {
                Ok(state) => {
                    let streaming = alive
                        .iter()
                        .all(|n| state.member(n).is_some_and(|m| m.state == "streaming"));
                    let sync_ok = !self.opts.synchronous_mode
                        || alive.is_empty()
                        || state.members.iter().any(|m| m.role == "sync_standby");
                    let same_leader = state.leader().is_some_and(|l| l.name == leader);
                    if streaming && sync_ok && same_leader {
                        let node = self.node(&leader)?;
                        let n = node.admin_sql(
                            "postgres",
                            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                        )?;
                        if n.trim().parse::<usize>().unwrap_or(0) >= alive.len() {
                            for n in &self.nodes {
                                n.record_postmaster();
                            }
                            return Ok(());
                        }
                    }
                    last = state.raw;
                }
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!(
                    "cluster not healthy (leader {leader}, every other running node streaming{}) \
                     within {timeout:?}; last /cluster: {last}\n{}",
                    if self.opts.synchronous_mode {
                        ", a sync_standby"
                    } else {
                        ""
                    },
                    self.logs_tail(25)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run `patronictl -c <ctl config> args...` (as this process's user; it
    /// only talks to etcd and the REST APIs). Fails only if it cannot run.
    pub fn patronictl(&self, args: &[&str], timeout: Duration) -> Result<CmdOutput> {
        let mut cmd = Command::new(patroni_program("patronictl")?);
        cmd.arg("-c").arg(self.ctl_config_path()).args(args);
        clean_env(&mut cmd, &self.dir);
        run_command(&mut cmd, None, timeout)
    }

    /// `patronictl switchover --force` from the current leader to `to` (or
    /// to whichever replica Patroni picks), then wait until the new leader
    /// takes writes and the cluster is healthy again.
    pub fn switchover(&self, to: Option<&str>) -> Result<Switchover> {
        let from = self.wait_for_leader(Duration::from_secs(30))?.name.clone();
        let started_wall = SystemTime::now();
        let started = Instant::now();
        let mut args = vec![
            "switchover",
            self.scope.as_str(),
            "--leader",
            from.as_str(),
            "--force",
        ];
        if let Some(to) = to {
            args.extend(["--candidate", to]);
        }
        let out = self.patronictl(&args, Duration::from_secs(120))?;
        let command = started.elapsed();
        if !out.status_ok {
            bail!(
                "{}\n{}",
                out.describe("patronictl switchover failed"),
                self.logs_tail(25)
            );
        }
        self.finish_switchover(from, to, started, started_wall, command, out.stdout)
    }

    /// The same through the leader's REST API: `POST /switchover` with
    /// `{"leader": ..., "candidate": ...}` (Patroni answers when it is done).
    pub fn switchover_rest(&self, to: Option<&str>) -> Result<Switchover> {
        let leader = self.wait_for_leader(Duration::from_secs(30))?;
        let from = leader.name.clone();
        let mut body = json!({"leader": from});
        if let Some(to) = to {
            body["candidate"] = json!(to);
        }
        let started_wall = SystemTime::now();
        let started = Instant::now();
        let r = http::post_json(
            &leader.api_addr(),
            "/switchover",
            &body.to_string(),
            Duration::from_secs(120),
        )?;
        let command = started.elapsed();
        if !r.is_success() {
            bail!(
                "POST {}/switchover {body} answered {}: {}\n{}",
                leader.api_url(),
                r.status,
                r.body,
                self.logs_tail(25)
            );
        }
        self.finish_switchover(from, to, started, started_wall, command, r.body)
    }

    fn finish_switchover(
        &self,
        from: String,
        to: Option<&str>,
        started: Instant,
        started_wall: SystemTime,
        command: Duration,
        output: String,
    ) -> Result<Switchover> {
        let new = self.wait_for_leader_except(Some(&from), Duration::from_secs(60))?;
        let writable = started.elapsed();
        if let Some(to) = to {
            if new.name != to {
                bail!(
                    "switchover to {to} made {} the leader\n{}",
                    new.name,
                    self.logs_tail(25)
                );
            }
        }
        let to = new.name.clone();
        self.wait_healthy(Duration::from_secs(60))?;
        Ok(Switchover {
            from,
            to,
            started: started_wall,
            command,
            writable,
            healthy: started.elapsed(),
            output,
        })
    }

    /// Restart PostgreSQL on `node` through Patroni (`POST /restart`, which
    /// runs `before_stop` too), then wait until the cluster is healthy.
    pub fn restart(&self, node: &str) -> Result<Duration> {
        let n = self.node(node)?;
        let started = Instant::now();
        let r = http::post_json(&n.api_addr(), "/restart", "{}", Duration::from_secs(120))?;
        if !r.is_success() {
            bail!(
                "POST {}/restart answered {}: {}\n{}",
                n.api_url(),
                r.status,
                r.body,
                self.logs_tail(25)
            );
        }
        self.wait_healthy(Duration::from_secs(60))?;
        Ok(started.elapsed())
    }

    /// Kill `node` as a crash would: SIGKILL its Patroni, its postmaster and
    /// every child of the postmaster (backends, walsender, background
    /// processes). The postmaster is stopped (SIGSTOP) while its children are
    /// listed and killed, so it cannot fork or react in between. The node
    /// stays dead until [`Self::start_node`].
    pub fn kill_node(&mut self, node: &str) -> Result<Killed> {
        let n = self.node_mut(node)?;
        let postmaster = n.postmaster_pid();
        let at = SystemTime::now();
        let patroni_pid = n.child.as_ref().map(Child::id);
        n.kill_patroni();
        let mut children = Vec::new();
        if let Some(pm) = postmaster {
            signal(pm, libc::SIGSTOP);
            children = children_of(pm);
            for &c in &children {
                signal(c, libc::SIGKILL);
            }
            signal(pm, libc::SIGKILL);
            wait_gone(&[pm], Duration::from_secs(10));
        }
        n.disarm_watchdog();
        Ok(Killed {
            node: node.to_owned(),
            at,
            patroni_pid,
            postmaster_pid: postmaster,
            children,
        })
    }

    /// Stop `node` the way an operator does: SIGTERM to Patroni, which stops
    /// PostgreSQL (running `before_stop`; a leader releases its key), then
    /// exits. Waits for Patroni to exit.
    pub fn stop_node(&mut self, node: &str) -> Result<()> {
        let n = self.node_mut(node)?;
        n.terminate(Duration::from_secs(120))
    }

    /// Stop the whole cluster as an operator does, keeping its data: SIGTERM to every
    /// node's Patroni, the replicas' first and the leader's last (a leader's Patroni that
    /// stops first releases the leader key, and a replica's Patroni would promote its
    /// node), each waited for up to 60 s (Patroni stops its PostgreSQL, running
    /// `before_stop`), then etcd. Whatever still runs after a failure is left to `Drop`.
    pub fn stop(&mut self) -> Result<()> {
        let leader = self
            .cluster_state()
            .ok()
            .and_then(|s| s.leader().map(|m| m.name.clone()));
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        order.sort_by_key(|&i| Some(&self.nodes[i].name) == leader.as_ref());
        let mut failures = Vec::new();
        for i in order {
            if let Err(e) = self.nodes[i].terminate(Duration::from_secs(60)) {
                failures.push(format!("{e:#}"));
            }
        }
        self.etcd.stop(Duration::from_secs(10));
        if !failures.is_empty() {
            bail!("{}", failures.join("; "));
        }
        Ok(())
    }

    /// Start Patroni on `node` again (after [`Self::kill_node`] or
    /// [`Self::stop_node`]) and wait until the cluster is healthy.
    pub fn start_node(&mut self, node: &str) -> Result<()> {
        let n = self.node_mut(node)?;
        if n.child.is_some() {
            bail!("{node} is already running");
        }
        n.spawn()?;
        self.wait_healthy(Duration::from_secs(120))
    }

    /// Lines of every node's Patroni and PostgreSQL logs that contain
    /// `needle`, with their timestamps, in time order.
    pub fn log_events(&self, needle: &str) -> Vec<LogEvent> {
        let mut events = Vec::new();
        for node in &self.nodes {
            for (source, path) in [
                (LogSource::Patroni, node.patroni_log_path()),
                (LogSource::Postgres, node.postgres_log_path()),
            ] {
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                for line in text.lines().filter(|l| l.contains(needle)) {
                    if let Some(at) = parse_log_time(line) {
                        events.push(LogEvent {
                            node: node.name.clone(),
                            source,
                            at,
                            line: line.to_owned(),
                        });
                    }
                }
            }
        }
        events.sort_by(|a, b| a.at.total_cmp(&b.at));
        events
    }

    /// The first switchover or failover at or after `since`, as the logs
    /// tell it (pass [`Switchover::started`] or [`Killed::at`]); see
    /// [`SwitchoverTimeline`].
    pub fn timeline_since(&self, since: SystemTime) -> SwitchoverTimeline {
        // Log stamps have millisecond resolution.
        let since = unix_seconds(since) - 0.001;
        let first = |needle: &str, not_node: Option<&str>, after: f64| {
            self.log_events(needle)
                .into_iter()
                .filter(|e| Some(e.node.as_str()) != not_node && e.at >= after)
                .find(|e| !e.line.contains("read-only"))
        };
        let request = first("received switchover request", None, since);
        let before_stop = first("before_stop script", None, since);
        let stop = first("received fast shutdown request", None, since);
        let old = stop.as_ref().map(|e| e.node.clone());
        let shut_down = old
            .as_deref()
            .and_then(|old| first("database system is shut down", None, since).filter(|e| e.node == old));
        let released = first("Leader key released", None, since);
        let leader_lock = first("promoted self to leader", old.as_deref(), since);
        let promoted = first("selected new timeline ID", old.as_deref(), since);
        let ready_after = promoted.as_ref().map_or(since, |e| e.at);
        let ready = first(
            "database system is ready to accept connections",
            old.as_deref(),
            ready_after,
        );
        SwitchoverTimeline {
            since,
            request,
            before_stop,
            stop,
            shut_down,
            released,
            leader_lock,
            promoted,
            ready,
        }
    }

    /// The last switchover requested through Patroni (REST or patronictl),
    /// from the logs.
    pub fn switchover_timeline(&self) -> SwitchoverTimeline {
        let since = self
            .log_events("received switchover request")
            .pop()
            .map_or(SystemTime::UNIX_EPOCH, |e| {
                SystemTime::UNIX_EPOCH + Duration::from_secs_f64(e.at)
            });
        self.timeline_since(since)
    }

    /// Tails of every node's Patroni and PostgreSQL logs and of etcd's, for
    /// failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        for node in &self.nodes {
            for path in [node.patroni_log_path(), node.postgres_log_path()] {
                s.push_str(&format!(
                    "--- {} {} ---\n{}\n",
                    node.name,
                    path.display(),
                    env::tail(&path, lines)
                ));
            }
        }
        s.push_str(&format!(
            "--- etcd {} ---\n{}\n",
            self.etcd.log_path().display(),
            env::tail(&self.etcd.log_path(), lines.min(10))
        ));
        s
    }
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        // Patroni first, everywhere, so that no node reacts to another's end.
        for node in &mut self.nodes {
            node.kill_patroni();
        }
        let mut postmasters = Vec::new();
        for node in &self.nodes {
            if let Some(pm) = node.postmaster_pid() {
                signal(pm, libc::SIGQUIT);
                postmasters.push(pm);
            }
        }
        if !wait_gone(&postmasters, Duration::from_secs(10)) {
            for &pm in &postmasters {
                for c in children_of(pm) {
                    signal(c, libc::SIGKILL);
                }
                signal(pm, libc::SIGKILL);
            }
            wait_gone(&postmasters, Duration::from_secs(5));
        }
        for node in &mut self.nodes {
            node.disarm_watchdog();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- Patroni cluster {} ({}) ----\n{}",
                self.scope,
                self.dir.display(),
                self.logs_tail(40)
            );
        }
        // A fixed layout's directory is the caller's.
        if self.opts.layout.is_none() {
            scratch::remove_dir(&self.dir);
        }
    }
}

/// One Patroni node and its PostgreSQL.
pub struct PatroniNode {
    name: String,
    dir: PathBuf,
    pg_port: u16,
    api_port: u16,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
}

impl PatroniNode {
    /// Patroni's member name (`node0`, `node1`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Host of PostgreSQL and the REST API.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// PostgreSQL's TCP port.
    pub fn port(&self) -> u16 {
        self.pg_port
    }

    /// `127.0.0.1:<pg port>`
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host(), self.pg_port)
    }

    /// PostgreSQL as an [`Endpoint`].
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.host(), self.pg_port)
    }

    /// Patroni REST API port.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// `127.0.0.1:<api port>`
    pub fn api_addr(&self) -> String {
        format!("{}:{}", self.host(), self.api_port)
    }

    /// `http://127.0.0.1:<api port>`
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr())
    }

    /// The node's directory (config, logs, Unix socket, `data/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// PostgreSQL's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Patroni's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("patroni.yml")
    }

    /// Patroni's log (its stdout and stderr).
    pub fn patroni_log_path(&self) -> PathBuf {
        self.dir.join("patroni.log")
    }

    /// PostgreSQL's log (logging collector).
    pub fn postgres_log_path(&self) -> PathBuf {
        self.dir.join("pglog").join("postgresql.log")
    }

    /// Whether this node's Patroni process is alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Pid of this node's postmaster, from `postmaster.pid`, if that process
    /// is alive and is a postgres of this data directory.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (alive(pid) && cmdline.contains(&*self.data_dir().to_string_lossy())).then_some(pid)
    }

    /// Patroni's `GET /cluster` from this node.
    pub fn cluster_state(&self) -> Result<ClusterState> {
        let r = http::get(&self.api_addr(), "/cluster", Duration::from_secs(5))?;
        if !r.is_success() {
            bail!("GET {}/cluster answered {}: {}", self.api_url(), r.status, r.body);
        }
        let mut state: ClusterState = serde_json::from_str(&r.body)
            .with_context(|| format!("parsing GET {}/cluster: {}", self.api_url(), r.body))?;
        state.raw = r.body;
        Ok(state)
    }

    /// `GET path` on this node's REST API (e.g. `/patroni`, `/primary`,
    /// `/replica`, `/health`).
    pub fn rest_get(&self, path: &str) -> Result<http::Response> {
        http::get(&self.api_addr(), path, Duration::from_secs(5))
    }

    /// Run SQL as the superuser over the node's Unix socket with `psql`
    /// (trust, no password) and return its unaligned, tuples-only output.
    pub fn admin_sql(&self, db: &str, sql: &str) -> Result<String> {
        let out = Psql::new(&self.dir.to_string_lossy(), self.pg_port)
            .user(roles::SUPERUSER.0)
            .db(db)
            .timeout(Duration::from_secs(30))
            .run_script(sql)?;
        if !out.status_ok {
            bail!(
                "psql on {} failed: {}\n{}",
                self.name,
                out.status,
                out.stderr.trim_end()
            );
        }
        Ok(out.stdout)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.patroni_log_path())?;
        let mut cmd = Command::new(patroni_program("patroni")?);
        cmd.arg(self.config_path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        clean_env(&mut cmd, &self.dir);
        if let Some(user) = env::pg_os_user()? {
            cmd.uid(user.uid).gid(user.gid);
        }
        let child = cmd.spawn().context("spawning patroni")?;
        scratch::record_process(&self.dir, "patroni", child.id());
        self.watchdog = Some(Watchdog::arm_script(
            "switchyard-patroni-watchdog",
            NODE_WATCHDOG,
            &[OsStr::new(&child.id().to_string()), self.data_dir().as_os_str()],
        )?);
        self.child = Some(child);
        // Patroni exits at once on a bad config or a REST port in use.
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            self.child = None;
            self.disarm_watchdog();
            let tail = env::tail(&self.patroni_log_path(), 30);
            if tail.contains("Address already in use") {
                bail!("{PORT_IN_USE}: Patroni {} exited: {status}\n{tail}", self.name);
            }
            bail!("Patroni {} exited during start-up: {status}\n{tail}", self.name);
        }
        Ok(())
    }

    /// Record the current postmaster so that a later test run can kill it
    /// if this process dies without cleaning up (see [`crate::scratch`]).
    fn record_postmaster(&self) {
        if let Some(pm) = self.postmaster_pid() {
            scratch::record_process(&self.dir, "postmaster", pm);
        }
    }

    fn kill_patroni(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn terminate(&mut self, timeout: Duration) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("Patroni {} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.disarm_watchdog();
        Ok(())
    }

    fn disarm_watchdog(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            w.disarm();
        }
    }
}

/// The script of a node's watchdog ([`Watchdog::arm_script`]): if the test process dies,
/// SIGKILL the node's Patroni (`$1`), then SIGQUIT (immediate shutdown) whatever
/// postmaster the data directory's (`$2`) `postmaster.pid` names, checked against its
/// command line.
const NODE_WATCHDOG: &str = r#"read -r line; [ "$line" = done ] && exit 0
kill -s KILL "$1" 2>/dev/null
pm=$(head -n 1 "$2/postmaster.pid" 2>/dev/null)
case "$pm" in ''|*[!0-9]*) exit 0 ;; esac
if tr '\0' ' ' <"/proc/$pm/cmdline" 2>/dev/null | grep -qF -- "$2"; then
    kill -s QUIT "$pm" 2>/dev/null
    sleep 5
    kill -s KILL "$pm" 2>/dev/null
fi
exit 0"#;

const PORT_IN_USE: &str = "port already in use";

/// Environment for Patroni, patronictl and the callbacks they run: nothing
/// from the caller's shell (no `PG*`, no `PATRONI_*` overrides), UTC logs.
fn clean_env(cmd: &mut Command, home: &Path) {
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("TZ", "UTC")
        .env("LANG", "C.UTF-8")
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(home);
}

/// Whether `pid` exists and is not a zombie (postmasters are reparented to
/// init, which may be slow to reap them).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Direct children of `pid`, from `/proc/*/stat`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Wait until none of `pids` is alive; false on timeout.
fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|&p| alive(p)) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Which log a [`LogEvent`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    Patroni,
    Postgres,
}

/// A timestamped log line of one node.
#[derive(Clone, Debug)]
pub struct LogEvent {
    pub node: String,
    pub source: LogSource,
    /// Seconds since the Unix epoch (the logs are in UTC).
    pub at: f64,
    pub line: String,
}

impl LogEvent {
    /// `HH:MM:SS.mmm` (UTC).
    pub fn clock(&self) -> String {
        clock(self.at)
    }
}

/// The steps of a switchover or failover, from the logs (any step may be
/// missing, e.g. `request`, `before_stop` and `stop` after a crash):
///
/// - `request`: Patroni on the old leader: `received switchover request ...`
/// - `before_stop`: Patroni: ``before_stop script `...` exited with N``
///   (logged when it returns: after Patroni's CHECKPOINT, before the stop)
/// - `stop`: PostgreSQL on the old leader: `received fast shutdown request`
/// - `shut_down`: PostgreSQL on the old leader: `database system is shut down`
/// - `released`: Patroni on the old leader: `Leader key released` (Patroni
///   waits for `pg_controldata` to say "shut down", then sleeps 1 s to let
///   replicas catch up, before releasing it)
/// - `leader_lock`: Patroni on the new leader: `promoted self to leader by acquiring session lock`
/// - `promoted`: PostgreSQL on the new leader: `selected new timeline ID: N`
/// - `ready`: PostgreSQL on the new leader: `database system is ready to
///   accept connections` (after promotion: it takes writes from here on)
#[derive(Clone, Debug)]
pub struct SwitchoverTimeline {
    /// Where the search started (Unix seconds): the request or the kill.
    pub since: f64,
    pub request: Option<LogEvent>,
    pub before_stop: Option<LogEvent>,
    pub stop: Option<LogEvent>,
    pub shut_down: Option<LogEvent>,
    pub released: Option<LogEvent>,
    pub leader_lock: Option<LogEvent>,
    pub promoted: Option<LogEvent>,
    pub ready: Option<LogEvent>,
}

impl SwitchoverTimeline {
    /// The physical switchover: from the old primary's shutdown request to
    /// the new primary taking writes. After a crash (no shutdown request in
    /// the logs), from `since`, the time of the kill.
    pub fn physical(&self) -> Option<Duration> {
        let ready = self.ready.as_ref()?;
        let from = self.stop.as_ref().map_or(self.since, |e| e.at);
        Some(Duration::from_secs_f64((ready.at - from).max(0.0)))
    }

    /// From `since` (the request or the kill) to the new primary taking writes.
    pub fn total(&self) -> Option<Duration> {
        let ready = self.ready.as_ref()?;
        Some(Duration::from_secs_f64((ready.at - self.since).max(0.0)))
    }
}

impl std::fmt::Display for SwitchoverTimeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  {} (+0.000 s)        start", clock(self.since))?;
        for (what, e) in [
            ("switchover requested (Patroni)", &self.request),
            ("before_stop returned (Patroni)", &self.before_stop),
            ("fast shutdown requested (Postgres)", &self.stop),
            ("old primary shut down (Postgres)", &self.shut_down),
            ("leader key released (Patroni)", &self.released),
            ("leader key taken (Patroni)", &self.leader_lock),
            ("new timeline selected (Postgres)", &self.promoted),
            ("new primary takes writes (Postgres)", &self.ready),
        ] {
            match e {
                Some(e) => writeln!(
                    f,
                    "  {} (+{:.3} s) {:<6} {what}",
                    e.clock(),
                    e.at - self.since,
                    e.node
                )?,
                None => writeln!(f, "  {:<12}              {what}: not in the logs", "-")?,
            }
        }
        match self.physical() {
            Some(d) => write!(
                f,
                "  physical: {:.3} s ({} -> new primary takes writes)",
                d.as_secs_f64(),
                if self.stop.is_some() {
                    "shutdown request"
                } else {
                    "start"
                }
            ),
            None => write!(f, "  physical: unknown (no new primary in the logs)"),
        }
    }
}

/// Timestamp at the start of a PostgreSQL (`2026-11-23 18:56:28.123 UTC`)
/// or Patroni (`2026-11-23 18:56:28,123 INFO: ...`) log line, in seconds
/// since the epoch; both logs are in UTC here.
pub fn parse_log_time(line: &str) -> Option<f64> {
    let b = line.as_bytes();
    if b.len() < 23 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| line.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[19] != b'.' && b[19] != b',' {
        return None;
    }
    let ms = num(20..23)?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + s) as f64 + ms as f64 / 1000.0)
}

/// `HH:MM:SS.mmm` of a Unix time in seconds (UTC).
pub fn clock(unix: f64) -> String {
    let ms = (unix * 1000.0).round() as i64;
    let day_ms = ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl ProxyConfig {
    /// The standard test configuration (as [`ProxyConfig::for_cluster`]:
    /// databases `app` and `postgres`, users `app`, `md5user`, `trustuser`,
    /// `postgres` with their plaintext passwords, transaction pooling, pool
    /// of 20) for a Patroni cluster: cluster `main` lists every node, the
    /// current leader as `primary` and the others as `replica`. Roles change
    /// at a switchover; the proxy is expected to find the primary itself.
    pub fn for_patroni(cluster: &PatroniCluster) -> Result<Self> {
        let leader = cluster.leader()?.name.clone();
        let nodes = cluster
            .nodes()
            .iter()
            .map(|n| NodeEntry {
                host: n.host().to_owned(),
                port: n.port(),
                role: if n.name == leader { "primary" } else { "replica" }.to_owned(),
                patroni_api: Some(n.api_addr()),
            })
            .collect();
        Ok(Self::for_nodes(nodes))
    }
}

/// A Patroni cluster whose nodes run the shipped callback (`examples/patroni`) against `n`
/// independent proxies, every one listed in the callbacks (unless `callbacks` is false),
/// and those proxies: probing every 100 ms, holding up to 40 s, admin `admin/admin`, each
/// configuration passed through `configure` last.
pub fn cluster_behind_proxies(
    synchronous: bool,
    callbacks: bool,
    n: usize,
    configure: impl Fn(ProxyConfig) -> Result<ProxyConfig>,
) -> Result<(PatroniCluster, Vec<crate::Proxy>)> {
    let ports = (0..n).map(|_| ports::free_port()).collect::<Result<Vec<_>>>()?;
    let script = env::workspace_dir().join("examples/patroni/switchyard-callback");
    let proxies: String = ports.iter().map(|p| format!(" --proxy 127.0.0.1:{p}")).collect();
    let callback = format!(
        "{}{proxies} --node 127.0.0.1:{{pg_port}} --user admin --password admin --budget 20",
        script.display()
    );
    let opts = PatroniOptions::default().synchronous(synchronous);
    let opts = if callbacks {
        opts.before_stop(&format!("{callback} before-stop"))
            .on_role_change(&callback)
    } else {
        opts
    };
    let cluster = PatroniCluster::start_with(opts)?;
    let proxies = ports
        .iter()
        .map(|port| {
            let mut cfg = ProxyConfig::for_patroni(&cluster)?
                .with_admin()
                .set("clusters.main.probe_user", "app")
                .set("clusters.main.probe_database", "app")
                .set("clusters.main.probe_interval", "100ms")
                // Longer than Patroni's ttl (20 s): after a crash, transactions wait for the election.
                .set("clusters.main.hold_timeout", "40s");
            // The callbacks, configured before the cluster started, name this port.
            cfg.proxy.listen = format!("127.0.0.1:{port}");
            crate::Proxy::start(configure(cfg)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((cluster, proxies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_log_stamps() {
        let pg =
            parse_log_time("2026-11-23 18:56:28.123 UTC [42] LOG:  received fast shutdown request").unwrap();
        let patroni = parse_log_time("2026-11-23 18:56:28,456 INFO: no action.").unwrap();
        assert!((patroni - pg - 0.333).abs() < 1e-6);
        // 2026-11-23 00:00:00 UTC
        assert_eq!(
            parse_log_time("2026-11-23 00:00:00.000 UTC").unwrap(),
            1_795_392_000.0
        );
        assert_eq!(clock(pg), "18:56:28.123");
        assert!(parse_log_time("waiting for server").is_none());
    }

    #[test]
    fn renders_templates_and_names_a_missing_value() {
        let value = |name: &str| (name == "A").then(|| "1".to_owned());
        assert_eq!(
            render_template("a: ${A}\nb: $A ${A}x", value).unwrap(),
            "a: 1\nb: $A 1x"
        );
        let e = render_template("a: ${A}\nb: ${B}\n", value).unwrap_err();
        assert_eq!(e.to_string(), "line 2: placeholder ${B} has no value");
        let e = render_template("a: ${A", value).unwrap_err();
        assert_eq!(e.to_string(), "line 1: `${` without a closing `}`");
    }
}
