//! Pipelined transaction pooling: standalone simple-protocol statements of several clients
//! written to one server back to back, each reply (up to and including its ReadyForQuery)
//! routed to its own client in order, so that Postgres reads several queries per wake-up.
//!
//! A pool has a few *drivers*, each a task holding one server checked out like a session's
//! (same permit, caps and settings). A driver writes in batches: everything that queued
//! while its last batch ran goes out in one write once that batch is fully answered, so
//! Postgres reads the whole batch in one wake-up, and a statement that runs long holds up
//! only the statements written with it. A session hands its statement to the driver with the
//! shortest queue below [`DEPTH`] for its settings, or starts one when a permit is free
//! ([`Pipelines::submit`]); otherwise it takes the normal path. A driver gives its server
//! back as soon as it owes nothing, and stops taking statements while other clients wait for
//! a server, so pipelining never holds more than the pool's size nor starves other work.
//!
//! Cancels (see `cancel::PipelinedCancel`): a statement not written yet is taken out of the
//! queue and answered 57014 by the driver; a written one is cancelled only once it is the
//! only statement outstanding on its server: the driver stops writing, waits until what was
//! written before it is answered, forwards the cancel, and writes nothing more until
//! Postgres has closed the cancel connection. A statement written in one batch with others
//! behind it cannot be cancelled safely while it runs (the cancel could land on the next
//! one): its cancel waits, and is dropped if it completes first. A cancel whose delivery cannot be confirmed
//! retires the driver and closes its server.
//!
//! A server that fails mid-pipeline fails the statement whose reply was under way with what
//! the server said, and every statement written behind it with [`Failure::Lost`] (no reply
//! byte: the session runs it again where that is safe); statements not written yet get
//! [`Failure::NotWritten`] and take the normal path. The server is not reused.
//!
//! A session that does not take its reply: a driver holds up to [`REPLY_PIECES`] pieces
//! (each one read from the server, at most 64 KiB) of one statement's reply; past that it
//! waits [`STALL_LIMIT`] for the session, then drops the rest of that reply and the session
//! ends with [`Failure::Unread`]: the client gets `FATAL 54000` after what it was sent, or,
//! when that ends in the middle of a message, just the end of its connection.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchyard_protocol::backend::{self as be, parse_error_fields, ErrorFields, Severity};
use switchyard_protocol::sqlstate;
use switchyard_protocol::TransactionStatus;
use tokio::sync::mpsc;
use tokio_util::io::poll_read_buf;

use super::{Pool, Slot};
use crate::cancel::{self, CancelTarget, PipelinedCancel};
use crate::net::poll_write_all;
use crate::server::{settings_diff, ServerConn, Settings};

/// Statements one driver has taken and not finished answering (queued and written).
pub const DEPTH: usize = 8;
/// Pieces of one statement's reply a driver holds for a session that has not taken them.
pub const REPLY_PIECES: usize = 64;
/// How long a driver waits for a session to take a piece once [`REPLY_PIECES`] wait.
pub const STALL_LIMIT: Duration = Duration::from_secs(1);
/// How long after a statement became the only one outstanding its cancel is forwarded.
/// Postgres ignores a cancel that arrives while the backend reads its next command, and
/// the statement became the only one at the moment Postgres turned to reading it: a cancel
/// sent at once would often be lost. Nothing is written to the server meanwhile, so a
/// cancel that arrives after the statement ended finds the backend idle and is ignored.
const CANCEL_SETTLE: Duration = Duration::from_millis(5);
/// Most bytes a driver reads from its server at once (one piece of a reply at most).
const READ_CHUNK: usize = 64 * 1024;

/// What a session gets of its pipelined statement, in order.
#[derive(Debug)]
pub enum Piece {
    /// Bytes of the reply, in order (whole messages or not).
    Reply(Bytes),
    /// The reply is complete: its ReadyForQuery was in the last piece.
    Done,
    /// No complete reply will come.
    Failed(Failure),
}

