//! Messages sent by servers: encoders for what the proxy itself says to
//! clients, and decoders for the few server messages it must understand.
//!
//! The proxy acts as a server towards clients during authentication, for its
//! own errors and for session-state replay, so it needs encoders for those
//! messages. Towards real servers it is mostly a byte pipe (see
//! [`crate::frame::frames`]), but it must interpret a handful of messages to
//! track connection state: `ReadyForQuery` (transaction status, which decides
//! when a server connection can return to the pool), `ParameterStatus`,
//! `BackendKeyData`, `ErrorResponse`, `CommandComplete` and the
//! authentication requests. Those parsers take a frame body and borrow or copy
//! only what they return.
//!
//! Encoders append to a caller-provided [`BytesMut`], reserving once per
//! message. Strings given to them are cut at the first NUL byte (a NUL cannot
//! be represented in the protocol and would corrupt the stream's framing).

use std::fmt;

use bytes::{BufMut, BytesMut};

use crate::cursor::{put_cstr, put_header, until_nul, wire_count, wire_len, Cursor};
use crate::ProtocolError;

/// Type bytes of the tagged messages a server can send.
pub mod tags {
    /// `Authentication*` (the subtype is the first `i32` of the body).
    pub const AUTHENTICATION: u8 = b'R';
    /// `BackendKeyData`.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// `BindComplete`.
    pub const BIND_COMPLETE: u8 = b'2';
    /// `CloseComplete`.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// `CommandComplete`.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// `CopyData`.
    pub const COPY_DATA: u8 = b'd';
    /// `CopyDone`.
    pub const COPY_DONE: u8 = b'c';
    /// `CopyInResponse`.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// `CopyOutResponse`.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// `CopyBothResponse` (replication only).
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// `DataRow`.
    pub const DATA_ROW: u8 = b'D';
    /// `EmptyQueryResponse`.
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    /// `ErrorResponse`.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// `FunctionCallResponse`.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    /// `NegotiateProtocolVersion`.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    /// `NoData`.
    pub const NO_DATA: u8 = b'n';
    /// `NoticeResponse`.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// `NotificationResponse`.
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    /// `ParameterDescription`.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// `ParameterStatus`.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// `ParseComplete`.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// `PortalSuspended`.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// `ReadyForQuery`.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// `RowDescription`.
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// Human-readable name of a server message type byte, for logs; `"unknown"`
/// for bytes servers do not send.
pub fn tag_name(tag: u8) -> &'static str {
    match tag {
        tags::AUTHENTICATION => "Authentication",
        tags::BACKEND_KEY_DATA => "BackendKeyData",
        tags::BIND_COMPLETE => "BindComplete",
        tags::CLOSE_COMPLETE => "CloseComplete",
        tags::COMMAND_COMPLETE => "CommandComplete",
        tags::COPY_DATA => "CopyData",
        tags::COPY_DONE => "CopyDone",
        tags::COPY_IN_RESPONSE => "CopyInResponse",
        tags::COPY_OUT_RESPONSE => "CopyOutResponse",
        tags::COPY_BOTH_RESPONSE => "CopyBothResponse",
        tags::DATA_ROW => "DataRow",
        tags::EMPTY_QUERY_RESPONSE => "EmptyQueryResponse",
        tags::ERROR_RESPONSE => "ErrorResponse",
        tags::FUNCTION_CALL_RESPONSE => "FunctionCallResponse",
        tags::NEGOTIATE_PROTOCOL_VERSION => "NegotiateProtocolVersion",
        tags::NO_DATA => "NoData",
        tags::NOTICE_RESPONSE => "NoticeResponse",
        tags::NOTIFICATION_RESPONSE => "NotificationResponse",
        tags::PARAMETER_DESCRIPTION => "ParameterDescription",
        tags::PARAMETER_STATUS => "ParameterStatus",
        tags::PARSE_COMPLETE => "ParseComplete",
        tags::PORTAL_SUSPENDED => "PortalSuspended",
        tags::READY_FOR_QUERY => "ReadyForQuery",
        tags::ROW_DESCRIPTION => "RowDescription",
        _ => "unknown",
    }
}

