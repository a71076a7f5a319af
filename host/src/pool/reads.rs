//! Servers on replicas for reads (read routing): which replica a read goes to (the least
//! busy of those the topology allows, see `topology::reads`), lending a server there, and
//! the counts `SHOW NODES` and the metrics report. A read that finds no replica, or whose
//! replica cannot be reached, goes to the primary: a read never fails for want of one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::functions::FunctionCatalog;
use super::Slot;
use super::{Checkout, Pool, PoolError};
use crate::config::{ReadRouting, ReadYourWrites};
use crate::server::{ServerConn, ServerError};
use crate::stop::StopWatch;
use crate::topology::reads::{skip_reason, LagBudget, Skip};
use crate::topology::ClusterView;

/// A database's read routing, from its `[databases]` entry.
#[derive(Clone)]
pub struct RoutingSettings {
    pub read_routing: ReadRouting,
    pub budget: LagBudget,
    pub read_your_writes: ReadYourWrites,
    /// The mark of the latest commit that may have written, through any of the database's
    /// pools (`read_your_writes = "database"`); see `Cluster::commit_mark`.
    pub database_commits: Arc<AtomicU64>,
    /// The database's functions and their volatility.
    pub functions: Arc<FunctionCatalog>,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            read_routing: ReadRouting::Off,
            budget: LagBudget {
                bytes: 0,
                time: std::time::Duration::ZERO,
            },
            read_your_writes: ReadYourWrites::Off,
            database_commits: Arc::default(),
            functions: Arc::default(),
        }
    }
}

/// Read routing's counters for one pool and one node of its cluster.
#[derive(Default)]
pub struct NodeReads {
    /// Servers lent for reads on the node now: the least busy replica gets the next read.
    busy: AtomicUsize,
    /// Transactions classified as reads that ran on the node (the primary included).
    pub reads: AtomicU64,
    /// Transactions that ran on the node because they write (or may).
    pub writes: AtomicU64,
    /// Routing decisions that passed the node over, per reason (in [`Skip::ALL`] order).
    pub skipped: [AtomicU64; Skip::ALL.len()],
}

/// Read routing's counters for one pool.
pub struct ReadStats {
    /// Per node of the pool's cluster.
    pub nodes: Box<[NodeReads]>,
    /// Counts choices, so that equally busy replicas take turns.
    turn: AtomicUsize,
    /// Reads that went to the primary because no replica could take them.
    pub fell_back_reads: AtomicU64,
    /// Reads a replica refused as writes (25006), run again on the primary.
    pub misrouted: AtomicU64,
    /// The mark of the latest commit that may have written, through this pool
    /// (`read_your_writes = "user"`).
    pub user_commits: AtomicU64,
}

impl ReadStats {
    pub fn new(nodes: usize) -> ReadStats {
        ReadStats {
            nodes: (0..nodes).map(|_| NodeReads::default()).collect(),
            turn: AtomicUsize::new(0),
            fell_back_reads: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
            user_commits: AtomicU64::new(0),
        }
    }

