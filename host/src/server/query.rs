//! Running one parameterised query on a server connection for the proxy's own needs
//! (`auth_query`, topology probes), over the extended protocol so parameters are never
//! spliced into SQL.

use bytes::{BufMut, BytesMut};
use switchyard_protocol::backend::{parse_error_fields, tags};
use switchyard_protocol::frame::split_frame;
use switchyard_protocol::frontend::{encode_bind_renamed, encode_execute, encode_parse, encode_sync};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ServerConn, ServerError};

/// Runs `sql` with text parameters and returns the first row (NULLs as None), or None if
/// the query returned no rows.
pub async fn query_row(
    conn: &mut ServerConn,
    sql: &str,
    params: &[&str],
) -> Result<Option<Vec<Option<String>>>, ServerError> {
    let addr = conn.addr.clone();
    let mut out = BytesMut::new();
    encode_parse(b"", sql.as_bytes(), &[], &mut out);
    let mut rest = BytesMut::new();
    rest.put_i16(0); // parameter formats: all text
    rest.put_i16(params.len() as i16);
    for param in params {
        rest.put_i32(param.len() as i32);
        rest.put_slice(param.as_bytes());
    }
    rest.put_i16(0); // result formats: all text
    encode_bind_renamed(b"", b"", &rest, &mut out);
    encode_execute(b"", 0, &mut out);
    encode_sync(&mut out);
    let io = |source| ServerError::Io {
        addr: addr.clone(),
        source,
    };
    conn.stream.write_all(&out).await.map_err(io)?;
    let mut row = None;
    let mut error = None;
    loop {
        while let Some(frame) = split_frame(&mut conn.rbuf, switchyard_protocol::DEFAULT_MAX_MESSAGE_LEN)
            .map_err(|e| ServerError::Protocol {
                addr: addr.clone(),
                reason: e.to_string(),
            })?
        {
            match frame.tag() {
                tags::DATA_ROW if row.is_none() => {
                    row = Some(parse_data_row(frame.body()).ok_or_else(|| ServerError::Protocol {
                        addr: addr.clone(),
                        reason: "malformed DataRow".into(),
                    })?)
                }
                tags::ERROR_RESPONSE => error = parse_error_fields(frame.body()).ok(),
                tags::READY_FOR_QUERY => {
                    return match error {
                        Some(fields) => Err(ServerError::Refused {
                            addr,
                            fields: Box::new(fields),
                        }),
                        None => Ok(row),
                    };
                }
                _ => {}
            }
        }
        if conn.stream.read_buf(&mut conn.rbuf).await.map_err(io)? == 0 {
            return Err(ServerError::Closed { addr });
        }
    }
}

fn parse_data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let count = i16::from_be_bytes(body.get(0..2)?.try_into().ok()?);
    let mut at = 2;
    let mut values = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            values.push(None);
        } else {
            let v = body.get(at..at + len as usize)?;
            values.push(Some(String::from_utf8_lossy(v).into_owned()));
            at += len as usize;
        }
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    #[test]
    fn data_row_with_null_and_truncation() {
        let body = [0, 2, 0, 0, 0, 1, b'a', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            super::parse_data_row(&body).unwrap(),
            vec![Some("a".to_string()), None]
        );
        assert!(super::parse_data_row(&body[..6]).is_none());
    }
}
