//! What a node hands its host: the [`Output`] queue's items (messages to
//! send, replies, storage operations, events, state to persist), the
//! [`NodeEvent`]s worth logging, and the [`StorageToken`] that ties a
//! storage operation to its completion.

use crate::client_api::{ClientError, ClientResponse, RequestId};
use crate::membership::MembershipEvent;
use crate::persist::PersistedState;
use crate::storage_ops::StorageOp;
use crate::types::{NodeId, Timestamp};
use crate::wire::{PeerMsg, WireError};
use core::net::SocketAddr;

/// Ties a storage operation to its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageToken(pub u64);

/// Something that happened inside the node, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A change in membership or liveness.
    Membership(MembershipEvent),
    /// A message came from a node that is not a member; it was dropped.
    UnknownPeer(NodeId),
    /// A frame could not be decoded; it was dropped.
    BadFrame(WireError),
    /// A storage operation failed.
    StorageFailed(String),
    /// A peer sent a timestamp further ahead of this node's clock than the
    /// maximum offset; the write was refused and the clock not moved.
    ClockAheadRefused {
        /// The peer.
        from: NodeId,
        /// How far ahead of our reference time it was, in micros.
        ahead_micros: u64,
    },
    /// This node's clock is off the cluster's by more than the maximum
    /// offset (reported when it changes).
    ClockOffset {
        /// Our wall clock minus the cluster's median, in micros.
        offset_micros: i64,
    },
    /// A keyspace's settings differ between this node and the cluster.
    ConfigMismatch {
        /// The keyspace.
        keyspace: String,
        /// The differing setting, ours and theirs.
        detail: String,
    },
    /// An anti-entropy round ended.
    RepairRound {
        /// (keyspace, peer) pairs in the round.
        pairs: u64,
        /// Pairs whose exchange failed.
        failed: u64,
        /// Pairs left out because the peer was down.
        skipped_down: u64,
    },
    /// This node caught up after a restart: it left `Syncing`.
    CaughtUp,
    /// A coordinator asked this node to read or write a key it holds on
    /// neither of its rings (the coordinator's view is behind); refused.
    NotOwner {
        /// The coordinator.
        from: crate::types::NodeId,
    },
    /// A schema version was chosen or learned and is now in use.
    SchemaAdopted {
        /// Its number.
        version: u64,
        /// A hash of its contents (equal versions have equal digests).
        digest: u64,
        /// The node that proposed it.
        minted_by: crate::types::NodeId,
    },
    /// Something the schema agreement reports (a lost race, a conflict).
    Schema(crate::schema_agreement::AgreementEvent),
    /// A dead member's ranges are synced on the other nodes: it was taken
    /// off the ring and forgotten.
    RemovedDead {
        /// The member.
        node: crate::types::NodeId,
    },
    /// Every owner of the next ring, this joining node included, has synced
    /// the ranges it gains: this node owns its tokens now (`Normal`).
    Joined {
        /// How long it was `Joining`.
        took: std::time::Duration,
        /// Keys it holds now (what it synced, and writes since).
        keys: u64,
    },
    /// Every node gaining this leaving node's ranges has synced them: it
    /// announced `Left` and may stop.
    HandedOver,
    /// This node synced the ranges it gains in a ring transition.
    TransitionSynced {
        /// The transition (a hash of the current and next rings).
        transition: u64,
    },
    /// The store was told it may purge tombstones below this watermark.
    PurgeWatermark {
        /// HLC microseconds.
        micros: u64,
    },
    /// A coordinator re-stamped a superseded write above the newer version.
    Restamped {
        /// The old timestamp.
        from: Timestamp,
        /// The new timestamp.
        to: Timestamp,
    },
}

/// Work the node asks its host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `msg` to the node listening at `addr`.
    Send {
        /// The recipient, when its id is known (seeds may be known by address only).
        to: Option<NodeId>,
        /// Where it listens.
        addr: SocketAddr,
        /// The message.
        msg: PeerMsg,
    },
    /// Answer client request `id`.
    Reply {
        /// The request.
        id: RequestId,
        /// The answer.
        result: Result<ClientResponse, ClientError>,
    },
    /// Run `op` against the store, then call `handle_storage(token, ..)`.
    Storage {
        /// Pass back with the result.
        token: StorageToken,
        /// The operation.
        op: StorageOp,
    },
    /// Something worth logging.
    Event(NodeEvent),
    /// Persist this state in the data directory (atomically, replacing the
    /// previous one) and give it back in [`Config::persisted`] at the next
    /// start. The node relies on it: a restart must never see an older one.
    Persist(PersistedState),
}
