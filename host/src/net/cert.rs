//! The two facts the proxy reads from an X.509 certificate, with a minimal DER reader: the
//! subject's common name (the `cert` authentication method compares it with the user name,
//! as Postgres does) and the signature algorithm's hash (SCRAM's `tls-server-end-point`
//! channel binding hashes our certificate with it, RFC 5929 §4.1). rustls has verified the
//! certificate's structure before either is asked for a client's; our own is read once at
//! start. Anything unexpected reads as "not there", never a panic.

use sha2::{Digest, Sha256, Sha384, Sha512};

/// DER tags used here.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// `[0] EXPLICIT Version` of a v3 certificate.
const VERSION: u8 = 0xa0;
/// The string types a common name is written in that are UTF-8 compatible: UTF8String,
/// PrintableString, IA5String.
const TEXT: [u8; 3] = [0x0c, 0x13, 0x16];

/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// One TLV: (tag, contents, what follows).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The contents of an element that must have `tag`, and what follows it.
fn expect(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    element(der).and_then(|(t, body, rest)| (t == tag).then_some((body, rest)))
}

/// (tbsCertificate contents, signatureAlgorithm contents).
fn parts(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let (certificate, _) = expect(cert, SEQUENCE)?;
    let (tbs, rest) = expect(certificate, SEQUENCE)?;
    let (algorithm, _) = expect(rest, SEQUENCE)?;
    Some((tbs, algorithm))
}

/// The subject's first common name, if it has one in a UTF-8 compatible string type.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (tbs, _) = parts(cert)?;
    let mut rest = tbs;
    if let Some((VERSION, _, after)) = element(rest) {
        rest = after;
    }
    // serialNumber, signature, issuer, validity; then subject.
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (mut rdns, _) = expect(rest, SEQUENCE)?;
    while !rdns.is_empty() {
        let (mut set, after) = expect(rdns, SET)?;
        rdns = after;
        while !set.is_empty() {
            let (pair, after) = expect(set, SEQUENCE)?;
            set = after;
            let (oid, value) = expect(pair, OID)?;
            if oid == COMMON_NAME {
                let (tag, text, _) = element(value)?;
                return TEXT
                    .contains(&tag)
                    .then(|| String::from_utf8(text.to_vec()).ok())
                    .flatten();
            }
        }
    }
    None
}

/// The `tls-server-end-point` channel binding data of a certificate (RFC 5929 §4.1): its
/// hash with the signature algorithm's hash function, SHA-256 for MD5 and SHA-1. `None` for
/// an algorithm without a single hash function (Ed25519, RSA-PSS), as Postgres, which then
/// offers no channel binding either.
pub fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    /// Signature algorithm OIDs (contents bytes) by the hash they use.
    const SHA256_OR_WEAKER: &[&[u8]] = &[
        // md5WithRSAEncryption, sha1WithRSAEncryption, sha256WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04],
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05],
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
        // ecdsa-with-SHA1, ecdsa-with-SHA256
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
    ];
    const SHA384: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
    ];
    const SHA512: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
    ];
    let (_, algorithm) = parts(cert)?;
    let (oid, _) = expect(algorithm, OID)?;
    if SHA256_OR_WEAKER.contains(&oid) {
        Some(Sha256::digest(cert).to_vec())
    } else if SHA384.contains(&oid) {
        Some(Sha384::digest(cert).to_vec())
    } else if SHA512.contains(&oid) {
        Some(Sha512::digest(cert).to_vec())
    } else {
        None
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
