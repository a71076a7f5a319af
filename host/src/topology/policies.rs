//! Who decides for a cluster: its `health` and `switchover` plugins when configured (looked
//! up in the registry's current set at each decision, so a reload applies at the next
//! probe), else the built-in policies. A failing call is answered by the built-in for that
//! decision; the fallback is logged when it starts and when the plugin answers again, not
//! at every probe (the plugin host counts each failure for `SHOW PLUGINS` and opens its
//! breaker after repeated ones).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{Cluster, ClusterView};
use crate::plugins::{CallError, PluginRegistry};
use crate::policy::switchover::{self, Action, Described, NodeInfo, TopologyEvent};
use crate::policy::topology::{evaluate, ProbeInput, Verdict};

#[derive(Default)]
pub(super) struct Policies {
    registry: Option<Arc<PluginRegistry>>,
    health_failing: AtomicBool,
    switchover_failing: AtomicBool,
}

impl Policies {
    pub(super) fn new(registry: Arc<PluginRegistry>) -> Policies {
        Policies {
            registry: Some(registry),
            ..Policies::default()
        }
    }

    /// The verdict on one probe.
    pub(super) fn judge(&self, cluster: &Cluster, input: &ProbeInput<'_>) -> Verdict {
        let plugin = self
            .registry
            .as_ref()
            .and_then(|r| r.current().health(&cluster.name));
        let Some(plugin) = plugin else {
            return evaluate(&input.sample);
        };
        let answer = plugin.evaluate(input);
        track(cluster, "health", &plugin.name, &self.health_failing, &answer);
        answer.unwrap_or_else(|_| evaluate(&input.sample))
    }

    /// The actions for `event`, logged as one decision line.
    pub(super) fn on_event(
        &self,
        cluster: &Cluster,
        event: TopologyEvent,
        view: &ClusterView,
    ) -> Vec<Action> {
        let nodes: Vec<NodeInfo> = view
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeInfo {
                role: n.verdict.role,
                reachable: n.sample.reachable,
                fenced: n.fenced,
                timeline: n.sample.timeline,
                lsn: n.sample.lsn,
                lag_bytes: n.lag_bytes,
                primary: view.primary == Some(i),
            })
            .collect();
        let builtin = || switchover::on_event(event, &nodes, cluster.hold_timeout);
        let plugin = self
            .registry
            .as_ref()
            .and_then(|r| r.current().switchover(&cluster.name));
        let (by, actions) = match plugin {
            None => ("built-in".to_string(), builtin()),
            Some(plugin) => {
                let answer = plugin.on_event(event, &nodes);
                track(
                    cluster,
                    "switchover",
                    &plugin.name,
                    &self.switchover_failing,
                    &answer,
                );
                match answer {
                    Ok(actions) => (format!("plugin {}", plugin.name), actions),
                    Err(_) => (format!("built-in (plugin {} failed)", plugin.name), builtin()),
                }
            }
        };
        let name = |n: usize| cluster.nodes[n].to_string();
        let subject = event
            .node()
            .map_or_else(String::new, |n| format!("(node {})", name(n)));
        let decided = Described(&actions, name);
        if actions.is_empty() && matches!(event, TopologyEvent::NodeChanged(_)) {
            tracing::debug!(cluster = %cluster.name, "switchover {by}: event {}{subject} → {decided}", event.name());
        } else {
            tracing::info!(cluster = %cluster.name, "switchover {by}: event {}{subject} → {decided}", event.name());
        }
        actions
    }
}

/// Logs the start and the end of a run of failed calls to one hook of one cluster.
fn track<T>(
    cluster: &Cluster,
    hook: &str,
    plugin: &str,
    failing: &AtomicBool,
    answer: &Result<T, CallError>,
) {
    match answer {
        Ok(_) => {
            if failing.swap(false, Ordering::Relaxed) {
                tracing::info!(cluster = %cluster.name, plugin, "{hook} plugin answers again");
            }
        }
        Err(e) => {
            if !failing.swap(true, Ordering::Relaxed) {
                tracing::warn!(cluster = %cluster.name, plugin, error = %e, "{hook} plugin failed; the built-in {hook} policy answers until it succeeds again");
            }
        }
    }
}
