//! The handle every client path (native client server, RESP, HTTP) uses to
//! reach a running node: submit a request, read the cluster's status.
//!
//! This file is the fixed interface between the host driver and the
//! gateways; the driver creates handles, the gateways only use them.

use cassio_core::{ClientError, ClientRequest, ClientResponse};
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
}

/// One member as this node sees it (the rows of `cassio status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node answering.
    pub local_id: u64,
    /// The cluster's name.
    pub cluster: String,
    /// Every known member, the local node included, ordered by id.
    pub members: Vec<MemberStatus>,
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
}
