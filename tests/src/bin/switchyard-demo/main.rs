//! `switchyard-demo`: the project's demo (a Patroni cluster behind Switchyard on this
//! machine), run by `scripts/demo` after it has installed the prerequisites and built the
//! proxy and the plugins. It is the test bed's own parts at fixed ports: the etcd and
//! Patroni nodes of [`switchyard_tests::patroni`] (each node's configuration rendered from
//! `examples/patroni/patroni.yml`, the template users copy, so the demo proves it), the
//! proxy process of [`switchyard_tests::proxy`], and for `--tour` the load of
//! [`switchyard_tests::load`]. `--help` (`help.txt`) is the user's contract: ports, users,
//! options, settings, exit status.
//!
//! Progress goes to stderr, the tour's report to stdout. Exit status: with `--tour`, the
//! tour's verdict (0 or 1) however the demo ends after it; else 0 after `--check`, 130 when
//! stopped by a signal, 1 on an error or when the proxy exits by itself.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use switchyard_tests::interrupt;
use switchyard_tests::patroni::{patroni_program, FixedLayout, PatroniCluster, PatroniOptions};
use switchyard_tests::proxy::{Launch, Proxy};
use switchyard_tests::{env, roles, shipped, Endpoint};

use options::{Cli, Options, API_PORTS, HELP, PG_PORTS};

mod follow;
mod options;
mod tour;

/// A progress line on stderr, as `scripts/lib.sh`'s `log` writes them: `==> message`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::progress(&format!($($arg)*))
    };
}

/// Writes one progress line (bold on a terminal).
fn progress(message: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("\x1b[1m==> {message}\x1b[0m");
    } else {
        eprintln!("==> {message}");
    }
}

/// Patroni's scope (cluster name).
const SCOPE: &str = "demo";

/// Where the proxy's Unix-domain socket goes (`.s.PGSQL.<port>`), so that
/// `psql -h /tmp -p 6432 app` reaches it as it would a local Postgres.
const UNIX_SOCKET_DIR: &str = "/tmp";
fn error(message: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("\x1b[31merror: {message}\x1b[0m");
    } else {
        eprintln!("error: {message}");
    }
}

