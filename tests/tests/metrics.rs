//! The Prometheus endpoint (`[proxy] metrics_listen`): after traffic through the proxy a
//! scrape shows it (checkouts, connected clients, the cluster's primary and probes), every
//! line is valid exposition format, other paths and methods are refused, a connection
//! that sends nothing neither blocks a scrape nor stays open, and one client address
//! cannot hold more than its share of connections.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::{http, ports, skip_if_direct, PgResultExt, TestBed};

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
    let metrics = format!("127.0.0.1:{}", ports::free_port()?);
    let bed = TestBed::start_with(|cfg| {
        cfg.pool_size(4)
            .set("proxy.metrics_listen", metrics.as_str())
            .set("clusters.main.probe_user", "app")
    })?;
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
    let metrics = format!("127.0.0.1:{}", ports::free_port()?);
    let _bed = TestBed::start_with(|cfg| cfg.set("proxy.metrics_listen", metrics.as_str()))?;
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
    let metrics = format!("127.0.0.1:{}", ports::free_port()?);
    let bed = TestBed::start_with(|cfg| cfg.set("proxy.metrics_listen", metrics.as_str()))?;
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
