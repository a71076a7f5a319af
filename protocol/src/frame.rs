//! Framing of tagged protocol messages, shared by both directions.
//!
//! After the startup phase every PostgreSQL message, from client or server, is
//! a one-byte type tag followed by a big-endian `i32` length that counts itself
//! and the body but not the tag. This module finds those boundaries without
//! interpreting bodies, which is all a proxy needs for most traffic:
//!
//! * [`split_frame`] cuts one complete message off a receive buffer as a
//!   [`Frame`] that shares the buffer's allocation (no copy);
//! * [`frames`] walks a buffer of server output and reports every complete
//!   message in it without allocating, so a whole batch of rows can be
//!   forwarded with one write while the proxy still sees each boundary (for
//!   example to spot `ReadyForQuery`);
//! * [`peek_header`] reports the size of the next message before it has fully
//!   arrived, so a caller can size its reads.
//!
//! All three enforce a caller-supplied maximum message size, checked as soon as
//! the 5-byte header is available so that a hostile peer cannot make the proxy
//! buffer an arbitrarily large message.

use std::fmt;
use std::iter::FusedIterator;

use bytes::{Bytes, BytesMut};

use crate::ProtocolError;

/// Size of a message header: the tag byte plus the `i32` length.
pub const HEADER_LEN: usize = 5;

/// One complete tagged message: tag, length and body, in a single
/// reference-counted buffer.
///
/// A `Frame` always holds at least [`HEADER_LEN`] bytes and its length field
/// always agrees with its size. Cloning is cheap (a reference-count increment).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    raw: Bytes,
}

