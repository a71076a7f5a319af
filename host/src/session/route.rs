//! Read routing, the session's side: when a session without a server starts a transaction or
//! an autocommit statement, the work is classified (`sql::route`), the database's router is
//! asked through the policy facade, and the answer becomes a server on the primary or on a
//! replica. The host's rules hold whatever the router says: what is not classified as fit
//! for a replica runs on the primary, a replica must be within the database's lag budget
//! and have replayed the session's last commit (read-your-writes), and a read that finds no
//! replica runs on the primary.
//!
//! A database with `read_routing = "off"`, no router plugin and no session hint never gets
//! here past one comparison: its work is not even classified.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use switchyard_protocol::backend::{self as be, ErrorFields, TransactionStatus};
use switchyard_protocol::frame::peek_header;
use switchyard_protocol::frontend::tags;

use super::{Session, SessionError};
use crate::config::{PoolMode, ReadRouting, ReadYourWrites};
use crate::policy::router::{Route, RouteRequest};
use crate::pool::{Checkout, StatementDef};
use crate::sql::route::{classify, lone_begin, Classification, Hint, Kind, Rule, SessionDefaults};

/// What the session is about to run, as far as routing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Work {
    pub kind: Kind,
    /// The classification rule that decided where it may run.
    pub rule: Rule,
    /// A leading comment asked for a replica (`/* switchyard: replica */`).
    pub replica_hint: bool,
}

impl Work {
    /// Work that runs on the primary, unclassified (routing off, a message too large to
    /// hold, or nothing to classify).
    pub const PRIMARY: Work = Work {
        kind: Kind::Unknown,
        rule: Rule::Unrecognised,
        replica_hint: false,
    };

    /// Whether every classification rule lets a replica run it.
    pub fn replica_ok(&self) -> bool {
        self.rule.allows_replica()
    }

    fn of(c: &Classification, defaults: SessionDefaults) -> Work {
        Work {
            kind: c.kind,
            rule: c.rule_under(defaults),
            replica_hint: c.hint == Some(Hint::Replica),
        }
    }
}

/// Where a session's next server comes from.
enum Target {
    Primary,
    Read(usize),
}

/// The session's routing state.
#[derive(Debug, Default)]
pub(super) struct Routing {
    /// The session's hint from its startup parameters (`switchyard.route`), over the
    /// database's `read_routing`.
    hint: Option<ReadRouting>,
    /// The mark of the session's last commit that may have written (0: none); see
    /// `Cluster::commit_mark`.
    commit_mark: u64,
    /// The transaction now running may write: it was not classified as fit for a replica
    /// (wherever it runs). Only such a transaction's end marks a commit for
    /// read-your-writes; a read that ran on the primary does not.
    may_write: bool,
    /// It runs on a replica and the client declared it read-only (`BEGIN READ ONLY`): a
    /// `25006` in it is the client's, not a misclassification.
    declared_read_only: bool,
    /// The next checkout goes to the primary whatever the work (a replica refused it).
    force_primary: bool,
    /// The client's lone `BEGIN`, answered by the proxy and not sent to any server yet:
    /// it goes ahead of the block's first statement, which decides where the block runs
    /// (see [`Session::defer_begin`]).
    deferred_begin: Option<Bytes>,
}

impl Routing {
    pub fn new(hint: Option<ReadRouting>) -> Routing {
        Routing {
            hint,
            ..Routing::default()
        }
    }

    /// The session's `switchyard.route` hint, if it gave one.
    pub fn hint(&self) -> Option<ReadRouting> {
        self.hint
    }

    /// The transaction now running on a replica was declared read-only by the client.
    pub fn declared_read_only(&self) -> bool {
        self.declared_read_only
    }
}

/// Parses the `switchyard.route` startup setting.
pub(super) fn parse_hint(value: &str) -> Result<ReadRouting, ErrorFields> {
    match value.to_ascii_lowercase().as_str() {
        "primary" | "off" => Ok(ReadRouting::Off),
        "replica" | "replicas" => Ok(ReadRouting::Replicas),
        "replicas_or_primary" | "any" => Ok(ReadRouting::ReplicasOrPrimary),
        _ => Err(ErrorFields::fatal(
            switchyard_protocol::sqlstate::INVALID_PARAMETER_VALUE,
            format!("invalid value for switchyard.route: \"{value}\""),
        )
        .with_hint("use primary, replica or replicas_or_primary")),
    }
}

/// Whether `sql` begins with a comment (where a routing hint may be), after whitespace.
fn leading_comment(sql: &[u8]) -> bool {
    sql.trim_ascii_start().starts_with(b"/*")
}

