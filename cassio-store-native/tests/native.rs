//! Behaviour specific to the native engine: bloom filters measured through
//! the store, recovery reports, orphan cleanup, limits, and bounded
//! amplification under an overwrite-heavy load.

use bytes::Bytes;
use cassio_core::{NodeId, Store, StoreError, Timestamp, Versioned};
use cassio_store_native::{NativeOptions, NativeStore, SyncPolicy, MAX_KEY_LEN, MAX_VALUE_LEN};
use std::time::{Duration, Instant};

fn v(micros: u64, len: usize) -> Versioned {
    Versioned::value(
        Timestamp::new(micros, 0, NodeId(1)),
        Bytes::from(vec![b'v'; len]),
    )
}

fn opts(memtable: usize) -> NativeOptions {
    NativeOptions {
        sync: SyncPolicy::Never,
        memtable_bytes: memtable,
        ..NativeOptions::default()
    }
}

#[test]
fn bloom_filters_skip_tables_for_missing_keys_at_about_one_percent() {
    let dir = tempfile::tempdir().unwrap();
    let s = NativeStore::open(
        dir.path(),
        NativeOptions {
            background_compaction: false,
            ..opts(64 << 20)
        },
    )
    .unwrap();
    for i in 0..50_000u64 {
        s.apply(format!("present-{i}").as_bytes(), &v(1, 16))
            .unwrap();
    }
    s.flush().unwrap();
    let before = s.stats();
    assert_eq!(before.tables, 1);
    let probes = 100_000u64;
    for i in 0..probes {
        assert_eq!(s.get(format!("missing-{i}").as_bytes()).unwrap(), None);
    }
    let after = s.stats();
    let fp = after.bloom_false_positives - before.bloom_false_positives;
    let neg = after.bloom_negatives - before.bloom_negatives;
    assert_eq!(
        fp + neg,
        probes,
        "every missing-key lookup consulted the one table's filter"
    );
    let rate = fp as f64 / probes as f64;
    eprintln!("measured bloom false-positive rate: {rate:.4} ({fp} of {probes})");
    assert!(
        rate < 0.02,
        "false-positive rate {rate} far above the configured 1%"
    );
    assert_eq!(
        after.block_reads - before.block_reads,
        fp,
        "only false positives read a block"
    );
    for i in (0..50_000u64).step_by(101) {
        assert!(s.get(format!("present-{i}").as_bytes()).unwrap().is_some());
    }
    assert!(s.stats().bloom_true_positives >= 495);
}

#[test]
fn a_torn_log_tail_is_reported_and_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = NativeStore::open(dir.path(), opts(64 << 20)).unwrap();
    for i in 0..100u64 {
        s.apply(format!("a{i}").as_bytes(), &v(1, 100)).unwrap();
    }
    s.sync().unwrap();
    let log = NativeStore::log_files(dir.path()).pop().unwrap();
    let synced = std::fs::metadata(&log).unwrap().len();
    for i in 0..20u64 {
        s.apply(format!("b{i}").as_bytes(), &v(1, 20_000)).unwrap();
    }
    s.crash();
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(len > synced + 100_000, "unsynced records reached the file");
    let cut = synced + (len - synced) / 2 + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let s = NativeStore::open(dir.path(), opts(64 << 20)).unwrap();
    let report = s.recovery_report().clone();
    let damage = report.damage.expect("the torn tail is reported");
    assert_eq!(damage.segment, log);
    assert!(damage.offset >= synced && damage.offset < cut, "{damage:?}");
    assert!(report.records_replayed >= 100);
    for i in 0..100u64 {
        assert_eq!(s.get(format!("a{i}").as_bytes()).unwrap(), Some(v(1, 100)));
    }
    let recovered_b = (0..20u64)
        .filter(|i| s.get(format!("b{i}").as_bytes()).unwrap().is_some())
        .count();
    assert!(recovered_b < 20, "records past the tear are not served");
    // The tear was cut off: a second open finds a clean log.
    drop(s);
    let s = NativeStore::open(dir.path(), opts(64 << 20)).unwrap();
    assert_eq!(s.recovery_report().damage, None);
}

