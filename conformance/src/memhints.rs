//! The in-memory reference hint log lives in the core
//! ([`cassio_core::hint_log::MemHintLog`]), so the node's default and the
//! simulator run the same one; it is re-exported here, where the hint suite
//! tests it.

pub use cassio_core::hint_log::MemHintLog;
