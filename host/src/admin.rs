//! The admin console: a virtual database (`switchyard`) where users listed in `[admin]` run
//! PgBouncer-style commands with any client (`psql -d switchyard`). Simple query protocol
//! only; every answer is a result set or a command tag, never server data. `stats_users`
//! may run the `SHOW` commands only; everything else is refused with 42501.

use bytes::BytesMut;
use switchyard_protocol::backend::{self as be, ErrorFields, TransactionStatus};
use switchyard_protocol::frame::split_frame;
use switchyard_protocol::frontend::FrontendMessage;
use switchyard_protocol::sqlstate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::sync::Arc;

use crate::config::live::SetError;
use crate::net::{Peer, Stream};
use crate::plugins::{PluginReport, ReloadOutcome};
use crate::pool::DatabaseRoute;
use crate::roster::RELAXED;
use crate::session::{ConsoleRole, SessionError};
use crate::state::{ProxyState, ReloadError};
use crate::stop::Shutdown;

/// Admin commands are short; this bounds what a confused client can make us buffer.
const MAX_ADMIN_MESSAGE: usize = 64 * 1024;

const HELP: &[&str] = &[
    "SHOW HELP        this list",
    "SHOW POOLS       one row per (database, user) pool: mode, size, servers idle and in use, counters",
    "SHOW STATS       per database: transactions, queries, bytes, times in µs (totals since start; averages and p99 over the last stats_period)",
    "SHOW DATABASES   configured databases and where they route",
    "SHOW NODES       every node of every cluster: role, timeline, LSN, lag (bytes, time), reads and writes routed there, skips, probe results, Patroni's role and state",
    "SHOW CLUSTERS    every cluster: primary, failover events, clients held, requests retried, client errors, last event",
    "SHOW PLUGINS     plugins: version, hash, hooks, calls, failures, p50 call time, loaded at, last load error",
    "SHOW CLIENTS     one row per client of a pool: user, database, state (active, waiting, idle), address, times, the server it holds (link), prepared statements",
    "SHOW SERVERS     one row per server connection: user, database, state (active, idle), node, times, the client using it (link), backend pid, prepared statements",
    "SHOW CONFIG      every setting of [proxy], [pool] and [admin]: value in force, default, whether SET can change it (secrets masked)",
    "SHOW LISTS       counts: databases, users, pools, clients, servers (PgBouncer's list/items)",
    "SHOW VERSION     the proxy's version",
    "PAUSE [db]       hold new transactions (all databases, or db), wait for running ones to finish; lifts by itself after hold_timeout",
    "PAUSE NODE h:p   a planned stop of node h:p (an HA manager's before-stop hook): the switchover policy holds and drains if it is the primary",
    "RESUME [db]      let held transactions go on",
    "SWITCHOVER [h:p] hold and drain, ask Patroni (patroni_api) to switch over (to node h:p), resume on the new primary",
    "RESUME NODE h:p  release the hold (and PAUSE) of the clusters that have node h:p",
    "RECONNECT [db]   close every server connection (all databases, or db) once its transaction ends; new ones are opened",
    "RELOAD           re-read the configuration file: reload changed plugins, remove databases no longer listed, apply changed reloadable settings (as SIGHUP)",
    "KILL db          end every client of db now (FATAL 57P01, open transactions rolled back) and close its servers; db stays paused until RESUME db",
    "SET key = value  change a reloadable setting (SHOW CONFIG: changeable) until the next reload, checked as the file is",
    "SHUTDOWN         stop accepting, let clients finish their transactions within shutdown_timeout, exit (as SIGTERM)",
    "SHUTDOWN IMMEDIATE  end every client now (FATAL 57P01, open transactions rolled back) and exit",
    "TRACE ON [path]  record every hook call (inputs and decision) to path, or [trace] path, for switchyard replay",
    "TRACE OFF        stop recording hook calls",
    "SHOW TRACE       the policy trace: on or off, file, bound, records written and dropped",
];

