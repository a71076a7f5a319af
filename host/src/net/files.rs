//! The open-files limit, checked at start (and again when a reload or `SET` changes
//! `max_client_conn` or a pool size) against what the configuration may need: every
//! client and every server connection is a file descriptor, and a proxy that runs out of
//! them fails `accept` and `connect` under load, long after it started. The soft limit is
//! raised as far as the hard limit allows; what is still missing is said in the log, with
//! the numbers and the fix, before the first client arrives.

use crate::config::Config;

/// Descriptors beyond the clients and servers: listeners, probes, plugin and log files,
/// the runtime's own.
const MARGIN: u64 = 100;

/// The descriptors the configuration may need at once: one per client (`max_client_conn`),
/// one per server connection each database's pool may open on each node of its cluster for
/// each configured user (users found through `auth_query` cannot be counted in advance),
/// and a margin.
pub fn needed(config: &Config) -> u64 {
    let users = config.users.len().max(1) as u64;
    let servers: u64 = config
        .databases
        .values()
        .map(|db| {
            let size = db.pool_size.unwrap_or(config.pool.size) as u64;
            let nodes = config
                .clusters
                .get(db.cluster.get_ref())
                .map_or(1, |c| c.nodes.len()) as u64;
            size * nodes * users
        })
        .sum();
    config.proxy.max_client_conn as u64 + servers + MARGIN
}

/// Raises the soft open-files limit towards [`needed`] (up to the hard limit) and logs what
/// it did; a warning when the limit stays below the need.
pub fn ensure_open_files(config: &Config) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let need = needed(config);
    let limit = getrlimit(Resource::Nofile);
    // `None`: unlimited.
    let (soft, hard) = (
        limit.current.unwrap_or(u64::MAX),
        limit.maximum.unwrap_or(u64::MAX),
    );
    if soft >= need {
        return;
    }
    let raised = need.min(hard);
    if raised > soft {
        let new = Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, new) {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            return;
        }
    }
    let now = raised.max(soft);
    if now < need {
        tracing::warn!(
            limit = now,
            hard_limit = hard,
            needed = need,
            max_client_conn = config.proxy.max_client_conn,
            "the open-files limit is below what max_client_conn and the pools may need: past it, clients and server connections fail; raise the hard limit (ulimit -Hn, or LimitNOFILE= in a systemd unit) or lower max_client_conn"
        );
    } else {
        tracing::info!(
            from = soft,
            to = now,
            "raised the open-files limit for max_client_conn and the pools"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients, plus pool size × nodes × users for each database, plus the margin.
    #[test]
    fn need_counts_clients_and_every_pool_on_every_node() {
        let config = Config::parse(
            r#"
            [proxy]
            max_client_conn = 500
            [pool]
            size = 10
            [clusters.main]
            nodes = [{ host = "127.0.0.1", port = 5432, role = "primary" }, { host = "127.0.0.1", port = 5433 }]
            [databases.app]
            cluster = "main"
            [databases.big]
            cluster = "main"
            pool_size = 30
            [users.a]
            password = "a"
            [users.b]
            password = "b"
            "#,
            "test.toml",
        )
        .expect("valid config");
        assert_eq!(needed(&config), 500 + (10 + 30) * 2 * 2 + MARGIN);
    }
}
