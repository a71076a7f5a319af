//! A minimal blocking HTTP/1.0 client over `std::net::TcpStream`, enough
//! for Patroni's REST API and etcd's `/health` on loopback: one request per
//! connection, `Connection: close`, the body read to the end of the stream
//! (HTTP/1.0 responses are never chunked).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Status code and body of a response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// `GET path` from `addr` (`host:port`).
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<Response> {
    request("GET", addr, path, None, timeout)
}

/// `POST path` with a JSON body.
pub fn post_json(addr: &str, path: &str, body: &str, timeout: Duration) -> Result<Response> {
    request("POST", addr, path, Some(body), timeout)
}

/// One request; `timeout` bounds the connect and each read and write.
pub fn request(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Response> {
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to nothing"))?;
    let what = || format!("{method} http://{addr}{path}");
    let mut stream = TcpStream::connect_timeout(&sock, timeout).with_context(what)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n");
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    stream.write_all(req.as_bytes()).with_context(what)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).with_context(what)?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("{}: malformed response {:?}", what(), text);
    };
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{}: no status line in {:?}", what(), head))?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}
