//! Client authentication: what the proxy stores about a user and how it checks a client's
//! proof. The exchange itself (which messages go on the wire) lives in `session::startup`;
//! this module is the cryptography and the stored secrets, with no I/O.

mod decoy;
pub mod hba;
mod md5;
mod scram;

pub use decoy::{Decoys, SaltKey};
pub use md5::{md5_hash, Md5Challenge};
pub use scram::{
    Binding, DerivedKeys, KeySource, ScramError, ScramExchange, ScramKeyClient, ScramKeys, ScramVerifier,
    MAX_SERVER_ITERATIONS, TLS_SERVER_END_POINT,
};

use std::sync::OnceLock;

/// The SASL mechanism spoken to clients and to servers.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// SCRAM with channel binding, offered to clients on TLS connections.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

use crate::config::{ClientAuthMethod, MalformedVerifier, StoredPassword, UserConfig};

/// Why stored credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    MalformedScramVerifier(#[from] MalformedVerifier),
    #[error("auth_query returned a plaintext password; Postgres stores hashes, check the query")]
    PlaintextFromAuthQuery,
}

/// Everything the proxy needs to authenticate one user, prepared once at config load. Its
/// debug form shows the name, the method and which secrets it holds, never their values.
pub struct UserAuth {
    pub name: String,
    pub method: ClientAuthMethod,
    /// Set when SCRAM is used; derived from a plaintext password once, not per login.
    pub scram: Option<ScramVerifier>,
    /// md5(password || user), set when md5 is used.
    pub md5: Option<String>,
    /// What the proxy sends to servers, if it knows it.
    pub server_password: Option<String>,
    /// ClientKey from the first successful SCRAM login, for SCRAM pass-through to servers.
    pub client_key: OnceLock<[u8; 32]>,
    /// SCRAM keys derived from `server_password` for the servers' salt.
    pub server_keys: DerivedKeys,
}

impl std::fmt::Debug for UserAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = |present: bool| if present { "<hidden>" } else { "none" };
        f.debug_struct("UserAuth")
            .field("name", &self.name)
            .field("method", &self.method)
            .field("scram", &self.scram)
            .field("md5", &held(self.md5.is_some()))
            .field("server_password", &held(self.server_password.is_some()))
            .field("client_key", &held(self.client_key.get().is_some()))
            .finish_non_exhaustive()
    }
}

/// How the proxy proves itself to a server as this user.
pub enum ServerSecret<'a> {
    None,
    /// A plaintext password, with the cache of SCRAM keys derived from it.
    Password(&'a str, &'a DerivedKeys),
    /// SCRAM pass-through: the server stores the same verifier as the proxy.
    Scram(ScramKeys),
    /// md5 pass-through: the server stores the same md5 hash.
    Md5Hash(&'a str),
}

impl UserAuth {
    /// The best secret known for logging in to servers as this user.
    pub fn server_secret(&self) -> ServerSecret<'_> {
        if let Some(p) = &self.server_password {
            return ServerSecret::Password(p, &self.server_keys);
        }
        if let (Some(v), Some(k)) = (&self.scram, self.client_key.get()) {
            return ServerSecret::Scram(ScramKeys {
                client_key: *k,
                server_key: v.server_key,
            });
        }
        match &self.md5 {
            Some(h) => ServerSecret::Md5Hash(h),
            None => ServerSecret::None,
        }
    }

    /// A user whose secrets are only what clients prove themselves with: one nobody can
    /// log in as (see [`Decoys`]), or one `auth_query` found.
    fn without_server_password(
        name: &str,
        method: ClientAuthMethod,
        scram: Option<ScramVerifier>,
        md5: Option<String>,
    ) -> UserAuth {
        UserAuth {
            name: name.to_string(),
            method,
            scram,
            md5,
            server_password: None,
            client_key: OnceLock::new(),
            server_keys: DerivedKeys::default(),
        }
    }

    /// A user found by `auth_query`: the server's own stored password.
    pub fn from_stored(name: &str, stored: &str) -> Result<UserAuth, AuthError> {
        let stored = StoredPassword::parse(stored)?;
        let (method, scram, md5) = match stored {
            StoredPassword::Scram(v) => (ClientAuthMethod::ScramSha256, Some(v), None),
            StoredPassword::Md5(h) => (ClientAuthMethod::Md5, None, Some(h)),
            StoredPassword::Plain(_) => return Err(AuthError::PlaintextFromAuthQuery),
        };
        Ok(UserAuth::without_server_password(name, method, scram, md5))
    }
}

