//! The handle every client path (native client server, RESP, HTTP) uses to
//! reach a running node: submit a request, read the cluster's status, start
//! an anti-entropy repair.
//!
//! This file is the fixed interface between the host driver and the
//! gateways; the driver creates handles, the gateways only use them.

use cassio_core::{ClientError, ClientRequest, ClientResponse};
use core::net::SocketAddr;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Why a request could not be served, as the gateways report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RequestError {
    /// The coordinator answered with a typed error.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The node is shutting down or its driver stopped.
    #[error("node is not running")]
    NotRunning,
    /// The request was refused before reaching the coordinator (e.g. a key
    /// or value over the size limit).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The client is not logged in, its credentials are wrong, or its user
    /// may not do this (see [`crate::auth`]).
    #[error("{0}")]
    Unauthorized(String),
}

/// One member as this node sees it (the rows of `cassio status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Node id.
    pub id: u64,
    /// Peer-to-peer listen address.
    pub addr: String,
    /// `Joining`, `Normal`, `Leaving` or `Left`.
    pub state: String,
    /// Whether this node believes it is alive.
    pub up: bool,
    /// Bytes stored, as last gossiped.
    pub load: u64,
    /// Share of the ring it is primary for (0..=1).
    pub ownership: f64,
    /// Its current generation (changes on every restart).
    pub generation: u64,
    /// Wall micros at which its last anti-entropy round that synced every
    /// pair began, as it gossips it (0: none yet).
    #[serde(default)]
    pub repaired_through: u64,
    /// Its datacenter, as it gossips it.
    #[serde(default = "cassio_core::topology::default_datacenter")]
    pub datacenter: String,
    /// Its rack within the datacenter.
    #[serde(default = "cassio_core::topology::default_rack")]
    pub rack: String,
}

/// Pairs of the anti-entropy round in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundProgress {
    /// (keyspace, peer) pairs whose exchange ended.
    pub pairs_done: u64,
    /// Pairs in the round.
    pub pairs_total: u64,
}

/// How one anti-entropy round of this node ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundOutcome {
    /// Its number: the count of rounds ended on this node (since it
    /// started) once it ended.
    pub number: u64,
    /// (keyspace, peer) pairs in the round.
    pub pairs: u64,
    /// Pairs whose exchange failed (the round did not complete).
    pub failed: u64,
    /// Pairs left out because the peer was down.
    pub skipped_down: u64,
    /// Wall micros when it ended.
    pub ended_at: u64,
}

/// This node's anti-entropy figures (counters since it started).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairInfo {
    /// Full rounds in which every reachable pair synced.
    pub rounds_completed: u64,
    /// Operator rounds over one keyspace or peer that completed.
    pub scoped_rounds_completed: u64,
    /// Rounds that ended, completed or not.
    pub rounds_ended: u64,
    /// The last rounds that ended, oldest first (a few).
    pub recent_rounds: Vec<RoundOutcome>,
    /// Wall micros at which the last round that synced every pair (down
    /// peers included) began: this node's repair watermark; 0 for none.
    pub repaired_through: u64,
    /// Wall micros at which the last completed full round began (0: none).
    pub last_round_started: u64,
    /// Wall micros at which the last completed full round ended (0: none).
    pub last_round_completed: u64,
    /// Exchanges that completed.
    pub exchanges_completed: u64,
    /// Exchanges that failed (peer down, timeout, storage error).
    pub exchanges_failed: u64,
    /// Tree segments found to differ.
    pub segments_repaired: u64,
    /// Key digests compared.
    pub keys_compared: u64,
    /// Items pushed to peers.
    pub items_pushed: u64,
    /// Items pulled from peers.
    pub items_pulled: u64,
    /// Item bytes sent and received by exchanges.
    pub bytes_sent: u64,
    /// Items in this node's trees.
    pub tree_items: u64,
    /// Bytes of memory the trees hold.
    pub tree_memory_bytes: u64,
    /// Whether every keyspace's tree is built.
    pub trees_ready: bool,
    /// The round in progress, if any.
    pub round: Option<RoundProgress>,
}

