//! The admin console: a virtual database (`switchyard`) where users listed in `[admin]` run
//! PgBouncer-style commands with any client (`psql -d switchyard`). Simple query protocol
//! only; every answer is a result set or a command tag, never server data.

use bytes::BytesMut;
use switchyard_protocol::backend::{self as be, ErrorFields, TransactionStatus};
use switchyard_protocol::frame::split_frame;
use switchyard_protocol::frontend::FrontendMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::Stream;
use crate::session::SessionError;
use crate::state::ProxyState;

/// Name of the virtual admin database.
pub const ADMIN_DATABASE: &str = "switchyard";

/// Admin commands are short; this bounds what a confused client can make us buffer.
const MAX_ADMIN_MESSAGE: usize = 64 * 1024;

const HELP: &[&str] = &[
    "SHOW HELP        this list",
    "SHOW POOLS       one row per (database, user) pool: mode, size, servers idle and in use, counters",
    "SHOW DATABASES   configured databases and where they route",
    "SHOW PLUGINS     loaded plugins: version, hash, hooks, calls, failures, p50 call time, loaded at",
    "SHOW VERSION     the proxy's version",
];

/// A result set: column names and text rows.
struct Table {
    columns: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

/// Serves one admin client until it disconnects.
pub async fn serve(mut stream: Stream, mut buf: BytesMut, state: &ProxyState) -> Result<(), SessionError> {
    let mut out = BytesMut::new();
    loop {
        let frame = loop {
            if let Some(f) = split_frame(&mut buf, MAX_ADMIN_MESSAGE)? {
                break f;
            }
            if stream.read_buf(&mut buf).await.map_err(SessionError::ClientIo)? == 0 {
                return Ok(());
            }
        };
        match FrontendMessage::decode(&frame)? {
            FrontendMessage::Query { sql } => {
                let text = String::from_utf8_lossy(&sql);
                match run(text.trim().trim_end_matches(';').trim(), state) {
                    Ok(Answer::Table(t, tag)) => write_table(&t, &tag, &mut out),
                    Ok(Answer::Empty) => be::empty_query_response(&mut out),
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
                be::error_response(&ErrorFields::error("0A000", msg), &mut out);
            }
        }
        stream.write_all(&out).await.map_err(SessionError::ClientIo)?;
        stream.flush().await.map_err(SessionError::ClientIo)?;
        out.clear();
    }
}

enum Answer {
    Table(Table, String),
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
        ["show", "databases"] => show_databases(state),
        ["show", "plugins"] => show_plugins(state),
        _ => {
            return Err(
                ErrorFields::error("42601", format!("unknown admin command: {command}"))
                    .with_hint("SHOW HELP lists the commands"),
            )
        }
    };
    let tag = if words[0] == "show" {
        "SHOW".to_string()
    } else {
        words[0].to_ascii_uppercase()
    };
    Ok(Answer::Table(table, tag))
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
                format!("{:?}", p.settings.mode).to_ascii_lowercase(),
                p.settings.size.to_string(),
                idle.to_string(),
                in_use.to_string(),
                waiting.to_string(),
                s.checkouts.load(Relaxed).to_string(),
                s.connects.load(Relaxed).to_string(),
                s.connect_failures.load(Relaxed).to_string(),
                s.wait_timeouts.load(Relaxed).to_string(),
                p.node.to_string(),
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
            "checkouts",
            "connects",
            "connect_failures",
            "wait_timeouts",
            "server",
        ],
        rows,
    }
}

fn show_plugins(state: &ProxyState) -> Table {
    let rows = state
        .plugins
        .plugins()
        .iter()
        .map(|p| {
            let r = p.report();
            let loaded_at = humantime::format_rfc3339_seconds(p.loaded_at).to_string();
            let counters: Vec<String> = r.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                p.name.clone(),
                p.version.clone(),
                p.hash.clone(),
                p.hooks
                    .iter()
                    .map(|h| format!("{h:?}"))
                    .collect::<Vec<_>>()
                    .join(","),
                r.calls.to_string(),
                r.failures.to_string(),
                r.instantiations.to_string(),
                r.p50.map_or_else(
                    || "-".into(),
                    |d| format!("{:.1}us", d.as_nanos() as f64 / 1000.0),
                ),
                loaded_at,
                p.path.display().to_string(),
                counters.join(" "),
            ]
        })
        .collect();
    Table {
        columns: vec![
            "name",
            "version",
            "hash",
            "hooks",
            "calls",
            "failures",
            "instances",
            "p50",
            "loaded_at",
            "path",
            "counters",
        ],
        rows,
    }
}

fn show_databases(state: &ProxyState) -> Table {
    let mut names: Vec<&String> = state.databases.keys().collect();
    names.sort();
    let rows = names
        .into_iter()
        .map(|name| {
            let r = &state.databases[name];
            vec![
                name.clone(),
                r.server_database.clone(),
                r.node.to_string(),
                format!("{:?}", r.settings.mode).to_ascii_lowercase(),
                r.settings.size.to_string(),
            ]
        })
        .collect();
    Table {
        columns: vec!["database", "server_database", "server", "pool_mode", "pool_size"],
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
