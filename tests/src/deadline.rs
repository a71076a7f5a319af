//! A bound on every test that starts a server: no wait in a test can hang CI.
//!
//! A hung proxy shows up in a test as an `.await` that never returns (a query, a
//! `handle.await`, a channel). Rather than wrap each of those, every [`crate::PgCluster`],
//! [`crate::patroni::PatroniCluster`] and [`crate::Proxy`] holds a [`Deadline`] armed when
//! it starts: if the object is still alive after its bound, the test process prints which
//! test ran over, what it had started and the proxy's log tail, and exits with status 124
//! (the servers it started are killed by their [`crate::watchdog`] companions when the
//! process goes). One test running over fails its binary with that message instead of
//! hanging until CI's limit for the whole binary.
//!
//! The bound is [`DEFAULT`] per object, or `SWITCHYARD_TEST_DEADLINE` seconds (`0` turns
//! it off, for debugging a test by hand). Programs that serve until stopped (the demo, the
//! benchmark) call [`disable`] first.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::env;

/// How long a test may keep one cluster or proxy, unless `SWITCHYARD_TEST_DEADLINE` says.
/// The longest tests (Patroni failover suites) take about two minutes on two cores.
pub const DEFAULT: Duration = Duration::from_secs(600);

static DISABLED: AtomicBool = AtomicBool::new(false);

/// No deadline for objects started from now on: for programs that are not tests.
pub fn disable() {
    DISABLED.store(true, Ordering::Relaxed);
}

/// Ends the process if dropped later than its bound. Dropping it in time disarms it.
pub struct Deadline {
    _disarm: Option<Sender<()>>,
}

impl Deadline {
    /// Arm the bound for `what` (e.g. "PostgreSQL cluster /tmp/..."); `log` is a file whose
    /// tail is printed if the bound is passed.
    pub fn arm(what: String, log: Option<PathBuf>) -> Self {
        let Some(bound) = bound() else {
            return Self { _disarm: None };
        };
        let test = std::thread::current()
            .name()
            .unwrap_or("<unnamed thread>")
            .to_owned();
        let (tx, rx) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("test-deadline".into())
            .spawn(move || {
                if rx.recv_timeout(bound) == Err(RecvTimeoutError::Timeout) {
                    eprintln!(
                        "\n==== test `{test}` still held {what} after {} s: a wait in the test is \
                         not bounded or the proxy hangs; ending the test process ====",
                        bound.as_secs()
                    );
                    if let Some(log) = log {
                        eprintln!("---- {} ----\n{}", log.display(), env::tail(&log, 60));
                    }
                    std::process::exit(124);
                }
            });
        // Without a thread the test is only unbounded, as it was before this module.
        Self {
            _disarm: spawned.ok().map(|_| tx),
        }
    }
}

/// The bound for objects started now, `None` when off.
fn bound() -> Option<Duration> {
    if DISABLED.load(Ordering::Relaxed) {
        return None;
    }
    match std::env::var("SWITCHYARD_TEST_DEADLINE") {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(0) => None,
            Ok(n) => Some(Duration::from_secs(n)),
            Err(_) => {
                eprintln!("SWITCHYARD_TEST_DEADLINE={s:?} is not a number of seconds; using {DEFAULT:?}");
                Some(DEFAULT)
            }
        },
        Err(_) => Some(DEFAULT),
    }
}
