//! PostgreSQL wire protocol codec for Switchyard.
//!
//! This crate turns bytes into PostgreSQL protocol messages and back, and does
//! nothing else: no sockets, no async runtime, no clocks. Keeping the codec
//! pure is an architectural invariant of Switchyard. It makes every decoder
//! testable (and fuzzable) on plain byte slices and lets the host decide all
//! I/O, buffering and back-pressure policy.
//!
//! * [`frame`] finds message boundaries (both directions share the framing);
//! * [`frontend`] decodes what clients send and encodes what the proxy sends
//!   to servers on their behalf;
//! * [`backend`] encodes what the proxy says to clients as a server, and
//!   parses the server messages the proxy needs to track connection state;
//! * [`error`] defines [`ProtocolError`], the only error type.
//!
//! Decoding is zero-copy: frames are split off the receive buffer with
//! [`bytes::BytesMut::split_to`] and decoded fields are [`bytes::Bytes`]
//! slices of them. No decoder panics on any input; malformed input yields a
//! [`ProtocolError`].
//!
//! ```
//! use bytes::BytesMut;
//! use switchyard_protocol::frame::split_frame;
//! use switchyard_protocol::frontend::{encode_query, FrontendMessage};
//! use switchyard_protocol::DEFAULT_MAX_MESSAGE_LEN;
//!
//! let mut buf = BytesMut::new();
//! encode_query(b"SELECT 1", &mut buf);
//! let frame = split_frame(&mut buf, DEFAULT_MAX_MESSAGE_LEN)?.expect("complete");
//! match FrontendMessage::decode(&frame)? {
//!     FrontendMessage::Query { sql } => assert_eq!(&sql[..], b"SELECT 1"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), switchyard_protocol::ProtocolError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
mod cursor;
pub mod error;
pub mod frame;
pub mod frontend;
pub mod sqlstate;

pub use backend::TransactionStatus;
pub use error::ProtocolError;
pub use frame::Frame;

/// Default limit on the size of one tagged message (64 MiB). PostgreSQL
/// itself caps most client messages at 1 GiB, but a proxy holding whole
/// messages in memory needs a tighter bound.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;

/// Limit on the size of a startup-phase packet, as in PostgreSQL
/// (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

/// Protocol version 3.0 as sent in a `StartupMessage` (`3 << 16`).
pub const PROTOCOL_VERSION_3_0: u32 = 196_608;
