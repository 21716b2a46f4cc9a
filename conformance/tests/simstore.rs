//! The simulator's store model: `SimStore` passes the general store cases,
//! a crash keeps exactly what was synced, and `FaultyStore` injects what it
//! is told to.

use bytes::Bytes;
use cassio_core::{ApplyOutcome, NodeId, Store, StoreError, Timestamp, Versioned};
use conformance::cluster::{FaultyStore, NodeStores, SimStore, SimStores, SimSync};
use conformance::store::{PurgingStoreHarness, StoreHarness};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `SimStore` with every write synced (both of its maps are exercised).
struct SimStoreHarness;

impl StoreHarness for SimStoreHarness {
    type Store = SimStore;
    fn open(_dir: &Path, grace: Duration) -> Result<SimStore, StoreError> {
        Ok(SimStore::with_grace(SimSync::Always, grace))
    }
}

impl PurgingStoreHarness for SimStoreHarness {
    fn compact(store: &SimStore) -> Result<(), StoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_micros() as u64;
        store.compact(now);
        Ok(())
    }
}

conformance::store_tests!(SimStoreHarness);
conformance::purge_store_tests!(SimStoreHarness);
conformance::store_cases!(SimStoreHarness; apply_replacing_is_exact_under_concurrent_writers);

fn v(micros: u64, value: &'static str) -> Versioned {
    Versioned::value(
        Timestamp::new(micros, 0, NodeId(1)),
        Bytes::from_static(value.as_bytes()),
    )
}

fn value_of(s: &dyn Store, key: &[u8]) -> Option<Bytes> {
    s.get(key).expect("get").and_then(|v| v.value)
}

#[test]
fn a_crash_keeps_synced_writes_and_drops_the_rest() {
    let stores = SimStores::new(SimSync::Never);
    let id = NodeId(1);
    let s = stores.open(id);
    s.apply(b"a", &v(1, "synced")).expect("apply");
    s.sync().expect("sync");
    s.apply(b"a", &v(2, "unsynced")).expect("apply");
    s.apply(b"b", &v(3, "unsynced")).expect("apply");
    assert_eq!(value_of(&*s, b"a").as_deref(), Some(&b"unsynced"[..]));
    let s = stores.crash(id, s);
    assert_eq!(value_of(&*s, b"a").as_deref(), Some(&b"synced"[..]));
    assert_eq!(value_of(&*s, b"b"), None);
}

#[test]
fn sync_always_survives_a_crash_and_the_broken_model_does_not() {
    let good = SimStores::new(SimSync::Always);
    let s = good.open(NodeId(1));
    s.apply(b"a", &v(1, "x")).expect("apply");
    let s = good.crash(NodeId(1), s);
    assert_eq!(value_of(&*s, b"a").as_deref(), Some(&b"x"[..]));

    let broken = SimStores::losing_synced_writes(SimSync::Always);
    let s = broken.open(NodeId(1));
    s.apply(b"a", &v(1, "x")).expect("apply");
    s.sync().expect("sync");
    let s = broken.crash(NodeId(1), s);
    assert_eq!(value_of(&*s, b"a"), None);
}

#[test]
fn periodic_policy_asks_the_host_to_sync_on_a_timer() {
    assert_eq!(
        SimStores::new(SimSync::Periodic(Duration::from_millis(250))).sync_interval(),
        Some(Duration::from_millis(250))
    );
    assert_eq!(SimStores::new(SimSync::Never).sync_interval(), None);
}

#[test]
fn faulty_store_drops_every_nth_apply_but_acknowledges_it() {
    let inner: Arc<dyn Store> = Arc::new(conformance::MemStore::new());
    let f = FaultyStore::new(Arc::clone(&inner), 1);
    f.set_drop_every(Some(3));
    let mut kept = Vec::new();
    for i in 1..=6u64 {
        let key = format!("k{i}");
        assert!(f.apply(key.as_bytes(), &v(i, "x")).expect("acknowledged"));
        kept.push(inner.get(key.as_bytes()).expect("get").is_some());
    }
    assert_eq!(kept, [true, true, false, true, true, false]);
}

