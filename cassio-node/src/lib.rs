//! The Cassio node: a tokio host that drives `cassio_core::Node`, the
//! gateways clients use, and the pieces of the `cassio` binary.
//!
//! - [`driver`]: the task that pumps the core (storage off the event loop).
//! - [`storage_exec`]: how storage operations run, bounded ([`driver::StorageLimits`]).
//! - [`builder`]: [`NodeBuilder`] assembles a running node from a transport and a store.
//! - [`handle`]: [`NodeHandle`], how every client path reaches a node.
//! - [`hint_log`]: where hints for down replicas are kept ([`hint_log::DiskHintLog`]).
//! - [`proto`], [`server`], [`client`]: the native client protocol, its
//!   server, and the Rust client library.
//! - [`request_stats`]: live request rate and p99 per operation, for `/status`.
//! - [`config`]: the `cassio` binary's configuration (flags and TOML file).
//! - [`auth`]: users, passwords and permissions on the client ports, and
//!   their TLS.
//! - [`peer_auth`]: refuses frames whose sender is not the node the peer's
//!   TLS certificate names.

pub mod auth;
pub mod builder;
pub mod client;
pub mod cluster_layout;
pub mod config;
pub mod driver;
pub mod gateway;
pub mod handle;
pub mod hint_log;
pub mod launch;
pub mod node_state;
pub mod peer_auth;
pub mod proto;
pub mod request_stats;
pub mod server;
pub mod storage_exec;

pub use builder::{NodeBuilder, RunningNode};
pub use handle::{
    ClusterStatus, DecommissionStarted, HintInfo, JoinProgress, KeyspaceStatus, MemberStatus,
    NodeHandle, OpStats, RemoveStarted, RepairInfo, RepairRequest, RepairStarted, RequestError,
    RingChange, RingOpError,
};