/// Hints this node holds for one down replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingHints {
    /// The replica's node id.
    pub node_id: u64,
    /// Bytes waiting for it.
    pub bytes: u64,
}

/// This node's hinted-handoff figures (counters since it started).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HintInfo {
    /// Whether this node keeps hints at all.
    pub enabled: bool,
    /// Hints stored.
    pub stored: u64,
    /// Hints delivered and acknowledged.
    pub delivered: u64,
    /// Hints not stored because a byte cap was reached.
    pub dropped_cap: u64,
    /// Hints not stored because the replica was down past the window.
    pub dropped_window: u64,
    /// Hints dropped at delivery, older than the tombstone grace.
    pub dropped_expired: u64,
    /// Hints that could not be stored (hint log errors).
    pub failed: u64,
    /// Bytes waiting, per replica (only replicas with hints).
    pub pending: Vec<PendingHints>,
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node answering.
    pub local_id: u64,
    /// The cluster's name.
    pub cluster: String,
    /// Every known member, the local node included, ordered by id.
    pub members: Vec<MemberStatus>,
    /// The answering node's own state: `Joining`, `Normal`, `Syncing`
    /// (restarted, not yet caught up: it takes writes but is left out of
    /// reads below ALL), `Leaving` or `Left`.
    #[serde(default)]
    pub state: String,
    /// Whether the answering node coordinates client requests: its view of
    /// the cluster has settled and, after a restart, it has heard from a
    /// majority of the members it last knew (until then it answers
    /// `joining`). `GET /ready` is 200 only when this is true and `state`
    /// is `Normal`.
    #[serde(default)]
    pub ready: bool,
    /// The answering node's wall clock when it answered (micros), to read
    /// the timestamps below against.
    #[serde(default)]
    pub now_micros: u64,
    /// The answering node's anti-entropy figures.
    #[serde(default)]
    pub repair: RepairInfo,
    /// The answering node's hinted-handoff figures.
    #[serde(default)]
    pub hints: HintInfo,
    /// The keyspaces the answering node serves, with their settings.
    #[serde(default)]
    pub keyspaces: Vec<KeyspaceStatus>,
    /// The schema version the keyspaces are from (0: this node's own
    /// configuration; 1 and up: agreed on by the cluster).
    #[serde(default)]
    pub schema_version: u64,
    /// Requests this node coordinated lately, per operation (`get`, `set`,
    /// `del`): rate and p99 latency over the last few seconds.
    #[serde(default)]
    pub requests: Vec<OpStats>,
    /// The ring change in progress, as the answering node sees it.
    #[serde(default)]
    pub ring_change: RingChange,
    /// The answering node's own join, while it is joining: the time so
    /// far (the data it received is in `repair`: `items_pulled`,
    /// `bytes_sent`, `tree_items`).
    #[serde(default)]
    pub join_progress: Option<JoinProgress>,
}

/// How long a joining node has been joining: shown by `cassio status` on
/// it, with its repair figures, and logged every few seconds while it
/// joins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinProgress {
    /// Seconds since it started joining (since its process started, for
    /// a node restarted mid-join).
    pub elapsed_secs: f64,
}

/// The ring change in progress: members whose ranges are moving.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingChange {
    /// Members that are `Joining` (syncing the ranges they gain).
    pub joining: Vec<u64>,
    /// Members that are `Leaving` (decommissioning).
    pub leaving: Vec<u64>,
    /// Dead members some live member asks to take off the ring (`cassio
    /// remove`, or the dead node a `--replace` node takes over).
    pub removing: Vec<u64>,
}

impl RingChange {
    /// Whether nothing is moving.
    pub fn is_empty(&self) -> bool {
        self.joining.is_empty() && self.leaving.is_empty() && self.removing.is_empty()
    }
}

