//! The Prometheus endpoint (`[proxy] metrics_listen`): after traffic through the proxy a
//! scrape shows it (checkouts, connected clients, the cluster's primary and probes), every
//! line is valid exposition format, other paths and methods are refused, a connection
//! that sends nothing neither blocks a scrape nor stays open, and one client address
//! cannot hold more than its share of connections. The traffic statistics: `SHOW STATS`
//! (through psql) counts exactly the transactions and queries clients ran and agrees with
//! the latency histograms; errors are counted by SQLSTATE; the Grafana dashboard in
//! `examples/grafana/` uses only metrics a real scrape has.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::{http, ports, skip_if_direct, sqlstate, PgResultExt, ProxyConfig, TestBed};

/// A test bed whose proxy also serves metrics on a free loopback port (`configure` sets
/// the rest), and that port's address.
fn bed_with_metrics(configure: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Result<(TestBed, String)> {
    let metrics = format!("127.0.0.1:{}", ports::free_port()?);
    let bed = TestBed::start_with(|cfg| configure(cfg.set("proxy.metrics_listen", metrics.as_str())))?;
    Ok((bed, metrics))
}

/// Status line, headers (lower-case names) and body of one HTTP/1.0 exchange.
fn fetch(addr: &str, request: &str) -> Result<(String, HashMap<String, String>, String)> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).context("reading the response")?;
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        bail!("malformed response {raw:?}");
    };
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, body.to_owned()))
}

fn scrape(addr: &str) -> Result<String> {
    let (status, headers, body) = fetch(addr, "GET /metrics HTTP/1.0\r\nHost: t\r\n\r\n")?;
    ensure!(status.contains(" 200 "), "GET /metrics: {status}\n{body}");
    let content_type = headers.get("content-type").cloned().unwrap_or_default();
    ensure!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "content type {content_type:?}"
    );
    Ok(body)
}

