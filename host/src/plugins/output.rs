//! What a plugin may put in the proxy's log and counters, bounded whatever it does: a plugin
//! runs on every decision, so a line or a counter name per call would otherwise grow the
//! log and the proxy's memory without limit.
//!
//! - Log lines (`host.log`, and the lines of its stdout/stderr) longer than
//!   [`MAX_LOG_LINE`] bytes are cut, with a marker saying how much was left out.
//! - At most [`LOG_LINES_PER_SECOND`] lines per plugin per second reach the log; the others
//!   are counted and dropped, and the count is logged (`N lines dropped`) with the plugin's
//!   next line that gets through, or at its next call once a second has passed.
//! - Counter names (`host.counter-add`) longer than [`MAX_COUNTER_NAME`] bytes are refused,
//!   and past [`MAX_COUNTERS`] distinct names new ones are dropped; the first refusal of
//!   each kind is logged once per plugin.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest log line a plugin can write, in bytes; a longer one is cut.
pub const MAX_LOG_LINE: usize = 4096;
/// Lines one plugin may log per second; more are dropped and counted.
pub const LOG_LINES_PER_SECOND: u32 = 100;
/// Longest counter name, in bytes.
pub const MAX_COUNTER_NAME: usize = 128;
/// Distinct counter names one plugin may create.
pub const MAX_COUNTERS: usize = 256;

/// `line`, cut to [`MAX_LOG_LINE`] bytes (at a character boundary) with a marker naming what
/// was left out when it is longer.
pub fn capped_line(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_LOG_LINE {
        return line.into();
    }
    let mut end = MAX_LOG_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}... [truncated: {} of {} bytes not shown]",
        &line[..end],
        line.len() - end,
        line.len()
    )
    .into()
}

/// The log-line budget of one plugin: a one-second window shared by its instances.
#[derive(Default)]
pub struct LogBudget {
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    lines: u32,
    dropped: u64,
}

impl LogBudget {
    /// Whether one more line of `plugin` may be logged now. A line dropped is counted; the
    /// count of an earlier window is logged as soon as the next one starts.
    pub fn admit(&self, plugin: &str) -> bool {
        let now = Instant::now();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.started
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            report_dropped(plugin, std::mem::take(&mut w.dropped));
            w.started = Some(now);
            w.lines = 0;
        }
        if w.lines < LOG_LINES_PER_SECOND {
            w.lines += 1;
            true
        } else {
            w.dropped += 1;
            false
        }
    }

    /// Logs the count of lines dropped in a window that has ended (called after each call,
    /// so a plugin that stops logging still has its last drops reported).
    pub fn settle(&self, plugin: &str) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.dropped > 0 && w.started.is_some_and(|s| s.elapsed() >= Duration::from_secs(1)) {
            report_dropped(plugin, std::mem::take(&mut w.dropped));
        }
    }
}

fn report_dropped(plugin: &str, dropped: u64) {
    if dropped > 0 {
        tracing::warn!(
            plugin,
            dropped,
            "plugin log: {dropped} lines dropped (more than {LOG_LINES_PER_SECOND} lines per second)"
        );
    }
}

/// Counters plugins keep through `host.counter-add`, shown by the admin console. Shared by
/// every instance of a plugin, and carried over when a reload replaces the plugin.
#[derive(Default)]
pub struct PluginCounters {
    values: Mutex<BTreeMap<String, i64>>,
    /// Calls to `counter-add`, to spot a plugin that calls it on every decision.
    pub updates: AtomicU64,
    /// Whether a too long name, and a name past [`MAX_COUNTERS`], were logged already.
    warned_long: AtomicBool,
    warned_full: AtomicBool,
}

impl PluginCounters {
    /// Adds `delta` to `name`; a name too long, or a new one past [`MAX_COUNTERS`], is
    /// dropped (the first time each happens, with a log line).
    pub fn add(&self, plugin: &str, name: &str, delta: i64) {
        self.updates.fetch_add(1, Ordering::Relaxed);
        if name.len() > MAX_COUNTER_NAME {
            if !self.warned_long.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    plugin,
                    length = name.len(),
                    "plugin counter refused: a name of {} bytes is longer than {MAX_COUNTER_NAME} (logged once; such names are dropped)",
                    name.len()
                );
            }
            return;
        }
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let full = values.len() >= MAX_COUNTERS;
        match values.get_mut(name) {
            Some(v) => *v = v.saturating_add(delta),
            None if !full => {
                values.insert(name.to_string(), delta);
            }
            None => {
                if !self.warned_full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        plugin,
                        "plugin counter {:?} dropped: the plugin has {MAX_COUNTERS} counters already (logged once; new names are dropped)",
                        capped_name(name)
                    );
                }
            }
        }
    }

    pub fn snapshot(&self) -> Vec<(String, i64)> {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// A counter name as far as it may be shown (names are at most [`MAX_COUNTER_NAME`] bytes).
fn capped_name(name: &str) -> &str {
    let mut end = name.len().min(MAX_COUNTER_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_with_a_marker() {
        let short = "x".repeat(MAX_LOG_LINE);
        assert_eq!(capped_line(&short), short.as_str());
        let long = "é".repeat(MAX_LOG_LINE);
        let cut = capped_line(&long);
        assert!(cut.len() < MAX_LOG_LINE + 100, "{}", cut.len());
        assert!(cut.ends_with("not shown]"), "{cut}");
        assert!(cut.contains(&format!("of {} bytes", long.len())));
    }

    #[test]
    fn lines_past_the_rate_are_dropped() {
        let budget = LogBudget::default();
        let admitted = (0..LOG_LINES_PER_SECOND * 3)
            .filter(|_| budget.admit("p"))
            .count();
        assert_eq!(admitted, LOG_LINES_PER_SECOND as usize);
        let dropped = budget.window.lock().unwrap().dropped;
        assert_eq!(dropped, u64::from(LOG_LINES_PER_SECOND) * 2);
    }

    #[test]
    fn counter_names_are_bounded_in_length_and_number() {
        let counters = PluginCounters::default();
        counters.add("p", &"n".repeat(MAX_COUNTER_NAME + 1), 1);
        assert!(counters.snapshot().is_empty());
        for i in 0..MAX_COUNTERS + 10 {
            counters.add("p", &format!("c{i}"), 1);
        }
        counters.add("p", "c0", 1);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.len(), MAX_COUNTERS);
        assert!(snapshot.contains(&("c0".to_string(), 2)));
    }
}
