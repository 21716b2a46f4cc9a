//! Cassio's protocol as pure, sans-IO state machines.
//!
//! Nothing here performs I/O, reads a clock, spawns a task or uses a global
//! random number generator: time and randomness come in as arguments, and
//! everything the core wants done comes out as [`node::Output`] values that a
//! host (the tokio node, or the deterministic simulator) carries out.
//!
//! - [`types`]: keys, values, hybrid-logical-clock timestamps, tokens.
//! - [`placement`]: the token ring with virtual nodes, and rendezvous placement.
//! - [`membership`]: who is in the cluster and who is believed alive.
//! - [`node`]: the node that composes them with the coordinator and replica.
//! - [`anti_entropy`], [`tree`] and [`hints`]: replicas kept in step without
//!   reads (hash-tree exchanges, hinted handoff).
//! - [`wire`]: peer messages and their versioned, size-capped encoding.
//! - [`store`], [`hint_log`] and [`transport`]: the contracts adapters implement;
//!   [`storage_ops`] the operations a node asks its host to run on them.

pub mod agreed_ring;
pub mod anti_entropy;
mod background;
mod budget;
pub mod chain;
pub mod chain_config;
pub mod chain_op;
pub mod chain_record;
mod client_api;
mod clock_guard;
pub mod config;
mod coordinator;
mod effects;
pub mod hint_log;
pub mod hints;
mod keyspace_check;
mod layout;
pub mod membership;
pub mod node;
mod output;
pub mod persist;
pub mod placement;
pub mod read_lease;
mod readiness;
pub mod reclaim;
mod replica;
pub mod scan;
pub mod schema;
pub mod schema_agreement;
mod storage_key;
pub mod storage_ops;
pub mod store;
pub mod time;
pub mod topology;
pub mod transition;
pub mod transport;
pub mod tree;
pub mod types;
pub mod wire;

/// The keyspace every cluster has from the start.
pub const DEFAULT_KEYSPACE: &str = "default";

pub use client_api::Expiry;
pub use client_api::MAX_ROW_PAGE;
pub use config::{Config, Consistency, KeyspaceConfig, ReplicationStrategy};
pub use hint_log::{Hint, HintBacklog, HintLog};
pub use membership::{GossipConfig, MembershipEvent, NodeStatus};
pub use node::{
    ClientError, ClientOp, ClientRequest, ClientResponse, Node, NodeEvent, Output, RequestId,
    RowSlice, StorageOp, StorageResult, StorageToken,
};
pub use persist::{PersistedMember, PersistedState};
pub use scan::ScanCursor;
pub use store::{ApplyOutcome, KeyDigest, Store, StoreError};
pub use time::{Instant, Now};
pub use transport::{InboundFrame, SendManyError, Transport, TransportError};
pub use types::{HybridClock, Key, NodeId, Timestamp, Token, Value, Versioned};
pub use wire::{Envelope, PeerMsg, WireCodec, WireError, WriteOutcome};
