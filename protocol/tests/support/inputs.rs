//! Valid inputs of each decoder family, for `support/hostile.rs` to damage: shared by the
//! fuzz properties (`fuzz.rs`) and the allocation bounds (`alloc_bound.rs`).

use bytes::BytesMut;
use proptest::prelude::*;
use switchyard_protocol::backend;
use switchyard_protocol::frame::HEADER_LEN;
use switchyard_protocol::frontend as fe;
use switchyard_protocol::TransactionStatus;

use crate::hostile::{apply, edit};
use crate::messages::{encode_pg, msg};

/// A stream of valid client messages, as bytes.
pub fn client_stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(msg(), 1..6).prop_map(|msgs| {
        let mut buf = BytesMut::new();
        msgs.iter().for_each(|m| encode_pg(m, &mut buf));
        buf.to_vec()
    })
}

/// A valid startup-phase packet: StartupMessage (3.0 or 3.x) with parameters, SSLRequest,
/// GSSENCRequest or CancelRequest.
pub fn startup_packet() -> impl Strategy<Value = Vec<u8>> {
    let key = "[a-z_.]{1,12}";
    let value = "[^\0]{0,24}";
    prop_oneof![
        (prop::collection::vec((key, value), 0..6), 0u32..4).prop_map(|(params, minor)| {
            let mut body = ((3 << 16) | minor).to_be_bytes().to_vec();
            for (k, v) in &params {
                body.extend(k.as_bytes());
                body.push(0);
                body.extend(v.as_bytes());
                body.push(0);
            }
            body.push(0);
            let mut packet = (body.len() as i32 + 4).to_be_bytes().to_vec();
            packet.extend(body);
            packet
        }),
        Just({
            let mut b = BytesMut::new();
            fe::encode_ssl_request(&mut b);
            b.to_vec()
        }),
        Just([8i32.to_be_bytes(), fe::GSSENC_REQUEST_CODE.to_be_bytes()].concat()),
        (any::<i32>(), any::<i32>()).prop_map(|(pid, key)| {
            let mut b = BytesMut::new();
            fe::encode_cancel_request(pid, key, &mut b);
            b.to_vec()
        }),
    ]
}

/// A server message the host decodes, as (tag, body), from the codec's own encoders, its
/// body damaged by up to four edits (the tag stays, so each decoder sees damage to its own
/// message type).
pub fn server_message() -> impl Strategy<Value = (u8, Vec<u8>)> {
    let text = "[^\0]{0,16}";
    let encoded = prop_oneof![
        (text, text, text, any::<bool>()).prop_map(|(code, message, detail, fatal)| {
            let mut out = BytesMut::new();
            let fields = if fatal {
                backend::ErrorFields::fatal(code, message)
            } else {
                backend::ErrorFields::error(code, message)
            };
            backend::error_response(&fields.with_detail(detail), &mut out);
            out
        }),
        (text, text).prop_map(|(n, v)| {
            let mut out = BytesMut::new();
            backend::parameter_status(&n, &v, &mut out);
            out
        }),
        (any::<i32>(), any::<i32>()).prop_map(|(p, k)| {
            let mut out = BytesMut::new();
            backend::backend_key_data(p, k, &mut out);
            out
        }),
        text.prop_map(|t| {
            let mut out = BytesMut::new();
            backend::command_complete(&t, &mut out);
            out
        }),
        prop::sample::select(vec![
            TransactionStatus::Idle,
            TransactionStatus::InTransaction,
            TransactionStatus::Failed
        ])
        .prop_map(|s| {
            let mut out = BytesMut::new();
            backend::ready_for_query(s, &mut out);
            out
        }),
        (
            any::<u8>(),
            any::<[u8; 4]>(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(kind, salt, data)| {
                let mut out = BytesMut::new();
                match kind % 6 {
                    0 => backend::auth_ok(&mut out),
                    1 => backend::auth_cleartext_password(&mut out),
                    2 => backend::auth_md5_password(salt, &mut out),
                    3 => backend::auth_sasl(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"], &mut out),
                    4 => backend::auth_sasl_continue(&data, &mut out),
                    _ => backend::auth_sasl_final(&data, &mut out),
                }
                out
            }),
        (any::<i32>(), prop::collection::vec("_pq_\\.[a-z]{1,8}", 0..4)).prop_map(|(minor, opts)| {
            let mut out = BytesMut::new();
            let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
            backend::negotiate_protocol_version(minor, &opts, &mut out);
            out
        }),
        prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..12)), 0..6).prop_map(
            |values| {
                let mut out = BytesMut::new();
                let values: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
                backend::data_row(&values, &mut out);
                out
            }
        ),
    ];
    (encoded, prop::collection::vec(edit(), 0..5)).prop_map(|(out, edits)| {
        let mut body = out[HEADER_LEN..].to_vec();
        apply(&mut body, &edits);
        (out[0], body)
    })
}
