//! CPU time and context switches of the processes under test, from their own accounting in
//! `/proc`, read before and after a pgbench run: the proxy's user and system time
//! (`/proc/PID/stat`) and its context switches summed over its threads
//! (`/proc/PID/task/*/status`), and Postgres' CPU time, the postmaster's and all its
//! children's. The per-transaction figures of the "CPU per transaction" table come from
//! here.

use std::fs;
use std::path::Path;

pub use switchyard_tests::proxy::parse_ctx_switches;

/// The CPU times of one process from `/proc/PID/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: u32,
    /// User and system time of the process (all its threads).
    pub utime: u64,
    pub stime: u64,
    /// User and system time of its children that it has waited for (reaped).
    pub cutime: u64,
    pub cstime: u64,
}

/// Parses the text of `/proc/PID/stat`. The process name (field 2) is in parentheses and
/// may itself contain spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is index 0 here: ppid is field 4, utime..cstime fields 14..17.
    let f: Vec<&str> = after_name.split_whitespace().collect();
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(ProcStat {
        ppid: f.get(1)?.parse().ok()?,
        utime: num(11)?,
        stime: num(12)?,
        cutime: num(13)?,
        cstime: num(14)?,
    })
}

/// `sysconf(_SC_CLK_TCK)`: the clock ticks per second of `/proc/PID/stat`'s times.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

fn stat_of(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The postmaster's pid: the first line of `postmaster.pid` in the data directory.
pub fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// A proxy's counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyUsage {
    pub pid: u32,
    pub utime: u64,
    pub stime: u64,
    /// Voluntary + nonvoluntary, summed over the threads alive at the moment of reading.
    pub ctx_switches: u64,
}

impl ProxyUsage {
    /// Reads `/proc/PID/stat` and every `/proc/PID/task/*/status`; none when the process is
    /// gone.
    pub fn read(pid: u32) -> Option<Self> {
        let stat = stat_of(pid)?;
        let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let ctx_switches = tasks
            .flatten()
            .filter_map(|t| fs::read_to_string(t.path().join("status")).ok())
            .filter_map(|s| parse_ctx_switches(&s))
            .sum();
        Some(Self {
            pid,
            utime: stat.utime,
            stime: stat.stime,
            ctx_switches,
        })
    }
}

/// Postgres' CPU time at one moment, in ticks: the postmaster's own utime + stime, its
/// reaped children's (cutime + cstime: backends and workers that have exited), and the
/// utime + stime of every live process whose parent is the postmaster (see
/// [`consistent_total`] for backends exiting meanwhile).
pub fn postgres_ticks(postmaster: u32) -> Option<u64> {
    consistent_total(
        || stat_of(postmaster),
        || {
            let children = fs::read_dir("/proc")
                .ok()?
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(stat_of)
                .filter(|s| s.ppid == postmaster)
                .map(|s| s.utime + s.stime)
                .sum();
            Some(children)
        },
    )
}

/// The postmaster's stat (`postmaster`), then its live children's ticks (`children`),
/// then its stat again: a child reaped while the children were listed would be counted in
/// neither (or in both), so the reading is repeated until the reaped children's times did
/// not change across the listing (a backend that exits with no tick of CPU changes
/// nothing). After a run, the run's backends exit all at once; without this, up to a third
/// of Postgres' CPU went missing at 64 clients. Gives up (none) after 100 tries.
fn consistent_total(
    mut postmaster: impl FnMut() -> Option<ProcStat>,
    mut children: impl FnMut() -> Option<u64>,
) -> Option<u64> {
    for _ in 0..100 {
        let pm = postmaster()?;
        let live = children()?;
        let again = postmaster()?;
        if (again.cutime, again.cstime) == (pm.cutime, pm.cstime) {
            return Some(pm.utime + pm.stime + pm.cutime + pm.cstime + live);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    None
}

/// The counters read before or after a run (none: not measured or not readable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    pub proxy: Option<ProxyUsage>,
    pub postgres: Option<u64>,
    /// User + system µs of the bench's children that ended and were waited for.
    pub children_us: Option<u64>,
}

/// User + system CPU (µs) of this process' children that ended and were waited for
/// (`getrusage(RUSAGE_CHILDREN)`). Around one pgbench run, whose process is the only child
/// waited for in between, the difference is pgbench's own CPU.
fn children_us() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_CHILDREN is a valid `who`.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let usage = unsafe { usage.assume_init() };
    let us =
        |t: libc::timeval| Some(u64::try_from(t.tv_sec).ok()? * 1_000_000 + u64::try_from(t.tv_usec).ok()?);
    Some(us(usage.ru_utime)? + us(usage.ru_stime)?)
}

