//! A raw PostgreSQL wire-protocol client for tests that need exact control
//! over bytes: malformed input, hand-built pipelines, arbitrary startup
//! parameters, and observing precisely what comes back (including EOF).
//!
//! Drivers hide these details on purpose, so protocol-edge tests use this.
//! Message encoding comes from `postgres-protocol`; decoding is kept minimal
//! (tag + body, with helpers for the messages tests assert on).

use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Default bound on waiting for a single message.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One backend message.
#[derive(Clone, Debug)]
pub struct Msg {
    /// Message type byte, e.g. b'Z'.
    pub tag: u8,
    /// Body without the length word.
    pub body: Vec<u8>,
}

impl Msg {
    pub fn tag_char(&self) -> char {
        self.tag as char
    }

    /// Fields of an ErrorResponse / NoticeResponse by type code.
    pub fn field(&self, code: u8) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut rest = &self.body[..];
        while let Some((&t, tail)) = rest.split_first() {
            if t == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if t == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    /// SQLSTATE of an ErrorResponse.
    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    /// Human-readable message of an ErrorResponse.
    pub fn message(&self) -> Option<String> {
        self.field(b'M')
    }

    /// Column values of a DataRow (text format).
    pub fn data_row(&self) -> Option<Vec<Option<String>>> {
        if self.tag != b'D' || self.body.len() < 2 {
            return None;
        }
        let n = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        let mut pos = 2;
        let mut cols = Vec::with_capacity(n);
        for _ in 0..n {
            let len = i32::from_be_bytes(self.body.get(pos..pos + 4)?.try_into().ok()?);
            pos += 4;
            if len < 0 {
                cols.push(None);
            } else {
                let len = len as usize;
                cols.push(Some(
                    String::from_utf8_lossy(self.body.get(pos..pos + len)?).into_owned(),
                ));
                pos += len;
            }
        }
        Some(cols)
    }

    /// Transaction status of a ReadyForQuery: b'I', b'T' or b'E'.
    pub fn ready_status(&self) -> Option<u8> {
        (self.tag == b'Z').then(|| self.body.first().copied()).flatten()
    }

    /// Command tag of a CommandComplete.
    pub fn command_tag(&self) -> Option<String> {
        (self.tag == b'C').then(|| {
            let end = self.body.iter().position(|&b| b == 0).unwrap_or(self.body.len());
            String::from_utf8_lossy(&self.body[..end]).into_owned()
        })
    }

    /// Short description for failure messages.
    pub fn describe(&self) -> String {
        match self.tag {
            b'E' => format!(
                "ErrorResponse {} {}",
                self.sqlstate().unwrap_or_default(),
                self.message().unwrap_or_default()
            ),
            b'Z' => format!(
                "ReadyForQuery {}",
                self.body.first().map(|&b| b as char).unwrap_or('?')
            ),
            b'C' => format!("CommandComplete {}", self.command_tag().unwrap_or_default()),
            b'D' => format!("DataRow {:?}", self.data_row().unwrap_or_default()),
            t => format!("'{}' ({} bytes)", t as char, self.body.len()),
        }
    }
}

/// What a connection attempt ended with.
#[derive(Debug)]
pub enum Startup {
    /// Authenticated and got ReadyForQuery.
    Ready,
    /// The server sent an ErrorResponse.
    Error(Msg),
}

/// How a server (or the proxy) challenges a login, as far as a client sees before it has
/// to prove anything.
#[derive(Clone, Debug, PartialEq)]
pub enum Challenge {
    /// SASL: the mechanisms offered, then the SCRAM server-first message's salt (decoded)
    /// and iteration count.
    Scram {
        mechanisms: Vec<String>,
        salt: Vec<u8>,
        iterations: u32,
    },
    /// An md5 challenge (its 4-byte salt is random per attempt).
    Md5,
    /// Any other authentication request code.
    Other(i32),
    /// An ErrorResponse before any challenge: SQLSTATE and message.
    Error(String, String),
}

/// Result of a simple query.
#[derive(Debug, Default)]
pub struct SimpleResult {
    pub rows: Vec<Vec<Option<String>>>,
    pub tags: Vec<String>,
    pub errors: Vec<Msg>,
    /// Transaction status from the final ReadyForQuery.
    pub status: u8,
}

/// The SASL mechanisms, salt and iteration count a login of `user` to database `app` is
/// challenged with at `addr`; an error if the challenge is not SCRAM.
pub async fn scram_challenge(addr: &str, user: &str) -> Result<(Vec<String>, Vec<u8>, u32)> {
    let mut raw = RawConn::connect(addr).await?;
    match raw
        .challenge(&[("user", user), ("database", crate::cluster::roles::APP_DB)])
        .await?
    {
        Challenge::Scram {
            mechanisms,
            salt,
            iterations,
        } => Ok((mechanisms, salt, iterations)),
        other => bail!("{user}: expected a SCRAM challenge, got {other:?}"),
    }
}

/// An Authentication message's request code and the data after it.
fn auth_request(msg: &Msg) -> Result<(i32, &[u8])> {
    let kind = msg.body.get(..4).ok_or_else(|| anyhow!("short auth message"))?;
    Ok((i32::from_be_bytes(kind.try_into()?), &msg.body[4..]))
}

/// A raw connection.
pub struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
    /// ParameterStatus values received during startup.
    pub params: Vec<(String, String)>,
    /// BackendKeyData (pid, secret), if received.
    pub backend_key: Option<(i32, i32)>,
    /// Authentication request codes received during startup, in order
    /// (0 ok, 3 cleartext, 5 md5, 10 SASL, 11 SASL continue, 12 SASL final).
    pub auth_requests: Vec<i32>,
}

