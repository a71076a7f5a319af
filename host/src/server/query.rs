//! The proxy's own queries on a server connection: one parameterised query (`auth_query`,
//! topology probes) over the extended protocol so parameters are never spliced into SQL,
//! and simple queries of the proxy's making (a client's settings, a reset, reading back a
//! session's settings) whose outcome the proxy must know before it trusts the server.

use bytes::{BufMut, BytesMut};
use switchyard_protocol::backend::{
    parse_data_row, parse_error_fields, parse_parameter_status, tags, ErrorFields,
};
use switchyard_protocol::frame::split_frame;
use switchyard_protocol::frontend::{
    encode_bind_renamed, encode_execute, encode_parse, encode_query, encode_sync,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ServerConn, ServerError};

/// Runs `sql` with text parameters and returns the first row (NULLs as None), or None if
/// the query returned no rows.
pub async fn query_row(
    conn: &mut ServerConn,
    sql: &str,
    params: &[&str],
) -> Result<Option<Vec<Option<String>>>, ServerError> {
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
    write(conn, &out).await?;
    let mut row = None;
    let mut error = None;
    read_to_ready(conn, |tag, body| {
        match tag {
            tags::DATA_ROW if row.is_none() => row = Some(text_row(body)?),
            tags::ERROR_RESPONSE => error = parse_error_fields(body).ok(),
            _ => {}
        }
        Ok(())
    })
    .await?;
    match error {
        Some(fields) => Err(ServerError::Refused {
            addr: conn.addr.clone(),
            fields: Box::new(fields),
        }),
        None => Ok(row),
    }
}

/// What a server answered to one of the proxy's simple queries.
#[derive(Debug, Default)]
pub struct Answer {
    /// Every row of every statement, NULLs as None.
    pub rows: Vec<Vec<Option<String>>>,
    /// The error that ended the query, if one did (the rest of it did not run, and the
    /// implicit transaction of a multi-statement query was rolled back).
    pub error: Option<ErrorFields>,
}

/// Runs `sql` (one or more statements) as a simple query and reads through its
/// ReadyForQuery. The server's ParameterStatus reports update `conn.params`. `Err` only
/// when the connection failed or broke the protocol; an SQL error is in the answer.
pub async fn simple_query(conn: &mut ServerConn, sql: &str) -> Result<Answer, ServerError> {
    let mut out = BytesMut::new();
    encode_query(sql.as_bytes(), &mut out);
    write(conn, &out).await?;
    let mut answer = Answer::default();
    let mut reports = Vec::new();
    read_to_ready(conn, |tag, body| {
        match tag {
            tags::DATA_ROW => answer.rows.push(text_row(body)?),
            tags::ERROR_RESPONSE if answer.error.is_none() => {
                answer.error = Some(parse_error_fields(body).map_err(|_| "malformed ErrorResponse")?)
            }
            tags::PARAMETER_STATUS => {
                reports.push(parse_parameter_status(body).map_err(|_| "malformed ParameterStatus")?)
            }
            _ => {}
        }
        Ok(())
    })
    .await?;
    conn.params.extend(reports);
    Ok(answer)
}

/// [`simple_query`], given up (an error) when the server has not answered within `limit`.
pub async fn simple_query_within(
    conn: &mut ServerConn,
    sql: &str,
    limit: std::time::Duration,
) -> Result<Answer, ServerError> {
    let addr = conn.addr.clone();
    tokio::time::timeout(limit, simple_query(conn, sql))
        .await
        .unwrap_or(Err(ServerError::Timeout { addr, limit }))
}

async fn write(conn: &mut ServerConn, out: &[u8]) -> Result<(), ServerError> {
    conn.stream
        .write_all(out)
        .await
        .map_err(|source| ServerError::Io {
            addr: conn.addr.clone(),
            source,
        })
}

/// Reads messages, handing each to `each`, through the next ReadyForQuery.
async fn read_to_ready(
    conn: &mut ServerConn,
    mut each: impl FnMut(u8, &[u8]) -> Result<(), &'static str>,
) -> Result<(), ServerError> {
    let protocol = |conn: &ServerConn, reason: String| ServerError::Protocol {
        addr: conn.addr.clone(),
        reason,
    };
    loop {
        loop {
            let frame = match split_frame(&mut conn.rbuf, switchyard_protocol::DEFAULT_MAX_MESSAGE_LEN) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Err(protocol(conn, e.to_string())),
            };
            if frame.tag() == tags::READY_FOR_QUERY {
                return Ok(());
            }
            each(frame.tag(), frame.body()).map_err(|reason| protocol(conn, reason.to_string()))?;
        }
        match conn.stream.read_buf(&mut conn.rbuf).await {
            Ok(0) => {
                return Err(ServerError::Closed {
                    addr: conn.addr.clone(),
                })
            }
            Ok(_) => {}
            Err(source) => {
                return Err(ServerError::Io {
                    addr: conn.addr.clone(),
                    source,
                })
            }
        }
    }
}

/// A DataRow's values as text (lossily: the proxy's own queries read names and numbers).
fn text_row(body: &[u8]) -> Result<Vec<Option<String>>, &'static str> {
    let values = parse_data_row(body).map_err(|_| "malformed DataRow")?;
    Ok(values
        .into_iter()
        .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn data_row_with_null_and_truncation() {
        let body = [0, 2, 0, 0, 0, 1, b'a', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(super::text_row(&body).unwrap(), vec![Some("a".to_string()), None]);
        assert!(super::text_row(&body[..6]).is_err());
    }
}
