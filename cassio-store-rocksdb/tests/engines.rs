//! Engine-specific behaviour the shared suite does not reach: concurrent
//! last-write-wins, the on-disk record checks, size limits and each engine's
//! tombstone purge.

use cassio_core::{NodeId, Store, StoreError, Timestamp, Versioned};
use cassio_store_rocksdb::{RocksOptions, RocksStore, SyncPolicy};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

fn ts(micros: u64, node: u64) -> Timestamp {
    Timestamp::new(micros, 0, NodeId(node))
}

/// Many threads write the same few keys with distinct timestamps in shuffled
/// orders; whatever the interleaving, each key must end at its maximum and
/// exactly the writes that beat everything before them report `true`.
fn concurrent_writers_keep_the_newest(store: Arc<dyn Store>) {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 300;
    const KEYS: u64 = 5;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut kept = 0u32;
                for i in 0..PER_THREAD {
                    // Interleave so threads race on the same key with
                    // timestamps that arrive out of order.
                    let micros = 1_000 + ((i * 7919 + t * 104_729) % (PER_THREAD * THREADS));
                    let key = format!("k{}", i % KEYS);
                    let v = Versioned::value(ts(micros, t), format!("t{t}-i{i}"));
                    kept += u32::from(store.apply(key.as_bytes(), &v).expect("apply"));
                }
                kept
            })
        })
        .collect();
    let kept: u32 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    assert!(
        kept >= KEYS as u32,
        "at least the first write per key is kept"
    );

    // The winner per key is the max under lww_cmp of everything written to it.
    for k in 0..KEYS {
        let key = format!("k{k}");
        let mut best: Option<Versioned> = None;
        for t in 0..THREADS {
            for i in (0..PER_THREAD).filter(|i| i % KEYS == k) {
                let micros = 1_000 + ((i * 7919 + t * 104_729) % (PER_THREAD * THREADS));
                let v = Versioned::value(ts(micros, t), format!("t{t}-i{i}"));
                if best.as_ref().is_none_or(|b| v.supersedes(b)) {
                    best = Some(v);
                }
            }
        }
        assert_eq!(store.get(key.as_bytes()).expect("get"), best, "key {key}");
    }
}

fn limits_are_typed_errors(store: &dyn Store, max_key: usize, max_value: usize) {
    let big_key = vec![1u8; max_key + 1];
    let err = store
        .apply(&big_key, &Versioned::value(ts(1, 1), "v"))
        .expect_err("oversize key");
    assert!(
        matches!(err, StoreError::TooLarge { what: "key", .. }),
        "{err:?}"
    );
    let big_value = vec![1u8; max_value + 1];
    let err = store
        .apply(b"k", &Versioned::value(ts(1, 1), big_value))
        .expect_err("oversize value");
    assert!(
        matches!(err, StoreError::TooLarge { what: "value", .. }),
        "{err:?}"
    );
    assert_eq!(store.get(b"k").expect("get"), None, "nothing half-written");
    // Exactly at the limit is accepted.
    assert!(store
        .apply(
            &vec![2u8; max_key],
            &Versioned::value(ts(1, 1), vec![3u8; max_value])
        )
        .expect("at limit"));
}

/// Writes an old tombstone, a fresh tombstone and a value; a purge before
/// the purge watermark is set drops nothing, and once it is past them only
/// the old tombstone is gone.
fn purge_drops_only_expired_tombstones(store: &dyn Store, compact: &dyn Fn()) {
    let now = now_micros();
    let old = now - 3_600_000_000;
    store
        .apply(b"old", &Versioned::value(ts(old - 10, 1), "x"))
        .expect("apply");
    store
        .apply(b"old", &Versioned::tombstone(ts(old, 1)))
        .expect("apply");
    store
        .apply(b"fresh", &Versioned::tombstone(ts(now, 1)))
        .expect("apply");
    store
        .apply(b"live", &Versioned::value(ts(old, 1), "v"))
        .expect("apply");
    store.flush().expect("flush");
    compact();
    assert_eq!(
        store.get(b"old").expect("get"),
        Some(Versioned::tombstone(ts(old, 1))),
        "kept while the purge watermark is unset"
    );
    store.set_purge_watermark(u64::MAX);
    compact();
    assert_eq!(
        store.get(b"old").expect("get"),
        None,
        "expired tombstone purged, value not resurrected"
    );
    assert_eq!(
        store.get(b"fresh").expect("get"),
        Some(Versioned::tombstone(ts(now, 1)))
    );
    assert_eq!(
        store.get(b"live").expect("get"),
        Some(Versioned::value(ts(old, 1), "v"))
    );
    let all = store
        .range(Bound::Unbounded, Bound::Unbounded, 10)
        .expect("range");
    let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(keys, vec![b"fresh".as_ref(), b"live".as_ref()]);
}

fn rocks_opts() -> RocksOptions {
    RocksOptions {
        sync: SyncPolicy::Never,
        block_cache_bytes: 1 << 20,
        write_buffer_bytes: 1 << 20,
        ..RocksOptions::default()
    }
}

#[test]
fn rocks_concurrent_writers_keep_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RocksStore::open(dir.path(), rocks_opts()).expect("open");
    concurrent_writers_keep_the_newest(Arc::new(store));
}

