//! The failover load tool: N clients alternating an INSERT and a SELECT,
//! counting every error by SQLSTATE, measuring the longest stall, and
//! checking at the end that every acknowledged INSERT is in the table.
//!
//! Two drivers do the same thing: [`Load`] (tokio-postgres, in-process) and
//! [`PsycopgLoad`] (psycopg 3, `tests/clients/python/load.py`, reporting in
//! JSON). Both give a [`LoadOutcome`]; [`LoadOutcome::verify`] checks it
//! against the table on the current primary and gives a [`LoadReport`].
//!
//! What a client does, in a loop until stopped:
//!
//! - `INSERT INTO <table> (client, seq) VALUES ($1, $2)` with a new `seq`
//!   for every attempt (a failed INSERT is not retried by the client; its
//!   row may or may not exist). An id is *acknowledged* only when the
//!   INSERT's CommandComplete arrived.
//! - `SELECT coalesce(max(seq), 0) FROM <table> WHERE client = $1`; a result
//!   below the last acknowledged seq is counted as a *stale read* (not an
//!   error: a proxy may send reads to a replica).
//! - Statements run outside any transaction (autocommit), as prepared
//!   statements (tokio-postgres: named, prepared once per connection;
//!   psycopg: its default automatic preparation after 5 executions).
//!
//! Errors: a statement that fails counts once under its SQLSTATE (`57P01`,
//! `25006`, ...), or `08006` when the connection broke without one, or
//! `timeout` (client-side limit, [`LoadOptions::op_timeout`]). A connection
//! the server closed between two statements (a `FATAL 57P01` to an idle
//! backend at a fast shutdown) also counts once, under the FATAL's SQLSTATE
//! (psycopg sees that FATAL at its next statement anyway). The client
//! then drops a broken connection (or one that answered 25006, 57xxx or
//! 08xxx), reconnects and goes on. Failed connection attempts (including
//! preparing the statements) are counted apart, under their SQLSTATE or
//! `08001`, and retried every [`LoadOptions::reconnect_delay`]. Through a
//! proxy that hides a switchover, both counts must be 0.
//!
//! Stalls: per client, the longest time between two successful operations
//! (counting from the start, and to the end if the last operation was long
//! ago), with its wall-clock start and end in UTC, to set beside the
//! Patroni and PostgreSQL logs ([`crate::patroni::SwitchoverTimeline`]).
//!
//! Verification: the table has no unique constraint, so a write applied
//! twice (a retry of an INSERT that had in fact committed) shows as a
//! duplicated `(client, seq)` row instead of turning into a 23505 error
//! that would hide among the client errors. Lost writes are acknowledged
//! ids absent from the primary; `unacknowledged_present` counts rows whose
//! INSERT failed or was cut off but which committed anyway (fate unknown to
//! the client, which is legitimate).
//!
//! Endpoints: with one endpoint, clients connect there (the proxy); with
//! several, tokio-postgres and libpq try them in order with
//! `target_session_attrs=read-write`, so clients follow the primary without
//! a proxy (what libpq multi-host failover does).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::client::{describe_error, Endpoint};
use crate::cluster::roles;
use crate::env;
use crate::patroni::{clock, unix_seconds};

/// Where and how the load connects.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Number of clients (connections).
    pub clients: usize,
    /// One endpoint (a proxy), or several tried in order for a read-write
    /// server (direct multi-host failover).
    pub endpoints: Vec<Endpoint>,
    pub user: String,
    pub password: String,
    pub db: String,
    /// Client-side limit for one statement (default 30 s).
    pub op_timeout: Duration,
    /// Limit for one connection attempt, per host (default 5 s).
    pub connect_timeout: Duration,
    /// Pause between failed connection attempts (default 50 ms).
    pub reconnect_delay: Duration,
    /// Table name; default a fresh `sy_load_<pid>_<n>`.
    pub table: Option<String>,
    /// psycopg only: every other client runs its INSERT and SELECT in an explicit
    /// transaction block (`load.py --explicit-transactions`).
    pub explicit_transactions: bool,
    /// psycopg only: libpq's `sslmode` (default `prefer`).
    pub sslmode: Option<String>,
}