/// Why a ring operation (`POST /admin/decommission`, `POST
/// /admin/remove`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingOpError {
    /// The node refuses to leave (too few nodes would remain, or it owns
    /// no tokens).
    #[error(transparent)]
    Leave(#[from] cassio_core::transition::LeaveError),
    /// The node refuses to take the member off the ring.
    #[error(transparent)]
    Remove(#[from] cassio_core::transition::RemoveError),
    /// The node is shutting down or its driver stopped.
    #[error("node is not running")]
    NotRunning,
}

/// The answer to `POST /admin/decommission`: the node is `Leaving`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecommissionStarted {
    /// The leaving node's id.
    pub node_id: u64,
    /// It was `Leaving` already (an earlier request or `--leave-on-exit`).
    pub already_leaving: bool,
}

/// The answer to `POST /admin/remove`: the removal is under way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveStarted {
    /// The dead member being taken off the ring.
    pub node_id: u64,
    /// The node that asked the cluster to remove it (the one answering).
    pub requested_by: u64,
}

/// One keyspace and its settings, as the answering node has them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceStatus {
    /// Its name.
    pub name: String,
    /// Its id, never reused (0 for `default`).
    #[serde(default)]
    pub id: u64,
    /// How many nodes hold each key.
    pub replication_factor: u64,
    /// The level used when a request names none (`QUORUM`, `ONE`, ...).
    pub default_consistency: String,
    /// How replicas are kept in step, the keyspace's mode: `lww`
    /// (leaderless, last write wins) or `craq` (chain replication,
    /// linearizable; compare-and-set and increments).
    pub strategy: String,
    /// Its replication per datacenter (`dc1:3,dc2:2`), with a single factor
    /// the factor (`3`, or `3 (racks)` spread over racks).
    #[serde(default)]
    pub replication: String,
}

/// Recent requests of one operation coordinated by the answering node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpStats {
    /// The operation: `get`, `set` or `del`.
    pub op: String,
    /// Requests per second (answered or refused) over the window.
    pub rate: f64,
    /// Of those, failed requests per second.
    pub error_rate: f64,
    /// The 99th percentile of answered requests' latency, in microseconds
    /// (within about 19% above the exact figure); `None` without requests.
    pub p99_micros: Option<u64>,
    /// The seconds the figures cover (fewer than the usual window just
    /// after the node started).
    pub window_secs: u64,
}

/// What `POST /admin/repair` asks for: a round now, over everything or
/// one keyspace, with every peer or one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairRequest {
    /// Only this keyspace.
    pub keyspace: Option<String>,
    /// Only exchanges with the member listening here (its peer address).
    pub node: Option<SocketAddr>,
}

/// The answer to a [`RepairRequest`]: the round is queued or running.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairStarted {
    /// The keyspace asked for, if any.
    pub keyspace: Option<String>,
    /// The peer asked for (its address), if any.
    pub node: Option<String>,
    /// That peer's node id.
    pub node_id: Option<u64>,
    /// A round was already running: the requested one starts after it.
    pub queued: bool,
    /// The requested round's number: it has ended once
    /// [`RepairInfo::rounds_ended`] reaches this.
    pub round: u64,
    /// The repair figures right after the request.
    pub repair: RepairInfo,
}

