//! Messages too large to hold: passed through in pieces as they arrive, so that what a
//! session holds stays within its buffers' high-water marks whatever its client sends.
//!
//! A client message whose header declares more than [`STREAM_ABOVE`] bytes is streamed to
//! the server once one is assigned, if the proxy needs no more of it than its start: Bind
//! (its portal and statement names, which the proxy renames, come first; its parameters pass
//! through), Query, unnamed Parse, FunctionCall and CopyData. A named Parse is held whole
//! (its text is interned proxy-wide), as is every other message, up to `max_message_size`.
//! A streamed message is never run again (it is not kept), so it closes the retry window.
//! The SQL of a streamed Query or Parse is not scanned for session commands: the server it
//! ran on may hold settings or state the proxy cannot know, so that server is reset
//! (`DISCARD ALL`) before the pool lends it again.
//!
//! A server message over [`STREAM_ABOVE`] whose body the proxy does not read (DataRow,
//! CopyData, FunctionCallResponse) is forwarded to the client as it arrives, under the same
//! back-pressure as every reply. Other server messages are held whole (up to Postgres' 1 GiB).

use switchyard_protocol::backend::tags as server_tags;
use switchyard_protocol::frame::{FrameHeader, HEADER_LEN};
use switchyard_protocol::frontend::{bind_names, encode_bind_head, tags};

use super::replies::Expect;
use super::{Session, SessionError, Work};

/// Messages larger than this pass through in pieces (when their kind allows it).
pub(super) const STREAM_ABOVE: usize = 256 * 1024;

/// A message passing through in pieces: how many of its bytes are still to come, and
/// whether they are forwarded or dropped.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Passing {
    /// 32 bits are enough (a message's length comes from an `i32` on the wire) and keep
    /// the server side of a session, which holds two of these, small.
    left: u32,
    forward: bool,
}

impl Passing {
    /// True while part of a message is still to pass.
    #[inline]
    pub(super) fn active(&self) -> bool {
        self.left != 0
    }

    /// A message of `len` bytes (a frame's length, at most 2^31) starts passing.
    fn new(len: usize, forward: bool) -> Passing {
        Passing {
            left: u32::try_from(len).unwrap_or(u32::MAX),
            forward,
        }
    }

    /// Takes up to `available` bytes of the message: how many, and whether to forward them.
    fn take(&mut self, available: usize) -> (usize, bool) {
        let n = (self.left as usize).min(available);
        self.left -= n as u32; // n <= left
        (n, self.forward)
    }
}

/// Client messages that may stream: the proxy needs at most their first bytes. `body` is
/// what has arrived of the body: a Parse streams only if it is unnamed (a named one is
/// interned by its text).
fn client_streams(tag: u8, body: &[u8]) -> bool {
    match tag {
        tags::BIND | tags::QUERY | tags::FUNCTION_CALL | tags::COPY_DATA => true,
        tags::PARSE => body.first() == Some(&0),
        _ => false,
    }
}

/// Server messages that may stream: the proxy reads nothing of their bodies.
pub(super) fn server_streams(header: &FrameHeader) -> bool {
    header.len > STREAM_ABOVE
        && matches!(
            header.tag,
            server_tags::DATA_ROW | server_tags::COPY_DATA | server_tags::FUNCTION_CALL_RESPONSE
        )
}

impl Session {
    /// Moves what has arrived of the client message passing through to the server's buffer
    /// (or drops it, for a message nobody will run). Returns true once it has all passed.
    pub(super) fn pass_client_bytes(&mut self) -> bool {
        let forward = self.server.inflow.forward && self.server.held();
        let available = if forward {
            self.cbuf
                .len()
                .min(super::HIGH_WATER.saturating_sub(self.server.sout.len()))
        } else {
            self.cbuf.len()
        };
        let (n, _) = self.server.inflow.take(available);
        if forward {
            self.server.sout.extend_from_slice(&self.cbuf[..n]);
        }
        bytes::Buf::advance(&mut self.cbuf, n);
        !self.server.inflow.active()
    }

