//! Property and compatibility tests for the codec.
//!
//! Client messages are produced by `postgres-protocol`'s frontend encoders (the
//! encoder behind `tokio-postgres`) and must round-trip through our framing and
//! decoders; our backend encoders' output must parse with `postgres-protocol`'s
//! backend parser, and framing must not depend on how the byte stream was
//! chunked. Hostile input (arbitrary and mutated bytes) is `fuzz.rs`'s.

use bytes::{BufMut, Bytes, BytesMut};
use messages::{encode_pg, msg, short_bytes, text, Msg};
use postgres_protocol::message::{backend as pg_backend, frontend as pg_frontend};
use proptest::prelude::*;
use switchyard_protocol::backend::{self, ErrorFields, Severity};
use switchyard_protocol::frame::{frames, peek_header, split_frame, FrameHeader, HEADER_LEN};
use switchyard_protocol::frontend::{
    decode_password, decode_sasl_initial_response, decode_startup, FrontendMessage, StartupPacket, Target,
};
use switchyard_protocol::{
    Frame, ProtocolError, TransactionStatus, DEFAULT_MAX_MESSAGE_LEN, MAX_STARTUP_PACKET_LEN,
    PROTOCOL_VERSION_3_0,
};

#[path = "support/messages.rs"]
mod messages;

const MAX: usize = 1 << 20;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failure persistence would write files next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn target(t: u8) -> Target {
    Target::from_byte(t).unwrap()
}

