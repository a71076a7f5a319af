//! The benchmark program of `scripts/bench` (`switchyard-bench`) end to end, with the
//! shortest settings that still measure the `-S -M simple -c 64` cell of all three targets,
//! the plugin tax, the read-routing row and one pipelined-pooling cell: its report must end
//! with the lines users and docs/performance.md parse, in their format. Its statistics and
//! report have unit tests in the program itself; this checks that the servers start, the
//! runs run and everything is stopped again.
//! Against the proxy under test (`SWITCHYARD_BIN` or `target/<profile>/switchyard`).

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use switchyard_tests::{env, tools::run_command, TestBed};

/// A number with `decimals` decimals, or `n/a` when the cell could not be measured.
fn is_ratio(v: &str, decimals: usize) -> bool {
    v == "n/a"
        || v.split_once('.').is_some_and(|(i, d)| {
            !i.is_empty()
                && i.bytes().all(|b| b.is_ascii_digit())
                && d.len() == decimals
                && d.bytes().all(|b| b.is_ascii_digit())
        })
}

/// The cells after `prefix` of the first row starting with it in the section under the
/// heading starting with `heading` (none without).
fn table_row(report: &str, heading: &str, prefix: &str) -> Option<Vec<String>> {
    let row = report
        .lines()
        .skip_while(|l| !l.starts_with(heading))
        .take_while(|l| !l.starts_with("###") || l.starts_with(heading))
        .find(|l| l.starts_with(prefix))?;
    Some(
        row[prefix.len()..]
            .trim_end_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect(),
    )
}

/// Whether `cell` is a number above zero.
fn positive(cell: Option<&String>) -> bool {
    cell.and_then(|c| c.parse::<f64>().ok()).is_some_and(|v| v > 0.0)
}

