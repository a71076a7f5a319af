//! Fuzzing of the SCRAM-SHA-256 exchange with hostile messages, both ways: the proxy as a
//! server checking a client's client-first and client-final (with and without channel
//! binding), and the proxy as a client answering a server's server-first and checking its
//! server-final.
//!
//! Inputs are real exchanges (the proxy's own client and server side, which the unit tests
//! check against postgres-protocol) damaged by the codec fuzzer's edits
//! (`protocol/tests/support/hostile.rs`), arbitrary bytes, and server-first messages with
//! absurd iteration counts, bad base64 salts and nonces that do not extend the client's.
//! Besides "no panic", each property checks what matters for security: a damaged
//! client-final or server-final never authenticates, an iteration count above
//! [`MAX_SERVER_ITERATIONS`] is refused before any key is derived (else these properties
//! would run for hours), and a server-first whose nonce does not extend the client's is
//! refused. Case counts are printed (`--nocapture`); `PROPTEST_CASES` sets them.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use proptest::prelude::*;
use switchyard::auth::{
    Binding, DerivedKeys, KeySource, ScramError, ScramExchange, ScramKeyClient, ScramKeys, ScramVerifier,
    MAX_SERVER_ITERATIONS,
};

#[path = "../../protocol/tests/support/hostile.rs"]
#[allow(dead_code)] // `hostile()` is for the codec's fuzzers
mod hostile;
#[path = "../../protocol/tests/support/runner.rs"]
mod runner;

use hostile::{apply, edit, Edit};
use runner::fuzz;

const PASSWORD: &str = "s3cret";
const SALT: &[u8] = b"sixteen byte sal";

/// Runs the client's `respond`, which derives keys on tokio's blocking pool.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|rt| rt.block_on(future))
}

/// The verifier a server keeps for [`PASSWORD`], and the keys a client derives from it.
fn credentials() -> (ScramVerifier, ScramKeys) {
    let verifier = ScramVerifier::derive(PASSWORD, SALT);
    let keys = ScramKeys {
        client_key: ScramKeys::derive(PASSWORD, SALT, verifier.iterations).client_key,
        server_key: verifier.server_key,
    };
    (verifier, keys)
}

/// The nonce in a client-first message the proxy made (`n,,n=,r=<nonce>`).
fn client_nonce(first: &str) -> &str {
    first.rsplit_once("r=").expect("client-first has a nonce").1
}

/// Which message of the exchange is damaged.
#[derive(Debug, Clone)]
enum ServerSideInput {
    /// The client-first message, damaged or replaced by arbitrary bytes.
    First(Vec<Edit>, Option<Vec<u8>>),
    /// The client-final message, damaged (no edits: the real one).
    Final(Vec<Edit>),
}

#[test]
fn scram_server_side_never_panics_and_only_the_real_proof_passes() {
    let (verifier, keys) = credentials();
    let input = prop_oneof![
        (
            prop::collection::vec(edit(), 1..5),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..128))
        )
            .prop_map(|(e, raw)| ServerSideInput::First(e, raw)),
        prop::collection::vec(edit(), 0..5).prop_map(ServerSideInput::Final),
    ];
    fuzz("scram server side", input, |input| {
        let (mut client, first) = ScramKeyClient::new(KeySource::Keys(keys.clone()));
        match input {
            ServerSideInput::First(edits, raw) => {
                let mut first = raw.unwrap_or_else(|| first.clone().into_bytes());
                apply(&mut first, &edits);
                match ScramExchange::start(&verifier, Binding::NONE, &first) {
                    Ok((_, server_first)) => {
                        // What the server says is the client's nonce and ours, the salt and
                        // the count: its size follows the client's message, not the client's say.
                        prop_assert!(server_first.starts_with("r="), "{}", server_first);
                        let count = format!(",i={}", verifier.iterations);
                        prop_assert!(server_first.ends_with(&count));
                        prop_assert!(server_first.len() <= first.len() + 64);
                    }
                    Err(ScramError::Protocol(_) | ScramError::ChannelBinding(_)) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("client-first: {e:?}"))),
                }
            }
            ServerSideInput::Final(edits) => {
                let (exchange, server_first) =
                    ScramExchange::start(&verifier, Binding::NONE, first.as_bytes())
                        .expect("our client-first is valid");
                let last =
                    block_on(client.respond(server_first.as_bytes())).expect("our server-first is valid");
                let mut damaged = last.clone().into_bytes();
                apply(&mut damaged, &edits);
                match exchange.finish(&verifier, &damaged) {
                    Ok((server_final, client_key)) => {
                        prop_assert_eq!(&damaged[..], last.as_bytes(), "a damaged client-final logged in");
                        prop_assert_eq!(client_key, keys.client_key);
                        prop_assert!(client.verify(server_final.as_bytes()).is_ok());
                    }
                    Err(e) => {
                        prop_assert_ne!(
                            &damaged[..],
                            last.as_bytes(),
                            "the real client-final failed: {:?}",
                            e
                        );
                    }
                }
            }
        }
        Ok(())
    });
}

