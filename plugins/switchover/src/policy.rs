//! The switchover decision and the settings contract, as plain Rust.

use switchyard_plugin_kit::{Plugin, Settings};

/// Settings keys this plugin understands.
pub const KNOWN_SETTINGS: [&str; 3] = ["hold_ms", "drain_ms", "version_tag"];

/// A topology event (mirrors WIT `topology-event`; nodes are indices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    PlannedStop(u32),
    PrimaryLost(u32),
    PrimaryConfirmed(u32),
    Demoted(u32),
    NodeChanged(u32),
    HoldExpired,
}

impl Event {
    /// The event's WIT name, for counters.
    pub fn name(self) -> &'static str {
        match self {
            Event::PlannedStop(_) => "planned-stop",
            Event::PrimaryLost(_) => "primary-lost",
            Event::PrimaryConfirmed(_) => "primary-confirmed",
            Event::Demoted(_) => "demoted",
            Event::NodeChanged(_) => "node-changed",
            Event::HoldExpired => "hold-expired",
        }
    }
}

/// An action (mirrors WIT `action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Hold { hold_ms: u32, drain_ms: u32 },
    MoveTo(u32),
    Resume,
    Fence(u32),
    Drain(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub hold_ms: u32,
    pub drain_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hold_ms: 30_000,
            drain_ms: 5_000,
        }
    }
}

impl Plugin for Config {
    const NAME: &'static str = "switchover";
    const SETTINGS: &'static [&'static str] = &KNOWN_SETTINGS;

    fn new(s: &Settings<'_>) -> Result<Config, String> {
        let defaults = Config::default();
        Ok(Config {
            hold_ms: s.number("hold_ms", defaults.hold_ms)?,
            drain_ms: s.number("drain_ms", defaults.drain_ms)?,
        })
    }

    /// `init` logs `switchover VERSION: hold H ms, drain D ms`.
    fn describe(&self) -> String {
        format!("hold {} ms, drain {} ms", self.hold_ms, self.drain_ms)
    }
}

/// The actions for `event`. `is_primary(n)` says whether node `n` gets new transactions now.
pub fn on_event(config: &Config, event: Event, is_primary: impl Fn(u32) -> bool) -> Vec<Action> {
    match event {
        // Patroni's before_stop, PAUSE NODE, SWITCHOVER: only the primary's stop matters.
        Event::PlannedStop(n) if is_primary(n) => vec![
            Action::Hold {
                hold_ms: config.hold_ms,
                drain_ms: config.drain_ms,
            },
            Action::Drain(n),
        ],
        // What ran there has failed already: nothing to let finish.
        Event::PrimaryLost(n) => vec![
            Action::Hold {
                hold_ms: config.hold_ms,
                drain_ms: 0,
            },
            Action::Drain(n),
        ],
        Event::PrimaryConfirmed(n) => vec![Action::MoveTo(n), Action::Resume],
        Event::Demoted(n) => vec![Action::Fence(n), Action::Drain(n)],
        // A replica's stop, a verdict change: nothing for writes. An expired hold: the held
        // transactions go on and get the host's error if there is still no primary.
        Event::PlannedStop(_) | Event::NodeChanged(_) | Event::HoldExpired => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `init` makes of these settings.
    fn parse_settings(pairs: &[(String, String)]) -> Result<Config, String> {
        switchyard_plugin_kit::configure::<Config>("0.1.0", pairs).map(|c| c.plugin)
    }

    fn primary_is(p: u32) -> impl Fn(u32) -> bool {
        move |n| n == p
    }

    #[test]
    fn a_planned_stop_of_the_primary_holds_and_drains() {
        let c = Config::default();
        assert_eq!(
            on_event(&c, Event::PlannedStop(0), primary_is(0)),
            vec![
                Action::Hold {
                    hold_ms: 30_000,
                    drain_ms: 5_000
                },
                Action::Drain(0)
            ]
        );
        assert!(on_event(&c, Event::PlannedStop(1), primary_is(0)).is_empty());
    }

    #[test]
    fn a_lost_primary_holds_until_another_is_confirmed() {
        let c = Config {
            hold_ms: 20_000,
            ..Config::default()
        };
        assert_eq!(
            on_event(&c, Event::PrimaryLost(0), primary_is(9)),
            vec![
                Action::Hold {
                    hold_ms: 20_000,
                    drain_ms: 0
                },
                Action::Drain(0)
            ]
        );
        assert_eq!(
            on_event(&c, Event::PrimaryConfirmed(1), primary_is(9)),
            vec![Action::MoveTo(1), Action::Resume]
        );
        assert!(on_event(&c, Event::HoldExpired, primary_is(9)).is_empty());
    }

    #[test]
    fn a_demoted_node_is_fenced() {
        let c = Config::default();
        assert_eq!(
            on_event(&c, Event::Demoted(0), primary_is(1)),
            vec![Action::Fence(0), Action::Drain(0)]
        );
        assert!(on_event(&c, Event::NodeChanged(1), primary_is(0)).is_empty());
    }

    #[test]
    fn settings() {
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(parse_settings(&[]).unwrap(), Config::default());
        let c = parse_settings(&pairs(&[("hold_ms", "40000"), ("drain_ms", "0")])).unwrap();
        assert_eq!((c.hold_ms, c.drain_ms), (40_000, 0));
        assert!(parse_settings(&pairs(&[("hold_ms", "soon")])).is_err());
    }
}
