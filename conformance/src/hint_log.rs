//! The hint log conformance suite: every implementation of
//! [`cassio_core::HintLog`] runs the same cases, each a named `#[test]`,
//! one (at least) per sentence of the trait's contract.
//!
//! An implementation provides a harness and invokes the macros in a test file:
//!
//! ```ignore
//! struct H;
//! impl conformance::hint_log::HintLogHarness for H { /* open */ }
//! impl conformance::hint_log::DurableHintLogHarness for H { /* segment_files, crash */ }
//! conformance::hint_log_tests!(H);          // the general cases
//! conformance::durable_hint_log_tests!(H);  // reopen, crash, torn tail, corruption
//! ```
//!
//! Each case opens a fresh log in its own temporary directory (removed when
//! the case ends). The cases are plain generic functions in [`cases`], so an
//! implementation can also call one directly while debugging.

use cassio_core::{NodeId, StoreError};
use std::path::{Path, PathBuf};

/// What the hint log suite needs from an implementation.
pub trait HintLogHarness {
    /// The log under test.
    type Log: cassio_core::HintLog + 'static;
    /// Opens (creating if needed) a log in `dir`.
    fn open(dir: &Path) -> Result<Self::Log, StoreError>;
}

/// What the durability cases additionally need.
pub trait DurableHintLogHarness: HintLogHarness {
    /// The files holding `target`'s hints in `dir`, oldest first (the
    /// suite truncates and damages them).
    fn segment_files(dir: &Path, target: NodeId) -> Vec<PathBuf>;
    /// Simulates a process kill: the log goes away without closing or
    /// flushing anything more.
    fn crash(log: Self::Log);
}

/// The harness for the in-memory reference [`MemHintLog`](crate::MemHintLog)
/// (general cases only: it keeps nothing across a reopen).
#[derive(Debug)]
pub struct MemHintLogHarness;

impl HintLogHarness for MemHintLogHarness {
    type Log = crate::MemHintLog;
    fn open(_dir: &Path) -> Result<Self::Log, StoreError> {
        Ok(crate::MemHintLog::new())
    }
}

/// Expands, in the calling module, to one `#[test]` per general hint log
/// case for the harness type given (an implementation of [`HintLogHarness`]).
#[macro_export]
macro_rules! hint_log_tests {
    ($harness:ty) => {
        $crate::__hint_log_case_tests!(
            $harness;
            seqs_start_at_one_and_increase,
            seqs_are_per_target,
            seqs_are_not_reused_after_trim_or_drop,
            hints_round_trip_exactly,
            read_returns_hints_after_a_seq_in_order,
            read_stops_once_max_bytes_is_reached,
            read_returns_one_hint_even_over_max_bytes,
            read_pages_through_everything_once,
            read_of_unknown_target_or_past_the_end_is_empty,
            trim_forgets_through_inclusive,
            trim_is_idempotent_and_never_resurrects,
            drop_target_forgets_everything,
            backlog_matches_read,
            backlog_omits_targets_without_hints,
            targets_are_isolated,
            large_hints_across_many_megabytes,
            concurrent_appends_give_unique_seqs,
            concurrent_appends_reads_and_trims,
        );
    };
}

/// Expands, in the calling module, to one `#[test]` per durability case
/// (reopen, process kill, torn tail, flipped bytes) for the harness type
/// given (an implementation of [`DurableHintLogHarness`]).
#[macro_export]
macro_rules! durable_hint_log_tests {
    ($harness:ty) => {
        $crate::__hint_log_case_tests!(
            $harness;
            reopen_keeps_hints_and_seqs,
            reopen_keeps_trims_and_drops,
            seqs_are_not_reused_after_drop_and_reopen,
            killed_process_keeps_appended_hints,
            torn_tail_is_truncated_and_the_rest_served,
            garbage_after_the_tail_is_ignored,
            flipped_byte_in_the_newest_segment_is_never_served,
            flipped_byte_in_an_older_segment_is_never_served,
            appends_after_recovery_survive_another_crash,
        );
    };
}

/// Expands to the named cases only, for an implementation that must mark a
/// case it cannot honour: list the others here and that one in
/// [`known_failure_hint_log_case!`], so the failure stays visible.
#[macro_export]
macro_rules! hint_log_cases {
    ($harness:ty; $($case:ident),* $(,)?) => {
        $crate::__hint_log_case_tests!($harness; $($case),*);
    };
}

