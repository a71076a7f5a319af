//! Query cancellation. Each client gets a proxy-issued (process id, secret key); a
//! CancelRequest carrying them is forwarded to whichever server runs that client's query
//! right now, using that server's own key. Nothing is sent when the client holds no server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::server::NodeAddr;

/// The server a client's query runs on, as its CancelRequest must name it.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub addr: NodeAddr,
    pub process_id: i32,
    pub secret_key: i32,
}

/// Where a session publishes the server it currently holds.
#[derive(Default)]
pub struct CancelSlot {
    target: Mutex<Option<CancelTarget>>,
}

impl CancelSlot {
    pub fn set(&self, target: Option<CancelTarget>) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    fn get(&self) -> Option<CancelTarget> {
        self.target.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// All clients' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    clients: Mutex<HashMap<i32, (i32, Arc<CancelSlot>)>>,
}

/// Removes a client's key when its session ends.
pub struct CancelRegistration {
    registry: Arc<CancelRegistry>,
    pub process_id: i32,
    pub secret_key: i32,
    pub slot: Arc<CancelSlot>,
}

impl Drop for CancelRegistration {
    fn drop(&mut self) {
        self.registry
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.process_id);
    }
}

impl CancelRegistry {
    /// Issues a fresh, unique key for a new client.
    pub fn register(self: &Arc<Self>) -> CancelRegistration {
        let slot = Arc::new(CancelSlot::default());
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let process_id = rand::random::<i32>() & i32::MAX;
            if process_id == 0 || clients.contains_key(&process_id) {
                continue;
            }
            let secret_key = rand::random::<i32>();
            clients.insert(process_id, (secret_key, slot.clone()));
            return CancelRegistration {
                registry: self.clone(),
                process_id,
                secret_key,
                slot,
            };
        }
    }

    /// Forwards a client's CancelRequest; a wrong key or an idle client is silently ignored,
    /// as Postgres does.
    pub async fn cancel(&self, process_id: i32, secret_key: i32) {
        let target = {
            let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            match clients.get(&process_id) {
                Some((key, slot)) if *key == secret_key => slot.get(),
                _ => None,
            }
        };
        let Some(t) = target else {
            tracing::debug!(process_id, "cancel request for no running query");
            return;
        };
        let mut msg = BytesMut::new();
        switchyard_protocol::frontend::encode_cancel_request(t.process_id, t.secret_key, &mut msg);
        match TcpStream::connect((&*t.addr.host, t.addr.port)).await {
            Ok(mut s) => {
                if let Err(e) = s.write_all(&msg).await {
                    tracing::warn!(server = %t.addr, error = %e, "cannot forward cancel request");
                } else {
                    tracing::info!(server = %t.addr, pid = t.process_id, "forwarded cancel request");
                }
            }
            Err(e) => tracing::warn!(server = %t.addr, error = %e, "cannot forward cancel request"),
        }
    }
}
