//! The in-memory reference hint log: the simplest correct [`HintLog`].

use cassio_core::{Hint, HintBacklog, HintLog, NodeId, StoreError};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// One target's hints and the last sequence number it handed out.
#[derive(Debug, Default)]
struct Target {
    /// The last sequence number handed out (kept after trims and drops,
    /// so sequence numbers are never reused).
    last_seq: u64,
    /// Held hints, oldest first.
    hints: VecDeque<(u64, Hint)>,
}

/// An in-memory, non-durable [`HintLog`]: per target, a queue behind one
/// mutex. Everything is lost when it is dropped (the simulator keeps one
/// per node across simulated crashes, and replaces it on a wipe).
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
