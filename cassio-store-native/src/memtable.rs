//! The memtable: recent writes in a concurrent ordered map.
//!
//! A lock-free skip list keeps keys ordered for flushes and range scans while
//! readers never block writers. Each value sits behind its own tiny mutex so
//! a newer version replaces an older one in place: replacing the skip-list
//! node instead would leave a moment where the key is absent and a reader
//! would fall through to an older table.

use bytes::Bytes;
use cassio_core::Versioned;
use crossbeam_skiplist::SkipMap;
use parking_lot::Mutex;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bookkeeping bytes charged per entry (skip-list node, tower, Bytes headers).
const ENTRY_OVERHEAD: usize = 96;

/// One memtable and the commit-log segment its first write went to.
pub(crate) struct Memtable {
    map: SkipMap<Bytes, Mutex<Versioned>>,
    bytes: AtomicUsize,
    /// The oldest log segment that holds writes of this memtable; segments
    /// from here on must be kept until the memtable is in a table.
    pub(crate) first_log: u64,
}

fn charge(key_len: usize, v: &Versioned) -> usize {
    key_len + v.value.as_ref().map_or(0, |b| b.len()) + ENTRY_OVERHEAD
}

impl Memtable {
    /// An empty memtable whose writes start in log segment `first_log`.
    pub(crate) fn new(first_log: u64) -> Self {
        Memtable {
            map: SkipMap::new(),
            bytes: AtomicUsize::new(0),
            first_log,
        }
    }

    /// Keeps `v` under `key` if it wins over what is here; true if kept.
    pub(crate) fn insert(&self, key: &[u8], v: &Versioned) -> bool {
        if let Some(e) = self.map.get(key) {
            return self.replace(e.value(), key.len(), v);
        }
        let e = self
            .map
            .get_or_insert_with(Bytes::copy_from_slice(key), || {
                // Charged before the node is published so a concurrent replace
                // never subtracts a charge that was not added yet. If the node
                // loses a creation race it is discarded and this over-counts a
                // little, which only makes a flush come slightly early.
                self.bytes
                    .fetch_add(charge(key.len(), v), Ordering::Relaxed);
                Mutex::new(v.clone())
            });
        if *e.value().lock() == *v {
            // Our node (or an identical version, which is the same thing).
            return true;
        }
        // Another writer created the key first (or already replaced our
        // version with a newer one): settle it like any existing key.
        self.replace(e.value(), key.len(), v)
    }

    fn replace(&self, slot: &Mutex<Versioned>, key_len: usize, v: &Versioned) -> bool {
        let mut cur = slot.lock();
        if !v.supersedes(&cur) {
            return false;
        }
        let old = charge(key_len, &cur);
        *cur = v.clone();
        // Adjusted under the slot lock, after the old charge was added, so
        // the counter never dips below zero.
        self.bytes.fetch_add(charge(key_len, v), Ordering::Relaxed);
        self.bytes.fetch_sub(old, Ordering::Relaxed);
        true
    }

    /// The version stored under `key`, if any.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Versioned> {
        self.map.get(key).map(|e| e.value().lock().clone())
    }

    /// Approximate bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// True when nothing was written.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Entries with keys in the bounds, in key order.
    pub(crate) fn range<'a>(
        &'a self,
        start: Bound<&'a [u8]>,
        end: Bound<&'a [u8]>,
    ) -> impl Iterator<Item = (Bytes, Versioned)> + 'a {
        self.map
            .range::<[u8], _>((start, end))
            .map(|e| (e.key().clone(), e.value().lock().clone()))
    }

    /// Every entry in key order (for flushing).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Bytes, Versioned)> + '_ {
        self.map
            .iter()
            .map(|e| (e.key().clone(), e.value().lock().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cassio_core::{NodeId, Timestamp};

    fn v(micros: u64, s: &'static str) -> Versioned {
        Versioned::value(
            Timestamp::new(micros, 0, NodeId(1)),
            Bytes::from_static(s.as_bytes()),
        )
    }

    #[test]
    fn keeps_the_last_write_winner() {
        let m = Memtable::new(0);
        assert!(m.insert(b"a", &v(2, "two")));
        assert!(!m.insert(b"a", &v(1, "one")));
        assert!(m.insert(b"a", &v(3, "three")));
        assert_eq!(m.get(b"a"), Some(v(3, "three")));
        assert_eq!(m.len(), 1);
        assert!(m.bytes() >= 6);
    }
}