impl LoadOptions {
    /// `clients` clients as `app` on database `app`.
    pub fn new(endpoints: Vec<Endpoint>, clients: usize) -> Self {
        Self {
            clients,
            endpoints,
            user: roles::APP.0.to_owned(),
            password: roles::APP.1.to_owned(),
            db: roles::APP_DB.to_owned(),
            op_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            reconnect_delay: Duration::from_millis(50),
            table: None,
            explicit_transactions: false,
            sslmode: None,
        }
    }

    /// Connect as `user`/`password` to `db`.
    pub fn credentials(mut self, user: &str, password: &str, db: &str) -> Self {
        self.user = user.to_owned();
        self.password = password.to_owned();
        self.db = db.to_owned();
        self
    }

    /// tokio-postgres configuration for the clients.
    pub fn pg_config(&self) -> Config {
        let mut cfg = Config::new();
        for ep in &self.endpoints {
            cfg.host(&ep.host).port(ep.port);
        }
        cfg.user(&self.user)
            .password(&self.password)
            .dbname(&self.db)
            .application_name("switchyard-load")
            .connect_timeout(self.connect_timeout);
        if self.endpoints.len() > 1 {
            cfg.target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        cfg
    }

    fn table_name(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        self.table.clone().unwrap_or_else(|| {
            format!(
                "sy_load_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            )
        })
    }
}

/// Create the load's table through the load's own connection settings.
async fn create_table(opts: &LoadOptions, table: &str) -> Result<()> {
    let client = connect(&opts.pg_config())
        .await
        .map_err(|e| anyhow!(describe_error(&e)))
        .context("load: connecting to create the table")?;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (client int NOT NULL, seq bigint NOT NULL, \
             at timestamptz NOT NULL DEFAULT clock_timestamp()); \
             CREATE INDEX ON {table} (client, seq)"
        ))
        .await
        .map_err(|e| anyhow!("load: creating table {table}: {}", describe_error(&e)))?;
    Ok(())
}

/// Connect without printing anything when the connection ends (during a
/// failover every connection breaks; that is counted, not logged).
async fn connect(cfg: &Config) -> Result<Client, tokio_postgres::Error> {
    Ok(connect_watched(cfg).await?.0)
}

/// Why a connection ended on its own: the SQLSTATE of the server's last
/// error (a FATAL such as 57P01 that arrived between statements), if any.
type EndReason = Arc<Mutex<Option<String>>>;

async fn connect_watched(cfg: &Config) -> Result<(Client, EndReason), tokio_postgres::Error> {
    let (client, connection) = cfg.connect(NoTls).await?;
    let reason: EndReason = Arc::default();
    let slot = reason.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            let text = match e.as_db_error() {
                Some(db) => format!("{}\t{}", db.code().code(), describe_error(&e)),
                None => format!("08006\t{}", describe_error(&e)),
            };
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
        }
    });
    Ok((client, reason))
}

/// What one client did (also the JSON the psycopg variant prints).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClientOutcome {
    pub client: u32,
    pub ops_ok: u64,
    pub inserts_ok: u64,
    pub selects_ok: u64,
    /// Inclusive ranges of acknowledged `seq` values.
    pub acked: Vec<(i64, i64)>,
    /// Statement errors by SQLSTATE (`08006`: connection broke, `timeout`).
    pub errors: BTreeMap<String, u64>,
    /// Failed connection attempts by SQLSTATE (`08001` when none).
    pub connect_failures: BTreeMap<String, u64>,
    /// The first few error messages.
    pub samples: Vec<String>,
    pub connects: u64,
    pub stale_reads: u64,
    /// Longest time between two successful operations, in seconds.
    pub max_stall: f64,
    /// Its start and end, Unix seconds.
    pub stall_from: f64,
    pub stall_to: f64,
    /// Whether it was still going on when the load stopped.
    pub stall_ongoing: bool,
    /// When its last operation succeeded, Unix seconds (0 if none did): a client resumed
    /// after an event when this is later than the event.
    #[serde(default)]
    pub last_ok: f64,
}

impl ClientOutcome {
    fn ack(&mut self, seq: i64) {
        match self.acked.last_mut() {
            Some((_, end)) if *end + 1 == seq => *end = seq,
            _ => self.acked.push((seq, seq)),
        }
    }

    fn sample(&mut self, msg: String) {
        if self.samples.len() < 5 {
            self.samples.push(msg);
        }
    }

    fn acked_count(&self) -> u64 {
        self.acked.iter().map(|(a, b)| (b - a + 1) as u64).sum()
    }
}

