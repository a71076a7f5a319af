//! Session parameters in transaction pooling.
//!
//! A client's session state lives in the proxy, not on a server: the startup parameters it
//! sent and the session-level `SET`s it ran. Before a transaction runs on a server whose
//! settings differ, the proxy replays the difference (`SET`/`RESET`) in one round trip, so the
//! client sees its own settings whatever server it lands on.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::sql::Command;

/// Startup parameters that are connection properties, not settings to replay.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

pub use crate::server::Settings;

/// What one client expects of its session. `desired` shares `startup`'s map until the
/// client changes a setting (most never do), so an idle client keeps one copy.
#[derive(Debug, Default)]
pub struct SessionParams {
    startup: Arc<Settings>,
    desired: Arc<Settings>,
    /// Hash of `desired`, compared with a server's to skip the diff in the common case.
    signature: u64,
    /// SET/RESET seen in the transaction in progress, applied when it commits.
    pending: Vec<Command>,
}

/// A quoted SQL literal.
pub fn quote_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Parameter names are replayed unquoted, so accept only what needs no quoting.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// Splits libpq's `options` (`-c name=value`, `--name=value`) into settings.
fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut words = options.split_ascii_whitespace();
    while let Some(w) = words.next() {
        let kv = if w == "-c" {
            words.next()
        } else {
            w.strip_prefix("-c").or_else(|| w.strip_prefix("--"))
        };
        if let Some((k, v)) = kv.and_then(|kv| kv.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_string()));
        }
    }
    out
}

impl SessionParams {
    pub fn from_startup(params: &[(String, String)]) -> SessionParams {
        let mut startup = Settings::new();
        for (k, v) in params {
            if k == "options" {
                for (k, v) in parse_options(v) {
                    if valid_name(&k) {
                        startup.insert(k.to_ascii_lowercase(), quote_literal(&v));
                    }
                }
            } else if !NOT_SETTINGS.contains(&k.as_str()) && valid_name(k) && !k.starts_with("_pq_.") {
                startup.insert(k.to_ascii_lowercase(), quote_literal(v));
            }
        }
        let startup = Arc::new(startup);
        let mut s = SessionParams {
            desired: startup.clone(),
            startup,
            ..Default::default()
        };
        s.resign();
        s
    }

    fn resign(&mut self) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.desired.hash(&mut h);
        self.signature = h.finish() | 1; // 0 means "a server with unknown settings"
    }

    pub fn signature(&self) -> u64 {
        self.signature
    }

    /// Records a SET/RESET the client sent; it takes effect if its transaction commits.
    pub fn note(&mut self, cmd: Command) {
        if matches!(
            cmd,
            Command::Set { .. } | Command::Reset { .. } | Command::ResetAll | Command::DiscardAll
        ) {
            self.pending.push(cmd);
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The transaction that ran the pending commands failed or rolled back.
    pub fn abort_pending(&mut self) {
        self.pending.clear();
    }

    /// The transaction committed (or the statement ran outside one).
    pub fn commit_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        for cmd in std::mem::take(&mut self.pending) {
            let desired = Arc::make_mut(&mut self.desired);
            match cmd {
                Command::Set { name, value } if valid_name(&name) => {
                    if value.eq_ignore_ascii_case("default") {
                        desired.remove(&name);
                    } else {
                        desired.insert(name, value);
                    }
                }
                Command::Reset { name } => match self.startup.get(&name) {
                    // RESET goes back to the connection's startup value, as on Postgres.
                    Some(v) => {
                        desired.insert(name, v.clone());
                    }
                    None => {
                        desired.remove(&name);
                    }
                },
                Command::ResetAll | Command::DiscardAll => self.desired = self.startup.clone(),
                _ => {}
            }
        }
        self.resign();
    }

    /// The statements that turn a server's `applied` settings into ours, or None if equal.
    pub fn diff(&self, applied: &Settings) -> Option<String> {
        let mut sql = String::new();
        for (k, v) in self.desired.iter() {
            if applied.get(k) != Some(v) {
                sql.push_str(&format!("SET {k} TO {v};"));
            }
        }
        for k in applied.keys() {
            if !self.desired.contains_key(k) {
                sql.push_str(&format!("RESET {k};"));
            }
        }
        (!sql.is_empty()).then_some(sql)
    }

    /// Swaps the startup map for an equal one that other sessions share (the pool keeps
    /// the last one it saw; clients of one pool mostly send the same). Called before any
    /// command was noted.
    pub fn share_startup(&mut self, share: impl FnOnce(&Arc<Settings>) -> Arc<Settings>) {
        debug_assert!(Arc::ptr_eq(&self.startup, &self.desired) && self.pending.is_empty());
        let shared = share(&self.startup);
        self.desired = shared.clone();
        self.startup = shared;
    }

    pub fn desired(&self) -> &Settings {
        &self.desired
    }

    /// The value the client gave at startup, unquoted, for ParameterStatus at login.
    pub fn startup_value(&self, name: &str) -> Option<String> {
        let v = self.startup.get(&name.to_ascii_lowercase())?;
        Some(v[1..v.len() - 1].replace("''", "'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn startup_and_options() {
        let s = SessionParams::from_startup(&[
            p("user", "app"),
            p("database", "app"),
            p("application_name", "it's"),
            p("options", "-c search_path=a,b --work-mem=64MB"),
        ]);
        assert_eq!(s.desired().get("application_name").unwrap(), "'it''s'");
        assert_eq!(s.desired().get("search_path").unwrap(), "'a,b'");
        assert_eq!(s.desired().get("work_mem").unwrap(), "'64MB'");
        assert!(!s.desired().contains_key("user"));
        assert_eq!(s.startup_value("application_name").unwrap(), "it's");
    }

    #[test]
    fn diff_sets_and_resets() {
        let mut s = SessionParams::from_startup(&[p("application_name", "a")]);
        let mut applied = Settings::new();
        applied.insert("timezone".into(), "'UTC'".into());
        assert_eq!(
            s.diff(&applied).unwrap(),
            "SET application_name TO 'a';RESET timezone;"
        );
        let sig = s.signature();
        s.note(Command::Set {
            name: "search_path".into(),
            value: "x".into(),
        });
        s.abort_pending();
        assert_eq!(s.signature(), sig);
        s.note(Command::Set {
            name: "search_path".into(),
            value: "x".into(),
        });
        s.commit_pending();
        assert_ne!(s.signature(), sig);
        assert!(s.diff(s.desired()).is_none());
        s.note(Command::ResetAll);
        s.commit_pending();
        assert_eq!(s.signature(), sig);
    }
}
