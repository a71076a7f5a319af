//! The pool-mode decision and the settings contract, as plain Rust: nothing here depends on
//! the generated bindings, so `cargo test` exercises it on the host target.

use switchyard_plugin_kit::{Plugin, Settings};

/// The message of `refuse-transaction` in statement mode (the host answers the client with
/// it, SQLSTATE 25000).
pub const STATEMENT_REFUSAL: &str = "transaction blocks are not allowed in statement pooling mode";

/// Settings keys this plugin understands.
pub const KNOWN_SETTINGS: [&str; 7] = [
    "mode",
    "version_tag",
    "reuse",
    "pipeline",
    "pipeline_users",
    "pipeline_databases",
    "pipeline_applications",
];

/// Which sessions may be pipelined (pipelined transaction pooling): `pipeline` (`false`, the
/// default, or `true`), narrowed by comma-separated lists of users, databases and
/// application names (empty: any).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pipelining {
    pub on: bool,
    pub users: Vec<String>,
    pub databases: Vec<String>,
    pub applications: Vec<String>,
}

impl Pipelining {
    /// Whether a session of `user` in `database` named `application` may be pipelined.
    pub fn allows(&self, user: &str, database: &str, application: &str) -> bool {
        let listed = |list: &[String], name: &str| list.is_empty() || list.iter().any(|n| n == name);
        self.on
            && listed(&self.users, user)
            && listed(&self.databases, database)
            && listed(&self.applications, application)
    }
}

/// A comma-separated list setting: names trimmed, empty ones dropped.
fn list(settings: &Settings<'_>, key: &str) -> Vec<String> {
    settings
        .text(key)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect()
}

/// When a session's server connection goes back to the pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// After each transaction, unless the session holds server-side state (the default).
    #[default]
    Transaction,
    /// Never: the server stays with the session until it ends.
    Session,
    /// After each statement; transaction blocks are refused.
    Statement,
}

impl Mode {
    /// Every mode, in the order the error messages list them.
    pub const ALL: [Mode; 3] = [Mode::Transaction, Mode::Session, Mode::Statement];

    /// The settings value naming this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Transaction => "transaction",
            Mode::Session => "session",
            Mode::Statement => "statement",
        }
    }

    /// The mode a settings value names (exact, lower case, as PgBouncer's `pool_mode`).
    pub fn parse(value: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == value)
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The session's transaction state at the ReadyForQuery (mirrors WIT `tx-status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tx {
    Idle,
    InTransaction,
    Failed,
}

/// The decision (mirrors WIT `ready-action`; a refusal's message is [`STATEMENT_REFUSAL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Release,
    Keep,
    RefuseTransaction,
}

/// The decision at a ReadyForQuery.
#[inline]
pub fn decide(mode: Mode, tx: Tx, holds_server_state: bool) -> Decision {
    match (mode, tx) {
        (Mode::Session, _) => Decision::Keep,
        (Mode::Transaction, Tx::Idle) if !holds_server_state => Decision::Release,
        (Mode::Transaction, _) => Decision::Keep,
        // As PgBouncer: statement pooling has no notion of session state, and a transaction
        // block (open or failed) is refused rather than pinned.
        (Mode::Statement, Tx::Idle) => Decision::Release,
        (Mode::Statement, Tx::InTransaction | Tx::Failed) => Decision::RefuseTransaction,
    }
}

/// The plugin's configuration, from its `[plugins.NAME.settings]` table (`version_tag` is
/// the kit's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    /// Declare decisions reusable (`reuse = "always"`, the default) or have the host call
    /// at every boundary (`"never"`: for measuring the call itself).
    pub reuse: bool,
    /// Which sessions may be pipelined.
    pub pipeline: Pipelining,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::default(),
            reuse: true,
            pipeline: Pipelining::default(),
        }
    }
}