impl RawConn {
    /// Open a TCP connection; nothing is sent.
    pub async fn connect(addr: &str) -> Result<Self> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr} timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        Self::over(stream)
    }

    /// Open a TCP connection from the local address `source` (such as 127.0.0.2, another
    /// loopback address, for address-based rules); nothing is sent.
    pub async fn connect_from(addr: &str, source: std::net::IpAddr) -> Result<Self> {
        let target: std::net::SocketAddr = addr.parse().with_context(|| format!("address {addr}"))?;
        let socket = match source {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket
            .bind(std::net::SocketAddr::new(source, 0))
            .with_context(|| format!("binding to {source}"))?;
        let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(target))
            .await
            .map_err(|_| anyhow!("connecting to {addr} from {source} timed out"))?
            .with_context(|| format!("connecting to {addr} from {source}"))?;
        Self::over(stream)
    }

    fn over(stream: TcpStream) -> Result<Self> {
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: BytesMut::new(),
            params: Vec::new(),
            backend_key: None,
            auth_requests: Vec::new(),
        })
    }

    /// Connect and log in; fails unless the login succeeds.
    pub async fn login(addr: &str, params: &[(&str, &str)], password: &str) -> Result<Self> {
        let mut conn = Self::connect(addr).await?;
        match conn.startup(params, password).await? {
            Startup::Ready => Ok(conn),
            Startup::Error(e) => bail!("login to {addr} with {params:?} failed: {}", e.describe()),
        }
    }

    /// [`RawConn::login`] as the test bed's application user (`app`, database `app`).
    pub async fn login_app(addr: &str) -> Result<Self> {
        let (user, password) = crate::cluster::roles::APP;
        Self::login(
            addr,
            &[("user", user), ("database", crate::cluster::roles::APP_DB)],
            password,
        )
        .await
    }

    /// Read one byte (the one-byte answer to SSLRequest or GSSENCRequest); `None` at EOF.
    pub async fn read_byte(&mut self, limit: Duration) -> Result<Option<u8>> {
        if self.buf.is_empty() {
            let n = tokio::time::timeout(limit, self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|_| anyhow!("no answer within {limit:?}"))??;
            if n == 0 {
                return Ok(None);
            }
        }
        Ok(Some(self.buf.split_to(1)[0]))
    }

    /// Send raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await.context("writing to socket")
    }

    /// The socket and the bytes already read from it but not yet taken as messages, for
    /// tests that read at their own pace (a slow reader) or write without reading.
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buf)
    }

    /// Close our sending side (the peer sees EOF).
    pub async fn shutdown_write(&mut self) -> Result<()> {
        self.stream.shutdown().await.context("shutting down socket")
    }

    /// Send a StartupMessage with `params` (must include `user`) and run the
    /// authentication exchange (cleartext, MD5 or SCRAM-SHA-256) with
    /// `password`, up to ReadyForQuery or an ErrorResponse.
    pub async fn startup(&mut self, params: &[(&str, &str)], password: &str) -> Result<Startup> {
        let user = params
            .iter()
            .find(|(k, _)| *k == "user")
            .map(|(_, v)| *v)
            .unwrap_or_default()
            .to_owned();
        let mut buf = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut buf)?;
        self.send(&buf).await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let msg = self.expect_msg().await?;
            match msg.tag {
                b'E' => return Ok(Startup::Error(msg)),
                b'R' => {
                    let (kind, data) = auth_request(&msg)?;
                    self.auth_requests.push(kind);
                    let mut out = BytesMut::new();
                    match kind {
                        0 => {}
                        3 => frontend::password_message(password.as_bytes(), &mut out)?,
                        5 => {
                            let salt: [u8; 4] = data
                                .get(..4)
                                .ok_or_else(|| anyhow!("short md5 salt"))?
                                .try_into()?;
                            let hash = postgres_protocol::authentication::md5_hash(
                                user.as_bytes(),
                                password.as_bytes(),
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut out)?;
                        }
                        10 => {
                            let mechanisms: Vec<&[u8]> =
                                data.split(|&b| b == 0).filter(|m| !m.is_empty()).collect();
                            if !mechanisms.contains(&&b"SCRAM-SHA-256"[..]) {
                                bail!("server offers no SCRAM-SHA-256: {mechanisms:?}");
                            }
                            let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| anyhow!("SASLContinue before SASL"))?;
                            s.update(data).context("SCRAM server-first message")?;
                            frontend::sasl_response(s.message(), &mut out)?;
                        }
                        12 => {
                            let mut s = scram.take().ok_or_else(|| anyhow!("SASLFinal before SASL"))?;
                            s.finish(data).context("SCRAM server signature")?;
                        }
                        other => bail!("unsupported authentication request {other}"),
                    }
                    if !out.is_empty() {
                        self.send(&out).await?;
                    }
                }
                b'S' => {
                    let mut parts = msg.body.split(|&b| b == 0);
                    let k = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                    let v = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                    self.params.push((k, v));
                }
                b'K' => {
                    if msg.body.len() >= 8 {
                        self.backend_key = Some((
                            i32::from_be_bytes(msg.body[..4].try_into()?),
                            i32::from_be_bytes(msg.body[4..8].try_into()?),
                        ));
                    }
                }
                b'Z' => return Ok(Startup::Ready),
                b'N' => {}
                other => bail!("unexpected message '{}' during startup", other as char),
            }
        }
    }

    /// Send a StartupMessage with `params` and answer a SASL request with a SCRAM
    /// client-first message, up to the server-first message; the connection is then left
    /// in the middle of the exchange (drop it).
    pub async fn challenge(&mut self, params: &[(&str, &str)]) -> Result<Challenge> {
        use base64::Engine;
        let mut buf = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut buf)?;
        self.send(&buf).await?;
        let mut mechanisms = Vec::new();
        loop {
            let msg = self.expect_msg().await?;
            match msg.tag {
                b'E' => {
                    return Ok(Challenge::Error(
                        msg.sqlstate().unwrap_or_default(),
                        msg.message().unwrap_or_default(),
                    ))
                }
                b'N' => continue,
                b'R' => {}
                other => bail!("unexpected message '{}' before a challenge", other as char),
            }
            let (kind, data) = auth_request(&msg)?;
            match kind {
                5 => return Ok(Challenge::Md5),
                10 => {
                    mechanisms = data
                        .split(|&b| b == 0)
                        .filter(|m| !m.is_empty())
                        .map(|m| String::from_utf8_lossy(m).into_owned())
                        .collect();
                    let s = ScramSha256::new(b"not-the-password", ChannelBinding::unsupported());
                    let mut out = BytesMut::new();
                    frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)?;
                    self.send(&out).await?;
                }
                11 => {
                    let text = String::from_utf8_lossy(data).into_owned();
                    let attr = |name: &str| text.split(',').find_map(|a| a.strip_prefix(name));
                    let salt = attr("s=")
                        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                        .ok_or_else(|| anyhow!("server-first message without a salt: {text:?}"))?;
                    let iterations = attr("i=")
                        .and_then(|i| i.parse().ok())
                        .ok_or_else(|| anyhow!("server-first message without iterations: {text:?}"))?;
                    return Ok(Challenge::Scram {
                        mechanisms,
                        salt,
                        iterations,
                    });
                }
                other => return Ok(Challenge::Other(other)),
            }
        }
    }

    /// Read one message; `None` on clean EOF. Bounded by [`READ_TIMEOUT`].
    pub async fn read_msg(&mut self) -> Result<Option<Msg>> {
        self.read_msg_within(READ_TIMEOUT).await
    }

    /// Read one message with an explicit time bound; `None` on EOF (a
    /// connection reset also counts as the peer closing).
    pub async fn read_msg_within(&mut self, limit: Duration) -> Result<Option<Msg>> {
        let fut = async {
            loop {
                if self.buf.len() >= 5 {
                    let len = i32::from_be_bytes(self.buf[1..5].try_into().expect("4 bytes"));
                    if len < 4 {
                        bail!("invalid message length {len} from server");
                    }
                    let total = 1 + len as usize;
                    if self.buf.len() >= total {
                        let frame = self.buf.split_to(total);
                        return Ok(Some(Msg {
                            tag: frame[0],
                            body: frame[5..].to_vec(),
                        }));
                    }
                }
                let mut chunk = [0u8; 8192];
                match self.stream.read(&mut chunk).await {
                    Ok(0) => return Ok(None),
                    Ok(n) => self.buf.put_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                    Err(e) => return Err(e).context("reading from socket"),
                }
            }
        };
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| anyhow!("no message from server within {limit:?}"))?
    }

    /// Read one message; EOF is an error.
    pub async fn expect_msg(&mut self) -> Result<Msg> {
        self.read_msg()
            .await?
            .ok_or_else(|| anyhow!("server closed the connection unexpectedly"))
    }

    /// Read messages up to and including the next ReadyForQuery.
    pub async fn read_until_ready(&mut self) -> Result<Vec<Msg>> {
        let mut out = Vec::new();
        loop {
            let msg = self.expect_msg().await?;
            let done = msg.tag == b'Z';
            out.push(msg);
            if done {
                return Ok(out);
            }
        }
    }

    /// Read until EOF, returning everything received before it. Fails if
    /// the connection stays open longer than `limit`.
    pub async fn read_until_eof(&mut self, limit: Duration) -> Result<Vec<Msg>> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_msg_within(left).await {
                Ok(Some(m)) => out.push(m),
                Ok(None) => return Ok(out),
                Err(e) => {
                    let seen: Vec<String> = out.iter().map(Msg::describe).collect();
                    return Err(e.context(format!(
                        "expected the server to close the connection; received so far: {seen:?}"
                    )));
                }
            }
        }
    }

    /// Reads what the connection gets until the proxy closes it (within `limit`): it must
    /// be exactly one ErrorResponse with SQLSTATE `code`, which is returned; `who` names the
    /// connection in the error.
    pub async fn expect_closed_with(&mut self, code: &str, limit: Duration, who: &str) -> Result<Msg> {
        let replies = self.read_until_eof(limit).await.with_context(|| who.to_owned())?;
        match replies.as_slice() {
            [e] if e.sqlstate().as_deref() == Some(code) => Ok(e.clone()),
            other => bail!(
                "{who}: expected one ErrorResponse {code} then the close, got {:?}",
                other.iter().map(Msg::describe).collect::<Vec<_>>()
            ),
        }
    }

    /// Commits the open transaction, which must succeed (no error, the tag `COMMIT`), then
    /// expects the proxy to close the connection with one ErrorResponse `code` within
    /// `limit` ([`RawConn::expect_closed_with`]): a client let finish its transaction by
    /// a shutdown, then told.
    pub async fn commit_then_closed_with(&mut self, code: &str, limit: Duration, who: &str) -> Result<()> {
        let commit = self.simple_query("COMMIT").await?;
        ensure!(
            commit.errors.is_empty() && commit.tags == ["COMMIT"],
            "{who}: COMMIT answered {commit:?}"
        );
        let told = self.expect_closed_with(code, limit, who).await?;
        println!("{who}, after its COMMIT: {}", told.describe());
        Ok(())
    }

    /// Run a simple query and collect the results.
    pub async fn simple_query(&mut self, sql: &str) -> Result<SimpleResult> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf)?;
        self.send(&buf).await?;
        let mut res = SimpleResult::default();
        for msg in self.read_until_ready().await? {
            match msg.tag {
                b'D' => res.rows.push(msg.data_row().unwrap_or_default()),
                b'C' => res.tags.push(msg.command_tag().unwrap_or_default()),
                b'E' => res.errors.push(msg),
                b'Z' => res.status = msg.ready_status().unwrap_or(0),
                _ => {}
            }
        }
        Ok(res)
    }

    /// Run a simple query that must succeed and return one value.
    pub async fn query_one_value(&mut self, sql: &str) -> Result<Option<String>> {
        let res = self.simple_query(sql).await?;
        if let Some(e) = res.errors.first() {
            bail!("{sql:?} failed: {}", e.describe());
        }
        match res.rows.as_slice() {
            [row] if row.len() == 1 => Ok(row[0].clone()),
            rows => bail!("{sql:?}: expected one value, got rows {rows:?}"),
        }
    }

    /// Politely end the session.
    pub async fn terminate(mut self) -> Result<()> {
        let mut buf = BytesMut::new();
        frontend::terminate(&mut buf);
        self.send(&buf).await
    }
}

