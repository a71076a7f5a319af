//! Per-process scratch directories, and cleanup after test processes that
//! died without running their destructors.
//!
//! Every test process owns `<scratch root>/run-<pid>-<start time>/`. Each
//! process the test bed spawns (postmaster, proxy) is recorded there in a
//! `*.proc` file holding its pid and kernel start time. Normal teardown is
//! `Drop` plus the [`crate::watchdog`]; as a last line of defence, the first
//! test bed use in any later process scans for run directories whose owner is
//! gone, kills the recorded processes that are still alive (the start time
//! guards against pid reuse), and deletes the directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{env, tools};

/// Kernel start time (in clock ticks since boot) of a process, or `None` if
/// it does not exist.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; the
    // fields after the last ')' are well-formed. starttime is field 22.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn process_is(pid: u32, start: u64) -> bool {
    proc_start_time(pid) == Some(start)
}

/// This process's run directory, created on first use (which also triggers
/// the cleanup of stale run directories).
pub fn run_dir() -> Result<&'static Path> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir);
    }
    let root = env::scratch_root()?;
    cleanup_stale(root);
    let pid = std::process::id();
    let start = proc_start_time(pid).unwrap_or(0);
    let dir = root.join(format!("run-{pid}-{start}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    env::set_mode(&dir, 0o755)?;
    Ok(DIR.get_or_init(|| dir))
}

/// A fresh, empty, uniquely named directory inside this process's run dir.
pub fn fresh_dir(prefix: &str) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = run_dir()?.join(format!("{prefix}-{n}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    env::set_mode(&dir, 0o755)?;
    Ok(dir)
}

/// Record a spawned process so that a later run can kill it if this process
/// dies without cleaning up.
pub fn record_process(dir: &Path, name: &str, pid: u32) {
    if let Some(start) = proc_start_time(pid) {
        let _ = std::fs::write(dir.join(format!("{name}.proc")), format!("{pid} {start}\n"));
    }
}

/// Whether scratch data should be kept for post-mortem debugging
/// (`SWITCHYARD_KEEP_TMP=1`).
pub fn keep_tmp() -> bool {
    std::env::var_os("SWITCHYARD_KEEP_TMP").is_some_and(|v| v != "0" && !v.is_empty())
}

/// Remove a directory tree, ignoring errors (teardown must not panic).
pub fn remove_dir(dir: &Path) {
    if !keep_tmp() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn cleanup_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("run-") else {
            continue;
        };
        let mut parts = rest.splitn(2, '-');
        let (Some(Ok(pid)), Some(Ok(start))) = (
            parts.next().map(str::parse::<u32>),
            parts.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        if process_is(pid, start) {
            continue; // owner still running (possibly a concurrent test binary)
        }
        let dir = entry.path();
        kill_recorded(&dir, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Kill every recorded, still-running process under `dir` (up to `depth`
/// levels down): SIGQUIT first (immediate shutdown for a postmaster), then
/// SIGKILL for anything that lingers.
fn kill_recorded(dir: &Path, depth: u32) {
    let mut victims = Vec::new();
    collect_recorded(dir, depth, &mut victims);
    for &(pid, start) in &victims {
        if process_is(pid, start) {
            // A pid verified by its start time.
            tools::signal(pid, libc::SIGQUIT);
        }
    }
    for _ in 0..50 {
        if !victims.iter().any(|&(p, s)| process_is(p, s)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for &(pid, start) in &victims {
        if process_is(pid, start) {
            tools::signal(pid, libc::SIGKILL);
        }
    }
}

fn collect_recorded(dir: &Path, depth: u32, out: &mut Vec<(u32, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "proc") {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let mut it = text.split_whitespace();
                if let (Some(Ok(pid)), Some(Ok(start))) =
                    (it.next().map(str::parse::<u32>), it.next().map(str::parse::<u64>))
                {
                    out.push((pid, start));
                }
            }
        } else if depth > 0 && entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_recorded(&path, depth - 1, out);
        }
    }
}
