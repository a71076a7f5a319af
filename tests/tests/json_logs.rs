//! The proxy's log as JSON lines (`--log-format json`): every line an operator's log
//! pipeline reads parses, and a failover can be followed by its event id.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use switchyard_tests::admin::wait_for_primary;
use switchyard_tests::promotion::probed;
use switchyard_tests::proxy::Launch;
use switchyard_tests::{expect_sqlstate, skip_if_direct, ClusterOptions, Proxy, TestBed};

/// The log's lines, each parsed as a JSON object; the first line that is not one fails.
fn parse(log: &str) -> Result<Vec<serde_json::Map<String, Value>>> {
    log.lines()
        .enumerate()
        .map(|(i, line)| match serde_json::from_str(line) {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(other) => bail!("log line {}: not a JSON object: {other}", i + 1),
            Err(e) => bail!("log line {}: not JSON ({e}): {line}", i + 1),
        })
        .collect()
}

fn text<'a>(line: &'a serde_json::Map<String, Value>, field: &str) -> &'a str {
    line.get(field).and_then(Value::as_str).unwrap_or("")
}

/// Waits, at most 10 s, until `proxy`'s log holds `needle` (`what` names it in the error).
async fn wait_for_log(proxy: &Proxy, needle: &str, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.log().contains(needle) {
        ensure!(
            Instant::now() < deadline,
            "no {what} in the log within 10 s:\n{}",
            proxy.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// With `--log-format json`, a proxy in front of a probed primary and replica logs its
/// start-up, a failed login (the client, with a wrong password, gets 28P01) and a failover
/// (the primary stopped, the replica promoted once the proxy logged the primary lost, the
/// proxy confirms it), then stops. Every line of its log is a JSON object with string
/// `timestamp`, `level` and `message`; among them are
/// "switchyard listening", "login failed" (level INFO, with the client's `peer`), the
/// failover event's opening line ("failover event N: ..."), the switchover decisions for
/// `primary-lost` and `primary-confirmed`, "primary confirmed" and the event's summary
/// ("failover event N over: ..."), and every one of these failover lines carries `cluster` "main"
/// and the opening line's `event` id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_and_failover_lines_carry_the_event_id() -> Result<()> {
    skip_if_direct!();
    let launch = Launch {
        args: vec!["--log-format".into(), "json".into()],
        ..Launch::default()
    };
    let mut bed = TestBed::start_launched(
        ClusterOptions {
            replicas: 1,
            ..Default::default()
        },
        launch,
        |cfg, _| Ok(probed(cfg)),
    )?;
    let endpoint = bed.endpoint();
    let old = format!("{}:{}", bed.pg().primary().host(), bed.pg().primary().port());
    let new = format!("{}:{}", bed.pg().replica().host(), bed.pg().replica().port());
    wait_for_primary(&endpoint, &old, Duration::from_secs(10)).await?;

    let wrong = endpoint.config("app", "not-the-password", "app");
    expect_sqlstate(
        wrong.connect(tokio_postgres::NoTls).await.map(|_| ()),
        &["28P01"],
        "a login with a wrong password",
    )?;
    let client = endpoint.connect_app().await?;
    client.batch_execute("SELECT 1").await?;

    let stopped = Instant::now();
    bed.pg_mut().primary_mut().stop("fast")?;
    // The replica is promoted once the proxy has seen the primary go, so that the decision
    // this test reads is `primary-lost`: promoted at once, a probe may find the new primary
    // first, and the decision is then `demoted` (which opens the event as well: topology's
    // unit tests).
    wait_for_log(
        bed.proxy().context("a proxy")?,
        ": event primary-lost(",
        "primary-lost decision",
    )
    .await?;
    bed.pg().replica().promote()?;
    wait_for_primary(&endpoint, &new, Duration::from_secs(20)).await?;
    println!("failover: {new} confirmed {:?} after the stop", stopped.elapsed());
    // The event's summary is written half a second after the new primary is confirmed.
    let proxy = bed.proxy().context("a proxy")?;
    wait_for_log(proxy, " over: primary ", "event summary").await?;
    drop(client);
    let status = proxy.stop();
    println!("proxy stopped: {status:?}");
    let log = proxy.log();

    let lines = parse(&log)?;
    for (i, line) in lines.iter().enumerate() {
        for field in ["timestamp", "level", "message"] {
            ensure!(
                line.get(field).is_some_and(Value::is_string),
                "log line {}: no string {field:?}: {line:?}",
                i + 1
            );
        }
    }
    let find = |what: &str, matches: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .find(|l| matches(text(l, "message")))
            .with_context(|| format!("no {what} line in the log:\n{log}"))
    };
    find("start-up", &|m| m.starts_with("switchyard listening"))?;
    let login = find("failed login", &|m| m == "login failed")?;
    ensure!(
        text(login, "level") == "INFO" && !text(login, "peer").is_empty(),
        "the failed login's line should be at INFO with the client's peer: {login:?}"
    );
    let opened = find("event opening", &|m| {
        m.starts_with("failover event ") && m.contains("holding new transactions")
    })?;
    let event = opened
        .get("event")
        .and_then(Value::as_u64)
        .with_context(|| format!("the event's opening line has no numeric event id: {opened:?}"))?;
    let failover_lines = [
        find("primary-lost decision", &|m| m.contains(": event primary-lost("))?,
        find("primary-confirmed decision", &|m| {
            m.contains(": event primary-confirmed(")
        })?,
        find("primary confirmed", &|m| m == "primary confirmed")?,
        find("event summary", &|m| {
            m.starts_with("failover event ") && m.contains(" over: ")
        })?,
    ];
    for line in failover_lines {
        ensure!(
            text(line, "cluster") == "main" && line.get("event").and_then(Value::as_u64) == Some(event),
            "failover line without cluster \"main\" and event {event}: {line:?}"
        );
        println!("{}", serde_json::to_string(line)?);
    }
    println!(
        "{} log lines, all JSON objects; failover event {event}",
        lines.len()
    );
    Ok(())
}
