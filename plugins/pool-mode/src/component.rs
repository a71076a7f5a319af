//! The WIT mapping: world `pipelining-pool-mode-plugin`, its `on-ready` onto
//! [`policy::decide`] and its `may-pipeline` onto [`policy::Pipelining::allows`].

use switchyard_plugin_kit::Plugin;

use crate::policy::{self, Config, Decision, Tx};

switchyard_plugin_kit::plugin!(Config, world = "pipelining-pool-mode-plugin");

use bindings::exports::switchyard::policy::pool_mode::{Guest, ReadyAction, ReadyDecision, Reuse};
use bindings::switchyard::policy::types::{SessionInfo, TxStatus};

impl Guest for Config {
    fn on_ready(session: SessionInfo, _statements: u32) -> ReadyDecision {
        let config = Config::get();
        let tx = match session.tx_status {
            TxStatus::Idle => Tx::Idle,
            TxStatus::InTransaction => Tx::InTransaction,
            TxStatus::Failed => Tx::Failed,
        };
        let action = match policy::decide(config.mode, tx, session.holds_server_state) {
            Decision::Release => ReadyAction::Release,
            Decision::Keep => ReadyAction::Keep,
            Decision::RefuseTransaction => {
                ReadyAction::RefuseTransaction(policy::STATEMENT_REFUSAL.to_string())
            }
        };
        // The decision is a function of the mode (fixed until a reload) and the session's
        // transaction status and server state: the host may reuse it for every session.
        let reuse = if config.reuse { Reuse::Always } else { Reuse::Never };
        ReadyDecision { action, reuse }
    }
}

impl bindings::exports::switchyard::policy::pipelining::Guest for Config {
    fn may_pipeline(_session: SessionInfo) -> bool {
        let pipeline = &Config::get().pipeline;
        if !pipeline.on {
            return false;
        }
        match bindings::switchyard::policy::host::current_session() {
            Some(s) => pipeline.allows(&s.user, &s.database, &s.application_name),
            None => false,
        }
    }
}