/// Why a pipelined statement got no complete reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It was never written to a server: it can take the normal path.
    NotWritten,
    /// It was written and its server's connection ended before its reply was complete;
    /// `fatal`: the server's last words in this reply were a FATAL error (the client has
    /// it); `cut`: the pieces the session got end in the middle of a message, so nothing
    /// can follow them on the client's connection.
    Lost { fatal: bool, cut: bool },
    /// The session did not take its reply within [`STALL_LIMIT`] of the driver holding
    /// [`REPLY_PIECES`] pieces of it: the rest was dropped (`cut` as for `Lost`).
    Unread { cut: bool },
}

/// A statement handed to a pipeline: its reply comes through `pieces`; a cancel for it
/// goes through `cancel`.
pub struct Ticket {
    pub pieces: mpsc::Receiver<Piece>,
    pub cancel: PipelinedCancel,
}

/// One statement in a driver.
struct Entry {
    id: u64,
    query: Bytes,
    to: mpsc::Sender<Piece>,
    /// The server sent a FATAL error in this statement's reply.
    fatal: bool,
    /// The session is gone or did not take its reply: the rest of the reply is dropped.
    abandoned: bool,
    /// The pieces the session got end in the middle of a message.
    cut: bool,
}

/// A driver as sessions see it.
struct Handle {
    id: u64,
    /// The settings signature of the sessions it serves (its server has those settings).
    signature: u64,
    /// Statements taken and not finished.
    load: Arc<AtomicUsize>,
    submit: mpsc::UnboundedSender<Entry>,
    cancel: mpsc::UnboundedSender<u64>,
}

/// A pool's drivers.
#[derive(Default)]
pub struct Pipelines {
    drivers: Mutex<Vec<Handle>>,
    next_id: AtomicU64,
}

impl Pipelines {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Handle>> {
        self.drivers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `query` (a whole Query message) of a session whose settings are `settings`
    /// (signature `signature`) to the least loaded driver serving those settings that has
    /// room, or to a new one if a permit is free; `None` when neither (the session then
    /// takes the normal path).
    pub fn submit(
        &self,
        pool: &Arc<Pool>,
        query: Bytes,
        settings: &Arc<Settings>,
        signature: u64,
    ) -> Option<Ticket> {
        let mut drivers = self.lock();
        let best = drivers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.signature == signature && h.load.load(Ordering::Relaxed) < DEPTH)
            .min_by_key(|(_, h)| h.load.load(Ordering::Relaxed))
            .map(|(i, _)| i);
        let index = match best {
            Some(i) => i,
            None => {
                let permit = pool.pipeline_permit()?;
                let handle = self.start(pool, permit, settings.clone(), signature);
                drivers.push(handle);
                drivers.len() - 1
            }
        };
        let handle = &drivers[index];
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (to, pieces) = mpsc::channel(REPLY_PIECES);
        let entry = Entry {
            id,
            query,
            to,
            fatal: false,
            abandoned: false,
            cut: false,
        };
        // Counted before it is sent, so the driver never counts it done first. A listed
        // driver takes what it is sent: it leaves the list before it stops.
        handle.load.fetch_add(1, Ordering::Relaxed);
        if handle.submit.send(entry).is_err() {
            handle.load.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Ticket {
            pieces,
            cancel: PipelinedCancel {
                ask: handle.cancel.clone(),
                ticket: id,
            },
        })
    }

    /// Starts a driver on `permit`; its handle goes into the list (the caller's lock held).
    fn start(&self, pool: &Arc<Pool>, permit: Slot, settings: Arc<Settings>, signature: u64) -> Handle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (submit, submissions) = mpsc::unbounded_channel();
        let (cancel, cancels) = mpsc::unbounded_channel();
        let load = Arc::new(AtomicUsize::new(0));
        let driver = Driver {
            id,
            pool: pool.clone(),
            load: load.clone(),
            submissions,
            submissions_open: true,
            cancels,
            _cancel_keep: cancel.clone(),
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
            asked: Vec::new(),
            delivering: None,
            doubtful: false,
            retired: false,
            sout: BytesMut::new(),
            left: 0,
        };
        tokio::spawn(driver.run(permit, settings, signature));
        Handle {
            id,
            signature,
            load,
            submit,
            cancel,
        }
    }

    /// Takes driver `id` out of the list, unless `only_if_idle` and it has statements
    /// taken and not finished. Returns whether it is out (or was already).
    fn retire(&self, id: u64, only_if_idle: bool) -> bool {
        let mut drivers = self.lock();
        if let Some(i) = drivers.iter().position(|h| h.id == id) {
            if only_if_idle && drivers[i].load.load(Ordering::Relaxed) != 0 {
                return false;
            }
            drivers.swap_remove(i);
        }
        true
    }
}

