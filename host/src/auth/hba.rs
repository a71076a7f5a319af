//! `auth_hba_file`: which connections may log in, and how, in the spirit of Postgres'
//! `pg_hba.conf` (PgBouncer's `auth_hba_file`). A proxy in front of every database is where
//! an operator refuses plaintext logins or whole address ranges, the admin console's
//! included; the servers' own `pg_hba.conf` only ever sees the proxy's address.
//!
//! One rule a line: `host|hostssl|hostnossl  database  user  address  method`, or
//! `local  database  user  method` for clients on the Unix-domain socket (`unix_socket_dir`;
//! `host` lines never match them, as in Postgres); `#` starts a comment. `database` and
//! `user` are `all` or comma-separated names (the admin console is database `switchyard`);
//! `address` is `all`, an IP address or a CIDR range; `method` is `scram-sha-256`, `md5`,
//! `password`, `cert` (only on `hostssl` lines) or `reject`. The first rule that matches
//! decides; a connection no rule matches is refused.

use std::net::IpAddr;
use std::path::Path;

use crate::config::ClientAuthMethod;

/// A rule file that cannot be used, with the file and line at fault.
#[derive(Debug, thiserror::Error)]
pub enum HbaError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

/// Which transport a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// TCP, with TLS or without (`host`).
    Any,
    Tls,
    Plain,
    /// The Unix-domain socket (`local`).
    Local,
}

/// What a matching rule says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaMethod {
    Auth(ClientAuthMethod),
    Reject,
}

/// Names a rule matches: `all` or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Names {
    All,
    Listed(Vec<String>),
}

impl Names {
    fn parse(field: &str) -> Result<Names, String> {
        if field == "all" {
            return Ok(Names::All);
        }
        let names: Vec<String> = field.split(',').map(str::to_owned).collect();
        if let Some(bad) = names
            .iter()
            .find(|n| n.is_empty() || n.starts_with('+') || n.starts_with('@'))
        {
            return Err(format!(
                "{bad:?}: groups (+name) and files (@file) are not supported; list names separated by commas, or all"
            ));
        }
        Ok(Names::Listed(names))
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Names::All => true,
            Names::Listed(names) => names.iter().any(|n| n == name),
        }
    }
}

/// An address range: `all`, or a network and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addresses {
    All,
    Net(IpAddr, u8),
}

impl Addresses {
    fn parse(field: &str) -> Result<Addresses, String> {
        if field == "all" {
            return Ok(Addresses::All);
        }
        let (ip, prefix) = field.split_once('/').unwrap_or((field, ""));
        let ip: IpAddr = ip.parse().map_err(|_| {
            format!(
                "{field:?} is not an address: write all, an IP address, or a CIDR range such as 10.0.0.0/8"
            )
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            "" => max,
            p => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{field:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Addresses::Net(ip, prefix))
    }

    fn matches(&self, addr: IpAddr) -> bool {
        let Addresses::Net(net, prefix) = *self else {
            return true;
        };
        // An IPv4 client on an IPv6 socket arrives as ::ffff:a.b.c.d.
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        match (net, addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => same_prefix(&n.octets(), &a.octets(), prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => same_prefix(&n.octets(), &a.octets(), prefix),
            _ => false,
        }
    }
}

fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, bits) = ((prefix / 8) as usize, prefix % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    bits == 0 || (a[whole] ^ b[whole]) >> (8 - bits) == 0
}

#[derive(Debug, Clone)]
struct Rule {
    line: usize,
    transport: Transport,
    databases: Names,
    users: Names,
    addresses: Addresses,
    method: HbaMethod,
}

/// The rules of one file, in order.
#[derive(Debug, Clone)]
pub struct HbaRules {
    path: String,
    rules: Vec<Rule>,
}

/// What the rules decided for one connection: the method, and the rule that said so
/// (`file:line`), for the log. `rule` is `None` when no rule matched (refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaDecision {
    pub method: HbaMethod,
    pub rule: Option<String>,
}

/// The connection a decision is asked for.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    pub tls: bool,
    pub database: &'a str,
    pub user: &'a str,
    /// The client's address; `None` on the Unix-domain socket.
    pub addr: Option<IpAddr>,
}

impl HbaRules {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<HbaRules, HbaError> {
        let text = std::fs::read_to_string(path).map_err(|source| HbaError::Read {
            path: path.display().to_string(),
            source,
        })?;
        HbaRules::parse(&text, &path.display().to_string())
    }