    /// A server lent for reads on `node` came back or was closed.
    pub(super) fn finished(&self, node: usize) {
        self.nodes[node].busy.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a transaction that ran on `node`.
    pub fn ran(&self, node: usize, read: bool) {
        if let Some(n) = self.nodes.get(node) {
            let counter = if read { &n.reads } else { &n.writes };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a read that runs on the primary because no replica could take it.
    pub fn fell_back(&self) {
        self.fell_back_reads.fetch_add(1, Ordering::Relaxed);
    }

    fn skip(&self, node: usize, why: Skip) {
        let i = Skip::ALL.iter().position(|&s| s == why).unwrap_or(0);
        self.nodes[node].skipped[i].fetch_add(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// The replica a read goes to: `wanted` if it may serve it, else the least busy replica
    /// (equally busy ones in turn) that may (a replica within `budget` of the primary that has replayed `min_lsn`, on
    /// the newest timeline). With `with_primary`, the primary competes as one more node.
    /// `None`: the primary.
    pub fn pick_read_node(
        &self,
        view: &ClusterView,
        budget: &LagBudget,
        min_lsn: u64,
        wanted: Option<usize>,
        with_primary: bool,
    ) -> Option<usize> {
        let may_serve = |i: usize| match skip_reason(view, &view.nodes[i], budget, min_lsn) {
            None => true,
            Some(why) => {
                self.reads.skip(i, why);
                false
            }
        };
        if let Some(node) = wanted.filter(|&n| n < view.nodes.len() && view.primary != Some(n)) {
            if may_serve(node) {
                return Some(node);
            }
        }
        // The least busy of the nodes that may serve it, as a bit set; equally busy ones
        // take turns. (Bit `PRIMARY_BIT` is the primary, when it competes.)
        const PRIMARY_BIT: usize = 127;
        let busy = |i: usize| self.reads.nodes[i].busy.load(Ordering::Relaxed);
        let mut least = usize::MAX;
        let mut candidates: u128 = 0;
        for i in 0..view.nodes.len().min(PRIMARY_BIT) {
            if view.primary == Some(i) || !may_serve(i) {
                continue;
            }
            let b = busy(i);
            if b < least {
                least = b;
                candidates = 0;
            }
            if b == least {
                candidates |= 1 << i;
            }
        }
        if with_primary && view.primary.is_some() {
            let in_use = self.primary.in_use();
            if in_use < least {
                candidates = 0;
            }
            if in_use <= least {
                candidates |= 1 << PRIMARY_BIT;
            }
        }
        if candidates == 0 {
            self.reads.fell_back();
            return None;
        }
        // A counter, scrambled: a client whose every query takes two decisions (Parse, then
        // Bind) must not always meet the same parity.
        let n = self.reads.turn.fetch_add(1, Ordering::Relaxed) as u64;
        let turn = (splitmix(n) % u64::from(candidates.count_ones())) as usize;
        let pick = (0..=PRIMARY_BIT)
            .filter(|&i| candidates & (1 << i) != 0)
            .nth(turn)
            .unwrap_or(PRIMARY_BIT);
        (pick != PRIMARY_BIT).then_some(pick)
    }

    /// Lends a server on `node` for reads: an idle one there, or a new connection. Waits
    /// for a paused database like any checkout, but not for a switchover's hold: reads go
    /// on on a replica while writes wait for the new primary. An error means the node
    /// could not be used now; the caller sends the read to the primary instead.
    pub async fn checkout_read(
        self: &Arc<Self>,
        node: usize,
        stop: Option<&StopWatch>,
    ) -> Result<Checkout, PoolError> {
        // The common case (not paused, a slot free, an idle server there) is answered
        // without waiting; the rest runs in a boxed future, so that connects and waits do
        // not weigh on every session's task (as for `Pool::checkout`).
        let mut permit = None;
        if self.pause.paused().is_none() {
            permit = self.replicas[node].try_permit();
            if let Some(conn) = permit.is_some().then(|| self.reusable_read(node)).flatten() {
                return Ok(self.lend_read(node, conn, permit.take().expect("checked")));
            }
        }
        super::until_ended(stop, Box::pin(self.checkout_read_waiting(node, permit))).await
    }

    /// [`Pool::checkout_read`] when it may wait: for a pause, a slot (unless `permit`
    /// holds one), a connect.
    async fn checkout_read_waiting(
        self: &Arc<Self>,
        node: usize,
        permit: Option<Slot>,
    ) -> Result<Checkout, PoolError> {
        let wait_started = crate::stats::now_us();
        if self.pause.paused().is_some() {
            let _waiting = super::Counted::new(&self.waiting);
            self.pause.wait(&self.cluster).await;
        }
        let permit = match permit {
            Some(p) => p,
            None => self.wait_permit(&self.replicas[node]).await?,
        };
        let conn = loop {
            if let Some(conn) = self.reusable_read(node) {
                break conn;
            }
            // Per-core: with every server open, one is idle on another thread's list or
            // about to be; the next look takes it.
            let Some(open) = self.replicas[node].open_one() else {
                tokio::time::sleep(super::servers::IN_TRANSIT_PAUSE).await;
                continue;
            };
            let mut conn = self
                .connect(&self.cluster.nodes[node])
                .await
                .inspect_err(|e: &ServerError| {
                    if super::unreachable(e) {
                        self.cluster.suspect(node);
                    }
                })?;
            conn.counted.push(Box::new(open));
            break conn;
        };
        self.observe_wait(wait_started);
        Ok(self.lend_read(node, conn, permit))
    }

    /// An idle read server on `node` that may be reused; those tried on the way that may
    /// not (broken, too old, on a node that no longer serves reads) are closed.
    fn reusable_read(&self, node: usize) -> Option<Box<ServerConn>> {
        while let Some(conn) = self.replicas[node].pop_idle() {
            if conn.is_broken() || self.expired(&conn) || !self.keeps_read_server(node, &conn) {
                self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            return Some(conn);
        }
        None
    }

    fn lend_read(self: &Arc<Self>, node: usize, conn: Box<ServerConn>, permit: Slot) -> Checkout {
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        self.reads.nodes[node].busy.fetch_add(1, Ordering::Relaxed);
        Checkout {
            conn: Some(conn),
            permit,
            pool: self.clone(),
            read_node: Some(node),
        }
    }

    /// Whether a read server on `node` may go back to (or be taken from) the pool: the node
    /// still answers on the newest timeline, unfenced and not drained since the server
    /// was opened. (Lag is judged per read, not per server.)
    pub(super) fn keeps_read_server(&self, node: usize, conn: &ServerConn) -> bool {
        let view = self.cluster.view();
        let n = &view.nodes[node];
        n.sample.reachable
            && !n.fenced
            && n.sample.timeline >= view.newest_timeline
            && n.drained_at.is_none_or(|d| conn.created > d)
    }
}

/// SplitMix64's output function: consecutive inputs give unrelated outputs.
fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
