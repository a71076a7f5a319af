//! The slots of one node's share of a pool (a slot per server it may lend at once) and the
//! queue of checkouts waiting for one, written here instead of taking tokio's semaphore so
//! that a slot freed on one worker thread can go to a waiter on the same thread.
//!
//! With one worker list (`threading = "shared"`) the queue is strictly FIFO, as tokio's
//! semaphore was. With `threading = "per-core"` each worker thread has its own list of
//! waiters, and a freed slot goes to the oldest waiter on the worker *near* it (the thread
//! whose idle list the returned server went back to, whose reactor polls it), so the waiter
//! is woken without a wake-up across threads and then drives a server its own reactor
//! polls. A strict FIFO across threads made 0.75 to 0.89 eventfd `write`s per transaction
//! at 64 clients on a pool of 20 (docs/performance.md, "Thread per core").
//!
//! Fairness stays bounded by arrival order, not by time: every waiter gets a ticket as it
//! queues, and the near worker's oldest waiter goes first only while no waiter elsewhere
//! holds a ticket older than it by more than the clients waiting at that moment (at least
//! [`OVERTAKE`]); otherwise the oldest waiter anywhere goes first. So a waiter is never
//! overtaken by more waiters that queued after it than there are clients waiting (or 16):
//! its wait stays within about twice what strict FIFO would give it, whatever the load. A
//! bound in time would degenerate into plain FIFO whenever every wait is longer than it,
//! which is exactly when clients queue; a fixed bound is crossed by chance more often as
//! the queues grow, because the two workers' queues drift apart by about their length. And
//! a worker whose clients never free a slot locally (all servers opened on another thread)
//! still gets slots.
//!
//! Slots are handed straight to a waiter, never back to the free count while one waits,
//! so a checkout that finds no free slot cannot overtake the queue. A waiter that gives up
//! (a client that went away) takes itself out; a slot handed to it in the meantime goes to
//! the next one. Waiting allocates nothing per wait (tokio's semaphore did not either; a
//! oneshot channel per wait cost about 250 instructions per transaction at 64 clients).
//!
//! The wait's limit (`query_wait_timeout`) is kept here too: each waiter notes its
//! deadline, and one task per queue ([`expire`]) sleeps until the earliest deadline at the
//! head of a list and ends the waits that reached it. A `tokio::time::timeout` per wait
//! registered and removed a timer in the runtime's wheel for every transaction that
//! queued (about 270 instructions) and made the checkout's future larger; waiters queue in
//! arrival order with the same limit, so the oldest expires first and one timer serves
//! them all. The task wakes once per deadline of a head waiter that is still waiting, and
//! ends when it wakes to an empty queue. When `query_wait_timeout` was shortened (a reload,
//! `SET`) a later waiter may have an earlier deadline than one before it: until the lists
//! are in deadline order again, the task looks at every waiter, not only the heads.
//!
//! The number of slots changes without a restart ([`Slots::resize`]): more slots go at
//! once to the waiters, oldest first; fewer take free slots away at once, and slots lent
//! beyond the new number are retired as they come back (never taken from their holder).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

/// The fewest waiters that queued after a waiter that may be given a slot before it
/// (per-core); with more clients waiting, as many as wait.
///
/// Every hand-over to another worker costs an eventfd wake-up and (when the waiter then
/// takes a server opened there) wake-ups for that transaction's replies. At 64 clients on a
/// pool of 20 a fixed bound of 16 left 0.12 eventfd `write`s per transaction (the queues'
/// heads drift further apart than that by chance), one of 64 left 0.01 to 0.02, and so does
/// the number of waiters (about 44 there); see docs/performance.md, "Thread per core".
pub(super) const OVERTAKE: u64 = 16;

/// How long the expiry task waits for another waiter after it ended the last waits.
const LINGER: Duration = Duration::from_secs(1);

/// Why [`Slots::take`] gave no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// The slots closed (the pool was removed or shut).
    Closed,
    /// None came free within the wait's limit.
    TimedOut,
}

