//! Spare allocations, kept per worker thread, so that an idle client holds none.
//!
//! A session needs three buffers (client input, output to the client, output to the
//! server) and two queues (the replies it expects, the client frames it may replay) while it
//! has work, and none of them while it waits for its client's next message. Thousands of
//! idle clients would otherwise each pin some kilobytes of empty buffer; allocating afresh
//! for every transaction would cost a `malloc` and `free` each instead. So a session that
//! goes quiet parks its empty buffers and queues here, and takes them back when its client
//! speaks again: a push and a pop on a thread-local list.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::thread::LocalKey;

use bytes::{Bytes, BytesMut};

use super::backend::Expect;

/// Capacity of a new buffer.
pub(super) const CAPACITY: usize = 4 * 1024;
/// Larger buffers (a big COPY or result went through them) are freed, not kept.
const KEEP_UP_TO: usize = 32 * 1024;
/// Longer queues (a long pipeline went through them) are freed, not kept.
const KEEP_QUEUE_UP_TO: usize = 64;
/// Spares of each kind kept per thread (three buffers per busy session): at most 1 MiB of
/// buffers per thread.
const SPARES: usize = 32;

type List<T> = RefCell<Vec<T>>;

thread_local! {
    static BUFFERS: List<BytesMut> = const { RefCell::new(Vec::new()) };
    static EXPECTS: List<VecDeque<Expect>> = const { RefCell::new(Vec::new()) };
    static FRAMES: List<Vec<Bytes>> = const { RefCell::new(Vec::new()) };
}

fn pop<T: 'static>(list: &'static LocalKey<List<T>>) -> Option<T> {
    list.with(|s| s.borrow_mut().pop())
}

/// Keeps `item` (empty, with an allocation worth keeping) as a spare, or drops it.
fn push<T: 'static>(list: &'static LocalKey<List<T>>, item: T) {
    list.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARES {
            s.push(item);
        }
    });
}

/// A buffer with at least [`CAPACITY`] bytes free: a spare, or a new one.
pub(super) fn take() -> BytesMut {
    let mut buf = take_spare().unwrap_or_else(|| BytesMut::with_capacity(CAPACITY));
    // A spare may have been advanced; reserving on an empty unique buffer reclaims the
    // space in place.
    buf.reserve(CAPACITY);
    buf
}

/// A spare buffer if there is one. Output buffers start from this or from nothing (they
/// grow to what is written), so a burst of sessions waking at once allocates only what
/// their messages need.
pub(super) fn take_spare() -> Option<BytesMut> {
    pop(&BUFFERS)
}

/// Parks `buf` (which the caller has emptied) as a spare, or frees it; leaves an empty
/// buffer with no allocation in its place.
pub(super) fn park(buf: &mut BytesMut) {
    debug_assert!(buf.is_empty());
    let buf = std::mem::take(buf);
    if buf.capacity() != 0 && buf.capacity() <= KEEP_UP_TO {
        push(&BUFFERS, buf);
    }
}

/// Parks an empty queue of expected replies; leaves one with no allocation in its place.
pub(super) fn park_expects(queue: &mut VecDeque<Expect>) {
    debug_assert!(queue.is_empty());
    let queue = std::mem::take(queue);
    if queue.capacity() != 0 && queue.capacity() <= KEEP_QUEUE_UP_TO {
        push(&EXPECTS, queue);
    }
}

/// A spare queue of expected replies, or a new empty one.
pub(super) fn take_expects() -> VecDeque<Expect> {
    pop(&EXPECTS).unwrap_or_default()
}

/// Parks an empty list of client frames; leaves one with no allocation in its place.
pub(super) fn park_frames(frames: &mut Vec<Bytes>) {
    debug_assert!(frames.is_empty());
    let frames = std::mem::take(frames);
    if frames.capacity() != 0 && frames.capacity() <= KEEP_QUEUE_UP_TO {
        push(&FRAMES, frames);
    }
}

/// A spare list of client frames, or a new empty one.
pub(super) fn take_frames() -> Vec<Bytes> {
    pop(&FRAMES).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_buffers_come_back_and_the_session_keeps_none() {
        let mut b = take();
        assert!(b.capacity() >= CAPACITY);
        b.extend_from_slice(b"hello");
        b.clear();
        park(&mut b);
        assert_eq!(b.capacity(), 0);
        let again = take();
        assert!(again.capacity() >= CAPACITY);
    }

    #[test]
    fn large_buffers_are_freed() {
        let mut b = BytesMut::with_capacity(KEEP_UP_TO * 2);
        park(&mut b);
        assert_eq!(b.capacity(), 0);
        BUFFERS.with(|s| assert!(s.borrow().iter().all(|b| b.capacity() <= KEEP_UP_TO)));
    }

    #[test]
    fn parked_queues_come_back_and_long_ones_are_freed() {
        let mut q = VecDeque::new();
        q.push_back(Expect::Sync);
        q.clear();
        let cap = q.capacity();
        park_expects(&mut q);
        assert_eq!(q.capacity(), 0);
        assert_eq!(take_expects().capacity(), cap);

        let mut f = Vec::with_capacity(KEEP_QUEUE_UP_TO * 2);
        park_frames(&mut f);
        assert_eq!(f.capacity(), 0);
        FRAMES.with(|s| assert!(s.borrow().iter().all(|f| f.capacity() <= KEEP_QUEUE_UP_TO)));
    }
}
