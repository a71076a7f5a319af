//! The process's one reference point for times kept as integers: the pools' coarse
//! clocks, a server's creation, `RECONNECT`, and the traffic statistics' microseconds all
//! count from the same instant, so that they can be compared and a plain integer is
//! enough to store one.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The first time anyone asked.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The time from the origin to `t` (zero for earlier).
#[inline]
pub fn since_origin(t: Instant) -> Duration {
    t.saturating_duration_since(*ORIGIN)
}