/// One sample: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the exposition line by line, failing on any line that is not a comment (`# HELP`,
/// `# TYPE`, `# UNIT`, a final `# EOF`) or a well-formed sample.
fn parse(text: &str) -> Result<Vec<Sample>> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    ensure!(text.ends_with("# EOF\n"), "no # EOF at the end");
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            match (parts.next(), parts.next()) {
                (Some("EOF"), None) => {}
                (Some("HELP" | "TYPE" | "UNIT"), Some(name)) if valid_name(name) => {}
                _ => bail!("bad comment line {line:?}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("no value in {line:?}"))?;
        let value: f64 = value.parse().with_context(|| format!("bad value in {line:?}"))?;
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .with_context(|| format!("unclosed labels in {line:?}"))?;
                let mut labels = Vec::new();
                for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .with_context(|| format!("bad label in {line:?}"))?;
                    ensure!(valid_name(k), "bad label name {k:?} in {line:?}");
                    labels.push((k.to_owned(), v.trim_end_matches('"').to_owned()));
                }
                (name, labels)
            }
        };
        ensure!(valid_name(name), "bad metric name in {line:?}");
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// The value of the one sample of `name` whose labels include `with`.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Result<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.value),
        _ => bail!("expected one {name} sample with {with:?}, found {found:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_the_traffic_and_parses() -> Result<()> {
    skip_if_direct!();
    let (bed, metrics) = bed_with_metrics(|cfg| cfg.pool_size(4).set("clusters.main.probe_user", "app"))?;
    let endpoint = bed.endpoint();
    let first = endpoint.connect_app().await?;
    let second = endpoint.connect_app().await?;
    const TRANSACTIONS: usize = 12;
    for i in 0..TRANSACTIONS {
        let client = if i % 2 == 0 { &first } else { &second };
        client
            .batch_execute("BEGIN; SELECT 1; COMMIT")
            .await
            .ctx("transaction")?;
    }
    let node = format!("{}:{}", bed.pg().primary().host(), bed.pg().primary().port());
    let node = [("cluster", "main"), ("node", node.as_str())];
    // The probes' first round (up and timeline) comes within a probe interval or so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let addr = metrics.clone();
        let samples = tokio::task::spawn_blocking(move || parse(&scrape(&addr)?)).await??;
        if value(&samples, "switchyard_node_up", &node).unwrap_or(0.0) == 1.0 || Instant::now() > deadline {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let pool = [("pool", "app/app"), ("database", "app"), ("user", "app")];
    let checkouts = value(&samples, "switchyard_pool_checkouts_total", &pool)?;
    ensure!(
        checkouts >= TRANSACTIONS as f64,
        "{checkouts} checkouts after {TRANSACTIONS} transactions"
    );
    ensure!(value(&samples, "switchyard_pool_server_connects_total", &pool)? >= 1.0);
    ensure!(value(&samples, "switchyard_pool_wait_timeouts_total", &pool)? == 0.0);
    let idle = value(&samples, "switchyard_pool_servers", &[pool[0], ("state", "idle")])?;
    let in_use = value(
        &samples,
        "switchyard_pool_servers",
        &[pool[0], ("state", "in_use")],
    )?;
    ensure!(
        idle >= 1.0 && in_use == 0.0,
        "servers idle {idle}, in use {in_use}"
    );
    ensure!(value(&samples, "switchyard_pool_clients_waiting", &pool)? == 0.0);
    let clients = value(&samples, "switchyard_clients", &[])?;
    ensure!(
        clients == 2.0,
        "switchyard_clients is {clients} with 2 clients connected"
    );
    let version = samples
        .iter()
        .find(|s| s.name == "switchyard_info")
        .context("no switchyard_info")?;
    ensure!(version.labels.iter().any(|(k, _)| k == "version") && version.value == 1.0);

    let cluster = [("cluster", "main")];
    ensure!(value(&samples, "switchyard_cluster_has_primary", &cluster)? == 1.0);
    ensure!(value(&samples, "switchyard_cluster_failover_events_total", &cluster)? == 0.0);
    ensure!(value(&samples, "switchyard_cluster_client_errors_total", &cluster)? == 0.0);
    ensure!(value(&samples, "switchyard_cluster_view_generation", &cluster)? >= 1.0);
    ensure!(value(&samples, "switchyard_node_primary", &node)? == 1.0);
    ensure!(value(&samples, "switchyard_node_fenced", &node)? == 0.0);
    ensure!(
        value(&samples, "switchyard_node_up", &node)? == 1.0,
        "the primary's probe never answered"
    );
    ensure!(value(&samples, "switchyard_node_timeline", &node)? >= 1.0);
    let probe = value(&samples, "switchyard_node_last_probe_duration_seconds", &node)?;
    ensure!(probe > 0.0 && probe < 5.0, "last probe took {probe} s");

    // One more client shows at the next scrape; a closed one goes.
    let third = endpoint.connect_app().await?;
    third.batch_execute("SELECT 1").await.ctx("third client")?;
    drop(first);
    let addr = metrics.clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let addr = addr.clone();
        let samples = tokio::task::spawn_blocking(move || parse(&scrape(&addr)?)).await??;
        let clients = value(&samples, "switchyard_clients", &[])?;
        if clients == 2.0 && value(&samples, "switchyard_pool_checkouts_total", &pool)? > checkouts {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "switchyard_clients stayed {clients}, expected 2"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Other paths and methods.
    let (status, _, _) = fetch(&metrics, "GET /nope HTTP/1.0\r\n\r\n")?;
    ensure!(status.contains(" 404 "), "GET /nope: {status}");
    let post = http::request("POST", &metrics, "/metrics", Some("{}"), Duration::from_secs(5))?;
    ensure!(post.status == 405, "POST /metrics: {}", post.status);
    let (status, _, _) = fetch(&metrics, "nonsense\r\n\r\n")?;
    ensure!(status.contains(" 400 "), "a malformed request: {status}");
    let huge = format!("GET /metrics HTTP/1.0\r\nX: {}\r\n\r\n", "a".repeat(16 * 1024));
    let (status, _, _) = fetch(&metrics, &huge)?;
    ensure!(status.contains(" 431 "), "a huge request: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_neither_blocks_a_scrape_nor_stays_open() -> Result<()> {
    skip_if_direct!();
    let (_bed, metrics) = bed_with_metrics(|cfg| cfg)?;
    let addr = metrics.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut silent = TcpStream::connect(&addr)?;
        let mut half = TcpStream::connect(&addr)?;
        half.write_all(b"GET /metrics HTTP/1.0\r\nHost: t\r\n")?; // never finished
        let started = Instant::now();
        let body = scrape(&addr)?;
        let took = started.elapsed();
        ensure!(
            took < Duration::from_secs(2),
            "a scrape beside silent connections took {took:?}"
        );
        parse(&body)?;

        // The server closes both within its read timeout (5 s).
        for (what, stream) in [("silent", &mut silent), ("half-sent", &mut half)] {
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut buf = [0u8; 64];
            let n = stream
                .read(&mut buf)
                .with_context(|| format!("the {what} connection was not closed within 10 s"))?;
            ensure!(
                n == 0,
                "the {what} connection got {:?}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
        let closed_after = started.elapsed();
        ensure!(
            closed_after < Duration::from_secs(8),
            "silent connections were closed after {closed_after:?}"
        );
        eprintln!("silent connections closed after {closed_after:?}");
        Ok(())
    })
    .await??;
    Ok(())
}

/// Connections one client address may hold on the metrics endpoint (the proxy's
/// `MAX_PER_ADDRESS`).
const PER_ADDRESS: usize = 8;

/// A connection to `addr` from the local address `source`.
async fn connect_from(source: &str, addr: &str) -> Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket
        .bind(format!("{source}:0").parse()?)
        .with_context(|| format!("binding {source} as the source address"))?;
    socket
        .connect(addr.parse()?)
        .await
        .with_context(|| format!("connecting to {addr} from {source}"))
}

/// `GET /metrics` from `source`: the status line, or `None` if the proxy closed the
/// connection without answering.
async fn scrape_from(source: &str, addr: &str) -> Result<Option<String>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = connect_from(source, addr).await?;
    // A write to a connection the proxy already closed may fail: that is a refusal too.
    if stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: t\r\n\r\n")
        .await
        .is_err()
    {
        return Ok(None);
    }
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .context("no answer nor close within 10 s")?;
    if read.is_err() || raw.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&raw);
    Ok(Some(text.lines().next().unwrap_or_default().to_owned()))
}