#[test]
fn rocks_limits_are_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = RocksOptions {
        max_key_bytes: 100,
        max_value_bytes: 1000,
        ..rocks_opts()
    };
    let store = RocksStore::open(dir.path(), opts).expect("open");
    limits_are_typed_errors(&store, 100, 1000);
}

#[test]
fn rocks_compaction_filter_purges_expired_tombstones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = RocksOptions {
        tombstone_grace: Duration::from_secs(60),
        ..rocks_opts()
    };
    let store = RocksStore::open(dir.path(), opts).expect("open");
    purge_drops_only_expired_tombstones(&store, &|| store.compact().expect("compact"));
}

#[test]
fn rocks_undecodable_record_is_corruption_not_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = RocksStore::open(dir.path(), rocks_opts()).expect("open");
        store
            .apply(b"a", &Versioned::value(ts(5, 1), "fine"))
            .expect("apply");
        store
            .apply(b"c", &Versioned::value(ts(5, 1), "fine"))
            .expect("apply");
    }
    {
        // Another writer (or a bug) leaves bytes that are no Cassio record.
        let db = rocksdb::DB::open_default(dir.path()).expect("raw open");
        db.put(b"b", b"\x01garbage").expect("raw put");
    }
    let store = RocksStore::open(dir.path(), rocks_opts()).expect("reopen");
    assert!(matches!(
        store.get(b"b"),
        Err(StoreError::Corruption { .. })
    ));
    assert!(matches!(
        store.range(Bound::Unbounded, Bound::Unbounded, 10),
        Err(StoreError::Corruption { .. })
    ));
    assert!(matches!(
        store.apply(b"b", &Versioned::value(ts(9, 1), "new")),
        Err(StoreError::Corruption { .. })
    ));
    assert_eq!(
        store.get(b"a").expect("intact key still readable"),
        Some(Versioned::value(ts(5, 1), "fine"))
    );
}

#[test]
fn rocks_every_sync_policy_persists_across_reopen() {
    for sync in [
        SyncPolicy::Always,
        SyncPolicy::Periodic(Duration::from_millis(5)),
        SyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = RocksStore::open(
                dir.path(),
                RocksOptions {
                    sync,
                    ..rocks_opts()
                },
            )
            .expect("open");
            store
                .apply(b"k", &Versioned::value(ts(1, 1), "v"))
                .expect("apply");
            store.sync().expect("sync");
        }
        let store = RocksStore::open(dir.path(), rocks_opts()).expect("reopen");
        assert_eq!(
            store.get(b"k").expect("get"),
            Some(Versioned::value(ts(1, 1), "v")),
            "{sync:?}"
        );
    }
}

#[cfg(feature = "sled")]
mod sled_engine {
    use super::*;
    use cassio_store_rocksdb::{SledOptions, SledStore};

    fn sled_opts() -> SledOptions {
        SledOptions {
            sync: SyncPolicy::Never,
            cache_bytes: 4 << 20,
            ..SledOptions::default()
        }
    }

    #[test]
    fn sled_concurrent_writers_keep_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), sled_opts()).expect("open");
        concurrent_writers_keep_the_newest(Arc::new(store));
    }

    #[test]
    fn sled_limits_are_typed_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = SledOptions {
            max_key_bytes: 100,
            max_value_bytes: 1000,
            ..sled_opts()
        };
        let store = SledStore::open(dir.path(), opts).expect("open");
        limits_are_typed_errors(&store, 100, 1000);
    }

    #[test]
    fn sled_compact_purges_expired_tombstones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = SledOptions {
            tombstone_grace: Duration::from_secs(60),
            ..sled_opts()
        };
        let store = SledStore::open(dir.path(), opts).expect("open");
        purge_drops_only_expired_tombstones(&store, &|| store.compact().expect("compact"));
    }

    #[test]
    fn sled_undecodable_record_is_corruption_not_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path(), sled_opts()).expect("open");
            store
                .apply(b"a", &Versioned::value(ts(5, 1), "fine"))
                .expect("apply");
        }
        {
            let db = sled::open(dir.path()).expect("raw open");
            db.insert(b"b", b"\x01garbage".as_ref()).expect("raw put");
            db.flush().expect("raw flush");
        }
        let store = SledStore::open(dir.path(), sled_opts()).expect("reopen");
        assert!(matches!(
            store.get(b"b"),
            Err(StoreError::Corruption { .. })
        ));
        assert!(matches!(
            store.range(Bound::Unbounded, Bound::Unbounded, 10),
            Err(StoreError::Corruption { .. })
        ));
        assert_eq!(
            store.get(b"a").expect("get"),
            Some(Versioned::value(ts(5, 1), "fine"))
        );
    }

    #[test]
    fn sled_every_sync_policy_persists_across_reopen() {
        for sync in [
            SyncPolicy::Always,
            SyncPolicy::Periodic(Duration::from_millis(5)),
            SyncPolicy::Never,
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            {
                let store = SledStore::open(
                    dir.path(),
                    SledOptions {
                        sync,
                        ..sled_opts()
                    },
                )
                .expect("open");
                store
                    .apply(b"k", &Versioned::value(ts(1, 1), "v"))
                    .expect("apply");
                store.sync().expect("sync");
            }
            let store = SledStore::open(dir.path(), sled_opts()).expect("reopen");
            assert_eq!(
                store.get(b"k").expect("get"),
                Some(Versioned::value(ts(1, 1), "v")),
                "{sync:?}"
            );
        }
    }
}
