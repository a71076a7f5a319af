//! The reply queue: what the server owes for what it was sent, and so what each server
//! message means for the client. Pure: it is driven by the messages (their tag and body) and
//! writes only to the buffers it is handed; no socket, no task, no `Session`.
//!
//! Each message sent to the server pushes an [`Expect`]; the reply that completes it pops it.
//! A reply to a message the proxy injected (a Parse of a statement the server lacks, a Close
//! of an evicted one, the ROLLBACK that refuses a transaction block) is swallowed; a reply the
//! proxy makes itself ([`Expect::Synthetic`]) goes out when every earlier reply has. After an
//! error in the extended protocol, Postgres skips everything up to Sync, so the expectations
//! up to the Sync are dropped too, and the statements the proxy had meant to prepare there
//! are handed back to be forgotten. COPY FROM STDIN started by Execute makes Postgres ignore
//! the client's Syncs until CopyDone/CopyFail, and the queue drops those Syncs' entries.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use switchyard_protocol::backend::{error_response, ready_for_query, ErrorFields};
use switchyard_protocol::backend::{parse_ready_for_query, tags, TransactionStatus};
use switchyard_protocol::frontend::encode_query;
use switchyard_protocol::{sqlstate, ProtocolError};

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

/// What one server message means for the client.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// Goes to the client as it is.
    Forward,
    /// Answers the proxy's own message: the client never sees it.
    Swallow,
    /// A ReadyForQuery ending a client request, with its status; `boundary` when the server
    /// owes nothing more and no batch is open, where the pool-mode decision is taken.
    Ready {
        status: TransactionStatus,
        boundary: bool,
    },
    /// A ParameterStatus: goes to the client, and is checked against the settings the
    /// proxy tracks.
    Report,
    /// A CommandComplete: goes to the client, and its tag may change what the proxy
    /// tracks (ROLLBACK, DISCARD ALL).
    Complete,
    /// The proxy's own query failed: swallowed (and logged).
    OwnQueryFailed,
}

/// The replies a server owes, in order, with the state of the batch they belong to.
#[derive(Default)]
pub(super) struct Replies {
    queue: VecDeque<Expect>,
    /// Extended-protocol messages were sent since the last Sync: the server holds state
    /// (unnamed statement/portal, implicit transaction) until the Sync.
    unsynced: bool,
    /// The server is in COPY FROM STDIN started by Execute, and the client has not ended it.
    copy_in: bool,
}

impl Replies {
    /// Nothing owed, no batch open.
    #[inline]
    pub(super) fn owes_nothing(&self) -> bool {
        self.queue.is_empty() && !self.unsynced
    }

    /// No reply owed (a batch may be open).
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Replies owed, synthetic ones included.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// An extended-protocol batch is open (messages sent since the last Sync).
    #[inline]
    pub(super) fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// The server is in a COPY FROM STDIN the client has not ended.
    #[inline]
    pub(super) fn copy_in(&self) -> bool {
        self.copy_in
    }

    /// Forgets everything owed (the server is gone), keeping the allocation.
    pub(super) fn clear(&mut self) {
        self.queue.clear();
        self.unsynced = false;
        self.copy_in = false;
    }

    /// The queue's allocation, to park while the session is idle (see `spares`).
    pub(super) fn take_queue(&mut self) -> VecDeque<Expect> {
        std::mem::take(&mut self.queue)
    }

    /// The session goes quiet keeping its queue: frees it if a long pipeline grew it.
    pub(super) fn trim_queue(&mut self) {
        if !super::spares::queue_worth_keeping(self.queue.capacity()) {
            self.queue = VecDeque::new();
        }
    }

    /// Takes `queue` (empty) if this one was parked.
    pub(super) fn give_queue(&mut self, queue: VecDeque<Expect>) {
        if self.queue.capacity() == 0 {
            self.queue = queue;
        }
    }

    /// A message was sent to the server that is answered by `expect`.
    #[inline]
    pub(super) fn push(&mut self, expect: Expect) {
        self.queue.push_back(expect);
    }

    /// An extended-protocol message is being sent: the batch is open until its Sync.
    #[inline]
    pub(super) fn open_batch(&mut self) {
        self.unsynced = true;
    }

    /// A Sync was sent: the batch ends, and the server owes a ReadyForQuery.
    pub(super) fn sync(&mut self) {
        self.queue.push_back(Expect::Sync);
        self.unsynced = false;
    }