/// The first two NUL-terminated strings of a message body.
fn two_cstrs(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let a = memchr::memchr(0, body)?;
    let rest = &body[a + 1..];
    let b = memchr::memchr(0, rest)?;
    Some((&body[..a], &rest[..b]))
}

impl Session {
    /// The work of the extended-protocol batch whose first message that needs a server is
    /// a Parse of `query`.
    pub(super) fn work_of_parse(&self, query: &[u8]) -> Work {
        if !self.wants_classification(query) {
            return Work::PRIMARY;
        }
        self.work_of_batch(self.classify(query))
    }

    /// The work of the extended-protocol batch whose first message that needs a server
    /// names statement `def` (a Bind, or a Describe; [`Session::lookup`]): the unnamed
    /// statement, or one the session does not know (`None`), runs on the primary.
    pub(super) fn work_of_statement(&self, def: Option<&StatementDef>) -> Work {
        match def {
            Some(def) if self.wants_classification(&def.query) => {
                self.work_of_batch(self.classify_statement(def))
            }
            _ => Work::PRIMARY,
        }
    }

    /// Whether work of text `sql` is to be classified: the session has no server and may
    /// route reads, or the text begins with a comment that may hold a hint.
    fn wants_classification(&self, sql: &[u8]) -> bool {
        !self.server.held() && (self.routes_reads() || leading_comment(sql))
    }

    /// The work of an extended-protocol batch whose first message classifies as `first`:
    /// that and every Parse and Bind after it in the client's buffer up to the batch's
    /// Sync, which must be there already. A batch whose end has not arrived (a Flush and a
    /// wait for replies) runs on the primary, since what follows may write.
    fn work_of_batch(&self, first: Classification) -> Work {
        let mut class = first;
        let mut rest = &self.cbuf[..];
        let max = self.state.config.proxy.max_message_size.0;
        loop {
            if !class.rule().allows_replica() && class.hint != Some(Hint::Replica) {
                // Decided: the primary, whatever follows.
                return self.work(class);
            }
            let Ok(Some(header)) = peek_header(rest, max) else {
                return Work::PRIMARY;
            };
            let Some(frame) = rest.get(..header.len) else {
                return Work::PRIMARY;
            };
            let body = &frame[5..];
            match header.tag {
                tags::SYNC => return self.work(class),
                tags::PARSE => match two_cstrs(body) {
                    Some((_, query)) => class = class.merge(self.classify(query)),
                    None => return Work::PRIMARY,
                },
                tags::BIND => match two_cstrs(body) {
                    // The unnamed statement: parsed in this batch, or earlier (unknown).
                    Some((_, b"")) => {}
                    Some((_, name)) => match self.statements.peek(name) {
                        Some(def) => class = class.merge(self.classify_statement(def)),
                        None => return Work::PRIMARY,
                    },
                    None => return Work::PRIMARY,
                },
                tags::EXECUTE | tags::DESCRIBE | tags::CLOSE | tags::FLUSH => {}
                _ => return Work::PRIMARY,
            }
            rest = &rest[header.len..];
        }
    }

    /// The routing classification of a simple Query's text, if the session classifies it.
    pub(super) fn query_class(&self, sql: &[u8]) -> Option<Classification> {
        self.wants_classification(sql).then(|| self.classify(sql))
    }

    /// The work of a simple Query's text, classified as `class` ([`Session::query_class`]).
    pub(super) fn work_of_query(&self, class: Option<Classification>) -> Work {
        class.map_or(Work::PRIMARY, |class| self.work(class))
    }

    /// The work of a text (or batch) classified as `class`, in the block a deferred `BEGIN`
    /// opened if there is one, under the session's transaction defaults.
    fn work(&self, class: Classification) -> Work {
        let class = match self.routing.deferred_begin {
            Some(_) => self.classify(b"BEGIN").merge(class),
            None => class,
        };
        Work::of(&class, self.defaults())
    }

