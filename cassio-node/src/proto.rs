//! The native client protocol: length-prefixed `postcard` messages over TCP.
//!
//! A frame is a 4-byte big-endian length, then that many bytes: one version
//! byte ([`PROTO_VERSION`]) and a `postcard`-encoded [`Request`] or
//! [`Response`]. A connection carries any number of requests; each response
//! echoes its request's `id`, and a server may answer pipelined requests out
//! of order. Frames over [`MAX_FRAME`] and undecodable frames are protocol
//! errors: the server closes that connection, and only that one.

use crate::handle::{ClusterStatus, RequestError};
use bytes::Bytes;
use cassio_core::{Consistency, Timestamp};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version written as the first byte of every frame.
pub const PROTO_VERSION: u8 = 1;
/// The largest frame accepted or sent: a maximal value plus its framing.
pub const MAX_FRAME: usize = crate::driver::MAX_VALUE_LEN + crate::driver::MAX_KEY_LEN + 1024;

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client, echoed in the response.
    pub id: u64,
    /// What to do.
    pub op: RequestOp,
}

/// The operations a client may ask for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    /// Read a key.
    Get {
        /// The key.
        key: Bytes,
        /// The level, or `None` for the keyspace default.
        consistency: Option<Consistency>,
    },
    /// Write a value.
    Set {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// The level, or `None` for the keyspace default.
        consistency: Option<Consistency>,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: Bytes,
        /// The level, or `None` for the keyspace default.
        consistency: Option<Consistency>,
    },
    /// The cluster as the node sees it.
    Status,
    /// Liveness check.
    Ping,
    /// Logs the connection in (the handshake on a node with users; see
    /// [`crate::server`]). Appended last so older frames decode unchanged.
    Auth {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// Write a value that expires `ttl_micros` after the write's timestamp.
    /// Appended last so older frames decode unchanged.
    SetExpiring {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Microseconds the value lives.
        ttl_micros: u64,
        /// The level, or `None` for the keyspace default.
        consistency: Option<Consistency>,
    },
    /// One page of a scan of the default keyspace, in token order.
    /// Appended last so older frames decode unchanged.
    Scan {
        /// Only keys that start with these bytes.
        prefix: Bytes,
        /// The cursor a previous page returned (`None`: from the start).
        cursor: Option<Bytes>,
        /// At most this many entries.
        limit: u32,
        /// The level, or `None` for the keyspace default.
        consistency: Option<Consistency>,
    },
    /// Write column `column` of row `row` (one cell, last write wins per
    /// cell). Appended after `Auth` so older frames decode unchanged.
    HSet {
        /// The row.
        row: Bytes,
        /// The column.
        column: Bytes,
        /// The value.
        value: Bytes,
        /// The level, or `None` for the keyspace default.
        consistency: Option<Consistency>,
    },
    /// Read one cell.
    HGet {
        /// The row.
        row: Bytes,
        /// The column.
        column: Bytes,
        /// The level, or `None` for the keyspace default.
        consistency: Option<Consistency>,
    },
    /// Delete one cell (a tombstone for that cell only).
    HDel {
        /// The row.
        row: Bytes,
        /// The column.
        column: Bytes,
        /// The level, or `None` for the keyspace default.
        consistency: Option<Consistency>,
    },
    /// Read a row's live cells in column order (at most
    /// [`MAX_HGETALL`] of them).
    HGetAll {
        /// The row.
        row: Bytes,
        /// The level, or `None` for the keyspace default.
        consistency: Option<Consistency>,
    },
}

/// The most cells one [`RequestOp::HGetAll`] answers (bounded by the
/// frame size too: keep rows read whole small).
pub const MAX_HGETALL: usize = 10_000;

/// A server's answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// The outcome.
    pub result: Result<Reply, RequestError>,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The value of a key (`None`: absent or deleted).
    Value(Option<Bytes>),
    /// A write or delete was acknowledged; its timestamp.
    Written(Timestamp),
    /// The cluster status.
    Status(Box<ClusterStatus>),
    /// Answer to `Ping`.
    Pong,
    /// Answer to a successful `Auth`.
    Authenticated,
    /// A page of a scan: keys and values in token order, and the cursor
    /// of the next page (`None`: the scan is complete).
    Page {
        /// Keys and values.
        entries: Vec<(Bytes, Bytes)>,
        /// Opaque; pass it back as `RequestOp::Scan::cursor`.
        next: Option<Bytes>,
    },
    /// A row's live cells, (column, value) in column order.
    Cells(Vec<(Bytes, Bytes)>),
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The frame's announced length is over the cap.
    #[error("frame of {len} bytes exceeds the cap of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The frame is empty or speaks another protocol version.
    #[error("unsupported protocol version {got:?} (this end speaks {PROTO_VERSION})")]
    Version {
        /// The version byte received, if any.
        got: Option<u8>,
    },
    /// The bytes are not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Encodes `msg` as one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    let mut out = vec![0, 0, 0, 0, PROTO_VERSION];
    out = postcard::to_extend(msg, out).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    let prefix = u32::try_from(len).map_err(|_| ProtoError::TooLarge {
        len,
        max: MAX_FRAME,
    })?;
    out[..4].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Decodes one frame's body (without the length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    let (&version, rest) = body
        .split_first()
        .ok_or(ProtoError::Version { got: None })?;
    if version != PROTO_VERSION {
        return Err(ProtoError::Version { got: Some(version) });
    }
    let (msg, trailing) =
        postcard::take_from_bytes(rest).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if !trailing.is_empty() {
        return Err(ProtoError::Malformed(format!(
            "{} trailing bytes after the message",
            trailing.len()
        )));
    }
    Ok(msg)
}

/// Writes `msg` as one frame (not flushed).
pub async fn write_msg<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), ProtoError> {
    let frame = encode(msg)?;
    w.write_all(&frame).await?;
    Ok(())
}

/// Reads one message; `Ok(None)` on a clean end of stream between frames.
pub async fn read_msg<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<Option<T>, ProtoError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    // The length was checked against the cap, so this allocation is bounded.
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    decode(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let req = Request {
            id: 7,
            op: RequestOp::Set {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                consistency: Some(Consistency::All),
            },
        };
        let frame = encode(&req).unwrap();
        let back: Request = decode(&frame[4..]).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn garbage_and_wrong_versions_are_typed_errors() {
        assert!(matches!(
            decode::<Request>(&[]),
            Err(ProtoError::Version { got: None })
        ));
        assert!(matches!(
            decode::<Request>(&[9, 1, 2]),
            Err(ProtoError::Version { got: Some(9) })
        ));
        assert!(matches!(
            decode::<Request>(&[PROTO_VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(ProtoError::Malformed(_))
        ));
        let mut frame = encode(&Request {
            id: 1,
            op: RequestOp::Ping,
        })
        .unwrap();
        frame.push(0);
        assert!(matches!(
            decode::<Request>(&frame[4..]),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn oversize_length_prefix_is_refused_before_allocating() {
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1];
        let r = read_msg::<_, Request>(&mut input).await;
        assert!(matches!(r, Err(ProtoError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn truncated_frame_is_an_io_error_and_clean_eof_is_none() {
        let frame = encode(&Request {
            id: 1,
            op: RequestOp::Ping,
        })
        .unwrap();
        let mut cut: &[u8] = &frame[..frame.len() - 1];
        assert!(matches!(
            read_msg::<_, Request>(&mut cut).await,
            Err(ProtoError::Io(_))
        ));
        let mut empty: &[u8] = &[];
        assert!(read_msg::<_, Request>(&mut empty).await.unwrap().is_none());
    }
}