/// One pgbench run of 3 s per cell, one round, 20 idle clients, no callgrind, strace runs
/// of 1 s: exit status 0 or 1 (1: some run had a problem, which a loaded machine may
/// cause), the plugin was called (SHOW PLUGINS), both replicas got reads in the
/// read-routing row (SHOW NODES, as the report's node table shows it), the CPU table's
/// `-c 64` rows give Switchyard's and PgBouncer's proxy CPU and Postgres' CPU per
/// transaction above zero and a switchyard/pgbouncer ratio, the system call table gives
/// each proxy's sendto and recvfrom per transaction above zero at 64 clients, the
/// pipelined-pooling cell (`-M simple -c 64`) shows the pipelining Switchyard's statements
/// pipelined above zero (SHOW POOLS) and its sendto per transaction above zero, and the
/// last six lines are the plugin tax line and its instructions line, the read-routing line
/// and its instructions line (n/a without callgrind), the pipelined line
/// `pipelined: switchyard/pgbouncer=<r> switchyard/direct=<r>` and, very last,
/// `switchyard/pgbouncer=<r> switchyard/direct=<r>`.
#[test]
fn a_short_run_ends_with_the_documented_lines() -> Result<()> {
    if TestBed::direct_mode() {
        return Ok(()); // the benchmark measures the proxy
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"));
    cmd.env("SWITCHYARD_PROFILE", env::proxy_profile())
        .env("SWITCHYARD_BIN", env::proxy_binary()?)
        .envs([
            ("CLIENTS", "64"),
            ("POOLER_CLIENTS", "16"),
            ("MODES", "simple"),
            ("DURATION", "3"),
            ("ROUNDS", "1"),
            ("RECONNECT_CLIENTS", ""),
            ("IDLE_CLIENTS", "20"),
            ("TAX_CELLS", "simple:4"),
            ("ROUTING_CELLS", "simple:4"),
            ("PIPELINE_CELLS", "simple:64"),
            ("CALLGRIND", "0"),
            ("STRACE_SECONDS", "1"),
            ("SCALE", "1"),
        ]);
    let out = run_command(&mut cmd, None, Duration::from_secs(300))?;
    ensure!(
        matches!(out.code, Some(0 | 1)),
        "{}",
        out.describe("expected exit status 0 or 1")
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(lines.len() > 6, "{}", out.describe("expected a report"));
    let [tax, ir, routing, routing_ir, pipelined, last] = [6, 5, 4, 3, 2, 1].map(|i| lines[lines.len() - i]);

    let ratio = tax
        .strip_prefix("plugin tax: tps builtin=")
        .and_then(|r| r.split_once(" plugin="))
        .and_then(|(_, r)| r.split_once(" ratio="))
        .map(|(_, r)| r);
    ensure!(ratio.is_some_and(|r| is_ratio(r, 3)), "plugin tax line: {tax:?}");
    ensure!(
        ir == "instructions/tx builtin=n/a plugin=n/a tax=n/a",
        "instructions line: {ir:?}"
    );
    let ratio = routing
        .strip_prefix("read routing: tps primary=")
        .and_then(|r| r.split_once(" replicas="))
        .and_then(|(_, r)| r.split_once(" ratio="))
        .map(|(_, r)| r);
    ensure!(
        ratio.is_some_and(|r| is_ratio(r, 3)),
        "read routing line: {routing:?}"
    );
    ensure!(
        routing_ir == "instructions/tx routing off=n/a on=n/a cost=n/a",
        "routing instructions line: {routing_ir:?}"
    );
    // | node | role | reads routed | writes routed | transactions committed |
    let replica_reads: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("| 127.0.0.1:"))
        .map(|l| l.split(" | ").map(str::trim).collect::<Vec<_>>())
        .filter(|cells| cells.get(1) == Some(&"replica"))
        .filter_map(|cells| cells.get(2)?.parse().ok())
        .collect();
    ensure!(
        replica_reads.len() == 2 && replica_reads.iter().all(|&r| r > 0),
        "{}",
        out.describe(&format!("expected reads on both replicas, got {replica_reads:?}"))
    );
    let ratios = pipelined
        .strip_prefix("pipelined: switchyard/pgbouncer=")
        .and_then(|r| r.split_once(" switchyard/direct="));
    ensure!(
        ratios.is_some_and(|(p, d)| is_ratio(p, 2) && is_ratio(d, 2)),
        "pipelined line: {pipelined:?}"
    );
    // tps | avg | p99 | failed | user | system | postgres | ctx | statements pipelined | ...
    let row = table_row(
        &out.stdout,
        "### Pipelined pooling",
        "| simple | 64 | switchyard (plugins, pipeline = true) | ",
    );
    let statements = row
        .as_ref()
        .and_then(|c| c.get(8)?.split_whitespace().next()?.parse::<u64>().ok());
    ensure!(
        statements.is_some_and(|n| n > 0),
        "{}",
        out.describe(&format!("expected statements pipelined, got {row:?}"))
    );
    let ratios = last
        .strip_prefix("switchyard/pgbouncer=")
        .and_then(|r| r.split_once(" switchyard/direct="));
    ensure!(
        ratios.is_some_and(|(p, d)| is_ratio(p, 2) && is_ratio(d, 2)),
        "last line: {last:?}"
    );
    ensure!(
        out.stdout.contains("- SHOW PLUGINS after the tps runs: calls="),
        "{}",
        out.describe("expected SHOW PLUGINS figures in the report")
    );
    ensure!(
        out.stdout.contains("| simple | 64 | switchyard (plugins) |"),
        "{}",
        out.describe("expected the -c 64 row of the matrix")
    );
    // CPU per transaction: tps | user | system | total | postgres | ctx switches | ratio
    let cpu = |proxy: &str| {
        table_row(
            &out.stdout,
            "### CPU per transaction",
            &format!("| simple | 64 | {proxy} | "),
        )
    };
    for proxy in ["pgbouncer", "switchyard (plugins)"] {
        let cells = cpu(proxy);
        ensure!(
            cells
                .as_ref()
                .is_some_and(|c| positive(c.get(3)) && positive(c.get(4))),
            "{}",
            out.describe(&format!("expected {proxy}'s CPU per transaction, got {cells:?}"))
        );
    }
    let ratio = cpu("switchyard (plugins)").and_then(|c| c.into_iter().nth(6));
    ensure!(
        ratio.as_deref().is_some_and(|r| r != "n/a" && is_ratio(r, 2)),
        "proxy CPU ratio: {ratio:?}"
    );
    // System calls per transaction: transactions | sendto | recvfrom | ...
    let calls = [
        ("### System calls per transaction", "pgbouncer"),
        ("### System calls per transaction", "switchyard (plugins)"),
        (
            "System calls per transaction of the pipelined-pooling row",
            "switchyard (plugins, pipeline = true)",
        ),
    ];
    for (heading, proxy) in calls {
        let cells = table_row(&out.stdout, heading, &format!("| simple | 64 | {proxy} | "));
        ensure!(
            cells
                .as_ref()
                .is_some_and(|c| positive(c.get(1)) && positive(c.get(2))),
            "{}",
            out.describe(&format!(
                "expected {proxy}'s system calls per transaction, got {cells:?}"
            ))
        );
    }
    Ok(())
}