/// `AuthenticationOk` subtype code.
pub const AUTH_OK: i32 = 0;
/// `AuthenticationCleartextPassword` subtype code.
pub const AUTH_CLEARTEXT_PASSWORD: i32 = 3;
/// `AuthenticationMD5Password` subtype code.
pub const AUTH_MD5_PASSWORD: i32 = 5;
/// `AuthenticationSASL` subtype code.
pub const AUTH_SASL: i32 = 10;
/// `AuthenticationSASLContinue` subtype code.
pub const AUTH_SASL_CONTINUE: i32 = 11;
/// `AuthenticationSASLFinal` subtype code.
pub const AUTH_SASL_FINAL: i32 = 12;

/// Transaction status reported by `ReadyForQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block (queries rejected until it ends).
    Failed,
}

impl TransactionStatus {
    /// Parses the wire byte (`I`, `T` or `E`).
    #[inline]
    pub fn from_byte(b: u8) -> Option<TransactionStatus> {
        match b {
            b'I' => Some(TransactionStatus::Idle),
            b'T' => Some(TransactionStatus::InTransaction),
            b'E' => Some(TransactionStatus::Failed),
            _ => None,
        }
    }

    /// The wire byte (`I`, `T` or `E`).
    #[inline]
    pub fn to_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// Severity of an `ErrorResponse` or `NoticeResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `ERROR`.
    Error,
    /// `FATAL`: the server closes the connection after sending it.
    Fatal,
    /// `PANIC`.
    Panic,
    /// `WARNING`.
    Warning,
    /// `NOTICE`.
    Notice,
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `LOG`.
    Log,
}

impl Severity {
    /// The non-localized name used on the wire, e.g. `"ERROR"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Panic => "PANIC",
            Severity::Warning => "WARNING",
            Severity::Notice => "NOTICE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Log => "LOG",
        }
    }

    /// Parses a non-localized severity name.
    pub fn from_name(name: &[u8]) -> Option<Severity> {
        Some(match name {
            b"ERROR" => Severity::Error,
            b"FATAL" => Severity::Fatal,
            b"PANIC" => Severity::Panic,
            b"WARNING" => Severity::Warning,
            b"NOTICE" => Severity::Notice,
            b"DEBUG" => Severity::Debug,
            b"INFO" => Severity::Info,
            b"LOG" => Severity::Log,
            _ => return None,
        })
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields of an `ErrorResponse` or `NoticeResponse` that the proxy
/// produces or inspects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    /// Severity.
    pub severity: Severity,
    /// SQLSTATE code, e.g. `"08P01"`.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Optional detail message.
    pub detail: Option<String>,
    /// Optional hint.
    pub hint: Option<String>,
}

impl ErrorFields {
    /// Fields with the given severity, SQLSTATE and message.
    pub fn new(severity: Severity, code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorFields {
            severity,
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// An `ERROR` (the session continues).
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    /// A `FATAL` error (the connection is closed after it is sent).
    pub fn fatal(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Fatal, code, message)
    }

    /// Sets the detail message.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets the hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.severity, self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, " DETAIL: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " HINT: {hint}")?;
        }
        Ok(())
    }
}

impl From<&ProtocolError> for ErrorFields {
    /// The `FATAL` error to send to a client before closing its connection
    /// because of `e`.
    fn from(e: &ProtocolError) -> Self {
        ErrorFields::fatal(e.sqlstate(), e.to_string())
    }
}

fn put_error_fields(tag: u8, e: &ErrorFields, out: &mut BytesMut) {
    let severity = e.severity.as_str().as_bytes();
    let fields: [(u8, Option<&[u8]>); 6] = [
        (b'S', Some(severity)),
        (b'V', Some(severity)),
        (b'C', Some(until_nul(e.code.as_bytes()))),
        (b'M', Some(until_nul(e.message.as_bytes()))),
        (b'D', e.detail.as_deref().map(|s| until_nul(s.as_bytes()))),
        (b'H', e.hint.as_deref().map(|s| until_nul(s.as_bytes()))),
    ];
    let body_len = fields
        .iter()
        .filter_map(|(_, value)| value.map(|v| v.len() + 2))
        .sum::<usize>()
        + 1;
    put_header(out, tag, body_len);
    for (code, value) in fields {
        if let Some(value) = value {
            out.put_u8(code);
            put_cstr(out, value);
        }
    }
    out.put_u8(0);
}

