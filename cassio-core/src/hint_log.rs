//! The hint log contract: where a node keeps, per target node, the writes
//! that target missed (hinted handoff). The core decides what to hint, when
//! to deliver and when to give up; the host only stores bytes, through the
//! `StorageOp::Hint*` operations. The conformance suite tests these words.

use crate::store::StoreError;
use crate::types::{Key, NodeId, Versioned};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// The largest key a hint may carry (every hint log refuses larger ones).
pub const MAX_HINT_KEY_LEN: usize = 64 * 1024;
/// The largest value a hint may carry.
pub const MAX_HINT_VALUE_LEN: usize = 64 * 1024 * 1024;

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
    /// Refuses a hint whose key or value exceeds [`MAX_HINT_KEY_LEN`] or
    /// [`MAX_HINT_VALUE_LEN`] (`StoreError::TooLarge`); every log calls it
    /// in `append`, so the in-memory and durable logs accept the same hints.
    pub fn check_size(&self) -> Result<(), StoreError> {
        if self.key.len() > MAX_HINT_KEY_LEN {
            return Err(StoreError::TooLarge {
                what: "key",
                len: self.key.len(),
                max: MAX_HINT_KEY_LEN,
            });
        }
        let vlen = self.version.value.as_ref().map_or(0, |v| v.len());
        if vlen > MAX_HINT_VALUE_LEN {
            return Err(StoreError::TooLarge {
                what: "value",
                len: vlen,
                max: MAX_HINT_VALUE_LEN,
            });
        }
        Ok(())
    }

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

/// One target's hints and the last sequence number it handed out.
#[derive(Debug, Default)]
struct Target {
    /// The last sequence number handed out (kept after trims and drops,
    /// so sequence numbers are never reused).
    last_seq: u64,
    /// Held hints, oldest first.
    hints: VecDeque<(u64, Hint)>,
}

/// The in-memory, non-durable [`HintLog`]: per target, a queue behind one
/// mutex; the simplest correct log. Everything is lost when it is dropped.
/// Nodes built without a data directory keep their hints in one, and the
/// simulator keeps one per node across simulated crashes (replaced on a
/// wipe).
#[derive(Debug, Default)]
pub struct MemHintLog {
    targets: Mutex<BTreeMap<NodeId, Target>>,
}

impl MemHintLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn targets(&self) -> MutexGuard<'_, BTreeMap<NodeId, Target>> {
        // Every mutation under the lock is a single push, pop or clear
        // after the sequence number is assigned, so a poisoned lock still
        // guards consistent state.
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl HintLog for MemHintLog {
    fn append(&self, target: NodeId, hint: &Hint) -> Result<u64, StoreError> {
        hint.check_size()?;
        let mut targets = self.targets();
        let t = targets.entry(target).or_default();
        t.last_seq += 1;
        let seq = t.last_seq;
        t.hints.push_back((seq, hint.clone()));
        Ok(seq)
    }

    fn read(
        &self,
        target: NodeId,
        after: u64,
        max_bytes: u64,
    ) -> Result<Vec<(u64, Hint)>, StoreError> {
        let targets = self.targets();
        let Some(t) = targets.get(&target) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut bytes = 0u64;
        // Held hints are in sequence order: skip to the first after `after`.
        let start = t.hints.partition_point(|(seq, _)| *seq <= after);
        for (seq, hint) in t.hints.iter().skip(start) {
            out.push((*seq, hint.clone()));
            bytes = bytes.saturating_add(hint.charge());
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    fn trim(&self, target: NodeId, through: u64) -> Result<(), StoreError> {
        if let Some(t) = self.targets().get_mut(&target) {
            while t.hints.front().is_some_and(|(seq, _)| *seq <= through) {
                t.hints.pop_front();
            }
        }
        Ok(())
    }

    fn drop_target(&self, target: NodeId) -> Result<(), StoreError> {
        if let Some(t) = self.targets().get_mut(&target) {
            t.hints.clear();
        }
        Ok(())
    }

    fn backlog(&self) -> Result<Vec<(NodeId, HintBacklog)>, StoreError> {
        Ok(self
            .targets()
            .iter()
            .filter(|(_, t)| !t.hints.is_empty())
            .map(|(id, t)| {
                let backlog = HintBacklog {
                    count: t.hints.len() as u64,
                    bytes: t.hints.iter().map(|(_, h)| h.charge()).sum(),
                    first_seq: t.hints.front().map_or(0, |(s, _)| *s),
                    last_seq: t.last_seq,
                    oldest_micros: t
                        .hints
                        .iter()
                        .map(|(_, h)| h.created_micros)
                        .min()
                        .unwrap_or(0),
                };
                (*id, backlog)
            })
            .collect())
    }
}
