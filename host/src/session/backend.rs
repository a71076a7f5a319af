//! Server replies: read from the server's buffer and relayed to the client in runs, as the
//! reply queue (`replies`) says each message is to be treated, with what a reply changes
//! in the session applied here: the transaction status, the settings confirmed or rolled
//! back, the statements the server dropped, the pool-mode decision at a boundary.

use bytes::Buf;
use switchyard_protocol::backend::{parse_command_complete, tags, Severity, TransactionStatus};
use switchyard_protocol::frame::{frames, HEADER_LEN};

/// Largest server message relayed: Postgres' own limit on a message (1 GiB). Large rows and
/// COPY data pass through in pieces (`large`); other server messages are held whole.
const MAX_SERVER_MESSAGE: usize = 1 << 30;

use super::replies::Reply;
use super::{large, Session, SessionError};
use crate::policy::pool_mode::ReadyAction;

impl Session {
    /// Handles every complete server message in the read buffer.
    pub(super) fn process_server(&mut self) -> Result<(), SessionError> {
        let Some(conn) = self.server.conn() else {
            return Ok(());
        };
        // The buffer leaves the connection while its messages are handled, so the handlers
        // may update the connection (statements, settings) without aliasing it.
        let mut rbuf = std::mem::take(&mut conn.rbuf);
        let result = self.relay(&rbuf);
        if let Ok(consumed) = result {
            rbuf.advance(consumed);
        }
        if let Some(conn) = self.server.conn() {
            conn.rbuf = rbuf;
        }
        result.map(|_| ())
    }