    /// Parses rule text; `path` names it in errors and decisions.
    pub fn parse(text: &str, path: &str) -> Result<HbaRules, HbaError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("");
            let fields: Vec<&str> = content.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let rule = parse_rule(line, &fields).map_err(|message| HbaError::Invalid {
                path: path.to_owned(),
                line,
                message,
            })?;
            rules.push(rule);
        }
        Ok(HbaRules {
            path: path.to_owned(),
            rules,
        })
    }

    /// The first rule matching `conn` decides; none matching is a refusal.
    pub fn decide(&self, conn: Connection<'_>) -> HbaDecision {
        let found = self.rules.iter().find(|r| {
            let transport = match (r.transport, conn.addr) {
                (Transport::Local, addr) => addr.is_none(),
                (_, None) => false,
                (Transport::Any, Some(_)) => true,
                (Transport::Tls, Some(_)) => conn.tls,
                (Transport::Plain, Some(_)) => !conn.tls,
            };
            transport
                && r.databases.matches(conn.database)
                && r.users.matches(conn.user)
                && conn.addr.is_none_or(|addr| r.addresses.matches(addr))
        });
        match found {
            Some(r) => HbaDecision {
                method: r.method,
                rule: Some(format!("{}:{}", self.path, r.line)),
            },
            None => HbaDecision {
                method: HbaMethod::Reject,
                rule: None,
            },
        }
    }

    /// The line of the first `cert` rule, if any (it needs `tls_client_ca`).
    pub fn first_cert_rule(&self) -> Option<usize> {
        self.rules
            .iter()
            .find(|r| r.method == HbaMethod::Auth(ClientAuthMethod::Cert))
            .map(|r| r.line)
    }

    /// The file the rules came from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// How many rules there are.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

