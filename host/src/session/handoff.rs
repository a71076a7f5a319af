//! A client handed from one proxy process to another (`switchyard --takeover`): what a
//! session between transactions carries over with its socket, so that the new process
//! serves it as if it had just logged in there, without the client noticing.
//!
//! A client is handed over only when its session holds nothing the new process could not
//! take: no server (transaction or statement pooling, no state pinned to a server), no
//! open transaction, nothing owed either way, and a plain socket (rustls has no way to
//! export a session's traffic state, so a TLS client is told to reconnect instead). What
//! goes with the socket: the user and database, the startup settings and the settings the
//! client has `SET` since, its named prepared statements (name, text, parameter types),
//! its cancel key (so a cancel it sends later reaches the new process's servers), its
//! routing hint and application name, whether a commit in its read-your-writes scope
//! must be seen by its reads, and whatever it sent that was not processed yet.
//! The record is JSON with a format version; `takeover` moves it with the descriptor.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use switchyard_protocol::backend::{error_response, ErrorFields};
use switchyard_protocol::sqlstate;
use tokio::io::AsyncWriteExt;

use super::params::SessionParams;
use super::{LoggedIn, Outcome, Session};
use crate::config::{PoolMode, ReadRouting};
use crate::net::{Peer, Stream};
use crate::policy::SessionFacts;
use crate::server::Settings;
use crate::session::Destination;
use crate::state::ProxyState;

/// The version of [`ClientRecord`]'s format. Two processes hand clients to each other
/// only when they agree on it (`takeover` checks it before anything is sent).
pub const RECORD_VERSION: u32 = 1;

/// A session's state as it travels to the new process.
#[derive(Serialize, Deserialize)]
pub struct ClientRecord {
    /// The client's address; `None` on the Unix-domain socket.
    pub peer: Option<SocketAddr>,
    /// User, database, application name, read-only default, process id (the hooks' facts).
    pub facts: SessionFacts,
    /// The startup settings and the settings the session has now, as replay statements.
    pub startup: Settings,
    pub desired: Settings,
    /// The `switchyard.route` hint.
    pub hint: Option<ReadRouting>,
    /// Named prepared statements, least recently used first.
    pub statements: Vec<CarriedStatement>,
    pub process_id: i32,
    pub secret_key: i32,
    /// Bytes the client sent that were not processed yet.
    #[serde(with = "b64")]
    pub unread: Vec<u8>,
    /// The ClientKey learnt from the user's SCRAM login, when the proxy logs in to
    /// servers with it (SCRAM pass-through: the user has only a verifier): the new process
    /// could not log in to servers for this client otherwise.
    #[serde(with = "b64_key")]
    pub client_key: Option<[u8; 32]>,
    /// A commit in the session's read-your-writes scope was acknowledged: the new process
    /// keeps its reads from replicas that have not replayed up to now.
    pub committed: bool,
}

/// One named prepared statement of a client.
#[derive(Serialize, Deserialize)]
pub struct CarriedStatement {
    #[serde(with = "b64")]
    pub name: Vec<u8>,
    #[serde(with = "b64")]
    pub query: Vec<u8>,
    pub param_types: Vec<u32>,
}

/// A client on its way to another process: its socket and its session's state.
pub struct Handoff {
    pub fd: OwnedFd,
    pub record: ClientRecord,
}

/// What an adopted session starts with beyond what a login gives ([`LoggedIn::carried`]).
pub struct Carried {
    facts: SessionFacts,
    params: SessionParams,
    statements: Vec<CarriedStatement>,
    committed: bool,
}

impl Carried {
    /// The application name the client has now.
    pub fn application_name(&self) -> &str {
        &self.facts.details().application_name
    }
}

/// Bytes as base64 strings in the JSON record (names and texts need not be UTF-8).
mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// An optional 32-byte key as a base64 string or null.
mod b64_key {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(key: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match key {
            Some(k) => super::b64::serialize(k, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        bytes
            .try_into()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("a ClientKey is 32 bytes"))
    }
}

impl Session {
    /// Why this session's client cannot be handed to another process, if it cannot; asked
    /// between transactions ([`Session::between_transactions`]).
    pub(super) fn why_not_handed_over(&self) -> Option<&'static str> {
        if self.mode == PoolMode::Session {
            Some("its pool is in session mode, where a client keeps its server")
        } else if self.server_state || self.server.held() {
            Some("it holds state on its server that cannot be carried to another process")
        } else if self.client.is_tls() {
            Some("its connection uses TLS, whose session state cannot be carried to another process")
        } else if self.skipping
            || self.lost_session.is_some()
            || self.params.uncertain()
            || self.params.has_pending()
        {
            Some("its session is in the middle of an error")
        } else {
            None
        }
    }

