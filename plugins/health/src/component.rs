//! The wit-bindgen glue: world `health-plugin`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::policy::{self, Config, Role, Sample, Verdict};

wit_bindgen::generate!({
    world: "health-plugin",
    path: "../../wit",
});

use exports::switchyard::policy::health::{Guest as Health, ProbeSample, Verdict as WitVerdict};
use exports::switchyard::policy::lifecycle::Guest as Lifecycle;
use switchyard::policy::host::{self, LogLevel};
use switchyard::policy::types::Role as WitRole;

static CONFIG: Mutex<Option<Config>> = Mutex::new(None);
/// Each node's last verdict from a probe that answered, as this instance saw it (an
/// instance that has not seen a node up judges a failed probe of it as down). A BTreeMap:
/// std's HashMap seeds itself from WASI random interfaces the host does not offer.
static LAST_UP: Mutex<BTreeMap<u32, Verdict>> = Mutex::new(BTreeMap::new());

struct Plugin;

impl Lifecycle for Plugin {
    fn init(settings: Vec<(String, String)>) -> Result<(), String> {
        std::panic::set_hook(Box::new(|info| eprintln!("health: {info}")));
        let config = policy::parse_settings(&settings)?;
        host::log(
            LogLevel::Info,
            &format!(
                "health {}: max_lag_bytes {}, failures_before_down {}",
                plugin_settings::version(env!("CARGO_PKG_VERSION"), config.version_tag.as_deref()),
                config
                    .max_lag_bytes
                    .map_or("unlimited".to_string(), |m| m.to_string()),
                config.failures_before_down
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

impl Health for Plugin {
    fn evaluate(sample: ProbeSample) -> WitVerdict {
        let config = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
        let config = config.clone().unwrap_or_default();
        let mut last_up = LAST_UP.lock().unwrap_or_else(|e| e.into_inner());
        let input = Sample {
            reachable: sample.reachable,
            in_recovery: sample.in_recovery,
            lsn: sample.lsn,
            primary_lsn: sample.primary_lsn,
            consecutive_failures: sample.consecutive_failures,
        };
        let verdict = policy::evaluate(&config, &input, last_up.get(&sample.node).copied());
        if sample.reachable {
            last_up.insert(sample.node, verdict);
        }
        WitVerdict {
            role: match verdict.role {
                Role::Primary => WitRole::Primary,
                Role::Replica => WitRole::Replica,
                Role::Unknown => WitRole::Unknown,
            },
            usable_for_reads: verdict.usable_for_reads,
            usable_for_writes: verdict.usable_for_writes,
            lag_bytes: verdict.lag_bytes,
        }
    }
}

export!(Plugin);