#[test]
fn orphan_tables_from_an_interrupted_flush_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = NativeStore::open(dir.path(), opts(1 << 20)).unwrap();
    s.apply(b"k", &v(1, 10)).unwrap();
    s.flush().unwrap();
    drop(s);
    std::fs::write(
        dir.path().join("00000000000000099999.sst"),
        b"half-written table",
    )
    .unwrap();
    let s = NativeStore::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!(s.recovery_report().orphan_tables_removed, 1);
    assert!(!dir.path().join("00000000000000099999.sst").exists());
    assert_eq!(s.get(b"k").unwrap(), Some(v(1, 10)));
}

#[test]
fn oversize_keys_and_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = NativeStore::open(dir.path(), opts(1 << 20)).unwrap();
    let long_key = vec![0u8; MAX_KEY_LEN + 1];
    assert!(matches!(
        s.apply(&long_key, &v(1, 1)),
        Err(StoreError::TooLarge { what: "key", .. })
    ));
    assert!(matches!(
        s.apply(b"k", &v(1, MAX_VALUE_LEN + 1)),
        Err(StoreError::TooLarge { what: "value", .. })
    ));
    assert_eq!(s.get(b"k").unwrap(), None);
    assert!(s.apply(&vec![1u8; MAX_KEY_LEN], &v(1, 1)).unwrap());
}

#[test]
fn a_corrupt_manifest_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = NativeStore::open(dir.path(), opts(1 << 20)).unwrap();
    s.apply(b"k", &v(1, 10)).unwrap();
    s.flush().unwrap();
    drop(s);
    let m = dir.path().join("MANIFEST");
    let mut b = std::fs::read(&m).unwrap();
    b[14] ^= 0x01;
    std::fs::write(&m, &b).unwrap();
    assert!(matches!(
        NativeStore::open(dir.path(), opts(1 << 20)),
        Err(StoreError::Corruption { .. })
    ));
}

/// Overwrites a fixed key set many times; compaction in the background must
/// keep the table count (read amplification) and the bytes on disk (space
/// amplification) bounded, and memtables queued for flushing bounded.
#[test]
fn overwrite_heavy_load_keeps_amplification_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let o = NativeOptions {
        max_tables: 8,
        ..opts(256 * 1024)
    };
    let s = NativeStore::open(dir.path(), o).unwrap();
    const KEYS: u64 = 5_000;
    const ROUNDS: u64 = 30;
    let mut max_immutables = 0;
    for round in 0..ROUNDS {
        for k in 0..KEYS {
            s.apply(format!("key-{k:06}").as_bytes(), &v(round + 1, 100))
                .unwrap();
        }
        max_immutables = max_immutables.max(s.stats().immutable_memtables);
    }
    s.flush().unwrap();
    // Let background compaction settle (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.stats().tables > 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = s.stats();
    let live_entries = KEYS;
    let space_amp = st.table_entries as f64 / live_entries as f64;
    eprintln!(
        "after {} overwrites of {KEYS} keys: {} tables, {} entries on disk (space amp {space_amp:.2}), \
         {} bytes, {} flushes, {} compactions, {} table bytes written",
        KEYS * ROUNDS,
        st.tables,
        st.table_entries,
        st.table_bytes,
        st.flushes,
        st.compactions,
        st.table_bytes_written
    );
    assert!(
        st.tables <= 8,
        "read amplification unbounded: {} tables",
        st.tables
    );
    assert!(st.compactions > 0);
    assert!(space_amp <= 8.0, "space amplification {space_amp}");
    assert!(max_immutables <= 2, "flush queue grew to {max_immutables}");
    let before = s.stats().block_reads;
    for k in (0..KEYS).step_by(10) {
        assert_eq!(
            s.get(format!("key-{k:06}").as_bytes()).unwrap(),
            Some(v(ROUNDS, 100))
        );
    }
    let reads_per_get = (s.stats().block_reads - before) as f64 / (KEYS / 10) as f64;
    eprintln!("data blocks read per get of a present key: {reads_per_get:.2}");
    assert!(reads_per_get < 2.0, "reads per get {reads_per_get}");
}