/// What woke a driver.
enum Event {
    Read,
    Lost,
    Submitted(Entry),
    SubmissionsClosed,
    Cancel(u64),
    Delivered(bool),
}

type Delivery = Pin<Box<dyn Future<Output = bool> + Send>>;

/// One server's pipeline (see the module docs).
struct Driver {
    id: u64,
    pool: Arc<Pool>,
    load: Arc<AtomicUsize>,
    submissions: mpsc::UnboundedReceiver<Entry>,
    /// The handle (and its sender) is still in the list.
    submissions_open: bool,
    cancels: mpsc::UnboundedReceiver<u64>,
    /// Keeps the cancel channel open while sessions come and go.
    _cancel_keep: mpsc::UnboundedSender<u64>,
    /// Taken, not written yet.
    queue: VecDeque<Entry>,
    /// Written, reply not complete; the first one's reply is under way.
    inflight: VecDeque<Entry>,
    /// Written statements a cancel was asked for, not forwarded yet.
    asked: Vec<u64>,
    /// A cancel being forwarded: nothing is written until it is done.
    delivering: Option<Delivery>,
    /// A forwarded cancel was not confirmed: the server is closed once it owes nothing.
    doubtful: bool,
    /// Out of the list: takes nothing new.
    retired: bool,
    /// Bytes for the server not yet written.
    sout: BytesMut,
    /// Bytes of the current server message still to pass to the reply under way.
    left: usize,
}

