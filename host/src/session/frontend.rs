//! Client messages: taken from the client's buffer and handed, one by one, to the step for
//! their kind (`simple` for Query and FunctionCall, `extended` for the extended protocol,
//! `copy` for COPY data), each of which says what the message needs (a server, a rewrite, a
//! synthetic reply) and what the server will owe for it.

use bytes::Bytes;
use switchyard_protocol::backend::{self as be, ErrorFields};
use switchyard_protocol::frame::{peek_header, split_frame};
use switchyard_protocol::frontend::{encode_flush, FrontendMessage, Target};
use switchyard_protocol::sqlstate;
use switchyard_protocol::ProtocolError;

use super::replies::Expect;
use super::{Session, SessionError, Work, HIGH_WATER, MAX_OWED};

impl Session {
    /// Handles every complete client message in the buffer, and passes on what has arrived
    /// of a message streaming through (`large`), while neither the server nor the client
    /// is behind (see [`Session::input_blocked`]). Notes when it stopped with input left,
    /// so that the session comes back to it once they caught up.
    pub(super) async fn process_client(&mut self) -> Result<(), SessionError> {
        let max = self.state.config.proxy.max_message_size.0;
        loop {
            self.input_held = self.input_blocked() && !self.cbuf.is_empty();
            if self.input_held {
                let server = &self.server;
                if server.replies.len() >= MAX_OWED
                    && server.replies.unsynced()
                    && !server.replies.copy_in()
                    && !server.inflow.active()
                    && server.held()
                {
                    // The server may be keeping the replies to this batch until a Flush
                    // or Sync that sits behind the messages not read yet: ask for them.
                    encode_flush(&mut self.server.sout);
                }
                break;
            }
            if self.terminated {
                break;
            }
            if self.server.inflow.active() {
                if !self.pass_client_bytes() {
                    break;
                }
                continue;
            }
            let frame = match split_frame(&mut self.cbuf, max) {
                Ok(Some(frame)) => frame,
                Ok(None) => match peek_header(&self.cbuf, max)? {
                    // Incomplete: pass it through if it is large and may stream, else wait.
                    Some(header) if self.start_client_stream(header).await? => continue,
                    _ => break,
                },
                Err(ProtocolError::TooLarge { len, max }) => return Err(too_large(len, max)),
                Err(e) => return Err(e.into()),
            };
            let msg = FrontendMessage::decode(&frame)?;
            tracing::trace!(pid = self.cancel.process_id, msg = ?msg, "from client");
            let may_command = may_hold_session_command(&msg);
            let replayable = super::retry::replayable(&msg, may_command);
            if !self.handle_in_batch(&msg, frame.raw()) {
                self.handle(msg, frame.raw(), may_command).await?;
            }
            self.replay.record(frame.into_raw(), replayable);
        }
        Ok(())
    }

    /// Whether taking more client input waits: the server has not taken what it was sent,
    /// the client has not read its replies, or too many replies are owed to it. Each bounds
    /// what one client can make the proxy hold, however it pipelines.
    #[inline]
    pub(super) fn input_blocked(&self) -> bool {
        self.server.sout.len() >= HIGH_WATER
            || self.cout.len() >= HIGH_WATER
            || self.server.replies.len() >= MAX_OWED
    }

