//! The simulated cluster on the native engine: the same guarantees the
//! checker enforces on `MemStore` hold with each node on a `NativeStore`
//! (small memtables, so flushes and compactions happen mid-run).

use cassio_core::{NodeId, Store};
use cassio_store_native::{NativeOptions, NativeStore, SyncPolicy};
use conformance::cluster::{sweep_with, Fault, Scenario};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;

#[test]
fn crash_restart_and_loss_on_native_stores() {
    let mut s = Scenario::new("native_crash_and_loss");
    s.net.loss = 0.05;
    s.faults = vec![
        (Duration::from_secs(1), Fault::Crash(2)),
        (Duration::from_secs(4), Fault::Restart(2)),
    ];
    // The sweep opens one store per node per seed; the directories live
    // until the test ends.
    let dirs: Mutex<Vec<TempDir>> = Mutex::new(Vec::new());
    let factory = |_: NodeId| -> Arc<dyn Store> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NativeStore::open(
            dir.path(),
            NativeOptions {
                sync: SyncPolicy::Never,
                memtable_bytes: 4 << 10,
                ..NativeOptions::default()
            },
        )
        .expect("open native store");
        dirs.lock().expect("lock").push(dir);
        Arc::new(store)
    };
    // Fewer seeds than the MemStore sweep: each seed opens five stores.
    let stats = sweep_with(
        &s,
        "-p cassio-store-native --test cluster crash_restart_and_loss_on_native_stores",
        &factory,
        20,
    );
    assert_eq!(
        stats.seeds,
        conformance::cluster::sweep_seeds(20).len() as u64
    );
    assert!(stats.ok > stats.seeds * 20, "{stats:?}");
}
