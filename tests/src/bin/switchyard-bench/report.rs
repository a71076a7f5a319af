//! The report on stdout: markdown tables, then the plugin tax lines, the read-routing lines
//! and the pipelined-pooling line (of the parts that ran), then (but for `--plugin-tax`,
//! `--read-routing` and `--pipeline`) the ratio line that users and docs/performance.md
//! parse as the very last line. A pure
//! function of the settings, the findings and a few facts about the machine.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::callgrind;
use crate::measure::{
    skip_cell, Findings, PIPELINED, PIPELINE_PROXIES, PIPELINE_TARGETS, PROXIES, ROUTING_TARGETS, SY,
    TARGETS, TAX_TARGETS,
};
use crate::options::{CellSpec, Options};
use crate::servers::{READS_DB, REPLICAS};
use crate::stats::{fmt_count, fmt_figure, fmt_opt, pct, ratio, Cell, Sample};
use crate::strace::KINDS;
use crate::under_callgrind::{CgProxy, CgRuns};

/// Facts about the run that are not measurements.
pub struct Context {
    /// UTC, `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
    /// What was measured: the proxy's commit, or the prebuilt binary.
    pub what: String,
    pub postgres_version: String,
    pub pgbouncer_version: String,
    pub cores: usize,
    pub elapsed_secs: u64,
    /// The plugin's source (relative to the workspace) and short SHA-256, when it was used.
    pub plugin: Option<(String, String)>,
    /// The work directory, and whether it is kept.
    pub work: String,
    pub keep: bool,
}

fn label<'a>(t: &'a str, mode: &str) -> &'a str {
    match t {
        SY => "switchyard (plugins)",
        PIPELINED => "switchyard (plugins, pipeline = true)",
        "pgbouncer" if mode == "prepared" => "pgbouncer (session)",
        t => t,
    }
}

fn median<'a>(f: &'a Findings, key: &str) -> Option<&'a Sample> {
    f.cell(key).and_then(Cell::median)
}

fn median_tps(f: &Findings, key: &str) -> Option<f64> {
    f.cell(key).and_then(Cell::median_tps)
}

fn tps(s: Option<&Sample>, decimals: usize) -> String {
    s.map_or_else(|| "-".to_owned(), |s| fmt_figure(s.tps, decimals))
}

fn latency(s: Option<&Sample>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| fmt_figure(s.latency, 3))
}

fn p99(s: Option<&Sample>) -> String {
    fmt_opt(s.and_then(|s| s.p99), 3)
}

fn failed(f: &Findings, key: &str) -> u64 {
    f.cell(key).map_or(0, |c| c.failed)
}

fn flag(f: &Findings, key: &str) -> &'static str {
    if f.cell(key).is_some_and(|c| c.noted) {
        " ⚠"
    } else {
        ""
    }
}

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

