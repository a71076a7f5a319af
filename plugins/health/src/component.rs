//! The WIT mapping: world `health-plugin`, its `evaluate` onto [`Health::judge`].

use switchyard_plugin_kit::Plugin;

use crate::policy::{Health, Role, Sample};

switchyard_plugin_kit::plugin!(Health, world = "health-plugin");

use bindings::exports::switchyard::policy::health::{Guest, ProbeSample, Verdict};
use bindings::switchyard::policy::types::Role as WitRole;

impl Guest for Health {
    fn evaluate(sample: ProbeSample) -> Verdict {
        let input = Sample {
            reachable: sample.reachable,
            in_recovery: sample.in_recovery,
            lsn: sample.lsn,
            primary_lsn: sample.primary_lsn,
            consecutive_failures: sample.consecutive_failures,
        };
        let verdict = Health::get().judge(sample.node, &input);
        Verdict {
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
