//! The benchmark's arithmetic: what one pgbench run measured, which run of a cell is its
//! median, whether the read-routing row's reads spread over the replicas, and how numbers,
//! ratios and percentages are printed. Every figure in the report goes through here, so it
//! is unit-tested against the formats users and docs parse.

use crate::accounting::RunCpu;

/// One figure of a run: measured, or an error (`ERR`: pgbench printed no summary).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Figure {
    Value(f64),
    Err,
}

impl Figure {
    /// The number, when there is one.
    pub fn value(self) -> Option<f64> {
        match self {
            Figure::Value(v) => Some(v),
            Figure::Err => None,
        }
    }
}

/// How the CPU was shared during a run (pidstat): average %CPU of Postgres (all backends),
/// pgbench and the proxy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuShare {
    pub postgres: f64,
    pub pgbench: f64,
    pub proxy: f64,
}

/// What one pgbench run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// tps as pgbench printed it (shown as is in "tps of each round"), or `ERR`.
    pub tps_text: String,
    pub tps: Figure,
    /// Average latency, ms.
    pub latency: Figure,
    /// p99 latency, ms, from the sampled log (none when it has no lines).
    pub p99: Option<f64>,
    /// Only measured for `-M simple -c 64` of the matrix.
    pub share: Option<CpuShare>,
    /// CPU and context switches from `/proc` over the run: the matrix and the reconnect
    /// rows only.
    pub cpu: Option<RunCpu>,
    /// pgbench's "initial connection time", ms (none with -C).
    pub login_ms: Option<f64>,
}

/// Every run of one cell (target, mode, clients), with its failed transactions and notes.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub samples: Vec<Sample>,
    pub failed: u64,
    /// Problems of its runs (a ⚠ in the tables).
    pub noted: bool,
}

impl Cell {
    /// The run with the median tps: the middle one of the runs sorted by tps, highest first
    /// (of two, the higher; errors sort last).
    pub fn median(&self) -> Option<&Sample> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        let key = |i: usize| self.samples[i].tps.value().unwrap_or(-1.0);
        order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
        order
            .get((self.samples.len().max(1) - 1) / 2)
            .map(|&i| &self.samples[i])
    }

    /// The median run's tps, when it has one.
    pub fn median_tps(&self) -> Option<f64> {
        self.median().and_then(|s| s.tps.value())
    }
}

/// `a/b` with `decimals` decimals, `n/a` without both numbers or when `b` is 0.
pub fn ratio(a: Option<f64>, b: Option<f64>, decimals: usize) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.*}", decimals, a / b),
        _ => "n/a".to_owned(),
    }
}

/// `a/b - 1` as a signed percentage with one decimal (`+1.2%`), `n/a` when `b` is not above 0.
pub fn pct(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:+.1}%", (a / b - 1.0) * 100.0)
    } else {
        "n/a".to_owned()
    }
}

/// A figure with fixed decimals; `ERR` stays `ERR`.
pub fn fmt_figure(f: Figure, decimals: usize) -> String {
    match f {
        Figure::Value(v) => format!("{v:.decimals$}"),
        Figure::Err => "ERR".to_owned(),
    }
}

/// An optional number with fixed decimals, `-` when missing.
pub fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// p99 latency in ms of pgbench's per-transaction log lines (`client tx latency_us ...`):
/// the value at rank `floor(n * 0.99)` (at least 1) of the sorted latencies.
pub fn p99_ms<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<f64> {
    let mut v: Vec<f64> = lines
        .into_iter()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((v.len() as f64 * 0.99) as usize).max(1);
    Some(v[rank - 1] / 1000.0)
}

/// Transactions of pgbench's per-transaction log lines (`client tx latency_us script
/// epoch_s epoch_us ...`, stamped when the transaction completed) that completed within
/// `window`, µs since the epoch, both ends included.
pub fn completed_within<'a>(lines: impl IntoIterator<Item = &'a str>, window: (u64, u64)) -> u64 {
    lines
        .into_iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let s: u64 = f.get(4)?.parse().ok()?;
            let us: u64 = f.get(5)?.parse().ok()?;
            Some(s * 1_000_000 + us)
        })
        .filter(|t| (window.0..=window.1).contains(t))
        .count() as u64
}

