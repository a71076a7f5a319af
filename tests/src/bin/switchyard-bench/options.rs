//! The benchmark's settings: the flags and environment variables, with the defaults, the
//! `--quick`, `--plugin-tax`, `--read-routing` and `--pipeline` overrides and the checks of the shell
//! script this program replaced (same names, same messages, exit status 2 on a bad one).

use std::fmt;

/// `--help`: the usage, the method and the output format.
pub const HELP: &str = include_str!("help.txt");

/// A bad flag or setting (exit status 2).
#[derive(Debug, PartialEq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Help,
    Run(Box<Options>),
}

/// One cell of the plugin tax, the read-routing row or the pipelined-pooling row:
/// `MODE:CLIENTS`.
#[derive(Clone, Debug, PartialEq)]
pub struct CellSpec {
    pub mode: String,
    pub clients: u32,
}

impl fmt::Display for CellSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.mode, self.clients)
    }
}

/// Every setting of a run (see `help.txt` for what each does).
#[derive(Clone, Debug)]
pub struct Options {
    /// `--dry-run`: check the settings, print the plan, run nothing.
    pub dry_run: bool,
    /// The matrix, the reconnect rows and the idle memory (PgBouncer and direct Postgres):
    /// not with `--plugin-tax`, `--read-routing` or `--pipeline`.
    pub matrix: bool,
    /// The plugin tax (the pool-mode plugin's proxy): in a full run or with `--plugin-tax`.
    pub tax: bool,
    /// The read-routing row (two streaming replicas): in a full run or with `--read-routing`.
    pub routing: bool,
    /// The pipelined-pooling row: in a full run or with `--pipeline`.
    pub pipeline: bool,
    pub keep: bool,
    pub clients: Vec<u32>,
    pub pooler_clients: Vec<u32>,
    pub reconnect_clients: Vec<u32>,
    pub idle_clients: u32,
    pub workers: Option<u32>,
    /// `THREADING`: Switchyard's `[proxy] threading` (`shared` or `per-core`); unset, the
    /// proxy's default.
    pub threading: Option<String>,
    /// As given (passed to pgbench as it is, printed as it is).
    pub sampling: String,
    pub duration: u32,
    pub modes: Vec<String>,
    pub pool_size: u32,
    pub scale: u32,
    pub jobs: u32,
    pub rounds: u32,
    /// Empty without the plugin tax.
    pub tax_cells: Vec<CellSpec>,
    /// Empty without the read-routing row.
    pub routing_cells: Vec<CellSpec>,
    /// `PIPELINE_CELLS`: empty without the pipelined-pooling row.
    pub pipeline_cells: Vec<CellSpec>,
    pub callgrind: bool,
    pub cg_clients: u32,
    /// `CG_MODE`: pgbench -M of the runs under callgrind.
    pub cg_mode: String,
    pub cg_tx: (u32, u32),
    pub cg_warmup: u32,
    pub cg_workers: u32,
    /// `CG_CACHE_SIM`: callgrind also simulates the caches (D1mr, DLmr, ... per function).
    pub cg_cache_sim: bool,
    /// `CG_RECONNECT`: the runs under callgrind log in for every transaction (pgbench -C),
    /// so the figure per transaction is a login's cost plus a transaction's.
    pub cg_reconnect: bool,
    /// `STRACE`: a short run under `strace -c -f` per proxy and cell of the matrix and of
    /// the pipelined-pooling row (off when neither runs).
    pub strace: bool,
    /// `STRACE_SECONDS`: pgbench -T of those runs.
    pub strace_secs: u32,
    /// `PLUGIN`: a pool-mode component used as it is.
    pub plugin: Option<String>,
    /// `SWITCHYARD_BIN`: a prebuilt proxy.
    pub prebuilt: Option<String>,
}

/// The most clients a session-mode PgBouncer gets servers for (`-M prepared`).
pub const SESSION_POOL_MAX: u32 = 256;

impl Options {
    /// Pool size of the session-mode PgBouncer for `-M prepared`: one server per client, for
    /// the largest client count up to [`SESSION_POOL_MAX`]; 0 without `-M prepared`.
    pub fn session_pool_size(&self) -> u32 {
        if !self.modes.iter().any(|m| m == "prepared") {
            return 0;
        }
        self.all_clients()
            .filter(|&c| c <= SESSION_POOL_MAX)
            .max()
            .unwrap_or(0)
    }