impl Reading {
    /// The proxy `proxy_pid` (none: direct Postgres) and the Postgres of `postmaster`.
    pub fn take(proxy_pid: Option<u32>, postmaster: Option<u32>) -> Self {
        Self {
            proxy: proxy_pid.and_then(ProxyUsage::read),
            postgres: postmaster.and_then(postgres_ticks),
            children_us: children_us(),
        }
    }

    /// What was spent between `before` and this reading over `transactions`, with `tck`
    /// ticks per second. The proxy's figures are none when either reading lacks them, the
    /// pid changed (a restart) or a counter went backwards.
    pub fn since(&self, before: &Reading, transactions: u64, tck: u64) -> RunCpu {
        let us = |ticks: u64| ticks * 1_000_000 / tck;
        let proxy = match (before.proxy, self.proxy) {
            (Some(b), Some(a))
                if a.pid == b.pid
                    && a.utime >= b.utime
                    && a.stime >= b.stime
                    && a.ctx_switches >= b.ctx_switches =>
            {
                Some(ProxyCpu {
                    user_us: us(a.utime - b.utime),
                    system_us: us(a.stime - b.stime),
                    ctx_switches: a.ctx_switches - b.ctx_switches,
                })
            }
            _ => None,
        };
        let postgres_us = match (before.postgres, self.postgres) {
            (Some(b), Some(a)) if a >= b => Some(us(a - b)),
            _ => None,
        };
        let pgbench_us = match (before.children_us, self.children_us) {
            (Some(b), Some(a)) if a >= b => Some(a - b),
            _ => None,
        };
        RunCpu {
            transactions,
            proxy,
            postgres_us,
            pgbench_us,
        }
    }
}

/// A proxy's CPU time (µs) and context switches over a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyCpu {
    pub user_us: u64,
    pub system_us: u64,
    pub ctx_switches: u64,
}

/// What one run cost: the proxy's CPU and context switches (none for direct Postgres or
/// when unreadable), Postgres' CPU and pgbench's, over the run's transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunCpu {
    pub transactions: u64,
    pub proxy: Option<ProxyCpu>,
    pub postgres_us: Option<u64>,
    /// pgbench's own CPU (user + system µs) over the run.
    pub pgbench_us: Option<u64>,
}

