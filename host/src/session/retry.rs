//! Running a request again on another server when its server failed it without effect,
//! because its node is going away.
//!
//! A request that starts outside a transaction on a freshly borrowed server is recorded
//! (the client's frames, and where its replies start in the client's output buffer) until
//! its first reply reaches the client. If the server ends it with `FATAL 57P01` before any
//! CommandComplete, the transaction it ran in was rolled back. But `FATAL 57P01` is what
//! both a fast shutdown and `pg_terminate_backend` send, and a DBA who terminated one
//! backend wants its query stopped, not run again: so the proxy runs the request again
//! only once the node is shown to be going away (the topology no longer lends servers on
//! it, or a login to it is refused or answered `57P03`, which a postmaster says from the
//! moment it starts a shutdown, before it signals its backends). Then it drops the server,
//! takes back the replies it had not sent yet, asks the retry policy (the `retry` plugin
//! or the built-in), and handles the recorded frames again, which borrows a server on the
//! primary the topology now shows. On a node that stays up, the client gets the server's
//! error as the server sent it.
//!
//! A request holding a statement that may commit before it ends (`CALL`, `DO`, `VACUUM`,
//! ...: see `sql::commits_before_end`) may have committed part of its work before the
//! FATAL: it is never run again, and the client is told its outcome is unknown (`08007`).
//!
//! Everything else is never retried: once a reply went out, once a CommandComplete or a
//! notice that the transaction "has already committed locally" was seen, or when the
//! server just vanished (its fate is unknown), the client gets the error.
//!
//! One more failure runs again, for read routing: work classified as a read that a
//! replica refuses with `25006` (a function that writes, declared stable) before any
//! reply reached the client runs once more on the primary. A replica can have written
//! nothing, so statements it completed before the error do not stand in the way; the
//! misclassification is logged and counted. A transaction the client declared
//! `READ ONLY` is not in this net: the primary would refuse the write too. Nor is a read
//! whose replica closes its connection (a stopped or restarted replica) before any reply
//! reached the client lost: a replica can have done nothing, so the read runs again,
//! routed afresh.

use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_protocol::backend::{parse_error_fields, parse_ready_for_query, ErrorFields, Severity};
use switchyard_protocol::frame::Frame;
use switchyard_protocol::frontend::FrontendMessage;
use switchyard_protocol::sqlstate;
use switchyard_protocol::TransactionStatus;

use super::frontend::may_hold_session_command;
use super::{Session, SessionError};
use crate::policy::retry::{self, FailedRequest, Fate, Phase, RetryDecision};
use crate::server::{NodeAddr, ServerError};
use crate::sql;

/// How long the proxy waits for a node to say whether it is going away. A node that is
/// shutting down or stopped answers at once; one that does not answer within this is not
/// taken to be going away.
const CONFIRMATION_LIMIT: Duration = Duration::from_secs(2);

/// A request its server failed: what the retry policy is asked about, what the client
/// gets if it does not run again, and the server it failed on.
struct Failure {
    request: FailedRequest,
    fields: ErrorFields,
    addr: NodeAddr,
    /// When that server was opened (a server opened before its node was drained is on
    /// its way out).
    opened: Instant,
    /// A replica refused a write in work routed there as a read: it runs on the primary.
    misrouted: bool,
    /// A replica's connection ended under a read: the read runs again, routed afresh.
    replica_lost: bool,
}

