//! The wit-bindgen glue: world `retry-plugin`.

use std::sync::Mutex;

use crate::policy::{self, Config, Decision, Failure, Fate, Phase};

wit_bindgen::generate!({
    world: "retry-plugin",
    path: "../../wit",
});

use exports::switchyard::policy::lifecycle::Guest as Lifecycle;
use exports::switchyard::policy::retry::{Guest as Retry, RetryDecision};
use switchyard::policy::host::{self, LogLevel};
use switchyard::policy::types::{ErrorInfo, ErrorPhase, Fate as WitFate, SessionInfo};

static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

struct Plugin;

impl Lifecycle for Plugin {
    fn init(settings: Vec<(String, String)>) -> Result<(), String> {
        std::panic::set_hook(Box::new(|info| eprintln!("retry: {info}")));
        let config = policy::parse_settings(&settings)?;
        host::log(
            LogLevel::Info,
            &format!(
                "retry {}: at most {} attempts within {} ms",
                plugin_settings::version(env!("CARGO_PKG_VERSION"), config.version_tag.as_deref()),
                config.max_attempts,
                config.budget_ms
            ),
        );
        *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(config);
        Ok(())
    }

    fn version() -> String {
        let config = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
        plugin_settings::version(
            env!("CARGO_PKG_VERSION"),
            config.as_ref().and_then(|c| c.version_tag.as_deref()),
        )
    }
}

impl Retry for Plugin {
    fn on_error(_session: SessionInfo, error: ErrorInfo) -> RetryDecision {
        let config = CONFIG
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        let failure = Failure {
            sqlstate: &error.sqlstate,
            phase: match error.phase {
                ErrorPhase::Connect => Phase::Connect,
                ErrorPhase::BeforeAnyResult => Phase::BeforeAnyResult,
                ErrorPhase::MidResult => Phase::MidResult,
                ErrorPhase::Commit => Phase::Commit,
            },
            fate: match error.fate {
                WitFate::NotSent => Fate::NotSent,
                WitFate::NotApplied => Fate::NotApplied,
                WitFate::Unknown => Fate::Unknown,
                WitFate::Committed => Fate::Committed,
            },
            attempt: error.attempt,
            elapsed_ms: error.elapsed_ms,
        };
        match policy::decide(&config, &failure) {
            Decision::Surface => RetryDecision::Surface,
            Decision::RetryAfter(ms) => RetryDecision::RetryAfter(ms),
            Decision::Hold(ms) => RetryDecision::Hold(ms),
        }
    }
}

export!(Plugin);
