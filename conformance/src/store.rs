//! The store conformance suite: every backend of [`cassio_core::Store`] runs
//! the same cases, each a named `#[test]`.
//!
//! A backend provides a harness and invokes the macros in a test file:
//!
//! ```ignore
//! struct H;
//! impl conformance::store::StoreHarness for H { /* open */ }
//! impl conformance::store::PurgingStoreHarness for H { /* compact */ }
//! impl conformance::store::DurableStoreHarness for H { /* log_files, table_files, crash */ }
//! conformance::store_tests!(H);          // the general cases
//! conformance::durable_store_tests!(H);  // reopen, crash, corruption, tombstone purging
//! // A store that honours it: `replaced` exact under concurrent writers.
//! conformance::store_cases!(H; apply_replacing_is_exact_under_concurrent_writers);
//! ```
//!
//! A store that keeps nothing across a reopen but purges tombstones on
//! request implements [`PurgingStoreHarness`] and invokes
//! `conformance::purge_store_tests!(H)` instead of the durable cases.
//!
//! Each case opens a fresh store in its own temporary directory (removed when
//! the case ends). The cases are plain generic functions in [`cases`], so a
//! backend can also call one directly while debugging.

use cassio_core::StoreError;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the store suite needs from a backend.
pub trait StoreHarness {
    /// The backend under test.
    type Store: cassio_core::Store + 'static;
    /// Opens (creating if needed) a store in `dir` with a tombstone grace period of `grace`.
    fn open(dir: &Path, grace: Duration) -> Result<Self::Store, StoreError>;
}

/// What the tombstone-purge cases additionally need.
pub trait PurgingStoreHarness: StoreHarness {
    /// Forces a full compaction now (wall-clock time), one that runs the
    /// tombstone purge over every entry the store holds.
    fn compact(store: &Self::Store) -> Result<(), StoreError>;
}

/// What the durability cases additionally need.
pub trait DurableStoreHarness: PurgingStoreHarness {
    /// Commit-log / WAL files in `dir`, oldest first (the suite damages the last one).
    fn log_files(dir: &Path) -> Vec<PathBuf>;
    /// Files holding sorted tables / data blocks (the suite corrupts one).
    fn table_files(dir: &Path) -> Vec<PathBuf>;
    /// Simulates a crash: the store goes away without flushing or syncing anything more.
    fn crash(store: Self::Store);
}

/// Wall-clock microseconds since the Unix epoch (0 before it).
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The harness for the in-memory reference [`MemStore`](crate::MemStore)
/// (general and purge cases: it keeps nothing across a reopen).
#[derive(Debug)]
pub struct MemStoreHarness;

impl StoreHarness for MemStoreHarness {
    type Store = crate::MemStore;
    fn open(_dir: &Path, grace: Duration) -> Result<Self::Store, StoreError> {
        Ok(crate::MemStore::with_grace(grace))
    }
}

impl PurgingStoreHarness for MemStoreHarness {
    fn compact(store: &Self::Store) -> Result<(), StoreError> {
        store.compact(now_micros());
        Ok(())
    }
}

/// Expands, in the calling module, to one `#[test]` per general store case
/// for the harness type given (an implementation of [`StoreHarness`]).
#[macro_export]
macro_rules! store_tests {
    ($harness:ty) => {
        $crate::__store_case_tests!(
            $harness;
            get_of_missing_key,
            put_then_get,
            newer_timestamp_overwrites,
            older_timestamp_is_ignored,
            equal_timestamps_resolve_deterministically,
            timestamps_order_by_micros_then_logical_then_node,
            tombstone_hides_older_value,
            newer_put_hides_tombstone,
            tombstone_of_unknown_key_is_returned,
            range_bounds_inclusive_and_exclusive,
            range_empty_inverted_and_zero_limit,
            range_limit_and_paging,
            range_returns_winners_and_tombstones,
            binary_keys,
            empty_value_is_not_a_tombstone,
            large_value_8mib,
            many_keys_200k,
            concurrent_writers,
            flush_keeps_everything_and_lww_still_holds,
            apply_replacing_reports_what_it_replaced,
            cached_paths_agree_with_the_blocking_ones,
            apply_replacing_under_concurrent_writers,
            digests_list_what_range_lists,
            expiry_round_trips_and_reads_as_the_contract_says,
            expired_version_still_wins_lww_like_a_tombstone,
            row_cells_read_as_one_sorted_range,
        );
    };
}

/// Expands, in the calling module, to one `#[test]` per tombstone-purge
/// case (grace period and purge watermark) for the harness type given (an
/// implementation of [`PurgingStoreHarness`]). [`durable_store_tests!`]
/// includes these cases; this macro is for stores without durability.
#[macro_export]
macro_rules! purge_store_tests {
    ($harness:ty) => {
        $crate::__store_case_tests!(
            $harness;
            tombstones_kept_until_the_watermark_passes_them,
            purge_watermark_only_rises,
            expired_values_purged_like_tombstones,
        );
    };
}

/// Expands, in the calling module, to one `#[test]` per durability case
/// (reopen, crash with a damaged log, corrupted table, tombstone purging) for
/// the harness type given (an implementation of [`DurableStoreHarness`]).
#[macro_export]
macro_rules! durable_store_tests {
    ($harness:ty) => {
        $crate::__store_case_tests!(
            $harness;
            reopen_after_sync_keeps_everything,
            reopen_after_flush_keeps_everything,
            reopen_repeatedly_accumulates,
            crash_after_sync_keeps_synced_writes,
            crash_with_truncated_log_tail,
            crash_with_corrupted_log_tail,
            crash_with_garbage_after_log_tail,
            writes_after_crash_recovery_survive_another_crash,
            corrupted_table_block_is_detected,
            tombstones_purged_only_after_grace,
            purge_watermark_is_not_persisted,
            tombstones_kept_until_the_watermark_passes_them,
            purge_watermark_only_rises,
            expired_values_purged_like_tombstones,
            expiry_survives_reopen_and_compaction,
        );
    };
}

/// Expands to the named cases only, for a backend that must mark a case it
/// cannot honour: list the others here and that one in
/// [`known_failure_store_case!`], so the failure stays visible in every test
/// run (as an ignored test with its reason) instead of disappearing.
#[macro_export]
macro_rules! store_cases {
    ($harness:ty; $($case:ident),* $(,)?) => {
        $crate::__store_case_tests!($harness; $($case),*);
    };
}

/// Expands to one case marked `#[ignore = reason]`: the backend cannot
/// honour it, says why, and `cargo test -- --ignored` still runs it.
#[macro_export]
macro_rules! known_failure_store_case {
    ($harness:ty, $case:ident, $reason:literal) => {
        #[test]
        #[ignore = $reason]
        fn $case() {
            $crate::store::cases::$case::<$harness>();
        }
    };
}

/// Implementation detail of the store macros: one `#[test]` per case name.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_case_tests {
    ($harness:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::store::cases::$case::<$harness>();
            }
        )*
    };
}

/// The cases, as generic functions (the macros call these).
pub mod cases {
    use super::{now_micros, DurableStoreHarness, PurgingStoreHarness, StoreHarness};
    use bytes::Bytes;
    use cassio_core::{ApplyOutcome, Key, NodeId, Store, StoreError, Timestamp, Versioned};
    use std::collections::BTreeMap;
    use std::ops::Bound;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;
    use tempfile::TempDir;

    /// The grace period of the general cases: long enough that nothing is purged.
    const GRACE: Duration = Duration::from_secs(10 * 24 * 3600);

    fn ts(micros: u64) -> Timestamp {
        Timestamp::new(micros, 0, NodeId(1))
    }

    fn val(micros: u64, v: impl Into<Bytes>) -> Versioned {
        Versioned::value(ts(micros), v)
    }

    fn tomb(micros: u64) -> Versioned {
        Versioned::tombstone(ts(micros))
    }

    fn exp(micros: u64, v: impl Into<Bytes>, expires: u64) -> Versioned {
        Versioned::expiring(ts(micros), v, expires)
    }

    /// Deterministic, key-specific filler of `len` bytes.
    fn filler(seed: u64, len: usize) -> Bytes {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>()
            .into()
    }

    fn fresh<H: StoreHarness>() -> (TempDir, H::Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = H::open(dir.path(), GRACE).expect("open a fresh store");
        (dir, store)
    }

