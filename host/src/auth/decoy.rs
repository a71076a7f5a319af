//! The salts the proxy makes up, and what an unknown user is challenged with.
//!
//! A SCRAM challenge shows the user's salt and iteration count before any proof is checked.
//! For it not to tell whether a user exists, an unknown user gets what a configured one
//! would: a salt of its own, stable across attempts and restarts and different per name, the
//! iteration count and the method most configured users get, and a proof check of the same
//! cost that fails like a wrong password. Salts are HMAC-SHA-256(key, name) truncated to 16
//! bytes (the length Postgres uses); users configured with a plaintext password get theirs
//! the same way, so no salt the proxy shows changes at a restart.
//!
//! The key is `proxy.auth_salt_secret` when set. Otherwise it is an HMAC over every `[users]`
//! entry (name, password, server password): stable across restarts and across proxies that
//! share a configuration (behind one load balancer they answer alike), and unknown to anyone
//! who does not know those secrets. It changes when a configured secret changes, which makes
//! unknown users' salts change once; `auth_salt_secret` avoids even that.

use std::collections::HashMap;
use std::fmt::Write;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{ScramVerifier, UserAuth};
use crate::config::{ClientAuthMethod, Config};

/// Length of the salts the proxy makes up, as Postgres' (`SCRAM_DEFAULT_SALT_LEN`).
pub const SALT_LEN: usize = 16;

/// The key every made-up salt and decoy secret is derived from, held as HMAC-SHA-256 keyed
/// with it: each value derived clones it rather than keying a new one, which would hash the
/// key's two pads again (two of the four SHA-256 blocks of a value, three values at every
/// login for the decoy made then).
pub struct SaltKey(Hmac<Sha256>);

impl SaltKey {
    /// `proxy.auth_salt_secret`, or a key derived from the secrets in `[users]`.
    pub fn from_config(config: &Config) -> SaltKey {
        let mut mac = hmac_with(b"switchyard auth salt key");
        match &config.proxy.auth_salt_secret {
            Some(secret) => {
                mac.update(b"configured\0");
                mac.update(secret.as_bytes());
            }
            None => {
                mac.update(b"users\0");
                for (name, user) in &config.users {
                    for part in [
                        name.as_str(),
                        user.password.get_ref(),
                        user.server_password.as_deref().unwrap_or(""),
                    ] {
                        mac.update(&(part.len() as u64).to_be_bytes());
                        mac.update(part.as_bytes());
                    }
                }
            }
        }
        SaltKey(hmac_with(&mac.finalize().into_bytes()))
    }

    /// The salt shown for `user` when the proxy has to make one up.
    pub fn salt(&self, user: &str) -> [u8; SALT_LEN] {
        let full = self.derive("salt", user);
        full[..SALT_LEN].try_into().expect("32 bytes hold 16")
    }

