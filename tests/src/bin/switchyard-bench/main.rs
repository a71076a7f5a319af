//! `switchyard-bench`: the project's benchmark (docs/performance.md), run by `scripts/bench`
//! after it has installed the prerequisites and built the proxy. pgbench throughput and
//! latency of Switchyard against PgBouncer and direct Postgres, memory per idle client, the
//! plugin tax, the read-routing row and the pipelined-pooling row, on the test bed's own parts: the Postgres of
//! [`switchyard_tests::cluster`], the proxy process of [`switchyard_tests::proxy`], the
//! clients of [`switchyard_tests::tools`]. `--help` prints the method, settings and output
//! format.
//!
//! Progress goes to stderr, the report to stdout; exit status 0 when every run completed
//! cleanly, 1 when some did not (the report is printed anyway), 2 for a bad setting, 130
//! when interrupted.

use std::process::{Command, ExitCode};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use switchyard_tests::{env, interrupt};

/// A progress line on stderr: `[bench   12s] message`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("[bench {:>4}s] {}", $crate::started().elapsed().as_secs(), format!($($arg)*))
    };
}

mod accounting;
mod callgrind;
mod measure;
mod options;
mod report;
mod servers;
mod stats;
mod strace;
mod under_callgrind;

use measure::{Bench, PIPELINE_TARGETS, ROUTING_TARGETS, SY, TARGETS, TAX_TARGETS};
use options::{CellSpec, Command as Cli, Options};

/// When the benchmark started (the progress lines' clock and the wall time).
fn started() -> &'static Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now)
}

