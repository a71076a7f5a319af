//! The stored forms of a password an operator may write in `[users]` (or an `auth_query`
//! returns): the three forms Postgres itself keeps in `pg_authid.rolpassword`. Parsing them
//! is part of reading the configuration, so a malformed verifier is reported with its key and
//! line; checking a client's proof against them is `auth`'s work.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// The shortest `proxy.auth_salt_secret` accepted.
pub const MIN_SALT_SECRET_LEN: usize = 16;

/// A password as the configuration stores it.
#[derive(Debug, Clone)]
pub enum StoredPassword {
    Plain(String),
    Scram(ScramVerifier),
    /// `md5` followed by 32 hex digits: md5(password || username).
    Md5(String),
}

/// A `SCRAM-SHA-256$…` text that is not a verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)"
)]
pub struct MalformedVerifier;

impl StoredPassword {
    /// Recognises the three forms Postgres itself stores in `pg_authid.rolpassword`.
    pub fn parse(text: &str) -> Result<StoredPassword, MalformedVerifier> {
        if text.starts_with("SCRAM-SHA-256$") {
            return ScramVerifier::parse(text)
                .map(StoredPassword::Scram)
                .ok_or(MalformedVerifier);
        }
        if text.len() == 35 && text.starts_with("md5") && text[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(StoredPassword::Md5(text.to_ascii_lowercase()));
        }
        Ok(StoredPassword::Plain(text.to_string()))
    }
}

/// What Postgres stores for a SCRAM user: enough to verify a proof, not to impersonate.
/// (`auth` derives one from a plaintext password.)
#[derive(Clone)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramVerifier {
    /// Parses `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Option<ScramVerifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iter, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(ScramVerifier {
            iterations: iter.parse().ok().filter(|i| *i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }
}
