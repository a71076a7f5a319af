//! The measurements: the servers of a run ([`Bench`]), pgbench runs against each target
//! (with their p99, CPU shares, and CPU and context switches per transaction), the short
//! runs under strace that count system calls per transaction, memory per idle client, the
//! interleaved runs of the plugin tax (and its SHOW PLUGINS check), of the read-routing
//! row (and where its reads ran: SHOW NODES and each node's own transaction count) and of
//! the pipelined-pooling row (and whether it pipelined: SHOW POOLS `pipelined`); the
//! callgrind runs are in `under_callgrind.rs`. What they find goes into [`Findings`], which
//! `report.rs` prints.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use switchyard_tests::admin::admin_rows;
use switchyard_tests::tools::libpq_command;
use switchyard_tests::{env, Endpoint, PgCluster, Proxy};

use crate::accounting::{self, Reading};
use crate::interrupt;
use crate::options::{CellSpec, Options};
use crate::servers::{self, Flavour, PgBouncer, PluginCopy, READS_DB};
use crate::stats::{self, Cell, Figure, NodeReads, Sample};
use crate::strace::{SyscallRun, Tracer};

/// The matrix's targets, in the order of each round and of the tables.
pub const TARGETS: [&str; 3] = ["direct", "pgbouncer", "switchyard-plugin"];
/// The matrix's proxies: the targets of the strace runs.
pub const PROXIES: [&str; 2] = ["pgbouncer", "switchyard-plugin"];
/// The Switchyard of the matrix (plugins on).
pub const SY: &str = "switchyard-plugin";
/// The plugin tax compares these two.
pub const TAX_TARGETS: [&str; 2] = ["switchyard", "switchyard-plugin"];
/// The Switchyard of the pipelined-pooling row with `pipeline = true` in the pool-mode
/// plugin's settings.
pub const PIPELINED: &str = "switchyard-pipelined";
/// The pipelined-pooling row's targets, in the order of each round and of its table: the
/// matrix's, then the same Switchyard with pipelining on.
pub const PIPELINE_TARGETS: [&str; 4] = ["direct", "pgbouncer", SY, PIPELINED];
/// The pipelined-pooling row's proxies: the targets of its strace runs.
pub const PIPELINE_PROXIES: [&str; 3] = ["pgbouncer", SY, PIPELINED];
/// The read-routing row compares these two: the built-in Switchyard's database `bench`
/// (routing off: the primary) and [`READS_DB`] (reads over the replicas).
pub const ROUTING_TARGETS: [&str; 2] = ["switchyard", "switchyard-reads"];

/// Most KiB per idle client for Switchyard (docs/performance.md's target), checked when at
/// least [`IDLE_TARGET_CLIENTS`] were measured: with fewer, what the proxy keeps whatever
/// the number of clients (a thread's spare buffers, up to 1 MiB) weighs too much in the
/// figure (5.80 KiB per client at 1,000 where 10,000 gave 3.93; PgBouncer 4.0 and 1.1).
const IDLE_TARGET_KIB: f64 = 4.0;
const IDLE_TARGET_CLIENTS: usize = 10_000;

/// Memory per idle client of one proxy.
#[derive(Clone, Debug)]
pub struct IdleMemory {
    pub before_kib: u64,
    pub after_kib: u64,
    pub connected: usize,
}

impl IdleMemory {
    /// KiB per connected idle client.
    pub fn per_client(&self) -> f64 {
        if self.connected == 0 {
            return 0.0;
        }
        (self.after_kib as f64 - self.before_kib as f64) / self.connected as f64
    }
}

/// Everything measured, for the report.
#[derive(Debug, Default)]
pub struct Findings {
    /// Runs by cell key: `[tax:|reconnect:|routing:]MODE:CLIENTS:TARGET`.
    pub cells: BTreeMap<String, Cell>,
    /// The strace runs by cell key (`[reconnect:]MODE:CLIENTS:TARGET`, proxies only).
    pub syscalls: BTreeMap<String, SyscallRun>,
    pub idle: BTreeMap<&'static str, IdleMemory>,
    /// SHOW PLUGINS of the plugin proxy after the tps runs.
    pub plugin_stats: Option<String>,
    /// The read-routing row's transactions per node (primary first).
    pub routing_nodes: Vec<NodeReads>,
    /// Statements a Switchyard of the pipelined-pooling row answered through a pipeline
    /// during a cell's tps runs (SHOW POOLS `pipelined`, after minus before), by cell key
    /// (`pipeline:MODE:CLIENTS:TARGET`); none when SHOW POOLS did not answer.
    pub pipelined: BTreeMap<String, Option<u64>>,
    /// callgrind of the built-in proxy (with the read-routing runs when that row runs) and
    /// of the plugin proxy (for the plugin tax).
    pub cg_builtin: Option<crate::under_callgrind::CgProxy>,
    pub cg_plugin: Option<crate::under_callgrind::CgProxy>,
    pub problems: Vec<String>,
    /// Per proxy log with WARN/ERROR lines: a count and the first ones.
    pub log_summary: Vec<String>,
}

impl Findings {
    pub fn cell(&self, key: &str) -> Option<&Cell> {
        self.cells.get(key)
    }
}

/// The servers and what was measured on them.
pub struct Bench<'a> {
    pub(crate) opt: &'a Options,
    pub work: PathBuf,
    pg: PgCluster,
    verifier: String,
    /// The pool-mode plugin (not needed by the read-routing row alone).
    pub plugin: Option<PluginCopy>,
    bouncers: Vec<PgBouncer>,
    proxies: BTreeMap<Flavour, Proxy>,
    /// The proxy binary's name (pidstat shows processes by it).
    proxy_name: String,
    /// The primary's postmaster (Postgres' CPU is its and its children's).
    postmaster: Option<u32>,
    /// Clock ticks per second of `/proc/PID/stat`.
    clock_ticks: u64,
    run_no: u32,
    pub findings: Findings,
}

fn flavour_of(target: &str) -> Option<Flavour> {
    match target {
        "switchyard" | "switchyard-reads" => Some(Flavour::Builtin),
        "switchyard-plugin" => Some(Flavour::Plugin),
        PIPELINED => Some(Flavour::Pipelined),
        _ => None,
    }
}

/// The database a target's clients ask for: [`READS_DB`] for `switchyard-reads`.
fn database_of(target: &str) -> &'static str {
    if target == "switchyard-reads" {
        READS_DB
    } else {
        "bench"
    }
}

