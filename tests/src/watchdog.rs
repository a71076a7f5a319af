//! Kill spawned servers when the test process dies, however it dies.
//!
//! `Drop` does not run when a test binary is SIGKILLed, aborts, or is
//! interrupted, and `PR_SET_PDEATHSIG` fires when the spawning *thread* exits,
//! which is wrong for a multi-threaded test harness. Instead, each supervised
//! process gets a tiny `sh` companion whose stdin is a pipe whose only write
//! end lives in the test process (Rust opens pipes close-on-exec, so no other
//! child inherits it). When the test process exits for any reason, the kernel
//! closes that end, `read` hits EOF, and the companion signals the server.
//! A normal teardown writes `done` first, which disarms it. The companion runs in a process
//! group of its own, so that a Ctrl-C on the terminal (SIGINT to the foreground group) does not
//! end it before the test process's end closes the pipe.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result};

/// A companion process that sends `signal` to `pid` unless disarmed.
pub struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Arm a watchdog for `pid`; `signal` is a name understood by `kill -s`
    /// (`QUIT` for a postmaster = immediate shutdown, `KILL` for the proxy).
    pub fn arm(pid: u32, signal: &str) -> Result<Self> {
        Self::arm_script(
            "switchyard-watchdog",
            r#"read -r line; [ "$line" = done ] || kill -s "$1" "$2" 2>/dev/null; exit 0"#,
            &[OsStr::new(signal), OsStr::new(&pid.to_string())],
        )
    }

    /// Arm a companion running `script` (with `args` as `$1`, `$2`, ...), which must
    /// start by reading one line and act only if that line is not `done`.
    pub fn arm_script(name: &str, script: &str, args: &[&OsStr]) -> Result<Self> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(name)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("spawning watchdog (sh)")?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    /// Disarm: the supervised process was stopped normally.
    pub fn disarm(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"done\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropping without an explicit disarm means the supervised process
        // may still be running: closing stdin makes the companion kill it.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