    fn reopen<H: StoreHarness>(dir: &Path) -> H::Store {
        H::open(dir, GRACE).expect("reopen the store")
    }

    fn put<S: Store + ?Sized>(s: &S, key: &[u8], v: &Versioned) -> bool {
        s.apply(key, v).expect("apply")
    }

    fn get<S: Store + ?Sized>(s: &S, key: &[u8]) -> Option<Versioned> {
        s.get(key).expect("get")
    }

    fn all<S: Store + ?Sized>(s: &S) -> Vec<(Key, Versioned)> {
        let mut out: Vec<(Key, Versioned)> = Vec::new();
        loop {
            let start = match out.last() {
                None => Bound::Unbounded,
                Some((k, _)) => Bound::Excluded(k.as_ref()),
            };
            let page = s.range(start, Bound::Unbounded, 1000).expect("range");
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    fn keys(entries: &[(Key, Versioned)]) -> Vec<Vec<u8>> {
        entries.iter().map(|(k, _)| k.to_vec()).collect()
    }

    /// A missing key reads as `None`.
    pub fn get_of_missing_key<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        assert_eq!(get(&s, b"nope"), None);
        put(&s, b"a", &val(1, "x"));
        assert_eq!(get(&s, b"nope"), None);
        assert_eq!(
            get(&s, b"a\0"),
            None,
            "a key's extension is a different key"
        );
        assert_eq!(get(&s, b""), None);
    }

    /// A write is read back as written.
    pub fn put_then_get<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        assert!(put(&s, b"k", &val(5, "v")));
        assert_eq!(get(&s, b"k"), Some(val(5, "v")));
        assert!(put(&s, b"other", &val(1, "w")));
        assert_eq!(get(&s, b"k"), Some(val(5, "v")));
        assert_eq!(get(&s, b"other"), Some(val(1, "w")));
    }

