//! In-place upgrades the running proxy starts itself, on SIGUSR2, which is how a service
//! manager asks for one (`examples/systemd`: `systemctl kill --kill-whom=main
//! --signal=SIGUSR2 switchyard`): the binary now installed where this one was started from
//! runs with the same arguments and `--takeover`, takes the listeners and the clients over,
//! tells systemd it is the main process (`notify::ready`), and this process exits. A new
//! binary that fails (it does not start, its configuration or a plugin is refused) exits
//! non-zero and this process goes on serving; the log says so.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use std::process::Command;

/// The flag that makes a process take over from a running one.
const TAKEOVER_FLAG: &str = "--takeover";

/// How to start this process's successor: the program path as this process was started
/// (not where a symlink pointed then, so a package that moves a symlink to a new version
/// is followed) and the same arguments.
#[derive(Debug, Clone)]
pub struct Successor {
    program: PathBuf,
    args: Vec<OsString>,
}

impl Successor {
    /// This process's own command line, read at start (before anything can change the
    /// working directory): `argv[0]` made absolute when it names a path, else the
    /// executable the kernel ran.
    pub fn of_this_process() -> std::io::Result<Successor> {
        let mut argv = std::env::args_os();
        let argv0 = argv.next().map(PathBuf::from);
        let program = match argv0 {
            Some(p) if p.components().count() > 1 => std::path::absolute(p)?,
            _ => std::env::current_exe()?,
        };
        let mut args: Vec<OsString> = argv.collect();
        if !args.iter().any(|a| a == TAKEOVER_FLAG) {
            args.push(TAKEOVER_FLAG.into());
        }
        Ok(Successor { program, args })
    }

    /// Starts the successor; it logs to the same standard error (the journal). (std's
    /// `Command`, waited for on a thread: tokio's process driver would look for exited
    /// children at every wake-up of every runtime, about 90 instructions per transaction.)
    fn spawn(&self) -> std::io::Result<std::process::Child> {
        Command::new(&self.program)
            .args(&self.args)
            .stdin(std::process::Stdio::null())
            .spawn()
    }
}

/// Runs the SIGUSR2 handler until the process ends: each signal starts a successor unless
/// one is already running.
pub async fn on_sigusr2(successor: Successor) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr2 = match signal(SignalKind::user_defined2()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGUSR2 handler; upgrade with `switchyard --takeover` by hand");
            return;
        }
    };
    let running: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    while usr2.recv().await.is_some() {
        use std::sync::atomic::Ordering::SeqCst;
        if running.swap(true, SeqCst) {
            tracing::warn!("SIGUSR2 received while an upgrade is under way; ignored");
            continue;
        }
        tracing::info!(program = %successor.program.display(), "SIGUSR2 received: starting the new binary to take over");
        match successor.spawn() {
            Ok(mut child) => {
                let pid = child.id();
                let running = running.clone();
                let waiter = std::thread::Builder::new()
                    .name("switchyard-upgrade".into())
                    .spawn(move || {
                        // While the upgrade goes well this process exits first, and the
                        // wait ends with it.
                        let status = child.wait();
                        running.store(false, SeqCst);
                        match status {
                            Ok(s) => {
                                tracing::error!(pid, status = %s, "the new process exited; this one goes on serving")
                            }
                            Err(e) => tracing::error!(pid, error = %e, "lost track of the new process"),
                        }
                    });
                if let Err(e) = waiter {
                    tracing::warn!(pid, error = %e, "cannot watch the new process; a failed upgrade will not be logged");
                }
            }
            Err(e) => {
                running.store(false, SeqCst);
                tracing::error!(program = %successor.program.display(), error = %e, "cannot start the new binary; this process goes on serving");
            }
        }
    }
}