    /// Ends the session by handing its client over (see [`Session::into_handoff`]).
    pub(super) fn hand_over(mut self) -> Outcome {
        self.report_bytes();
        let pid = self.cancel.process_id;
        match self.into_handoff() {
            Ok(handoff) => {
                tracing::debug!(pid, "client handed over to the new process");
                Outcome::HandedOver(Box::new(handoff))
            }
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot hand the client over; its connection is closed");
                Outcome::Ended
            }
        }
    }

    /// The client's socket and its session's state, for the new process; the session is
    /// gone (its cancel key, its place in `SHOW CLIENTS`) once this returns. Its output
    /// must have been flushed.
    fn into_handoff(self) -> std::io::Result<Handoff> {
        let peer = self.facts.details().client_addr.parse().ok();
        let (startup, desired) = self.params.carried();
        let statements = self
            .statements
            .by_use()
            .into_iter()
            .map(|(name, def)| CarriedStatement {
                name: name.to_vec(),
                query: def.query.to_vec(),
                param_types: def.param_types.clone(),
            })
            .collect();
        let record = ClientRecord {
            peer,
            facts: self.facts.snapshot(),
            startup,
            desired,
            hint: self.routing.hint(),
            statements,
            process_id: self.cancel.process_id,
            secret_key: self.cancel.secret_key,
            unread: self.cbuf.to_vec(),
            client_key: self.pool.client_key(),
            committed: self.commit_mark() != 0,
        };
        let fd = self.client.into_fd()?;
        Ok(Handoff { fd, record })
    }

    /// Applies what an adopted client carried ([`Carried`]) to a session just made for it.
    pub(super) fn take_carried(&mut self, carried: Carried) {
        self.facts = carried.facts;
        self.params = carried.params;
        for s in carried.statements {
            let def = self.pool.statements.intern(&Bytes::from(s.query), &s.param_types);
            self.statements.insert(Bytes::from(s.name), def);
        }
        if carried.committed {
            self.mark_commit();
        }
    }
}

/// Makes a handed-over client a logged-in one of this process: its socket registered
/// here, its user and pool looked up in this process's configuration, its cancel key
/// kept. Nothing is sent to the client, unless it cannot be served here (its database or
/// user is gone from the new configuration): it then gets a FATAL saying so.
pub async fn adopt(handoff: Handoff, state: &Arc<ProxyState>) -> Option<(LoggedIn, Peer)> {
    let Handoff { fd, record } = handoff;
    let peer = record.peer.map_or(Peer::Unix, Peer::Tcp);
    let mut stream = match Stream::from_fd(fd, peer == Peer::Unix) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot register a handed-over client's socket");
            return None;
        }
    };
    let (user_name, database) = (record.facts.user().to_owned(), record.facts.database().to_owned());
    let pool = match state.lookup_user(&user_name, &database).await {
        Ok(Some(user)) => state.pool(&database, &user).map(|pool| (user, pool)),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(user = %user_name, error = %e, "cannot look up a handed-over client's user");
            None
        }
    };
    let Some((user, pool)) = pool else {
        tracing::warn!(%peer, user = %user_name, database = %database, "a handed-over client's database or user is not in this configuration; telling it");
        let mut out = BytesMut::new();
        let fields = ErrorFields::fatal(
            sqlstate::ADMIN_SHUTDOWN,
            format!(
                "switchyard restarted for an upgrade and its new configuration has no database \"{database}\" for user \"{user_name}\""
            ),
        );
        error_response(&fields, &mut out);
        let _ = stream.write_all(&out).await;
        return None;
    };
    if let Some(key) = record.client_key {
        user.learn_client_key(key);
    }
    let cancel = match state.cancels.register_as(record.process_id, record.secret_key) {
        Some(c) => c,
        None => {
            tracing::warn!(
                pid = record.process_id,
                "a handed-over client's cancel key is taken here; its cancels will not be forwarded"
            );
            state.cancels.register()
        }
    };
    let params = vec![
        ("user".to_owned(), user_name),
        ("database".to_owned(), database.clone()),
    ];
    let carried = Carried {
        params: SessionParams::adopt(record.startup, record.desired),
        facts: record.facts,
        statements: record.statements,
        committed: record.committed,
    };
    let logged_in = LoggedIn {
        stream,
        buf: BytesMut::from(&record.unread[..]),
        user,
        database,
        destination: Destination::Pool(pool),
        params: route_param(record.hint).into_iter().chain(params).collect(),
        cancel,
        carried: Some(Box::new(carried)),
    };
    Some((logged_in, peer))
}

/// The `switchyard.route` startup parameter that gives `hint`, for a session made anew.
fn route_param(hint: Option<ReadRouting>) -> Option<(String, String)> {
    let value = match hint? {
        ReadRouting::Off => "primary",
        ReadRouting::Replicas => "replicas",
        ReadRouting::ReplicasOrPrimary => "any",
    };
    Some(("switchyard.route".to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record survives the JSON trip: settings, statements with non-UTF-8 bytes, the
    /// cancel key and the unread bytes come back as they went.
    #[test]
    fn a_record_survives_its_format() {
        let mut startup = Settings::new();
        startup.insert(
            "timezone".into(),
            "SELECT pg_catalog.set_config('timezone', 'UTC', false)".into(),
        );
        let mut desired = startup.clone();
        desired.insert("search_path".into(), "SET search_path TO app".into());
        let record = ClientRecord {
            peer: Some("127.0.0.1:5000".parse().unwrap()),
            facts: SessionFacts::new(7, "app", "appdb", "psql", "127.0.0.1:5000".into(), false),
            startup,
            desired,
            hint: Some(ReadRouting::Replicas),
            statements: vec![CarriedStatement {
                name: b"S_\xff1".to_vec(),
                query: b"SELECT $1".to_vec(),
                param_types: vec![23],
            }],
            process_id: 7,
            secret_key: -3,
            unread: vec![b'Q', 0, 0, 0, 5, 0],
            client_key: Some([9; 32]),
            committed: true,
        };
        let json = serde_json::to_string(&record).unwrap();
        let back: ClientRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.desired, record.desired);
        assert_eq!(back.startup, record.startup);
        assert_eq!(back.statements[0].name, b"S_\xff1");
        assert_eq!(back.statements[0].param_types, vec![23]);
        assert_eq!((back.process_id, back.secret_key), (7, -3));
        assert_eq!(back.unread, record.unread);
        assert_eq!(back.client_key, Some([9; 32]));
        assert_eq!(back.hint, Some(ReadRouting::Replicas));
        assert_eq!(back.facts.user(), "app");
        assert_eq!(route_param(back.hint).unwrap().1, "replicas");
    }
}