/// A command for the driver task.
#[derive(Debug)]
pub enum Command {
    /// Run a client request; the answer goes back on the channel.
    Request(
        ClientRequest,
        oneshot::Sender<Result<ClientResponse, RequestError>>,
    ),
    /// Report the cluster status.
    Status(oneshot::Sender<ClusterStatus>),
    /// Start an anti-entropy round now (after the running one, if any).
    Repair(
        RepairRequest,
        oneshot::Sender<Result<RepairStarted, RequestError>>,
    ),
    /// Start leaving the cluster; the node stops once it announced `Left`.
    Decommission(oneshot::Sender<Result<DecommissionStarted, RingOpError>>),
    /// Ask the cluster to take this dead member off the ring.
    RemoveDead(
        cassio_core::NodeId,
        oneshot::Sender<Result<RemoveStarted, RingOpError>>,
    ),
    /// Change the cluster's keyspaces; answered once the change is agreed
    /// on (`ClientResponse::SchemaChanged`).
    ChangeSchema(
        cassio_core::schema::SchemaChange,
        oneshot::Sender<Result<ClientResponse, RequestError>>,
    ),
    /// Report the cluster's layout (what token-aware clients route by).
    Layout(oneshot::Sender<crate::cluster_layout::ClusterLayout>),
}

/// A cheap, cloneable way to talk to a running node.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
}

impl NodeHandle {
    /// A handle that sends commands on `tx` (the driver owns the receiver).
    pub fn new(tx: mpsc::Sender<Command>) -> Self {
        NodeHandle { tx }
    }

    /// Runs one client request on this node as coordinator.
    pub async fn execute(&self, req: ClientRequest) -> Result<ClientResponse, RequestError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Request(req, tx))
            .await
            .map_err(|_| RequestError::NotRunning)?;
        rx.await.map_err(|_| RequestError::NotRunning)?
    }

    /// The cluster as this node sees it.
    pub async fn status(&self) -> Result<ClusterStatus, RequestError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Status(tx))
            .await
            .map_err(|_| RequestError::NotRunning)?;
        rx.await.map_err(|_| RequestError::NotRunning)
    }

    /// The cluster's layout as this node sees it (placement, members with
    /// their tokens and client addresses, keyspaces' replication).
    pub async fn layout(&self) -> Result<crate::cluster_layout::ClusterLayout, RequestError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Layout(tx))
            .await
            .map_err(|_| RequestError::NotRunning)?;
        rx.await.map_err(|_| RequestError::NotRunning)
    }

    /// Starts an anti-entropy round now (or right after the running one).
    /// An unknown keyspace or peer address is a [`RequestError::BadRequest`].
    pub async fn repair(&self, req: RepairRequest) -> Result<RepairStarted, RequestError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Repair(req, tx))
            .await
            .map_err(|_| RequestError::NotRunning)?;
        rx.await.map_err(|_| RequestError::NotRunning)?
    }

    /// Starts a decommission: the node turns `Leaving`, hands its ranges
    /// over, announces `Left`, then its process stops (see
    /// [`crate::RunningNode::left_signal`]).
    pub async fn decommission(&self) -> Result<DecommissionStarted, RingOpError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Decommission(tx))
            .await
            .map_err(|_| RingOpError::NotRunning)?;
        rx.await.map_err(|_| RingOpError::NotRunning)?
    }

    /// Changes the cluster's keyspaces (create, alter, drop); answers the
    /// schema version that holds the change once the cluster agreed on it.
    pub async fn change_schema(
        &self,
        change: cassio_core::schema::SchemaChange,
    ) -> Result<u64, RequestError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::ChangeSchema(change, tx))
            .await
            .map_err(|_| RequestError::NotRunning)?;
        match rx.await.map_err(|_| RequestError::NotRunning)?? {
            ClientResponse::SchemaChanged { version } => Ok(version),
            other => Err(RequestError::BadRequest(format!(
                "the node answered a schema change with {other:?}"
            ))),
        }
    }

    /// Asks the cluster to take dead member `dead` off the ring; its
    /// ranges are re-replicated among the other nodes first.
    pub async fn remove_dead(&self, dead: u64) -> Result<RemoveStarted, RingOpError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::RemoveDead(cassio_core::NodeId(dead), tx))
            .await
            .map_err(|_| RingOpError::NotRunning)?;
        rx.await.map_err(|_| RingOpError::NotRunning)?
    }
}
