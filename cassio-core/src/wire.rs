//! Peer-to-peer messages and their encoding: a version byte, then a
//! `postcard`-encoded [`Envelope`] that names the cluster and the sender.
//! Decoding untrusted bytes never panics and never allocates past the cap.

use crate::types::{Key, NodeId, Timestamp, Token, Versioned};
use serde::{Deserialize, Serialize};

/// The wire format version written as the first byte of every frame.
/// Version 5 added the expiry to every [`Versioned`] and the schema
/// version each node repaired under to its gossiped state. As with every
/// bump, a node refuses frames of another version ([`WireError::Version`]):
/// a cluster is upgraded from version 4 by restarting all its nodes, not
/// one at a time. Version 6 added each node's datacenter and rack to its
/// gossiped state, and each keyspace's factors per datacenter and rack
/// spread to its definition (in gossip and in schema messages). Version 7
/// added each node's native client address to its gossiped state (for
/// token-aware clients). Version 8 added the agreed ring to the schema
/// (in schema messages). Version 9 added the CRAQ chain configuration to
/// the schema and the chain messages ([`crate::chain::ChainMsg`]).
pub const WIRE_VERSION: u8 = 9;

/// The default cap on a frame's size: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Identifies one request a coordinator sent to a replica, echoed in the reply.
pub type RequestTag = u64;

/// A message between two nodes of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// Coordinator → replica: store this version (keep the newer).
    Write {
        /// Echoed in the ack.
        tag: RequestTag,
        /// Storage key (keyspace-qualified).
        key: Key,
        /// The version to apply.
        version: Versioned,
    },
    /// Replica → coordinator: what became of the write.
    WriteAck {
        /// The tag of the write.
        tag: RequestTag,
        /// Applied, superseded by a newer version, refused or failed.
        outcome: WriteOutcome,
    },
    /// Coordinator → replica: send me your version of `key`.
    Read {
        /// Echoed in the reply.
        tag: RequestTag,
        /// Storage key (keyspace-qualified).
        key: Key,
    },
    /// Replica → coordinator: my version (tombstones included), or an error.
    ReadReply {
        /// The tag of the read.
        tag: RequestTag,
        /// `Ok(None)`: never written here; `Err(())`: the store failed.
        result: Result<Option<Versioned>, ()>,
    },
    /// Coordinator → stale replica: apply this newer version; no reply.
    Repair {
        /// Storage key (keyspace-qualified).
        key: Key,
        /// The winning version.
        version: Versioned,
    },
    /// Coordinator → replica: send me your items in `start..end` (a row's
    /// cells), at most `limit` of them, tombstones included.
    ReadRange {
        /// Echoed in the reply.
        tag: RequestTag,
        /// First storage key, included.
        start: Key,
        /// Bound, excluded.
        end: Key,
        /// At most this many items.
        limit: u32,
    },
    /// Replica → coordinator: the items of a [`PeerMsg::ReadRange`].
    RangeReply {
        /// The tag of the read.
        tag: RequestTag,
        /// The items in key order, or `Err(())`: the store failed.
        result: Result<Vec<(Key, Versioned)>, ()>,
    },
    /// Liveness and membership gossip; the membership module owns its content.
    Gossip(crate::membership::GossipMsg),
    /// Anti-entropy; the anti-entropy module owns its content.
    Sync(crate::anti_entropy::SyncMsg),
    /// Hinted handoff; the hints module owns its content.
    Hints(crate::hints::HintMsg),
    /// The schema agreement; its module owns the content.
    Schema(crate::schema_agreement::SchemaMsg),
    /// Chain replication (CRAQ keyspaces).
    Chain(Box<crate::chain::ChainMsg>),
    /// Coordinator → replica: send me your entries (tombstones included)
    /// of keyspace `keyspace` with tokens `first..=last`, after key
    /// `after` of token `first`, at most `limit` of them (a paged scan,
    /// see [`crate::scan`]).
    ScanRead {
        /// Echoed in the reply.
        tag: RequestTag,
        /// The keyspace's storage name.
        keyspace: String,
        /// The first token of the read.
        first: Token,
        /// The last token of the read (inclusive); the range must be one
        /// the replica holds whole.
        last: Token,
        /// Start after this key of token `first` (`None`: at its start).
        after: Option<Key>,
        /// At most this many entries.
        limit: u32,
    },
    /// Replica → coordinator: the entries, or `Err(())` when the store
    /// failed or the replica does not hold the range.
    ScanReply {
        /// The tag of the read.
        tag: RequestTag,
        /// The chunk.
        result: Result<crate::scan::ScanChunk, ()>,
    },
}

