//! Cassio's conformance suites, reusable by anyone who writes a backend or
//! a transport:
//!
//! - [`memstore`]: the in-memory reference [`Store`](cassio_core::Store).
//! - [`memhints`]: the in-memory reference [`HintLog`](cassio_core::HintLog).
//! - [`cluster`]: the deterministic cluster simulator and its history checker.
//! - [`real_history`]: the checker of histories recorded against a real
//!   cluster (the multi-host nemesis), and the `check-history` binary.
//! - [`linearizability`]: a per-key linearizability checker (Wing and
//!   Gong's search with Lowe's memoization) for histories of a strongly
//!   consistent mode, from the simulator or from real processes.
//! - [`store`]: the store suite, as macros that expand to one test per case.
//! - [`hint_log`]: the hint log suite, as macros likewise.
//! - [`transport`]: the transport suite, as a macro likewise.

pub mod cluster;
pub mod hint_log;
pub mod linearizability;
pub mod memhints;
pub mod memstore;
pub mod real_history;
pub mod store;
pub mod transport;

pub use memhints::MemHintLog;
pub use memstore::MemStore;
