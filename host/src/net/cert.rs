//! The two facts the proxy reads from an X.509 certificate (parsed by `x509-cert`): the
//! subject's common name (the `cert` authentication method compares it with the user name,
//! as Postgres does) and the signature algorithm's hash (SCRAM's `tls-server-end-point`
//! channel binding hashes our certificate with it, RFC 5929 §4.1). rustls has verified a
//! client's certificate before either is asked; our own is read once at start. A
//! certificate that does not parse reads as "not there".

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
use x509_cert::der::asn1::{Ia5String, PrintableString, TeletexString};
use x509_cert::der::oid::db::{rfc4519, rfc5912};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::Decode;
use x509_cert::Certificate;

/// ecdsa-with-SHA1 (RFC 3279), absent from `const-oid`'s RFC 5912 table.
const ECDSA_WITH_SHA_1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.1");

/// The subject's first common name, in any of the string types it may be written in.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let cert = Certificate::from_der(cert).ok()?;
    let value = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|attribute| attribute.oid == rfc4519::COMMON_NAME)?
        .value
        .clone();
    value
        .decode_as::<String>()
        .ok()
        .or_else(|| {
            value
                .decode_as::<PrintableString>()
                .ok()
                .map(|s| s.as_str().to_owned())
        })
        .or_else(|| value.decode_as::<Ia5String>().ok().map(|s| s.as_str().to_owned()))
        .or_else(|| {
            value
                .decode_as::<TeletexString>()
                .ok()
                .map(|s| s.as_str().to_owned())
        })
}

/// The `tls-server-end-point` channel binding data of a certificate (RFC 5929 §4.1): its
/// hash with the signature algorithm's hash function, SHA-256 for MD5 and SHA-1. `None` for
/// an algorithm without a single hash function (Ed25519, RSA-PSS), as Postgres, which then
/// offers no channel binding either.
pub fn tls_server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    let algorithm = Certificate::from_der(der).ok()?.signature_algorithm.oid;
    match algorithm {
        rfc5912::MD_5_WITH_RSA_ENCRYPTION
        | rfc5912::SHA_1_WITH_RSA_ENCRYPTION
        | ECDSA_WITH_SHA_1
        | rfc5912::SHA_256_WITH_RSA_ENCRYPTION
        | rfc5912::ECDSA_WITH_SHA_256 => Some(Sha256::digest(der).to_vec()),
        rfc5912::SHA_224_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_224 => {
            Some(Sha224::digest(der).to_vec())
        }
        rfc5912::SHA_384_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_384 => {
            Some(Sha384::digest(der).to_vec())
        }
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_512 => {
            Some(Sha512::digest(der).to_vec())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -subj
    /// "/O=switchyard/CN=app"`: ecdsa-with-SHA256, CN after another attribute.
    const EC_APP: &str = "MIIBmjCCAUGgAwIBAgIUYCaynYETv4EiJrrgyCLUKl1vmK8wCgYIKoZIzj0EAwIwIzETMBEGA1UECgwKc3dpdGNoeWFyZDEMMAoGA1UEAwwDYXBwMB4XDTI2MTIwNjIxMDkxN1oXDTM2MTIwMzIxMDkxN1owIzETMBEGA1UECgwKc3dpdGNoeWFyZDEMMAoGA1UEAwwDYXBwMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEBz4vEcjnYRwBS92uUwGVh7fPpnXXcIrhdEwRKCxfBGU5TrAn1oCPeGPptqbBDv7Ff+/VNKJx8dAW/Oj3xgvpTaNTMFEwHQYDVR0OBBYEFFzjwxyFl+P2HzLqS3otRDwMAVhnMB8GA1UdIwQYMBaAFFzjwxyFl+P2HzLqS3otRDwMAVhnMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgXLCJ/N0ExEbmMjdYT9At5saUHfZIOGdsUqONlIe+kn0CIBqude+MAGiwM5bTA6U7UzBtB/H53K9IpIk/F0yAonUN";

    fn der(b64: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("test certificate is base64")
    }

    #[test]
    fn reads_the_common_name_and_hashes_with_sha256() {
        let cert = der(EC_APP);
        assert_eq!(common_name(&cert).as_deref(), Some("app"));
        assert_eq!(tls_server_end_point(&cert), Some(Sha256::digest(&cert).to_vec()));
    }

    /// Truncated or corrupted certificates read as "no name", never a panic.
    #[test]
    fn garbage_is_no_name() {
        let cert = der(EC_APP);
        for len in 0..cert.len() {
            assert_eq!(common_name(&cert[..len]), None, "truncated at {len}");
        }
        for i in 0..cert.len() {
            let mut bad = cert.clone();
            bad[i] ^= 0xff;
            let _ = common_name(&bad);
            let _ = tls_server_end_point(&bad);
        }
        assert_eq!(tls_server_end_point(b"\x30\x84\xff\xff\xff\xff"), None);
    }
}