    /// The matrix's client counts: CLIENTS, then POOLER_CLIENTS.
    pub fn all_clients(&self) -> impl Iterator<Item = u32> + '_ {
        self.clients.iter().chain(&self.pooler_clients).copied()
    }

    /// A client count measured only through the poolers.
    pub fn pooler_only(&self, c: u32) -> bool {
        self.pooler_clients.contains(&c) && !self.clients.contains(&c)
    }
}

fn positive(name: &str, v: &str) -> Result<u32, UsageError> {
    match v.parse::<u32>() {
        Ok(n) if n > 0 && !v.starts_with('0') && !v.starts_with('+') => Ok(n),
        _ => Err(UsageError(format!(
            "{name} must be a positive integer, got '{v}'"
        ))),
    }
}

fn number(name: &str, v: &str) -> Result<u32, UsageError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UsageError(format!("{name} must be a number, got '{v}'")));
    }
    v.parse()
        .map_err(|_| UsageError(format!("{name} must be a number, got '{v}'")))
}

/// A setting that is `0` (off) or `1` (on).
fn switch(name: &str, v: &str) -> Result<bool, UsageError> {
    match v {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(UsageError(format!("{name} must be 0 or 1, got '{other}'"))),
    }
}

/// `MODE:CLIENTS ...` of the setting `name` (TAX_CELLS, ROUTING_CELLS, PIPELINE_CELLS), each
/// mode one of `modes`: at least one.
fn parse_cells(name: &str, value: &str, modes: &[&str]) -> Result<Vec<CellSpec>, UsageError> {
    let mut cells = Vec::new();
    for cell in value.split_whitespace() {
        let bad = || {
            UsageError(format!(
                "{name} entries are MODE:CLIENTS (MODE {}; e.g. simple:64), got '{cell}'",
                modes.join(" or ")
            ))
        };
        let (mode, c) = cell.split_once(':').ok_or_else(bad)?;
        if !modes.contains(&mode) {
            return Err(bad());
        }
        cells.push(CellSpec {
            mode: mode.to_owned(),
            clients: positive(name, c).map_err(|_| bad())?,
        });
    }
    if cells.is_empty() {
        return Err(UsageError(format!("{name} is empty")));
    }
    Ok(cells)
}

