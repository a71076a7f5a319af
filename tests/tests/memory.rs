//! Memory per client stays bounded however the client behaves: one that pipelines without
//! reading, one that holds a huge message half-sent, many that send huge Binds at once, one
//! that reads a huge row or millions of small ones slowly, COPY of 1 GiB each way; and a
//! message over `max_message_size` ends only its own session with 54000.
//!
//! Each test reads the proxy's peak resident memory (`VmHWM` in `/proc/<pid>/status`) before
//! and after, prints both, and asserts the growth against a generous stated bound: the
//! figures are what the proxy itself holds, whatever the clients send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{BufMut, BytesMut};
use switchyard_tests::proxy::resident_memory;
use switchyard_tests::raw::{msg, Msg, RawConn};
use switchyard_tests::{skip_if_direct, PgResultExt, TestBed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

/// The proxy's peak (`VmHWM`) and current (`VmRSS`) resident memory, in bytes.
fn memory(pid: u32) -> Result<(u64, u64)> {
    let m = resident_memory(pid)?;
    Ok((m.peak, m.now))
}

/// Peak memory of the proxy from a starting point.
struct Peak {
    pid: u32,
    start_hwm: u64,
}

impl Peak {
    fn start(bed: &mut TestBed) -> Result<Peak> {
        let pid = bed.proxy().and_then(|p| p.pid()).context("the proxy's pid")?;
        let (start_hwm, _) = memory(pid)?;
        Ok(Peak { pid, start_hwm })
    }

    /// Prints the figures and returns the growth of the peak, in bytes.
    fn report(&self, what: &str) -> Result<u64> {
        let (hwm, rss) = memory(self.pid)?;
        let growth = hwm.saturating_sub(self.start_hwm);
        println!(
            "{what}: proxy peak RSS {} MiB -> {} MiB (growth {:.1} MiB), RSS now {} MiB",
            self.start_hwm / MIB,
            hwm / MIB,
            growth as f64 / MIB as f64,
            rss / MIB
        );
        Ok(growth)
    }
}

async fn login(bed: &TestBed) -> Result<RawConn> {
    RawConn::login_app(&bed.endpoint().addr()).await
}

/// Sends `copy` (a `COPY ... FROM STDIN`) and reads its CopyInResponse.
async fn start_copy_in(conn: &mut RawConn, copy: &str) -> Result<()> {
    let mut query = BytesMut::new();
    msg::query(&mut query, copy);
    conn.send(&query).await?;
    let response = conn.expect_msg().await?;
    ensure!(
        response.tag == b'G',
        "expected CopyInResponse, got {}",
        response.describe()
    );
    Ok(())
}

/// Runs `SELECT 1` through the proxy on a connection of its own and prints how long it took:
/// other clients must keep being served while one misbehaves.
async fn other_client_served(bed: &TestBed, while_: &str) -> Result<()> {
    let started = Instant::now();
    let client = bed.endpoint().connect_app().await?;
    let one: i32 = client.query_one("SELECT 1", &[]).await.ctx("SELECT 1")?.get(0);
    ensure!(one == 1);
    println!(
        "another client was served in {:?} while {while_}",
        started.elapsed()
    );
    Ok(())
}

/// A client that writes a long extended-protocol batch of messages with tiny replies
/// (5000 portal Closes, then Sync) before reading gets every reply: the proxy's bound on
/// owed replies must not leave the server holding replies it has not flushed.
async fn well_behaved_pipeline(bed: &TestBed) -> Result<()> {
    const CLOSES: usize = 5000;
    let mut conn = login(bed).await?;
    let mut batch = BytesMut::new();
    for _ in 0..CLOSES {
        msg::close(&mut batch, b'P', "");
    }
    msg::sync(&mut batch);
    let started = Instant::now();
    conn.send(&batch).await?;
    let mut closes = 0;
    loop {
        let m = conn.expect_msg().await?;
        match m.tag {
            b'3' => closes += 1,
            b'Z' => break,
            _ => bail!("unexpected reply in a batch of Closes: {}", m.describe()),
        }
    }
    ensure!(closes == CLOSES, "{closes} CloseComplete for {CLOSES} Closes");
    println!(
        "a batch of {CLOSES} Closes was answered in {:?}",
        started.elapsed()
    );
    Ok(())
}

/// A client pipelines 16 MiB of `Close` messages (answered by the proxy itself) behind a
/// running `pg_sleep` and never reads a reply. Checks that the proxy's peak memory grows by
/// less than 32 MiB (at 5e4167b it queued every reply and recorded every frame: about
/// 300 MiB) and that other clients are served meanwhile, one of them pipelining a long
/// batch of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_client_that_never_reads_is_bounded() -> Result<()> {
    skip_if_direct!();
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(4))?;
    let raw = login(&bed).await?;
    let peak = Peak::start(&mut bed)?;
    let mut one_close = BytesMut::new();
    msg::close(&mut one_close, b'S', "s1");
    let mut pipeline = BytesMut::new();
    msg::query(&mut pipeline, "SELECT pg_sleep(2)");
    pipeline.put_slice(&one_close.repeat((16 << 20) / one_close.len()));
    msg::sync(&mut pipeline);
    let sent = pipeline.len();
    let (mut stream, _) = raw.into_parts();
    let mut writer = tokio::spawn(async move {
        stream.write_all(&pipeline).await?;
        Ok::<_, std::io::Error>(stream)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    other_client_served(&bed, "a client pipelines without reading").await?;
    well_behaved_pipeline(&bed).await?;
    let finished = tokio::time::timeout(Duration::from_secs(6), &mut writer)
        .await
        .is_ok();
    println!(
        "{} MiB pipelined; the proxy {} all of it",
        sent as u64 / MIB,
        if finished {
            "read"
        } else {
            "stopped reading before"
        }
    );
    let growth = peak.report("pipelining without reading")?;
    writer.abort();
    bed.ensure_proxy_alive()?;
    ensure!(
        growth < 32 * MIB,
        "the proxy's peak memory grew by {} MiB for one client pipelining {} MiB (bound 32 MiB)",
        growth / MIB,
        sent as u64 / MIB
    );
    Ok(())
}

/// Four clients each send all but the last byte of a 60 MiB Query and hold it there. Checks
/// that the proxy's peak memory grows by less than 32 MiB (at 5e4167b each message was
/// buffered whole: about 240 MiB) and that another client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_holding_partial_huge_messages_are_bounded() -> Result<()> {
    skip_if_direct!();
    const CLIENTS: usize = 4;
    const DECLARED: usize = 60 << 20;
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(CLIENTS as u32 + 2))?;
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(login(&bed).await?);
    }
    let peak = Peak::start(&mut bed)?;
    let mut partial = BytesMut::with_capacity(DECLARED);
    partial.put_u8(b'Q');
    partial.put_i32(DECLARED as i32 + 4);
    partial.put_slice(b"SELECT '");
    partial.resize(5 + DECLARED - 1, b'x'); // the closing quote and NUL never come
    let partial = Arc::new(partial.freeze());
    let mut writers = Vec::new();
    for conn in conns {
        let partial = partial.clone();
        let (mut stream, _) = conn.into_parts();
        writers.push(tokio::spawn(async move {
            for chunk in partial.chunks(1 << 20) {
                stream.write_all(chunk).await?;
            }
            Ok::<_, std::io::Error>(stream)
        }));
    }
    let started = Instant::now();
    let mut held = Vec::new();
    for w in writers {
        match tokio::time::timeout(Duration::from_secs(30), w).await {
            Ok(joined) => held.push(joined.context("writer")?.context("sending the partial message")?),
            Err(_) => bail!("the proxy did not take a 60 MiB partial message within 30 s"),
        }
    }
    println!(
        "{CLIENTS} clients sent {} MiB each of a {} MiB Query in {:?}",
        (DECLARED - 1) as u64 / MIB,
        DECLARED as u64 / MIB,
        started.elapsed()
    );
    other_client_served(&bed, "clients hold partial huge messages").await?;
    let growth = peak.report("partial huge messages")?;
    drop(held);
    bed.ensure_proxy_alive()?;
    ensure!(
        growth < 32 * MIB,
        "the proxy's peak memory grew by {} MiB for {CLIENTS} partial 60 MiB messages (bound 32 MiB)",
        growth / MIB
    );
    Ok(())
}

