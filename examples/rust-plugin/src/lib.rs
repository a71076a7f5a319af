//! `my-policy`: a pool-mode plugin built from Switchyard's plugin kit, outside the bundled
//! plugins' workspace, with Rust's standard library used as anywhere else.
//!
//! Transaction pooling, except for sessions whose `application_name` is listed in the
//! `session_apps` setting (comma-separated), which keep their server for their whole life.
//! The application name comes from the host (`current-session`) once per session and
//! instance, kept in a `HashMap` (std seeds it from WASI random); the first decision about a
//! session writes one line to stderr, with the time the lookup took (`Instant`), which the
//! proxy logs. A session whose `application_name` is the `panic_app` setting (unset by
//! default; for trying out what a failing plugin looks like) makes it panic: the proxy logs
//! the message, shows it in `SHOW PLUGINS` (`last_error`), and answers with its built-in
//! policy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use switchyard_plugin_kit::{Plugin, Settings};

switchyard_plugin_kit::plugin!(MyPolicy, world = "pool-mode-plugin");

use bindings::exports::switchyard::policy::pool_mode::{Guest, ReadyAction, ReadyDecision, Reuse};
use bindings::switchyard::policy::host;
use bindings::switchyard::policy::types::{SessionInfo, TxStatus};

/// Sessions remembered per instance before the map starts again (the host does not say when
/// a session ends).
const MAX_SESSIONS: usize = 4096;

struct MyPolicy {
    session_apps: Vec<String>,
    panic_app: Option<String>,
    /// Session id → application name.
    apps: Mutex<HashMap<u32, String>>,
}

impl Plugin for MyPolicy {
    const NAME: &'static str = "my-policy";
    const SETTINGS: &'static [&'static str] = &["session_apps", "panic_app"];

    fn new(settings: &Settings) -> Result<Self, String> {
        let session_apps = settings
            .text("session_apps")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        Ok(MyPolicy {
            session_apps,
            panic_app: settings.text("panic_app").map(str::to_string),
            apps: Mutex::new(HashMap::new()),
        })
    }

    fn describe(&self) -> String {
        format!("session pooling for {:?}", self.session_apps)
    }
}

impl MyPolicy {
    /// The session's application name, asked of the host the first time.
    fn application_name(&self, session: u32) -> String {
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(app) = apps.get(&session) {
            return app.clone();
        }
        let started = Instant::now();
        let app = host::current_session()
            .map(|s| s.application_name)
            .unwrap_or_default();
        eprintln!(
            "my-policy: session {session} (application_name {app:?}) looked up in {:?}, {} sessions known",
            started.elapsed(),
            apps.len() + 1
        );
        if apps.len() >= MAX_SESSIONS {
            apps.clear();
        }
        apps.insert(session, app.clone());
        app
    }
}

impl Guest for MyPolicy {
    fn on_ready(session: SessionInfo, _statements: u32) -> ReadyDecision {
        let me = MyPolicy::get();
        let app = me.application_name(session.id);
        if me.panic_app.as_deref() == Some(app.as_str()) {
            panic!("application_name {app:?} is the panic_app setting");
        }
        let idle = session.tx_status == TxStatus::Idle && !session.holds_server_state;
        let action = if idle && !me.session_apps.contains(&app) {
            ReadyAction::Release
        } else {
            ReadyAction::Keep
        };
        // The answer depends on this session's application name: the host may reuse it for
        // the same inputs within the session.
        ReadyDecision {
            action,
            reuse: Reuse::Session,
        }
    }
}
