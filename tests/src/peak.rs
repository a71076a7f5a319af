//! The most server connections Postgres saw at once during a run, for pool-limit tests: a
//! task samples `pg_stat_activity` on the primary (directly, not through the proxy) every
//! few milliseconds while the run goes on, so a limit exceeded for a moment in the middle is
//! caught, not only what is left at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::task::JoinHandle;

use crate::client::{describe_error, Endpoint};
use crate::cluster::roles;

/// A running sampler of client backends of some users on some databases.
pub struct ServerPeak {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<(i64, u64)>>,
}

/// What [`ServerPeak::finish`] found.
#[derive(Clone, Copy, Debug)]
pub struct Peak {
    /// The most client backends of the user on the database seen at once.
    pub max: i64,
    /// How many samples were taken.
    pub samples: u64,
}

impl ServerPeak {
    /// Starts sampling the backends of `user` on `db` at `primary` every 5 ms, as the
    /// superuser.
    pub async fn start(primary: &Endpoint, user: &str, db: &str) -> Result<Self> {
        Self::start_where(primary, &[user], &[db]).await
    }

    /// Starts sampling, every 5 ms, the backends of any of `users` on any of `dbs` at
    /// `primary`, counted together (a cap shared by pools).
    pub async fn start_where(primary: &Endpoint, users: &[&str], dbs: &[&str]) -> Result<Self> {
        let (su, password) = roles::SUPERUSER;
        let watcher = primary
            .connect(su, password, "postgres")
            .await
            .context("peak sampler: connecting to the primary")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        let dbs: Vec<String> = dbs.iter().map(|d| d.to_string()).collect();
        let task = tokio::spawn(async move {
            let (mut max, mut samples) = (0i64, 0u64);
            while !flag.load(Ordering::Relaxed) {
                let n: i64 = watcher
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE usename = ANY($1) AND datname = ANY($2) \
                         AND backend_type = 'client backend'",
                        &[&users, &dbs],
                    )
                    .await
                    .map_err(|e| anyhow!("peak sampler: {}", describe_error(&e)))?
                    .get(0);
                max = max.max(n);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok((max, samples))
        });
        Ok(Self { stop, task })
    }

    /// Stops sampling and returns the peak.
    pub async fn finish(self) -> Result<Peak> {
        self.stop.store(true, Ordering::Relaxed);
        let (max, samples) = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .context("peak sampler did not stop within 10 s")???;
        Ok(Peak { max, samples })
    }
}