/// 100 clients over a pool of 10 servers each run `SELECT length($1)` with a 10 MiB text
/// parameter (named statement, so the proxy renames it in the Bind), all at once. Checks
/// every answer (10485760) and that the proxy's peak memory grows by less than 64 MiB
/// while 1000 MiB pass through it (at 5e4167b each Bind was buffered whole: over 1 GiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_clients_sending_10_mib_binds_are_bounded() -> Result<()> {
    skip_if_direct!();
    const CLIENTS: usize = 100;
    const PARAM: usize = 10 << 20;
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(10))?;
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(login(&bed).await?);
    }
    let peak = Peak::start(&mut bed)?;
    // Parse, then a Bind whose 10 MiB parameter is sent from one shared buffer.
    let mut head = BytesMut::new();
    msg::parse(&mut head, "s1", "SELECT length($1::text)");
    let bind_body_len = 1 + 3 + 2 + 2 + 4 + PARAM + 2;
    head.put_u8(b'B');
    head.put_i32(bind_body_len as i32 + 4);
    head.put_slice(b"\0s1\0");
    head.put_i16(0);
    head.put_i16(1);
    head.put_i32(PARAM as i32);
    let mut tail = BytesMut::new();
    tail.put_i16(0);
    msg::execute(&mut tail, "", 0);
    msg::sync(&mut tail);
    let (head, tail) = (head.freeze(), tail.freeze());
    let param = Arc::new(vec![b'a'; PARAM]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (head, tail, param) = (head.clone(), tail.clone(), param.clone());
        tasks.push(tokio::spawn(async move {
            conn.send(&head).await?;
            conn.send(&param).await?;
            conn.send(&tail).await?;
            let mut replies = Vec::new();
            while replies.last().is_none_or(|m: &Msg| m.tag != b'Z') {
                match conn.read_msg_within(Duration::from_secs(120)).await? {
                    Some(m) => replies.push(m),
                    None => bail!("the proxy closed the connection"),
                }
            }
            let values: Vec<_> = replies.iter().filter_map(|m| m.data_row()).collect();
            let errors: Vec<_> = replies
                .iter()
                .filter(|m| m.tag == b'E')
                .map(|m| m.describe())
                .collect();
            ensure!(
                values == [vec![Some(PARAM.to_string())]],
                "expected one row {PARAM}, got {values:?}, errors {errors:?}"
            );
            Ok(())
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.context("client task")?);
    }
    println!(
        "{CLIENTS} clients x {} MiB Bind over 10 servers answered in {:?}",
        PARAM as u64 / MIB,
        started.elapsed()
    );
    let growth = peak.report("100 clients x 10 MiB Bind")?;
    bed.ensure_proxy_alive()?;
    outcomes.into_iter().collect::<Result<Vec<()>>>()?;
    ensure!(
        growth < 64 * MIB,
        "the proxy's peak memory grew by {} MiB for {CLIENTS} x 10 MiB Binds (bound 64 MiB)",
        growth / MIB
    );
    Ok(())
}

/// With `max_message_size = "1MiB"`, a client declaring a 2 MiB Query gets ErrorResponse
/// 54000 naming the limit and is disconnected, before sending the body; another client
/// connected at the same time goes on, and runs a 900 KiB Bind under the limit (checked by
/// its result).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_size_message_gets_54000_and_ends_only_its_session() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.pool_size(2).set("proxy.max_message_size", "1MiB"))?;
    let mut victim = login(&bed).await?;
    let mut other = login(&bed).await?;
    let mut header = BytesMut::new();
    header.put_u8(b'Q');
    header.put_i32((2 << 20) + 4);
    header.put_slice(b"SELECT '");
    victim.send(&header).await?;
    let replies = victim.read_until_eof(Duration::from_secs(10)).await?;
    let error = replies.iter().find(|m| m.tag == b'E').with_context(|| {
        format!(
            "no ErrorResponse before the close; got {:?}",
            replies.iter().map(|m| m.describe()).collect::<Vec<_>>()
        )
    })?;
    println!("over-size message answered: {}", error.describe());
    ensure!(
        error.sqlstate().as_deref() == Some("54000"),
        "expected 54000, got {}",
        error.describe()
    );
    ensure!(
        error.message().unwrap_or_default().contains("max_message_size"),
        "the message should name the setting: {}",
        error.describe()
    );
    ensure!(other.query_one_value("SELECT 1").await?.as_deref() == Some("1"));
    let value = "b".repeat(900 * 1024);
    let mut batch = BytesMut::new();
    msg::parse(&mut batch, "", "SELECT length($1::text)");
    msg::bind(&mut batch, "", "", &[Some(&value)]);
    msg::execute(&mut batch, "", 0);
    msg::sync(&mut batch);
    other.send(&batch).await?;
    let rows: Vec<_> = other
        .read_until_ready()
        .await?
        .iter()
        .filter_map(|m| m.data_row())
        .collect();
    ensure!(
        rows == [vec![Some(value.len().to_string())]],
        "900 KiB Bind: got {rows:?}"
    );
    Ok(())
}