fn parse_rule(line: usize, fields: &[&str]) -> Result<Rule, String> {
    let transport = match fields[0] {
        "host" => Transport::Any,
        "hostssl" => Transport::Tls,
        "hostnossl" => Transport::Plain,
        "local" => Transport::Local,
        other => {
            return Err(format!(
                "unknown connection type {other:?}: use host, hostssl, hostnossl or local"
            ))
        }
    };
    // A `local` rule has no address: it matches every client on the Unix-domain socket.
    let (database, user, address, method, rest) = match (transport, fields) {
        (Transport::Local, [_, database, user, method, rest @ ..]) => (database, user, &"all", method, rest),
        (Transport::Local, _) => {
            return Err(format!(
                "{} fields; a rule is: local database user method",
                fields.len()
            ))
        }
        (_, [_, database, user, address, method, rest @ ..]) => (database, user, address, method, rest),
        _ => {
            return Err(format!(
                "{} fields; a rule is: {} database user address method",
                fields.len(),
                fields[0]
            ))
        }
    };
    if !rest.is_empty() {
        return Err(format!(
            "unexpected {:?} after the method: options are not supported",
            rest.join(" ")
        ));
    }
    let method = match *method {
        "reject" => HbaMethod::Reject,
        name => HbaMethod::Auth(ClientAuthMethod::parse(name).ok_or_else(|| {
            format!("unknown method {name:?}: use scram-sha-256, md5, password, cert or reject")
        })?),
    };
    if method == HbaMethod::Auth(ClientAuthMethod::Cert) && transport != Transport::Tls {
        return Err("cert needs a TLS connection: write the rule as hostssl".into());
    }
    Ok(Rule {
        line,
        transport,
        databases: Names::parse(database)?,
        users: Names::parse(user)?,
        addresses: Addresses::parse(address)?,
        method,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "
# admin console over TLS only
hostssl   switchyard  all   127.0.0.1/32  scram-sha-256
host      switchyard  all   all           reject
hostnossl all         all   127.0.0.2     reject   # second loopback address: no plaintext
hostssl   app         cert  127.0.0.0/8   cert
host      app,other   app,md5user 127.0.0.0/8  md5
host      all         all   ::1/128       password
local     switchyard  all                 reject
local     all         all                 md5
";

    fn conn(tls: bool, database: &'static str, user: &'static str, addr: &str) -> Connection<'static> {
        Connection {
            tls,
            database,
            user,
            addr: Some(addr.parse().unwrap()),
        }
    }

    fn decide(c: Connection<'_>) -> (HbaMethod, Option<usize>) {
        let rules = HbaRules::parse(RULES, "hba.conf").unwrap();
        let d = rules.decide(c);
        let line = d
            .rule
            .map(|r| r.strip_prefix("hba.conf:").unwrap().parse().unwrap());
        (d.method, line)
    }

    /// The first matching rule decides, with its line; nothing matching is a refusal.
    #[test]
    fn first_match_wins_and_no_match_rejects() {
        use ClientAuthMethod::*;
        use HbaMethod::*;
        assert_eq!(
            decide(conn(true, "switchyard", "admin", "127.0.0.1")),
            (Auth(ScramSha256), Some(3))
        );
        assert_eq!(
            decide(conn(false, "switchyard", "admin", "127.0.0.1")),
            (Reject, Some(4))
        );
        assert_eq!(decide(conn(false, "app", "app", "127.0.0.2")), (Reject, Some(5)));
        assert_eq!(
            decide(conn(true, "app", "app", "127.0.0.2")),
            (Auth(Md5), Some(7))
        );
        assert_eq!(
            decide(conn(true, "app", "cert", "127.0.0.9")),
            (Auth(Cert), Some(6))
        );
        assert_eq!(decide(conn(false, "app", "cert", "127.0.0.9")), (Reject, None));
        assert_eq!(
            decide(conn(false, "other", "md5user", "127.0.0.1")),
            (Auth(Md5), Some(7))
        );
        assert_eq!(decide(conn(false, "app", "app", "10.0.0.1")), (Reject, None));
        assert_eq!(
            decide(conn(false, "app", "app", "::1")),
            (Auth(Password), Some(8))
        );
        // An IPv4 client seen through an IPv6 socket matches IPv4 rules.
        assert_eq!(
            decide(conn(false, "app", "app", "::ffff:127.0.0.2")),
            (Reject, Some(5))
        );
    }

    /// `local` rules match only clients on the Unix-domain socket, and `host` rules only
    /// TCP clients, as in Postgres.
    #[test]
    fn local_rules_match_only_unix_clients() {
        use ClientAuthMethod::*;
        use HbaMethod::*;
        let unix = |database| Connection {
            tls: false,
            database,
            user: "app",
            addr: None,
        };
        assert_eq!(decide(unix("switchyard")), (Reject, Some(9)));
        assert_eq!(decide(unix("app")), (Auth(Md5), Some(10)));
        // No `host` line matches a Unix client, even `host all all all`.
        let rules = HbaRules::parse("host all all all md5\n", "hba.conf").unwrap();
        assert_eq!(rules.decide(unix("app")).method, Reject);
        // And no `local` line matches a TCP client.
        let rules = HbaRules::parse("local all all md5\n", "hba.conf").unwrap();
        assert_eq!(
            rules.decide(conn(false, "app", "app", "127.0.0.1")).method,
            Reject
        );
    }

    #[test]
    fn prefixes_match_bit_by_bit() {
        let net = Addresses::parse("10.1.128.0/17").unwrap();
        assert!(net.matches("10.1.255.1".parse().unwrap()));
        assert!(!net.matches("10.1.127.1".parse().unwrap()));
        assert!(Addresses::parse("0.0.0.0/0")
            .unwrap()
            .matches("8.8.8.8".parse().unwrap()));
        assert!(!Addresses::parse("::/0")
            .unwrap()
            .matches("8.8.8.8".parse().unwrap()));
        assert!(Addresses::parse("fe80::/10")
            .unwrap()
            .matches("febf::1".parse().unwrap()));
    }

    /// Each mistake is reported with the file, the line and what to write instead.
    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            ("host all all all trust", "unknown method \"trust\""),
            ("local all all peer", "unknown method \"peer\""),
            ("local all all all md5", "unexpected \"md5\""),
            ("local all md5", "3 fields; a rule is: local database user method"),
            ("hostgssenc all all all md5", "unknown connection type"),
            ("host all all md5", "4 fields"),
            (
                "host all all all md5 clientcert=verify-full",
                "options are not supported",
            ),
            ("host all all 10.0.0.0/33 md5", "prefix length must be 0 to 32"),
            ("host all all example.com md5", "is not an address"),
            ("host all +admins all md5", "groups"),
            ("host all all all cert", "hostssl"),
        ];
        for (line, expected) in cases {
            let text = format!("# comment\n\nhost all all all md5\n{line}\n");
            let e = HbaRules::parse(&text, "/etc/hba.conf").unwrap_err().to_string();
            assert!(
                e.starts_with("/etc/hba.conf:4: ") && e.contains(expected),
                "{line}: {e}"
            );
        }
        let e = HbaRules::load(Path::new("/nonexistent/hba.conf")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/hba.conf"), "{e}");
    }
}