    /// Forwards the complete messages at the front of `buf` to the client in runs, one copy
    /// per run, breaking runs where a message is swallowed or a synthetic reply goes in.
    /// Returns the bytes consumed.
    fn relay(&mut self, buf: &[u8]) -> Result<usize, SessionError> {
        // The rest of a large message passing through, first.
        let mut passed = 0;
        if self.server.outflow.active() {
            let (n, forward) = self.take_server_bytes(buf.len());
            if forward {
                self.cout.extend_from_slice(&buf[..n]);
            }
            if self.server.outflow.active() {
                return Ok(n);
            }
            passed = n;
        }
        let buf = &buf[passed..];
        let mut messages = frames(buf, MAX_SERVER_MESSAGE);
        let mut run_start = 0;
        let mut rows_pass = self.rows_pass();
        for item in messages.by_ref() {
            let (header, offset) = item.map_err(SessionError::ServerProtocol)?;
            let end = offset + header.len;
            if rows_pass && header.tag == tags::DATA_ROW {
                // A row of the client's result: it stays in the run as it is, without the
                // look every other message gets.
                self.replay.saw_reply();
                continue;
            }
            let forward = self.on_server_message(header.tag, &buf[offset + HEADER_LEN..end])?;
            let settle = self.server.replies.settles_next();
            let anchor = self.replay.wants_anchor();
            if !forward || settle || anchor {
                let run_end = if forward { end } else { offset };
                self.cout.extend_from_slice(&buf[run_start..run_end]);
                run_start = end;
                if anchor {
                    // Replies after this point belong to the pipelined requests.
                    self.replay.reanchor(self.cout.len());
                }
                self.server.replies.settle_front(&mut self.cout);
            }
            rows_pass = self.rows_pass();
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

    /// Whether a DataRow now is a row of a client's request, to be forwarded with no more
    /// than that noted ([`saw_reply`](super::retry::Replay::saw_reply)): what
    /// [`Session::on_server_message`] would make of it. Not when the request failed (its
    /// replies are dropped), nor when the front of the queue is the proxy's own query or a
    /// reply of its own to settle first. A DataRow changes neither, so this holds until the
    /// next other message.
    #[inline]
    fn rows_pass(&self) -> bool {
        !self.replay.failed() && self.server.replies.client_request_in_front()
    }

    /// Handles one server message: asks the reply queue what it means, and applies that to
    /// the session. Returns whether to forward it.
    fn on_server_message(&mut self, tag: u8, body: &[u8]) -> Result<bool, SessionError> {
        if self.replay.failed() {
            return Ok(false); // the request will run again elsewhere; this server is done
        }
        if self.replay.is_open() && self.watch_for_retry(tag, body) {
            return Ok(false);
        }
        if tag == tags::ERROR_RESPONSE
            && self.server.replies.is_empty()
            && self.tx_status == TransactionStatus::Idle
        {
            // Nothing was asked: the server is ending an idle connection (a shutdown, an
            // idle timeout). The end of stream that follows decides what the session does.
            let fields = switchyard_protocol::backend::parse_error_fields(body).ok();
            tracing::debug!(error = ?fields, "idle server sent an error; not forwarded");
            // A FATAL is the server's last word: part with it now, not when its end of
            // stream is read, so that a statement the client sends in between borrows
            // another server instead of going to this one and failing with 08006.
            if fields.is_some_and(|f| matches!(f.severity, Severity::Fatal | Severity::Panic)) {
                self.server_gone_while_idle();
            }
            return Ok(false);
        }
        if tag == tags::ERROR_RESPONSE {
            self.params.abort_pending();
        }
        // The statements the server dropped when it skipped to Sync.
        let statements = &mut self.statements;
        let checkout = &mut self.server.checkout;
        let reply = self.server.replies.on_message(tag, body, |def, name| {
            if let Some(server) = checkout.as_mut() {
                server.conn().statements.remove(def.id);
            }
            if let Some(name) = name {
                statements.remove(&name);
            }
        });
        match reply.map_err(SessionError::ServerProtocol)? {
            Reply::Forward if tag == tags::ERROR_RESPONSE => {
                let fields = switchyard_protocol::backend::parse_error_fields(body).ok();
                if let Some(f) = &fields {
                    self.error_sent(&f.code);
                }
                let fatal = fields.is_some_and(|f| matches!(f.severity, Severity::Fatal | Severity::Panic));
                self.server.ended_with_fatal |= fatal;
                Ok(true)
            }
            Reply::Forward => Ok(true),
            Reply::Swallow => Ok(false),
            Reply::Ready { status, boundary } => Ok(self.on_ready_for_query(status, boundary)),
            Reply::Report => {
                self.check_report(body);
                Ok(true)
            }
            Reply::Complete => {
                self.on_command_complete(body);
                Ok(true)
            }
            Reply::OwnQueryFailed => {
                let fields = switchyard_protocol::backend::parse_error_fields(body).ok();
                tracing::warn!(error = ?fields, "the proxy's own query failed");
                Ok(false)
            }
        }
    }

    /// A ReadyForQuery for the client: the transaction status, the settings it confirms,
    /// and at a boundary the pool-mode decision. Returns whether to forward it (not when the
    /// transaction block is refused: the client gets the refusal in its place).
    fn on_ready_for_query(&mut self, status: TransactionStatus, at_boundary: bool) -> bool {
        self.tx_status = status;
        self.request_done(status);
        // Reports come until the transaction ends (a SET LOCAL reverts at COMMIT).
        if self.server.replies.is_empty() && status == TransactionStatus::Idle {
            self.params.settle_reports();
        }
        if status == TransactionStatus::Idle && self.params.has_pending() {
            let server = self.server.conn();
            if self
                .params
                .commit_pending(server.map(|c| (&mut c.settings, &mut c.settings_signature)))
            {
                self.facts.reset_application_name();
            }
        }
        self.server.release_ready = false;
        if at_boundary {
            match self.ready_action(status) {
                ReadyAction::Release => self.server.release_ready = true,
                ReadyAction::Keep => {}
                ReadyAction::RefuseTransaction(message) => {
                    self.refuse_transaction(&message);
                    return false;
                }
            }
        }
        true
    }

    /// A CommandComplete for the client whose tag changes what the proxy tracks.
    fn on_command_complete(&mut self, body: &[u8]) {
        // Most tags (SELECT, INSERT, UPDATE...) are none of these: told from their first
        // byte, without parsing the tag (UTF-8 checked, NUL found) of every statement.
        if !matches!(body.first(), Some(b'R' | b'D')) {
            return;
        }
        match parse_command_complete(body) {
            Ok("ROLLBACK") => self.params.abort_pending(),
            // A pinned or session-mode client's own DISCARD ALL or DEALLOCATE ALL reached
            // the server: the proxy's statements there are gone, and so are the client's
            // names, as on Postgres.
            Ok("DISCARD ALL" | "DEALLOCATE ALL") => {
                self.statements.clear();
                if let Some(conn) = self.server.conn() {
                    conn.statements.clear();
                }
            }
            _ => {}
        }
    }

    /// Rolls back the transaction block the client just opened (statement pooling) and
    /// answers with an error in place of this ReadyForQuery.
    fn refuse_transaction(&mut self, message: &str) {
        self.error_sent(switchyard_protocol::sqlstate::INVALID_TRANSACTION_STATE);
        self.server
            .replies
            .refuse_transaction(message, &mut self.server.sout);
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
}