/// Expands to one case marked `#[ignore = reason]`: the implementation
/// cannot honour it, says why, and `cargo test -- --ignored` still runs it.
#[macro_export]
macro_rules! known_failure_hint_log_case {
    ($harness:ty, $case:ident, $reason:literal) => {
        #[test]
        #[ignore = $reason]
        fn $case() {
            $crate::hint_log::cases::$case::<$harness>();
        }
    };
}

/// Implementation detail of the hint log macros: one `#[test]` per case name.
#[doc(hidden)]
#[macro_export]
macro_rules! __hint_log_case_tests {
    ($harness:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::hint_log::cases::$case::<$harness>();
            }
        )*
    };
}

/// The cases, as generic functions (the macros call these).
pub mod cases {
    use super::{DurableHintLogHarness, HintLogHarness};
    use bytes::Bytes;
    use cassio_core::{Hint, HintBacklog, HintLog, NodeId, StoreError, Timestamp, Versioned};
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tempfile::TempDir;

    const A: NodeId = NodeId(0xA);
    const B: NodeId = NodeId(0xB);
    const C: NodeId = NodeId(0xC);
    /// A read budget that takes everything the cases append.
    const ALL: u64 = u64::MAX;

    fn fresh<H: HintLogHarness>() -> (TempDir, H::Log) {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = H::open(dir.path()).expect("open a fresh hint log");
        (dir, log)
    }

    fn reopen<H: HintLogHarness>(dir: &Path) -> H::Log {
        H::open(dir).expect("reopen the hint log")
    }

    /// Deterministic, seed-specific filler of `len` bytes.
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

    /// A hint whose every field depends on `i` (so a mix-up shows).
    fn hint(i: u64, value_len: usize) -> Hint {
        Hint {
            key: Bytes::from(format!("key-{i:06}")),
            version: Versioned {
                ts: Timestamp::new(1_000_000 + i, (i % 7) as u32, NodeId(i % 5 + 1)),
                value: Some(filler(i, value_len)),
                expires: None,
            },
            created_micros: 5_000_000 + i * 3,
        }
    }

    fn append<L: HintLog + ?Sized>(log: &L, target: NodeId, h: &Hint) -> u64 {
        log.append(target, h).expect("append")
    }

    fn read<L: HintLog + ?Sized>(
        log: &L,
        target: NodeId,
        after: u64,
        max: u64,
    ) -> Vec<(u64, Hint)> {
        log.read(target, after, max).expect("read")
    }

    /// Every held hint of `target`, by paging with a small budget; checks
    /// that sequence numbers strictly increase across pages.
    fn read_all<L: HintLog + ?Sized>(log: &L, target: NodeId) -> Vec<(u64, Hint)> {
        let mut out: Vec<(u64, Hint)> = Vec::new();
        let mut after = 0;
        // Bounded: each page holds at least one hint.
        for _ in 0..1_000_000 {
            let page = read(log, target, after, 256 * 1024);
            let Some(last) = page.last().map(|(s, _)| *s) else {
                return out;
            };
            for (s, _) in &page {
                assert!(*s > after, "read after {after} returned seq {s}");
                after = *s;
            }
            assert_eq!(after, last);
            out.extend(page);
        }
        panic!("read_all did not end");
    }

    fn charges(hints: &[(u64, Hint)]) -> u64 {
        hints.iter().map(|(_, h)| h.charge()).sum()
    }

    fn backlog_of<L: HintLog + ?Sized>(log: &L) -> BTreeMap<NodeId, HintBacklog> {
        let list = log.backlog().expect("backlog");
        let map: BTreeMap<_, _> = list.iter().copied().collect();
        assert_eq!(map.len(), list.len(), "a target is listed twice: {list:?}");
        map
    }

    /// What `read` returns for `target`, as a backlog entry.
    fn backlog_from_read<L: HintLog + ?Sized>(log: &L, target: NodeId) -> Option<HintBacklog> {
        let held = read_all(log, target);
        if held.is_empty() {
            return None;
        }
        Some(HintBacklog {
            count: held.len() as u64,
            bytes: charges(&held),
            first_seq: held.first().map_or(0, |(s, _)| *s),
            last_seq: held.last().map_or(0, |(s, _)| *s),
            oldest_micros: held
                .iter()
                .map(|(_, h)| h.created_micros)
                .min()
                .unwrap_or(0),
        })
    }

