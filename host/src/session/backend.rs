//! Server replies: forwarded to the client in order, except replies to messages the proxy
//! injected (swallowed) and replies the proxy makes itself (inserted where the server's
//! reply would have been).
//!
//! Each message sent to the server pushes an [`Expect`]; the reply that completes it pops it.
//! After an error in the extended protocol, Postgres skips everything up to Sync, so the
//! expectations up to the Sync are dropped too, and statements the proxy had meant to prepare
//! there are forgotten.

use std::sync::Arc;

use bytes::Bytes;
use bytes::{Buf, BytesMut};
use switchyard_protocol::backend::{error_response, ready_for_query, ErrorFields};
use switchyard_protocol::backend::{parse_command_complete, parse_ready_for_query, tags, TransactionStatus};
use switchyard_protocol::frame::{frames, HEADER_LEN};
use switchyard_protocol::frontend::encode_query;
use switchyard_protocol::sqlstate;

/// Largest server message relayed: Postgres' own limit on a message (1 GiB). Large rows and
/// COPY data pass through in pieces (`large`); other server messages are held whole.
const MAX_SERVER_MESSAGE: usize = 1 << 30;

use super::{large, Session, SessionError};
use crate::policy::pool_mode::ReadyAction;
use crate::pool::StatementDef;

/// A reply the server owes.
#[derive(Debug)]
pub(super) enum Expect {
    /// A client Query or FunctionCall: ends with ReadyForQuery.
    Query,
    /// A client Parse; for a named statement, the proxy's statement and the client's name.
    Parse {
        prepared: Option<(Arc<StatementDef>, Bytes)>,
    },
    Bind,
    Describe,
    Execute,
    Close,
    Sync,
    /// The proxy's own Parse of a statement this server lacked: swallow ParseComplete.
    InjectedParse {
        def: Arc<StatementDef>,
    },
    /// The proxy's own Close of an evicted statement: swallow CloseComplete.
    InjectedClose,
    /// The proxy's own simple query (the ROLLBACK that refuses a transaction block in
    /// statement mode): swallow everything to ReadyForQuery.
    InjectedQuery,
    /// A reply the proxy makes, sent when every earlier reply has been forwarded.
    Synthetic(Bytes),
    /// Where the client ended a COPY FROM STDIN (CopyDone/CopyFail); no reply of its own.
    CopyEnd,
}

