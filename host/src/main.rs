//! The `switchyard` command: run the proxy, or check a configuration file.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::config::{Config, Threading};
use switchyard::listener::Stopping;
use switchyard::net::listen::{ListenerKey, Listeners, Offer, UnixSocketFile};
use switchyard::state::{ConfigSource, ProxyState};
use switchyard::{replay, takeover};
use tokio::sync::{mpsc, watch};

/// Switchyard: a PostgreSQL wire proxy and connection pooler.
///
/// Point applications at Switchyard instead of their database. It authenticates clients
/// itself (SCRAM-SHA-256 or md5), pools server connections per database and user in session
/// or transaction mode, keeps clients' prepared statements and settings working across pooled
/// servers, and forwards query cancellation.
///
/// Plugins (WebAssembly components, see docs/plugins.md) can decide pooling and failover
/// policy. SIGHUP or the admin console's RELOAD re-reads the configuration file and
/// reloads changed plugins; a changed plugin file is reloaded by itself. SIGUSR2 upgrades
/// in place: the binary installed where this one was started from runs with the same
/// arguments and --takeover (see --takeover and docs/operations.md).
///
/// Logging follows RUST_LOG (e.g. RUST_LOG=switchyard=debug); the default is info. Lines are
/// human-readable, or JSON objects with --log-format json.
#[derive(Parser)]
#[command(version, about, long_about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Configuration file (TOML) to serve with.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Take over from the switchyard running with this configuration (an online restart
    /// or upgrade): load the configuration and plugins, then receive the running proxy's
    /// listening sockets over its `takeover_socket` and serve; the old process stops
    /// accepting, hands each client over between transactions (with its settings,
    /// prepared statements and cancel key) or tells it to reconnect, and exits 0. A
    /// configuration or plugin that does not load exits non-zero and leaves the running
    /// proxy serving. See docs/operations.md.
    #[arg(long, requires = "config")]
    takeover: bool,

    /// How log lines are written on stderr: `text` (human-readable) or `json` (one JSON
    /// object a line: timestamp, level, message and the line's fields, e.g. cluster and
    /// event on failover decisions).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and exit: 0 if it is valid, 1 with the key and line of
    /// the first problem otherwise.
    CheckConfig {
        /// Configuration file to check.
        file: PathBuf,
    },
    /// Run a candidate plugin against a recorded policy trace and print where its
    /// decisions differ from the recorded ones.
    ///
    /// A trace is what the proxy records with `[trace] path` or the admin console's
    /// `TRACE ON`: one JSON line per hook call (topology events, probes, errors offered for
    /// retry, routing and pool-mode questions) with its inputs and the decision given.
    /// The candidate is loaded as the proxy loads plugins (same time and memory limits, no
    /// network or files) and asked each recorded question in order; each difference is
    /// printed with its line, hook, inputs and both decisions, then a summary. Exit status:
    /// 0 no difference, 1 some differences or failed calls, 2 the plugin or trace could
    /// not be used (the message names the file and line).
    Replay {
        /// The candidate plugin (a WebAssembly component).
        #[arg(long, value_name = "P.wasm")]
        plugin: PathBuf,
        /// The trace file (JSON lines).
        #[arg(long, value_name = "T")]
        trace: PathBuf,
        /// Replay only this hook's calls (pool-mode, router, retry, switchover, health).
        #[arg(long, value_name = "H")]
        hook: Option<String>,
        /// Settings for the candidate's init, as `[plugins.NAME.settings]` would give them.
        #[arg(long, value_name = "k=v", num_args = 1..)]
        settings: Vec<String>,
    },
    /// Run a plugin against hand-written cases and print the ones it decides otherwise.
    ///
    /// The cases file (TOML) holds `[[case]]` tables: `name`, `hook` and the hook's inputs
    /// as a trace records them, and the expected `decision` (see docs/plugins.md and
    /// examples/switchover-cases.toml). Exit status as for `replay`.
    TestPlugin {
        /// The plugin (a WebAssembly component).
        #[arg(long, value_name = "P.wasm")]
        plugin: PathBuf,
        /// The cases file (TOML).
        #[arg(long, value_name = "C.toml")]
        cases: PathBuf,
        /// Settings for the plugin's init.
        #[arg(long, value_name = "k=v", num_args = 1..)]
        settings: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let logger = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => logger
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The event's fields beside `message` at the top level, not under "fields".
        LogFormat::Json => logger.json().flatten_event(true).init(),
    }
    let result = match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Replay {
            plugin,
            trace,
            hook,
            settings,
        }) => {
            return compare(|out| {
                let hook = hook.as_deref().map(replay::parse_hook).transpose()?;
                replay::replay(&plugin, &trace, hook, &replay::parse_settings(&settings)?, out)
            })
        }
        Some(Command::TestPlugin {
            plugin,
            cases,
            settings,
        }) => {
            return compare(|out| {
                replay::test_plugin(&plugin, &cases, &replay::parse_settings(&settings)?, out)
            })
        }
        None => match cli.config {
            Some(path) => run(&path, cli.takeover),
            None => Err(anyhow::anyhow!(
                "no configuration given: use --config FILE (see --help)"
            )),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match cli.log_format {
                LogFormat::Text => eprintln!("switchyard: {e:#}"),
                LogFormat::Json => tracing::error!("switchyard: {e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs `replay` or `test-plugin`: their report on stdout, exit status 0 (same
/// decisions), 1 (differences) or 2 (unusable plugin, trace or cases).
fn compare(
    run: impl FnOnce(&mut dyn std::io::Write) -> Result<replay::Summary, replay::ReplayError>,
) -> std::process::ExitCode {
    let mut out = std::io::stdout().lock();
    match run(&mut out) {
        Ok(summary) => std::process::ExitCode::from(summary.status()),
        Err(e) => {
            eprintln!("switchyard: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    for warning in switchyard::config::exposure_warnings(path, &config) {
        eprintln!("warning: {warning}");
    }
    let (_tx, rx) = watch::channel(false);
    ProxyState::new(config.clone(), None, rx)?;
    println!(
        "{}: ok ({} clusters, {} databases, {} users)",
        path.display(),
        config.clusters.len(),
        config.databases.len(),
        config.users.len()
    );
    Ok(())
}

fn run(path: &std::path::Path, takeover: bool) -> anyhow::Result<()> {
    // Read first, before anything could change the working directory.
    let successor = switchyard::upgrade::Successor::of_this_process()
        .context("cannot read this process's command line")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = Config::parse(&text, &path.display().to_string())?;
    for warning in switchyard::config::exposure_warnings(path, &config) {
        tracing::warn!("{warning}");
    }
    switchyard::net::files::ensure_open_files(&config);
    let source = ConfigSource {
        path: path.to_path_buf(),
        text,
    };
    let listen = config.proxy.listen.clone();
    let unix_path = config.proxy.unix_socket_path();
    let unix_mode = config.proxy.unix_socket_mode;
    let threading = config.proxy.threading;
    let workers = config.proxy.worker_threads();
    let takeover_path = config.proxy.takeover_socket_path();
    let metrics_addr = config.proxy.metrics_listen;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Loading plugins compiles them (seconds for large ones): done before serving, and
    // before a takeover asks the running proxy for anything.
    let state = Arc::new(ProxyState::new(config, Some(source), shutdown_rx)?);
    let mut incoming = if takeover {
        let wanted = listen
            .iter()
            .map(|addr| ListenerKey::Tcp(*addr))
            .chain(unix_path.clone().map(ListenerKey::Unix))
            .chain(metrics_addr.map(ListenerKey::Tcp))
            .collect();
        Some(takeover::Incoming::connect(&takeover_path, wanted).context("cannot take over")?)
    } else {
        None
    };
    let mut inherited = incoming
        .as_mut()
        .map(|i| std::mem::take(&mut i.inherited))
        .unwrap_or_default();
    // Bound before serving (or handed over); the file is removed when this returns (a
    // clean stop), unless another process took the socket over.
    let unix = match &unix_path {
        Some(path) => Some(match inherited.take_unix(path)? {
            Some(handed) => handed,
            None => UnixSocketFile::bind(path, unix_mode)?,
        }),
        None => None,
    };
    let unix = unix.map(|(file, listener)| (Arc::new(file), listener));
    // Bound here (or handed over) so that a takeover can pass it on too.
    let metrics = metrics_addr
        .map(|addr| metrics_listener(addr, inherited.take_tcp(addr)))
        .transpose()?;
    let unix_shown = unix.as_ref().map(|(file, _)| file.path().display().to_string());
    let (handoffs, handed) = mpsc::unbounded_channel();
    let listeners_count = match threading {
        Threading::PerCore => workers,
        Threading::Shared => 1,
    };
    let (adopters, adopted): (Vec<_>, Vec<_>) =
        (0..listeners_count).map(|_| mpsc::unbounded_channel()).unzip();
    let control = |offer: &Arc<Offer>| {
        takeover::Control::new(
            state.clone(),
            offer.clone(),
            unix.as_ref().map(|(f, _)| f),
            handed,
        )
    };
    if threading == Threading::PerCore {
        let workers = switchyard::workers::bind(
            &listen,
            unix.as_ref().map(|(f, l)| (&**f, l)),
            workers,
            &inherited,
        )?;
        drop(inherited);
        let mut offer = switchyard::workers::offer(&workers).context("cannot offer the listening sockets")?;
        offer.extend(offer_metrics(metrics_addr, metrics.as_ref())?);
        let offer = Arc::new(Offer::new(offer));
        spawn_background(&state, metrics, successor)?;
        // Before a takeover tells the old process to stop (see `ready_then_start`).
        let finisher = ready_then_start(control(&offer), incoming, adopters)?;
        tracing::info!(listen = %addresses(&listen), unix = unix_shown, workers = workers.len(), databases = state.databases.len(), users = state.users.len(), "switchyard listening (a runtime per worker)");
        let timeout = state.proxy().shutdown_timeout;
        let stopping = Stopping::new(shutdown_tx, workers.len(), offer, handoffs);
        let _unix_file = unix.map(|(file, _listener)| file);
        switchyard::workers::run(workers, state, stopping, shutdown_signal(), adopted)?;
        finisher.finish(timeout);
        return Ok(());
    }
    // One worker: tokio's single-threaded scheduler, which skips the work-stealing
    // bookkeeping (idle transitions, poll-time statistics) that costs every wake-up.
    let mut builder = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let metrics_offer = offer_metrics(metrics_addr, metrics.as_ref())?;
    spawn_background(&state, metrics, successor)?;
    let listeners = {
        let _inside = runtime.enter();
        let mut listeners = Listeners::tcp(&listen, false, &inherited, (0, 1))?;
        if let Some((file, listener)) = &unix {
            listeners.add_unix(file, listener)?;
        }
        listeners
    };
    drop(inherited);
    let mut offer = listeners.offer().context("cannot offer the listening sockets")?;
    offer.extend(metrics_offer);
    let offer = Arc::new(Offer::new(offer));
    let finisher = ready_then_start(control(&offer), incoming, adopters)?;
    let _unix_file = unix.map(|(file, _listener)| file);
    tracing::info!(listen = %addresses(&listen), unix = unix_shown, databases = state.databases.len(), users = state.users.len(), "switchyard listening");
    let timeout = state.proxy().shutdown_timeout;
    let stopping = Stopping::new(shutdown_tx, 1, offer, handoffs);
    let adopted = adopted.into_iter().next().expect("one channel");
    runtime.block_on(switchyard::listener::serve(
        listeners,
        state,
        stopping,
        shutdown_signal(),
        adopted,
    ));
    finisher.finish(timeout);
    Ok(())
}

/// Tells systemd this process serves (`notify::ready`: READY, MAINPID and a barrier), then
/// starts serving takeovers. In a process taking over, READY goes first so that systemd
/// follows this process before the old one, told that this one serves, can exit.
fn ready_then_start(
    control: takeover::Control,
    incoming: Option<takeover::Incoming>,
    adopters: Vec<mpsc::UnboundedSender<switchyard::session::Handoff>>,
) -> anyhow::Result<takeover::Finisher> {
    switchyard::notify::ready("serving");
    Ok(takeover::start(control, incoming, adopters)?)
}

/// The metrics endpoint's socket on `addr`: `handed` over by the process this one took
/// over from, or bound here.
fn metrics_listener(
    addr: std::net::SocketAddr,
    handed: Option<std::os::fd::OwnedFd>,
) -> anyhow::Result<std::net::TcpListener> {
    let listener = match handed {
        Some(fd) => std::net::TcpListener::from(fd),
        None => std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen for metrics on {addr}"))?,
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// A descriptor of the metrics endpoint's socket, keyed by its configured address, to hand
/// to a process taking over.
fn offer_metrics(
    addr: Option<std::net::SocketAddr>,
    metrics: Option<&std::net::TcpListener>,
) -> anyhow::Result<Vec<(ListenerKey, std::os::fd::OwnedFd)>> {
    use std::os::fd::AsFd;
    addr.zip(metrics)
        .map(|(addr, l)| Ok((ListenerKey::Tcp(addr), l.as_fd().try_clone_to_owned()?)))
        .into_iter()
        .collect()
}

/// `listen`'s addresses, for the log.
fn addresses(listen: &[std::net::SocketAddr]) -> String {
    let shown: Vec<String> = listen.iter().map(ToString::to_string).collect();
    shown.join(", ")
}

/// Starts what runs beside the clients on a thread and single-threaded runtime of its own:
/// reloads, probes, incident following, the pool reaper and the metrics endpoint.
///
/// Their timers (the reaper's tick each second, the plugin file watcher's, probe
/// intervals, Patroni polls) then sit in that runtime's timer wheel, not in the clients'.
/// tokio's time driver looks at its wheel each time a worker parks, twice per transaction
/// at one client, and reads the clock to set the park's timeout when the wheel holds a
/// timer: with the clients' wheel empty (no client timeouts configured, no login in
/// progress) a transaction costs about 300 instructions less (docs/performance.md).
fn spawn_background(
    state: &Arc<ProxyState>,
    metrics: Option<std::net::TcpListener>,
    successor: switchyard::upgrade::Successor,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the background runtime")?;
    // Opening the trace file may fail: reported here, before serving.
    runtime.block_on(start_background(state, metrics, successor))?;
    std::thread::Builder::new()
        .name("switchyard-background".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .context("cannot start the background thread")?;
    Ok(())
}

/// Starts the background tasks (see [`spawn_background`]) on the current runtime.
async fn start_background(
    state: &Arc<ProxyState>,
    metrics: Option<std::net::TcpListener>,
    successor: switchyard::upgrade::Successor,
) -> anyhow::Result<()> {
    let writer = state.clone();
    tokio::spawn(async move { writer.policies.trace().run_writer().await });
    state
        .policies
        .trace()
        .configure(&state.config.trace)
        .await
        .context("[trace]")?;
    tokio::spawn(switchyard::reload::run(state.clone()));
    tokio::spawn(switchyard::upgrade::on_sigusr2(successor));
    tokio::spawn(switchyard::listener::reap_pools(state.clone()));
    state.topology.spawn_probers(&state.shutdown);
    for cluster in state.topology.clusters.values().filter(|c| c.probed()) {
        tokio::spawn(switchyard::topology::follow_incidents(cluster.clone()));
    }
    if let Some(metrics) = metrics {
        let metrics = tokio::net::TcpListener::from_std(metrics).context("cannot listen for metrics")?;
        let addr = metrics.local_addr()?;
        tracing::info!(%addr, "serving Prometheus metrics on /metrics");
        tokio::spawn(switchyard::metrics::serve(metrics, state.clone()));
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
