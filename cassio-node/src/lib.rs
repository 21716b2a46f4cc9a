//! The Cassio node: a tokio host that drives `cassio_core::Node`, the
//! gateways clients use, and the pieces of the `cassio` binary.

pub mod handle;

pub use handle::{ClusterStatus, MemberStatus, NodeHandle, RequestError};
