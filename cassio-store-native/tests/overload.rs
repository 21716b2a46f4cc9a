//! Bounded write queues: with the disk stalled (the `LogFaults` seam) and a
//! flood of large writes, writers wait and then get `StoreError::Overloaded`;
//! the bytes queued in the store (measured by its write-queue counters) and
//! its memtables never pass the configured caps.

use bytes::Bytes;
use cassio_core::{NodeId, Store, StoreError, Timestamp, Versioned};
use cassio_store_native::{NativeOptions, NativeStore, SyncPolicy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const VALUE: usize = 1 << 20;
const CAP: usize = 4 << 20;
const WRITERS: u64 = 32;
const PER_WRITER: u64 = 4;

fn v(i: u64) -> Versioned {
    Versioned::value(
        Timestamp::new(i + 1, 0, NodeId(1)),
        Bytes::from(vec![b'v'; VALUE]),
    )
}

fn opts(sync: SyncPolicy) -> NativeOptions {
    NativeOptions {
        sync,
        max_write_queue_bytes: CAP,
        write_queue_wait: Duration::from_millis(200),
        ..NativeOptions::default()
    }
}

struct Flood {
    overloaded: usize,
    ok_before_resume: usize,
    ok_after_resume: usize,
    peak_sampled: u64,
    peak_memtable: u64,
}

/// Stalls the log, floods the store with `WRITERS` threads of 1 MiB writes,
/// samples the queue and memtable sizes while stalled, then resumes.
fn flood(s: Arc<NativeStore>, only_syncs: bool) -> Flood {
    if only_syncs {
        s.log_faults().stall_syncs();
    } else {
        s.log_faults().stall();
    }
    let resumed = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..WRITERS)
        .map(|t| {
            let s = s.clone();
            let resumed = resumed.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in 0..PER_WRITER {
                    let r = s.apply(format!("w{t}-{i}").as_bytes(), &v(i));
                    out.push((r, resumed.load(Ordering::SeqCst)));
                }
                out
            })
        })
        .collect();
    let mut peak_sampled = 0;
    let mut peak_memtable = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let st = s.stats();
        peak_sampled = peak_sampled.max(st.write_queue_bytes);
        peak_memtable = peak_memtable.max(st.memtable_bytes);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        s.log_faults().stalled_operations() >= 1,
        "the stall caught a writer"
    );
    resumed.store(true, Ordering::SeqCst);
    s.log_faults().resume();
    let mut f = Flood {
        overloaded: 0,
        ok_before_resume: 0,
        ok_after_resume: 0,
        peak_sampled,
        peak_memtable,
    };
    for h in handles {
        for (r, after) in h.join().expect("writer thread") {
            match r {
                Ok(_) if after => f.ok_after_resume += 1,
                Ok(_) => f.ok_before_resume += 1,
                Err(StoreError::Overloaded { cap, .. }) => {
                    assert!(cap == CAP as u64 || cap <= 2, "cap {cap}");
                    f.overloaded += 1;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
    f
}

fn check(s: &NativeStore, f: &Flood, sync: SyncPolicy) {
    let st = s.stats();
    eprintln!(
        "{sync:?}: {} writes overloaded, {} ok during the stall, {} ok after; queue peak {} bytes \
         (sampled {}), memtable peak {} bytes, cap {CAP}",
        f.overloaded,
        f.ok_before_resume,
        f.ok_after_resume,
        st.write_queue_peak_bytes,
        f.peak_sampled,
        f.peak_memtable
    );
    assert!(f.overloaded > 0, "a flood on a stalled disk is refused");
    assert_eq!(st.writes_overloaded, f.overloaded as u64);
    assert!(
        st.write_queue_peak_bytes <= CAP as u64,
        "queued bytes {} passed the cap",
        st.write_queue_peak_bytes
    );
    assert!(f.peak_sampled <= CAP as u64);
    assert!(
        f.peak_memtable <= CAP as u64,
        "memtable grew to {} while the disk was stalled",
        f.peak_memtable
    );
    assert_eq!((st.write_queue_bytes, st.write_queue_len), (0, 0));
    // The store works once the disk does.
    s.apply(b"after", &v(9)).expect("write after the stall");
    s.sync().expect("sync after the stall");
    assert_eq!(s.get(b"after").expect("read"), Some(v(9)));
}

#[test]
fn a_stalled_fsync_under_always_bounds_the_group_commit_queue() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(NativeStore::open(dir.path(), opts(SyncPolicy::Always)).unwrap());
    let f = flood(s.clone(), true);
    // Under Always nothing is acknowledged while the fsync is stalled.
    assert_eq!(f.ok_before_resume, 0);
    check(&s, &f, SyncPolicy::Always);
}

#[test]
fn a_stalled_log_write_under_never_bounds_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(NativeStore::open(dir.path(), opts(SyncPolicy::Never)).unwrap());
    let f = flood(s.clone(), false);
    check(&s, &f, SyncPolicy::Never);
}