/// A result set: column names and text rows.
struct Table {
    columns: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

/// Serves one admin client (with what `role` allows) until it disconnects, or until the proxy shuts down: a client
/// waiting for its next command then gets `FATAL 57P01` (a console session holds no
/// transaction to wait for).
pub async fn serve(
    mut stream: Stream,
    mut buf: BytesMut,
    state: &Arc<ProxyState>,
    role: ConsoleRole,
) -> Result<(), SessionError> {
    let mut out = BytesMut::new();
    let mut shutdown = state.shutdown.clone();
    loop {
        let frame = loop {
            if let Some(f) = split_frame(&mut buf, MAX_ADMIN_MESSAGE)? {
                break f;
            }
            let read = tokio::select! {
                read = stream.read_buf(&mut buf) => read.map_err(SessionError::ClientIo)?,
                _ = async { shutdown.wait_for(|stopping| *stopping).await.is_ok() } => {
                    let why = match *state.stop_request.borrow() {
                        // A console session holds nothing another process could take over.
                        Some(Shutdown::Takeover) => crate::session::UPGRADE_MESSAGE,
                        _ => "switchyard is shutting down",
                    };
                    let fatal = ErrorFields::fatal(sqlstate::ADMIN_SHUTDOWN, why);
                    be::error_response(&fatal, &mut out);
                    stream.write_all(&out).await.map_err(SessionError::ClientIo)?;
                    return Ok(());
                }
            };
            if read == 0 {
                return Ok(());
            }
        };
        match FrontendMessage::decode(&frame)? {
            FrontendMessage::Query { sql } => {
                let text = String::from_utf8_lossy(&sql);
                let command = text.trim().trim_end_matches(';').trim();
                let words: Vec<&str> = command.split_whitespace().collect();
                let first = words.first().map(|w| w.to_ascii_lowercase());
                let answer = match (first.as_deref(), &words[..]) {
                    (Some(word), _) if role == ConsoleRole::Stats && word != "show" => {
                        Err(read_only_refusal(command))
                    }
                    (Some("reload"), [_]) => reload(state).await,
                    (Some("switchover"), [_, rest @ ..]) if rest.len() <= 1 => {
                        switchover(state, rest.first().copied()).await
                    }
                    (Some("pause"), [_, node, addr]) if node.eq_ignore_ascii_case("node") => {
                        planned_stop(state, addr, &format!("PAUSE NODE {addr}")).await
                    }
                    (Some("resume"), [_, node, addr]) if node.eq_ignore_ascii_case("node") => {
                        for (cluster, _) in clusters_with_node(state, addr) {
                            if cluster.release_hold() {
                                tracing::info!(cluster = %cluster.name, node = addr, "RESUME NODE: hold released");
                            }
                        }
                        resume(databases_of_node(state, addr))
                    }
                    (Some("pause"), [_, rest @ ..]) if rest.len() <= 1 => {
                        match databases(state, rest.first().copied()) {
                            Ok(dbs) => pause(state, dbs, "PAUSE").await,
                            Err(e) => Err(e),
                        }
                    }
                    (Some("resume"), [_, rest @ ..]) if rest.len() <= 1 => {
                        databases(state, rest.first().copied()).and_then(resume)
                    }
                    (Some("trace"), [_, on, ..]) if on.eq_ignore_ascii_case("on") => {
                        // What follows `TRACE ON`, as typed (a path may hold spaces).
                        let rest = command.split_once(char::is_whitespace).map_or("", |(_, r)| r);
                        let path = rest.trim_start().get(on.len()..).unwrap_or_default().trim();
                        trace_on(state, path.trim_matches('\'')).await
                    }
                    (Some("trace"), [_, off]) if off.eq_ignore_ascii_case("off") => {
                        match state.policies.trace().stop().await {
                            Ok(()) => {
                                tracing::info!("admin TRACE OFF: policy trace stopped");
                                Ok(Answer::Tag("TRACE".into()))
                            }
                            Err(e) => Err(ErrorFields::error(
                                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                                e.to_string(),
                            )),
                        }
                    }
                    (Some("reconnect"), [_, rest @ ..]) if rest.len() <= 1 => {
                        databases(state, rest.first().copied()).map(|dbs| reconnect(state, dbs))
                    }
                    (Some("kill"), [_, db]) => databases(state, Some(db)).map(|dbs| kill(state, dbs)),
                    (Some("set"), [_, ..]) => set(state, command),
                    _ => run(command, state),
                };
                match answer {
                    Ok(Answer::Table(t, tag)) => write_table(&t, &tag, &mut out),
                    Ok(Answer::Empty) => be::empty_query_response(&mut out),
                    Ok(Answer::Tag(tag)) => be::command_complete(&tag, &mut out),
                    Err(e) => be::error_response(&e, &mut out),
                }
                be::ready_for_query(TransactionStatus::Idle, &mut out);
            }
            FrontendMessage::Terminate => return Ok(()),
            FrontendMessage::Sync => be::ready_for_query(TransactionStatus::Idle, &mut out),
            FrontendMessage::Flush => {}
            other => {
                let msg = format!(
                    "the admin console speaks the simple query protocol only (got {})",
                    FrontendMessage::tag_name(other.tag())
                );
                be::error_response(
                    &ErrorFields::error(sqlstate::FEATURE_NOT_SUPPORTED, msg),
                    &mut out,
                );
            }
        }
        stream.write_all(&out).await.map_err(SessionError::ClientIo)?;
        stream.flush().await.map_err(SessionError::ClientIo)?;
        out.clear();
    }
}

/// Why a `stats_users` user may not run `command`.
fn read_only_refusal(command: &str) -> ErrorFields {
    let verb = command
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    ErrorFields::error(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        format!("permission denied for {verb}: stats_users may run SHOW commands only"),
    )
    .with_hint("commands that change the proxy need a user listed in [admin] users")
}

enum Answer {
    Table(Table, String),
    /// A command tag alone.
    Tag(String),
    Empty,
}

fn run(command: &str, state: &ProxyState) -> Result<Answer, ErrorFields> {
    let words: Vec<String> = command.split_whitespace().map(str::to_ascii_lowercase).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let table = match words.as_slice() {
        [] => return Ok(Answer::Empty),
        ["show", "help"] => Table {
            columns: vec!["command"],
            rows: HELP.iter().map(|h| vec![h.to_string()]).collect(),
        },
        ["show", "version"] => Table {
            columns: vec!["version"],
            rows: vec![vec![format!("switchyard {}", env!("CARGO_PKG_VERSION"))]],
        },
        ["show", "pools"] => show_pools(state),
        ["show", "stats"] => show_stats(state),
        ["show", "databases"] => show_databases(state),
        ["show", "plugins"] => show_plugins(state),
        ["show", "nodes"] => show_nodes(state),
        ["show", "clusters"] => show_clusters(state),
        ["show", "clients"] => show_clients(state),
        ["show", "servers"] => show_servers(state),
        ["show", "config"] => show_config(state),
        ["show", "lists"] => show_lists(state),
        ["shutdown"] => return Ok(shutdown(state, Shutdown::Graceful)),
        ["shutdown", "immediate"] => return Ok(shutdown(state, Shutdown::Immediate)),
        ["show", "trace"] => show_trace(state),
        _ => {
            return Err(ErrorFields::error(
                sqlstate::SYNTAX_ERROR,
                format!("unknown admin command: {command}"),
            )
            .with_hint("SHOW HELP lists the commands"))
        }
    };
    let tag = if words[0] == "show" {
        "SHOW".to_string()
    } else {
        words[0].to_ascii_uppercase()
    };
    Ok(Answer::Table(table, tag))
}

/// The databases an admin command names: one, or all when none is given.
fn databases<'a>(state: &'a ProxyState, name: Option<&str>) -> Result<Targets<'a>, ErrorFields> {
    match name {
        None => Ok(databases_where(state, |_| true)),
        Some(name) => {
            let name = name.trim_matches('"');
            state
                .databases
                .get_key_value(name)
                .map(|db| vec![db])
                .ok_or_else(|| {
                    ErrorFields::error(
                        sqlstate::INVALID_CATALOG_NAME,
                        format!("database \"{name}\" does not exist"),
                    )
                })
        }
    }
}

