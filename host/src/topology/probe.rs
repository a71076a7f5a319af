//! One prober per node: keeps its own server connection (as the cluster's `probe_user`)
//! and asks, every `probe_interval`, whether the node is in recovery, its timeline and its
//! WAL position, in one round trip. A failed probe drops the connection and reports the
//! node unreachable; the next probe reconnects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Cluster;
use crate::policy::topology::ProbeSample;
use crate::server::{connect, query_row, ConnectParams, ServerConn, ServerError};

/// In recovery; WAL position (replayed on a replica; on a primary, where the next record
/// goes, so at or past every commit acknowledged before the probe, `synchronous_commit =
/// off` or not: see [`record_end`]); timeline (the
/// WAL receiver's on a replica, else the last checkpoint's; the current WAL file's on a
/// primary, which changes at promotion, unlike `pg_control_checkpoint()`).
const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END, \
     CASE WHEN pg_is_in_recovery() \
          THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), \
                        (SELECT timeline_id FROM pg_control_checkpoint())) \
          ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END";

/// The shortest time between the starts of two probes of one node when woken early: bounds
/// what read-your-writes sessions asking for commit positions cost the primary (at most 500
/// probes a second, one at a time).
const POKE_GAP: Duration = Duration::from_millis(2);

pub async fn run(cluster: Arc<Cluster>, node: usize, mut shutdown: watch::Receiver<bool>) {
    let Some(settings) = cluster.probe.clone() else {
        return;
    };
    let addr = cluster.nodes[node].clone();
    let mut conn: Option<ServerConn> = None;
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let seq = cluster.next_probe_seq();
        let result = tokio::time::timeout(settings.timeout, async {
            if conn.is_none() {
                let params = ConnectParams {
                    addr: &addr,
                    user: &settings.user.name,
                    database: &settings.database,
                    secret: settings.user.server_secret(),
                    options: &[("application_name".to_string(), "switchyard probe".to_string())],
                    tls: &settings.tls,
                    auth_methods: &settings.auth_methods,
                    timeout: settings.timeout,
                };
                conn = Some(connect(&params).await?);
            }
            let c = conn.as_mut().expect("connected above");
            query_row(c, PROBE_SQL, &[]).await
        })
        .await;
        let outcome = match result {
            Ok(Ok(Some(row))) => parse(&row).ok_or_else(|| format!("unexpected probe answer {row:?}")),
            Ok(Ok(None)) => Err("the probe returned no row".to_string()),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("no answer within probe_timeout ({:?})", settings.timeout)),
        };
        match outcome {
            Ok(sample) => {
                if failures > 0 {
                    tracing::info!(cluster = %cluster.name, node = %addr, "node answers probes again");
                }
                failures = 0;
                cluster.record(node, seq, sample, Some(started.elapsed()), None);
            }
            Err(error) => {
                conn = None;
                failures += 1;
                if failures == 1 {
                    tracing::warn!(cluster = %cluster.name, node = %addr, %error, "probe failed");
                }
                let sample = ProbeSample {
                    consecutive_failures: failures,
                    ..Default::default()
                };
                cluster.record(node, seq, sample, None, Some(error));
            }
        }
        // Probe again after the interval; sooner when woken (a pool could not connect to
        // the node, or a session waits for the position of its commit on the primary), but
        // not more often than every POKE_GAP; or stop at shutdown. A node that keeps
        // failing is probed at the same pace: a failover is exactly when fresh answers
        // matter.
        let wait = settings
            .interval
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(10));
        let woken = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = cluster.pokes[node].notified() => true,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        if woken {
            tokio::time::sleep_until((started + POKE_GAP).into()).await;
        }
    }
}

fn describe(e: &ServerError) -> String {
    match e {
        ServerError::Refused { fields, .. } => format!("{} {}", fields.code, fields.message),
        other => other.to_string(),
    }
}

fn parse(row: &[Option<String>]) -> Option<ProbeSample> {
    let in_recovery = match row.first()?.as_deref()? {
        "t" => true,
        "f" => false,
        _ => return None,
    };
    // A replica that has not replayed anything yet reports a NULL LSN.
    let lsn = row.get(1)?.as_deref().map_or(Some(0), parse_lsn)?;
    let lsn = if in_recovery { lsn } else { record_end(lsn) };
    let timeline = row.get(2)?.as_deref().map_or(Some(0), |t| t.parse().ok())?;
    Some(ProbeSample {
        reachable: true,
        in_recovery,
        timeline,
        lsn,
        consecutive_failures: 0,
    })
}

/// The end of the last record before `insert`, a primary's insert position. Where the last
/// record ended exactly at a page boundary, the insert position is past the next page's
/// header (24 bytes, or 40 at a segment's start), where no replica's replay position ever
/// is: it is taken back to the boundary. No record ends 24 or 40 bytes into a page (a
/// record has a 24-byte header of its own), so nothing else is moved.
fn record_end(insert: u64) -> u64 {
    /// `XLOG_BLCKSZ`, `SizeOfXLogShortPHD`, `SizeOfXLogLongPHD`.
    const PAGE: u64 = 8192;
    match insert % PAGE {
        24 => insert - 24,
        40 => insert - 40,
        _ => insert,
    }
}

/// `"16/B374D848"` → 0x16_B374D848.
fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_position_past_a_page_header_is_taken_back_to_the_boundary() {
        assert_eq!(record_end(0x2_0000_2000 + 24), 0x2_0000_2000);
        assert_eq!(record_end(0x100_0000 + 40), 0x100_0000);
        assert_eq!(record_end(0x2000 + 80), 0x2000 + 80);
        assert_eq!(record_end(0x2000 + 23), 0x2000 + 23);
    }

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn parses_primary_and_replica_answers() {
        let p = parse(&row(&[Some("f"), Some("0/3000060"), Some("2")])).unwrap();
        assert!(p.reachable && !p.in_recovery);
        assert_eq!((p.lsn, p.timeline), (0x3000060, 2));
        let r = parse(&row(&[Some("t"), None, Some("1")])).unwrap();
        assert!(r.in_recovery);
        assert_eq!((r.lsn, r.timeline), (0, 1));
    }

    #[test]
    fn lsns_are_two_hex_halves() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("zz"), None);
    }

    #[test]
    fn garbage_is_not_a_sample() {
        assert!(parse(&row(&[Some("maybe"), Some("0/1"), Some("1")])).is_none());
        assert!(parse(&row(&[Some("t")])).is_none());
    }
}
