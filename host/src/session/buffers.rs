//! Spare I/O buffers, kept per worker thread, so that an idle client holds none.
//!
//! A session needs three buffers while it has work (client input, output to the client,
//! output to the server) and none while it waits for its client's next message. Thousands
//! of idle clients would otherwise each pin some kilobytes of empty buffer; allocating
//! afresh for every transaction would cost a `malloc` and `free` per buffer instead. So a
//! session that goes quiet parks its empty buffers here, and takes buffers back from here
//! when its client speaks again: a push and a pop on a thread-local list.

use std::cell::RefCell;

use bytes::BytesMut;

/// Capacity of a new buffer.
pub(super) const CAPACITY: usize = 4 * 1024;
/// Larger buffers (a big COPY or result went through them) are freed, not kept.
const KEEP_UP_TO: usize = 32 * 1024;
/// Spare buffers kept per thread (three per busy session): at most 1 MiB per thread.
const SPARES: usize = 32;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
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
    SPARE.with(|s| s.borrow_mut().pop())
}

/// Parks `buf` (which the caller has emptied) as a spare, or frees it; leaves an empty
/// buffer with no allocation in its place.
pub(super) fn park(buf: &mut BytesMut) {
    debug_assert!(buf.is_empty());
    if buf.capacity() == 0 {
        return;
    }
    let buf = std::mem::take(buf);
    if buf.capacity() > KEEP_UP_TO {
        return;
    }
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARES {
            s.push(buf);
        }
    });
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
        SPARE.with(|s| assert!(s.borrow().iter().all(|b| b.capacity() <= KEEP_UP_TO)));
    }
}