/// The parts a run without the matrix measures: "plugin tax", "read routing and pipelined
/// pooling", ...
pub fn parts_title(opt: &Options) -> String {
    let parts: Vec<&str> = [
        (opt.tax, "plugin tax"),
        (opt.routing, "read routing"),
        (opt.pipeline, "pipelined pooling"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    match parts.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The whole report.
pub fn render(opt: &Options, f: &Findings, cx: &Context) -> String {
    let mut out = String::new();
    let o = &mut out;
    o.push('\n');
    if !opt.matrix {
        let _ = writeln!(o, "## Switchyard {} ({})\n", parts_title(opt), cx.date);
        if opt.pipeline {
            let _ = writeln!(
                o,
                "- {}; {}; {}",
                cx.what, cx.postgres_version, cx.pgbouncer_version
            );
        } else {
            let _ = writeln!(o, "- {}; {}", cx.what, cx.postgres_version);
        }
    } else {
        let _ = writeln!(o, "## Switchyard benchmark ({})\n", cx.date);
        let _ = writeln!(
            o,
            "- {}; {}; {}",
            cx.what, cx.postgres_version, cx.pgbouncer_version
        );
    }
    let _ = writeln!(
        o,
        "- {} cores (shared: expect noise); pgbench -S -n -j {} -T {}, scale {}, pool size {} (transaction mode), SCRAM client auth everywhere, rounds per cell: {}{}; p99 from pgbench -l at sampling rate {}",
        cx.cores,
        opt.jobs,
        opt.duration,
        opt.scale,
        opt.pool_size,
        opt.rounds,
        if opt.rounds > 1 { " (median-tps run shown)" } else { "" },
        opt.sampling
    );
    let _ = writeln!(
        o,
        "- Switchyard workers: {}",
        opt.workers.map_or("default (one)".to_owned(), |w| w.to_string())
    );
    let _ = writeln!(
        o,
        "- Switchyard threading: {}",
        opt.threading.as_deref().unwrap_or("default (shared)")
    );
    let _ = writeln!(o, "- total wall time: {}s", cx.elapsed_secs);
    if opt.matrix {
        o.push('\n');
        matrix(o, opt, f);
        o.push('\n');
        added_latency(o, opt, f);
        reconnect(o, opt, f);
        cpu_per_tx(o, opt, f);
        syscalls(o, opt, f);
        cpu_share(o, opt, f, cx);
        idle_memory(o, opt, f);
    }
    if opt.tax {
        o.push('\n');
        tax(o, opt, f, cx);
    }
    if opt.routing {
        o.push('\n');
        routing(o, opt, f);
    }
    if opt.pipeline {
        o.push('\n');
        pipeline(o, opt, f, cx);
    }
    o.push('\n');
    if f.problems.is_empty() {
        o.push_str("No failed transactions, aborted clients, hangs, crashes or plugin failures.\n");
    } else {
        o.push_str("Problems (⚠ above):\n");
        for p in &f.problems {
            let _ = writeln!(o, "- {p}");
        }
        if cx.keep {
            let _ = writeln!(
                o,
                "- pgbench outputs (runs/), server logs and callgrind files are kept in {}",
                cx.work
            );
        } else {
            let _ = writeln!(
                o,
                "- pgbench outputs and server logs were in {} (removed; rerun with --keep to inspect)",
                cx.work
            );
        }
    }
    if !f.log_summary.is_empty() {
        let _ = writeln!(o, "\n{}", f.log_summary.join("\n"));
    }
    o.push('\n');
    if opt.tax {
        o.push_str(&tax_lines(opt, f));
    }
    if opt.routing {
        o.push_str(&routing_lines(opt, f));
    }
    if opt.pipeline {
        o.push_str(&pipeline_line(opt, f));
    }
    if opt.matrix {
        o.push_str(&ratio_line(f));
    }
    out
}

fn matrix(o: &mut String, opt: &Options, f: &Findings) {
    let spool = opt.session_pool_size();
    let pooler = if opt.pooler_clients.is_empty() {
        "none".to_owned()
    } else {
        join(&opt.pooler_clients)
    };
    let _ = writeln!(
        o,
        "Switchyard runs with the pool-mode WebAssembly plugin on the data path (`{SY}`); PgBouncer in transaction mode, and for -M prepared (which PgBouncer 1.18 cannot pool by transaction) a second PgBouncer in session mode with a pool of {spool}, one server per client, n/a above that. Direct Postgres is n/a at the pooler-only client counts ({pooler}: max_connections would have to exceed them).\n"
    );
    o.push_str("| mode | clients | target | tps | avg latency ms | p99 latency ms | failed tx | switchyard/pgbouncer | switchyard/direct |\n");
    o.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for mode in &opt.modes {
        for c in opt.all_clients() {
            let d = median_tps(f, &format!("{mode}:{c}:direct"));
            let p = median_tps(f, &format!("{mode}:{c}:pgbouncer"));
            let s = median_tps(f, &format!("{mode}:{c}:{SY}"));
            for t in TARGETS {
                if skip_cell(opt, mode, c, t) {
                    let _ = writeln!(o, "| {mode} | {c} | {} | n/a | | | | | |", label(t, mode));
                    continue;
                }
                let key = format!("{mode}:{c}:{t}");
                let m = median(f, &key);
                let (r_pgb, r_dir) = if t == SY {
                    (ratio(s, p, 2), ratio(s, d, 2))
                } else {
                    Default::default()
                };
                let _ = writeln!(
                    o,
                    "| {mode} | {c} | {} | {}{} | {} | {} | {} | {r_pgb} | {r_dir} |",
                    label(t, mode),
                    tps(m, 1),
                    flag(f, &key),
                    latency(m),
                    p99(m),
                    failed(f, &key)
                );
            }
        }
    }
}

/// Added latency at one client: average latency over direct Postgres, in microseconds.
fn added_latency(o: &mut String, opt: &Options, f: &Findings) {
    if !opt.clients.contains(&1) {
        return;
    }
    o.push_str("### Added latency at -c 1 (average latency over direct Postgres)\n\n");
    o.push_str(
        "| mode | switchyard (plugins) µs | pgbouncer µs | target: switchyard ≤ pgbouncer + 10 µs |\n",
    );
    o.push_str("|---|---:|---:|---|\n");
    for mode in &opt.modes {
        let lat = |t: &str| median(f, &format!("{mode}:1:{t}")).and_then(|s| s.latency.value());
        match (lat("direct"), lat("pgbouncer"), lat(SY)) {
            (Some(d), Some(p), Some(s)) => {
                let (a_s, a_p) = ((s - d) * 1000.0, (p - d) * 1000.0);
                let _ = writeln!(
                    o,
                    "| {mode}{} | {a_s:+.1} | {a_p:+.1} | {} |",
                    if mode == "prepared" {
                        " (pgbouncer in session mode)"
                    } else {
                        ""
                    },
                    if a_s <= a_p + 10.0 { "met" } else { "missed" }
                );
            }
            _ => {
                let _ = writeln!(o, "| {mode} | n/a | n/a | n/a |");
            }
        }
    }
    o.push('\n');
}

fn reconnect(o: &mut String, opt: &Options, f: &Findings) {
    if opt.reconnect_clients.is_empty() {
        return;
    }
    o.push_str("### Reconnect: a new connection (SCRAM login) per transaction, pgbench -S -M simple -C\n\n");
    o.push_str("| clients | target | tps | avg latency ms | p99 latency ms | failed tx | switchyard/pgbouncer | switchyard/direct |\n");
    o.push_str("|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for &c in &opt.reconnect_clients {
        let key = |t: &str| format!("reconnect:simple:{c}:{t}");
        let (d, p, s) = (
            median_tps(f, &key("direct")),
            median_tps(f, &key("pgbouncer")),
            median_tps(f, &key(SY)),
        );
        for t in TARGETS {
            let m = median(f, &key(t));
            let (r1, r2) = if t == SY {
                (ratio(s, p, 2), ratio(s, d, 2))
            } else {
                Default::default()
            };
            let _ = writeln!(
                o,
                "| {c} | {} | {} | {} | {} | {} | {r1} | {r2} |",
                label(t, "simple"),
                tps(m, 1),
                latency(m),
                p99(m),
                failed(f, &key(t))
            );
        }
    }
    o.push('\n');
}

/// The rows of the CPU and system call tables: each matrix cell's mode, clients and key
/// prefix, then the reconnect rows' (mode `simple -C`).
fn accounted_cells(opt: &Options) -> Vec<(String, u32, &'static str)> {
    let mut cells = Vec::new();
    for mode in &opt.modes {
        for c in opt.all_clients() {
            cells.push((mode.clone(), c, ""));
        }
    }
    for &c in &opt.reconnect_clients {
        cells.push(("simple".to_owned(), c, "reconnect:"));
    }
    cells
}

/// The key of a cell of [`accounted_cells`]: `[reconnect:]simple:16:pgbouncer`.
fn accounted_key(mode: &str, c: u32, prefix: &str, target: &str) -> String {
    format!("{prefix}{mode}:{c}:{target}")
}

fn mode_label(mode: &str, prefix: &str) -> String {
    if prefix == "reconnect:" {
        format!("{mode} -C")
    } else {
        mode.to_owned()
    }
}

/// Proxy user + system µs per transaction of the median run of `key`.
fn proxy_total_per_tx(f: &Findings, key: &str) -> Option<f64> {
    let cpu = median(f, key)?.cpu?;
    let p = cpu.proxy?;
    cpu.per_tx(p.user_us + p.system_us)
}

/// The CPU figures of `target`'s run `m` per transaction: proxy user, system and total µs,
/// Postgres µs, pgbench µs and proxy context switches ("–" for direct Postgres' proxy
/// columns, "-" where nothing was read).
fn cpu_columns(m: Option<&Sample>, target: &str) -> [String; 6] {
    let cpu = m.and_then(|s| s.cpu);
    let per = |v: Option<u64>, decimals: usize| fmt_opt(v.and_then(|v| cpu?.per_tx(v)), decimals);
    let proxy = cpu.and_then(|r| r.proxy);
    let postgres = per(cpu.and_then(|r| r.postgres_us), 1);
    let pgbench = per(cpu.and_then(|r| r.pgbench_us), 1);
    if target == "direct" {
        let none = "–".to_owned();
        return [none.clone(), none.clone(), none.clone(), postgres, pgbench, none];
    }
    [
        per(proxy.map(|p| p.user_us), 1),
        per(proxy.map(|p| p.system_us), 1),
        per(proxy.map(|p| p.user_us + p.system_us), 1),
        postgres,
        pgbench,
        per(proxy.map(|p| p.ctx_switches), 2),
    ]
}

/// CPU per transaction from `/proc` over the median-tps run of each row.
fn cpu_per_tx(o: &mut String, opt: &Options, f: &Findings) {
    o.push_str(
        "### CPU per transaction (from /proc over the median-tps run; µs of CPU per transaction)

",
    );
    o.push_str("- proxy: its utime and stime (/proc/PID/stat) over the run; context switches: voluntary + nonvoluntary, summed over its threads (/proc/PID/task/*/status); postgres: the postmaster's user + system time, its reaped children's (cutime + cstime) and its live children's, after minus before; pgbench: its own user + system time (getrusage of the bench's children around the run); per transaction of pgbench's count; –: direct Postgres, no proxy

");
    o.push_str("| mode | clients | target | tps | proxy user µs/tx | proxy system µs/tx | proxy total µs/tx | postgres µs/tx | pgbench µs/tx | proxy ctx switches/tx | switchyard/pgbouncer proxy CPU |
");
    o.push_str(
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|
",
    );
    for (mode, c, prefix) in accounted_cells(opt) {
        let ml = mode_label(&mode, prefix);
        for t in TARGETS {
            if prefix.is_empty() && skip_cell(opt, &mode, c, t) {
                let _ = writeln!(o, "| {ml} | {c} | {} | n/a | | | | | | | |", label(t, &mode));
                continue;
            }
            let key = accounted_key(&mode, c, prefix, t);
            let m = median(f, &key);
            let [user, system, total, postgres, pgbench, ctx] = cpu_columns(m, t);
            let r = if t == SY {
                ratio(
                    proxy_total_per_tx(f, &key),
                    proxy_total_per_tx(f, &accounted_key(&mode, c, prefix, "pgbouncer")),
                    2,
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                o,
                "| {ml} | {c} | {} | {}{} | {user} | {system} | {total} | {postgres} | {pgbench} | {ctx} | {r} |",
                label(t, &mode),
                tps(m, 1),
                flag(f, &key),
            );
        }
    }
    o.push('\n');
}

/// System calls per transaction of each proxy of the matrix, from the strace runs.
fn syscalls(o: &mut String, opt: &Options, f: &Findings) {
    if !opt.strace {
        o.push_str("System calls per transaction: not measured (STRACE=0).\n\n");
        return;
    }
    let _ = writeln!(
        o,
        "### System calls per transaction (strace -c -f attached to the proxy for {}s of a separate pgbench run per cell, from when all clients have logged in (with -C from the start); per transaction pgbench logged as completed meanwhile)\n",
        opt.strace_secs
    );
    syscall_table(o, opt, f, &accounted_cells(opt), &PROXIES);
}

/// The system call table of `cells` (mode, clients, key prefix) and `proxies`.
fn syscall_table(
    o: &mut String,
    opt: &Options,
    f: &Findings,
    cells: &[(String, u32, &str)],
    proxies: &[&str],
) {
    let _ = writeln!(
        o,
        "| mode | clients | proxy | transactions | {} | other | total |",
        KINDS.join(" | ")
    );
    let _ = writeln!(o, "|---|---:|---|---:|{}---:|---:|", "---:|".repeat(KINDS.len()));
    for (mode, c, prefix) in cells {
        let (mode, c, prefix) = (mode.as_str(), *c, *prefix);
        let ml = mode_label(mode, prefix);
        for &t in proxies {
            let empty = " |".repeat(KINDS.len() + 2);
            if prefix.is_empty() && skip_cell(opt, mode, c, t) {
                let _ = writeln!(o, "| {ml} | {c} | {} | n/a |{empty}", label(t, mode));
                continue;
            }
            let Some(run) = f.syscalls.get(&accounted_key(mode, c, prefix, t)) else {
                let _ = writeln!(o, "| {ml} | {c} | {} | - |{empty}", label(t, mode));
                continue;
            };
            let per = |n: u64| fmt_opt(run.per_tx(n), 2);
            let kinds: Vec<String> = KINDS.iter().map(|k| per(run.syscalls.count(k))).collect();
            let _ = writeln!(
                o,
                "| {ml} | {c} | {} | {} | {} | {} | {} |",
                label(t, mode),
                run.transactions,
                kinds.join(" | "),
                per(run.syscalls.other()),
                per(run.syscalls.total)
            );
        }
    }
    o.push('\n');
}

fn cpu_share(o: &mut String, opt: &Options, f: &Findings, cx: &Context) {
    if !opt.modes.iter().any(|m| m == "simple") || !opt.clients.contains(&64) {
        return;
    }
    let _ = writeln!(
        o,
        "### How the CPU was shared at -S -M simple -c 64 (pidstat, average %CPU of the median-tps run; {} cores = {} %)\n",
        cx.cores,
        cx.cores * 100
    );
    o.push_str("| target | postgres (all backends) | pgbench | proxy |\n");
    o.push_str("|---|---:|---:|---:|\n");
    for t in TARGETS {
        let share = median(f, &format!("simple:64:{t}")).and_then(|s| s.share);
        let [pg, b, x] = share.map_or(["-".to_owned(), "-".to_owned(), "-".to_owned()], |s| {
            [s.postgres, s.pgbench, s.proxy].map(|v| format!("{v:.0}"))
        });
        let _ = writeln!(o, "| {} | {pg} | {b} | {x} |", label(t, "simple"));
    }
    o.push('\n');
}

fn idle_memory(o: &mut String, opt: &Options, f: &Findings) {
    if opt.idle_clients == 0 {
        return;
    }
    let _ = writeln!(
        o,
        "### Memory per idle client ({} clients logged in with SCRAM, no TLS, ran SELECT 1, then idle)\n",
        opt.idle_clients
    );
    o.push_str(
        "| proxy | idle clients connected | RSS before KiB | RSS with them KiB | KiB per idle client |\n",
    );
    o.push_str("|---|---:|---:|---:|---:|\n");
    for n in [SY, "pgbouncer"] {
        let row = f.idle.get(n).map_or_else(
            || "- | - | - | -".to_owned(),
            |m| {
                format!(
                    "{} | {} | {} | {:.2}",
                    m.connected,
                    m.before_kib,
                    m.after_kib,
                    m.per_client()
                )
            },
        );
        let _ = writeln!(o, "| {} | {row} |", label(n, "simple"));
    }
    o.push('\n');
}

/// Ir per transaction of a pair of runs: the difference of the two measured intervals over
/// the difference of their transactions, with or without the epoch ticker thread.
fn per_tx(cg: &CgRuns, opt: &Options, without_ticker: bool) -> i64 {
    let mut d = cg.run2 as i64 - cg.run1 as i64;
    if without_ticker {
        if let Some(t) = &cg.ticker {
            d -= t.run2_ir as i64 - t.run1_ir as i64;
        }
    }
    let tx = f64::from(opt.cg_clients) * f64::from(opt.cg_tx.1 - opt.cg_tx.0);
    (d as f64 / tx).round() as i64
}

/// The rows of a pair of targets run interleaved (the plugin tax, the read-routing row):
/// per cell the first target, then the second with the ratio of the medians.
fn pair_rows(
    o: &mut String,
    f: &Findings,
    cells: &[CellSpec],
    prefix: &str,
    targets: [&str; 2],
    labels: [&str; 2],
) {
    let runs = |k: &str| {
        f.cell(k)
            .map(|c| {
                c.samples
                    .iter()
                    .map(|s| s.tps_text.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    for cell in cells {
        let keys = targets.map(|t| format!("{prefix}{cell}:{t}"));
        for (i, key) in keys.iter().enumerate() {
            let m = median(f, key);
            let r = if i == 1 {
                ratio(median_tps(f, key), median_tps(f, &keys[0]), 3)
            } else {
                String::new()
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {}{} | {} | {} | {r} | {} |",
                cell.mode,
                cell.clients,
                labels[i],
                tps(m, 1),
                flag(f, key),
                latency(m),
                failed(f, key),
                runs(key)
            );
        }
    }
    o.push('\n');
}

/// The Ir rows of a pair of runs against another (`off` then `on`): per transaction
/// without the ticker thread and whole process, and one pgbench run's fixed cost.
fn ir_rows(opt: &Options, off: &CgRuns, on: &CgRuns) -> Vec<(String, i64, i64)> {
    let c = u64::from(opt.cg_clients);
    let (offt, ont) = (per_tx(off, opt, false), per_tx(on, opt, false));
    // Fixed cost of one pgbench run: the first interval less its transactions.
    let fixed = |cg: &CgRuns, per: i64| cg.run1 as i64 - (c * u64::from(opt.cg_tx.0)) as i64 * per;
    vec![
        (
            "per transaction, without the epoch ticker thread (headline)".to_owned(),
            per_tx(off, opt, true),
            per_tx(on, opt, true),
        ),
        ("per transaction, whole process".to_owned(), offt, ont),
        (
            format!(
                "one pgbench run's fixed cost ({} login(s) and logout(s), pgbench's own queries)",
                opt.cg_clients
            ),
            fixed(off, offt),
            fixed(on, ont),
        ),
    ]
}

/// An Ir table: `what | off | on | on − off | pct`.
fn ir_table(o: &mut String, header: &str, rows: &[(String, i64, i64)]) {
    let _ = writeln!(o, "{header}");
    o.push_str("|---|---:|---:|---:|---:|\n");
    for (what, b, p) in rows {
        let _ = writeln!(
            o,
            "| {what} | {b} | {p} | {} | {} |",
            p - b,
            pct(*p as f64, *b as f64)
        );
    }
    o.push('\n');
}

/// The functions with the most extra self Ir per transaction of `on` over `off` (the same
/// difference of runs), after `intro`.
fn extra_by_function(o: &mut String, opt: &Options, intro: &str, off: &CgRuns, on: &CgRuns) {
    let n = 12;
    let _ = writeln!(
        o,
        "Where the extra instructions go: self Ir per transaction by function, {intro}, over the same difference of runs (top {n}; \"no symbol\" is code wasmtime compiled at run time: a plugin and its trampolines):\n"
    );
    o.push_str("| Ir/tx | function |\n");
    o.push_str("|---:|---|\n");
    let sum = |a: &HashMap<String, i64>, b: &HashMap<String, i64>| {
        let mut m = a.clone();
        for (k, v) in b {
            *m.entry(k.clone()).or_default() += v;
        }
        m
    };
    // (on run 2 - on run 1) - (off run 2 - off run 1)
    let plus = sum(&on.run2_costs, &off.run1_costs);
    let minus = sum(&on.run1_costs, &off.run2_costs);
    let tx = u64::from(opt.cg_clients) * u64::from(opt.cg_tx.1 - opt.cg_tx.0);
    for (ir, func) in callgrind::top_extra(&plus, &minus, tx, n) {
        let _ = writeln!(o, "| {ir:.1} | `{}` |", callgrind::table_name(&func));
    }
}

/// How the callgrind figures were taken.
fn cg_method(o: &mut String, opt: &Options, what: &str) {
    let tx = u64::from(opt.cg_clients) * u64::from(opt.cg_tx.1 - opt.cg_tx.0);
    let _ = writeln!(
        o,
        "Instructions per transaction{what}: valgrind --tool=callgrind, instructions executed (Ir) by the proxy process in user space (the kernel's share is not counted). `pgbench -S -M simple -c {} -j 1` after a warm-up of -t {}; counters dumped and zeroed before and after runs of -t {} and -t {} per client; per transaction = the difference of the two runs over their difference in transactions ({tx}), so startup, plugin compilation, logins and logouts cancel.\n",
        opt.cg_clients, opt.cg_warmup, opt.cg_tx.0, opt.cg_tx.1
    );
}

fn tax(o: &mut String, opt: &Options, f: &Findings, cx: &Context) {
    o.push_str("### Plugin tax: pool-mode plugin on the data path vs the built-in policy\n\n");
    let (source, sha) = cx.plugin.clone().unwrap_or_default();
    let _ = writeln!(
        o,
        "- plugin: {source} (sha256 {sha}) as `[plugins.pool-mode]`, hooks = [\"pool-mode\"], settings mode = \"transaction\"; both proxies run side by side on the same Postgres; runs interleaved, order alternating per round"
    );
    let _ = writeln!(
        o,
        "- SHOW PLUGINS after the tps runs: {}\n",
        f.plugin_stats.as_deref().unwrap_or("n/a")
    );
    o.push_str("| mode | clients | policy | tps | avg latency ms | failed tx | plugin/built-in | tps of each round |\n");
    o.push_str("|---|---:|---|---:|---:|---:|---:|---|\n");
    pair_rows(
        o,
        f,
        &opt.tax_cells,
        "tax:",
        TAX_TARGETS,
        ["built-in", "pool-mode.wasm"],
    );
    if !opt.callgrind {
        o.push_str("Instructions per transaction: not measured (--quick or CALLGRIND=0).\n");
        return;
    }
    let (Some(b), Some(p)) = (&f.cg_builtin, &f.cg_plugin) else {
        o.push_str("Instructions per transaction: the callgrind measurement failed (see Problems).\n");
        return;
    };
    let c = u64::from(opt.cg_clients);
    let all_tx = c * u64::from(opt.cg_warmup + opt.cg_tx.0 + opt.cg_tx.1);
    cg_method(o, opt, "");
    let whole = |cg: &CgProxy| (cg.all as f64 / all_tx as f64).round() as i64;
    let mut rows = ir_rows(opt, &b.runs, &p.runs);
    rows.push((
        "startup (plugin compilation included) + the first login + warm-up".to_owned(),
        b.startup as i64,
        p.startup as i64,
    ));
    // The built-in proxy's whole process includes the read-routing runs when they ran.
    if b.routed.is_none() {
        rows.push((
            format!("whole process, start to exit, over all {all_tx} transactions"),
            whole(b),
            whole(p),
        ));
    }
    ir_table(o, "| Ir | built-in | plugin | plugin − built-in | tax |", &rows);
    let (pt, pn) = (per_tx(&p.runs, opt, false), per_tx(&p.runs, opt, true));
    match &p.runs.ticker {
        Some(t) if t.ticks > 0 => {
            let per_tick = (t.run1_ir + t.run2_ir) / t.ticks;
            let first = &opt.tax_cells[0];
            let at_tps = match median_tps(f, &format!("tax:{first}:{SY}")) {
                Some(tps) if tps > 0.0 => format!("{:.1}", (per_tick * 1000) as f64 / tps),
                _ => "n/a".to_owned(),
            };
            let _ = writeln!(
                o,
                "- The epoch ticker thread (callgrind thread {}) wakes every 1 ms whatever the load: {} ticks in the two runs, {per_tick} Ir per tick, about {} Ir per second natively. Under valgrind a transaction takes far longer than natively, so its per-transaction share ({} Ir) is inflated; at the plugin's measured tps it is about {at_tps} Ir per transaction.",
                t.thread.trim_start_matches('-'),
                t.ticks,
                per_tick * 1000,
                pt - pn
            );
        }
        _ => o.push_str(
            "- The epoch ticker thread was not identified (no thread calling clock_nanosleep); the headline then includes it.\n",
        ),
    }
    o.push('\n');
    extra_by_function(o, opt, "plugin minus built-in", &b.runs, &p.runs);
}

fn routing(o: &mut String, opt: &Options, f: &Findings) {
    o.push_str("### Read routing: reads over the replicas vs the primary only\n\n");
    let _ = writeln!(
        o,
        "- the built-in Switchyard serves database `bench` (read_routing off: every transaction on the primary) and `{READS_DB}` (the same server database, read_routing = \"replicas\"); one primary and {REPLICAS} streaming replicas on this machine, sharing its cores; the proxy probes them (probe_user); runs interleaved, order alternating per round\n"
    );
    o.push_str("| mode | clients | database | tps | avg latency ms | failed tx | replicas/primary | tps of each round |\n");
    o.push_str("|---|---:|---|---:|---:|---:|---:|---|\n");
    pair_rows(
        o,
        f,
        &opt.routing_cells,
        "routing:",
        ROUTING_TARGETS,
        ["bench (primary)", &format!("{READS_DB} (replicas)")],
    );
    let _ = writeln!(
        o,
        "Where the row's transactions ran, counted over its tps runs (`bench`'s all ran on the primary): reads and writes the proxy routed there (SHOW NODES), and the transactions each node committed by its own count (pg_stat_database.xact_commit of `bench`)\n"
    );
    o.push_str("| node | role | reads routed | writes routed | transactions committed |\n");
    o.push_str("|---|---|---:|---:|---:|\n");
    for n in &f.routing_nodes {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            n.node,
            if n.primary { "primary" } else { "replica" },
            fmt_count(n.reads),
            fmt_count(n.writes),
            fmt_count(n.committed)
        );
    }
    o.push('\n');
    if !opt.callgrind {
        o.push_str("Instructions per transaction: not measured (--quick or CALLGRIND=0).\n");
        return;
    }
    let Some((off, on)) = f
        .cg_builtin
        .as_ref()
        .and_then(|b| Some((&b.runs, b.routed.as_ref()?)))
    else {
        o.push_str("Instructions per transaction: the callgrind measurement failed (see Problems).\n");
        return;
    };
    cg_method(
        o,
        opt,
        &format!(", routing off (`bench`) vs on (`{READS_DB}`), the same proxy: its runs against `bench`, then the same two runs against `{READS_DB}`"),
    );
    ir_table(
        o,
        "| Ir | routing off | routing on | on − off | cost |",
        &ir_rows(opt, off, on),
    );
    o.push_str("- The first run against `bench_reads` opens the proxy's servers on the replicas (SCRAM logins), which is why its fixed cost is higher.\n");
    if on.ticker.is_some() {
        o.push_str("- The epoch ticker thread is left out of the headline, as in the plugin tax.\n");
    }
    o.push('\n');
    extra_by_function(o, opt, "routing on minus off", off, on);
}

/// The pipelined-pooling row: each cell's four targets with tps, latency, CPU per
/// transaction and the statements pipelined, the ratios on the pipelining Switchyard's row,
/// then the row's system calls per transaction.
fn pipeline(o: &mut String, opt: &Options, f: &Findings, cx: &Context) {
    o.push_str("### Pipelined pooling: Switchyard with `pipeline = true` against PgBouncer, direct Postgres and itself without\n\n");
    let (source, sha) = cx.plugin.clone().unwrap_or_default();
    let _ = writeln!(
        o,
        "- the matrix's targets and the same Switchyard (pool-mode plugin {source}, sha256 {sha}, pool {}) with `pipeline = \"true\"` in the plugin's settings; runs interleaved per round; CPU per transaction as in the CPU table (median-tps run); statements pipelined: SHOW POOLS `pipelined` over the cell's tps runs, and their share of those runs' transactions\n",
        opt.pool_size
    );
    o.push_str("| mode | clients | target | tps | avg latency ms | p99 latency ms | failed tx | proxy user µs/tx | proxy system µs/tx | postgres µs/tx | proxy ctx switches/tx | statements pipelined | pipelined/pgbouncer | pipelined/direct | pipelined/unpipelined |\n");
    o.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for cell in &opt.pipeline_cells {
        let key = |t: &str| format!("pipeline:{cell}:{t}");
        let m_tps = |t: &str| median_tps(f, &key(t));
        for t in PIPELINE_TARGETS {
            let k = key(t);
            let m = median(f, &k);
            let [user, system, _, postgres, _, ctx] = cpu_columns(m, t);
            let pipelined = match f.pipelined.get(&k) {
                Some(&n) => {
                    let tx: u64 = f.cell(&k).map_or(0, |c| {
                        c.samples.iter().filter_map(|s| Some(s.cpu?.transactions)).sum()
                    });
                    match n {
                        Some(n) if tx > 0 => format!("{n} ({:.0} %)", 100.0 * n as f64 / tx as f64),
                        n => fmt_count(n),
                    }
                }
                None => String::new(),
            };
            let ratios = if t == PIPELINED {
                let p = m_tps(PIPELINED);
                ["pgbouncer", "direct", SY].map(|other| ratio(p, m_tps(other), 2))
            } else {
                Default::default()
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {}{} | {} | {} | {} | {user} | {system} | {postgres} | {ctx} | {pipelined} | {} |",
                cell.mode,
                cell.clients,
                label(t, &cell.mode),
                tps(m, 1),
                flag(f, &k),
                latency(m),
                p99(m),
                failed(f, &k),
                ratios.join(" | ")
            );
        }
    }
    o.push('\n');
    if !opt.strace {
        o.push_str("System calls per transaction of the pipelined-pooling row: not measured (STRACE=0).\n");
        return;
    }
    let _ = writeln!(
        o,
        "System calls per transaction of the pipelined-pooling row (strace runs as for the matrix, {}s each):\n",
        opt.strace_secs
    );
    let cells: Vec<(String, u32, &str)> = opt
        .pipeline_cells
        .iter()
        .map(|c| (c.mode.clone(), c.clients, "pipeline:"))
        .collect();
    syscall_table(o, opt, f, &cells, &PIPELINE_PROXIES);
}

/// The cell of the pipelined line: the first at 64 clients, else the largest.
fn pipeline_headline(opt: &Options) -> Option<&CellSpec> {
    let cells = &opt.pipeline_cells;
    cells
        .iter()
        .find(|c| c.clients == 64)
        .or_else(|| cells.iter().rev().max_by_key(|c| c.clients))
}

/// `pipelined: switchyard/pgbouncer=<r> switchyard/direct=<r>`: the pipelining Switchyard's
/// median tps over PgBouncer's and direct Postgres' in the headline cell.
pub fn pipeline_line(opt: &Options, f: &Findings) -> String {
    let [s, p, d] = [PIPELINED, "pgbouncer", "direct"]
        .map(|t| pipeline_headline(opt).and_then(|cell| median_tps(f, &format!("pipeline:{cell}:{t}"))));
    format!(
        "pipelined: switchyard/pgbouncer={} switchyard/direct={}\n",
        ratio(s, p, 2),
        ratio(s, d, 2)
    )
}

/// `plugin tax: tps ...` and `instructions/tx ...`: medians of the first tax cell, and the
/// headline Ir per transaction (n/a when callgrind was skipped or failed).
pub fn tax_lines(opt: &Options, f: &Findings) -> String {
    let mut s = tps_line(
        f,
        "plugin tax: tps",
        "tax:",
        &opt.tax_cells[0],
        TAX_TARGETS,
        ["builtin", "plugin"],
    );
    let ir = match (&f.cg_builtin, &f.cg_plugin) {
        (Some(b), Some(p)) => Some((&b.runs, &p.runs)),
        _ => None,
    };
    s.push_str(&ir_line(opt, "instructions/tx", ["builtin", "plugin"], "tax", ir));
    s
}

/// `read routing: tps ...` and `instructions/tx routing ...`: medians of the first routing
/// cell, and the headline Ir per transaction with routing off and on.
pub fn routing_lines(opt: &Options, f: &Findings) -> String {
    let mut s = tps_line(
        f,
        "read routing: tps",
        "routing:",
        &opt.routing_cells[0],
        ROUTING_TARGETS,
        ["primary", "replicas"],
    );
    let ir = f
        .cg_builtin
        .as_ref()
        .and_then(|b| Some((&b.runs, b.routed.as_ref()?)));
    s.push_str(&ir_line(
        opt,
        "instructions/tx routing",
        ["off", "on"],
        "cost",
        ir,
    ));
    s
}

/// `<what> <a>=<tps> <b>=<tps> ratio=<b/a>` of a cell's two targets.
fn tps_line(
    f: &Findings,
    what: &str,
    prefix: &str,
    cell: &CellSpec,
    targets: [&str; 2],
    names: [&str; 2],
) -> String {
    let [a, b] = targets.map(|t| median(f, &format!("{prefix}{cell}:{t}")));
    format!(
        "{what} {}={} {}={} ratio={}\n",
        names[0],
        tps(a, 0),
        names[1],
        tps(b, 0),
        ratio(b.and_then(|s| s.tps.value()), a.and_then(|s| s.tps.value()), 3)
    )
}

/// `<what> <a>=<Ir> <b>=<Ir> <diff>=<+x.x%>`: headline Ir per transaction, n/a without.
fn ir_line(
    opt: &Options,
    what: &str,
    names: [&str; 2],
    diff: &str,
    runs: Option<(&CgRuns, &CgRuns)>,
) -> String {
    let [a, b] = names;
    match runs {
        Some((x, y)) => {
            let (xn, yn) = (per_tx(x, opt, true), per_tx(y, opt, true));
            format!("{what} {a}={xn} {b}={yn} {diff}={}\n", pct(yn as f64, xn as f64))
        }
        None => format!("{what} {a}=n/a {b}=n/a {diff}=n/a\n"),
    }
}

/// The very last line of a full or `--quick` run, for `-S -M simple -c 64`.
pub fn ratio_line(f: &Findings) -> String {
    let s = median_tps(f, &format!("simple:64:{SY}"));
    let p = median_tps(f, "simple:64:pgbouncer");
    let d = median_tps(f, "simple:64:direct");
    format!(
        "switchyard/pgbouncer={} switchyard/direct={}\n",
        ratio(s, p, 2),
        ratio(s, d, 2)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::{ProxyCpu, RunCpu};
    use crate::options::{parse, Command};
    use crate::stats::Figure;
    use crate::stats::NodeReads;
    use crate::strace::{SyscallRun, Syscalls};
    use crate::under_callgrind::Ticker;

    fn options(args: &[&str]) -> Options {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        match parse(&args, |_| None).unwrap() {
            Command::Run(o) => *o,
            Command::Help => unreachable!(),
        }
    }

    fn add(f: &mut Findings, key: &str, tps: &[f64]) {
        let cell = f.cells.entry(key.to_owned()).or_default();
        for &t in tps {
            cell.samples.push(Sample {
                tps_text: format!("{t:.6}"),
                tps: Figure::Value(t),
                latency: Figure::Value(64_000.0 / t),
                p99: Some(9.0),
                share: None,
                cpu: None,
                login_ms: None,
            });
        }
    }

    fn context() -> Context {
        Context {
            date: "2026-12-06 12:00 UTC".into(),
            what: "switchyard abc1234".into(),
            postgres_version: "postgres (PostgreSQL) 15.18".into(),
            pgbouncer_version: "PgBouncer 1.18.0".into(),
            cores: 2,
            elapsed_secs: 42,
            plugin: Some(("plugins/dist/pool-mode.wasm".into(), "0123456789ab".into())),
            work: "/tmp/switchyard-bench.1".into(),
            keep: false,
        }
    }

    /// The last line is the -c 64 ratio of the median runs, with two decimals; the five
    /// lines before it are the plugin tax lines, the read-routing lines and the pipelined
    /// line (n/a for a target not measured).
    #[test]
    fn last_lines_of_a_quick_run() {
        let opt = options(&["--quick"]);
        let mut f = Findings::default();
        add(&mut f, "simple:64:direct", &[40_000.0]);
        add(&mut f, "simple:64:pgbouncer", &[30_000.0]);
        add(&mut f, "simple:64:switchyard-plugin", &[27_000.0]);
        add(&mut f, "tax:simple:64:switchyard", &[28_000.4]);
        add(&mut f, "tax:simple:64:switchyard-plugin", &[27_300.6]);
        add(&mut f, "routing:simple:64:switchyard", &[25_000.0]);
        add(&mut f, "routing:simple:64:switchyard-reads", &[30_000.0]);
        f.routing_nodes = vec![
            NodeReads {
                node: "127.0.0.1:5001".into(),
                primary: true,
                reads: Some(0),
                writes: Some(0),
                committed: Some(125_010),
            },
            NodeReads {
                node: "127.0.0.1:5002".into(),
                primary: false,
                reads: Some(75_000),
                writes: Some(0),
                committed: None,
            },
        ];
        add(&mut f, "pipeline:simple:64:pgbouncer", &[30_000.0]);
        add(&mut f, "pipeline:simple:64:switchyard-pipelined", &[39_000.0]);
        let report = render(&opt, &f, &context());
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(
            lines[lines.len() - 6..],
            [
                "plugin tax: tps builtin=28000 plugin=27301 ratio=0.975",
                "instructions/tx builtin=n/a plugin=n/a tax=n/a",
                "read routing: tps primary=25000 replicas=30000 ratio=1.200",
                "instructions/tx routing off=n/a on=n/a cost=n/a",
                "pipelined: switchyard/pgbouncer=1.30 switchyard/direct=n/a",
                "switchyard/pgbouncer=0.90 switchyard/direct=0.68",
            ]
        );
        assert!(
            report.contains("| simple | 64 | bench (primary) | 25000.0 | 2.560 | 0 |  | 25000.000000 |\n")
        );
        assert!(report.contains(
            "| simple | 64 | bench_reads (replicas) | 30000.0 | 2.133 | 0 | 1.200 | 30000.000000 |\n"
        ));
        assert!(report.contains("| 127.0.0.1:5001 | primary | 0 | 0 | 125010 |\n"));
        assert!(report.contains("| 127.0.0.1:5002 | replica | 75000 | 0 | - |\n"));
        assert!(report.contains(
            "| simple | 64 | switchyard (plugins) | 27000.0 | 2.370 | 9.000 | 0 | 0.90 | 0.68 |\n"
        ));
        assert!(report.contains("| simple | 16 | direct | - | - | - | 0 |  |  |\n"));
        assert!(report
            .contains("| simple | 64 | pool-mode.wasm | 27300.6 | 2.344 | 0 | 0.975 | 27300.600000 |\n"));
        assert!(report.contains("Instructions per transaction: not measured (--quick or CALLGRIND=0)."));
    }

    fn with_cpu(f: &mut Findings, key: &str, tx: u64, proxy: Option<(u64, u64, u64)>, pg_us: u64) {
        let sample = &mut f.cells.get_mut(key).unwrap().samples[0];
        sample.cpu = Some(RunCpu {
            transactions: tx,
            proxy: proxy.map(|(user_us, system_us, ctx_switches)| ProxyCpu {
                user_us,
                system_us,
                ctx_switches,
            }),
            postgres_us: Some(pg_us),
            pgbench_us: Some(tx * 20),
        });
    }

    /// The CPU table shows the median run's proxy user, system and total µs per
    /// transaction, Postgres' and pgbench's µs and the proxy's context switches per transaction, "–" for
    /// direct Postgres' proxy columns, "-" where nothing was read, and on Switchyard's row
    /// its total over PgBouncer's; the system call table shows each proxy's calls per
    /// transaction by kind, "other" and the total, "-" for a cell whose strace run failed;
    /// the last line stays the tps ratio line.
    #[test]
    fn cpu_and_system_call_tables() {
        let opt = options(&["--quick"]);
        let mut f = Findings::default();
        add(&mut f, "simple:64:direct", &[40_000.0]);
        add(&mut f, "simple:64:pgbouncer", &[30_000.0]);
        add(
            &mut f,
            "simple:64:switchyard-plugin",
            &[27_000.0, 29_000.0, 25_000.0],
        );
        with_cpu(&mut f, "simple:64:direct", 400_000, None, 16_000_000);
        with_cpu(
            &mut f,
            "simple:64:pgbouncer",
            300_000,
            Some((600_000, 4_500_000, 150_000)),
            9_000_000,
        );
        // The median run (27,000 tps) is the first; the others' figures must not show.
        with_cpu(
            &mut f,
            "simple:64:switchyard-plugin",
            270_000,
            Some((1_620_000, 5_130_000, 108_000)),
            8_100_000,
        );
        f.cells.get_mut("simple:64:switchyard-plugin").unwrap().samples[1].cpu = Some(RunCpu {
            transactions: 1,
            proxy: None,
            postgres_us: None,
            pgbench_us: None,
        });
        add(&mut f, "reconnect:simple:16:pgbouncer", &[200.0]);
        let mut calls = std::collections::BTreeMap::new();
        for (k, n) in [
            ("sendto", 20_000),
            ("recvfrom", 30_000),
            ("epoll_wait", 1_000),
            ("accept", 60),
        ] {
            calls.insert(k.to_owned(), n);
        }
        f.syscalls.insert(
            "simple:64:pgbouncer".into(),
            SyscallRun {
                transactions: 10_000,
                syscalls: Syscalls { calls, total: 51_060 },
            },
        );
        let report = render(&opt, &f, &context());
        assert!(report.contains("| simple | 64 | direct | 40000.0 | – | – | – | 40.0 | 20.0 | – |  |\n"));
        assert!(report
            .contains("| simple | 64 | pgbouncer | 30000.0 | 2.0 | 15.0 | 17.0 | 30.0 | 20.0 | 0.50 |  |\n"));
        assert!(report.contains(
            "| simple | 64 | switchyard (plugins) | 27000.0 | 6.0 | 19.0 | 25.0 | 30.0 | 20.0 | 0.40 | 1.47 |\n"
        ));
        assert!(report.contains("| simple -C | 16 | pgbouncer | 200.0 | - | - | - | - | - | - |  |\n"));
        assert!(
            report.contains("| simple -C | 16 | switchyard (plugins) | - | - | - | - | - | - | - | n/a |\n")
        );
        assert!(report.contains(
            "| mode | clients | proxy | transactions | sendto | recvfrom | epoll_wait | epoll_ctl | futex | read | write | writev | readv | other | total |\n"
        ));
        assert!(report.contains(
            "| simple | 64 | pgbouncer | 10000 | 2.00 | 3.00 | 0.10 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0.01 | 5.11 |\n"
        ));
        assert!(report.contains("| simple | 64 | switchyard (plugins) | - | | | | | | | | | | | |\n"));
        assert!(report.ends_with("switchyard/pgbouncer=0.90 switchyard/direct=0.68\n"));
        let mut opt = options(&["--quick"]);
        opt.strace = false;
        let report = render(&opt, &f, &context());
        assert!(report.contains("System calls per transaction: not measured (STRACE=0)."));
        assert!(!report.contains("| proxy | transactions |"));
    }

    /// Without the -c 64 cells the ratio line says n/a instead of going missing; with
    /// --plugin-tax the instructions line is the last.
    #[test]
    fn missing_cells_and_plugin_tax_only() {
        let f = Findings::default();
        assert_eq!(ratio_line(&f), "switchyard/pgbouncer=n/a switchyard/direct=n/a\n");
        let opt = options(&["--plugin-tax"]);
        let mut f = Findings::default();
        let cg = |run1, run2, ticker: (u64, u64)| CgProxy {
            startup: 1_000_000,
            all: 5_000_000,
            runs: runs(run1, run2, ticker),
            routed: None,
        };
        // 9000 transactions between the runs: built-in 10,000 Ir/tx, plugin 10,500 without
        // the ticker thread.
        f.cg_builtin = Some(cg(10_000_000, 100_000_000, (0, 0)));
        f.cg_plugin = Some(cg(10_500_000, 105_000_000 + 900_000, (100_000, 1_000_000)));
        let report = render(&opt, &f, &context());
        assert_eq!(
            report.lines().last(),
            Some("instructions/tx builtin=10000 plugin=10500 tax=+5.0%")
        );
        assert!(report.contains(
            "| per transaction, without the epoch ticker thread (headline) | 10000 | 10500 | 500 | +5.0% |"
        ));
        assert!(report.contains("| per transaction, whole process | 10000 | 10600 | 600 | +6.0% |"));
        assert!(report.contains("(callgrind thread 02) wakes every 1 ms whatever the load: 100 ticks in the two runs, 11000 Ir per tick"));
        assert!(!report.contains("switchyard/pgbouncer="));
        assert!(!report.contains("read routing:"));
    }

    /// With --pipeline the report is the pipelined-pooling row alone: per cell the four
    /// targets with the median run's tps, latencies, failed transactions, CPU per
    /// transaction (– for direct Postgres' proxy columns) and, for the two Switchyards, the
    /// statements pipelined with their share of the cell's transactions; on the pipelining
    /// Switchyard's row its tps over PgBouncer's, direct Postgres' and the unpipelined
    /// Switchyard's; then the row's system call table for the three proxies; the last line
    /// is `pipelined: ...` of the -c 64 cell, and no matrix ratio line follows.
    #[test]
    fn pipelined_pooling_only() {
        let opt = options(&["--pipeline"]);
        let mut f = Findings::default();
        for (c, base) in [(16, 20_000.0), (64, 30_000.0)] {
            add(&mut f, &format!("pipeline:simple:{c}:direct"), &[base * 1.2]);
            add(&mut f, &format!("pipeline:simple:{c}:pgbouncer"), &[base]);
            add(
                &mut f,
                &format!("pipeline:simple:{c}:switchyard-plugin"),
                &[base * 0.9],
            );
            add(
                &mut f,
                &format!("pipeline:simple:{c}:switchyard-pipelined"),
                &[base * 1.4, base * 1.2, base * 1.5],
            );
        }
        with_cpu(&mut f, "pipeline:simple:64:direct", 360_000, None, 14_400_000);
        with_cpu(
            &mut f,
            "pipeline:simple:64:switchyard-plugin",
            270_000,
            Some((1_620_000, 5_130_000, 108_000)),
            8_100_000,
        );
        with_cpu(
            &mut f,
            "pipeline:simple:64:switchyard-pipelined",
            450_000,
            Some((1_800_000, 4_500_000, 45_000)),
            9_000_000,
        );
        // The cell's other two runs: 300,000 transactions more, 750,000 in all.
        for i in [1, 2] {
            f.cells
                .get_mut("pipeline:simple:64:switchyard-pipelined")
                .unwrap()
                .samples[i]
                .cpu = Some(RunCpu {
                transactions: 150_000,
                proxy: None,
                postgres_us: None,
                pgbench_us: None,
            });
        }
        f.pipelined
            .insert("pipeline:simple:64:switchyard-plugin".into(), Some(0));
        f.pipelined
            .insert("pipeline:simple:64:switchyard-pipelined".into(), Some(600_000));
        f.pipelined
            .insert("pipeline:simple:16:switchyard-pipelined".into(), None);
        let mut calls = std::collections::BTreeMap::new();
        calls.insert("sendto".to_owned(), 12_000);
        calls.insert("recvfrom".to_owned(), 13_000);
        f.syscalls.insert(
            "pipeline:simple:64:switchyard-pipelined".into(),
            SyscallRun {
                transactions: 10_000,
                syscalls: Syscalls { calls, total: 25_000 },
            },
        );
        let report = render(&opt, &f, &context());
        assert!(report.starts_with("\n## Switchyard pipelined pooling ("));
        assert!(report.contains("PgBouncer 1.18.0"));
        assert!(
            report.contains("(pool-mode plugin plugins/dist/pool-mode.wasm, sha256 0123456789ab, pool 20)")
        );
        assert!(report.contains(
            "| simple | 64 | direct | 36000.0 | 1.778 | 9.000 | 0 | – | – | 40.0 | – |  |  |  |  |\n"
        ));
        assert!(report.contains(
            "| simple | 64 | switchyard (plugins) | 27000.0 | 2.370 | 9.000 | 0 | 6.0 | 19.0 | 30.0 | 0.40 | 0 (0 %) |  |  |  |\n"
        ));
        assert!(report.contains(
            "| simple | 64 | switchyard (plugins, pipeline = true) | 42000.0 | 1.524 | 9.000 | 0 | 4.0 | 10.0 | 20.0 | 0.10 | 600000 (80 %) | 1.40 | 1.17 | 1.56 |\n"
        ));
        assert!(report.contains(
            "| simple | 16 | switchyard (plugins, pipeline = true) | 28000.0 | 2.286 | 9.000 | 0 | - | - | - | - | - | 1.40 | 1.17 | 1.56 |\n"
        ));
        assert!(report.contains(
            "| simple | 64 | switchyard (plugins, pipeline = true) | 10000 | 1.20 | 1.30 | 0.00 |"
        ));
        assert!(report.contains("| simple | 64 | pgbouncer | - | | |"));
        assert!(!report.contains("### Throughput") && !report.contains("### CPU per transaction"));
        assert!(report.ends_with("\npipelined: switchyard/pgbouncer=1.40 switchyard/direct=1.17\n"));
        // Without a 64-client cell the line is of the largest one.
        let mut opt = opt;
        opt.pipeline_cells.retain(|c| c.clients == 16);
        assert_eq!(
            pipeline_line(&opt, &f),
            "pipelined: switchyard/pgbouncer=1.40 switchyard/direct=1.17\n"
        );
        opt.pipeline_cells.clear();
        assert_eq!(
            pipeline_line(&opt, &f),
            "pipelined: switchyard/pgbouncer=n/a switchyard/direct=n/a\n"
        );
    }

    /// The title of a run without the matrix names its parts.
    #[test]
    fn titles_of_partial_runs() {
        assert_eq!(parts_title(&options(&["--pipeline"])), "pipelined pooling");
        assert_eq!(
            parts_title(&options(&["--plugin-tax", "--read-routing"])),
            "plugin tax and read routing"
        );
        assert_eq!(
            parts_title(&options(&["--plugin-tax", "--read-routing", "--pipeline"])),
            "plugin tax, read routing and pipelined pooling"
        );
    }

    /// Two runs of `run1` and `run2` Ir, the ticker thread's share of each given, 100 ticks.
    fn runs(run1: u64, run2: u64, ticker: (u64, u64)) -> CgRuns {
        CgRuns {
            run1,
            run2,
            ticker: Some(Ticker {
                thread: "-02".into(),
                run1_ir: ticker.0,
                run2_ir: ticker.1,
                ticks: 100,
            }),
            ..Default::default()
        }
    }

    /// With --read-routing the routing instructions line is the last, per transaction of
    /// the routed runs against the runs against `bench` (the ticker thread left out), and
    /// neither the plugin tax nor the ratio line is printed.
    #[test]
    fn read_routing_only() {
        let opt = options(&["--read-routing"]);
        let mut f = Findings::default();
        add(
            &mut f,
            "routing:simple:16:switchyard",
            &[20_000.0, 21_000.0, 19_000.0],
        );
        add(
            &mut f,
            "routing:simple:16:switchyard-reads",
            &[26_000.0, 25_000.0, 24_000.0],
        );
        // 9000 transactions between the runs: off 10,000 Ir/tx, on 10,250.
        f.cg_builtin = Some(CgProxy {
            startup: 1_000_000,
            all: 9_000_000,
            runs: runs(10_000_000, 100_000_000, (0, 0)),
            routed: Some(runs(12_000_000, 104_250_000 + 90_000, (10_000, 100_000))),
        });
        let report = render(&opt, &f, &context());
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(
            lines[lines.len() - 2..],
            [
                "read routing: tps primary=20000 replicas=25000 ratio=1.250",
                "instructions/tx routing off=10000 on=10250 cost=+2.5%",
            ]
        );
        assert!(report.starts_with("\n## Switchyard read routing ("));
        assert!(report.contains(
            "| per transaction, without the epoch ticker thread (headline) | 10000 | 10250 | 250 | +2.5% |"
        ));
        assert!(report.contains("| per transaction, whole process | 10000 | 10260 | 260 | +2.6% |"));
        assert!(!report.contains("### Plugin tax") && !report.contains("plugin tax: tps"));
        assert!(report.contains("- The epoch ticker thread is left out of the headline"));
        assert!(!report.contains("switchyard/pgbouncer="));
    }
}