/// Walks the replies of one request as they arrive, by their headers, without keeping the
/// bodies of rows and COPY data (which may be larger than the test wants to hold): counts
/// them and their bytes, keeps every other message whole, and stops at ReadyForQuery.
#[derive(Default)]
struct Walker {
    buf: BytesMut,
    /// Body bytes of the current DataRow or CopyData still to drop.
    skip: usize,
    data_rows: u64,
    /// Declared lengths of the DataRows (the length word included).
    data_row_bytes: u64,
    copy_data: u64,
    /// Payload bytes of the CopyData messages.
    copy_bytes: u64,
    /// Every other message, in order.
    others: Vec<Msg>,
}

impl Walker {
    /// Takes the next bytes from the proxy; true once ReadyForQuery was seen.
    fn feed(&mut self, chunk: &[u8]) -> Result<bool> {
        self.buf.extend_from_slice(chunk);
        loop {
            let take = self.skip.min(self.buf.len());
            let _ = self.buf.split_to(take);
            self.skip -= take;
            if self.skip > 0 || self.buf.len() < 5 {
                return Ok(false);
            }
            let tag = self.buf[0];
            let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
            ensure!(len >= 4, "invalid message length {len} (tag {})", tag as char);
            let len = len as usize;
            match tag {
                b'D' | b'd' => {
                    if tag == b'D' {
                        self.data_rows += 1;
                        self.data_row_bytes += len as u64;
                    } else {
                        self.copy_data += 1;
                        self.copy_bytes += len as u64 - 4;
                    }
                    let _ = self.buf.split_to(5);
                    self.skip = len - 4;
                }
                _ if self.buf.len() > len => {
                    let frame = self.buf.split_to(1 + len);
                    self.others.push(Msg {
                        tag,
                        body: frame[5..].to_vec(),
                    });
                    if tag == b'Z' {
                        return Ok(true);
                    }
                }
                _ => return Ok(false),
            }
        }
    }

