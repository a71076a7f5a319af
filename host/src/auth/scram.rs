//! Server side of SCRAM-SHA-256 (RFC 5802/7677) as Postgres speaks it, with
//! SCRAM-SHA-256-PLUS (`tls-server-end-point` channel binding, RFC 5929) on TLS connections:
//! the client proves it sees the proxy's own certificate, so a man in the middle holding
//! another certificate cannot relay the login. The client side, used towards servers, is
//! ours too (`ScramKeyClient`, without channel binding).
//!
//! Written here because no maintained crate offers the server side on current `ring`/RustCrypto;
//! verifiers are produced by postgres-protocol (`password::scram_sha_256`), so the stored
//! format and SASLprep handling match Postgres exactly.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub use crate::config::ScramVerifier;

type HmacSha256 = Hmac<Sha256>;

/// Postgres' default `scram_iterations`.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// The most PBKDF2 iterations the proxy computes for a server's challenge (about a second of
/// one core). A server may set `scram_iterations` up to 2^31 - 1; an absurd count from a
/// confused or hostile server would otherwise hold a worker for hours.
pub const MAX_SERVER_ITERATIONS: u32 = 1_000_000;

impl ScramVerifier {
    /// Derives a verifier from a plaintext password with `salt` and 4096 iterations, as
    /// Postgres' `password_encryption = scram-sha-256` does.
    pub fn derive(password: &str, salt: &[u8]) -> ScramVerifier {
        let keys = ScramKeys::derive(password, salt, DEFAULT_ITERATIONS);
        ScramVerifier {
            iterations: DEFAULT_ITERATIONS,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(keys.client_key).into(),
            server_key: keys.server_key,
        }
    }
}

/// Why a SCRAM exchange failed: `BadProof` ends in 28P01 for the client, `ChannelBinding`
/// in 28000, `Protocol` (a malformed message) in 08P01; `DerivationAborted` only happens on
/// the proxy's side of a server login.
#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Protocol(&'static str),
    #[error("{0}")]
    ChannelBinding(&'static str),
    #[error("password authentication failed")]
    BadProof,
    #[error("SCRAM key derivation was aborted (the proxy is shutting down)")]
    DerivationAborted,
}

/// The channel binding type the proxy supports (RFC 5929).
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// The channel binding an exchange runs with: whether the client chose
/// SCRAM-SHA-256-PLUS, and the connection's `tls-server-end-point` data when -PLUS was
/// offered on it (a TLS connection).
#[derive(Debug, Clone, Copy, Default)]
pub struct Binding<'a> {
    pub plus: bool,
    pub end_point: Option<&'a [u8]>,
}

impl Binding<'_> {
    /// A connection without channel binding (plaintext), the client on plain SCRAM-SHA-256.
    pub const NONE: Binding<'static> = Binding {
        plus: false,
        end_point: None,
    };
}

/// One exchange, from the client-first message to the server-final message.
pub struct ScramExchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// What the client-final's `c=` must decode to: the gs2 header, then the binding data
    /// when the client bound the channel.
    channel: Vec<u8>,
    bound: bool,
}

