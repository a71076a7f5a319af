//! `switchyard replay` and `switchyard test-plugin`: a candidate plugin run, outside any
//! proxy, against recorded hook calls (a policy trace, see [`crate::policy::trace`]) or
//! hand-written cases (TOML), its decisions compared with the recorded or expected ones.
//! The candidate runs under the proxy's own runtime rules (it is loaded by the plugin
//! host); each call gets exactly the inputs the trace holds, and both sides are compared
//! as the hook answered, before the proxy's safety clamps.

use std::io::Write;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::config::HookKind;
use crate::plugins::{load_candidate, Plugin, PluginError};
use crate::policy::hooks::{HealthHook, PoolModeHook, RetryHook, RouterHook, SwitchoverHook};
use crate::policy::trace::{self, By, Call};
use crate::policy::HookError;

/// What makes a run impossible (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Trace(#[from] trace::ReadError),
    #[error("{path}: {message}")]
    Cases { path: String, message: String },
    #[error("{path}: {source}")]
    Plugin { path: String, source: PluginError },
}

/// Counts of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Calls made to the candidate.
    pub calls: usize,
    pub same: usize,
    pub different: usize,
    /// Calls the candidate failed (the proxy would have answered with the built-in).
    pub errors: usize,
    /// Records of hooks the candidate does not export, or not asked for with `--hook`.
    pub skipped: usize,
}

impl Summary {
    /// The exit status: 0 when every call gave the same decision, 1 otherwise.
    pub fn status(&self) -> u8 {
        u8::from(self.different + self.errors > 0)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} calls: {} same, {} different, {} candidate errors ({} records skipped)",
            self.calls, self.same, self.different, self.errors, self.skipped
        )
    }
}

/// `k=v` arguments as the settings pairs `init` gets.
pub fn parse_settings(args: &[String]) -> Result<Vec<(String, String)>, ReplayError> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(ReplayError::Usage(format!(
                "--settings {a:?}: expected key=value"
            ))),
        })
        .collect()
}

/// A hook named on the command line.
pub fn parse_hook(name: &str) -> Result<HookKind, ReplayError> {
    HookKind::ALL
        .into_iter()
        .find(|h| h.as_str() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = HookKind::ALL.iter().map(|h| h.as_str()).collect();
            ReplayError::Usage(format!(
                "--hook {name:?}: unknown hook; hooks: {}",
                known.join(", ")
            ))
        })
}

fn load(path: &Path, settings: &[(String, String)]) -> Result<Plugin, ReplayError> {
    load_candidate(path, settings).map_err(|source| ReplayError::Plugin {
        path: path.display().to_string(),
        source,
    })
}

/// Replays the trace at `trace_path` against the plugin at `plugin_path` (its `init` given
/// `settings`), only calls of `hook` if given; writes each difference and the summary to
/// `out`.
pub fn replay(
    plugin_path: &Path,
    trace_path: &Path,
    hook: Option<HookKind>,
    settings: &[(String, String)],
    out: &mut dyn Write,
) -> Result<Summary, ReplayError> {
    let records = trace::read(trace_path)?;
    let plugin = load(plugin_path, settings)?;
    let mut summary = Summary::default();
    for (line, record) in records {
        let recorded_by = match (record.by, &record.plugin) {
            (By::BuiltIn, _) => "recorded (built-in)".to_string(),
            (By::Plugin, Some(p)) => format!("recorded (plugin {p})"),
            (By::Fallback, Some(p)) => format!("recorded (built-in, plugin {p} failed)"),
            (_, None) => "recorded (plugin)".to_string(),
        };
        compare(
            &plugin,
            record.call,
            hook,
            &format!("line {line}"),
            &recorded_by,
            &mut summary,
            out,
        );
    }
    let _ = writeln!(out, "{}: {summary}", trace_path.display());
    Ok(summary)
}

/// A file of hand-written cases: `[[case]]` tables, each a hook call as a trace records
/// it (`hook` and its inputs) with `name` and the expected `decision`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    #[serde(flatten)]
    call: Call,
}

