//! The simulator's store model: `SimStore` passes the general store cases,
//! a crash keeps exactly what was synced, and `FaultyStore` injects what it
//! is told to.

use bytes::Bytes;
use cassio_core::{NodeId, Store, StoreError, Timestamp, Versioned};
use conformance::cluster::{FaultyStore, NodeStores, SimStore, SimStores, SimSync};
use conformance::store::StoreHarness;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// `SimStore` with every write synced (both of its maps are exercised).
struct SimStoreHarness;

impl StoreHarness for SimStoreHarness {
    type Store = SimStore;
    fn open(_dir: &Path, _grace: Duration) -> Result<SimStore, StoreError> {
        Ok(SimStore::new(SimSync::Always))
    }
}

conformance::store_tests!(SimStoreHarness);

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