type Targets<'a> = Vec<(&'a String, &'a DatabaseRoute)>;

/// The databases whose route satisfies `keep`, by name.
fn databases_where(state: &ProxyState, keep: impl Fn(&DatabaseRoute) -> bool) -> Targets<'_> {
    let mut dbs: Targets<'_> = state.databases.iter().filter(|(_, r)| keep(r)).collect();
    dbs.sort_by(|a, b| a.0.cmp(b.0));
    dbs
}

/// The clusters that have a node at `addr`, with its index.
fn clusters_with_node<'a>(
    state: &'a ProxyState,
    addr: &str,
) -> Vec<(&'a Arc<crate::topology::Cluster>, usize)> {
    let mut found: Vec<_> = state
        .topology
        .clusters
        .values()
        .filter_map(|c| c.nodes.iter().position(|n| n.to_string() == addr).map(|i| (c, i)))
        .collect();
    found.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    found
}

/// `PAUSE NODE h:p` (an HA manager's before-stop hook): a planned stop of that node for
/// each cluster's switchover policy (the built-in holds new transactions and drains the
/// node when it is the primary); answers once the transactions running on the held
/// clusters' databases have finished, or with an error when the hold's drain budget runs
/// out first.
async fn planned_stop(state: &Arc<ProxyState>, addr: &str, reason: &str) -> Result<Answer, ErrorFields> {
    let mut deadline = std::time::Instant::now();
    let mut held = Vec::new();
    for (cluster, node) in clusters_with_node(state, addr) {
        // A hold opens a failover event with `reason` (see `Cluster::planned_stop`).
        if let Some(hold) = cluster.planned_stop(node, reason) {
            deadline = deadline.max(hold.drain_until);
            held.push(cluster);
        }
    }
    if held.is_empty() {
        tracing::info!(
            node = addr,
            "PAUSE NODE: no switchover policy holds for this node; nothing to hold"
        );
        return Ok(Answer::Tag("PAUSE".into()));
    }
    let targets = databases_where(state, |r| held.iter().any(|c| Arc::ptr_eq(c, &r.cluster)));
    drain(state, &targets, deadline, || held.iter().all(|c| c.hold().is_none()))
        .await
        .map_err(|(busy, waited)| {
            ErrorFields::error(
                sqlstate::QUERY_CANCELED,
                format!("{reason}: {busy} transactions still running after {waited:?} (the drain budget); new ones stay held"),
            )
        })
}

