//! Telling a service manager what the proxy is doing, as systemd's `Type=notify` services
//! do (`sd_notify(3)`): ready once it listens, reloading while it re-reads its file,
//! stopping once it stops accepting. Ready also names this process as the service's main
//! one (`MAINPID`), which is how a process started by an upgrade (`--takeover`, see
//! `examples/systemd/`) becomes the one systemd follows before the old one exits; a
//! barrier makes sure systemd has read that before the caller goes on.
//!
//! A datagram to `$NOTIFY_SOCKET` (the `sd-notify` crate); nothing at all when the variable
//! is unset, which is every start outside systemd. A failure is logged, never fatal: the
//! proxy serves whether or not anyone listens.

use std::io::Read;
use std::os::fd::AsFd;
use std::time::Duration;

use sd_notify::NotifyState;

/// How long [`ready`] waits for systemd to confirm it read the message.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `states`; without `NOTIFY_SOCKET` the crate sends nothing and succeeds.
fn send(what: &str, states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not tell the service manager ({what})");
    }
}

/// The proxy listens and serves: `READY=1`, `MAINPID` this process, a status line; then
/// waits (at most 5 s) until systemd has processed it, so that a process taking over can
/// let the old one exit knowing that systemd follows the new one. Called once, at start,
/// when the listeners are bound (the kernel queues connections from then on).
pub fn ready(status: &str) {
    // Without a service manager there is no barrier to wait for either.
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    send(
        "ready",
        &[
            NotifyState::MainPid(std::process::id()),
            NotifyState::Ready,
            NotifyState::Status(status),
        ],
    );
    // On a thread of its own: a receiver that keeps the pipe open must not hold us.
    let (done, answer) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new()
        .name("switchyard-notify".into())
        .spawn(move || {
            let _ = done.send(barrier());
        });
    match answer.recv_timeout(BARRIER_TIMEOUT) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the service manager did not confirm READY"),
        Err(_) => tracing::warn!("the service manager did not confirm READY within {BARRIER_TIMEOUT:?}"),
    }
}

/// `BARRIER=1` with the write end of a pipe: systemd closes its copy once it has
/// processed every message sent before, so the read end's end of file is the answer.
fn barrier() -> std::io::Result<()> {
    let (mut reader, writer) = std::io::pipe()?;
    sd_notify::notify_with_fds(&[NotifyState::Custom("BARRIER=1")], &[writer.as_fd()])?;
    drop(writer);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest)?;
    Ok(())
}

/// A reload of the configuration starts (`RELOADING=1`, with the monotonic time
/// `Type=notify-reload` asks for); [`reloaded`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send("reloading", &[NotifyState::Reloading, now]),
        Err(_) => send("reloading", &[NotifyState::Reloading]),
    }
}

/// A reload ended (applied or refused): serving again, `READY=1`.
pub fn reloaded() {
    send("reloaded", &[NotifyState::Ready]);
}

/// The proxy stopped accepting and is finishing its clients' transactions (`STOPPING=1`).
pub fn stopping() {
    send("stopping", &[NotifyState::Stopping]);
}
