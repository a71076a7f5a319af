//! The server side of a session: the server it holds, if any, and everything that exists
//! only because of that server (the replies it owes, the batch open on it, its COPY state,
//! the bytes not yet written to it, the messages passing through to and from it in pieces,
//! what is known about its reuse). One place answers whether the server can be let go
//! ([`ServerSide::owes_nothing`]) and one place lets it go ([`ServerSide::take`]), so what is
//! forgotten with a server is written once.

use bytes::BytesMut;

use super::large;
use super::replies::Replies;
use crate::pool::Checkout;
use crate::roster::RELAXED;
use crate::server::ServerConn;

#[derive(Default)]
pub(super) struct ServerSide {
    /// The server, while the session holds one.
    pub(super) checkout: Option<Checkout>,
    /// The replies the server owes, the batch open on it, its COPY state.
    pub(super) replies: Replies,
    /// Bytes for the server, not yet written.
    pub(super) sout: BytesMut,
    /// The client message passing through to the server in pieces, if any (`large`). It is
    /// kept when the server goes: the rest of the message is still read from the client,
    /// and dropped.
    pub(super) inflow: large::Passing,
    /// The server message passing through to the client in pieces, if any.
    pub(super) outflow: large::Passing,
    /// The pool-mode decision at the last boundary was to release the server.
    pub(super) release_ready: bool,
    /// SQL too large to scan for session commands (a streamed Query or Parse) ran on this
    /// server: what it did to the server's session is unknown, so the server is reset
    /// (`DISCARD ALL`) before anyone reuses it, and this client's own settings are
    /// replayed on its next server (a `SET` inside such SQL is not carried).
    pub(super) unscanned: bool,
    /// The server sent the client a FATAL error: when its connection ends, the client has
    /// heard why from the server itself, and the session ends without an error of its own.
    pub(super) ended_with_fatal: bool,
}

impl ServerSide {
    /// A server is held.
    #[inline]
    pub(super) fn held(&self) -> bool {
        self.checkout.is_some()
    }

    /// The held server's connection.
    #[inline]
    pub(super) fn conn(&mut self) -> Option<&mut ServerConn> {
        self.checkout.as_mut().map(Checkout::conn)
    }

    /// Nothing was sent that the server has not answered, no batch is open on it, and
    /// nothing is waiting or half-way to go to it.
    #[inline]
    pub(super) fn owes_nothing(&self) -> bool {
        self.replies.owes_nothing() && self.sout.is_empty() && !self.inflow.active()
    }

    /// The server can go back to the pool: the pool-mode decision at the last boundary
    /// said so, and since then nothing was sent, owed or half-sent.
    #[inline]
    pub(super) fn releasable(&self) -> bool {
        self.held() && self.release_ready && self.owes_nothing()
    }

    /// Lets the server go (to be given back, reset or closed by the caller; dropping the
    /// checkout closes it) and forgets everything that was about it: what it owed, the
    /// bytes not yet written to it, the rest of a message coming from it, the pool-mode
    /// decision and what ran on it. The only way a session parts with a server.
    pub(super) fn take(&mut self) -> Option<Checkout> {
        self.replies.clear();
        self.sout.clear();
        self.outflow = large::Passing::default();
        self.release_ready = false;
        self.unscanned = false;
        self.ended_with_fatal = false;
        let mut checkout = self.checkout.take()?;
        let conn = checkout.conn();
        if let Some(listed) = &conn.listed {
            listed.client.store(0, RELAXED);
            listed.prepared.store(conn.statements.len(), RELAXED);
        }
        Some(checkout)
    }
}
