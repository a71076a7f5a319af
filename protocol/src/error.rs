//! The single error type of the codec.
//!
//! Every decoding failure in this crate is a [`ProtocolError`]. The variants are
//! deliberately coarse: a proxy cannot recover from a malformed stream, so all a
//! caller needs is (a) a message for its logs, (b) the SQLSTATE to put in the
//! `ErrorResponse` it sends before closing the connection ([`ProtocolError::sqlstate`]).
//! Errors are `Clone + Eq` and carry only `'static` or `Copy` data, so they are
//! cheap to construct on the hot path and easy to assert on in tests.

/// SQLSTATE `08P01` (`protocol_violation`).
pub const SQLSTATE_PROTOCOL_VIOLATION: &str = "08P01";
/// SQLSTATE `54000` (`program_limit_exceeded`).
pub const SQLSTATE_PROGRAM_LIMIT_EXCEEDED: &str = "54000";

/// A violation of the PostgreSQL wire protocol (or of a configured limit)
/// detected while decoding.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The length field of a message is smaller than the smallest legal value
    /// (4 for tagged messages, 8 for startup-phase packets).
    #[error("message length {len} is invalid")]
    InvalidLength {
        /// The length as read from the wire (it may be negative).
        len: i64,
    },
    /// A message declares a size larger than the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared size of the message in bytes.
        len: usize,
        /// The limit that was exceeded.
        max: usize,
    },
    /// A startup packet requests a protocol version other than 3.x.
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol {
        /// Requested major version.
        major: u16,
        /// Requested minor version.
        minor: u16,
    },
    /// A message carries a type byte that is not valid in this direction.
    #[error("unknown message type {tag:?}")]
    UnknownMessage {
        /// The offending type byte, as a `char` for readable logs.
        tag: char,
    },
    /// A message's body does not match the layout required by its type.
    #[error("malformed {message} message: {reason}")]
    Malformed {
        /// Name of the message type, e.g. `"Bind"`.
        message: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },
}

impl ProtocolError {
    /// The SQLSTATE to report to a client for this error: `54000`
    /// (`program_limit_exceeded`) for [`ProtocolError::TooLarge`], `08P01`
    /// (`protocol_violation`) for everything else.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ProtocolError::TooLarge { .. } => SQLSTATE_PROGRAM_LIMIT_EXCEEDED,
            _ => SQLSTATE_PROTOCOL_VIOLATION,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        assert_eq!(ProtocolError::TooLarge { len: 10, max: 5 }.sqlstate(), "54000");
        assert_eq!(ProtocolError::InvalidLength { len: -1 }.sqlstate(), "08P01");
        assert_eq!(
            ProtocolError::UnsupportedProtocol { major: 2, minor: 0 }.sqlstate(),
            "08P01"
        );
        assert_eq!(ProtocolError::UnknownMessage { tag: 'x' }.sqlstate(), "08P01");
        assert_eq!(
            ProtocolError::Malformed {
                message: "Bind",
                reason: "x"
            }
            .sqlstate(),
            "08P01"
        );
    }

    #[test]
    fn display() {
        assert_eq!(
            ProtocolError::UnsupportedProtocol { major: 2, minor: 0 }.to_string(),
            "unsupported frontend protocol 2.0: server supports 3.0"
        );
        assert_eq!(
            ProtocolError::UnknownMessage { tag: 'x' }.to_string(),
            "unknown message type 'x'"
        );
        assert_eq!(
            ProtocolError::TooLarge { len: 10, max: 5 }.to_string(),
            "message of 10 bytes exceeds the limit of 5 bytes"
        );
        assert_eq!(
            ProtocolError::Malformed {
                message: "Bind",
                reason: "unexpected end of message"
            }
            .to_string(),
            "malformed Bind message: unexpected end of message"
        );
    }
}