/// The event-loop entry points answer from memory only: a memtable hit or
/// a key every table's filter rules out is answered; a key that would need
/// a block read is not, and an apply that is not done writes nothing.
#[test]
fn cached_reads_and_applies_answer_only_from_memory() {
    use cassio_core::ApplyOutcome;
    let dir = tempfile::tempdir().unwrap();
    let s = NativeStore::open(
        dir.path(),
        NativeOptions {
            background_compaction: false,
            ..opts(64 << 20)
        },
    )
    .unwrap();
    // In the memtable: both answer.
    let first = s.apply_replacing_if_cached(b"hot", &v(10, 8));
    assert!(
        matches!(first, Some(Ok(ApplyOutcome::Kept { replaced: None }))),
        "{first:?}"
    );
    assert_eq!(s.get_if_cached(b"hot").unwrap().unwrap(), Some(v(10, 8)));
    let older = s.apply_replacing_if_cached(b"hot", &v(5, 8));
    assert!(
        matches!(older, Some(Ok(ApplyOutcome::Superseded))),
        "{older:?}"
    );
    let newer = s.apply_replacing_if_cached(b"hot", &v(20, 8));
    assert!(
        matches!(&newer, Some(Ok(ApplyOutcome::Kept { replaced: Some(r) })) if *r == v(10, 8)),
        "{newer:?}"
    );
    assert_eq!(s.get_if_cached(b"nothing-anywhere").unwrap().unwrap(), None);

    // Flushed to a table: that key needs a block read, so neither answers,
    // and the refused apply left the stored version alone.
    for i in 0..1_000u64 {
        s.apply(format!("cold-{i}").as_bytes(), &v(1, 16)).unwrap();
    }
    s.flush().unwrap();
    assert_eq!(s.stats().tables, 1);
    assert!(s.get_if_cached(b"cold-7").is_none());
    assert!(s.apply_replacing_if_cached(b"cold-7", &v(99, 16)).is_none());
    assert_eq!(s.get(b"cold-7").unwrap(), Some(v(1, 16)));
    // The blocking path still writes it.
    assert!(s.apply_replacing(b"cold-7", &v(99, 16)).unwrap().kept());
    assert_eq!(s.get(b"cold-7").unwrap(), Some(v(99, 16)));
    // Keys the table's filter rules out are answered (about 99% of them).
    let answered = (0..1_000u64)
        .filter(|i| {
            matches!(
                s.get_if_cached(format!("absent-{i}").as_bytes()),
                Some(Ok(None))
            )
        })
        .count();
    assert!(
        answered >= 950,
        "only {answered} of 1000 absent keys answered"
    );
    let fresh = (0..1_000u64)
        .filter(|i| {
            matches!(
                s.apply_replacing_if_cached(format!("fresh-{i}").as_bytes(), &v(3, 16)),
                Some(Ok(ApplyOutcome::Kept { replaced: None }))
            )
        })
        .count();
    assert!(fresh >= 950, "only {fresh} of 1000 new keys applied");
}

/// A sync-every-write store never applies without waiting (the fsync is
/// the wait), and a write that would fill the memtable is left to the
/// blocking path (which freezes it).
#[test]
fn cached_applies_leave_fsyncs_and_full_memtables_to_the_blocking_path() {
    let dir = tempfile::tempdir().unwrap();
    let always = NativeStore::open(
        dir.path(),
        NativeOptions {
            sync: SyncPolicy::Always,
            ..opts(64 << 20)
        },
    )
    .unwrap();
    assert!(always.apply_replacing_if_cached(b"k", &v(1, 8)).is_none());
    assert_eq!(always.get(b"k").unwrap(), None);
    drop(always);

    let dir = tempfile::tempdir().unwrap();
    let small = NativeStore::open(dir.path(), opts(4096)).unwrap();
    assert!(small
        .apply_replacing_if_cached(b"big", &v(1, 8192))
        .is_none());
    assert_eq!(small.get(b"big").unwrap(), None);
}
