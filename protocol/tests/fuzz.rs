//! Fuzzing of every decoder in the codec with hostile input, on stable Rust (proptest).
//!
//! Each property feeds arbitrary bytes and valid encodings damaged by `support/hostile.rs`
//! (flipped bytes, lengths and counts set to huge, negative or zero values, random tags,
//! truncation) to one layer, and checks that it returns rather than panics, that its errors
//! are the ones its contract names (a decoder of a body never claims `TooLarge`, framing
//! never claims `Malformed`, ...), and that what it accepts is consistent (framing agrees
//! with the declared lengths and the limit, an accepted client message re-encodes to the
//! same bytes, `bind_names` finds the names the Bind decoder found). Allocation bounds are `alloc_bound.rs`'s, which needs its own allocator.
//!
//! Every property prints its case count (`--nocapture`); `PROPTEST_CASES` sets it
//! (`scripts/fuzz` runs the long version).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use switchyard_protocol::backend::{self, Authentication};
use switchyard_protocol::frame::{frames, peek_header, split_frame, HEADER_LEN};
use switchyard_protocol::frontend::{
    self as fe, decode_password, decode_sasl_initial_response, decode_startup, FrontendMessage, StartupPacket,
};
use switchyard_protocol::{Frame, ProtocolError, DEFAULT_MAX_MESSAGE_LEN, MAX_STARTUP_PACKET_LEN};

#[path = "support/hostile.rs"]
mod hostile;
#[path = "support/inputs.rs"]
mod inputs;
#[path = "support/messages.rs"]
#[allow(dead_code)] // codec.rs uses the rest
mod messages;
#[path = "support/runner.rs"]
mod runner;

use hostile::{apply, edit, hostile, Edit};
use inputs::{client_stream, server_message, startup_packet};
use messages::{encode_pg, msg, Msg};
use runner::fuzz;

/// Message size limits: none, below a header, tiny, and the defaults.
fn limit() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![0, 4, 5, 6, 64, 1 << 20, DEFAULT_MAX_MESSAGE_LEN, usize::MAX])
}

/// The error `peek_header` owes for the 5 header bytes `h` under `max`, if any.
fn header_error(h: &[u8], max: usize) -> Option<ProtocolError> {
    let declared = i32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    if declared < 4 {
        Some(ProtocolError::InvalidLength { len: declared.into() })
    } else if declared as usize + 1 > max {
        Some(ProtocolError::TooLarge {
            len: declared as usize + 1,
            max,
        })
    } else {
        None
    }
}

/// Splits `data` as the host does, checking every frame against its header and the limit,
/// and that `frames` sees the same boundaries.
fn check_framing(data: &[u8], max: usize) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(data);
    let mut taken = 0;
    loop {
        let before = buf.len();
        match split_frame(&mut buf, max) {
            Ok(Some(frame)) => {
                let h = &data[taken..taken + HEADER_LEN];
                prop_assert!(header_error(h, max).is_none());
                prop_assert!(frame.len() <= max);
                prop_assert_eq!(
                    frame.len(),
                    i32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize + 1
                );
                prop_assert_eq!(&frame.raw()[..], &data[taken..taken + frame.len()]);
                prop_assert_eq!(frame.body_len() + HEADER_LEN, frame.len());
                taken += frame.len();
            }
            Ok(None) => {
                prop_assert_eq!(buf.len(), before, "an incomplete message is left in place");
                match peek_header(&buf, max) {
                    Ok(Some(h)) => prop_assert!(h.len > buf.len() && h.len <= max),
                    Ok(None) => prop_assert!(buf.len() < HEADER_LEN),
                    Err(e) => return Err(TestCaseError::fail(format!("peek failed after split: {e}"))),
                }
                break;
            }
            Err(e) => {
                prop_assert_eq!(buf.len(), before, "a bad header is left in place");
                prop_assert_eq!(Some(e), header_error(&buf[..HEADER_LEN], max));
                break;
            }
        }
    }
    let mut it = frames(data, max);
    for item in it.by_ref() {
        if item.is_err() {
            break;
        }
    }
    prop_assert_eq!(it.consumed(), taken);
    Ok(())
}

#[test]
fn framing_never_panics_and_honours_declared_lengths_and_the_limit() {
    fuzz("framing", (hostile(client_stream()), limit()), |(data, max)| {
        check_framing(&data, max)
    });
}