    /// A client message larger than [`STREAM_ABOVE`] of which only a part has arrived:
    /// starts passing it through when its kind allows. Returns false when it must be held
    /// whole (or its start is not in yet); true once its head is handled and the rest
    /// passes through [`Session::pass_client_bytes`].
    pub(super) async fn start_client_stream(&mut self, header: FrameHeader) -> Result<bool, SessionError> {
        let body = &self.cbuf[HEADER_LEN..];
        if header.len <= STREAM_ABOVE || !client_streams(header.tag, body) {
            return Ok(false);
        }
        let names = if header.tag == tags::BIND {
            match bind_names(body) {
                Some((portal, statement, at)) => Some((portal.to_vec(), statement.to_vec(), at)),
                None => return Ok(false),
            }
        } else {
            None
        };
        if let Some(lost) = self.lost_session.take() {
            self.pool.cluster.incidents.client_error();
            return Err(SessionError::Fatal(lost));
        }
        let forward = match header.tag {
            _ if self.skipping => false,
            tags::COPY_DATA => self.server.held(),
            // A message too large to hold is not classified: it runs on the primary.
            tags::BIND | tags::PARSE => self.acquire_or_refuse(true, Work::PRIMARY).await?,
            _ => self.acquire_or_refuse(false, Work::PRIMARY).await?,
        };
        // Not kept, so never run again: the request it belongs to leaves the retry window
        // (which the server just borrowed may have opened).
        self.replay.close();
        // Bytes of the message already dealt with here (a Bind's rewritten head).
        let mut done = 0;
        if forward {
            match (header.tag, names) {
                (tags::BIND, Some((portal, statement, at))) => {
                    self.server.replies.open_batch();
                    let def = self.lookup(&statement);
                    let server_name = def.as_ref().map(|def| {
                        self.ensure_prepared(def);
                        def.server_name.clone()
                    });
                    let name = server_name.as_deref().unwrap_or(&statement);
                    encode_bind_head(&portal, name, header.len - HEADER_LEN - at, &mut self.server.sout);
                    self.server.replies.push(Expect::Bind);
                    done = HEADER_LEN + at;
                }
                (tags::QUERY, _) => {
                    self.server.unscanned = true;
                    self.server.replies.push(Expect::Query);
                    self.request_sent();
                }
                (tags::PARSE, _) => {
                    self.server.unscanned = true;
                    self.server.replies.open_batch();
                    self.server.replies.push(Expect::Parse { prepared: None });
                }
                (tags::FUNCTION_CALL, _) => {
                    self.server.replies.push(Expect::Query);
                    self.request_sent();
                }
                _ => {}
            }
        }
        tracing::debug!(
            pid = self.cancel.process_id,
            tag = %char::from(header.tag),
            len = header.len,
            forward,
            "client message streams through"
        );
        bytes::Buf::advance(&mut self.cbuf, done);
        self.server.inflow = Passing::new(header.len - done, forward);
        self.pass_client_bytes();
        Ok(true)
    }

    /// A server message larger than [`STREAM_ABOVE`] of which `available` bytes (header
    /// included) have arrived, `forward` saying whether it goes to the client: starts
    /// passing it through. Returns how many of those bytes it took.
    pub(super) fn start_server_stream(
        &mut self,
        header: &FrameHeader,
        forward: bool,
        available: usize,
    ) -> usize {
        self.server.outflow = Passing::new(header.len, forward);
        self.server.outflow.take(available).0
    }

    /// Takes the next bytes of the server message passing through from `buf`: returns how
    /// many, and whether they go to the client.
    pub(super) fn take_server_bytes(&mut self, available: usize) -> (usize, bool) {
        self.server.outflow.take(available)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_counts_down_to_the_end_of_its_message() {
        let mut p = Passing::new(10, true);
        assert_eq!(p.take(4), (4, true));
        assert!(p.active());
        assert_eq!(p.take(100), (6, true));
        assert!(!p.active());
        assert_eq!(p.take(100), (0, true));
    }

    #[test]
    fn only_messages_whose_start_is_enough_stream() {
        for tag in [tags::BIND, tags::QUERY, tags::FUNCTION_CALL, tags::COPY_DATA] {
            assert!(client_streams(tag, b""));
        }
        assert!(client_streams(tags::PARSE, b"\0SELECT"));
        assert!(!client_streams(tags::PARSE, b"s1\0SELECT"));
        assert!(!client_streams(tags::PARSE, b""));
        for tag in [
            tags::DESCRIBE,
            tags::CLOSE,
            tags::EXECUTE,
            tags::COPY_FAIL,
            tags::PASSWORD,
        ] {
            assert!(!client_streams(tag, b"\0"));
        }
        let row = |tag, len| FrameHeader { tag, len };
        assert!(server_streams(&row(server_tags::DATA_ROW, STREAM_ABOVE + 1)));
        assert!(!server_streams(&row(server_tags::DATA_ROW, STREAM_ABOVE)));
        assert!(!server_streams(&row(server_tags::ERROR_RESPONSE, 1 << 29)));
    }
}
