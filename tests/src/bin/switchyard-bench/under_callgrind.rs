//! The callgrind measurement of the plugin tax and of read routing: each proxy in turn
//! under valgrind, its counters dumped around pairs of pgbench runs (the built-in proxy's
//! second pair against the database that routes reads), and the dumps read (with
//! `callgrind.rs`) into instructions per dump, per function and for the epoch ticker thread.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use switchyard_tests::tools::run_command;

use crate::callgrind;
use crate::interrupt;
use crate::measure::{last_lines, pgbench_command, replica_reads, summary_field, wait_child, Bench};
use crate::servers::{Flavour, READS_DB};

/// The epoch ticker thread of a proxy under callgrind.
#[derive(Clone, Debug, Default)]
pub struct Ticker {
    /// callgrind's thread suffix, e.g. `-02`.
    pub thread: String,
    pub run1_ir: u64,
    pub run2_ir: u64,
    pub ticks: u64,
}

/// Two measured runs of one proxy (CG_TX per client each, the counters dumped and zeroed
/// before and after each): their Ir, the epoch ticker thread's share, and self Ir by
/// function.
#[derive(Clone, Debug, Default)]
pub struct CgRuns {
    pub run1: u64,
    pub run2: u64,
    pub ticker: Option<Ticker>,
    pub run1_costs: HashMap<String, i64>,
    pub run2_costs: HashMap<String, i64>,
}

/// Instructions of one proxy under callgrind: startup and warm-up, the runs against
/// `bench`, the runs against the read-routing database (built-in proxy, read-routing row),
/// and the whole process.
#[derive(Clone, Debug, Default)]
pub struct CgProxy {
    pub startup: u64,
    pub all: u64,
    pub runs: CgRuns,
    pub routed: Option<CgRuns>,
}

