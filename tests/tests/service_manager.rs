//! The proxy under a service manager: what it tells systemd through `$NOTIFY_SOCKET`
//! (`Type=notify`, `examples/systemd/`), read here from a datagram socket of the test's own
//! that plays systemd's part.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sendfd::RecvWithFd;
use switchyard_tests::proxy::Launch;
use switchyard_tests::{scratch, skip_if_direct, ClusterOptions, PgResultExt, TestBed};

/// The next datagram on `socket` (waiting up to 10 s): its text and the descriptors it
/// carried, owned here so that dropping them closes them.
fn next(socket: &UnixDatagram) -> Result<(String, Vec<OwnedFd>)> {
    let mut buf = [0u8; 4096];
    let mut fds: [RawFd; 4] = [-1; 4];
    let (n, nfds) = socket
        .recv_with_fd(&mut buf, &mut fds)
        .context("no message from the proxy on NOTIFY_SOCKET within 10 s")?;
    // SAFETY: the kernel just installed these descriptors in this process for us alone.
    let owned = fds[..nfds]
        .iter()
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), owned))
}

/// The `KEY=value` lines of a notification.
fn lines(message: &str) -> Vec<&str> {
    message.lines().collect()
}

/// A proxy started with `NOTIFY_SOCKET` set sends, once it listens, one message with
/// `MAINPID=<its pid>`, `READY=1` and `STATUS=serving`, then `BARRIER=1` with a
/// descriptor; once that descriptor is closed (as systemd does when it has read what came
/// before) the proxy serves (`SELECT 1` returns 1; the time from the barrier's close to
/// the answer is printed). On SIGHUP it sends `RELOADING=1` with `MONOTONIC_USEC`, then
/// `READY=1`; on SIGTERM, `STOPPING=1`, and it exits 0.
#[tokio::test]
async fn tells_the_service_manager_ready_reloading_and_stopping() -> Result<()> {
    skip_if_direct!();
    let dir = scratch::fresh_dir("notify")?;
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path)?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let launch = Launch {
        env: vec![("NOTIFY_SOCKET".into(), path.display().to_string())],
        ..Launch::default()
    };
    let mut bed = TestBed::start_launched(ClusterOptions::default(), launch, |cfg, _| Ok(cfg))?;
    let pid = bed.proxy().context("the proxy")?.pid().context("its pid")?;

    let (ready, _) = next(&socket)?;
    ensure!(
        lines(&ready) == [format!("MAINPID={pid}").as_str(), "READY=1", "STATUS=serving"],
        "the first message should name the proxy's pid, READY and its status: {ready:?}"
    );
    let (barrier, fds) = next(&socket)?;
    ensure!(
        lines(&barrier) == ["BARRIER=1"] && fds.len() == 1,
        "then a barrier with one descriptor: {barrier:?} with {} descriptors",
        fds.len()
    );
    let released = Instant::now();
    drop(fds);
    let client = bed.endpoint().connect_app().await?;
    let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    ensure!(one == 1, "SELECT 1 returned {one}");
    println!("served {:?} after the barrier was answered", released.elapsed());

    let proxy = bed.proxy().context("the proxy")?;
    proxy.signal(libc::SIGHUP);
    let (reloading, _) = next(&socket)?;
    let reloading = lines(&reloading);
    ensure!(
        reloading.len() == 2
            && reloading[0] == "RELOADING=1"
            && reloading[1]
                .strip_prefix("MONOTONIC_USEC=")
                .is_some_and(|t| t.parse::<u64>().is_ok()),
        "SIGHUP: RELOADING=1 and MONOTONIC_USEC expected, got {reloading:?}"
    );
    let (reloaded, _) = next(&socket)?;
    ensure!(lines(&reloaded) == ["READY=1"], "after the reload: {reloaded:?}");

    proxy.signal(libc::SIGTERM);
    let (stopping, _) = next(&socket)?;
    ensure!(lines(&stopping) == ["STOPPING=1"], "SIGTERM: {stopping:?}");
    let status = proxy
        .wait_exit(Duration::from_secs(10))?
        .context("the proxy did not exit within 10 s of SIGTERM")?;
    ensure!(status.success(), "the proxy exited with {status}");
    Ok(())
}

