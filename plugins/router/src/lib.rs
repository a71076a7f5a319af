//! Switchyard's router plugin: decides which node runs a session's next transaction or
//! autocommit statement (world `switchyard:policy/router-plugin@0.1.0`).
//!
//! Settings (`[plugins.NAME.settings]`):
//! - `read_your_writes_wait_ms` (default `0`): when the session's last commit
//!   (`session-info.last-commit-lsn`) is not yet replayed by any replica that may serve
//!   reads (reachable, not fenced, a replica, on the newest timeline among the nodes), a read
//!   answers `wait(step)` (step = the budget left, at most 20 ms) for up to this many
//!   milliseconds in total, then `primary`. With 0 such a read goes to the primary at once.
//!   When no replica may serve reads at all, there is nothing to wait for: `primary` at once.
//! - `primary_applications`: comma-separated `application_name`s (exact, or a prefix ending
//!   in `*`) whose work always goes to the primary;
//! - `replica_applications`: likewise, whose work is answered `any-replica` whatever its
//!   kind (the host still keeps writes on the primary);
//! - `version_tag`: free text; `version()` returns "<crate version>+<tag>".
//!
//! Otherwise reads (`query-kind` `read`; `transaction-control`, which the host sends to a
//! replica only for a transaction begun `READ ONLY`; anything but a write or DDL in a
//! session that is read-only) are answered `any-replica`, and everything else `primary`.
//! An application in both lists goes to the primary. Any other setting refuses `init`.
//!
//! What the host does around the plugin, so the plugin does not: it classifies the work and
//! sends what it did not find fit for a replica to the primary whatever the plugin answers;
//! for `any-replica` it picks the least busy replica within the database's lag budget
//! (`max_replica_lag_bytes`, `max_replica_lag`) that has replayed the session's last commit,
//! else the primary. The plugin therefore does not re-check lag budgets: the host applies
//! them at the moment it picks a node, with its own view of each replica's lag in time (which
//! `node-info` does not carry), and a second check here could only disagree with it. The
//! plugin compares replay positions only to decide whether waiting is worth it.
//!
//! What `wait` costs: the host holds the client's read (no server is held meanwhile), wakes
//! the replicas' probers, and calls `route` again as soon as a probe answers (so a replica
//! that caught up is seen within a probe's round trip), or when the step ends: a few plugin
//! calls per waiting read, and the read's latency grows by up to
//! `read_your_writes_wait_ms`. Writes never wait. The waits count against the cluster's
//! `hold_timeout`, past which the host runs the read on the primary.
//! Right after a commit its position is unknown (`last-commit-lsn` = `u64::MAX`) until the
//! next probe of the primary, up to one `probe_interval`: with a budget shorter than that,
//! most reads just after a write go to the primary.
//!
//! State: each instance keeps, per session id, when its current wait began (read with
//! `host.monotonic-now-ns`, the only clock, so a trace replays). The table holds at most
//! 10,000 sessions; a session that has not asked again for a second starts a new wait, and
//! such entries are dropped when the table is full (a new wait that finds it full of live
//! ones goes to the primary). The host pools instances, so a session's successive calls
//! may land on different instances, each of which tracks the wait from the call it first
//! saw: a wait can then last somewhat longer than the budget, never past `hold_timeout`.
//!
//! Host calls: `host.current-session` only when an application list is set; the clock only
//! when a wait is possible; `counter-add` once per wait (`read_your_writes.waits`,
//! `.caught_up`, `.primary_after_wait`, `.untracked`, in `SHOW PLUGINS`). A read with no
//! commit to see calls none.
//!
//! The decision and the settings live in [`policy`] (plain Rust, unit-tested on the host
//! target); `component.rs` maps the WIT records onto it, and the kit
//! (`switchyard-plugin-kit`) does the rest of the component.

mod component;
pub mod policy;