/// Parses the flags and reads the settings through `env` (the process environment in
/// `main`, a map in the tests).
pub fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Command, UsageError> {
    let (mut quick, mut keep, mut dry_run) = (false, false, false);
    let (mut tax_only, mut routing_only, mut pipeline_only) = (false, false, false);
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            "--plugin-tax" => tax_only = true,
            "--read-routing" => routing_only = true,
            "--pipeline" => pipeline_only = true,
            "--keep" => keep = true,
            "--dry-run" => dry_run = true,
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(UsageError(format!("unknown argument: {other} (try --help)"))),
        }
    }
    // `${VAR:-default}`: unset or empty means the default.
    let var = |name: &str, default: &str| {
        env(name)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };

    let mut clients = var("CLIENTS", "1 16 64 256");
    let mut pooler_clients = var("POOLER_CLIENTS", "1000");
    let mut duration = var("DURATION", "10");
    let mut modes = var("MODES", "simple extended prepared");
    let mut tax_cells = var("TAX_CELLS", "simple:64 extended:16");
    let mut routing_cells = var("ROUTING_CELLS", "simple:16 simple:64");
    let mut pipeline_cells = var("PIPELINE_CELLS", "simple:16 simple:64");
    let mut callgrind = var("CALLGRIND", "1");
    let mut strace = var("STRACE", "1");
    let mut idle_clients = env("IDLE_CLIENTS").filter(|v| !v.is_empty());
    let mut rounds = env("ROUNDS").filter(|v| !v.is_empty());
    // `${RECONNECT_CLIENTS-16}`: only unset means the default; empty skips the rows.
    let mut reconnect = env("RECONNECT_CLIENTS").unwrap_or_else(|| "16".to_owned());
    if quick {
        clients = "16 64".into();
        pooler_clients = String::new();
        idle_clients.get_or_insert_with(|| "1000".into());
        rounds.get_or_insert_with(|| "1".into());
        duration = "5".into();
        modes = "simple".into();
        tax_cells = "simple:64".into();
        routing_cells = "simple:64".into();
        pipeline_cells = "simple:64".into();
        callgrind = "0".into();
    }
    // Each of these flags measures only what it names (several: those), without the matrix.
    let matrix = !(tax_only || routing_only || pipeline_only);
    if !matrix {
        clients = String::new();
        pooler_clients = String::new();
        modes = String::new();
        idle_clients = Some("0".into());
        reconnect = String::new();
        if !pipeline_only {
            strace = "0".into();
        }
    }
    let rounds = rounds.unwrap_or_else(|| "3".into());
    let idle_clients = idle_clients.unwrap_or_else(|| "10000".into());
    let pool_size = var("POOL_SIZE", "20");
    let scale = var("SCALE", "10");
    let jobs = var("JOBS", "2");
    let cg_clients = var("CG_CLIENTS", "1");
    let cg_mode = var("CG_MODE", "simple");
    let cg_tx = var("CG_TX", "1000 10000");
    let cg_warmup = var("CG_WARMUP", "200");
    let cg_workers = var("CG_WORKERS", "1");
    let cg_cache_sim = var("CG_CACHE_SIM", "0");
    let cg_reconnect = var("CG_RECONNECT", "0");
    let workers = env("WORKERS").filter(|v| !v.is_empty());
    let threading = env("THREADING").filter(|v| !v.is_empty());
    let strace_secs = var("STRACE_SECONDS", "3");

    let duration = positive("DURATION", &duration)?;
    let pool_size = positive("POOL_SIZE", &pool_size)?;
    let scale = positive("SCALE", &scale)?;
    let jobs = positive("JOBS", &jobs)?;
    let rounds = positive("ROUNDS", &rounds)?;
    let cg_clients = positive("CG_CLIENTS", &cg_clients)?;
    let cg_warmup = positive("CG_WARMUP", &cg_warmup)?;
    let cg_workers = number("CG_WORKERS", &cg_workers)?;
    let cg_cache_sim = switch("CG_CACHE_SIM", &cg_cache_sim)?;
    let cg_reconnect = switch("CG_RECONNECT", &cg_reconnect)?;
    let callgrind = switch("CALLGRIND", &callgrind)?;
    let strace = switch("STRACE", &strace)?;
    let strace_secs = positive("STRACE_SECONDS", &strace_secs)?;
    let cg_tx = {
        let bad = || {
            UsageError(format!(
                "CG_TX must be two positive integers, the second larger, got '{cg_tx}'"
            ))
        };
        let parts: Vec<&str> = cg_tx.split_whitespace().collect();
        let [a, b] = parts[..] else { return Err(bad()) };
        match (positive("CG_TX", a), positive("CG_TX", b)) {
            (Ok(a), Ok(b)) if b > a => (a, b),
            _ => return Err(bad()),
        }
    };
    let all_modes = ["simple", "extended", "prepared"];
    if !all_modes.contains(&cg_mode.as_str()) {
        return Err(UsageError(format!("CG_MODE: unknown mode '{cg_mode}'")));
    }
    let mut tax_cells = parse_cells("TAX_CELLS", &tax_cells, &all_modes)?;
    let mut routing_cells = parse_cells("ROUTING_CELLS", &routing_cells, &all_modes)?;
    // PgBouncer 1.18 cannot pool -M prepared by transaction, and pipelining takes only
    // simple-protocol Queries (the extended protocol is there for comparison).
    let mut pipeline_cells = parse_cells("PIPELINE_CELLS", &pipeline_cells, &all_modes[..2])?;
    if !matrix && !tax_only {
        tax_cells.clear();
    }
    if !matrix && !routing_only {
        routing_cells.clear();
    }
    if !matrix && !pipeline_only {
        pipeline_cells.clear();
    }
    let counts = |list: &str| -> Result<Vec<u32>, UsageError> {
        list.split_whitespace()
            .map(|c| {
                positive("", c).map_err(|_| {
                    UsageError(format!(
                        "CLIENTS, POOLER_CLIENTS and RECONNECT_CLIENTS must be positive integers, got '{c}'"
                    ))
                })
            })
            .collect()
    };
    let clients = counts(&clients)?;
    let pooler_clients = counts(&pooler_clients)?;
    let reconnect_clients = counts(&reconnect)?;
    let idle_clients = number("IDLE_CLIENTS", &idle_clients)?;
    let workers = workers.map(|w| number("WORKERS", &w)).transpose()?;
    if let Some(t) = threading
        .as_deref()
        .filter(|t| !["shared", "per-core"].contains(t))
    {
        return Err(UsageError(format!(
            "THREADING must be shared or per-core, got '{t}'"
        )));
    }
    let modes: Vec<String> = modes.split_whitespace().map(str::to_owned).collect();
    if let Some(m) = modes
        .iter()
        .find(|m| !["simple", "extended", "prepared"].contains(&m.as_str()))
    {
        return Err(UsageError(format!("MODES: unknown mode '{m}'")));
    }
    Ok(Command::Run(Box::new(Options {
        dry_run,
        matrix,
        tax: !tax_cells.is_empty(),
        routing: !routing_cells.is_empty(),
        pipeline: !pipeline_cells.is_empty(),
        keep,
        clients,
        pooler_clients,
        reconnect_clients,
        idle_clients,
        workers,
        threading,
        sampling: var("SAMPLING", "0.1"),
        duration,
        modes,
        pool_size,
        scale,
        jobs,
        rounds,
        // The callgrind runs belong to the plugin tax and the read-routing row.
        callgrind: callgrind && !(tax_cells.is_empty() && routing_cells.is_empty()),
        tax_cells,
        routing_cells,
        pipeline_cells,
        cg_clients,
        cg_mode,
        cg_tx,
        cg_warmup,
        cg_workers,
        cg_cache_sim,
        cg_reconnect,
        strace,
        strace_secs,
        plugin: env("PLUGIN").filter(|v| !v.is_empty()),
        prebuilt: env("SWITCHYARD_BIN").filter(|v| !v.is_empty()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Options, UsageError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        match parse(&args, |k| env.get(k).cloned())? {
            Command::Run(o) => Ok(*o),
            Command::Help => panic!("expected a run"),
        }
    }

    /// A plain run: the full matrix, the plugin tax and the read-routing row, 3 rounds,
    /// callgrind on, reconnect rows at 16 clients.
    #[test]
    fn defaults_are_the_full_run() {
        let o = run(&[], &[]).unwrap();
        assert_eq!(o.clients, [1, 16, 64, 256]);
        assert_eq!(o.pooler_clients, [1000]);
        assert_eq!(o.reconnect_clients, [16]);
        assert_eq!(
            (o.duration, o.rounds, o.idle_clients, o.pool_size, o.scale, o.jobs),
            (10, 3, 10_000, 20, 10, 2)
        );
        assert_eq!(o.modes, ["simple", "extended", "prepared"]);
        assert_eq!(
            o.tax_cells.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["simple:64", "extended:16"]
        );
        assert_eq!(
            o.routing_cells
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["simple:16", "simple:64"]
        );
        assert!(o.matrix && o.tax && o.routing && o.pipeline);
        assert_eq!(
            o.pipeline_cells
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["simple:16", "simple:64"]
        );
        assert!(o.callgrind);
        assert_eq!(
            (o.cg_clients, o.cg_tx, o.cg_warmup, o.cg_workers),
            (1, (1000, 10_000), 200, 1)
        );
        assert_eq!(o.session_pool_size(), 256);
        assert!(o.pooler_only(1000) && !o.pooler_only(64));
        assert_eq!((o.strace, o.strace_secs), (true, 3));
    }

    /// --quick fixes the matrix (ignoring CLIENTS, DURATION, MODES) and the tax and routing
    /// cells, but keeps ROUNDS and IDLE_CLIENTS when given.
    #[test]
    fn quick_overrides() {
        let o = run(
            &["--quick"],
            &[("CLIENTS", "1"), ("DURATION", "2"), ("MODES", "extended")],
        )
        .unwrap();
        assert_eq!(o.clients, [16, 64]);
        assert!(o.pooler_clients.is_empty());
        assert_eq!((o.duration, o.rounds, o.idle_clients), (5, 1, 1000));
        assert_eq!(o.modes, ["simple"]);
        assert!(!o.callgrind);
        assert_eq!(o.session_pool_size(), 0);
        assert!(o.matrix && o.tax && o.routing && o.pipeline);
        let cells = |c: &[CellSpec]| c.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(cells(&o.tax_cells), ["simple:64"]);
        assert_eq!(cells(&o.routing_cells), ["simple:64"]);
        assert_eq!(cells(&o.pipeline_cells), ["simple:64"]);
        let o = run(&["--quick"], &[("ROUNDS", "2"), ("IDLE_CLIENTS", "0")]).unwrap();
        assert_eq!((o.rounds, o.idle_clients), (2, 0));
    }

    /// --plugin-tax measures nothing but the tax cells and callgrind.
    #[test]
    fn plugin_tax_only() {
        let o = run(&["--plugin-tax"], &[("CLIENTS", "1"), ("RECONNECT_CLIENTS", "4")]).unwrap();
        assert!(!o.matrix && o.tax && !o.routing && !o.pipeline);
        assert!(o.clients.is_empty() && o.modes.is_empty() && o.reconnect_clients.is_empty());
        assert!(o.routing_cells.is_empty() && o.pipeline_cells.is_empty());
        assert_eq!((o.idle_clients, o.rounds), (0, 3));
        assert!(o.callgrind);
        assert!(!o.strace, "no strace runs without the matrix");
    }

    /// --read-routing measures nothing but the routing cells (ROUTING_CELLS as given) and
    /// callgrind; with --plugin-tax too, both; with --quick, one cell and no callgrind.
    #[test]
    fn read_routing_only() {
        let o = run(
            &["--read-routing"],
            &[("CLIENTS", "1"), ("ROUTING_CELLS", "extended:8 simple:32")],
        )
        .unwrap();
        assert!(!o.matrix && !o.tax && o.routing && !o.pipeline);
        assert!(o.clients.is_empty() && o.modes.is_empty() && o.reconnect_clients.is_empty());
        assert!(o.tax_cells.is_empty() && o.pipeline_cells.is_empty());
        assert_eq!(
            o.routing_cells
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["extended:8", "simple:32"]
        );
        assert_eq!((o.idle_clients, o.rounds), (0, 3));
        assert!(o.callgrind);
        let o = run(&["--read-routing", "--plugin-tax"], &[]).unwrap();
        assert!(!o.matrix && o.tax && o.routing);
        let o = run(&["--read-routing", "--quick"], &[]).unwrap();
        assert_eq!(o.routing_cells.len(), 1);
        assert_eq!((o.rounds, o.callgrind), (1, false));
    }

    /// --pipeline measures nothing but the PIPELINE_CELLS cells (no matrix, no idle memory,
    /// no reconnect rows, no tax or routing cells, no callgrind) but keeps the strace runs
    /// (STRACE=0 turns them off); with --quick one cell; with --plugin-tax too, both.
    #[test]
    fn pipeline_only() {
        let o = run(
            &["--pipeline"],
            &[("CLIENTS", "1"), ("PIPELINE_CELLS", "simple:8 extended:32")],
        )
        .unwrap();
        assert!(!o.matrix && !o.tax && !o.routing && o.pipeline);
        assert!(o.clients.is_empty() && o.modes.is_empty() && o.reconnect_clients.is_empty());
        assert!(o.tax_cells.is_empty() && o.routing_cells.is_empty());
        assert_eq!(
            o.pipeline_cells
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["simple:8", "extended:32"]
        );
        assert_eq!(
            (o.idle_clients, o.rounds, o.duration, o.pool_size),
            (0, 3, 10, 20)
        );
        assert!(o.strace, "the pipelined row has its strace runs");
        assert!(
            !o.callgrind,
            "callgrind belongs to the plugin tax and read routing"
        );
        let o = run(&["--pipeline"], &[("STRACE", "0")]).unwrap();
        assert!(!o.strace);
        let o = run(&["--pipeline", "--quick"], &[]).unwrap();
        assert_eq!(o.pipeline_cells.len(), 1);
        assert_eq!((o.rounds, o.duration), (1, 5));
        let o = run(&["--pipeline", "--plugin-tax"], &[]).unwrap();
        assert!(!o.matrix && o.tax && !o.routing && o.pipeline && o.strace);
    }

    /// An empty RECONNECT_CLIENTS skips the reconnect rows; other empty settings take defaults.
    #[test]
    fn empty_settings() {
        let o = run(
            &[],
            &[
                ("RECONNECT_CLIENTS", ""),
                ("DURATION", ""),
                ("WORKERS", ""),
                ("THREADING", ""),
            ],
        )
        .unwrap();
        assert!(o.reconnect_clients.is_empty());
        assert_eq!(o.duration, 10);
        assert_eq!(o.workers, None);
        assert_eq!(o.threading, None);
    }

    /// THREADING passes `shared` or `per-core` to the proxy and refuses anything else.
    #[test]
    fn threading() {
        let o = run(&[], &[("THREADING", "per-core")]).unwrap();
        assert_eq!(o.threading.as_deref(), Some("per-core"));
        let e = run(&[], &[("THREADING", "percore")]).unwrap_err();
        assert!(e.0.contains("THREADING") && e.0.contains("percore"), "{}", e.0);
    }

    /// STRACE=0 turns the strace runs off, STRACE_SECONDS sets their length; --quick keeps
    /// them (3 s), --read-routing has none.
    #[test]
    fn strace_settings() {
        let o = run(&[], &[("STRACE", "0"), ("STRACE_SECONDS", "7")]).unwrap();
        assert_eq!((o.strace, o.strace_secs), (false, 7));
        let o = run(&["--quick"], &[]).unwrap();
        assert_eq!((o.strace, o.strace_secs), (true, 3));
        let o = run(&["--read-routing"], &[("STRACE", "1")]).unwrap();
        assert!(!o.strace);
    }

    /// Bad flags and settings are refused with the setting's name and value.
    #[test]
    fn bad_settings_are_refused() {
        let err = |args: &[&str], env: &[(&str, &str)]| run(args, env).unwrap_err().0;
        assert_eq!(err(&["--fast"], &[]), "unknown argument: --fast (try --help)");
        assert_eq!(
            err(&[], &[("DURATION", "0")]),
            "DURATION must be a positive integer, got '0'"
        );
        assert_eq!(
            err(&[], &[("ROUNDS", "x")]),
            "ROUNDS must be a positive integer, got 'x'"
        );
        assert_eq!(
            err(&[], &[("CALLGRIND", "yes")]),
            "CALLGRIND must be 0 or 1, got 'yes'"
        );
        assert_eq!(err(&[], &[("STRACE", "2")]), "STRACE must be 0 or 1, got '2'");
        assert_eq!(
            err(&[], &[("STRACE_SECONDS", "0")]),
            "STRACE_SECONDS must be a positive integer, got '0'"
        );
        assert_eq!(
            err(&[], &[("CG_TX", "100 100")]),
            "CG_TX must be two positive integers, the second larger, got '100 100'"
        );
        assert!(err(&[], &[("CG_TX", "1 2 3")]).starts_with("CG_TX must be"));
        assert_eq!(err(&[], &[("CG_MODE", "fast")]), "CG_MODE: unknown mode 'fast'");
        assert_eq!(
            err(&[], &[("TAX_CELLS", "simple")]),
            "TAX_CELLS entries are MODE:CLIENTS (MODE simple or extended or prepared; e.g. simple:64), got 'simple'"
        );
        assert!(err(&[], &[("TAX_CELLS", "copy:4")]).starts_with("TAX_CELLS entries"));
        assert_eq!(
            err(&["--read-routing"], &[("ROUTING_CELLS", "simple:0")]),
            "ROUTING_CELLS entries are MODE:CLIENTS (MODE simple or extended or prepared; e.g. simple:64), got 'simple:0'"
        );
        assert_eq!(err(&[], &[("ROUTING_CELLS", " ")]), "ROUTING_CELLS is empty");
        assert_eq!(
            err(&["--pipeline"], &[("PIPELINE_CELLS", "prepared:16")]),
            "PIPELINE_CELLS entries are MODE:CLIENTS (MODE simple or extended; e.g. simple:64), got 'prepared:16'"
        );
        assert!(err(&[], &[("CLIENTS", "1 -4")]).ends_with("got '-4'"));
        assert_eq!(
            err(&[], &[("IDLE_CLIENTS", "lots")]),
            "IDLE_CLIENTS must be a number, got 'lots'"
        );
        assert_eq!(
            err(&[], &[("MODES", "simple copy")]),
            "MODES: unknown mode 'copy'"
        );
        let args: Vec<String> = vec!["--help".into()];
        assert!(matches!(parse(&args, |_| None), Ok(Command::Help)));
    }
}
