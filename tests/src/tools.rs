//! Running external programs: `psql`, `pgbench`, and the third-party client
//! drivers under `tests/clients/` (psycopg, node-postgres, pgjdbc).
//!
//! Every run has a time limit (a hung proxy must fail a test, not hang CI),
//! captures stdout and stderr, and is isolated from the caller's `PG*`
//! environment variables so that a developer's shell cannot change results.
//! Each tool has a blocking API (usable from `Drop` and sync code) and an
//! `_async` wrapper that runs it on tokio's blocking pool, so a test's own
//! connections keep being driven meanwhile.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::env;

/// Sends `sig` to `pid` (kill(2)), ignoring failure. The caller makes sure `pid` is
/// still the process it means: its own unreaped child, or one it checked in `/proc`.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Environment variables that libpq-based tools would otherwise pick up.
const PG_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
];

/// Captured result of an external command.
#[derive(Clone, Debug)]
pub struct CmdOutput {
    /// Human-readable command line, for messages.
    pub command: String,
    /// Exit status (as text, e.g. "exit status: 1").
    pub status: String,
    /// Whether it exited with status 0.
    pub status_ok: bool,
    /// Exit code if it exited normally.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// Fail with the full output unless the command succeeded.
    pub fn ensure_success(&self) -> Result<&Self> {
        if !self.status_ok {
            bail!("{}", self.describe("expected success"));
        }
        Ok(self)
    }

