//! Session parameters in transaction pooling.
//!
//! A client's session state lives in the proxy, not on a server: the startup parameters it
//! sent and the session-level `SET`s it ran. Before a transaction runs on a server whose
//! settings differ, the proxy replays the difference in one round trip, so the client sees
//! its own settings whatever server it lands on.
//!
//! Each setting is kept as the statement that establishes it, built from parsed names and
//! values (`sql::Command::Set`), never from the client's text: a comment or a quote in what
//! the client sent cannot swallow or change the statements replayed after it. Startup
//! values, which reach Postgres as raw setting strings, are replayed with `set_config`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::sql::{quote_literal, quote_setting_name, Command};

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
    /// Settings named by commands sent since the session was last idle with nothing in
    /// flight: the ParameterStatus reports the server may send for them are expected.
    touched: Vec<String>,
    /// A RESET ALL or DISCARD ALL is among those commands: every report is expected.
    touched_all: bool,
    /// A transaction with pending commands failed or rolled back (possibly only to a
    /// savepoint): which of them took effect is read back from the server.
    uncertain: bool,
    /// The settings those commands named.
    uncertain_names: Vec<String>,
    /// [`SessionParams::transaction_defaults`], read from `desired` when it changes.
    transaction_defaults: (bool, bool),
}

/// The statement that gives setting `name` the raw value `value`, as a startup packet or
/// `pg_settings` states it.
pub fn set_config_statement(name: &str, value: &str) -> String {
    format!(
        "SELECT pg_catalog.set_config({}, {}, false)",
        quote_literal(name),
        quote_literal(value)
    )
}

/// The statement run for a parsed `SET name TO value`.
fn set_statement(name: &str, value: &str) -> String {
    format!("SET {} TO {value}", quote_setting_name(name))
}

/// Setting names as the startup packet may carry them: anything else is not replayed.
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

/// The settings a startup packet asks for, name → raw value, later ones winning.
pub fn startup_settings(params: &[(String, String)]) -> Vec<(String, String)> {
    every_startup_setting(params)
        .into_iter()
        .filter(|(k, _)| !k.starts_with(PROXY_PREFIX))
        .collect()
}

/// Startup settings in the `switchyard.` namespace are the proxy's own (the routing hint
/// `switchyard.route`): read by the proxy, never sent to a server.
const PROXY_PREFIX: &str = "switchyard.";