    /// The messages other than rows and COPY data, described.
    fn describe_others(&self) -> Vec<String> {
        self.others.iter().map(Msg::describe).collect()
    }

    /// The first ErrorResponse, if any.
    fn error(&self) -> Option<&Msg> {
        self.others.iter().find(|m| m.tag == b'E')
    }

    /// The command tag of the first CommandComplete.
    fn command_tag(&self) -> Option<String> {
        self.others.iter().find_map(Msg::command_tag)
    }
}

/// Reads the replies to a request already sent on `conn` up to ReadyForQuery, at most
/// `chunk` bytes at a time with `pause` after each read (a slow reader when `pause` is not
/// zero). Fails if nothing arrives for 30 s or the proxy closes the connection.
async fn read_replies(conn: RawConn, chunk: usize, pause: Duration) -> Result<Walker> {
    let (mut stream, buf) = conn.into_parts();
    let mut walker = Walker::default();
    let mut done = walker.feed(&buf)?;
    let mut bytes = vec![0u8; chunk];
    while !done {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut bytes))
            .await
            .context("no data from the proxy within 30 s")??;
        ensure!(
            n > 0,
            "the proxy closed the connection after {} rows, {} CopyData; other replies {:?}",
            walker.data_rows,
            walker.copy_data,
            walker.describe_others()
        );
        done = walker.feed(&bytes[..n])?;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(walker)
}