fn main() -> ExitCode {
    // The demo serves until stopped: the tests' deadline must not end it.
    switchyard_tests::deadline::disable();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = match options::parse(&args, |k| std::env::var(k).ok()) {
        Ok(Cli::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Run(opt)) => opt,
        Err(e) => {
            error(&e);
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = options::check_ports(&opt) {
        error(&e);
        return ExitCode::FAILURE;
    }
    if opt.check {
        return ExitCode::SUCCESS;
    }
    // The release proxy unless told otherwise (scripts/demo sets SWITCHYARD_BIN to the one it
    // built); set before any thread exists.
    if std::env::var_os("SWITCHYARD_PROFILE").is_none() {
        std::env::set_var("SWITCHYARD_PROFILE", "release");
    }
    interrupt::install();
    let mut demo = match Demo::new(&opt) {
        Ok(demo) => demo,
        Err(e) => {
            error(&format!("{e:#}"));
            return ExitCode::FAILURE;
        }
    };
    let status = match demo.run(&opt) {
        Ok(status) => status,
        Err(e) => {
            let interrupted = interrupt::check().is_err();
            if !interrupted {
                error(&format!("{e:#}"));
            }
            // The tour's verdict stands, however the demo ends after it.
            match demo.tour_passed {
                Some(passed) => u8::from(!passed),
                None if interrupted => 130,
                None => 1,
            }
        }
    };
    demo.stop();
    ExitCode::from(status)
}

/// Everything the demo started, stopped in order by [`Demo::stop`] (also on drop).
struct Demo {
    dir: PathBuf,
    /// `DEMO_DIR` given: the data stays.
    keep: bool,
    cluster: Option<PatroniCluster>,
    proxy: Option<Proxy>,
    /// The tour's verdict, once it ran.
    tour_passed: Option<bool>,
    stopped: bool,
}

impl Demo {
    /// The directory: `DEMO_DIR` (created if missing) or a fresh one in the temporary
    /// directory.
    fn new(opt: &Options) -> Result<Self> {
        let (dir, keep) = match &opt.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                (dir.canonicalize()?, true)
            }
            None => (fresh_temp_dir()?, false),
        };
        Ok(Self {
            dir,
            keep,
            cluster: None,
            proxy: None,
            tour_passed: None,
            stopped: false,
        })
    }

    /// Starts the cluster and the proxy, runs the tour if asked, prints the banner and
    /// serves. The exit status.
    fn run(&mut self, opt: &Options) -> Result<u8> {
        let proxy_addr = format!("127.0.0.1:{}", opt.port);
        let password_file = self.dir.join("admin.pass");
        shipped::write_admin_password(&password_file)?;
        let template = shipped::template(&proxy_addr, &password_file);
        let layout = FixedLayout {
            dir: self.dir.clone(),
            scope: SCOPE.to_owned(),
            ports: PG_PORTS.into_iter().zip(API_PORTS).collect(),
            etcd_port: opt.etcd_port,
        };
        log!("starting etcd and Patroni in {}", self.dir.display());
        let cluster = self.cluster.insert(PatroniCluster::start_with(
            PatroniOptions::default()
                .layout(layout)
                .template(template)
                .progress(progress)
                .interruptible(|| interrupt::check().is_err()),
        )?);
        let leader = cluster.wait_for_leader(Duration::from_secs(30))?;
        log!(
            "Patroni cluster '{SCOPE}' healthy: leader {} ({}), the other node its synchronous standby",
            leader.name(),
            leader.addr()
        );

        let config =
            shipped::proxy_config(cluster, &proxy_addr)?.set("proxy.unix_socket_dir", UNIX_SOCKET_DIR);
        log!(
            "starting switchyard on {proxy_addr} and {UNIX_SOCKET_DIR}/.s.PGSQL.{} (log {})",
            opt.port,
            self.dir.join("switchyard.log").display()
        );
        let launch = Launch {
            dir: Some(self.dir.clone()),
            checks_on_drop: false,
            stop_grace: Duration::from_secs(30),
            ..Launch::default()
        };
        let proxy = self.proxy.insert(Proxy::start_with(config, launch)?);
        let endpoint = Endpoint::new(&proxy.host(), proxy.port());

        let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
        let rows = runtime.block_on(write_demo_row(&endpoint))?;
        if opt.tour {
            let cluster = self.cluster.as_ref().expect("started above");
            self.tour_passed = Some(tour::run(&runtime, cluster, &endpoint)?);
        }
        self.banner(opt.port, rows)?;
        let verdict = self.tour_passed.map(|passed| u8::from(!passed));
        if !opt.serve {
            return Ok(verdict.unwrap_or(0));
        }
        eprintln!("  Press Ctrl-C to stop everything. The proxy log follows.\n");
        let proxy = self.proxy.as_mut().expect("started above");
        let mut log = follow::Follow::from_end(&proxy.log_path())?;
        loop {
            log.pump();
            if interrupt::check().is_err() {
                return Ok(verdict.unwrap_or(130));
            }
            if !proxy.is_running() {
                log.pump();
                error(&format!("switchyard exited; see {}", proxy.log_path().display()));
                return Ok(verdict.unwrap_or(1));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// How to use what runs (stderr).
    fn banner(&self, port: u16, rows: i64) -> Result<()> {
        let cluster = self.cluster.as_ref().expect("started");
        let leader = cluster.leader()?;
        let [n0, n1] = [&cluster.nodes()[0], &cluster.nodes()[1]];
        let patronictl = format!(
            "{} -c {}",
            patroni_program("patronictl")?.display(),
            cluster.ctl_config_path().display()
        );
        eprintln!(
            r#"
  Switchyard is serving on 127.0.0.1:{port} and on the Unix-domain socket {UNIX_SOCKET_DIR}/.s.PGSQL.{port}
  (pool mode: transaction, {rows} row(s) in table demo)
  in front of Patroni cluster '{SCOPE}': leader {leader} ({leader_addr}).
  Replication is synchronous (Patroni synchronous_mode): a COMMIT is acknowledged once the
  standby has it, so even a crash of the leader's whole node loses no acknowledged write.

    psql "postgresql://app:app@127.0.0.1:{port}/app"                  # the application
    PGPASSWORD=app psql -h {UNIX_SOCKET_DIR} -p {port} -U app app                  # the same, over the Unix socket
    psql "postgresql://admin:admin@127.0.0.1:{port}/switchyard"       # admin console: SHOW NODES; SHOW POOLS;

  Switch over while clients run (they see a pause, not an error):
    {patronictl} switchover --force           # Patroni; its callbacks pause the proxy
    psql "postgresql://admin:admin@127.0.0.1:{port}/switchyard" -c SWITCHOVER   # the proxy drives Patroni
    {patronictl} list
  A load to watch it with (from {root}):
    cargo build --release -p switchyard-tests --bin switchyard-load && target/release/switchyard-load --port {port} --seconds 30

  Patroni nodes: {n0name} {n0addr} (REST :{n0api}), {n1name} {n1addr} (REST :{n1api}); etcd {etcd}.
  Logs in {dir}: switchyard.log, node*/patroni.log, node*/pglog/postgresql.log, etcd/etcd.log.
"#,
            leader = leader.name(),
            leader_addr = leader.addr(),
            root = env::workspace_dir().display(),
            n0name = n0.name(),
            n0addr = n0.addr(),
            n0api = n0.api_port(),
            n1name = n1.name(),
            n1addr = n1.addr(),
            n1api = n1.api_port(),
            etcd = cluster.etcd().client_addr(),
            dir = self.dir.display(),
        );
        Ok(())
    }

    /// Stops everything started, in order: the proxy, then the cluster (replicas' Patroni
    /// before the leader's, so that no failover happens; then etcd); removes the data unless
    /// `DEMO_DIR` keeps it. Signals are only recorded meanwhile, so a second Ctrl-C does not
    /// cut it short.
    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        log!("stopping");
        if let Some(mut proxy) = self.proxy.take() {
            proxy.stop();
        }
        if let Some(mut cluster) = self.cluster.take() {
            if let Err(e) = cluster.stop() {
                error(&format!("stopping Patroni: {e:#}"));
            }
        }
        if self.keep {
            log!("data kept in {}", self.dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            error(&format!("removing {}: {e}", self.dir.display()));
        }
        log!("stopped; nothing left running");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A new, empty `switchyard-demo.<pid>[-n]` in the temporary directory.
fn fresh_temp_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("switchyard-demo.{}", std::process::id()));
    for n in 0..100 {
        let dir = match n {
            0 => base.clone(),
            n => PathBuf::from(format!("{}-{n}", base.display())),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    anyhow::bail!("no free name like {} in the temporary directory", base.display())
}

/// Writes a row through the proxy into table `demo` (made if missing); the rows in it.
async fn write_demo_row(proxy: &Endpoint) -> Result<i64> {
    let client = proxy.connect(roles::APP.0, roles::APP.1, roles::APP_DB).await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS demo(id serial PRIMARY KEY, note text, at timestamptz DEFAULT now()); \
             INSERT INTO demo(note) VALUES ('written through switchyard')",
        )
        .await
        .context("writing a row into table demo through switchyard")?;
    Ok(client.query_one("SELECT count(*) FROM demo", &[]).await?.get(0))
}