impl ScramExchange {
    /// Handles client-first; returns the exchange and the server-first message to send.
    /// The gs2 header must agree with `binding` (RFC 5802 §6): -PLUS with
    /// `p=tls-server-end-point`, plain SCRAM with `n`, or `y` where -PLUS was not offered
    /// (`y` where it was means something between stripped -PLUS from our offer).
    pub fn start(
        verifier: &ScramVerifier,
        binding: Binding<'_>,
        client_first: &[u8],
    ) -> Result<(ScramExchange, String), ScramError> {
        let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let mut parts = text.splitn(3, ',');
        let flag = parts.next().ok_or(ScramError::Protocol("missing gs2 header"))?;
        let authzid = parts.next().ok_or(ScramError::Protocol("missing gs2 header"))?;
        let bare = parts
            .next()
            .ok_or(ScramError::Protocol("missing client-first-message-bare"))?;
        let mut channel = format!("{flag},{authzid},").into_bytes();
        let bound = match (flag, binding.plus, binding.end_point) {
            ("p=tls-server-end-point", true, Some(data)) => {
                channel.extend_from_slice(data);
                true
            }
            (f, true, _) if !f.starts_with("p=") => {
                return Err(ScramError::ChannelBinding(
                    "the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data",
                ))
            }
            (_, true, _) => {
                return Err(ScramError::ChannelBinding(
                    "unsupported SCRAM channel binding type: the proxy supports tls-server-end-point",
                ))
            }
            ("n", false, _) => false,
            ("y", false, None) => false,
            ("y", false, Some(_)) => {
                return Err(ScramError::ChannelBinding(
                    "SCRAM channel binding negotiation error: the client supports channel binding but thinks the proxy does not, and the proxy does",
                ))
            }
            (f, false, _) if f.starts_with("p=") => {
                return Err(ScramError::ChannelBinding(
                    "the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data",
                ))
            }
            _ => return Err(ScramError::Protocol("bad channel binding flag")),
        };
        if !authzid.is_empty() {
            return Err(ScramError::Protocol("authorization identity is not supported"));
        }
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Protocol("missing client nonce"))?;
        let server_nonce: [u8; 18] = rand::random();
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let exchange = ScramExchange {
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            channel,
            bound,
        };
        Ok((exchange, server_first))
    }

    /// Checks client-final; on success returns the server-final message and the client's
    /// ClientKey, which lets the proxy log in to servers holding the same verifier.
    pub fn finish(
        self,
        verifier: &ScramVerifier,
        client_final: &[u8],
    ) -> Result<(String, [u8; 32]), ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Protocol("missing proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                channel = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        let channel = channel.ok_or(ScramError::Protocol("missing channel binding"))?;
        if B64.decode(channel).ok().as_deref() != Some(self.channel.as_slice()) {
            return Err(match self.bound {
                true => ScramError::ChannelBinding("SCRAM channel binding check failed"),
                false => ScramError::Protocol("channel binding does not match"),
            });
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Protocol("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Protocol("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError::Protocol("proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for (k, (p, s)) in client_key.iter_mut().zip(proof.iter().zip(client_signature)) {
            *k = p ^ s;
        }
        let stored_key = Sha256::digest(client_key);
        if !super::ct_eq(stored_key.as_slice(), &verifier.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
        Ok((format!("v={}", B64.encode(server_signature)), client_key))
    }
}

/// Keys that answer a server's SCRAM challenge: derived from the password once per (salt,
/// iterations), or learnt from a client's login (ClientKey) and the verifier (ServerKey).
#[derive(Clone)]
pub struct ScramKeys {
    pub client_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramKeys {
    /// RFC 5802 key derivation: SaltedPassword = PBKDF2-HMAC-SHA-256(SASLprep(password)).
    /// A password SASLprep rejects is used as is, as Postgres does.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
        let prepared = stringprep::saslprep(password).unwrap_or(std::borrow::Cow::Borrowed(password));
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, &mut salted);
        ScramKeys {
            client_key: hmac(&salted, b"Client Key"),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

/// Server-side SCRAM keys derived from one plaintext password, cached for the server's
/// (salt, iterations): PBKDF2 costs milliseconds (a second at the iteration cap), and a pool
/// refilling after a failover must not pay it per connection.
///
/// A derivation runs on tokio's blocking pool, never on an async worker: with
/// `[proxy] workers = 1` there is only one, and a slow derivation there would stall every
/// session. The lock is tokio's and is held across the derivation, so logins racing on a
/// cold cache wait (asynchronously) for one derivation instead of each computing it.
#[derive(Default)]
pub struct DerivedKeys {
    cache: tokio::sync::Mutex<Option<(Vec<u8>, u32, ScramKeys)>>,
}

impl DerivedKeys {
    /// The keys for `password` with the server's `salt` and `iterations`: cached, or derived
    /// off the async workers.
    pub async fn get(&self, password: &str, salt: &[u8], iterations: u32) -> Result<ScramKeys, ScramError> {
        let mut cache = self.cache.lock().await;
        if let Some((s, i, keys)) = cache.as_ref() {
            if s == salt && *i == iterations {
                return Ok(keys.clone());
            }
        }
        let (owned_password, owned_salt) = (password.to_owned(), salt.to_vec());
        let keys =
            tokio::task::spawn_blocking(move || ScramKeys::derive(&owned_password, &owned_salt, iterations))
                .await
                .map_err(|_| ScramError::DerivationAborted)?;
        *cache = Some((salt.to_vec(), iterations, keys.clone()));
        Ok(keys)
    }
}

impl std::fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DerivedKeys")
    }
}

/// Where a SCRAM client's keys come from.
pub enum KeySource<'a> {
    Keys(ScramKeys),
    Password {
        password: &'a str,
        cache: &'a DerivedKeys,
    },
}

/// Client side of SCRAM-SHA-256, from a password (keys derived once per salt) or from
/// pass-through keys (PgBouncer's "SCRAM pass-through").
pub struct ScramKeyClient<'a> {
    source: KeySource<'a>,
    client_first_bare: String,
    nonce: String,
    /// The keys and AuthMessage once server-first arrived.
    state: Option<(ScramKeys, String)>,
}

