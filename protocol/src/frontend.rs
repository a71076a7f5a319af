//! Messages sent by clients, as seen by the proxy.
//!
//! The proxy terminates the client side of the protocol, so it must decode
//! everything a client can send: the untagged startup-phase packets
//! ([`decode_startup`]) and the tagged messages of the query and COPY
//! sub-protocols ([`FrontendMessage::decode`]). In transaction pooling it also
//! rewrites extended-protocol messages (prepared statement names are private to
//! a server connection), so this module provides encoders for the messages it
//! re-emits towards servers. [`encode_bind_renamed`] is the reason
//! [`FrontendMessage::Bind`] keeps everything after the statement name as one
//! raw, validated slice: renaming a statement in a `Bind` costs one `memcpy`.
//!
//! Decoded byte fields are [`Bytes`] slices of the received frame: decoding
//! never copies message contents.

use std::fmt;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::cursor::{put_cstr, put_header, wire_count, wire_len, Cursor};
use crate::frame::{Frame, HEADER_LEN};
use crate::{ProtocolError, MAX_STARTUP_PACKET_LEN, PROTOCOL_VERSION_3_0};

/// Type bytes of the tagged messages a client can send.
pub mod tags {
    /// `Query` (simple query protocol).
    pub const QUERY: u8 = b'Q';
    /// `Parse`.
    pub const PARSE: u8 = b'P';
    /// `Bind`.
    pub const BIND: u8 = b'B';
    /// `Describe`.
    pub const DESCRIBE: u8 = b'D';
    /// `Execute`.
    pub const EXECUTE: u8 = b'E';
    /// `Close`.
    pub const CLOSE: u8 = b'C';
    /// `Sync`.
    pub const SYNC: u8 = b'S';
    /// `Flush`.
    pub const FLUSH: u8 = b'H';
    /// `CopyData`.
    pub const COPY_DATA: u8 = b'd';
    /// `CopyDone`.
    pub const COPY_DONE: u8 = b'c';
    /// `CopyFail`.
    pub const COPY_FAIL: u8 = b'f';
    /// `FunctionCall`.
    pub const FUNCTION_CALL: u8 = b'F';
    /// `Terminate`.
    pub const TERMINATE: u8 = b'X';
    /// `PasswordMessage`, `SASLInitialResponse`, `SASLResponse` and
    /// `GSSResponse` all share this tag; the authentication state decides.
    pub const PASSWORD: u8 = b'p';
}

/// Request code of `SSLRequest`.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Request code of `GSSENCRequest`.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Request code of `CancelRequest`.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A packet of the startup phase, which (unlike every later message) has no
/// type byte: just an `i32` length and an `i32` request code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// `SSLRequest`: the client asks for TLS; answer with a single `S` or `N`.
    SslRequest,
    /// `GSSENCRequest`: the client asks for GSSAPI encryption; answer `N`
    /// unless supported.
    GssEncRequest,
    /// `CancelRequest`, sent on a fresh connection to cancel the query running
    /// on the connection identified by the key.
    Cancel {
        /// Process ID from the `BackendKeyData` the client received.
        process_id: i32,
        /// Secret key from the `BackendKeyData` the client received.
        secret_key: i32,
    },
    /// `StartupMessage` of protocol 3.x.
    Startup {
        /// Requested protocol version (major in the high 16 bits). Always 3.x;
        /// if the minor version is above 0, the caller should answer with
        /// `NegotiateProtocolVersion`.
        protocol: u32,
        /// Parameters in the order sent (`user`, `database`, `options`, GUCs
        /// and `_pq_.` protocol options). Duplicates are kept; PostgreSQL lets
        /// the last one win.
        params: Vec<(String, String)>,
    },
}

impl StartupPacket {
    /// For a [`StartupPacket::Startup`], the value of the first parameter
    /// named `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            StartupPacket::Startup { params, .. } => {
                params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
            }
            _ => None,
        }
    }
}

/// Decodes one startup-phase packet from the front of `buf` and removes it.
///
/// Returns `Ok(None)` (leaving `buf` untouched) until the whole packet has
/// arrived. Protocol versions other than 3.x are rejected; 3.x with a minor
/// version above 0 is accepted and reported in
/// [`StartupPacket::Startup::protocol`].
///
/// The caller must still check the semantics PostgreSQL enforces on a
/// `StartupMessage` (for example that `user` is present).
///
/// # Errors
///
/// * [`ProtocolError::InvalidLength`] if the length is below 8;
/// * [`ProtocolError::TooLarge`] if it exceeds [`MAX_STARTUP_PACKET_LEN`];
/// * [`ProtocolError::UnsupportedProtocol`] for a protocol other than 3.x
///   (including unknown request codes);
/// * [`ProtocolError::Malformed`] for a bad layout or non-UTF-8 parameters.
pub fn decode_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    let Some(&len_bytes) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let declared = i32::from_be_bytes(len_bytes);
    let len = match usize::try_from(declared) {
        Ok(len) if len >= 8 => len,
        _ => {
            return Err(ProtocolError::InvalidLength {
                len: i64::from(declared),
            })
        }
    };
    if len > MAX_STARTUP_PACKET_LEN {
        return Err(ProtocolError::TooLarge {
            len,
            max: MAX_STARTUP_PACKET_LEN,
        });
    }
    let Some(body) = buf.get(4..len) else {
        return Ok(None);
    };
    let packet = parse_startup_body(body)?;
    buf.advance(len);
    Ok(Some(packet))
}