/// Average %CPU by process group over a `pidstat -u` log (LC_ALL=C), summed per interval
/// and divided by the intervals (pidstat's own Average leaves out processes that ended
/// before it did). `proxy_name` is the proxy binary's name as pidstat shows it.
pub fn cpu_share(pidstat: &str, proxy_name: &str) -> CpuShare {
    let short: String = proxy_name.chars().take(15).collect();
    let mut intervals = std::collections::BTreeSet::new();
    let (mut pg, mut bench, mut proxy) = (0.0, 0.0, 0.0);
    for line in pidstat.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || !is_clock(f[0]) || f[f.len() - 1] == "Command" {
            continue;
        }
        intervals.insert(f[0]);
        let cmd = f[f.len() - 1];
        let cpu: f64 = f[f.len() - 3].parse().unwrap_or(0.0);
        if cmd.starts_with("postgres") {
            pg += cpu;
        } else if cmd == "pgbench" {
            bench += cpu;
        } else if cmd.starts_with("switchyard") || cmd.starts_with("pgbouncer") || cmd == short {
            proxy += cpu;
        }
    }
    let n = intervals.len().max(1) as f64;
    CpuShare {
        postgres: pg / n,
        pgbench: bench / n,
        proxy: proxy / n,
    }
}

fn is_clock(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 8 && b[2] == b':' && b[5] == b':' && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit())
}

/// Established TCP connections to `port` on this machine (the client side's remote port),
/// from `/proc/net/tcp`-format text: what `ss -tn state established dport = :port` counts.
pub fn established_to(proc_net_tcp: &str, port: u16) -> usize {
    proc_net_tcp
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && f[3] == "01"
                && f[2]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

/// Where the read-routing row's transactions ran, on one node, counted over its tps runs.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeReads {
    /// `host:port`, as SHOW NODES names it.
    pub node: String,
    pub primary: bool,
    /// SHOW NODES: transactions the proxy routed there as reads and as writes (none when
    /// SHOW NODES could not be read).
    pub reads: Option<u64>,
    pub writes: Option<u64>,
    /// The node's own count: `xact_commit` of database `bench` in `pg_stat_database`
    /// (none when it could not be read).
    pub committed: Option<u64>,
}

impl NodeReads {
    /// The counts since `before` (the same node earlier; none: all of them), each unknown
    /// when unknown then or now.
    pub fn since(&self, before: Option<&NodeReads>) -> NodeReads {
        let delta =
            |f: fn(&NodeReads) -> Option<u64>| Some(f(self)?.saturating_sub(before.map_or(Some(0), f)?));
        NodeReads {
            node: self.node.clone(),
            primary: self.primary,
            reads: delta(|n| n.reads),
            writes: delta(|n| n.writes),
            committed: delta(|n| n.committed),
        }
    }
}

