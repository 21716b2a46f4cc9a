//! The hint log contract: where a node keeps, per target node, the writes
//! that target missed (hinted handoff). The core decides what to hint, when
//! to deliver and when to give up; the host only stores bytes, through the
//! `StorageOp::Hint*` operations. The conformance suite tests these words.

use crate::store::StoreError;
use crate::types::{Key, NodeId, Versioned};

/// One missed write kept for a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The storage key (keyspace-qualified).
    pub key: Key,
    /// The version with its original timestamp, so a replay is idempotent
    /// and never overwrites a newer version.
    pub version: Versioned,
    /// When the hint was created (microseconds of HLC time); hints older
    /// than the tombstone grace are dropped rather than replayed.
    pub created_micros: u64,
}

impl Hint {
    /// Bytes this hint counts against the hint caps (key, value and a
    /// fixed overhead for the header).
    pub fn charge(&self) -> u64 {
        (self.key.len() + self.version.value.as_ref().map_or(0, |v| v.len()) + 48) as u64
    }
}

/// What a log holds for one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HintBacklog {
    /// Hints held.
    pub count: u64,
    /// Their summed [`Hint::charge`].
    pub bytes: u64,
    /// The sequence number of the first held hint (0 when none).
    pub first_seq: u64,
    /// The sequence number of the last appended hint (0 when none).
    pub last_seq: u64,
    /// The creation time of the oldest held hint (0 when none).
    pub oldest_micros: u64,
}

/// A per-target, append-only log of hints.
///
/// Contract (each sentence is a conformance case):
/// - `append` gives each hint of a target a sequence number greater than
///   every earlier one of that target, starting at 1, never reused (also
///   across a reopen).
/// - `read(target, after, max_bytes)` returns held hints with sequence
///   numbers above `after`, in order, at least one if any is held, and stops
///   once their summed [`Hint::charge`] reaches `max_bytes`.
/// - `trim(target, through)` forgets that target's hints up to `through`
///   (inclusive); `drop_target` forgets all of them.
/// - `backlog` reports every target with held hints, matching what `read`
///   would return.
/// - A durable log keeps hints across a clean reopen; after a crash it may
///   lose the latest hints (anti-entropy repairs what they carried) but
///   never returns a damaged one: corruption is reported or the damaged
///   tail skipped, never served.
/// - Methods take `&self` and may be called from many threads at once.
pub trait HintLog: Send + Sync {
    /// Appends `hint` to `target`'s log; returns its sequence number.
    fn append(&self, target: NodeId, hint: &Hint) -> Result<u64, StoreError>;

    /// Held hints of `target` after sequence `after`, up to about `max_bytes`.
    fn read(
        &self,
        target: NodeId,
        after: u64,
        max_bytes: u64,
    ) -> Result<Vec<(u64, Hint)>, StoreError>;

    /// Forgets `target`'s hints with sequence numbers up to `through`.
    fn trim(&self, target: NodeId, through: u64) -> Result<(), StoreError>;

    /// Forgets every hint of `target`.
    fn drop_target(&self, target: NodeId) -> Result<(), StoreError>;

    /// Every target with held hints, and what is held.
    fn backlog(&self) -> Result<Vec<(NodeId, HintBacklog)>, StoreError>;
}

impl<H: HintLog + ?Sized> HintLog for std::sync::Arc<H> {
    fn append(&self, target: NodeId, hint: &Hint) -> Result<u64, StoreError> {
        (**self).append(target, hint)
    }
    fn read(
        &self,
        target: NodeId,
        after: u64,
        max_bytes: u64,
    ) -> Result<Vec<(u64, Hint)>, StoreError> {
        (**self).read(target, after, max_bytes)
    }
    fn trim(&self, target: NodeId, through: u64) -> Result<(), StoreError> {
        (**self).trim(target, through)
    }
    fn drop_target(&self, target: NodeId) -> Result<(), StoreError> {
        (**self).drop_target(target)
    }
    fn backlog(&self) -> Result<Vec<(NodeId, HintBacklog)>, StoreError> {
        (**self).backlog()
    }
}
