//! Cassio's conformance suites, reusable by anyone who writes a backend or
//! a transport:
//!
//! - [`memstore`]: the in-memory reference [`Store`](cassio_core::Store).
//! - [`cluster`]: the deterministic cluster simulator and its history checker.
//! - [`store`]: the store suite, as macros that expand to one test per case.
//! - [`transport`]: the transport suite, as a macro likewise.

pub mod cluster;
pub mod memstore;
pub mod store;
pub mod transport;

pub use memstore::MemStore;
