//! Connecting to a server or the proxy: an [`Endpoint`] (host and port) and
//! tokio-postgres helpers, plus SQLSTATE assertions with readable failures.
//!
//! Tests talk to an `Endpoint` rather than to the proxy directly, so the same
//! test can run against plain PostgreSQL (see [`crate::TestBed`]) to check
//! that the test itself is right.

use std::fmt::Debug;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::error::DbError;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::tools::{ClientTarget, Pgbench, Psql};

/// A PostgreSQL wire protocol endpoint on TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn new(host: &str, port: u16) -> Self {
        Self {
            host: host.to_owned(),
            port,
        }
    }

    /// `host:port`, for raw sockets and messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// tokio-postgres configuration (no TLS, 10 s connect timeout).
    pub fn config(&self, user: &str, password: &str, db: &str) -> Config {
        let mut cfg = Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(user)
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        if !password.is_empty() {
            cfg.password(password);
        }
        cfg
    }

    /// Connect, failing with a message that says who connected where.
    pub async fn connect(&self, user: &str, password: &str, db: &str) -> Result<Client> {
        connect(&self.config(user, password, db))
            .await
            .map_err(|e| anyhow::anyhow!(describe_error(&e)))
            .with_context(|| format!("connecting to {} as {user} (database {db})", self.addr()))
    }

    /// Connect as `app` to database `app`.
    pub async fn connect_app(&self) -> Result<Client> {
        self.connect("app", "app", "app").await
    }

    /// `psql` against this endpoint.
    pub fn psql(&self, user: &str, password: &str, db: &str) -> Psql {
        Psql::new(&self.host, self.port)
            .user(user)
            .password(password)
            .db(db)
    }

    /// `pgbench` against this endpoint.
    pub fn pgbench(&self, user: &str, password: &str, db: &str) -> Pgbench {
        Pgbench::new(&self.host, self.port, user, password, db)
    }

    /// Target for the third-party client scripts.
    pub fn client_target(&self, user: &str, password: &str, db: &str) -> ClientTarget {
        ClientTarget {
            host: self.host.clone(),
            port: self.port,
            user: user.to_owned(),
            password: password.to_owned(),
            db: db.to_owned(),
        }
    }
}

/// Connect and drive the connection on a background task.
pub async fn connect(cfg: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = cfg.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("tokio-postgres connection ended with error: {e}");
        }
    });
    Ok(client)
}

/// Connect and also receive the connection's asynchronous messages
/// (notifications from LISTEN, notices).
pub async fn connect_with_messages(
    cfg: &Config,
) -> Result<(Client, mpsc::UnboundedReceiver<AsyncMessage>), tokio_postgres::Error> {
    let (client, mut connection) = cfg.connect(NoTls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(m) => {
                    let _ = tx.send(m);
                }
                Err(e) => {
                    eprintln!("tokio-postgres connection ended with error: {e}");
                    break;
                }
            }
        }
    });
    Ok((client, rx))
}

/// Well-behaved clients running in the background while a test does
/// something nasty: each of `clients` connections loops over a transaction
/// (`BEGIN; SELECT $1; SELECT $1 + 1; COMMIT`) checking its results, and
/// counts successes and failures until stopped.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

/// What a [`Load`] did.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: u64,
    pub errors: Vec<String>,
}

impl Load {
    /// Connect `clients` connections to `ep` as `app` and start looping.
    /// Fails if a connection cannot be made.
    pub async fn start(ep: &Endpoint, clients: usize) -> Result<Self> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for id in 0..clients {
            let client = ep.connect_app().await?;
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = 0u64;
                let mut errors = Vec::new();
                let mut i: i32 = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && errors.len() < 20 {
                    i = i.wrapping_add(1) % 1_000_000;
                    let r: Result<(), String> = async {
                        client
                            .batch_execute("BEGIN")
                            .await
                            .map_err(|e| describe_error(&e))?;
                        let a: i32 = client
                            .query_one("SELECT $1::int", &[&i])
                            .await
                            .map_err(|e| describe_error(&e))?
                            .get(0);
                        let b: i32 = client
                            .query_one("SELECT $1::int + 1", &[&i])
                            .await
                            .map_err(|e| describe_error(&e))?
                            .get(0);
                        client
                            .batch_execute("COMMIT")
                            .await
                            .map_err(|e| describe_error(&e))?;
                        if (a, b) != (i, i + 1) {
                            return Err(format!("got ({a}, {b}), expected ({i}, {})", i + 1));
                        }
                        Ok(())
                    }
                    .await;
                    match r {
                        Ok(()) => ok += 1,
                        Err(e) => errors.push(format!("load client {id}: {e}")),
                    }
                    tokio::task::yield_now().await;
                }
                (ok, errors)
            }));
        }
        Ok(Self { stop, tasks })
    }

    /// Stop and collect the results.
    pub async fn finish(self) -> Result<LoadReport> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut report = LoadReport::default();
        for t in self.tasks {
            let (ok, errors) = t.await?;
            report.ok += ok;
            report.errors.extend(errors);
        }
        Ok(report)
    }
}