fn parse_startup_body(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    let mut c = Cursor::new(body, "StartupMessage");
    let code = c.u32()?;
    match code {
        SSL_REQUEST_CODE => {
            Cursor::new(body.get(4..).unwrap_or_default(), "SSLRequest").finish()?;
            Ok(StartupPacket::SslRequest)
        }
        GSSENC_REQUEST_CODE => {
            Cursor::new(body.get(4..).unwrap_or_default(), "GSSENCRequest").finish()?;
            Ok(StartupPacket::GssEncRequest)
        }
        CANCEL_REQUEST_CODE => {
            let mut c = Cursor::new(body, "CancelRequest");
            c.u32()?;
            let process_id = c.i32()?;
            let secret_key = c.i32()?;
            c.finish()?;
            Ok(StartupPacket::Cancel {
                process_id,
                secret_key,
            })
        }
        _ => {
            let [major_hi, major_lo, minor_hi, minor_lo] = code.to_be_bytes();
            let major = u16::from_be_bytes([major_hi, major_lo]);
            if major != 3 {
                return Err(ProtocolError::UnsupportedProtocol {
                    major,
                    minor: u16::from_be_bytes([minor_hi, minor_lo]),
                });
            }
            let mut params = Vec::new();
            loop {
                let key = c.str()?;
                if key.is_empty() {
                    break;
                }
                let value = c.str()?;
                params.push((key.to_owned(), value.to_owned()));
            }
            c.finish()?;
            Ok(StartupPacket::Startup {
                protocol: code,
                params,
            })
        }
    }
}

/// Whether a `Describe` or `Close` refers to a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `S`: a prepared statement.
    Statement,
    /// `P`: a portal.
    Portal,
}

impl Target {
    /// Parses the wire byte (`S` or `P`).
    #[inline]
    pub fn from_byte(b: u8) -> Option<Target> {
        match b {
            b'S' => Some(Target::Statement),
            b'P' => Some(Target::Portal),
            _ => None,
        }
    }

    /// The wire byte (`S` or `P`).
    #[inline]
    pub fn to_byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// A decoded tagged message from a client.
///
/// Byte fields share the buffer of the [`Frame`] they were decoded from.
/// Names and strings are exactly as sent, without their NUL terminators, and
/// never contain a NUL.
#[derive(Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// `Query`: a simple-protocol query string.
    Query {
        /// The SQL text, without the trailing NUL.
        sql: Bytes,
    },
    /// `Parse`: create a prepared statement (empty name = unnamed).
    Parse {
        /// Statement name.
        name: Bytes,
        /// SQL text.
        query: Bytes,
        /// Parameter type OIDs (0 = unspecified).
        param_types: Vec<u32>,
    },
    /// `Bind`: create a portal from a prepared statement.
    Bind {
        /// Portal name (empty = unnamed).
        portal: Bytes,
        /// Statement name (empty = unnamed).
        statement: Bytes,
        /// Everything after the statement name (parameter formats, values
        /// and result formats), raw. Its layout has been validated, so it can
        /// be re-emitted with [`encode_bind_renamed`] as is.
        rest: Bytes,
    },
    /// `Describe` a statement or portal.
    Describe {
        /// What is described.
        target: Target,
        /// Its name.
        name: Bytes,
    },
    /// `Execute` a portal.
    Execute {
        /// Portal name.
        portal: Bytes,
        /// Row limit (0 = no limit).
        max_rows: i32,
    },
    /// `Close` a statement or portal.
    Close {
        /// What is closed.
        target: Target,
        /// Its name.
        name: Bytes,
    },
    /// `Sync`.
    Sync,
    /// `Flush`.
    Flush,
    /// `CopyData`: the body, uninterpreted.
    CopyData(Bytes),
    /// `CopyDone`.
    CopyDone,
    /// `CopyFail`.
    CopyFail {
        /// The failure reason.
        message: Bytes,
    },
    /// `FunctionCall`: the body, uninterpreted.
    FunctionCall(Bytes),
    /// `Terminate`.
    Terminate,
    /// The body of a `p` message: `PasswordMessage`, `SASLInitialResponse`
    /// or `SASLResponse` depending on the authentication exchange in progress.
    /// Decode it with [`decode_password`] or [`decode_sasl_initial_response`],
    /// or use it directly as SASL data.
    Password(Bytes),
}

impl fmt::Debug for FrontendMessage {
    // Hand-written so that credentials never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrontendMessage::Query { sql } => f.debug_struct("Query").field("sql", sql).finish(),
            FrontendMessage::Parse {
                name,
                query,
                param_types,
            } => f
                .debug_struct("Parse")
                .field("name", name)
                .field("query", query)
                .field("param_types", param_types)
                .finish(),
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } => f
                .debug_struct("Bind")
                .field("portal", portal)
                .field("statement", statement)
                .field("rest_len", &rest.len())
                .finish(),
            FrontendMessage::Describe { target, name } => f
                .debug_struct("Describe")
                .field("target", target)
                .field("name", name)
                .finish(),
            FrontendMessage::Execute { portal, max_rows } => f
                .debug_struct("Execute")
                .field("portal", portal)
                .field("max_rows", max_rows)
                .finish(),
            FrontendMessage::Close { target, name } => f
                .debug_struct("Close")
                .field("target", target)
                .field("name", name)
                .finish(),
            FrontendMessage::Sync => f.write_str("Sync"),
            FrontendMessage::Flush => f.write_str("Flush"),
            FrontendMessage::CopyData(data) => f.debug_tuple("CopyData").field(&data.len()).finish(),
            FrontendMessage::CopyDone => f.write_str("CopyDone"),
            FrontendMessage::CopyFail { message } => {
                f.debug_struct("CopyFail").field("message", message).finish()
            }
            FrontendMessage::FunctionCall(body) => f.debug_tuple("FunctionCall").field(&body.len()).finish(),
            FrontendMessage::Terminate => f.write_str("Terminate"),
            FrontendMessage::Password(_) => f.write_str("Password(<redacted>)"),
        }
    }
}

