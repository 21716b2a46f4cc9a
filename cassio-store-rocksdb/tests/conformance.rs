//! Both engines against the shared store conformance suite, every case.

use std::path::{Path, PathBuf};

/// Files in `dir` whose name ends in `suffix`, ordered by the number RocksDB
/// puts in front of it (its file numbers only grow, so this is age order).
fn numbered_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let n = name.strip_suffix(suffix)?.parse::<u64>().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

mod rocks {
    use super::*;
    use cassio_core::StoreError;
    use cassio_store_rocksdb::{RocksOptions, RocksStore, SyncPolicy};
    use conformance::store::{DurableStoreHarness, PurgingStoreHarness, StoreHarness};
    use std::time::Duration;

    struct H;

    impl StoreHarness for H {
        type Store = RocksStore;
        fn open(dir: &Path, grace: Duration) -> Result<RocksStore, StoreError> {
            RocksStore::open(
                dir,
                RocksOptions {
                    sync: SyncPolicy::Never,
                    tombstone_grace: grace,
                    // Small buffers keep the many fresh stores of the suite cheap.
                    block_cache_bytes: 1 << 20,
                    write_buffer_bytes: 1 << 20,
                    ..RocksOptions::default()
                },
            )
        }
    }

    impl DurableStoreHarness for H {
        fn log_files(dir: &Path) -> Vec<PathBuf> {
            numbered_files(dir, ".log")
        }
        fn table_files(dir: &Path) -> Vec<PathBuf> {
            numbered_files(dir, ".sst")
        }
        fn crash(store: RocksStore) {
            // Closing RocksDB with its WAL on neither flushes memtables nor
            // fsyncs the WAL, so what survives is what the WAL already held.
            drop(store);
        }
    }

    impl PurgingStoreHarness for H {
        fn compact(store: &RocksStore) -> Result<(), StoreError> {
            store.compact()
        }
    }

    conformance::store_tests!(H);
    conformance::durable_store_tests!(H);
    conformance::store_cases!(H; apply_replacing_is_exact_under_concurrent_writers);
}

#[cfg(feature = "sled")]
mod sled_store {
    use super::*;
    use cassio_core::StoreError;
    use cassio_store_rocksdb::{SledOptions, SledStore, SyncPolicy};
    use conformance::store::{DurableStoreHarness, PurgingStoreHarness, StoreHarness};
    use std::time::Duration;

    struct H;

    impl StoreHarness for H {
        type Store = SledStore;
        fn open(dir: &Path, grace: Duration) -> Result<SledStore, StoreError> {
            SledStore::open(
                dir,
                SledOptions {
                    sync: SyncPolicy::Never,
                    tombstone_grace: grace,
                    cache_bytes: 4 << 20,
                    ..SledOptions::default()
                },
            )
        }
    }

    impl DurableStoreHarness for H {
        fn log_files(dir: &Path) -> Vec<PathBuf> {
            // sled is log-structured: its single `db` file is the log.
            let db = dir.join("db");
            if db.exists() {
                vec![db]
            } else {
                Vec::new()
            }
        }
        fn table_files(dir: &Path) -> Vec<PathBuf> {
            // ...and also where its pages (the data) live.
            Self::log_files(dir)
        }
        fn crash(store: SledStore) {
            // sled flushes when dropped and cannot be stopped from doing so
            // (forgetting it would keep its file lock and flusher thread), so
            // this "crash" keeps more than a power loss would.
            drop(store);
        }
    }

    impl PurgingStoreHarness for H {
        fn compact(store: &SledStore) -> Result<(), StoreError> {
            store.compact()
        }
    }

    conformance::store_tests!(H);
    conformance::store_cases!(H; apply_replacing_is_exact_under_concurrent_writers);
    // Every durable case but one; keep this list in step with
    // `conformance::durable_store_tests!`.
    conformance::store_cases!(
        H;
        reopen_after_sync_keeps_everything,
        reopen_after_flush_keeps_everything,
        reopen_repeatedly_accumulates,
        crash_after_sync_keeps_synced_writes,
        crash_with_truncated_log_tail,
        crash_with_corrupted_log_tail,
        crash_with_garbage_after_log_tail,
        writes_after_crash_recovery_survive_another_crash,
        tombstones_purged_only_after_grace,
        purge_watermark_is_not_persisted,
        tombstones_kept_until_the_watermark_passes_them,
        purge_watermark_only_rises,
    );
    conformance::known_failure_store_case!(
        H,
        corrupted_table_block_is_detected,
        "sled 0.34 may treat a damaged spot in its log as the end of the log and open without error, silently missing later entries (fails about 1 run in 5); see cassio-store-rocksdb/README.md"
    );
}
