//! TCP port allocation for servers started by tests.
//!
//! Binding to port 0 and handing the number to a server is racy: the port is
//! in the kernel's ephemeral range, so any outgoing connection may grab it
//! before the server binds. Instead ports come from a fixed range below the
//! ephemeral range, walked by a process-wide counter (no two tests of a
//! process ever get the same port) that starts at a per-process offset (so
//! concurrent test processes rarely overlap), and each candidate is checked by
//! binding it. Servers that still lose a race fail to bind, and their
//! start-up retries with a new port.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Result};

const FIRST: u32 = 15_000;
const LAST: u32 = 32_000; // Linux ephemeral ports start at 32768 by default.

fn counter() -> &'static AtomicU32 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    NEXT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
        AtomicU32::new(seed % (LAST - FIRST))
    })
}

/// A port on 127.0.0.1 that is free right now and was never handed out
/// before by this process.
pub fn free_port() -> Result<u16> {
    for _ in 0..(LAST - FIRST) {
        let n = counter().fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + n % (LAST - FIRST)) as u16;
        if port_is_free(port) {
            return Ok(port);
        }
    }
    bail!("no free TCP port in {FIRST}..{LAST} on 127.0.0.1")
}

/// Whether nothing listens on (and nothing else holds) 127.0.0.1:`port`.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}
