//! Ctrl-C, SIGTERM and SIGHUP end a program of the test bed (the benchmark, the demo)
//! cleanly: the handler only records the signal; every wait of the program checks it
//! ([`check`], [`sleep`]) and returns [`Interrupted`], which unwinds to `main`, whose drops
//! stop every server started. A second signal changes nothing, so it cannot cut a cleanup
//! short.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The run was interrupted by this signal (exit status 130).
#[derive(Debug)]
pub struct Interrupted(pub &'static str);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by SIG{}", self.0)
    }
}

impl std::error::Error for Interrupted {}

extern "C" fn record(signal: libc::c_int) {
    SIGNAL.store(signal, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, record as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

/// `Err(Interrupted)` once a signal came.
pub fn check() -> Result<(), Interrupted> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => Ok(()),
        libc::SIGINT => Err(Interrupted("INT")),
        libc::SIGTERM => Err(Interrupted("TERM")),
        _ => Err(Interrupted("HUP")),
    }
}

/// Sleeps, waking early with `Err` on a signal.
pub fn sleep(d: Duration) -> Result<(), Interrupted> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}