    /// A newer timestamp replaces the stored version.
    pub fn newer_timestamp_overwrites<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        assert!(put(&s, b"k", &val(5, "old")));
        assert!(put(&s, b"k", &val(6, "new")));
        assert_eq!(get(&s, b"k"), Some(val(6, "new")));
        assert!(put(&s, b"k", &val(1000, "")));
        assert_eq!(get(&s, b"k"), Some(val(1000, "")));
    }

    /// An older timestamp is ignored and `apply` says so.
    pub fn older_timestamp_is_ignored<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        assert!(put(&s, b"k", &val(5, "five")));
        assert!(!put(&s, b"k", &val(4, "four")));
        assert!(!put(&s, b"k", &tomb(3)));
        assert_eq!(get(&s, b"k"), Some(val(5, "five")));
    }

    /// At equal timestamps the winner does not depend on arrival order:
    /// a tombstone beats a value, a bytewise larger value beats a smaller one.
    pub fn equal_timestamps_resolve_deterministically<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        let pairs = [
            (val(7, "apple"), val(7, "banana")),
            (val(7, "zzz"), tomb(7)),
            (val(7, ""), val(7, "\0")),
        ];
        for (i, (a, b)) in pairs.iter().enumerate() {
            let winner = if a.lww_cmp(b).is_gt() { a } else { b };
            let loser = if winner == a { b } else { a };
            let k1 = format!("ab{i}");
            let k2 = format!("ba{i}");
            assert!(put(&s, k1.as_bytes(), loser));
            assert!(
                put(&s, k1.as_bytes(), winner),
                "the winner replaces the loser"
            );
            assert!(put(&s, k2.as_bytes(), winner));
            assert!(
                !put(&s, k2.as_bytes(), loser),
                "the loser does not replace the winner"
            );
            assert_eq!(get(&s, k1.as_bytes()).as_ref(), Some(winner));
            assert_eq!(get(&s, k2.as_bytes()).as_ref(), Some(winner));
            assert!(
                !put(&s, k2.as_bytes(), winner),
                "re-applying the same version changes nothing"
            );
        }
    }

    /// Timestamps compare by micros, then the logical counter, then the node.
    pub fn timestamps_order_by_micros_then_logical_then_node<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        let v = |m, l, n, x: &'static str| Versioned::value(Timestamp::new(m, l, NodeId(n)), x);
        assert!(put(&s, b"k", &v(5, 0, 9, "a")));
        assert!(put(&s, b"k", &v(5, 1, 0, "b")));
        assert!(!put(&s, b"k", &v(5, 0, 99, "c")));
        assert!(put(&s, b"k", &v(5, 1, 1, "d")));
        assert!(!put(&s, b"k", &v(4, 100, 100, "e")));
        assert_eq!(get(&s, b"k"), Some(v(5, 1, 1, "d")));
    }

    /// A tombstone hides older values and `get` returns the tombstone.
    pub fn tombstone_hides_older_value<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        put(&s, b"k", &val(1, "v"));
        assert!(put(&s, b"k", &tomb(2)));
        assert_eq!(get(&s, b"k"), Some(tomb(2)));
        assert!(!put(&s, b"k", &val(1, "v-again")));
        assert_eq!(get(&s, b"k"), Some(tomb(2)));
    }

    /// A newer value hides a tombstone.
    pub fn newer_put_hides_tombstone<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        put(&s, b"k", &tomb(2));
        assert!(put(&s, b"k", &val(3, "back")));
        assert_eq!(get(&s, b"k"), Some(val(3, "back")));
        assert!(put(&s, b"k", &tomb(4)));
        assert_eq!(get(&s, b"k"), Some(tomb(4)));
    }

    /// A delete of a key never written is stored and returned too.
    pub fn tombstone_of_unknown_key_is_returned<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        assert!(put(&s, b"ghost", &tomb(9)));
        assert_eq!(get(&s, b"ghost"), Some(tomb(9)));
        assert!(!put(&s, b"ghost", &val(8, "late")));
    }

    fn twenty<S: Store>(s: &S) -> Vec<Vec<u8>> {
        let ks: Vec<Vec<u8>> = (0..20).map(|i| format!("k{i:02}").into_bytes()).collect();
        // Written out of order so the store has to sort.
        for i in [
            7, 3, 19, 0, 11, 15, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18,
        ] {
            put(s, &ks[i], &val(1, format!("v{i}")));
        }
        ks
    }

    /// Range bounds: inclusive, exclusive, unbounded, in ascending order.
    pub fn range_bounds_inclusive_and_exclusive<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        let ks = twenty(&s);
        let r = |a: Bound<&[u8]>, b: Bound<&[u8]>| keys(&s.range(a, b, usize::MAX).expect("range"));
        use Bound::{Excluded as X, Included as I, Unbounded as U};
        assert_eq!(r(U, U), ks);
        assert_eq!(r(I(&ks[3]), I(&ks[6])), ks[3..=6].to_vec());
        assert_eq!(r(I(&ks[3]), X(&ks[6])), ks[3..6].to_vec());
        assert_eq!(r(X(&ks[3]), I(&ks[6])), ks[4..=6].to_vec());
        assert_eq!(r(X(&ks[3]), X(&ks[6])), ks[4..6].to_vec());
        assert_eq!(r(U, X(&ks[2])), ks[..2].to_vec());
        assert_eq!(r(X(&ks[17]), U), ks[18..].to_vec());
        assert_eq!(
            r(I(b"k05x"), I(b"k08")),
            ks[6..=8].to_vec(),
            "bounds need not be stored keys"
        );
        assert_eq!(r(I(b"a"), X(b"k01")), ks[..1].to_vec());
        let entries = s.range(I(&ks[0]), I(&ks[0]), 10).expect("range");
        assert_eq!(entries, vec![(Key::from(ks[0].clone()), val(1, "v0"))]);
    }

    /// Empty, inverted and zero-limit ranges yield nothing.
    pub fn range_empty_inverted_and_zero_limit<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        use Bound::{Excluded as X, Included as I, Unbounded as U};
        assert!(s.range(U, U, 10).expect("range").is_empty(), "empty store");
        let ks = twenty(&s);
        let empty = |a: Bound<&[u8]>, b: Bound<&[u8]>, l: usize| {
            s.range(a, b, l).expect("range").is_empty()
        };
        assert!(empty(I(&ks[5]), X(&ks[5]), 10));
        assert!(empty(X(&ks[5]), I(&ks[5]), 10));
        assert!(empty(X(&ks[5]), X(&ks[5]), 10));
        assert!(empty(I(&ks[9]), I(&ks[2]), 10), "inverted");
        assert!(empty(X(&ks[9]), X(&ks[2]), 10), "inverted");
        assert!(empty(I(b"k05a"), I(b"k05z"), 10), "no key inside");
        assert!(empty(I(b"zzz"), U, 10), "past the last key");
        assert!(empty(U, X(b"k00"), 10), "before the first key");
        assert!(empty(U, U, 0), "zero limit");
    }

    /// `limit` caps a page; paging with `Excluded(last)` visits every key once.
    pub fn range_limit_and_paging<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        let ks = twenty(&s);
        assert_eq!(
            keys(
                &s.range(Bound::Unbounded, Bound::Unbounded, 3)
                    .expect("range")
            ),
            ks[..3].to_vec()
        );
        let mut seen = Vec::new();
        let mut start: Option<Vec<u8>> = None;
        loop {
            let b = start.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let page = s.range(b, Bound::Included(&ks[16]), 3).expect("range");
            assert!(page.len() <= 3);
            let Some((last, _)) = page.last() else { break };
            start = Some(last.to_vec());
            seen.extend(keys(&page));
        }
        assert_eq!(seen, ks[..=16].to_vec());
    }

    /// A row's cells (issue 14) are one contiguous range of storage keys,
    /// in column order, apart from other rows and plain keys, whatever was
    /// written around them; paging through it returns each cell once.
    pub fn row_cells_read_as_one_sorted_range<H: StoreHarness>() {
        use cassio_core::node::{cell_storage_key, classify, row_bounds, storage_key, StoredItem};
        let (_d, s) = fresh::<H>();
        let cell =
            |row: &[u8], col: &[u8]| cell_storage_key("default", row, col).expect("storable");
        let cols: Vec<&[u8]> = vec![b"\xff", b"b", b"a\x00", b"", b"a", b"ab"];
        for (i, c) in cols.iter().enumerate() {
            put(&s, &cell(b"r", c), &val(1, format!("v{i}")));
        }
        put(&s, &cell(b"r", b"b"), &tomb(2));
        // Neighbours: other rows, plain keys named like the row or a cell.
        put(&s, &cell(b"r\x00", b"a"), &val(1, "other row"));
        put(&s, &cell(b"q", b"a"), &val(1, "other row"));
        put(&s, &storage_key("default", b"r"), &val(1, "plain"));
        put(&s, &storage_key("default", b"ra"), &val(1, "plain"));
        let (start, end) = row_bounds("default", b"r", None, None).expect("bounds");
        let got = s
            .range(Bound::Included(&start), Bound::Excluded(&end), 100)
            .expect("range");
        let columns: Vec<Vec<u8>> = got
            .iter()
            .map(|(k, _)| match classify(k) {
                Some(("default", StoredItem::Cell { row: b"r", column })) => column.to_vec(),
                other => panic!("not a cell of row r: {other:?}"),
            })
            .collect();
        let mut want: Vec<Vec<u8>> = cols.iter().map(|c| c.to_vec()).collect();
        want.sort();
        assert_eq!(columns, want, "every cell once, in column order");
        assert!(got
            .iter()
            .any(|(k, v)| k == &cell(b"r", b"b") && v.is_tombstone()));
        // Paged two at a time, resuming after the last key.
        let mut paged = Vec::new();
        let mut from = Bound::Included(start.to_vec());
        loop {
            let b = match &from {
                Bound::Included(k) => Bound::Included(k.as_slice()),
                Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
                Bound::Unbounded => Bound::Unbounded,
            };
            let page = s.range(b, Bound::Excluded(&end), 2).expect("range");
            let Some((last, _)) = page.last() else { break };
            from = Bound::Excluded(last.to_vec());
            paged.extend(page);
        }
        assert_eq!(paged, got);
    }

    /// Range shows each key once, with its winning version, tombstones included.
    pub fn range_returns_winners_and_tombstones<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        let ks = twenty(&s);
        put(&s, &ks[4], &val(2, "newer"));
        put(&s, &ks[5], &tomb(2));
        put(&s, &ks[6], &val(0, "older, ignored"));
        put(&s, b"k04a", &tomb(3));
        let got = s
            .range(Bound::Included(&ks[3]), Bound::Included(&ks[6]), 100)
            .expect("range");
        let want: Vec<(Key, Versioned)> = vec![
            (ks[3].clone().into(), val(1, "v3")),
            (ks[4].clone().into(), val(2, "newer")),
            (Key::from_static(b"k04a"), tomb(3)),
            (ks[5].clone().into(), tomb(2)),
            (ks[6].clone().into(), val(1, "v6")),
        ];
        assert_eq!(got, want);
    }

    /// Keys are arbitrary bytes: empty, NUL, 0xFF runs; bytewise order.
    pub fn binary_keys<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        let mut ks: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![0, 0xff],
            vec![1],
            vec![0x7f, 0x80],
            vec![0xfe, 0xff, 0xff],
            vec![0xff],
            vec![0xff; 2],
            vec![0xff; 64],
            (0..=255).collect(),
            "clé-日本".as_bytes().to_vec(),
        ];
        for (i, k) in ks.iter().enumerate() {
            assert!(put(&s, k, &val(1, format!("v{i}"))));
        }
        for (i, k) in ks.iter().enumerate() {
            assert_eq!(get(&s, k), Some(val(1, format!("v{i}"))), "key {k:?}");
        }
        ks.sort();
        assert_eq!(keys(&all(&s)), ks);
        let from_ff = s
            .range(Bound::Included(&[0xff][..]), Bound::Unbounded, 100)
            .expect("range");
        assert_eq!(
            keys(&from_ff),
            vec![vec![0xff], vec![0xff; 2], vec![0xff; 64]]
        );
        let upto_empty = s
            .range(Bound::Unbounded, Bound::Included(&[][..]), 100)
            .expect("range");
        assert_eq!(keys(&upto_empty), vec![Vec::<u8>::new()]);
    }

    /// An empty value is a value, not a tombstone.
    pub fn empty_value_is_not_a_tombstone<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        put(&s, b"e", &val(1, ""));
        let got = get(&s, b"e").expect("present");
        assert_eq!(got.value.as_deref(), Some(&b""[..]));
        assert!(!got.is_tombstone());
        put(&s, b"", &val(1, ""));
        assert_eq!(get(&s, b""), Some(val(1, "")));
    }

    /// An 8 MiB value is stored and read back intact.
    pub fn large_value_8mib<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        let big = filler(8, 8 << 20);
        assert!(put(&s, b"big", &val(1, big.clone())));
        put(&s, b"small", &val(1, "s"));
        assert_eq!(get(&s, b"big"), Some(val(1, big.clone())));
        s.flush().expect("flush");
        assert_eq!(get(&s, b"big"), Some(val(1, big.clone())));
        let r = s
            .range(Bound::Unbounded, Bound::Unbounded, 10)
            .expect("range");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1, val(1, big));
    }

    /// 200,000 keys, written in scrambled order, all read back and ranged in order.
    pub fn many_keys_200k<H: StoreHarness>() {
        const N: u64 = 200_000;
        let (_d, s) = fresh::<H>();
        // A multiplier coprime with N visits every index once, out of order.
        let key = |i: u64| format!("key{:08}", (i * 7919) % N).into_bytes();
        for i in 0..N {
            put(&s, &key(i), &val(1, format!("{i}")));
        }
        for i in (0..N).step_by(3) {
            assert_eq!(get(&s, &key(i)), Some(val(1, format!("{i}"))));
        }
        assert_eq!(get(&s, b"key99999999"), None);
        let everything = all(&s);
        assert_eq!(everything.len() as u64, N);
        assert!(
            everything.windows(2).all(|w| w[0].0 < w[1].0),
            "ascending order"
        );
    }

    /// Four threads writing at once (own keys and contended shared keys):
    /// nothing is lost and each shared key holds the newest version.
    pub fn concurrent_writers<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        let s = Arc::new(s);
        const PER: u64 = 3000;
        const SHARED: u64 = 100;
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..PER {
                        put(
                            &*s,
                            format!("t{t}-{i}").as_bytes(),
                            &val(i, format!("{t}/{i}")),
                        );
                        let shared = format!("shared-{}", i % SHARED);
                        // Unique timestamps per (thread, round): node id = thread.
                        let v =
                            Versioned::value(Timestamp::new(i, 0, NodeId(t)), format!("{t}/{i}"));
                        s.apply(shared.as_bytes(), &v).expect("apply");
                        if i % 50 == 0 {
                            assert!(s
                                .get(format!("t{t}-{i}").as_bytes())
                                .expect("get")
                                .is_some());
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer thread");
        }
        for t in 0..4 {
            for i in 0..PER {
                assert_eq!(
                    get(&*s, format!("t{t}-{i}").as_bytes()),
                    Some(val(i, format!("{t}/{i}")))
                );
            }
        }
        for j in 0..SHARED {
            // The newest round that touched key j is the last i ≡ j (mod SHARED);
            // the largest node id (thread 3) breaks the tie.
            let last = (PER - 1) - ((PER - 1 - j) % SHARED);
            let want = Versioned::value(Timestamp::new(last, 0, NodeId(3)), format!("3/{last}"));
            assert_eq!(get(&*s, format!("shared-{j}").as_bytes()), Some(want));
        }
        assert_eq!(all(&*s).len() as u64, 4 * PER + SHARED);
    }

    /// After `flush` and `sync` reads are unchanged, and last-write-wins still
    /// holds against the flushed versions (older writes ignored, newer win,
    /// tombstones hide), in gets and in merged ranges.
    pub fn flush_keeps_everything_and_lww_still_holds<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        let mut model = BTreeMap::new();
        for i in 0..500u64 {
            let k = format!("f{i:04}").into_bytes();
            let v = val(10, filler(i, 50));
            put(&s, &k, &v);
            model.insert(k, v);
        }
        s.flush().expect("flush");
        s.sync().expect("sync");
        for i in 0..500u64 {
            let k = format!("f{i:04}").into_bytes();
            match i % 5 {
                0 => assert!(
                    !put(&s, &k, &val(9, "older")),
                    "older than a flushed version"
                ),
                1 => {
                    assert!(put(&s, &k, &val(11, "newer")));
                    model.insert(k, val(11, "newer"));
                }
                2 => {
                    assert!(put(&s, &k, &tomb(12)));
                    model.insert(k, tomb(12));
                }
                _ => {}
            }
        }
        for i in 0..100u64 {
            let k = format!("g{i:04}").into_bytes();
            put(&s, &k, &val(1, "g"));
            model.insert(k, val(1, "g"));
        }
        let check = |s: &H::Store| {
            for (k, v) in &model {
                assert_eq!(
                    get(s, k).as_ref(),
                    Some(v),
                    "key {}",
                    String::from_utf8_lossy(k)
                );
            }
            let got = all(s);
            let want: Vec<(Key, Versioned)> = model
                .iter()
                .map(|(k, v)| (Key::from(k.clone()), v.clone()))
                .collect();
            assert_eq!(got, want);
        };
        check(&s);
        s.flush().expect("flush");
        check(&s);
        assert!(!put(
            &s,
            b"f0002",
            &val(11, "older than the flushed tombstone")
        ));
        s.sync().expect("sync");
        check(&s);
    }

    fn replacing<S: Store + ?Sized>(s: &S, key: &[u8], v: &Versioned) -> ApplyOutcome {
        s.apply_replacing(key, v).expect("apply_replacing")
    }

    fn kept(replaced: Option<Versioned>) -> ApplyOutcome {
        ApplyOutcome::Kept { replaced }
    }

    /// The event-loop entry points (`get_if_cached`,
    /// `apply_replacing_if_cached`) may decline (`None`, having written
    /// nothing) but never disagree with the blocking ones: the same writes
    /// through "cached first, else blocking" report and leave exactly what
    /// `apply_replacing` does, in memory and after a flush. An engine that
    /// keeps the defaults (always `None`) passes trivially.
    pub fn cached_paths_agree_with_the_blocking_ones<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        let (_d2, reference) = fresh::<H>();
        let either = |k: &[u8], v: &Versioned| -> ApplyOutcome {
            let before = get(&s, k);
            match s.apply_replacing_if_cached(k, v) {
                Some(r) => r.expect("cached apply"),
                None => {
                    assert_eq!(get(&s, k), before, "a declined apply wrote nothing");
                    replacing(&s, k, v)
                }
            }
        };
        let check_read = |k: &[u8]| {
            if let Some(r) = s.get_if_cached(k) {
                assert_eq!(r.expect("cached get"), get(&s, k), "cached read of {k:?}");
            }
        };
        let steps: Vec<(&[u8], Versioned)> = vec![
            (b"k", val(5, "five")),
            (b"k", val(6, "six")),
            (b"k", val(4, "four")),
            (b"k", tomb(3)),
            (b"other", val(1, "one")),
        ];
        for (k, v) in &steps {
            assert_eq!(either(k, v), replacing(&reference, k, v), "{k:?} {v:?}");
            check_read(k);
        }
        check_read(b"never-written");
        s.flush().expect("flush");
        reference.flush().expect("flush");
        for k in [&b"k"[..], b"other", b"never-written"] {
            check_read(k);
        }
        let after: Vec<(&[u8], Versioned)> = vec![
            (b"k", val(6, "sixty")),
            (b"k", tomb(7)),
            (b"other", val(0, "zero")),
            (b"new", val(2, "two")),
        ];
        for (k, v) in &after {
            assert_eq!(either(k, v), replacing(&reference, k, v), "{k:?} {v:?}");
            check_read(k);
        }
        for k in [&b"k"[..], b"other", b"new"] {
            assert_eq!(get(&s, k), get(&reference, k));
        }
    }

    /// `apply_replacing` decides like `apply` and reports the version it
    /// replaced: nothing for a new key, the stored version for a winner
    /// (also when that version sits in a flushed table), `Superseded` for a
    /// loser; the same writes through either method leave the same state.
    pub fn apply_replacing_reports_what_it_replaced<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        assert_eq!(
            replacing(&s, b"k", &val(5, "five")),
            kept(None),
            "a new key replaces nothing"
        );
        assert_eq!(
            replacing(&s, b"k", &val(6, "six")),
            kept(Some(val(5, "five")))
        );
        assert_eq!(
            replacing(&s, b"k", &val(4, "four")),
            ApplyOutcome::Superseded
        );
        assert_eq!(
            replacing(&s, b"k", &tomb(3)),
            ApplyOutcome::Superseded,
            "an older tombstone"
        );
        assert_eq!(
            replacing(&s, b"k", &val(6, "six")),
            ApplyOutcome::Superseded,
            "re-applying the stored version"
        );
        assert_eq!(get(&s, b"k"), Some(val(6, "six")));
        s.flush().expect("flush");
        assert_eq!(
            replacing(&s, b"k", &val(6, "sixty")),
            kept(Some(val(6, "six"))),
            "equal timestamps: the larger value wins, over a flushed version"
        );
        assert_eq!(replacing(&s, b"k", &tomb(7)), kept(Some(val(6, "sixty"))));
        assert_eq!(replacing(&s, b"k", &val(8, "")), kept(Some(tomb(7))));
        assert_eq!(get(&s, b"k"), Some(val(8, "")));
        assert_eq!(
            replacing(&s, b"ghost", &tomb(9)),
            kept(None),
            "a delete of an unknown key"
        );
        assert_eq!(
            replacing(&s, b"ghost", &val(8, "late")),
            ApplyOutcome::Superseded
        );
        assert_eq!(get(&s, b"ghost"), Some(tomb(9)));
        assert_eq!(replacing(&s, b"", &val(1, "empty key")), kept(None));
        assert_eq!(get(&s, b""), Some(val(1, "empty key")));

        // One sequence of writes over a few keys, through `apply` under
        // prefix "a" and `apply_replacing` under prefix "r".
        let mut seq: Vec<(u8, Versioned)> = Vec::new();
        for i in 0..120u64 {
            let key = (i * 7 % 5) as u8;
            let micros = (i * 37) % 50;
            let v = match i % 6 {
                0 => tomb(micros),
                1 => val(micros, ""),
                _ => val(micros, filler(i % 4, 8)),
            };
            seq.push((key, v));
        }
        for (i, (key, v)) in seq.iter().enumerate() {
            let (ak, rk) = ([b'a', *key], [b'r', *key]);
            let before = get(&s, &rk);
            let applied = put(&s, &ak, v);
            let outcome = replacing(&s, &rk, v);
            assert_eq!(applied, outcome.kept(), "write {i}: {v:?}");
            if let ApplyOutcome::Kept { replaced } = outcome {
                assert_eq!(replaced, before, "write {i} replaced what was stored");
            }
            assert_eq!(get(&s, &ak), get(&s, &rk), "write {i}");
            if i == seq.len() / 2 {
                s.flush().expect("flush");
            }
        }
        let by_prefix = |p: u8| -> Vec<(Vec<u8>, Versioned)> {
            all(&s)
                .into_iter()
                .filter(|(k, _)| k.len() == 2 && k[0] == p)
                .map(|(k, v)| (k[1..].to_vec(), v))
                .collect()
        };
        let applied = by_prefix(b'a');
        assert_eq!(applied.len(), 5);
        assert_eq!(applied, by_prefix(b'r'));
    }

    /// Writers on four threads race on a few keys through `apply_replacing`
    /// (newer and older versions, tombstones): a version reported kept
    /// replaced an older written version or nothing, every key ends at its
    /// newest version, which was reported kept, and (with `exact`) the kept
    /// versions of each key form one chain, each replacing the one before.
    fn replacing_race<H: StoreHarness>(exact: bool) {
        const THREADS: u64 = 4;
        const PER: u64 = 1500;
        const KEYS: u64 = 8;
        let (_d, s) = fresh::<H>();
        let s = Arc::new(s);
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut x = (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut out = Vec::with_capacity(PER as usize);
                    for i in 0..PER {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let key = format!("race{}", x % KEYS).into_bytes();
                        // Unique per (thread, write): node = thread, logical = i.
                        let ts = Timestamp::new((x >> 8) % 2000, i as u32, NodeId(t));
                        let v = if i % 7 == 0 {
                            Versioned::tombstone(ts)
                        } else {
                            Versioned::value(ts, format!("{t}/{i}"))
                        };
                        let outcome = replacing(&*s, &key, &v);
                        out.push((key, v, outcome));
                        if i % 300 == 0 {
                            s.flush().expect("flush");
                        }
                    }
                    out
                })
            })
            .collect();
        let mut per_key: BTreeMap<Vec<u8>, Vec<(Versioned, ApplyOutcome)>> = BTreeMap::new();
        for t in threads {
            for (k, v, o) in t.join().expect("writer thread") {
                per_key.entry(k).or_default().push((v, o));
            }
        }
        assert_eq!(per_key.len() as u64, KEYS);
        for (key, writes) in &per_key {
            let name = String::from_utf8_lossy(key);
            let newest = writes
                .iter()
                .map(|(v, _)| v)
                .max_by(|a, b| a.lww_cmp(b))
                .expect("writes");
            assert_eq!(
                get(&*s, key).as_ref(),
                Some(newest),
                "{name} ends at its newest"
            );
            let mut chain: Vec<(&Versioned, &Option<Versioned>)> = Vec::new();
            for (v, o) in writes {
                match o {
                    ApplyOutcome::Superseded => {
                        assert_ne!(
                            v, newest,
                            "{name}: the newest version was reported superseded"
                        )
                    }
                    ApplyOutcome::Kept { replaced } => {
                        if let Some(r) = replaced {
                            assert!(
                                v.supersedes(r),
                                "{name}: {v:?} reported replacing the newer {r:?}"
                            );
                            assert!(
                                writes.iter().any(|(w, _)| w == r),
                                "{name}: {v:?} reported replacing {r:?}, never written"
                            );
                        }
                        chain.push((v, replaced));
                    }
                }
            }
            assert!(
                chain.iter().any(|(_, r)| r.is_none()),
                "{name}: the first kept version replaced nothing"
            );
            if exact {
                chain.sort_by(|a, b| a.0.lww_cmp(b.0));
                let mut previous: Option<&Versioned> = None;
                for (v, replaced) in &chain {
                    assert_eq!(
                        replaced.as_ref(),
                        previous,
                        "{name}: {v:?} must replace the kept version before it"
                    );
                    previous = Some(v);
                }
            }
        }
    }

    /// Concurrent writers of one key through `apply_replacing`: every
    /// reported replacement is plausible and the newest version wins. (The
    /// contract lets `replaced` be stale under such races; see
    /// [`apply_replacing_is_exact_under_concurrent_writers`].)
    pub fn apply_replacing_under_concurrent_writers<H: StoreHarness>() {
        replacing_race::<H>(false);
    }

    /// Opt-in case for stores that decide and replace atomically: under
    /// concurrent writers of one key through `apply_replacing`, each kept
    /// version reports exactly the kept version before it (so a tree of
    /// digests updated from the reports never drifts).
    pub fn apply_replacing_is_exact_under_concurrent_writers<H: StoreHarness>() {
        replacing_race::<H>(true);
    }

    /// `digests` lists exactly the keys, timestamps and tombstone flags
    /// `range` lists over the same bounds and limit, each with the digest
    /// of its version under its key.
    pub fn digests_list_what_range_lists<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        let ks = twenty(&s);
        put(&s, &ks[4], &val(2, "newer"));
        put(&s, &ks[5], &tomb(2));
        put(&s, b"", &val(3, "empty key"));
        put(&s, &[0xff, 0], &tomb(4));
        s.flush().expect("flush");
        put(&s, &ks[6], &tomb(5));
        put(&s, &ks[7], &val(5, ""));
        put(&s, b"k04a", &val(6, "after the flush"));
        use Bound::{Excluded as X, Included as I, Unbounded as U};
        type Span<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);
        let bounds: Vec<Span<'_>> = vec![
            (U, U),
            (I(&ks[3]), I(&ks[8])),
            (X(&ks[3]), X(&ks[8])),
            (U, I(b"")),
            (I(b"k05x"), U),
            (I(&ks[9]), I(&ks[2])),
        ];
        let mut tombstones_seen = 0;
        for (a, b) in bounds {
            for limit in [0, 1, 3, 100, usize::MAX] {
                let want: Vec<(Vec<u8>, Timestamp, bool, u128)> = s
                    .range(a, b, limit)
                    .expect("range")
                    .into_iter()
                    .map(|(k, v)| (k.to_vec(), v.ts, v.value.is_none(), v.digest(&k)))
                    .collect();
                let got: Vec<(Vec<u8>, Timestamp, bool, u128)> = s
                    .digests(a, b, limit)
                    .expect("digests")
                    .into_iter()
                    .map(|d| (d.key.to_vec(), d.ts, d.tombstone, d.digest))
                    .collect();
                assert_eq!(got, want, "bounds {a:?}..{b:?}, limit {limit}");
                tombstones_seen += got.iter().filter(|e| e.2).count();
            }
        }
        assert!(tombstones_seen > 0, "the scans covered tombstones");
        let everything = s.digests(U, U, usize::MAX).expect("digests");
        assert_eq!(everything.len(), 23, "twenty keys and three more");
    }

    // ---------------------------------------------------------------- durable

    fn sample_writes() -> Vec<(Vec<u8>, Versioned)> {
        let mut w = Vec::new();
        for i in 0..300u64 {
            let k = format!("a{i:05}").into_bytes();
            let v = match i % 10 {
                0 => tomb(100 + i),
                1 => val(100 + i, ""),
                2 => exp(100 + i, filler(i, 60), 1_000_000 + i),
                _ => val(100 + i, filler(i, 100)),
            };
            w.push((k, v));
        }
        w.push((vec![], val(5, "empty key")));
        w.push((vec![0xff; 8], val(5, "ff key")));
        w
    }

    fn write_all<S: Store>(s: &S, writes: &[(Vec<u8>, Versioned)]) {
        for (k, v) in writes {
            put(s, k, v);
        }
    }

    fn assert_has_all<S: Store>(s: &S, writes: &[(Vec<u8>, Versioned)]) {
        for (k, v) in writes {
            assert_eq!(
                get(s, k).as_ref(),
                Some(v),
                "lost key {}",
                String::from_utf8_lossy(k)
            );
        }
    }

    /// Everything written before `sync` is there after a clean reopen.
    pub fn reopen_after_sync_keeps_everything<H: DurableStoreHarness>() {
        let (d, s) = fresh::<H>();
        let w = sample_writes();
        write_all(&s, &w);
        put(&s, b"a00002", &val(1000, "overwritten"));
        s.sync().expect("sync");
        drop(s);
        let s = reopen::<H>(d.path());
        let mut want = w.clone();
        want[2].1 = val(1000, "overwritten");
        assert_has_all(&s, &want);
        assert_eq!(all(&s).len(), want.len());
        assert!(!put(&s, b"a00002", &val(999, "older")));
    }

    /// Flushed tables and the unflushed tail both survive a reopen, merged.
    pub fn reopen_after_flush_keeps_everything<H: DurableStoreHarness>() {
        let (d, s) = fresh::<H>();
        let w = sample_writes();
        write_all(&s, &w);
        s.flush().expect("flush");
        let mut want = w.clone();
        for (i, item) in want.iter_mut().enumerate().step_by(7) {
            item.1 = if i % 2 == 0 {
                tomb(5000)
            } else {
                val(5000, "after flush")
            };
            put(&s, &item.0, &item.1);
        }
        s.sync().expect("sync");
        drop(s);
        let s = reopen::<H>(d.path());
        assert_has_all(&s, &want);
        assert_eq!(all(&s).len(), want.len());
    }

    /// Several reopen cycles, each adding data, lose nothing.
    pub fn reopen_repeatedly_accumulates<H: DurableStoreHarness>() {
        let d = tempfile::tempdir().expect("temp dir");
        let mut want = Vec::new();
        for round in 0..4u64 {
            let s = reopen::<H>(d.path());
            assert_has_all(&s, &want);
            for i in 0..200u64 {
                let k = format!("r{round}-{i:04}").into_bytes();
                let v = val(round * 1000 + i, filler(round * 1000 + i, 64));
                put(&s, &k, &v);
                want.push((k, v));
            }
            if round % 2 == 1 {
                s.flush().expect("flush");
            }
            s.sync().expect("sync");
        }
        let s = reopen::<H>(d.path());
        assert_has_all(&s, &want);
    }

    /// How the newest log file is damaged after the crash.
    #[derive(Clone, Copy, Debug)]
    enum Damage {
        None,
        Truncate,
        Corrupt,
        Garbage,
    }

    /// Writes a synced batch and an unsynced batch, crashes, damages the
    /// unsynced part of the newest log file, reopens, and checks that every
    /// synced write is there and that nothing else is served but what was
    /// written.
    fn crash_case<H: DurableStoreHarness>(damage: Damage) -> (TempDir, Vec<(Vec<u8>, Versioned)>) {
        let (d, s) = fresh::<H>();
        let synced = sample_writes();
        write_all(&s, &synced);
        s.sync().expect("sync");
        let logs = H::log_files(d.path());
        let synced_log = logs
            .last()
            .cloned()
            .expect("a durable store has a log file");
        let synced_len = std::fs::metadata(&synced_log).map(|m| m.len()).unwrap_or(0);

        // Unsynced: big values (so they pass any user-space buffer) and
        // newer versions of some synced keys.
        let mut unsynced = Vec::new();
        for i in 0..40u64 {
            unsynced.push((
                format!("b{i:03}").into_bytes(),
                val(100, filler(1000 + i, 32 * 1024)),
            ));
        }
        for (k, _) in synced.iter().step_by(9) {
            unsynced.push((k.clone(), val(10_000, "unsynced overwrite")));
        }
        write_all(&s, &unsynced);
        H::crash(s);

        if let Some(newest) = H::log_files(d.path()).last() {
            let len = std::fs::metadata(newest).map(|m| m.len()).unwrap_or(0);
            // Only bytes written after the sync may be damaged by a crash.
            let from = if *newest == synced_log {
                synced_len.min(len)
            } else {
                0
            };
            damage_file(newest, from, len, damage);
        }

        let s = reopen::<H>(d.path());
        for (k, v) in &synced {
            let got = get(&s, k);
            let overwrite = unsynced.iter().find(|(uk, _)| uk == k).map(|(_, uv)| uv);
            let ok = got.as_ref() == Some(v) || (overwrite.is_some() && got.as_ref() == overwrite);
            assert!(
                ok,
                "synced key {} reads {got:?} after {damage:?}",
                String::from_utf8_lossy(k)
            );
        }
        for (k, v) in unsynced.iter().filter(|(k, _)| k.starts_with(b"b")) {
            let got = get(&s, k);
            assert!(
                got.is_none() || got.as_ref() == Some(v),
                "unsynced key {} must be absent or intact, got another version",
                String::from_utf8_lossy(k)
            );
        }
        for (k, v) in all(&s) {
            let known = synced
                .iter()
                .chain(&unsynced)
                .any(|(wk, wv)| wk[..] == k[..] && *wv == v);
            assert!(known, "range served a version never written under {k:?}");
        }
        // The recovered store takes new writes and keeps them.
        put(&s, b"after-recovery", &val(1, "x"));
        s.sync().expect("sync");
        drop(s);
        let s = reopen::<H>(d.path());
        assert_eq!(get(&s, b"after-recovery"), Some(val(1, "x")));
        drop(s);
        (d, synced)
    }

    fn damage_file(path: &Path, from: u64, len: u64, damage: Damage) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open log file");
        match damage {
            Damage::None => {}
            Damage::Truncate => {
                // Cut inside the unsynced region at an odd offset, mid-record.
                let cut = from + (len - from) / 2 + 3;
                f.set_len(cut.min(len)).expect("truncate");
            }
            Damage::Corrupt => {
                let n = (len - from).min(512);
                if n == 0 {
                    f.seek(SeekFrom::End(0)).expect("seek");
                    f.write_all(&[0x5a; 64]).expect("write");
                } else {
                    let at = len - n;
                    let mut buf = vec![0u8; n as usize];
                    use std::io::Read;
                    f.seek(SeekFrom::Start(at)).expect("seek");
                    f.read_exact(&mut buf).expect("read");
                    for (i, b) in buf.iter_mut().enumerate() {
                        if i % 3 == 0 {
                            *b ^= 0x5a;
                        }
                    }
                    f.seek(SeekFrom::Start(at)).expect("seek");
                    f.write_all(&buf).expect("write");
                }
            }
            Damage::Garbage => {
                f.seek(SeekFrom::End(0)).expect("seek");
                f.write_all(&filler(77, 4096)).expect("write");
            }
        }
        f.sync_all().expect("sync damaged file");
    }

    /// A crash after `sync` keeps every synced write.
    pub fn crash_after_sync_keeps_synced_writes<H: DurableStoreHarness>() {
        crash_case::<H>(Damage::None);
    }

    /// A crash that leaves the newest log truncated mid-record recovers the
    /// synced prefix.
    pub fn crash_with_truncated_log_tail<H: DurableStoreHarness>() {
        crash_case::<H>(Damage::Truncate);
    }

    /// Corrupt bytes at the end of the newest log are detected, not served.
    pub fn crash_with_corrupted_log_tail<H: DurableStoreHarness>() {
        crash_case::<H>(Damage::Corrupt);
    }

    /// Garbage after the last record of the newest log is ignored.
    pub fn crash_with_garbage_after_log_tail<H: DurableStoreHarness>() {
        crash_case::<H>(Damage::Garbage);
    }

    /// After recovering from a damaged log, new synced writes survive the
    /// next crash too (recovery must leave the log appendable).
    pub fn writes_after_crash_recovery_survive_another_crash<H: DurableStoreHarness>() {
        let (d, synced) = crash_case::<H>(Damage::Corrupt);
        let s = reopen::<H>(d.path());
        let more: Vec<(Vec<u8>, Versioned)> = (0..100u64)
            .map(|i| (format!("c{i:03}").into_bytes(), val(7, filler(i, 300))))
            .collect();
        write_all(&s, &more);
        s.sync().expect("sync");
        H::crash(s);
        if let Some(newest) = H::log_files(d.path()).last() {
            let len = std::fs::metadata(newest).map(|m| m.len()).unwrap_or(0);
            damage_file(newest, len, len, Damage::Garbage);
        }
        let s = reopen::<H>(d.path());
        assert_has_all(&s, &more);
        for (k, v) in &synced {
            let got = get(&s, k).expect("synced key survives two crashes");
            assert!(got == *v || got == val(10_000, "unsynced overwrite"));
        }
    }

    /// A damaged data block in a table surfaces as `StoreError::Corruption`
    /// (at open or on read), never as wrong or missing data.
    pub fn corrupted_table_block_is_detected<H: DurableStoreHarness>() {
        let (d, s) = fresh::<H>();
        let n = 3000u64;
        let key = |i: u64| format!("t{i:05}").into_bytes();
        let value = |i: u64| val(1, filler(i, 200));
        for i in 0..n {
            put(&s, &key(i), &value(i));
        }
        s.flush().expect("flush");
        s.sync().expect("sync");
        drop(s);

        let tables = H::table_files(d.path());
        let victim = tables
            .iter()
            .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .expect("a flushed store has table files");
        let mut bytes = std::fs::read(victim).expect("read table");
        let at = bytes.len() / 3;
        for b in &mut bytes[at..at + 16] {
            *b ^= 0xff;
        }
        std::fs::write(victim, &bytes).expect("write table");

        let s = match H::open(d.path(), GRACE) {
            Err(StoreError::Corruption { .. }) => return,
            Err(e) => panic!("a corrupt table must be reported as Corruption, got {e}"),
            Ok(s) => s,
        };
        let mut detected = 0;
        for i in 0..n {
            match s.get(&key(i)) {
                Ok(got) => assert_eq!(got, Some(value(i)), "key {i} served wrong or missing data"),
                Err(StoreError::Corruption { .. }) => detected += 1,
                Err(e) => panic!("expected Corruption, got {e}"),
            }
        }
        let mut start: Option<Vec<u8>> = None;
        let mut scan_detected = false;
        loop {
            let b = start.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            match s.range(b, Bound::Unbounded, 500) {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    for (k, v) in &page {
                        let i: u64 = std::str::from_utf8(&k[1..])
                            .expect("utf8")
                            .parse()
                            .expect("index");
                        assert_eq!(*v, value(i), "range served wrong data");
                    }
                    start = page.last().map(|(k, _)| k.to_vec());
                }
                Err(StoreError::Corruption { .. }) => {
                    scan_detected = true;
                    break;
                }
                Err(e) => panic!("expected Corruption, got {e}"),
            }
        }
        assert!(detected > 0, "no read reported the corrupt block");
        assert!(scan_detected, "a full scan must hit the corrupt block");
    }

    /// Compaction purges a tombstone only once the grace period has passed
    /// since its timestamp (here with the purge watermark out of the way),
    /// without resurrecting the value it hid; younger tombstones and live
    /// values stay.
    pub fn tombstones_purged_only_after_grace<H: DurableStoreHarness>() {
        let d = tempfile::tempdir().expect("temp dir");
        let grace = Duration::from_secs(3600);
        let s = H::open(d.path(), grace).expect("open");
        let now = now_micros();
        let hour = 3_600_000_000u64;
        put(&s, b"old", &val(now - 3 * hour, "buried"));
        put(&s, b"young", &val(now - 3 * hour, "buried too"));
        put(&s, b"live", &val(now - 3 * hour, "alive"));
        s.flush().expect("flush");
        put(&s, b"old", &tomb(now - 2 * hour));
        put(&s, b"young", &tomb(now - 60_000_000));
        s.flush().expect("flush");
        assert_eq!(
            get(&s, b"old"),
            Some(tomb(now - 2 * hour)),
            "not purged before compaction"
        );
        // Every replica has completed anti-entropy (the contract also asks
        // for a watermark above a tombstone before it goes).
        s.set_purge_watermark(u64::MAX);
        H::compact(&s).expect("compact");
        assert_eq!(
            get(&s, b"old"),
            None,
            "expired tombstone purged, value not resurrected"
        );
        assert_eq!(
            get(&s, b"young"),
            Some(tomb(now - 60_000_000)),
            "young tombstone kept"
        );
        assert_eq!(get(&s, b"live"), Some(val(now - 3 * hour, "alive")));
        let keys_left = keys(&all(&s));
        assert_eq!(keys_left, vec![b"live".to_vec(), b"young".to_vec()]);
        s.sync().expect("sync");
        drop(s);
        let s = H::open(d.path(), grace).expect("reopen");
        assert_eq!(get(&s, b"old"), None);
        assert_eq!(get(&s, b"young"), Some(tomb(now - 60_000_000)));
    }

    const HOUR: u64 = 3_600_000_000;

    /// A tombstone past the grace period stays while its timestamp is at or
    /// above the purge watermark (before any is set, and with one at or
    /// below its timestamp) and goes once the watermark passes it; a
    /// tombstone inside the grace period stays whatever the watermark.
    pub fn tombstones_kept_until_the_watermark_passes_them<H: PurgingStoreHarness>() {
        let d = tempfile::tempdir().expect("temp dir");
        let s = H::open(d.path(), Duration::from_secs(3600)).expect("open");
        let now = now_micros();
        let (ta, tb, young) = (now - 3 * HOUR, now - 2 * HOUR, now - 60_000_000);
        for k in [&b"a"[..], b"b", b"live"] {
            put(&s, k, &val(now - 4 * HOUR, "buried"));
        }
        s.flush().expect("flush");
        put(&s, b"a", &tomb(ta));
        put(&s, b"b", &tomb(tb));
        put(&s, b"young", &tomb(young));
        s.flush().expect("flush");
        let expect = |a: Option<Versioned>, b: Option<Versioned>, when: &str| {
            assert_eq!(get(&s, b"a"), a, "a {when}");
            assert_eq!(get(&s, b"b"), b, "b {when}");
            assert_eq!(get(&s, b"young"), Some(tomb(young)), "young {when}");
            assert_eq!(get(&s, b"live"), Some(val(now - 4 * HOUR, "buried")));
        };

        H::compact(&s).expect("compact");
        expect(Some(tomb(ta)), Some(tomb(tb)), "with no watermark set");
        s.set_purge_watermark(ta - 1);
        H::compact(&s).expect("compact");
        expect(
            Some(tomb(ta)),
            Some(tomb(tb)),
            "with the watermark below them",
        );
        s.set_purge_watermark(ta);
        H::compact(&s).expect("compact");
        expect(Some(tomb(ta)), Some(tomb(tb)), "at the watermark");
        s.set_purge_watermark(ta + 1);
        H::compact(&s).expect("compact");
        expect(None, Some(tomb(tb)), "once the watermark passes a only");
        s.set_purge_watermark(u64::MAX);
        H::compact(&s).expect("compact");
        expect(None, None, "once the watermark passes both");
        assert_eq!(keys(&all(&s)), vec![b"live".to_vec(), b"young".to_vec()]);
    }

    /// The purge watermark never goes back: a lower value set later is
    /// ignored, for tombstones already there and for later ones, and
    /// nothing purged comes back.
    pub fn purge_watermark_only_rises<H: PurgingStoreHarness>() {
        let d = tempfile::tempdir().expect("temp dir");
        let s = H::open(d.path(), Duration::from_secs(3600)).expect("open");
        let now = now_micros();
        for k in [&b"a"[..], b"b", b"c"] {
            put(&s, k, &val(now - 5 * HOUR, "buried"));
        }
        s.flush().expect("flush");
        put(&s, b"a", &tomb(now - 4 * HOUR));
        put(&s, b"b", &tomb(now - 3 * HOUR));
        s.flush().expect("flush");
        s.set_purge_watermark(now - 2 * HOUR);
        s.set_purge_watermark(now - 4 * HOUR);
        s.set_purge_watermark(0);
        H::compact(&s).expect("compact");
        assert_eq!(
            get(&s, b"a"),
            None,
            "lower watermarks set later are ignored"
        );
        assert_eq!(
            get(&s, b"b"),
            None,
            "lower watermarks set later are ignored"
        );

        s.set_purge_watermark(1);
        put(&s, b"c", &tomb(now - 150 * 60_000_000));
        put(&s, b"d", &tomb(now - 90 * 60_000_000));
        s.flush().expect("flush");
        H::compact(&s).expect("compact");
        assert_eq!(get(&s, b"c"), None, "the high watermark still holds");
        assert_eq!(
            get(&s, b"d"),
            Some(tomb(now - 90 * 60_000_000)),
            "above the watermark"
        );
        assert_eq!(get(&s, b"a"), None, "nothing purged comes back");
        assert_eq!(get(&s, b"b"), None, "nothing purged comes back");
        assert_eq!(keys(&all(&s)), vec![b"d".to_vec()]);
    }

    /// The purge watermark is not persisted: after a reopen it is zero
    /// again, so nothing is purged until it is set anew.
    pub fn purge_watermark_is_not_persisted<H: DurableStoreHarness>() {
        let d = tempfile::tempdir().expect("temp dir");
        let grace = Duration::from_secs(3600);
        let s = H::open(d.path(), grace).expect("open");
        let now = now_micros();
        put(&s, b"k", &val(now - 3 * HOUR, "buried"));
        s.flush().expect("flush");
        put(&s, b"k", &tomb(now - 2 * HOUR));
        s.flush().expect("flush");
        s.set_purge_watermark(u64::MAX);
        s.sync().expect("sync");
        drop(s);
        let s = H::open(d.path(), grace).expect("reopen");
        H::compact(&s).expect("compact");
        assert_eq!(
            get(&s, b"k"),
            Some(tomb(now - 2 * HOUR)),
            "a reopened store purges nothing before its watermark is set"
        );
        s.set_purge_watermark(u64::MAX);
        H::compact(&s).expect("compact");
        assert_eq!(get(&s, b"k"), None);
    }

    // ---- expiry ----

    /// A value's expiry is stored and returned with it, through `get`,
    /// `range` and `digests` (whose digest covers it). The store keeps no
    /// clock of its own: it returns an expired value like a tombstone, with
    /// its expiry, and the reader decides with [`Versioned::is_live_at`] at
    /// its own HLC time (the contract: an expired value reads as absent).
    pub fn expiry_round_trips_and_reads_as_the_contract_says<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        let v = exp(10, "ttl", 1_000);
        assert!(put(&s, b"k", &v));
        assert!(put(&s, b"empty", &exp(10, "", 5)));
        assert!(put(&s, b"plain", &val(10, "p")));
        assert_eq!(get(&s, b"k"), Some(v.clone()));
        assert_eq!(get(&s, b"empty"), Some(exp(10, "", 5)));
        assert_eq!(get(&s, b"plain").and_then(|p| p.expires), None);
        let got = get(&s, b"k").expect("stored");
        assert!(got.is_live_at(999) && !got.is_live_at(1_000));
        let listed = all(&s);
        assert_eq!(
            listed.iter().find(|(k, _)| &k[..] == b"k").map(|(_, v)| v),
            Some(&v)
        );
        let digests = s
            .digests(Bound::Unbounded, Bound::Unbounded, 100)
            .expect("digests");
        let d = digests.iter().find(|d| &d.key[..] == b"k").expect("listed");
        assert_eq!(d.digest, v.digest(b"k"));
        assert_ne!(
            d.digest,
            val(10, "ttl").digest(b"k"),
            "the digest covers the expiry"
        );
        // A newer write of the same value with another deadline replaces it.
        assert!(put(&s, b"k", &exp(11, "ttl", 2_000)));
        assert_eq!(get(&s, b"k"), Some(exp(11, "ttl", 2_000)));
        // And one without any deadline (PERSIST) replaces that.
        assert!(put(&s, b"k", &val(12, "ttl")));
        assert_eq!(get(&s, b"k"), Some(val(12, "ttl")));
        s.flush().expect("flush");
        assert_eq!(get(&s, b"k"), Some(val(12, "ttl")));
        assert_eq!(get(&s, b"empty"), Some(exp(10, "", 5)));
    }

    /// An expired version is still a version: it beats older ones under
    /// last-write-wins (before and after a flush), loses to newer ones, and
    /// at an equal timestamp resolves the same way on every store.
    pub fn expired_version_still_wins_lww_like_a_tombstone<H: StoreHarness>() {
        let (_d, s) = fresh::<H>();
        assert!(put(&s, b"k", &val(10, "old")));
        assert!(put(&s, b"k", &exp(20, "new", 21)));
        assert!(!put(&s, b"k", &val(15, "older write arriving late")));
        s.flush().expect("flush");
        assert!(!put(&s, b"k", &val(19, "another")));
        assert_eq!(get(&s, b"k"), Some(exp(20, "new", 21)));
        assert!(put(&s, b"k", &val(30, "newer")));
        assert_eq!(get(&s, b"k"), Some(val(30, "newer")));
        // Equal timestamp, equal value: the expiry decides, as lww_cmp says.
        let (a, b) = (val(40, "v"), exp(40, "v", 50));
        let want = if a.supersedes(&b) { &a } else { &b };
        for order in [[&a, &b], [&b, &a]] {
            let (_d, s) = fresh::<H>();
            for v in order {
                put(&s, b"t", v);
            }
            assert_eq!(get(&s, b"t").as_ref(), Some(want));
        }
    }

    /// An expired value is purged like a tombstone stamped at its expiry
    /// (later than its write): only once that is past the grace period and
    /// below the purge watermark, only by a compaction over every table, and
    /// the older value it shadowed never comes back. A value whose expiry
    /// is still inside the grace period (or in the future) stays.
    pub fn expired_values_purged_like_tombstones<H: PurgingStoreHarness>() {
        let d = tempfile::tempdir().expect("temp dir");
        let s = H::open(d.path(), Duration::from_secs(3600)).expect("open");
        let now = now_micros();
        for k in [&b"gone"[..], b"young", b"future", b"wm"] {
            put(&s, k, &val(now - 5 * HOUR, "buried"));
        }
        s.flush().expect("flush");
        // Written long ago, expired long ago: purgeable.
        let gone = exp(now - 4 * HOUR, "ttl", now - 3 * HOUR);
        // Written long ago, expired a minute ago: inside the grace period.
        let young = exp(now - 4 * HOUR, "ttl", now - 60_000_000);
        // Not expired at all.
        let future = exp(now - 4 * HOUR, "ttl", now + HOUR);
        // Expired long ago, but the watermark will sit between write and expiry.
        let wm = exp(now - 4 * HOUR, "ttl", now - 2 * HOUR);
        put(&s, b"gone", &gone);
        put(&s, b"young", &young);
        put(&s, b"future", &future);
        put(&s, b"wm", &wm);
        s.flush().expect("flush");
        H::compact(&s).expect("compact");
        assert_eq!(get(&s, b"gone"), Some(gone.clone()), "no watermark yet");
        // The watermark passes every write but not `wm`'s expiry.
        s.set_purge_watermark(now - 2 * HOUR - 1);
        H::compact(&s).expect("compact");
        assert_eq!(
            get(&s, b"gone"),
            None,
            "purged, and the older value stays buried"
        );
        assert_eq!(
            get(&s, b"wm"),
            Some(wm.clone()),
            "kept while the watermark is below its expiry (its write is below it)"
        );
        assert_eq!(get(&s, b"young"), Some(young.clone()), "inside the grace");
        assert_eq!(get(&s, b"future"), Some(future.clone()), "not expired");
        s.set_purge_watermark(u64::MAX);
        H::compact(&s).expect("compact");
        assert_eq!(
            get(&s, b"wm"),
            None,
            "purged once the watermark passes its expiry"
        );
        assert_eq!(get(&s, b"young"), Some(young));
        assert_eq!(get(&s, b"future"), Some(future));
        assert_eq!(keys(&all(&s)), vec![b"future".to_vec(), b"young".to_vec()]);
    }

    /// Expiries survive a reopen (from the log and from tables) and a
    /// compaction that purges nothing.
    pub fn expiry_survives_reopen_and_compaction<H: DurableStoreHarness>() {
        let (d, s) = fresh::<H>();
        let (a, b) = (exp(10, "in a table", 77), exp(11, "in the log", 88));
        put(&s, b"a", &a);
        s.flush().expect("flush");
        put(&s, b"b", &b);
        s.sync().expect("sync");
        drop(s);
        let s = reopen::<H>(d.path());
        assert_eq!(get(&s, b"a"), Some(a.clone()));
        assert_eq!(get(&s, b"b"), Some(b.clone()));
        H::compact(&s).expect("compact");
        assert_eq!(get(&s, b"a"), Some(a));
        assert_eq!(get(&s, b"b"), Some(b));
    }
}
