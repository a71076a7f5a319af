//! `switchyard-load`: the failover load tool of the test bed ([`switchyard_tests::load`]) as a
//! command, for trying a switchover by hand (`scripts/demo` shows how; its `--tour` runs the
//! same load in-process).
//!
//! N clients alternate an INSERT and a SELECT (autocommit, prepared statements) into a fresh
//! table for a while, counting every client-visible error by SQLSTATE and the longest stall;
//! then every acknowledged INSERT is looked up on the primary. Prints a human summary; exits 1
//! if any client saw an error or an acknowledged write is missing or doubled, 2 if the load
//! could not run at all.
//!
//! ```text
//! switchyard-load [--host 127.0.0.1] [--port 6432] [--user app] [--password app]
//!                 [--dbname app] [--clients 8] [--seconds 15] [--verify HOST:PORT]
//!                 [--table NAME]
//! ```
//!
//! `--verify` is where the writes are checked (default: the same endpoint; through
//! Switchyard that reaches the current primary).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use switchyard_tests::load::{Load, LoadOptions, LoadReport};
use switchyard_tests::Endpoint;

const USAGE: &str = "usage: switchyard-load [--host H] [--port P] [--user U] [--password PW] \
[--dbname D] [--clients N] [--seconds S] [--verify HOST:PORT] [--table NAME]";

struct Args {
    endpoint: Endpoint,
    verify: Option<Endpoint>,
    user: String,
    password: String,
    db: String,
    clients: usize,
    seconds: f64,
    table: Option<String>,
}

fn parse_endpoint(s: &str) -> Result<Endpoint> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?}: expected HOST:PORT"))?;
    let port = port.parse().with_context(|| format!("{s:?}: bad port"))?;
    Ok(Endpoint::new(host, port))
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        endpoint: Endpoint::new("127.0.0.1", 6432),
        verify: None,
        user: "app".to_owned(),
        password: "app".to_owned(),
        db: "app".to_owned(),
        clients: 8,
        seconds: 15.0,
        table: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--host" => args.endpoint.host = value,
            "--port" => args.endpoint.port = value.parse().context("--port")?,
            "--user" => args.user = value,
            "--password" => args.password = value,
            "--dbname" => args.db = value,
            "--clients" => args.clients = value.parse().context("--clients")?,
            "--seconds" => args.seconds = value.parse().context("--seconds")?,
            "--verify" => args.verify = Some(parse_endpoint(&value)?),
            "--table" => args.table = Some(value),
            _ => bail!("unknown option {flag}"),
        }
    }
    if args.clients == 0 || !args.seconds.is_finite() || args.seconds <= 0.0 {
        bail!("--clients and --seconds must be positive");
    }
    Ok(args)
}

async fn run(args: Args) -> Result<LoadReport> {
    let mut opts = LoadOptions::new(vec![args.endpoint.clone()], args.clients).credentials(
        &args.user,
        &args.password,
        &args.db,
    );
    opts.table = args.table;
    eprintln!(
        "switchyard-load: {} clients on {} for {:.1} s",
        args.clients,
        args.endpoint.addr(),
        args.seconds
    );
    let load = Load::start(opts).await?;
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let verify = args.verify.unwrap_or(args.endpoint);
    load.finish(&verify).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("switchyard-load: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(report) => {
            println!("{report}\n\n{}", report.summary());
            if report.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("switchyard-load: {e:#}");
            ExitCode::from(2)
        }
    }
}