    /// A lone `BEGIN` that declares no access mode (`work` is its routing), from a session
    /// in transaction pooling that routes reads: the proxy answers it and holds it back,
    /// so that the block's first statement decides where the block runs. A
    /// `SET TRANSACTION READ ONLY` there lets a replica run it, as it would have in the
    /// same message as the `BEGIN`; anything else runs on the primary. The `BEGIN` goes to
    /// the server ahead of that statement ([`Session::send_deferred_begin`]), its replies
    /// swallowed, so the client's path gains no round trip (it loses one). Returns whether
    /// the `BEGIN` was held back.
    pub(super) fn defer_begin(&mut self, work: Work, sql: &[u8], raw: &Bytes) -> bool {
        if work.rule != Rule::ReadWriteTransaction
            || self.mode != PoolMode::Transaction
            || self.tx_status != TransactionStatus::Idle
            || self.server.held()
            || !self.routes_reads()
        {
            return false;
        }
        let Some(tag) = lone_begin(sql) else {
            return false;
        };
        self.routing.deferred_begin = Some(raw.clone());
        self.tx_status = TransactionStatus::InTransaction;
        self.tx_statements += 1;
        // The client's BEGIN, answered here: a query of its own; the transaction's clock
        // starts with it.
        self.request_sent();
        self.request_done(self.tx_status);
        let mut reply = BytesMut::new();
        be::command_complete(tag, &mut reply);
        be::ready_for_query(self.tx_status, &mut reply);
        self.synthesize(reply.freeze());
        true
    }

    /// A server was just borrowed: a `BEGIN` held back goes to it first, its replies
    /// swallowed (the client had them from the proxy).
    pub(super) fn send_deferred_begin(&mut self) {
        if let Some(begin) = self.routing.deferred_begin.take() {
            self.server.sout.extend_from_slice(&begin);
            self.server.replies.push(super::replies::Expect::InjectedQuery);
        }
    }

    /// The routing classification of `sql`, with the database's function catalog (read in
    /// the background the first time it is needed).
    fn classify(&self, sql: &[u8]) -> Classification {
        let functions = &self.pool.settings.routing.functions;
        functions.ensure_loaded(&self.pool);
        classify(sql, &**functions)
    }

    /// The classification of a prepared statement, kept with it until the function
    /// catalog changes.
    fn classify_statement(&self, def: &StatementDef) -> Classification {
        let functions = &self.pool.settings.routing.functions;
        def.route_class(functions.generation(), || self.classify(&def.query))
    }

    /// The session's transaction defaults (startup parameters and committed `SET`s).
    fn defaults(&self) -> SessionDefaults {
        let (read_only, serializable) = self.params.transaction_defaults();
        SessionDefaults {
            read_only,
            serializable,
        }
    }

    /// Whether this session's work may go anywhere but the primary, so that it is worth
    /// classifying: transaction or statement pooling, no state pinned to a server, and a
    /// database (or session hint, or router plugin) that routes reads. (A statement with a
    /// leading comment is classified anyway, for its hint.)
    pub(super) fn routes_reads(&self) -> bool {
        self.mode != PoolMode::Session
            && !self.server_state
            && (self.read_routing() != ReadRouting::Off || !self.policies.builtin_router())
    }

    fn read_routing(&self) -> ReadRouting {
        self.routing
            .hint
            .unwrap_or(self.pool.settings.routing.read_routing)
    }

    /// Borrows a server where `work` should run (see the module docs).
    pub(super) async fn checkout_for(&mut self, work: Work) -> Result<Checkout, SessionError> {
        self.routing.may_write = true;
        self.routing.declared_read_only = false;
        if !self.routes_reads() && !work.replica_hint {
            return Ok(self.pool.checkout(Some(&self.stop)).await?);
        }
        let work = if std::mem::take(&mut self.routing.force_primary) {
            Work::PRIMARY
        } else {
            work
        };
        let checkout = self.routed_checkout(work).await?;
        self.routing.may_write = !work.replica_ok();
        self.routing.declared_read_only =
            checkout.read_node().is_some() && work.rule == Rule::ReadOnlyTransaction;
        let node = checkout
            .read_node()
            .or_else(|| self.pool.cluster.primary().map(|(i, _)| i));
        if let Some(node) = node {
            self.pool.reads.ran(node, work.replica_ok());
        }
        Ok(checkout)
    }