/// Tracks the longest gap between successes.
struct StallClock {
    last: Instant,
    last_wall: SystemTime,
}

impl StallClock {
    fn new(start: Instant, start_wall: SystemTime) -> Self {
        Self {
            last: start,
            last_wall: start_wall,
        }
    }

    fn tick(&mut self, out: &mut ClientOutcome, ongoing: bool) {
        let now = Instant::now();
        let now_wall = SystemTime::now();
        let gap = now.duration_since(self.last).as_secs_f64();
        if gap > out.max_stall {
            out.max_stall = gap;
            out.stall_from = unix_seconds(self.last_wall);
            out.stall_to = unix_seconds(now_wall);
            out.stall_ongoing = ongoing;
        }
        self.last = now;
        self.last_wall = now_wall;
    }
}

/// The SQLSTATE to count a failed statement under.
fn error_code(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.code().code().to_owned(),
        None => "08006".to_owned(),
    }
}

/// Whether to drop the connection after this error and reconnect.
fn must_reconnect(code: &str, client: &Client) -> bool {
    client.is_closed()
        || code == "25006"
        || code.starts_with("57")
        || code.starts_with("08")
        || code == "timeout"
}

/// The tokio-postgres load, running until [`Load::finish`].
pub struct Load {
    opts: LoadOptions,
    table: String,
    stop: Arc<AtomicBool>,
    ops_ok: Arc<AtomicU64>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<ClientOutcome>>,
}

impl Load {
    /// Create a fresh table and start the clients. The first connection
    /// (for the table) must succeed; clients then connect on their own.
    pub async fn start(opts: LoadOptions) -> Result<Self> {
        if opts.endpoints.is_empty() || opts.clients == 0 {
            bail!("load: needs at least one endpoint and one client");
        }
        let table = opts.table_name();
        create_table(&opts, &table).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let ops_ok = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let tasks = (0..opts.clients)
            .map(|i| {
                tokio::spawn(run_client(
                    i as u32,
                    opts.clone(),
                    table.clone(),
                    stop.clone(),
                    ops_ok.clone(),
                    started,
                    started_wall,
                ))
            })
            .collect();
        Ok(Self {
            opts,
            table,
            stop,
            ops_ok,
            started,
            tasks,
        })
    }

    /// Run `opts` for `duration`, then stop (no verification).
    pub async fn run_for(opts: LoadOptions, duration: Duration) -> Result<LoadOutcome> {
        let load = Self::start(opts).await?;
        tokio::time::sleep(duration).await;
        load.stop().await
    }

    /// Successful operations so far, all clients together (to see that
    /// work resumed after an event).
    pub fn ops_ok(&self) -> u64 {
        self.ops_ok.load(Ordering::Relaxed)
    }

    /// The table the clients write to.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Stop the clients (each finishes the statement it is running, within
    /// [`LoadOptions::op_timeout`]) and collect what they did.
    pub async fn stop(self) -> Result<LoadOutcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut clients = Vec::new();
        for t in self.tasks {
            clients.push(t.await.context("load client task")?);
        }
        Ok(LoadOutcome {
            driver: "tokio-postgres".to_owned(),
            table: self.table,
            duration: self.started.elapsed().as_secs_f64(),
            clients,
            opts: Some(self.opts),
        })
    }

    /// Stop, then verify against `primary` (see [`LoadOutcome::verify`]).
    pub async fn finish(self, primary: &Endpoint) -> Result<LoadReport> {
        self.stop().await?.verify(primary).await
    }
}

struct Conn {
    client: Client,
    ended: EndReason,
    insert: Statement,
    select: Statement,
}

async fn open(cfg: &Config, table: &str, timeout: Duration) -> Result<Conn, String> {
    let fut = async {
        let (client, ended) = connect_watched(cfg).await.map_err(|e| {
            (
                e.as_db_error()
                    .map_or("08001".to_owned(), |d| d.code().code().to_owned()),
                describe_error(&e),
            )
        })?;
        let prep = |sql: String| {
            let client = &client;
            async move {
                client
                    .prepare(&sql)
                    .await
                    .map_err(|e| (error_code(&e), describe_error(&e)))
            }
        };
        let insert = prep(format!("INSERT INTO {table} (client, seq) VALUES ($1, $2)")).await?;
        let select = prep(format!(
            "SELECT coalesce(max(seq), 0)::bigint FROM {table} WHERE client = $1"
        ))
        .await?;
        Ok::<_, (String, String)>(Conn {
            client,
            ended,
            insert,
            select,
        })
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err((code, msg))) => Err(format!("{code}\t{msg}")),
        Err(_) => Err(format!("08001\tconnecting took over {timeout:?}")),
    }
}

