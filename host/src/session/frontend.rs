//! Client messages: what each one needs (a server, a rewrite, a synthetic reply) and what
//! the server will owe for it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use switchyard_protocol::backend::{self as be, ErrorFields};
use switchyard_protocol::frame::{peek_header, split_frame};
use switchyard_protocol::frontend::{
    encode_bind_renamed, encode_close, encode_describe, encode_flush, FrontendMessage, Target,
};
use switchyard_protocol::sqlstate;
use switchyard_protocol::ProtocolError;

use super::backend::Expect;
use super::sql::{self, Command};
use super::{Session, SessionError, HIGH_WATER, MAX_OWED};
use crate::config::PoolMode;
use crate::pool::StatementDef;

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
                if self.expect.len() >= MAX_OWED
                    && self.unsynced
                    && !self.copy_in
                    && !self.inflow.active()
                    && self.server.is_some()
                {
                    // The server may be keeping the replies to this batch until a Flush
                    // or Sync that sits behind the messages not read yet: ask for them.
                    encode_flush(&mut self.sout);
                }
                break;
            }
            if self.terminated {
                break;
            }
            if self.inflow.active() {
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
            let replayable = super::retry::replayable(&msg);
            self.handle(msg, frame.raw()).await?;
            self.replay.record(frame.into_raw(), replayable);
        }
        Ok(())
    }

    /// Whether taking more client input waits: the server has not taken what it was sent,
    /// the client has not read its replies, or too many replies are owed to it. Each bounds
    /// what one client can make the proxy hold, however it pipelines.
    #[inline]
    pub(super) fn input_blocked(&self) -> bool {
        self.sout.len() >= HIGH_WATER || self.cout.len() >= HIGH_WATER || self.expect.len() >= MAX_OWED
    }

    pub(super) async fn handle(&mut self, msg: FrontendMessage, raw: &Bytes) -> Result<(), SessionError> {
        if let Some(lost) = self.lost_session.take() {
            if !matches!(msg, FrontendMessage::Terminate) {
                self.pool.cluster.incidents.client_error();
                return Err(SessionError::Fatal(lost));
            }
        }
        if self.skipping {
            // A batch whose server could not be had: drop it up to its Sync, as Postgres
            // skips the rest of a batch after an error.
            match msg {
                FrontendMessage::Sync => {
                    self.skipping = false;
                    be::ready_for_query(self.tx_status, &mut self.cout);
                }
                FrontendMessage::Terminate => self.terminated = true,
                _ => {}
            }
            return Ok(());
        }
        match msg {
            FrontendMessage::Query { sql } => self.on_query(&sql, raw).await?,
            FrontendMessage::Parse {
                name,
                query,
                param_types,
            } => {
                self.note_sql(&query);
                if name.is_empty() {
                    if !self.acquire_or_refuse(true).await? {
                        return Ok(());
                    }
                    self.unsynced = true;
                    self.sout.extend_from_slice(raw);
                    self.expect.push_back(Expect::Parse { prepared: None });
                    return Ok(());
                }
                let def = self.pool.statements.intern(&query, &param_types);
                self.statements.insert(name.clone(), def.clone());
                if self.server.is_none() && def.is_validated() {
                    // Known-good SQL: no need to borrow a server just to hear "ParseComplete"
                    // (and a client blocked in a synchronous prepare cannot deadlock the pool).
                    self.synthesize(parse_complete());
                    return Ok(());
                }
                if !self.acquire_or_refuse(true).await? {
                    self.statements.remove(&name);
                    return Ok(());
                }
                self.unsynced = true;
                if self.server_has(&def) {
                    self.synthesize(parse_complete());
                } else {
                    self.prepare_on_server(&def);
                    self.sout.extend_from_slice(&def.parse_message);
                    self.expect.push_back(Expect::Parse {
                        prepared: Some((def, name)),
                    });
                }
            }
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } => {
                if !self.acquire_or_refuse(true).await? {
                    return Ok(());
                }
                self.unsynced = true;
                match self.lookup(&statement) {
                    Some(def) => {
                        self.ensure_prepared(&def);
                        encode_bind_renamed(&portal, &def.server_name, &rest, &mut self.sout);
                    }
                    // Unnamed, or unknown: the server gives the same answer Postgres would.
                    None => self.sout.extend_from_slice(raw),
                }
                self.expect.push_back(Expect::Bind);
            }
            FrontendMessage::Describe { target, name } => {
                if !self.acquire_or_refuse(true).await? {
                    return Ok(());
                }
                self.unsynced = true;
                match (target, self.lookup_target(target, &name)) {
                    (Target::Statement, Some(def)) => {
                        self.ensure_prepared(&def);
                        encode_describe(Target::Statement, &def.server_name, &mut self.sout);
                    }
                    _ => self.sout.extend_from_slice(raw),
                }
                self.expect.push_back(Expect::Describe);
            }
            FrontendMessage::Close {
                target: Target::Statement,
                name,
            } if !name.is_empty() => {
                // The server keeps its copy for other clients; this client forgets the name.
                self.statements.remove(&name);
                self.synthesize(close_complete());
            }
            FrontendMessage::Close { .. } => {
                if !self.acquire_or_refuse(true).await? {
                    return Ok(());
                }
                self.unsynced = true;
                self.sout.extend_from_slice(raw);
                self.expect.push_back(Expect::Close);
            }
            FrontendMessage::Execute { .. } => {
                if !self.acquire_or_refuse(true).await? {
                    return Ok(());
                }
                self.unsynced = true;
                self.sout.extend_from_slice(raw);
                self.expect.push_back(Expect::Execute);
            }
            FrontendMessage::Sync if self.copy_in => {
                // The server ignores Sync during COPY FROM STDIN; the batch stays open.
                self.sout.extend_from_slice(raw);
            }
            FrontendMessage::Sync => {
                if self.server.is_some() {
                    self.sout.extend_from_slice(raw);
                    self.expect.push_back(Expect::Sync);
                    self.unsynced = false;
                } else {
                    // Everything since the last Sync was answered by the proxy itself.
                    let mut out = BytesMut::new();
                    be::ready_for_query(self.tx_status, &mut out);
                    self.synthesize(out.freeze());
                }
            }
            FrontendMessage::Flush => {
                if self.server.is_some() {
                    self.sout.extend_from_slice(raw);
                }
            }
            FrontendMessage::FunctionCall(_) => {
                if !self.acquire_or_refuse(false).await? {
                    return Ok(());
                }
                self.sout.extend_from_slice(raw);
                self.expect.push_back(Expect::Query);
            }
            FrontendMessage::CopyData(_) => {
                // Outside COPY a server ignores these, and so do we when no server is held.
                if self.server.is_some() {
                    self.sout.extend_from_slice(raw);
                }
            }
            FrontendMessage::CopyDone | FrontendMessage::CopyFail { .. } => {
                if self.server.is_some() {
                    self.sout.extend_from_slice(raw);
                    if self.copy_in {
                        self.copy_in = false;
                    } else if !self.expect.is_empty() {
                        // The server may not have said CopyInResponse yet: mark where the
                        // copy ended, so Syncs sent before this point are known to be ignored.
                        self.expect.push_back(Expect::CopyEnd);
                    }
                }
            }
            FrontendMessage::Terminate => self.terminated = true,
            FrontendMessage::Password(_) => {
                return Err(SessionError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    "unexpected password message after authentication",
                ));
            }
        }
        Ok(())
    }

    async fn on_query(&mut self, sql_text: &Bytes, raw: &Bytes) -> Result<(), SessionError> {
        self.note_server_state(sql_text);
        let commands = if maybe_session_command(sql_text) {
            sql::commands(sql_text)
        } else {
            Vec::new()
        };
        if let [only] = commands.as_slice() {
            if let Some(reply) = self.answer_locally(only) {
                self.synthesize(reply);
                return Ok(());
            }
        }
        for cmd in commands {
            if cmd == Command::Prepare && self.mode == PoolMode::Transaction {
                let mut out = BytesMut::new();
                be::error_response(
                    &ErrorFields::error(sqlstate::FEATURE_NOT_SUPPORTED, "SQL PREPARE is not supported in transaction pooling mode")
                        .with_detail("The statement would exist on one server only, and the next transaction may run on another.")
                        .with_hint("Use your driver's protocol-level prepared statements, which switchyard tracks, or session pooling."),
                    &mut out,
                );
                be::ready_for_query(self.tx_status, &mut out);
                self.synthesize(out.freeze());
                return Ok(());
            }
            self.note_command(cmd);
        }
        if self.acquire_or_refuse(false).await? {
            self.sout.extend_from_slice(raw);
            self.expect.push_back(Expect::Query);
        }
        Ok(())
    }

    /// Borrows a server for the message at hand. If none can be had (pool timeout, server
    /// down), the client gets an ERROR instead of losing its connection: a simple query ends
    /// with ReadyForQuery, an extended batch is skipped up to its Sync. Returns whether a
    /// server is held.
    pub(super) async fn acquire_or_refuse(&mut self, extended: bool) -> Result<bool, SessionError> {
        match self.acquire().await {
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

    /// Statements about the client's own prepared statements that the proxy answers itself,
    /// because the server never saw the client's names.
    fn answer_locally(&mut self, cmd: &Command) -> Option<Bytes> {
        let mut out = BytesMut::new();
        match cmd {
            Command::Deallocate { name } => {
                if !self.statements.remove(name.as_bytes()) {
                    be::error_response(
                        &ErrorFields::error(
                            sqlstate::INVALID_SQL_STATEMENT_NAME,
                            format!("prepared statement \"{name}\" does not exist"),
                        ),
                        &mut out,
                    );
                    be::ready_for_query(self.tx_status, &mut out);
                    return Some(out.freeze());
                }
                be::command_complete("DEALLOCATE", &mut out);
            }
            Command::DeallocateAll => {
                if self.mode == PoolMode::Session {
                    return None;
                }
                self.statements.clear();
                be::command_complete("DEALLOCATE ALL", &mut out);
            }
            Command::DiscardAll if self.mode == PoolMode::Transaction && self.server.is_none() => {
                self.statements.clear();
                self.params.note(Command::DiscardAll);
                if self.params.commit_pending(None) {
                    self.facts.reset_application_name();
                }
                be::command_complete("DISCARD ALL", &mut out);
            }
            _ => return None,
        }
        be::ready_for_query(self.tx_status, &mut out);
        Some(out.freeze())
    }

    /// Pins the server if the client creates state that lives only there.
    fn note_server_state(&mut self, sql_text: &[u8]) {
        if !self.server_state {
            if let Some(what) = sql::server_state(sql_text) {
                self.pin(what);
            }
        }
    }

    /// Tracks session-level SET/RESET in a Parse'd statement.
    fn note_sql(&mut self, query: &Bytes) {
        self.note_server_state(query);
        if maybe_session_command(query) {
            for cmd in sql::commands(query) {
                self.note_command(cmd);
            }
        }
    }

    /// A session command the client sent: settings are tracked, what cannot be tracked pins.
    fn note_command(&mut self, cmd: Command) {
        if let Command::Untracked(what) = cmd {
            self.pin(what);
        } else {
            self.params.note(cmd);
        }
    }

    pub(super) fn lookup(&mut self, name: &[u8]) -> Option<Arc<StatementDef>> {
        if name.is_empty() {
            None
        } else {
            self.statements.get(name)
        }
    }

    fn lookup_target(&mut self, target: Target, name: &[u8]) -> Option<Arc<StatementDef>> {
        match target {
            Target::Statement => self.lookup(name),
            Target::Portal => None,
        }
    }

    fn server_has(&mut self, def: &StatementDef) -> bool {
        self.server
            .as_mut()
            .is_some_and(|s| s.conn().statements.touch(def.id))
    }

    /// Records that the server will have `def`, closing its least recently used statement if
    /// it holds too many.
    fn prepare_on_server(&mut self, def: &StatementDef) {
        let cap = self.pool.settings.max_prepared_statements.saturating_mul(2);
        let Some(server) = self.server.as_mut() else {
            return;
        };
        if let Some(evicted) = server.conn().statements.insert(def.id, cap) {
            encode_close(
                Target::Statement,
                format!("sy_{evicted}").as_bytes(),
                &mut self.sout,
            );
            self.expect.push_back(Expect::InjectedClose);
        }
    }

    /// Before a Bind/Describe of `def`: prepare it on this server if it is not there yet.
    pub(super) fn ensure_prepared(&mut self, def: &Arc<StatementDef>) {
        if !self.server_has(def) {
            self.prepare_on_server(def);
            self.sout.extend_from_slice(&def.parse_message);
            self.expect.push_back(Expect::InjectedParse { def: def.clone() });
        }
    }

    /// Queues a reply the proxy makes itself, after every reply the server still owes.
    pub(super) fn synthesize(&mut self, reply: Bytes) {
        if self.expect.is_empty() {
            self.cout.extend_from_slice(&reply);
        } else {
            self.expect.push_back(Expect::Synthetic(reply));
        }
    }
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

fn parse_complete() -> Bytes {
    let mut out = BytesMut::new();
    be::parse_complete(&mut out);
    out.freeze()
}

fn close_complete() -> Bytes {
    let mut out = BytesMut::new();
    be::close_complete(&mut out);
    out.freeze()
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
