//! Bounds-checked reading of message bodies, and small helpers for writing them.
//!
//! Every decoder in this crate walks a message body with a [`Cursor`]. It never
//! indexes out of bounds: each read returns a [`ProtocolError::Malformed`] naming
//! the message being decoded instead of panicking, which is what lets the public
//! decoders promise "no panic on any input". String reads locate the NUL
//! terminator with `CStr::from_bytes_until_nul`, which uses the standard
//! library's word-at-a-time `memchr`, so scanning long query texts stays cheap.
//!
//! The writing helpers compute message lengths up front so that every encoder
//! reserves once and never patches a length field afterwards.

use std::ffi::CStr;
use std::ops::Range;

use bytes::{BufMut, BytesMut};

use crate::ProtocolError;

pub(crate) const UNEXPECTED_END: &str = "unexpected end of message";
pub(crate) const MISSING_NUL: &str = "missing string terminator";
pub(crate) const TRAILING_DATA: &str = "unexpected data after the end of the message";
pub(crate) const INVALID_UTF8: &str = "invalid UTF-8";

/// A forward-only reader over a message body.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`; `message` names the message in errors.
    #[inline]
    pub(crate) fn new(buf: &'a [u8], message: &'static str) -> Self {
        Cursor { buf, pos: 0, message }
    }

    /// A `Malformed` error for the message being read.
    #[inline]
    pub(crate) fn error(&self, reason: &'static str) -> ProtocolError {
        ProtocolError::Malformed {
            message: self.message,
            reason,
        }
    }

    #[inline]
    fn remaining_slice(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Number of unread bytes.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Offset of the next unread byte.
    #[inline]
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Reads `N` bytes as an array.
    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        match self.remaining_slice().first_chunk::<N>() {
            Some(chunk) => {
                self.pos += N;
                Ok(*chunk)
            }
            None => Err(self.error(UNEXPECTED_END)),
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        self.array::<1>().map(|[b]| b)
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, ProtocolError> {
        self.array().map(u16::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i32(&mut self) -> Result<i32, ProtocolError> {
        self.array().map(i32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, ProtocolError> {
        self.array().map(u32::from_be_bytes)
    }

    /// Skips `n` bytes, returning their range within the body.
    #[inline]
    pub(crate) fn skip(&mut self, n: usize) -> Result<Range<usize>, ProtocolError> {
        if n > self.remaining() {
            return Err(self.error(UNEXPECTED_END));
        }
        let start = self.pos;
        self.pos += n;
        Ok(start..self.pos)
    }

    /// Reads `n` bytes.
    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let range = self.skip(n)?;
        Ok(self.buf.get(range).unwrap_or_default())
    }

    /// Reads a NUL-terminated string, returning the range of its bytes
    /// (without the terminator) within the body.
    #[inline]
    pub(crate) fn cstr_range(&mut self) -> Result<Range<usize>, ProtocolError> {
        let rest = self.remaining_slice();
        let len = match CStr::from_bytes_until_nul(rest) {
            Ok(s) => s.count_bytes(),
            Err(_) => return Err(self.error(MISSING_NUL)),
        };
        let start = self.pos;
        self.pos += len + 1;
        Ok(start..start + len)
    }

    /// Reads a NUL-terminated string (without the terminator).
    #[inline]
    pub(crate) fn cstr(&mut self) -> Result<&'a [u8], ProtocolError> {
        let range = self.cstr_range()?;
        Ok(self.buf.get(range).unwrap_or_default())
    }

    /// Reads a NUL-terminated UTF-8 string.
    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str, ProtocolError> {
        let bytes = self.cstr()?;
        std::str::from_utf8(bytes).map_err(|_| self.error(INVALID_UTF8))
    }

    /// Reads everything that is left.
    #[inline]
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = self.remaining_slice();
        self.pos = self.buf.len();
        rest
    }

    /// Fails unless the whole body has been read.
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), ProtocolError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.error(TRAILING_DATA))
        }
    }
}

/// Converts a message length to its wire representation.
///
/// Encoders in this crate are only ever given data far below 2 GiB (message
/// sizes are capped by the framing limits long before that), so saturating
/// here is purely defensive: it keeps the encoders total without a `Result`.
#[inline]
pub(crate) fn wire_len(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// Converts an element count to the protocol's 16-bit counter (the protocol
/// cannot express more than 65535 parameters, columns or formats).
#[inline]
pub(crate) fn wire_count(count: usize) -> u16 {
    u16::try_from(count).unwrap_or(u16::MAX)
}

/// Writes a message header: the tag and a length covering `body_len` body
/// bytes plus the length field itself. Reserves room for the whole message.
#[inline]
pub(crate) fn put_header(out: &mut BytesMut, tag: u8, body_len: usize) {
    out.reserve(body_len.saturating_add(5));
    out.put_u8(tag);
    out.put_i32(wire_len(body_len.saturating_add(4)));
}

/// The part of `s` before its first NUL byte. Strings written by the backend
/// encoders go through this so that a stray NUL in a Rust string can never
/// desynchronise the framing of the stream sent to a client.
#[inline]
pub(crate) fn until_nul(s: &[u8]) -> &[u8] {
    match CStr::from_bytes_until_nul(s) {
        Ok(c) => c.to_bytes(),
        Err(_) => s,
    }
}

/// Writes `s` followed by a NUL terminator.
#[inline]
pub(crate) fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scalars_and_strings() {
        let body = b"\x01\x00\x02\x00\x00\x00\x03\xff\xff\xff\xffab\0\0rest";
        let mut c = Cursor::new(body, "Test");
        assert_eq!(c.u8().unwrap(), 1);
        assert_eq!(c.u16().unwrap(), 2);
        assert_eq!(c.i32().unwrap(), 3);
        assert_eq!(c.u32().unwrap(), u32::MAX);
        assert_eq!(c.cstr().unwrap(), b"ab");
        assert_eq!(c.cstr_range().unwrap(), 14..14);
        assert!(c.finish().is_err());
        assert_eq!(c.rest(), b"rest");
        c.finish().unwrap();
        assert_eq!(c.rest(), b"");
    }

    #[test]
    fn errors_instead_of_panicking() {
        let mut c = Cursor::new(b"\x01", "Test");
        assert_eq!(
            c.u16(),
            Err(ProtocolError::Malformed {
                message: "Test",
                reason: UNEXPECTED_END
            })
        );
        assert_eq!(c.position(), 0);
        assert!(c.i32().is_err());
        assert!(c.skip(2).is_err());
        assert!(c.bytes(usize::MAX).is_err());
        assert_eq!(c.cstr().unwrap_err(), c.error(MISSING_NUL));
        assert_eq!(c.u8().unwrap(), 1);
        assert!(c.u8().is_err());
        assert!(c.cstr().is_err());
        let mut c = Cursor::new(b"\xff\0", "Test");
        assert_eq!(c.str().unwrap_err(), c.error(INVALID_UTF8));
    }

    #[test]
    fn until_nul_truncates() {
        assert_eq!(until_nul(b"abc"), b"abc");
        assert_eq!(until_nul(b"a\0bc"), b"a");
        assert_eq!(until_nul(b""), b"");
    }

    #[test]
    fn saturating_conversions() {
        assert_eq!(wire_len(5), 5);
        assert_eq!(wire_len(usize::MAX), i32::MAX);
        assert_eq!(wire_count(70_000), u16::MAX);
    }
}