impl Driver {
    async fn run(mut self, permit: Slot, settings: Arc<Settings>, signature: u64) {
        let mut checkout = match self.pool.checkout_with(permit).await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(pool = %self.pool.name, error = %e, "pipeline driver got no server");
                self.fail_all();
                return;
            }
        };
        let conn = checkout.conn();
        if !self.prepare(conn, &settings, signature).await {
            self.fail_all();
            return; // dropping the checkout closes the server
        }
        let target = CancelTarget {
            addr: conn.addr.clone(),
            process_id: conn.backend_pid,
            secret_key: conn.secret_key,
        };
        tracing::debug!(pool = %self.pool.name, server = conn.id, "pipeline driver started");
        let clean = self.relay(conn, &target).await;
        self.fail_all();
        if clean && !self.doubtful {
            checkout.release();
        }
    }

    /// Brings the server to the sessions' settings; false if it refused them.
    async fn prepare(&mut self, conn: &mut ServerConn, settings: &Settings, signature: u64) -> bool {
        if conn.settings_signature != signature {
            if let Some(sql) = settings_diff(settings, &conn.settings) {
                let limit = self.pool.connect_timeout();
                match crate::server::simple_query_within(conn, &sql, limit).await {
                    Ok(answer) if answer.error.is_none() => {}
                    _ => return false,
                }
            }
            conn.settings = settings.clone();
            conn.settings_signature = signature;
        }
        true
    }

    /// Writes, reads and routes until the driver owes nothing and has left the list (true)
    /// or its server failed (false).
    async fn relay(&mut self, conn: &mut ServerConn, target: &CancelTarget) -> bool {
        loop {
            self.forward_cancel(target);
            if self.doubtful {
                self.retire();
                for e in std::mem::take(&mut self.queue) {
                    self.finish(e, Piece::Failed(Failure::NotWritten)).await;
                }
            }
            // One batch at a time: what queued while a batch ran goes out in one write once
            // it is answered. A statement that runs long so has nothing written behind it
            // (a cancel for it can go at once) once its own batch is answered.
            if self.inflight.is_empty() && self.delivering.is_none() && !self.doubtful {
                while let Some(e) = self.queue.pop_front() {
                    self.sout.extend_from_slice(&e.query);
                    self.inflight.push_back(e);
                }
            }
            if self.queue.is_empty() && self.inflight.is_empty() && self.delivering.is_none() {
                if !self.retired && self.pool.pipelines.retire(self.id, true) {
                    self.retired = true;
                    self.submissions_open = false;
                }
                if self.retired && !self.submissions_open {
                    return true;
                }
            }
            match poll_fn(|cx| self.poll_event(conn, cx)).await {
                Event::Read => {
                    if !self.route(conn).await {
                        return false;
                    }
                }
                Event::Lost => {
                    // What arrived before the end still belongs to its statement.
                    self.route(conn).await;
                    return false;
                }
                Event::Submitted(e) => self.queue.push_back(e),
                Event::SubmissionsClosed => self.submissions_open = false,
                Event::Cancel(id) => self.on_cancel(id).await,
                Event::Delivered(ok) => {
                    self.delivering = None;
                    self.doubtful |= !ok;
                }
            }
        }
    }

    fn poll_event(&mut self, conn: &mut ServerConn, cx: &mut Context<'_>) -> Poll<Event> {
        if let Poll::Ready(Err(_)) = poll_write_all(&mut conn.stream, cx, &mut self.sout) {
            return Poll::Ready(Event::Lost);
        }
        if conn.rbuf.capacity() - conn.rbuf.len() < 4096 {
            conn.rbuf.reserve(16 * 1024);
        }
        if conn.rbuf.len() < READ_CHUNK {
            match poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.rbuf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Event::Lost),
                Poll::Ready(Ok(_)) => return Poll::Ready(Event::Read),
                Poll::Pending => {}
            }
        }
        if let Some(d) = self.delivering.as_mut() {
            if let Poll::Ready(ok) = d.as_mut().poll(cx) {
                return Poll::Ready(Event::Delivered(ok));
            }
        }
        if let Poll::Ready(Some(id)) = self.cancels.poll_recv(cx) {
            return Poll::Ready(Event::Cancel(id));
        }
        if self.submissions_open {
            match self.submissions.poll_recv(cx) {
                Poll::Ready(Some(e)) => return Poll::Ready(Event::Submitted(e)),
                Poll::Ready(None) => return Poll::Ready(Event::SubmissionsClosed),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// Passes what the server sent to the statements it answers, cutting at each
    /// ReadyForQuery. False on a malformed message (the server is not trusted further).
    async fn route(&mut self, conn: &mut ServerConn) -> bool {
        loop {
            let (pos, complete) = match scan(&conn.rbuf, &mut self.left) {
                Ok(cut) => cut,
                Err(()) => return false,
            };
            if let (Some(head), Some(f)) = (self.inflight.front_mut(), complete.fatal) {
                head.fatal |= f;
            }
            if pos == 0 {
                return true;
            }
            let chunk = conn.rbuf.split_to(pos).freeze();
            // Bytes with no statement outstanding (a notice, or the FATAL of a server
            // ending while idle) have no one to go to.
            if let Some(head) = self.inflight.front_mut() {
                if let Some(code) = &complete.sqlstate {
                    self.pool.stats.traffic.error(code);
                }
                let cut = self.left > 0;
                if give(head, Piece::Reply(chunk)).await {
                    head.cut = cut;
                }
            }
            if complete.ready {
                if let Some(head) = self.inflight.pop_front() {
                    self.pool.stats.pipelined.fetch_add(1, Ordering::Relaxed);
                    self.finish(head, Piece::Done).await;
                }
            }
        }
    }

    /// Answers a cancel asked for statement `id` (see the module docs).
    async fn on_cancel(&mut self, id: u64) {
        if let Some(i) = self.queue.iter().position(|e| e.id == id) {
            let Some(mut e) = self.queue.remove(i) else {
                return;
            };
            let mut out = BytesMut::new();
            be::error_response(
                &ErrorFields::error(
                    sqlstate::QUERY_CANCELED,
                    "canceling statement due to user request",
                ),
                &mut out,
            );
            be::ready_for_query(TransactionStatus::Idle, &mut out);
            give(&mut e, Piece::Reply(out.freeze())).await;
            self.finish(e, Piece::Done).await;
        } else if self.inflight.iter().any(|e| e.id == id) && !self.asked.contains(&id) {
            self.asked.push(id);
        }
    }

    /// Forwards an asked cancel once its statement is the only one outstanding on the
    /// server, everything before it answered and nothing written behind it.
    fn forward_cancel(&mut self, target: &CancelTarget) {
        let inflight = &self.inflight;
        self.asked.retain(|id| inflight.iter().any(|e| e.id == *id));
        if self.delivering.is_some() || self.inflight.len() != 1 || !self.sout.is_empty() {
            return;
        }
        let only = self.inflight[0].id;
        if let Some(i) = self.asked.iter().position(|id| *id == only) {
            self.asked.swap_remove(i);
            let target = target.clone();
            self.delivering = Some(Box::pin(async move {
                tokio::time::sleep(CANCEL_SETTLE).await;
                cancel::forward_to(&target).await
            }));
        }
    }

    /// Stops taking statements: out of the list, its channel drained into the queue.
    fn retire(&mut self) {
        if !self.retired {
            self.pool.pipelines.retire(self.id, false);
            self.retired = true;
        }
    }

    /// A statement is finished with `last`.
    async fn finish(&mut self, mut e: Entry, last: Piece) {
        give(&mut e, last).await;
        self.load.fetch_sub(1, Ordering::Relaxed);
        if !self.retired && self.pool.has_waiters() {
            // Other clients wait for a server: this one goes back once it owes nothing.
            self.retire();
        }
    }

    /// The driver stops (its server failed, or it had none): every statement it still has
    /// is failed, those written as lost, the rest as not written.
    fn fail_all(&mut self) {
        self.retire();
        self.submissions.close();
        while let Ok(e) = self.submissions.try_recv() {
            self.queue.push_back(e);
        }
        let lost = self.inflight.drain(..).map(|e| {
            let (fatal, cut) = (e.fatal, e.cut);
            (e, Failure::Lost { fatal, cut })
        });
        let not_written = self.queue.drain(..).map(|e| (e, Failure::NotWritten));
        let failed: Vec<_> = lost.chain(not_written).collect();
        for (e, failure) in failed {
            self.load.fetch_sub(1, Ordering::Relaxed);
            if !e.abandoned {
                send_last(e.to, Piece::Failed(failure));
            }
        }
    }
}

/// Sends `piece` to a statement's session, waiting up to [`STALL_LIMIT`] when it has
/// [`REPLY_PIECES`] not taken; past that the statement is abandoned and its session told.
/// Returns whether the session got it.
async fn give(e: &mut Entry, piece: Piece) -> bool {
    if e.abandoned {
        return false;
    }
    match e.to.try_send(piece) {
        Ok(()) => return true,
        Err(mpsc::error::TrySendError::Closed(_)) => e.abandoned = true,
        Err(mpsc::error::TrySendError::Full(piece)) => {
            match tokio::time::timeout(STALL_LIMIT, e.to.send(piece)).await {
                Ok(Ok(())) => return true,
                Ok(Err(_)) => e.abandoned = true,
                Err(_) => {
                    e.abandoned = true;
                    send_last(e.to.clone(), Piece::Failed(Failure::Unread { cut: e.cut }));
                }
            }
        }
    }
    false
}

/// Sends a statement's last piece without waiting for room: it is queued behind the
/// pieces its session has yet to take.
fn send_last(to: mpsc::Sender<Piece>, piece: Piece) {
    if let Err(mpsc::error::TrySendError::Full(piece)) = to.try_send(piece) {
        tokio::spawn(async move {
            let _ = to.send(piece).await;
        });
    }
}

/// What a scan of the server's bytes found at its cut.
#[derive(Debug, Default, PartialEq, Eq)]
struct Cut {
    /// A ReadyForQuery ends the bytes up to the cut.
    ready: bool,
    /// An ErrorResponse before the cut said FATAL (`Some(true)`) or not.
    fatal: Option<bool>,
    /// The SQLSTATE of an ErrorResponse before the cut (a reply holds at most one), for
    /// the pool's error counts.
    sqlstate: Option<String>,
}

/// How many bytes of `buf` belong to the reply under way: up to and including the first
/// ReadyForQuery, or all the whole messages and the part of a message passing through
/// (`left`: its bytes still to come). ReadyForQuery and ErrorResponse are taken only
/// whole; everything else passes in pieces. Err for a malformed message length.
fn scan(buf: &[u8], left: &mut usize) -> Result<(usize, Cut), ()> {
    let mut pos = 0;
    let mut cut = Cut::default();
    while pos < buf.len() {
        if *left > 0 {
            let n = (*left).min(buf.len() - pos);
            pos += n;
            *left -= n;
            continue;
        }
        let Some(header) = buf.get(pos..pos + 5) else {
            break;
        };
        let tag = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len < 4 {
            return Err(());
        }
        let whole = 1 + len;
        if tag == b'Z' || tag == b'E' {
            let Some(message) = buf.get(pos..pos + whole) else {
                break;
            };
            if tag == b'E' {
                let fields = parse_error_fields(&message[5..]).ok();
                let fatal = fields
                    .as_ref()
                    .is_some_and(|f| matches!(f.severity, Severity::Fatal | Severity::Panic));
                cut.fatal = Some(cut.fatal.unwrap_or(false) || fatal);
                cut.sqlstate = fields.map(|f| f.code);
            }
            pos += whole;
            if tag == b'Z' {
                cut.ready = true;
                break;
            }
            continue;
        }
        *left = whole;
    }
    Ok((pos, cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(tag);
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
    }

    #[test]
    fn scan_cuts_at_each_ready_for_query() {
        let mut b = Vec::new();
        msg(b'C', b"SELECT 1\0", &mut b);
        msg(b'Z', b"I", &mut b);
        let first = b.len();
        msg(b'D', b"\0\0", &mut b);
        msg(b'Z', b"I", &mut b);
        let mut left = 0;
        let (pos, cut) = scan(&b, &mut left).unwrap();
        assert_eq!((pos, cut.ready, left), (first, true, 0));
        let (pos, cut) = scan(&b[first..], &mut left).unwrap();
        assert_eq!((pos, cut.ready), (b.len() - first, true));
    }

    #[test]
    fn scan_passes_partial_rows_and_waits_for_whole_ready_for_query() {
        let mut b = Vec::new();
        msg(b'D', &[7u8; 100], &mut b);
        msg(b'Z', b"I", &mut b);
        let mut left = 0;
        // Half of the row: passed at once, the rest expected.
        let (pos, cut) = scan(&b[..50], &mut left).unwrap();
        assert_eq!((pos, cut.ready, left), (50, false, 105 - 50));
        // The rest of the row and half the ReadyForQuery: only the row passes.
        let (pos, cut) = scan(&b[50..108], &mut left).unwrap();
        assert_eq!((pos, cut.ready, left), (55, false, 0));
        let (pos, cut) = scan(&b[105..], &mut left).unwrap();
        assert_eq!((pos, cut.ready), (6, true));
    }

    #[test]
    fn scan_sees_fatal_errors_and_refuses_bad_lengths() {
        let mut b = Vec::new();
        msg(b'E', b"SFATAL\0VFATAL\0C57P01\0Mterminating\0\0", &mut b);
        let mut left = 0;
        let (pos, cut) = scan(&b, &mut left).unwrap();
        assert_eq!((pos, cut.fatal, cut.ready), (b.len(), Some(true), false));
        let mut e = Vec::new();
        msg(b'E', b"SERROR\0VERROR\0C22012\0Mdivision by zero\0\0", &mut e);
        let (_, cut) = scan(&e, &mut left).unwrap();
        assert_eq!((cut.fatal, cut.sqlstate.as_deref()), (Some(false), Some("22012")));
        assert!(scan(&[b'D', 0, 0, 0, 2], &mut 0).is_err());
    }
}
