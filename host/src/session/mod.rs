//! One client's session: a task that owns the client's socket, borrows a server from the pool
//! when it has work, relays messages both ways, and gives the server back at the end of the
//! transaction (transaction mode) or of the session (session mode).
//!
//! The relay is a single poll loop over four directions (read client, write server, read
//! server, write client), so a client that pipelines and a server that streams never deadlock
//! each other, and back-pressure is a buffer limit, not a blocked task.
//!
//! What the client sends is rewritten only where pooling requires it (`frontend`): named
//! prepared statements become proxy-wide names prepared on demand, and session settings are
//! replayed on each server. Server replies are forwarded in order (`backend`), with the replies
//! to the proxy's own injected messages taken out and its synthetic replies put in at the
//! right place.

mod backend;
mod copy;
mod error;
mod extended;
mod frontend;
mod handoff;
mod large;
mod params;
mod pipelined;
mod replies;
mod retry;
mod route;
mod server_side;
mod simple;
mod spares;
mod startup;
mod statements;
mod timeouts;
mod traffic;

use self::error::SettingsFailed;
pub use error::SessionError;
pub use handoff::{adopt, Carried, ClientRecord, Handoff, RECORD_VERSION};
pub use startup::{ConsoleRole, Destination, LoggedIn};

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use switchyard_protocol::backend::{error_response, ErrorFields, TransactionStatus};
use switchyard_protocol::sqlstate;
use tokio::io::AsyncWriteExt;
use tokio_util::io::poll_read_buf;

use self::params::SessionParams;
use self::retry::Replay;
use self::route::{Routing, Work};
use self::server_side::ServerSide;
use self::statements::ClientStatements;
use self::timeouts::{Expiry, Phase, Timeouts};
use crate::cancel::{CancelRegistration, CancelTarget, CancelsInFlight};
use crate::config::PoolMode;
use crate::net::{poll_write_all, Peer, Stream};
use crate::policy::pool_mode::{ReadyAction, ReadyFacts};
use crate::policy::{SessionFacts, SessionPolicies};
use crate::pool::{Checkout, Pool};
use crate::roster::{ClientInfo, Member, RELAXED};
use crate::state::ProxyState;
use crate::stop::{Shutdown, Signal, StopWatch};

/// Stop reading a side when this much is waiting to be written to the other.
const HIGH_WATER: usize = 256 * 1024;

/// Stop taking client messages while this many replies are owed to the client (each
/// message sent to a server and each synthetic reply queued behind one is an
/// [`replies::Expect`]).
/// With the two buffers' high-water marks, this bounds what a pipelining client can make
/// the proxy hold.
const MAX_OWED: usize = 1024;

/// How many freshly borrowed servers a session lets go, one after the other, because
/// their connection ended before they took its settings (a node shutting down sends its
/// idle backends their FATAL one by one, after the check at checkout may have passed).
/// Then the client gets the error.
const SERVERS_LOST_BEFORE_SETTINGS: u32 = 3;

/// Logs an accepted client in (within `client_login_timeout`), or tells it why not. The
/// listener then hands a pool client to [`serve`] and a console client to the admin console.
pub async fn login(stream: Stream, peer: Peer, state: &Arc<ProxyState>) -> Option<LoggedIn> {
    if let Stream::Plain(tcp) = &stream {
        let _ = tcp.set_nodelay(true);
    }
    let deadline = tokio::time::Instant::now() + state.proxy().client_login_timeout;
    let login = tokio::time::timeout_at(
        deadline,
        // Boxed: login state (SCRAM, auth_query) is freed once the client is in.
        Box::pin(startup::handshake(stream, peer, state, deadline)),
    )
    .await;
    match login {
        Ok(Ok(l)) => l,
        Ok(Err((stream, e))) => {
            tracing::info!(%peer, error = %e, "login failed");
            if let (Some(mut stream), Some(fields)) = (stream, e.to_client()) {
                let mut out = BytesMut::new();
                error_response(&fields, &mut out);
                let _ = stream.write_all(&out).await;
                let _ = stream.shutdown().await;
            }
            None
        }
        Err(_) => {
            tracing::info!(%peer, "client did not log in within client_login_timeout");
            None
        }
    }
}

/// How a session ended, for the listener.
pub enum Outcome {
    /// The client left, or was told why its session ended.
    Ended,
    /// Another process took over; the client was told to reconnect (its session could
    /// not be handed over).
    ToldToReconnect,
    /// Another process took over and the client goes to it.
    HandedOver(Box<Handoff>),
}