/// A 128 MiB row read by a slow client (at most 256 KiB at a time, 1 ms apart). Checks the row's
/// size as received and that the proxy's peak memory grows by less than 32 MiB (the row is
/// relayed as it arrives, not held whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_row_to_slow_reader_is_bounded() -> Result<()> {
    skip_if_direct!();
    const ROW: usize = 128 << 20;
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(2))?;
    let mut conn = login(&bed).await?;
    let peak = Peak::start(&mut bed)?;
    let mut query = BytesMut::new();
    msg::query(&mut query, &format!("SELECT repeat('x', {ROW})"));
    conn.send(&query).await?;
    let started = Instant::now();
    let replies = read_replies(conn, 256 * 1024, Duration::from_millis(1)).await?;
    println!(
        "a {} MiB row read slowly in {:?}",
        ROW as u64 / MIB,
        started.elapsed()
    );
    let row_len = 4 + 2 + 4 + ROW as u64;
    ensure!(
        replies.data_rows == 1 && replies.data_row_bytes == row_len && replies.error().is_none(),
        "expected one DataRow of length {row_len}, got {} rows of {} bytes in all; other replies {:?}",
        replies.data_rows,
        replies.data_row_bytes,
        replies.describe_others()
    );
    let growth = peak.report("128 MiB row, slow reader")?;
    bed.ensure_proxy_alive()?;
    ensure!(
        growth < 32 * MIB,
        "the proxy's peak memory grew by {} MiB relaying a 128 MiB row (bound 32 MiB)",
        growth / MIB
    );
    Ok(())
}

/// Five million rows of 100 bytes (about 530 MiB of DataRows) to a client that reads nothing
/// for 3 s, then at most 64 KiB at a time, 1 ms apart. Checks that exactly 5 000 000 rows
/// and `SELECT 5000000` arrive, and that the proxy's peak memory grows by less than 32 MiB
/// (back-pressure: the proxy stops reading the server while the client is behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rows_to_slow_reader_are_bounded() -> Result<()> {
    skip_if_direct!();
    const ROWS: u64 = 5_000_000;
    const WIDTH: u64 = 100;
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(2))?;
    let mut conn = login(&bed).await?;
    let peak = Peak::start(&mut bed)?;
    let mut query = BytesMut::new();
    msg::query(
        &mut query,
        &format!("SELECT repeat('x', {WIDTH}) FROM generate_series(1, {ROWS})"),
    );
    conn.send(&query).await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = peak.report("5M rows, nothing read for 3 s")?;
    let replies = read_replies(conn, 64 * 1024, Duration::from_millis(1)).await?;
    println!(
        "{} rows ({} MiB of DataRows) read slowly in {:?}",
        replies.data_rows,
        replies.data_row_bytes / MIB,
        started.elapsed()
    );
    let growth = peak.report("5M rows, slow reader")?;
    bed.ensure_proxy_alive()?;
    ensure!(
        replies.data_rows == ROWS
            && replies.data_row_bytes == ROWS * (4 + 2 + 4 + WIDTH)
            && replies.command_tag() == Some(format!("SELECT {ROWS}")),
        "expected {ROWS} rows of {WIDTH} bytes and SELECT {ROWS}, got {} rows ({} bytes); other replies {:?}",
        replies.data_rows,
        replies.data_row_bytes,
        replies.describe_others()
    );
    ensure!(
        held.max(growth) < 32 * MIB,
        "the proxy's peak memory grew by {} MiB relaying {ROWS} rows to a slow reader (bound 32 MiB)",
        held.max(growth) / MIB
    );
    Ok(())
}

/// `COPY (SELECT ...) TO STDOUT` of 1 GiB: 1 048 576 rows of 1 KiB (1023 letters and a
/// newline), read as fast as the client can. Checks the CopyData count (1 048 576, one per
/// row), the bytes received (1 GiB) and `COPY 1048576`, and that the proxy's peak memory
/// grows by less than 32 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_of_1_gib_is_bounded() -> Result<()> {
    skip_if_direct!();
    const ROWS: u64 = 1024 * 1024;
    const WIDTH: u64 = 1023;
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(2))?;
    let mut conn = login(&bed).await?;
    let peak = Peak::start(&mut bed)?;
    let mut query = BytesMut::new();
    msg::query(
        &mut query,
        &format!("COPY (SELECT repeat('x', {WIDTH}) FROM generate_series(1, {ROWS})) TO STDOUT"),
    );
    conn.send(&query).await?;
    let started = Instant::now();
    let replies = read_replies(conn, 256 * 1024, Duration::ZERO).await?;
    let took = started.elapsed();
    println!(
        "COPY OUT: {} CopyData, {} MiB in {took:?} ({:.0} MiB/s)",
        replies.copy_data,
        replies.copy_bytes / MIB,
        replies.copy_bytes as f64 / MIB as f64 / took.as_secs_f64()
    );
    let growth = peak.report("COPY OUT of 1 GiB")?;
    bed.ensure_proxy_alive()?;
    ensure!(
        replies.copy_data == ROWS
            && replies.copy_bytes == ROWS * (WIDTH + 1)
            && replies.command_tag() == Some(format!("COPY {ROWS}")),
        "expected {ROWS} CopyData of {} bytes and COPY {ROWS}, got {} CopyData ({} bytes); other replies {:?}",
        WIDTH + 1,
        replies.copy_data,
        replies.copy_bytes,
        replies.describe_others()
    );
    ensure!(
        growth < 32 * MIB,
        "the proxy's peak memory grew by {} MiB for a 1 GiB COPY OUT (bound 32 MiB)",
        growth / MIB
    );
    Ok(())
}