fn main() -> ExitCode {
    started();
    // The benchmark runs for many minutes and stops its servers itself.
    switchyard_tests::deadline::disable();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = match options::parse(&args, |k| std::env::var(k).ok()) {
        Ok(Cli::Help) => {
            print!("{}", options::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Run(opt)) => *opt,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    // The benchmark measures the release build unless told otherwise (the tests' default is
    // debug); set before any thread exists.
    if std::env::var_os("SWITCHYARD_PROFILE").is_none() {
        std::env::set_var("SWITCHYARD_PROFILE", "release");
    }
    interrupt::install();
    match run(&opt) {
        Ok(clean) => ExitCode::from(if clean { 0 } else { 1 }),
        Err(e) => {
            if let Some(i) = e.downcast_ref::<interrupt::Interrupted>() {
                eprintln!();
                log!("{i}; cleaned up");
                return ExitCode::from(130);
            }
            log!("FATAL: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The first line a program prints for `--version`.
fn version_of(program: &str) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(env::workspace_dir())
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// What is measured: the prebuilt binary, or the commit (and whether the proxy's sources
/// have uncommitted changes).
fn what(opt: &Options) -> String {
    let rev = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    match &opt.prebuilt {
        Some(bin) => format!("switchyard binary {bin} (prebuilt; the work tree is at {rev})"),
        None => {
            let dirty = git(&["status", "--porcelain", "--", "host", "protocol", "Cargo.lock"])
                .is_some_and(|s| !s.is_empty());
            format!(
                "switchyard {rev}{}",
                if dirty {
                    " + uncommitted changes in host/ or protocol/"
                } else {
                    ""
                }
            )
        }
    }
}

fn check_prerequisites(opt: &Options) -> Result<()> {
    env::pg_program("pgbench")?;
    env::pg_program("psql")?;
    let found = |p: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if (opt.matrix || opt.pipeline) && !std::path::Path::new(servers::PGBOUNCER).exists() {
        bail!(
            "pgbouncer not found at {} (scripts/bench installs it)",
            servers::PGBOUNCER
        );
    }
    if opt.callgrind && !(found("valgrind") && found("callgrind_control")) {
        bail!("valgrind's callgrind_control not found (CALLGRIND=0 skips that measurement; scripts/bench installs it)");
    }
    if !found("pidstat") {
        bail!("pidstat not found (sysstat; scripts/bench installs it)");
    }
    if opt.strace && !found("strace") {
        bail!("strace not found (STRACE=0 skips the system call counts; scripts/bench installs it)");
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard one: the servers and pgbench inherit it, and
/// the idle clients and the pooler-only rows need thousands of sockets.
fn raise_open_files() {
    // SAFETY: getrlimit/setrlimit on this process with a valid, initialised struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A new directory for pgbench outputs, logs, configs and callgrind files.
fn work_dir() -> Result<std::path::PathBuf> {
    for n in 0..1000 {
        let dir = std::env::temp_dir().join(format!("switchyard-bench.{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                env::set_mode(&dir, 0o755)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!(
        "no free work directory name in {}",
        std::env::temp_dir().display()
    )
}

/// Cells as the settings give them, `MODE:CLIENTS ...`.
fn cells(cells: &[CellSpec]) -> String {
    cells
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The settings and the number of pgbench runs, on stderr (and on stdout for --dry-run).
fn plan(opt: &Options) -> (String, String) {
    let mut parts = Vec::new();
    if opt.matrix {
        parts.push(format!(
            "modes=[{}] clients=[{}]",
            opt.modes.join(" "),
            opt.clients
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    parts.push(format!(
        "duration={}s pool={} scale={} jobs={} rounds={}",
        opt.duration, opt.pool_size, opt.scale, opt.jobs, opt.rounds
    ));
    if opt.tax {
        parts.push(format!("plugin tax: cells=[{}]", cells(&opt.tax_cells)));
    }
    if opt.routing {
        parts.push(format!(
            "read routing: cells=[{}] replicas={}",
            cells(&opt.routing_cells),
            servers::REPLICAS
        ));
    }
    if opt.pipeline {
        parts.push(format!(
            "pipelined pooling: cells=[{}]",
            cells(&opt.pipeline_cells)
        ));
    }
    parts.push(if opt.callgrind {
        format!("callgrind=1 (-M {} -c {})", opt.cg_mode, opt.cg_clients)
    } else {
        "callgrind=0".to_owned()
    });
    if opt.matrix || opt.pipeline {
        parts.push(if opt.strace {
            format!("strace={}s", opt.strace_secs)
        } else {
            "strace=0".to_owned()
        });
    }
    let only = if opt.matrix {
        String::new()
    } else {
        format!("{} only: ", report::parts_title(opt))
    };
    let config = format!("config: {only}{}", parts.join("; "));
    let total = measure::planned_runs(opt);
    let traced = measure::planned_strace_runs(opt);
    let runs = format!(
        "{total} pgbench runs of {}s{} (about {} min){}",
        opt.duration,
        if traced > 0 {
            format!(" and {traced} under strace of {}s", opt.strace_secs)
        } else {
            String::new()
        },
        (total * (opt.duration + 1) + traced * (opt.strace_secs + 2)) / 60 + 1,
        if opt.callgrind {
            ", then callgrind (about a minute)"
        } else {
            ""
        }
    );
    (config, runs)
}

/// The whole benchmark; `Ok(true)` when every run completed cleanly.
fn run(opt: &Options) -> Result<bool> {
    let (config, runs) = plan(opt);
    if opt.dry_run {
        println!("{config}\n{runs}");
        return Ok(true);
    }
    log!("{config}");
    check_prerequisites(opt)?;
    let binary = env::proxy_binary()?;
    log!("switchyard binary: {}", binary.display());
    let proxy_name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    raise_open_files();
    let work = work_dir()?;
    log!("work dir {}", work.display());
    let result = measure_all(opt, &work, proxy_name, &runs);
    let (findings, plugin) = match result {
        Ok(r) => r,
        Err(e) => {
            remove_work(opt, &work);
            return Err(e);
        }
    };
    let cx = report::Context {
        date: utc_now(),
        what: what(opt),
        postgres_version: version_of(&env::pg_program("postgres")?.to_string_lossy()),
        pgbouncer_version: version_of(servers::PGBOUNCER),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        elapsed_secs: started().elapsed().as_secs(),
        plugin,
        work: work.display().to_string(),
        keep: opt.keep,
    };
    print!("{}", report::render(opt, &findings, &cx));
    remove_work(opt, &work);
    Ok(findings.problems.is_empty())
}

fn remove_work(opt: &Options, work: &std::path::Path) {
    if opt.keep {
        log!("kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(work);
    }
}

/// Starts the servers, measures, and stops them again (also on an error or a signal).
fn measure_all(
    opt: &Options,
    work: &std::path::Path,
    proxy_name: String,
    runs: &str,
) -> Result<(measure::Findings, Option<(String, String)>)> {
    let mut bench = Bench::start(opt, work.to_path_buf(), proxy_name)?;
    // Every target of the parts that run, once each.
    let mut targets: Vec<&str> = Vec::new();
    let parts: [(bool, &[&str]); 4] = [
        (opt.matrix, &TARGETS),
        (opt.tax, &TAX_TARGETS),
        (opt.routing, &ROUTING_TARGETS),
        (opt.pipeline, &PIPELINE_TARGETS),
    ];
    for t in parts.into_iter().filter(|p| p.0).flat_map(|p| p.1) {
        if !targets.contains(t) {
            targets.push(t);
        }
    }
    bench.warm_up(&targets)?;
    if opt.matrix && opt.idle_clients > 0 {
        bench.idle_memory(SY)?;
        bench.idle_memory("pgbouncer")?;
    }
    log!("running {runs}");
    bench.run_matrix()?;
    if opt.tax {
        log!(
            "plugin tax: tps, built-in vs pool-mode plugin, cells [{}], {} round(s)",
            cells(&opt.tax_cells),
            opt.rounds
        );
        bench.plugin_tax_tps()?;
        bench.check_plugin();
    }
    if opt.routing {
        log!(
            "read routing: tps, bench (primary) vs {} (replicas), cells [{}], {} round(s)",
            servers::READS_DB,
            cells(&opt.routing_cells),
            opt.rounds
        );
        bench.read_routing_tps()?;
    }
    if opt.pipeline {
        log!(
            "pipelined pooling: tps, CPU and system calls per transaction, {}, cells [{}], {} round(s)",
            PIPELINE_TARGETS.join(" "),
            cells(&opt.pipeline_cells),
            opt.rounds
        );
        bench.pipeline_row()?;
    }
    if opt.callgrind {
        bench.callgrind()?;
    }
    let plugin = bench.plugin.as_ref().map(|p| (p.source.clone(), p.sha.clone()));
    // Stop everything before printing so that the last line really is the last line.
    Ok((bench.finish(), plugin))
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC` (from `date`, to need no date crate).
fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
