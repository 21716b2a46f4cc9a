//! The native client protocol: length-prefixed `postcard` messages over TCP.
//!
//! A frame is a 4-byte big-endian length, then that many bytes: one version
//! byte ([`PROTO_VERSION`]) and a `postcard`-encoded [`Request`] or
//! [`Response`]. A connection carries any number of requests; each response
//! echoes its request's `id`, and a server may answer pipelined requests out
//! of order. Frames over [`MAX_FRAME`] and undecodable frames are protocol
//! errors: the server closes that connection, and only that one.

use crate::handle::{ClusterStatus, KeyspaceStatus, RequestError};
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
    /// Runs data operation `op` (`Get`, `Set`, `SetExpiring`, `Del`,
    /// `Scan`, `HSet`, `HGet`, `HDel`, `HGetAll`, `Cas` or `Incr`) in
    /// keyspace `keyspace`
    /// instead of `default`. Any other `op` (another `InKeyspace`, `Ping`,
    /// `Status`, `Auth`, the keyspace operations) is answered
    /// [`RequestError::BadRequest`]; the connection stays open. Appended
    /// after the operations it wraps so older frames decode unchanged.
    InKeyspace {
        /// The keyspace.
        keyspace: String,
        /// The operation. Decoding refuses wrappers nested deeper than
        /// [`MAX_NESTING`] (a malformed frame), so a crafted frame cannot
        /// recurse the decoder off the stack.
        #[serde(deserialize_with = "nested_op")]
        op: Box<RequestOp>,
    },
    /// The cluster's keyspaces, answered [`Reply::Keyspaces`] (as
    /// `GET /admin/keyspaces`). Needs the admin right on a node with users.
    ListKeyspaces,
    /// Creates a keyspace, answered [`Reply::SchemaChanged`] once the
    /// cluster agreed on it (as `POST /admin/keyspaces`). Needs the admin
    /// right on a node with users.
    CreateKeyspace {
        /// Its name: 1 to 48 ASCII letters, digits, `_` or `-`.
        name: String,
        /// How many nodes hold each key.
        replication_factor: u64,
        /// The level of requests that name none (`None`: `QUORUM`).
        default_consistency: Option<Consistency>,
    },
    /// Changes a keyspace's replication factor (by one per step) and/or
    /// default level, answered [`Reply::SchemaChanged`] (as
    /// `PATCH /admin/keyspaces/{name}`). Needs the admin right on a node
    /// with users.
    AlterKeyspace {
        /// The keyspace.
        name: String,
        /// The new replication factor (`None`: unchanged).
        replication_factor: Option<u64>,
        /// The new default level (`None`: unchanged).
        default_consistency: Option<Consistency>,
    },
    /// Drops a keyspace, answered [`Reply::SchemaChanged`] (as
    /// `DELETE /admin/keyspaces/{name}`). Needs the admin right on a node
    /// with users.
    DropKeyspace {
        /// The keyspace.
        name: String,
    },
    /// Creates a keyspace with a factor per datacenter or spread over
    /// racks, answered [`Reply::SchemaChanged`] (as `POST
    /// /admin/keyspaces` with `datacenters` or `spread_racks`). Needs the
    /// admin right on a node with users.
    CreatePlacedKeyspace {
        /// Its name.
        name: String,
        /// How many replicas, and where.
        replication: cassio_core::topology::Replication,
        /// The level of requests that name none (`None`: `QUORUM`).
        default_consistency: Option<Consistency>,
    },
    /// Changes a keyspace's replication (one datacenter by one per step),
    /// answered [`Reply::SchemaChanged`]. Needs the admin right on a node
    /// with users.
    AlterKeyspaceReplication {
        /// The keyspace.
        name: String,
        /// Its new replication.
        replication: cassio_core::topology::Replication,
    },
    /// The cluster's layout, answered [`Reply::Layout`]: what a
    /// token-aware client routes by (see [`crate::cluster_layout`]). Needs
    /// a login only on a node with users. Appended last so older frames
    /// decode unchanged.
    Layout,
    /// Creates a chain-replicated (CRAQ, linearizable) keyspace, answered
    /// [`Reply::SchemaChanged`] (as `POST /admin/keyspaces` with `"mode":
    /// "craq"`); its default level is `QUORUM` (`ONE` reads are the weak,
    /// non-linearizable ones). Needs the admin right on a node with users.
    /// Appended last so older frames decode unchanged.
    CreateCraqKeyspace {
        /// Its name: 1 to 48 ASCII letters, digits, `_` or `-`.
        name: String,
        /// Its chain length (how many nodes hold each key).
        replication_factor: u64,
    },
    /// Compare-and-set (CRAQ keyspaces only): sets `new` if and only if the
    /// key's current value is `expected` (`None`: only if it is absent),
    /// answered [`Reply::Swapped`]. On a last-write-wins keyspace it is
    /// refused with `ClientError::InvalidOp`. Appended last so older
    /// frames decode unchanged.
    Cas {
        /// The key.
        key: Bytes,
        /// The value required (`None`: the key must be absent).
        expected: Option<Bytes>,
        /// The value set if it matches.
        new: Bytes,
    },
    /// Adds `by` to the key's value read as a decimal `i64` (absent: 0),
    /// answered [`Reply::Counter`] with the new value (CRAQ keyspaces
    /// only; elsewhere, or on a value that is not an integer,
    /// `ClientError::InvalidOp`). Appended last so older frames decode
    /// unchanged.
    Incr {
        /// The key.
        key: Bytes,
        /// The amount (negative: a decrement).
        by: i64,
    },
}