/// The request in its retry window, if one is open.
#[derive(Default)]
pub(super) struct Replay {
    open: bool,
    /// The client's frames since the server was borrowed (kept across requests so the
    /// allocation is reused).
    frames: Vec<Bytes>,
    /// Where the request's replies start in the client output buffer.
    cout_start: usize,
    /// When the request first failed (kept across its runs); read from the clock only on
    /// a failure, never on the common path.
    first_failure: Option<Instant>,
    /// 1 for the first run of the request.
    attempt: u32,
    /// Set by a retry for the run it starts: (attempt, first failure).
    carry: Option<(u32, Instant)>,
    /// The server failed the request.
    failed: Option<Box<Failure>>,
    /// What the server showed of the request's effect so far.
    effect: Effect,
    /// The request just ended at a ReadyForQuery with more requests pipelined behind it:
    /// the window moves to them once that ReadyForQuery is in the output buffer.
    anchor: bool,
    /// Writes to the server in this window, and their bytes; `None` once the window moved
    /// to pipelined requests (their bytes may have gone out with earlier ones).
    writes: Option<(u32, usize)>,
    /// The server sent anything in this window.
    replied: bool,
    /// The request runs on a replica as a read (not in a transaction declared read-only):
    /// a `25006` from it is a misclassification, whatever completed before.
    on_replica: bool,
}

/// Whether the request in the window may have taken effect.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Nothing completed: a `FATAL 57P01` now means it was rolled back.
    #[default]
    None,
    /// A statement completed (or a commit was reported): it may have committed.
    Some,
}

impl Replay {
    /// A server was just borrowed for a request that starts outside a transaction
    /// (`on_replica`: as a read, on a replica).
    pub(super) fn open(&mut self, cout_start: usize, on_replica: bool) {
        let (attempt, first_failure) = match self.carry.take() {
            Some((attempt, at)) => (attempt, Some(at)),
            None => (1, None),
        };
        self.open = true;
        self.frames.clear();
        self.effect = Effect::None;
        self.anchor = false;
        self.writes = Some((0, 0));
        self.replied = false;
        self.on_replica = on_replica;
        self.cout_start = cout_start;
        self.first_failure = first_failure;
        self.attempt = attempt;
    }

    pub(super) fn close(&mut self) {
        if self.open {
            self.open = false;
            self.anchor = false;
            self.frames.clear();
        }
    }

    /// Drops the frames of the request that just ended (up to its Sync or Query); true
    /// when frames of later requests remain.
    fn next_request(&mut self) -> bool {
        let Some(end) = self
            .frames
            .iter()
            .position(|f| matches!(f.first(), Some(b'S' | b'Q')))
        else {
            return false;
        };
        self.frames.drain(..=end);
        !self.frames.is_empty()
    }

    /// Whether the window moves to the next request at the message just handled.
    pub(super) fn wants_anchor(&self) -> bool {
        self.anchor
    }

    /// Moves the window to the pipelined requests, whose replies start at `cout_start`.
    pub(super) fn reanchor(&mut self, cout_start: usize) {
        self.anchor = false;
        self.effect = Effect::None;
        self.writes = None;
        self.cout_start = cout_start;
        self.first_failure = None;
        self.attempt = 1;
    }

    /// The session goes quiet: its frame list, to be parked if empty (a new empty one
    /// otherwise, the frames staying here).
    pub(super) fn park_frames(&mut self) -> Vec<Bytes> {
        if self.frames.is_empty() {
            std::mem::take(&mut self.frames)
        } else {
            Vec::new()
        }
    }

    /// The session goes quiet keeping its frame list: frees it, if empty, when a long
    /// pipeline grew it.
    pub(super) fn trim_frames(&mut self) {
        if self.frames.is_empty() && !super::spares::queue_worth_keeping(self.frames.capacity()) {
            self.frames = Vec::new();
        }
    }