/// The raw tail of a Bind body after the statement name, built by hand.
fn bind_rest(formats: &[i16], values: &[Option<Vec<u8>>], result_formats: &[i16]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend((formats.len() as u16).to_be_bytes());
    formats.iter().for_each(|f| v.extend(f.to_be_bytes()));
    v.extend((values.len() as u16).to_be_bytes());
    for value in values {
        match value {
            Some(b) => {
                v.extend((b.len() as i32).to_be_bytes());
                v.extend(b);
            }
            None => v.extend((-1i32).to_be_bytes()),
        }
    }
    v.extend((result_formats.len() as u16).to_be_bytes());
    result_formats.iter().for_each(|f| v.extend(f.to_be_bytes()));
    v
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Checks that `decoded` is what `m` should decode to.
fn check_decoded(m: &Msg, decoded: &FrontendMessage) {
    use FrontendMessage as F;
    let expected = match m {
        Msg::Query(q) => F::Query { sql: b(q) },
        Msg::Parse(n, q, t) => F::Parse {
            name: b(n),
            query: b(q),
            param_types: t.clone(),
        },
        Msg::Bind {
            portal,
            statement,
            formats,
            values,
            result_formats,
        } => F::Bind {
            portal: b(portal),
            statement: b(statement),
            rest: Bytes::from(bind_rest(formats, values, result_formats)),
        },
        Msg::Describe(t, n) => F::Describe {
            target: target(*t),
            name: b(n),
        },
        Msg::Execute(p, n) => F::Execute {
            portal: b(p),
            max_rows: *n,
        },
        Msg::Close(t, n) => F::Close {
            target: target(*t),
            name: b(n),
        },
        Msg::Sync => F::Sync,
        Msg::Flush => F::Flush,
        Msg::CopyData(d) => F::CopyData(Bytes::copy_from_slice(d)),
        Msg::CopyDone => F::CopyDone,
        Msg::CopyFail(s) => F::CopyFail { message: b(s) },
        Msg::Password(p) => {
            let F::Password(body) = decoded else {
                panic!("expected Password, got {decoded:?}")
            };
            assert_eq!(&decode_password(body).unwrap()[..], &p[..]);
            return;
        }
        Msg::SaslInitial(mech, d) => {
            let F::Password(body) = decoded else {
                panic!("expected Password, got {decoded:?}")
            };
            let (m2, d2) = decode_sasl_initial_response(body).unwrap();
            assert_eq!(&m2, mech);
            assert_eq!(&d2[..], &d[..]);
            return;
        }
        Msg::SaslResponse(d) => F::Password(Bytes::copy_from_slice(d)),
        Msg::Terminate => F::Terminate,
    };
    assert_eq!(decoded, &expected);
}

/// Splits every complete frame off `buf`.
fn split_all(buf: &mut BytesMut, max: usize) -> Result<Vec<Frame>, ProtocolError> {
    let mut out = Vec::new();
    while let Some(f) = split_frame(buf, max)? {
        out.push(f);
    }
    Ok(out)
}

/// A stream of bytes built from valid messages, optionally followed by junk.
fn stream() -> impl Strategy<Value = (Vec<Msg>, Vec<u8>)> {
    (prop::collection::vec(msg(), 0..8), short_bytes())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn frontend_messages_roundtrip(msgs in prop::collection::vec(msg(), 1..8)) {
        let mut buf = BytesMut::new();
        for m in &msgs {
            encode_pg(m, &mut buf);
        }
        let frames = split_all(&mut buf, MAX).unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(frames.len(), msgs.len());
        for (m, f) in msgs.iter().zip(&frames) {
            let decoded = FrontendMessage::decode(f).unwrap();
            prop_assert_eq!(decoded.tag(), f.tag());
            check_decoded(m, &decoded);
        }
    }

    #[test]
    fn reencoding_is_identical(msgs in prop::collection::vec(msg(), 1..8)) {
        use switchyard_protocol::frontend as fe;
        for m in &msgs {
            let mut original = BytesMut::new();
            encode_pg(m, &mut original);
            let f = split_frame(&mut original.clone(), MAX).unwrap().unwrap();
            let mut ours = BytesMut::new();
            match FrontendMessage::decode(&f).unwrap() {
                FrontendMessage::Query { sql } => fe::encode_query(&sql, &mut ours),
                FrontendMessage::Parse { name, query, param_types } => {
                    fe::encode_parse(&name, &query, &param_types, &mut ours)
                }
                FrontendMessage::Bind { portal, statement, rest } => {
                    fe::encode_bind_renamed(&portal, &statement, &rest, &mut ours)
                }
                FrontendMessage::Describe { target, name } => {
                    fe::encode_describe(target, &name, &mut ours)
                }
                FrontendMessage::Execute { portal, max_rows } => {
                    fe::encode_execute(&portal, max_rows, &mut ours)
                }
                FrontendMessage::Close { target, name } => fe::encode_close(target, &name, &mut ours),
                FrontendMessage::Sync => fe::encode_sync(&mut ours),
                FrontendMessage::Flush => fe::encode_flush(&mut ours),
                FrontendMessage::Terminate => fe::encode_terminate(&mut ours),
                FrontendMessage::Password(body) => {
                    if let Msg::Password(_) = m {
                        fe::encode_password(&decode_password(&body).unwrap(), &mut ours)
                    } else if let Msg::SaslInitial(..) = m {
                        let (mech, data) = decode_sasl_initial_response(&body).unwrap();
                        fe::encode_sasl_initial_response(&mech, &data, &mut ours)
                    } else {
                        fe::encode_sasl_response(&body, &mut ours)
                    }
                }
                // No encoders for the pass-through messages.
                _ => ours = original.clone(),
            }
            prop_assert_eq!(&ours[..], &original[..]);
        }
    }

    #[test]
    fn chunking_does_not_change_frames(
        (msgs, junk) in stream(),
        chunks in prop::collection::vec(1usize..64, 1..64),
    ) {
        let mut whole = BytesMut::new();
        for m in &msgs {
            encode_pg(m, &mut whole);
        }
        // A partial message at the end must stay buffered.
        whole.put_slice(&[b'Q', 0, 0, 0, 100]);
        whole.put_slice(&junk);
        let all = whole.clone().freeze();
        let expected: Vec<Bytes> = split_all(&mut whole, MAX).unwrap().into_iter().map(Frame::into_raw).collect();
        prop_assert_eq!(expected.len(), msgs.len());

        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut fed = 0;
        let mut sizes = chunks.iter().cycle();
        while fed < all.len() {
            let n = (*sizes.next().unwrap()).min(all.len() - fed);
            buf.put_slice(&all[fed..fed + n]);
            fed += n;
            got.extend(split_all(&mut buf, MAX).unwrap().into_iter().map(Frame::into_raw));
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(&buf[..], &whole[..]);
    }

    #[test]
    fn frames_iterator_agrees_with_split_frame(
        (msgs, junk) in stream(),
        max in prop_oneof![Just(MAX), 5usize..64],
    ) {
        let mut data = BytesMut::new();
        for m in &msgs {
            encode_pg(m, &mut data);
        }
        data.put_slice(&junk);
        let mut it = frames(&data, max);
        let mut buf = data.clone();
        let mut split = 0;
        loop {
            match (it.next(), split_frame(&mut buf, max)) {
                (Some(Ok((header, offset))), Ok(Some(f))) => {
                    prop_assert_eq!(offset, split);
                    prop_assert_eq!(header, FrameHeader { tag: f.tag(), len: f.len() });
                    prop_assert_eq!(&data[offset..offset + header.len], &f.raw()[..]);
                    split += f.len();
                }
                (None, Ok(None)) => break,
                (Some(Err(e1)), Err(e2)) => {
                    prop_assert_eq!(e1, e2);
                    prop_assert!(it.next().is_none());
                    break;
                }
                (a, b) => prop_assert!(false, "iterator gave {:?}, split_frame gave {:?}", a, b),
            }
        }
        prop_assert_eq!(it.consumed(), split);
        prop_assert_eq!(data.len() - buf.len(), split);
    }

    #[test]
    fn startup_roundtrip(
        params in prop::collection::vec(
            (text().prop_filter("empty keys end the list", |k| !k.is_empty()), text()),
            0..6,
        ),
        chunk in 1usize..16,
    ) {
        let mut buf = BytesMut::new();
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = pg_frontend::startup_message(pairs.iter().copied(), &mut buf);
        prop_assert!(r.is_ok());
        let expected = if buf.len() > MAX_STARTUP_PACKET_LEN {
            Err(ProtocolError::TooLarge { len: buf.len(), max: MAX_STARTUP_PACKET_LEN })
        } else {
            Ok(Some(StartupPacket::Startup { protocol: PROTOCOL_VERSION_3_0, params: params.clone() }))
        };
        // Fed in chunks, the packet is only decoded once complete.
        let mut partial = BytesMut::new();
        let mut result = Ok(None);
        for piece in buf.chunks(chunk) {
            partial.put_slice(piece);
            result = decode_startup(&mut partial);
            if !matches!(result, Ok(None)) {
                break;
            }
        }
        prop_assert_eq!(result, expected);
    }

    #[test]
    fn bad_lengths_are_rejected(len in prop_oneof![i32::MIN..4, 4i32..=i32::MAX], tag in any::<u8>()) {
        let mut raw = vec![tag];
        raw.extend(len.to_be_bytes());
        let r = peek_header(&raw, DEFAULT_MAX_MESSAGE_LEN);
        if len < 4 {
            prop_assert_eq!(r.clone(), Err(ProtocolError::InvalidLength { len: len.into() }));
        } else if len as usize + 1 > DEFAULT_MAX_MESSAGE_LEN {
            prop_assert_eq!(r.clone(), Err(ProtocolError::TooLarge { len: len as usize + 1, max: DEFAULT_MAX_MESSAGE_LEN }));
        } else {
            prop_assert_eq!(r.clone(), Ok(Some(FrameHeader { tag, len: len as usize + 1 })));
        }
        let mut buf = BytesMut::from(&raw[..]);
        prop_assert_eq!(split_frame(&mut buf, DEFAULT_MAX_MESSAGE_LEN).is_err(), r.is_err());
        prop_assert_eq!(buf.len(), 5);

        let mut startup = BytesMut::from(&len.to_be_bytes()[..]);
        let r = decode_startup(&mut startup);
        if len < 8 {
            prop_assert_eq!(r, Err(ProtocolError::InvalidLength { len: len.into() }));
        } else if len as usize > MAX_STARTUP_PACKET_LEN {
            prop_assert_eq!(r, Err(ProtocolError::TooLarge { len: len as usize, max: MAX_STARTUP_PACKET_LEN }));
        } else {
            prop_assert_eq!(r, Ok(None));
        }
    }
}

/// Parses exactly one message with postgres-protocol.
fn pg_parse(out: &BytesMut) -> pg_backend::Message {
    let mut buf = out.clone();
    let m = pg_backend::Message::parse(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "postgres-protocol left {} bytes", buf.len());
    m
}

/// Our framing of exactly one message.
fn our_frame(out: &BytesMut) -> Frame {
    let mut buf = out.clone();
    let f = split_frame(&mut buf, MAX).unwrap().unwrap();
    assert!(buf.is_empty());
    f
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn backend_encoders_parse_with_postgres_protocol(
        name in text(),
        value in text(),
        pid in any::<i32>(),
        key in any::<i32>(),
        salt in any::<[u8; 4]>(),
        data in short_bytes(),
        status in prop_oneof![
            Just(TransactionStatus::Idle),
            Just(TransactionStatus::InTransaction),
            Just(TransactionStatus::Failed),
        ],
    ) {
        use pg_backend::Message as M;
        let mut out = BytesMut::new();

        backend::parameter_status(&name, &value, &mut out);
        let M::ParameterStatus(body) = pg_parse(&out) else { panic!() };
        prop_assert_eq!(body.name().unwrap(), name.as_str());
        prop_assert_eq!(body.value().unwrap(), value.as_str());
        prop_assert_eq!(backend::parse_parameter_status(our_frame(&out).body()).unwrap(), (name.clone(), value.clone()));

        out.clear();
        backend::command_complete(&value, &mut out);
        let M::CommandComplete(body) = pg_parse(&out) else { panic!() };
        prop_assert_eq!(body.tag().unwrap(), value.as_str());
        let frame = our_frame(&out);
        prop_assert_eq!(backend::parse_command_complete(frame.body()).unwrap(), value.as_str());

        out.clear();
        backend::backend_key_data(pid, key, &mut out);
        let M::BackendKeyData(body) = pg_parse(&out) else { panic!() };
        prop_assert_eq!((body.process_id(), body.secret_key()), (pid, key));
        prop_assert_eq!(backend::parse_backend_key_data(our_frame(&out).body()).unwrap(), (pid, key));

        out.clear();
        backend::ready_for_query(status, &mut out);
        let M::ReadyForQuery(body) = pg_parse(&out) else { panic!() };
        prop_assert_eq!(body.status(), status.to_byte());
        prop_assert_eq!(backend::parse_ready_for_query(our_frame(&out).body()).unwrap(), status);

        out.clear();
        backend::auth_md5_password(salt, &mut out);
        let M::AuthenticationMd5Password(body) = pg_parse(&out) else { panic!() };
        prop_assert_eq!(body.salt(), salt);

        out.clear();
        backend::auth_sasl_continue(&data, &mut out);
        let M::AuthenticationSaslContinue(body) = pg_parse(&out) else { panic!() };
        prop_assert_eq!(body.data(), &data[..]);

        out.clear();
        backend::auth_sasl_final(&data, &mut out);
        let M::AuthenticationSaslFinal(body) = pg_parse(&out) else { panic!() };
        prop_assert_eq!(body.data(), &data[..]);

        out.clear();
        backend::auth_sasl(&[&name, "SCRAM-SHA-256"], &mut out);
        prop_assert!(matches!(pg_parse(&out), M::AuthenticationSasl(_)));
    }

    #[test]
    fn error_and_row_encoders_parse_with_postgres_protocol(
        code in "[0-9A-Z]{5}",
        message in text(),
        detail in prop::option::of(text()),
        hint in prop::option::of(text()),
        fatal in any::<bool>(),
        columns in prop::collection::vec((text(), any::<u32>()), 0..6),
        values in prop::collection::vec(prop::option::of(short_bytes()), 0..6),
    ) {
        use pg_backend::Message as M;
        let mut e = if fatal {
            ErrorFields::fatal(code.clone(), message.clone())
        } else {
            ErrorFields::error(code.clone(), message.clone())
        };
        e.detail = detail;
        e.hint = hint;
        let mut out = BytesMut::new();
        backend::error_response(&e, &mut out);
        prop_assert!(matches!(pg_parse(&out), M::ErrorResponse(_)));
        prop_assert_eq!(&backend::parse_error_fields(our_frame(&out).body()).unwrap(), &e);

        out.clear();
        let notice = ErrorFields { severity: Severity::Notice, ..e.clone() };
        backend::notice_response(&notice, &mut out);
        prop_assert!(matches!(pg_parse(&out), M::NoticeResponse(_)));
        prop_assert_eq!(backend::parse_error_fields(our_frame(&out).body()).unwrap(), notice);

        out.clear();
        let cols: Vec<(&str, u32)> = columns.iter().map(|(n, o)| (n.as_str(), *o)).collect();
        backend::row_description(&cols, &mut out);
        prop_assert!(matches!(pg_parse(&out), M::RowDescription(_)));

        out.clear();
        let vals: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
        backend::data_row(&vals, &mut out);
        let M::DataRow(body) = pg_parse(&out) else { panic!() };
        // The storage after the column count: (length, bytes) pairs.
        let expected = &bind_rest(&[], &values, &[])[4..];
        prop_assert_eq!(body.buffer(), &expected[..expected.len() - 2]);
    }
}

type Encoder = fn(&mut BytesMut);
type Check = fn(&pg_backend::Message) -> bool;

#[test]
fn fixed_backend_messages_parse_with_postgres_protocol() {
    use pg_backend::Message as M;
    let encoders: [(Encoder, Check); 8] = [
        (backend::auth_ok, |m| matches!(m, M::AuthenticationOk)),
        (backend::auth_cleartext_password, |m| {
            matches!(m, M::AuthenticationCleartextPassword)
        }),
        (backend::empty_query_response, |m| {
            matches!(m, M::EmptyQueryResponse)
        }),
        (backend::parse_complete, |m| matches!(m, M::ParseComplete)),
        (backend::bind_complete, |m| matches!(m, M::BindComplete)),
        (backend::close_complete, |m| matches!(m, M::CloseComplete)),
        (backend::no_data, |m| matches!(m, M::NoData)),
        (
            |out| backend::ready_for_query(TransactionStatus::Idle, out),
            |m| matches!(m, M::ReadyForQuery(b) if b.status() == b'I'),
        ),
    ];
    for (encode, check) in encoders {
        let mut out = BytesMut::new();
        encode(&mut out);
        assert!(check(&pg_parse(&out)));
    }
}

#[test]
fn special_startup_packets_match_postgres_protocol() {
    let mut buf = BytesMut::new();
    pg_frontend::ssl_request(&mut buf);
    pg_frontend::cancel_request(42, -7, &mut buf);
    assert_eq!(decode_startup(&mut buf), Ok(Some(StartupPacket::SslRequest)));
    assert_eq!(
        decode_startup(&mut buf),
        Ok(Some(StartupPacket::Cancel {
            process_id: 42,
            secret_key: -7
        }))
    );
    assert!(buf.is_empty());

    let mut ours = BytesMut::new();
    let mut theirs = BytesMut::new();
    switchyard_protocol::frontend::encode_startup(&[("user", "u"), ("database", "d")], &mut ours);
    pg_frontend::startup_message([("user", "u"), ("database", "d")], &mut theirs).unwrap();
    assert_eq!(ours, theirs);
    ours.clear();
    theirs.clear();
    switchyard_protocol::frontend::encode_cancel_request(1, 2, &mut ours);
    pg_frontend::cancel_request(1, 2, &mut theirs);
    assert_eq!(ours, theirs);
    ours.clear();
    theirs.clear();
    switchyard_protocol::frontend::encode_ssl_request(&mut ours);
    pg_frontend::ssl_request(&mut theirs);
    assert_eq!(ours, theirs);
}

#[test]
fn oversized_messages_are_rejected_before_buffering() {
    let mut buf = BytesMut::new();
    pg_frontend::query(&"x".repeat(1000), &mut buf).unwrap();
    let header = peek_header(&buf[..HEADER_LEN], MAX).unwrap().unwrap();
    assert_eq!(header.len, buf.len());
    assert_eq!(header.body_len(), 1001);
    assert_eq!(
        split_frame(&mut BytesMut::from(&buf[..HEADER_LEN]), 1000),
        Err(ProtocolError::TooLarge { len: 1006, max: 1000 })
    );
}
