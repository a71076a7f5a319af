//! Client messages described independently of both codecs, a proptest strategy for them, and
//! their encoding by postgres-protocol (the encoder behind tokio-postgres): shared by the
//! round-trip properties (`codec.rs`) and the hostile-input ones (`fuzz.rs`).

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend as pg_frontend;
use postgres_protocol::IsNull;
use proptest::prelude::*;

/// A string without NUL bytes (the protocol cannot carry them).
pub fn text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.replace('\0', ""))
}

pub fn short_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..48)
}

/// A client message, described independently of both codecs.
#[derive(Debug, Clone)]
pub enum Msg {
    Query(String),
    Parse(String, String, Vec<u32>),
    Bind {
        portal: String,
        statement: String,
        formats: Vec<i16>,
        values: Vec<Option<Vec<u8>>>,
        result_formats: Vec<i16>,
    },
    Describe(u8, String),
    Execute(String, i32),
    Close(u8, String),
    Sync,
    Flush,
    CopyData(Vec<u8>),
    CopyDone,
    CopyFail(String),
    Password(Vec<u8>),
    SaslInitial(String, Vec<u8>),
    SaslResponse(Vec<u8>),
    Terminate,
}

pub fn msg() -> impl Strategy<Value = Msg> {
    let target = prop_oneof![Just(b'S'), Just(b'P')];
    prop_oneof![
        text().prop_map(Msg::Query),
        (text(), text(), prop::collection::vec(any::<u32>(), 0..6)).prop_map(|(n, q, t)| Msg::Parse(n, q, t)),
        (
            text(),
            text(),
            prop::collection::vec(any::<i16>(), 0..4),
            prop::collection::vec(prop::option::of(short_bytes()), 0..5),
            prop::collection::vec(any::<i16>(), 0..4),
        )
            .prop_map(|(portal, statement, formats, values, result_formats)| Msg::Bind {
                portal,
                statement,
                formats,
                values,
                result_formats,
            }),
        (target.clone(), text()).prop_map(|(t, n)| Msg::Describe(t, n)),
        (text(), any::<i32>()).prop_map(|(p, n)| Msg::Execute(p, n)),
        (target, text()).prop_map(|(t, n)| Msg::Close(t, n)),
        Just(Msg::Sync),
        Just(Msg::Flush),
        short_bytes().prop_map(Msg::CopyData),
        Just(Msg::CopyDone),
        text().prop_map(Msg::CopyFail),
        prop::collection::vec(1u8.., 0..32).prop_map(Msg::Password),
        (text(), short_bytes()).prop_map(|(m, d)| Msg::SaslInitial(m, d)),
        short_bytes().prop_map(Msg::SaslResponse),
        Just(Msg::Terminate),
    ]
}

/// Encodes `m` with postgres-protocol.
pub fn encode_pg(m: &Msg, out: &mut BytesMut) {
    match m {
        Msg::Query(q) => pg_frontend::query(q, out).unwrap(),
        Msg::Parse(n, q, t) => pg_frontend::parse(n, q, t.iter().copied(), out).unwrap(),
        Msg::Bind {
            portal,
            statement,
            formats,
            values,
            result_formats,
        } => {
            let r = pg_frontend::bind(
                portal,
                statement,
                formats.iter().copied(),
                values.iter(),
                |v, buf| match v {
                    Some(v) => {
                        buf.put_slice(v);
                        Ok(IsNull::No)
                    }
                    None => Ok(IsNull::Yes),
                },
                result_formats.iter().copied(),
                out,
            );
            assert!(r.is_ok());
        }
        Msg::Describe(t, n) => pg_frontend::describe(*t, n, out).unwrap(),
        Msg::Execute(p, n) => pg_frontend::execute(p, *n, out).unwrap(),
        Msg::Close(t, n) => pg_frontend::close(*t, n, out).unwrap(),
        Msg::Sync => pg_frontend::sync(out),
        Msg::Flush => pg_frontend::flush(out),
        Msg::CopyData(d) => pg_frontend::CopyData::new(&d[..]).unwrap().write(out),
        Msg::CopyDone => pg_frontend::copy_done(out),
        Msg::CopyFail(s) => pg_frontend::copy_fail(s, out).unwrap(),
        Msg::Password(p) => pg_frontend::password_message(p, out).unwrap(),
        Msg::SaslInitial(m, d) => pg_frontend::sasl_initial_response(m, d, out).unwrap(),
        Msg::SaslResponse(d) => pg_frontend::sasl_response(d, out).unwrap(),
        Msg::Terminate => pg_frontend::terminate(out),
    }
}