/// Why [`Session::run`] returned without an error.
enum Ending {
    /// The client disconnected (or sent Terminate).
    Left,
    /// A takeover, between transactions: the client can go to the new process.
    HandOver,
    /// A takeover, between transactions: the client cannot go, for this reason.
    Reconnect(&'static str),
}

/// What a client that cannot be handed over is told at a takeover (57P01).
pub const UPGRADE_MESSAGE: &str = "switchyard is restarting for an upgrade: reconnect to continue";

/// Serves a logged-in client of `pool` until it leaves. At shutdown (`Stop::shut_down`) the
/// session ends at its client's next transaction boundary; at `Stop::close`
/// (`shutdown_timeout` ran out) it ends at once, its server closed, so that the server
/// rolls back whatever transaction was open. At a takeover (`Stop::hand_over`) the
/// client goes to the new process at its next transaction boundary where its session
/// allows (`handoff`), and is told to reconnect where it does not.
///
/// Not an `async fn`: the session is built before the future, which then holds it once
/// (an `async fn` keeps its arguments beside what is made of them, and every idle client
/// pays for the session's task).
///
/// How the session ended goes to `settle`, called from inside the same future: a wrapper
/// future awaiting this one would hold it twice (once captured, once while awaited), and
/// this future is most of every client's task.
pub fn serve(
    logged_in: LoggedIn,
    pool: Arc<Pool>,
    peer: Peer,
    state: Arc<ProxyState>,
    stop: Arc<StopWatch>,
    settle: impl FnOnce(Outcome) + Send + 'static,
) -> impl std::future::Future<Output = ()> {
    let mut session = Session::new(logged_in, pool, peer, state, stop.clone());
    async move {
        let outcome = 'ended: {
            let result = match session.run(&stop).await {
                Ok(Ending::Left) => Ok(()),
                Ok(Ending::HandOver) => {
                    // What is still queued for the client (the reply to its COMMIT) goes
                    // out first, from this process.
                    match session.flush_client().await {
                        Ok(()) => break 'ended session.hand_over(),
                        Err(e) => Err(e),
                    }
                }
                Ok(Ending::Reconnect(why)) => {
                    let fields = ErrorFields::fatal(sqlstate::ADMIN_SHUTDOWN, UPGRADE_MESSAGE).with_detail(
                        format!("This session cannot be handed to the new process: {why}."),
                    );
                    session.finish(Err(SessionError::Fatal(Box::new(fields)))).await;
                    break 'ended Outcome::ToldToReconnect;
                }
                Err(e) => Err(e),
            };
            session.finish(result).await;
            Outcome::Ended
        };
        settle(outcome);
    }
}

/// Result of waiting on the sockets.
enum Io {
    ClientRead,
    ClientEof,
    ServerRead,
    ServerEof,
    Shutdown,
    TimedOut(Expiry),
}

struct Session {
    client: Stream,
    /// Bytes read from the client, not yet processed. The three buffers (with the server
    /// side's), the reply queue and the replay's frame list are parked (see `spares`) while
    /// the session waits for its client with nothing in them.
    cbuf: BytesMut,
    /// Bytes for the client, not yet written.
    cout: BytesMut,
    pool: Arc<Pool>,
    mode: PoolMode,
    /// The server held, if any, and everything that is only about it.
    server: ServerSide,
    /// Status of the last ReadyForQuery sent to the client.
    tx_status: TransactionStatus,
    statements: ClientStatements,
    params: SessionParams,
    cancel: CancelRegistration,
    /// The client-side timeouts' timer; `None` for a pool that sets none.
    timeouts: Option<Box<Timeouts>>,
    terminated: bool,
    /// Dropping client messages up to the next Sync (their batch could not get a server).
    skipping: bool,
    state: Arc<ProxyState>,
    /// This session's pool-mode hook, as the policy facade last gave it; refreshed when a
    /// transaction starts, so a reload never switches versions inside a transaction.
    policies: SessionPolicies,
    /// What the hooks are told about this session.
    facts: SessionFacts,
    /// Statements run in the current transaction block.
    tx_statements: u32,
    /// The request that may still run again elsewhere if its server fails it.
    replay: Replay,
    /// The client created state on its server that the proxy cannot carry to another
    /// (`sql::server_state`, an untracked setting): the server stays with it (see `pin`).
    server_state: bool,
    /// The server, and the state above with it, was lost while the client was idle; its
    /// next message gets this error.
    lost_session: Option<Box<ErrorFields>>,
    /// Client input is waiting in `cbuf` for the session to catch up
    /// ([`Session::input_blocked`]); the relay comes back to it when it has.
    input_held: bool,
    /// Read routing: the session's hint and its last commit (`route`).
    routing: Routing,
    /// The pool-mode policy lets this session pipeline its standalone statements
    /// (`pipelined`), as decided at its start.
    may_pipeline: bool,
    /// The listener's shutdown signals, for the waits outside [`Session::run`]'s loop (a
    /// pipelined statement's reply).
    stop: Arc<StopWatch>,
    /// This client's row in `SHOW CLIENTS`.
    listed: Arc<Member<ClientInfo>>,
    /// The running request's and transaction's start, the bytes not yet counted
    /// (`traffic`).
    clocks: traffic::Clocks,
}

