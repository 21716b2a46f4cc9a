//! The in-memory reference store: the simplest correct [`Store`].

use cassio_core::{Key, Store, StoreError, Versioned};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

/// An in-memory, non-durable [`Store`]: a sorted map behind a mutex.
/// `sync` and `flush` do nothing; everything is lost when it is dropped.
#[derive(Debug, Default)]
pub struct MemStore {
    map: Mutex<BTreeMap<Key, Versioned>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<Key, Versioned>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every mutation is a single insert), so a poisoned lock is usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every entry, in key order (for the simulator's convergence check).
    pub fn snapshot(&self) -> Vec<(Key, Versioned)> {
        self.map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Replaces the contents with `entries` (for simulated crash recovery).
    pub fn restore(&self, entries: Vec<(Key, Versioned)>) {
        *self.map() = entries.into_iter().collect();
    }
}

impl Store for MemStore {
    fn apply(&self, key: &[u8], version: &Versioned) -> Result<bool, StoreError> {
        let mut map = self.map();
        match map.get(key) {
            Some(existing) if !version.supersedes(existing) => Ok(false),
            _ => {
                map.insert(Key::copy_from_slice(key), version.clone());
                Ok(true)
            }
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        Ok(self.map().get(key).cloned())
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Key, Versioned)>, StoreError> {
        if cassio_core::store::range_is_empty(start, end) {
            return Ok(Vec::new());
        }
        let map = self.map();
        Ok(map
            .range::<[u8], _>((start, end))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn approximate_size(&self) -> u64 {
        self.map()
            .iter()
            .map(|(k, v)| (k.len() + v.value.as_ref().map_or(0, |b| b.len()) + 24) as u64)
            .sum()
    }
}