    /// The client ended a COPY FROM STDIN (CopyDone/CopyFail was sent to the server).
    pub(super) fn copy_ended(&mut self) {
        if self.copy_in {
            self.copy_in = false;
        } else if !self.queue.is_empty() {
            // The server may not have said CopyInResponse yet: mark where the copy ended,
            // so Syncs sent before this point are known to be ignored.
            self.queue.push_back(Expect::CopyEnd);
        }
    }

    /// Queues a reply the proxy makes itself, after every reply the server still owes
    /// (straight into `cout` when none is).
    pub(super) fn synthesize(&mut self, reply: Bytes, cout: &mut BytesMut) {
        if self.queue.is_empty() {
            cout.extend_from_slice(&reply);
        } else {
            self.queue.push_back(Expect::Synthetic(reply));
        }
    }

    /// The next owed reply is one the proxy makes, or a marker: the relay settles it
    /// ([`Replies::settle_front`]) before the next server message.
    #[inline]
    pub(super) fn settles_next(&self) -> bool {
        matches!(self.queue.front(), Some(Expect::Synthetic(_) | Expect::CopyEnd))
    }

    /// The reply owed first is to one of the client's own messages (not the proxy's own
    /// query, nor a reply the proxy makes or a marker).
    #[inline]
    pub(super) fn client_request_in_front(&self) -> bool {
        matches!(
            self.queue.front(),
            Some(
                Expect::Query
                    | Expect::Parse { .. }
                    | Expect::Bind
                    | Expect::Describe
                    | Expect::Execute
                    | Expect::Close
                    | Expect::Sync
                    | Expect::InjectedParse { .. }
                    | Expect::InjectedClose
            )
        )
    }

    /// The server is answering the proxy's own simple query.
    #[inline]
    pub(super) fn own_query_in_front(&self) -> bool {
        matches!(self.queue.front(), Some(Expect::InjectedQuery))
    }

    /// Writes the synthetic replies that have reached the front of the queue to `cout`, and
    /// drops markers.
    pub(super) fn settle_front(&mut self, cout: &mut BytesMut) {
        loop {
            match self.queue.front() {
                Some(Expect::Synthetic(_)) => {
                    if let Some(Expect::Synthetic(reply)) = self.queue.pop_front() {
                        cout.extend_from_slice(&reply);
                    }
                }
                Some(Expect::CopyEnd) => {
                    self.queue.pop_front();
                }
                _ => return,
            }
        }
    }

    /// Refuses the transaction block the client just opened (statement pooling): a
    /// ROLLBACK goes to the server (`sout`), its replies are swallowed, and the client gets
    /// an error with `message` and ReadyForQuery(Idle) in place of the ReadyForQuery at hand.
    pub(super) fn refuse_transaction(&mut self, message: &str, sout: &mut BytesMut) {
        encode_query(b"ROLLBACK", sout);
        self.queue.push_back(Expect::InjectedQuery);
        let mut reply = BytesMut::new();
        error_response(
            &ErrorFields::error(sqlstate::INVALID_TRANSACTION_STATE, message),
            &mut reply,
        );
        ready_for_query(TransactionStatus::Idle, &mut reply);
        self.queue.push_back(Expect::Synthetic(reply.freeze()));
    }

    /// Updates the queue for one server message (`tag`, `body`) and says what it means for
    /// the client. An error that makes the server skip to Sync drops the statements the
    /// proxy was preparing in that stretch: each is handed to `forget`, with the client's
    /// name for it if the client named it.
    pub(super) fn on_message(
        &mut self,
        tag: u8,
        body: &[u8],
        forget: impl FnMut(Arc<StatementDef>, Option<Bytes>),
    ) -> Result<Reply, ProtocolError> {
        let own_query = self.own_query_in_front();
        Ok(match tag {
            tags::READY_FOR_QUERY => self.on_ready_for_query(body)?,
            tags::ERROR_RESPONSE => self.on_error(forget),
            tags::PARAMETER_STATUS if !own_query => Reply::Report,
            tags::COPY_IN_RESPONSE => self.on_copy_in(),
            tags::PARSE_COMPLETE => self.on_parse_complete(),
            tags::CLOSE_COMPLETE => self.on_close_complete(),
            tags::BIND_COMPLETE => self.pop_if(|e| matches!(e, Expect::Bind), Reply::Forward),
            _ if own_query => Reply::Swallow,
            tags::ROW_DESCRIPTION | tags::NO_DATA => {
                self.pop_if(|e| matches!(e, Expect::Describe), Reply::Forward)
            }
            tags::COMMAND_COMPLETE => self.pop_if(|e| matches!(e, Expect::Execute), Reply::Complete),
            tags::EMPTY_QUERY_RESPONSE | tags::PORTAL_SUSPENDED => {
                self.pop_if(|e| matches!(e, Expect::Execute), Reply::Forward)
            }
            _ => Reply::Forward,
        })
    }