/// Appends an `ErrorResponse` with fields `S`, `V`, `C`, `M` and, when set,
/// `D` and `H`.
pub fn error_response(e: &ErrorFields, out: &mut BytesMut) {
    put_error_fields(tags::ERROR_RESPONSE, e, out);
}

/// Appends a `NoticeResponse` with the same fields as [`error_response`].
pub fn notice_response(e: &ErrorFields, out: &mut BytesMut) {
    put_error_fields(tags::NOTICE_RESPONSE, e, out);
}

fn put_auth(code: i32, data: &[u8], out: &mut BytesMut) {
    put_header(out, tags::AUTHENTICATION, 4 + data.len());
    out.put_i32(code);
    out.put_slice(data);
}

/// Appends `AuthenticationOk`.
pub fn auth_ok(out: &mut BytesMut) {
    put_auth(AUTH_OK, &[], out);
}

/// Appends `AuthenticationCleartextPassword`.
pub fn auth_cleartext_password(out: &mut BytesMut) {
    put_auth(AUTH_CLEARTEXT_PASSWORD, &[], out);
}

/// Appends `AuthenticationMD5Password` with the given salt.
pub fn auth_md5_password(salt: [u8; 4], out: &mut BytesMut) {
    put_auth(AUTH_MD5_PASSWORD, &salt, out);
}

/// Appends `AuthenticationSASL` offering `mechanisms` (e.g.
/// `["SCRAM-SHA-256"]`).
pub fn auth_sasl(mechanisms: &[&str], out: &mut BytesMut) {
    let body_len = 4
        + mechanisms
            .iter()
            .map(|m| until_nul(m.as_bytes()).len() + 1)
            .sum::<usize>()
        + 1;
    put_header(out, tags::AUTHENTICATION, body_len);
    out.put_i32(AUTH_SASL);
    for m in mechanisms {
        put_cstr(out, until_nul(m.as_bytes()));
    }
    out.put_u8(0);
}

/// Appends `AuthenticationSASLContinue` carrying server challenge `data`.
pub fn auth_sasl_continue(data: &[u8], out: &mut BytesMut) {
    put_auth(AUTH_SASL_CONTINUE, data, out);
}

/// Appends `AuthenticationSASLFinal` carrying the server's final `data`.
pub fn auth_sasl_final(data: &[u8], out: &mut BytesMut) {
    put_auth(AUTH_SASL_FINAL, data, out);
}

/// Appends `ParameterStatus`.
pub fn parameter_status(name: &str, value: &str, out: &mut BytesMut) {
    let name = until_nul(name.as_bytes());
    let value = until_nul(value.as_bytes());
    put_header(out, tags::PARAMETER_STATUS, name.len() + value.len() + 2);
    put_cstr(out, name);
    put_cstr(out, value);
}

/// Appends `BackendKeyData`.
pub fn backend_key_data(process_id: i32, secret_key: i32, out: &mut BytesMut) {
    put_header(out, tags::BACKEND_KEY_DATA, 8);
    out.put_i32(process_id);
    out.put_i32(secret_key);
}

/// Appends `ReadyForQuery`.
#[inline]
pub fn ready_for_query(status: TransactionStatus, out: &mut BytesMut) {
    put_header(out, tags::READY_FOR_QUERY, 1);
    out.put_u8(status.to_byte());
}

/// Appends `NegotiateProtocolVersion`: the newest minor version supported for
/// the requested major version, and the protocol options (`_pq_.*`) that were
/// not recognized.
pub fn negotiate_protocol_version(newest_minor: i32, unrecognized: &[&str], out: &mut BytesMut) {
    let body_len = 8 + unrecognized
        .iter()
        .map(|o| until_nul(o.as_bytes()).len() + 1)
        .sum::<usize>();
    put_header(out, tags::NEGOTIATE_PROTOCOL_VERSION, body_len);
    out.put_i32(newest_minor);
    out.put_i32(wire_len(unrecognized.len()));
    for o in unrecognized {
        put_cstr(out, until_nul(o.as_bytes()));
    }
}

