//! The health verdict and the settings contract, as plain Rust.

use std::collections::BTreeMap;
use std::sync::Mutex;

use switchyard_plugin_kit::{Plugin, Settings};

/// Settings keys this plugin understands.
pub const KNOWN_SETTINGS: [&str; 3] = ["max_lag_bytes", "failures_before_down", "version_tag"];

/// A node's role (mirrors WIT `role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
    Unknown,
}

/// One probe of one node (mirrors the WIT `probe-sample` fields the verdict uses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub reachable: bool,
    pub in_recovery: bool,
    pub lsn: u64,
    /// The primary's last known LSN, 0 when unknown.
    pub primary_lsn: u64,
    /// Failed probes in a row, this one included.
    pub consecutive_failures: u32,
}

/// What a node is good for (mirrors WIT `verdict`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub role: Role,
    pub usable_for_reads: bool,
    pub usable_for_writes: bool,
    pub lag_bytes: u64,
}

/// A node nobody can use.
pub const DOWN: Verdict = Verdict {
    role: Role::Unknown,
    usable_for_reads: false,
    usable_for_writes: false,
    lag_bytes: 0,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub max_lag_bytes: Option<u64>,
    pub failures_before_down: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_lag_bytes: None,
            failures_before_down: 1,
        }
    }
}

impl Config {
    fn from_settings(s: &Settings<'_>) -> Result<Config, String> {
        let failures_before_down = s.number("failures_before_down", 1u32)?;
        if failures_before_down == 0 {
            return Err("setting \"failures_before_down\" must be at least 1".into());
        }
        Ok(Config {
            max_lag_bytes: s
                .text("max_lag_bytes")
                .map(|_| s.number("max_lag_bytes", 0u64))
                .transpose()?,
            failures_before_down,
        })
    }
}

/// The plugin: its settings, and each node's last verdict from a probe that answered, as this
/// instance saw it (an instance that has not seen a node up judges a failed probe of it as
/// down).
pub struct Health {
    pub config: Config,
    last_up: Mutex<BTreeMap<u32, Verdict>>,
}

impl Health {
    /// The verdict on `sample` of `node` ([`evaluate`]), remembered when the node answered.
    pub fn judge(&self, node: u32, sample: &Sample) -> Verdict {
        let mut last_up = self.last_up.lock().unwrap_or_else(|e| e.into_inner());
        let verdict = evaluate(&self.config, sample, last_up.get(&node).copied());
        if sample.reachable {
            last_up.insert(node, verdict);
        }
        verdict
    }
}

impl Plugin for Health {
    const NAME: &'static str = "health";
    const SETTINGS: &'static [&'static str] = &KNOWN_SETTINGS;

    fn new(s: &Settings<'_>) -> Result<Health, String> {
        Ok(Health {
            config: Config::from_settings(s)?,
            last_up: Mutex::new(BTreeMap::new()),
        })
    }

    /// `init` logs `health VERSION: max_lag_bytes M, failures_before_down F`.
    fn describe(&self) -> String {
        format!(
            "max_lag_bytes {}, failures_before_down {}",
            self.config
                .max_lag_bytes
                .map_or("unlimited".to_string(), |m| m.to_string()),
            self.config.failures_before_down
        )
    }
}

/// The verdict on `sample`. `last_up` is this node's last verdict from a probe that
/// answered, if known: a failed probe keeps it while fewer than `failures_before_down`
/// probes in a row have failed.
pub fn evaluate(config: &Config, sample: &Sample, last_up: Option<Verdict>) -> Verdict {
    if !sample.reachable {
        return match last_up {
            Some(v) if sample.consecutive_failures < config.failures_before_down => v,
            _ => DOWN,
        };
    }
    if !sample.in_recovery {
        return Verdict {
            role: Role::Primary,
            usable_for_reads: true,
            usable_for_writes: true,
            lag_bytes: 0,
        };
    }
    let lag_bytes = match sample.primary_lsn {
        0 => 0,
        p => p.saturating_sub(sample.lsn),
    };
    Verdict {
        role: Role::Replica,
        usable_for_reads: config.max_lag_bytes.is_none_or(|max| lag_bytes <= max),
        usable_for_writes: false,
        lag_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `init` makes of these settings.
    fn parse_settings(pairs: &[(String, String)]) -> Result<Config, String> {
        switchyard_plugin_kit::configure::<Health>("0.1.0", pairs).map(|c| c.plugin.config)
    }

    fn up(in_recovery: bool, lsn: u64, primary_lsn: u64) -> Sample {
        Sample {
            reachable: true,
            in_recovery,
            lsn,
            primary_lsn,
            consecutive_failures: 0,
        }
    }

    fn failed(n: u32) -> Sample {
        Sample {
            consecutive_failures: n,
            ..Sample::default()
        }
    }

    #[test]
    fn roles_follow_recovery() {
        let c = Config::default();
        let p = evaluate(&c, &up(false, 100, 0), None);
        assert_eq!(p.role, Role::Primary);
        assert!(p.usable_for_writes && p.usable_for_reads);
        let r = evaluate(&c, &up(true, 60, 100), None);
        assert_eq!(
            (r.role, r.usable_for_writes, r.usable_for_reads),
            (Role::Replica, false, true)
        );
        assert_eq!(r.lag_bytes, 40);
    }

    #[test]
    fn a_lagging_replica_is_not_read_from() {
        let c = Config {
            max_lag_bytes: Some(10),
            ..Config::default()
        };
        assert!(!evaluate(&c, &up(true, 60, 100), None).usable_for_reads);
        assert!(evaluate(&c, &up(true, 95, 100), None).usable_for_reads);
        assert!(
            evaluate(&c, &up(true, 60, 0), None).usable_for_reads,
            "unknown lag is no lag"
        );
    }

    #[test]
    fn lost_probes_are_tolerated_up_to_the_setting() {
        let primary = evaluate(&Config::default(), &up(false, 1, 0), None);
        assert_eq!(evaluate(&Config::default(), &failed(1), Some(primary)), DOWN);
        let tolerant = Config {
            failures_before_down: 2,
            ..Config::default()
        };
        assert_eq!(evaluate(&tolerant, &failed(1), Some(primary)), primary);
        assert_eq!(evaluate(&tolerant, &failed(2), Some(primary)), DOWN);
        assert_eq!(evaluate(&tolerant, &failed(1), None), DOWN, "never seen up");
    }

    #[test]
    fn an_instance_remembers_each_node_that_answered() {
        let pairs = [("failures_before_down".to_string(), "2".to_string())];
        let health = switchyard_plugin_kit::configure::<Health>("0.1.0", &pairs)
            .unwrap()
            .plugin;
        let primary = health.judge(1, &up(false, 1, 0));
        assert_eq!(primary.role, Role::Primary);
        assert_eq!(
            health.judge(1, &failed(1)),
            primary,
            "one lost probe is tolerated"
        );
        assert_eq!(health.judge(2, &failed(1)), DOWN, "node 2 never answered here");
        assert_eq!(health.judge(1, &failed(2)), DOWN);
    }

    #[test]
    fn settings() {
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(parse_settings(&[]).unwrap(), Config::default());
        let c = parse_settings(&pairs(&[
            ("max_lag_bytes", "1048576"),
            ("failures_before_down", "2"),
        ]))
        .unwrap();
        assert_eq!((c.max_lag_bytes, c.failures_before_down), (Some(1 << 20), 2));
        assert!(parse_settings(&pairs(&[("failures_before_down", "0")])).is_err());
        assert!(parse_settings(&pairs(&[("max_lag", "1")]))
            .unwrap_err()
            .contains("known settings"));
    }
}