/// The SQLSTATE of a server error, if it is one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|d| d.code().code())
}

/// One-line description of a tokio-postgres error: SQLSTATE and message for
/// server errors, the full cause chain otherwise.
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!(
            "{} SQLSTATE {}: {}",
            db.severity(),
            db.code().code(),
            db.message()
        );
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" (detail: {detail})"));
        }
        s
    } else {
        let mut s = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            s.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        s
    }
}

/// Assert that `result` is a server error whose SQLSTATE is one of
/// `expected` (entries of two characters match a whole class, e.g. "53").
/// Returns the error for further checks.
pub fn expect_sqlstate<T: Debug>(
    result: Result<T, tokio_postgres::Error>,
    expected: &[&str],
    what: &str,
) -> Result<DbError> {
    match result {
        Ok(v) => bail!("{what}: expected an error with SQLSTATE {expected:?}, but it succeeded: {v:?}"),
        Err(e) => match e.as_db_error() {
            Some(db) if sqlstate_matches(db.code().code(), expected) => Ok(db.clone()),
            _ => bail!(
                "{what}: expected an error with SQLSTATE {expected:?}, got: {}",
                describe_error(&e)
            ),
        },
    }
}

/// Whether `code` equals one of `expected` or lies in one of its classes.
pub fn sqlstate_matches(code: &str, expected: &[&str]) -> bool {
    expected
        .iter()
        .any(|e| code == *e || (e.len() == 2 && code.starts_with(e)))
}

/// Like `?` for tokio-postgres results, with the SQLSTATE in the message.
pub trait PgResultExt<T> {
    fn ctx(self, what: &str) -> Result<T>;
}

impl<T> PgResultExt<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| anyhow::anyhow!("{what}: {}", describe_error(&e)))
    }
}

/// Client backends of user `app` on database `app` that `dba`'s server has now (its
/// background processes and `dba` itself, a superuser's, not counted).
pub async fn app_backends(dba: &Client) -> Result<i64> {
    Ok(dba
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND datname = 'app' \
             AND backend_type = 'client backend'",
            &[],
        )
        .await
        .ctx("counting app's backends")?
        .get(0))
}

/// Waits (up to 10 s) until a backend of `dba`'s server runs exactly `sql` (state
/// `active` in `pg_stat_activity`) and, when `sql` calls `pg_sleep`, is in that sleep
/// (wait event `PgSleep`); returns its pid: a test's DBA finding the statement to cancel
/// or terminate. The sleep matters: Postgres shows a statement as active from the moment
/// it starts parsing it, so a backend terminated then has not yet answered the statements
/// pipelined before it in the same batch (their ParseComplete/BindComplete).
pub async fn backend_running(dba: &Client, sql: &str) -> Result<i32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let sleeps = sql.contains("pg_sleep");
    loop {
        let row = dba
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE query = $1 AND state = 'active' \
                 AND (NOT $2 OR wait_event IS NOT DISTINCT FROM 'PgSleep')",
                &[&sql, &sleeps],
            )
            .await?;
        if let Some(row) = row {
            return Ok(row.get(0));
        }
        if std::time::Instant::now() >= deadline {
            bail!("{sql:?} did not start within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many backends are running `sql` at this moment (`pg_stat_activity`, state active).
pub async fn backends_running(dba: &Client, sql: &str) -> Result<i64> {
    Ok(dba
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
            &[&sql],
        )
        .await?
        .get(0))
}