/// A -PLUS client-final for `keys`, bound to `data`: what a client that saw a certificate
/// with that end-point hash sends (built here from the keys, without PBKDF2, so the property
/// runs thousands of cases; postgres-protocol's client is checked against the same server
/// side in `auth::scram`'s unit tests).
fn plus_client_final(keys: &ScramKeys, client_first_bare: &str, server_first: &str, data: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let nonce = server_first
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .expect("server-first has a nonce");
    let channel = [PLUS_HEADER.as_bytes(), data].concat();
    let without_proof = format!("c={},r={nonce}", B64.encode(channel));
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let mut mac = Hmac::<Sha256>::new_from_slice(&Sha256::digest(keys.client_key)).expect("any key length");
    mac.update(auth_message.as_bytes());
    let proof: Vec<u8> = keys
        .client_key
        .iter()
        .zip(mac.finalize().into_bytes())
        .map(|(k, s)| k ^ s)
        .collect();
    format!("{without_proof},p={}", B64.encode(proof)).into_bytes()
}

/// The gs2 header of a client binding with `tls-server-end-point`.
const PLUS_HEADER: &str = "p=tls-server-end-point,,";

/// SCRAM-SHA-256-PLUS, the proxy as server: a client binds its proof to the connection's
/// `tls-server-end-point` data or to other bytes (a man in the middle sees another
/// certificate), and its client-final may be damaged. Only the real data in an undamaged
/// message logs in; other data in an intact message is refused as a channel binding
/// failure (28000), never as malformed or with a panic.
#[test]
fn scram_plus_logs_in_only_with_the_connections_end_point() {
    let (verifier, keys) = credentials();
    let ours = [0x42u8; 32];
    let input = (
        prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        prop::collection::vec(edit(), 0..3),
    );
    fuzz("scram-plus server side", input, |(other, edits)| {
        let data = other.unwrap_or_else(|| ours.to_vec());
        let bare = "n=,r=fuzzclientnonce";
        let binding = Binding {
            plus: true,
            end_point: Some(&ours),
        };
        let (exchange, server_first) =
            ScramExchange::start(&verifier, binding, format!("{PLUS_HEADER}{bare}").as_bytes())
                .expect("a -PLUS client-first is valid");
        let last = plus_client_final(&keys, bare, &server_first, &data);
        let mut damaged = last.clone();
        apply(&mut damaged, &edits);
        let honest = data == ours && damaged == last;
        match exchange.finish(&verifier, &damaged) {
            Ok(_) => prop_assert!(
                honest,
                "a login with other binding data or a damaged message passed"
            ),
            Err(ScramError::ChannelBinding(_)) => prop_assert!(!honest, "the honest login was refused"),
            Err(e) => prop_assert_ne!(&damaged, &last, "an intact client-final was refused: {:?}", e),
        }
        Ok(())
    });
}

/// The iteration count in a server-first: cheap valid ones, and absurd or malformed ones.
fn iterations() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => (1u32..4).prop_map(|i| i.to_string()),
        1 => Just((MAX_SERVER_ITERATIONS + 1).to_string()),
        2 => prop::sample::select(vec![
            "0",
            "-1",
            "-4096",
            "2147483647",
            "4294967295",
            "4294967296",
            "99999999999999999999999999",
            "",
            "abc",
            "3.5",
            " 3",
            "0x10",
        ])
        .prop_map(str::to_string),
    ]
}

/// A salt attribute: valid base64 (empty included) or not base64.
fn salt() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..24).prop_map(|s| B64.encode(s)),
        1 => prop::sample::select(vec!["!!!!", "abc", "YQ", "YQ==YQ==", "====", "é"]).prop_map(str::to_string),
    ]
}

/// How a server-first's nonce relates to the client's.
#[derive(Debug, Clone, Copy)]
enum Nonce {
    /// The client's, extended (valid).
    Extended,
    /// Exactly the client's (the server added nothing).
    Same,
    /// Something else.
    Other,
}

