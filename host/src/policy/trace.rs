//! Policy traces: every hook call through the facade ([`super::Policies`]) recorded as one
//! JSON line (its time, the hook, the exact input records and the decision, and who
//! answered), so that `switchyard replay` can run a candidate plugin against what
//! production saw. Off by default; `[trace] path` or admin `TRACE ON` turns it on.
//!
//! Off, a hook call pays one relaxed atomic load ([`Tracer::on`]). On, the caller
//! serialises the record and hands the line to a bounded channel without waiting: a full
//! channel drops the record and counts it. A writer task on the background runtime
//! ([`Tracer::run_writer`]) appends the lines; at `max_bytes` the file is renamed to
//! `PATH.1` (replacing an older one) and a new one is started, so a trace takes at most
//! twice `max_bytes` on disk.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::pool_mode::{ReadyAction, ReadyFacts};
use super::retry::{FailedRequest, RetryDecision};
use super::router::{Route, RouteRequest};
use super::session::SessionFacts;
use super::switchover::{Action, NodeInfo, TopologyEvent};
use super::topology::{ProbeInput, Verdict};
use crate::config::{HookKind, PoolMode, TraceSettings};

/// Records waiting for the writer; beyond this, records are dropped (and counted).
const QUEUE: usize = 8192;

/// One hook call: the hook, its inputs (the host's own records) and the decision it
/// returned (before the facade's safety clamps, which a replay applies to neither side).
#[derive(Serialize, Deserialize)]
#[serde(tag = "hook", rename_all = "kebab-case")]
pub enum Call {
    PoolMode {
        session: SessionFacts,
        mode: PoolMode,
        facts: ReadyFacts,
        decision: ReadyAction,
    },
    /// `pool-mode`'s question at a session's start (the `pipelining` interface).
    MayPipeline {
        session: SessionFacts,
        setting: bool,
        decision: bool,
    },
    Retry {
        session: SessionFacts,
        #[serde(with = "tx_status")]
        status: switchyard_protocol::TransactionStatus,
        failed: FailedRequest,
        #[serde(with = "humantime_serde")]
        budget: Duration,
        decision: RetryDecision,
    },
    Router {
        session: SessionFacts,
        request: RouteRequest,
        nodes: Vec<NodeInfo>,
        decision: Route,
    },
    Health {
        cluster: String,
        input: ProbeInput<'static>,
        decision: Verdict,
    },
    Switchover {
        cluster: String,
        event: TopologyEvent,
        nodes: Vec<NodeInfo>,
        #[serde(with = "humantime_serde")]
        hold_timeout: Duration,
        decision: Vec<Action>,
    },
}

impl Call {
    /// The hook called.
    pub fn hook(&self) -> HookKind {
        match self {
            Call::PoolMode { .. } | Call::MayPipeline { .. } => HookKind::PoolMode,
            Call::Retry { .. } => HookKind::Retry,
            Call::Router { .. } => HookKind::Router,
            Call::Health { .. } => HookKind::Health,
            Call::Switchover { .. } => HookKind::Switchover,
        }
    }
}

/// Who answered a recorded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum By {
    /// No plugin serves the hook there: the built-in policy.
    BuiltIn,
    Plugin,
    /// The plugin's call failed; the built-in policy answered for it.
    Fallback,
}

/// One line of a trace file.
#[derive(Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    #[serde(flatten)]
    pub call: Call,
    pub by: By,
    /// The plugin's name, when one serves the hook there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

/// `TransactionStatus` (a codec type, which knows nothing of serde) as WIT's `tx-status`.
pub mod tx_status {
    use serde::{Deserialize, Deserializer, Serializer};
    use switchyard_protocol::TransactionStatus;

    pub fn serialize<S: Serializer>(status: &TransactionStatus, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match status {
            TransactionStatus::Idle => "idle",
            TransactionStatus::InTransaction => "in-transaction",
            TransactionStatus::Failed => "failed",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TransactionStatus, D::Error> {
        match String::deserialize(d)?.as_str() {
            "idle" => Ok(TransactionStatus::Idle),
            "in-transaction" => Ok(TransactionStatus::InTransaction),
            "failed" => Ok(TransactionStatus::Failed),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["idle", "in-transaction", "failed"],
            )),
        }
    }
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot open the trace file {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("the trace writer is not running")]
    NoWriter,
}

/// Where records go now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    path: PathBuf,
    max_bytes: u64,
}

/// A change of target for the writer, acknowledged once lines queued before it are
/// written to the old target.
struct Retarget {
    target: Option<Target>,
    done: oneshot::Sender<()>,
}