impl Session {
    fn new(
        l: startup::LoggedIn,
        pool: Arc<Pool>,
        peer: Peer,
        state: Arc<ProxyState>,
        stop: Arc<StopWatch>,
    ) -> Session {
        // Read once: a reload or `SET` applies to the sessions that start after it.
        let live = pool.live();
        let application_name = match &l.carried {
            Some(carried) => carried.application_name(),
            None => l
                .params
                .iter()
                .rev()
                .find(|(k, _)| k == "application_name")
                .map_or("", |(_, v)| v.as_str()),
        };
        let read_only = l
            .params
            .iter()
            .rev()
            .find(|(k, _)| k == "default_transaction_read_only")
            .is_some_and(|(_, v)| matches!(v.as_str(), "on" | "true" | "1" | "yes"));
        let mut facts = SessionFacts::new(
            l.cancel.process_id as u32,
            &l.user.name,
            &l.database,
            application_name,
            peer.to_string(),
            read_only,
        );
        let routing = Routing::new(
            params::proxy_setting(&l.params, "switchyard.route").and_then(|v| route::parse_hint(&v).ok()),
        );
        let mut params = SessionParams::from_startup(&l.params);
        params.share_startup(|s| pool.shared_settings(s));
        let policies = state.policies.session(&l.database);
        let mode = live.mode;
        let may_pipeline =
            mode != PoolMode::Session && state.policies.may_pipeline(&policies, &mut facts, live.pipeline);
        let listed = state.client_roster.join(ClientInfo {
            user: l.user.name.clone(),
            database: l.database.clone(),
            addr: peer,
            local_addr: l.stream.local_addr(),
            connected_at: std::time::SystemTime::now(),
            tls: l.stream.is_tls(),
            application_name: application_name.to_string(),
            process_id: l.cancel.process_id,
            request_ms: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            prepared: AtomicUsize::new(0),
            stop: stop.clone(),
        });
        let mut session = Session {
            listed,
            client: l.stream,
            cbuf: l.buf,
            cout: BytesMut::new(),
            mode,
            pool,
            server: ServerSide::default(),
            tx_status: TransactionStatus::Idle,
            statements: ClientStatements::new(live.max_prepared_statements),
            params,
            cancel: l.cancel,
            terminated: false,
            skipping: false,
            state,
            policies,
            facts,
            tx_statements: 0,
            replay: Replay::default(),
            server_state: false,
            lost_session: None,
            input_held: false,
            routing,
            may_pipeline,
            stop,
            timeouts: Timeouts::new(live.timeouts),
            clocks: traffic::Clocks::default(),
        };
        if let Some(carried) = l.carried {
            session.take_carried(*carried);
        }
        session
    }

    async fn run(&mut self, stop: &StopWatch) -> Result<Ending, SessionError> {
        loop {
            // A takeover: between transactions, the client goes to the new process with
            // what it sent and this one has not processed yet.
            if let Some(ending) = self.taken_over(stop) {
                return Ok(ending);
            }
            // A session-mode (or pinned) client that kept its server across a reload that
            // removed the database lets it go before its next statement, which then ends
            // the session with 57P01 (see `ready_action`).
            if self.server.held()
                && self.tx_status == TransactionStatus::Idle
                && self.server.owes_nothing()
                && self.pool.is_removed()
            {
                self.release();
            }
            self.process_client().await?;
            if self.terminated {
                return Ok(Ending::Left);
            }
            if self.server.releasable() {
                if self.params.uncertain() {
                    Box::pin(self.read_back_settings()).await;
                }
                self.release();
            }
            // Between transactions: what is still queued for the client (the reply to its
            // COMMIT) goes out before the FATAL (`finish`).
            if let Some(ending) = self.taken_over(stop) {
                return Ok(ending);
            }
            if stop.shutting_down() && self.between_transactions() {
                return Err(SessionError::fatal(
                    sqlstate::ADMIN_SHUTDOWN,
                    "switchyard is shutting down",
                ));
            }
            match self.wait_io(stop).await {
                Ok(Io::ClientRead | Io::Shutdown) => {}
                Ok(Io::TimedOut(expiry)) => return Err(self.timed_out(expiry)),
                Ok(Io::ClientEof) => return Ok(Ending::Left),
                Ok(Io::ServerRead) => self.process_server()?,
                Ok(Io::ServerEof) => {
                    self.process_server()?;
                    if !self.replay.failed() && !self.note_replica_lost() && !self.server_gone_while_idle() {
                        self.flush_client().await?;
                        return Err(self.server_ended());
                    }
                }
                // The server reset the connection after failing the request, before it
                // read the request, or while it owed nothing.
                Err(SessionError::ServerIo(e))
                    if self.replay.failed()
                        || self.note_reset(&e)
                        || self.note_replica_lost()
                        || self.server_gone_while_idle() => {}
                Err(SessionError::ServerIo(_)) if self.server.ended_with_fatal => {
                    return Err(SessionError::ServerEnded)
                }
                Err(e) => return Err(e),
            }
            if self.replay.failed() {
                // Boxed: rare, and its state would otherwise sit in every session's task.
                Box::pin(self.retry()).await?;
            }
        }
    }