/// Re-encodes a decoded client message with the codec's encoders, for the types whose
/// encoding is canonical (`None` for the rest: raw bodies, and Terminate, which ignores one).
fn reencode(m: &FrontendMessage) -> Option<BytesMut> {
    let mut out = BytesMut::new();
    match m {
        FrontendMessage::Query { sql } => fe::encode_query(sql, &mut out),
        FrontendMessage::Parse {
            name,
            query,
            param_types,
        } => fe::encode_parse(name, query, param_types, &mut out),
        FrontendMessage::Bind {
            portal,
            statement,
            rest,
        } => fe::encode_bind_renamed(portal, statement, rest, &mut out),
        FrontendMessage::Describe { target, name } => fe::encode_describe(*target, name, &mut out),
        FrontendMessage::Execute { portal, max_rows } => fe::encode_execute(portal, *max_rows, &mut out),
        FrontendMessage::Close { target, name } => fe::encode_close(*target, name, &mut out),
        FrontendMessage::Sync => fe::encode_sync(&mut out),
        FrontendMessage::Flush => fe::encode_flush(&mut out),
        _ => return None,
    }
    Some(out)
}

/// Decodes one client frame as the session does, checking the decoder's contract.
fn check_client_frame(frame: &Frame) -> Result<(), TestCaseError> {
    // `bind_names` also reads Binds still arriving: any prefix of any body.
    let body = frame.body();
    for cut in 0..=body.len().min(64) {
        if let Some((portal, statement, at)) = fe::bind_names(&body[..cut]) {
            prop_assert!(portal.len() + statement.len() + 2 == at && at <= cut);
        }
    }
    match FrontendMessage::decode(frame) {
        Ok(m) => {
            prop_assert_eq!(m.tag(), frame.tag());
            if let Some(out) = reencode(&m) {
                prop_assert_eq!(
                    &out[..],
                    &frame.raw()[..],
                    "{:?} does not re-encode to its bytes",
                    m
                );
            }
            if let FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } = &m
            {
                // A Bind too large to hold is renamed from its names alone (`bind_names`),
                // which must find what the decoder found.
                let at = frame.body_len() - rest.len();
                prop_assert_eq!(
                    fe::bind_names(frame.body()),
                    Some((&portal[..], &statement[..], at))
                );
            }
            if let FrontendMessage::Password(body) = &m {
                // The authentication step decodes it as one of these, depending on its state.
                for r in [
                    decode_password(body).map(drop),
                    decode_sasl_initial_response(body).map(drop),
                ] {
                    prop_assert!(
                        matches!(r, Ok(()) | Err(ProtocolError::Malformed { .. })),
                        "{:?}",
                        r
                    );
                }
            }
        }
        Err(ProtocolError::UnknownMessage { tag }) => {
            prop_assert_eq!(tag, char::from(frame.tag()));
            prop_assert_eq!(FrontendMessage::tag_name(frame.tag()), "unknown");
        }
        Err(ProtocolError::Malformed { message, .. }) => {
            prop_assert_eq!(message, FrontendMessage::tag_name(frame.tag()));
        }
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "unexpected error from a decoder: {e:?}"
            )))
        }
    }
    Ok(())
}

/// A valid client message whose body (only) is damaged, framed with its true length; or the
/// damaged stream, framed however its damaged headers say.
#[derive(Debug, Clone)]
enum ClientInput {
    Body(Msg, Vec<Edit>),
    Stream(Vec<u8>),
}

#[test]
fn frontend_decoders_never_panic_and_accept_only_canonical_messages() {
    let input = prop_oneof![
        (msg(), prop::collection::vec(edit(), 0..5)).prop_map(|(m, e)| ClientInput::Body(m, e)),
        hostile(client_stream()).prop_map(ClientInput::Stream),
    ];
    fuzz("frontend decoders", input, |input| {
        let frames = match input {
            ClientInput::Body(m, edits) => {
                let mut buf = BytesMut::new();
                encode_pg(&m, &mut buf);
                let mut body = buf[HEADER_LEN..].to_vec();
                apply(&mut body, &edits);
                let mut raw = vec![buf[0]];
                raw.extend((body.len() as i32 + 4).to_be_bytes());
                raw.extend(body);
                vec![Frame::new(Bytes::from(raw)).expect("framed with its length")]
            }
            ClientInput::Stream(data) => {
                let mut buf = BytesMut::from(&data[..]);
                let mut frames = Vec::new();
                while let Ok(Some(f)) = split_frame(&mut buf, 1 << 20) {
                    frames.push(f);
                }
                frames
            }
        };
        frames.iter().try_for_each(check_client_frame)
    });
}

