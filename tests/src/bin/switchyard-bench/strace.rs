//! System calls per transaction: `strace -c -f -p PID` attached to a running proxy for a
//! short pgbench run of its own, detached with SIGINT at the end, and its summary table
//! parsed. Tracing slows the proxy down many times over, which is why these runs are not the
//! measured ones: only the counts per transaction are taken from them.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::interrupt;
use crate::measure::wait_child;

/// The system calls the report shows one by one; the rest are summed as "other".
pub const KINDS: [&str; 9] = [
    "sendto",
    "recvfrom",
    "epoll_wait",
    "epoll_ctl",
    "futex",
    "read",
    "write",
    "writev",
    "readv",
];

/// The calls of `strace -c`'s summary table, by system call, and its total.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Syscalls {
    pub calls: BTreeMap<String, u64>,
    pub total: u64,
}

impl Syscalls {
    /// Calls of `name` (0 when the table does not list it).
    pub fn count(&self, name: &str) -> u64 {
        self.calls.get(name).copied().unwrap_or(0)
    }

    /// Calls of every system call not in [`KINDS`].
    pub fn other(&self) -> u64 {
        self.total - KINDS.iter().map(|k| self.count(k)).sum::<u64>()
    }
}

/// Parses `strace -c`'s summary: the header and the dashed lines are skipped; a row is
/// `% time, seconds, usecs/call, calls, [errors,] syscall` (errors is blank when there were
/// none), and the last row is `total`. `Err` without a total row (strace did not finish).
pub fn parse_summary(text: &str) -> Result<Syscalls, String> {
    let mut s = Syscalls::default();
    let mut total = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0].parse::<f64>().is_err() {
            continue;
        }
        let (Ok(calls), Some(&name)) = (f[3].parse::<u64>(), f.last()) else {
            continue;
        };
        if name == "total" {
            total = Some(calls);
        } else {
            *s.calls.entry(name.to_owned()).or_default() += calls;
        }
    }
    s.total = total.ok_or_else(|| "no total line in strace -c's summary".to_owned())?;
    let listed: u64 = s.calls.values().sum();
    if listed != s.total {
        return Err(format!(
            "strace -c's rows add up to {listed}, its total line says {}",
            s.total
        ));
    }
    Ok(s)
}

/// `strace -c -f -p PID` attached to a process, its summary going to a file.
pub struct Tracer {
    child: Option<Child>,
    summary: PathBuf,
    log: PathBuf,
}

impl Tracer {
    /// Attaches to `pid` and all its threads, the summary to `summary` (strace's own
    /// messages beside it, `.log`), and waits up to 10 s until strace says it is attached.
    pub fn attach(pid: u32, summary: &Path) -> Result<Self> {
        let log = summary.with_extension("log");
        let child = Command::new("strace")
            .args(["-c", "-f", "-p", &pid.to_string(), "-o"])
            .arg(summary)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .context("spawning strace")?;
        let mut tracer = Self {
            child: Some(child),
            summary: summary.to_path_buf(),
            log,
        };
        let attached = format!("Process {pid} attached");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let said = fs::read_to_string(&tracer.log).unwrap_or_default();
            if said.contains(&attached) {
                return Ok(tracer);
            }
            let exited = tracer.child.as_mut().map(|c| c.try_wait()).transpose()?.flatten();
            if exited.is_some() || Instant::now() > deadline {
                tracer.stop();
                bail!(
                    "strace did not attach to pid {pid}: {}",
                    said.trim().lines().last().unwrap_or("no message")
                );
            }
            interrupt::sleep(Duration::from_millis(20))?;
        }
    }

    /// Detaches (SIGINT: strace detaches from every thread and writes its summary) and
    /// returns the summary.
    pub fn detach(mut self) -> Result<Syscalls> {
        self.stop();
        let text = fs::read_to_string(&self.summary)
            .with_context(|| format!("reading {}", self.summary.display()))?;
        parse_summary(&text).map_err(|e| {
            let said = fs::read_to_string(&self.log).unwrap_or_default();
            anyhow::anyhow!("{e}; strace said: {}", said.trim())
        })
    }

    /// SIGINT, then up to 30 s for strace to detach and exit (killed after that).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the strace we spawned, not yet waited for.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let _ = wait_child(&mut child, Duration::from_secs(30));
    }
}

impl Drop for Tracer {
    /// Never leaves a proxy traced when a run ends early.
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a strace run counted, over the transactions of its pgbench run.
#[derive(Clone, Debug, PartialEq)]
pub struct SyscallRun {
    pub transactions: u64,
    pub syscalls: Syscalls,
}

impl SyscallRun {
    /// Calls of `n` per transaction (none without transactions).
    pub fn per_tx(&self, n: u64) -> Option<f64> {
        (self.transactions > 0).then(|| n as f64 / self.transactions as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real summary (`strace -c -f -p` on the plugin Switchyard over 3 s of
    /// `pgbench -S -M simple -c 64`, 13,875 transactions), with the header, the dashed lines,
    /// blank and filled errors columns and the total: every row counted by name, the shown
    /// kinds and "other" add up to the total. A summary without a total line (strace
    /// killed) or whose rows do not add up to it is refused.
    #[test]
    fn summary_table() {
        let text = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 53.78    1.278355        1123      1138       168 futex
 26.69    0.634343          22     27985           sendto
 17.99    0.427676          15     28044         8 recvfrom
  1.13    0.026755          17      1541           epoll_wait
  0.12    0.002960          18       163           write
  0.06    0.001452          29        50           shutdown
  0.06    0.001398          11       117        52 accept4
  0.06    0.001344          11       115           epoll_ctl
  0.04    0.000882          17        50           close
  0.03    0.000823          12        65           setsockopt
  0.03    0.000806          16        50           fcntl
  0.00    0.000055          18         3           statx
------ ----------- ----------- --------- --------- ----------------
100.00    2.376849          40     59321       228 total
";
        let s = parse_summary(text).unwrap();
        assert_eq!(s.total, 59_321);
        assert_eq!(
            KINDS.map(|k| s.count(k)),
            [27_985, 28_044, 1_541, 115, 1_138, 0, 163, 0, 0]
        );
        // shutdown, accept4, close, setsockopt, fcntl, statx
        assert_eq!(s.other(), 50 + 117 + 50 + 65 + 50 + 3);
        assert!(parse_summary(&text[..text.find("----\n100.00").unwrap()])
            .unwrap_err()
            .contains("no total line"));
        assert!(parse_summary(&text.replace("59321", "59322"))
            .unwrap_err()
            .contains("add up to 59321"));
        let run = SyscallRun {
            transactions: 13_875,
            syscalls: s,
        };
        assert_eq!(run.per_tx(27_750), Some(2.0));
        let none = SyscallRun {
            transactions: 0,
            ..run
        };
        assert_eq!(none.per_tx(5), None);
    }
}