    /// The server closed while the session owed it nothing and was not in a transaction
    /// (a shutdown or an idle timeout of the server): the session goes on without it and
    /// borrows another at its next statement. A session-pooled client that may have
    /// created state there is told at its next message instead. Returns false when the
    /// server was in the middle of something (the caller ends the session).
    fn server_gone_while_idle(&mut self) -> bool {
        let idle = self.server.owes_nothing() && self.tx_status == TransactionStatus::Idle;
        if !idle || !self.server.held() {
            return false;
        }
        self.drop_server();
        if self.server_state {
            tracing::info!(
                pid = self.cancel.process_id,
                "server closed an idle session that may hold server-side state; the client will be told"
            );
            self.lost_session = Some(Box::new(
                ErrorFields::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    "the server of this session closed its connection; session state kept there (temporary tables, LISTEN, advisory locks, SQL prepared statements, cursors) is gone",
                )
                .with_hint("reconnect and recreate the session state"),
            ));
        } else {
            tracing::info!(
                pid = self.cancel.process_id,
                "server closed while the session was idle; the next statement borrows another"
            );
        }
        true
    }

    /// Why the session ends now that its server's connection ended in the middle of
    /// something: the server's own FATAL, which the client has, or a connection lost.
    fn server_ended(&self) -> SessionError {
        if self.server.ended_with_fatal {
            SessionError::ServerEnded
        } else {
            SessionError::ServerClosed
        }
    }

    /// The pool-mode decision at a ReadyForQuery boundary, from the policy facade (the
    /// plugin's, or the built-in's when there is no plugin or it failed); a removed
    /// database's server is let go at the first boundary outside a transaction.
    fn ready_action(&mut self, status: TransactionStatus) -> ReadyAction {
        self.tx_statements += 1;
        let facts = ReadyFacts {
            status,
            statements: self.tx_statements,
            holds_server_state: self.server_state,
        };
        if status == TransactionStatus::Idle {
            self.tx_statements = 0;
            // A reload removed the database: the server goes (and is closed, its pool
            // being closed) between transactions, in every pool mode, and the client's
            // next statement ends the session with 57P01.
            if self.pool.is_removed() {
                return ReadyAction::Release;
            }
        }
        self.state
            .policies
            .on_ready(&mut self.policies, &mut self.facts, self.mode, facts)
    }

    /// Closes the server (dropping the checkout closes it) and forgets everything about it
    /// ([`ServerSide::take`]); a cancel still on its way to it can reach no one else.
    fn drop_server(&mut self) {
        drop(self.server.take());
        self.cancel.slot.vacate();
    }

    fn release(&mut self) {
        let unscanned = self.server.unscanned;
        if let Some(mut checkout) = self.server.take() {
            self.note_commit(checkout.read_node().is_none());
            let cancels = self.cancel.slot.vacate();
            tracing::debug!(
                pid = self.cancel.process_id,
                server = checkout.conn().id,
                "server released"
            );
            if unscanned {
                tokio::spawn(reset_server(checkout, &["DISCARD ALL"], cancels));
                return;
            }
            give_back(checkout, cancels);
        }
    }

    /// Borrows a server where `work` should run (`route`) and brings it to this client's
    /// settings.
    async fn acquire(&mut self, work: Work) -> Result<(), SessionError> {
        if self.server.held() {
            return Ok(());
        }
        // A client waiting for a server must have seen all earlier replies.
        self.flush_client().await?;
        let now_ms = self.pool.coarse_now_ms();
        self.listed.request_ms.store(now_ms, RELAXED);
        let mut lost = 0;
        // Taken by the checkout: given again to the one after a server lost below.
        let forced = self.routing_forced();
        let mut checkout = loop {
            self.listed.waiting.store(true, RELAXED);
            let checkout = self.checkout_for(work).await;
            self.listed.waiting.store(false, RELAXED);
            if let Some(signal) = self.stop.ending() {
                // Killed (or `shutdown_timeout` ran out) while it waited for the server (the
                // wait then ended with `PoolError::Ended`) or as it got one: nothing of the
                // client's reaches a server, and one it got goes back unused.
                if let Ok(checkout) = checkout {
                    checkout.release();
                }
                return Err(self.stopped(signal));
            }
            let mut checkout = checkout?;
            if checkout.conn().settings_signature == self.params.signature() {
                break checkout;
            }
            // Boxed: the replay's round trip is rare, and inline it would enlarge every
            // session's task by its size, idle or not.
            match Box::pin(self.apply_settings(&mut checkout)).await {
                Ok(()) => break checkout,
                // The server went away before it took the settings (a shutdown or a
                // terminated backend that the check at checkout could not see yet):
                // nothing of the client's reached it, so another is borrowed.
                Err(SettingsFailed::ServerLost(e)) if lost < SERVERS_LOST_BEFORE_SETTINGS => {
                    lost += 1;
                    tracing::info!(
                        pid = self.cancel.process_id, server = checkout.conn().id, error = %e,
                        "server lost while taking the session's settings; borrowing another"
                    );
                    drop(checkout); // closes it
                    if forced {
                        self.routing_force_primary();
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.listed.prepared.store(self.statements.len(), RELAXED);
        if let Some(server) = &checkout.conn().listed {
            server.client.store(self.listed.id, RELAXED);
            server.request_ms.store(now_ms, RELAXED);
        }
        if self.tx_status == TransactionStatus::Idle && self.mode != PoolMode::Session {
            let on_replica = checkout.read_node().is_some() && !self.routing.declared_read_only();
            self.replay.open(self.cout.len(), on_replica);
        }
        let conn = checkout.conn();
        tracing::debug!(pid = self.cancel.process_id, server = conn.id, "server acquired");
        self.cancel.slot.hold(CancelTarget {
            addr: conn.addr.clone(),
            process_id: conn.backend_pid,
            secret_key: conn.secret_key,
        });
        self.server.checkout = Some(checkout);
        self.send_deferred_begin();
        Ok(())
    }

    /// Brings a freshly borrowed server to this client's settings, in one round trip
    /// before any of the client's messages: the server's settings are recorded only once
    /// it confirmed them. If it refused them, the server is closed and the client gets
    /// the server's error: its session cannot be set up as it asked.
    async fn apply_settings(&mut self, checkout: &mut Checkout) -> Result<(), SettingsFailed> {
        let conn = checkout.conn();
        if let Some(sql) = self.params.diff(&conn.settings) {
            tracing::debug!(server = conn.id, %sql, "applying session settings");
            let limit = self.pool.connect_timeout();
            let answer = crate::server::simple_query_within(conn, &sql, limit)
                .await
                .map_err(SettingsFailed::from_server)?;
            if let Some(mut fields) = answer.error {
                tracing::warn!(
                    user = self.facts.user(), server = conn.id, sqlstate = %fields.code,
                    error = %fields.message, "a server refused this session's settings; closing it"
                );
                fields.severity = switchyard_protocol::backend::Severity::Fatal;
                fields.detail = Some(
                    "switchyard could not apply this session's settings (startup parameters and SET commands) on a server"
                        .into(),
                );
                return Err(SettingsFailed::Ends(SessionError::Fatal(Box::new(fields))));
            }
        }
        conn.settings = self.params.desired().clone();
        conn.settings_signature = self.params.signature();
        Ok(())
    }

    /// A transaction whose settings commands failed or rolled back (maybe only to a
    /// savepoint) ended: reads back from the server what the session's settings now are,
    /// so that neither this client nor the next user of the server is misled. A server
    /// that cannot tell is closed.
    async fn read_back_settings(&mut self) {
        let Some(conn) = self.server.conn() else {
            return;
        };
        let limit = self.pool.connect_timeout();
        let query = self.params.read_back_query();
        match crate::server::simple_query_within(conn, &query, limit).await {
            Ok(answer) if answer.error.is_none() => {
                let rows = answer
                    .rows
                    .into_iter()
                    .filter_map(|row| match <[_; 2]>::try_from(row) {
                        Ok([Some(name), value]) => Some((name, value)),
                        _ => None,
                    })
                    .collect();
                self.params.read_back(rows);
                conn.settings = self.params.desired().clone();
                conn.settings_signature = self.params.signature();
            }
            _ => {
                tracing::info!(
                    server = conn.id,
                    "cannot read back session settings; closing the server"
                );
                self.params.forget_uncertainty();
                self.drop_server();
            }
        }
    }

    /// The client made state that lives only on its server (`what`): from now on its
    /// server stays with it until it disconnects, whatever the pool mode, and is reset
    /// (`DISCARD ALL`) before anyone else gets it. Counted in SHOW POOLS and the metrics.
    fn pin(&mut self, what: &str) {
        if self.server_state {
            return;
        }
        self.server_state = true;
        if self.mode != PoolMode::Session {
            self.pool.stats.pinned.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                user = self.facts.user(),
                database = self.facts.database(),
                pid = self.cancel.process_id,
                state = what,
                "client holds server-side state; its server stays with it until it disconnects"
            );
        }
    }

    async fn flush_client(&mut self) -> Result<(), SessionError> {
        if !self.cout.is_empty() {
            self.client
                .write_all(&self.cout)
                .await
                .map_err(SessionError::ClientIo)?;
            self.replay.written(self.cout.len());
            self.clocks.sent += self.cout.len() as u64;
            self.cout.clear();
        }
        self.client.flush().await.map_err(SessionError::ClientIo)
    }

    async fn wait_io(&mut self, stop: &StopWatch) -> Result<Io, SessionError> {
        let between_transactions = self.between_transactions();
        // Out of `self` while `poll_io` borrows it.
        let mut timeouts = self.timeouts.take();
        if let Some(t) = &mut timeouts {
            t.arm(self.phase());
        }
        // One poll over the three, in this order (a `select!` of three futures cost about
        // 180 instructions more per transaction at one client).
        let io = poll_fn(|cx| {
            if let Poll::Ready(r) = self.poll_io(cx) {
                return Poll::Ready(r);
            }
            if let Poll::Ready(signal) = stop.poll(cx, between_transactions) {
                return Poll::Ready(match signal {
                    Signal::Shutdown => Ok(Io::Shutdown),
                    signal => Err(self.stopped(signal)),
                });
            }
            timeouts::poll_expired(timeouts.as_deref_mut(), cx).map(|expiry| Ok(Io::TimedOut(expiry)))
        })
        .await;
        self.timeouts = timeouts;
        io
    }

    /// Why the session ends now: `shutdown_timeout` ran out, or an admin killed its
    /// database (`KILL`); either way an open transaction is rolled back (its server is
    /// closed).
    fn stopped(&self, signal: Signal) -> SessionError {
        let message = match signal {
            Signal::Killed => format!(
                "terminating connection: database \"{}\" was killed by an admin (KILL); an open transaction is rolled back",
                self.facts.database()
            ),
            _ if *self.state.stop_request.borrow() == Some(Shutdown::Immediate) => {
                "switchyard is shutting down at once (SHUTDOWN IMMEDIATE); an open transaction is rolled back".into()
            }
            _ => "switchyard is shutting down and shutdown_timeout ran out; an open transaction is rolled back".into(),
        };
        SessionError::fatal(sqlstate::ADMIN_SHUTDOWN, message)
    }

    /// No transaction block is open and no server owes a reply: where a shutdown ends the
    /// session, in every pool mode (a server kept between transactions, in session mode
    /// or pinned by server-side state, holds nothing a disconnect would not lose).
    fn between_transactions(&self) -> bool {
        self.tx_status == TransactionStatus::Idle && self.server.owes_nothing()
    }

    /// How the session ends at a takeover, when one is under way and the session is
    /// between transactions: its client handed over, or told to reconnect.
    fn taken_over(&self, stop: &StopWatch) -> Option<Ending> {
        // A server about to go back to the pool is let go first (below, in `run`).
        if !(stop.shutting_down() && stop.handing_over() && self.between_transactions())
            || self.server.releasable()
        {
            return None;
        }
        Some(
            self.why_not_handed_over()
                .map_or(Ending::HandOver, Ending::Reconnect),
        )
    }

    /// What the session waits for, for its timeouts.
    fn phase(&self) -> Phase {
        if !self.server.owes_nothing() {
            Phase::Query
        } else if self.tx_status != TransactionStatus::Idle {
            // With or without a server: a `BEGIN` the proxy holds back opens a block too.
            Phase::IdleInTransaction
        } else {
            Phase::ClientIdle
        }
    }

    /// A client-side timeout ran out: a statement still running gets a cancel (sent in the
    /// background) and the session ends with the timeout's error at once.
    fn timed_out(&mut self, expiry: Expiry) -> SessionError {
        let fields = timeouts::error(self.timeouts.as_deref(), expiry);
        tracing::info!(pid = self.cancel.process_id, user = self.facts.user(), error = %fields.message, "client timed out");
        if !self.server.owes_nothing() {
            // Claimed now, while the session still holds the server; forwarded in the
            // background, so the client hears of its timeout at once even when the server
            // is unreachable (the cancel may take up to its delivery timeout).
            if let Some(claim) = self
                .state
                .cancels
                .claim(self.cancel.process_id, self.cancel.secret_key)
            {
                tokio::spawn(claim.forward());
            }
        }
        SessionError::Timeout(Box::new(fields))
    }

    /// Makes progress on all four directions; returns when there is input to process.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Result<Io, SessionError>> {
        let pending = self.cout.len();
        let wrote = ready_err(poll_write_all(&mut self.client, cx, &mut self.cout));
        self.replay.written(pending - self.cout.len());
        self.clocks.sent += (pending - self.cout.len()) as u64;
        if let Err(e) = wrote {
            return Poll::Ready(Err(SessionError::ClientIo(e)));
        }
        let server = &mut self.server;
        if let Some(checkout) = server.checkout.as_mut() {
            let conn = checkout.conn();
            // A server that closed refuses writes, but what it said before closing (a FATAL
            // that decides whether the request can run again) is still to be read.
            let pending = server.sout.len();
            let write_error = ready_err(poll_write_all(&mut conn.stream, cx, &mut server.sout)).err();
            if server.sout.len() < pending {
                self.replay.server_wrote(pending - server.sout.len());
            }
            if self.cout.len() < HIGH_WATER || write_error.is_some() {
                if conn.rbuf.capacity() - conn.rbuf.len() < 4096 {
                    conn.rbuf.reserve(16 * 1024);
                }
                match poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.rbuf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Ok(Io::ServerEof)),
                    Poll::Ready(Ok(_)) => return Poll::Ready(Ok(Io::ServerRead)),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::ServerIo(e))),
                    Poll::Pending => {}
                }
            }
            if let Some(e) = write_error {
                return Poll::Ready(Err(SessionError::ServerIo(e)));
            }
        }
        if !self.input_blocked() {
            if self.input_held {
                // Input was left in the buffer while the session was behind; it caught up.
                return Poll::Ready(Ok(Io::ClientRead));
            }
            if self.cbuf.capacity() == 0 && !self.client.is_tls() {
                // Buffers parked: wait until the client has something to say first.
                if let Err(e) = ready!(self.client.poll_read_ready(cx)) {
                    return Poll::Ready(Err(SessionError::ClientIo(e)));
                }
                self.unpark();
            }
            if self.cbuf.capacity() - self.cbuf.len() < 1024 {
                self.cbuf.reserve(8 * 1024);
            }
            match poll_read_buf(Pin::new(&mut self.client), cx, &mut self.cbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(Io::ClientEof)),
                Poll::Ready(Ok(n)) => {
                    self.clocks.received += n as u64;
                    return Poll::Ready(Ok(Io::ClientRead));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::ClientIo(e))),
                Poll::Pending => {}
            }
        }
        self.park_if_quiet();
        Poll::Pending
    }

    /// About to wait for the client with no server and nothing buffered: hands the empty
    /// buffers and queues to the thread's spares, so an idle client holds none; or, while
    /// the proxy has few clients, keeps them, trimmed (see `spares`). Not with TLS, whose
    /// decrypted bytes may be waiting where socket readiness cannot see them.
    fn park_if_quiet(&mut self) {
        if !self.server.held()
            && self.cbuf.is_empty()
            && self.cout.is_empty()
            && self.server.sout.is_empty()
            && self.server.replies.is_empty()
            && self.cbuf.capacity() != 0
            && !self.client.is_tls()
        {
            if self.state.clients.load(RELAXED) <= spares::KEEP_OWN_UP_TO_CLIENTS {
                for buf in [&mut self.cbuf, &mut self.cout, &mut self.server.sout] {
                    spares::trim_buffer(buf);
                }
                self.server.replies.trim_queue();
                self.replay.trim_frames();
                return;
            }
            spares::park(spares::Parked {
                cbuf: std::mem::take(&mut self.cbuf),
                cout: std::mem::take(&mut self.cout),
                sout: std::mem::take(&mut self.server.sout),
                expect: self.server.replies.take_queue(),
                frames: self.replay.park_frames(),
            });
        }
    }

    /// Takes a parked set (see `park_if_quiet`) for the buffers and queues: a buffer to
    /// read into and the rest. Whatever the session gained while parked (output queued
    /// for an idle client) is kept.
    fn unpark(&mut self) {
        let set = spares::take();
        self.cbuf = set.cbuf;
        for (mine, spare) in [(&mut self.cout, set.cout), (&mut self.server.sout, set.sout)] {
            if mine.capacity() == 0 {
                *mine = spare;
            }
        }
        self.server.replies.give_queue(set.expect);
        self.replay.unpark_frames(set.frames);
    }

    /// Ends the session: tells the client why if it should know, and returns or closes the
    /// server.
    async fn finish(&mut self, result: Result<(), SessionError>) {
        match &result {
            Ok(()) | Err(SessionError::ClientIo(_)) if !self.state.proxy().log_disconnections => {}
            Ok(()) => tracing::info!(
                user = self.facts.user(),
                database = self.facts.database(),
                pid = self.cancel.process_id,
                "client disconnected"
            ),
            Err(SessionError::ClientIo(e)) => {
                tracing::info!(user = self.facts.user(), database = self.facts.database(), error = %e, "client connection lost")
            }
            Err(e) => {
                tracing::warn!(user = self.facts.user(), database = self.facts.database(), error = %e, "session ended")
            }
        }
        if let Err(e) = &result {
            if e.server_caused() {
                self.pool.cluster.incidents.client_error();
            }
            if let Some(fields) = e.to_client() {
                self.error_sent(&fields.code);
                error_response(&fields, &mut self.cout);
            }
        }
        let _ = self.flush_client().await;
        self.report_bytes();
        let _ = self.client.shutdown().await;
        if self.stop.closing() && !self.server.owes_nothing() {
            // `shutdown_timeout` ran out under a running statement: closing its server alone
            // would leave it running (Postgres notices a closed connection only when it
            // next writes), and an autocommit write could still commit after its client
            // was told 57P01. The client has its answer; the cancel is awaited here, while
            // the process still runs (within its delivery timeout).
            if let Some(claim) = self
                .state
                .cancels
                .claim(self.cancel.process_id, self.cancel.secret_key)
            {
                claim.forward().await;
            }
        }
        let cancels = self.cancel.slot.vacate();
        if self.server_state && self.mode != PoolMode::Session {
            self.pool.stats.pinned.fetch_sub(1, Ordering::Relaxed);
        }
        let releasable = self.server.releasable() && !self.params.uncertain() && !self.server.unscanned;
        // A timeout that found the server owing nothing leaves it usable once rolled back.
        let clean = matches!(result, Ok(()) | Err(SessionError::Timeout(_))) && self.server.owes_nothing();
        let Some(checkout) = self.server.take() else {
            return;
        };
        if !clean {
            return; // dropping the checkout closes the server
        }
        if releasable {
            give_back(checkout, cancels);
            return;
        }
        // The session kept its server (session mode, an open transaction, server-side state,
        // unscanned SQL): whatever it left there must not reach the next client.
        let reset: &'static [&'static str] = match self.tx_status {
            TransactionStatus::Idle => &["DISCARD ALL"],
            // Two queries: DISCARD ALL cannot run in a transaction block.
            _ => &["ROLLBACK", "DISCARD ALL"],
        };
        tokio::spawn(reset_server(checkout, reset, cancels));
    }
}