/// Appends a `RowDescription` of text-format columns with the given names and
/// type OIDs (table OID 0, attribute number 0, type size -1, modifier -1).
/// At most 65535 columns can be expressed; extra ones are dropped.
pub fn row_description(columns: &[(&str, u32)], out: &mut BytesMut) {
    let count = wire_count(columns.len());
    let columns = columns.get(..usize::from(count)).unwrap_or(columns);
    let body_len = 2 + columns
        .iter()
        .map(|(name, _)| until_nul(name.as_bytes()).len() + 1 + 18)
        .sum::<usize>();
    put_header(out, tags::ROW_DESCRIPTION, body_len);
    out.put_u16(count);
    for &(name, type_oid) in columns {
        put_cstr(out, until_nul(name.as_bytes()));
        out.put_u32(0); // table OID
        out.put_i16(0); // attribute number
        out.put_u32(type_oid);
        out.put_i16(-1); // type size
        out.put_i32(-1); // type modifier
        out.put_i16(0); // format: text
    }
}

/// Appends a `DataRow`; `None` is SQL NULL. At most 65535 values can be
/// expressed; extra ones are dropped.
#[inline]
pub fn data_row(values: &[Option<&[u8]>], out: &mut BytesMut) {
    let count = wire_count(values.len());
    let values = values.get(..usize::from(count)).unwrap_or(values);
    let body_len = 2 + values.iter().map(|v| 4 + v.map_or(0, <[u8]>::len)).sum::<usize>();
    put_header(out, tags::DATA_ROW, body_len);
    out.put_u16(count);
    for value in values {
        match value {
            Some(v) => {
                out.put_i32(wire_len(v.len()));
                out.put_slice(v);
            }
            None => out.put_i32(-1),
        }
    }
}

/// Appends `CommandComplete` with the given command tag (e.g. `"SELECT 1"`).
#[inline]
pub fn command_complete(tag: &str, out: &mut BytesMut) {
    let tag = until_nul(tag.as_bytes());
    put_header(out, tags::COMMAND_COMPLETE, tag.len() + 1);
    put_cstr(out, tag);
}

/// Appends `EmptyQueryResponse`.
#[inline]
pub fn empty_query_response(out: &mut BytesMut) {
    put_header(out, tags::EMPTY_QUERY_RESPONSE, 0);
}

/// Appends `ParseComplete`.
#[inline]
pub fn parse_complete(out: &mut BytesMut) {
    put_header(out, tags::PARSE_COMPLETE, 0);
}

/// Appends `BindComplete`.
#[inline]
pub fn bind_complete(out: &mut BytesMut) {
    put_header(out, tags::BIND_COMPLETE, 0);
}

/// Appends `CloseComplete`.
#[inline]
pub fn close_complete(out: &mut BytesMut) {
    put_header(out, tags::CLOSE_COMPLETE, 0);
}

/// Appends `NoData`.
#[inline]
pub fn no_data(out: &mut BytesMut) {
    put_header(out, tags::NO_DATA, 0);
}

/// Parses an `ErrorResponse` or `NoticeResponse` body.
///
/// Unknown field types are ignored. The severity comes from the
/// non-localized `V` field when present (PostgreSQL 9.6+), else from `S`; a
/// name that is not recognized (a localized `S` from an old server) is
/// reported as [`Severity::Error`]. Text is decoded as UTF-8 lossily: these
/// fields are diagnostics and a server may use another client encoding.
///
/// # Errors
///
/// [`ProtocolError::Malformed`] if the body is not a terminated list of
/// NUL-terminated fields, or lacks a severity, a SQLSTATE or a message.
pub fn parse_error_fields(body: &[u8]) -> Result<ErrorFields, ProtocolError> {
    let mut c = Cursor::new(body, "ErrorResponse");
    let mut severity_s = None;
    let mut severity_v = None;
    let mut code = None;
    let mut message = None;
    let mut detail = None;
    let mut hint = None;
    loop {
        let field = c.u8()?;
        if field == 0 {
            break;
        }
        let value = c.cstr()?;
        match field {
            b'S' => severity_s = Some(value),
            b'V' => severity_v = Some(value),
            b'C' => code = Some(value),
            b'M' => message = Some(value),
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            _ => {}
        }
    }
    c.finish()?;
    let severity = match severity_v.or(severity_s) {
        Some(name) => Severity::from_name(name)
            .or_else(|| severity_s.and_then(Severity::from_name))
            .unwrap_or(Severity::Error),
        None => return Err(c.error("missing severity field")),
    };
    let lossy = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    Ok(ErrorFields {
        severity,
        code: lossy(code.ok_or(c.error("missing SQLSTATE field"))?),
        message: lossy(message.ok_or(c.error("missing message field"))?),
        detail: detail.map(lossy),
        hint: hint.map(lossy),
    })
}

