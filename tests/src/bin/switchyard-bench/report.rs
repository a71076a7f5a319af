//! The report on stdout: markdown tables, then the plugin tax lines, then (but for
//! `--plugin-tax`) the ratio line that users and docs/performance.md parse as the very last
//! line. A pure function of the settings, the findings and a few facts about the machine.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::callgrind;
use crate::measure::{skip_cell, Findings, SY, TARGETS, TAX_TARGETS};
use crate::options::Options;
use crate::stats::{fmt_figure, fmt_opt, pct, ratio, Cell, Sample};
use crate::under_callgrind::CgProxy;

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
    /// The plugin's source (relative to the workspace) and short SHA-256.
    pub plugin_source: String,
    pub plugin_sha: String,
    /// The work directory, and whether it is kept.
    pub work: String,
    pub keep: bool,
}

fn label<'a>(t: &'a str, mode: &str) -> &'a str {
    match t {
        SY => "switchyard (plugins)",
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

/// The whole report.
pub fn render(opt: &Options, f: &Findings, cx: &Context) -> String {
    let mut out = String::new();
    let o = &mut out;
    o.push('\n');
    if opt.tax_only {
        let _ = writeln!(o, "## Switchyard plugin tax ({})\n", cx.date);
        let _ = writeln!(o, "- {}; {}", cx.what, cx.postgres_version);
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
        opt.workers
            .map_or("default (one per core)".to_owned(), |w| w.to_string())
    );
    let _ = writeln!(o, "- total wall time: {}s", cx.elapsed_secs);
    if !opt.tax_only {
        o.push('\n');
        matrix(o, opt, f);
        o.push('\n');
        added_latency(o, opt, f);
        reconnect(o, opt, f);
        cpu_share(o, opt, f, cx);
        idle_memory(o, opt, f);
    }
    o.push('\n');
    tax(o, opt, f, cx);
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
    o.push_str(&tax_lines(opt, f));
    if !opt.tax_only {
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

/// Ir per transaction of a proxy: the difference of the two measured intervals over the
/// difference of their transactions, with or without the epoch ticker thread.
fn per_tx(cg: &CgProxy, opt: &Options, without_ticker: bool) -> i64 {
    let mut d = cg.run2 as i64 - cg.run1 as i64;
    if without_ticker {
        if let Some(t) = &cg.ticker {
            d -= t.run2_ir as i64 - t.run1_ir as i64;
        }
    }
    let tx = f64::from(opt.cg_clients) * f64::from(opt.cg_tx.1 - opt.cg_tx.0);
    (d as f64 / tx).round() as i64
}

fn tax(o: &mut String, opt: &Options, f: &Findings, cx: &Context) {
    o.push_str("### Plugin tax: pool-mode plugin on the data path vs the built-in policy\n\n");
    let _ = writeln!(
        o,
        "- plugin: {} (sha256 {}) as `[plugins.pool-mode]`, hooks = [\"pool-mode\"], settings mode = \"transaction\"; both proxies run side by side on the same Postgres; runs interleaved, order alternating per round",
        cx.plugin_source, cx.plugin_sha
    );
    let _ = writeln!(
        o,
        "- SHOW PLUGINS after the tps runs: {}\n",
        f.plugin_stats.as_deref().unwrap_or("n/a")
    );
    o.push_str("| mode | clients | policy | tps | avg latency ms | failed tx | plugin/built-in | tps of each round |\n");
    o.push_str("|---|---:|---|---:|---:|---:|---:|---|\n");
    for cell in &opt.tax_cells {
        let (kb, kp) = (
            format!("tax:{cell}:{}", TAX_TARGETS[0]),
            format!("tax:{cell}:{}", TAX_TARGETS[1]),
        );
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
        let (b, p) = (median(f, &kb), median(f, &kp));
        let _ = writeln!(
            o,
            "| {} | {} | built-in | {}{} | {} | {} | | {} |",
            cell.mode,
            cell.clients,
            tps(b, 1),
            flag(f, &kb),
            latency(b),
            failed(f, &kb),
            runs(&kb)
        );
        let _ = writeln!(
            o,
            "| {} | {} | pool-mode.wasm | {}{} | {} | {} | {} | {} |",
            cell.mode,
            cell.clients,
            tps(p, 1),
            flag(f, &kp),
            latency(p),
            failed(f, &kp),
            ratio(median_tps(f, &kp), median_tps(f, &kb), 3),
            runs(&kp)
        );
    }
    o.push('\n');
    if !opt.callgrind {
        o.push_str("Instructions per transaction: not measured (--quick or CALLGRIND=0).\n");
        return;
    }
    let Some(cg) = &f.callgrind else {
        o.push_str("Instructions per transaction: the callgrind measurement failed (see Problems).\n");
        return;
    };
    let (b, p) = (&cg.builtin, &cg.plugin);
    let c = u64::from(opt.cg_clients);
    let tx = c * u64::from(opt.cg_tx.1 - opt.cg_tx.0);
    let all_tx = c * u64::from(opt.cg_warmup + opt.cg_tx.0 + opt.cg_tx.1);
    let (bt, pt) = (per_tx(b, opt, false), per_tx(p, opt, false));
    let (bn, pn) = (per_tx(b, opt, true), per_tx(p, opt, true));
    // Fixed cost of one pgbench run: the first interval less its transactions.
    let fixed = |cg: &CgProxy, per: i64| cg.run1 as i64 - (c * u64::from(opt.cg_tx.0)) as i64 * per;
    let (bf, pf) = (fixed(b, bt), fixed(p, pt));
    let whole = |cg: &CgProxy| (cg.all as f64 / all_tx as f64).round() as i64;
    let (ball, pall) = (whole(b), whole(p));
    let (bs, ps) = (b.startup as i64, p.startup as i64);
    let _ = writeln!(
        o,
        "Instructions per transaction: valgrind --tool=callgrind, instructions executed (Ir) by the proxy process in user space (the kernel's share is not counted). `pgbench -S -M simple -c {} -j 1` after a warm-up of -t {}; counters dumped and zeroed before and after runs of -t {} and -t {} per client; per transaction = the difference of the two runs over their difference in transactions ({tx}), so startup, plugin compilation, logins and logouts cancel.\n",
        opt.cg_clients, opt.cg_warmup, opt.cg_tx.0, opt.cg_tx.1
    );
    o.push_str("| Ir | built-in | plugin | plugin − built-in | tax |\n");
    o.push_str("|---|---:|---:|---:|---:|\n");
    let rows = [
        (
            "per transaction, without the epoch ticker thread (headline)".to_owned(),
            bn,
            pn,
        ),
        ("per transaction, whole process".to_owned(), bt, pt),
        (
            format!(
                "one pgbench run's fixed cost ({} login(s) and logout(s), pgbench's own queries)",
                opt.cg_clients
            ),
            bf,
            pf,
        ),
        (
            "startup (plugin compilation included) + the first login + warm-up".to_owned(),
            bs,
            ps,
        ),
        (
            format!("whole process, start to exit, over all {all_tx} transactions"),
            ball,
            pall,
        ),
    ];
    for (what, b, p) in rows {
        let _ = writeln!(
            o,
            "| {what} | {b} | {p} | {} | {} |",
            p - b,
            pct(p as f64, b as f64)
        );
    }
    o.push('\n');
    match &p.ticker {
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
    let n = 12;
    let _ = writeln!(
        o,
        "Where the extra instructions go: self Ir per transaction by function, plugin minus built-in, over the same difference of runs (top {n}; \"no symbol\" is code wasmtime compiled at run time: the plugin and its trampolines):\n"
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
    // (plugin run 2 - plugin run 1) - (built-in run 2 - built-in run 1)
    let plus = sum(&p.run2_costs, &b.run1_costs);
    let minus = sum(&p.run1_costs, &b.run2_costs);
    for (ir, func) in callgrind::top_extra(&plus, &minus, tx, n) {
        let _ = writeln!(o, "| {ir:.1} | `{}` |", callgrind::table_name(&func));
    }
}

/// `plugin tax: tps ...` and `instructions/tx ...`: medians of the first tax cell, and the
/// headline Ir per transaction (n/a when callgrind was skipped or failed).
pub fn tax_lines(opt: &Options, f: &Findings) -> String {
    let first = &opt.tax_cells[0];
    let b = median(f, &format!("tax:{first}:{}", TAX_TARGETS[0]));
    let p = median(f, &format!("tax:{first}:{}", TAX_TARGETS[1]));
    let mut s = format!(
        "plugin tax: tps builtin={} plugin={} ratio={}\n",
        tps(b, 0),
        tps(p, 0),
        ratio(p.and_then(|s| s.tps.value()), b.and_then(|s| s.tps.value()), 3)
    );
    match &f.callgrind {
        Some(cg) => {
            let (bn, pn) = (per_tx(&cg.builtin, opt, true), per_tx(&cg.plugin, opt, true));
            let _ = writeln!(
                s,
                "instructions/tx builtin={bn} plugin={pn} tax={}",
                pct(pn as f64, bn as f64)
            );
        }
        None => s.push_str("instructions/tx builtin=n/a plugin=n/a tax=n/a\n"),
    }
    s
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
    use crate::options::{parse, Command};
    use crate::stats::Figure;
    use crate::under_callgrind::{Callgrind, Ticker};

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
            plugin_source: "plugins/dist/pool-mode.wasm".into(),
            plugin_sha: "0123456789ab".into(),
            work: "/tmp/switchyard-bench.1".into(),
            keep: false,
        }
    }

    /// The last line is the -c 64 ratio of the median runs, with two decimals; the two
    /// lines before it are the plugin tax lines.
    #[test]
    fn last_lines_of_a_quick_run() {
        let opt = options(&["--quick"]);
        let mut f = Findings::default();
        add(&mut f, "simple:64:direct", &[40_000.0]);
        add(&mut f, "simple:64:pgbouncer", &[30_000.0]);
        add(&mut f, "simple:64:switchyard-plugin", &[27_000.0]);
        add(&mut f, "tax:simple:64:switchyard", &[28_000.4]);
        add(&mut f, "tax:simple:64:switchyard-plugin", &[27_300.6]);
        let report = render(&opt, &f, &context());
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(
            lines[lines.len() - 3..],
            [
                "plugin tax: tps builtin=28000 plugin=27301 ratio=0.975",
                "instructions/tx builtin=n/a plugin=n/a tax=n/a",
                "switchyard/pgbouncer=0.90 switchyard/direct=0.68",
            ]
        );
        assert!(report.contains(
            "| simple | 64 | switchyard (plugins) | 27000.0 | 2.370 | 9.000 | 0 | 0.90 | 0.68 |\n"
        ));
        assert!(report.contains("| simple | 16 | direct | - | - | - | 0 |  |  |\n"));
        assert!(report
            .contains("| simple | 64 | pool-mode.wasm | 27300.6 | 2.344 | 0 | 0.975 | 27300.600000 |\n"));
        assert!(report.contains("Instructions per transaction: not measured (--quick or CALLGRIND=0)."));
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
            run1,
            run2,
            all: 5_000_000,
            ticker: Some(Ticker {
                thread: "-02".into(),
                run1_ir: ticker.0,
                run2_ir: ticker.1,
                ticks: 100,
            }),
            ..Default::default()
        };
        // 9000 transactions between the runs: built-in 10,000 Ir/tx, plugin 10,500 without
        // the ticker thread.
        f.callgrind = Some(Callgrind {
            builtin: cg(10_000_000, 100_000_000, (0, 0)),
            plugin: cg(10_500_000, 105_000_000 + 900_000, (100_000, 1_000_000)),
        });
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
    }
}