/// What a replica did with a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// The write's version is now the replica's newest (or already was).
    Applied,
    /// The replica already holds a newer version, stamped with this
    /// timestamp; the coordinator re-stamps its write above it, so that a
    /// write never loses to one acknowledged before it began because of
    /// clock skew.
    Superseded(Timestamp),
    /// The write's timestamp is further ahead of the replica's clock than
    /// the cluster's maximum clock offset; it was not applied.
    ClockAhead,
    /// The replica's store failed.
    Failed,
    /// The replica does not hold the key on either of its rings: the
    /// coordinator's view is behind (or the replica's ahead); it was not
    /// applied, so a stale coordinator cannot acknowledge a write on nodes
    /// that reads no longer ask.
    NotOwner,
}

/// What travels in one frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's cluster; frames from another cluster are refused.
    pub cluster: String,
    /// The sending node.
    pub from: NodeId,
    /// The newest schema version the sender knows: a receiver that knows
    /// an older one fetches the newer before it trusts its own.
    pub layout: u64,
    /// The message.
    pub msg: PeerMsg,
}

/// Why a frame could not be encoded or decoded.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The frame had no bytes.
    #[error("empty frame")]
    Empty,
    /// The frame is over the cap.
    #[error("frame of {len} bytes exceeds the cap of {max} bytes")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The sender speaks another wire version.
    #[error("wire version {got} is not supported (this node speaks {want})")]
    Version {
        /// The version byte received.
        got: u8,
        /// The version this node speaks.
        want: u8,
    },
    /// The sender belongs to another cluster.
    #[error("frame from cluster {got:?}, this node is in cluster {want:?}")]
    ClusterMismatch {
        /// The sender's cluster.
        got: String,
        /// Ours.
        want: String,
    },
    /// The bytes are not a valid envelope.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Encoding and decoding settings shared by both ends of a link.
#[derive(Clone, Debug)]
pub struct WireCodec {
    /// Our cluster's name; checked on every decoded frame.
    pub cluster: String,
    /// The largest frame accepted or produced.
    pub max_frame: usize,
}

impl WireCodec {
    /// A codec for `cluster` with the default 16 MiB cap.
    pub fn new(cluster: impl Into<String>) -> Self {
        WireCodec {
            cluster: cluster.into(),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Encodes an envelope from `from` carrying `msg`, claiming no schema
    /// version (tools and tests; nodes use [`WireCodec::encode_at`]).
    pub fn encode(&self, from: NodeId, msg: &PeerMsg) -> Result<Vec<u8>, WireError> {
        self.encode_at(from, 0, msg)
    }

    /// Encodes an envelope from `from`, which knows schema version
    /// `layout`, carrying `msg`.
    pub fn encode_at(
        &self,
        from: NodeId,
        layout: u64,
        msg: &PeerMsg,
    ) -> Result<Vec<u8>, WireError> {
        #[derive(Serialize)]
        struct EnvelopeRef<'a> {
            cluster: &'a str,
            from: NodeId,
            layout: u64,
            msg: &'a PeerMsg,
        }
        let mut out = vec![WIRE_VERSION];
        let env = EnvelopeRef {
            cluster: &self.cluster,
            from,
            layout,
            msg,
        };
        out = postcard::to_extend(&env, out).map_err(|e| WireError::Malformed(e.to_string()))?;
        if out.len() > self.max_frame {
            return Err(WireError::TooLarge {
                len: out.len(),
                max: self.max_frame,
            });
        }
        Ok(out)
    }

    /// Decodes and checks a frame: size, version, well-formedness, cluster.
    pub fn decode(&self, frame: &[u8]) -> Result<Envelope, WireError> {
        if frame.len() > self.max_frame {
            return Err(WireError::TooLarge {
                len: frame.len(),
                max: self.max_frame,
            });
        }
        let (&version, body) = frame.split_first().ok_or(WireError::Empty)?;
        if version != WIRE_VERSION {
            return Err(WireError::Version {
                got: version,
                want: WIRE_VERSION,
            });
        }
        // postcard bounds every length prefix by the remaining input, so a
        // hostile length cannot make it allocate more than the frame holds.
        let (env, rest): (Envelope, &[u8]) =
            postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::Malformed(format!(
                "{} trailing bytes after the envelope",
                rest.len()
            )));
        }
        if env.cluster != self.cluster {
            return Err(WireError::ClusterMismatch {
                got: env.cluster,
                want: self.cluster.clone(),
            });
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Versioned;
    use bytes::Bytes;

    #[test]
    fn expiries_cross_the_wire_and_version_4_frames_are_refused() {
        let ts = Timestamp::new(7, 1, NodeId(3));
        let msg = PeerMsg::Repair {
            key: Bytes::from_static(b"k"),
            version: Versioned::expiring(ts, "v", 99),
        };
        let codec = WireCodec::new("c");
        let mut frame = codec.encode(NodeId(1), &msg).expect("encode");
        let env = codec.decode(&frame).expect("decode");
        assert_eq!(env.msg, msg);
        for old in [4, 5] {
            frame[0] = old;
            assert_eq!(
                codec.decode(&frame),
                Err(WireError::Version {
                    got: old,
                    want: WIRE_VERSION
                })
            );
        }
    }
}