impl Bench<'_> {
    /// Instructions per transaction: the built-in proxy (for the plugin tax and, with the
    /// read-routing row, routing off then on), then the plugin proxy (for the plugin tax).
    pub fn callgrind(&mut self) -> Result<()> {
        let opt = self.opt;
        crate::log!(
            "callgrind: instructions per transaction, {} (pgbench -t {}, {}, {} per client, {} clients)",
            match (opt.tax, opt.routing) {
                (true, true) => "built-in (routing off, then on), then plugin",
                (true, false) => "built-in then plugin",
                _ => "built-in, routing off then on",
            },
            opt.cg_warmup,
            opt.cg_tx.0,
            opt.cg_tx.1,
            opt.cg_clients
        );
        self.findings.cg_builtin = self.callgrind_one(Flavour::CallgrindBuiltin)?;
        if opt.tax && self.findings.cg_builtin.is_some() {
            self.findings.cg_plugin = self.callgrind_one(Flavour::CallgrindPlugin)?;
        }
        if self.findings.cg_builtin.is_none() || (opt.tax && self.findings.cg_plugin.is_none()) {
            crate::log!("callgrind measurement failed (see Problems)");
        }
        Ok(())
    }

    /// One proxy under callgrind: start, warm up, dump (startup + warm-up); CG_TX1 per
    /// client, dump; CG_TX2 per client, dump; for the built-in proxy with the read-routing
    /// row, the same two runs against the routing database, each followed by a dump (4, 5);
    /// stop (the final dump is the shutdown).
    fn callgrind_one(&mut self, flavour: Flavour) -> Result<Option<CgProxy>> {
        let name = flavour.name();
        let dir = self.work.join("callgrind");
        fs::create_dir_all(&dir)?;
        crate::log!("{name}: starting switchyard under valgrind --tool=callgrind");
        let mut proxy = match self.start_switchyard(flavour, None) {
            Ok(p) => p,
            Err(e) => {
                interrupt::check()?;
                self.findings.problems.push(format!(
                    "callgrind: {name} did not answer within 600s (log: {name}.log, callgrind/{name}.valgrind.log): {}",
                    format!("{e:#}").lines().next().unwrap_or("")
                ));
                return Ok(None);
            }
        };
        let port = proxy.port();
        let pid = proxy.pid().context("proxy has no pid")?;
        let (w, t1, t2) = (self.opt.cg_warmup, self.opt.cg_tx.0, self.opt.cg_tx.1);
        let mut ok = self.cg_pgbench(name, port, "bench", w, "warmup")?
            && self.cg_dump(name, pid, &dir, 1)?
            && self.cg_pgbench(name, port, "bench", t1, "run1")?
            && self.cg_dump(name, pid, &dir, 2)?
            && self.cg_pgbench(name, port, "bench", t2, "run2")?
            && self.cg_dump(name, pid, &dir, 3)?;
        // The routed runs failing leaves the runs against `bench` (the plugin tax's) valid.
        let mut routed = ok && flavour == Flavour::CallgrindBuiltin && self.opt.routing;
        if routed {
            let before = replica_reads(port);
            routed = self.cg_pgbench(name, port, READS_DB, t1, "routed-run1")?
                && self.cg_dump(name, pid, &dir, 4)?
                && self.cg_pgbench(name, port, READS_DB, t2, "routed-run2")?
                && self.cg_dump(name, pid, &dir, 5)?;
            routed = routed && self.check_routed(name, before, replica_reads(port));
        }
        if ok && flavour.has_plugin() {
            ok = self.plugin_calls(name, port).1;
        }
        crate::log!("stopping {name} (pid {pid})");
        proxy.stop();
        self.note_panics(flavour, &proxy);
        self.archive_log(flavour, &proxy);
        drop(proxy);
        if !ok {
            return Ok(None);
        }
        let mut all = files_with_prefix(&dir, &format!("{name}.out-"));
        all.extend(
            files_with_prefix(&dir, &format!("{name}.out."))
                .into_iter()
                .filter(|f| is_numbered_dump(f, name)),
        );
        let cg = CgProxy {
            startup: total_ir(&dump_files(&dir, name, 1)),
            all: total_ir(&all),
            runs: measured_runs(&dir, name, (2, 3)),
            routed: routed.then(|| measured_runs(&dir, name, (4, 5))),
        };
        let ticker = |r: &CgRuns| {
            r.ticker
                .as_ref()
                .map(|t| {
                    format!(
                        " (epoch ticker thread {}: {}, {})",
                        t.thread, t.run1_ir, t.run2_ir
                    )
                })
                .unwrap_or_default()
        };
        crate::log!(
            "{name}: Ir startup+warm-up={} run1={} run2={}{} whole process={}{}",
            cg.startup,
            cg.runs.run1,
            cg.runs.run2,
            ticker(&cg.runs),
            cg.all,
            cg.routed
                .as_ref()
                .map(|r| format!("; routing on: run1={} run2={}{}", r.run1, r.run2, ticker(r)))
                .unwrap_or_default()
        );
        Ok(Some(cg))
    }

    /// Whether the routed runs' reads went to the replicas: SHOW NODES must count at least
    /// their transactions as reads routed to a replica (noted when not, or unreadable).
    fn check_routed(&mut self, name: &str, before: Option<u64>, after: Option<u64>) -> bool {
        let want = u64::from(self.opt.cg_clients) * u64::from(self.opt.cg_tx.0 + self.opt.cg_tx.1);
        match (before, after) {
            (Some(b), Some(a)) if a.saturating_sub(b) >= want => {
                crate::log!(
                    "{name}: {} reads routed to the replicas ({want} transactions)",
                    a - b
                );
                true
            }
            (Some(b), Some(a)) => {
                self.findings.problems.push(format!(
                    "callgrind: {name}: only {} of the {want} routed transactions went to a replica (SHOW NODES)",
                    a.saturating_sub(b)
                ));
                false
            }
            _ => {
                self.findings
                    .problems
                    .push(format!("callgrind: {name}: SHOW NODES did not answer"));
                false
            }
        }
    }

    /// `pgbench -S -M CG_MODE -c CG_CLIENTS -j 1 -t tx` (with `-C` if CG_RECONNECT) against
    /// database `db` of a proxy under valgrind;
    /// `false` (noted) unless every transaction went through.
    fn cg_pgbench(&mut self, name: &str, port: u16, db: &str, tx: u32, label: &str) -> Result<bool> {
        let c = self.opt.cg_clients;
        let want = u64::from(c) * u64::from(tx);
        let out_name = format!("{name}-{label}.out");
        let out = self.work.join("runs").join(&out_name);
        let mode = &self.opt.cg_mode;
        let reconnect = if self.opt.cg_reconnect { " -C" } else { "" };
        crate::log!(
            "{name}: pgbench -S -M {mode}{reconnect} -c {c} -j 1 -t {tx} ({label}, {want} transactions)"
        );
        let mut args: Vec<String> = [
            "-S",
            "-M",
            mode,
            "-c",
            &c.to_string(),
            "-j",
            "1",
            "-t",
            &tx.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.opt.cg_reconnect {
            args.push("-C".into());
        }
        let mut child = pgbench_command(port, db, &args, &out)?
            .spawn()
            .context("spawning pgbench")?;
        let ended = wait_child(&mut child, Duration::from_secs(want / 2 + 600))?;
        let output = fs::read_to_string(&out).unwrap_or_default();
        let got = summary_field(&output, "number of transactions actually processed: ")
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse::<u64>().ok());
        if ended.code == Some(0) && got == Some(want) {
            return Ok(true);
        }
        let rc = ended.code.map_or("killed".to_owned(), |c| c.to_string());
        let got = got.map_or("no".to_owned(), |g| g.to_string());
        self.findings.problems.push(format!(
            "callgrind: {name}: pgbench {label} exit {rc}, {got} of {want} transactions (output: {out_name})"
        ));
        crate::log!("  PROBLEM: pgbench exit {rc}, {got} of {want} transactions");
        for line in last_lines(&output, 15) {
            eprintln!("    | {line}");
        }
        Ok(false)
    }

    /// Dumps (and zeroes) the callgrind counters of a proxy: files `<name>.out.<n>-<thread>`.
    fn cg_dump(&mut self, name: &str, pid: u32, dir: &Path, n: u32) -> Result<bool> {
        interrupt::sleep(Duration::from_secs(2))?; // the sessions of the run that just ended log out
        let out = run_command(
            Command::new("callgrind_control").args(["-d", &pid.to_string()]),
            None,
            Duration::from_secs(300),
        );
        match out {
            Ok(o) if o.status_ok => {}
            Ok(o) => {
                let said = format!("{} {}", o.stdout, o.stderr).replace('\n', " ");
                self.findings
                    .problems
                    .push(format!("callgrind: {name}: callgrind_control -d failed: {said}"));
                return Ok(false);
            }
            Err(e) => {
                self.findings
                    .problems
                    .push(format!("callgrind: {name}: callgrind_control -d failed: {e:#}"));
                return Ok(false);
            }
        }
        let prefix = format!("{name}.out.{n}-");
        for _ in 0..600 {
            if !files_with_prefix(dir, &prefix).is_empty() {
                return Ok(true);
            }
            interrupt::sleep(Duration::from_millis(100))?;
        }
        self.findings.problems.push(format!(
            "callgrind: {name}: dump {n} wrote no callgrind/{prefix}*"
        ));
        Ok(false)
    }
}