/// A sub-slice of the frame's buffer for a range of its body. Ranges come from
/// a [`Cursor`] over that body, so they are in bounds; the check only keeps
/// this total.
#[inline]
fn body_slice(raw: &Bytes, range: Range<usize>) -> Bytes {
    let start = range.start + HEADER_LEN;
    let end = range.end + HEADER_LEN;
    if start <= end && end <= raw.len() {
        raw.slice(start..end)
    } else {
        Bytes::new()
    }
}

/// Reads a `Describe`/`Close` body.
fn decode_target_name(
    raw: &Bytes,
    body: &[u8],
    message: &'static str,
) -> Result<(Target, Bytes), ProtocolError> {
    let mut c = Cursor::new(body, message);
    let target = Target::from_byte(c.u8()?).ok_or(c.error("invalid target type"))?;
    let name = c.cstr_range()?;
    c.finish()?;
    Ok((target, body_slice(raw, name)))
}

/// Checks the layout of the part of a `Bind` body after the statement name:
/// parameter format codes, parameter values, result format codes.
fn validate_bind_rest(c: &mut Cursor<'_>) -> Result<(), ProtocolError> {
    let formats = c.u16()?;
    c.skip(usize::from(formats) * 2)?;
    let params = c.u16()?;
    for _ in 0..params {
        let len = c.i32()?;
        if len == -1 {
            continue;
        }
        let len = usize::try_from(len).map_err(|_| c.error("invalid parameter length"))?;
        c.skip(len)?;
    }
    let result_formats = c.u16()?;
    c.skip(usize::from(result_formats) * 2)?;
    c.finish()
}

/// A body that must be empty (`Sync`, `Flush`, `CopyDone`).
fn expect_empty(body: &[u8], message: &'static str) -> Result<(), ProtocolError> {
    Cursor::new(body, message).finish()
}

impl FrontendMessage {
    /// Decodes a tagged client message. Byte fields share `frame`'s buffer.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::UnknownMessage`] for a tag clients may not send and
    /// [`ProtocolError::Malformed`] for a body that does not match its tag's
    /// layout (including trailing bytes).
    pub fn decode(frame: &Frame) -> Result<Self, ProtocolError> {
        let raw = frame.raw();
        let body = frame.body();
        let tag = frame.tag();
        let message = Self::tag_name(tag);
        match tag {
            tags::QUERY => {
                let mut c = Cursor::new(body, message);
                let sql = c.cstr_range()?;
                c.finish()?;
                Ok(FrontendMessage::Query {
                    sql: body_slice(raw, sql),
                })
            }
            tags::PARSE => {
                let mut c = Cursor::new(body, message);
                let name = c.cstr_range()?;
                let query = c.cstr_range()?;
                let count = c.u16()?;
                // Check the size before allocating for a hostile count.
                if c.remaining() != usize::from(count) * 4 {
                    return Err(c.error("parameter type count does not match the message length"));
                }
                let mut param_types = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    param_types.push(c.u32()?);
                }
                c.finish()?;
                Ok(FrontendMessage::Parse {
                    name: body_slice(raw, name),
                    query: body_slice(raw, query),
                    param_types,
                })
            }
            tags::BIND => {
                let mut c = Cursor::new(body, message);
                let portal = c.cstr_range()?;
                let statement = c.cstr_range()?;
                let rest_start = c.position();
                validate_bind_rest(&mut c)?;
                Ok(FrontendMessage::Bind {
                    portal: body_slice(raw, portal),
                    statement: body_slice(raw, statement),
                    rest: body_slice(raw, rest_start..body.len()),
                })
            }
            tags::DESCRIBE => {
                let (target, name) = decode_target_name(raw, body, message)?;
                Ok(FrontendMessage::Describe { target, name })
            }
            tags::EXECUTE => {
                let mut c = Cursor::new(body, message);
                let portal = c.cstr_range()?;
                let max_rows = c.i32()?;
                c.finish()?;
                Ok(FrontendMessage::Execute {
                    portal: body_slice(raw, portal),
                    max_rows,
                })
            }
            tags::CLOSE => {
                let (target, name) = decode_target_name(raw, body, message)?;
                Ok(FrontendMessage::Close { target, name })
            }
            tags::SYNC => expect_empty(body, message).map(|()| FrontendMessage::Sync),
            tags::FLUSH => expect_empty(body, message).map(|()| FrontendMessage::Flush),
            tags::COPY_DATA => Ok(FrontendMessage::CopyData(frame.body_bytes())),
            tags::COPY_DONE => expect_empty(body, message).map(|()| FrontendMessage::CopyDone),
            tags::COPY_FAIL => {
                let mut c = Cursor::new(body, message);
                let msg = c.cstr_range()?;
                c.finish()?;
                Ok(FrontendMessage::CopyFail {
                    message: body_slice(raw, msg),
                })
            }
            tags::FUNCTION_CALL => Ok(FrontendMessage::FunctionCall(frame.body_bytes())),
            // Like PostgreSQL, ignore any body: the connection is ending.
            tags::TERMINATE => Ok(FrontendMessage::Terminate),
            tags::PASSWORD => Ok(FrontendMessage::Password(frame.body_bytes())),
            _ => Err(ProtocolError::UnknownMessage { tag: char::from(tag) }),
        }
    }

    /// The type byte of this message.
    pub fn tag(&self) -> u8 {
        match self {
            FrontendMessage::Query { .. } => tags::QUERY,
            FrontendMessage::Parse { .. } => tags::PARSE,
            FrontendMessage::Bind { .. } => tags::BIND,
            FrontendMessage::Describe { .. } => tags::DESCRIBE,
            FrontendMessage::Execute { .. } => tags::EXECUTE,
            FrontendMessage::Close { .. } => tags::CLOSE,
            FrontendMessage::Sync => tags::SYNC,
            FrontendMessage::Flush => tags::FLUSH,
            FrontendMessage::CopyData(_) => tags::COPY_DATA,
            FrontendMessage::CopyDone => tags::COPY_DONE,
            FrontendMessage::CopyFail { .. } => tags::COPY_FAIL,
            FrontendMessage::FunctionCall(_) => tags::FUNCTION_CALL,
            FrontendMessage::Terminate => tags::TERMINATE,
            FrontendMessage::Password(_) => tags::PASSWORD,
        }
    }

    /// Human-readable name of a client message type byte, for logs and error
    /// messages; `"unknown"` for bytes clients may not send.
    pub fn tag_name(tag: u8) -> &'static str {
        match tag {
            tags::QUERY => "Query",
            tags::PARSE => "Parse",
            tags::BIND => "Bind",
            tags::DESCRIBE => "Describe",
            tags::EXECUTE => "Execute",
            tags::CLOSE => "Close",
            tags::SYNC => "Sync",
            tags::FLUSH => "Flush",
            tags::COPY_DATA => "CopyData",
            tags::COPY_DONE => "CopyDone",
            tags::COPY_FAIL => "CopyFail",
            tags::FUNCTION_CALL => "FunctionCall",
            tags::TERMINATE => "Terminate",
            tags::PASSWORD => "PasswordMessage",
            _ => "unknown",
        }
    }
}