/// `COPY ... FROM STDIN` of about 1 GiB made on the fly: 131 072 rows of 8 KiB (a number
/// and 8 185 letters, which the server compresses), sent in CopyData messages of 65 000 bytes
/// that cut rows anywhere. Checks `COPY 131072`, then on the server (directly) the row
/// count, the sum of the numbers and the total length of the text, and that the proxy's
/// peak memory grows by less than 32 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_of_1_gib_is_bounded() -> Result<()> {
    skip_if_direct!();
    const ROWS: u64 = 128 * 1024;
    const ROW: usize = 8 * 1024;
    const MESSAGE: usize = 65_000;
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(2))?;
    let mut conn = login(&bed).await?;
    conn.query_one_value("CREATE UNLOGGED TABLE copy_in (n int8, t text); SELECT 1")
        .await?;
    let peak = Peak::start(&mut bed)?;
    start_copy_in(&mut conn, "COPY copy_in (n, t) FROM STDIN").await?;
    // Every row is exactly ROW bytes: a 6-digit number, a tab, letters, a newline.
    let letters = ROW - 6 - 1 - 1;
    let started = Instant::now();
    let (mut pending, mut sent) = (BytesMut::with_capacity(2 * MESSAGE), 0u64);
    let filler = vec![b'y'; letters];
    for n in 0..ROWS {
        pending.put_slice(format!("{n:06}\t").as_bytes());
        pending.put_slice(&filler);
        pending.put_u8(b'\n');
        while pending.len() >= MESSAGE || (n + 1 == ROWS && !pending.is_empty()) {
            let body = pending.split_to(MESSAGE.min(pending.len()));
            let mut message = BytesMut::with_capacity(5 + body.len());
            msg::raw(&mut message, b'd', &body);
            conn.send(&message).await?;
            sent += body.len() as u64;
        }
    }
    let mut done = BytesMut::new();
    msg::raw(&mut done, b'c', b"");
    conn.send(&done).await?;
    let replies = conn.read_until_ready().await;
    let took = started.elapsed();
    println!(
        "COPY IN: {} MiB in {took:?} ({:.0} MiB/s)",
        sent / MIB,
        sent as f64 / MIB as f64 / took.as_secs_f64()
    );
    let growth = peak.report("COPY IN of 1 GiB")?;
    let replies = replies.context("the end of the COPY was not answered")?;
    ensure!(
        replies
            .iter()
            .any(|m| m.command_tag() == Some(format!("COPY {ROWS}"))),
        "COPY replies: {:?}",
        replies.iter().map(Msg::describe).collect::<Vec<_>>()
    );
    let direct = bed.direct().connect_app().await?;
    let row = direct
        .query_one(
            "SELECT count(*), sum(n)::int8, sum(length(t))::int8 FROM copy_in",
            &[],
        )
        .await
        .ctx("counting the rows on the server")?;
    let stored: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let expected = (
        ROWS as i64,
        (ROWS * (ROWS - 1) / 2) as i64,
        (ROWS * letters as u64) as i64,
    );
    println!("on the server: rows, sum of numbers, text length = {stored:?}");
    bed.ensure_proxy_alive()?;
    ensure!(stored == expected, "stored {stored:?}, expected {expected:?}");
    ensure!(
        sent == ROWS * ROW as u64,
        "sent {sent} bytes, expected {}",
        ROWS * ROW as u64
    );
    ensure!(
        growth < 32 * MIB,
        "the proxy's peak memory grew by {} MiB for a 1 GiB COPY IN (bound 32 MiB)",
        growth / MIB
    );
    Ok(())
}

