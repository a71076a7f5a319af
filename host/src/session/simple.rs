//! Simple-protocol messages (Query, FunctionCall): the session commands in a query are
//! tracked (settings replayed on the next server, state that lives on the server pins it),
//! and the statements about the client's own prepared statements are answered here.

use bytes::{Bytes, BytesMut};
use switchyard_protocol::backend::{self as be, ErrorFields, TransactionStatus};
use switchyard_protocol::sqlstate;

use super::replies::Expect;
use super::{Session, SessionError, Work};
use crate::config::PoolMode;
use crate::sql::{self, Command};

impl Session {
    /// Query: answered here when it only touches the client's own prepared statements,
    /// refused when it would PREPARE in transaction mode, else sent to a server.
    /// `may_command` is the cheap filter's verdict on `sql_text` (`maybe_session_command`).
    pub(super) async fn on_query(
        &mut self,
        sql_text: &Bytes,
        raw: &Bytes,
        may_command: bool,
    ) -> Result<(), SessionError> {
        // Classified first when the session routes: a plain read cannot create server-side
        // state, which spares the common read a second pass over its text. (If the text
        // does pin the session, the checkout still goes to the primary: a pinned session
        // routes nothing.)
        let class = self.query_class(sql_text);
        if !class.is_some_and(|c| c.plain_read()) {
            self.note_server_state(sql_text);
        }
        let commands = if may_command {
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
                self.error_sent(sqlstate::FEATURE_NOT_SUPPORTED);
                self.synthesize(out.freeze());
                return Ok(());
            }
            self.note_command(cmd);
        }
        let work = self.work_of_query(class);
        if self.defer_begin(work, sql_text, raw) {
            return Ok(());
        }
        if let Some(read) = self.standalone(sql_text, may_command) {
            self.request_sent();
            // Boxed: its state would otherwise sit in every session's task.
            if Box::pin(self.run_pipelined(raw, read)).await? {
                self.request_done(TransactionStatus::Idle);
                return Ok(());
            }
        }
        if self.acquire_or_refuse(false, work).await? {
            self.server.sout.extend_from_slice(raw);
            self.server.replies.push(Expect::Query);
            self.request_sent();
        }
        Ok(())
    }

    /// FunctionCall: to a server as it is; ends with ReadyForQuery like a Query.
    pub(super) async fn on_function_call(&mut self, raw: &Bytes) -> Result<(), SessionError> {
        if self.acquire_or_refuse(false, Work::PRIMARY).await? {
            self.server.sout.extend_from_slice(raw);
            self.server.replies.push(Expect::Query);
            self.request_sent();
        }
        Ok(())
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
                    self.error_sent(sqlstate::INVALID_SQL_STATEMENT_NAME);
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
            // Not in a block (a deferred `BEGIN` holds no server): the server's 25001 then.
            Command::DiscardAll
                if self.mode == PoolMode::Transaction
                    && !self.server.held()
                    && self.tx_status == TransactionStatus::Idle =>
            {
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

    /// Tracks session-level SET/RESET in a Parse'd statement; `may_command` is the cheap
    /// filter's verdict on it (`maybe_session_command`).
    pub(super) fn note_sql(&mut self, query: &Bytes, may_command: bool) {
        self.note_server_state(query);
        if may_command {
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
}