/// Decodes a `SASLInitialResponse` body into the selected mechanism name and
/// the client's initial data (empty when the client sent none, length -1).
///
/// # Errors
///
/// [`ProtocolError::Malformed`] if the layout is wrong, the data length does
/// not match the rest of the body, or the mechanism name is not UTF-8.
pub fn decode_sasl_initial_response(body: &[u8]) -> Result<(String, Bytes), ProtocolError> {
    let mut c = Cursor::new(body, "SASLInitialResponse");
    let mechanism = c.str()?.to_owned();
    let len = c.i32()?;
    let data = if len == -1 {
        Bytes::new()
    } else {
        let len = usize::try_from(len).map_err(|_| c.error("invalid data length"))?;
        Bytes::copy_from_slice(c.bytes(len)?)
    };
    c.finish()?;
    Ok((mechanism, data))
}

/// Decodes a `PasswordMessage` body: the password (cleartext or
/// `md5`-hashed) without its NUL terminator. An empty password is returned as
/// such; rejecting it is the authentication code's decision.
///
/// # Errors
///
/// [`ProtocolError::Malformed`] unless the body is exactly one
/// NUL-terminated string.
pub fn decode_password(body: &[u8]) -> Result<Bytes, ProtocolError> {
    let mut c = Cursor::new(body, "PasswordMessage");
    let password = c.cstr()?;
    c.finish()?;
    Ok(Bytes::copy_from_slice(password))
}

/// Appends a `Parse` message.
///
/// `name` and `query` must not contain NUL bytes (decoded values never do).
/// At most 65535 parameter types can be expressed; extra ones are dropped.
#[inline]
pub fn encode_parse(name: &[u8], query: &[u8], param_types: &[u32], out: &mut BytesMut) {
    let count = wire_count(param_types.len());
    let types = param_types.get(..usize::from(count)).unwrap_or(param_types);
    let body_len = name.len() + 1 + query.len() + 1 + 2 + types.len() * 4;
    put_header(out, tags::PARSE, body_len);
    put_cstr(out, name);
    put_cstr(out, query);
    out.put_u16(count);
    for &oid in types {
        out.put_u32(oid);
    }
}

/// Appends a `Bind` message for `portal` and `statement` whose remaining body
/// is `rest`, as taken from a decoded [`FrontendMessage::Bind`]. This is how
/// the proxy renames a client's prepared statement to a server-side name.
///
/// `portal` and `statement` must not contain NUL bytes.
#[inline]
pub fn encode_bind_renamed(portal: &[u8], statement: &[u8], rest: &[u8], out: &mut BytesMut) {
    out.reserve(HEADER_LEN + portal.len() + 1 + statement.len() + 1 + rest.len());
    encode_bind_head(portal, statement, rest.len(), out);
    out.put_slice(rest);
}

/// Appends the start of a `Bind` message for `portal` and `statement`: its
/// header and the two names, the header counting `rest_len` more bytes that
/// the caller sends after it (the rest of a client's `Bind`, passed through as
/// it arrives). Nothing is reserved for those bytes.
///
/// `portal` and `statement` must not contain NUL bytes.
#[inline]
pub fn encode_bind_head(portal: &[u8], statement: &[u8], rest_len: usize, out: &mut BytesMut) {
    let body_len = portal.len() + 1 + statement.len() + 1 + rest_len;
    out.put_u8(tags::BIND);
    out.put_i32(wire_len(body_len.saturating_add(4)));
    put_cstr(out, portal);
    put_cstr(out, statement);
}

