//! Asking Patroni (its REST API, plain HTTP on the node) for a switchover, for the admin
//! console's `SWITCHOVER`. The proxy holds traffic around the call; Patroni does the rest.

use std::time::Duration;

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

/// Members of the cluster from `GET /cluster`: (name, role, host:port of Postgres).
pub async fn members(api: &str) -> Result<Vec<(String, String, String)>, PatroniError> {
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
            let addr = format!("{}:{}", text("host"), m["port"].as_u64().unwrap_or(0));
            (text("name"), text("role"), addr)
        })
        .collect())
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
