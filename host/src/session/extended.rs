//! The extended protocol's messages (Parse, Bind, Describe, Close, Execute, Sync, Flush):
//! the client's statement names become the proxy's, prepared on whichever server the client
//! has when it first uses them, and a batch stays on its server until its Sync.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use switchyard_protocol::backend as be;
use switchyard_protocol::frontend::{encode_bind_renamed, encode_close, encode_describe, Target};

use super::replies::Expect;
use super::{Session, SessionError, Work};
use crate::pool::StatementDef;

impl Session {
    /// Parse: an unnamed statement goes to the server as it is; a named one becomes the
    /// proxy's statement for its text, prepared on the server unless it has it already (or
    /// answered here, when no server is held and the text is known to be valid).
    pub(super) async fn on_parse(
        &mut self,
        name: Bytes,
        query: &Bytes,
        param_types: &[u32],
        raw: &Bytes,
        may_command: bool,
    ) -> Result<(), SessionError> {
        self.note_sql(query, may_command);
        if name.is_empty() {
            let work = self.work_of_parse(query);
            if !self.acquire_or_refuse(true, work).await? {
                return Ok(());
            }
            self.server.replies.open_batch();
            self.server.sout.extend_from_slice(raw);
            self.server.replies.push(Expect::Parse { prepared: None });
            return Ok(());
        }
        let def = self.pool.statements.intern(query, param_types);
        self.statements.insert(name.clone(), def.clone());
        if !self.server.held() && def.is_validated() {
            // Known-good SQL: no need to borrow a server just to hear "ParseComplete"
            // (and a client blocked in a synchronous prepare cannot deadlock the pool).
            self.synthesize(parse_complete());
            return Ok(());
        }
        let work = self.work_of_parse(query);
        if !self.acquire_or_refuse(true, work).await? {
            self.statements.remove(&name);
            return Ok(());
        }
        self.server.replies.open_batch();
        if self.server_has(&def) {
            self.synthesize(parse_complete());
        } else {
            self.prepare_on_server(&def);
            self.server.sout.extend_from_slice(&def.parse_message);
            self.server.replies.push(Expect::Parse {
                prepared: Some((def, name)),
            });
        }
        Ok(())
    }

    /// Bind: a named statement is bound under the proxy's name, prepared first if this
    /// server lacks it.
    pub(super) async fn on_bind(
        &mut self,
        portal: &[u8],
        statement: &[u8],
        rest: &[u8],
        raw: &Bytes,
    ) -> Result<(), SessionError> {
        // Looked up once, for the route and for the rewrite.
        let def = self.lookup(statement);
        let work = self.work_of_statement(def.as_deref());
        if self.acquire_or_refuse(true, work).await? {
            self.send_bind(portal, def, rest, raw);
        }
        Ok(())
    }

    /// A Bind of `def` (`None`: the unnamed statement, or one the client never named), on
    /// the server held.
    pub(super) fn send_bind(
        &mut self,
        portal: &[u8],
        def: Option<Arc<StatementDef>>,
        rest: &[u8],
        raw: &Bytes,
    ) {
        self.server.replies.open_batch();
        match def {
            Some(def) => {
                self.ensure_prepared(&def);
                encode_bind_renamed(portal, &def.server_name, rest, &mut self.server.sout);
            }
            // Unnamed, or unknown: the server gives the same answer Postgres would.
            None => self.server.sout.extend_from_slice(raw),
        }
        self.server.replies.push(Expect::Bind);
    }

    /// Describe: of a named statement, under the proxy's name (prepared first if needed).
    pub(super) async fn on_describe(
        &mut self,
        target: Target,
        name: &[u8],
        raw: &Bytes,
    ) -> Result<(), SessionError> {
        let def = self.described(target, name);
        let work = self.work_of_statement(def.as_deref());
        if self.acquire_or_refuse(true, work).await? {
            self.send_describe(def, raw);
        }
        Ok(())
    }

