//! The listener's two shutdown signals as sessions watch them. A session checks them each
//! time it waits on its sockets, twice a transaction or more, so the check must cost next to
//! nothing: a `watch` channel registered and unregistered a waiter under a mutex at every
//! wait (about 1,200 instructions a transaction, `scripts/bench --plugin-tax`). Here each
//! session registers once, at its start, a [`StopWatch`] holding an [`AtomicWaker`] (one
//! allocation per session, shared by the session's parts that wait); a wait stores the
//! task's waker in it (two atomic operations when the waker is unchanged, as it is for a
//! task) and reads two flags. Raising a signal, which happens once in a process's life,
//! sets the flag and wakes every registered session.
//!
//! Each watch also has a flag of its own, raised by the admin console's `KILL db` for the
//! database's sessions ([`StopWatch::kill`]): the session ends as at `Stop::close`. An
//! admin's `SHUTDOWN [IMMEDIATE]` ([`Shutdown`]) reaches the listeners, which raise the two
//! signals as for SIGTERM. A takeover (`switchyard --takeover`, [`Shutdown::Takeover`])
//! raises the shutdown signal with the hand-over flag set ([`Stop::hand_over`]): a session
//! at its next point between transactions hands its client to the new process if it can.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

/// The two signals, raised by the listener.
#[derive(Default)]
pub struct Stop {
    /// The proxy stopped accepting clients: a session ends at its next transaction boundary.
    shutdown: AtomicBool,
    /// `shutdown_timeout` ran out: a session ends now.
    closing: AtomicBool,
    /// Set before `shutdown` when another process takes over: a session between
    /// transactions hands its client over instead of ending, where it can.
    handing_over: AtomicBool,
    sessions: Mutex<Watchers>,
}

#[derive(Default)]
struct Watchers {
    next: u64,
    /// Weak: a session's watch lives as long as the session, and unregisters when dropped.
    wakers: HashMap<u64, Weak<StopWatch>>,
}

/// An admin's request to stop the proxy (`SHUTDOWN`, `SHUTDOWN IMMEDIATE`), which the
/// listeners carry out as they do SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// As SIGTERM: stop accepting, let transactions finish within `shutdown_timeout`.
    Graceful,
    /// As `shutdown_timeout` running out at once: every client gets 57P01 now, open
    /// transactions are rolled back.
    Immediate,
    /// A new process took the listening sockets over (`switchyard --takeover`): stop
    /// accepting, hand each client over at its next point between transactions (or tell
    /// it to reconnect), within `shutdown_timeout`.
    Takeover,
}

/// What a session's wait was woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The proxy is shutting down and the session is between transactions.
    Shutdown,
    /// `shutdown_timeout` ran out.
    Closing,
    /// An admin's `KILL` of the session's database ([`StopWatch::kill`]).
    Killed,
}

impl Stop {
    fn watchers(&self) -> std::sync::MutexGuard<'_, Watchers> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts watching the signals for one session.
    pub fn watch(self: &Arc<Self>) -> Arc<StopWatch> {
        let mut w = self.watchers();
        let key = w.next;
        w.next += 1;
        let watch = Arc::new(StopWatch {
            stop: self.clone(),
            key,
            waker: AtomicWaker::new(),
            killed: AtomicBool::new(false),
        });
        w.wakers.insert(key, Arc::downgrade(&watch));
        watch
    }

    /// The proxy stops accepting clients: every session ends at its next transaction
    /// boundary, and one waiting for its client between transactions ends now.
    pub fn shut_down(&self) {
        self.raise(&self.shutdown);
    }

    /// Another process took over: as [`Stop::shut_down`], but a session between
    /// transactions hands its client over where it can ([`StopWatch::handing_over`]).
    pub fn hand_over(&self) {
        self.handing_over.store(true, Ordering::SeqCst);
        self.shut_down();
    }

    /// `shutdown_timeout` ran out: every session ends now.
    pub fn close(&self) {
        self.raise(&self.closing);
    }