/// A node share's slots and waiters.
pub(super) struct Slots {
    /// Free slots. A freed slot goes to a waiter if there is one, so this is 0 while any
    /// waits.
    free: AtomicUsize,
    /// The number of slots (`pool_size`), lent or free, once those retiring are back.
    size: AtomicUsize,
    /// Slots lent beyond `size` (it shrank while they were lent): each is retired when it
    /// comes back instead of being freed. Changed only under the queue's lock.
    retiring: AtomicUsize,
    closed: AtomicBool,
    queue: Mutex<Queue>,
}

/// The waiters, one list per worker thread (one list unless per-core), oldest first, and
/// their states in a slab reused from wait to wait (a wait allocates nothing once the slab
/// has grown to the most clients that waited at once).
struct Queue {
    lists: Box<[VecDeque<Waiter>]>,
    next_ticket: u64,
    entries: Vec<Entry>,
    vacant: Vec<usize>,
    /// The expiry task, while one runs ([`expire`]).
    expiry: Option<Expiry>,
    /// A list is not in deadline order (`query_wait_timeout` was shortened while clients
    /// waited): the expiry task looks at every waiter until it is again.
    out_of_order: bool,
}

/// When the expiry task wakes next, and its waker (to wake it sooner).
struct Expiry {
    at: Instant,
    waker: Option<Waker>,
}

/// What a new waiter's deadline asks of the expiry task.
enum Watch {
    /// None runs: start one.
    Start,
    /// It sleeps past the deadline: wake it to sleep less.
    Wake(Option<Waker>),
    /// It wakes in time.
    Nothing,
}

/// A listed waiter: its ticket (arrival order), its entry in the slab, and when its wait
/// ends unless a slot comes first.
struct Waiter {
    ticket: u64,
    entry: usize,
    deadline: Instant,
}

/// One waiter's state, in the slab.
struct Entry {
    state: State,
    waker: Option<Waker>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Vacant,
    Waiting,
    /// A slot was handed to it: it is out of its list, and the slot is its to take.
    Granted,
    /// The slots closed: out of its list, gets [`NoSlot::Closed`].
    Closed,
    /// Its deadline passed: out of its list, gets [`NoSlot::TimedOut`].
    TimedOut,
}

/// One slot, lent with a server; dropping it frees the slot for the next waiter.
pub struct Slot {
    slots: Arc<Slots>,
    /// The worker whose waiters get the slot first when it is freed: the holder's, or the
    /// home of the server that went back to the pool with it ([`Slot::free_near`]).
    near: usize,
}

impl Slot {
    /// When this slot is freed, it goes first to a waiter on worker `home` (the thread whose
    /// idle list the server was just returned to).
    pub(super) fn free_near(&mut self, home: usize) {
        self.near = home;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.free_slot(self.near);
    }
}

impl Slots {
    /// `size` slots, waiters kept in `lists` lists (one per worker thread).
    pub fn new(size: usize, lists: usize) -> Arc<Slots> {
        Arc::new(Slots {
            free: AtomicUsize::new(size),
            size: AtomicUsize::new(size),
            retiring: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            queue: Mutex::new(Queue {
                lists: (0..lists.max(1)).map(|_| VecDeque::new()).collect(),
                next_ticket: 0,
                entries: Vec::new(),
                vacant: Vec::new(),
                expiry: None,
                out_of_order: false,
            }),
        })
    }

