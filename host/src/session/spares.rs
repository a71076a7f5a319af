//! Spare allocations, kept per worker thread, so that an idle client holds none.
//!
//! A session needs three buffers (client input, output to the client, output to the
//! server) and two queues (the replies it expects, the client frames it may replay) while it
//! has work, and none of them while it waits for its client's next message. Thousands of
//! idle clients would otherwise each pin some kilobytes of empty buffer; allocating afresh
//! for every transaction would cost a `malloc` and `free` each instead. So a session that
//! goes quiet parks its empty buffers and queues here as one [`Parked`] set, and takes a set
//! back when its client speaks again: one push and one pop on a thread-local list per
//! transaction.
//!
//! With few clients that round trip buys nothing worth its cost (about 550 instructions a
//! transaction, 5 % of the proxy's, under callgrind at 1 and 16 clients), so while the
//! proxy has at most [`KEEP_OWN_UP_TO_CLIENTS`] clients a quiet session keeps its set,
//! trimmed as a parked one would be.

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::replies::Expect;

/// Free space of the input buffer a session takes back.
pub(super) const CAPACITY: usize = 4 * 1024;
/// Larger buffers (a big COPY or result went through them) are freed, not kept.
const KEEP_UP_TO: usize = 32 * 1024;
/// Longer queues (a long pipeline went through them) are freed, not kept.
const KEEP_QUEUE_UP_TO: usize = 64;
/// Bytes a thread keeps in spare sets (the sum of their buffers' and queues' capacities):
/// at the usual 5 KiB a set, about two hundred sets. Sessions park and take sets in bursts
/// as big as the number of clients a pool serves at once (a thousand clients queued for 20
/// servers wake in batches of a hundred and more); a cap of a few dozen sets made such a
/// burst free its sets and the next one allocate and grow them again, some 1,000
/// instructions per transaction at 1,000 clients. Counted in bytes, not sets, so a few sets
/// whose buffers grew cannot hold more than this.
const KEEP_BYTES: usize = 1024 * 1024;

/// With at most this many clients (all of the proxy's, logging in or not), a quiet session
/// keeps its set (trimmed as [`park`] trims) instead of parking it. A session that kept
/// its set while the proxy had few clients keeps it while it stays idle, however many
/// clients come later: at most this many sets, about 640 KiB, 0.06 KiB per client of
/// 10,000 idle ones (256 measured 0.03 KiB more per client than parking at 10,000).
pub(super) const KEEP_OWN_UP_TO_CLIENTS: usize = 128;

/// What a session holds only while it has work, all empty.
#[derive(Default)]
pub(super) struct Parked {
    pub cbuf: BytesMut,
    pub cout: BytesMut,
    pub sout: BytesMut,
    pub expect: VecDeque<Expect>,
    pub frames: Vec<Bytes>,
}

impl Parked {
    /// What the set's allocations weigh, as counted against [`KEEP_BYTES`].
    fn bytes(&self) -> usize {
        self.cbuf.capacity()
            + self.cout.capacity()
            + self.sout.capacity()
            + self.expect.capacity() * std::mem::size_of::<Expect>()
            + self.frames.capacity() * std::mem::size_of::<Bytes>()
    }
}

/// A thread's spare sets and what they weigh.
struct Spares {
    sets: Vec<Parked>,
    bytes: usize,
}

thread_local! {
    static PARKED: RefCell<Spares> = const { RefCell::new(Spares { sets: Vec::new(), bytes: 0 }) };
}

/// Keeps `set` (all of it empty) for the next session on this thread that has work, minus
/// what grew too large to be worth keeping; drops it if the thread has enough spares.
pub(super) fn park(mut set: Parked) {
    for buf in [&mut set.cbuf, &mut set.cout, &mut set.sout] {
        trim_buffer(buf);
    }
    debug_assert!(set.expect.is_empty() && set.frames.is_empty());
    if !queue_worth_keeping(set.expect.capacity()) {
        set.expect = VecDeque::new();
    }
    if !queue_worth_keeping(set.frames.capacity()) {
        set.frames = Vec::new();
    }
    let bytes = set.bytes();
    PARKED.with(|s| {
        let mut s = s.borrow_mut();
        if s.bytes + bytes <= KEEP_BYTES {
            s.bytes += bytes;
            s.sets.push(set);
        }
    });
}