    /// The statement a Describe names, if it names one of the client's statements (a
    /// portal, or the unnamed statement: `None`).
    pub(super) fn described(&mut self, target: Target, name: &[u8]) -> Option<Arc<StatementDef>> {
        match target {
            Target::Statement => self.lookup(name),
            Target::Portal => None,
        }
    }

    /// A Describe of `def` ([`Session::described`]), on the server held.
    pub(super) fn send_describe(&mut self, def: Option<Arc<StatementDef>>, raw: &Bytes) {
        self.server.replies.open_batch();
        match def {
            Some(def) => {
                self.ensure_prepared(&def);
                encode_describe(Target::Statement, &def.server_name, &mut self.server.sout);
            }
            _ => self.server.sout.extend_from_slice(raw),
        }
        self.server.replies.push(Expect::Describe);
    }

    /// Close of a named statement: the server keeps its copy for other clients; this client
    /// forgets the name, and is answered here.
    pub(super) fn on_close_statement(&mut self, name: &[u8]) -> Result<(), SessionError> {
        self.statements.remove(name);
        self.synthesize(close_complete());
        Ok(())
    }

    /// Execute, or Close of a portal or of the unnamed statement (`expect` says which): to
    /// the server as it is, in the open batch. With no server to be had, the batch is
    /// skipped to its Sync.
    pub(super) async fn on_pass(&mut self, raw: &Bytes, expect: Expect) -> Result<(), SessionError> {
        if self.acquire_or_refuse(true, Work::PRIMARY).await? {
            self.send_as_is(raw, expect);
        }
        Ok(())
    }

    /// Sends an extended-protocol message as it is, in the open batch, on the server held.
    pub(super) fn send_as_is(&mut self, raw: &Bytes, expect: Expect) {
        self.server.replies.open_batch();
        self.server.sout.extend_from_slice(raw);
        self.server.replies.push(expect);
    }

    /// Sync: ends the batch on the server, or, with no server held, is answered here.
    pub(super) fn on_sync(&mut self, raw: &Bytes) {
        if self.server.replies.copy_in() {
            // The server ignores Sync during COPY FROM STDIN; the batch stays open.
            self.server.sout.extend_from_slice(raw);
        } else if self.server.held() {
            self.server.sout.extend_from_slice(raw);
            self.server.replies.sync();
            self.request_sent();
        } else {
            // Everything since the last Sync was answered by the proxy itself.
            let mut out = BytesMut::new();
            be::ready_for_query(self.tx_status, &mut out);
            self.synthesize(out.freeze());
        }
    }

    /// Flush: to the server, if one is held (else everything was answered already).
    pub(super) fn on_flush(&mut self, raw: &Bytes) {
        if self.server.held() {
            self.server.sout.extend_from_slice(raw);
        }
    }

    pub(super) fn lookup(&mut self, name: &[u8]) -> Option<Arc<StatementDef>> {
        if name.is_empty() {
            None
        } else {
            self.statements.get(name)
        }
    }

    fn server_has(&mut self, def: &StatementDef) -> bool {
        self.server
            .conn()
            .is_some_and(|conn| conn.statements.touch(def.id))
    }

    /// Records that the server will have `def`, closing its least recently used statement if
    /// it holds too many.
    fn prepare_on_server(&mut self, def: &StatementDef) {
        let cap = self.statements.per_server();
        let Some(conn) = self.server.conn() else {
            return;
        };
        if let Some(evicted) = conn.statements.insert(def.id, cap) {
            encode_close(
                Target::Statement,
                format!("sy_{evicted}").as_bytes(),
                &mut self.server.sout,
            );
            self.server.replies.push(Expect::InjectedClose);
        }
    }

    /// Before a Bind/Describe of `def`: prepare it on this server if it is not there yet.
    pub(super) fn ensure_prepared(&mut self, def: &Arc<StatementDef>) {
        if !self.server_has(def) {
            self.prepare_on_server(def);
            self.server.sout.extend_from_slice(&def.parse_message);
            self.server
                .replies
                .push(Expect::InjectedParse { def: def.clone() });
        }
    }
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