impl<'a> ScramKeyClient<'a> {
    /// Returns the client and its client-first message.
    pub fn new(source: KeySource<'a>) -> (ScramKeyClient<'a>, String) {
        let nonce = B64.encode(rand::random::<[u8; 18]>());
        let client_first_bare = format!("n=,r={nonce}");
        let first = format!("n,,{client_first_bare}");
        (
            ScramKeyClient {
                source,
                client_first_bare,
                nonce,
                state: None,
            },
            first,
        )
    }

    /// Answers server-first with client-final (deriving keys off the async workers when
    /// the cache has none for the server's salt).
    pub async fn respond(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(server_first).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        let attr = |name: &str| text.split(',').find_map(|a| a.strip_prefix(name));
        let nonce = attr("r=").ok_or(ScramError::Protocol("missing nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Protocol("server nonce does not extend ours"));
        }
        let keys = match &self.source {
            KeySource::Keys(k) => k.clone(),
            KeySource::Password { password, cache } => {
                let salt = attr("s=")
                    .and_then(|s| B64.decode(s).ok())
                    .ok_or(ScramError::Protocol("missing or malformed salt"))?;
                let iterations: u32 = attr("i=")
                    .and_then(|i| i.parse().ok())
                    .filter(|i| *i > 0)
                    .ok_or(ScramError::Protocol("missing or malformed iteration count"))?;
                if iterations > MAX_SERVER_ITERATIONS {
                    return Err(ScramError::Protocol(
                        "iteration count above the proxy's limit of 1000000",
                    ));
                }
                cache.get(password, &salt, iterations).await?
            }
        };
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{},{}", self.client_first_bare, text, without_proof);
        let stored_key = Sha256::digest(keys.client_key);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = keys
            .client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.state = Some((keys, auth_message));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server's signature in server-final.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = std::str::from_utf8(server_final).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        let v = text
            .strip_prefix("v=")
            .ok_or(ScramError::Protocol("missing server signature"))?;
        let (keys, auth_message) = self
            .state
            .as_ref()
            .ok_or(ScramError::Protocol("final before continue"))?;
        let expected = hmac(&keys.server_key, auth_message.as_bytes());
        match B64.decode(v) {
            Ok(sig) if super::ct_eq(&sig, &expected) => Ok(()),
            _ => Err(ScramError::BadProof),
        }
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Runs postgres-protocol's client against our server side.
    fn run(password_stored: &str, password_given: &str) -> Result<(), ScramError> {
        let verifier = ScramVerifier::derive(password_stored, &rand::random::<[u8; 16]>());
        let mut client = ScramSha256::new(password_given.as_bytes(), ChannelBinding::unsupported());
        let (exchange, server_first) = ScramExchange::start(&verifier, Binding::NONE, client.message())?;
        client
            .update(server_first.as_bytes())
            .expect("client accepts server-first");
        let (server_final, _) = exchange.finish(&verifier, client.message())?;
        client
            .finish(server_final.as_bytes())
            .expect("client verifies the server");
        Ok(())
    }

    #[tokio::test]
    async fn pass_through_keys_log_in_like_the_password() {
        // A client logs in with the password; the proxy keeps its ClientKey and uses it to
        // log in to a "server" holding the same verifier.
        let verifier = ScramVerifier::derive("pw", &rand::random::<[u8; 16]>());
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let (exchange, server_first) =
            ScramExchange::start(&verifier, Binding::NONE, client.message()).unwrap();
        client.update(server_first.as_bytes()).unwrap();
        let (_, client_key) = exchange.finish(&verifier, client.message()).unwrap();

        let keys = ScramKeys {
            client_key,
            server_key: verifier.server_key,
        };
        let (mut proxy, first) = ScramKeyClient::new(KeySource::Keys(keys));
        let (exchange, server_first) =
            ScramExchange::start(&verifier, Binding::NONE, first.as_bytes()).unwrap();
        let last = proxy.respond(server_first.as_bytes()).await.unwrap();
        let (server_final, _) = exchange.finish(&verifier, last.as_bytes()).unwrap();
        proxy.verify(server_final.as_bytes()).unwrap();
        assert!(proxy.verify(b"v=AAAA").is_err());
    }

    #[test]
    fn right_password_passes_and_server_is_verified() {
        run("s3cret", "s3cret").unwrap();
        run("pässwörd", "pässwörd").unwrap();
    }

    #[test]
    fn wrong_password_fails() {
        assert!(matches!(run("s3cret", "guess"), Err(ScramError::BadProof)));
    }

    #[tokio::test]
    async fn password_keys_match_postgres_verifier_and_log_in() {
        // Our derivation must agree with postgres-protocol's (and so with Postgres).
        let ours = ScramVerifier::derive("pässword", &rand::random::<[u8; 16]>());
        let theirs = ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(b"x")).unwrap();
        assert_eq!(ours.iterations, theirs.iterations);
        let keys = ScramKeys::derive("x", &theirs.salt, theirs.iterations);
        assert_eq!(keys.server_key, theirs.server_key);
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(keys.client_key)),
            theirs.stored_key
        );

