//! Cassio's conformance suites, reusable by anyone who writes a backend or
//! a transport:
//!
//! - [`memstore`]: the in-memory reference [`Store`](cassio_core::Store).
//! - [`cluster`]: the deterministic cluster simulator and its history checker.

pub mod cluster;
pub mod memstore;

pub use memstore::MemStore;