    /// A multi-line description for failure messages.
    pub fn describe(&self, what: &str) -> String {
        format!(
            "{what}: `{}` ended with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Run `cmd` to completion with `stdin` fed to it, killing it after
/// `timeout`.
pub fn run_command(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<CmdOutput> {
    let command = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {command}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        // A child that exits early closes its stdin; that is not our error.
        let _ = pipe.write_all(input);
    }
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
            let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
            bail!(
                "`{command}` did not finish within {timeout:?} and was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                tail_str(&stdout, 40),
                tail_str(&stderr, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    Ok(CmdOutput {
        command,
        status: status.to_string(),
        status_ok: status.success(),
        code: status.code(),
        stdout,
        stderr,
    })
}

fn tail_str(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A PostgreSQL client program, isolated from the caller's `PG*` environment.
pub fn libpq_command(program: &str) -> Result<Command> {
    let mut cmd = Command::new(env::pg_program(program)?);
    for var in PG_ENV {
        cmd.env_remove(var);
    }
    cmd.env("PGCONNECT_TIMEOUT", "10");
    Ok(cmd)
}

/// A `psql` invocation (`-X`, unaligned, tuples only, stop on error).
#[derive(Clone, Debug)]
pub struct Psql {
    host: String,
    port: u16,
    user: String,
    db: String,
    password: Option<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Psql {
    /// `host` may be an IP address or a Unix socket directory.
    pub fn new(host: &str, port: u16) -> Self {
        Self {
            host: host.to_owned(),
            port,
            user: "postgres".to_owned(),
            db: "postgres".to_owned(),
            password: None,
            env: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    pub fn user(mut self, user: &str) -> Self {
        self.user = user.to_owned();
        self
    }

    pub fn db(mut self, db: &str) -> Self {
        self.db = db.to_owned();
        self
    }

    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Extra environment for libpq, e.g. `PGAPPNAME`, `PGOPTIONS`,
    /// `PGSSLMODE`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn command(&self) -> Result<Command> {
        let mut cmd = libpq_command("psql")?;
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.host)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(&self.user)
            .arg("-d")
            .arg(&self.db);
        // Never prompt: a missing password must fail, not hang.
        cmd.arg("-w");
        if let Some(pw) = &self.password {
            cmd.env("PGPASSWORD", pw);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    /// Run one command string with `-c` (a single simple-Query message).
    pub fn run(&self, sql: &str) -> Result<CmdOutput> {
        let mut cmd = self.command()?;
        cmd.arg("-c").arg(sql);
        run_command(&mut cmd, None, self.timeout)
    }

    /// Run a script (several statements, meta-commands) fed on stdin.
    pub fn run_script(&self, script: &str) -> Result<CmdOutput> {
        let mut cmd = self.command()?;
        cmd.args(["-f", "-"]);
        run_command(&mut cmd, Some(script.as_bytes()), self.timeout)
    }

    /// [`Psql::run`] on tokio's blocking pool.
    pub async fn run_async(&self, sql: &str) -> Result<CmdOutput> {
        let this = self.clone();
        let sql = sql.to_owned();
        tokio::task::spawn_blocking(move || this.run(&sql)).await?
    }

    /// [`Psql::run_script`] on tokio's blocking pool.
    pub async fn run_script_async(&self, script: &str) -> Result<CmdOutput> {
        let this = self.clone();
        let script = script.to_owned();
        tokio::task::spawn_blocking(move || this.run_script(&script)).await?
    }
}

/// pgbench query protocol (`-M`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryMode {
    Simple,
    Extended,
    Prepared,
}

impl QueryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            QueryMode::Simple => "simple",
            QueryMode::Extended => "extended",
            QueryMode::Prepared => "prepared",
        }
    }
}

/// How long a pgbench run lasts.
#[derive(Clone, Copy, Debug)]
pub enum Length {
    /// `-T seconds`
    Seconds(u32),
    /// `-t transactions` per client
    Transactions(u32),
}

/// A pgbench target and credentials.
#[derive(Clone, Debug)]
pub struct Pgbench {
    host: String,
    port: u16,
    user: String,
    password: String,
    db: String,
    select_only: bool,
    /// A custom script (`-f`) run instead of the built-in ones.
    script: Option<PathBuf>,
    /// Extra environment, e.g. `PGSSLMODE`.
    env: Vec<(String, String)>,
}

/// Parsed summary of a pgbench run.
#[derive(Clone, Debug)]
pub struct PgbenchResult {
    /// "number of transactions actually processed"
    pub processed: u64,
    /// "number of failed transactions" (0 when pgbench does not print it)
    pub failed: u64,
    /// tps, excluding connection time
    pub tps: f64,
    /// Whether pgbench exited 0 (it exits 2 when a client aborted).
    pub status_ok: bool,
    /// Full output, for messages.
    pub output: CmdOutput,
}

impl Pgbench {
    pub fn new(host: &str, port: u16, user: &str, password: &str, db: &str) -> Self {
        Self {
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            password: password.to_owned(),
            db: db.to_owned(),
            select_only: false,
            script: None,
            env: Vec::new(),
        }
    }

    /// Set an environment variable for pgbench (libpq reads `PGSSLMODE` and the like).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Run the custom script `script` (`-f`) instead of a built-in one.
    pub fn script(mut self, script: &Path) -> Self {
        self.script = Some(script.to_owned());
        self
    }

    /// Run the built-in select-only script (`-S`: autocommit SELECTs, no transaction
    /// blocks) instead of TPC-B.
    pub fn select_only(mut self) -> Self {
        self.select_only = true;
        self
    }

    fn command(&self) -> Result<Command> {
        let mut cmd = libpq_command("pgbench")?;
        cmd.arg("-h")
            .arg(&self.host)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(&self.user)
            .env("PGPASSWORD", &self.password)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        Ok(cmd)
    }

    /// `pgbench -i -s scale` (quiet).
    pub fn init(&self, scale: u32) -> Result<()> {
        let mut cmd = self.command()?;
        cmd.args(["-i", "-q", "-s", &scale.to_string()]).arg(&self.db);
        run_command(&mut cmd, None, Duration::from_secs(300))?.ensure_success()?;
        Ok(())
    }

    /// Run the built-in TPC-B-like script (or select-only, see [`Pgbench::select_only`], or
    /// a custom one, see [`Pgbench::script`])
    /// with `clients` connections and `jobs` threads, without the initial vacuum (`-n`).
    pub fn run(&self, mode: QueryMode, clients: u32, jobs: u32, length: Length) -> Result<PgbenchResult> {
        let mut cmd = self.command()?;
        if self.select_only {
            cmd.arg("-S");
        }
        if let Some(script) = &self.script {
            cmd.arg("-f").arg(script);
        }
        cmd.args([
            "-n",
            "-M",
            mode.as_str(),
            "-c",
            &clients.to_string(),
            "-j",
            &jobs.to_string(),
        ]);
        let limit = match length {
            Length::Seconds(s) => {
                cmd.args(["-T", &s.to_string()]);
                Duration::from_secs(u64::from(s) * 4 + 120)
            }
            Length::Transactions(t) => {
                cmd.args(["-t", &t.to_string()]);
                Duration::from_secs(600)
            }
        };
        cmd.arg(&self.db);
        let output = run_command(&mut cmd, None, limit)?;
        parse_pgbench(output)
    }

    /// [`Pgbench::run`] on tokio's blocking pool.
    pub async fn run_async(
        &self,
        mode: QueryMode,
        clients: u32,
        jobs: u32,
        length: Length,
    ) -> Result<PgbenchResult> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.run(mode, clients, jobs, length)).await?
    }
}

/// Parse pgbench's summary.
pub fn parse_pgbench(output: CmdOutput) -> Result<PgbenchResult> {
    let mut processed = None;
    let mut failed = 0;
    let mut tps = None;
    for line in output.stdout.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
            // "1234" with -T, "1234/1280" with -t
            let n = rest.trim().split('/').next().unwrap_or("").trim();
            processed = n.parse::<u64>().ok();
        } else if let Some(rest) = line.strip_prefix("number of failed transactions:") {
            failed = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(u64::MAX);
        } else if let Some(rest) = line.strip_prefix("tps =") {
            tps = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    let Some(processed) = processed else {
        bail!("{}", output.describe("could not find a pgbench summary"));
    };
    Ok(PgbenchResult {
        processed,
        failed,
        tps: tps.unwrap_or(0.0),
        status_ok: output.status_ok,
        output,
    })
}

/// Where a third-party client connects.
#[derive(Clone, Debug)]
pub struct ClientTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub db: String,
}

/// Outcome reported by a client script: its last stdout line is
/// `RESULT ok=<n> errors=<n>`.
#[derive(Clone, Debug)]
pub struct ClientReport {
    pub ok: u64,
    pub errors: u64,
    pub output: CmdOutput,
}

impl ClientReport {
    /// The `ports=<port>:<n>,...` of the script's RESULT line (read-your-writes mode): how
    /// many reads each server port answered.
    pub fn ports(&self) -> std::collections::BTreeMap<u16, u64> {
        self.output
            .stdout
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("RESULT "))
            .and_then(|r| r.split_whitespace().find_map(|kv| kv.strip_prefix("ports=")))
            .map(|list| {
                list.split(',')
                    .filter_map(|pn| {
                        let (p, n) = pn.split_once(':')?;
                        Some((p.parse().ok()?, n.parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The third-party drivers exercised by `tests/clients/`.
#[derive(Clone, Copy, Debug)]
pub enum Driver {
    /// psycopg 3 in `<workspace>/.venv` (override: `SWITCHYARD_PYTHON`).
    Psycopg,
    /// node-postgres in `tests/clients/node/node_modules`.
    NodePg,
    /// pgjdbc from `/usr/share/java/postgresql.jar` (override:
    /// `SWITCHYARD_JDBC_JAR`), run with the single-file source launcher.
    Jdbc,
}

impl Driver {
    fn command(self) -> Result<Command> {
        let clients = env::crate_dir().join("clients");
        let hint = "run `scripts/lib.sh install` (or scripts/test) to install client drivers";
        Ok(match self {
            Driver::Psycopg => {
                let python = std::env::var_os("SWITCHYARD_PYTHON")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| env::workspace_dir().join(".venv/bin/python"));
                if !python.exists() {
                    bail!("psycopg venv python not found at {}; {hint}", python.display());
                }
                let mut cmd = Command::new(python);
                cmd.arg(clients.join("python/prepared_stress.py"));
                cmd
            }
            Driver::NodePg => {
                let dir = clients.join("node");
                if !dir.join("node_modules/pg").exists() {
                    bail!("node-postgres not installed in {}; {hint}", dir.display());
                }
                let mut cmd = Command::new("node");
                cmd.arg(dir.join("prepared_stress.js")).current_dir(dir);
                cmd
            }
            Driver::Jdbc => {
                let jar = std::env::var_os("SWITCHYARD_JDBC_JAR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/usr/share/java/postgresql.jar"));
                if !jar.exists() {
                    bail!("pgjdbc jar not found at {}; {hint}", jar.display());
                }
                let mut cmd = Command::new("java");
                cmd.arg("-cp")
                    .arg(jar)
                    .arg(clients.join("java/PreparedStress.java"));
                cmd
            }
        })
    }

    /// Run the driver's stress script: `concurrency` connections, each
    /// running `transactions` transactions of several prepared statements,
    /// checking every result. Fails only if the script cannot run or
    /// reports no summary; errors are in the report for the test to assert.
    pub fn run(self, target: &ClientTarget, concurrency: u32, transactions: u32) -> Result<ClientReport> {
        self.run_with(target, concurrency, transactions, &[])
    }

    /// [`Driver::run`] with `extra` arguments for the script (e.g. the psycopg and pgjdbc
    /// scripts' read-your-writes mode: `--read-your-writes true`).
    pub fn run_with(
        self,
        target: &ClientTarget,
        concurrency: u32,
        transactions: u32,
        extra: &[&str],
    ) -> Result<ClientReport> {
        let mut cmd = self.command()?;
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        cmd.args([
            "--host",
            &target.host,
            "--port",
            &target.port.to_string(),
            "--user",
            &target.user,
            "--password",
            &target.password,
            "--dbname",
            &target.db,
            "--concurrency",
            &concurrency.to_string(),
            "--transactions",
            &transactions.to_string(),
        ]);
        cmd.args(extra);
        let output = run_command(&mut cmd, None, Duration::from_secs(300))?;
        let summary = output
            .stdout
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("RESULT "))
            .map(str::to_owned);
        let Some(summary) = summary else {
            bail!(
                "{}",
                output.describe(&format!("{self:?} client printed no RESULT line"))
            );
        };
        let field = |name: &str| -> Option<u64> {
            summary
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        let (Some(ok), Some(errors)) = (field("ok"), field("errors")) else {
            bail!(
                "{}",
                output.describe(&format!("malformed RESULT line {summary:?}"))
            );
        };
        Ok(ClientReport { ok, errors, output })
    }

    /// [`Driver::run`] on tokio's blocking pool.
    pub async fn run_async(
        self,
        target: &ClientTarget,
        concurrency: u32,
        transactions: u32,
    ) -> Result<ClientReport> {
        let target = target.clone();
        tokio::task::spawn_blocking(move || self.run(&target, concurrency, transactions)).await?
    }
}