/// A count, `-` when missing.
pub fn fmt_count(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A replica whose own transaction count over the read-routing row is below this share of
/// the primary's got "about no reads": with the reads spread, each replica runs about
/// `1 / replicas` of the routed half of the row, the primary the other half.
pub const MIN_REPLICA_SHARE: f64 = 0.05;

/// The problems of the read-routing row's spread: a replica that, by its own count, ran
/// under [`MIN_REPLICA_SHARE`] of the primary's transactions, or to which SHOW NODES says
/// no read was routed; counts that could not be read.
pub fn spread_problems(nodes: &[NodeReads]) -> Vec<String> {
    let mut problems = Vec::new();
    let primary = nodes.iter().find(|n| n.primary).and_then(|n| n.committed);
    for n in nodes.iter().filter(|n| !n.primary) {
        match (n.committed, primary) {
            (Some(c), Some(p)) if (c as f64) < p as f64 * MIN_REPLICA_SHARE => problems.push(format!(
                "read routing: replica {} ran {c} transactions, the primary {p}: the reads did not spread over the replicas",
                n.node
            )),
            (Some(_), Some(_)) => {}
            _ => problems.push(format!(
                "read routing: no transaction count (pg_stat_database) of {} or the primary",
                n.node
            )),
        }
        match n.reads {
            Some(0) => problems.push(format!(
                "read routing: SHOW NODES counts no read routed to replica {}",
                n.node
            )),
            Some(_) => {}
            None => problems.push(format!("read routing: SHOW NODES does not count {}", n.node)),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tps: Option<f64>) -> Sample {
        Sample {
            tps_text: tps.map_or("ERR".into(), |t| format!("{t:.6}")),
            tps: tps.map_or(Figure::Err, Figure::Value),
            latency: Figure::Value(1.0),
            p99: None,
            share: None,
            cpu: None,
            login_ms: None,
        }
    }

    fn cell(tps: &[Option<f64>]) -> Cell {
        Cell {
            samples: tps.iter().map(|&t| sample(t)).collect(),
            ..Default::default()
        }
    }

    /// The median run of 3 is the middle tps whatever the order of the rounds; of 2 the
    /// higher; of 1 itself; a failed run (ERR) counts as the lowest; no run, no median.
    #[test]
    fn median_is_the_middle_run_by_tps() {
        assert_eq!(
            cell(&[Some(10.0), Some(30.0), Some(20.0)]).median_tps(),
            Some(20.0)
        );
        assert_eq!(
            cell(&[Some(30.0), Some(20.0), Some(10.0)]).median_tps(),
            Some(20.0)
        );
        assert_eq!(cell(&[Some(5.0), Some(7.0)]).median_tps(), Some(7.0));
        assert_eq!(cell(&[Some(5.0)]).median_tps(), Some(5.0));
        assert_eq!(cell(&[None, Some(9.0), Some(3.0)]).median_tps(), Some(3.0));
        assert_eq!(cell(&[None, Some(9.0)]).median_tps(), Some(9.0));
        assert_eq!(cell(&[None]).median().map(|s| s.tps), Some(Figure::Err));
        assert!(cell(&[]).median().is_none());
    }

    /// The median is a whole run: its latency goes with its tps, not another run's.
    #[test]
    fn median_keeps_the_runs_figures_together() {
        let mut c = cell(&[Some(10.0), Some(30.0), Some(20.0)]);
        c.samples[2].latency = Figure::Value(2.5);
        assert_eq!(c.median().map(|s| s.latency), Some(Figure::Value(2.5)));
    }

    /// Ratios and percentages as the report and its last lines print them.
    #[test]
    fn ratios_and_percentages() {
        assert_eq!(ratio(Some(31_234.5), Some(35_000.0), 2), "0.89");
        assert_eq!(ratio(Some(2.0), Some(3.0), 3), "0.667");
        assert_eq!(ratio(None, Some(3.0), 2), "n/a");
        assert_eq!(ratio(Some(2.0), None, 2), "n/a");
        assert_eq!(ratio(Some(2.0), Some(0.0), 2), "n/a");
        assert_eq!(pct(10_400.0, 10_000.0), "+4.0%");
        assert_eq!(pct(9_950.0, 10_000.0), "-0.5%");
        assert_eq!(pct(1.0, 0.0), "n/a");
    }

    /// Fixed decimals; ERR and missing values print as the old script printed them.
    #[test]
    fn figures_print_with_fixed_decimals() {
        assert_eq!(fmt_figure(Figure::Value(12_345.678_9), 1), "12345.7");
        assert_eq!(fmt_figure(Figure::Value(1.5), 3), "1.500");
        assert_eq!(fmt_figure(Figure::Value(2_000.4), 0), "2000");
        assert_eq!(fmt_figure(Figure::Err, 1), "ERR");
        assert_eq!(fmt_opt(None, 3), "-");
        assert_eq!(fmt_opt(Some(0.1234), 3), "0.123");
    }

    /// p99 of 200 latencies 1..=200 µs is the 198th (floor(200 * 0.99)), in ms; of one line,
    /// that line; lines without a number are skipped; none at all gives none.
    #[test]
    fn p99_from_pgbench_log_lines() {
        let lines: Vec<String> = (1..=200)
            .rev()
            .map(|i| format!("0 {i} {i} 0 1700000000 1"))
            .collect();
        assert_eq!(p99_ms(lines.iter().map(String::as_str)), Some(0.198));
        assert_eq!(p99_ms(["3 1 4500 0 1 2"]), Some(4.5));
        assert_eq!(p99_ms(["garbage", "0 1 1000 0 1 1"]), Some(1.0));
        assert_eq!(p99_ms(Vec::<&str>::new()), None);
    }

    /// Lines of a real `pgbench -S -c 2 -j 2 -t 3 -l` log (both threads' files) count when
    /// their completion stamp is inside the window, its ends included; lines outside it,
    /// and lines that are not log lines, do not.
    #[test]
    fn transactions_completed_within_a_window() {
        let log = "\
0 1 449 0 1796604035 849078
0 2 66 0 1796604035 849156
0 3 30 0 1796604035 849188
1 1 492 0 1796604035 849098
1 2 649 0 1796604035 849751
1 3 93 0 1796604035 849845
garbage line
";
        let at = |us: u64| 1_796_604_035_000_000 + us;
        assert_eq!(completed_within(log.lines(), (at(849_098), at(849_751))), 4);
        assert_eq!(completed_within(log.lines(), (0, u64::MAX)), 6);
        assert_eq!(completed_within(log.lines(), (at(849_846), u64::MAX)), 0);
    }

    /// pidstat lines summed per group and divided by the intervals; headers, Average lines
    /// and other programs do not count; a proxy binary with another name counts as proxy.
    #[test]
    fn cpu_share_from_pidstat() {
        let log = "\
Linux 6.1.0 (host) \t12/06/26 \t_x86_64_\t(2 CPU)

12:00:01      UID       PID    %usr %system  %guest   %wait    %CPU   CPU  Command
12:00:02      104      1001   30.00   10.00    0.00    0.00   40.00     0  postgres
12:00:02      104      1002   20.00   10.00    0.00    0.00   30.00     1  postgres
12:00:02        0      2001   20.00   20.00    0.00    0.00   40.00     1  pgbench
12:00:02        0      3001   50.00   10.00    0.00    0.00   60.00     0  switchyard
12:00:02        0      4001    1.00    0.00    0.00    0.00    1.00     0  sshd

12:00:02      UID       PID    %usr %system  %guest   %wait    %CPU   CPU  Command
12:00:03      104      1001   50.00   10.00    0.00    0.00   60.00     0  postgres
12:00:03        0      2001   10.00   10.00    0.00    0.00   20.00     1  pgbench
12:00:03        0      3002   30.00   10.00    0.00    0.00   40.00     0  my-proxy-build-

Average:      104      1001   40.00   10.00    0.00    0.00   50.00     -  postgres
";
        let s = cpu_share(log, "my-proxy-build-with-a-long-name");
        assert_eq!(
            s,
            CpuShare {
                postgres: 65.0,
                pgbench: 30.0,
                proxy: 50.0
            }
        );
        assert_eq!(
            cpu_share("", "switchyard"),
            CpuShare {
                postgres: 0.0,
                pgbench: 0.0,
                proxy: 0.0
            }
        );
    }

    fn node(port: u16, primary: bool, reads: Option<u64>, committed: Option<u64>) -> NodeReads {
        NodeReads {
            node: format!("127.0.0.1:{port}"),
            primary,
            reads,
            writes: Some(0),
            committed,
        }
    }

    /// Reads spread over both replicas: no problem. A replica below 5 % of the primary's
    /// transactions by its own count, one SHOW NODES routed nothing to, and a count that
    /// could not be read are problems, named by node. Counts over the row are differences,
    /// unknown when either end is.
    #[test]
    fn reads_that_did_not_spread_are_problems() {
        let spread = [
            node(1, true, Some(0), Some(100_000)),
            node(2, false, Some(50_000), Some(50_010)),
            node(3, false, Some(49_000), Some(49_100)),
        ];
        assert!(spread_problems(&spread).is_empty());
        let one = [
            node(1, true, Some(0), Some(100_000)),
            node(2, false, Some(99_000), Some(99_010)),
            node(3, false, Some(0), Some(4_000)),
        ];
        let p = spread_problems(&one);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("replica 127.0.0.1:3 ran 4000 transactions, the primary 100000"));
        assert!(p[1].contains("no read routed to replica 127.0.0.1:3"));
        let unknown = [node(1, true, None, Some(10)), node(2, false, None, None)];
        assert_eq!(
            node(2, false, Some(50), Some(70)).since(Some(&node(2, false, Some(20), None))),
            node(2, false, Some(30), None)
        );
        assert_eq!(
            node(2, false, Some(50), Some(70)).since(None),
            node(2, false, Some(50), Some(70))
        );
        assert_eq!(spread_problems(&unknown).len(), 2);
        assert_eq!(fmt_count(None), "-");
        assert_eq!(fmt_count(Some(7)), "7");
    }

    /// Only established connections whose remote port is the proxy's count (not listening
    /// sockets, not the server side, not other ports).
    #[test]
    fn established_connections_from_proc_net_tcp() {
        // 6432 = 0x1920; state 01 established, 0A listen.
        let tcp =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1920 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
   1: 0100007F:9C40 0100007F:1920 01 00000000:00000000 00:00000000 00000000     0        0 2
   2: 0100007F:9C41 0100007F:1920 01 00000000:00000000 00:00000000 00000000     0        0 3
   3: 0100007F:1920 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4
   4: 0100007F:9C42 0100007F:1920 06 00000000:00000000 00:00000000 00000000     0        0 5
   5: 0100007F:9C43 0100007F:1921 01 00000000:00000000 00:00000000 00000000     0        0 6
";
        assert_eq!(established_to(tcp, 6432), 2);
        assert_eq!(established_to(tcp, 6433), 1);
        assert_eq!(established_to(tcp, 5432), 0);
    }
}