    /// Handles one client message: the step for its kind. `may_command` is
    /// [`may_hold_session_command`] of the message.
    pub(super) async fn handle(
        &mut self,
        msg: FrontendMessage,
        raw: &Bytes,
        may_command: bool,
    ) -> Result<(), SessionError> {
        self.report_lost_session(&msg)?;
        if self.skipping {
            return self.skip(&msg);
        }
        match msg {
            FrontendMessage::Query { sql } => self.on_query(&sql, raw, may_command).await,
            FrontendMessage::Parse {
                name,
                query,
                param_types,
            } => self.on_parse(name, &query, &param_types, raw, may_command).await,
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } => self.on_bind(&portal, &statement, &rest, raw).await,
            FrontendMessage::Describe { target, name } => self.on_describe(target, &name, raw).await,
            FrontendMessage::Close {
                target: Target::Statement,
                name,
            } if !name.is_empty() => self.on_close_statement(&name),
            FrontendMessage::Close { .. } => self.on_pass(raw, Expect::Close).await,
            FrontendMessage::Execute { .. } => self.on_pass(raw, Expect::Execute).await,
            FrontendMessage::Sync => {
                self.on_sync(raw);
                Ok(())
            }
            FrontendMessage::Flush => {
                self.on_flush(raw);
                Ok(())
            }
            FrontendMessage::FunctionCall(_) => self.on_function_call(raw).await,
            FrontendMessage::CopyData(_) => self.on_copy_data(raw),
            FrontendMessage::CopyDone | FrontendMessage::CopyFail { .. } => self.on_copy_end(raw),
            FrontendMessage::Terminate => self.on_terminate(),
            FrontendMessage::Password(_) => Err(password_after_login()),
        }
    }

    /// A message of an extended batch whose server is held already (every message of a
    /// batch after its first, but a Parse) needs no step that waits: handled here, without
    /// making and polling [`Session::handle`]'s future, which cost about 150 instructions
    /// per message. Returns false, having done nothing, for every other message, and for
    /// any while the session skips a batch or has lost its server.
    #[inline]
    fn handle_in_batch(&mut self, msg: &FrontendMessage, raw: &Bytes) -> bool {
        if !self.server.held() || self.skipping || self.lost_session.is_some() {
            return false;
        }
        match msg {
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } => {
                let def = self.lookup(statement);
                self.send_bind(portal, def, rest, raw);
            }
            FrontendMessage::Describe { target, name } => {
                let def = self.described(*target, name);
                self.send_describe(def, raw);
            }
            FrontendMessage::Execute { .. } => self.send_as_is(raw, Expect::Execute),
            FrontendMessage::Close {
                target: Target::Statement,
                name,
            } if !name.is_empty() => return false,
            FrontendMessage::Close { .. } => self.send_as_is(raw, Expect::Close),
            FrontendMessage::Sync => self.on_sync(raw),
            FrontendMessage::Flush => self.on_flush(raw),
            _ => return false,
        }
        true
    }

    /// The server and the state with it were lost while the client was idle
    /// ([`Session::server_gone_while_idle`]): the client's next message (but Terminate) ends
    /// the session with the error saying so. Inline: asked for every client message, and out
    /// of line it cost a call and a `Result` through memory each time (15 Ir per message).
    #[inline]
    fn report_lost_session(&mut self, msg: &FrontendMessage) -> Result<(), SessionError> {
        if let Some(lost) = self.lost_session.take() {
            if !matches!(msg, FrontendMessage::Terminate) {
                self.pool.cluster.incidents.client_error();
                return Err(SessionError::Fatal(lost));
            }
        }
        Ok(())
    }

    /// A batch whose server could not be had: dropped up to its Sync, as Postgres skips the
    /// rest of a batch after an error.
    fn skip(&mut self, msg: &FrontendMessage) -> Result<(), SessionError> {
        match msg {
            FrontendMessage::Sync => {
                self.skipping = false;
                be::ready_for_query(self.tx_status, &mut self.cout);
            }
            FrontendMessage::Terminate => self.terminated = true,
            _ => {}
        }
        Ok(())
    }

    fn on_terminate(&mut self) -> Result<(), SessionError> {
        self.terminated = true;
        Ok(())
    }

    /// Borrows a server for the message at hand. If none can be had (pool timeout, server
    /// down), the client gets an ERROR instead of losing its connection: a simple query ends
    /// with ReadyForQuery, an extended batch is skipped up to its Sync. Returns whether a
    /// server is held.
    pub(super) async fn acquire_or_refuse(
        &mut self,
        extended: bool,
        work: Work,
    ) -> Result<bool, SessionError> {
        // Every message of a batch after its first finds the server held: answered
        // before the borrowing future is made and polled.
        if self.server.held() {
            return Ok(true);
        }
        match self.acquire(work).await {
            Ok(()) => Ok(true),
            Err(SessionError::Pool(e)) => {
                tracing::warn!(user = self.facts.user(), database = self.facts.database(), error = %e, "no server for client");
                self.pool.cluster.incidents.client_error();
                let fields = match &e {
                    crate::pool::PoolError::Server(crate::server::ServerError::Refused {
                        fields, ..
                    }) => {
                        let mut f = (**fields).clone();
                        f.severity = be::Severity::Error;
                        f
                    }
                    _ => ErrorFields::error(e.sqlstate(), e.to_string()),
                };
                self.error_sent(&fields.code);
                be::error_response(&fields, &mut self.cout);
                if extended {
                    self.skipping = true;
                } else {
                    be::ready_for_query(self.tx_status, &mut self.cout);
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Queues a reply the proxy makes itself, after every reply the server still owes.
    pub(super) fn synthesize(&mut self, reply: Bytes) {
        self.server.replies.synthesize(reply, &mut self.cout);
    }
}

/// A password message from a client that is logged in already.
fn password_after_login() -> SessionError {
    SessionError::fatal(
        sqlstate::PROTOCOL_VIOLATION,
        "unexpected password message after authentication",
    )
}

/// A client message over `max_message_size`, refused from its header.
fn too_large(len: usize, max: usize) -> SessionError {
    SessionError::Fatal(Box::new(
        ErrorFields::fatal(
            sqlstate::PROGRAM_LIMIT_EXCEEDED,
            format!("message of {len} bytes exceeds max_message_size ({max} bytes)"),
        )
        .with_hint("send smaller messages, or raise max_message_size in the proxy's [proxy] settings"),
    ))
}

/// [`maybe_session_command`] of a Query's or Parse's SQL text (false for other messages),
/// run once per message: the message's step and the retry window both need it.
pub(super) fn may_hold_session_command(msg: &FrontendMessage) -> bool {
    match msg {
        FrontendMessage::Query { sql } | FrontendMessage::Parse { query: sql, .. } => {
            maybe_session_command(sql)
        }
        _ => false,
    }
}

/// Cheap filter before lexing, run on every query: true only if the text may hold a
/// statement that changes session state, i.e. its first keyword is SET, RESET, PREPARE,
/// DEALLOCATE or DISCARD, or it holds more than one statement.
pub(super) fn maybe_session_command(sql: &[u8]) -> bool {
    const KEYWORDS: [&[u8]; 5] = [b"set", b"reset", b"prepare", b"deallocate", b"discard"];
    let mut s = sql;
    loop {
        let trimmed = s.trim_ascii_start();
        if let Some(rest) = trimmed.strip_prefix(b"--") {
            s = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(&[][..], |p| &rest[p..]);
        } else if trimmed.starts_with(b"/*") || trimmed.starts_with(b"(") {
            return true;
        } else {
            s = trimmed;
            break;
        }
    }
    // Every keyword starts with one of these letters: most statements are let through
    // on their first byte.
    if matches!(
        s.first().map(u8::to_ascii_lowercase),
        Some(b's' | b'r' | b'p' | b'd')
    ) {
        let word_end = s.iter().position(|c| !c.is_ascii_alphabetic()).unwrap_or(s.len());
        if KEYWORDS.iter().any(|k| s[..word_end].eq_ignore_ascii_case(k)) {
            return true;
        }
    }
    // A `;` before the end means another statement may follow (or it sits in a literal,
    // which the lexer will tell).
    let Some(first_semicolon) = memchr::memchr(b';', s) else {
        return false;
    };
    s[first_semicolon..]
        .iter()
        .any(|&c| c != b';' && !c.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::maybe_session_command as m;

    #[test]
    fn prefilter_lets_plain_queries_through_cheaply() {
        assert!(!m(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1;"));
        assert!(!m(b"  select 1 ;  ; "));
        assert!(!m(b"INSERT INTO t VALUES (1)"));
        assert!(!m(b"settings_table_scan"));
        assert!(m(b"SET search_path TO x"));
        assert!(m(b"-- hi\n  reset all"));
        assert!(m(b"SELECT 1; SET x = 1"));
        assert!(m(b"/* c */ SET x = 1"));
        assert!(m(b"Deallocate all"));
    }
}
