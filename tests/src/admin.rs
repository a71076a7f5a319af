//! The admin console (virtual database `switchyard`, user `admin`/`admin`, see
//! [`crate::proxy::ProxyConfig::with_admin`]) as tests use it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio_postgres::SimpleQueryMessage;

use crate::client::{Endpoint, PgResultExt};

/// Runs an admin command as `admin` and returns its rows as column → value maps.
pub async fn admin_rows(endpoint: &Endpoint, command: &str) -> Result<Vec<HashMap<String, String>>> {
    let admin = endpoint.connect("admin", "admin", "switchyard").await?;
    let messages = admin.simple_query(command).await.ctx(command)?;
    let mut rows = Vec::new();
    for msg in messages {
        if let SimpleQueryMessage::Row(row) = msg {
            let mut map = HashMap::new();
            for (i, column) in row.columns().iter().enumerate() {
                map.insert(
                    column.name().to_string(),
                    row.get(i).unwrap_or_default().to_string(),
                );
            }
            rows.push(map);
        }
    }
    Ok(rows)
}

/// The `SHOW POOLS` row of pool `pool` (`database/user`, e.g. `app/app`).
pub async fn pool_row(endpoint: &Endpoint, pool: &str) -> Result<HashMap<String, String>> {
    let rows = admin_rows(endpoint, "SHOW POOLS").await?;
    rows.iter()
        .find(|r| r["pool"] == pool)
        .cloned()
        .with_context(|| format!("no pool {pool} in SHOW POOLS: {rows:?}"))
}

/// Waits until `SHOW NODES` names `node` (`host:port`) as the primary.
pub async fn wait_for_primary(endpoint: &Endpoint, node: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let rows = admin_rows(endpoint, "SHOW NODES").await?;
        if rows
            .iter()
            .any(|r| r["node"] == node && r["primary"] == "true" && r["role"] == "primary")
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{node} not the proxy's primary within {limit:?}: {rows:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