/// 8 idle connections (the per-address cap) from 127.0.0.1 are held open: a ninth from
/// 127.0.0.1 is closed without an answer, while a scrape from 127.0.0.2 gets 200 at once
/// (printed time), and so does a database client of the proxy. A trickling client (a byte
/// of its request every 500 ms) is closed once the 5 s request-head timeout passes (within
/// 10 s; printed). Once the idle connections are closed, a scrape from 127.0.0.1 gets 200
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_the_metrics_endpoint() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    skip_if_direct!();
    let (bed, metrics) = bed_with_metrics(|cfg| cfg)?;
    let mut idle = Vec::new();
    for _ in 0..PER_ADDRESS {
        idle.push(connect_from("127.0.0.1", &metrics).await?);
    }
    // Let the proxy accept them all before the ninth.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ninth = scrape_from("127.0.0.1", &metrics).await?;
    println!("a ninth connection from 127.0.0.1: {ninth:?}");
    ensure!(
        ninth.is_none(),
        "a ninth connection from one address was answered: {ninth:?}"
    );

    let started = Instant::now();
    let other = scrape_from("127.0.0.2", &metrics).await?;
    println!(
        "a scrape from 127.0.0.2 beside them: {other:?} after {:?}",
        started.elapsed()
    );
    ensure!(
        other.as_deref().is_some_and(|s| s.contains(" 200 ")),
        "a scrape from another address got {other:?}"
    );
    let client = bed.endpoint().connect_app().await?;
    client
        .simple_query("SELECT 1")
        .await
        .ctx("a database client beside them")?;

    let mut trickle = connect_from("127.0.0.2", &metrics).await?;
    let started = Instant::now();
    let closed_after = loop {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("a trickling request was still open after 10 s; the head timeout is 5 s");
        }
        if trickle.write_all(b"G").await.is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(500), trickle.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => bail!(
                "the trickling request got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    };
    println!("a request trickling a byte every 500 ms was closed after {closed_after:?}");
    ensure!(
        closed_after >= Duration::from_secs(4),
        "the trickling request was closed after {closed_after:?}, before the 5 s head timeout"
    );

    drop(idle);
    let started = Instant::now();
    let again = loop {
        let status = scrape_from("127.0.0.1", &metrics).await?;
        if status.is_some() || started.elapsed() > Duration::from_secs(5) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "a scrape from 127.0.0.1 once its idle connections closed: {again:?} after {:?}",
        started.elapsed()
    );
    ensure!(
        again.as_deref().is_some_and(|s| s.contains(" 200 ")),
        "127.0.0.1 after closing its connections got {again:?}"
    );
    Ok(())
}

