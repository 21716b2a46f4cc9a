//! The simulated cluster on the native engine: the same guarantees the
//! checker enforces on `MemStore` hold with each node on a `NativeStore`
//! (small memtables, so flushes and compactions happen mid-run), and a
//! simulated crash is a power loss (`NativeStore::simulate_power_loss`:
//! whatever was not fsynced is gone) before the store is reopened from its
//! directory.

use cassio_core::{NodeId, Store};
use cassio_store_native::{NativeOptions, NativeStore, SyncPolicy};
use conformance::cluster::{nemesis, sweep_with, Fault, NodeStores, Scenario};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tempfile::TempDir;

/// Native stores in temporary directories, one per node, crashed and
/// reopened as the simulator asks. The simulator syncs them every
/// `sync_every` (a deterministic stand-in for `SyncPolicy::Periodic`,
/// whose background thread runs on real time).
struct NativeStores {
    sync: SyncPolicy,
    sync_every: Option<Duration>,
    dirs: Mutex<Vec<TempDir>>,
    open: Mutex<BTreeMap<NodeId, (PathBuf, Arc<NativeStore>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NativeStores {
    fn new(sync: SyncPolicy, sync_every: Option<Duration>) -> Self {
        NativeStores {
            sync,
            sync_every,
            dirs: Mutex::new(Vec::new()),
            open: Mutex::new(BTreeMap::new()),
        }
    }

    fn options(&self) -> NativeOptions {
        NativeOptions {
            sync: self.sync,
            memtable_bytes: 4 << 10,
            ..NativeOptions::default()
        }
    }

    fn open_at(&self, node: NodeId, path: PathBuf) -> Arc<dyn Store> {
        let store = Arc::new(NativeStore::open(&path, self.options()).expect("open native store"));
        lock(&self.open).insert(node, (path, Arc::clone(&store)));
        store
    }
}

impl NodeStores for NativeStores {
    fn open(&self, node: NodeId) -> Arc<dyn Store> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        lock(&self.dirs).push(dir);
        self.open_at(node, path)
    }

    fn crash(&self, node: NodeId, store: Arc<dyn Store>) -> Arc<dyn Store> {
        drop(store);
        let Some((path, mine)) = lock(&self.open).remove(&node) else {
            panic!("crash of a store that was never opened");
        };
        match Arc::try_unwrap(mine) {
            Ok(native) => {
                native.simulate_power_loss().expect("simulated power loss");
            }
            Err(_) => panic!("the simulator still holds the store it crashed"),
        }
        self.open_at(node, path)
    }

    fn wipe(&self, node: NodeId, store: Arc<dyn Store>, new_id: NodeId) -> Arc<dyn Store> {
        drop(store);
        if let Some((_, mine)) = lock(&self.open).remove(&node) {
            if let Ok(native) = Arc::try_unwrap(mine) {
                native.crash();
            }
        }
        self.open(new_id)
    }

    fn sync_interval(&self) -> Option<Duration> {
        self.sync_every
    }
}

fn args(test: &str) -> String {
    format!("-p cassio-store-native --test cluster {test}")
}

/// Fewer seeds than the MemStore sweeps: each seed opens five stores and
/// reopens one per crash.
const SEEDS: u64 = 20;

fn run(s: &Scenario, test: &str, stores: &NativeStores) {
    let stats = sweep_with(s, &args(test), stores, SEEDS);
    assert_eq!(
        stats.seeds,
        conformance::cluster::sweep_seeds(SEEDS).len() as u64
    );
    assert!(stats.ok > stats.seeds * 15, "{stats:?}");
}

#[test]
fn crash_restart_and_loss_on_native_stores() {
    let mut s = Scenario::new("native_crash_and_loss");
    s.net.loss = 0.05;
    s.faults = vec![
        (Duration::from_secs(1), Fault::Crash(2)),
        (Duration::from_secs(4), Fault::Restart(2)),
    ];
    run(
        &s,
        "crash_restart_and_loss_on_native_stores",
        &NativeStores::new(SyncPolicy::Always, None),
    );
}

#[test]
fn crash_each_in_turn_sync_always() {
    run(
        &nemesis::crash_each_in_turn("native_crash_each_in_turn_sync_always"),
        "crash_each_in_turn_sync_always",
        &NativeStores::new(SyncPolicy::Always, None),
    );
}

#[test]
fn crash_each_in_turn_sync_never() {
    // A crash loses every unsynced write; the restarted replica stays
    // `Syncing` (out of reads) until hints and anti-entropy restored them.
    run(
        &nemesis::crash_each_in_turn("native_crash_each_in_turn_sync_never"),
        "crash_each_in_turn_sync_never",
        &NativeStores::new(SyncPolicy::Never, None),
    );
}

#[test]
fn crash_each_in_turn_sync_periodic() {
    run(
        &nemesis::crash_each_in_turn("native_crash_each_in_turn_sync_periodic"),
        "crash_each_in_turn_sync_periodic",
        &NativeStores::new(SyncPolicy::Never, Some(Duration::from_millis(1000))),
    );
}
