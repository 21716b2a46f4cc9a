//! Stores as the simulator sees them: who opens a node's store, what
//! survives a crash or a wipe, and the storage faults the nemesis injects.
//!
//! - [`NodeStores`]: opens each node's store and says what a crash or a
//!   wiped data directory leaves of it. Any `Fn(NodeId) -> Arc<dyn Store>`
//!   is one whose stores keep everything across crashes.
//! - [`SimStores`] / [`SimStore`]: a store model with synced and unsynced
//!   state and a sync policy; a crash drops what was not synced.
//! - [`FaultyStore`]: the wrapper through which the simulator runs every
//!   storage operation, to inject errors and to break the store on purpose.

use cassio_core::{ApplyOutcome, Key, KeyDigest, NodeId, Store, StoreError, Versioned};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Opens the stores of simulated nodes and models what survives faults.
pub trait NodeStores {
    /// A store for `node`'s first start (or after its directory was wiped).
    fn open(&self, node: NodeId) -> Arc<dyn Store>;

    /// `node`'s process crashed while using `store`: the store as the node
    /// finds it when it restarts. By default everything survives.
    fn crash(&self, node: NodeId, store: Arc<dyn Store>) -> Arc<dyn Store> {
        let _ = node;
        store
    }

    /// `node`'s data directory was wiped: an empty store for the node that
    /// restarts there as `new_id` (the same id, or a replacement's).
    fn wipe(&self, node: NodeId, store: Arc<dyn Store>, new_id: NodeId) -> Arc<dyn Store> {
        let _ = node;
        drop(store);
        self.open(new_id)
    }

    /// How often the host syncs each store, if it does so on a timer (the
    /// simulator then calls [`Store::sync`] on every running node's store).
    fn sync_interval(&self) -> Option<Duration> {
        None
    }

    /// Runs `node`'s tombstone compaction at virtual time `now_micros`, for
    /// stores whose purging the host drives (see [`SimStore::compact`]).
    /// By default the stores purge on their own, or never: nothing to do.
    fn compact(&self, node: NodeId, now_micros: u64) {
        let _ = (node, now_micros);
    }
}

impl<F: Fn(NodeId) -> Arc<dyn Store>> NodeStores for F {
    fn open(&self, node: NodeId) -> Arc<dyn Store> {
        self(node)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation under these locks is a single insert or assignment, so
    // a poisoned lock still holds consistent state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// When a [`SimStore`] makes its writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimSync {
    /// Every apply is durable before it returns (`sync = always`).
    Always,
    /// The host syncs every so often (`sync = periodic`): a crash loses the
    /// writes of the last period.
    Periodic(Duration),
    /// Only an explicit [`Store::sync`] makes writes durable: a crash loses
    /// everything since the last one.
    Never,
}

/// A store model: what the node sees (`current`) and what a crash leaves
/// (`durable`, as of the last sync).
#[derive(Debug)]
pub struct SimStore {
    current: crate::MemStore,
    durable: crate::MemStore,
    policy: SimSync,
}

impl SimStore {
    /// An empty store with `policy` that never purges tombstones.
    pub fn new(policy: SimSync) -> Self {
        SimStore {
            current: crate::MemStore::new(),
            durable: crate::MemStore::new(),
            policy,
        }
    }

    /// An empty store with `policy` whose [`SimStore::compact`] purges
    /// tombstones older than `grace` and below the purge watermark.
    pub fn with_grace(policy: SimSync, grace: Duration) -> Self {
        SimStore {
            current: crate::MemStore::with_grace(grace),
            durable: crate::MemStore::with_grace(grace),
            policy,
        }
    }

    /// The process crashed: unsynced writes are gone, and so is the purge
    /// watermark (it is not persisted; the restarted node sets it again).
    pub fn crash(&self) {
        self.current.restore(self.durable.snapshot());
        self.forget_purge_watermark();
    }

    /// A broken disk: the crash loses synced writes too (everything).
    pub fn lose_everything(&self) {
        self.current.restore(Vec::new());
        self.durable.restore(Vec::new());
        self.forget_purge_watermark();
    }

    fn forget_purge_watermark(&self) {
        self.current.forget_purge_watermark();
        self.durable.forget_purge_watermark();
    }

    /// Compaction at virtual time `now_micros`: purges expired tombstones
    /// below the watermark from what the node sees and from what a crash
    /// leaves alike (a real store's compaction rewrites its files, so a
    /// purge survives a crash); returns how many the node's view lost.
    /// The only time a `SimStore` purges.
    pub fn compact(&self, now_micros: u64) -> usize {
        self.durable.compact(now_micros);
        self.current.compact(now_micros)
    }
}

impl Store for SimStore {
    fn apply(&self, key: &[u8], version: &Versioned) -> Result<bool, StoreError> {
        let kept = self.current.apply(key, version)?;
        if self.policy == SimSync::Always {
            self.durable.apply(key, version)?;
        }
        Ok(kept)
    }

    fn apply_replacing(&self, key: &[u8], version: &Versioned) -> Result<ApplyOutcome, StoreError> {
        let outcome = self.current.apply_replacing(key, version)?;
        if self.policy == SimSync::Always {
            self.durable.apply(key, version)?;
        }
        Ok(outcome)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        self.current.get(key)
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Key, Versioned)>, StoreError> {
        self.current.range(start, end, limit)
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.durable.restore(self.current.snapshot());
        Ok(())
    }

    fn approximate_size(&self) -> u64 {
        self.current.approximate_size()
    }

