//! Accepts clients, enforces `max_client_conn`, spawns a session per client, runs the pool
//! reaper, and drives graceful shutdown: stop accepting, let sessions finish their
//! transactions up to `shutdown_timeout`, then exit.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use switchyard_protocol::backend::{error_response, ErrorFields};
use switchyard_protocol::sqlstate;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::session::{self, ClientGuard, Destination};
use crate::state::ProxyState;

/// Serves clients on `listener` until `stop` resolves, then drains sessions.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown_tx: watch::Sender<bool>,
    stop: impl std::future::Future<Output = ()>,
) {
    let reaper = tokio::spawn(reap_pools(state.clone()));
    let mut sessions = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let count = state.clients.fetch_add(1, Ordering::Relaxed) + 1;
                let guard = ClientGuard(state.clone());
                if count > state.config.proxy.max_client_conn {
                    tracing::warn!(%peer, max = state.config.proxy.max_client_conn, "refusing client: max_client_conn reached");
                    tokio::spawn(refuse(tcp, guard));
                    continue;
                }
                let state = state.clone();
                sessions.spawn(async move {
                    let _guard = guard;
                    connection(tcp, peer, state).await;
                });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    let timeout = state.config.proxy.shutdown_timeout;
    tracing::info!(
        clients = sessions.len(),
        ?timeout,
        "shutting down: waiting for transactions to finish"
    );
    let _ = shutdown_tx.send(true);
    let drained =
        tokio::time::timeout(timeout, async { while sessions.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            clients = sessions.len(),
            "shutdown_timeout reached; closing remaining clients"
        );
        sessions.shutdown().await;
    }
    for pool in state.all_pools() {
        pool.close();
    }
    reaper.abort();
    tracing::info!("shutdown complete");
}

async fn refuse(mut tcp: tokio::net::TcpStream, _guard: ClientGuard) {
    // The client expects an answer to its startup packet; an ErrorResponse is what libpq
    // shows, so send it right away.
    let mut out = BytesMut::new();
    error_response(
        &ErrorFields::fatal(sqlstate::TOO_MANY_CONNECTIONS, "sorry, too many clients already"),
        &mut out,
    );
    let _ = tcp.write_all(&out).await;
}

async fn reap_pools(state: Arc<ProxyState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for pool in state.all_pools() {
            pool.reap();
        }
    }
}

/// One accepted client: its login, then its pool session or the admin console.
async fn connection(tcp: TcpStream, peer: SocketAddr, state: Arc<ProxyState>) {
    let Some(client) = session::login(tcp, peer, &state).await else {
        return;
    };
    match &client.destination {
        Destination::Pool(pool) => {
            let pool = pool.clone();
            session::serve(client, pool, peer, state).await;
        }
        Destination::Admin => {
            if let Err(e) = Box::pin(crate::admin::serve(client.stream, client.buf, &state)).await {
                tracing::info!(%peer, error = %e, "admin session ended");
            }
        }
    }
}