/// The files (one per thread) of dump `n` of proxy `name`.
fn dump_files(dir: &Path, name: &str, n: u32) -> Vec<PathBuf> {
    files_with_prefix(dir, &format!("{name}.out.{n}-"))
}

/// The Ir of a dump's files (one per thread).
fn total_ir(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| callgrind::summary_ir(&fs::read_to_string(f).unwrap_or_default()))
        .sum()
}

/// The two runs between dumps `first - 1`, `first` and `second` of proxy `name`: their Ir
/// and self Ir by function, and the epoch ticker thread (the one whose file of the second
/// dump names `nanosleep`) with its Ir in each.
fn measured_runs(dir: &Path, name: &str, (first, second): (u32, u32)) -> CgRuns {
    let (d1, d2) = (dump_files(dir, name, first), dump_files(dir, name, second));
    let read = |f: &Path| fs::read_to_string(f).unwrap_or_default();
    let costs = |files: &[PathBuf]| {
        let mut m = HashMap::new();
        for f in files {
            callgrind::add_fn_costs(&read(f), &mut m);
        }
        m
    };
    let ticker = d2.iter().find_map(|f| {
        if !callgrind::names_nanosleep(&read(f)) {
            return None;
        }
        let thread = f
            .file_name()?
            .to_string_lossy()
            .strip_prefix(&format!("{name}.out.{second}"))?
            .to_owned();
        let at = |n: u32| read(&dir.join(format!("{name}.out.{n}{thread}")));
        let (run1, run2) = (at(first), at(second));
        Some(Ticker {
            run1_ir: callgrind::summary_ir(&run1),
            run2_ir: callgrind::summary_ir(&run2),
            ticks: callgrind::sleeps(&run1) + callgrind::sleeps(&run2),
            thread,
        })
    });
    CgRuns {
        run1: total_ir(&d1),
        run2: total_ir(&d2),
        ticker,
        run1_costs: costs(&d1),
        run2_costs: costs(&d2),
    }
}

/// Files in `dir` whose names start with `prefix`, sorted.
fn files_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// `<name>.out.<digits>-<thread>`: a dump of callgrind_control (not the final one).
fn is_numbered_dump(f: &Path, name: &str) -> bool {
    let file = f
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.strip_prefix(&format!("{name}.out."))
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbered dumps are `.out.N-T`, not the final `.out-T` nor another proxy's files.
    #[test]
    fn numbered_dumps() {
        assert!(is_numbered_dump(Path::new("/x/cg.out.12-01"), "cg"));
        assert!(!is_numbered_dump(Path::new("/x/cg.out-01"), "cg"));
        assert!(!is_numbered_dump(Path::new("/x/cg.out.valgrind.log"), "cg"));
    }
}