/// `SHOW STATS` through psql (`-A`, with its header): the row of database `database`.
async fn show_stats(
    endpoint: &switchyard_tests::Endpoint,
    database: &str,
) -> Result<HashMap<String, String>> {
    let out = endpoint
        .psql("admin", "admin", "switchyard")
        .run_script_async("\\pset tuples_only off\n\\pset footer off\nSHOW STATS\n")
        .await?;
    out.ensure_success()?;
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .context("no header from SHOW STATS")?
        .split('|')
        .collect();
    for line in lines {
        let row: HashMap<String, String> = header
            .iter()
            .zip(line.split('|'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if row.get("database").map(String::as_str) == Some(database) {
            ensure!(
                row.len() == 18,
                "SHOW STATS has {} columns: {header:?}",
                row.len()
            );
            return Ok(row);
        }
    }
    bail!("no row for {database} in SHOW STATS:\n{}", out.stdout)
}

/// A number of a `SHOW STATS` row.
fn stat(row: &HashMap<String, String>, column: &str) -> Result<u64> {
    row.get(column)
        .with_context(|| format!("no column {column} in {row:?}"))?
        .parse()
        .with_context(|| format!("{column} in {row:?}"))
}

/// A scrape, parsed (on the blocking pool).
async fn samples(metrics: &str) -> Result<Vec<Sample>> {
    let addr = metrics.to_owned();
    tokio::task::spawn_blocking(move || parse(&scrape(&addr)?)).await?
}

/// `SHOW STATS` through psql counts exactly what a client ran: 50 autocommit SELECTs add
/// 50 to total_xact_count and to total_query_count; a transaction of 3 statements (BEGIN,
/// SELECT, COMMIT, each its own Query) adds 1 and 3; total_received and total_sent grow.
/// Two statements that fail (42P01, 22012) are one transaction and one query each, and
/// `switchyard_client_errors_total` counts exactly one error with each SQLSTATE and no
/// other. The Prometheus histograms agree with `SHOW STATS`: the transaction and query
/// histograms' `_count` equal the totals, the wait histogram's `_count` equals the pool's
/// checkouts, and each `_sum` equals the total time in microseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stats_counts_exactly_what_clients_ran() -> Result<()> {
    skip_if_direct!();
    let (bed, metrics) = bed_with_metrics(|cfg| cfg.pool_size(4).with_admin())?;
    let endpoint = bed.endpoint();
    let client = endpoint.connect_app().await?;
    let before = show_stats(&endpoint, "app").await?;

    const SELECTS: u64 = 50;
    for i in 0..SELECTS {
        client
            .batch_execute(&format!("SELECT {i}"))
            .await
            .ctx("autocommit SELECT")?;
    }
    let after_selects = show_stats(&endpoint, "app").await?;
    for sql in ["BEGIN", "SELECT 1", "COMMIT"] {
        client.batch_execute(sql).await.ctx(sql)?;
    }
    let after_block = show_stats(&endpoint, "app").await?;
    let delta = |a: &HashMap<String, String>, b: &HashMap<String, String>, c: &str| -> Result<u64> {
        Ok(stat(b, c)? - stat(a, c)?)
    };
    println!("SHOW STATS before: {before:?}\nafter {SELECTS} SELECTs: {after_selects:?}\nafter the block: {after_block:?}");
    ensure!(delta(&before, &after_selects, "total_xact_count")? == SELECTS);
    ensure!(delta(&before, &after_selects, "total_query_count")? == SELECTS);
    ensure!(delta(&after_selects, &after_block, "total_xact_count")? == 1);
    ensure!(delta(&after_selects, &after_block, "total_query_count")? == 3);
    for column in ["total_received", "total_sent"] {
        ensure!(
            stat(&after_selects, column)? > stat(&before, column)?
                && stat(&after_block, column)? > stat(&after_selects, column)?,
            "{column} did not grow: {before:?} {after_selects:?} {after_block:?}"
        );
    }

    let missing = client.batch_execute("SELECT * FROM no_such_table").await;
    ensure!(
        missing.as_ref().err().and_then(sqlstate) == Some("42P01"),
        "{missing:?}"
    );
    let division = client.batch_execute("SELECT 1/0").await;
    ensure!(
        division.as_ref().err().and_then(sqlstate) == Some("22012"),
        "{division:?}"
    );
    let last = show_stats(&endpoint, "app").await?;
    ensure!(delta(&after_block, &last, "total_xact_count")? == 2);
    ensure!(delta(&after_block, &last, "total_query_count")? == 2);

    let samples = samples(&metrics).await?;
    let pool = [("pool", "app/app"), ("database", "app"), ("user", "app")];
    let errors: Vec<(String, f64)> = samples
        .iter()
        .filter(|s| s.name == "switchyard_client_errors_total")
        .map(|s| {
            let code = s
                .labels
                .iter()
                .find(|(k, _)| k == "sqlstate")
                .map(|(_, v)| v.clone());
            (code.unwrap_or_default(), s.value)
        })
        .collect();
    println!("errors by SQLSTATE: {errors:?}");
    let mut sorted = errors.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    ensure!(
        sorted == vec![("22012".to_string(), 1.0), ("42P01".to_string(), 1.0)],
        "errors by SQLSTATE: {errors:?}"
    );
    let count = |name: &str| value(&samples, name, &pool);
    ensure!(
        count("switchyard_transaction_duration_seconds_count")? == stat(&last, "total_xact_count")? as f64
    );
    ensure!(count("switchyard_query_duration_seconds_count")? == stat(&last, "total_query_count")? as f64);
    let checkouts = count("switchyard_pool_checkouts_total")?;
    ensure!(
        count("switchyard_wait_duration_seconds_count")? == checkouts,
        "wait histogram count against {checkouts} checkouts"
    );
    for (histogram, column) in [
        ("switchyard_transaction_duration_seconds_sum", "total_xact_time"),
        ("switchyard_query_duration_seconds_sum", "total_query_time"),
        ("switchyard_wait_duration_seconds_sum", "total_wait_time"),
    ] {
        let seconds = count(histogram)?;
        let us = stat(&last, column)?;
        ensure!(
            (seconds * 1e6 - us as f64).abs() < 1.0,
            "{histogram} {seconds} s against {column} {us} µs"
        );
    }
    ensure!(count("switchyard_pool_client_received_bytes_total")? == stat(&last, "total_received")? as f64);
    ensure!(count("switchyard_pool_client_sent_bytes_total")? == stat(&last, "total_sent")? as f64);
    Ok(())
}

/// The 99th percentiles of `SHOW STATS` come from the histograms and bound the times from
/// above: after 10 transactions of `SELECT pg_sleep(0.2)` on two clients (and nothing
/// else on the database), p99_query_time and p99_xact_time are at least 200,000 µs, and
/// the query histogram has all 10 above its 131,072 µs bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p99_of_a_slow_workload_is_at_least_its_sleep() -> Result<()> {
    skip_if_direct!();
    let (bed, metrics) = bed_with_metrics(|cfg| cfg.pool_size(4).with_admin())?;
    let endpoint = bed.endpoint();
    let clients = [endpoint.connect_app().await?, endpoint.connect_app().await?];
    let runs = clients.iter().map(|c| async move {
        for _ in 0..5 {
            c.batch_execute("SELECT pg_sleep(0.2)").await.ctx("pg_sleep")?;
        }
        Ok::<(), anyhow::Error>(())
    });
    for run in futures_util::future::join_all(runs).await {
        run?;
    }
    let row = show_stats(&endpoint, "app").await?;
    println!("SHOW STATS: {row:?}");
    ensure!(stat(&row, "total_query_count")? == 10, "{row:?}");
    for column in [
        "p99_query_time",
        "p99_xact_time",
        "avg_query_time",
        "avg_xact_time",
    ] {
        let us = stat(&row, column)?;
        ensure!(us >= 200_000, "{column} is {us} µs after pg_sleep(0.2)");
    }
    let samples = samples(&metrics).await?;
    let pool = [("pool", "app/app")];
    let bucket = |le: &str| {
        value(
            &samples,
            "switchyard_query_duration_seconds_bucket",
            &[pool[0], ("le", le)],
        )
    };
    let (below, all) = (bucket("0.131072")?, bucket("+Inf")?);
    ensure!(
        below == 0.0 && all == 10.0,
        "query buckets: {below} at 0.131072 s, {all} in all"
    );
    Ok(())
}