/// The portal and statement names at the start of a `Bind` body, and the
/// offset in `body` where the rest starts, once both names have arrived; `None`
/// while either is incomplete. For a `Bind` too large to hold whole: its names
/// come first, so it can be renamed while the rest streams.
pub fn bind_names(body: &[u8]) -> Option<(&[u8], &[u8], usize)> {
    let portal_end = memchr0(body)?;
    let statement_start = portal_end + 1;
    let statement_end = statement_start + memchr0(body.get(statement_start..)?)?;
    Some((
        body.get(..portal_end)?,
        body.get(statement_start..statement_end)?,
        statement_end + 1,
    ))
}

fn memchr0(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == 0)
}

#[inline]
fn encode_target_name(tag: u8, target: Target, name: &[u8], out: &mut BytesMut) {
    put_header(out, tag, 1 + name.len() + 1);
    out.put_u8(target.to_byte());
    put_cstr(out, name);
}

/// Appends a `Describe` message. `name` must not contain NUL bytes.
#[inline]
pub fn encode_describe(target: Target, name: &[u8], out: &mut BytesMut) {
    encode_target_name(tags::DESCRIBE, target, name, out);
}

/// Appends a `Close` message. `name` must not contain NUL bytes.
#[inline]
pub fn encode_close(target: Target, name: &[u8], out: &mut BytesMut) {
    encode_target_name(tags::CLOSE, target, name, out);
}

/// Appends an `Execute` message. `portal` must not contain NUL bytes.
#[inline]
pub fn encode_execute(portal: &[u8], max_rows: i32, out: &mut BytesMut) {
    put_header(out, tags::EXECUTE, portal.len() + 1 + 4);
    put_cstr(out, portal);
    out.put_i32(max_rows);
}

/// Appends a `Sync` message.
#[inline]
pub fn encode_sync(out: &mut BytesMut) {
    put_header(out, tags::SYNC, 0);
}

/// Appends a `Flush` message.
#[inline]
pub fn encode_flush(out: &mut BytesMut) {
    put_header(out, tags::FLUSH, 0);
}

/// Appends a `Query` message. `sql` must not contain NUL bytes.
#[inline]
pub fn encode_query(sql: &[u8], out: &mut BytesMut) {
    put_header(out, tags::QUERY, sql.len() + 1);
    put_cstr(out, sql);
}

/// Appends a `Terminate` message.
#[inline]
pub fn encode_terminate(out: &mut BytesMut) {
    put_header(out, tags::TERMINATE, 0);
}

/// Appends a protocol 3.0 `StartupMessage` with the given parameters, for
/// the proxy's own connections to servers. Keys and values must not contain
/// NUL bytes, and keys must not be empty.
pub fn encode_startup(params: &[(&str, &str)], out: &mut BytesMut) {
    let params_len: usize = params.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let len = 4 + 4 + params_len + 1;
    out.reserve(len);
    out.put_i32(wire_len(len));
    out.put_u32(PROTOCOL_VERSION_3_0);
    for (key, value) in params {
        put_cstr(out, key.as_bytes());
        put_cstr(out, value.as_bytes());
    }
    out.put_u8(0);
}

/// Appends an `SSLRequest`.
pub fn encode_ssl_request(out: &mut BytesMut) {
    out.reserve(8);
    out.put_i32(8);
    out.put_u32(SSL_REQUEST_CODE);
}

/// Appends a `CancelRequest`, to forward a client's cancellation to a server.
pub fn encode_cancel_request(process_id: i32, secret_key: i32, out: &mut BytesMut) {
    out.reserve(16);
    out.put_i32(16);
    out.put_u32(CANCEL_REQUEST_CODE);
    out.put_i32(process_id);
    out.put_i32(secret_key);
}

/// Appends a `PasswordMessage` (cleartext or `md5…` hash). `password` must
/// not contain NUL bytes.
pub fn encode_password(password: &[u8], out: &mut BytesMut) {
    put_header(out, tags::PASSWORD, password.len() + 1);
    put_cstr(out, password);
}

/// Appends a `SASLInitialResponse`. `mechanism` must not contain NUL bytes.
pub fn encode_sasl_initial_response(mechanism: &str, data: &[u8], out: &mut BytesMut) {
    put_header(out, tags::PASSWORD, mechanism.len() + 1 + 4 + data.len());
    put_cstr(out, mechanism.as_bytes());
    out.put_i32(wire_len(data.len()));
    out.put_slice(data);
}