impl RunCpu {
    /// `total` per transaction (none without transactions).
    pub fn per_tx(&self, total: u64) -> Option<f64> {
        (self.transactions > 0).then(|| total as f64 / self.transactions as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/proc/PID/stat` line captured from `cat /proc/self/stat` run as `./a (b) c)` (its
    /// four times, zero in the capture, set to distinct values): the fields after the last
    /// `)` give the ppid, utime, stime, cutime and cstime; truncated or garbled text gives
    /// none.
    #[test]
    fn stat_with_spaces_and_parentheses_in_the_name() {
        let line = "29350 (a (b) c)) R 29346 29346 26754 0 -1 4194304 97 0 0 0 1234 567 89 10 20 0 \
                    1 0 1146764 3133440 382 18446744073709551615 94005430890496 94005430910377 \
                    140733422234400 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94005430926384 \
                    94005430928000 94005761912832 140733422238226 140733422238253 \
                    140733422238253 140733422239725 0\n";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                ppid: 29346,
                utime: 1234,
                stime: 567,
                cutime: 89,
                cstime: 10,
            })
        );
        let plain = "77 (postgres) S 1 77 77 0 -1 4194560 900 0 0 0 5 6 7 8 20 0 1 0 100 0 0";
        assert_eq!(
            parse_stat(plain),
            Some(ProcStat {
                ppid: 1,
                utime: 5,
                stime: 6,
                cutime: 7,
                cstime: 8,
            })
        );
        assert_eq!(
            parse_stat("77 (postgres) S 1 77 77 0 -1 4194560 900 0 0 0 5 6"),
            None
        );
        assert_eq!(parse_stat("no parenthesis 1 2 3"), None);
        assert_eq!(parse_stat(""), None);
    }

    /// Voluntary and nonvoluntary switches of a thread's status are summed; a status
    /// without either line gives none.
    #[test]
    fn context_switches_from_status() {
        // Captured from a shell's /proc/PID/task/PID/status (the long lines cut short).
        let status = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t26754\nNgid:\t0\n\
                      Pid:\t26754\nPPid:\t26714\nTracerPid:\t0\nThreads:\t1\n\
                      VmRSS:\t    4096 kB\nCpus_allowed_list:\t0-1\nMems_allowed_list:\t0\n\
                      voluntary_ctxt_switches:\t129\nnonvoluntary_ctxt_switches:\t44\n";
        assert_eq!(parse_ctx_switches(status), Some(173));
        assert_eq!(
            parse_ctx_switches("Name:\tx\nvoluntary_ctxt_switches:\t3\n"),
            None
        );
    }

    /// The reading of this very process parses: its own stat and threads' status.
    #[test]
    fn this_process_can_be_read() {
        let me = ProxyUsage::read(std::process::id()).expect("own /proc entries");
        assert_eq!(me.pid, std::process::id());
        assert!(me.ctx_switches > 0);
        assert!(clock_ticks() > 0);
        assert!(postgres_ticks(std::process::id()).is_some());
    }

    /// Postgres' total is the postmaster's own, reaped and live children's ticks, taken from
    /// a listing across which no child was reaped: a listing during which the reaped times
    /// grew (a backend with 40 ticks reaped meanwhile) is repeated.
    #[test]
    fn postgres_total_is_read_consistently() {
        let pm = |cutime| ProcStat {
            ppid: 1,
            utime: 10,
            stime: 20,
            cutime,
            cstime: 400,
        };
        // pm, children, pm: first 300 reaped, 45 live ticks, then 340 reaped (one child of
        // 40 ticks gone); then 340, 5 live, 340.
        let mut pms = [pm(300), pm(340), pm(340), pm(340)].into_iter();
        let mut kids = [45, 5].into_iter();
        assert_eq!(
            consistent_total(|| pms.next(), || kids.next()),
            Some(10 + 20 + 340 + 400 + 5)
        );
        assert_eq!(consistent_total(|| Some(pm(1)), || Some(7)), Some(438));
        assert_eq!(consistent_total(|| None, || Some(7)), None);
    }

    fn usage(pid: u32, utime: u64, stime: u64, ctx: u64) -> Option<ProxyUsage> {
        Some(ProxyUsage {
            pid,
            utime,
            stime,
            ctx_switches: ctx,
        })
    }

    /// Deltas in µs at 100 ticks a second (pgbench's already in µs) and per transaction; no
    /// proxy figures across a restart (another pid), when a counter went backwards or a
    /// reading is missing; nothing per transaction without transactions.
    #[test]
    fn deltas_over_a_run() {
        let before = Reading {
            proxy: usage(9, 100, 200, 1_000),
            postgres: Some(5_000),
            children_us: Some(70_000),
        };
        let after = Reading {
            proxy: usage(9, 150, 300, 3_000),
            postgres: Some(5_400),
            children_us: Some(2_070_000),
        };
        let run = after.since(&before, 10_000, 100);
        assert_eq!(
            run,
            RunCpu {
                transactions: 10_000,
                proxy: Some(ProxyCpu {
                    user_us: 500_000,
                    system_us: 1_000_000,
                    ctx_switches: 2_000,
                }),
                postgres_us: Some(4_000_000),
                pgbench_us: Some(2_000_000),
            }
        );
        assert_eq!(run.per_tx(500_000), Some(50.0));
        assert_eq!(run.per_tx(2_000), Some(0.2));
        let restarted = Reading {
            proxy: usage(10, 150, 300, 3_000),
            ..after
        };
        assert_eq!(restarted.since(&before, 1, 100).proxy, None);
        let backwards = Reading {
            proxy: usage(9, 150, 300, 900),
            ..after
        };
        assert_eq!(backwards.since(&before, 1, 100).proxy, None);
        let direct = Reading::default().since(&Reading::default(), 5, 100);
        assert_eq!(
            (direct.proxy, direct.postgres_us, direct.pgbench_us),
            (None, None, None)
        );
        assert_eq!(after.since(&before, 0, 100).per_tx(7), None);
    }
}