async fn run_client(
    id: u32,
    opts: LoadOptions,
    table: String,
    stop: Arc<AtomicBool>,
    ops_ok: Arc<AtomicU64>,
    started: Instant,
    started_wall: SystemTime,
) -> ClientOutcome {
    let cfg = opts.pg_config();
    let mut out = ClientOutcome {
        client: id,
        ..Default::default()
    };
    let mut stall = StallClock::new(started, started_wall);
    let mut conn: Option<Conn> = None;
    let mut seq: i64 = 0;
    let mut last_acked: i64 = 0;
    let mut insert_next = true;
    // Connect timeout covers every host in turn, plus preparing.
    let connect_limit = opts.connect_timeout * (opts.endpoints.len() as u32) + opts.op_timeout;
    while !stop.load(Ordering::Relaxed) {
        if let Some(c) = conn.take_if(|c| c.client.is_closed()) {
            // The server (or a proxy) closed the connection between two
            // statements: a client with a pool of its own would see that
            // error on its next statement, so it counts as one.
            let ended = c.ended.lock().unwrap_or_else(|p| p.into_inner()).take();
            let ended = ended.unwrap_or_else(|| "08006\tconnection closed".to_owned());
            let (code, msg) = ended.split_once('\t').unwrap_or(("08006", &ended));
            *out.errors.entry(code.to_owned()).or_default() += 1;
            out.sample(format!("client {id} between statements: {msg}"));
        }
        let c = match conn.as_ref() {
            Some(c) => c,
            None => match open(&cfg, &table, connect_limit).await {
                Ok(c) => {
                    out.connects += 1;
                    conn.insert(c)
                }
                Err(e) => {
                    let (code, msg) = e.split_once('\t').unwrap_or(("08001", &e));
                    *out.connect_failures.entry(code.to_owned()).or_default() += 1;
                    out.sample(format!("client {id} connect: {msg}"));
                    tokio::time::sleep(opts.reconnect_delay).await;
                    conn = None;
                    continue;
                }
            },
        };
        let result = if insert_next {
            seq += 1;
            tokio::time::timeout(
                opts.op_timeout,
                c.client.execute(&c.insert, &[&(id as i32), &seq]),
            )
            .await
            .map(|r| r.map(|_| None))
        } else {
            tokio::time::timeout(opts.op_timeout, c.client.query_one(&c.select, &[&(id as i32)]))
                .await
                .map(|r| r.map(|row| Some(row.get::<_, i64>(0))))
        };
        match result {
            Ok(Ok(read)) => {
                stall.tick(&mut out, false);
                out.last_ok = unix_seconds(SystemTime::now());
                out.ops_ok += 1;
                ops_ok.fetch_add(1, Ordering::Relaxed);
                match read {
                    None => {
                        out.inserts_ok += 1;
                        out.ack(seq);
                        last_acked = seq;
                    }
                    Some(max) => {
                        out.selects_ok += 1;
                        if max < last_acked {
                            out.stale_reads += 1;
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                let code = error_code(&e);
                let what = if insert_next { "INSERT" } else { "SELECT" };
                out.sample(format!("client {id} {what}: {}", describe_error(&e)));
                let reconnect = must_reconnect(&code, &c.client);
                *out.errors.entry(code).or_default() += 1;
                if reconnect {
                    conn = None;
                }
            }
            Err(_) => {
                *out.errors.entry("timeout".to_owned()).or_default() += 1;
                out.sample(format!("client {id}: no answer within {:?}", opts.op_timeout));
                conn = None;
            }
        }
        insert_next = !insert_next;
    }
    stall.tick(&mut out, true);
    out
}

/// Everything the clients did, before verification.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadOutcome {
    /// `tokio-postgres` or `psycopg`.
    pub driver: String,
    pub table: String,
    /// Seconds from start to stop.
    pub duration: f64,
    pub clients: Vec<ClientOutcome>,
    /// Credentials for the verification (not part of the JSON).
    #[serde(skip)]
    pub opts: Option<LoadOptions>,
}

impl LoadOutcome {
    /// Read the table on `primary` (with the load's credentials) and compare
    /// it with what the clients were told.
    pub async fn verify(self, primary: &Endpoint) -> Result<LoadReport> {
        let opts = self
            .opts
            .clone()
            .ok_or_else(|| anyhow!("load outcome has no connection settings"))?;
        let client = connect(&primary.config(&opts.user, &opts.password, &opts.db))
            .await
            .map_err(|e| anyhow!(describe_error(&e)))
            .with_context(|| format!("load: connecting to {} to verify", primary.addr()))?;
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(|e| anyhow!(describe_error(&e)))?
            .get(0);
        if in_recovery {
            bail!(
                "load: {} is not a primary; verify against the primary",
                primary.addr()
            );
        }
        let rows = client
            .query(
                &format!(
                    "SELECT client, seq, count(*) FROM {} GROUP BY client, seq",
                    self.table
                ),
                &[],
            )
            .await
            .map_err(|e| anyhow!("load: reading {}: {}", self.table, describe_error(&e)))?;
        let mut present: HashMap<(i32, i64), i64> = HashMap::new();
        for r in &rows {
            present.insert((r.get(0), r.get(1)), r.get(2));
        }
        Ok(self.compare(&present))
    }

    fn compare(self, present: &HashMap<(i32, i64), i64>) -> LoadReport {
        let mut report = LoadReport {
            driver: self.driver.clone(),
            table: self.table.clone(),
            clients: self.clients.len(),
            duration: Duration::from_secs_f64(self.duration.max(0.0)),
            per_client: self.clients.clone(),
            ..Default::default()
        };
        let mut acked_ids = std::collections::HashSet::new();
        for c in &self.clients {
            report.ops_ok += c.ops_ok;
            report.inserts_acked += c.acked_count();
            report.stale_reads += c.stale_reads;
            report.connects += c.connects;
            for (k, v) in &c.errors {
                *report.errors.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &c.connect_failures {
                *report.connect_failures.entry(k.clone()).or_default() += v;
            }
            for s in &c.samples {
                if report.samples.len() < 10 {
                    report.samples.push(s.clone());
                }
            }
            report.stalls.push(Stall {
                client: c.client,
                seconds: c.max_stall,
                from: c.stall_from,
                to: c.stall_to,
                ongoing: c.stall_ongoing,
            });
            for &(a, b) in &c.acked {
                for seq in a..=b {
                    let id = (c.client as i32, seq);
                    acked_ids.insert(id);
                    if !present.contains_key(&id) {
                        report.lost += 1;
                        if report.lost_examples.len() < 10 {
                            report.lost_examples.push(id);
                        }
                    }
                }
            }
        }
        for (&id, &n) in present {
            if n > 1 {
                report.duplicated += (n - 1) as u64;
                if report.duplicated_examples.len() < 10 {
                    report.duplicated_examples.push(id);
                }
            }
            if !acked_ids.contains(&id) {
                report.unacknowledged_present += 1;
            }
        }
        report.rows = present.values().map(|&n| n as u64).sum();
        report
    }
}

/// One client's longest stall.
#[derive(Clone, Debug, Default)]
pub struct Stall {
    pub client: u32,
    pub seconds: f64,
    /// Unix seconds.
    pub from: f64,
    pub to: f64,
    pub ongoing: bool,
}

/// The verified result of a load run.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub driver: String,
    pub table: String,
    pub clients: usize,
    pub duration: Duration,
    pub ops_ok: u64,
    pub inserts_acked: u64,
    /// Statement errors by SQLSTATE.
    pub errors: BTreeMap<String, u64>,
    /// Failed connection attempts by SQLSTATE.
    pub connect_failures: BTreeMap<String, u64>,
    /// First error messages.
    pub samples: Vec<String>,
    /// Each client's longest stall.
    pub stalls: Vec<Stall>,
    /// Acknowledged INSERTs absent from the primary.
    pub lost: u64,
    pub lost_examples: Vec<(i32, i64)>,
    /// Extra copies of ids present more than once.
    pub duplicated: u64,
    pub duplicated_examples: Vec<(i32, i64)>,
    /// Rows whose INSERT the client saw fail (or never saw answered).
    pub unacknowledged_present: u64,
    pub stale_reads: u64,
    /// Connections opened, all clients together (equal to `clients` when
    /// no client ever had to reconnect).
    pub connects: u64,
    /// Rows in the table.
    pub rows: u64,
    /// What each client did, for allowances per client
    /// ([`crate::tolerance::Allowance`]).
    pub per_client: Vec<ClientOutcome>,
}

impl LoadReport {
    /// Statement errors, all SQLSTATEs together.
    pub fn statement_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Failed connection attempts, all together.
    pub fn failed_connects(&self) -> u64 {
        self.connect_failures.values().sum()
    }

    /// Every error a client saw: statements and connection attempts.
    pub fn total_errors(&self) -> u64 {
        self.statement_errors() + self.failed_connects()
    }

    /// Statement errors with this SQLSTATE.
    pub fn errors_with(&self, code: &str) -> u64 {
        self.errors.get(code).copied().unwrap_or(0)
    }

    /// The longest stall over all clients.
    pub fn max_stall(&self) -> Option<&Stall> {
        self.stalls.iter().max_by(|a, b| a.seconds.total_cmp(&b.seconds))
    }

    /// The four lines a person reads first (`switchyard-load` and `scripts/demo --tour` print
    /// them after the full report): client errors by SQLSTATE, lost and duplicated writes,
    /// the longest stall, the operations done.
    pub fn summary(&self) -> String {
        let mut codes = self.errors.clone();
        for (k, v) in &self.connect_failures {
            *codes.entry(format!("{k} (connect)")).or_default() += v;
        }
        let stall = self.max_stall().map_or(0.0, |s| s.seconds);
        format!(
            "client errors: {}{}\nlost acknowledged writes: {} (duplicated: {})\nlongest stall: {:.3} s\n\
             operations ok: {} in {:.1} s",
            self.total_errors(),
            if codes.is_empty() {
                String::new()
            } else {
                format!(" ({})", counts(&codes))
            },
            self.lost,
            self.duplicated,
            stall,
            self.ops_ok,
            self.duration.as_secs_f64()
        )
    }

    /// Whether the run was clean: no client saw an error, no acknowledged write is missing
    /// or doubled, and no read missed the client's own acknowledged write.
    pub fn clean(&self) -> bool {
        self.total_errors() == 0 && self.lost == 0 && self.duplicated == 0 && self.stale_reads == 0
    }
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} x {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "load ({}, {} clients, {:.1} s, table {}): {} operations ok, {} INSERTs acknowledged",
            self.driver,
            self.clients,
            self.duration.as_secs_f64(),
            self.table,
            self.ops_ok,
            self.inserts_acked
        )?;
        writeln!(
            f,
            "  statement errors: {} ({})",
            self.statement_errors(),
            counts(&self.errors)
        )?;
        writeln!(
            f,
            "  failed connects:  {} ({})",
            self.failed_connects(),
            counts(&self.connect_failures)
        )?;
        for s in &self.samples {
            writeln!(f, "    {s}")?;
        }
        writeln!(
            f,
            "  connections opened: {} ({} reconnections)",
            self.connects,
            self.connects.saturating_sub(self.clients as u64)
        )?;
        if let Some(m) = self.max_stall() {
            writeln!(
                f,
                "  longest stall: {:.3} s (client {}, {} -> {} UTC{})",
                m.seconds,
                m.client,
                clock(m.from),
                clock(m.to),
                if m.ongoing {
                    ", still stalled at the end"
                } else {
                    ""
                }
            )?;
            let per: Vec<String> = self.stalls.iter().map(|s| format!("{:.3}", s.seconds)).collect();
            writeln!(f, "  longest stall per client (s): {}", per.join(" "))?;
        }
        writeln!(
            f,
            "  writes: {} rows, {} lost{}, {} duplicated{}, {} unacknowledged but committed",
            self.rows,
            self.lost,
            if self.lost_examples.is_empty() {
                String::new()
            } else {
                format!(" (e.g. {:?})", self.lost_examples)
            },
            self.duplicated,
            if self.duplicated_examples.is_empty() {
                String::new()
            } else {
                format!(" (e.g. {:?})", self.duplicated_examples)
            },
            self.unacknowledged_present
        )?;
        write!(f, "  stale reads: {}", self.stale_reads)
    }
}