/// Appends a `SASLResponse`.
pub fn encode_sasl_response(data: &[u8], out: &mut BytesMut) {
    put_header(out, tags::PASSWORD, data.len());
    out.put_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::split_frame;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        let mut raw = vec![tag];
        raw.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        raw.extend_from_slice(body);
        Frame::new(Bytes::from(raw)).unwrap()
    }

    fn decode(tag: u8, body: &[u8]) -> Result<FrontendMessage, ProtocolError> {
        FrontendMessage::decode(&frame(tag, body))
    }

    fn malformed(message: &'static str, reason: &'static str) -> ProtocolError {
        ProtocolError::Malformed { message, reason }
    }

    fn startup_bytes(code: u32, rest: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(8 + rest.len() as i32);
        b.put_u32(code);
        b.put_slice(rest);
        b
    }

    #[test]
    fn startup_message() {
        let mut buf = BytesMut::new();
        encode_startup(&[("user", "alice"), ("database", "db"), ("x", "")], &mut buf);
        buf.put_slice(b"Qtrailing");
        let packet = decode_startup(&mut buf).unwrap().unwrap();
        assert_eq!(packet.param("user"), Some("alice"));
        assert_eq!(packet.param("x"), Some(""));
        assert_eq!(packet.param("nope"), None);
        assert_eq!(
            packet,
            StartupPacket::Startup {
                protocol: PROTOCOL_VERSION_3_0,
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "db".into()),
                    ("x".into(), "".into())
                ]
            }
        );
        assert_eq!(&buf[..], b"Qtrailing");
    }

    #[test]
    fn startup_incremental() {
        let mut full = BytesMut::new();
        encode_startup(&[("user", "u")], &mut full);
        for n in 0..full.len() {
            let mut partial = BytesMut::from(&full[..n]);
            assert_eq!(decode_startup(&mut partial), Ok(None));
            assert_eq!(&partial[..], &full[..n]);
        }
    }

    #[test]
    fn startup_special_requests() {
        let mut b = BytesMut::new();
        encode_ssl_request(&mut b);
        b.put_slice(&startup_bytes(GSSENC_REQUEST_CODE, b""));
        encode_cancel_request(7, -9, &mut b);
        assert_eq!(decode_startup(&mut b), Ok(Some(StartupPacket::SslRequest)));
        assert_eq!(decode_startup(&mut b), Ok(Some(StartupPacket::GssEncRequest)));
        assert_eq!(
            decode_startup(&mut b),
            Ok(Some(StartupPacket::Cancel {
                process_id: 7,
                secret_key: -9
            }))
        );
        assert!(b.is_empty());
        assert_eq!(decode_startup(&mut b), Ok(None));
        assert_eq!(StartupPacket::SslRequest.param("user"), None);

        assert_eq!(
            decode_startup(&mut startup_bytes(SSL_REQUEST_CODE, b"x")),
            Err(malformed("SSLRequest", crate::cursor::TRAILING_DATA))
        );
        assert!(decode_startup(&mut startup_bytes(GSSENC_REQUEST_CODE, b"x")).is_err());
        assert_eq!(
            decode_startup(&mut startup_bytes(CANCEL_REQUEST_CODE, &[0; 4])),
            Err(malformed("CancelRequest", crate::cursor::UNEXPECTED_END))
        );
        assert!(decode_startup(&mut startup_bytes(CANCEL_REQUEST_CODE, &[0; 9])).is_err());
    }

    #[test]
    fn startup_versions() {
        assert_eq!(
            decode_startup(&mut startup_bytes(2 << 16, b"\0")),
            Err(ProtocolError::UnsupportedProtocol { major: 2, minor: 0 })
        );
        assert_eq!(
            decode_startup(&mut startup_bytes((1234 << 16) | 5681, b"")),
            Err(ProtocolError::UnsupportedProtocol {
                major: 1234,
                minor: 5681
            })
        );
        assert_eq!(
            decode_startup(&mut startup_bytes((3 << 16) | 2, b"user\0u\0\0")),
            Ok(Some(StartupPacket::Startup {
                protocol: (3 << 16) | 2,
                params: vec![("user".into(), "u".into())]
            }))
        );
    }

    #[test]
    fn startup_bad_layouts() {
        let v3 = PROTOCOL_VERSION_3_0;
        for body in [
            &b""[..],
            b"user\0",
            b"user\0u\0",
            b"user\0u",
            b"user\0u\0\0x",
            b"user\0\xff\0\0",
            b"\xff\0u\0\0",
        ] {
            let err = decode_startup(&mut startup_bytes(v3, body)).unwrap_err();
            assert!(
                matches!(
                    err,
                    ProtocolError::Malformed {
                        message: "StartupMessage",
                        ..
                    }
                ),
                "{body:?}: {err:?}"
            );
        }
        // Empty parameter list is valid at this layer.
        assert_eq!(
            decode_startup(&mut startup_bytes(v3, b"\0")),
            Ok(Some(StartupPacket::Startup {
                protocol: v3,
                params: vec![]
            }))
        );
    }

    #[test]
    fn startup_lengths() {
        for len in [i32::MIN, -1, 0, 4, 7] {
            let mut b = BytesMut::new();
            b.put_i32(len);
            assert_eq!(
                decode_startup(&mut b),
                Err(ProtocolError::InvalidLength { len: len.into() })
            );
        }
        let mut b = BytesMut::new();
        b.put_i32(10_001);
        assert_eq!(
            decode_startup(&mut b),
            Err(ProtocolError::TooLarge {
                len: 10_001,
                max: MAX_STARTUP_PACKET_LEN
            })
        );
        let mut b = startup_bytes(PROTOCOL_VERSION_3_0, &[b'a'; 10_000 - 9]);
        b.extend_from_slice(b"\0");
        assert_eq!(b.len(), 10_000);
        assert!(decode_startup(&mut b).is_err_and(|e| matches!(e, ProtocolError::Malformed { .. })));
    }

    #[test]
    fn decodes_each_message() {
        let mut out = BytesMut::new();
        encode_query(b"SELECT 1", &mut out);
        encode_parse(b"s1", b"SELECT $1", &[23, 0], &mut out);
        encode_bind_renamed(
            b"p",
            b"s1",
            b"\0\x01\0\x01\0\x02\0\0\0\x01x\xff\xff\xff\xff\0\0",
            &mut out,
        );
        encode_describe(Target::Statement, b"s1", &mut out);
        encode_execute(b"p", 10, &mut out);
        encode_close(Target::Portal, b"p", &mut out);
        encode_sync(&mut out);
        encode_flush(&mut out);
        encode_terminate(&mut out);
        encode_password(b"secret", &mut out);
        encode_sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc", &mut out);
        encode_sasl_response(b"c=biws", &mut out);
        let mut got = Vec::new();
        while let Some(f) = split_frame(&mut out, 1 << 20).unwrap() {
            let m = FrontendMessage::decode(&f).unwrap();
            assert_eq!(m.tag(), f.tag());
            got.push(m);
        }
        assert!(out.is_empty());
        let b = Bytes::from_static;
        assert_eq!(got[0], FrontendMessage::Query { sql: b(b"SELECT 1") });
        assert_eq!(
            got[1],
            FrontendMessage::Parse {
                name: b(b"s1"),
                query: b(b"SELECT $1"),
                param_types: vec![23, 0]
            }
        );
        assert_eq!(
            got[2],
            FrontendMessage::Bind {
                portal: b(b"p"),
                statement: b(b"s1"),
                rest: b(b"\0\x01\0\x01\0\x02\0\0\0\x01x\xff\xff\xff\xff\0\0")
            }
        );
        assert_eq!(
            got[3],
            FrontendMessage::Describe {
                target: Target::Statement,
                name: b(b"s1")
            }
        );
        assert_eq!(
            got[4],
            FrontendMessage::Execute {
                portal: b(b"p"),
                max_rows: 10
            }
        );
        assert_eq!(
            got[5],
            FrontendMessage::Close {
                target: Target::Portal,
                name: b(b"p")
            }
        );
        assert_eq!(got[6], FrontendMessage::Sync);
        assert_eq!(got[7], FrontendMessage::Flush);
        assert_eq!(got[8], FrontendMessage::Terminate);
        let FrontendMessage::Password(pw) = &got[9] else {
            panic!("{:?}", got[9])
        };
        assert_eq!(decode_password(pw).unwrap(), b(b"secret"));
        let FrontendMessage::Password(sasl) = &got[10] else {
            panic!("{:?}", got[10])
        };
        assert_eq!(
            decode_sasl_initial_response(sasl).unwrap(),
            ("SCRAM-SHA-256".to_owned(), b(b"n,,n=,r=abc"))
        );
        assert_eq!(got[11], FrontendMessage::Password(b(b"c=biws")));
        assert_eq!(format!("{:?}", got[9]), "Password(<redacted>)");
    }

    #[test]
    fn copy_and_function_call() {
        assert_eq!(
            decode(b'd', b"1\t2\n"),
            Ok(FrontendMessage::CopyData(Bytes::from_static(b"1\t2\n")))
        );
        assert_eq!(decode(b'c', b""), Ok(FrontendMessage::CopyDone));
        assert_eq!(
            decode(b'f', b"oops\0"),
            Ok(FrontendMessage::CopyFail {
                message: Bytes::from_static(b"oops")
            })
        );
        assert_eq!(
            decode(b'F', b"\0\0\0\x01"),
            Ok(FrontendMessage::FunctionCall(Bytes::from_static(b"\0\0\0\x01")))
        );
        assert_eq!(decode(b'X', b"ignored"), Ok(FrontendMessage::Terminate));
    }

    #[test]
    fn decoded_fields_share_the_frame_buffer() {
        let f = frame(b'Q', b"SELECT 1\0");
        let FrontendMessage::Query { sql } = FrontendMessage::decode(&f).unwrap() else {
            unreachable!()
        };
        assert_eq!(sql.as_ptr(), f.raw().as_ptr().wrapping_add(HEADER_LEN));
    }

    #[test]
    fn rejects_malformed_bodies() {
        use crate::cursor::{MISSING_NUL, TRAILING_DATA, UNEXPECTED_END};
        assert_eq!(decode(b'Q', b"SELECT 1"), Err(malformed("Query", MISSING_NUL)));
        assert_eq!(
            decode(b'Q', b"SEL\0ECT\0"),
            Err(malformed("Query", TRAILING_DATA))
        );
        assert_eq!(decode(b'Q', b""), Err(malformed("Query", MISSING_NUL)));
        assert_eq!(decode(b'P', b"s\0q\0"), Err(malformed("Parse", UNEXPECTED_END)));
        assert!(decode(b'P', b"s\0q\0\0\x02\0\0\0\x17").is_err());
        assert!(decode(b'P', b"s\0q\0\xff\xff").is_err());
        assert!(decode(b'P', b"s\0q\0\0\0x").is_err());
        assert_eq!(decode(b'B', b"p\0s\0"), Err(malformed("Bind", UNEXPECTED_END)));
        assert_eq!(
            decode(b'B', b"p\0s\0\0\0\0\x01\xff\xff\xff\xfe\0\0"),
            Err(malformed("Bind", "invalid parameter length"))
        );
        assert!(decode(b'B', b"p\0s\0\0\0\0\x01\0\0\0\x05abc\0\0").is_err());
        assert!(decode(b'B', b"p\0s\0\0\x01\0\0\0\0\0").is_err());
        assert!(decode(b'B', b"p\0s\0\0\0\0\0\0\0\0").is_err());
        assert_eq!(
            decode(b'D', b"Xname\0"),
            Err(malformed("Describe", "invalid target type"))
        );
        assert!(decode(b'D', b"S").is_err());
        assert!(decode(b'D', b"Sname\0x").is_err());
        assert!(decode(b'C', b"").is_err());
        assert!(decode(b'E', b"p\0\0\0\0").is_err());
        assert!(decode(b'E', b"p\0\0\0\0\0\0").is_err());
        assert_eq!(decode(b'S', b"x"), Err(malformed("Sync", TRAILING_DATA)));
        assert!(decode(b'H', b"x").is_err());
        assert!(decode(b'c', b"x").is_err());
        assert!(decode(b'f', b"oops").is_err());
        assert_eq!(decode(b'Z', b""), Err(ProtocolError::UnknownMessage { tag: 'Z' }));
        assert_eq!(FrontendMessage::tag_name(b'Z'), "unknown");
    }

    #[test]
    fn bind_names_then_head_renames_a_bind_in_pieces() {
        let rest = b"\0\0\0\x01\0\0\0\x03abc\0\0";
        let mut original = BytesMut::new();
        encode_bind_renamed(b"p1", b"client_stmt", rest, &mut original);
        let body = &original[HEADER_LEN..];
        for cut in 0..b"p1\0client_stmt".len() + 1 {
            assert_eq!(bind_names(&body[..cut]), None, "{cut}");
        }
        let (portal, statement, at) = bind_names(body).unwrap();
        assert_eq!((portal, statement), (&b"p1"[..], &b"client_stmt"[..]));
        assert_eq!(&body[at..], rest);
        let mut out = BytesMut::new();
        encode_bind_head(portal, b"sy_7", body.len() - at, &mut out);
        out.extend_from_slice(&body[at..]);
        let f = split_frame(&mut out, 1024).unwrap().unwrap();
        let FrontendMessage::Bind {
            portal, statement, ..
        } = FrontendMessage::decode(&f).unwrap()
        else {
            unreachable!()
        };
        assert_eq!((&portal[..], &statement[..]), (&b"p1"[..], &b"sy_7"[..]));
        assert!(out.is_empty());
    }

    #[test]
    fn bind_rest_roundtrips_through_rename() {
        let rest = b"\0\x02\0\x01\0\0\0\x02\0\0\0\x02ab\xff\xff\xff\xff\0\x01\0\x01";
        let mut out = BytesMut::new();
        encode_bind_renamed(b"", b"client_stmt", rest, &mut out);
        let f = split_frame(&mut out, 1024).unwrap().unwrap();
        let FrontendMessage::Bind { portal, rest, .. } = FrontendMessage::decode(&f).unwrap() else {
            unreachable!()
        };
        encode_bind_renamed(&portal, b"sy_42", &rest, &mut out);
        let f = split_frame(&mut out, 1024).unwrap().unwrap();
        assert_eq!(
            FrontendMessage::decode(&f).unwrap(),
            FrontendMessage::Bind {
                portal: Bytes::new(),
                statement: Bytes::from_static(b"sy_42"),
                rest
            }
        );
    }

    #[test]
    fn sasl_and_password_bodies() {
        assert_eq!(
            decode_sasl_initial_response(b"SCRAM-SHA-256\0\xff\xff\xff\xff"),
            Ok(("SCRAM-SHA-256".to_owned(), Bytes::new()))
        );
        assert!(decode_sasl_initial_response(b"M\0\0\0\0\x05abc").is_err());
        assert!(decode_sasl_initial_response(b"M\0\0\0\0\x01ab").is_err());
        assert!(decode_sasl_initial_response(b"M\0\xff\xff\xff\xfe").is_err());
        assert!(decode_sasl_initial_response(b"\xff\0\0\0\0\0").is_err());
        assert!(decode_sasl_initial_response(b"M").is_err());
        assert_eq!(decode_password(b"\0"), Ok(Bytes::new()));
        assert!(decode_password(b"pw").is_err());
        assert!(decode_password(b"pw\0x").is_err());
    }

    #[test]
    fn encoders_produce_expected_bytes() {
        let mut out = BytesMut::new();
        encode_sync(&mut out);
        encode_flush(&mut out);
        encode_terminate(&mut out);
        assert_eq!(&out[..], b"S\0\0\0\x04H\0\0\0\x04X\0\0\0\x04");
        out.clear();
        encode_describe(Target::Portal, b"", &mut out);
        assert_eq!(&out[..], b"D\0\0\0\x06P\0");
        out.clear();
        encode_parse(b"", b"q", &[], &mut out);
        assert_eq!(&out[..], b"P\0\0\0\x09\0q\0\0\0");
        out.clear();
        encode_parse(b"", b"", &vec![1; 70_000], &mut out);
        let f = split_frame(&mut out, 1 << 20).unwrap().unwrap();
        let FrontendMessage::Parse { param_types, .. } = FrontendMessage::decode(&f).unwrap() else {
            unreachable!()
        };
        assert_eq!(param_types.len(), 65_535);
    }

    #[test]
    fn target_bytes() {
        for t in [Target::Statement, Target::Portal] {
            assert_eq!(Target::from_byte(t.to_byte()), Some(t));
        }
        assert_eq!(Target::from_byte(b'x'), None);
    }

    #[test]
    fn debug_hides_bulk_data() {
        let m = FrontendMessage::CopyData(Bytes::from_static(b"secret row"));
        assert_eq!(format!("{m:?}"), "CopyData(10)");
    }
}