    fn raise(&self, flag: &AtomicBool) {
        // Set before the wake: a session that registers after the wake sees the flag.
        flag.store(true, Ordering::SeqCst);
        // Collected first: the last reference to a watch may be one taken here, and its
        // drop takes the lock to unregister.
        let watches: Vec<_> = self
            .watchers()
            .wakers
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for watch in watches {
            watch.waker.wake();
        }
    }
}

/// One session's view of the signals; stops watching when dropped.
pub struct StopWatch {
    stop: Arc<Stop>,
    key: u64,
    waker: AtomicWaker,
    /// This session alone ends now (`KILL`).
    killed: AtomicBool,
}

impl StopWatch {
    /// The proxy is shutting down (ends the session at its next transaction boundary).
    #[inline]
    pub fn shutting_down(&self) -> bool {
        self.stop.shutdown.load(Ordering::SeqCst)
    }

    /// The shutdown is a takeover ([`Stop::hand_over`]): the client goes to the new
    /// process rather than being ended, where it can.
    pub fn handing_over(&self) -> bool {
        self.stop.handing_over.load(Ordering::SeqCst)
    }

    /// `shutdown_timeout` ran out, or the session was killed: it ends now.
    pub fn closing(&self) -> bool {
        self.ending().is_some()
    }

    /// Why the session must end now, if it must: [`Signal::Closing`] or [`Signal::Killed`].
    pub fn ending(&self) -> Option<Signal> {
        if self.stop.closing.load(Ordering::SeqCst) {
            Some(Signal::Closing)
        } else if self.killed.load(Ordering::Relaxed) {
            Some(Signal::Killed)
        } else {
            None
        }
    }

    /// Ends this session now, as `shutdown_timeout` running out would (`KILL`).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Ready when a signal concerns the session's wait: `Closing` always, `Shutdown` only
    /// when `between_transactions`. Registers the task to be woken by either.
    pub fn poll(&self, cx: &mut Context<'_>, between_transactions: bool) -> Poll<Signal> {
        self.waker.register(cx.waker());
        if let Some(signal) = self.ending() {
            Poll::Ready(signal)
        } else if between_transactions && self.shutting_down() {
            Poll::Ready(Signal::Shutdown)
        } else {
            Poll::Pending
        }
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        self.stop.watchers().wakers.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn a_waiting_session_is_woken_by_each_signal() {
        let stop = Arc::new(Stop::default());
        let watch = stop.watch();
        let waiting = tokio::spawn(async move {
            let shutdown = poll_fn(|cx| watch.poll(cx, true)).await;
            let closing = poll_fn(|cx| watch.poll(cx, false)).await;
            (shutdown, closing)
        });
        tokio::task::yield_now().await;
        stop.shut_down();
        tokio::task::yield_now().await;
        stop.close();
        assert_eq!(waiting.await.unwrap(), (Signal::Shutdown, Signal::Closing));
        assert!(
            stop.watchers().wakers.is_empty(),
            "a dropped watch is unregistered"
        );
    }

    #[test]
    fn a_session_in_a_transaction_ignores_shutdown_but_not_closing() {
        let stop = Arc::new(Stop::default());
        let watch = stop.watch();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        stop.shut_down();
        assert!(watch.shutting_down());
        assert_eq!(watch.poll(&mut cx, false), Poll::Pending);
        stop.close();
        assert_eq!(watch.poll(&mut cx, false), Poll::Ready(Signal::Closing));
    }

    /// A killed watch is woken with `Killed` (and counts as closing) at any point of its
    /// session; another watch of the same listener sees nothing.
    #[test]
    fn a_killed_session_ends_alone() {
        let stop = Arc::new(Stop::default());
        let (killed, other) = (stop.watch(), stop.watch());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        killed.kill();
        assert_eq!(killed.poll(&mut cx, false), Poll::Ready(Signal::Killed));
        assert!(killed.closing());
        assert_eq!(other.poll(&mut cx, true), Poll::Pending);
        assert!(!other.closing());
    }
}