    /// `append` numbers a target's hints 1, 2, 3, … in order.
    pub fn seqs_start_at_one_and_increase<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let seqs: Vec<u64> = (0..20).map(|i| append(&log, A, &hint(i, 10))).collect();
        assert_eq!(seqs[0], 1, "the first hint is number 1");
        for w in seqs.windows(2) {
            assert!(w[1] > w[0], "sequence numbers must increase: {seqs:?}");
        }
    }

    /// Each target has its own sequence, starting at 1.
    pub fn seqs_are_per_target<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        for i in 0..5 {
            append(&log, A, &hint(i, 10));
        }
        assert_eq!(append(&log, B, &hint(100, 10)), 1);
        let a6 = append(&log, A, &hint(5, 10));
        assert!(a6 > 5, "A's sixth hint follows its fifth, got {a6}");
        assert_eq!(append(&log, B, &hint(101, 10)), 2);
    }

    /// Trimming or dropping every hint does not restart the numbering.
    pub fn seqs_are_not_reused_after_trim_or_drop<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let mut last = 0;
        for i in 0..3 {
            last = append(&log, A, &hint(i, 10));
        }
        log.trim(A, last).expect("trim");
        let after_trim = append(&log, A, &hint(3, 10));
        assert!(after_trim > last, "{after_trim} reuses a trimmed number");
        log.drop_target(A).expect("drop");
        let after_drop = append(&log, A, &hint(4, 10));
        assert!(
            after_drop > after_trim,
            "{after_drop} reuses a dropped number"
        );
        assert_eq!(read(&log, A, 0, ALL), vec![(after_drop, hint(4, 10))]);
    }

    /// Keys, values, tombstones and every timestamp field come back as given.
    pub fn hints_round_trip_exactly<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let given = vec![
            hint(1, 100),
            Hint {
                key: Bytes::new(),
                version: Versioned::value(Timestamp::new(u64::MAX, u32::MAX, NodeId(u64::MAX)), ""),
                created_micros: 0,
            },
            Hint {
                key: Bytes::from_static(b"\x00\xff\x00binary\n"),
                version: Versioned::tombstone(Timestamp::new(7, 3, NodeId(9))),
                created_micros: u64::MAX,
            },
            Hint {
                key: Bytes::from_static(b"empty value is not a tombstone"),
                version: Versioned::value(Timestamp::new(8, 0, NodeId(1)), Bytes::new()),
                created_micros: 12,
            },
        ];
        let seqs: Vec<u64> = given.iter().map(|h| append(&log, A, h)).collect();
        let got = read(&log, A, 0, ALL);
        let want: Vec<(u64, Hint)> = seqs.into_iter().zip(given).collect();
        assert_eq!(got, want);
        assert!(got[2].1.version.value.is_none(), "the tombstone stays one");
        assert_eq!(got[3].1.version.value.as_deref(), Some(&b""[..]));
    }

    /// `read(after)` returns exactly the held hints numbered above `after`, in order.
    pub fn read_returns_hints_after_a_seq_in_order<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let all: Vec<(u64, Hint)> = (0..10)
            .map(|i| {
                let h = hint(i, 50);
                (append(&log, A, &h), h)
            })
            .collect();
        assert_eq!(read(&log, A, 0, ALL), all);
        let after = all[3].0;
        assert_eq!(read(&log, A, after, ALL), all[4..].to_vec());
        // An `after` between two numbers (numbers need not be dense).
        assert_eq!(read(&log, A, all[9].0 - 1, ALL), all[9..].to_vec());
    }

    /// `read` stops once the summed charge reaches `max_bytes`, not before.
    pub fn read_stops_once_max_bytes_is_reached<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let all: Vec<(u64, Hint)> = (0..10)
            .map(|i| {
                let h = hint(i, 200);
                (append(&log, A, &h), h)
            })
            .collect();
        let each = all[0].1.charge();
        assert!(all.iter().all(|(_, h)| h.charge() == each));
        assert_eq!(
            read(&log, A, 0, 2 * each),
            all[..2].to_vec(),
            "reaches exactly"
        );
        assert_eq!(
            read(&log, A, 0, 2 * each + 1),
            all[..3].to_vec(),
            "reaches past"
        );
        assert_eq!(read(&log, A, 0, 2 * each - 1), all[..2].to_vec());
        assert_eq!(
            read(&log, A, all[7].0, 5 * each),
            all[8..].to_vec(),
            "runs out first"
        );
    }

    /// At least one hint comes back, even one larger than the budget (or a zero budget).
    pub fn read_returns_one_hint_even_over_max_bytes<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let big = hint(1, 100_000);
        let s1 = append(&log, A, &big);
        let s2 = append(&log, A, &hint(2, 10));
        assert_eq!(read(&log, A, 0, 1), vec![(s1, big.clone())]);
        assert_eq!(read(&log, A, 0, 0), vec![(s1, big)]);
        assert_eq!(read(&log, A, s1, 0), vec![(s2, hint(2, 10))]);
    }

    /// Paging by the last number read returns every hint exactly once.
    pub fn read_pages_through_everything_once<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let all: Vec<(u64, Hint)> = (0..500)
            .map(|i| {
                let h = hint(i, (i as usize * 37) % 3000);
                (append(&log, A, &h), h)
            })
            .collect();
        let mut got = Vec::new();
        let mut after = 0;
        let mut pages = 0;
        loop {
            let page = read(&log, A, after, 10_000);
            let Some((last, _)) = page.last() else {
                break;
            };
            after = *last;
            got.extend(page);
            pages += 1;
            assert!(pages <= all.len(), "paging does not end");
        }
        assert!(pages > 10, "a 10 kB budget must split ~750 kB into pages");
        assert_eq!(got, all);
    }

    /// An unknown target, or an `after` at or past the last number, reads nothing.
    pub fn read_of_unknown_target_or_past_the_end_is_empty<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        assert!(read(&log, A, 0, ALL).is_empty());
        let s = append(&log, A, &hint(1, 10));
        assert!(read(&log, B, 0, ALL).is_empty());
        assert!(read(&log, A, s, ALL).is_empty());
        assert!(read(&log, A, u64::MAX, ALL).is_empty());
    }

    /// `trim(through)` forgets the hints numbered up to `through`, inclusive.
    pub fn trim_forgets_through_inclusive<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let all: Vec<(u64, Hint)> = (0..10)
            .map(|i| {
                let h = hint(i, 30);
                (append(&log, A, &h), h)
            })
            .collect();
        log.trim(A, all[3].0).expect("trim");
        assert_eq!(read(&log, A, 0, ALL), all[4..].to_vec());
        // A later read from an earlier point still sees only held hints.
        assert_eq!(read(&log, A, all[1].0, 1), all[4..5].to_vec());
        log.trim(A, all[9].0).expect("trim everything");
        assert!(read(&log, A, 0, ALL).is_empty());
    }

    /// Trimming again, or to an earlier point, changes nothing; trimming
    /// past the end forgets everything and later hints are still held.
    pub fn trim_is_idempotent_and_never_resurrects<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let all: Vec<(u64, Hint)> = (0..6)
            .map(|i| {
                let h = hint(i, 30);
                (append(&log, A, &h), h)
            })
            .collect();
        log.trim(A, all[2].0).expect("trim");
        log.trim(A, all[2].0).expect("trim again");
        log.trim(A, all[0].0).expect("trim to an earlier point");
        log.trim(A, 0).expect("trim nothing");
        assert_eq!(read(&log, A, 0, ALL), all[3..].to_vec());
        log.trim(B, 100).expect("trim of an unknown target");
        log.trim(A, u64::MAX).expect("trim past the end");
        assert!(read(&log, A, 0, ALL).is_empty());
        let h = hint(6, 30);
        let s = append(&log, A, &h);
        assert_eq!(read(&log, A, 0, ALL), vec![(s, h)]);
    }

    /// `drop_target` forgets every hint of the target.
    pub fn drop_target_forgets_everything<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        for i in 0..50 {
            append(&log, A, &hint(i, 1000));
        }
        log.drop_target(A).expect("drop");
        assert!(read(&log, A, 0, ALL).is_empty());
        assert!(!backlog_of(&log).contains_key(&A));
        log.drop_target(A).expect("drop again");
        log.drop_target(B).expect("drop of an unknown target");
    }

    /// `backlog` reports, per target, what `read` would return.
    pub fn backlog_matches_read<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        // Creation times out of order, so the oldest is not the first.
        for i in 0..40u64 {
            let mut h = hint(i, (i as usize * 13) % 500);
            h.created_micros = 1_000 + (i * 7919) % 97;
            append(&log, A, &h);
            if i % 2 == 0 {
                append(&log, B, &hint(i, 10));
            }
        }
        append(&log, C, &hint(99, 0));
        let check = |when: &str| {
            let backlog = backlog_of(&log);
            for t in [A, B, C] {
                assert_eq!(
                    backlog.get(&t).copied(),
                    backlog_from_read(&log, t),
                    "{when}: backlog of {t}"
                );
            }
        };
        check("appended");
        let a = read_all(&log, A);
        // Trim A into its middle (past the oldest), B entirely.
        log.trim(A, a[17].0).expect("trim");
        log.trim(B, u64::MAX).expect("trim");
        check("trimmed");
        log.drop_target(C).expect("drop");
        check("dropped");
        append(&log, B, &hint(1000, 5));
        check("appended again");
    }

    /// A target with no held hints is not listed.
    pub fn backlog_omits_targets_without_hints<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        assert!(backlog_of(&log).is_empty());
        let s = append(&log, A, &hint(1, 10));
        append(&log, B, &hint(2, 10));
        log.trim(A, s).expect("trim");
        log.drop_target(B).expect("drop");
        assert!(backlog_of(&log).is_empty(), "{:?}", backlog_of(&log));
        append(&log, A, &hint(3, 10));
        assert_eq!(
            backlog_of(&log).keys().copied().collect::<Vec<_>>(),
            vec![A]
        );
    }

    /// What happens to one target's hints leaves the others' alone.
    pub fn targets_are_isolated<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let mut want: BTreeMap<NodeId, Vec<(u64, Hint)>> = BTreeMap::new();
        for i in 0..30u64 {
            for (n, t) in [A, B, C].into_iter().enumerate() {
                let h = hint(i * 3 + n as u64, 40);
                let s = append(&log, t, &h);
                want.entry(t).or_default().push((s, h));
            }
        }
        log.trim(A, want[&A][9].0).expect("trim");
        log.drop_target(B).expect("drop");
        assert_eq!(read(&log, A, 0, ALL), want[&A][10..].to_vec());
        assert!(read(&log, B, 0, ALL).is_empty());
        assert_eq!(read(&log, C, 0, ALL), want[&C]);
        let backlog = backlog_of(&log);
        assert_eq!(backlog.get(&C).map(|b| b.count), Some(30));
        assert_eq!(backlog.get(&A).map(|b| b.count), Some(20));
    }

    /// Megabyte hints over tens of megabytes (past any segment size a log
    /// might roll at) read back intact, and trims across them hold.
    pub fn large_hints_across_many_megabytes<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let all: Vec<(u64, Hint)> = (0..24)
            .map(|i| {
                let h = hint(i, 1024 * 1024 + i as usize);
                (append(&log, A, &h), h)
            })
            .collect();
        assert_eq!(read_all(&log, A), all);
        log.trim(A, all[10].0).expect("trim");
        assert_eq!(read(&log, A, 0, 1), all[11..12].to_vec());
        assert_eq!(read_all(&log, A), all[11..].to_vec());
        assert_eq!(backlog_of(&log).get(&A).map(|b| b.count), Some(13));
        log.trim(A, all[20].0).expect("trim");
        assert_eq!(read_all(&log, A), all[21..].to_vec());
    }

    /// Appends from many threads at once get distinct, per-thread increasing
    /// numbers, and every hint reads back under the number it was given.
    pub fn concurrent_appends_give_unique_seqs<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let log = Arc::new(log);
        const THREADS: u64 = 4;
        const PER: u64 = 300;
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..PER {
                        let h = hint(t * 10_000 + i, 64);
                        let s = append(&*log, A, &h);
                        // Every thread also has a target of its own.
                        append(&*log, NodeId(100 + t), &hint(i, 8));
                        mine.push((s, h));
                    }
                    mine
                })
            })
            .collect();
        let mut by_seq = BTreeMap::new();
        for h in handles {
            let mine = h.join().expect("appending thread");
            for w in mine.windows(2) {
                assert!(w[1].0 > w[0].0, "one thread's numbers must increase");
            }
            for (s, h) in mine {
                assert!(by_seq.insert(s, h).is_none(), "seq {s} handed out twice");
            }
        }
        let want: Vec<(u64, Hint)> = by_seq.into_iter().collect();
        assert_eq!(want.len() as u64, THREADS * PER);
        assert_eq!(read_all(&*log, A), want);
        for t in 0..THREADS {
            let own = read_all(&*log, NodeId(100 + t));
            assert_eq!(own.len() as u64, PER);
            assert_eq!(own[0].0, 1);
        }
    }

    /// A reader that trims what it read, running beside writers, sees
    /// every appended hint once, in order, intact.
    pub fn concurrent_appends_reads_and_trims<H: HintLogHarness>() {
        let (_d, log) = fresh::<H>();
        let log = Arc::new(log);
        const WRITERS: u64 = 2;
        const PER: u64 = 500;
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let log = log.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut got: Vec<(u64, Hint)> = Vec::new();
                let mut after = 0;
                // Bounded: the writers end, and then one empty read ends it.
                for _ in 0..10_000_000u64 {
                    let finished = done.load(Ordering::Acquire);
                    let page = read(&*log, A, after, 4096);
                    if page.is_empty() && finished {
                        return got;
                    }
                    for (s, _) in &page {
                        assert!(*s > after, "read after {after} returned {s}");
                        after = *s;
                    }
                    if !page.is_empty() {
                        log.trim(A, after).expect("trim");
                    }
                    got.extend(page);
                }
                panic!("reader did not finish");
            })
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    (0..PER)
                        .map(|i| {
                            let h = hint(t * 10_000 + i, (i as usize * 31) % 700);
                            (append(&*log, A, &h), h)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut want = BTreeMap::new();
        for w in writers {
            want.extend(w.join().expect("writer"));
        }
        done.store(true, Ordering::Release);
        let got = reader.join().expect("reader");
        let want: Vec<(u64, Hint)> = want.into_iter().collect();
        assert_eq!(got.len(), want.len(), "every hint read exactly once");
        assert_eq!(got, want);
        assert!(
            read(&*log, A, 0, ALL).is_empty(),
            "the reader trimmed everything"
        );
    }

    // ---- durability ----

    fn append_many<L: HintLog + ?Sized>(
        log: &L,
        target: NodeId,
        from: u64,
        n: u64,
        value_len: usize,
    ) -> Vec<(u64, Hint)> {
        (from..from + n)
            .map(|i| {
                let h = hint(i, value_len);
                (append(log, target, &h), h)
            })
            .collect()
    }

    /// A clean reopen keeps every hint and continues the numbering.
    pub fn reopen_keeps_hints_and_seqs<H: DurableHintLogHarness>() {
        let (d, log) = fresh::<H>();
        let a = append_many(&log, A, 0, 100, 300);
        let b = append_many(&log, B, 1000, 10, 5000);
        drop(log);
        let log = reopen::<H>(d.path());
        assert_eq!(read_all(&log, A), a);
        assert_eq!(read_all(&log, B), b);
        assert_eq!(
            backlog_of(&log).get(&A).copied(),
            backlog_from_read(&log, A)
        );
        let next = append(&log, A, &hint(100, 300));
        assert!(
            next > a[99].0,
            "{next} reuses a number from before the reopen"
        );
        drop(log);
        let log = reopen::<H>(d.path());
        assert_eq!(read_all(&log, A).len(), 101);
    }

    /// Trimmed and dropped hints stay forgotten across a clean reopen.
    pub fn reopen_keeps_trims_and_drops<H: DurableHintLogHarness>() {
        let (d, log) = fresh::<H>();
        let a = append_many(&log, A, 0, 100, 300);
        append_many(&log, B, 1000, 10, 300);
        log.trim(A, a[41].0).expect("trim");
        log.drop_target(B).expect("drop");
        drop(log);
        let log = reopen::<H>(d.path());
        assert_eq!(read_all(&log, A), a[42..].to_vec());
        assert!(read_all(&log, B).is_empty());
        assert_eq!(
            backlog_of(&log).get(&A).copied(),
            backlog_from_read(&log, A)
        );
        assert!(!backlog_of(&log).contains_key(&B));
    }

    /// Numbers are not reused after everything was trimmed or dropped and
    /// the log reopened.
    pub fn seqs_are_not_reused_after_drop_and_reopen<H: DurableHintLogHarness>() {
        let (d, log) = fresh::<H>();
        let a = append_many(&log, A, 0, 5, 10);
        let b = append_many(&log, B, 0, 5, 10);
        log.drop_target(A).expect("drop");
        log.trim(B, b[4].0).expect("trim");
        drop(log);
        let log = reopen::<H>(d.path());
        let na = append(&log, A, &hint(9, 10));
        let nb = append(&log, B, &hint(9, 10));
        assert!(na > a[4].0, "A: {na} reuses a dropped number");
        assert!(nb > b[4].0, "B: {nb} reuses a trimmed number");
    }

    /// A killed process (not a power loss) loses no appended hint.
    pub fn killed_process_keeps_appended_hints<H: DurableHintLogHarness>() {
        let (d, log) = fresh::<H>();
        let a = append_many(&log, A, 0, 200, 100);
        H::crash(log);
        let log = reopen::<H>(d.path());
        assert_eq!(read_all(&log, A), a);
    }

    /// Cuts `len_cut` bytes off the end of `file`.
    fn truncate_by(file: &Path, len_cut: u64) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .expect("open segment");
        let len = f.metadata().expect("segment length").len();
        f.set_len(len.saturating_sub(len_cut)).expect("truncate");
    }

    /// Flips one byte of `file` at `at` (a fraction of its length).
    fn flip_byte(file: &Path, at: f64) {
        let mut bytes = std::fs::read(file).expect("read segment");
        assert!(!bytes.is_empty(), "{} is empty", file.display());
        let i = ((bytes.len() as f64 * at) as usize).min(bytes.len() - 1);
        bytes[i] ^= 0x5A;
        std::fs::write(file, bytes).expect("write segment");
    }

    /// After damage: a read either reports corruption or returns only hints
    /// equal to the ones appended under those numbers; returns what it read.
    fn served_intact<L: HintLog + ?Sized>(
        log: &L,
        target: NodeId,
        appended: &[(u64, Hint)],
    ) -> Vec<(u64, Hint)> {
        let want: BTreeMap<u64, &Hint> = appended.iter().map(|(s, h)| (*s, h)).collect();
        let mut got = Vec::new();
        let mut after = 0;
        for _ in 0..1_000_000 {
            let page = match log.read(target, after, 256 * 1024) {
                Ok(p) => p,
                Err(StoreError::Corruption { .. }) => return got,
                Err(e) => panic!("read after damage failed with a non-corruption error: {e}"),
            };
            let Some((last, _)) = page.last() else {
                return got;
            };
            after = *last;
            for (s, h) in page {
                assert_eq!(want.get(&s).copied(), Some(&h), "seq {s} served damaged");
                got.push((s, h));
            }
        }
        panic!("reading after damage did not end");
    }

    fn newest_segment<H: DurableHintLogHarness>(dir: &Path, target: NodeId) -> std::path::PathBuf {
        H::segment_files(dir, target)
            .pop()
            .expect("the target has a segment file")
    }

    /// A last record cut short by a crash is dropped; every earlier hint is
    /// served, and the log stays appendable.
    pub fn torn_tail_is_truncated_and_the_rest_served<H: DurableHintLogHarness>() {
        let (d, log) = fresh::<H>();
        let mut a = append_many(&log, A, 0, 50, 200);
        a.extend(append_many(&log, A, 50, 1, 4000));
        H::crash(log);
        truncate_by(&newest_segment::<H>(d.path(), A), 1500);
        let log = reopen::<H>(d.path());
        assert_eq!(read_all(&log, A), a[..50].to_vec());
        assert_eq!(
            backlog_of(&log).get(&A).copied(),
            backlog_from_read(&log, A)
        );
        let h = hint(77, 100);
        let s = append(&log, A, &h);
        assert!(s > a[49].0);
        assert_eq!(read(&log, A, a[49].0, ALL), vec![(s, h)]);
    }

    /// Zeros or garbage after the last whole record are ignored.
    pub fn garbage_after_the_tail_is_ignored<H: DurableHintLogHarness>() {
        let (d, log) = fresh::<H>();
        let a = append_many(&log, A, 0, 30, 200);
        H::crash(log);
        let seg = newest_segment::<H>(d.path(), A);
        let mut bytes = std::fs::read(&seg).expect("read");
        bytes.extend(std::iter::repeat_n(0u8, 700));
        bytes.extend(filler(3, 700).iter().copied());
        std::fs::write(&seg, bytes).expect("write");
        let log = reopen::<H>(d.path());
        assert_eq!(read_all(&log, A), a);
        let h = hint(31, 200);
        let s = append(&log, A, &h);
        assert_eq!(read(&log, A, a[29].0, ALL), vec![(s, h)]);
    }

    /// Reopens after damage: either the open reports corruption, or reads
    /// serve only intact hints and never the damaged one; the log then
    /// takes new hints above every earlier number.
    fn check_damage<H: DurableHintLogHarness>(d: &Path, a: &[(u64, Hint)]) -> Option<H::Log> {
        let log = match H::open(d) {
            Ok(l) => l,
            Err(StoreError::Corruption { .. }) => return None,
            Err(e) => panic!("open after damage failed with a non-corruption error: {e}"),
        };
        let served = served_intact(&log, A, a);
        assert!(
            served.len() < a.len(),
            "every hint was served although one was damaged"
        );
        Some(log)
    }

    /// A flipped byte inside the newest segment is never served.
    pub fn flipped_byte_in_the_newest_segment_is_never_served<H: DurableHintLogHarness>() {
        for at in [0.01, 0.5, 0.97] {
            let (d, log) = fresh::<H>();
            let a = append_many(&log, A, 0, 60, 300);
            H::crash(log);
            flip_byte(&newest_segment::<H>(d.path(), A), at);
            if let Some(log) = check_damage::<H>(d.path(), &a) {
                let s = append(&log, A, &hint(99, 10));
                assert_eq!(read(&log, A, s - 1, ALL), vec![(s, hint(99, 10))]);
            }
        }
    }

    /// A flipped byte inside an older segment is never served (when the log
    /// keeps more than one file; otherwise the only one is damaged).
    pub fn flipped_byte_in_an_older_segment_is_never_served<H: DurableHintLogHarness>() {
        // In a value, and (at the half of equal records) likely on a frame.
        for at in [0.37, 0.5] {
            let (d, log) = fresh::<H>();
            let mut a = Vec::new();
            // Up to 48 MiB, until there are three files.
            for i in 0..192u64 {
                a.extend(append_many(&log, A, i, 1, 256 * 1024));
                if H::segment_files(d.path(), A).len() >= 3 {
                    break;
                }
            }
            H::crash(log);
            let files = H::segment_files(d.path(), A);
            let first = files.first().expect("a segment file");
            flip_byte(first, at);
            if let Some(log) = check_damage::<H>(d.path(), &a) {
                let s = append(&log, A, &hint(999, 10));
                if files.len() >= 2 {
                    // The newest file was intact: its hints set the numbering.
                    let last = a.last().map_or(0, |(s, _)| *s);
                    assert!(s > last, "{s} reuses a number up to {last}");
                }
                assert_eq!(read(&log, A, s - 1, ALL), vec![(s, hint(999, 10))]);
            }
        }
    }

    /// After recovering from a torn tail, new hints survive the next crash.
    pub fn appends_after_recovery_survive_another_crash<H: DurableHintLogHarness>() {
        let (d, log) = fresh::<H>();
        let a = append_many(&log, A, 0, 40, 500);
        H::crash(log);
        truncate_by(&newest_segment::<H>(d.path(), A), 100);
        let log = reopen::<H>(d.path());
        let kept = read_all(&log, A);
        assert_eq!(kept, a[..39].to_vec());
        let more = append_many(&log, A, 100, 40, 500);
        H::crash(log);
        let log = reopen::<H>(d.path());
        let mut want = kept;
        want.extend(more);
        assert_eq!(read_all(&log, A), want);
        let numbers: BTreeSet<u64> = want.iter().map(|(s, _)| *s).collect();
        assert_eq!(numbers.len(), want.len());
    }
}
