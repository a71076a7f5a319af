//! The wit-bindgen glue: world `pool-mode-plugin`.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

use crate::policy::{self, Decision, Mode, Tx};

wit_bindgen::generate!({
    world: "pool-mode-plugin",
    path: "../../wit",
});

use exports::switchyard::policy::lifecycle::Guest as Lifecycle;
use exports::switchyard::policy::pool_mode::{Guest as PoolMode, ReadyAction, ReadyDecision, Reuse};
use switchyard::policy::host::{self, LogLevel};
use switchyard::policy::types::{SessionInfo, TxStatus};

/// The configured mode (`Mode as u8`); read with one relaxed load per decision.
static MODE: AtomicU8 = AtomicU8::new(Mode::Transaction as u8);
/// Whether decisions are declared reusable (`reuse` setting).
static REUSE: AtomicBool = AtomicBool::new(true);
/// The configured `version_tag`.
static VERSION_TAG: Mutex<Option<String>> = Mutex::new(None);

struct Plugin;

impl Lifecycle for Plugin {
    fn init(settings: Vec<(String, String)>) -> Result<(), String> {
        // std's default panic hook reads the environment (`RUST_BACKTRACE`) before printing,
        // which a host that gives plugins only stdout/stderr turns into a trap that hides the
        // message; this one only writes to stderr. (No panic is expected: belt and braces.)
        std::panic::set_hook(Box::new(|info| eprintln!("pool-mode: {info}")));
        let config = policy::parse_settings(&settings)?;
        let version = policy::version(config.version_tag.as_deref());
        MODE.store(config.mode as u8, Ordering::Relaxed);
        REUSE.store(config.reuse, Ordering::Relaxed);
        *VERSION_TAG.lock().unwrap_or_else(|e| e.into_inner()) = config.version_tag;
        host::log(
            LogLevel::Info,
            &format!("pool-mode {version}: {} pooling", config.mode),
        );
        Ok(())
    }

    fn version() -> String {
        policy::version(VERSION_TAG.lock().unwrap_or_else(|e| e.into_inner()).as_deref())
    }
}

impl PoolMode for Plugin {
    fn on_ready(session: SessionInfo, _statements: u32) -> ReadyDecision {
        let tx = match session.tx_status {
            TxStatus::Idle => Tx::Idle,
            TxStatus::InTransaction => Tx::InTransaction,
            TxStatus::Failed => Tx::Failed,
        };
        let mode = Mode::from_u8(MODE.load(Ordering::Relaxed));
        let action = match policy::decide(mode, tx, session.holds_server_state) {
            Decision::Release => ReadyAction::Release,
            Decision::Keep => ReadyAction::Keep,
            Decision::RefuseTransaction => {
                ReadyAction::RefuseTransaction(policy::STATEMENT_REFUSAL.to_string())
            }
        };
        // The decision is a function of the mode (fixed until a reload) and the session's
        // transaction status and server state: the host may reuse it for every session.
        let reuse = if REUSE.load(Ordering::Relaxed) {
            Reuse::Always
        } else {
            Reuse::Never
        };
        ReadyDecision { action, reuse }
    }
}

export!(Plugin);
