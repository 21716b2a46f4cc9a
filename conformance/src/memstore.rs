//! The in-memory reference store: the simplest correct [`Store`].

use cassio_core::{ApplyOutcome, Key, Store, StoreError, Versioned};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// An in-memory, non-durable [`Store`]: a sorted map behind a mutex.
/// `sync` and `flush` do nothing; everything is lost when it is dropped.
///
/// Tombstones are purged only by an explicit [`MemStore::compact`] (the
/// simulator calls it with virtual time): never on its own, and never by a
/// store made with [`MemStore::new`], whose grace period is unbounded.
#[derive(Debug)]
pub struct MemStore {
    map: Mutex<BTreeMap<Key, Versioned>>,
    /// Tombstone grace period in microseconds (`u64::MAX`: never purge).
    grace_micros: u64,
    /// The purge watermark (microseconds); only ever raised.
    watermark: AtomicU64,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore {
            map: Mutex::new(BTreeMap::new()),
            grace_micros: u64::MAX,
            watermark: AtomicU64::new(0),
        }
    }
}

impl MemStore {
    /// An empty store that never purges tombstones.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose [`MemStore::compact`] purges tombstones older
    /// than `grace` (and below the purge watermark).
    pub fn with_grace(grace: Duration) -> Self {
        MemStore {
            grace_micros: u64::try_from(grace.as_micros()).unwrap_or(u64::MAX),
            ..Self::default()
        }
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<Key, Versioned>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every mutation is a single insert, remove or assignment), so a
        // poisoned lock is usable.
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
    /// The purge watermark is left alone; see [`MemStore::forget_purge_watermark`].
    pub fn restore(&self, entries: Vec<(Key, Versioned)>) {
        *self.map() = entries.into_iter().collect();
    }

    /// The purge watermark as last raised by [`Store::set_purge_watermark`].
    pub fn purge_watermark(&self) -> u64 {
        self.watermark.load(Ordering::Acquire)
    }

    /// Sets the purge watermark back to zero, as a reopen does (the
    /// watermark is not persisted): for simulated restarts.
    pub fn forget_purge_watermark(&self) {
        self.watermark.store(0, Ordering::Release);
    }

    /// Purges every tombstone whose timestamp is older than the grace
    /// period at `now_micros` (`ts.micros + grace < now_micros`) and below
    /// the purge watermark; returns how many were purged. This is the only
    /// time a `MemStore` purges: the simulator calls it with virtual time,
    /// as a real store's compaction would run on its wall clock.
    pub fn compact(&self, now_micros: u64) -> usize {
        let watermark = self.purge_watermark();
        let grace = self.grace_micros;
        let mut map = self.map();
        let before = map.len();
        // An expiring value is purged like a tombstone stamped when it died.
        map.retain(|_, v| {
            !v.dead_since()
                .is_some_and(|dead| dead.saturating_add(grace) < now_micros && dead < watermark)
        });
        before - map.len()
    }
}

impl Store for MemStore {
    fn apply(&self, key: &[u8], version: &Versioned) -> Result<bool, StoreError> {
        self.apply_replacing(key, version).map(|o| o.kept())
    }

    fn apply_replacing(&self, key: &[u8], version: &Versioned) -> Result<ApplyOutcome, StoreError> {
        // Decided and replaced under one lock: `replaced` is exact even
        // under concurrent writers of the key.
        let mut map = self.map();
        match map.get(key) {
            Some(existing) if !version.supersedes(existing) => Ok(ApplyOutcome::Superseded),
            _ => {
                let replaced = map.insert(Key::copy_from_slice(key), version.clone());
                Ok(ApplyOutcome::Kept { replaced })
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

    fn set_purge_watermark(&self, micros: u64) {
        self.watermark.fetch_max(micros, Ordering::AcqRel);
    }
}