/// What `SHOW TRACE` shows.
pub struct TraceReport {
    pub on: bool,
    pub path: Option<PathBuf>,
    pub max_bytes: u64,
    pub written: u64,
    pub dropped: u64,
    pub bytes: u64,
    pub rotations: u64,
    /// The last write error, if any (recording goes on with the next record).
    pub last_error: Option<String>,
}

/// The recorder: see the module docs.
pub struct Tracer {
    on: AtomicBool,
    lines: mpsc::Sender<String>,
    retarget: mpsc::UnboundedSender<Retarget>,
    /// The writer's ends, taken by [`Tracer::run_writer`].
    writer: Mutex<Option<(mpsc::Receiver<String>, mpsc::UnboundedReceiver<Retarget>)>>,
    target: Mutex<Option<Target>>,
    /// The `[trace]` settings last applied, so that a reload changes recording only when
    /// they changed (and leaves a `TRACE ON` alone otherwise).
    configured: Mutex<TraceSettings>,
    written: AtomicU64,
    dropped: AtomicU64,
    bytes: AtomicU64,
    rotations: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Default for Tracer {
    fn default() -> Tracer {
        let (lines, lines_rx) = mpsc::channel(QUEUE);
        let (retarget, retarget_rx) = mpsc::unbounded_channel();
        Tracer {
            on: AtomicBool::new(false),
            lines,
            retarget,
            writer: Mutex::new(Some((lines_rx, retarget_rx))),
            target: Mutex::new(None),
            configured: Mutex::new(TraceSettings::default()),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tracer {
    /// Whether hook calls are recorded now: the only cost of a hook call when they are not.
    #[inline]
    pub fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Records one call (call it only when [`Tracer::on`]); never waits.
    pub fn record(&self, call: Call, by: By, plugin: Option<&str>) {
        let record = Record {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            call,
            by,
            plugin: plugin.map(str::to_string),
        };
        let line = match serde_json::to_string(&record) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialise a trace record");
                return;
            }
        };
        if self.lines.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts recording to `path` (appending), rotating at `max_bytes`. The file is
    /// opened here, so that a path that cannot be written to is reported to the caller.
    pub async fn start(&self, path: &Path, max_bytes: u64) -> Result<(), TraceError> {
        open(path).map_err(|source| TraceError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let target = Target {
            path: path.to_path_buf(),
            max_bytes,
        };
        self.switch(Some(target)).await
    }

    /// Stops recording; returns once every line recorded before is in the file.
    pub async fn stop(&self) -> Result<(), TraceError> {
        self.switch(None).await
    }

    async fn switch(&self, target: Option<Target>) -> Result<(), TraceError> {
        if target.is_none() {
            self.on.store(false, Ordering::Relaxed);
        }
        let (done, written) = oneshot::channel();
        self.retarget
            .send(Retarget {
                target: target.clone(),
                done,
            })
            .map_err(|_| TraceError::NoWriter)?;
        // A writer that is not running (a proxy without its background runtime) never
        // answers: not worth hanging an admin command for.
        tokio::time::timeout(Duration::from_secs(5), written)
            .await
            .map_err(|_| TraceError::NoWriter)?
            .map_err(|_| TraceError::NoWriter)?;
        let on = target.is_some();
        *lock(&self.target) = target;
        self.on.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Applies the `[trace]` section (at start and at each reload): when it differs from
    /// the one applied before, recording starts or stops as it says.
    pub async fn configure(&self, settings: &TraceSettings) -> Result<(), TraceError> {
        if *lock(&self.configured) == *settings {
            return Ok(());
        }
        match &settings.path {
            Some(path) => self.start(path, settings.max_bytes).await?,
            None => self.stop().await?,
        }
        // Only once applied: a reload with the same section tries again after a failure.
        *lock(&self.configured) = settings.clone();
        Ok(())
    }

    /// The `[trace]` bound, for `TRACE ON` without a configured section.
    pub fn configured(&self) -> TraceSettings {
        lock(&self.configured).clone()
    }

    pub fn report(&self) -> TraceReport {
        let target = lock(&self.target).clone();
        TraceReport {
            on: self.on(),
            max_bytes: target
                .as_ref()
                .map_or(lock(&self.configured).max_bytes, |t| t.max_bytes),
            path: target.map(|t| t.path),
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            rotations: self.rotations.load(Ordering::Relaxed),
            last_error: lock(&self.last_error).clone(),
        }
    }

    /// The writer task (run once, on the background runtime): appends queued lines to
    /// the current target, rotating it at its bound.
    pub async fn run_writer(&self) {
        let Some((mut lines, mut retargets)) = lock(&self.writer).take() else {
            return;
        };
        let mut out: Option<Output> = None;
        let mut batch = Vec::with_capacity(256);
        loop {
            tokio::select! {
                n = lines.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        return;
                    }
                    self.write(&mut out, batch.drain(..));
                }
                retarget = retargets.recv() => {
                    let Some(Retarget { target, done }) = retarget else { return };
                    // What was recorded before the change goes where it was meant to go.
                    while let Ok(line) = lines.try_recv() {
                        batch.push(line);
                    }
                    self.write(&mut out, batch.drain(..));
                    out = match target {
                        Some(target) => match Output::open(target) {
                            Ok(o) => Some(o),
                            Err(e) => {
                                self.failed(&e);
                                None
                            }
                        },
                        None => None,
                    };
                    let _ = done.send(());
                }
            }
        }
    }

    fn write(&self, out: &mut Option<Output>, lines: impl Iterator<Item = String>) {
        let Some(o) = out else {
            self.dropped.fetch_add(lines.count() as u64, Ordering::Relaxed);
            return;
        };
        for line in lines {
            match o.append(&line) {
                Ok(rotated) => {
                    self.written.fetch_add(1, Ordering::Relaxed);
                    self.bytes.fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
                    if rotated {
                        self.rotations.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    self.failed(&e);
                }
            }
        }
        if let Err(e) = o.file.flush() {
            self.failed(&e);
        }
    }

    fn failed(&self, error: &std::io::Error) {
        let mut last = lock(&self.last_error);
        if last.is_none() {
            tracing::warn!(%error, "cannot write the policy trace");
        }
        *last = Some(error.to_string());
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The open trace file.
struct Output {
    target: Target,
    file: BufWriter<File>,
    size: u64,
}

impl Output {
    fn open(target: Target) -> std::io::Result<Output> {
        let file = open(&target.path)?;
        let size = file.metadata()?.len();
        Ok(Output {
            target,
            file: BufWriter::new(file),
            size,
        })
    }

    /// Appends `line`; true when the file was rotated first.
    fn append(&mut self, line: &str) -> std::io::Result<bool> {
        let len = line.len() as u64 + 1;
        let rotate = self.size > 0 && self.size + len > self.target.max_bytes;
        if rotate {
            self.file.flush()?;
            let mut old = self.target.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.target.path, &old)?;
            self.file = BufWriter::new(open(&self.target.path)?);
            self.size = 0;
            tracing::info!(path = %self.target.path.display(), "policy trace reached max_bytes: the previous part is now {}", Path::new(&old).display());
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += len;
        Ok(rotate)
    }
}

/// Why a trace line could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct ReadError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// The records of a trace file, each with its line number (blank lines skipped).
pub fn read(path: &Path) -> Result<Vec<(usize, Record)>, ReadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ReadError {
        path: shown.clone(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line).map_err(|e| ReadError {
            path: shown.clone(),
            line: i + 1,
            message: format!("not a trace record: {e}"),
        })?;
        records.push((i + 1, record));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReadRouting;
    use crate::policy::retry::{Fate, Phase};
    use crate::policy::switchover::HoldPlan;
    use crate::policy::topology::{ProbeSample, Role};
    use crate::sql::route::Kind;
    use switchyard_protocol::TransactionStatus;

    fn session() -> SessionFacts {
        SessionFacts::new(7, "app", "db", "psql \"quoted\"", "127.0.0.1:5".into(), true)
    }

    fn node(primary: bool) -> NodeInfo {
        NodeInfo {
            role: if primary { Role::Primary } else { Role::Replica },
            reachable: true,
            fenced: false,
            timeline: 3,
            lsn: u64::MAX,
            lag_bytes: 12,
            primary,
        }
    }

    /// One call of every hook, as the facade records them.
    fn calls() -> Vec<Call> {
        let facts = ReadyFacts {
            status: TransactionStatus::InTransaction,
            statements: 2,
            holds_server_state: true,
        };
        vec![
            Call::PoolMode {
                session: session(),
                mode: PoolMode::Statement,
                facts,
                decision: ReadyAction::RefuseTransaction("no \"blocks\"\n".into()),
            },
            Call::MayPipeline {
                session: session(),
                setting: true,
                decision: false,
            },
            Call::Retry {
                session: session(),
                status: TransactionStatus::Failed,
                failed: FailedRequest {
                    sqlstate: "57P01".into(),
                    message: "terminating connection due to administrator command".into(),
                    phase: Phase::BeforeAnyResult,
                    fate: Fate::NotApplied,
                    node: 1,
                    attempt: 2,
                    elapsed: Duration::from_millis(1500),
                },
                budget: Duration::from_secs(30),
                decision: RetryDecision::Hold(Duration::from_secs(5)),
            },
            Call::Router {
                session: session(),
                request: RouteRequest {
                    kind: Kind::Read,
                    replica_ok: true,
                    in_transaction: false,
                    read_routing: ReadRouting::ReplicasOrPrimary,
                    last_commit_lsn: u64::MAX,
                },
                nodes: vec![node(true), node(false)],
                decision: Route::Reject {
                    sqlstate: "53300".into(),
                    message: "busy".into(),
                },
            },
            Call::Health {
                cluster: "main".into(),
                input: ProbeInput {
                    node: 1,
                    sample: ProbeSample {
                        reachable: false,
                        in_recovery: true,
                        timeline: 2,
                        lsn: 99,
                        consecutive_failures: 3,
                    },
                    primary_lsn: 100,
                    latency: None,
                    error: Some("connection refused: \"127.0.0.1:1\"".into()),
                },
                decision: Verdict::default(),
            },
            Call::Switchover {
                cluster: "main".into(),
                event: TopologyEvent::PlannedStop(0),
                nodes: vec![node(true), node(false)],
                hold_timeout: Duration::from_secs(40),
                decision: vec![
                    Action::Hold(HoldPlan {
                        hold: Duration::from_secs(30),
                        drain: Duration::from_secs(5),
                    }),
                    Action::Drain(0),
                    Action::MoveTo(1),
                    Action::Resume,
                    Action::Fence(0),
                ],
            },
        ]
    }

    /// Every hook's record survives a write and a read unchanged (compared as JSON:
    /// the host's records are compared field by field by their own `PartialEq` where
    /// they have one, and a re-serialisation covers the rest).
    #[test]
    fn every_hook_record_round_trips() {
        for call in calls() {
            let hook = call.hook();
            let record = Record {
                time: "2026-12-07T07:00:00.000Z".into(),
                call,
                by: By::Plugin,
                plugin: Some("switchover".into()),
            };
            let line = serde_json::to_string(&record).unwrap();
            assert!(!line.contains('\n'), "one line per record: {line}");
            let back: Record = serde_json::from_str(&line).unwrap();
            assert_eq!(back.call.hook(), hook);
            assert_eq!(back.by, By::Plugin);
            assert_eq!(serde_json::to_string(&back).unwrap(), line, "{hook:?}");
        }
    }

    #[test]
    fn a_record_names_its_hook_and_decision_in_plain_json() {
        let record = Record {
            time: "t".into(),
            call: calls().pop().unwrap(),
            by: By::Fallback,
            plugin: None,
        };
        let value = serde_json::to_value(&record).unwrap();
        assert_eq!(value["hook"], "switchover");
        assert_eq!(value["by"], "fallback");
        assert_eq!(value["event"]["planned-stop"], 0);
        assert_eq!(value["decision"][1]["drain"], 0);
        assert_eq!(value["decision"][3], "resume");
        assert!(value.get("plugin").is_none());
    }

    /// The writer appends what is recorded while on, nothing after `stop`, and rotates
    /// to `PATH.1` at the bound; records beyond the queue are dropped and counted.
    #[tokio::test]
    async fn the_writer_appends_rotates_and_stops() {
        let dir = std::env::temp_dir().join(format!("switchyard-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.jsonl");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(dir.join("t.jsonl.1"));
        let tracer = std::sync::Arc::new(Tracer::default());
        let writer = tokio::spawn({
            let tracer = tracer.clone();
            async move { tracer.run_writer().await }
        });
        assert!(!tracer.on());
        tracer.start(&path, 2048).await.unwrap();
        assert!(tracer.on());
        for _ in 0..10 {
            for call in calls() {
                tracer.record(call, By::BuiltIn, None);
            }
        }
        tracer.stop().await.unwrap();
        assert!(!tracer.on());
        let report = tracer.report();
        assert_eq!(report.written + report.dropped, 60);
        assert_eq!(report.dropped, 0);
        assert!(report.rotations >= 1, "{}", report.rotations);
        let now = read(&path).unwrap();
        let before = read(&dir.join("t.jsonl.1")).unwrap();
        assert!(!now.is_empty() && !before.is_empty());
        assert!(std::fs::metadata(&path).unwrap().len() <= 2048);
        writer.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_line_is_named_by_file_and_line() {
        let path = std::env::temp_dir().join(format!("switchyard-bad-trace-{}", std::process::id()));
        std::fs::write(&path, "\n{\"hook\":\"nope\"}\n").unwrap();
        let Err(e) = read(&path) else {
            panic!("a line that is not a record was read");
        };
        assert_eq!(e.line, 2);
        assert!(
            e.to_string().starts_with(&format!("{}:2: ", path.display())),
            "{e}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