/// Waits until no server of `targets`' pools is in use (their transactions finished), or
/// `released` says the hold is gone; `Err((busy, waited))` when `deadline` comes first.
async fn drain(
    state: &ProxyState,
    targets: &Targets<'_>,
    deadline: std::time::Instant,
    released: impl Fn() -> bool,
) -> Result<Answer, (usize, std::time::Duration)> {
    let started = std::time::Instant::now();
    loop {
        let busy: usize = targets
            .iter()
            .flat_map(|(db, _)| state.pools_of(db))
            .map(|p| p.counts().1)
            .sum();
        let resumed = released();
        if busy == 0 || resumed {
            tracing::info!(drained_in = ?started.elapsed(), resumed, "running transactions finished");
            return Ok(Answer::Tag("PAUSE".into()));
        }
        if std::time::Instant::now() >= deadline {
            return Err((busy, started.elapsed()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Databases whose cluster has node `addr`.
fn databases_of_node<'a>(state: &'a ProxyState, addr: &str) -> Targets<'a> {
    databases_where(state, |r| r.cluster.nodes.iter().any(|n| n.to_string() == addr))
}

/// `PAUSE`: new transactions wait; answers once the running ones have finished (their
/// servers are back in the pool), or with an error naming what is still running when the
/// pause's budget (the cluster's `hold_timeout`) runs out first.
async fn pause(state: &Arc<ProxyState>, targets: Targets<'_>, reason: &str) -> Result<Answer, ErrorFields> {
    let mut deadline = std::time::Instant::now();
    for (db, route) in &targets {
        route.cluster.incidents.begin(reason);
        let pause = route
            .pause
            .pause(route.cluster.hold_timeout, route.cluster.view().generation);
        deadline = deadline.max(pause.until);
        tracing::info!(database = %db, budget = ?route.cluster.hold_timeout, "PAUSE: holding new transactions");
    }
    drain(state, &targets, deadline, || {
        targets.iter().all(|(_, r)| r.pause.paused().is_none())
    })
    .await
    .map_err(|(busy, waited)| {
        ErrorFields::error(
            sqlstate::QUERY_CANCELED,
            format!("PAUSE: {busy} transactions still running after {waited:?}; the pause has lifted"),
        )
    })
}

/// `SWITCHOVER [host:port]`: holds new transactions on the cluster and drains it, asks
/// Patroni to switch over (to that node, or its choice), and answers once the probes have
/// confirmed the new primary (the hold lifts then).
async fn switchover(state: &Arc<ProxyState>, target: Option<&str>) -> Result<Answer, ErrorFields> {
    use crate::topology::patroni;
    let mut clusters: Vec<_> = state
        .topology
        .clusters
        .values()
        .filter(|c| c.patroni_apis.iter().any(Option::is_some))
        .filter(|c| target.is_none_or(|t| c.nodes.iter().any(|n| n.to_string() == t)))
        .collect();
    let cluster = match clusters.len() {
        1 => clusters.remove(0),
        0 => {
            return Err(ErrorFields::error(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                "SWITCHOVER needs a cluster with patroni_api set on its nodes (and containing the target node, if one is named)",
            ))
        }
        _ => {
            return Err(ErrorFields::error(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                "several clusters have Patroni: name the target node (SWITCHOVER host:port)",
            ))
        }
    };
    let primary = cluster.primary().map(|(i, _)| i);
    let api = primary
        .and_then(|p| cluster.patroni_apis[p].clone())
        .or_else(|| cluster.patroni_apis.iter().flatten().next().cloned())
        .expect("filtered on a configured API");
    let api_error =
        |e: patroni::PatroniError| ErrorFields::error(sqlstate::CONNECTION_EXCEPTION, e.to_string());
    let members = patroni::members(&api).await.map_err(api_error)?;
    let leader = members
        .iter()
        .find(|m| m.role == "leader")
        .map(|m| m.name.clone())
        .ok_or_else(|| {
            ErrorFields::error(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                "Patroni reports no leader: nothing to switch over from",
            )
        })?;
    let candidate = match target {
        Some(t) => Some(
            members
                .iter()
                .find(|m| m.addr == t)
                .map(|m| m.name.clone())
                .ok_or_else(|| {
                    ErrorFields::error(
                        sqlstate::UNDEFINED_OBJECT,
                        format!("no Patroni member has Postgres at {t}"),
                    )
                })?,
        ),
        None => None,
    };
    let dbs = databases_where(state, |r| Arc::ptr_eq(&r.cluster, cluster));
    let generation = cluster.view().generation;
    tracing::info!(cluster = %cluster.name, %leader, candidate = ?candidate, "SWITCHOVER: holding and draining");
    // A planned stop of the primary: the switchover policy holds and drains (the
    // built-in: new transactions wait, running ones finish), and resumes when the probes
    // confirm the new primary.
    if let Some(p) = primary {
        if let Err(e) = planned_stop(state, &cluster.nodes[p].to_string(), "SWITCHOVER").await {
            cluster.release_hold();
            return Err(e);
        }
    }
    match patroni::switchover(&api, &leader, candidate.as_deref()).await {
        Ok(message) => {
            let deadline = std::time::Instant::now() + cluster.hold_timeout;
            let _ =
                tokio::time::timeout_at(deadline.into(), cluster.wait_for_primary_after(generation)).await;
            let now = cluster
                .primary()
                .map_or_else(|| "none yet".to_string(), |(_, a)| a.to_string());
            // The pause lifts when a waiting transaction sees the new primary; lift it now
            // even if none is waiting.
            cluster.release_hold();
            resume(dbs)?;
            tracing::info!(cluster = %cluster.name, primary = %now, "SWITCHOVER done");
            Ok(Answer::Table(
                Table {
                    columns: vec!["cluster", "primary", "patroni"],
                    rows: vec![vec![cluster.name.clone(), now, message]],
                },
                "SWITCHOVER".into(),
            ))
        }
        Err(e) => {
            cluster.release_hold();
            resume(dbs)?;
            tracing::warn!(cluster = %cluster.name, error = %e, "SWITCHOVER failed; traffic resumed");
            Err(ErrorFields::error(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("{e}; traffic resumed on the current primary"),
            ))
        }
    }
}

/// `RESUME`: held transactions go on.
fn resume(targets: Targets<'_>) -> Result<Answer, ErrorFields> {
    for (db, route) in targets {
        if route.pause.resume() {
            tracing::info!(database = %db, "RESUME: transactions go on");
            route.cluster.incidents.end("RESUME");
        }
    }
    Ok(Answer::Tag("RESUME".into()))
}

/// `RELOAD`: one row per plugin with what the reload did, and one for configuration
/// sections that changed but apply only at restart.
async fn reload(state: &Arc<ProxyState>) -> Result<Answer, ErrorFields> {
    tracing::info!("admin RELOAD: reloading the configuration");
    let reloaded = state.reload().await.map_err(|e| {
        let sqlstate = match e {
            ReloadError::Config(_) => "F0000",
            _ => "XX000",
        };
        ErrorFields::error(sqlstate, format!("reload refused, nothing changed: {e}"))
    })?;
    let mut rows: Vec<Vec<String>> = reloaded
        .plugins
        .plugins
        .iter()
        .map(|(name, outcome)| {
            let (what, version, hash, detail) = match outcome {
                ReloadOutcome::Loaded {
                    version,
                    hash,
                    origin,
                } => ("loaded", version.clone(), hash.clone(), format!("code {origin}")),
                ReloadOutcome::Unchanged => ("unchanged", String::new(), String::new(), String::new()),
                ReloadOutcome::Failed(reason) => (
                    "failed",
                    String::new(),
                    String::new(),
                    format!("{reason}; the previous version (if any) keeps serving"),
                ),
                ReloadOutcome::Removed => (
                    "removed",
                    String::new(),
                    String::new(),
                    "built-in policies serve its hooks".to_string(),
                ),
            };
            vec![format!("plugin {name}"), what.to_string(), version, hash, detail]
        })
        .collect();
    if let Some(hba) = &reloaded.hba {
        let (what, detail) = match hba {
            Ok(count) => ("loaded", format!("{count} rules")),
            Err(e) => ("failed", format!("{e}; the rules in force stay")),
        };
        rows.push(vec![
            "auth_hba_file".into(),
            what.into(),
            String::new(),
            String::new(),
            detail,
        ]);
    }
    let databases = [
        (
            &reloaded.removed,
            "removed",
            "new logins get 3D000; its sessions end with 57P01 when they next need a server",
        ),
        (&reloaded.restored, "restored", "takes logins again"),
    ];
    for (names, outcome, detail) in databases {
        for name in names {
            rows.push(vec![
                format!("database {name}"),
                outcome.into(),
                String::new(),
                String::new(),
                detail.into(),
            ]);
        }
    }
    if !reloaded.needs_restart.is_empty() {
        rows.push(vec![
            "configuration".into(),
            "needs restart".into(),
            String::new(),
            String::new(),
            format!(
                "changed sections apply at restart: {}",
                reloaded.needs_restart.join(", ")
            ),
        ]);
    }
    let table = Table {
        columns: vec!["item", "outcome", "version", "hash", "detail"],
        rows,
    };
    Ok(Answer::Table(table, "RELOAD".into()))
}

/// `TRACE ON [path]`: records hook calls to `path`, or to `[trace] path` when none is
/// given, bounded by `[trace] max_bytes`.
async fn trace_on(state: &ProxyState, path: &str) -> Result<Answer, ErrorFields> {
    let tracer = state.policies.trace();
    let configured = tracer.configured();
    let path =
        match (path, &configured.path) {
            ("", Some(p)) => p.clone(),
            ("", None) => return Err(ErrorFields::error(
                sqlstate::INVALID_PARAMETER_VALUE,
                "TRACE ON needs a file: TRACE ON /path/to/trace.jsonl, or [trace] path in the configuration",
            )),
            (p, _) => std::path::PathBuf::from(p),
        };
    match tracer.start(&path, configured.max_bytes).await {
        Ok(()) => {
            tracing::info!(path = %path.display(), max_bytes = configured.max_bytes, "admin TRACE ON: recording hook calls");
            Ok(Answer::Tag("TRACE".into()))
        }
        Err(e @ crate::policy::trace::TraceError::Open { .. }) => Err(ErrorFields::error(
            sqlstate::INVALID_PARAMETER_VALUE,
            e.to_string(),
        )),
        Err(e) => Err(ErrorFields::error(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            e.to_string(),
        )),
    }
}

fn show_trace(state: &ProxyState) -> Table {
    let r = state.policies.trace().report();
    Table {
        columns: vec![
            "state",
            "path",
            "max_bytes",
            "written",
            "dropped",
            "bytes",
            "rotations",
            "last_error",
        ],
        rows: vec![vec![
            if r.on { "on" } else { "off" }.to_string(),
            r.path.map(|p| p.display().to_string()).unwrap_or_default(),
            r.max_bytes.to_string(),
            r.written.to_string(),
            r.dropped.to_string(),
            r.bytes.to_string(),
            r.rotations.to_string(),
            r.last_error.unwrap_or_default(),
        ]],
    }
}

fn show_pools(state: &ProxyState) -> Table {
    use std::sync::atomic::Ordering::Relaxed;
    let mut pools = state.all_pools();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let rows = pools
        .iter()
        .map(|p| {
            let (idle, in_use, waiting) = p.counts();
            let s = &p.stats;
            vec![
                p.name.clone(),
                format!("{:?}", p.live().mode).to_ascii_lowercase(),
                p.size().to_string(),
                idle.to_string(),
                in_use.to_string(),
                waiting.to_string(),
                s.pinned.load(Relaxed).to_string(),
                s.checkouts.load(Relaxed).to_string(),
                s.connects.load(Relaxed).to_string(),
                s.connect_failures.load(Relaxed).to_string(),
                s.wait_timeouts.load(Relaxed).to_string(),
                s.retried.load(Relaxed).to_string(),
                s.pipelined.load(Relaxed).to_string(),
                p.cluster
                    .primary()
                    .map_or_else(|| "(none: holding)".to_string(), |(_, a)| a.to_string()),
            ]
        })
        .collect();
    Table {
        columns: vec![
            "pool",
            "mode",
            "size",
            "idle",
            "in_use",
            "waiting",
            "pinned",
            "checkouts",
            "connects",
            "connect_failures",
            "wait_timeouts",
            "retried",
            "pipelined",
            "server",
        ],
        rows,
    }
}

/// `SHOW STATS`: one row per configured database, its pools' traffic summed
/// ([`crate::stats::show_stats_row`]).
fn show_stats(state: &ProxyState) -> Table {
    let mut databases: Vec<&String> = state.databases.keys().collect();
    databases.sort();
    let now = crate::stats::now_us();
    let rows = databases
        .into_iter()
        .map(|db| {
            let pools = state.pools_of(db);
            let traffic = pools.iter().map(|p| {
                let checkouts = p.stats.checkouts.load(std::sync::atomic::Ordering::Relaxed);
                (&p.stats.traffic, checkouts)
            });
            crate::stats::show_stats_row(db, traffic, now)
        })
        .collect();
    Table {
        columns: crate::stats::SHOW_STATS_COLUMNS.to_vec(),
        rows,
    }
}

fn show_plugins(state: &ProxyState) -> Table {
    let hooks = |h: &[crate::config::HookKind]| h.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(",");
    // A failed load of a newer version first (it says why the running one is old), else
    // the running version's last failed call.
    let last_error = |name: &str, report: &PluginReport| {
        let (at, reason) = match state.plugins.failure(name) {
            Some(f) => (f.at, f.reason),
            None => match &report.last_error {
                Some((at, reason)) => (*at, reason.clone()),
                None => return String::new(),
            },
        };
        format!("{}: {reason}", humantime::format_rfc3339_seconds(at))
    };
    let current = state.plugins.current();
    let mut rows: Vec<Vec<String>> = current
        .plugins()
        .iter()
        .map(|p| {
            let r = p.report();
            let counters: Vec<String> = r.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                p.name.clone(),
                p.version.clone(),
                p.hash.clone(),
                hooks(&p.hooks),
                hooks(&p.exports),
                r.calls.to_string(),
                r.reused.to_string(),
                r.failures.to_string(),
                r.instantiations.to_string(),
                r.p50.map_or_else(
                    || "-".into(),
                    |d| format!("{:.2}us", d.as_nanos() as f64 / 1000.0),
                ),
                humantime::format_rfc3339_seconds(p.loaded_at).to_string(),
                format!("{}ms {}", p.load_time.as_millis(), p.origin),
                p.path.display().to_string(),
                counters.join(" "),
                last_error(&p.name, &r),
            ]
        })
        .collect();
    // Plugins that failed to load with no earlier version serving.
    for (name, f) in state.plugins.failures() {
        if current.plugins().iter().all(|p| p.name != name) {
            let mut row = vec![name, "-".into(), "-".into()];
            row.extend(std::iter::repeat_n(String::new(), 11));
            row.push(format!(
                "{}: {}",
                humantime::format_rfc3339_seconds(f.at),
                f.reason
            ));
            rows.push(row);
        }
    }
    Table {
        columns: vec![
            "name",
            "version",
            "hash",
            "hooks",
            "exports",
            "calls",
            "reused",
            "failures",
            "instances",
            "p50",
            "loaded_at",
            "load",
            "path",
            "counters",
            "last_error",
        ],
        rows,
    }
}

/// `RECONNECT`: servers of the databases' pools are closed at their next release, and
/// idle ones at once; running transactions are not disturbed.
fn reconnect(state: &ProxyState, targets: Targets<'_>) -> Answer {
    for (db, _) in targets {
        for pool in state.pools_of(db) {
            pool.reconnect();
        }
        tracing::info!(database = %db, "RECONNECT: servers are replaced as their transactions end");
    }
    Answer::Tag("RECONNECT".into())
}

fn show_clusters(state: &ProxyState) -> Table {
    use std::sync::atomic::Ordering::Relaxed;
    let mut clusters: Vec<_> = state.topology.clusters.values().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    let rows = clusters
        .iter()
        .map(|c| {
            let i = &c.incidents;
            let t = &i.totals;
            vec![
                c.name.clone(),
                c.primary()
                    .map_or_else(|| "(none: holding)".to_string(), |(_, a)| a.to_string()),
                c.view().generation.to_string(),
                t.events.load(Relaxed).to_string(),
                i.is_open().to_string(),
                t.held.load(Relaxed).to_string(),
                format!("{:.1}", t.longest_hold_us.load(Relaxed) as f64 / 1000.0),
                t.retried.load(Relaxed).to_string(),
                t.client_errors.load(Relaxed).to_string(),
                i.last_summary().unwrap_or_default(),
            ]
        })
        .collect();
    Table {
        columns: vec![
            "cluster",
            "primary",
            "generation",
            "events",
            "event_open",
            "held",
            "longest_hold_ms",
            "retried",
            "client_errors",
            "last_event",
        ],
        rows,
    }
}

fn show_nodes(state: &ProxyState) -> Table {
    let mut clusters: Vec<_> = state.topology.clusters.values().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = Vec::new();
    for cluster in clusters {
        let view = cluster.view();
        let patroni = cluster.patroni.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let traffic = state.node_traffic(cluster);
        for (i, (addr, node)) in cluster.nodes.iter().zip(&view.nodes).enumerate() {
            let member = patroni.members.get(i).and_then(Option::as_ref);
            let lsn = node.sample.lsn;
            rows.push(vec![
                cluster.name.clone(),
                addr.to_string(),
                node.verdict.role.as_str().to_string(),
                (view.primary == Some(i)).to_string(),
                if !cluster.probed() {
                    "not probed".to_string()
                } else if node.sample.reachable {
                    "up".to_string()
                } else if node.last_probe.is_none() {
                    "not yet probed".to_string()
                } else {
                    "down".to_string()
                },
                node.fenced.to_string(),
                node.sample.timeline.to_string(),
                format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff),
                node.lag_bytes.to_string(),
                node.lag_time
                    .map_or_else(String::new, |d| format!("{:.1}ms", d.as_secs_f64() * 1000.0)),
                traffic[i].reads.to_string(),
                traffic[i].writes.to_string(),
                traffic[i].skipped_text(),
                node.probe_time
                    .map_or_else(String::new, |d| format!("{:.1}ms", d.as_secs_f64() * 1000.0)),
                node.last_probe
                    .map_or_else(String::new, |t| humantime::format_rfc3339_millis(t).to_string()),
                node.last_error.clone().unwrap_or_default(),
                member.map_or_else(String::new, |m| m.role.clone()),
                member.map_or_else(String::new, |m| m.state.clone()),
            ]);
        }
    }
    Table {
        columns: vec![
            "cluster",
            "node",
            "role",
            "primary",
            "state",
            "fenced",
            "timeline",
            "lsn",
            "lag_bytes",
            "lag_time",
            "reads",
            "writes",
            "skipped",
            "probe_time",
            "last_probe",
            "last_error",
            "patroni_role",
            "patroni_state",
        ],
        rows,
    }
}

fn show_databases(state: &ProxyState) -> Table {
    let mut names: Vec<&String> = state.databases.keys().filter(|d| !state.is_removed(d)).collect();
    names.sort();
    let rows = names
        .into_iter()
        .map(|name| {
            let r = &state.databases[name];
            let live = r.live.load();
            vec![
                name.clone(),
                r.server_database.clone(),
                r.cluster.name.clone(),
                format!("{:?}", live.mode).to_ascii_lowercase(),
                live.size.to_string(),
                r.pause.paused().is_some().to_string(),
            ]
        })
        .collect();
    Table {
        columns: vec![
            "database",
            "server_database",
            "cluster",
            "pool_mode",
            "pool_size",
            "paused",
        ],
        rows,
    }
}

fn write_table(t: &Table, tag: &str, out: &mut BytesMut) {
    const TEXT_OID: u32 = 25;
    let columns: Vec<(&str, u32)> = t.columns.iter().map(|c| (*c, TEXT_OID)).collect();
    be::row_description(&columns, out);
    for row in &t.rows {
        let values: Vec<Option<&[u8]>> = row.iter().map(|v| Some(v.as_bytes())).collect();
        be::data_row(&values, out);
    }
    be::command_complete(&format!("{tag} {}", t.rows.len()), out);
}

/// `KILL db`: every client of the databases ends now with `FATAL 57P01` (an open transaction
/// is rolled back: its server is closed) and their idle servers are closed; as in
/// PgBouncer, the database is left paused: new transactions wait for `RESUME db` (or the
/// pause's budget, the cluster's `hold_timeout`).
fn kill(state: &ProxyState, targets: Targets<'_>) -> Answer {
    for (db, route) in targets {
        route.cluster.incidents.begin("KILL");
        route
            .pause
            .pause(route.cluster.hold_timeout, route.cluster.view().generation);
        let clients: Vec<_> = state
            .client_roster
            .members()
            .into_iter()
            .filter(|c| c.database == **db)
            .collect();
        for client in &clients {
            client.stop.kill();
        }
        for pool in state.pools_of(db) {
            pool.reconnect();
        }
        tracing::warn!(database = %db, clients = clients.len(), "KILL: clients ended, servers closed; the database is paused until RESUME");
    }
    Answer::Tag("KILL".into())
}

/// `SET key = value` (or `TO`): a reloadable setting, in force until the next reload.
fn set(state: &ProxyState, command: &str) -> Result<Answer, ErrorFields> {
    let rest = command[3..].trim();
    let (key, value) = rest
        .split_once('=')
        .or_else(|| {
            let (key, value) = rest.split_once(char::is_whitespace)?;
            let value = value.trim_start();
            let to = value.get(..2).filter(|w| w.eq_ignore_ascii_case("to"))?;
            Some((key, &value[to.len()..]))
        })
        .ok_or_else(|| {
            ErrorFields::error(sqlstate::SYNTAX_ERROR, format!("cannot read \"{command}\""))
                .with_hint("write SET key = value, e.g. SET shutdown_timeout = '10s'")
        })?;
    let key = key.trim();
    let value = value.trim();
    state.set(key, value).map_err(|e| {
        let code = match e {
            SetError::Unknown(_) => sqlstate::UNDEFINED_OBJECT,
            SetError::NeedsRestart(_) => sqlstate::CANT_CHANGE_RUNTIME_PARAM,
            SetError::Invalid { .. } => sqlstate::INVALID_PARAMETER_VALUE,
            SetError::NoFile => sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
        };
        let error = ErrorFields::error(code, e.to_string());
        match e {
            SetError::Unknown(_) => error.with_hint("SHOW CONFIG lists the settings"),
            SetError::NeedsRestart(_) => error.with_hint(
                "change it in the configuration file and restart; SHOW CONFIG says which settings SET can change",
            ),
            _ => error,
        }
    })?;
    tracing::info!(%key, %value, "SET");
    Ok(Answer::Tag("SET".into()))
}

/// `SHUTDOWN [IMMEDIATE]`: asks the listeners to stop as SIGTERM does (or, immediate, as
/// if `shutdown_timeout` ran out at once). This console session then ends with the others.
fn shutdown(state: &ProxyState, how: Shutdown) -> Answer {
    tracing::warn!(?how, "SHUTDOWN asked on the admin console");
    state.stop_request.send_replace(Some(how));
    Answer::Tag("SHUTDOWN".into())
}

/// Milliseconds after the clock origin (a pool's coarse clock) as a wall-clock time.
fn wall_clock(ms: u64) -> std::time::SystemTime {
    let now_ms = crate::server::nanos_since_origin(std::time::Instant::now()) / 1_000_000;
    std::time::SystemTime::now() - std::time::Duration::from_millis(now_ms.saturating_sub(ms))
}

/// The `request_time` column: when the last request asked for a server (`request_ms`, see
/// [`wall_clock`]), or the connection's start before any did.
fn request_time(connected_at: std::time::SystemTime, request_ms: u64) -> String {
    time_text(if request_ms == 0 {
        connected_at
    } else {
        wall_clock(request_ms)
    })
}

fn time_text(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `(host, port)` of an address, empty when unknown.
fn addr_columns(addr: Option<std::net::SocketAddr>) -> [String; 2] {
    addr.map_or_else(Default::default, |a| [a.ip().to_string(), a.port().to_string()])
}

/// A client's `addr` and `port` columns; a client on the Unix-domain socket shows `unix` and
/// no port.
fn peer_columns(peer: Peer) -> [String; 2] {
    match peer {
        Peer::Tcp(a) => addr_columns(Some(a)),
        Peer::Unix => ["unix".to_string(), String::new()],
    }
}

const CONNECTION_COLUMNS: [&str; 20] = [
    "type",
    "user",
    "database",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
];

/// `SHOW CLIENTS`: PgBouncer's columns. `ptr` is `c<id>`, `link` the `ptr` of the server
/// the client holds (`s<id>`), `wait` how long it has waited for a server (the pools'
/// clock: to a second).
fn show_clients(state: &ProxyState) -> Table {
    let held: std::collections::HashMap<u64, u64> = state
        .server_roster
        .members()
        .iter()
        .filter_map(|s| Some((s.client.load(RELAXED), s.id)).filter(|(c, _)| *c != 0))
        .collect();
    let now_ms = crate::server::nanos_since_origin(std::time::Instant::now()) / 1_000_000;
    let rows = state
        .client_roster
        .members()
        .iter()
        .map(|c| {
            let request_ms = c.request_ms.load(RELAXED);
            let waiting = c.waiting.load(RELAXED);
            let server = held.get(&c.id);
            let state = match (waiting, server) {
                (true, _) => "waiting",
                (false, Some(_)) => "active",
                (false, None) => "idle",
            };
            let wait_ms = if waiting {
                now_ms.saturating_sub(request_ms)
            } else {
                0
            };
            let [addr, port] = peer_columns(c.addr);
            let [local_addr, local_port] = addr_columns(c.local_addr);
            vec![
                "C".into(),
                c.user.clone(),
                c.database.clone(),
                state.into(),
                addr,
                port,
                local_addr,
                local_port,
                time_text(c.connected_at),
                request_time(c.connected_at, request_ms),
                (wait_ms / 1000).to_string(),
                ((wait_ms % 1000) * 1000).to_string(),
                u8::from(c.stop.closing()).to_string(),
                format!("c{}", c.id),
                server.map(|s| format!("s{s}")).unwrap_or_default(),
                "0".into(),
                if c.tls { "TLS".into() } else { String::new() },
                c.application_name.clone(),
                c.prepared.load(RELAXED).to_string(),
                c.id.to_string(),
            ]
        })
        .collect();
    Table {
        columns: CONNECTION_COLUMNS.to_vec(),
        rows,
    }
}

/// `SHOW SERVERS`: PgBouncer's columns; `remote_pid` is the backend's pid, `link` the `ptr`
/// of the client holding the server (`c<id>`).
fn show_servers(state: &ProxyState) -> Table {
    let rows = state
        .server_roster
        .members()
        .iter()
        .map(|s| {
            let client = s.client.load(RELAXED);
            let request_ms = s.request_ms.load(RELAXED);
            let [local_addr, local_port] = addr_columns(s.local_addr);
            vec![
                "S".into(),
                s.user.clone(),
                s.database.clone(),
                if client == 0 { "idle" } else { "active" }.into(),
                s.addr.clone(),
                s.port.to_string(),
                local_addr,
                local_port,
                time_text(s.connected_at),
                request_time(s.connected_at, request_ms),
                "0".into(),
                "0".into(),
                "0".into(),
                format!("s{}", s.id),
                if client == 0 {
                    String::new()
                } else {
                    format!("c{client}")
                },
                s.backend_pid.to_string(),
                if s.tls { "TLS".into() } else { String::new() },
                String::new(),
                s.prepared.load(RELAXED).to_string(),
                s.id.to_string(),
            ]
        })
        .collect();
    Table {
        columns: CONNECTION_COLUMNS.to_vec(),
        rows,
    }
}

/// `SHOW CONFIG`: PgBouncer's columns (`changeable` yes/no), and the file's section.
fn show_config(state: &ProxyState) -> Table {
    let rows = crate::config::live::rows(&state.in_force(), &state.proxy())
        .into_iter()
        .map(|r| {
            vec![
                r.key.to_string(),
                r.value,
                r.default,
                if r.changeable { "yes" } else { "no" }.into(),
                r.section.to_string(),
            ]
        })
        .collect();
    Table {
        columns: vec!["key", "value", "default", "changeable", "section"],
        rows,
    }
}

/// `SHOW LISTS`: PgBouncer's `list`/`items`. `free_clients` are the client slots left
/// under `max_client_conn`; `used_clients` the connected clients (console ones too),
/// `login_clients` those still logging in; servers idle in the pools are free, lent ones
/// used.
fn show_lists(state: &ProxyState) -> Table {
    let pools = state.all_pools();
    let (free, used) = pools.iter().fold((0, 0), |(f, u), p| {
        let (idle, in_use, _) = p.counts();
        (f + idle, u + in_use)
    });
    let clients = state.clients.load(std::sync::atomic::Ordering::Relaxed);
    let databases = state.databases.keys().filter(|d| !state.is_removed(d)).count();
    let rows = [
        ("databases", databases),
        ("users", state.users.len()),
        ("pools", pools.len()),
        (
            "free_clients",
            state.proxy().max_client_conn.saturating_sub(clients),
        ),
        ("used_clients", clients),
        (
            "login_clients",
            state.logging_in.load(std::sync::atomic::Ordering::Relaxed),
        ),
        ("free_servers", free),
        ("used_servers", used),
    ]
    .into_iter()
    .map(|(list, n)| vec![list.to_string(), n.to_string()])
    .collect();
    Table {
        columns: vec!["list", "items"],
        rows,
    }
}