/// A Query too large to scan for session commands (over 256 KiB, so it streams) runs
/// `set_config('sy.secret', 'leaked', false)` (which outlives the transaction) over a pool of
/// one server; a second client, given the same server next, must not see the value. Checks
/// the first client's result too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_query_leaves_no_state_for_the_next_client() -> Result<()> {
    skip_if_direct!();
    let bed = TestBed::start_with(|cfg| cfg.pool_size(1))?;
    let mut first = login(&bed).await?;
    let filler = "x".repeat(1 << 20);
    let sql = format!("SELECT set_config('sy.secret', 'leaked', false), length('{filler}')");
    let res = first.simple_query(&sql).await?;
    ensure!(
        res.errors.is_empty(),
        "large query failed: {:?}",
        res.errors.iter().map(|m| m.describe()).collect::<Vec<_>>()
    );
    ensure!(
        res.rows == [vec![Some("leaked".to_string()), Some(filler.len().to_string())]],
        "large query returned {:?}",
        res.rows
    );
    first.terminate().await?;
    let mut second = login(&bed).await?;
    let seen = second
        .query_one_value("SELECT current_setting('sy.secret', true)")
        .await?;
    println!("the next client sees sy.secret = {seen:?}");
    ensure!(
        seen.as_deref().unwrap_or("").is_empty(),
        "the next client on the same server sees sy.secret = {seen:?}"
    );
    Ok(())
}

/// `COPY ... FROM STDIN` with four 32 MiB CopyData messages (one row each) through a
/// simple-query COPY. Checks the rows as stored (4 rows of 32 MiB) and that the proxy's peak
/// memory grows by less than 16 MiB (the data streams; at 5e4167b each message was held
/// whole, and the CopyDone, left unread behind a full server buffer, was never sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_copy_data_streams() -> Result<()> {
    skip_if_direct!();
    const ROWS: usize = 4;
    const ROW: usize = 32 << 20;
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(2))?;
    let mut conn = login(&bed).await?;
    conn.query_one_value("CREATE TABLE big_copy (t text); SELECT 1")
        .await?;
    let peak = Peak::start(&mut bed)?;
    start_copy_in(&mut conn, "COPY big_copy (t) FROM STDIN").await?;
    let mut row = vec![b'x'; ROW];
    *row.last_mut().expect("non-empty") = b'\n';
    let started = Instant::now();
    for _ in 0..ROWS {
        let mut head = BytesMut::new();
        head.put_u8(b'd');
        head.put_i32(ROW as i32 + 4);
        conn.send(&head).await?;
        conn.send(&row).await?;
    }
    let mut done = BytesMut::new();
    msg::raw(&mut done, b'c', b"");
    conn.send(&done).await?;
    let replies = conn.read_until_ready().await;
    println!(
        "{ROWS} x {} MiB CopyData sent and answered in {:?}",
        ROW as u64 / MIB,
        started.elapsed()
    );
    let growth = peak.report("COPY with 32 MiB CopyData messages")?;
    let replies = replies.context("the end of the COPY was not answered")?;
    let tags: Vec<String> = replies.iter().map(|m| m.describe()).collect();
    ensure!(
        replies
            .iter()
            .any(|m| m.command_tag().as_deref() == Some(&format!("COPY {ROWS}"))),
        "COPY replies: {tags:?}"
    );
    let stored = conn
        .query_one_value("SELECT count(*) || ' ' || sum(length(t)) FROM big_copy")
        .await?;
    ensure!(
        stored == Some(format!("{ROWS} {}", ROWS * (ROW - 1))),
        "stored {stored:?}"
    );
    bed.ensure_proxy_alive()?;
    ensure!(
        growth < 16 * MIB,
        "the proxy's peak memory grew by {} MiB copying {ROWS} x 32 MiB CopyData (bound 16 MiB)",
        growth / MIB
    );
    Ok(())
}