#[derive(Debug, Clone)]
enum ClientSideInput {
    /// A server-first with these parts, then damaged.
    First {
        nonce: Nonce,
        salt: String,
        iterations: String,
        edits: Vec<Edit>,
    },
    /// A real exchange whose server-final is damaged (no edits: the real one).
    Final(Vec<Edit>),
    /// Arbitrary server-first and server-final messages.
    Raw(Vec<u8>, Vec<u8>),
}

#[test]
fn scram_client_side_never_panics_and_refuses_what_it_cannot_check() {
    let (verifier, keys) = credentials();
    // One cache for hostile challenges, which derive keys for small iteration counts, and
    // one for the real exchange, which derives its keys once.
    let hostile_cache = DerivedKeys::default();
    let cache = DerivedKeys::default();
    let nonce = prop::sample::select(vec![Nonce::Extended, Nonce::Same, Nonce::Other]);
    let input = prop_oneof![
        (nonce, salt(), iterations(), prop::collection::vec(edit(), 0..3)).prop_map(
            |(nonce, salt, iterations, edits)| ClientSideInput::First {
                nonce,
                salt,
                iterations,
                edits,
            }
        ),
        prop::collection::vec(edit(), 0..5).prop_map(ClientSideInput::Final),
        (
            prop::collection::vec(any::<u8>(), 0..96),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(a, b)| ClientSideInput::Raw(a, b)),
    ];
    fuzz("scram client side", input, |input| {
        match input {
            ClientSideInput::First {
                nonce,
                salt,
                iterations,
                edits,
            } => {
                let (mut client, first) = ScramKeyClient::new(KeySource::Password {
                    password: PASSWORD,
                    cache: &hostile_cache,
                });
                let ours = client_nonce(&first);
                let r = match nonce {
                    Nonce::Extended => format!("{ours}srv"),
                    Nonce::Same => ours.to_string(),
                    Nonce::Other => format!("x{ours}"),
                };
                let mut server_first = format!("r={r},s={salt},i={iterations}").into_bytes();
                apply(&mut server_first, &edits);
                let result = block_on(client.respond(&server_first));
                if edits.is_empty() {
                    let valid = matches!(nonce, Nonce::Extended)
                        && B64.decode(&salt).is_ok()
                        && iterations
                            .parse::<u32>()
                            .is_ok_and(|i| (1..=MAX_SERVER_ITERATIONS).contains(&i));
                    prop_assert_eq!(result.is_ok(), valid, "{:?}", result.err());
                }
                match result {
                    Ok(last) => {
                        let text =
                            std::str::from_utf8(&server_first).expect("an accepted server-first is text");
                        let theirs = text
                            .split(',')
                            .find_map(|a| a.strip_prefix("r="))
                            .expect("a nonce");
                        prop_assert!(theirs.starts_with(ours) && theirs.len() > ours.len());
                        let expected = format!("c=biws,r={theirs},p=");
                        prop_assert!(last.starts_with(&expected));
                        // No server-final can verify but one from a server knowing the keys.
                        prop_assert!(client.verify(b"v=").is_err());
                    }
                    Err(ScramError::Protocol(_)) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("server-first: {e:?}"))),
                }
            }
            ClientSideInput::Final(edits) => {
                let (mut client, first) = ScramKeyClient::new(KeySource::Password {
                    password: PASSWORD,
                    cache: &cache,
                });
                let (exchange, server_first) =
                    ScramExchange::start(&verifier, Binding::NONE, first.as_bytes())
                        .expect("our client-first is valid");
                let last =
                    block_on(client.respond(server_first.as_bytes())).expect("our server-first is valid");
                let (server_final, _) = exchange
                    .finish(&verifier, last.as_bytes())
                    .expect("the right password logs in");
                let mut damaged = server_final.clone().into_bytes();
                apply(&mut damaged, &edits);
                let verified = client.verify(&damaged).is_ok();
                prop_assert_eq!(
                    verified,
                    damaged == server_final.as_bytes(),
                    "server-final {:?}",
                    damaged
                );
            }
            ClientSideInput::Raw(server_first, server_final) => {
                let (mut client, _) = ScramKeyClient::new(KeySource::Keys(keys.clone()));
                prop_assert!(
                    client.verify(&server_final).is_err(),
                    "a server-final before server-first"
                );
                if block_on(client.respond(&server_first)).is_ok() {
                    prop_assert!(client.verify(&server_final).is_err());
                }
            }
        }
        Ok(())
    });
}
