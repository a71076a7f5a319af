//! Pipelined transaction pooling, the session's side (`pool::pipeline` is the pool's): which
//! statements may join a pipeline, and their replies forwarded to the client as they come.
//! A statement its pipeline could not write takes the normal path; one whose server failed
//! before any byte of its reply came runs again the normal way only when it is a plain
//! read (it cannot have changed anything); otherwise the client gets the error it would
//! get for a server lost under its statement.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use switchyard_protocol::backend::TransactionStatus;
use switchyard_protocol::sqlstate;
use tokio::sync::mpsc;

use super::timeouts::{self, Phase};
use super::{Session, SessionError, HIGH_WATER};
use crate::config::PoolMode;
use crate::pool::{Piece, PipelineFailure, Ticket};
use crate::sql;
use crate::sql::route::{classify, starts_with_copy, Kind, Rule, Transaction, Volatility};

/// How long a pipelined statement's session, closed at `shutdown_timeout`, waits for the
/// statement's cancel to end its reply (the listener gives closed sessions 1 s).
const CLOSING_CANCEL_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl Session {
    /// Whether the Query `sql` is standalone and the session may pipeline it now: the
    /// session is allowed to (`may_pipeline`, decided at its start), is idle (no
    /// transaction block, no server held, nothing owed, no server-side state), routes no
    /// reads, its database was not removed by a reload, and its startup settings are
    /// untouched; the text is one statement that is no transaction control, session
    /// command, COPY, statement that may commit before it ends, nor (checked before, by
    /// `note_server_state`) one that creates server-side state. `Some` says whether it is a
    /// plain read (no function the proxy does not know), which may run again if its
    /// server fails before it answered. `may_command` is the cheap filter's verdict on
    /// `sql` (`maybe_session_command`).
    pub(super) fn standalone(&self, sql: &[u8], may_command: bool) -> Option<bool> {
        let idle = self.may_pipeline
            && self.mode != PoolMode::Session
            && self.tx_status == TransactionStatus::Idle
            && !self.server.held()
            && self.server.owes_nothing()
            && self.server.replies.is_empty()
            && !self.server_state
            && !self.skipping
            && !self.routes_reads()
            && !self.pool.is_removed()
            && self.params.at_startup();
        // A statement that may commit before it ends (CALL, DO...) is kept out: its
        // failure must be told as an unknown outcome (`retry`), which only the normal path does.
        if !idle || may_command || starts_with_copy(sql) || sql::commits_before_end(sql).is_some() {
            return None;
        }
        // No function catalog: an unknown function makes the text no plain read.
        let class = classify(sql, &HashMap::<String, Volatility>::new());
        let standalone = class.transaction == Transaction::None
            && class.pin.is_none()
            && !matches!(class.kind, Kind::TransactionControl | Kind::SessionControl);
        standalone.then(|| class.rule() == Rule::Read)
    }

    /// Runs the Query `raw` through a pipeline. True when the client has its whole reply;
    /// false when it must take the normal path (no pipeline had room, or the statement
    /// provably did not run there); an error ends the session.
    pub(super) async fn run_pipelined(&mut self, raw: &Bytes, read: bool) -> Result<bool, SessionError> {
        if !self.cout.is_empty() {
            self.flush_client().await?;
        }
        let desired = self.params.shared_desired();
        let Some(Ticket { mut pieces, cancel }) =
            self.pool
                .pipelines
                .submit(&self.pool, raw.clone(), &desired, self.params.signature())
        else {
            return Ok(false);
        };
        self.cancel.slot.pipelined(cancel.clone());
        // Out of `self` while the reply is taken; `query_timeout` and `transaction_timeout`
        // count from here.
        let mut timeouts = self.timeouts.take();
        if let Some(t) = &mut timeouts {
            t.arm(Phase::Query);
        }
        let stop = self.stop.clone();
        let outcome = tokio::select! {
            biased;
            outcome = self.take_reply(&mut pieces, read) => outcome,
            // `shutdown_timeout` ran out (a shutdown alone waits for the reply: the
            // statement is not between transactions). The statement is cancelled the
            // same way, and the session ends with 57P01 once its reply ended (within
            // `CLOSING_CANCEL_WAIT`): the process must still run while the pipeline's
            // driver delivers the cancel, or the statement would go on, and a write
            // could commit behind a client told it failed.
            signal = poll_fn(|cx| stop.poll(cx, false)) => {
                let _ = cancel.ask.send(cancel.ticket);
                let ended = async {
                    while let Some(Piece::Reply(_)) = pieces.recv().await {}
                };
                let _ = tokio::time::timeout(CLOSING_CANCEL_WAIT, ended).await;
                Err(self.stopped(signal))
            }
            expiry = timeouts::expired(timeouts.as_deref_mut()) => {
                // The same path as the client's own cancel: taken out of the queue, or
                // forwarded once the statement runs alone.
                let _ = cancel.ask.send(cancel.ticket);
                let fields = timeouts::error(timeouts.as_deref(), expiry);
                tracing::info!(pid = self.cancel.process_id, error = %fields.message, "client timed out in a pipeline");
                Err(SessionError::Timeout(Box::new(fields)))
            }
        };
        self.timeouts = timeouts;
        self.cancel.slot.vacate();
        outcome
    }

    /// Forwards the pieces of a pipelined reply until it is complete or failed.
    async fn take_reply(
        &mut self,
        pieces: &mut mpsc::Receiver<Piece>,
        read: bool,
    ) -> Result<bool, SessionError> {
        let mut started = false;
        loop {
            match pieces.recv().await {
                Some(Piece::Reply(bytes)) => {
                    started = true;
                    self.cout.extend_from_slice(&bytes);
                    if self.cout.len() >= HIGH_WATER {
                        self.flush_client().await?;
                    }
                }
                Some(Piece::Done) => return Ok(true),
                Some(Piece::Failed(PipelineFailure::NotWritten)) => return Ok(false),
                Some(Piece::Failed(PipelineFailure::Lost { .. })) if !started && read => {
                    tracing::info!(
                        pid = self.cancel.process_id,
                        "pipelined read lost its server before any reply; running it again"
                    );
                    self.pool.stats.retried.fetch_add(1, Ordering::Relaxed);
                    return Ok(false);
                }
                Some(Piece::Failed(PipelineFailure::Lost { cut: true, .. })) => {
                    return Err(SessionError::ReplyCut("server connection lost".into()))
                }
                Some(Piece::Failed(PipelineFailure::Lost { fatal: true, .. })) => {
                    return Err(SessionError::ServerEnded)
                }
                Some(Piece::Failed(PipelineFailure::Lost { .. })) | None => {
                    return Err(SessionError::ServerClosed)
                }
                Some(Piece::Failed(PipelineFailure::Unread { cut })) => {
                    let why = format!(
                        "the client did not read the reply to its pipelined statement: {} pieces of it waited more than {:?}",
                        crate::pool::REPLY_PIECES,
                        crate::pool::STALL_LIMIT
                    );
                    return Err(if cut {
                        SessionError::ReplyCut(why)
                    } else {
                        SessionError::fatal(sqlstate::PROGRAM_LIMIT_EXCEEDED, why)
                    });
                }
            }
        }
    }
}