/// `SHOW STATS`' averages cover the last `stats_period` (1 s here), as PgBouncer's do, while
/// the totals count from the start: after 20 transactions of `SELECT pg_sleep(0.05)`, a
/// period shows avg_xact_time of at least 50,000 µs; then, with the client idle, a period
/// shows avg_xact_count 0 and avg_xact_time 0 while total_xact_count stays 20; after 20
/// `SELECT 1`, a period shows avg_xact_count above 0 and avg_xact_time under 10,000 µs
/// (the mean since the start is about 25,000) while total_xact_count is 40. Each state is
/// waited for up to 5 s, polling every 200 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stats_averages_cover_the_last_stats_period() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.pool_size(2).with_admin().set("proxy.stats_period", "1s"))?;
    let endpoint = bed.endpoint();
    let client = endpoint.connect_app().await?;
    let wait_for = |what: &'static str, ok: fn(&HashMap<String, String>) -> Result<bool>| {
        let endpoint = endpoint.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let row = show_stats(&endpoint, "app").await?;
                if ok(&row)? {
                    println!("{what}: {row:?}");
                    return Ok::<_, anyhow::Error>(row);
                }
                ensure!(
                    std::time::Instant::now() < deadline,
                    "no period with {what} within 5 s: {row:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    for _ in 0..20 {
        client
            .batch_execute("SELECT pg_sleep(0.05)")
            .await
            .ctx("pg_sleep")?;
    }
    wait_for("the sleeps", |r| Ok(stat(r, "avg_xact_time")? >= 50_000)).await?;
    let idle = wait_for("no traffic", |r| {
        Ok(stat(r, "avg_xact_count")? == 0 && stat(r, "avg_xact_time")? == 0)
    })
    .await?;
    ensure!(
        stat(&idle, "total_xact_count")? == 20,
        "totals count from the start: {idle:?}"
    );
    for _ in 0..20 {
        client.batch_execute("SELECT 1").await.ctx("SELECT 1")?;
    }
    let fast = wait_for("the quick selects", |r| {
        Ok(stat(r, "avg_xact_count")? > 0 && stat(r, "avg_xact_time")? < 10_000)
    })
    .await?;
    ensure!(stat(&fast, "total_xact_count")? == 40, "{fast:?}");
    Ok(())
}