    /// A value only this key gives, for `purpose` and `user`.
    fn derive(&self, purpose: &str, user: &str) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(user.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

fn hmac_with(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length")
}

/// Makes up the credentials of users the proxy does not know.
pub struct Decoys {
    key: SaltKey,
    method: ClientAuthMethod,
    iterations: u32,
}

impl Decoys {
    /// Decoys that look like `users`: their most common method and SCRAM iteration count
    /// (SCRAM and Postgres' 4096 when there are none, or on a tie).
    pub fn new<'a>(key: SaltKey, users: impl IntoIterator<Item = &'a UserAuth>) -> Decoys {
        let (mut md5, mut scram) = (0usize, 0usize);
        let mut iterations: HashMap<u32, usize> = HashMap::new();
        for user in users {
            match user.method {
                ClientAuthMethod::Md5 => md5 += 1,
                ClientAuthMethod::ScramSha256 => scram += 1,
                // Methods that challenge every user alike, known or not.
                ClientAuthMethod::Password | ClientAuthMethod::Cert => {}
            }
            if let Some(v) = &user.scram {
                *iterations.entry(v.iterations).or_default() += 1;
            }
        }
        let method = if md5 > scram {
            ClientAuthMethod::Md5
        } else {
            ClientAuthMethod::ScramSha256
        };
        let iterations = iterations
            .into_iter()
            .max_by_key(|&(i, n)| (n, i == super::scram::DEFAULT_ITERATIONS, i))
            .map_or(super::scram::DEFAULT_ITERATIONS, |(i, _)| i);
        Decoys {
            key,
            method,
            iterations,
        }
    }

    /// Credentials for an unknown `name` that no client can satisfy, challenged with the
    /// decoys' method: a SCRAM verifier with the made-up salt and a key nobody knows a
    /// password for, and an md5 hash likewise. Cheap (three HMACs, no PBKDF2), so answering an
    /// unknown name costs about what a configured one does, and a flood of them nothing.
    pub fn user(&self, name: &str) -> UserAuth {
        let key = self.key.derive("stored key", name);
        let scram = ScramVerifier {
            iterations: self.iterations,
            salt: self.key.salt(name).to_vec(),
            stored_key: key,
            // Only sent after a proof passed, which never happens here.
            server_key: key,
        };
        let mut md5 = String::with_capacity(35);
        md5.push_str("md5");
        for b in &self.key.derive("md5", name)[..16] {
            let _ = write!(md5, "{b:02x}"); // writing to a String cannot fail
        }
        // Both, like a user with a plaintext password: an `auth_hba_file` rule may ask for
        // either method whatever the decoy's own.
        let (scram, md5) = (Some(scram), Some(md5));
        UserAuth::without_server_password(name, self.method, scram, md5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(users: &str, secret: Option<&str>) -> Config {
        let secret = secret.map_or(String::new(), |s| format!("auth_salt_secret = \"{s}\"\n"));
        let text = format!(
            "[proxy]\n{secret}[clusters.main]\nnodes = [{{ host = \"127.0.0.1\", port = 5432 }}]\n\
             [databases.app]\ncluster = \"main\"\n{users}"
        );
        Config::parse(&text, "t.toml").unwrap()
    }

    fn decoys(config: &Config) -> Decoys {
        let key = SaltKey::from_config(config);
        let users: Vec<UserAuth> = config
            .users
            .iter()
            .map(|(n, u)| UserAuth::from_config(n, u, &key).unwrap())
            .collect();
        Decoys::new(SaltKey::from_config(config), &users)
    }

    #[test]
    fn salts_are_stable_per_name_and_differ_between_names() {
        let cfg = config("[users.app]\npassword = \"app\"\n", None);
        let a = decoys(&cfg).user("nobody");
        let b = decoys(&cfg).user("nobody");
        let c = decoys(&cfg).user("somebody");
        assert_eq!(a.scram.as_ref().unwrap().salt, b.scram.as_ref().unwrap().salt);
        assert_ne!(a.scram.as_ref().unwrap().salt, c.scram.as_ref().unwrap().salt);
        assert_eq!(a.scram.as_ref().unwrap().salt.len(), SALT_LEN);
        assert_eq!(a.method, ClientAuthMethod::ScramSha256);
        assert_eq!(a.scram.as_ref().unwrap().iterations, 4096);
    }

    #[test]
    fn the_key_depends_on_the_secrets_or_the_configured_secret() {
        let one = SaltKey::from_config(&config("[users.app]\npassword = \"app\"\n", None));
        let other = SaltKey::from_config(&config("[users.app]\npassword = \"app2\"\n", None));
        assert_ne!(one.salt("x"), other.salt("x"));
        let fixed = "0123456789abcdef0123";
        let a = SaltKey::from_config(&config("[users.app]\npassword = \"app\"\n", Some(fixed)));
        let b = SaltKey::from_config(&config("[users.app]\npassword = \"app2\"\n", Some(fixed)));
        assert_eq!(a.salt("x"), b.salt("x"));
    }

    /// The values derived are those of an HMAC keyed afresh for each (as before the keyed
    /// state was kept): salts shown to clients must not change with an upgrade.
    #[test]
    fn derived_values_equal_a_fresh_hmac_under_the_key() {
        let cfg = config("", Some("0123456789abcdef0123"));
        let mut mac = hmac_with(b"switchyard auth salt key");
        mac.update(b"configured\0");
        mac.update(b"0123456789abcdef0123");
        let raw: [u8; 32] = mac.finalize().into_bytes().into();
        let mut fresh = hmac_with(&raw);
        fresh.update(b"salt\0nobody");
        let expected: [u8; 32] = fresh.finalize().into_bytes().into();
        let key = SaltKey::from_config(&cfg);
        assert_eq!(key.salt("nobody"), expected[..SALT_LEN]);
        assert_eq!(key.salt("nobody"), key.salt("nobody"));
        let d = decoys(&cfg).user("nobody");
        let md5 = d.md5.unwrap();
        assert!(md5.len() == 35 && md5.starts_with("md5") && md5[3..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn plaintext_users_get_the_made_up_salt_of_their_name() {
        let cfg = config("[users.app]\npassword = \"app\"\n", None);
        let key = SaltKey::from_config(&cfg);
        let app = UserAuth::from_config("app", &cfg.users["app"], &key).unwrap();
        assert_eq!(app.scram.unwrap().salt, key.salt("app").to_vec());
    }

    #[test]
    fn decoys_follow_the_configured_method_and_iterations() {
        let verifier = "SCRAM-SHA-256$8192:c2FsdHNhbHRzYWx0c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let cfg = config(
            &format!(
                "[users.a]\npassword = \"{verifier}\"\n[users.b]\npassword = \"{verifier}\"\n\
                 [users.c]\npassword = \"c\"\n"
            ),
            None,
        );
        let d = decoys(&cfg).user("nobody");
        assert_eq!(d.scram.unwrap().iterations, 8192);
        let md5 = "md5".to_string() + &"0".repeat(32);
        let cfg = config(
            &format!(
                "[users.a]\npassword = \"{md5}\"\n[users.b]\npassword = \"b\"\nauth = \"md5\"\n\
                 [users.c]\npassword = \"c\"\n"
            ),
            None,
        );
        let d = decoys(&cfg).user("nobody");
        assert_eq!(d.method, ClientAuthMethod::Md5);
        assert!(d.md5.is_some_and(|h| h.len() == 35 && h.starts_with("md5")));
        // A SCRAM verifier too, for an `auth_hba_file` rule asking for SCRAM.
        assert!(d.scram.is_some());
    }
}