impl UserAuth {
    /// A `[users]` entry; a plaintext password gets its SCRAM verifier with the salt `key`
    /// gives this name.
    pub fn from_config(name: &str, user: &UserConfig, key: &SaltKey) -> Result<UserAuth, AuthError> {
        let stored = StoredPassword::parse(user.password.get_ref())?;
        let method = user.auth.unwrap_or(match stored {
            StoredPassword::Md5(_) => ClientAuthMethod::Md5,
            _ => ClientAuthMethod::ScramSha256,
        });
        let (scram, md5, plain) = match stored {
            StoredPassword::Plain(p) => (
                Some(ScramVerifier::derive(&p, &key.salt(name))),
                Some(md5_hash(&p, name)),
                Some(p),
            ),
            StoredPassword::Scram(v) => (Some(v), None, None),
            StoredPassword::Md5(h) => (None, Some(h), None),
        };
        Ok(UserAuth {
            name: name.to_string(),
            method,
            scram,
            md5,
            server_password: user.server_password.as_deref().map(str::to_string).or(plain),
            client_key: OnceLock::new(),
            server_keys: DerivedKeys::default(),
        })
    }
}

impl UserAuth {
    /// Whether `password`, sent in clear (the `password` method), is this user's: checked
    /// against the SCRAM verifier (PBKDF2, on tokio's blocking pool) or else the md5 hash.
    pub async fn password_matches(&self, password: &str) -> bool {
        if let Some(verifier) = &self.scram {
            let (password, salt, iterations) =
                (password.to_owned(), verifier.salt.clone(), verifier.iterations);
            let Ok(keys) =
                tokio::task::spawn_blocking(move || ScramKeys::derive(&password, &salt, iterations)).await
            else {
                return false;
            };
            let stored_key: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(keys.client_key).into();
            return ct_eq(&stored_key, &verifier.stored_key);
        }
        self.md5
            .as_ref()
            .is_some_and(|stored| ct_eq(md5_hash(password, &self.name).as_bytes(), stored.as_bytes()))
    }
}

impl UserAuth {
    /// Takes `key`, a ClientKey the process this one took over from learnt from this
    /// user's SCRAM login, for SCRAM pass-through to servers, if it fits this user's
    /// verifier and none was learnt here yet.
    pub fn learn_client_key(&self, key: [u8; 32]) -> bool {
        let Some(verifier) = &self.scram else {
            return false;
        };
        let stored_key: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(key).into();
        ct_eq(&stored_key, &verifier.stored_key) && self.client_key.set(key).is_ok()
    }
}

/// Constant-time comparison of two secrets.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn debug_form_never_shows_a_secret() {
        let text = "[clusters.main]\nnodes = [{ host = \"127.0.0.1\", port = 5432 }]\n\n\
                    [users.app]\npassword = \"pl41n-s3cret\"\nserver_password = \"s3rver-s3cret\"\n";
        let config = Config::parse(text, "t.toml").unwrap();
        let key = SaltKey::from_config(&config);
        let user = UserAuth::from_config("app", &config.users["app"], &key).unwrap();
        let shown = format!("{user:?} {user:#?}");
        let md5 = user.md5.clone().unwrap();
        for secret in ["pl41n-s3cret", "s3rver-s3cret", md5.as_str()] {
            assert!(
                !shown.contains(secret),
                "Debug of UserAuth shows a secret: {shown}"
            );
        }
        assert!(shown.contains("app") && shown.contains("<hidden>"), "{shown}");
    }
}