/// Builders for extended-protocol messages, appended to a buffer so that
/// tests can pipeline any sequence in one write.
pub mod msg {
    use bytes::{BufMut, BytesMut};
    use postgres_protocol::message::frontend;

    /// Parse (statement name, SQL, no declared parameter types).
    pub fn parse(buf: &mut BytesMut, name: &str, sql: &str) {
        frontend::parse(name, sql, std::iter::empty(), buf).expect("valid Parse");
    }

    /// Bind with text-format parameters (`None` = NULL) and text results.
    pub fn bind(buf: &mut BytesMut, portal: &str, statement: &str, params: &[Option<&str>]) {
        let mut body = BytesMut::new();
        body.put_slice(portal.as_bytes());
        body.put_u8(0);
        body.put_slice(statement.as_bytes());
        body.put_u8(0);
        body.put_i16(0); // all parameters text
        body.put_i16(params.len() as i16);
        for p in params {
            match p {
                Some(v) => {
                    body.put_i32(v.len() as i32);
                    body.put_slice(v.as_bytes());
                }
                None => body.put_i32(-1),
            }
        }
        body.put_i16(0); // all results text
        buf.put_u8(b'B');
        buf.put_i32(body.len() as i32 + 4);
        buf.put_slice(&body);
    }

    /// Describe a portal (`b'P'`) or statement (`b'S'`).
    pub fn describe(buf: &mut BytesMut, kind: u8, name: &str) {
        frontend::describe(kind, name, buf).expect("valid Describe");
    }

