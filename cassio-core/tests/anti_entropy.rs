//! Anti-entropy and hinted handoff between real `Node`s, driven by a
//! minimal in-test host: in-memory stores and hint logs, instant delivery,
//! virtual time. (The simulator in `conformance` judges them under faults.)

use bytes::Bytes;
use cassio_core::hint_log::Hint;
use cassio_core::node::storage_key;
use cassio_core::store::{ApplyOutcome, KeyDigest};
use cassio_core::{
    ClientRequest, Config, Instant, Node, NodeId, Now, Output, RequestId, StorageOp, StorageResult,
    Timestamp, Versioned,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;
use std::time::Duration;

const WALL0: u64 = 1_800_000_000_000_000;

#[derive(Default)]
struct Host {
    store: BTreeMap<Bytes, Versioned>,
    hints: BTreeMap<NodeId, Vec<(u64, Hint)>>,
    next_seq: BTreeMap<NodeId, u64>,
}

impl Host {
    fn apply(&mut self, key: Bytes, v: Versioned) -> ApplyOutcome {
        match self.store.get(&key) {
            Some(old) if !v.supersedes(old) => ApplyOutcome::Superseded,
            old => {
                let replaced = old.cloned();
                self.store.insert(key, v);
                ApplyOutcome::Kept { replaced }
            }
        }
    }

    fn run(&mut self, op: StorageOp) -> StorageResult {
        match op {
            StorageOp::Apply { key, version } => {
                StorageResult::Applied(Ok(self.apply(key, version)))
            }
            StorageOp::Get { key } => StorageResult::Got(Ok(self.store.get(&key).cloned())),
            StorageOp::ApplyBatch { items } => StorageResult::AppliedBatch(Ok(items
                .into_iter()
                .map(|(k, v)| self.apply(k, v))
                .collect())),
            StorageOp::GetBatch { keys } => StorageResult::GotBatch(Ok(keys
                .iter()
                .map(|k| self.store.get(k).cloned())
                .collect())),
            StorageOp::Digests { start, end, limit } => StorageResult::Digests(Ok(self
                .store
                .range::<Bytes, _>((start, end))
                .take(limit)
                .map(|(k, v)| KeyDigest::of(k.clone(), v))
                .collect())),
            StorageOp::SetPurgeWatermark { .. } => StorageResult::WatermarkSet,
            StorageOp::HintAppend { target, hint } => {
                let seq = self.next_seq.entry(target).or_insert(0);
                *seq += 1;
                self.hints.entry(target).or_default().push((*seq, hint));
                StorageResult::HintAppended(Ok(*seq))
            }
            StorageOp::HintRead {
                target,
                after,
                max_bytes,
            } => {
                let mut out = Vec::new();
                let mut bytes = 0;
                for (s, h) in self.hints.get(&target).into_iter().flatten() {
                    if *s > after && (out.is_empty() || bytes < max_bytes) {
                        bytes += h.charge();
                        out.push((*s, h.clone()));
                    }
                }
                StorageResult::HintsRead(Ok(out))
            }
            StorageOp::HintTrim { target, through } => {
                if let Some(v) = self.hints.get_mut(&target) {
                    v.retain(|(s, _)| *s > through);
                }
                StorageResult::HintsTrimmed(Ok(()))
            }
            StorageOp::HintDrop { target } => {
                self.hints.remove(&target);
                StorageResult::HintsTrimmed(Ok(()))
            }
            StorageOp::HintBacklog => StorageResult::HintBacklog(Ok(Vec::new())),
        }
    }
}

struct Cluster {
    nodes: Vec<Node>,
    hosts: Vec<Host>,
    addrs: Vec<SocketAddr>,
    now: Instant,
    down: BTreeSet<usize>,
    replies: BTreeMap<RequestId, bool>,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

impl Cluster {
    fn new(n: usize, tweak: impl Fn(&mut Config), preload: impl Fn(usize, &mut Host)) -> Self {
        let mut nodes = Vec::new();
        let mut hosts = Vec::new();
        for i in 0..n {
            let mut c = Config::new("ae", addr(i));
            c.seeds = vec![addr(0)];
            c.vnodes = 8;
            c.rng_seed = 7;
            tweak(&mut c);
            let mut h = Host::default();
            preload(i, &mut h);
            hosts.push(h);
            nodes.push(Node::new(NodeId(i as u64 + 1), c, Instant::ZERO, WALL0).expect("config"));
        }
        Cluster {
            nodes,
            hosts,
            addrs: (0..n).map(addr).collect(),
            now: Instant::ZERO,
            down: BTreeSet::new(),
            replies: BTreeMap::new(),
        }
    }

    fn at(&self) -> Now {
        Now::new(self.now, WALL0 + self.now.as_micros())
    }

    /// Drains every node's outputs until quiet, delivering at once.
    fn pump(&mut self) {
        let mut queue: VecDeque<(usize, NodeId, cassio_core::PeerMsg)> = VecDeque::new();
        loop {
            let mut idle = true;
            for i in 0..self.nodes.len() {
                while let Some(o) = self.nodes[i].poll_output() {
                    idle = false;
                    match o {
                        Output::Send { addr, msg, .. } => {
                            if let Some(j) = self.addrs.iter().position(|a| *a == addr) {
                                if !self.down.contains(&i) && !self.down.contains(&j) {
                                    queue.push_back((j, NodeId(i as u64 + 1), msg));
                                }
                            }
                        }
                        Output::Storage { token, op } => {
                            let r = self.hosts[i].run(op);
                            let at = self.at();
                            self.nodes[i].handle_storage(at, token, r);
                        }
                        Output::Reply { id, result } => {
                            self.replies.insert(id, result.is_ok());
                        }
                        _ => {}
                    }
                }
            }
            while let Some((j, from, msg)) = queue.pop_front() {
                idle = false;
                let at = self.at();
                self.nodes[j].handle_message(at, from, msg);
            }
            if idle {
                return;
            }
        }
    }

    /// Runs virtual time forward by `d`, waking nodes when they ask.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.pump();
            let next = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.down.contains(i))
                .filter_map(|(_, n)| n.poll_timeout())
                .min()
                .unwrap_or(end)
                .max(self.now + Duration::from_micros(1))
                .min(end);
            self.now = next;
            for i in 0..self.nodes.len() {
                if !self.down.contains(&i) {
                    let at = self.at();
                    self.nodes[i].handle_timeout(at);
                    // Once its timers have run, a node must not ask to be
                    // woken at once again (a host would spin).
                    let next = self.nodes[i].poll_timeout().expect("a timeout");
                    assert!(
                        next > self.now,
                        "node {} wants a wake-up at {next:?}, now is {:?}",
                        i + 1,
                        self.now
                    );
                }
            }
        }
        self.pump();
    }
}

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