    /// ReadyForQuery: ends what is at the front (a client request, or the proxy's own query,
    /// whose ReadyForQuery is swallowed).
    fn on_ready_for_query(&mut self, body: &[u8]) -> Result<Reply, ProtocolError> {
        let status = parse_ready_for_query(body)?;
        if matches!(self.queue.pop_front(), Some(Expect::InjectedQuery)) {
            return Ok(Reply::Swallow);
        }
        Ok(Reply::Ready {
            status,
            boundary: self.owes_nothing(),
        })
    }

    /// ErrorResponse: ends a simple query (or the proxy's own); in the extended protocol the
    /// server now skips to Sync, and so does the queue.
    fn on_error(&mut self, mut forget: impl FnMut(Arc<StatementDef>, Option<Bytes>)) -> Reply {
        match self.queue.front() {
            Some(Expect::Query) => return Reply::Forward,
            Some(Expect::InjectedQuery) => return Reply::OwnQueryFailed,
            _ => {}
        }
        while let Some(front) = self.queue.front() {
            if matches!(front, Expect::Sync) {
                break;
            }
            match self.queue.pop_front() {
                Some(Expect::InjectedParse { def }) => forget(def, None),
                Some(Expect::Parse {
                    prepared: Some((def, name)),
                }) => forget(def, Some(name)),
                _ => {}
            }
        }
        Reply::Forward
    }

    /// ParseComplete: the statement is valid SQL; to the proxy's own Parse, swallowed.
    fn on_parse_complete(&mut self) -> Reply {
        match self.queue.pop_front() {
            Some(Expect::InjectedParse { def }) => {
                def.mark_validated();
                Reply::Swallow
            }
            Some(Expect::Parse {
                prepared: Some((def, _)),
            }) => {
                def.mark_validated();
                Reply::Forward
            }
            _ => Reply::Forward,
        }
    }

    /// CloseComplete: to the proxy's own Close, swallowed.
    fn on_close_complete(&mut self) -> Reply {
        match self.queue.pop_front() {
            Some(Expect::InjectedClose) => Reply::Swallow,
            _ => Reply::Forward,
        }
    }

    /// CopyInResponse. A COPY FROM STDIN started by an Execute: Postgres ignores every
    /// Sync the client sends until CopyDone/CopyFail, so the Syncs already queued for that
    /// stretch owe nothing.
    fn on_copy_in(&mut self) -> Reply {
        if !matches!(self.queue.front(), Some(Expect::Execute)) {
            return Reply::Forward; // simple query COPY: the Query ends at ReadyForQuery as usual
        }
        let mut i = 1;
        while i < self.queue.len() {
            match self.queue[i] {
                Expect::Sync => {
                    self.queue.remove(i);
                    self.unsynced = true;
                }
                Expect::CopyEnd => {
                    self.queue.remove(i);
                    return Reply::Forward;
                }
                _ => i += 1,
            }
        }
        self.copy_in = true;
        Reply::Forward
    }