    /// Execute a portal (0 = all rows).
    pub fn execute(buf: &mut BytesMut, portal: &str, max_rows: i32) {
        frontend::execute(portal, max_rows, buf).expect("valid Execute");
    }

    /// Close a portal (`b'P'`) or statement (`b'S'`).
    pub fn close(buf: &mut BytesMut, kind: u8, name: &str) {
        frontend::close(kind, name, buf).expect("valid Close");
    }

    pub fn sync(buf: &mut BytesMut) {
        frontend::sync(buf);
    }

    pub fn flush(buf: &mut BytesMut) {
        frontend::flush(buf);
    }

    pub fn query(buf: &mut BytesMut, sql: &str) {
        frontend::query(sql, buf).expect("valid Query");
    }

    /// A message with an arbitrary type byte and body.
    pub fn raw(buf: &mut BytesMut, tag: u8, body: &[u8]) {
        buf.put_u8(tag);
        buf.put_i32(body.len() as i32 + 4);
        buf.put_slice(body);
    }
}

/// Logs in as `user`, whom the proxy must not know: the answer must be a SCRAM challenge
/// (as for a known user, so probing cannot tell users apart) and then 28P01.
pub async fn expect_unknown_user_refused(addr: &str, user: &str, db: &str) -> Result<()> {
    let mut raw = RawConn::connect(addr).await?;
    match raw.startup(&[("user", user), ("database", db)], "x").await? {
        Startup::Error(e) if e.sqlstate().as_deref() == Some("28P01") => {}
        Startup::Error(e) => bail!("unknown user {user:?} via raw login: {}", e.describe()),
        Startup::Ready => bail!("unknown user {user:?} logged in"),
    }
    if raw.auth_requests.first() != Some(&10) {
        bail!(
            "expected a SCRAM challenge for unknown user {user:?} (like for a known one), got {:?}",
            raw.auth_requests
        );
    }
    Ok(())
}