/// What `decode_startup` owes for `data` taken whole.
fn check_startup(
    data: &[u8],
    result: &Result<Option<StartupPacket>, ProtocolError>,
    left: usize,
) -> Result<(), TestCaseError> {
    let Some(len) = data.first_chunk::<4>().map(|l| i32::from_be_bytes(*l)) else {
        prop_assert_eq!(result, &Ok(None));
        return Ok(());
    };
    if len < 8 {
        prop_assert_eq!(result, &Err(ProtocolError::InvalidLength { len: len.into() }));
    } else if len as usize > MAX_STARTUP_PACKET_LEN {
        prop_assert_eq!(
            result,
            &Err(ProtocolError::TooLarge {
                len: len as usize,
                max: MAX_STARTUP_PACKET_LEN
            })
        );
    } else if data.len() < len as usize {
        prop_assert_eq!(result, &Ok(None));
    } else {
        match result {
            Ok(Some(packet)) => {
                prop_assert_eq!(left, data.len() - len as usize, "exactly the packet is consumed");
                if let StartupPacket::Startup { protocol, params } = packet {
                    prop_assert_eq!(protocol >> 16, 3);
                    for (k, v) in params {
                        prop_assert!(!k.is_empty() && !k.contains('\0') && !v.contains('\0'));
                    }
                }
            }
            Err(ProtocolError::UnsupportedProtocol { major, .. }) => prop_assert_ne!(*major, 3),
            Err(ProtocolError::Malformed { .. }) => {}
            other => return Err(TestCaseError::fail(format!("unexpected result {other:?}"))),
        }
    }
    if !matches!(result, Ok(Some(_))) {
        prop_assert_eq!(left, data.len(), "nothing is consumed until a packet is decoded");
    }
    Ok(())
}

#[test]
fn startup_packets_never_panic_and_arrive_the_same_in_any_chunks() {
    fuzz(
        "startup packets",
        (hostile(startup_packet()), 1usize..64),
        |(data, chunk)| {
            let mut whole = BytesMut::from(&data[..]);
            let result = decode_startup(&mut whole);
            check_startup(&data, &result, whole.len())?;
            // The host reads whatever arrived and tries again: a packet sent a few bytes at a
            // time decodes to the same thing, and nothing is taken early.
            let mut partial = BytesMut::new();
            let mut chunked = Ok(None);
            for piece in data.chunks(chunk) {
                partial.extend_from_slice(piece);
                chunked = decode_startup(&mut partial);
                if !matches!(chunked, Ok(None)) {
                    break;
                }
            }
            prop_assert_eq!(chunked, result);
            Ok(())
        },
    );
}

/// Fails unless `r` is a success or a `Malformed` error (a body decoder has no other).
fn body_result<T: std::fmt::Debug>(r: Result<T, ProtocolError>) -> Result<Option<T>, TestCaseError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ProtocolError::Malformed { .. }) => Ok(None),
        Err(e) => Err(TestCaseError::fail(format!("a body decoder returned {e:?}"))),
    }
}

#[test]
fn backend_decoders_never_panic_and_fail_only_as_malformed() {
    let input = prop_oneof![
        3 => server_message(),
        1 => (any::<u8>(), prop::collection::vec(any::<u8>(), 0..128)),
    ];
    fuzz("backend decoders", input, |(tag, body)| {
        // Every decoder the host has for server messages, on this body whatever its tag.
        if let Some(e) = body_result(backend::parse_error_fields(&body))? {
            prop_assert!(!e.code.contains('\0') && !e.message.contains('\0'));
        }
        if let Some((name, value)) = body_result(backend::parse_parameter_status(&body))? {
            prop_assert_eq!(name.len() + value.len() + 2, body.len());
        }
        if let Some(status) = body_result(backend::parse_ready_for_query(&body))? {
            prop_assert_eq!(&body[..], &[status.to_byte()][..]);
        }
        if body_result(backend::parse_backend_key_data(&body))?.is_some() {
            prop_assert_eq!(body.len(), 8);
        }
        if let Some(tag) = body_result(backend::parse_command_complete(&body))? {
            prop_assert_eq!(tag.len() + 1, body.len());
        }
        if let Some(auth) = body_result(backend::parse_authentication(&body))? {
            let data_len = body.len() - 4;
            match auth {
                Authentication::SaslContinue(d) | Authentication::SaslFinal(d) => {
                    prop_assert_eq!(d.len(), data_len)
                }
                Authentication::Sasl { mechanisms } => {
                    prop_assert_eq!(
                        mechanisms.iter().map(|m| m.len() + 1).sum::<usize>() + 1,
                        data_len
                    );
                }
                Authentication::Md5Password { .. } => prop_assert_eq!(data_len, 4),
                Authentication::Ok | Authentication::CleartextPassword => prop_assert_eq!(data_len, 0),
                Authentication::Unsupported(code) => prop_assert!(![0, 3, 5, 10, 11, 12].contains(&code)),
            }
        }
        if let Some((_, options)) = body_result(backend::parse_negotiate_protocol_version(&body))? {
            prop_assert_eq!(options.iter().map(|o| o.len() + 1).sum::<usize>() + 8, body.len());
        }
        if let Some(values) = body_result(backend::parse_data_row(&body))? {
            let size: usize = values.iter().map(|v| 4 + v.map_or(0, <[u8]>::len)).sum();
            prop_assert_eq!(size + 2, body.len());
        }
        prop_assert!(!backend::tag_name(tag).is_empty());
        Ok(())
    });
}