    /// A free slot, without waiting; none once closed.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()
            .map(|_| Slot {
                slots: self.clone(),
                near: crate::net::worker::current(),
            })
    }

    /// A slot, after the waiters before it (see the module docs), waiting at most `wait`.
    /// Must be called within a tokio runtime when it has to wait (the expiry task is
    /// spawned there).
    pub async fn take(self: &Arc<Self>, wait: Duration) -> Result<Slot, NoSlot> {
        if let Some(slot) = self.try_take() {
            return Ok(slot);
        }
        let worker = crate::net::worker::current();
        let (queued, watch) = {
            let mut queue = self.lock();
            // Looked at again under the lock: a slot freed since was counted free, since
            // no waiter was queued to take it.
            if self.closed.load(Ordering::Acquire) {
                return Err(NoSlot::Closed);
            }
            if let Some(slot) = self.try_take() {
                return Ok(slot);
            }
            let list = worker % queue.lists.len();
            let deadline = Instant::now() + wait;
            let (ticket, entry) = queue.enqueue(list, deadline);
            let queued = Queued {
                slots: self,
                list,
                ticket,
                entry,
                done: false,
            };
            (queued, queue.watch(deadline))
        };
        match watch {
            Watch::Start => drop(tokio::spawn(expire(self.clone()))),
            Watch::Wake(waker) => waker.into_iter().for_each(Waker::wake),
            Watch::Nothing => {}
        }
        queued.await
    }

    /// Slots free now.
    #[cfg(test)]
    pub fn free(&self) -> usize {
        self.free.load(Ordering::Acquire)
    }

    /// The number of slots (`pool_size`) in force.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Slots lent now (a moment's count, for the console and read routing's choice).
    pub fn lent(&self) -> usize {
        (self.size.load(Ordering::Relaxed) + self.retiring.load(Ordering::Relaxed))
            .saturating_sub(self.free.load(Ordering::Relaxed))
    }

    /// Whether more slots are lent than the size allows (it shrank): a slot coming back is
    /// retired, and its server should be closed rather than kept idle. One relaxed load.
    #[inline]
    pub fn shrinking(&self) -> bool {
        self.retiring.load(Ordering::Relaxed) > 0
    }

    /// Changes the number of slots to `size`. More: the new slots go to the waiters at
    /// once, oldest first, and the rest are free. Fewer: free slots are taken away at once,
    /// and as many lent ones as are still over the size are retired when they come back.
    pub fn resize(&self, size: usize) {
        let mut woken = Vec::new();
        {
            let mut queue = self.lock();
            let old = self.size.swap(size, Ordering::AcqRel);
            if size >= old {
                let mut more = size - old;
                // Slots still out that were to be retired are kept instead.
                let kept = more.min(self.retiring.load(Ordering::Relaxed));
                self.retiring.fetch_sub(kept, Ordering::Relaxed);
                more -= kept;
                while more > 0 {
                    let oldest = queue.oldest_list();
                    let Some(waker) = queue.grant(oldest) else {
                        break;
                    };
                    woken.extend(waker);
                    more -= 1;
                }
                self.free.fetch_add(more, Ordering::AcqRel);
            } else {
                let fewer = old - size;
                let was_free = self
                    .free
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n - n.min(fewer)))
                    .unwrap_or_else(|n| n);
                self.retiring
                    .fetch_add(fewer - was_free.min(fewer), Ordering::Relaxed);
            }
        }
        woken.into_iter().for_each(Waker::wake);
    }

    /// Whether [`Slots::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Refuses new takers and tells every waiter (`None`).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut wakers = Vec::new();
        {
            let mut queue = self.lock();
            let Queue { lists, entries, .. } = &mut *queue;
            for waiter in lists.iter_mut().flat_map(std::mem::take) {
                let entry = &mut entries[waiter.entry];
                entry.state = State::Closed;
                wakers.extend(entry.waker.take());
            }
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    /// A slot was freed near worker `near`: to the waiter [`Queue::next`] picks, else free.
    fn free_slot(&self, near: usize) {
        let woken = self.hand_over(&mut self.lock(), near);
        if let Some(waker) = woken {
            waker.wake();
        }
    }

    /// Hands a slot freed near worker `near` to the waiter [`Queue::next`] picks, or counts
    /// it free when nobody waits, or retires it when the slots shrank below those lent;
    /// returns the waiter's waker, to wake once `queue`'s lock is released.
    fn hand_over(&self, queue: &mut Queue, near: usize) -> Option<Waker> {
        // Under the queue's lock, as every change of `retiring` is.
        if self.retiring.load(Ordering::Relaxed) > 0 {
            self.retiring.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        match queue.grant(near) {
            Some(waker) => waker,
            None => {
                self.free.fetch_add(1, Ordering::AcqRel);
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Queue {
    /// Lists a new waiter on `list`: its ticket and slab entry.
    fn enqueue(&mut self, list: usize, deadline: Instant) -> (u64, usize) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let fresh = Entry {
            state: State::Waiting,
            waker: None,
        };
        if self.lists[list].back().is_some_and(|w| w.deadline > deadline) {
            self.out_of_order = true;
        }
        let entry = match self.vacant.pop() {
            Some(i) => {
                self.entries[i] = fresh;
                i
            }
            None => {
                self.entries.push(fresh);
                self.entries.len() - 1
            }
        };
        self.lists[list].push_back(Waiter {
            ticket,
            entry,
            deadline,
        });
        (ticket, entry)
    }

    /// A waiter with `deadline` was listed: what the expiry task must do for it.
    fn watch(&mut self, deadline: Instant) -> Watch {
        match &mut self.expiry {
            None => {
                self.expiry = Some(Expiry {
                    at: deadline,
                    waker: None,
                });
                Watch::Start
            }
            Some(e) if e.at > deadline => {
                e.at = deadline;
                Watch::Wake(e.waker.take())
            }
            Some(_) => Watch::Nothing,
        }
    }

    /// Ends the waits of the waiters whose deadline is `now` or earlier (their wakers are
    /// pushed on `woken`); returns the earliest deadline left, `None` when nobody waits.
    ///
    /// Only heads are looked at while the lists are in deadline order (later arrivals have
    /// later deadlines, with one `query_wait_timeout`); after it was shortened while clients
    /// waited, every waiter is, until the lists are in order again.
    fn expire_due(&mut self, now: Instant, woken: &mut Vec<Waker>) -> Option<Instant> {
        let Queue {
            lists,
            entries,
            out_of_order,
            ..
        } = self;
        let mut next: Option<Instant> = None;
        let mut due = |w: &Waiter| {
            if w.deadline > now {
                next = Some(next.map_or(w.deadline, |n| n.min(w.deadline)));
                return false;
            }
            let entry = &mut entries[w.entry];
            entry.state = State::TimedOut;
            woken.extend(entry.waker.take());
            true
        };
        for list in lists.iter_mut() {
            if *out_of_order {
                list.retain(|w| !due(w));
            } else {
                while list.front().is_some_and(&mut due) {
                    list.pop_front();
                }
            }
        }
        if *out_of_order {
            *out_of_order = lists.iter().any(|l| {
                l.iter()
                    .zip(l.iter().skip(1))
                    .any(|(a, b)| a.deadline > b.deadline)
            });
        }
        next
    }

    /// Gives entry `i` back to the slab.
    fn vacate(&mut self, i: usize) {
        self.entries[i] = Entry {
            state: State::Vacant,
            waker: None,
        };
        self.vacant.push(i);
    }

    /// Hands a slot freed near worker `near` to the waiter [`Queue::next`] picks; returns
    /// its waker to wake (once the lock is released), or `None` when nobody waits.
    fn grant(&mut self, near: usize) -> Option<Option<Waker>> {
        let waiter = self.next(near)?;
        let entry = &mut self.entries[waiter.entry];
        entry.state = State::Granted;
        Some(entry.waker.take())
    }

    /// The list whose head queued first (0 when nobody waits).
    fn oldest_list(&self) -> usize {
        (0..self.lists.len())
            .filter_map(|i| self.lists[i].front().map(|w| (w.ticket, i)))
            .min()
            .map_or(0, |(_, i)| i)
    }

    /// The waiter a slot freed near worker `near` goes to (taken out of its list): the
    /// oldest on that worker, unless a waiter elsewhere queued more tickets before it than
    /// there are waiters (at least [`OVERTAKE`]), or that worker has none; then the oldest
    /// anywhere. With one list: FIFO.
    fn next(&mut self, near: usize) -> Option<Waiter> {
        let lists = self.lists.len();
        if lists == 1 {
            return self.lists[0].pop_front();
        }
        let (oldest, oldest_list) = (0..lists)
            .filter_map(|i| self.lists[i].front().map(|w| (w.ticket, i)))
            .min()?;
        let waiting = self.lists.iter().map(VecDeque::len).sum::<usize>() as u64;
        let near = near % lists;
        let list = match self.lists[near].front() {
            Some(w) if w.ticket - oldest <= OVERTAKE.max(waiting) => near,
            _ => oldest_list,
        };
        self.lists[list].pop_front()
    }
}

/// A queued [`Slots::take`]: resolves when a slot is handed to it, or with `None` when the
/// slots close; dropped before that, it takes itself out of its list, and passes on a slot
/// handed to it that it did not take.
struct Queued<'a> {
    slots: &'a Arc<Slots>,
    /// Its list: the worker it waits on.
    list: usize,
    ticket: u64,
    entry: usize,
    /// It resolved, and gave its entry back.
    done: bool,
}

impl Future for Queued<'_> {
    type Output = Result<Slot, NoSlot>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Slot, NoSlot>> {
        let mut queue = self.slots.lock();
        let entry = &mut queue.entries[self.entry];
        let outcome = match entry.state {
            State::Granted => Ok(()),
            State::Closed => Err(NoSlot::Closed),
            State::TimedOut => Err(NoSlot::TimedOut),
            State::Waiting | State::Vacant => {
                if !entry.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    entry.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
        };
        queue.vacate(self.entry);
        drop(queue);
        self.done = true;
        Poll::Ready(outcome.map(|()| Slot {
            slots: self.slots.clone(),
            near: self.list,
        }))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let woken = {
            let mut queue = self.slots.lock();
            let state = queue.entries[self.entry].state;
            queue.vacate(self.entry);
            match state {
                State::Waiting => {
                    let list = &mut queue.lists[self.list];
                    if let Some(i) = list.iter().position(|w| w.ticket == self.ticket) {
                        list.remove(i);
                    }
                    None
                }
                // Handed a slot it will not take: to the next waiter, else free.
                State::Granted => self.slots.hand_over(&mut queue, self.list),
                State::Closed | State::TimedOut | State::Vacant => None,
            }
        };
        if let Some(waker) = woken {
            waker.wake();
        }
    }
}

/// The expiry task of `slots`' queue: sleeps until the earliest deadline at the head of a
/// list (or sooner, when a new waiter's deadline is earlier: [`Queue::watch`] wakes it),
/// ends the waits that reached theirs, and ends itself when it wakes to an empty queue (after
/// ending the last waits, it sleeps [`LINGER`] first).
async fn expire(slots: Arc<Slots>) {
    let mut sleep = pin!(tokio::time::sleep_until(Instant::now()));
    let mut woken = Vec::new();
    loop {
        let at = {
            let mut queue = slots.lock();
            let now = Instant::now();
            let at = match queue.expire_due(now, &mut woken) {
                Some(next) => next,
                // Empty since the last look, and no waiter came: done.
                None if queue.expiry.as_ref().is_some_and(|e| e.at <= now) && woken.is_empty() => {
                    queue.expiry = None;
                    return;
                }
                None => now + LINGER,
            };
            let expiry = queue.expiry.get_or_insert(Expiry { at, waker: None });
            expiry.at = at;
            at
        };
        woken.drain(..).for_each(Waker::wake);
        sleep.as_mut().reset(at);
        // Until the deadline, or until a waiter with an earlier one moves it.
        std::future::poll_fn(|cx| {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut queue = slots.lock();
            match &mut queue.expiry {
                Some(e) if e.at < at => Poll::Ready(()),
                Some(e) => {
                    if !e.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        e.waker = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
                None => Poll::Ready(()),
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::worker::set_current;
    use std::task::Waker;

    type Taking<'a> = Pin<Box<dyn Future<Output = Result<Slot, NoSlot>> + 'a>>;

    /// The wait's limit where the tests do not look at it.
    const LONG: Duration = Duration::from_secs(600);

    /// A take started on worker `worker`, polled once (it queues if no slot is free).
    fn queue_on(slots: &Arc<Slots>, worker: usize) -> Taking<'_> {
        set_current(worker);
        let mut taking: Taking = Box::pin(slots.take(LONG));
        assert!(poll(&mut taking).is_pending(), "a slot was free");
        set_current(0);
        taking
    }

    fn poll(taking: &mut Taking) -> Poll<Result<Slot, NoSlot>> {
        taking.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    fn granted(taking: &mut Taking) -> Slot {
        match poll(taking) {
            Poll::Ready(Ok(slot)) => slot,
            Poll::Ready(Err(e)) => panic!("{e:?}"),
            Poll::Pending => panic!("no slot handed over"),
        }
    }

    fn free_near(mut slot: Slot, worker: usize) {
        slot.free_near(worker);
    }

    #[tokio::test]
    async fn one_list_hands_slots_over_in_arrival_order_whatever_the_worker() {
        let slots = Slots::new(1, 1);
        let mut held = slots.try_take().expect("one free");
        assert!(slots.try_take().is_none());
        let mut waiters: Vec<Taking> = (0..4).map(|i| queue_on(&slots, 3 - i)).collect();
        for i in 0..4 {
            free_near(held, 3);
            held = granted(&mut waiters[i]);
            for later in &mut waiters[i + 1..] {
                assert!(poll(later).is_pending(), "waiter {i} was not served first");
            }
        }
        drop(held);
        assert_eq!(slots.free(), 1);
    }

    #[tokio::test]
    async fn per_core_a_freed_slot_goes_to_the_near_workers_waiter_first() {
        let slots = Slots::new(1, 2);
        let held = slots.try_take().expect("one free");
        let mut remote = queue_on(&slots, 1);
        let mut local = queue_on(&slots, 0);
        free_near(held, 0);
        assert!(
            poll(&mut remote).is_pending(),
            "the older waiter elsewhere went first"
        );
        let held = granted(&mut local);
        // No waiter left on worker 0: the slot goes to worker 1's.
        free_near(held, 0);
        drop(granted(&mut remote));
        assert_eq!(slots.free(), 1);
    }

    /// How many of `locals` waiters on worker 0, all queued after one waiter on worker 1,
    /// are served before it while every slot is freed near worker 0.
    fn overtaken_with(locals: usize) -> usize {
        let slots = Slots::new(1, 2);
        let mut held = slots.try_take().expect("one free");
        let mut remote = queue_on(&slots, 1);
        let mut queued: Vec<Taking> = (0..locals).map(|_| queue_on(&slots, 0)).collect();
        let mut overtaken = 0;
        loop {
            free_near(held, 0);
            if let Poll::Ready(slot) = poll(&mut remote) {
                held = slot.expect("not closed");
                break;
            }
            held = granted(&mut queued[overtaken]);
            overtaken += 1;
        }
        // The local waiters left are served in order after it.
        free_near(held, 1);
        if let Some(next) = queued.get_mut(overtaken) {
            drop(granted(next));
        }
        overtaken
    }

    /// The k-th local waiter (ticket k; the remote one has ticket 0) goes first while
    /// k <= max(16, waiting), and 1 + locals - (k - 1) wait when it is chosen: with 20
    /// locals the floor of 16 decides, with 40 the count of waiters (k <= 42 - k: 21).
    #[tokio::test]
    async fn per_core_a_waiter_is_overtaken_by_no_more_later_ones_than_wait() {
        assert_eq!(overtaken_with(20), OVERTAKE as usize);
        assert_eq!(overtaken_with(40), 21);
        assert_eq!(
            overtaken_with(3),
            3,
            "with fewer waiters than the floor, every near one goes first"
        );
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_passes_a_slot_handed_to_it_on() {
        let slots = Slots::new(1, 2);
        let held = slots.try_take().expect("one free");
        let handed = queue_on(&slots, 0);
        let still_queued = queue_on(&slots, 0);
        let mut next = queue_on(&slots, 1);
        // Handed to the first waiter, which has not looked yet.
        free_near(held, 0);
        // The second gives up while still queued: it leaves its list.
        drop(still_queued);
        // The first gives up too: its slot goes to the only waiter left.
        drop(handed);
        drop(granted(&mut next));
        assert_eq!(slots.free(), 1);
    }

    #[tokio::test]
    async fn close_ends_every_wait_and_refuses_new_takers() {
        let slots = Slots::new(1, 2);
        let held = slots.try_take().expect("one free");
        let mut waiters = [queue_on(&slots, 0), queue_on(&slots, 1)];
        slots.close();
        for w in &mut waiters {
            assert!(matches!(poll(w), Poll::Ready(Err(NoSlot::Closed))));
        }
        assert!(slots.is_closed());
        drop(held);
        assert!(slots.try_take().is_none(), "a closed pool lent a slot");
    }

    /// A waiter gets [`NoSlot::TimedOut`] at its deadline (time paused: exactly), one queued
    /// later keeps waiting and gets the slot when it is freed, and the expiry task ends when
    /// it wakes (at the deadline it slept until) to the empty queue.
    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_its_deadline_and_the_next_waiter_keeps_its_place() {
        let slots = Slots::new(1, 1);
        let held = slots.try_take().expect("one free");
        let wait = |limit: u64| {
            let slots = slots.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let taken = slots.take(Duration::from_secs(limit)).await;
                (taken.map(drop), started.elapsed())
            })
        };
        let first = wait(2);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = wait(5);
        let (taken, waited) = first.await.unwrap();
        assert_eq!(taken, Err(NoSlot::TimedOut));
        assert_eq!(waited, Duration::from_secs(2));
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
        let (taken, waited) = second.await.unwrap();
        assert_eq!(taken, Ok(()), "the second waiter lost its slot");
        assert_eq!(waited, Duration::from_secs(2));
        assert_eq!(slots.free(), 1);
        assert!(
            slots.lock().expiry.is_some(),
            "the expiry task ended before its wake-up"
        );
        // It sleeps until the second waiter's deadline (6 s), then finds nobody waiting.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(slots.lock().expiry.is_none(), "the expiry task is still running");
    }

    /// Growing from 1 to 3 slots while one is held and three clients wait hands the two new
    /// slots to the two oldest waiters at once, the third keeps waiting; growing to 4 serves
    /// it; all given back, 4 are free.
    #[tokio::test]
    async fn growing_hands_the_new_slots_to_the_waiters_in_order() {
        let slots = Slots::new(1, 1);
        let held = slots.try_take().expect("one free");
        let mut waiters: Vec<Taking> = (0..3).map(|i| queue_on(&slots, i)).collect();
        slots.resize(3);
        let first = granted(&mut waiters[0]);
        let second = granted(&mut waiters[1]);
        assert!(poll(&mut waiters[2]).is_pending(), "the third waiter got a slot");
        assert_eq!((slots.free(), slots.lent()), (0, 3));
        slots.resize(4);
        let third = granted(&mut waiters[2]);
        assert_eq!(slots.lent(), 4);
        drop((held, first, second, third));
        assert_eq!(slots.free(), 4);
    }

    /// Per-core: new slots go to the oldest waiter anywhere, not to one worker's first.
    #[tokio::test]
    async fn per_core_growing_serves_the_oldest_waiter_anywhere_first() {
        let slots = Slots::new(1, 2);
        let _held = slots.try_take().expect("one free");
        let mut oldest = queue_on(&slots, 1);
        let mut newer = queue_on(&slots, 0);
        set_current(0);
        slots.resize(2);
        assert!(poll(&mut newer).is_pending(), "the newer waiter went first");
        drop(granted(&mut oldest));
        // The freed slot goes on to the other waiter.
        drop(granted(&mut newer));
        assert_eq!(slots.free(), 1);
    }

    /// Shrinking from 3 to 1 with all 3 lent takes none from its holder: all 3 stay lent
    /// (`shrinking`), the first two given back are retired (a waiter keeps waiting), the
    /// third goes to the waiter; then the one slot left is all there is.
    #[tokio::test]
    async fn shrinking_never_takes_a_slot_in_use_and_retires_them_as_they_come_back() {
        let slots = Slots::new(3, 1);
        let mut held: Vec<Slot> = (0..3).map(|_| slots.try_take().expect("free")).collect();
        slots.resize(1);
        assert_eq!((slots.lent(), slots.free()), (3, 0));
        assert!(slots.shrinking());
        let mut waiter = queue_on(&slots, 0);
        drop(held.pop());
        assert!(poll(&mut waiter).is_pending(), "a retired slot was handed over");
        drop(held.pop());
        assert!(poll(&mut waiter).is_pending(), "a retired slot was handed over");
        assert!(!slots.shrinking());
        drop(held.pop());
        let last = granted(&mut waiter);
        assert_eq!((slots.lent(), slots.free()), (1, 0));
        drop(last);
        assert_eq!(slots.free(), 1);
        let _one = slots.try_take().expect("the one slot");
        assert!(slots.try_take().is_none(), "more than the new size lent");
    }

    /// Shrinking takes free slots away at once (3 to 1 with one lent: both free ones), and
    /// growing again before the retiring slots came back keeps them instead.
    #[tokio::test]
    async fn shrinking_takes_free_slots_first_and_growing_keeps_retiring_ones() {
        let slots = Slots::new(3, 1);
        let held = slots.try_take().expect("free");
        slots.resize(1);
        assert_eq!((slots.free(), slots.lent()), (0, 1));
        assert!(!slots.shrinking());
        let more: Vec<Slot> = {
            slots.resize(3);
            (0..2).map(|_| slots.try_take().expect("grown")).collect()
        };
        slots.resize(1);
        assert!(slots.shrinking(), "two lent over the size of 1");
        slots.resize(2);
        drop(more);
        // One of the two came back as retiring, the other is free again.
        assert_eq!((slots.free(), slots.lent()), (1, 1));
        drop(held);
        assert_eq!(slots.free(), 2);
    }

    /// With deadlines out of order (`query_wait_timeout` shortened from 10 s to 1 s while a
    /// client waited), the later waiter's wait ends at its own deadline (1 s), not when the
    /// earlier one's does; the earlier one keeps waiting, and growing the pool serves it.
    /// After a shrink, a new waiter still times out at its deadline.
    #[tokio::test(start_paused = true)]
    async fn a_waiters_deadline_holds_across_a_shortened_limit_and_a_resize() {
        let slots = Slots::new(1, 1);
        let held = slots.try_take().expect("one free");
        let wait = |limit: u64| {
            let slots = slots.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let taken = slots.take(Duration::from_secs(limit)).await;
                (taken, started.elapsed())
            })
        };
        let long = wait(10);
        tokio::task::yield_now().await;
        let short = wait(1);
        let (taken, waited) = short.await.unwrap();
        assert_eq!(
            (taken.map(drop), waited),
            (Err(NoSlot::TimedOut), Duration::from_secs(1))
        );
        assert!(!long.is_finished(), "the earlier waiter's wait ended too");
        slots.resize(2);
        let (taken, waited) = long.await.unwrap();
        let grown = taken.expect("growing served the waiter");
        assert_eq!(waited, Duration::from_secs(1));
        slots.resize(1);
        let late = wait(2);
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(grown);
        let (taken, waited) = late.await.unwrap();
        assert_eq!(
            (taken.map(drop), waited),
            (Err(NoSlot::TimedOut), Duration::from_secs(2))
        );
        drop(held);
        assert_eq!(slots.free(), 1);
    }

    /// A waiter whose deadline comes before the one the expiry task sleeps until (a shorter
    /// limit, on another worker's list) wakes it: its wait ends at its own deadline.
    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_the_expiry_task_sooner() {
        let slots = Slots::new(1, 2);
        let _held = slots.try_take().expect("one free");
        let wait = |worker: usize, limit: u64| {
            let slots = slots.clone();
            tokio::spawn(async move {
                set_current(worker);
                let started = Instant::now();
                let taken = slots.take(Duration::from_secs(limit)).await;
                (taken.map(drop), started.elapsed())
            })
        };
        let long = wait(0, 30);
        tokio::task::yield_now().await;
        let short = wait(1, 3);
        let (taken, waited) = short.await.unwrap();
        assert_eq!((taken, waited), (Err(NoSlot::TimedOut), Duration::from_secs(3)));
        let (taken, waited) = long.await.unwrap();
        assert_eq!((taken, waited), (Err(NoSlot::TimedOut), Duration::from_secs(30)));
    }
}
