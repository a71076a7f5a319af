//! The demo's command line and settings (`help.txt` is their contract), and the check that
//! every port it needs is free, run before anything is installed or built.

use std::path::PathBuf;

use switchyard_tests::ports;

pub const HELP: &str = include_str!("help.txt");
const USAGE: &str = "usage: scripts/demo [--tour [--no-serve]]";

/// Postgres and Patroni's REST API of `node0` and `node1`.
pub const PG_PORTS: [u16; 2] = [15432, 15433];
pub const API_PORTS: [u16; 2] = [8008, 8009];

/// What the command line and the environment ask for.
#[derive(Debug)]
pub struct Options {
    pub tour: bool,
    pub serve: bool,
    /// `--check`: the options and the ports only.
    pub check: bool,
    /// The proxy's port (`DEMO_PORT`).
    pub port: u16,
    /// etcd's client port (`DEMO_ETCD_PORT`); the peer port is the next one.
    pub etcd_port: u16,
    /// `DEMO_DIR`: data kept there.
    pub dir: Option<PathBuf>,
}

pub enum Cli {
    Help,
    Run(Options),
}

pub fn parse(args: &[String], var: impl Fn(&str) -> Option<String>) -> Result<Cli, String> {
    let mut opt = Options {
        tour: false,
        serve: true,
        check: false,
        port: 6432,
        etcd_port: 12379,
        dir: var("DEMO_DIR").filter(|d| !d.is_empty()).map(PathBuf::from),
    };
    for arg in args {
        match arg.as_str() {
            "--tour" => opt.tour = true,
            "--no-serve" => opt.serve = false,
            "--check" => opt.check = true,
            "-h" | "--help" => return Ok(Cli::Help),
            _ => return Err(USAGE.to_owned()),
        }
    }
    if !opt.serve && !opt.tour {
        return Err("--no-serve only makes sense with --tour".to_owned());
    }
    let port = |name: &str, default: u16| match var(name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0 && *p < u16::MAX)
            .ok_or_else(|| format!("{name}={v:?} is not a port number")),
    };
    opt.port = port("DEMO_PORT", opt.port)?;
    opt.etcd_port = port("DEMO_ETCD_PORT", opt.etcd_port)?;
    Ok(Cli::Run(opt))
}

/// Fails, naming every port the demo needs, when one of them is taken.
pub fn check_ports(opt: &Options) -> Result<(), String> {
    let etcd_peer = opt.etcd_port + 1;
    let needed = [
        PG_PORTS[0],
        PG_PORTS[1],
        API_PORTS[0],
        API_PORTS[1],
        opt.etcd_port,
        etcd_peer,
        opt.port,
    ];
    match needed.into_iter().find(|&p| !ports::port_is_free(p)) {
        None => Ok(()),
        Some(busy) => Err(format!(
            "127.0.0.1:{busy} is already in use (a system PostgreSQL, PgBouncer, Patroni or etcd \
             service, or another demo?); the demo needs 127.0.0.1:{}, :{} (Postgres), :{}, :{} \
             (Patroni), :{}, :{etcd_peer} (etcd, or DEMO_ETCD_PORT=<free port>) and :{} (the \
             proxy, or DEMO_PORT=<free port>)",
            PG_PORTS[0], PG_PORTS[1], API_PORTS[0], API_PORTS[1], opt.etcd_port, opt.port
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], vars: &[(&str, &str)]) -> Result<Options, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let var = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        match parse(&args, var)? {
            Cli::Run(opt) => Ok(opt),
            Cli::Help => Err("help".to_owned()),
        }
    }

    #[test]
    fn options_and_settings() {
        let opt = run(&[], &[]).unwrap();
        assert!(!opt.tour && opt.serve && !opt.check);
        assert_eq!((opt.port, opt.etcd_port, opt.dir), (6432, 12379, None));
        let opt = run(
            &["--tour", "--no-serve"],
            &[
                ("DEMO_PORT", "7432"),
                ("DEMO_ETCD_PORT", "22379"),
                ("DEMO_DIR", "/x"),
            ],
        )
        .unwrap();
        assert!(opt.tour && !opt.serve);
        assert_eq!((opt.port, opt.etcd_port), (7432, 22379));
        assert_eq!(opt.dir, Some(PathBuf::from("/x")));
        assert_eq!(run(&["--help"], &[]).unwrap_err(), "help");
        assert_eq!(run(&["--bogus"], &[]).unwrap_err(), USAGE);
        assert_eq!(
            run(&["--no-serve"], &[]).unwrap_err(),
            "--no-serve only makes sense with --tour"
        );
        assert_eq!(
            run(&[], &[("DEMO_PORT", "x")]).unwrap_err(),
            "DEMO_PORT=\"x\" is not a port number"
        );
    }
}
