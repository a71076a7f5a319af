//! `--tour`: 8 clients of the test bed's load ([`Load`]: INSERT and SELECT in turn, every
//! error counted by SQLSTATE, every acknowledged write looked up afterwards) run through the
//! proxy for 15 s while `patronictl switchover` moves the primary at 5 s. Prints the load's
//! report, the switchover (from, to, how long patronictl took), the physical switchover
//! from the PostgreSQL logs, the reads and writes each node ran (the admin console's
//! `SHOW NODES`: the demo routes reads to the replica), and PASS or FAIL.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use switchyard_tests::admin::admin_rows;
use switchyard_tests::interrupt;
use switchyard_tests::load::{Load, LoadOptions};
use switchyard_tests::patroni::PatroniCluster;
use switchyard_tests::Endpoint;
use tokio::runtime::Runtime;

use crate::log;

const CLIENTS: usize = 8;
const SECONDS: Duration = Duration::from_secs(15);
const SWITCH_AT: Duration = Duration::from_secs(5);

/// Runs the tour; `Ok(true)` when it passed: no client saw an error, no acknowledged write
/// was lost or doubled, and the switchover happened.
pub fn run(runtime: &Runtime, cluster: &PatroniCluster, proxy: &Endpoint) -> Result<bool> {
    log!(
        "tour: {CLIENTS} clients alternating INSERT and SELECT through {} for {} s; patronictl switchover at {} s",
        proxy.addr(),
        SECONDS.as_secs(),
        SWITCH_AT.as_secs()
    );
    // The clients run on the runtime's threads while this one drives Patroni.
    let load = runtime.block_on(Load::start(LoadOptions::new(vec![proxy.clone()], CLIENTS)))?;
    let started = Instant::now();
    interrupt::sleep(SWITCH_AT)?;
    let old = cluster.leader()?.name().to_owned();
    let since = SystemTime::now();
    log!("patronictl switchover --leader {old} --force");
    // The switchover (patronictl, then until the cluster is healthy again) on a thread of its
    // own: the load stops at 15 s whatever it takes.
    let (switchover, waited, report) = std::thread::scope(|s| {
        let switchover = s.spawn(|| {
            let result = cluster.switchover(None);
            match &result {
                Ok(s) => eprint!("{}", indent(&s.output)),
                Err(e) => eprint!("{}", indent(&format!("{e:#}"))),
            }
            result
        });
        let waited = interrupt::sleep(SECONDS.saturating_sub(started.elapsed()));
        let report = runtime.block_on(load.finish(proxy));
        let switchover = switchover
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the switchover thread panicked")));
        (switchover, waited, report)
    });
    waited?;
    let timeline = cluster.timeline_since(since);

    let load_clean = match &report {
        Ok(report) => {
            println!("{report}\n\n{}\n", report.summary());
            report.clean()
        }
        Err(e) => {
            println!("load: {e:#}\n");
            false
        }
    };
    match &switchover {
        Ok(s) => println!(
            "  switchover: {} -> {}, patronictl took {:.3} s",
            s.from,
            s.to,
            s.command.as_secs_f64()
        ),
        Err(_) => println!(
            "  switchover: {old} -> {}, and FAILED (see above)",
            cluster.leader().map_or("?", |l| l.name())
        ),
    }
    match (&timeline.stop, &timeline.ready, timeline.physical()) {
        (Some(stop), Some(ready), Some(physical)) => println!(
            "  physical switchover: {:.3} s (old primary's shutdown request {} -> new primary takes writes {} UTC)",
            physical.as_secs_f64(),
            stop.clock(),
            ready.clock()
        ),
        _ => println!("  physical switchover: unknown"),
    }
    match runtime.block_on(admin_rows(proxy, "SHOW NODES")) {
        Ok(rows) => {
            for row in rows {
                let field = |k: &str| row.get(k).map_or("?", String::as_str);
                let skipped = field("skipped");
                println!(
                    "  node {} ({} now): {} reads, {} writes since the demo started{}",
                    field("node"),
                    field("role"),
                    field("reads"),
                    field("writes"),
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!("; skipped for reads: {skipped}")
                    }
                );
            }
        }
        Err(e) => println!("  reads and writes per node: unknown ({e:#})"),
    }
    let passed = load_clean && switchover.is_ok();
    if passed {
        println!("  tour: PASS (no client error, no acknowledged write lost)\n");
    } else {
        println!("  tour: FAIL (see the client errors, lost or doubled writes and the switchover above)\n");
    }
    Ok(passed)
}

/// `text` with every line indented by four spaces.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