/// A child process run to its end: exit code (none when killed), or killed at the limit.
pub(crate) struct Ended {
    pub(crate) code: Option<i32>,
    pub(crate) timed_out: bool,
}

/// Waits for `child` until `limit`, killing it then, or on a signal (then `Err`).
pub(crate) fn wait_child(child: &mut Child, limit: Duration) -> Result<Ended> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Ended {
                code: status.code(),
                timed_out: false,
            });
        }
        if let Err(e) = interrupt::check() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.into());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Ended {
                code: None,
                timed_out: true,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pgbench -n` against database `db` on `port` as bench, output to `out`.
pub(crate) fn pgbench_command(port: u16, db: &str, args: &[String], out: &Path) -> Result<Command> {
    let mut cmd = libpq_command("pgbench")?;
    cmd.arg("-n")
        .args(args)
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", "bench", db])
        .env("PGPASSWORD", "bench")
        .env("PGSSLMODE", "disable")
        .stdin(Stdio::null());
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    cmd.stdout(file.try_clone()?).stderr(file);
    Ok(cmd)
}

/// Now, in µs since the Unix epoch (pgbench's log stamps transactions so).
fn epoch_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// How long a pgbench run of `secs` may take before it is killed as hung.
fn pgbench_guard(secs: u32) -> Duration {
    Duration::from_secs(u64::from(secs) * 2 + 120)
}

/// pgbench's `number of transactions actually processed: N` (`N/M` with -t).
pub(crate) fn transactions(output: &str) -> Option<u64> {
    summary_field(output, "number of transactions actually processed: ")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// The value after `prefix` on pgbench's summary line starting with it.
pub(crate) fn summary_field<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
}

/// Distinct clients pgbench reports as aborted (`client N [script N ]aborted`).
fn aborted_clients(output: &str) -> usize {
    let mut ids = std::collections::BTreeSet::new();
    for line in output.lines() {
        let mut rest = line;
        while let Some(i) = rest.find("client ") {
            rest = &rest[i + "client ".len()..];
            let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if id.is_empty() {
                continue;
            }
            let mut after = &rest[id.len()..];
            if let Some(s) = after.strip_prefix(" script ") {
                let n = s.chars().take_while(char::is_ascii_digit).count();
                if n > 0 {
                    after = &s[n..];
                }
            }
            if after.starts_with(" aborted") {
                ids.insert(id);
            }
        }
    }
    ids.len()
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn established_to(port: u16) -> usize {
    stats::established_to(&fs::read_to_string("/proc/net/tcp").unwrap_or_default(), port)
}

/// Waits until `n` client connections to `port` are established, polling every `step`, for
/// `limit` at most; returns how many there were last.
fn wait_established(port: u16, n: usize, limit: Duration, step: Duration) -> Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let up = established_to(port);
        if up >= n || Instant::now() > deadline {
            return Ok(up);
        }
        interrupt::sleep(step)?;
    }
}

pub(crate) fn last_lines(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

impl<'a> Bench<'a> {
    /// Starts Postgres, the PgBouncers (for the matrix and the pipelined-pooling row), the
    /// built-in Switchyard (for the matrix, the plugin tax and the read-routing row), the
    /// plugin's (for the matrix, the plugin tax and the pipelined-pooling row) and the
    /// pipelining one (for that row).
    pub fn start(opt: &'a Options, work: PathBuf, proxy_name: String) -> Result<Self> {
        fs::create_dir_all(work.join("runs"))?;
        let plugin = if opt.matrix || opt.tax || opt.pipeline {
            Some(servers::prepare_plugin(opt, &work)?)
        } else {
            None
        };
        let (pg, verifier) = servers::start_postgres(opt, &work)?;
        let postmaster = accounting::postmaster_pid(pg.primary().data_dir());
        if postmaster.is_none() {
            crate::log!(
                "WARNING: no postmaster pid in the data directory: Postgres' CPU will not be measured"
            );
        }
        let mut bench = Self {
            opt,
            work,
            pg,
            verifier,
            plugin,
            bouncers: Vec::new(),
            proxies: BTreeMap::new(),
            proxy_name,
            postmaster,
            clock_ticks: accounting::clock_ticks(),
            run_no: 0,
            findings: Findings::default(),
        };
        if opt.matrix || opt.pipeline {
            bench.start_bouncer("pgbouncer", "transaction", opt.pool_size)?;
            if opt.session_pool_size() > 0 {
                bench.start_bouncer("pgbouncer-session", "session", opt.session_pool_size())?;
            }
        }
        let wanted = [
            (Flavour::Builtin, opt.matrix || opt.tax || opt.routing),
            (Flavour::Plugin, bench.plugin.is_some()),
            (Flavour::Pipelined, opt.pipeline),
        ];
        for (flavour, _) in wanted.into_iter().filter(|w| w.1) {
            let proxy = bench.start_switchyard(flavour, None)?;
            bench.proxies.insert(flavour, proxy);
        }
        Ok(bench)
    }

    fn start_bouncer(&mut self, name: &'static str, mode: &str, size: u32) -> Result<()> {
        let port = self.pg.primary().port();
        let b = PgBouncer::start(
            name,
            mode,
            size,
            port,
            &self.verifier,
            self.opt.idle_clients,
            &self.work,
        )?;
        self.bouncers.push(b);
        Ok(())
    }

    pub(crate) fn start_switchyard(&self, flavour: Flavour, listen: Option<String>) -> Result<Proxy> {
        servers::start_switchyard(
            flavour,
            self.opt,
            &self.pg,
            self.plugin.as_ref().map(|p| p.path.as_path()),
            listen,
            &self.work.join("callgrind"),
        )
    }

    fn bouncer(&self, name: &str) -> Result<&PgBouncer> {
        self.bouncers
            .iter()
            .find(|b| b.name == name)
            .with_context(|| format!("{name} is not running"))
    }

    /// The PgBouncer of `mode`: 1.18 pools prepared statements only by session.
    fn bouncer_for(&self, mode: &str) -> Result<&PgBouncer> {
        self.bouncer(if mode == "prepared" {
            "pgbouncer-session"
        } else {
            "pgbouncer"
        })
    }

    fn switchyard_of(&self, target: &str) -> Result<&Proxy> {
        let flavour = flavour_of(target).with_context(|| format!("unknown target {target}"))?;
        self.proxies.get(&flavour).context("proxy not running")
    }

    fn port_of(&self, target: &str, mode: &str) -> Result<u16> {
        Ok(match target {
            "direct" => self.pg.primary().port(),
            "pgbouncer" => self.bouncer_for(mode)?.port,
            other => self.switchyard_of(other)?.port(),
        })
    }

    /// The pid of the proxy `target` serves `mode` with; none for direct Postgres.
    fn proxy_pid(&self, target: &str, mode: &str) -> Result<Option<u32>> {
        Ok(match target {
            "direct" => None,
            "pgbouncer" => Some(self.bouncer_for(mode)?.pid().context("pgbouncer has no pid")?),
            other => Some(self.switchyard_of(other)?.pid().context("proxy not running")?),
        })
    }

    /// Appends a proxy's log to `<name>.log` in the work directory (and writes its config
    /// there), so that restarts and the end of the run lose nothing.
    pub(crate) fn archive_log(&self, flavour: Flavour, proxy: &Proxy) {
        let name = flavour.name();
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join(format!("{name}.log")))
        {
            let _ = f.write_all(proxy.log().as_bytes());
        }
        let _ = fs::copy(proxy.config_path(), self.work.join(format!("{name}.toml")));
    }

    fn stop_switchyard(&mut self, flavour: Flavour, mut proxy: Proxy) {
        crate::log!("stopping {} (pid {})", flavour.name(), proxy.pid().unwrap_or(0));
        proxy.stop();
        self.note_panics(flavour, &proxy);
        self.archive_log(flavour, &proxy);
    }

    pub(crate) fn note_panics(&mut self, flavour: Flavour, proxy: &Proxy) {
        for line in proxy.panics() {
            self.findings
                .problems
                .push(format!("{} panicked: {line}", flavour.name()));
        }
    }

    /// Whether `target` is still up before/after a run. A Switchyard that died is noted,
    /// restarted on its port and re-warmed (`Ok(false)`); a dead PgBouncer or Postgres ends
    /// the benchmark.
    fn check_alive(&mut self, target: &str, when: &str, mode: &str) -> Result<bool> {
        if let Some(flavour) = flavour_of(target) {
            let Some(proxy) = self.proxies.get_mut(&flavour) else {
                bail!("{target} is not running");
            };
            if proxy.is_running() {
                return Ok(true);
            }
            let mut proxy = self.proxies.remove(&flavour).expect("looked up above");
            let status = proxy.stop().map_or("unknown".to_owned(), |s| s.to_string());
            let tail = proxy.log_tail(20);
            self.findings.problems.push(format!(
                "{target} exited ({status}), noticed {when}; restarted it{}",
                if tail.is_empty() { "" } else { "; log tail:" }
            ));
            crate::log!("{target} DIED ({status}), noticed {when}; last log lines:");
            for line in tail.lines() {
                eprintln!("    {line}");
            }
            for line in last_lines(&tail, 10) {
                self.findings.problems.push(format!("    {line}"));
            }
            self.note_panics(flavour, &proxy);
            self.archive_log(flavour, &proxy);
            let listen = proxy.config().proxy.listen.clone();
            drop(proxy);
            let proxy = self.start_switchyard(flavour, Some(listen))?;
            self.proxies.insert(flavour, proxy);
            crate::log!("re-warming {target}'s pool (3s)");
            let out = self.work.join(format!("runs/rewarm-{}.out", self.run_no));
            let c = self.opt.pool_size.min(16);
            let _ = self.pgbench(target, "simple", c, 3, &[], &out)?;
            return Ok(false);
        }
        match target {
            "pgbouncer" => {
                let b = self.bouncer_for(mode)?;
                let (name, alive) = (b.name, b.ensure_running());
                if let Err(e) = alive {
                    self.findings.problems.push(format!("{name} died; see log"));
                    return Err(e);
                }
            }
            _ => {
                if !self.pg.primary_mut().is_running() {
                    bail!("postgres died\n{}", env::tail(&self.pg.primary().log_path(), 20));
                }
            }
        }
        Ok(true)
    }

    /// `pgbench -S -M mode -c clients -j min(clients, JOBS) -T secs` plus `extra` against
    /// `target`, under a hang guard of twice the duration plus two minutes.
    fn pgbench(
        &self,
        target: &str,
        mode: &str,
        clients: u32,
        secs: u32,
        extra: &[String],
        out: &Path,
    ) -> Result<Ended> {
        let mut child = self.spawn_pgbench(target, mode, clients, secs, extra, out)?;
        wait_child(&mut child, pgbench_guard(secs))
    }

    /// Starts the pgbench of [`Self::pgbench`] without waiting for it.
    fn spawn_pgbench(
        &self,
        target: &str,
        mode: &str,
        clients: u32,
        secs: u32,
        extra: &[String],
        out: &Path,
    ) -> Result<Child> {
        let mut args: Vec<String> = ["-S", "-M", mode, "-c"].iter().map(|s| s.to_string()).collect();
        args.extend([
            clients.to_string(),
            "-j".into(),
            clients.min(self.opt.jobs).to_string(),
            "-T".into(),
            secs.to_string(),
        ]);
        args.extend_from_slice(extra);
        let port = self.port_of(target, mode)?;
        pgbench_command(port, database_of(target), &args, out)?
            .spawn()
            .context("spawning pgbench")
    }

    /// Warms up each target's pool: 3 s of `-M simple` at min(POOL_SIZE, 16) clients.
    pub fn warm_up(&mut self, targets: &[&str]) -> Result<()> {
        let c = self.opt.pool_size.min(16);
        for t in targets {
            crate::log!("warm-up: {t}, 3s, {c} clients");
            let out = self.work.join(format!("runs/warmup-{t}.out"));
            let end = self.pgbench(t, "simple", c, 3, &[], &out)?;
            if end.code != Some(0) {
                bail!("warm-up against {t} failed:\n{}", env::tail(&out, 20));
            }
        }
        Ok(())
    }

    /// One pgbench run of a cell (`prefix`: "" for the matrix, "tax:", "routing:" or
    /// "reconnect:").
    pub fn bench_one(&mut self, target: &str, mode: &str, c: u32, round: u32, prefix: &str) -> Result<()> {
        let key = format!("{prefix}{mode}:{c}:{target}");
        self.run_no += 1;
        let n = self.run_no;
        let tag = prefix.trim_end_matches(':');
        let out_name = format!(
            "{n}-{tag}{}{mode}-c{c}-{target}-r{round}.out",
            if tag.is_empty() { "" } else { "-" }
        );
        let out = self.work.join("runs").join(&out_name);
        let mut note = String::new();
        if !self.check_alive(target, &format!("before {mode} c={c}"), mode)? {
            note.push_str("switchyard had died (restarted) before this run; ");
        }
        let mut extra = vec![
            "-l".to_owned(),
            format!(
                "--log-prefix={}",
                self.work.join(format!("runs/lat-{n}")).display()
            ),
            format!("--sampling-rate={}", self.opt.sampling),
        ];
        if prefix == "reconnect:" {
            extra.push("-C".into());
        }
        let pidstat_out = out.with_extension("out.pidstat");
        let mut pidstat = if prefix.is_empty() && mode == "simple" && c == 64 {
            let file = File::create(&pidstat_out)?;
            Command::new("pidstat")
                .args(["-u", "1", &self.opt.duration.to_string()])
                .env("LC_ALL", "C")
                .stdin(Stdio::null())
                .stdout(file)
                .stderr(Stdio::null())
                .spawn()
                .ok()
        } else {
            None
        };
        // CPU per transaction: the matrix, the reconnect rows and the pipelined-pooling row
        // (on the primary only).
        let accounted = prefix.is_empty() || prefix == "reconnect:" || prefix == "pipeline:";
        let (proxy_pid, postmaster) = if accounted {
            (self.proxy_pid(target, mode)?, self.postmaster)
        } else {
            (None, None)
        };
        let before = Reading::take(proxy_pid, postmaster);
        let ended = self.pgbench(target, mode, c, self.opt.duration, &extra, &out);
        let after = Reading::take(proxy_pid, postmaster);
        let share = match pidstat.as_mut() {
            Some(p) => {
                let _ = wait_child(p, Duration::from_secs(u64::from(self.opt.duration) + 30));
                Some(stats::cpu_share(
                    &fs::read_to_string(&pidstat_out).unwrap_or_default(),
                    &self.proxy_name,
                ))
            }
            None => None,
        };
        let ended = ended?;
        let p99 = self.p99_of_run(n);
        let output = fs::read_to_string(&out).unwrap_or_default();
        let tps_text = summary_field(&output, "tps = ").map(str::to_owned);
        let lat = summary_field(&output, "latency average = ").and_then(|v| v.parse().ok());
        let login_ms = summary_field(&output, "initial connection time = ").and_then(|v| v.parse().ok());
        let failed: u64 = summary_field(&output, "number of failed transactions: ")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let cpu =
            accounted.then(|| after.since(&before, transactions(&output).unwrap_or(0), self.clock_ticks));
        let aborted = aborted_clients(&output);
        if ended.timed_out {
            note.push_str(&format!(
                "HUNG: pgbench killed after {}s; ",
                self.opt.duration * 2 + 120
            ));
        } else if ended.code != Some(0) {
            let code = ended.code.map_or("by signal".to_owned(), |c| c.to_string());
            note.push_str(&format!("pgbench exit {code}; "));
        }
        if aborted > 0 {
            note.push_str(&format!("{aborted} client(s) aborted; "));
        }
        if failed > 0 {
            note.push_str(&format!("{failed} failed tx; "));
        }
        let (tps_text, tps, latency) = match tps_text.as_deref().and_then(|t| t.parse::<f64>().ok()) {
            Some(tps) => (
                tps_text.unwrap_or_default(),
                Figure::Value(tps),
                lat.map_or(Figure::Err, Figure::Value),
            ),
            None => ("ERR".to_owned(), Figure::Err, Figure::Err),
        };
        if tps == Figure::Err && note.is_empty() {
            // pgbench exits 0 when no client got as far as a transaction (e.g. logins slower
            // than the run): an ERR cell is a problem even then.
            note.push_str("no tps in pgbench's output (no transaction completed); ");
        }
        if !note.is_empty() {
            let first_err = output.lines().find(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("error") || l.contains("fatal")
            });
            if let Some(e) = first_err {
                note.push_str(&format!(
                    "first error: {}; ",
                    e.strip_prefix("pgbench: ").unwrap_or(e)
                ));
            }
            let what = note.trim_end_matches("; ");
            self.findings.problems.push(format!(
                "{prefix}{mode} c={c} {target} round {round}: {what} (output: {out_name})"
            ));
            crate::log!("  PROBLEM: {what}");
            for line in last_lines(&output, 15) {
                eprintln!("    | {line}");
            }
        }
        if !self.check_alive(target, &format!("after {mode} c={c}"), mode)? {
            note.push_str("switchyard died during this run; ");
        }
        let cpu_note = cpu.map_or(String::new(), |r| {
            let per = |v: Option<u64>| {
                v.and_then(|v| r.per_tx(v))
                    .map_or("-".to_owned(), |v| format!("{v:.1}"))
            };
            let proxy = if proxy_pid.is_some() {
                format!(
                    " proxy={}+{}us/tx",
                    per(r.proxy.map(|p| p.user_us)),
                    per(r.proxy.map(|p| p.system_us))
                )
            } else {
                String::new()
            };
            format!(
                "{proxy} postgres={}us/tx pgbench={}us/tx",
                per(r.postgres_us),
                per(r.pgbench_us)
            )
        });
        crate::log!(
            "  {mode:<8} c={c:<3} {target:<17} tps={tps_text} lat={}ms failed={failed}{cpu_note}{}",
            lat.map_or("ERR".to_owned(), |l: f64| l.to_string()),
            if note.is_empty() {
                String::new()
            } else {
                format!("  [{}]", note.trim_end_matches("; "))
            }
        );
        let cell = self.findings.cells.entry(key).or_default();
        cell.samples.push(Sample {
            tps_text,
            tps,
            latency,
            p99,
            share,
            cpu,
            login_ms,
        });
        cell.failed += failed;
        cell.noted |= !note.is_empty();
        Ok(())
    }

    /// p99 of run `n`'s sampled latency logs (`lat-N.*`), which are removed.
    fn p99_of_run(&self, n: u32) -> Option<f64> {
        stats::p99_ms(self.take_logs(&format!("lat-{n}.")).lines())
    }

    /// The text of pgbench's per-transaction logs in `runs/` whose names start with
    /// `prefix` (one per thread), which are removed.
    fn take_logs(&self, prefix: &str) -> String {
        let mut text = String::new();
        for entry in fs::read_dir(self.work.join("runs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                text.push_str(&fs::read_to_string(entry.path()).unwrap_or_default());
                let _ = fs::remove_file(entry.path());
            }
        }
        text
    }

    /// The matrix, then the reconnect rows; rounds interleaved across targets; after each
    /// cell's rounds, its strace runs (with STRACE=1).
    pub fn run_matrix(&mut self) -> Result<()> {
        let opt = self.opt;
        for mode in &opt.modes {
            for c in opt.all_clients() {
                for r in 1..=opt.rounds {
                    for t in TARGETS {
                        if !skip_cell(opt, mode, c, t) {
                            self.bench_one(t, mode, c, r, "")?;
                        }
                    }
                }
                self.strace_cell(mode, c, "", &PROXIES)?;
            }
        }
        for &c in &opt.reconnect_clients {
            for r in 1..=opt.rounds {
                for t in TARGETS {
                    self.bench_one(t, "simple", c, r, "reconnect:")?;
                }
            }
            self.strace_cell("simple", c, "reconnect:", &PROXIES)?;
        }
        Ok(())
    }

    /// The pipelined-pooling row: per cell, ROUNDS rounds of its four targets (interleaved,
    /// as in the matrix), how many statements each Switchyard pipelined meanwhile (SHOW
    /// POOLS; a problem when the pipelining one pipelined none, or the other any), then the
    /// cell's strace runs (with STRACE=1).
    pub fn pipeline_row(&mut self) -> Result<()> {
        let opt = self.opt;
        for cell in &opt.pipeline_cells {
            let (mode, c) = (cell.mode.as_str(), cell.clients);
            let before = [SY, PIPELINED].map(|t| self.pipelined_statements(t));
            for r in 1..=opt.rounds {
                for t in PIPELINE_TARGETS {
                    self.bench_one(t, mode, c, r, "pipeline:")?;
                }
            }
            for (t, before) in [SY, PIPELINED].into_iter().zip(before) {
                let n = match (before, self.pipelined_statements(t)) {
                    // A proxy restarted meanwhile counts from 0 again.
                    (Some(b), Some(a)) => Some(a.checked_sub(b).unwrap_or(a)),
                    _ => None,
                };
                crate::log!(
                    "pipeline: {mode} c={c} {t}: {} statements pipelined (SHOW POOLS)",
                    stats::fmt_count(n)
                );
                let problem = match n {
                    None => Some("SHOW POOLS did not answer".to_owned()),
                    Some(0) if t == PIPELINED => {
                        Some("pipelined no statement (SHOW POOLS pipelined = 0)".to_owned())
                    }
                    Some(n) if n > 0 && t == SY => {
                        Some(format!("pipelined {n} statements with pipelining off"))
                    }
                    _ => None,
                };
                if let Some(p) = problem {
                    self.findings
                        .problems
                        .push(format!("pipeline:{mode} c={c} {t}: {p}"));
                }
                self.findings.pipelined.insert(format!("pipeline:{cell}:{t}"), n);
            }
            self.strace_cell(mode, c, "pipeline:", &PIPELINE_PROXIES)?;
        }
        Ok(())
    }

    /// SHOW POOLS `pipelined` of Switchyard `target`, summed over its pools; none when it
    /// did not answer.
    fn pipelined_statements(&self, target: &str) -> Option<u64> {
        let port = self.switchyard_of(target).ok()?.port();
        let rows = admin_query(port, "SHOW POOLS").ok()?;
        rows.iter().map(|r| r.get("pipelined")?.parse::<u64>().ok()).sum()
    }

    /// The strace runs of a cell: each of `proxies` that serves it, one after the other.
    fn strace_cell(&mut self, mode: &str, c: u32, prefix: &str, proxies: &[&str]) -> Result<()> {
        if !self.opt.strace {
            return Ok(());
        }
        for &t in proxies {
            if !(prefix.is_empty() && skip_cell(self.opt, mode, c, t)) {
                self.strace_one(t, mode, c, prefix)?;
            }
        }
        Ok(())
    }

    /// A pgbench run with `strace -c -f` attached to the proxy for STRACE_SECONDS:
    /// system calls per transaction. The strace is attached once every client has logged
    /// in (for -C, where each transaction is a login, at once) and detached after
    /// STRACE_SECONDS, before pgbench ends; the transactions are those pgbench's
    /// per-transaction log shows completed in between. pgbench runs STRACE_SECONDS plus
    /// twice the longest login time of the cell's runs plus 1 s, since -T includes the
    /// logins. Its tps is not reported (tracing slows the proxy down many times over).
    fn strace_one(&mut self, target: &str, mode: &str, c: u32, prefix: &str) -> Result<()> {
        let key = format!("{prefix}{mode}:{c}:{target}");
        self.run_no += 1;
        let tag = prefix.trim_end_matches(':');
        let name = format!(
            "{}-strace-{tag}{}{mode}-c{c}-{target}",
            self.run_no,
            if tag.is_empty() { "" } else { "-" }
        );
        let out = self.work.join("runs").join(format!("{name}.out"));
        self.check_alive(target, &format!("before the strace run of {mode} c={c}"), mode)?;
        let pid = self
            .proxy_pid(target, mode)?
            .context("strace runs are for proxies")?;
        let port = self.port_of(target, mode)?;
        let reconnect = prefix == "reconnect:";
        let login_ms = self.findings.cell(&key).map_or(0.0, |cell| {
            cell.samples.iter().filter_map(|s| s.login_ms).fold(0.0, f64::max)
        });
        let secs = self.opt.strace_secs + (2.0 * login_ms / 1000.0).ceil() as u32 + 1;
        let log_prefix = format!("slat-{}", self.run_no);
        let mut extra = vec![
            "-l".to_owned(),
            format!(
                "--log-prefix={}",
                self.work.join("runs").join(&log_prefix).display()
            ),
        ];
        if reconnect {
            extra.push("-C".into());
        }
        let mut problems = Vec::new();
        let mut pgbench = self.spawn_pgbench(target, mode, c, secs, &extra, &out)?;
        let traced = self.traced_window(&mut pgbench, pid, port, c, reconnect, &name);
        let ended = wait_child(&mut pgbench, pgbench_guard(secs))?;
        let log = self.take_logs(&format!("{log_prefix}."));
        if ended.code != Some(0) {
            let code = ended.code.map_or("killed".to_owned(), |c| c.to_string());
            problems.push(format!("pgbench exit {code}"));
        }
        self.check_alive(target, &format!("after the strace run of {mode} c={c}"), mode)?;
        match traced {
            Ok((syscalls, window)) => {
                let tx = stats::completed_within(log.lines(), window);
                if tx == 0 {
                    problems.push("no transaction completed while strace was attached".to_owned());
                }
                let run = SyscallRun {
                    transactions: tx,
                    syscalls,
                };
                let per = |n: u64| run.per_tx(n).map_or("-".to_owned(), |v| format!("{v:.2}"));
                crate::log!(
                    "  strace   c={c:<3} {target:<17} tx={tx} per tx: sendto={} recvfrom={} epoll_wait={} futex={} total={}",
                    per(run.syscalls.count("sendto")),
                    per(run.syscalls.count("recvfrom")),
                    per(run.syscalls.count("epoll_wait")),
                    per(run.syscalls.count("futex")),
                    per(run.syscalls.total)
                );
                self.findings.syscalls.insert(key, run);
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
        for what in problems {
            crate::log!("  PROBLEM: {what}");
            self.findings.problems.push(format!(
                "{prefix}{mode} c={c} {target} strace run: {what} (output: {name}.*)"
            ));
        }
        Ok(())
    }

    /// While `pgbench` runs: waits until its `c` clients are connected to `port` (not with
    /// `reconnect`), attaches strace to `pid`, and detaches after STRACE_SECONDS or when
    /// pgbench ends. Returns the counts and the window, µs since the epoch.
    fn traced_window(
        &self,
        pgbench: &mut Child,
        pid: u32,
        port: u16,
        c: u32,
        reconnect: bool,
        name: &str,
    ) -> Result<(crate::strace::Syscalls, (u64, u64))> {
        if !reconnect {
            let up = wait_established(
                port,
                c as usize,
                Duration::from_secs(120),
                Duration::from_millis(20),
            )?;
            if up < c as usize {
                bail!("only {up} of {c} clients connected");
            }
        }
        let tracer = Tracer::attach(pid, &self.work.join("runs").join(format!("{name}.strace")))?;
        let start = epoch_us();
        let until = Instant::now() + Duration::from_secs(u64::from(self.opt.strace_secs));
        while Instant::now() < until && pgbench.try_wait()?.is_none() {
            interrupt::sleep(Duration::from_millis(20))?;
        }
        let end = epoch_us();
        Ok((tracer.detach()?, (start, end)))
    }

    /// Memory per idle client of `name` (a proxy of the matrix or the transaction PgBouncer):
    /// its RSS with IDLE_CLIENTS clients that logged in (SCRAM, no TLS), ran SELECT 1 and
    /// sit idle, minus its RSS with none. Clients come from pgbench processes of at most 500
    /// each, started one after another so that logins are not all at once.
    pub fn idle_memory(&mut self, name: &'static str) -> Result<()> {
        let port = self.port_of(name, "simple")?;
        let pid = self.proxy_pid(name, "simple")?.context("not a proxy")?;
        let script = self.work.join("idle.sql");
        fs::write(&script, "SELECT 1;\n\\sleep 900 s\n")?;
        let before = rss_kib(pid);
        let total = self.opt.idle_clients;
        crate::log!("idle clients: {total} against {name} (RSS now {before} KiB)");
        let mut children = Vec::new();
        let result = self.connect_idle(name, port, &script, &mut children);
        let measured = result.map(|()| {
            let after = rss_kib(pid);
            (after, established_to(port))
        });
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (after, connected) = measured?;
        crate::log!("  {name}: RSS {before} -> {after} KiB with {connected} idle clients");
        let memory = IdleMemory {
            before_kib: before,
            after_kib: after,
            connected,
        };
        // The target (docs/performance.md), checked where enough clients make RSS pages a
        // small part of the figure.
        if name == SY && connected >= IDLE_TARGET_CLIENTS && memory.per_client() > IDLE_TARGET_KIB {
            self.findings.problems.push(format!(
                "{name}: {:.2} KiB per idle client with {connected} idle clients, over the target of {IDLE_TARGET_KIB} KiB",
                memory.per_client()
            ));
        }
        self.findings.idle.insert(name, memory);
        interrupt::sleep(Duration::from_secs(2))?; // let the proxy close the sessions
        Ok(())
    }

    fn connect_idle(
        &mut self,
        name: &str,
        port: u16,
        script: &Path,
        children: &mut Vec<Child>,
    ) -> Result<()> {
        let total = self.opt.idle_clients;
        let mut started = 0;
        while started < total {
            let n = (total - started).min(500);
            let args: Vec<String> = [
                "-f",
                &script.display().to_string(),
                "-c",
                &n.to_string(),
                "-j",
                "1",
                "-t",
                "1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let out = self.work.join(format!("runs/idle-{name}-{started}.out"));
            children.push(
                pgbench_command(port, "bench", &args, &out)?
                    .spawn()
                    .context("spawning pgbench")?,
            );
            started += n;
            let up = wait_established(
                port,
                started as usize,
                Duration::from_secs(120),
                Duration::from_millis(200),
            )?;
            if up < started as usize {
                self.findings.problems.push(format!(
                    "idle clients: only {up} of {started} connected to {name}"
                ));
                break;
            }
        }
        interrupt::sleep(Duration::from_secs(3)) // the last batch runs its SELECT 1 and settles
            .map_err(Into::into)
    }

    /// tps of built-in vs plugin, interleaved (see [`Self::interleaved`]).
    pub fn plugin_tax_tps(&mut self) -> Result<()> {
        let opt = self.opt;
        self.interleaved(&opt.tax_cells, TAX_TARGETS, "tax:")
    }

    /// tps of the built-in Switchyard's `bench` (the primary) vs [`READS_DB`] (the
    /// replicas), interleaved, and where their transactions ran: SHOW NODES and each
    /// node's own count, before and after the runs.
    pub fn read_routing_tps(&mut self) -> Result<()> {
        let opt = self.opt;
        // A backend that went idle less than a second after its last report to the
        // statistics reports the rest 10 s later (PGSTAT_IDLE_INTERVAL): so the counts are
        // read that long after the runs before (the warm-up, the plugin tax) and these.
        let settled = Duration::from_secs(11);
        interrupt::sleep(settled)?;
        let before = self.node_counts();
        self.interleaved(&opt.routing_cells, ROUTING_TARGETS, "routing:")?;
        interrupt::sleep(settled)?;
        let after = self.node_counts();
        let nodes: Vec<NodeReads> = after
            .iter()
            .map(|a| a.since(before.iter().find(|b| b.node == a.node)))
            .collect();
        for n in &nodes {
            crate::log!(
                "read routing: {} ({}): reads={} writes={} (SHOW NODES), {} transactions committed (pg_stat_database)",
                n.node,
                if n.primary { "primary" } else { "replica" },
                stats::fmt_count(n.reads),
                stats::fmt_count(n.writes),
                stats::fmt_count(n.committed)
            );
        }
        self.findings.problems.extend(stats::spread_problems(&nodes));
        self.findings.routing_nodes = nodes;
        Ok(())
    }

    /// Each node of the cluster (primary first) with the built-in proxy's SHOW NODES
    /// counters (none when it did not answer) and the node's own `xact_commit` of `bench`.
    fn node_counts(&mut self) -> Vec<NodeReads> {
        let port = self.proxies[&Flavour::Builtin].port();
        let rows = match admin_query(port, "SHOW NODES") {
            Ok(rows) => rows,
            Err(e) => {
                self.findings
                    .problems
                    .push(format!("read routing: SHOW NODES failed: {e:#}"));
                Vec::new()
            }
        };
        let nodes =
            std::iter::once((self.pg.primary(), true)).chain(self.pg.replicas().iter().map(|r| (r, false)));
        nodes
            .map(|(node, primary)| {
                let name = format!("{}:{}", node.host(), node.port());
                let row = rows.iter().find(|r| r.get("node") == Some(&name));
                let field = |c: &str| row.and_then(|r| r.get(c)?.parse().ok());
                let committed = node
                    .admin_sql(
                        "bench",
                        "SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench'",
                    )
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
                NodeReads {
                    reads: field("reads"),
                    writes: field("writes"),
                    committed,
                    node: name,
                    primary,
                }
            })
            .collect()
    }

    /// Runs each cell's two targets one after the other for ROUNDS rounds, the order
    /// alternating per round so that a trend in the machine's load hits both alike.
    fn interleaved(&mut self, cells: &[CellSpec], targets: [&str; 2], prefix: &str) -> Result<()> {
        for cell in cells {
            for r in 1..=self.opt.rounds {
                let order = if r % 2 == 1 {
                    targets
                } else {
                    [targets[1], targets[0]]
                };
                for t in order {
                    self.bench_one(t, &cell.mode, cell.clients, r, prefix)?;
                }
            }
        }
        Ok(())
    }

    /// SHOW PLUGINS on a proxy's admin console: the plugin must have been called and never
    /// failed, or what was measured is the built-in fallback. Returns the summary line (when
    /// SHOW PLUGINS answered) and whether the check passed.
    pub(crate) fn plugin_calls(&mut self, name: &str, port: u16) -> (Option<String>, bool) {
        let rows = match admin_query(port, "SHOW PLUGINS") {
            Ok(rows) => rows,
            Err(e) => {
                self.findings
                    .problems
                    .push(format!("{name}: SHOW PLUGINS failed: {e:#}"));
                return (None, false);
            }
        };
        let field = |c: &str| {
            rows.first()
                .and_then(|r| r.get(c))
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| "?".to_owned())
        };
        let (calls, failures) = (field("calls"), field("failures"));
        let stats = format!(
            "calls={calls} failures={failures} instances={} p50={} version={}",
            field("instances"),
            field("p50"),
            field("version")
        );
        crate::log!("{name}: SHOW PLUGINS: {stats}");
        let ok = matches!((calls.parse::<u64>(), failures.parse::<u64>()), (Ok(c), Ok(0)) if c > 0);
        if !ok {
            self.findings.problems.push(format!(
                "{name}: the pool-mode plugin was not called or failed (SHOW PLUGINS: {rows:?})"
            ));
        }
        (Some(stats), ok)
    }

    /// SHOW PLUGINS of the plugin proxy after the tps runs.
    pub fn check_plugin(&mut self) {
        let port = self.proxies[&Flavour::Plugin].port();
        self.findings.plugin_stats = self.plugin_calls(Flavour::Plugin.name(), port).0;
    }

    /// Counts the WARN/ERROR lines of each proxy's log (a problem when there are any).
    fn summarise_logs(&mut self) {
        let names = [
            "switchyard-plugin",
            "switchyard",
            PIPELINED,
            "callgrind-builtin",
            "callgrind-plugin",
        ];
        for name in names {
            let text = fs::read_to_string(self.work.join(format!("{name}.log"))).unwrap_or_default();
            let bad: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .collect();
            if bad.is_empty() {
                continue;
            }
            let mut summary = format!("{name}.log: {} WARN/ERROR lines, first ones:", bad.len());
            for l in bad.iter().take(5) {
                summary.push_str(&format!("\n    {l}"));
            }
            self.findings.log_summary.push(summary);
            self.findings
                .problems
                .push(format!("{name} logged {} WARN/ERROR lines", bad.len()));
        }
    }

    /// Stops every server (so that nothing prints after the report), keeps the logs in the
    /// work directory, and returns what was measured.
    pub fn finish(mut self) -> Findings {
        let proxies = std::mem::take(&mut self.proxies);
        for (flavour, proxy) in proxies {
            self.stop_switchyard(flavour, proxy);
        }
        for mut b in std::mem::take(&mut self.bouncers) {
            b.stop();
            let _ = fs::copy(b.log_path(), self.work.join(format!("{}.log", b.name)));
        }
        let _ = fs::copy(self.pg.primary().log_path(), self.work.join("postgres.log"));
        crate::log!("stopping postgres");
        self.summarise_logs();
        let Bench { pg, findings, .. } = self;
        drop(pg);
        findings
    }
}

/// `command`'s rows on the admin console of the proxy on `port` (120 s at most: a proxy
/// under valgrind is slow).
fn admin_query(port: u16, command: &str) -> Result<Vec<std::collections::HashMap<String, String>>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(120),
            admin_rows(&Endpoint::new("127.0.0.1", port), command),
        )
        .await
        .context("no answer within 120 s")?
    })
}

/// Reads SHOW NODES of the proxy on `port` counts as routed to a node other than the
/// primary; none when it did not answer.
pub(crate) fn replica_reads(port: u16) -> Option<u64> {
    let rows = admin_query(port, "SHOW NODES").ok()?;
    rows.iter()
        .filter(|r| r.get("primary").is_some_and(|p| p != "true"))
        .map(|r| r.get("reads")?.parse::<u64>().ok())
        .sum()
}

/// How many pgbench runs the settings ask for (the matrix, the reconnect rows, the tax and
/// routing cells, the pipelined-pooling row).
pub fn planned_runs(opt: &Options) -> u32 {
    let mut runs = 0;
    for mode in &opt.modes {
        for c in opt.all_clients() {
            runs += TARGETS.iter().filter(|t| !skip_cell(opt, mode, c, t)).count() as u32 * opt.rounds;
        }
    }
    runs += opt.reconnect_clients.len() as u32 * TARGETS.len() as u32 * opt.rounds;
    let cells = opt.tax_cells.len() + opt.routing_cells.len();
    runs += PIPELINE_TARGETS.len() as u32 * opt.rounds * opt.pipeline_cells.len() as u32;
    runs + 2 * opt.rounds * cells as u32
}

/// How many strace runs the settings ask for: each proxy of each matrix cell it serves, of
/// each reconnect row and of each pipelined-pooling cell; none with STRACE=0.
pub fn planned_strace_runs(opt: &Options) -> u32 {
    if !opt.strace {
        return 0;
    }
    let mut runs = 0;
    for mode in &opt.modes {
        for c in opt.all_clients() {
            runs += PROXIES.iter().filter(|t| !skip_cell(opt, mode, c, t)).count() as u32;
        }
    }
    runs += opt.reconnect_clients.len() as u32 * PROXIES.len() as u32;
    runs + opt.pipeline_cells.len() as u32 * PIPELINE_PROXIES.len() as u32
}

/// Cells not measured: direct Postgres at the pooler-only client counts, and -M prepared
/// through PgBouncer above its session pool.
pub fn skip_cell(opt: &Options, mode: &str, c: u32, target: &str) -> bool {
    (target == "direct" && opt.pooler_only(c))
        || (mode == "prepared" && target == "pgbouncer" && c > opt.session_pool_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Aborted clients are counted once each, with or without a script number.
    #[test]
    fn aborted_clients_are_counted_once() {
        let out = "\
pgbench: error: client 3 script 0 aborted in command 1 query 0: ERROR:  boom
pgbench: error: client 3 aborted in command 2
pgbench: error: client 12 aborted in state 4
client 7 received an error
";
        assert_eq!(aborted_clients(out), 2);
        assert_eq!(aborted_clients("number of clients: 16\n"), 0);
    }

    /// Summary fields are read from pgbench's summary lines.
    #[test]
    fn pgbench_summary_fields() {
        let out = "\
number of transactions actually processed: 1000/1000
number of failed transactions: 2 (0.200%)
latency average = 0.812 ms
tps = 19712.409811 (without initial connection time)
";
        assert_eq!(summary_field(out, "tps = "), Some("19712.409811"));
        assert_eq!(summary_field(out, "latency average = "), Some("0.812"));
        assert_eq!(summary_field(out, "number of failed transactions: "), Some("2"));
        assert_eq!(
            summary_field(out, "number of transactions actually processed: "),
            Some("1000/1000")
        );
        assert_eq!(summary_field("", "tps = "), None);
    }

    /// The options of `args` with the settings `env`.
    fn options(args: &[&str], env: &[(&str, &str)]) -> Options {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: BTreeMap<&str, &str> = env.iter().copied().collect();
        match crate::options::parse(&args, |k| env.get(k).map(|v| v.to_string())).unwrap() {
            crate::options::Command::Run(o) => *o,
            crate::options::Command::Help => unreachable!(),
        }
    }

    /// A full run: 4 client counts x 3 targets x 3 modes, 1000 clients through the two
    /// poolers (and not through the session PgBouncer for -M prepared), the reconnect row,
    /// the two tax cells and the two routing cells, 3 rounds each; --quick: 2 x 3, the
    /// reconnect row, one tax cell and one routing cell.
    #[test]
    fn planned_runs_of_the_usual_settings() {
        let opt = |args: &[&str]| options(args, &[]);
        assert_eq!(
            planned_runs(&opt(&[])),
            (3 * 12 + 2 + 2 + 1 + 3 + 4 + 4 + 2 * 4) * 3
        );
        assert_eq!(planned_runs(&opt(&["--quick"])), 6 + 3 + 2 + 2 + 4);
        assert_eq!(planned_runs(&opt(&["--pipeline"])), 2 * 4 * 3);
        assert_eq!(planned_runs(&opt(&["--plugin-tax"])), 12);
        assert_eq!(planned_runs(&opt(&["--read-routing"])), 12);
        assert_eq!(planned_runs(&opt(&["--read-routing", "--plugin-tax"])), 24);
    }

    /// One strace run per proxy and cell: a full run has 3 modes x 5 client counts x 2
    /// proxies, less the session PgBouncer at 1000 clients, plus the reconnect row's 2, plus
    /// 2 pipelined-pooling cells x 3 proxies; --quick 2 x 2 + 2 + 3; --pipeline 2 x 3; none
    /// with only the plugin tax or with STRACE=0.
    #[test]
    fn planned_strace_runs_of_the_usual_settings() {
        assert_eq!(planned_strace_runs(&options(&[], &[])), 3 * 5 * 2 - 1 + 2 + 2 * 3);
        assert_eq!(planned_strace_runs(&options(&["--quick"], &[])), 4 + 2 + 3);
        assert_eq!(planned_strace_runs(&options(&["--pipeline"], &[])), 6);
        assert_eq!(planned_strace_runs(&options(&["--plugin-tax"], &[])), 0);
        assert_eq!(planned_strace_runs(&options(&[], &[("STRACE", "0")])), 0);
    }

    /// The transactions of pgbench's summary, of a -T run (a count) and of a -t run
    /// (processed/planned); none without the line.
    #[test]
    fn transactions_of_a_run() {
        assert_eq!(
            transactions("number of transactions actually processed: 153211\n"),
            Some(153_211)
        );
        assert_eq!(
            transactions("number of transactions actually processed: 1000/1000\n"),
            Some(1000)
        );
        assert_eq!(transactions("tps = 5.0\n"), None);
    }
}
