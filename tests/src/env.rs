//! Where things live on this machine: PostgreSQL binaries, the workspace,
//! the proxy binary, the scratch directory, and which OS user runs Postgres.
//!
//! Everything the test bed needs from its surroundings is resolved here, in
//! one place, with an environment-variable override for each item, so that
//! a failing lookup produces one clear message instead of a confusing error
//! deep inside a test.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// Directory holding `initdb`, `postgres`, `pg_basebackup`, `psql`, `pgbench`.
///
/// `PG_BIN` overrides; otherwise the Debian location of PostgreSQL 15, then
/// whatever `pg_config --bindir` reports.
pub fn pg_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PG_BIN") {
            return PathBuf::from(dir);
        }
        let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
        if debian.join("postgres").exists() {
            return debian;
        }
        if let Ok(out) = std::process::Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if dir.join("postgres").exists() {
                    return dir;
                }
            }
        }
        debian
    })
}

/// Full path of a PostgreSQL program, with a hint on how to install it when
/// it is missing.
pub fn pg_program(name: &str) -> Result<PathBuf> {
    let path = pg_bin_dir().join(name);
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "PostgreSQL program {} not found (looked in {}; set PG_BIN or run \
             `scripts/lib.sh install` / `apt-get install postgresql-15`)",
            name,
            pg_bin_dir().display()
        )
    }
}

/// A test that cannot run here says so and passes, or, when `SWITCHYARD_NO_SKIP` is set
/// (`.ci/run` sets it), fails: CI must not pass on tests that did not run. Use as
/// `return env::skip("why");` from a test returning `Result<()>`.
pub fn skip(reason: &str) -> Result<()> {
    if std::env::var_os("SWITCHYARD_NO_SKIP").is_some() {
        bail!("this test would be skipped ({reason}), and SWITCHYARD_NO_SKIP is set");
    }
    eprintln!("skipped: {reason}");
    Ok(())
}

/// Root of the cargo workspace (the parent of this crate's directory).
pub fn workspace_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate lives inside the workspace")
}

/// Directory of this crate (`<workspace>/tests`), home of the client scripts.
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Build profile whose proxy binary the tests run: `SWITCHYARD_PROFILE`
/// (`debug` unless set to `release`).
pub fn proxy_profile() -> String {
    std::env::var("SWITCHYARD_PROFILE").unwrap_or_else(|_| "debug".to_owned())
}

/// Location of the `switchyard` binary under test.
///
/// `SWITCHYARD_BIN` wins. Otherwise the binary of the selected profile is
/// looked up in the target directory this test executable was built into
/// (which honours `CARGO_TARGET_DIR`), then in `<workspace>/target`.
pub fn proxy_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SWITCHYARD_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.exists() {
            bail!("SWITCHYARD_BIN={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let profile = proxy_profile();
    let mut candidates = Vec::new();
    // Test executables live in <target>/<profile>/deps/<name>-<hash>, this crate's
    // programs (switchyard-bench) in <target>/<profile>/<name>.
    if let Ok(exe) = std::env::current_exe() {
        let profile_dir = exe.parent();
        let deps = profile_dir.filter(|d| d.ends_with("deps"));
        let target = match deps {
            Some(deps) => deps.parent().and_then(Path::parent),
            None => profile_dir.and_then(Path::parent),
        };
        if let Some(target) = target {
            candidates.push(target.join(&profile).join("switchyard"));
        }
    }
    candidates.push(workspace_dir().join("target").join(&profile).join("switchyard"));
    for c in &candidates {
        if c.exists() {
            return Ok(c.clone());
        }
    }
    bail!(
        "switchyard binary not found (looked at {}); build it first with \
         `cargo build -p switchyard{}` or set SWITCHYARD_BIN",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        if profile == "release" { " --release" } else { "" }
    )
}

/// Root of all scratch data: `SWITCHYARD_TEST_TMP` if set, else
/// `/dev/shm/switchyard-tests` when that tmpfs has at least 2 GiB free
/// (copying data directories and running Postgres there is an order of
/// magnitude faster than on a loaded disk), else `$TMPDIR/switchyard-tests`.
/// Created world-traversable so the `postgres` OS user can reach its data
/// directories underneath.
pub fn scratch_root() -> Result<&'static Path> {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SWITCHYARD_TEST_TMP") {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        if free_bytes(shm).is_some_and(|free| free >= 2 << 30) {
            return shm.join("switchyard-tests");
        }
        std::env::temp_dir().join("switchyard-tests")
    });
    std::fs::create_dir_all(root).with_context(|| format!("creating scratch root {}", root.display()))?;
    set_mode(root, 0o755)?;
    Ok(root)
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is a
    // valid NUL-terminated string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }
}

/// Whether this process runs as root (then Postgres must run as `postgres`).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The OS account that owns and runs PostgreSQL processes.
#[derive(Clone, Copy, Debug)]
pub struct PgOsUser {
    pub uid: u32,
    pub gid: u32,
}

/// `None` when not root (Postgres then runs as the current user); the
/// `postgres` account (or `SWITCHYARD_PG_OS_USER`) when root, because
/// `initdb` and `postgres` refuse to run as root.
pub fn pg_os_user() -> Result<Option<PgOsUser>> {
    if !is_root() {
        return Ok(None);
    }
    let name = std::env::var("SWITCHYARD_PG_OS_USER").unwrap_or_else(|_| "postgres".to_owned());
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            return Ok(Some(PgOsUser {
                uid: fields[2].parse().context("uid in /etc/passwd")?,
                gid: fields[3].parse().context("gid in /etc/passwd")?,
            }));
        }
    }
    bail!(
        "running as root, but OS user {name:?} does not exist; PostgreSQL refuses to run as \
         root. Install postgresql-15 (creates the user) or set SWITCHYARD_PG_OS_USER"
    )
}

/// Recursively hand a directory to the Postgres OS user (no-op when not root).
pub fn chown_to_pg(path: &Path) -> Result<()> {
    if let Some(user) = pg_os_user()? {
        chown_recursive(path, user.uid, user.gid)
            .with_context(|| format!("chown {} to uid {}", path.display(), user.uid))?;
    }
    Ok(())
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_recursive(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// `chmod` helper.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {:o} {}", mode, path.display()))
}

/// Last `lines` lines of a (log) file, for failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Whether this machine has the IPv6 loopback address (`::1` on `lo` in
/// `/proc/net/if_inet6`).
pub fn has_ipv6_loopback() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|t| {
        t.lines()
            .any(|l| l.starts_with("00000000000000000000000000000001"))
    })
}
