//! Anti-entropy and hinted handoff between real `Node`s, driven by a
//! minimal in-test host: in-memory stores and hint logs, instant delivery,
//! virtual time. (The simulator in `conformance` judges them under faults.)

#[path = "support/mem_cluster.rs"]
mod mem_cluster;

use bytes::Bytes;
use cassio_core::node::storage_key;
use cassio_core::{ClientRequest, NodeId, RequestId, Timestamp, Versioned};
use mem_cluster::{Cluster, WALL0};
use std::ops::Bound;
use std::time::Duration;

fn ts(micros: u64) -> Timestamp {
    Timestamp::new(WALL0 - 1_000_000 + micros, 0, NodeId(9))
}

fn skey(i: u32) -> Bytes {
    storage_key("default", format!("key-{i}").as_bytes())
}

#[test]
fn a_replica_missing_keys_and_a_delete_converges_without_reads() {
    let mut c = Cluster::new(
        3,
        |c| c.repair.interval = Duration::from_secs(30),
        |i, h| {
            for k in 0..500u32 {
                // Node 3 (index 2) missed every key; node 2 missed a delete.
                if i < 2 {
                    h.store.insert(
                        skey(k),
                        Versioned::value(ts(1), Bytes::from(format!("v{k}"))),
                    );
                }
            }
            if i == 0 {
                h.store.insert(skey(7), Versioned::tombstone(ts(5)));
            }
            if i == 2 {
                // An old value node 3 alone holds for a key the others deleted.
                h.store
                    .insert(skey(7), Versioned::value(ts(0), Bytes::from_static(b"old")));
            }
        },
    );
    c.run_for(Duration::from_secs(90));
    let want = &c.hosts[0].store;
    assert_eq!(want.len(), 500);
    for (i, h) in c.hosts.iter().enumerate() {
        assert_eq!(&h.store, want, "node {} differs", i + 1);
    }
    assert_eq!(
        c.hosts[2].store.get(&skey(7)).map(|v| v.is_tombstone()),
        Some(true)
    );
    let roots: Vec<_> = c.nodes.iter().map(|n| n.tree_root("default")).collect();
    assert!(roots[0].is_some());
    assert!(roots.iter().all(|r| *r == roots[0]), "{roots:?}");
    let st = c.nodes[2].repair_status();
    assert!(st.rounds_completed >= 1, "{st:?}");
    assert!(st.repaired_through > 0);
    let pulled: u64 = c
        .nodes
        .iter()
        .map(|n| n.repair_status().items_pushed + n.repair_status().items_pulled)
        .sum();
    assert!(pulled >= 500, "moved only {pulled} items");
}

#[test]
fn hints_carry_writes_to_a_replica_that_was_down() {
    let mut c = Cluster::new(
        3,
        // No anti-entropy round within the test: what arrives came by hint.
        |c| c.repair.interval = Duration::from_secs(3600),
        |_, _| {},
    );
    c.run_for(Duration::from_secs(10));
    c.down.insert(2);
    c.run_for(Duration::from_secs(20));
    for k in 0..50u32 {
        let at = c.at();
        c.nodes[0].handle_client(
            at,
            RequestId(u64::from(k)),
            ClientRequest::put(format!("key-{k}"), format!("v{k}")),
        );
        c.pump();
    }
    c.run_for(Duration::from_secs(5));
    assert_eq!(c.replies.values().filter(|ok| **ok).count(), 50);
    assert!(c.hosts[2].store.is_empty());
    let held = c.nodes[0].hint_status();
    assert_eq!(held.stored, 50, "{held:?}");
    assert!(!c.hosts[0].hints.get(&NodeId(3)).is_none_or(Vec::is_empty));
    c.down.remove(&2);
    c.run_for(Duration::from_secs(30));
    assert_eq!(c.hosts[2].store.len(), 50, "hints delivered");
    assert_eq!(c.hosts[2].store, c.hosts[0].store);
    let after = c.nodes[0].hint_status();
    assert_eq!(after.delivered, 50, "{after:?}");
    assert!(after.pending_bytes.is_empty(), "{after:?}");
    assert!(
        c.hosts[0].hints.get(&NodeId(3)).is_none_or(Vec::is_empty),
        "trimmed"
    );
}

#[test]
fn a_hint_never_overwrites_a_newer_version() {
    let mut c = Cluster::new(
        3,
        |c| c.repair.interval = Duration::from_secs(3600),
        |_, _| {},
    );
    c.run_for(Duration::from_secs(10));
    c.down.insert(2);
    c.run_for(Duration::from_secs(20));
    let at = c.at();
    c.nodes[0].handle_client(at, RequestId(1), ClientRequest::put("k", "old"));
    c.run_for(Duration::from_secs(3));
    // Node 3 meanwhile got a newer version (as from another coordinator).
    let newer = Versioned::value(
        Timestamp::new(WALL0 + 3_600_000_000, 0, NodeId(2)),
        Bytes::from_static(b"new"),
    );
    c.hosts[2]
        .store
        .insert(storage_key("default", b"k"), newer.clone());
    c.down.remove(&2);
    c.run_for(Duration::from_secs(30));
    assert_eq!(c.nodes[0].hint_status().delivered, 1);
    assert_eq!(
        c.hosts[2].store.get(&storage_key("default", b"k")),
        Some(&newer)
    );
}

#[test]
fn storage_keys_are_in_token_order_and_split_back() {
    let a = storage_key("default", b"a");
    let (ks, t, k) = cassio_core::node::split_storage_key_token(&a).expect("split");
    assert_eq!((ks, k), ("default", b"a".as_slice()));
    assert_eq!(t, cassio_core::Token::of(b"a"));
    let mut keys: Vec<Bytes> = (0..100u32).map(skey).collect();
    keys.sort();
    let tokens: Vec<u64> = keys
        .iter()
        .map(|k| {
            cassio_core::node::split_storage_key_token(k)
                .expect("split")
                .1
                 .0
        })
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] <= w[1]));
    // Every key of the keyspace lies within the whole-ring bounds.
    let (lo, hi) = cassio_core::node::token_range_bounds(
        "default",
        cassio_core::Token(0),
        cassio_core::Token(u64::MAX),
    );
    let inside = |k: &Bytes| {
        (match &lo {
            Bound::Included(l) => k >= l,
            _ => false,
        }) && (match &hi {
            Bound::Excluded(h) => k < h,
            _ => false,
        })
    };
    assert!(keys.iter().all(inside));
    assert!(!inside(&storage_key("defaulu", b"a")));
}