/// A client that waits for the pool's only server has its wait counted: with pool_size 1,
/// while one client holds the server in a transaction block for 300 ms, another's SELECT
/// waits for it; total_wait_time grows by at least 200,000 µs, and the wait histogram's
/// `_count` still equals the pool's checkouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_the_only_server_is_counted() -> Result<()> {
    skip_if_direct!();
    let (bed, metrics) = bed_with_metrics(|cfg| cfg.pool_size(1).with_admin())?;
    let endpoint = bed.endpoint();
    let (holder, waiter) = (endpoint.connect_app().await?, endpoint.connect_app().await?);
    let before = show_stats(&endpoint, "app").await?;
    holder.batch_execute("BEGIN").await.ctx("BEGIN")?;
    let waiting = tokio::spawn(async move { waiter.batch_execute("SELECT 1").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.batch_execute("COMMIT").await.ctx("COMMIT")?;
    waiting.await?.ctx("the waiting SELECT")?;
    let after = show_stats(&endpoint, "app").await?;
    let waited = stat(&after, "total_wait_time")? - stat(&before, "total_wait_time")?;
    println!("waited {waited} µs; SHOW STATS after: {after:?}");
    ensure!(waited >= 200_000, "total_wait_time grew by {waited} µs");
    let samples = samples(&metrics).await?;
    let pool = [("pool", "app/app")];
    let count = value(&samples, "switchyard_wait_duration_seconds_count", &pool)?;
    let checkouts = value(&samples, "switchyard_pool_checkouts_total", &pool)?;
    ensure!(count == checkouts, "wait count {count}, checkouts {checkouts}");
    Ok(())
}

/// The names of the metrics a PromQL expression reads: its identifiers that are not
/// functions (followed by `(`), aggregation operators, keywords, label names (in `{...}` and in
/// the lists after `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`),
/// Grafana variables (`$name`), strings or durations (`[...]`).
fn promql_metrics(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 19] = [
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    // Skips from an opening `open` to after its `close`.
    let skip = |i: usize, open: char, close: char| -> usize {
        let mut depth = 0;
        let mut j = i;
        while j < chars.len() {
            if chars[j] == '"' {
                j += 1;
                while j < chars.len() && chars[j] != '"' {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
            } else if chars[j] == open {
                depth += 1;
            } else if chars[j] == close {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            j += 1;
        }
        j
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' {
            i = skip(i, '{', '}');
        } else if c == '[' {
            i = skip(i, '[', ']');
        } else if c == '$' {
            i += 1;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let before_paren = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if before_paren {
                    i = skip(next, '(', ')');
                }
            } else if !before_paren && !KEYWORDS.contains(&word.as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The tokenizer finds the metrics of an expression and nothing else (so that the
/// dashboard test below cannot pass by finding no names).
#[test]
fn promql_metrics_finds_only_metric_names() {
    let expr = r#"histogram_quantile(0.99, sum by (le, database) (rate(a_bucket{database=~"$database", x="y}"}[$__rate_interval]))) / on (pool) group_left (user) b_total offset 5m and ignoring(x) c"#;
    assert_eq!(promql_metrics(expr), ["a_bucket", "b_total", "c"]);
    assert_eq!(promql_metrics("switchyard_clients"), ["switchyard_clients"]);
    assert_eq!(
        promql_metrics("label_values(switchyard_pool_checkouts_total, database)"),
        ["switchyard_pool_checkouts_total", "database"]
    );
}

/// Every metric that a panel of `examples/grafana/switchyard.json` reads (each target's
/// PromQL `expr`, and the metric of the `database` variable's `label_values`) is in a real
/// scrape taken after traffic (transactions and one error, so that the error counter has
/// a sample) on a probed cluster; so a renamed metric breaks this test. Also checks that
/// the dashboard reads the three latency histograms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_reads_only_metrics_a_scrape_has() -> Result<()> {
    skip_if_direct!();
    let path = switchyard_tests::env::workspace_dir().join("examples/grafana/switchyard.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let dashboard: serde_json::Value = serde_json::from_str(&text).context("the dashboard is not JSON")?;
    let mut used: Vec<(String, String)> = Vec::new();
    let panels = dashboard["panels"].as_array().context("no panels")?;
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .with_context(|| format!("panel {title}: a target without expr"))?;
            let names = promql_metrics(expr);
            ensure!(!names.is_empty(), "panel {title}: no metric in {expr}");
            used.extend(names.into_iter().map(|n| (n, title.to_string())));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(query) = variable["definition"].as_str() {
            let metric = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.split(',').next())
                .with_context(|| format!("variable query {query}"))?;
            used.push((
                metric.trim().to_string(),
                format!("variable {}", variable["name"]),
            ));
        }
    }
    for histogram in ["transaction", "query", "wait"] {
        let bucket = format!("switchyard_{histogram}_duration_seconds_bucket");
        ensure!(used.iter().any(|(n, _)| *n == bucket), "no panel reads {bucket}");
    }

    let (bed, metrics) = bed_with_metrics(|cfg| cfg.pool_size(4).set("clusters.main.probe_user", "app"))?;
    let client = bed.endpoint().connect_app().await?;
    client
        .batch_execute("BEGIN; SELECT 1; COMMIT")
        .await
        .ctx("transaction")?;
    ensure!(client.batch_execute("SELECT 1/0").await.is_err());
    // The probes' first round (node_up, lag) comes within a probe interval or so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let samples = samples(&metrics).await?;
        if samples.iter().any(|s| s.name == "switchyard_node_up") || Instant::now() > deadline {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let scraped: std::collections::HashSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    let missing: Vec<&(String, String)> = used
        .iter()
        .filter(|(n, _)| !scraped.contains(n.as_str()))
        .collect();
    let mut distinct: Vec<&str> = used.iter().map(|(n, _)| n.as_str()).collect();
    distinct.sort();
    distinct.dedup();
    println!(
        "{} panels read {} metrics: {distinct:?}",
        panels.len(),
        distinct.len()
    );
    ensure!(
        missing.is_empty(),
        "metrics the dashboard reads that the scrape lacks (metric, panel): {missing:?}"
    );
    Ok(())
}