/// Frees an empty buffer that grew too large to be worth keeping (a big COPY or result
/// went through it).
pub(super) fn trim_buffer(buf: &mut BytesMut) {
    debug_assert!(buf.is_empty());
    // A buffer written out to its end reports no capacity but still owns its allocation:
    // moving its start back (no copy, no allocation) keeps that allocation rather than
    // freeing it here and allocating again for the next transaction.
    let _kept = buf.try_reclaim(1);
    if buf.capacity() > KEEP_UP_TO {
        *buf = BytesMut::new();
    }
}

/// Whether an empty queue's allocation is worth keeping (no long pipeline went through it).
pub(super) fn queue_worth_keeping(capacity: usize) -> bool {
    capacity <= KEEP_QUEUE_UP_TO
}

/// A parked set, or a new one; its input buffer has at least [`CAPACITY`] bytes free.
/// The output buffers and queues start from what was parked or from nothing (they grow to
/// what is written), so a burst of sessions waking at once allocates only what it needs.
pub(super) fn take() -> Parked {
    let mut set = PARKED
        .with(|s| {
            let mut s = s.borrow_mut();
            let set = s.sets.pop()?;
            s.bytes -= set.bytes();
            Some(set)
        })
        .unwrap_or_default();
    // Reserving on an empty unique buffer reclaims its space in place.
    set.cbuf.reserve(CAPACITY);
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clear_spares() {
        PARKED.with(|s| {
            let mut s = s.borrow_mut();
            s.sets.clear();
            s.bytes = 0;
        });
    }

    #[test]
    fn a_parked_set_comes_back_whole() {
        clear_spares();
        let mut set = take();
        assert!(set.cbuf.capacity() >= CAPACITY);
        set.cout.extend_from_slice(b"hello");
        set.cout.clear();
        set.expect.push_back(Expect::Sync);
        set.expect.clear();
        set.frames.push(Bytes::from_static(b"Q"));
        set.frames.clear();
        park(set);
        let again = take();
        assert!(again.cbuf.capacity() >= CAPACITY);
        assert!(again.cout.capacity() >= 5);
        assert!(again.expect.capacity() >= 1);
        assert!(again.frames.capacity() >= 1);
    }

    #[test]
    fn a_buffer_written_to_its_end_keeps_its_allocation() {
        clear_spares();
        let mut cout = BytesMut::new();
        cout.extend_from_slice(&[7; 100]);
        let _ = cout.split_to(cout.len());
        assert_eq!(cout.capacity(), 0);
        park(Parked {
            cout,
            ..Parked::default()
        });
        assert!(take().cout.capacity() >= 100);
    }

    /// A thread keeps sets up to [`KEEP_BYTES`] and frees the rest; taking one makes room.
    #[test]
    fn spares_are_kept_up_to_their_bytes() {
        clear_spares();
        let set = || Parked {
            cbuf: BytesMut::with_capacity(CAPACITY),
            ..Parked::default()
        };
        let fits = KEEP_BYTES / set().bytes();
        assert!(fits >= 200, "{fits} sets of {} bytes", set().bytes());
        for _ in 0..fits + 10 {
            park(set());
        }
        let kept = || PARKED.with(|s| (s.borrow().sets.len(), s.borrow().bytes));
        assert_eq!(kept(), (fits, fits * set().bytes()));
        let _taken = take();
        park(set());
        park(set());
        assert_eq!(kept().0, fits);
    }

    #[test]
    fn large_buffers_and_long_queues_are_freed() {
        clear_spares();
        park(Parked {
            sout: BytesMut::with_capacity(KEEP_UP_TO * 2),
            frames: Vec::with_capacity(KEEP_QUEUE_UP_TO * 2),
            ..Parked::default()
        });
        let set = take();
        assert_eq!(set.sout.capacity(), 0);
        assert_eq!(set.frames.capacity(), 0);
    }
}