    /// A reply that completes the front entry if it is the one `f` matches; `reply` says
    /// what it means for the client.
    fn pop_if(&mut self, f: impl Fn(&Expect) -> bool, reply: Reply) -> Reply {
        if self.queue.front().is_some_and(f) {
            self.queue.pop_front();
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::StatementRegistry;
    use switchyard_protocol::backend as be;
    use switchyard_protocol::frame::{frames, HEADER_LEN};

    /// A server message with `tag` and `body`, on the wire.
    fn msg(tag: u8, body: &[u8], out: &mut BytesMut) {
        out.extend_from_slice(&[tag]);
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
    }

    fn ready(status: TransactionStatus, out: &mut BytesMut) {
        be::ready_for_query(status, out);
    }

    fn error(code: &str, out: &mut BytesMut) {
        be::error_response(&ErrorFields::error(code, "boom"), out);
    }

    /// What the queue makes of a stream of server messages, as the session's relay uses it:
    /// the messages it forwards and the synthetic replies that reach the front go to the
    /// client's buffer (`cout`), in order. Returns the verdicts; the statements handed
    /// back to be forgotten (id, client name) go to `forgotten`.
    fn relay(
        q: &mut Replies,
        server: &[u8],
        cout: &mut BytesMut,
        forgotten: &mut Vec<(u64, Option<Bytes>)>,
    ) -> Vec<Reply> {
        let mut verdicts = Vec::new();
        let mut messages = frames(server, 1 << 20);
        for item in messages.by_ref() {
            let (header, offset) = item.expect("well-formed test input");
            let end = offset + header.len;
            let body = &server[offset + HEADER_LEN..end];
            let reply = q
                .on_message(header.tag, body, |def, name| forgotten.push((def.id, name)))
                .expect("valid message");
            if !matches!(reply, Reply::Swallow | Reply::OwnQueryFailed) {
                cout.extend_from_slice(&server[offset..end]);
            }
            q.settle_front(cout);
            verdicts.push(reply);
        }
        assert_eq!(messages.consumed(), server.len(), "every message complete");
        verdicts
    }

    fn statement(registry: &StatementRegistry, sql: &str) -> Arc<StatementDef> {
        registry.intern(&Bytes::copy_from_slice(sql.as_bytes()), &[])
    }

    /// Three pipelined batches (Parse/Bind/Execute/Sync); the second fails at its named
    /// Parse. The server skips the rest of that batch to its Sync, so the queue drops what
    /// it owed there: the client's named statement and the one the proxy injected for a
    /// Bind are handed back to be forgotten (neither exists on the server), every server
    /// message reaches the client unchanged, the third batch is matched as usual, and only
    /// the last ReadyForQuery is a boundary.
    #[test]
    fn an_error_mid_pipeline_skips_its_batch_to_sync() {
        let registry = StatementRegistry::default();
        let named = statement(&registry, "SELECT nonsense(");
        let injected = statement(&registry, "SELECT 2");
        let mut q = Replies::default();
        // Batch 1: unnamed statement.
        q.open_batch();
        q.push(Expect::Parse { prepared: None });
        q.push(Expect::Bind);
        q.push(Expect::Execute);
        q.sync();
        // Batch 2: a named Parse, then a Bind of a statement this server lacks.
        q.open_batch();
        q.push(Expect::Parse {
            prepared: Some((named.clone(), Bytes::from_static(b"s1"))),
        });
        q.push(Expect::InjectedParse {
            def: injected.clone(),
        });
        q.push(Expect::Bind);
        q.push(Expect::Execute);
        q.sync();
        // Batch 3.
        q.open_batch();
        q.push(Expect::Bind);
        q.push(Expect::Execute);
        q.sync();
        assert!(!q.owes_nothing());

        let mut server = BytesMut::new();
        be::parse_complete(&mut server);
        be::bind_complete(&mut server);
        be::command_complete("SELECT 1", &mut server);
        ready(TransactionStatus::Idle, &mut server);
        error("42601", &mut server);
        ready(TransactionStatus::Idle, &mut server);
        be::bind_complete(&mut server);
        be::command_complete("SELECT 1", &mut server);
        ready(TransactionStatus::Idle, &mut server);

        let (mut cout, mut forgotten) = (BytesMut::new(), Vec::new());
        let verdicts = relay(&mut q, &server, &mut cout, &mut forgotten);
        assert_eq!(&cout[..], &server[..], "every server message reaches the client");
        assert_eq!(
            forgotten,
            vec![(named.id, Some(Bytes::from_static(b"s1"))), (injected.id, None)]
        );
        assert!(!named.is_validated() && !injected.is_validated());
        let readies: Vec<_> = verdicts
            .iter()
            .filter_map(|v| match v {
                Reply::Ready { boundary, .. } => Some(*boundary),
                _ => None,
            })
            .collect();
        assert_eq!(readies, [false, false, true]);
        assert!(q.owes_nothing());
    }

    /// A Bind of a statement the server lacks goes out behind the proxy's own Close of an
    /// evicted statement and Parse of the missing one: their CloseComplete and
    /// ParseComplete are swallowed, the client sees only the replies to its own messages,
    /// and the statement is marked valid for later Parses answered without a server.
    #[test]
    fn an_injected_parse_is_answered_to_the_proxy_only() {
        let registry = StatementRegistry::default();
        let def = statement(&registry, "SELECT $1");
        let mut q = Replies::default();
        q.open_batch();
        q.push(Expect::InjectedClose);
        q.push(Expect::InjectedParse { def: def.clone() });
        q.push(Expect::Bind);
        q.push(Expect::Describe);
        q.push(Expect::Execute);
        q.sync();

        let mut server = BytesMut::new();
        be::close_complete(&mut server);
        be::parse_complete(&mut server);
        let own = server.len();
        be::bind_complete(&mut server);
        be::no_data(&mut server);
        be::command_complete("SELECT 1", &mut server);
        ready(TransactionStatus::Idle, &mut server);

        let (mut cout, mut forgotten) = (BytesMut::new(), Vec::new());
        let verdicts = relay(&mut q, &server, &mut cout, &mut forgotten);
        assert_eq!(&verdicts[..2], [Reply::Swallow, Reply::Swallow]);
        assert_eq!(&cout[..], &server[own..], "the client sees only its own replies");
        assert!(def.is_validated());
        assert!(forgotten.is_empty());
        assert!(q.owes_nothing());
    }

    /// A reply the proxy makes (a named Parse answered without a server) while the server
    /// still owes replies goes out after them, in its place; with nothing owed it goes out
    /// at once.
    #[test]
    fn a_synthetic_reply_goes_out_in_its_place() {
        let mut q = Replies::default();
        let mut cout = BytesMut::new();
        let mut synthetic = BytesMut::new();
        be::parse_complete(&mut synthetic);
        q.synthesize(synthetic.clone().freeze(), &mut cout);
        assert_eq!(&cout[..], &synthetic[..], "nothing owed: out at once");
        cout.clear();

        q.push(Expect::Query);
        q.synthesize(synthetic.clone().freeze(), &mut cout);
        assert!(cout.is_empty(), "held behind the owed reply");
        let mut server = BytesMut::new();
        be::row_description(&[("x", 23)], &mut server);
        be::data_row(&[Some(&b"1"[..])], &mut server);
        be::command_complete("SELECT 1", &mut server);
        ready(TransactionStatus::Idle, &mut server);
        relay(&mut q, &server, &mut cout, &mut Vec::new());
        let mut expected = server.clone();
        expected.extend_from_slice(&synthetic);
        assert_eq!(&cout[..], &expected[..]);
        assert!(q.is_empty());
    }

    /// COPY FROM STDIN started by Execute: Postgres ignores the client's Syncs until
    /// CopyDone, so the Sync queued behind the Execute owes nothing and the batch stays
    /// open through the copy; the Sync after CopyDone ends it with a boundary.
    #[test]
    fn copy_in_by_execute_owes_nothing_for_the_syncs_during_the_copy() {
        let mut q = Replies::default();
        q.open_batch();
        q.push(Expect::Parse { prepared: None });
        q.push(Expect::Bind);
        q.push(Expect::Execute);
        q.sync();
        let mut server = BytesMut::new();
        be::parse_complete(&mut server);
        be::bind_complete(&mut server);
        msg(tags::COPY_IN_RESPONSE, &[0, 0, 1, 0, 0], &mut server);
        let (mut cout, mut forgotten) = (BytesMut::new(), Vec::new());
        relay(&mut q, &server, &mut cout, &mut forgotten);
        assert!(q.copy_in());
        assert!(q.unsynced(), "the batch is open again: its Sync is ignored");
        assert_eq!(q.len(), 1, "only the Execute is owed");

        // CopyData, a Sync (passed through, owing nothing), then CopyDone and Sync.
        q.copy_ended();
        assert!(!q.copy_in());
        q.sync();
        let mut rest = BytesMut::new();
        be::command_complete("COPY 2", &mut rest);
        ready(TransactionStatus::Idle, &mut rest);
        let verdicts = relay(&mut q, &rest, &mut cout, &mut forgotten);
        assert_eq!(
            verdicts.last(),
            Some(&Reply::Ready {
                status: TransactionStatus::Idle,
                boundary: true
            })
        );
        server.extend_from_slice(&rest);
        assert_eq!(&cout[..], &server[..]);
        assert!(q.owes_nothing());
    }

    /// The client ended the copy (CopyDone, Sync) before the server's CopyInResponse
    /// arrived: the marker it left stops the queue from dropping the Sync sent after the
    /// copy, which the ReadyForQuery then answers.
    #[test]
    fn copy_ended_before_copy_in_response_keeps_the_later_sync() {
        let mut q = Replies::default();
        q.open_batch();
        q.push(Expect::Bind);
        q.push(Expect::Execute);
        q.sync();
        q.copy_ended();
        q.sync();
        let mut server = BytesMut::new();
        be::bind_complete(&mut server);
        msg(tags::COPY_IN_RESPONSE, &[0, 0, 0], &mut server);
        be::command_complete("COPY 0", &mut server);
        ready(TransactionStatus::Idle, &mut server);
        let (mut cout, mut forgotten) = (BytesMut::new(), Vec::new());
        let verdicts = relay(&mut q, &server, &mut cout, &mut forgotten);
        assert!(matches!(verdicts.last(), Some(Reply::Ready { .. })));
        assert!(!q.copy_in());
        assert!(q.is_empty(), "the later Sync was answered");
        assert_eq!(&cout[..], &server[..]);
    }

    /// COPY TO STDOUT by a simple query: CopyOutResponse, the data and CopyDone pass
    /// through as they are, and the Query is owed until its ReadyForQuery.
    #[test]
    fn copy_out_passes_through_to_ready_for_query() {
        let mut q = Replies::default();
        q.push(Expect::Query);
        let mut server = BytesMut::new();
        msg(tags::COPY_OUT_RESPONSE, &[0, 0, 0], &mut server);
        msg(tags::COPY_DATA, b"1\n", &mut server);
        msg(tags::COPY_DATA, b"2\n", &mut server);
        msg(tags::COPY_DONE, b"", &mut server);
        be::command_complete("COPY 2", &mut server);
        let (mut cout, mut forgotten) = (BytesMut::new(), Vec::new());
        relay(&mut q, &server, &mut cout, &mut forgotten);
        assert_eq!(q.len(), 1, "the Query is owed until ReadyForQuery");
        let mut end = BytesMut::new();
        ready(TransactionStatus::Idle, &mut end);
        relay(&mut q, &end, &mut cout, &mut forgotten);
        server.extend_from_slice(&end);
        assert_eq!(&cout[..], &server[..]);
        assert!(q.owes_nothing() && !q.copy_in());
    }

    /// A transaction block refused at its ReadyForQuery (statement pooling): the proxy's
    /// ROLLBACK goes to the server, everything the server answers to it is swallowed (a
    /// failure of it too), and the client gets the error and ReadyForQuery(Idle) in place
    /// of the ReadyForQuery it was refused.
    #[test]
    fn a_refused_transaction_swallows_its_rollback() {
        let mut q = Replies::default();
        q.push(Expect::Query);
        let mut server = BytesMut::new();
        be::command_complete("BEGIN", &mut server);
        let begun = server.len();
        ready(TransactionStatus::InTransaction, &mut server);
        let mut cout = BytesMut::new();
        let verdicts = relay(&mut q, &server[..begun], &mut cout, &mut Vec::new());
        assert_eq!(verdicts, [Reply::Complete]);
        let mut frames_left = frames(&server[begun..], 1 << 20);
        let (header, offset) = frames_left.next().unwrap().unwrap();
        let body = &server[begun + offset + HEADER_LEN..begun + offset + header.len];
        let verdict = q.on_message(header.tag, body, |_, _| {}).unwrap();
        assert_eq!(
            verdict,
            Reply::Ready {
                status: TransactionStatus::InTransaction,
                boundary: true
            }
        );
        // The session refuses: the ReadyForQuery is not forwarded.
        let mut sout = BytesMut::new();
        q.refuse_transaction("no transactions here", &mut sout);
        let mut rollback = BytesMut::new();
        encode_query(b"ROLLBACK", &mut rollback);
        assert_eq!(sout, rollback);

        let mut answer = BytesMut::new();
        be::parameter_status("TimeZone", "UTC", &mut answer);
        error("25P01", &mut answer);
        ready(TransactionStatus::Idle, &mut answer);
        let verdicts = relay(&mut q, &answer, &mut cout, &mut Vec::new());
        assert_eq!(verdicts, [Reply::Swallow, Reply::OwnQueryFailed, Reply::Swallow]);
        let mut expected = BytesMut::new();
        be::command_complete("BEGIN", &mut expected);
        error_response(
            &ErrorFields::error(sqlstate::INVALID_TRANSACTION_STATE, "no transactions here"),
            &mut expected,
        );
        ready(TransactionStatus::Idle, &mut expected);
        assert_eq!(cout, expected);
        assert!(q.owes_nothing());
    }
}