        let cache = DerivedKeys::default();
        let (mut client, first) = ScramKeyClient::new(KeySource::Password {
            password: "pässword",
            cache: &cache,
        });
        let (exchange, server_first) = ScramExchange::start(&ours, Binding::NONE, first.as_bytes()).unwrap();
        let last = client.respond(server_first.as_bytes()).await.unwrap();
        let (server_final, _) = exchange.finish(&ours, last.as_bytes()).unwrap();
        client.verify(server_final.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn absurd_iteration_counts_are_refused_before_deriving() {
        let cache = DerivedKeys::default();
        for count in [MAX_SERVER_ITERATIONS + 1, u32::MAX] {
            let (mut client, _) = ScramKeyClient::new(KeySource::Password {
                password: "pw",
                cache: &cache,
            });
            let server_first = format!("r={}xyz,s=c2FsdA==,i={count}", client.nonce);
            assert!(matches!(
                client.respond(server_first.as_bytes()).await,
                Err(ScramError::Protocol(m)) if m.contains("1000000")
            ));
        }
        assert_eq!(
            MAX_SERVER_ITERATIONS, 1_000_000,
            "the error message names the limit"
        );
    }

    /// A slow derivation (100,000 iterations, nearly a second unoptimised) on a
    /// current-thread runtime, as `[proxy] workers = 1` runs: a timer task on the same
    /// runtime keeps firing every 5 ms while it runs, so other sessions go on being served.
    /// Derived on the async worker (the old code), the timer would fire at most once, after
    /// the derivation. A second login with the same salt is answered from the cache.
    #[test]
    fn slow_derivation_does_not_stall_the_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let cache = std::sync::Arc::new(DerivedKeys::default());
            let started = std::time::Instant::now();
            let derivation = tokio::spawn({
                let cache = cache.clone();
                async move { cache.get("pw", b"salt", 100_000).await.unwrap() }
            });
            let mut ticks = 0u32;
            while !derivation.is_finished() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                ticks += 1;
            }
            let keys = derivation.await.unwrap();
            let elapsed = started.elapsed();
            println!("derivation of 100000 iterations took {elapsed:?}; the 5 ms timer fired {ticks} times meanwhile");
            assert!(
                ticks >= 3,
                "the runtime stalled during the derivation: {ticks} ticks in {elapsed:?}"
            );
            assert_eq!(
                keys.server_key,
                ScramKeys::derive("pw", b"salt", 100_000).server_key
            );
            let cached_at = std::time::Instant::now();
            let again = cache.get("pw", b"salt", 100_000).await.unwrap();
            println!("cached keys took {:?}", cached_at.elapsed());
            assert_eq!(again.client_key, keys.client_key);
        });
    }

    /// postgres-protocol's client (tokio-postgres' SCRAM) over "TLS": with the connection's
    /// end-point data it logs in on -PLUS; with other data (another certificate: a man in the
    /// middle) it is refused as a binding failure, whatever the password.
    #[test]
    fn channel_binding_must_carry_our_end_point() {
        let verifier = ScramVerifier::derive("pw", &rand::random::<[u8; 16]>());
        let ours = [7u8; 32];
        let run = |data: Vec<u8>| -> Result<(), ScramError> {
            let mut client = ScramSha256::new(b"pw", ChannelBinding::tls_server_end_point(data));
            let binding = Binding {
                plus: true,
                end_point: Some(&ours),
            };
            let (exchange, server_first) = ScramExchange::start(&verifier, binding, client.message())?;
            client.update(server_first.as_bytes()).unwrap();
            let (server_final, _) = exchange.finish(&verifier, client.message())?;
            client.finish(server_final.as_bytes()).unwrap();
            Ok(())
        };
        run(ours.to_vec()).unwrap();
        assert!(matches!(
            run(vec![8u8; 32]),
            Err(ScramError::ChannelBinding(m)) if m.contains("check failed")
        ));
    }

    /// The gs2 header must agree with the mechanism and with what was offered.
    #[test]
    fn binding_flags_must_agree_with_the_offer() {
        let v = ScramVerifier::derive("x", &rand::random::<[u8; 16]>());
        let data = [1u8; 32];
        let offered = |plus| Binding {
            plus,
            end_point: Some(&data),
        };
        let start = |binding, first: &[u8]| ScramExchange::start(&v, binding, first).map(|_| ());
        // Plain SCRAM where -PLUS was offered: fine with `n`; `y` is a downgrade.
        assert!(start(offered(false), b"n,,n=,r=abc").is_ok());
        assert!(matches!(
            start(offered(false), b"y,,n=,r=abc"),
            Err(ScramError::ChannelBinding(m)) if m.contains("negotiation")
        ));
        // `y` where nothing was offered (plaintext) is the honest answer.
        assert!(start(Binding::NONE, b"y,,n=,r=abc").is_ok());
        // -PLUS without binding data, or with a type we do not speak.
        assert!(matches!(
            start(offered(true), b"n,,n=,r=abc"),
            Err(ScramError::ChannelBinding(_))
        ));
        assert!(matches!(
            start(offered(true), b"p=tls-unique,,n=,r=abc"),
            Err(ScramError::ChannelBinding(m)) if m.contains("tls-server-end-point")
        ));
    }

    #[test]
    fn parses_postgres_verifier() {
        let v = postgres_protocol::password::scram_sha_256(b"x");
        let parsed = ScramVerifier::parse(&v).unwrap();
        assert_eq!(parsed.iterations, 4096);
        assert!(ScramVerifier::parse("SCRAM-SHA-256$0:AA==$AA==:AA==").is_none());
        assert!(ScramVerifier::parse("SCRAM-SHA-256$garbage").is_none());
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let v = ScramVerifier::derive("x", &rand::random::<[u8; 16]>());
        assert!(matches!(
            ScramExchange::start(&v, Binding::NONE, b"\xff\xfe"),
            Err(ScramError::Protocol(_))
        ));
        assert!(matches!(
            ScramExchange::start(&v, Binding::NONE, b"n,,"),
            Err(ScramError::Protocol(_))
        ));
        assert!(matches!(
            ScramExchange::start(&v, Binding::NONE, b"p=tls-server-end-point,,n=,r=abc"),
            Err(ScramError::ChannelBinding(_))
        ));
    }
}
