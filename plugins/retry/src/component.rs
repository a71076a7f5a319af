//! The WIT mapping: world `retry-plugin`, its `on-error` onto [`policy::decide`].

use switchyard_plugin_kit::Plugin;

use crate::policy::{self, Config, Decision, Failure, Fate, Phase};

switchyard_plugin_kit::plugin!(Config, world = "retry-plugin");

use bindings::exports::switchyard::policy::retry::{Guest, RetryDecision};
use bindings::switchyard::policy::types::{ErrorInfo, ErrorPhase, Fate as WitFate, SessionInfo};

impl Guest for Config {
    fn on_error(_session: SessionInfo, error: ErrorInfo) -> RetryDecision {
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
        match policy::decide(Config::get(), &failure) {
            Decision::Surface => RetryDecision::Surface,
            Decision::RetryAfter(ms) => RetryDecision::RetryAfter(ms),
            Decision::Hold(ms) => RetryDecision::Hold(ms),
        }
    }
}