/// Parses a `ParameterStatus` body into `(name, value)`.
///
/// # Errors
///
/// [`ProtocolError::Malformed`] unless the body is exactly two
/// NUL-terminated UTF-8 strings.
pub fn parse_parameter_status(body: &[u8]) -> Result<(String, String), ProtocolError> {
    let mut c = Cursor::new(body, "ParameterStatus");
    let name = c.str()?;
    let value = c.str()?;
    c.finish()?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Parses a `ReadyForQuery` body.
///
/// # Errors
///
/// [`ProtocolError::Malformed`] unless the body is one valid status byte.
#[inline]
pub fn parse_ready_for_query(body: &[u8]) -> Result<TransactionStatus, ProtocolError> {
    let mut c = Cursor::new(body, "ReadyForQuery");
    let b = c.u8()?;
    c.finish()?;
    TransactionStatus::from_byte(b).ok_or(c.error("invalid transaction status"))
}

/// Parses a `BackendKeyData` body into `(process_id, secret_key)`.
///
/// # Errors
///
/// [`ProtocolError::Malformed`] unless the body is exactly 8 bytes (the
/// protocol 3.0 layout).
pub fn parse_backend_key_data(body: &[u8]) -> Result<(i32, i32), ProtocolError> {
    let mut c = Cursor::new(body, "BackendKeyData");
    let process_id = c.i32()?;
    let secret_key = c.i32()?;
    c.finish()?;
    Ok((process_id, secret_key))
}

/// Parses a `CommandComplete` body into its command tag (e.g. `"INSERT 0 1"`),
/// borrowed from `body`.
///
/// # Errors
///
/// [`ProtocolError::Malformed`] unless the body is exactly one
/// NUL-terminated UTF-8 string.
#[inline]
pub fn parse_command_complete(body: &[u8]) -> Result<&str, ProtocolError> {
    let mut c = Cursor::new(body, "CommandComplete");
    let tag = c.str()?;
    c.finish()?;
    Ok(tag)
}

/// Parses a `DataRow` body into its values, borrowed from `body` (`None` is SQL
/// NULL). For the proxy's own queries; client traffic is forwarded undecoded.
///
/// The column count is checked against the body before anything is allocated
/// (each value takes at least its 4-byte length), so a hostile count costs
/// nothing.
///
/// # Errors
///
/// [`ProtocolError::Malformed`] for a negative count or length other than -1,
/// a count or length the body does not hold, or trailing bytes.
pub fn parse_data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let mut c = Cursor::new(body, "DataRow");
    let count =
        usize::try_from(i16::from_be_bytes(c.array()?)).map_err(|_| c.error("negative column count"))?;
    if count > c.remaining() / 4 {
        return Err(c.error("column count does not match the message length"));
    }
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let len = c.i32()?;
        values.push(if len == -1 {
            None
        } else {
            let len = usize::try_from(len).map_err(|_| c.error("invalid value length"))?;
            Some(c.bytes(len)?)
        });
    }
    c.finish()?;
    Ok(values)
}

