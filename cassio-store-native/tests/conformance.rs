//! The native store passes the shared store suite, general and durable.
//!
//! The harness uses a small memtable so that the cases exercise flushes,
//! several tables and background compaction, not just the memtable.

use cassio_core::StoreError;
use cassio_store_native::{NativeOptions, NativeStore, SyncPolicy};
use conformance::store::{DurableStoreHarness, PurgingStoreHarness, StoreHarness};
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Native;

impl StoreHarness for Native {
    type Store = NativeStore;
    fn open(dir: &Path, grace: Duration) -> Result<NativeStore, StoreError> {
        NativeStore::open(
            dir,
            NativeOptions {
                sync: SyncPolicy::Never,
                memtable_bytes: 1 << 20,
                tombstone_grace: grace,
                ..NativeOptions::default()
            },
        )
    }
}

impl DurableStoreHarness for Native {
    fn log_files(dir: &Path) -> Vec<PathBuf> {
        NativeStore::log_files(dir)
    }
    fn table_files(dir: &Path) -> Vec<PathBuf> {
        NativeStore::table_files(dir)
    }
    fn crash(store: NativeStore) {
        store.crash();
    }
}

impl PurgingStoreHarness for Native {
    fn compact(store: &NativeStore) -> Result<(), StoreError> {
        store.compact()
    }
}

conformance::store_tests!(Native);
conformance::durable_store_tests!(Native);
conformance::store_cases!(Native; apply_replacing_is_exact_under_concurrent_writers);

/// The same suite with group-committed `Always` syncing and a periodic
/// syncer, which take different paths through the commit log.
mod always {
    use super::*;

    struct NativeAlways;

    impl StoreHarness for NativeAlways {
        type Store = NativeStore;
        fn open(dir: &Path, grace: Duration) -> Result<NativeStore, StoreError> {
            NativeStore::open(
                dir,
                NativeOptions {
                    sync: SyncPolicy::Always,
                    memtable_bytes: 4 << 20,
                    tombstone_grace: grace,
                    ..NativeOptions::default()
                },
            )
        }
    }

    impl DurableStoreHarness for NativeAlways {
        fn log_files(dir: &Path) -> Vec<PathBuf> {
            NativeStore::log_files(dir)
        }
        fn table_files(dir: &Path) -> Vec<PathBuf> {
            NativeStore::table_files(dir)
        }
        fn crash(store: NativeStore) {
            store.crash();
        }
    }

    impl PurgingStoreHarness for NativeAlways {
        fn compact(store: &NativeStore) -> Result<(), StoreError> {
            store.compact()
        }
    }

    conformance::durable_store_tests!(NativeAlways);
}