    fn digests(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyDigest>, StoreError> {
        self.current.digests(start, end, limit)
    }

    fn set_purge_watermark(&self, micros: u64) {
        self.current.set_purge_watermark(micros);
        self.durable.set_purge_watermark(micros);
    }
}

/// Opens [`SimStore`]s with one sync policy and crashes them faithfully
/// (or, for the mutation tests, unfaithfully).
#[derive(Debug)]
pub struct SimStores {
    policy: SimSync,
    /// The stores' tombstone grace (`None`: they never purge).
    grace: Option<Duration>,
    lose_synced_on_crash: bool,
    stores: Mutex<BTreeMap<NodeId, Arc<SimStore>>>,
}

impl SimStores {
    /// Stores that sync per `policy`, keep synced writes across crashes and
    /// never purge tombstones.
    pub fn new(policy: SimSync) -> Self {
        SimStores {
            policy,
            grace: None,
            lose_synced_on_crash: false,
            stores: Mutex::new(BTreeMap::new()),
        }
    }

    /// Like [`SimStores::new`], with stores that purge tombstones older than
    /// `grace` and below their watermark when the host calls
    /// [`NodeStores::compact`].
    pub fn with_grace(policy: SimSync, grace: Duration) -> Self {
        SimStores {
            grace: Some(grace),
            ..SimStores::new(policy)
        }
    }

    /// Broken on purpose: a crash loses synced writes too.
    pub fn losing_synced_writes(policy: SimSync) -> Self {
        SimStores {
            lose_synced_on_crash: true,
            ..SimStores::new(policy)
        }
    }
}

impl NodeStores for SimStores {
    fn open(&self, node: NodeId) -> Arc<dyn Store> {
        let s = Arc::new(match self.grace {
            Some(grace) => SimStore::with_grace(self.policy, grace),
            None => SimStore::new(self.policy),
        });
        lock(&self.stores).insert(node, Arc::clone(&s));
        s
    }

    fn crash(&self, node: NodeId, store: Arc<dyn Store>) -> Arc<dyn Store> {
        if let Some(s) = lock(&self.stores).get(&node) {
            if self.lose_synced_on_crash {
                s.lose_everything();
            } else {
                s.crash();
            }
        }
        store
    }

    fn sync_interval(&self) -> Option<Duration> {
        match self.policy {
            SimSync::Periodic(d) => Some(d),
            SimSync::Always | SimSync::Never => None,
        }
    }

    fn compact(&self, node: NodeId, now_micros: u64) {
        let store = lock(&self.stores).get(&node).cloned();
        if let Some(s) = store {
            s.compact(now_micros);
        }
    }
}

#[derive(Debug)]
struct FaultState {
    rng: ChaCha8Rng,
    error_rate: f64,
    drop_every: Option<u32>,
    applies: u32,
}

/// Wraps a node's store to inject faults: a fraction of operations fail
/// with an I/O error (before touching the store), and, to break the store
/// on purpose, every n-th apply is acknowledged without being applied.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    state: Mutex<FaultState>,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("state", &*lock(&self.state))
            .finish_non_exhaustive()
    }
}

impl FaultyStore {
    /// `inner` without faults; `seed` drives which operations fail.
    pub fn new(inner: Arc<dyn Store>, seed: u64) -> Self {
        FaultyStore {
            inner,
            state: Mutex::new(FaultState {
                rng: ChaCha8Rng::seed_from_u64(seed),
                error_rate: 0.0,
                drop_every: None,
                applies: 0,
            }),
        }
    }

    /// Fail this fraction of applies and gets from now on.
    pub fn set_error_rate(&self, rate: f64) {
        lock(&self.state).error_rate = rate.clamp(0.0, 1.0);
    }

    /// Acknowledge every `n`-th apply without applying it (`None`: never).
    pub fn set_drop_every(&self, n: Option<u32>) {
        lock(&self.state).drop_every = n.filter(|&n| n > 0);
    }

    /// The wrapped store.
    pub fn into_inner(self) -> Arc<dyn Store> {
        self.inner
    }

    /// Counts an apply; true when this one is to be acknowledged without
    /// being applied (the store broken on purpose).
    fn drop_this_apply(&self) -> bool {
        let mut s = lock(&self.state);
        s.applies = s.applies.wrapping_add(1);
        s.drop_every.is_some_and(|n| s.applies % n == 0)
    }

    fn injected_error(&self) -> Result<(), StoreError> {
        let mut s = lock(&self.state);
        let rate = s.error_rate;
        if rate > 0.0 && s.rng.random_bool(rate) {
            return Err(StoreError::Io(std::io::Error::other(
                "injected storage fault",
            )));
        }
        Ok(())
    }
}

impl Store for FaultyStore {
    fn apply(&self, key: &[u8], version: &Versioned) -> Result<bool, StoreError> {
        self.injected_error()?;
        if self.drop_this_apply() {
            return Ok(true);
        }
        self.inner.apply(key, version)
    }

    fn apply_replacing(&self, key: &[u8], version: &Versioned) -> Result<ApplyOutcome, StoreError> {
        self.injected_error()?;
        if self.drop_this_apply() {
            // Lies like `apply` does: "kept", replacing what is stored.
            return Ok(ApplyOutcome::Kept {
                replaced: self.inner.get(key)?,
            });
        }
        self.inner.apply_replacing(key, version)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        self.injected_error()?;
        self.inner.get(key)
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Key, Versioned)>, StoreError> {
        self.inner.range(start, end, limit)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }

    fn approximate_size(&self) -> u64 {
        self.inner.approximate_size()
    }

    fn digests(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyDigest>, StoreError> {
        // Like `range`: scans are not where faults are injected.
        self.inner.digests(start, end, limit)
    }

    fn set_purge_watermark(&self, micros: u64) {
        self.inner.set_purge_watermark(micros)
    }
}