/// Kills a process the test bed does not own (the one an upgrade started) if the test
/// ends before it does.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a pid this test learnt from MAINPID; harmless if it is gone.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// Whether process `pid` runs (it may be a zombie our parent reaps later: not counted).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// An upgrade as systemd runs it (`examples/systemd`: SIGUSR2 to the main process). The
/// proxy runs from `bin/switchyard` in a scratch directory; a copy of the binary is then
/// installed over that path (written beside it and renamed, as package managers do) and
/// the proxy gets SIGUSR2. Checks that `NOTIFY_SOCKET` then receives, from the new
/// process, `MAINPID=<a pid other than the old one>`, `READY=1`, `STATUS=serving` and a
/// barrier; that the new process runs the installed file (its `/proc/PID/exe` is the path,
/// while the old one's is the replaced, deleted file); that the old process exits 0 within
/// 20 s and sends nothing more (a STOPPING from it would stop the service); that a client
/// connected before the upgrade, idle during it, runs `SELECT 1` afterwards on the same
/// connection (handed over) and a new client is served; and that on SIGTERM the new
/// process sends `STOPPING=1` and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_upgrades_in_place_and_tells_systemd_the_new_main_pid() -> Result<()> {
    use switchyard_tests::env;
    skip_if_direct!();
    let dir = scratch::fresh_dir("upgrade")?;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let installed = bin.join("switchyard");
    std::fs::copy(env::proxy_binary()?, &installed)?;
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path)?;
    socket.set_read_timeout(Some(Duration::from_secs(20)))?;
    let launch = Launch {
        binary: Some(installed.clone()),
        env: vec![("NOTIFY_SOCKET".into(), path.display().to_string())],
        ..Launch::default()
    };
    let mut bed = TestBed::start_launched(ClusterOptions::default(), launch, |cfg, _| Ok(cfg))?;
    let old_pid = bed.proxy().context("the proxy")?.pid().context("its pid")?;
    let (ready, _) = next(&socket)?;
    ensure!(ready.contains(&format!("MAINPID={old_pid}\n")), "{ready:?}");
    drop(next(&socket)?); // the barrier, answered

    let before = bed.endpoint().connect_app().await?;
    before
        .simple_query("SELECT 1")
        .await
        .ctx("SELECT 1 before the upgrade")?;
    let staged = bin.join(".switchyard.new");
    std::fs::copy(env::proxy_binary()?, &staged)?;
    std::fs::rename(&staged, &installed)?;
    let signalled = Instant::now();
    bed.proxy().context("the proxy")?.signal(libc::SIGUSR2);

    let (ready, _) = next(&socket)?;
    let fields = lines(&ready);
    let new_pid: i32 = fields
        .first()
        .and_then(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("the new process's first message should start with MAINPID: {ready:?}"))?;
    let _cleanup = KillOnDrop(new_pid);
    ensure!(
        new_pid != old_pid as i32 && fields[1..] == ["READY=1", "STATUS=serving"],
        "after SIGUSR2: {ready:?} (old pid {old_pid})"
    );
    let (barrier, fds) = next(&socket)?;
    ensure!(lines(&barrier) == ["BARRIER=1"] && fds.len() == 1, "{barrier:?}");
    drop(fds);
    println!(
        "new main pid {new_pid} ready {:?} after SIGUSR2",
        signalled.elapsed()
    );
    let exe = |pid: i32| std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string());
    let (old_exe, new_exe) = (exe(old_pid as i32)?, exe(new_pid)?);
    ensure!(
        new_exe == installed.display().to_string() && old_exe.ends_with("(deleted)"),
        "the new process should run the installed file and the old one the replaced file: new {new_exe}, old {old_exe}"
    );

    let proxy = bed.proxy().context("the proxy")?;
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(20)))?
        .context("the old process did not exit within 20 s of the upgrade")?;
    ensure!(status.success(), "the old process exited with {status}");
    println!("old process exited {:?} after SIGUSR2", signalled.elapsed());
    socket.set_nonblocking(true)?;
    let mut buf = [0u8; 512];
    match socket.recv(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => anyhow::bail!(
            "nothing more was expected on NOTIFY_SOCKET after the new READY, got {:?}",
            other.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        ),
    }
    socket.set_nonblocking(false)?;

    let one: i32 = before
        .query_one("SELECT 1", &[])
        .await
        .ctx("SELECT 1 after the upgrade")?
        .get(0);
    ensure!(one == 1, "the connection from before answered {one}");
    let fresh = bed.endpoint().connect_app().await?;
    fresh
        .simple_query("SELECT 1")
        .await
        .ctx("a new client after the upgrade")?;
    drop((before, fresh));

    // SAFETY: kill(2) on the process that just reported itself as the service's main one.
    unsafe { libc::kill(new_pid, libc::SIGTERM) };
    let (stopping, _) = next(&socket)?;
    ensure!(
        lines(&stopping) == ["STOPPING=1"],
        "SIGTERM to the new process: {stopping:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(new_pid) {
        ensure!(
            Instant::now() < deadline,
            "the new process did not exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `examples/systemd/switchyard.service`, with its `ExecStart` binary pointed at the built
/// proxy, passes `systemd-analyze verify` with exit status 0 and nothing printed (an
/// unknown key or section, which systemd only warns about, fails the test too); and it
/// declares `Type=notify` with `NotifyAccess=all`, which the upgrade's new process needs to
/// report its own MAINPID.
#[test]
fn the_systemd_unit_in_examples_verifies() -> Result<()> {
    use switchyard_tests::env;
    let Ok(analyze) = which("systemd-analyze") else {
        return env::skip("systemd-analyze is not installed (apt install systemd)");
    };
    let unit = std::fs::read_to_string(env::workspace_dir().join("examples/systemd/switchyard.service"))?;
    for line in ["Type=notify", "NotifyAccess=all"] {
        ensure!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    let binary = env::proxy_binary()?;
    let dir = scratch::fresh_dir("systemd-unit")?;
    let path = dir.join("switchyard.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/switchyard", &binary.display().to_string()),
    )?;
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && printed.trim().is_empty(),
        "systemd-analyze verify: {}\n{printed}",
        out.status
    );
    Ok(())
}

/// The path of `program` on `PATH`.
fn which(program: &str) -> Result<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} not on PATH"))
}