    /// The session has work again: takes `frames` (empty) if it parked its own.
    pub(super) fn unpark_frames(&mut self, frames: Vec<Bytes>) {
        if self.frames.capacity() == 0 {
            self.frames = frames;
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.open
    }

    /// Records a client frame handled while the window is open, or closes the window for a
    /// frame that must not run twice.
    pub(super) fn record(&mut self, raw: Bytes, replayable: bool) {
        if !self.open {
            return;
        }
        if replayable {
            self.frames.push(raw);
        } else {
            self.close();
        }
    }

    /// `n` bytes at the front of the client output buffer were written to the client.
    pub(super) fn written(&mut self, n: usize) {
        if !self.open {
            return;
        }
        if n > self.cout_start {
            self.close(); // a reply of this request reached the client
        } else {
            self.cout_start -= n;
        }
    }

    /// `n` bytes of the request went to the server in one write.
    pub(super) fn server_wrote(&mut self, n: usize) {
        if let Some((writes, bytes)) = &mut self.writes {
            *writes += 1;
            *bytes += n;
        }
    }

    /// A connection reset (not a close) can only mean the server process ended while
    /// bytes it had been sent were still unread in its socket. If the whole request went
    /// out in one small write (one segment, which Postgres reads whole) and the server
    /// answered nothing, none of it was read, so none of it ran; that is, if the reset came
    /// from the server ending and not from something on the path, which the topology
    /// is asked to confirm (as for a FATAL) before the request runs again.
    fn reset_is_clean(&self) -> bool {
        /// What Postgres reads from its socket at once (`PQ_RECV_BUFFER_SIZE`).
        const ONE_READ: usize = 8192;
        self.open
            && self.effect == Effect::None
            && !self.replied
            && self.failed.is_none()
            && matches!(self.writes, Some((1, bytes)) if bytes <= ONE_READ)
    }

    /// Time since the request's first failure (zero at the first).
    fn since_first_failure(&self) -> std::time::Duration {
        self.first_failure.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// The server sent a message that [`Replay::watch`] need not look at (a DataRow):
    /// only that it replied is noted.
    #[inline]
    pub(super) fn saw_reply(&mut self) {
        self.replied = true;
    }

    /// A server failure is pending for [`Session::retry`].
    pub(super) fn failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Looks at a server message while the window is open (`own_query`: it answers the
    /// proxy's own session settings, ahead of the request): returns `true` for an error
    /// while nothing has taken effect, which fails the request if it is a `FATAL 57P01`.
    /// Marks the request as having taken effect at any sign of it, and at its ReadyForQuery
    /// moves the window on to the requests the client pipelined behind it.
    fn watch(&mut self, tag: u8, body: &[u8], own_query: bool) -> bool {
        use switchyard_protocol::backend::tags;
        self.replied = true;
        if tag == tags::ERROR_RESPONSE {
            return self.effect == Effect::None || self.on_replica;
        }
        if own_query {
            return false;
        }
        match tag {
            // "canceling the wait for synchronous replication ... The transaction has
            // already committed locally": the server is going away after a commit.
            tags::NOTICE_RESPONSE
                if parse_error_fields(body).is_ok_and(|f| f.code == sqlstate::ADMIN_SHUTDOWN) =>
            {
                self.effect = Effect::Some;
            }
            tags::COMMAND_COMPLETE | tags::EMPTY_QUERY_RESPONSE | tags::PORTAL_SUSPENDED => {
                self.effect = Effect::Some;
            }
            tags::COPY_IN_RESPONSE | tags::COPY_OUT_RESPONSE | tags::COPY_BOTH_RESPONSE => self.close(),
            tags::READY_FOR_QUERY => {
                let idle = parse_ready_for_query(body).is_ok_and(|s| s == TransactionStatus::Idle);
                // The request is over; requests pipelined behind it (already sent to this
                // server, none of their replies out yet) get a window of their own.
                if idle && self.next_request() {
                    self.anchor = true;
                } else {
                    self.close();
                }
            }
            _ => {}
        }
        false
    }
}

/// Whether a client message may be sent to a server twice: not if it changes the session
/// (its effect is tracked by the proxy as it is handled) or streams COPY data.
/// `may_command` is `frontend::may_hold_session_command` of the message.
pub(super) fn replayable(msg: &FrontendMessage, may_command: bool) -> bool {
    match msg {
        FrontendMessage::Query { sql } => !changes_session(sql, may_command),
        FrontendMessage::Parse { query, .. } => !changes_session(query, may_command),
        FrontendMessage::Bind { .. }
        | FrontendMessage::Describe { .. }
        | FrontendMessage::Execute { .. }
        | FrontendMessage::Close { .. }
        | FrontendMessage::Sync
        | FrontendMessage::Flush => true,
        _ => false,
    }
}

/// Whether `text` holds a statement whose effect on the session the proxy tracks as it
/// handles it (SET, RESET, PREPARE, DEALLOCATE, DISCARD). The lexer runs only for the
/// texts the cheap filter cannot clear, such as several statements or a `DO` block whose
/// body holds semicolons (which may then run again, or be reported as of unknown outcome).
/// `may_command` is the cheap filter's verdict on `text`.
fn changes_session(text: &[u8], may_command: bool) -> bool {
    may_command && sql::commands(text).iter().any(|c| *c != sql::Command::Other)
}

impl Session {
    /// Looks at a server message while a retry window is open: returns `true` when the
    /// message fails the request in a retryable way (it is then not forwarded).
    pub(super) fn watch_for_retry(&mut self, tag: u8, body: &[u8]) -> bool {
        let own_query = self.server.replies.own_query_in_front();
        self.replay.watch(tag, body, own_query) && self.note_failure(body)
    }

    /// Records a `FATAL 57P01` ending the request, or a replica's `25006` refusing work
    /// routed there as a read; `false` for any other error. A request that may have
    /// committed part of its work is recorded as of unknown outcome, with the error its
    /// client gets.
    fn note_failure(&mut self, body: &[u8]) -> bool {
        let Ok(fields) = parse_error_fields(body) else {
            return false;
        };
        if self.replay.on_replica && fields.code == sqlstate::READ_ONLY_SQL_TRANSACTION {
            let message = fields.message.clone();
            let noted = self.fail(
                sqlstate::READ_ONLY_SQL_TRANSACTION,
                &message,
                Phase::BeforeAnyResult,
                Fate::NotApplied,
                fields,
            );
            if let Some(failure) = self.replay.failed.as_mut() {
                failure.misrouted = true;
            }
            return noted;
        }
        if fields.severity != Severity::Fatal || fields.code != sqlstate::ADMIN_SHUTDOWN {
            return false;
        }
        let message = fields.message.clone();
        let (phase, fate, fields) = match self.running_commits_before_end() {
            None => (Phase::BeforeAnyResult, Fate::NotApplied, fields),
            Some(kind) => (Phase::Commit, Fate::Unknown, outcome_unknown(kind, &message)),
        };
        self.fail(sqlstate::ADMIN_SHUTDOWN, &message, phase, fate, fields)
    }

    /// The server connection was reset: records it as a failure when
    /// [`Replay::reset_is_clean`] says it may be retried. Returns whether it did.
    pub(super) fn note_reset(&mut self, error: &std::io::Error) -> bool {
        if error.kind() != std::io::ErrorKind::ConnectionReset || !self.replay.reset_is_clean() {
            return false;
        }
        let fields = SessionError::ServerIo(std::io::Error::new(error.kind(), error.to_string()))
            .to_client()
            .unwrap_or_else(|| ErrorFields::fatal(sqlstate::CONNECTION_FAILURE, "server connection lost"));
        let message = error.to_string();
        self.fail(
            sqlstate::CONNECTION_FAILURE,
            &message,
            Phase::BeforeAnyResult,
            Fate::NotApplied,
            fields,
        )
    }

    /// The server of a read running on a replica closed or reset the connection before any
    /// reply reached the client: a replica can have done nothing, so the outcome is known
    /// (nothing happened) and the read runs again, routed afresh. Returns whether it was
    /// recorded.
    pub(super) fn note_replica_lost(&mut self) -> bool {
        if !self.replay.is_open() || !self.replay.on_replica || self.replay.failed() {
            return false;
        }
        let fields = ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            "the replica running this read closed its connection",
        );
        let message = fields.message.clone();
        let noted = self.fail(
            sqlstate::CONNECTION_FAILURE,
            &message,
            Phase::BeforeAnyResult,
            Fate::NotApplied,
            fields,
        );
        if let Some(failure) = self.replay.failed.as_mut() {
            failure.replica_lost = true;
        }
        noted
    }

    /// Records the request's failure on the current server, for [`Session::retry`].
    fn fail(&mut self, sqlstate: &str, message: &str, phase: Phase, fate: Fate, fields: ErrorFields) -> bool {
        let Some(node) = self.server_node() else {
            return false; // not a server of the cluster: nothing to confirm against
        };
        let Some(conn) = self.server.conn() else {
            return false;
        };
        let request = FailedRequest {
            sqlstate: sqlstate.to_string(),
            message: message.to_string(),
            phase,
            fate,
            node,
            attempt: self.replay.attempt,
            elapsed: self.replay.since_first_failure(),
        };
        self.replay.failed = Some(Box::new(Failure {
            request,
            fields,
            addr: conn.addr.clone(),
            opened: conn.created,
            misrouted: false,
            replica_lost: false,
        }));
        true
    }

    /// What the statement of the running request (the frames up to its Sync or Query) that
    /// may commit before it ends is called, if it holds one. A Bind names the statement it
    /// runs; an unnamed one parsed before the request cannot be read, and counts as one.
    fn running_commits_before_end(&mut self) -> Option<&'static str> {
        let frames = &self.replay.frames;
        let end = frames
            .iter()
            .position(|f| matches!(f.first(), Some(b'S' | b'Q')))
            .map_or(frames.len(), |p| p + 1);
        let frames = frames[..end].to_vec();
        let mut unnamed_parsed = false;
        for raw in frames {
            let Ok(frame) = Frame::new(raw) else { continue };
            let kind = match FrontendMessage::decode(&frame) {
                Ok(FrontendMessage::Query { sql }) => sql::commits_before_end(&sql),
                Ok(FrontendMessage::Parse { name, query, .. }) => {
                    unnamed_parsed |= name.is_empty();
                    sql::commits_before_end(&query)
                }
                Ok(FrontendMessage::Bind { statement, .. }) if statement.is_empty() => {
                    (!unnamed_parsed).then_some("a statement prepared earlier")
                }
                Ok(FrontendMessage::Bind { statement, .. }) => self
                    .statements
                    .get(&statement)
                    .and_then(|def| sql::commits_before_end(&def.query)),
                _ => None,
            };
            if kind.is_some() {
                return kind;
            }
        }
        None
    }

    /// The retry policy's answer, from the policy facade (the database's `retry` plugin,
    /// or the built-in when there is none or its call failed; only what did not take
    /// effect runs again, whatever a plugin says).
    fn retry_decision(&mut self, failed: &FailedRequest, budget: std::time::Duration) -> RetryDecision {
        self.state
            .policies
            .on_error(&mut self.facts, TransactionStatus::Idle, failed, budget)
    }

    /// Whether the node that failed a request is going away, rather than having ended one
    /// backend (`pg_terminate_backend`) or lost one connection on the path: the topology no
    /// longer lends servers like the failed one (the node is no longer the primary, or was
    /// drained for a planned stop), or a login to the node now is refused, cut, or answered
    /// `57P0x` (a postmaster answers `57P03` from the moment it starts a shutdown, before
    /// it tells its backends to end, so before the FATAL was sent). A node that lets the
    /// login in, answers anything else, or does not answer within [`CONFIRMATION_LIMIT`]
    /// is not going away.
    async fn node_going_away(&self, failure: &Failure) -> bool {
        if !self.pool.cluster.keeps_server(&failure.addr, failure.opened) {
            return true;
        }
        match self.pool.try_login(&failure.addr, CONFIRMATION_LIMIT).await {
            Ok(()) => false,
            Err(ServerError::Refused { fields, .. }) => fields.code.starts_with("57P0"),
            Err(ServerError::Connect { .. } | ServerError::Closed { .. } | ServerError::Io { .. }) => true,
            Err(_) => false,
        }
    }

    /// Probes `node` now and waits (up to `limit`) for the answer: whether it is gone
    /// (unreachable, or no longer the primary). Without probes nothing can be confirmed.
    async fn node_went_away(&self, node: usize, limit: std::time::Duration) -> bool {
        let cluster = &self.pool.cluster;
        if !cluster.probed() {
            return false;
        }
        let since = std::time::SystemTime::now();
        cluster.suspect(node);
        let deadline = Instant::now() + limit;
        loop {
            let view = cluster.view();
            let state = &view.nodes[node];
            let failed_since = state.last_probe.is_some_and(|t| t >= since) && !state.sample.reachable;
            if view.primary != Some(node) || failed_since {
                return true;
            }
            // Only a probe that started after the reset can vouch for the node: one that
            // was already running may have been answered just before the node went away.
            let answered_since = state
                .last_probe
                .zip(state.probe_time)
                .is_some_and(|(end, took)| end.checked_sub(took).is_some_and(|start| start >= since));
            if answered_since || Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The index of the current server's node in its cluster.
    fn server_node(&mut self) -> Option<u32> {
        let checkout = self.server.checkout.as_mut()?;
        let addr = checkout.conn().addr.clone();
        let cluster = &checkout.pool().cluster;
        cluster.nodes.iter().position(|n| *n == addr).map(|i| i as u32)
    }

    /// Handles a failure recorded by [`Session::watch_for_retry`]: drops the server and the
    /// replies not yet sent, then runs the request again or ends the session with the
    /// server's error, as the retry policy decides.
    pub(super) async fn retry(&mut self) -> Result<(), SessionError> {
        let Some(failure) = self.replay.failed.take() else {
            return Ok(());
        };
        let first_failure = *self.replay.first_failure.get_or_insert_with(Instant::now);
        let frames = std::mem::take(&mut self.replay.frames);
        self.replay.open = false;
        // The server is gone or going; whatever it owed dies with it.
        self.drop_server();
        self.skipping = false;
        self.tx_status = TransactionStatus::Idle;
        self.tx_statements = 0;

        let failed = &failure.request;
        let budget = self.pool.cluster.hold_timeout;
        // Only what did not take effect, on a node that is going away; the policy may
        // narrow that further. A misrouted read runs once on the primary.
        let decision = if failure.misrouted {
            tracing::warn!(
                pid = self.cancel.process_id, node = %failure.addr, error = %failed.message,
                "a replica refused work classified as a read (a function that writes, declared stable or immutable?); running it on the primary"
            );
            self.pool
                .reads
                .misrouted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.routing_force_primary();
            RetryDecision::RetryAfter(std::time::Duration::ZERO)
        } else if failure.replica_lost {
            tracing::info!(
                pid = self.cancel.process_id, node = %failure.addr,
                "a replica closed its connection under a read; running the read again"
            );
            self.pool.cluster.suspect(failed.node as usize);
            RetryDecision::RetryAfter(std::time::Duration::ZERO)
        } else if !retry::allowed(failed) {
            RetryDecision::Surface
        } else if !self.node_going_away(&failure).await {
            tracing::info!(
                pid = self.cancel.process_id, node = %failure.addr, sqlstate = %failed.sqlstate,
                "the server ended the request but its node is not going away (a terminated backend?)"
            );
            RetryDecision::Surface
        } else {
            self.retry_decision(failed, budget)
        };
        let node = failure.addr.to_string();
        let delay = match decision {
            RetryDecision::Surface => {
                tracing::info!(
                    pid = self.cancel.process_id, event = self.pool.cluster.incidents.open_id(), %node, sqlstate = %failed.sqlstate,
                    attempt = failed.attempt, "request failed by its server; not retried"
                );
                self.pool.cluster.incidents.client_error();
                // The replies not yet written go out before the error, as from the server.
                return Err(SessionError::Fatal(Box::new(failure.fields)));
            }
            RetryDecision::RetryAfter(d) => d,
            // Until the node's next probe tells whether it is going away; if it is, the
            // pool then holds the request until a primary is confirmed.
            RetryDecision::Hold(limit) => {
                self.node_went_away(failed.node as usize, limit).await;
                std::time::Duration::ZERO
            }
        };
        tracing::info!(
            pid = self.cancel.process_id, event = self.pool.cluster.incidents.open_id(), %node, sqlstate = %failed.sqlstate,
            attempt = failed.attempt, delay_ms = delay.as_millis() as u64,
            "request failed by its server before taking effect; running it again"
        );
        self.pool
            .stats
            .retried
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pool.cluster.incidents.retried();
        // The replies the client has not been sent are taken back: the request runs again.
        self.cout.truncate(self.replay.cout_start);
        tokio::time::sleep(delay).await;
        self.replay.carry = Some((failed.attempt + 1, first_failure));
        for raw in frames {
            let frame = Frame::new(raw)?;
            let msg = FrontendMessage::decode(&frame)?;
            let may_command = may_hold_session_command(&msg);
            let replay = replayable(&msg, may_command);
            self.handle(msg, frame.raw(), may_command).await?;
            self.replay.record(frame.into_raw(), replay);
        }
        self.replay.carry = None;
        Ok(())
    }
}

/// What the client gets when its server ended a statement that may commit before it ends
/// (`kind`, e.g. `CALL`): class 08, so that drivers treat it as a lost connection, with
/// the server's own message as detail.
fn outcome_unknown(kind: &str, server_message: &str) -> ErrorFields {
    ErrorFields::fatal(
        sqlstate::TRANSACTION_RESOLUTION_UNKNOWN,
        format!("the server ended the connection during {kind}: its outcome is unknown, it may have committed part of its work"),
    )
    .with_detail(format!(
        "The server said: {server_message}. A statement that may commit before it ends is never run again by switchyard."
    ))
    .with_hint("reconnect and check which of its effects are present before running it again")
}

#[cfg(test)]
mod tests {
    use super::super::replies::{Expect, Replies, Reply};
    use super::*;
    use bytes::{Buf, BytesMut};
    use switchyard_protocol::backend as be;
    use switchyard_protocol::frame::{frames, HEADER_LEN};
    use switchyard_protocol::frontend::encode_query;

    /// Server messages as the session's relay takes them while a retry window is open: the
    /// window looks first, and a failure it reports stops the relay (the message is not
    /// forwarded); otherwise the reply queue says what is forwarded, and the window moves
    /// to pipelined requests where it asks to. Returns whether the window reported a
    /// failure.
    fn relay(replay: &mut Replay, q: &mut Replies, server: &[u8], cout: &mut BytesMut) -> bool {
        for item in frames(server, 1 << 20) {
            let (header, offset) = item.expect("well-formed test input");
            let body = &server[offset + HEADER_LEN..offset + header.len];
            if replay.is_open() && replay.watch(header.tag, body, q.own_query_in_front()) {
                return true;
            }
            let reply = q.on_message(header.tag, body, |_, _| {}).expect("valid message");
            if !matches!(reply, Reply::Swallow | Reply::OwnQueryFailed) {
                cout.extend_from_slice(&server[offset..offset + header.len]);
            }
            if replay.wants_anchor() {
                replay.reanchor(cout.len());
            }
            q.settle_front(cout);
        }
        false
    }

    fn rows(n: u8, out: &mut BytesMut) {
        be::row_description(&[("n", 23)], out);
        be::data_row(&[Some(&[b'0' + n][..])], out);
    }

    fn fatal_shutdown(out: &mut BytesMut) {
        be::error_response(
            &ErrorFields::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command",
            ),
            out,
        );
    }

    /// Two queries pipelined into one window, after replies from before the window that the
    /// client has been sent. The first completes: its replies are the client's, and the
    /// window moves on to the second. The second's server fails before any CommandComplete:
    /// the window reports it, keeps the second query's frame to run again, and cutting the
    /// client's output at the window's start takes back exactly the second query's replies.
    #[test]
    fn a_failed_request_takes_back_only_its_own_replies() {
        let (mut replay, mut q) = (Replay::default(), Replies::default());
        let mut cout = BytesMut::from(&b"earlier"[..]);
        replay.open(cout.len(), false);
        for sql in ["SELECT 1", "SELECT 2"] {
            let mut raw = BytesMut::new();
            encode_query(sql.as_bytes(), &mut raw);
            replay.record(raw.freeze(), true);
            q.push(Expect::Query);
        }
        // The client is sent what came before the window.
        cout.advance(7);
        replay.written(7);
        assert!(replay.is_open());

        let mut first = BytesMut::new();
        rows(1, &mut first);
        be::command_complete("SELECT 1", &mut first);
        be::ready_for_query(TransactionStatus::Idle, &mut first);
        let mut server = first.clone();
        rows(2, &mut server);
        fatal_shutdown(&mut server);
        assert!(
            relay(&mut replay, &mut q, &server, &mut cout),
            "the failure is reported"
        );
        assert!(replay.is_open());
        assert_eq!(replay.frames.len(), 1, "only the second query runs again");
        assert_eq!(replay.frames[0][0], b'Q');

        cout.truncate(replay.cout_start);
        assert_eq!(cout, first, "the client keeps the first query's replies only");
    }

    /// Once a reply of the request reached the client, or a statement of it completed, a
    /// FATAL can no longer take the request back: the window closes, or reports nothing.
    #[test]
    fn a_request_seen_or_done_is_not_taken_back() {
        let (mut replay, mut q) = (Replay::default(), Replies::default());
        let mut cout = BytesMut::new();
        replay.open(0, false);
        q.push(Expect::Query);
        let mut server = BytesMut::new();
        rows(1, &mut server);
        assert!(!relay(&mut replay, &mut q, &server, &mut cout));
        let sent = cout.len();
        cout.advance(sent);
        replay.written(sent);
        assert!(!replay.is_open(), "a reply reached the client");

        let (mut replay, mut q) = (Replay::default(), Replies::default());
        replay.open(0, false);
        q.push(Expect::Query);
        let mut server = BytesMut::new();
        rows(1, &mut server);
        be::command_complete("INSERT 0 1", &mut server);
        fatal_shutdown(&mut server);
        assert!(
            !relay(&mut replay, &mut q, &server, &mut cout),
            "it may have committed"
        );
    }

    fn query(sql: &str) -> FrontendMessage {
        FrontendMessage::Query {
            sql: Bytes::copy_from_slice(sql.as_bytes()),
        }
    }

    #[test]
    fn only_session_commands_are_kept_from_running_twice() {
        let replayable = |m: &FrontendMessage| replayable(m, may_hold_session_command(m));
        assert!(replayable(&query("SELECT 1")));
        assert!(replayable(&query("SELECT 1; SELECT 2")));
        // Semicolons inside the body: the window stays open, so a cut DO is reported as
        // of unknown outcome rather than forwarded as a bare FATAL.
        assert!(replayable(&query("DO $$BEGIN COMMIT; PERFORM 1; END$$")));
        assert!(!replayable(&query("SET search_path TO a")));
        assert!(!replayable(&query("SELECT 1; RESET work_mem")));
        assert!(!replayable(&FrontendMessage::Terminate));
    }
}
