//! The wit-bindgen glue: world `switchover-plugin`.

use std::sync::Mutex;

use crate::policy::{self, Config, Event};

wit_bindgen::generate!({
    world: "switchover-plugin",
    path: "../../wit",
});

use exports::switchyard::policy::lifecycle::Guest as Lifecycle;
use exports::switchyard::policy::switchover::{
    Action as WitAction, Guest as Switchover, HoldPlan, TopologyEvent,
};
use switchyard::policy::host::{self, LogLevel};
use switchyard::policy::types::{NodeInfo, Role};

static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

struct Plugin;

impl Lifecycle for Plugin {
    fn init(settings: Vec<(String, String)>) -> Result<(), String> {
        std::panic::set_hook(Box::new(|info| eprintln!("switchover: {info}")));
        let config = policy::parse_settings(&settings)?;
        host::log(
            LogLevel::Info,
            &format!(
                "switchover {}: hold {} ms, drain {} ms",
                plugin_settings::version(env!("CARGO_PKG_VERSION"), config.version_tag.as_deref()),
                config.hold_ms,
                config.drain_ms
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

impl Switchover for Plugin {
    fn on_event(event: TopologyEvent, nodes: Vec<NodeInfo>) -> Vec<WitAction> {
        let config = CONFIG
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
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
        policy::on_event(&config, event, is_primary)
            .into_iter()
            .map(|a| match a {
                policy::Action::Hold { hold_ms, drain_ms } => WitAction::Hold(HoldPlan { hold_ms, drain_ms }),
                policy::Action::MoveTo(n) => WitAction::MoveTo(n),
                policy::Action::Resume => WitAction::Resume,
                policy::Action::Fence(n) => WitAction::Fence(n),
                policy::Action::Drain(n) => WitAction::Drain(n),
            })
            .collect()
    }
}

export!(Plugin);
