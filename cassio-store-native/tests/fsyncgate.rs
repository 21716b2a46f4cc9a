//! fsyncgate: a failed fsync (or write) of the commit log poisons it. Every
//! writer waiting on that group commit gets the error, and every later write,
//! sync and flush fails with `StoreError::Poisoned` until the store is
//! reopened, even once the disk would accept an fsync again (Linux may have
//! dropped the dirty pages the failed fsync was about, so a later "success"
//! would report durability falsely). Faults come from the `LogFaults` seam.

use bytes::Bytes;
use cassio_core::{NodeId, Store, StoreError, Timestamp, Versioned};
use cassio_store_native::{NativeOptions, NativeStore, SyncPolicy};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn v(i: u64, len: usize) -> Versioned {
    Versioned::value(
        Timestamp::new(i + 1, 0, NodeId(1)),
        Bytes::from(vec![b'x'; len]),
    )
}

fn opts(sync: SyncPolicy) -> NativeOptions {
    NativeOptions {
        sync,
        ..NativeOptions::default()
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn is_poisoned<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    match r {
        Err(e @ StoreError::Poisoned { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("commit log poisoned by an earlier fsync failure; reopen the store"),
                "{msg}"
            );
            true
        }
        _ => false,
    }
}

/// Every later write, sync and flush fails; reads still work.
fn assert_refuses_everything(s: &NativeStore) {
    assert!(is_poisoned(&s.apply(b"later", &v(1000, 10))), "apply");
    assert!(is_poisoned(&s.sync()), "sync");
    assert!(is_poisoned(&s.flush()), "flush");
    assert!(s.stats().log_poisoned);
    assert_eq!(s.get(b"later").expect("reads still work"), None);
}

#[test]
fn every_waiter_of_a_failed_group_commit_gets_the_error_and_the_store_stays_poisoned() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(NativeStore::open(dir.path(), opts(SyncPolicy::Always)).unwrap());
    for i in 0..10u64 {
        s.apply(format!("before-{i}").as_bytes(), &v(i, 50))
            .unwrap();
    }
    // Hold the next fsync in a stall so a whole group of writers queues
    // behind it, then make it fail.
    s.log_faults().stall();
    const WRITERS: u64 = 16;
    let handles: Vec<_> = (0..WRITERS)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || s.apply(format!("group-{t}").as_bytes(), &v(t, 50)))
        })
        .collect();
    wait_for("the group to queue", || {
        s.log_faults().stalled_operations() == 1 && s.stats().write_queue_len == WRITERS
    });
    s.log_faults().fail_next_syncs(1);
    s.log_faults().resume();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let poisoned = results.iter().filter(|r| is_poisoned(r)).count();
    assert_eq!(
        poisoned, WRITERS as usize,
        "every writer of the failed group got the error: {results:?}"
    );
    // The disk "works" again, but nothing may claim durability any more.
    assert_refuses_everything(&s);
    let fsyncs = s.stats().log_fsyncs;
    assert!(is_poisoned(&s.sync()));
    assert_eq!(s.stats().log_fsyncs, fsyncs, "no fsync after poisoning");

    // Reopening replays what really reached the disk and accepts writes.
    drop(Arc::try_unwrap(s).unwrap());
    let s = NativeStore::open(dir.path(), opts(SyncPolicy::Always)).unwrap();
    for i in 0..10u64 {
        assert_eq!(
            s.get(format!("before-{i}").as_bytes()).unwrap(),
            Some(v(i, 50)),
            "writes acknowledged before the failure survive"
        );
    }
    assert!(s.apply(b"after-reopen", &v(1, 10)).unwrap());
    s.sync().unwrap();
    assert!(!s.stats().log_poisoned);
}

#[test]
fn a_failed_explicit_sync_poisons_under_never() {
    let dir = tempfile::tempdir().unwrap();
    let s = NativeStore::open(dir.path(), opts(SyncPolicy::Never)).unwrap();
    s.apply(b"a", &v(1, 10)).unwrap();
    s.sync().unwrap();
    s.apply(b"b", &v(2, 10)).unwrap();
    s.log_faults().fail_next_syncs(1);
    assert!(is_poisoned(&s.sync()), "the failing sync reports it");
    // A retry would succeed at the disk, and must still fail.
    assert_refuses_everything(&s);
}

#[test]
fn a_failed_periodic_sync_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = NativeStore::open(
        dir.path(),
        opts(SyncPolicy::Periodic(Duration::from_millis(5))),
    )
    .unwrap();
    s.log_faults().fail_next_syncs(1);
    s.apply(b"a", &v(1, 10)).unwrap();
    wait_for("the periodic sync to fail", || s.stats().log_poisoned);
    assert_refuses_everything(&s);
}

#[test]
fn a_failed_log_write_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = NativeStore::open(dir.path(), opts(SyncPolicy::Never)).unwrap();
    s.log_faults().fail_next_writes(1);
    // Larger than the 256 KiB log buffer, so it reaches the file at once.
    let r = s.apply(b"big", &v(1, 512 * 1024));
    assert!(is_poisoned(&r), "{r:?}");
    assert_refuses_everything(&s);
}
