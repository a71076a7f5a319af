//! A private single-node etcd, the DCS of a [`crate::patroni::PatroniCluster`].
//!
//! Each [`Etcd`] listens on two free loopback ports of its own (client and
//! peer; never Debian's 2379/2380, which a system etcd may hold), keeps its
//! data and log in a scratch directory, is killed on `Drop`, and is guarded
//! by a [`Watchdog`] so it never outlives the test process. [`Etcd::start_at`]
//! is the demo's variant: fixed ports and a directory of the caller's, kept
//! (a second start finds the same data). etcd runs in a process group of its
//! own: a Ctrl-C on the terminal reaches only the program that started it,
//! which stops it. The binary is `/usr/bin/etcd` from Debian's `etcd-server`
//! (`scripts/lib.sh install`), or `SWITCHYARD_ETCD`.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{env, http, ports, scratch, tools, watchdog::Watchdog};

/// A running etcd.
pub struct Etcd {
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
    /// Whether `dir` is the caller's (kept on drop) rather than scratch.
    keep_dir: bool,
}

/// The etcd binary: `SWITCHYARD_ETCD`, else `/usr/bin/etcd`.
pub fn etcd_binary() -> Result<PathBuf> {
    let path = std::env::var_os("SWITCHYARD_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if !path.exists() {
        bail!(
            "etcd not found at {} (set SWITCHYARD_ETCD, or run `scripts/lib.sh install` / \
             `apt-get install etcd-server`)",
            path.display()
        );
    }
    Ok(path)
}

impl Etcd {
    /// Start etcd in a fresh scratch directory and wait until `/health`
    /// says it is healthy. Retries with other ports if one was taken.
    pub fn start() -> Result<Self> {
        let binary = etcd_binary()?;
        let dir = scratch::fresh_dir("etcd")?;
        let mut last = None;
        for _attempt in 0..4 {
            let mut etcd = Self {
                dir: dir.clone(),
                client_port: ports::free_port()?,
                peer_port: ports::free_port()?,
                child: None,
                watchdog: None,
                keep_dir: false,
            };
            match etcd.spawn(&binary) {
                Ok(()) => return Ok(etcd),
                Err(e) => {
                    let in_use = std::fs::read_to_string(etcd.log_path())
                        .is_ok_and(|l| l.contains("address already in use"));
                    etcd.kill();
                    if !in_use {
                        return Err(e);
                    }
                    last = Some(e);
                    let _ = std::fs::remove_dir_all(dir.join("data"));
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Start etcd on 127.0.0.1:`client_port` (its peer port is the next one) with its data
    /// in `dir/data` and its log in `dir/etcd.log` (appended), and wait until it is healthy.
    /// `dir` is the caller's: nothing in it is removed, and a second start with the same
    /// `dir` serves the same data. No retry: a port in use is an error.
    pub fn start_at(dir: &Path, client_port: u16) -> Result<Self> {
        let binary = etcd_binary()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut etcd = Self {
            dir: dir.to_owned(),
            client_port,
            peer_port: client_port
                .checked_add(1)
                .context("etcd's peer port is the client port + 1")?,
            child: None,
            watchdog: None,
            keep_dir: true,
        };
        etcd.spawn(&binary)?;
        Ok(etcd)
    }

    fn spawn(&mut self, binary: &Path) -> Result<()> {
        // A kept directory keeps its log too.
        let mut open = OpenOptions::new();
        match self.keep_dir {
            true => open.create(true).append(true),
            false => open.create(true).write(true).truncate(true),
        };
        let log = open.open(self.log_path())?;
        let client = self.client_url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(binary);
        cmd.arg("--name")
            .arg("switchyard")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("switchyard={peer}"))
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .current_dir(&self.dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // etcd reads ETCD_* variables as flags: none from the caller's shell.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        scratch::record_process(&self.dir, "etcd", child.id());
        self.watchdog = Some(Watchdog::arm(child.id(), "KILL")?);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "etcd exited during start-up with {status}\n--- {} ---\n{}",
                    self.log_path().display(),
                    env::tail(&self.log_path(), 30)
                );
            }
            if let Ok(r) = http::get(&self.client_addr(), "/health", Duration::from_millis(500)) {
                if r.is_success() && r.body.contains("true") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd not healthy on {} within 20 s\n--- {} ---\n{}",
                    self.client_url(),
                    self.log_path().display(),
                    env::tail(&self.log_path(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:<client port>`
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client_addr())
    }

    /// `127.0.0.1:<client port>`, as Patroni's `etcd3.hosts` wants it.
    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// etcd's own log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace` (for data that is kept).
    pub fn stop(&mut self, grace: Duration) {
        if let Some(child) = self.child.as_mut() {
            // Once reaped, the pid may belong to another process: never signal it then.
            if matches!(child.try_wait(), Ok(None)) {
                tools::signal(child.id(), libc::SIGTERM);
                let deadline = Instant::now() + grace;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.kill();
    }

    /// SIGKILL and reap (etcd's data is scratch: no need to be gentle).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut w) = self.watchdog.take() {
            w.disarm();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- etcd log tail ({}) ----\n{}",
                self.log_path().display(),
                env::tail(&self.log_path(), 15)
            );
        }
        if !self.keep_dir {
            scratch::remove_dir(&self.dir);
        }
    }
}