impl RequestOp {
    /// Whether this is a data operation, the kind [`RequestOp::InKeyspace`]
    /// may wrap.
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            RequestOp::Get { .. }
                | RequestOp::Set { .. }
                | RequestOp::SetExpiring { .. }
                | RequestOp::Del { .. }
                | RequestOp::Scan { .. }
                | RequestOp::HSet { .. }
                | RequestOp::HGet { .. }
                | RequestOp::HDel { .. }
                | RequestOp::HGetAll { .. }
                | RequestOp::Cas { .. }
                | RequestOp::Incr { .. }
        )
    }
}

/// How deep [`RequestOp::InKeyspace`] wrappers may nest in a frame that
/// still decodes. One level of nesting decodes (so the server can answer
/// it with a typed error and keep the connection); deeper is a malformed
/// frame.
pub const MAX_NESTING: usize = 2;

std::thread_local! {
    /// The number of `InKeyspace` operations being decoded on this thread
    /// (decoding is synchronous, so a thread-local follows one decode).
    static NESTING: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

/// Restores [`NESTING`] when a nested decode ends, on error paths too.
struct NestingGuard;

impl Drop for NestingGuard {
    fn drop(&mut self) {
        NESTING.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// Decodes the operation inside an `InKeyspace`, refusing more than
/// [`MAX_NESTING`] wrappers: each level recurses in the decoder, and a
/// frame of nested wrappers could otherwise overflow the stack.
fn nested_op<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Box<RequestOp>, D::Error> {
    let depth = NESTING.with(|n| {
        let depth = n.get() + 1;
        n.set(depth);
        depth
    });
    let _guard = NestingGuard;
    if depth > MAX_NESTING {
        return Err(serde::de::Error::custom(format!(
            "InKeyspace operations nested more than {MAX_NESTING} deep"
        )));
    }
    RequestOp::deserialize(d).map(Box::new)
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
    /// Answer to `ListKeyspaces`.
    Keyspaces(KeyspaceList),
    /// Answer to a keyspace change: the schema version that holds it.
    SchemaChanged {
        /// The version.
        version: u64,
    },
    /// Answer to `Layout`. Appended last so older frames decode unchanged.
    Layout(Box<crate::cluster_layout::ClusterLayout>),
    /// Answer to `Cas`: whether the value was set. Appended last so older
    /// frames decode unchanged.
    Swapped(bool),
    /// Answer to `Incr`: the key's new value. Appended last so older
    /// frames decode unchanged.
    Counter(i64),
}

/// The cluster's keyspaces as the answering node knows them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyspaceList {
    /// The schema version they are from.
    pub schema_version: u64,
    /// Every keyspace, `default` included.
    pub keyspaces: Vec<KeyspaceStatus>,
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

    fn wrap(depth: usize) -> RequestOp {
        let mut op = RequestOp::Get {
            key: Bytes::from_static(b"k"),
            consistency: None,
        };
        for _ in 0..depth {
            op = RequestOp::InKeyspace {
                keyspace: "orders".into(),
                op: Box::new(op),
            };
        }
        op
    }

    #[test]
    fn keyspace_ops_round_trip_and_older_frames_decode_unchanged() {
        for op in [
            wrap(1),
            wrap(MAX_NESTING),
            RequestOp::ListKeyspaces,
            RequestOp::CreateKeyspace {
                name: "orders".into(),
                replication_factor: 3,
                default_consistency: Some(Consistency::One),
            },
            RequestOp::AlterKeyspace {
                name: "orders".into(),
                replication_factor: None,
                default_consistency: Some(Consistency::All),
            },
            RequestOp::DropKeyspace {
                name: "orders".into(),
            },
            RequestOp::CreateCraqKeyspace {
                name: "locks".into(),
                replication_factor: 3,
            },
            RequestOp::Cas {
                key: Bytes::from_static(b"k"),
                expected: Some(Bytes::from_static(b"old")),
                new: Bytes::from_static(b"new"),
            },
            RequestOp::Incr {
                key: Bytes::from_static(b"n"),
                by: -3,
            },
        ] {
            let req = Request { id: 3, op };
            let frame = encode(&req).unwrap();
            assert_eq!(decode::<Request>(&frame[4..]).unwrap(), req);
        }
        // Appending variants kept the old ones' indexes: a `Ping` is still
        // variant 4 on the wire (version, id 1, variant 4).
        let ping = encode(&Request {
            id: 1,
            op: RequestOp::Ping,
        })
        .unwrap();
        assert_eq!(&ping[4..], &[PROTO_VERSION, 1, 4]);
        assert!(!wrap(1).is_data() && !RequestOp::Ping.is_data());
        assert!(wrap(0).is_data());
        for reply in [Reply::Swapped(true), Reply::Counter(-7)] {
            let resp = Response {
                id: 9,
                result: Ok(reply),
            };
            let frame = encode(&resp).unwrap();
            assert_eq!(decode::<Response>(&frame[4..]).unwrap(), resp);
        }
    }

    #[test]
    fn wrappers_nested_too_deep_are_malformed_not_a_stack_overflow() {
        let frame = encode(&Request {
            id: 1,
            op: wrap(MAX_NESTING + 1),
        })
        .unwrap();
        // (postcard does not carry a custom error's text.)
        assert!(matches!(
            decode::<Request>(&frame[4..]),
            Err(ProtoError::Malformed(_))
        ));
        // A hand-made frame of a million wrappers (variant index, an empty
        // name) is refused, not recursed into.
        let index = {
            let f = encode(&RequestOp::InKeyspace {
                keyspace: String::new(),
                op: Box::new(RequestOp::Ping),
            })
            .unwrap();
            f[5]
        };
        let mut body = vec![PROTO_VERSION, 1];
        for _ in 0..1_000_000 {
            body.extend([index, 0]);
        }
        body.push(4);
        assert!(matches!(
            decode::<Request>(&body),
            Err(ProtoError::Malformed(_))
        ));
        // The depth count is back to zero: a legal frame decodes after.
        let ok = encode(&Request { id: 2, op: wrap(2) }).unwrap();
        assert!(decode::<Request>(&ok[4..]).is_ok());
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