/// Returns a server to the pool, at once when no cancel was forwarded to it while its
/// session held it; otherwise once those cancels have reached Postgres, so that none can
/// cancel the next client's query, or closes it when one may still arrive.
fn give_back(checkout: Checkout, cancels: Option<CancelsInFlight>) {
    match cancels {
        None => checkout.release(),
        Some(cancels) => {
            tokio::spawn(async move {
                if cancels.delivered().await {
                    checkout.release();
                }
            });
        }
    }
}

/// Brings a server back to a clean state after its client left, then returns it to the pool;
/// on any trouble the server is closed instead. The cancels its client sent are delivered
/// first, so that none of them can cancel the reset itself.
async fn reset_server(
    mut checkout: Checkout,
    queries: &'static [&'static str],
    cancels: Option<CancelsInFlight>,
) {
    if let Some(cancels) = cancels {
        if !cancels.delivered().await {
            return;
        }
    }
    let conn = checkout.conn();
    let work = async {
        for sql in queries {
            if crate::server::simple_query(conn, sql).await?.error.is_some() {
                return Ok(false);
            }
        }
        Ok::<bool, crate::server::ServerError>(true)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), work).await {
        Ok(Ok(true)) => {
            // DISCARD ALL dropped the proxy's statements and the client's settings.
            conn.statements.clear();
            conn.settings.clear();
            conn.settings_signature = 0;
            checkout.release();
        }
        _ => tracing::debug!("server reset failed; closing it"),
    }
}

/// Turns a write poll into an error check: pending and done are both "carry on".
fn ready_err(p: Poll<std::io::Result<()>>) -> std::io::Result<()> {
    match p {
        Poll::Ready(Err(e)) => Err(e),
        _ => Ok(()),
    }
}