/// Runs the cases at `cases_path` against the plugin at `plugin_path`.
pub fn test_plugin(
    plugin_path: &Path,
    cases_path: &Path,
    settings: &[(String, String)],
    out: &mut dyn Write,
) -> Result<Summary, ReplayError> {
    let shown = cases_path.display().to_string();
    let text = std::fs::read_to_string(cases_path).map_err(|e| ReplayError::Cases {
        path: shown.clone(),
        message: format!("cannot read: {e}"),
    })?;
    let cases: Cases = toml::from_str(&text).map_err(|e| ReplayError::Cases {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let plugin = load(plugin_path, settings)?;
    let mut summary = Summary::default();
    for (i, case) in cases.case.into_iter().enumerate() {
        let at = format!("case {} ({})", i + 1, case.name);
        compare(&plugin, case.call, None, &at, "expected", &mut summary, out);
    }
    if summary.skipped > 0 {
        let _ = writeln!(
            out,
            "{shown}: cases of hooks the plugin does not export were skipped"
        );
    }
    let _ = writeln!(out, "{shown}: {summary}");
    Ok(summary)
}

/// Asks the candidate `call`'s question, compares its answer with the call's decision and
/// counts (and prints, at `at`) the outcome.
fn compare(
    plugin: &Plugin,
    call: Call,
    only: Option<HookKind>,
    at: &str,
    recorded_by: &str,
    summary: &mut Summary,
    out: &mut dyn Write,
) {
    let kind = call.hook();
    if only.is_some_and(|h| h != kind) || !plugin.exports.contains(&kind) {
        summary.skipped += 1;
        return;
    }
    summary.calls += 1;
    let about = describe(&call);
    let (recorded, candidate) = ask(plugin, call);
    match candidate {
        Ok(answer) if answer == recorded => summary.same += 1,
        Ok(answer) => {
            summary.different += 1;
            let _ = writeln!(
                out,
                "{at}: {} {about}: {recorded_by} {recorded}, candidate {answer}",
                kind.as_str()
            );
        }
        Err(e) => {
            summary.errors += 1;
            let _ = writeln!(
                out,
                "{at}: {} {about}: {recorded_by} {recorded}, candidate failed: {e}",
                kind.as_str()
            );
        }
    }
}

fn json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The call's decision, and the candidate's answer to the same inputs (as JSON values).
fn ask(plugin: &Plugin, call: Call) -> (Value, Result<Value, HookError>) {
    match call {
        Call::PoolMode {
            mut session,
            mode,
            facts,
            decision,
        } => (
            json(decision),
            plugin.on_ready(&mut session, mode, facts).map(json),
        ),
        Call::MayPipeline {
            mut session,
            setting,
            decision,
        } => (
            json(decision),
            plugin.may_pipeline(&mut session, setting).map(json),
        ),
        Call::Retry {
            mut session,
            status,
            failed,
            budget,
            decision,
        } => (
            json(decision),
            plugin.on_error(&mut session, status, &failed, budget).map(json),
        ),
        Call::Router {
            mut session,
            request,
            nodes,
            decision,
        } => (
            json(decision),
            plugin.route(&mut session, &request, &nodes).map(json),
        ),
        Call::Health { input, decision, .. } => (json(decision), plugin.evaluate(&input).map(json)),
        Call::Switchover {
            event,
            nodes,
            hold_timeout,
            decision,
            ..
        } => (
            json(decision),
            plugin.on_event(event, &nodes, hold_timeout).map(json),
        ),
    }
}

/// The inputs of `call` in a few words, for a difference line.
fn describe(call: &Call) -> String {
    let session =
        |s: &crate::policy::SessionFacts| format!("session {} {}@{}", s.id(), s.user(), s.database());
    match call {
        Call::PoolMode {
            session: s,
            mode,
            facts,
            ..
        } => format!("({}, mode {}, facts {})", session(s), json(mode), json(facts)),
        Call::MayPipeline {
            session: s, setting, ..
        } => format!("({}, may-pipeline, setting {setting})", session(s)),
        Call::Retry {
            session: s, failed, ..
        } => format!(
            "({}, sqlstate {}, phase {}, fate {}, attempt {})",
            session(s),
            failed.sqlstate,
            json(failed.phase),
            json(failed.fate),
            failed.attempt
        ),
        Call::Router {
            session: s, request, ..
        } => format!("({}, request {})", session(s), json(request)),
        Call::Health { cluster, input, .. } => format!(
            "(cluster {cluster}, node {}, sample {})",
            input.node,
            json(input.sample)
        ),
        Call::Switchover {
            cluster,
            event,
            nodes,
            ..
        } => {
            let primary = nodes.iter().position(|n| n.primary);
            format!(
                "(cluster {cluster}, event {}, {} nodes, traffic on {})",
                json(event),
                nodes.len(),
                primary.map_or("none".to_string(), |p| format!("node {p}"))
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_hooks_from_the_command_line() {
        let pairs = parse_settings(&["hold_ms=40000".into(), "tag=a=b".into()]).unwrap();
        assert_eq!(
            pairs,
            vec![
                ("hold_ms".to_string(), "40000".to_string()),
                ("tag".to_string(), "a=b".to_string())
            ]
        );
        let e = parse_settings(&["hold_ms".into()]).unwrap_err().to_string();
        assert!(e.contains("hold_ms") && e.contains("key=value"), "{e}");
        assert_eq!(parse_hook("pool-mode").unwrap(), HookKind::PoolMode);
        let e = parse_hook("failover").unwrap_err().to_string();
        assert!(e.contains("failover") && e.contains("switchover"), "{e}");
    }

    #[test]
    fn the_status_is_one_only_when_something_differs() {
        let mut summary = Summary {
            calls: 3,
            same: 3,
            ..Default::default()
        };
        assert_eq!(summary.status(), 0);
        summary.errors = 1;
        assert_eq!(summary.status(), 1);
        summary.errors = 0;
        summary.different = 1;
        assert_eq!(summary.status(), 1);
    }
}