/// A decoded authentication request (`R` message) from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    /// `AuthenticationOk`.
    Ok,
    /// `AuthenticationCleartextPassword`.
    CleartextPassword,
    /// `AuthenticationMD5Password`.
    Md5Password {
        /// Salt to hash the password with.
        salt: [u8; 4],
    },
    /// `AuthenticationSASL`.
    Sasl {
        /// Offered mechanisms, in the server's order of preference.
        mechanisms: Vec<&'a str>,
    },
    /// `AuthenticationSASLContinue` with the server's challenge.
    SaslContinue(&'a [u8]),
    /// `AuthenticationSASLFinal` with the server's final message.
    SaslFinal(&'a [u8]),
    /// A method the proxy does not implement (Kerberos, GSSAPI, SSPI, ...),
    /// with its subtype code.
    Unsupported(i32),
}

/// Parses an `Authentication*` body.
///
/// # Errors
///
/// [`ProtocolError::Malformed`] if the body does not match its subtype's
/// layout.
pub fn parse_authentication(body: &[u8]) -> Result<Authentication<'_>, ProtocolError> {
    let mut c = Cursor::new(body, "Authentication");
    let auth = match c.i32()? {
        AUTH_OK => Authentication::Ok,
        AUTH_CLEARTEXT_PASSWORD => Authentication::CleartextPassword,
        AUTH_MD5_PASSWORD => Authentication::Md5Password { salt: c.array()? },
        AUTH_SASL => {
            let mut mechanisms = Vec::new();
            loop {
                let m = c.str()?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            Authentication::Sasl { mechanisms }
        }
        AUTH_SASL_CONTINUE => Authentication::SaslContinue(c.rest()),
        AUTH_SASL_FINAL => Authentication::SaslFinal(c.rest()),
        // Other subtypes may carry data (GSS continue); the caller will not
        // interpret it.
        other => {
            c.rest();
            Authentication::Unsupported(other)
        }
    };
    c.finish()?;
    Ok(auth)
}

/// Parses a `NegotiateProtocolVersion` body into the newest supported minor
/// version and the unrecognized protocol options.
///
/// # Errors
///
/// [`ProtocolError::Malformed`] if the option count does not match the body.
pub fn parse_negotiate_protocol_version(body: &[u8]) -> Result<(i32, Vec<String>), ProtocolError> {
    let mut c = Cursor::new(body, "NegotiateProtocolVersion");
    let newest_minor = c.i32()?;
    let count = c.i32()?;
    let count = usize::try_from(count).map_err(|_| c.error("invalid option count"))?;
    // Each option takes at least its terminator: bound the allocation.
    if count > c.remaining() {
        return Err(c.error("option count does not match the message length"));
    }
    let mut options = Vec::with_capacity(count);
    for _ in 0..count {
        options.push(c.str()?.to_owned());
    }
    c.finish()?;
    Ok((newest_minor, options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::split_frame;
    use crate::Frame;

    fn one(encode: impl FnOnce(&mut BytesMut)) -> Frame {
        let mut out = BytesMut::new();
        encode(&mut out);
        let f = split_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert!(out.is_empty(), "encoder wrote more than one message");
        f
    }

    type Encoder = fn(&mut BytesMut);

    #[test]
    fn fixed_messages() {
        let cases: [(Encoder, &[u8]); 7] = [
            (auth_ok, b"R\0\0\0\x08\0\0\0\0"),
            (auth_cleartext_password, b"R\0\0\0\x08\0\0\0\x03"),
            (empty_query_response, b"I\0\0\0\x04"),
            (parse_complete, b"1\0\0\0\x04"),
            (bind_complete, b"2\0\0\0\x04"),
            (close_complete, b"3\0\0\0\x04"),
            (no_data, b"n\0\0\0\x04"),
        ];
        for (encode, expected) in cases {
            assert_eq!(&one(encode).raw()[..], expected);
        }
        assert_eq!(
            &one(|o| auth_md5_password(*b"salt", o)).raw()[..],
            b"R\0\0\0\x0c\0\0\0\x05salt"
        );
        assert_eq!(
            &one(|o| ready_for_query(TransactionStatus::InTransaction, o)).raw()[..],
            b"Z\0\0\0\x05T"
        );
        assert_eq!(
            &one(|o| backend_key_data(1, -1, o)).raw()[..],
            b"K\0\0\0\x0c\0\0\0\x01\xff\xff\xff\xff"
        );
    }

    #[test]
    fn error_response_roundtrip() {
        let e = ErrorFields::fatal("28P01", "password authentication failed for user \"a\"")
            .with_detail("d")
            .with_hint("h");
        let f = one(|o| error_response(&e, o));
        assert_eq!(f.tag(), tags::ERROR_RESPONSE);
        assert_eq!(parse_error_fields(f.body()), Ok(e.clone()));
        let n = ErrorFields::new(Severity::Warning, "01000", "careful");
        let f = one(|o| notice_response(&n, o));
        assert_eq!(f.tag(), tags::NOTICE_RESPONSE);
        assert_eq!(f.body(), b"SWARNING\0VWARNING\0C01000\0Mcareful\0\0".as_slice());
        assert_eq!(parse_error_fields(f.body()), Ok(n));
        assert_eq!(
            e.to_string(),
            "FATAL: password authentication failed for user \"a\" (28P01) DETAIL: d HINT: h"
        );
    }

    #[test]
    fn encoders_cut_strings_at_nul() {
        let e = ErrorFields::error("XX000", "bad\0tail");
        let f = one(|o| error_response(&e, o));
        assert_eq!(parse_error_fields(f.body()).unwrap().message, "bad");
        let f = one(|o| parameter_status("a\0b", "c\0d", o));
        assert_eq!(
            parse_parameter_status(f.body()),
            Ok(("a".to_owned(), "c".to_owned()))
        );
        let f = one(|o| command_complete("SELECT 1\0junk", o));
        assert_eq!(parse_command_complete(f.body()), Ok("SELECT 1"));
        let f = one(|o| row_description(&[("a\0b", 25)], o));
        assert_eq!(f.body().len(), 2 + 2 + 18);
        let f = one(|o| auth_sasl(&["SCRAM\0x"], o));
        assert_eq!(
            parse_authentication(f.body()),
            Ok(Authentication::Sasl {
                mechanisms: vec!["SCRAM"]
            })
        );
        let f = one(|o| negotiate_protocol_version(0, &["_pq_.a\0b"], o));
        assert_eq!(
            parse_negotiate_protocol_version(f.body()),
            Ok((0, vec!["_pq_.a".to_owned()]))
        );
    }

    #[test]
    fn parse_error_fields_variants() {
        // Localized S only: unknown severity defaults to Error.
        let e = parse_error_fields(b"SFEHLER\0C42P01\0Mweg\0\0").unwrap();
        assert_eq!(e.severity, Severity::Error);
        // V wins over S; unknown fields are ignored.
        let e = parse_error_fields(b"SFATALE\0VFATAL\0C57P01\0Mbye\0Rfile.c\0\0").unwrap();
        assert_eq!(e.severity, Severity::Fatal);
        assert_eq!(e.code, "57P01");
        assert_eq!(e.detail, None);
        // S recognized when V is not.
        let e = parse_error_fields(b"SLOG\0Vweird\0C00000\0Mm\0\0").unwrap();
        assert_eq!(e.severity, Severity::Log);
        // Lossy UTF-8.
        let e = parse_error_fields(b"SERROR\0C22021\0M\xff\0\0").unwrap();
        assert_eq!(e.message, "\u{fffd}");
        for bad in [
            &b""[..],
            b"SERROR\0C0\0M\0",
            b"SERROR\0C0\0M\0\0x",
            b"SERROR",
            b"C0\0M\0\0",
            b"SERROR\0M\0\0",
            b"SERROR\0C0\0\0",
        ] {
            assert!(parse_error_fields(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn simple_parsers() {
        assert_eq!(parse_ready_for_query(b"I"), Ok(TransactionStatus::Idle));
        assert_eq!(parse_ready_for_query(b"E"), Ok(TransactionStatus::Failed));
        assert!(parse_ready_for_query(b"X").is_err());
        assert!(parse_ready_for_query(b"").is_err());
        assert!(parse_ready_for_query(b"II").is_err());
        assert_eq!(parse_backend_key_data(b"\0\0\0\x01\0\0\0\x02"), Ok((1, 2)));
        assert!(parse_backend_key_data(b"\0\0\0\x01\0\0\0").is_err());
        assert!(parse_backend_key_data(&[0; 12]).is_err());
        assert!(parse_parameter_status(b"a\0").is_err());
        assert!(parse_parameter_status(b"a\0b\0c").is_err());
        assert!(parse_parameter_status(b"a\0\xff\0").is_err());
        assert!(parse_command_complete(b"x").is_err());
        assert!(parse_command_complete(b"x\0\0").is_err());
        for s in [
            TransactionStatus::Idle,
            TransactionStatus::InTransaction,
            TransactionStatus::Failed,
        ] {
            assert_eq!(TransactionStatus::from_byte(s.to_byte()), Some(s));
        }
    }

    #[test]
    fn data_row_parsing() {
        let f = one(|o| data_row(&[Some(b"1"), None, Some(b"")], o));
        assert_eq!(
            parse_data_row(f.body()),
            Ok(vec![Some(&b"1"[..]), None, Some(&b""[..])])
        );
        assert_eq!(parse_data_row(b"\0\0"), Ok(vec![]));
        for bad in [
            &b""[..],
            b"\0",
            b"\xff\xff",
            b"\0\0x",
            b"\0\x01\0\0\0\x02a",
            b"\0\x01\xff\xff\xff\xfe",
            // 32767 columns declared in a 2-byte body: refused before reserving room for them.
            b"\x7f\xff",
        ] {
            assert!(parse_data_row(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn authentication_parsing() {
        let cases: Vec<(Frame, Authentication<'static>)> = vec![
            (one(auth_ok), Authentication::Ok),
            (one(auth_cleartext_password), Authentication::CleartextPassword),
            (
                one(|o| auth_md5_password([1, 2, 3, 4], o)),
                Authentication::Md5Password { salt: [1, 2, 3, 4] },
            ),
            (
                one(|o| auth_sasl(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"], o)),
                Authentication::Sasl {
                    mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"],
                },
            ),
            (
                one(|o| auth_sasl_continue(b"r=abc", o)),
                Authentication::SaslContinue(b"r=abc"),
            ),
            (
                one(|o| auth_sasl_final(b"v=xyz", o)),
                Authentication::SaslFinal(b"v=xyz"),
            ),
        ];
        for (frame, expected) in cases {
            assert_eq!(frame.tag(), tags::AUTHENTICATION);
            assert_eq!(parse_authentication(frame.body()), Ok(expected));
        }
        assert_eq!(
            parse_authentication(b"\0\0\0\x08gss"),
            Ok(Authentication::Unsupported(8))
        );
        assert!(parse_authentication(b"\0\0\0\0x").is_err());
        assert!(parse_authentication(b"\0\0\0\x05abc").is_err());
        assert!(parse_authentication(b"\0\0\0\x0aSCRAM\0").is_err());
        assert!(parse_authentication(b"\0\0").is_err());
    }

    #[test]
    fn negotiate_protocol_version_roundtrip() {
        let f = one(|o| negotiate_protocol_version(0, &["_pq_.x", "_pq_.y"], o));
        assert_eq!(f.tag(), tags::NEGOTIATE_PROTOCOL_VERSION);
        assert_eq!(
            parse_negotiate_protocol_version(f.body()),
            Ok((0, vec!["_pq_.x".to_owned(), "_pq_.y".to_owned()]))
        );
        assert!(parse_negotiate_protocol_version(b"\0\0\0\0\x7f\xff\xff\xff").is_err());
        assert!(parse_negotiate_protocol_version(b"\0\0\0\0\xff\xff\xff\xff").is_err());
        assert!(parse_negotiate_protocol_version(b"\0\0\0\0\0\0\0\x01a\0b\0").is_err());
    }

    #[test]
    fn data_row_and_row_description_layout() {
        let f = one(|o| data_row(&[Some(b"1"), None, Some(b"")], o));
        assert_eq!(f.body(), b"\0\x03\0\0\0\x011\xff\xff\xff\xff\0\0\0\0".as_slice());
        let f = one(|o| row_description(&[("n", 23)], o));
        assert_eq!(
            f.body(),
            b"\0\x01n\0\0\0\0\0\0\0\0\0\0\x17\xff\xff\xff\xff\xff\xff\0\0".as_slice()
        );
    }

    #[test]
    fn severity_names_and_tag_names() {
        for s in [
            Severity::Error,
            Severity::Fatal,
            Severity::Panic,
            Severity::Warning,
            Severity::Notice,
            Severity::Debug,
            Severity::Info,
            Severity::Log,
        ] {
            assert_eq!(Severity::from_name(s.as_str().as_bytes()), Some(s));
        }
        assert_eq!(tag_name(b'Z'), "ReadyForQuery");
        assert_eq!(tag_name(b'!'), "unknown");
    }

    #[test]
    fn protocol_error_to_error_fields() {
        let e = ProtocolError::TooLarge { len: 2, max: 1 };
        let fields = ErrorFields::from(&e);
        assert_eq!(fields.severity, Severity::Fatal);
        assert_eq!(fields.code, "54000");
        assert_eq!(fields.message, e.to_string());
    }
}
