//! Patroni's REST API (plain HTTP on the node): its view of the cluster (`GET /cluster`),
//! which the proxy shows beside its own probes and checks them against, and a switchover
//! (`POST /switchover`) for the admin console's `SWITCHOVER`. The probes stay the judge of
//! which node gets writes: Patroni's view can lag (it is refreshed every `loop_wait`) and
//! the API may be unreachable while Postgres is fine.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum PatroniError {
    #[error("Patroni API {api}: {reason}")]
    Api { api: String, reason: String },
    #[error("Patroni refused the switchover ({status}): {body}")]
    Refused { status: u16, body: String },
}

/// One HTTP/1.0 request; returns (status, body).
async fn request(
    api: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), PatroniError> {
    let fail = |reason: String| PatroniError::Api {
        api: api.to_string(),
        reason,
    };
    let exchange = async {
        let mut tcp = TcpStream::connect(api).await.map_err(|e| fail(e.to_string()))?;
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.0\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(req.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| fail(format!("not an HTTP answer: {head:?}")))?;
        Ok((status, body.to_string()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {timeout:?}")))?
}

/// One member of a Patroni cluster, as `GET /cluster` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// `leader`, `replica`, `sync_standby`, `standby_leader`, ...
    pub role: String,
    /// `running`, `streaming`, `stopped`, `starting`, ...
    pub state: String,
    /// host:port of its Postgres.
    pub addr: String,
}

/// Members of the cluster from `GET /cluster`.
pub async fn members(api: &str) -> Result<Vec<Member>, PatroniError> {
    let (status, body) = request(api, "GET", "/cluster", None, Duration::from_secs(5)).await?;
    let fail = |reason: String| PatroniError::Api {
        api: api.to_string(),
        reason,
    };
    if status != 200 {
        return Err(fail(format!("GET /cluster answered {status}")));
    }
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| fail(format!("GET /cluster: {e}")))?;
    Ok(json["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let text = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            Member {
                name: text("name"),
                role: text("role"),
                state: text("state"),
                addr: format!("{}:{}", text("host"), m["port"].as_u64().unwrap_or(0)),
            }
        })
        .collect())
}

/// Patroni's view of a cluster's nodes, as last read.
#[derive(Debug, Clone, Default)]
pub struct PatroniView {
    /// Per node of the cluster (in its order): the member at that address, if listed.
    pub members: Vec<Option<Member>>,
    pub read_at: Option<SystemTime>,
    /// Why the last read failed (every configured API was tried).
    pub error: Option<String>,
}

/// How often Patroni's view is read (it changes at most once per `loop_wait`).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Warns after this many reads in a row that disagree with the probes about the leader:
/// Patroni's view lags a switchover by up to a `loop_wait`.
const DISAGREEMENTS_TO_WARN: u32 = 3;

/// Reads `GET /cluster` from the first configured API that answers, every second, into
/// `cluster.patroni`; warns when Patroni's leader and the probed primary disagree for
/// several reads in a row. Runs until shutdown; nothing without a `patroni_api`.
pub async fn watch(cluster: Arc<super::Cluster>, mut shutdown: watch::Receiver<bool>) {
    let apis: Vec<String> = cluster.patroni_apis.iter().flatten().cloned().collect();
    if apis.is_empty() {
        return;
    }
    let mut disagreements = 0u32;
    loop {
        let mut view = PatroniView {
            read_at: Some(SystemTime::now()),
            ..Default::default()
        };
        let mut errors = Vec::new();
        for api in &apis {
            match members(api).await {
                Ok(members) => {
                    view.members = cluster
                        .nodes
                        .iter()
                        .map(|n| members.iter().find(|m| m.addr == n.to_string()).cloned())
                        .collect();
                    errors.clear();
                    break;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if !errors.is_empty() {
            view.error = Some(errors.join("; "));
        }
        let leader = view
            .members
            .iter()
            .position(|m| m.as_ref().is_some_and(|m| m.role == "leader"));
        let primary = cluster.primary().map(|(i, _)| i);
        if leader.is_some() && primary.is_some() && leader != primary {
            disagreements += 1;
            if disagreements == DISAGREEMENTS_TO_WARN {
                tracing::warn!(
                    cluster = %cluster.name,
                    patroni_leader = %cluster.nodes[leader.unwrap_or_default()],
                    probed_primary = %cluster.nodes[primary.unwrap_or_default()],
                    "Patroni's leader is not the node the probes confirm as primary; writes follow the probes"
                );
            }
        } else {
            if disagreements >= DISAGREEMENTS_TO_WARN {
                tracing::info!(cluster = %cluster.name, "Patroni's leader and the probed primary agree again");
            }
            disagreements = 0;
        }
        *cluster.patroni.lock().unwrap_or_else(|e| e.into_inner()) = view;
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// `POST /switchover` from `leader` to `candidate` (Patroni picks one when `None`); Patroni
/// answers when the switchover is done.
pub async fn switchover(api: &str, leader: &str, candidate: Option<&str>) -> Result<String, PatroniError> {
    let body = match candidate {
        Some(c) => serde_json::json!({ "leader": leader, "candidate": c }),
        None => serde_json::json!({ "leader": leader }),
    };
    let (status, answer) = request(
        api,
        "POST",
        "/switchover",
        Some(&body.to_string()),
        Duration::from_secs(60),
    )
    .await?;
    if status == 200 {
        Ok(answer.trim().to_string())
    } else {
        Err(PatroniError::Refused {
            status,
            body: answer.trim().to_string(),
        })
    }
}