/// Four clients at once call `length(text)` through the fast-path protocol (FunctionCall)
/// with a 16 MiB argument. Checks each result (16777216) and that the proxy's peak memory
/// grows by less than 16 MiB (the calls stream; at 5e4167b each was held whole and copied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_function_calls_stream() -> Result<()> {
    skip_if_direct!();
    const CLIENTS: usize = 4;
    const ARG: usize = 16 << 20;
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(CLIENTS as u32))?;
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(login(&bed).await?);
    }
    let oid: i32 = conns[0]
        .query_one_value("SELECT 'length(text)'::regprocedure::oid")
        .await?
        .context("oid of length(text)")?
        .parse()?;
    let peak = Peak::start(&mut bed)?;
    let mut head = BytesMut::new();
    head.put_u8(b'F');
    head.put_i32((4 + 4 + 2 + 2 + 2 + 4 + ARG + 2) as i32);
    head.put_i32(oid);
    head.put_i16(1); // one format code for all arguments: text
    head.put_i16(0);
    head.put_i16(1); // one argument
    head.put_i32(ARG as i32);
    let head = head.freeze();
    let arg = Arc::new(vec![b'f'; ARG]);
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (head, arg) = (head.clone(), arg.clone());
        tasks.push(tokio::spawn(async move {
            conn.send(&head).await?;
            conn.send(&arg).await?;
            conn.send(&0i16.to_be_bytes()).await?; // result in text
            let replies = conn.read_until_ready().await?;
            let results: Vec<String> = replies
                .iter()
                .filter(|m| m.tag == b'V')
                .map(|m| String::from_utf8_lossy(m.body.get(4..).unwrap_or_default()).into_owned())
                .collect();
            let all: Vec<String> = replies.iter().map(|m| m.describe()).collect();
            ensure!(results == [ARG.to_string()], "FunctionCall replies: {all:?}");
            Ok(())
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.context("client task")?);
    }
    let growth = peak.report("4 x 16 MiB FunctionCall")?;
    bed.ensure_proxy_alive()?;
    outcomes.into_iter().collect::<Result<Vec<()>>>()?;
    ensure!(
        growth < 16 * MIB,
        "the proxy's peak memory grew by {} MiB for {CLIENTS} x 16 MiB FunctionCalls (bound 16 MiB)",
        growth / MIB
    );
    Ok(())
}

/// Four clients at once run a 16 MiB statement through an unnamed Parse
/// (`SELECT length('fff...')`), then Bind, Execute, Sync. Checks each result and that the
/// proxy's peak memory grows by less than 16 MiB (an unnamed Parse streams; at 5e4167b each
/// was held whole and copied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_unnamed_parse_streams() -> Result<()> {
    skip_if_direct!();
    const CLIENTS: usize = 4;
    const TEXT: usize = 16 << 20;
    let mut bed = TestBed::start_with(|cfg| cfg.pool_size(CLIENTS as u32))?;
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(login(&bed).await?);
    }
    let peak = Peak::start(&mut bed)?;
    let (open, close) = (&b"SELECT length('"[..], &b"')\0"[..]);
    let mut head = BytesMut::new();
    head.put_u8(b'P');
    head.put_i32((4 + 1 + open.len() + TEXT + close.len() + 2) as i32);
    head.put_u8(0); // unnamed statement
    head.put_slice(open);
    let mut tail = BytesMut::new();
    tail.put_slice(close);
    tail.put_i16(0); // no parameter types
    msg::bind(&mut tail, "", "", &[]);
    msg::execute(&mut tail, "", 0);
    msg::sync(&mut tail);
    let (head, tail) = (head.freeze(), tail.freeze());
    let text = Arc::new(vec![b'f'; TEXT]);
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (head, tail, text) = (head.clone(), tail.clone(), text.clone());
        tasks.push(tokio::spawn(async move {
            conn.send(&head).await?;
            conn.send(&text).await?;
            conn.send(&tail).await?;
            let replies = conn.read_until_ready().await?;
            let rows: Vec<_> = replies.iter().filter_map(|m| m.data_row()).collect();
            let all: Vec<String> = replies.iter().map(|m| m.describe()).collect();
            ensure!(rows == [vec![Some(TEXT.to_string())]], "replies: {all:?}");
            Ok(())
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.context("client task")?);
    }
    let growth = peak.report("4 x 16 MiB unnamed Parse")?;
    bed.ensure_proxy_alive()?;
    outcomes.into_iter().collect::<Result<Vec<()>>>()?;
    ensure!(
        growth < 16 * MIB,
        "the proxy's peak memory grew by {} MiB for {CLIENTS} x 16 MiB unnamed Parses (bound 16 MiB)",
        growth / MIB
    );
    Ok(())
}