impl Plugin for Config {
    const NAME: &'static str = "pool-mode";
    const SETTINGS: &'static [&'static str] = &KNOWN_SETTINGS;

    /// `mode` (`transaction`, the default, `session` or `statement`) and `reuse` (`always`,
    /// the default, or `never`); an unknown value is an error whose message is meant for the
    /// operator.
    fn new(settings: &Settings<'_>) -> Result<Config, String> {
        let mut config = Config::default();
        if let Some(value) = settings.text("mode") {
            config.mode = Mode::parse(value).ok_or_else(|| {
                let valid: Vec<&str> = Mode::ALL.iter().map(|m| m.as_str()).collect();
                format!("unknown mode {value:?}: expected one of {}", valid.join(", "))
            })?;
        }
        config.reuse = match settings.text("reuse").unwrap_or("always") {
            "always" => true,
            "never" => false,
            other => return Err(format!("unknown reuse {other:?}: expected always or never")),
        };
        config.pipeline = Pipelining {
            on: match settings.text("pipeline").unwrap_or("false") {
                "true" => true,
                "false" => false,
                other => return Err(format!("unknown pipeline {other:?}: expected true or false")),
            },
            users: list(settings, "pipeline_users"),
            databases: list(settings, "pipeline_databases"),
            applications: list(settings, "pipeline_applications"),
        };
        Ok(config)
    }

    /// `init` logs `pool-mode VERSION: MODE pooling`.
    fn describe(&self) -> String {
        format!("{} pooling", self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_plugin_kit::{configure, init_line, Configured};

    /// What `init` makes of these settings.
    fn init(settings: &[(String, String)]) -> Result<Configured<Config>, String> {
        configure::<Config>(env!("CARGO_PKG_VERSION"), settings)
    }

    fn parse_settings(settings: &[(String, String)]) -> Result<Config, String> {
        init(settings).map(|c| c.plugin)
    }

    fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn transaction_mode_releases_only_idle_sessions_without_server_state() {
        let m = Mode::Transaction;
        assert_eq!(decide(m, Tx::Idle, false), Decision::Release);
        assert_eq!(decide(m, Tx::Idle, true), Decision::Keep);
        assert_eq!(decide(m, Tx::InTransaction, false), Decision::Keep);
        assert_eq!(decide(m, Tx::InTransaction, true), Decision::Keep);
        assert_eq!(decide(m, Tx::Failed, false), Decision::Keep);
        assert_eq!(decide(m, Tx::Failed, true), Decision::Keep);
    }

    #[test]
    fn session_mode_always_keeps() {
        for tx in [Tx::Idle, Tx::InTransaction, Tx::Failed] {
            for state in [false, true] {
                assert_eq!(decide(Mode::Session, tx, state), Decision::Keep);
            }
        }
    }

    #[test]
    fn statement_mode_releases_when_idle_and_refuses_transaction_blocks() {
        for state in [false, true] {
            assert_eq!(decide(Mode::Statement, Tx::Idle, state), Decision::Release);
            assert_eq!(
                decide(Mode::Statement, Tx::InTransaction, state),
                Decision::RefuseTransaction
            );
            assert_eq!(
                decide(Mode::Statement, Tx::Failed, state),
                Decision::RefuseTransaction
            );
        }
    }

    #[test]
    fn default_settings_are_transaction_mode_without_tag() {
        let config = parse_settings(&[]).unwrap();
        assert_eq!(
            config,
            Config {
                mode: Mode::Transaction,
                reuse: true,
                pipeline: Pipelining::default(),
            }
        );
    }

    #[test]
    fn pipelining_is_off_by_default_and_narrowed_by_the_lists() {
        let off = parse_settings(&[]).unwrap().pipeline;
        assert!(!off.allows("app", "app", ""));
        let on = parse_settings(&settings(&[("pipeline", "true")])).unwrap().pipeline;
        assert!(on.allows("app", "app", "psql"));
        let narrow = parse_settings(&settings(&[
            ("pipeline", "true"),
            ("pipeline_users", "app, bob"),
            ("pipeline_applications", "pgbench"),
        ]))
        .unwrap()
        .pipeline;
        assert!(narrow.allows("bob", "any", "pgbench"));
        assert!(!narrow.allows("eve", "any", "pgbench"));
        assert!(!narrow.allows("app", "any", "psql"));
        let err = parse_settings(&settings(&[("pipeline", "yes")])).unwrap_err();
        assert_eq!(err, r#"unknown pipeline "yes": expected true or false"#);
    }

    #[test]
    fn parses_every_mode_and_the_tag() {
        for mode in Mode::ALL {
            let config = parse_settings(&settings(&[("mode", mode.as_str())])).unwrap();
            assert_eq!(config.mode, mode);
        }
        let init = init(&settings(&[("version_tag", "blue"), ("mode", "session")])).unwrap();
        assert_eq!(init.plugin.mode, Mode::Session);
        assert_eq!(init.version, format!("{}+blue", env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn unknown_mode_names_the_valid_ones() {
        let err = parse_settings(&settings(&[("mode", "Transaction")])).unwrap_err();
        assert_eq!(
            err,
            r#"unknown mode "Transaction": expected one of transaction, session, statement"#
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse_settings(&settings(&[("mode", "session"), ("pool_size", "3")])).unwrap_err();
        assert_eq!(
            err,
            r#"unknown setting "pool_size" (known settings: mode, version_tag, reuse, pipeline, pipeline_users, pipeline_databases, pipeline_applications)"#
        );
        let err = parse_settings(&settings(&[("a", "1"), ("b", "2")])).unwrap_err();
        assert_eq!(
            err,
            r#"unknown settings "a", "b" (known settings: mode, version_tag, reuse, pipeline, pipeline_users, pipeline_databases, pipeline_applications)"#
        );
    }

    #[test]
    fn reuse_is_always_or_never() {
        assert!(!parse_settings(&settings(&[("reuse", "never")])).unwrap().reuse);
        assert!(parse_settings(&settings(&[("reuse", "always")])).unwrap().reuse);
        let err = parse_settings(&settings(&[("reuse", "sometimes")])).unwrap_err();
        assert_eq!(err, r#"unknown reuse "sometimes": expected always or never"#);
    }

    #[test]
    fn repeated_keys_are_rejected() {
        let err = parse_settings(&settings(&[("mode", "session"), ("mode", "statement")])).unwrap_err();
        assert_eq!(err, r#"setting "mode" given more than once"#);
    }

    #[test]
    fn version_appends_the_tag_and_init_logs_the_mode() {
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(init(&[]).unwrap().version, version);
        assert_eq!(init(&settings(&[("version_tag", "")])).unwrap().version, version);
        let tagged = init(&settings(&[("version_tag", "blue"), ("mode", "statement")])).unwrap();
        assert_eq!(tagged.version, format!("{version}+blue"));
        assert_eq!(
            init_line(&tagged),
            format!("pool-mode {version}+blue: statement pooling")
        );
    }
}
