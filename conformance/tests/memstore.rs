//! The in-memory reference store passes the general store cases and the
//! tombstone-purge cases (its `compact` run on the wall clock).

use cassio_core::{NodeId, Store, Timestamp, Versioned};
use conformance::store::MemStoreHarness;
use conformance::MemStore;
use std::time::Duration;

conformance::store_tests!(MemStoreHarness);
conformance::purge_store_tests!(MemStoreHarness);
conformance::store_cases!(MemStoreHarness; apply_replacing_is_exact_under_concurrent_writers);

fn tomb(micros: u64) -> Versioned {
    Versioned::tombstone(Timestamp::new(micros, 0, NodeId(1)))
}

#[test]
fn compact_purges_by_the_time_it_is_given() {
    let s = MemStore::with_grace(Duration::from_micros(100));
    s.apply(b"t", &tomb(1_000)).expect("apply");
    s.set_purge_watermark(u64::MAX);
    assert_eq!(s.compact(1_100), 0, "exactly the grace period old: kept");
    assert_eq!(s.get(b"t").expect("get"), Some(tomb(1_000)));
    assert_eq!(s.compact(1_101), 1, "older than the grace period: purged");
    assert_eq!(s.get(b"t").expect("get"), None);
}

#[test]
fn a_store_made_with_new_never_purges() {
    let s = MemStore::new();
    s.apply(b"t", &tomb(1)).expect("apply");
    s.set_purge_watermark(u64::MAX);
    assert_eq!(s.compact(u64::MAX), 0);
    assert_eq!(s.get(b"t").expect("get"), Some(tomb(1)));
}

#[test]
fn the_watermark_only_rises_until_forgotten() {
    let s = MemStore::new();
    assert_eq!(s.purge_watermark(), 0, "zero when the store opens");
    s.set_purge_watermark(50);
    s.set_purge_watermark(10);
    assert_eq!(s.purge_watermark(), 50);
    s.forget_purge_watermark();
    assert_eq!(s.purge_watermark(), 0);
}
