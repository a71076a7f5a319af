//! Prometheus metrics on `[proxy] metrics_listen`: `GET /metrics` in the OpenMetrics text
//! format, for operators who watch their poolers with Prometheus (PgBouncer users run an
//! exporter against its console; Switchyard serves the numbers itself).
//!
//! Nothing here is on the data path: a [`Collector`] reads the counters the proxy keeps
//! anyway (pool stats, failover totals, cluster views, plugin reports, the client count)
//! when a scrape asks, so metrics cost nothing between scrapes.
//!
//! The HTTP side is deliberately small: one task per connection, one request per connection
//! (`Connection: close`), only the request line is looked at, the request head is capped at
//! [`MAX_REQUEST`] bytes and must arrive within [`READ_TIMEOUT`], the whole exchange must end
//! within [`CONNECTION_TIMEOUT`], at most [`MAX_CONNECTIONS`] connections are served at
//! once and at most [`MAX_PER_ADDRESS`] from one client address (more are closed at
//! accept), so a slow or hostile scraper holds little for long and cannot keep a scraper on
//! another address out. The endpoint has no authentication: it is meant for loopback or a
//! management network (`check-config` and the start warn about any other address).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::state::ProxyState;
use crate::stats::{upper_bound_us, Snapshot};

/// Largest request head (request line and headers) read; a longer one gets 431.
pub const MAX_REQUEST: usize = 8 * 1024;
/// The request head must arrive within this time, or the connection is closed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole exchange (request and response) must end within this time.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes read and discarded after the response, so that closing does not reset it.
const DRAIN_LIMIT: usize = 64 * 1024;
/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections from one client address served at once; more from it are closed as soon as
/// they are accepted (a scraper needs one at a time).
pub const MAX_PER_ADDRESS: usize = 8;

/// What the encoder produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until the proxy shuts down.
pub async fn serve(listener: TcpListener, state: Arc<ProxyState>) {
    let mut shutdown = state.shutdown.clone();
    let registry = Arc::new(registry(state));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(PerAddress::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, typically: back off rather than spin.
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { shutdown.wait_for(|stopping| *stopping).await.is_ok() } => return,
        };
        let Some(address_slot) = per_address.take(peer.ip()) else {
            tracing::debug!(%peer, "metrics: too many connections from this address, closing one");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics: too many connections, closing one");
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _slots = (slot, address_slot);
            match tokio::time::timeout(CONNECTION_TIMEOUT, exchange(stream, &registry)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics: connection failed"),
                Err(_) => tracing::debug!("metrics: connection timed out"),
            }
        });
    }
}

/// Connections open now per client address (only addresses with one).
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    /// Counts one more connection from `ip`, unless it has [`MAX_PER_ADDRESS`] already.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            map: self.clone(),
            ip,
        })
    }
}

/// One connection counted for its address until dropped.
struct AddressSlot {
    map: Arc<PerAddress>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.map.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The registry behind the endpoint: one collector reading `state` at each scrape.
pub fn registry(state: Arc<ProxyState>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StateCollector(state)));
    registry
}

/// The whole exposition, as served.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// Reads one request head and answers it.
async fn exchange(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        // Closed before a whole request, or too slow to send one: just close.
        Ok(Ok(None)) | Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
    };
    stream.write_all(&respond(&head, registry)).await?;
    stream.shutdown().await?;
    // Read what the client still sends (a body, the rest of an oversized head) before
    // closing, or the close resets the connection and the client may lose the response.
    let mut sink = [0u8; 4096];
    let mut left = DRAIN_LIMIT;
    while left > 0 {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => break,
        }
    }
    Ok(())
}

