//! What triggers a reload besides the admin console's `RELOAD`: SIGHUP (re-read the
//! configuration file) and a changed plugin file (re-load that plugin). The reload itself
//! is `ProxyState::reload`; this module only decides when.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::plugins::{ReloadOutcome, ReloadReport};
use crate::state::ProxyState;

/// Runs the SIGHUP handler and the plugin file watcher until the process ends.
pub async fn run(state: Arc<ProxyState>) {
    let watch_interval = state.config.proxy.plugin_watch_interval;
    let hup = tokio::spawn(on_sighup(state.clone()));
    if !watch_interval.is_zero() {
        watch_plugin_files(state, watch_interval).await;
    }
    let _ = hup.await;
}

async fn on_sighup(state: Arc<ProxyState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGHUP handler; use the admin console's RELOAD");
            return;
        }
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the configuration");
        crate::notify::reloading();
        match state.reload().await {
            Ok(r) => log_summary(&r.plugins),
            Err(e) => tracing::error!(error = %e, "reload refused; the running configuration stays"),
        }
        crate::notify::reloaded();
    }
}

/// Identity of a file as the watcher compares it: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Polls the plugin files; a file whose stamp changed and then held still for one more
/// interval (a copy in progress is not loaded half-written) triggers a reload of the
/// changed plugins. Polling, rather than inotify, also sees a file replaced by a rename
/// or through a symlink swap, as deployments do.
async fn watch_plugin_files(state: Arc<ProxyState>, interval: Duration) {
    let mut seen: HashMap<PathBuf, Stamp> = HashMap::new();
    let mut pending: HashMap<PathBuf, Stamp> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let files = state.plugins.watched_files();
        seen.retain(|p, _| files.contains(p));
        pending.retain(|p, _| files.contains(p));
        let mut settled = false;
        for path in files {
            let now = stamp(&path);
            match seen.get(&path) {
                None => {
                    seen.insert(path, now);
                }
                Some(before) if *before == now => {
                    pending.remove(&path);
                }
                Some(_) => match pending.get(&path) {
                    Some(p) if *p == now => {
                        tracing::info!(file = %path.display(), "plugin file changed: reloading");
                        pending.remove(&path);
                        seen.insert(path, now);
                        settled = true;
                    }
                    _ => {
                        pending.insert(path, now);
                    }
                },
            }
        }
        if settled {
            log_summary(&state.reload_plugin_files().await);
        }
    }
}

/// One summary line per reload (the registry logs each plugin it loads or fails to load).
fn log_summary(report: &ReloadReport) {
    let count = |f: fn(&ReloadOutcome) -> bool| report.plugins.iter().filter(|(_, o)| f(o)).count();
    tracing::info!(
        loaded = count(|o| matches!(o, ReloadOutcome::Loaded { .. })),
        unchanged = count(|o| matches!(o, ReloadOutcome::Unchanged)),
        failed = count(|o| matches!(o, ReloadOutcome::Failed(_))),
        removed = count(|o| matches!(o, ReloadOutcome::Removed)),
        "plugin reload done"
    );
}