impl Session {
    /// Handles every complete server message in the read buffer.
    pub(super) fn process_server(&mut self) -> Result<(), SessionError> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        // The buffer leaves the connection while its messages are handled, so the handlers
        // may update the connection (statements, settings) without aliasing it.
        let mut rbuf = std::mem::take(&mut server.conn().rbuf);
        let result = self.relay(&rbuf);
        if let Ok(consumed) = result {
            rbuf.advance(consumed);
        }
        if let Some(server) = self.server.as_mut() {
            server.conn().rbuf = rbuf;
        }
        result.map(|_| ())
    }

    /// Forwards the complete messages at the front of `buf` to the client in runs, one copy
    /// per run, breaking runs where a message is swallowed or a synthetic reply goes in.
    /// Returns the bytes consumed.
    fn relay(&mut self, buf: &[u8]) -> Result<usize, SessionError> {
        // The rest of a large message passing through, first.
        let mut passed = 0;
        if self.outflow.active() {
            let (n, forward) = self.take_server_bytes(buf.len());
            if forward {
                self.cout.extend_from_slice(&buf[..n]);
            }
            if self.outflow.active() {
                return Ok(n);
            }
            passed = n;
        }
        let buf = &buf[passed..];
        let mut messages = frames(buf, MAX_SERVER_MESSAGE);
        let mut run_start = 0;
        for item in messages.by_ref() {
            let (header, offset) = item.map_err(SessionError::ServerProtocol)?;
            let end = offset + header.len;
            let forward = self.on_server_message(header.tag, &buf[offset + HEADER_LEN..end])?;
            let settle = matches!(self.expect.front(), Some(Expect::Synthetic(_) | Expect::CopyEnd));
            let anchor = self.replay.wants_anchor();
            if !forward || settle || anchor {
                let run_end = if forward { end } else { offset };
                self.cout.extend_from_slice(&buf[run_start..run_end]);
                run_start = end;
                if anchor {
                    // Replies after this point belong to the pipelined requests.
                    self.replay.reanchor(self.cout.len());
                }
                self.settle_front();
            }
        }
        let mut consumed = messages.consumed();
        self.cout.extend_from_slice(&buf[run_start..consumed]);
        // A large message whose body the proxy does not read starts passing through.
        if let Some(header) = messages.pending_header().filter(large::server_streams) {
            let forward = self.on_server_message(header.tag, &[])?;
            let n = self.start_server_stream(&header, forward, buf.len() - consumed);
            if forward {
                self.cout.extend_from_slice(&buf[consumed..consumed + n]);
            }
            consumed += n;
        }
        Ok(passed + consumed)
    }

    /// Sends synthetic replies that have reached the front of the queue, and drops markers.
    fn settle_front(&mut self) {
        loop {
            match self.expect.front() {
                Some(Expect::Synthetic(_)) => {
                    if let Some(Expect::Synthetic(reply)) = self.expect.pop_front() {
                        self.cout.extend_from_slice(&reply);
                    }
                }
                Some(Expect::CopyEnd) => {
                    self.expect.pop_front();
                }
                _ => return,
            }
        }
    }

    /// COPY FROM STDIN started by an Execute: Postgres ignores every Sync the client sends
    /// until CopyDone/CopyFail, so the Syncs already queued for that stretch owe nothing.
    fn on_copy_in(&mut self) {
        if !matches!(self.expect.front(), Some(Expect::Execute)) {
            return; // simple query COPY: the Query ends at ReadyForQuery as usual
        }
        let mut i = 1;
        while i < self.expect.len() {
            match self.expect[i] {
                Expect::Sync => {
                    self.expect.remove(i);
                    self.unsynced = true;
                }
                Expect::CopyEnd => {
                    self.expect.remove(i);
                    return;
                }
                _ => i += 1,
            }
        }
        self.copy_in = true;
    }

    /// Updates the expectations for one server message; returns whether to forward it.
    fn on_server_message(&mut self, tag: u8, body: &[u8]) -> Result<bool, SessionError> {
        if self.replay.failed() {
            return Ok(false); // the request will run again elsewhere; this server is done
        }
        if self.replay.is_open() && self.watch_for_retry(tag, body) {
            return Ok(false);
        }
        if tag == tags::ERROR_RESPONSE && self.expect.is_empty() && self.tx_status == TransactionStatus::Idle
        {
            // Nothing was asked: the server is ending an idle connection (a shutdown, an
            // idle timeout). The end of stream that follows decides what the session does.
            let fields = switchyard_protocol::backend::parse_error_fields(body).ok();
            tracing::debug!(error = ?fields, "idle server sent an error; not forwarded");
            return Ok(false);
        }
        let injected_query = matches!(self.expect.front(), Some(Expect::InjectedQuery));
        match tag {
            tags::READY_FOR_QUERY => {
                let status = parse_ready_for_query(body).map_err(SessionError::ServerProtocol)?;
                let ended = self.expect.pop_front();
                if matches!(ended, Some(Expect::InjectedQuery)) {
                    return Ok(false);
                }
                self.tx_status = status;
                // Reports come until the transaction ends (a SET LOCAL reverts at COMMIT).
                if self.expect.is_empty() && status == TransactionStatus::Idle {
                    self.params.settle_reports();
                }
                if status == TransactionStatus::Idle && self.params.has_pending() {
                    let server = self.server.as_mut().map(|s| s.conn());
                    if self
                        .params
                        .commit_pending(server.map(|c| (&mut c.settings, &mut c.settings_signature)))
                    {
                        self.facts.reset_application_name();
                    }
                }
                let at_boundary = self.expect.is_empty() && !self.unsynced;
                self.release_ready = false;
                if at_boundary {
                    match self.ready_action(status) {
                        ReadyAction::Release => self.release_ready = true,
                        ReadyAction::Keep => {}
                        ReadyAction::RefuseTransaction(message) => {
                            self.refuse_transaction(&message);
                            return Ok(false);
                        }
                    }
                }
                Ok(true)
            }
            tags::ERROR_RESPONSE => {
                self.params.abort_pending();
                match self.expect.front() {
                    Some(Expect::Query) => Ok(true),
                    Some(Expect::InjectedQuery) => {
                        let fields = switchyard_protocol::backend::parse_error_fields(body).ok();
                        tracing::warn!(error = ?fields, "the proxy's own query failed");
                        Ok(false)
                    }
                    _ => {
                        // Extended protocol: the server now skips to Sync.
                        while let Some(front) = self.expect.front() {
                            if matches!(front, Expect::Sync) {
                                break;
                            }
                            match self.expect.pop_front() {
                                Some(Expect::InjectedParse { def }) => self.forget_on_server(def.id),
                                Some(Expect::Parse {
                                    prepared: Some((def, name)),
                                }) => {
                                    self.forget_on_server(def.id);
                                    self.statements.remove(&name);
                                }
                                _ => {}
                            }
                        }
                        Ok(true)
                    }
                }
            }
            tags::PARAMETER_STATUS if !injected_query => {
                self.check_report(body);
                Ok(true)
            }
            tags::COPY_IN_RESPONSE => {
                self.on_copy_in();
                Ok(true)
            }
            tags::PARSE_COMPLETE => Ok(match self.expect.pop_front() {
                Some(Expect::InjectedParse { def }) => {
                    def.mark_validated();
                    false
                }
                Some(Expect::Parse {
                    prepared: Some((def, _)),
                }) => {
                    def.mark_validated();
                    true
                }
                _ => true,
            }),
            tags::CLOSE_COMPLETE => Ok(!matches!(self.expect.pop_front(), Some(Expect::InjectedClose))),
            tags::BIND_COMPLETE => {
                self.pop_if(|e| matches!(e, Expect::Bind));
                Ok(true)
            }
            tags::ROW_DESCRIPTION | tags::NO_DATA => {
                if injected_query {
                    return Ok(false);
                }
                self.pop_if(|e| matches!(e, Expect::Describe));
                Ok(true)
            }
            tags::COMMAND_COMPLETE | tags::EMPTY_QUERY_RESPONSE | tags::PORTAL_SUSPENDED => {
                if injected_query {
                    return Ok(false);
                }
                if tag == tags::COMMAND_COMPLETE {
                    match parse_command_complete(body) {
                        Ok("ROLLBACK") => self.params.abort_pending(),
                        // A pinned or session-mode client's own DISCARD ALL or DEALLOCATE
                        // ALL reached the server: the proxy's statements there are gone,
                        // and so are the client's names, as on Postgres.
                        Ok("DISCARD ALL" | "DEALLOCATE ALL") => {
                            self.statements.clear();
                            if let Some(server) = self.server.as_mut() {
                                server.conn().statements.clear();
                            }
                        }
                        _ => {}
                    }
                }
                self.pop_if(|e| matches!(e, Expect::Execute));
                Ok(true)
            }
            _ => Ok(!injected_query),
        }
    }

    /// Rolls back the transaction block the client just opened (statement pooling) and
    /// answers with an error in place of this ReadyForQuery.
    fn refuse_transaction(&mut self, message: &str) {
        encode_query(b"ROLLBACK", &mut self.sout);
        self.expect.push_back(Expect::InjectedQuery);
        let mut reply = BytesMut::new();
        error_response(
            &ErrorFields::error(sqlstate::INVALID_TRANSACTION_STATE, message),
            &mut reply,
        );
        ready_for_query(TransactionStatus::Idle, &mut reply);
        self.expect.push_back(Expect::Synthetic(reply.freeze()));
        self.tx_status = TransactionStatus::Idle;
        self.tx_statements = 0;
    }

    /// A ParameterStatus report while relaying: an `application_name` report (a SET,
    /// `set_config`, a rollback of either) updates what the hooks learn about the session
    /// (`current-session`); one that no tracked command explains means the server's
    /// settings changed where the proxy could not see (a SET run by a function,
    /// `set_config` with a computed argument), so the server stays with this client from
    /// now on and is reset before anyone else gets it.
    fn check_report(&mut self, body: &[u8]) {
        /// Reports that are not session settings a client changes.
        const NOT_SETTINGS: [&str; 6] = [
            "in_hot_standby",
            "server_version",
            "server_encoding",
            "integer_datetimes",
            "is_superuser",
            "session_authorization",
        ];
        let Ok((name, value)) = switchyard_protocol::backend::parse_parameter_status(body) else {
            return;
        };
        if name == "application_name" {
            self.facts.set_application_name(&value);
        }
        if !NOT_SETTINGS.contains(&name.as_str()) && !self.params.expects_report(&name) {
            tracing::debug!(setting = %name, "server reported a setting change the proxy did not track");
            self.pin("a setting changed by the server itself");
        }
    }

    fn pop_if(&mut self, f: impl Fn(&Expect) -> bool) {
        if self.expect.front().is_some_and(f) {
            self.expect.pop_front();
        }
    }

    fn forget_on_server(&mut self, id: u64) {
        if let Some(server) = self.server.as_mut() {
            server.conn().statements.remove(id);
        }
    }
}