/// The value of the proxy's own startup setting `name` (`switchyard.…`), given as a
/// startup parameter or as `-c name=value` in `options`; the last one wins.
pub fn proxy_setting(params: &[(String, String)], name: &str) -> Option<String> {
    every_startup_setting(params)
        .into_iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Every setting of the startup packet (parameters and `-c` options), names lowercased, each
/// once: where a name repeats, the last value, at the place of its last occurrence. Linear in
/// the packet (a stranger's packet of thousands of repeated names costs no more than it
/// takes to read).
fn every_startup_setting(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    let mut add = |k: String, v: String| all.push((k.to_ascii_lowercase(), v));
    for (k, v) in params {
        if k == "options" {
            for (k, v) in parse_options(v) {
                if valid_name(&k) {
                    add(k, v);
                }
            }
        } else if !NOT_SETTINGS.contains(&k.as_str()) && valid_name(k) && !k.starts_with("_pq_.") {
            add(k.clone(), v.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<(String, String)> = all
        .into_iter()
        .rev()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect();
    out.reverse();
    out
}

impl SessionParams {
    pub fn from_startup(params: &[(String, String)]) -> SessionParams {
        let startup: Settings = startup_settings(params)
            .into_iter()
            .map(|(k, v)| {
                let stmt = set_config_statement(&k, &v);
                (k, stmt)
            })
            .collect();
        let startup = Arc::new(startup);
        let mut s = SessionParams {
            desired: startup.clone(),
            startup,
            ..Default::default()
        };
        s.resign();
        s
    }

    /// The session's startup settings and the settings it has now (its committed
    /// `SET`s), as replay statements, for a takeover to carry to the new process. Called
    /// between transactions, when nothing is pending or uncertain.
    pub fn carried(&self) -> (Settings, Settings) {
        ((*self.startup).clone(), (*self.desired).clone())
    }

    /// A session's settings carried over from the process this one took over from
    /// ([`SessionParams::carried`]).
    pub fn adopt(startup: Settings, desired: Settings) -> SessionParams {
        let mut s = SessionParams {
            startup: Arc::new(startup),
            desired: Arc::new(desired),
            ..Default::default()
        };
        if s.startup == s.desired {
            s.desired = s.startup.clone();
        }
        s.resign();
        s
    }

    /// `desired` changed: its signature and the transaction defaults are computed again.
    fn resign(&mut self) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.desired.hash(&mut h);
        self.signature = h.finish() | 1; // 0 means "a server with unknown settings"
        self.transaction_defaults = self.read_transaction_defaults();
    }

    pub fn signature(&self) -> u64 {
        self.signature
    }

    /// Records a SET/RESET the client sent; it takes effect if its transaction commits.
    pub fn note(&mut self, cmd: Command) {
        match &cmd {
            Command::Set { name, .. } | Command::Reset { name } => self.touched.push(name.clone()),
            Command::ResetAll | Command::DiscardAll => self.touched_all = true,
            Command::Local { name } => {
                self.touched.push(name.clone());
                return;
            }
            _ => return,
        }
        self.pending.push(cmd);
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The transaction that ran the pending commands failed or rolled back, maybe only to
    /// a savepoint: the commands are dropped, and what the server really has is read back
    /// before it is trusted again (see [`SessionParams::uncertain`]).
    pub fn abort_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.uncertain = true;
        for cmd in self.pending.drain(..) {
            match cmd {
                Command::Set { name, .. } | Command::Reset { name } => self.uncertain_names.push(name),
                // Whatever RESET ALL touched is among the settings the client has.
                _ => {}
            }
        }
    }

    /// The query that reads back, after an uncertain transaction, the current value of every
    /// setting the client has or the transaction named (NULL for a custom setting that does
    /// not exist), as (name, value) rows.
    pub fn read_back_query(&self) -> String {
        let mut names: Vec<&str> = self
            .desired
            .keys()
            .map(String::as_str)
            .chain(self.uncertain_names.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        let list: Vec<String> = names.iter().map(|n| quote_literal(n)).collect();
        format!(
            "SELECT n, pg_catalog.current_setting(n, true) FROM pg_catalog.unnest(ARRAY[{}]::text[]) AS n",
            list.join(", ")
        )
    }

    /// Whether the server's settings must be read back (`read_back`) before its release.
    pub fn uncertain(&self) -> bool {
        self.uncertain
    }

    /// Whether a ParameterStatus report for `name` follows from a command the proxy
    /// tracked; a report nobody asked for means the server's settings changed behind the
    /// proxy's back (a SET inside a function, say).
    pub fn expects_report(&self, name: &str) -> bool {
        self.touched_all || self.uncertain || self.touched.iter().any(|t| t.eq_ignore_ascii_case(name))
    }

    /// Nothing is in flight and no transaction is open: later reports need later commands.
    pub fn settle_reports(&mut self) {
        self.touched.clear();
        self.touched_all = false;
    }

    /// The transaction committed (or the statement ran outside one), on the server whose
    /// settings and signature are `server`, if any. The client's settings and the server's
    /// can then differ: `RESET name` on a pooled server goes back to the server's default,
    /// while the client expects its own startup value, which its next transaction replays.
    /// Returns whether `application_name` went back to its startup value (a RESET of it,
    /// RESET ALL, DISCARD ALL), which the server's report does not show in that case.
    pub fn commit_pending(&mut self, server: Option<(&mut Settings, &mut u64)>) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let mut applied = server;
        let mut application_name_reset = false;
        for cmd in std::mem::take(&mut self.pending) {
            application_name_reset |= match &cmd {
                Command::Reset { name } => name.eq_ignore_ascii_case("application_name"),
                Command::ResetAll | Command::DiscardAll => true,
                _ => false,
            };
            let desired = Arc::make_mut(&mut self.desired);
            match cmd {
                Command::Set { name, value } => {
                    let stmt = set_statement(&name, &value);
                    if let Some((settings, _)) = applied.as_mut() {
                        settings.insert(name.clone(), stmt.clone());
                    }
                    desired.insert(name, stmt);
                }
                Command::Reset { name } => {
                    if let Some((settings, _)) = applied.as_mut() {
                        settings.remove(&name);
                    }
                    match self.startup.get(&name) {
                        // RESET goes back to the connection's startup value, as on Postgres.
                        Some(v) => {
                            desired.insert(name, v.clone());
                        }
                        None => {
                            desired.remove(&name);
                        }
                    }
                }
                Command::ResetAll | Command::DiscardAll => {
                    if let Some((settings, _)) = applied.as_mut() {
                        settings.clear();
                    }
                    self.desired = self.startup.clone();
                }
                _ => {}
            }
        }
        self.resign();
        if let Some((settings, signature)) = applied {
            *signature = if *settings == *self.desired {
                self.signature
            } else {
                0
            };
        }
        application_name_reset
    }

    /// Takes the values a server reports (`read_back_query`'s rows) as the session's
    /// settings, after a transaction whose effect on them was uncertain.
    pub fn read_back(&mut self, rows: Vec<(String, Option<String>)>) {
        let desired = Arc::make_mut(&mut self.desired);
        for (name, value) in rows {
            match value {
                Some(v) => {
                    let stmt = set_config_statement(&name, &v);
                    desired.insert(name, stmt);
                }
                None => {
                    desired.remove(&name);
                }
            }
        }
        self.forget_uncertainty();
        self.resign();
    }

    /// The uncertainty could not be resolved on the server (it is being closed): the
    /// proxy's own account, without the aborted commands, stands.
    pub fn forget_uncertainty(&mut self) {
        self.uncertain = false;
        self.uncertain_names.clear();
    }

    /// The statements that turn a server's `applied` settings into ours, or None if equal
    /// ([`crate::server::settings_diff`]).
    pub fn diff(&self, applied: &Settings) -> Option<String> {
        crate::server::settings_diff(&self.desired, applied)
    }

    /// The session's settings are its startup settings, untouched by any `SET`, `RESET` or
    /// `DISCARD`, pending or committed, and nothing about them is in doubt.
    pub fn at_startup(&self) -> bool {
        Arc::ptr_eq(&self.startup, &self.desired)
            && self.pending.is_empty()
            && self.touched.is_empty()
            && !self.touched_all
            && !self.uncertain
    }

    /// The settings the session expects (shared), for work run on its behalf elsewhere.
    pub fn shared_desired(&self) -> Arc<Settings> {
        self.desired.clone()
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

    /// The session's transaction defaults as it asked for them (startup parameters and
    /// committed `SET`s): (`default_transaction_read_only` is on,
    /// `default_transaction_isolation` is serializable). Read routing classifies with them.
    pub fn transaction_defaults(&self) -> (bool, bool) {
        self.transaction_defaults
    }

    fn read_transaction_defaults(&self) -> (bool, bool) {
        let value = |name: &str| {
            self.desired
                .get(name)
                .and_then(|stmt| statement_value(stmt))
                .unwrap_or_default()
                .to_ascii_lowercase()
        };
        let read_only = matches!(
            value("default_transaction_read_only").as_str(),
            "on" | "true" | "tru" | "tr" | "t" | "yes" | "ye" | "y" | "1"
        );
        let serializable = value("default_transaction_isolation") == "serializable";
        (read_only, serializable)
    }
}

/// The value a replay statement of this module gives its setting: `SET name TO value`
/// (the value as the proxy re-quoted it) or `SELECT pg_catalog.set_config('name',
/// 'value', false)`.
fn statement_value(stmt: &str) -> Option<String> {
    if let Some(args) = stmt.strip_prefix("SELECT pg_catalog.set_config(") {
        let (_, rest) = literal(args)?;
        let rest = rest.trim_start().strip_prefix(',')?.trim_start();
        return literal(rest).map(|(v, _)| v);
    }
    let (_, value) = stmt.split_once(" TO ")?;
    let value = value.trim();
    Some(literal(value).map_or_else(|| value.to_owned(), |(v, _)| v))
}

/// A quoted literal at the start of `text` (`'...'` with `''` escapes, or `E'...'` as
/// `quote_literal` writes it), and the text after it.
fn literal(text: &str) -> Option<(String, &str)> {
    let (escaped, body) = match text.strip_prefix("E'") {
        Some(body) => (true, body),
        None => (false, text.strip_prefix('\'')?),
    };
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' if chars.peek().is_some_and(|&(_, n)| n == '\'') => {
                chars.next();
                out.push('\'');
            }
            '\'' => return Some((out, &body[i + 1..])),
            '\\' if escaped => out.push(chars.next()?.1),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::commands;

    #[test]
    fn transaction_defaults_follow_startup_and_committed_sets() {
        let mut s = SessionParams::from_startup(&[p("default_transaction_read_only", "on")]);
        assert_eq!(s.transaction_defaults(), (true, false));
        note_all(&mut s, "SET default_transaction_read_only = off");
        note_all(&mut s, "SET default_transaction_isolation TO 'serializable'");
        s.commit_pending(None);
        assert_eq!(s.transaction_defaults(), (false, true));
        let s = SessionParams::from_startup(&[p("options", "-c default_transaction_isolation=SERIALIZABLE")]);
        assert_eq!(s.transaction_defaults(), (false, true));
        assert_eq!(
            statement_value("SELECT pg_catalog.set_config('a', E'x\\\\y''z', false)").as_deref(),
            Some("x\\y'z")
        );
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    fn note_all(s: &mut SessionParams, sql: &str) {
        for c in commands(sql.as_bytes()) {
            s.note(c);
        }
    }

    #[test]
    fn startup_and_options() {
        let s = SessionParams::from_startup(&[
            p("user", "app"),
            p("database", "app"),
            p("application_name", "it's"),
            p("options", "-c search_path=a,b --work-mem=64MB"),
        ]);
        assert_eq!(
            s.desired().get("application_name").unwrap(),
            "SELECT pg_catalog.set_config('application_name', 'it''s', false)"
        );
        assert_eq!(
            s.desired().get("search_path").unwrap(),
            "SELECT pg_catalog.set_config('search_path', 'a,b', false)"
        );
        assert!(s.desired().contains_key("work_mem"));
        assert!(!s.desired().contains_key("user"));
    }

    /// A name given twice (in any case, as a parameter or a `-c` option) keeps its last
    /// value, at the place of its last occurrence; thousands of names (a stranger's 10 kB
    /// packet) are each kept once.
    #[test]
    fn repeated_startup_settings_keep_the_last_value() {
        let settings = every_startup_setting(&[
            p("search_path", "a"),
            p("application_name", "x"),
            p("options", "-c SEARCH_PATH=b -c work_mem=1MB"),
            p("Application_Name", "y"),
        ]);
        assert_eq!(
            settings,
            [
                p("search_path", "b"),
                p("work_mem", "1MB"),
                p("application_name", "y")
            ]
        );
        let many: Vec<_> = (0..3000)
            .map(|i| p(&format!("s{}", i % 1500), &i.to_string()))
            .collect();
        let settings = every_startup_setting(&many);
        assert_eq!(settings.len(), 1500);
        assert_eq!(settings[0], p("s0", "1500"));
    }

    #[test]
    fn diff_sets_and_resets() {
        let mut s = SessionParams::from_startup(&[p("application_name", "a")]);
        let mut applied = Settings::new();
        applied.insert("timezone".into(), "SET timezone TO 'UTC'".into());
        assert_eq!(
            s.diff(&applied).unwrap(),
            "SELECT pg_catalog.set_config('application_name', 'a', false);RESET timezone;"
        );
        let sig = s.signature();
        note_all(&mut s, "SET search_path TO x");
        s.abort_pending();
        assert!(s.uncertain());
        s.forget_uncertainty();
        assert_eq!(s.signature(), sig);
        note_all(&mut s, "SET search_path TO x");
        s.commit_pending(None);
        assert_ne!(s.signature(), sig);
        assert!(s.diff(s.desired()).is_none());
        note_all(&mut s, "RESET ALL");
        s.commit_pending(None);
        assert_eq!(s.signature(), sig);
    }

    /// What issue 15 found: a comment after a SET value swallowed the RESETs replayed
    /// after it. The replay is built from parsed values, so no client text survives.
    #[test]
    fn client_text_never_reaches_the_replay() {
        let mut s = SessionParams::from_startup(&[]);
        note_all(
            &mut s,
            "SET application_name TO 'x' -- note\n; SET search_path = /* c */ \"My\"\"S\", public;\
             SET app.path = E'a\\\\b'; SET timezone = $t$Europe/Paris$t$",
        );
        s.commit_pending(None);
        let mut applied = Settings::new();
        applied.insert("statement_timeout".into(), "SET statement_timeout TO '1s'".into());
        let sql = s.diff(&applied).unwrap();
        assert_eq!(
            sql,
            "SET app.path TO E'a\\\\b';SET application_name TO 'x';\
             SET search_path TO 'My\"S', 'public';SET timezone TO 'Europe/Paris';\
             RESET statement_timeout;"
        );
        assert!(!sql.contains("--") && !sql.contains("/*"));
    }

    #[test]
    fn set_default_and_reset_return_to_the_startup_value() {
        let mut s = SessionParams::from_startup(&[p("search_path", "s1")]);
        let startup = s.desired().clone();
        note_all(&mut s, "SET search_path TO s2");
        s.commit_pending(None);
        note_all(&mut s, "SET search_path TO DEFAULT");
        s.commit_pending(None);
        assert_eq!(s.desired(), &startup);
        note_all(&mut s, "SET search_path TO s2; RESET search_path");
        s.commit_pending(None);
        assert_eq!(s.desired(), &startup);
    }

    #[test]
    fn reports_are_expected_only_for_tracked_commands() {
        let mut s = SessionParams::from_startup(&[]);
        assert!(!s.expects_report("application_name"));
        note_all(&mut s, "SET application_name = 'x'");
        assert!(s.expects_report("application_name"));
        assert!(!s.expects_report("DateStyle"));
        note_all(&mut s, "SET TIME ZONE 'UTC'");
        assert!(s.expects_report("TimeZone"));
        note_all(&mut s, "SET LOCAL datestyle = 'ISO, DMY'");
        assert!(s.expects_report("DateStyle"));
        s.commit_pending(None);
        s.settle_reports();
        assert!(!s.expects_report("application_name"));
    }
}
