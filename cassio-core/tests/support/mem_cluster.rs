//! An in-memory host for real `Node`s: in-memory stores and hint logs,
//! instant delivery, virtual time. Shared by the anti-entropy tests and the
//! repair benchmark (`#[path]`-included).

#![allow(dead_code)]

use bytes::Bytes;
use cassio_core::hint_log::Hint;
use cassio_core::persist::PersistedState;
use cassio_core::store::{ApplyOutcome, KeyDigest};
use cassio_core::wire::WireCodec;
use cassio_core::{
    Config, Instant, Node, NodeId, Now, Output, RequestId, StorageOp, StorageResult, Versioned,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

pub const WALL0: u64 = 1_800_000_000_000_000;

#[derive(Default)]
pub struct Host {
    /// The store.
    pub store: BTreeMap<Bytes, Versioned>,
    /// The hint log.
    pub hints: BTreeMap<NodeId, Vec<(u64, Hint)>>,
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
            StorageOp::Range { start, end, limit } => StorageResult::Ranged(Ok(self
                .store
                .range::<Bytes, _>((start, end))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
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

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub hosts: Vec<Host>,
    pub addrs: Vec<SocketAddr>,
    pub now: Instant,
    pub down: BTreeSet<usize>,
    pub replies: BTreeMap<RequestId, bool>,
    /// Every answer, in full (for tests that look at values).
    pub answers: BTreeMap<RequestId, Result<cassio_core::ClientResponse, cassio_core::ClientError>>,
    /// Encoded bytes of the anti-entropy and hint messages delivered.
    pub sync_bytes: u64,
    /// Links (from, to) that drop every message, in one direction.
    pub blocked: BTreeSet<(usize, usize)>,
    /// Links (from, to) that drop anti-entropy messages only.
    pub blocked_sync: BTreeSet<(usize, usize)>,
    /// Hint batches still to drop (the first frames to a restarted peer,
    /// lost while its transport reconnects).
    pub drop_hint_batches: usize,
    /// Each node's configuration and last persisted state, for restarts.
    configs: Vec<Config>,
    persisted: Vec<Option<PersistedState>>,
}

pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

impl Cluster {
    pub fn new(n: usize, tweak: impl Fn(&mut Config), preload: impl Fn(usize, &mut Host)) -> Self {
        let mut nodes = Vec::new();
        let mut hosts = Vec::new();
        let mut configs = Vec::new();
        for i in 0..n {
            let mut c = Config::new("ae", addr(i));
            c.seeds = vec![addr(0)];
            c.vnodes = 8;
            c.rng_seed = 7;
            tweak(&mut c);
            let mut h = Host::default();
            preload(i, &mut h);
            hosts.push(h);
            configs.push(c.clone());
            nodes.push(Node::new(NodeId(i as u64 + 1), c, Instant::ZERO, WALL0).expect("config"));
        }
        Cluster {
            nodes,
            hosts,
            addrs: (0..n).map(addr).collect(),
            now: Instant::ZERO,
            down: BTreeSet::new(),
            replies: BTreeMap::new(),
            answers: BTreeMap::new(),
            sync_bytes: 0,
            blocked: BTreeSet::new(),
            blocked_sync: BTreeSet::new(),
            drop_hint_batches: 0,
            configs,
            persisted: vec![None; n],
        }
    }

    /// Restarts node `i` on its store and hint log and its last persisted
    /// state, as a process restart would (it comes back `Syncing`).
    pub fn restart(&mut self, i: usize) {
        let mut c = self.configs[i].clone();
        c.persisted = self.persisted[i].clone();
        assert!(c.persisted.is_some(), "node {} never persisted", i + 1);
        self.nodes[i] = Node::new(
            NodeId(i as u64 + 1),
            c,
            self.now,
            WALL0 + self.now.as_micros(),
        )
        .expect("config");
    }

    pub fn at(&self) -> Now {
        Now::new(self.now, WALL0 + self.now.as_micros())
    }

    /// Drains every node's outputs until quiet, delivering at once.
    pub fn pump(&mut self) {
        let mut queue: VecDeque<(usize, NodeId, cassio_core::PeerMsg)> = VecDeque::new();
        loop {
            let mut idle = true;
            for i in 0..self.nodes.len() {
                while let Some(o) = self.nodes[i].poll_output() {
                    idle = false;
                    match o {
                        Output::Send { addr, msg, .. } => {
                            if matches!(
                                msg,
                                cassio_core::PeerMsg::Sync(_) | cassio_core::PeerMsg::Hints(_)
                            ) {
                                let codec = WireCodec::new("ae");
                                self.sync_bytes += codec
                                    .encode(NodeId(i as u64 + 1), &msg)
                                    .map_or(0, |f| f.len() as u64);
                            }
                            if let Some(j) = self.addrs.iter().position(|a| *a == addr) {
                                let lost = matches!(
                                    msg,
                                    cassio_core::PeerMsg::Hints(
                                        cassio_core::hints::HintMsg::Batch { .. }
                                    )
                                ) && self.drop_hint_batches > 0;
                                let cut = self.down.contains(&i)
                                    || self.down.contains(&j)
                                    || self.blocked.contains(&(i, j))
                                    || (matches!(msg, cassio_core::PeerMsg::Sync(_))
                                        && self.blocked_sync.contains(&(i, j)));
                                if lost {
                                    self.drop_hint_batches -= 1;
                                } else if !cut {
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
                            self.answers.insert(id, result);
                        }
                        Output::Persist(state) => self.persisted[i] = Some(state),
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
    pub fn run_for(&mut self, d: Duration) {
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