    /// [`Session::checkout_for`] once routing applies: asks the router (again, after a
    /// `wait`), and falls back to the primary when the replica chosen cannot be used.
    async fn routed_checkout(&mut self, work: Work) -> Result<Checkout, SessionError> {
        let started = Instant::now();
        loop {
            match self.target(work)? {
                Ok(Target::Primary) => return Ok(self.pool.checkout(Some(&self.stop)).await?),
                Ok(Target::Read(node)) => match self.pool.checkout_read(node, Some(&self.stop)).await {
                    Ok(checkout) => return Ok(checkout),
                    Err(e) => {
                        tracing::info!(
                            pid = self.cancel.process_id, node = %self.pool.cluster.nodes[node], error = %e,
                            "cannot read on this replica now; the read goes to the primary"
                        );
                        self.pool.reads.fell_back();
                        return Ok(self.pool.checkout(Some(&self.stop)).await?);
                    }
                },
                Err(wait) => {
                    // The router waits (for a replica to catch up), within the cluster's
                    // hold budget; past it the work runs on the primary.
                    let left = self.pool.cluster.hold_timeout.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        self.pool.reads.fell_back();
                        return Ok(self.pool.checkout(Some(&self.stop)).await?);
                    }
                    // Boxed: rare, and a timer would otherwise sit in every session's task.
                    Box::pin(self.pool.cluster.replica_news(wait.min(left))).await;
                }
            }
        }
    }

    /// The router's answer for `work`, made a target: `Err(wait)` to ask again later, an
    /// error for a rejection.
    fn target(&mut self, work: Work) -> Result<Result<Target, Duration>, SessionError> {
        let min_lsn = self.required_lsn();
        let request = RouteRequest {
            kind: work.kind,
            replica_ok: work.replica_ok(),
            in_transaction: false,
            read_routing: if work.replica_hint {
                ReadRouting::Replicas
            } else {
                self.read_routing()
            },
            last_commit_lsn: min_lsn,
        };
        let view = self.pool.cluster.view();
        let route = self
            .state
            .policies
            .route(&mut self.policies, &mut self.facts, &request, || {
                view.node_infos()
            });
        let wanted = match route {
            Route::Primary => return Ok(Ok(Target::Primary)),
            Route::Wait(d) => return Ok(Err(d)),
            Route::Reject { sqlstate, message } => {
                return Err(crate::pool::PoolError::Rejected { sqlstate, message }.into())
            }
            Route::Node(n) => Some(n),
            Route::AnyReplica => None,
        };
        let routing = &self.pool.settings.routing;
        let with_primary = request.read_routing == ReadRouting::ReplicasOrPrimary;
        let picked = self
            .pool
            .pick_read_node(&view, &routing.budget, min_lsn, wanted, with_primary);
        Ok(Ok(match picked {
            Some(node) => Target::Read(node),
            // No replica, and writes are held (a switchover): the read runs on the node the
            // probes confirm as the new primary rather than wait for traffic to move there.
            None => match view.candidate {
                Some(c) if self.pool.cluster.hold().is_some() && c < view.nodes.len() => Target::Read(c),
                _ => Target::Primary,
            },
        }))
    }

    /// The WAL position this session's reads must see: 0 for none, `u64::MAX` while the
    /// position of the last commit in its scope is not known yet (no probe of the primary
    /// has started since).
    fn required_lsn(&self) -> u64 {
        let mark = self.commit_mark();
        if mark == 0 {
            return 0;
        }
        self.pool.cluster.commit_position(mark).unwrap_or(u64::MAX)
    }

    /// The mark of the last commit in this session's read-your-writes scope (0: none).
    pub(super) fn commit_mark(&self) -> u64 {
        let routing = &self.pool.settings.routing;
        match routing.read_your_writes {
            ReadYourWrites::Off => 0,
            ReadYourWrites::Session => self.routing.commit_mark,
            ReadYourWrites::User => self.pool.reads.user_commits.load(Ordering::Relaxed),
            ReadYourWrites::Database => routing.database_commits.load(Ordering::Relaxed),
        }
    }

    /// Whether the next checkout goes to the primary whatever the work (a misrouted read).
    pub(super) fn routing_forced(&self) -> bool {
        self.routing.force_primary
    }

    /// The request the session runs again goes to the primary (a replica refused it).
    pub(super) fn routing_force_primary(&mut self) {
        self.routing.force_primary = true;
    }

    /// A transaction ended: if it ran on the primary and may have written (it was not
    /// classified as fit for a replica), later reads in the read-your-writes scope must see
    /// it.
    pub(super) fn note_commit(&mut self, on_primary: bool) {
        if !on_primary || !self.routing.may_write || !self.routes_reads() {
            return;
        }
        self.mark_commit();
    }

    /// A commit in this session's read-your-writes scope was acknowledged by now (by this
    /// process, or, for a client handed over, by the process before it): later reads in
    /// the scope must see it.
    pub(super) fn mark_commit(&mut self) {
        let routing = &self.pool.settings.routing;
        let mark = self.pool.cluster.commit_mark();
        match routing.read_your_writes {
            ReadYourWrites::Off => {}
            ReadYourWrites::Session => self.routing.commit_mark = mark,
            ReadYourWrites::User => {
                self.pool.reads.user_commits.fetch_max(mark, Ordering::Relaxed);
            }
            ReadYourWrites::Database => {
                routing.database_commits.fetch_max(mark, Ordering::Relaxed);
            }
        }
    }
}