#[test]
fn faulty_store_fails_the_fraction_it_is_told_to() {
    let f = FaultyStore::new(Arc::new(conformance::MemStore::new()), 7);
    f.set_error_rate(1.0);
    assert!(f.apply(b"k", &v(1, "x")).is_err());
    assert!(f.get(b"k").is_err());
    f.set_error_rate(0.5);
    let failures = (0..1000).filter(|_| f.get(b"k").is_err()).count();
    assert!((350..650).contains(&failures), "{failures} of 1000 failed");
    f.set_error_rate(0.0);
    assert!(f.apply(b"k", &v(1, "x")).is_ok());
}

fn tomb(micros: u64) -> Versioned {
    Versioned::tombstone(Timestamp::new(micros, 0, NodeId(1)))
}

#[test]
fn compaction_purges_what_a_crash_leaves_too() {
    let stores = SimStores::with_grace(SimSync::Never, Duration::from_micros(10));
    let id = NodeId(1);
    let s = stores.open(id);
    s.apply(b"a", &v(1, "x")).expect("apply");
    s.apply(b"a", &tomb(100)).expect("apply");
    s.sync().expect("sync");
    s.set_purge_watermark(1_000);
    stores.compact(id, 1_000);
    assert_eq!(s.get(b"a").expect("get"), None, "purged");
    let s = stores.crash(id, s);
    assert_eq!(
        s.get(b"a").expect("get"),
        None,
        "the purge reached what a crash leaves: the value stays buried"
    );
}

#[test]
fn a_crash_forgets_the_purge_watermark() {
    let stores = SimStores::with_grace(SimSync::Always, Duration::from_micros(10));
    let id = NodeId(1);
    let s = stores.open(id);
    s.set_purge_watermark(1_000);
    let s = stores.crash(id, s);
    s.apply(b"a", &tomb(100)).expect("apply");
    stores.compact(id, 1_000);
    assert_eq!(
        s.get(b"a").expect("get"),
        Some(tomb(100)),
        "no purge before the restarted node sets the watermark"
    );
    s.set_purge_watermark(1_000);
    stores.compact(id, 1_000);
    assert_eq!(s.get(b"a").expect("get"), None);
}

#[test]
fn stores_opened_without_grace_never_purge() {
    let stores = SimStores::new(SimSync::Always);
    let id = NodeId(1);
    let s = stores.open(id);
    s.apply(b"a", &tomb(1)).expect("apply");
    s.set_purge_watermark(u64::MAX);
    stores.compact(id, u64::MAX);
    assert_eq!(s.get(b"a").expect("get"), Some(tomb(1)));
}

#[test]
fn faulty_store_fails_and_drops_apply_replacing_like_apply() {
    let inner: Arc<dyn Store> = Arc::new(conformance::MemStore::new());
    let f = FaultyStore::new(Arc::clone(&inner), 3);
    f.set_error_rate(1.0);
    assert!(f.apply_replacing(b"k", &v(1, "x")).is_err());
    assert_eq!(
        inner.get(b"k").expect("get"),
        None,
        "a failed write changes nothing"
    );
    f.set_error_rate(0.0);
    assert_eq!(
        f.apply_replacing(b"k", &v(1, "x")).expect("apply"),
        ApplyOutcome::Kept { replaced: None }
    );
    f.set_drop_every(Some(2));
    // The drop counter is shared with `apply`: this is the second apply.
    assert_eq!(
        f.apply_replacing(b"k", &v(2, "dropped"))
            .expect("acknowledged"),
        ApplyOutcome::Kept {
            replaced: Some(v(1, "x"))
        }
    );
    assert_eq!(
        inner.get(b"k").expect("get"),
        Some(v(1, "x")),
        "not applied"
    );
    assert!(f.apply(b"k", &v(3, "y")).expect("apply"));
    assert!(f.apply(b"k", &v(4, "dropped")).expect("acknowledged"));
    assert_eq!(inner.get(b"k").expect("get"), Some(v(3, "y")));
}