/// The psycopg 3 variant: `tests/clients/python/load.py` run by the psycopg
/// venv's python (`SWITCHYARD_PYTHON`, else `<workspace>/.venv/bin/python`).
/// It runs until [`PsycopgLoad::stop`] closes its stdin, then prints a JSON
/// [`LoadOutcome`] as its last stdout line.
pub struct PsycopgLoad {
    opts: LoadOptions,
    table: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// The psycopg venv's python.
pub fn python() -> Result<PathBuf> {
    let python = std::env::var_os("SWITCHYARD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| env::workspace_dir().join(".venv/bin/python"));
    if !python.exists() {
        bail!(
            "psycopg venv python not found at {}; run `scripts/lib.sh install`",
            python.display()
        );
    }
    Ok(python)
}

impl PsycopgLoad {
    /// Create a fresh table (with tokio-postgres) and start the script.
    pub async fn start(opts: LoadOptions) -> Result<Self> {
        if opts.endpoints.is_empty() || opts.clients == 0 {
            bail!("load: needs at least one endpoint and one client");
        }
        let table = opts.table_name();
        create_table(&opts, &table).await?;
        let hosts: Vec<String> = opts.endpoints.iter().map(Endpoint::addr).collect();
        let mut cmd = Command::new(python()?);
        cmd.arg(env::crate_dir().join("clients/python/load.py"))
            .arg("--hosts")
            .arg(hosts.join(","))
            .args([
                "--user",
                &opts.user,
                "--password",
                &opts.password,
                "--dbname",
                &opts.db,
            ])
            .args(["--clients", &opts.clients.to_string(), "--table", &table])
            .args([
                "--op-timeout",
                &opts.op_timeout.as_secs_f64().to_string(),
                "--connect-timeout",
                &opts.connect_timeout.as_secs().max(1).to_string(),
                "--reconnect-delay",
                &opts.reconnect_delay.as_secs_f64().to_string(),
            ])
            .args(opts.explicit_transactions.then_some("--explicit-transactions"))
            .args(opts.sslmode.iter().flat_map(|mode| ["--sslmode", mode]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().context("spawning tests/clients/python/load.py")?;
        let stdin = child.stdin.take();
        let mut out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Ok(Self {
            opts,
            table,
            child,
            stdin,
            stdout: Some(stdout),
            stderr: Some(stderr),
        })
    }

    /// The table the clients write to.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Close the script's stdin (it stops, each client after its current
    /// statement) and parse its report.
    pub async fn stop(mut self) -> Result<LoadOutcome> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let limit = self.opts.op_timeout + Duration::from_secs(30);
        let mut this = self;
        tokio::task::spawn_blocking(move || this.collect(limit)).await?
    }

    fn collect(&mut self, limit: Duration) -> Result<LoadOutcome> {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.take().and_then(|h| h.join().ok()).unwrap_or_default();
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        let Some(json) = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')) else {
            bail!(
                "load.py ended with {status} without a JSON report\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            );
        };
        let mut outcome: LoadOutcome = serde_json::from_str(json)
            .with_context(|| format!("parsing load.py's report: {json}\n--- stderr ---\n{stderr}"))?;
        outcome.opts = Some(self.opts.clone());
        Ok(outcome)
    }

    /// Stop, then verify against `primary`.
    pub async fn finish(self, primary: &Endpoint) -> Result<LoadReport> {
        self.stop().await?.verify(primary).await
    }
}

impl Drop for PsycopgLoad {
    fn drop(&mut self) {
        // Closing stdin stops the script; kill it if it is still there.
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_acknowledged_with_present() {
        let mut c = ClientOutcome {
            client: 1,
            ..Default::default()
        };
        for seq in [1, 2, 3, 5] {
            c.ack(seq);
        }
        assert_eq!(c.acked, vec![(1, 3), (5, 5)]);
        let outcome = LoadOutcome {
            driver: "test".into(),
            table: "t".into(),
            duration: 1.0,
            clients: vec![c],
            opts: None,
        };
        // 2 is lost, 3 is duplicated, 4 committed unacknowledged.
        let present = HashMap::from([((1, 1), 1), ((1, 3), 2), ((1, 4), 1), ((1, 5), 1)]);
        let r = outcome.compare(&present);
        assert_eq!((r.lost, r.duplicated, r.unacknowledged_present), (1, 1, 1));
        assert_eq!(r.lost_examples, vec![(1, 2)]);
        assert_eq!(r.inserts_acked, 4);
        assert_eq!(r.rows, 5);
    }
}
