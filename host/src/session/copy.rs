//! COPY data from the client: passed to the server that runs the COPY; where the client
//! ends it is marked in the reply queue, whose Syncs Postgres ignores until then.

use bytes::Bytes;

use super::{Session, SessionError};

impl Session {
    /// CopyData: outside COPY a server ignores it, and so does the proxy when no server is
    /// held.
    pub(super) fn on_copy_data(&mut self, raw: &Bytes) -> Result<(), SessionError> {
        if self.server.held() {
            self.server.sout.extend_from_slice(raw);
        }
        Ok(())
    }

    /// CopyDone or CopyFail: ends the client's COPY FROM STDIN.
    pub(super) fn on_copy_end(&mut self, raw: &Bytes) -> Result<(), SessionError> {
        if self.server.held() {
            self.server.sout.extend_from_slice(raw);
            self.server.replies.copy_ended();
        }
        Ok(())
    }
}
