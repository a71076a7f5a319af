//! The retry decision and the settings contract, as plain Rust.

use switchyard_plugin_kit::{Plugin, Settings};

/// Settings keys this plugin understands.
pub const KNOWN_SETTINGS: [&str; 3] = ["max_attempts", "budget_ms", "version_tag"];

/// Where the request failed (mirrors WIT `error-phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Connect,
    BeforeAnyResult,
    MidResult,
    Commit,
}

/// What is known of its effect (mirrors WIT `fate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    NotSent,
    NotApplied,
    Unknown,
    Committed,
}

/// A failed request (mirrors the WIT `error-info` fields the decision uses).
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    pub sqlstate: &'a str,
    pub phase: Phase,
    pub fate: Fate,
    pub attempt: u32,
    pub elapsed_ms: u32,
}

/// The decision (mirrors WIT `retry-decision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Surface,
    RetryAfter(u32),
    Hold(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub max_attempts: u32,
    pub budget_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_attempts: 5,
            budget_ms: 30_000,
        }
    }
}

impl Plugin for Config {
    const NAME: &'static str = "retry";
    const SETTINGS: &'static [&'static str] = &KNOWN_SETTINGS;

    fn new(s: &Settings<'_>) -> Result<Config, String> {
        let defaults = Config::default();
        Ok(Config {
            max_attempts: s.number("max_attempts", defaults.max_attempts)?,
            budget_ms: s.number("budget_ms", defaults.budget_ms)?,
        })
    }

    /// `init` logs `retry VERSION: at most N attempts within B ms`.
    fn describe(&self) -> String {
        format!(
            "at most {} attempts within {} ms",
            self.max_attempts, self.budget_ms
        )
    }
}

/// Whether the request provably did not take effect and the client saw none of it.
pub fn allowed(f: &Failure<'_>) -> bool {
    matches!(f.fate, Fate::NotSent | Fate::NotApplied)
        && matches!(f.phase, Phase::Connect | Phase::BeforeAnyResult)
}

/// Delay before attempt `attempt + 1`: 10 ms, doubling up to 160 ms.
pub fn backoff_ms(attempt: u32) -> u32 {
    10 << (attempt.clamp(1, 5) - 1)
}

pub fn decide(config: &Config, f: &Failure<'_>) -> Decision {
    if !allowed(f) || f.attempt > config.max_attempts || f.elapsed_ms >= config.budget_ms {
        return Decision::Surface;
    }
    match f.sqlstate {
        // The node is shutting down or refused a write: wait for the topology to move.
        "57P01" | "57P02" | "57P03" | "25006" | "08006" | "08001" => {
            Decision::Hold(config.budget_ms - f.elapsed_ms)
        }
        _ => Decision::RetryAfter(backoff_ms(f.attempt)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `init` makes of these settings.
    fn parse_settings(pairs: &[(String, String)]) -> Result<Config, String> {
        switchyard_plugin_kit::configure::<Config>("0.1.0", pairs).map(|c| c.plugin)
    }

    fn failure(sqlstate: &str, phase: Phase, fate: Fate, attempt: u32) -> Failure<'_> {
        Failure {
            sqlstate,
            phase,
            fate,
            attempt,
            elapsed_ms: 100,
        }
    }

    #[test]
    fn only_what_did_not_take_effect_is_retried() {
        let c = Config::default();
        let shutdown = failure("57P01", Phase::BeforeAnyResult, Fate::NotApplied, 1);
        assert_eq!(decide(&c, &shutdown), Decision::Hold(29_900));
        let lost = failure("08006", Phase::Commit, Fate::Unknown, 1);
        assert_eq!(decide(&c, &lost), Decision::Surface);
        let committed = failure("57P01", Phase::Commit, Fate::Committed, 1);
        assert_eq!(decide(&c, &committed), Decision::Surface);
        let streamed = failure("57P01", Phase::MidResult, Fate::NotApplied, 1);
        assert_eq!(decide(&c, &streamed), Decision::Surface);
        let refused = failure("25006", Phase::BeforeAnyResult, Fate::NotApplied, 1);
        assert_eq!(decide(&c, &refused), Decision::Hold(29_900));
    }

    #[test]
    fn other_errors_back_off() {
        let c = Config::default();
        let odd = failure("53300", Phase::Connect, Fate::NotSent, 2);
        assert_eq!(decide(&c, &odd), Decision::RetryAfter(20));
    }

    #[test]
    fn attempts_and_budget_are_bounded() {
        let c = Config {
            max_attempts: 2,
            budget_ms: 50,
        };
        let third = failure("53300", Phase::Connect, Fate::NotSent, 3);
        assert_eq!(decide(&c, &third), Decision::Surface);
        let late = failure("57P01", Phase::Connect, Fate::NotSent, 1);
        assert_eq!(
            decide(&c, &late),
            Decision::Surface,
            "100 ms elapsed of a 50 ms budget"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff_ms(1), 10);
        assert_eq!(backoff_ms(2), 20);
        assert_eq!(backoff_ms(9), 160);
    }

    #[test]
    fn settings() {
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(parse_settings(&[]).unwrap(), Config::default());
        let c = parse_settings(&pairs(&[("max_attempts", "3"), ("budget_ms", "1000")])).unwrap();
        assert_eq!((c.max_attempts, c.budget_ms), (3, 1000));
        assert!(parse_settings(&pairs(&[("attempts", "3")])).is_err());
    }
}