impl Frame {
    /// Wraps a buffer holding exactly one message, checking that its length
    /// field matches its size. Useful to turn bytes built by an encoder back
    /// into a frame; received data should go through [`split_frame`].
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InvalidLength`] for a length field below 4 and
    /// [`ProtocolError::Malformed`] if `raw` is not exactly one message.
    pub fn new(raw: Bytes) -> Result<Frame, ProtocolError> {
        match peek_header(&raw, usize::MAX)? {
            Some(header) if header.len == raw.len() => Ok(Frame { raw }),
            Some(_) => Err(ProtocolError::Malformed {
                message: "frame",
                reason: "length field does not match the message size",
            }),
            None => Err(ProtocolError::Malformed {
                message: "frame",
                reason: "shorter than a message header",
            }),
        }
    }

    /// The message type byte.
    #[inline]
    pub fn tag(&self) -> u8 {
        self.raw.first().copied().unwrap_or_default()
    }

    /// The message body (everything after the length field).
    #[inline]
    pub fn body(&self) -> &[u8] {
        self.raw.get(HEADER_LEN..).unwrap_or_default()
    }

    /// The message body as a [`Bytes`] sharing this frame's buffer.
    #[inline]
    pub fn body_bytes(&self) -> Bytes {
        self.raw.slice(HEADER_LEN..)
    }

    /// The whole message: tag, length and body.
    #[inline]
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Consumes the frame, returning the whole message.
    #[inline]
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// Total size of the message in bytes, tag included.
    // A frame is never empty (it always holds its header), so `is_empty`
    // would be meaningless.
    #[allow(clippy::len_without_is_empty)]
    #[inline]
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Size of the body in bytes.
    #[inline]
    pub fn body_len(&self) -> usize {
        self.raw.len().saturating_sub(HEADER_LEN)
    }
}

impl fmt::Debug for Frame {
    // Bodies can be megabytes of row data (or passwords); show only the shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("tag", &char::from(self.tag()))
            .field("len", &self.len())
            .finish()
    }
}

/// The header of a tagged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The message type byte.
    pub tag: u8,
    /// Total size of the message in bytes, including the tag byte (that is,
    /// the length field plus one).
    pub len: usize,
}

impl FrameHeader {
    /// Size of the message body in bytes.
    #[inline]
    pub fn body_len(&self) -> usize {
        self.len.saturating_sub(HEADER_LEN)
    }
}

/// Returns the header of the first message in `buf` once its 5 header bytes
/// are available, even if its body is still incomplete; `Ok(None)` if fewer
/// than 5 bytes are buffered.
///
/// # Errors
///
/// [`ProtocolError::InvalidLength`] if the length field is below 4, and
/// [`ProtocolError::TooLarge`] if the total size (tag included) exceeds
/// `max_len`.
#[inline]
pub fn peek_header(buf: &[u8], max_len: usize) -> Result<Option<FrameHeader>, ProtocolError> {
    let Some(&[tag, l0, l1, l2, l3]) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let declared = i32::from_be_bytes([l0, l1, l2, l3]);
    // `declared >= 4` makes the conversion infallible; `len >= HEADER_LEN`.
    let Ok(body_and_len) = usize::try_from(declared) else {
        return Err(ProtocolError::InvalidLength {
            len: i64::from(declared),
        });
    };
    if body_and_len < 4 {
        return Err(ProtocolError::InvalidLength {
            len: i64::from(declared),
        });
    }
    let len = body_and_len + 1;
    if len > max_len {
        return Err(ProtocolError::TooLarge { len, max: max_len });
    }
    Ok(Some(FrameHeader { tag, len }))
}

/// Splits one complete message off the front of `buf` without copying it.
///
/// Returns `Ok(None)` if `buf` does not yet hold a complete message; in that
/// case (and on error) `buf` is left untouched. Nothing is reserved in `buf`
/// on the caller's behalf: use [`peek_header`] to learn how much is missing.
///
/// # Errors
///
/// As for [`peek_header`].
#[inline]
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, ProtocolError> {
    match peek_header(buf, max_len)? {
        Some(header) if buf.len() >= header.len => Ok(Some(Frame {
            raw: buf.split_to(header.len).freeze(),
        })),
        _ => Ok(None),
    }
}

/// Iterates over the complete messages at the front of `buf`, without
/// allocating or copying.
///
/// Each item is the message's header and its offset in `buf`. Iteration ends
/// at the first incomplete message, or after yielding the first error (bad
/// length or over `max_len`); [`FrameIter::consumed`] then tells how many
/// bytes at the front of `buf` are made of complete, valid messages, which is
/// exactly what repeated [`split_frame`] calls would have taken.
#[inline]
pub fn frames(buf: &[u8], max_len: usize) -> FrameIter<'_> {
    FrameIter {
        buf,
        pos: 0,
        max_len,
        failed: false,
    }
}

/// Iterator returned by [`frames`].
#[derive(Debug, Clone)]
pub struct FrameIter<'a> {
    buf: &'a [u8],
    pos: usize,
    max_len: usize,
    failed: bool,
}

impl<'a> FrameIter<'a> {
    /// Number of bytes at the front of the buffer covered by the complete
    /// messages yielded so far.
    #[inline]
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// The bytes not yet covered by yielded messages.
    #[inline]
    pub fn remainder(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Header of the next message if it is not (yet) complete in the buffer
    /// but its header is; lets a caller size its next read after iteration
    /// stopped. `None` if the header itself is incomplete or invalid.
    #[inline]
    pub fn pending_header(&self) -> Option<FrameHeader> {
        match peek_header(self.remainder(), self.max_len) {
            Ok(Some(header)) => Some(header),
            _ => None,
        }
    }
}

impl Iterator for FrameIter<'_> {
    type Item = Result<(FrameHeader, usize), ProtocolError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = self.remainder();
        match peek_header(rest, self.max_len) {
            Ok(Some(header)) if rest.len() >= header.len => {
                let offset = self.pos;
                self.pos += header.len;
                Some(Ok((header, offset)))
            }
            Ok(_) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for FrameIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn peek_needs_five_bytes() {
        let m = msg(b'Q', b"select 1\0");
        for n in 0..HEADER_LEN {
            assert_eq!(peek_header(&m[..n], 1024), Ok(None));
        }
        assert_eq!(
            peek_header(&m[..HEADER_LEN], 1024),
            Ok(Some(FrameHeader {
                tag: b'Q',
                len: m.len()
            }))
        );
    }

    #[test]
    fn bad_lengths() {
        for len in [i32::MIN, -1, 0, 3] {
            let mut buf = vec![b'Q'];
            buf.extend_from_slice(&len.to_be_bytes());
            assert_eq!(
                peek_header(&buf, 1024),
                Err(ProtocolError::InvalidLength { len: len.into() })
            );
            let mut b = BytesMut::from(&buf[..]);
            assert!(split_frame(&mut b, 1024).is_err());
            assert_eq!(b.len(), 5);
        }
        let m = msg(b'd', &[0; 100]);
        assert_eq!(
            peek_header(&m, 104),
            Err(ProtocolError::TooLarge { len: 105, max: 104 })
        );
        assert!(peek_header(&m, 105).unwrap().is_some());
        let mut buf = vec![b'd'];
        buf.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(
            peek_header(&buf, crate::DEFAULT_MAX_MESSAGE_LEN),
            Err(ProtocolError::TooLarge {
                len: i32::MAX as usize + 1,
                max: crate::DEFAULT_MAX_MESSAGE_LEN
            })
        );
    }

    #[test]
    fn split_is_zero_copy_and_leaves_partial_data() {
        let mut data = msg(b'S', b"");
        data.extend(msg(b'Q', b"x\0"));
        data.extend(&msg(b'Q', b"partial\0")[..7]);
        let mut buf = BytesMut::from(&data[..]);
        let base = buf.as_ptr();
        let f1 = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f1.tag(), b'S');
        assert_eq!(f1.body(), b"");
        assert_eq!(f1.len(), 5);
        assert_eq!(f1.raw().as_ptr(), base);
        let f2 = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f2.tag(), b'Q');
        assert_eq!(f2.body(), b"x\0");
        assert_eq!(&f2.body_bytes()[..], b"x\0");
        assert_eq!(f2.body_len(), 2);
        assert_eq!(f2.raw().as_ptr(), base.wrapping_add(5));
        assert_eq!(split_frame(&mut buf, 1024), Ok(None));
        assert_eq!(buf.len(), 7);
        assert_eq!(f2.clone().into_raw(), Bytes::from(msg(b'Q', b"x\0")));
        assert_eq!(format!("{f2:?}"), "Frame { tag: 'Q', len: 7 }");
    }

    #[test]
    fn frame_new_validates() {
        let m = msg(b'Z', b"I");
        let f = Frame::new(Bytes::from(m.clone())).unwrap();
        assert_eq!(f.tag(), b'Z');
        assert_eq!(f.body(), b"I");
        assert!(Frame::new(Bytes::from(m[..5].to_vec())).is_err());
        let mut long = m.clone();
        long.push(0);
        assert!(Frame::new(Bytes::from(long)).is_err());
        assert!(Frame::new(Bytes::from_static(b"Z")).is_err());
    }

    #[test]
    fn frames_iterates_complete_messages() {
        let mut data = msg(b'D', b"row1");
        data.extend(msg(b'C', b"SELECT 1\0"));
        data.extend(msg(b'Z', b"I"));
        let complete = data.len();
        data.extend(&msg(b'D', b"next")[..6]);
        let mut it = frames(&data, 1024);
        let got: Vec<_> = it.by_ref().map(|r| r.unwrap()).collect();
        assert_eq!(
            got,
            vec![
                (FrameHeader { tag: b'D', len: 9 }, 0),
                (FrameHeader { tag: b'C', len: 14 }, 9),
                (FrameHeader { tag: b'Z', len: 6 }, 23),
            ]
        );
        assert_eq!(it.consumed(), complete);
        assert_eq!(it.remainder().len(), 6);
        assert_eq!(it.pending_header(), Some(FrameHeader { tag: b'D', len: 9 }));
        assert!(it.next().is_none());
    }

    #[test]
    fn frames_stops_after_error() {
        let mut data = msg(b'D', b"row1");
        data.extend([b'D', 0, 0, 0, 1]);
        data.extend(msg(b'Z', b"I"));
        let mut it = frames(&data, 1024);
        assert!(it.next().unwrap().is_ok());
        assert_eq!(it.next(), Some(Err(ProtocolError::InvalidLength { len: 1 })));
        assert_eq!(it.next(), None);
        assert_eq!(it.consumed(), 9);
        assert_eq!(it.pending_header(), None);
    }
}