/// The request head (up to the blank line), `Ok(None)` if the peer closed first, or an
/// empty vector if it is longer than [`MAX_REQUEST`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return Ok(Some(buf));
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(Some(Vec::new()));
        }
        let room = (MAX_REQUEST - buf.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Where the head ends: after `\r\n\r\n` (or a bare `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// The response to a request head (empty: longer than [`MAX_REQUEST`]).
pub fn respond(head: &[u8], registry: &Registry) -> Vec<u8> {
    if head.is_empty() {
        return plain(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
            &[],
        );
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .unwrap_or_default()
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return plain(400, "Bad Request", "malformed request line\n", &[]);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return plain(400, "Bad Request", "malformed request line\n", &[]);
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return plain(404, "Not Found", "not found: try /metrics\n", &[]);
    }
    if method != "GET" && method != "HEAD" {
        return plain(
            405,
            "Method Not Allowed",
            "only GET and HEAD\n",
            &[("Allow", "GET, HEAD")],
        );
    }
    let body = match encode(registry) {
        Ok(body) => body,
        Err(_) => return plain(500, "Internal Server Error", "could not encode metrics\n", &[]),
    };
    let mut response = head_of(200, "OK", CONTENT_TYPE, body.len(), &[]);
    if method == "GET" {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

fn plain(status: u16, reason: &str, body: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut response = head_of(status, reason, "text/plain; charset=utf-8", body.len(), extra);
    response.extend_from_slice(body.as_bytes());
    response
}

fn head_of(status: u16, reason: &str, content_type: &str, length: usize, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n"
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Reads the proxy's counters at scrape time.
struct StateCollector(Arc<ProxyState>);

impl fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateCollector")
    }
}

type Labels = Vec<(&'static str, String)>;

/// A counter family read from one kind of row: name, help, value.
type Counter<T> = (&'static str, &'static str, fn(&T) -> u64);

/// A histogram family read from a pool's row: name, help, histogram.
type HistogramFamily = (&'static str, &'static str, fn(&PoolRow) -> Snapshot);

/// One counter family; nothing is written when it has no samples.
fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            metric.encode_counter::<NoLabelSet, u64, u64>(&value, None)?;
        } else {
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, u64, u64>(&value, None)?;
        }
    }
    Ok(())
}

/// One gauge family; nothing is written when it has no samples.
fn gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut metric = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            metric.encode_gauge(&value)?;
        } else {
            metric.encode_family(&labels)?.encode_gauge(&value)?;
        }
    }
    Ok(())
}

/// One histogram family in seconds (the histograms count microseconds); nothing is
/// written when it has no samples.
fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, Snapshot)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut metric = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, s) in samples {
        let buckets: Vec<(f64, u64)> = s
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| (upper_bound_us(i).map_or(f64::INFINITY, |us| us as f64 / 1e6), *n))
            .collect();
        metric.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            s.sum_us as f64 / 1e6,
            s.count(),
            &buckets,
            None,
        )?;
    }
    Ok(())
}

/// One pool's numbers.
struct PoolRow {
    labels: Labels,
    idle: i64,
    in_use: i64,
    waiting: i64,
    pinned: i64,
    checkouts: u64,
    connects: u64,
    connect_failures: u64,
    wait_timeouts: u64,
    discarded: u64,
    retried: u64,
    pipelined: u64,
    reads_fell_back: u64,
    misrouted: u64,
    xact: Snapshot,
    query: Snapshot,
    wait: Snapshot,
    received: u64,
    sent: u64,
    errors: Vec<(String, u64)>,
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl StateCollector {
    fn pools(&self) -> Vec<PoolRow> {
        let state = &self.0;
        let mut databases: Vec<&String> = state.databases.keys().collect();
        databases.sort();
        let mut rows = Vec::new();
        for database in databases {
            let mut pools = state.pools_of(database);
            pools.sort_by(|a, b| a.name.cmp(&b.name));
            for pool in pools {
                // Pools are named `database/user`.
                let user = pool
                    .name
                    .strip_prefix(database.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .unwrap_or_default()
                    .to_string();
                let (idle, in_use, waiting) = pool.counts();
                let s = &pool.stats;
                rows.push(PoolRow {
                    labels: vec![
                        ("pool", pool.name.clone()),
                        ("database", database.clone()),
                        ("user", user),
                    ],
                    idle: as_i64(idle),
                    in_use: as_i64(in_use),
                    waiting: as_i64(waiting),
                    pinned: as_i64(s.pinned.load(Ordering::Relaxed)),
                    checkouts: s.checkouts.load(Ordering::Relaxed),
                    connects: s.connects.load(Ordering::Relaxed),
                    connect_failures: s.connect_failures.load(Ordering::Relaxed),
                    wait_timeouts: s.wait_timeouts.load(Ordering::Relaxed),
                    discarded: s.discarded.load(Ordering::Relaxed),
                    retried: s.retried.load(Ordering::Relaxed),
                    pipelined: s.pipelined.load(Ordering::Relaxed),
                    reads_fell_back: pool.reads.fell_back_reads.load(Ordering::Relaxed),
                    misrouted: pool.reads.misrouted.load(Ordering::Relaxed),
                    xact: s.traffic.xact.read(),
                    query: s.traffic.query.read(),
                    wait: s.traffic.waits(s.checkouts.load(Ordering::Relaxed)),
                    received: s.traffic.received.load(Ordering::Relaxed),
                    sent: s.traffic.sent.load(Ordering::Relaxed),
                    errors: s.traffic.errors(),
                });
            }
        }
        rows
    }

    fn encode_pools(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let pools = self.pools();
        let with_state = |p: &PoolRow, state: &str| {
            let mut labels = p.labels.clone();
            labels.push(("state", state.to_string()));
            labels
        };
        gauge(
            enc,
            "switchyard_pool_servers",
            "Server connections of the pool, by state (idle, in_use).",
            None,
            pools.iter().flat_map(|p| {
                [
                    (with_state(p, "idle"), p.idle),
                    (with_state(p, "in_use"), p.in_use),
                ]
            }),
        )?;
        gauge(
            enc,
            "switchyard_pool_clients_waiting",
            "Clients queued for a server of the pool now.",
            None,
            pools.iter().map(|p| (p.labels.clone(), p.waiting)),
        )?;
        gauge(
            enc,
            "switchyard_pool_clients_pinned",
            "Clients that keep their server because they hold state that lives only there (temporary tables, LISTEN, advisory locks, WITH HOLD cursors, untracked settings); transaction and statement modes.",
            None,
            pools.iter().map(|p| (p.labels.clone(), p.pinned)),
        )?;
        let counters: [Counter<PoolRow>; 9] = [
            ("switchyard_pool_checkouts", "Servers handed to clients.", |p| p.checkouts),
            ("switchyard_pool_server_connects", "Server connections opened.", |p| p.connects),
            (
                "switchyard_pool_server_connect_failures",
                "Server connections that could not be opened.",
                |p| p.connect_failures,
            ),
            (
                "switchyard_pool_wait_timeouts",
                "Clients that waited query_wait_timeout for a server and got an error.",
                |p| p.wait_timeouts,
            ),
            (
                "switchyard_pool_servers_discarded",
                "Server connections closed instead of reused (broken, too old, idle too long, on a node that is no longer the primary).",
                |p| p.discarded,
            ),
            (
                "switchyard_pool_requests_retried",
                "Requests run again after their server failed them without effect.",
                |p| p.retried,
            ),
            (
                "switchyard_pool_statements_pipelined",
                "Statements answered through a pipeline (pipelined transaction pooling).",
                |p| p.pipelined,
            ),
            (
                "switchyard_pool_reads_to_primary",
                "Reads routed to a replica that ran on the primary: no replica could take them (lag, read-your-writes, down), or the one chosen could not be reached.",
                |p| p.reads_fell_back,
            ),
            (
                "switchyard_pool_reads_misrouted",
                "Statements classified as reads that a replica refused as writes (25006) and that ran again on the primary.",
                |p| p.misrouted,
            ),
        ];
        for (name, help, value) in counters {
            counter(
                enc,
                name,
                help,
                pools.iter().map(|p| (p.labels.clone(), value(p))),
            )?;
        }
        self.encode_traffic(enc, &pools)
    }

    /// The pools' traffic: latency histograms, bytes, errors by SQLSTATE (`crate::stats`).
    fn encode_traffic(&self, enc: &mut DescriptorEncoder, pools: &[PoolRow]) -> fmt::Result {
        let histograms: [HistogramFamily; 3] = [
            (
                "switchyard_transaction_duration",
                "Transactions (an autocommit statement is one), from the first request sent to the server to the ReadyForQuery that ends the transaction; the count is the transactions.",
                |p| p.xact,
            ),
            (
                "switchyard_query_duration",
                "Requests (a Query, a FunctionCall, an extended-protocol batch up to its Sync), from being sent to the server to their ReadyForQuery; the count is the queries.",
                |p| p.query,
            ),
            (
                "switchyard_wait_duration",
                "Waits of clients for a server of the pool (one per server handed out; 0 when one was free at once).",
                |p| p.wait,
            ),
        ];
        for (name, help, value) in histograms {
            histogram(
                enc,
                name,
                help,
                pools.iter().map(|p| (p.labels.clone(), value(p))),
            )?;
        }
        counter(
            enc,
            "switchyard_pool_client_received_bytes",
            "Bytes read from the pool's clients (after login).",
            pools.iter().map(|p| (p.labels.clone(), p.received)),
        )?;
        counter(
            enc,
            "switchyard_pool_client_sent_bytes",
            "Bytes written to the pool's clients (after login).",
            pools.iter().map(|p| (p.labels.clone(), p.sent)),
        )?;
        counter(
            enc,
            "switchyard_client_errors",
            "Errors sent to the pool's clients (from the server or the proxy), by SQLSTATE.",
            pools.iter().flat_map(|p| {
                p.errors.iter().map(|(code, n)| {
                    let mut labels = p.labels.clone();
                    labels.push(("sqlstate", code.clone()));
                    (labels, *n)
                })
            }),
        )
    }

    fn encode_clusters(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut clusters: Vec<_> = self.0.topology.clusters.values().cloned().collect();
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        let views: Vec<_> = clusters.iter().map(|c| (c.clone(), c.view())).collect();
        let label = |name: &str| vec![("cluster", name.to_string())];
        let counters: [Counter<crate::incident::Totals>; 4] = [
            (
                "switchyard_cluster_failover_events",
                "Failover events: the cluster lost or replaced its primary, or an operator held its traffic.",
                |t| t.events.load(Ordering::Relaxed),
            ),
            (
                "switchyard_cluster_clients_held",
                "Clients that waited for a primary or a resume.",
                |t| t.held.load(Ordering::Relaxed),
            ),
            (
                "switchyard_cluster_requests_retried",
                "Requests run again after their server failed them without effect.",
                |t| t.retried.load(Ordering::Relaxed),
            ),
            (
                "switchyard_cluster_client_errors",
                "Clients that got an error because of their server (lost connection, no primary within the hold, a request that could not be retried).",
                |t| t.client_errors.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            counter(
                enc,
                name,
                help,
                clusters
                    .iter()
                    .map(|c| (label(&c.name), value(&c.incidents.totals))),
            )?;
        }
        gauge(
            enc,
            "switchyard_cluster_longest_hold",
            "Longest time one client waited for a primary or a resume.",
            Some(&Unit::Seconds),
            clusters.iter().map(|c| {
                let us = c.incidents.totals.longest_hold_us.load(Ordering::Relaxed);
                (label(&c.name), us as f64 / 1e6)
            }),
        )?;
        gauge(
            enc,
            "switchyard_cluster_has_primary",
            "1 when the cluster has a primary that new transactions go to, 0 while it has none.",
            None,
            views
                .iter()
                .map(|(c, v)| (label(&c.name), i64::from(v.primary.is_some()))),
        )?;
        gauge(
            enc,
            "switchyard_cluster_view_generation",
            "Changes whenever the cluster's primary changes.",
            None,
            views.iter().map(|(c, v)| (label(&c.name), v.generation)),
        )?;

        // Nodes: every node's role in traffic; what the probes saw, for probed clusters.
        let nodes: Vec<_> = views
            .iter()
            .flat_map(|(c, v)| {
                c.nodes.iter().enumerate().filter_map(move |(i, addr)| {
                    let labels = vec![("cluster", c.name.clone()), ("node", addr.to_string())];
                    v.nodes
                        .get(i)
                        .map(|n| (c.probed(), labels, v.primary == Some(i), n))
                })
            })
            .collect();
        let probed = || nodes.iter().filter(|(probed, ..)| *probed);
        gauge(
            enc,
            "switchyard_node_primary",
            "1 for the node new transactions go to.",
            None,
            nodes
                .iter()
                .map(|(_, labels, primary, _)| (labels.clone(), i64::from(*primary))),
        )?;
        gauge(
            enc,
            "switchyard_node_fenced",
            "1 for a node that gets no writes (primary on an older timeline, or fenced by the switchover policy).",
            None,
            nodes
                .iter()
                .map(|(_, labels, _, n)| (labels.clone(), i64::from(n.fenced))),
        )?;
        gauge(
            enc,
            "switchyard_node_up",
            "1 when the node's last probe connected and answered (probed clusters only).",
            None,
            probed().map(|(_, labels, _, n)| (labels.clone(), i64::from(n.sample.reachable))),
        )?;
        gauge(
            enc,
            "switchyard_node_timeline",
            "The node's timeline, as last probed (probed clusters only).",
            None,
            probed().map(|(_, labels, _, n)| (labels.clone(), n.sample.timeline)),
        )?;
        gauge(
            enc,
            "switchyard_node_lag",
            "How far the node's replay is behind the primary's WAL position (probed clusters only).",
            Some(&Unit::Bytes),
            probed().map(|(_, labels, _, n)| (labels.clone(), n.lag_bytes)),
        )?;
        gauge(
            enc,
            "switchyard_node_lag_time",
            "How far, at most, the node's replay is behind the primary in time (probed clusters, replicas whose lag is known).",
            Some(&Unit::Seconds),
            probed().filter_map(|(_, labels, _, n)| n.lag_time.map(|t| (labels.clone(), t.as_secs_f64()))),
        )?;
        // Read routing, summed over the clients' pools of each cluster.
        let traffic: Vec<(Labels, crate::state::NodeTraffic)> = views
            .iter()
            .flat_map(|(c, _)| {
                let totals = self.0.node_traffic(c);
                c.nodes
                    .iter()
                    .zip(totals)
                    .map(|(addr, t)| (vec![("cluster", c.name.clone()), ("node", addr.to_string())], t))
                    .collect::<Vec<_>>()
            })
            .collect();
        counter(
            enc,
            "switchyard_node_reads",
            "Transactions classified as reads that ran on the node.",
            traffic.iter().map(|(l, t)| (l.clone(), t.reads)),
        )?;
        counter(
            enc,
            "switchyard_node_writes",
            "Transactions that ran on the node because they write, or may (everything not classified as a read).",
            traffic.iter().map(|(l, t)| (l.clone(), t.writes)),
        )?;
        counter(
            enc,
            "switchyard_node_read_skips",
            "Routing decisions that passed the replica over, by reason.",
            traffic.iter().flat_map(|(l, t)| {
                crate::topology::reads::Skip::ALL
                    .iter()
                    .zip(t.skipped)
                    .map(|(why, n)| {
                        let mut labels = l.clone();
                        labels.push(("reason", why.as_str().to_string()));
                        (labels, n)
                    })
                    .collect::<Vec<_>>()
            }),
        )?;
        gauge(
            enc,
            "switchyard_node_last_probe_duration",
            "Round trip of the node's last successful probe (probed clusters only).",
            Some(&Unit::Seconds),
            probed().filter_map(|(_, labels, _, n)| n.probe_time.map(|t| (labels.clone(), t.as_secs_f64()))),
        )
    }

    fn encode_plugins(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let current = self.0.plugins.current();
        let mut reports: Vec<(Labels, crate::plugins::PluginReport)> = current
            .plugins()
            .iter()
            .map(|p| (vec![("plugin", p.name.clone())], p.report()))
            .collect();
        reports.sort_by(|a, b| a.0.cmp(&b.0));
        let counters: [Counter<crate::plugins::PluginReport>; 4] = [
            (
                "switchyard_plugin_calls",
                "Calls into the plugin (of the version loaded now).",
                |r| r.calls,
            ),
            (
                "switchyard_plugin_reused_decisions",
                "Decisions answered from a decision the plugin declared reusable, without a call.",
                |r| r.reused,
            ),
            (
                "switchyard_plugin_failures",
                "Calls that failed (trap, deadline, bad answer); the built-in policy answered instead.",
                |r| r.failures,
            ),
            (
                "switchyard_plugin_instantiations",
                "Instances of the plugin made (a trapped instance is replaced).",
                |r| r.instantiations,
            ),
        ];
        for (name, help, value) in counters {
            counter(
                enc,
                name,
                help,
                reports.iter().map(|(l, r)| (l.clone(), value(r))),
            )?;
        }
        gauge(
            enc,
            "switchyard_plugin_call_p50",
            "Median duration of a call into the plugin, when known.",
            Some(&Unit::Seconds),
            reports
                .iter()
                .filter_map(|(l, r)| r.p50.map(|p| (l.clone(), p.as_secs_f64()))),
        )
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        enc.encode_descriptor(
            "switchyard",
            "The running proxy's version.",
            None,
            MetricType::Info,
        )?
        .encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        gauge(
            &mut enc,
            "switchyard_clients",
            "Clients connected now.",
            None,
            [(Labels::new(), as_i64(self.0.clients.load(Ordering::Relaxed)))],
        )?;
        self.encode_pools(&mut enc)?;
        self.encode_clusters(&mut enc)?;
        self.encode_plugins(&mut enc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_proxy_state() {
        let config = crate::config::Config::parse(
            r#"
            [clusters.main]
            nodes = [{ host = "127.0.0.1", port = 1, role = "primary" }, { host = "127.0.0.1", port = 2 }]
            [databases.app]
            cluster = "main"
            [users.app]
            password = "app"
            "#,
            "t.toml",
        )
        .unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let state = Arc::new(ProxyState::new(config, None, rx).unwrap());
        state.clients.store(3, Ordering::Relaxed);
        state.topology.clusters["main"]
            .incidents
            .held(Duration::from_millis(1500));
        let text = encode(&registry(state)).unwrap();
        let info = format!("switchyard_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        for line in [
            info.as_str(),
            "switchyard_clients 3",
            "# TYPE switchyard_cluster_clients_held counter",
            "switchyard_cluster_clients_held_total{cluster=\"main\"} 1",
            "switchyard_cluster_longest_hold_seconds{cluster=\"main\"} 1.5",
            "switchyard_cluster_has_primary{cluster=\"main\"} 1",
            "switchyard_node_primary{cluster=\"main\",node=\"127.0.0.1:1\"} 1",
            "switchyard_node_primary{cluster=\"main\",node=\"127.0.0.1:2\"} 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Unprobed: no probe results; no pools or plugins yet: no empty families.
        assert!(
            !text.contains("switchyard_node_up") && !text.contains("switchyard_pool_"),
            "{text}"
        );
    }

    #[test]
    fn finds_the_end_of_a_request_head() {
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\n"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nbody"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\nHost: x\r\n"), None);
    }

    fn status(response: &[u8]) -> String {
        let text = String::from_utf8_lossy(response);
        text.lines().next().unwrap_or_default().to_string()
    }

    #[test]
    fn answers_only_get_of_metrics() {
        let registry = Registry::default();
        assert_eq!(
            status(&respond(b"GET /nope HTTP/1.0\r\n", &registry)),
            "HTTP/1.1 404 Not Found"
        );
        let post = respond(b"POST /metrics HTTP/1.1\r\nHost: x\r\n", &registry);
        assert_eq!(status(&post), "HTTP/1.1 405 Method Not Allowed");
        assert!(String::from_utf8_lossy(&post).contains("Allow: GET, HEAD\r\n"));
        assert_eq!(
            status(&respond(b"GET\r\n", &registry)),
            "HTTP/1.1 400 Bad Request"
        );
        assert_eq!(
            status(&respond(b"GET /metrics SMTP\r\n", &registry)),
            "HTTP/1.1 400 Bad Request"
        );
        assert_eq!(
            status(&respond(b"\xff\xfe\r\n", &registry)),
            "HTTP/1.1 400 Bad Request"
        );
        assert_eq!(
            status(&respond(b"", &registry)),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        let ok = respond(b"GET /metrics?x=1 HTTP/1.1\r\n", &registry);
        let ok = String::from_utf8_lossy(&ok);
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE) && ok.ends_with("# EOF\n"), "{ok}");
        let head = respond(b"HEAD /metrics HTTP/1.1\r\n", &registry);
        assert!(String::from_utf8_lossy(&head).ends_with("\r\n\r\n"));
    }
}
