//! Which worker thread the caller runs on (`threading = "per-core"`): each worker has its
//! own tokio runtime, and a socket opened there is registered with that runtime's reactor,
//! so the pools keep a server in the idle list of the worker that opened it.

use std::cell::Cell;

thread_local! {
    /// This thread's worker index; 0 on threads that are not per-core workers.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker index of the calling thread (0 unless per-core).
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// Marks the calling thread as worker `index`, for the rest of its life.
pub fn set_current(index: usize) {
    INDEX.with(|i| i.set(index));
}
