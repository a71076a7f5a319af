//! The WIT mapping: world `switchover-plugin`, its `on-event` onto [`policy::on_event`].

use switchyard_plugin_kit::Plugin;

use crate::policy::{self, Config, Event};

switchyard_plugin_kit::plugin!(Config, world = "switchover-plugin");

use bindings::exports::switchyard::policy::switchover::{Action, Guest, HoldPlan, TopologyEvent};
use bindings::switchyard::policy::host;
use bindings::switchyard::policy::types::{NodeInfo, Role};

impl Guest for Config {
    fn on_event(event: TopologyEvent, nodes: Vec<NodeInfo>) -> Vec<Action> {
        let event = match event {
            TopologyEvent::PlannedStop(n) => Event::PlannedStop(n),
            TopologyEvent::PrimaryLost(n) => Event::PrimaryLost(n),
            TopologyEvent::PrimaryConfirmed(n) => Event::PrimaryConfirmed(n),
            TopologyEvent::Demoted(n) => Event::Demoted(n),
            TopologyEvent::NodeChanged(n) => Event::NodeChanged(n),
            TopologyEvent::HoldExpired => Event::HoldExpired,
        };
        host::counter_add(&format!("events.{}", event.name()), 1);
        // The node new transactions go to now is the one the topology lists as primary and
        // not fenced.
        let is_primary = |n: u32| {
            nodes
                .iter()
                .any(|i| i.id == n && i.role == Role::Primary && !i.fenced)
        };
        policy::on_event(Config::get(), event, is_primary)
            .into_iter()
            .map(|a| match a {
                policy::Action::Hold { hold_ms, drain_ms } => Action::Hold(HoldPlan { hold_ms, drain_ms }),
                policy::Action::MoveTo(n) => Action::MoveTo(n),
                policy::Action::Resume => Action::Resume,
                policy::Action::Fence(n) => Action::Fence(n),
                policy::Action::Drain(n) => Action::Drain(n),
            })
            .collect()
    }
}
