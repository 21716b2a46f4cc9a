//! The deterministic cluster simulator.
//!
//! Many [`cassio_core::Node`]s run in one thread on virtual time. A simulated
//! network delays, drops, duplicates and reorders frames and can be split by
//! partitions (symmetric or one-way); nodes crash (their in-memory state is
//! lost, their store keeps what it had acknowledged) and restart with a new
//! generation; every node's wall clock can be skewed. Clients record a
//! history that [`checker`] judges against the guarantees Cassio promises.
//!
//! One `u64` seed decides everything: the same seed gives the same history,
//! byte for byte.

pub mod checker;
pub mod gossip;

use bytes::Bytes;
use cassio_core::config::{Config, Consistency, KeyspaceConfig};
use cassio_core::membership::MembershipEvent;
use cassio_core::NodeEvent;
use cassio_core::{
    ClientError, ClientRequest, ClientResponse, Instant, Node, NodeId, Output, PeerMsg, RequestId,
    StorageOp, StorageResult, StorageToken, Store, Timestamp, WireCodec,
};
use core::net::SocketAddr;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

pub use checker::{check, Violation};

/// Makes the store for a node; called once per node per simulation (the
/// store outlives crashes of the node that uses it).
pub type StoreFactory<'a> = &'a dyn Fn(NodeId) -> Arc<dyn Store>;

/// How the simulated network behaves.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Smallest one-way latency.
    pub min_latency: Duration,
    /// Largest one-way latency (latencies are uniform in between, so frames
    /// sent close together may arrive reordered).
    pub max_latency: Duration,
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Per-link latency ranges `(from, to) → (min, max)` that replace the
    /// defaults above on that directed link (e.g. a far-away node).
    pub links: BTreeMap<(usize, usize), (Duration, Duration)>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            min_latency: Duration::from_micros(200),
            max_latency: Duration::from_millis(2),
            loss: 0.0,
            duplicate: 0.0,
            links: BTreeMap::new(),
        }
    }
}

/// A fault injected at a point in virtual time.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Frames from any node in `from` to any node in `to` are dropped; both
    /// directions unless `one_way`. Nodes are indices `0..nodes`.
    Partition {
        /// One side.
        from: Vec<usize>,
        /// The other side.
        to: Vec<usize>,
        /// Only `from → to` is cut.
        one_way: bool,
    },
    /// Every partition is removed.
    Heal,
    /// The node loses its in-memory state and stops; in-flight storage
    /// operations are lost; its store keeps what it had completed.
    Crash(usize),
    /// The node starts again on the same store with a new generation.
    Restart(usize),
    /// Changes the loss probability.
    SetLoss(f64),
}

/// A simulated workload and the faults that hit it.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name, used in failure messages.
    pub name: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Replication factor of the default keyspace.
    pub rf: usize,
    /// Level for client writes and deletes.
    pub write_cl: Consistency,
    /// Level for client reads.
    pub read_cl: Consistency,
    /// Network behaviour while the workload runs.
    pub net: NetConfig,
    /// Faults, at virtual times from the start.
    pub faults: Vec<(Duration, Fault)>,
    /// Each node's wall clock is offset by a uniform value in `[-skew, skew]`.
    pub clock_skew: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations each client performs, one after another.
    pub ops_per_client: usize,
    /// Distinct keys the clients use (few keys means many conflicts).
    pub keys: usize,
    /// A client waits uniformly up to this long between operations.
    pub think_time: Duration,
    /// Time a storage operation takes: uniform in `[0, storage_latency]`.
    pub storage_latency: Duration,
    /// The coordinator's request timeout.
    pub request_timeout: Duration,
    /// How many of the nodes (the first ones) are seeds.
    pub seeds: usize,
    /// Time for the cluster to form by gossip before clients start; fault
    /// times count from its end.
    pub warmup: Duration,
    /// Gossip and failure-detection settings of every node.
    pub gossip: cassio_core::GossipConfig,
}

impl Scenario {
    /// A fault-free scenario with 5 nodes, RF=3, QUORUM reads and writes.
    pub fn new(name: impl Into<String>) -> Self {
        Scenario {
            name: name.into(),
            nodes: 5,
            rf: 3,
            write_cl: Consistency::Quorum,
            read_cl: Consistency::Quorum,
            net: NetConfig::default(),
            faults: Vec::new(),
            clock_skew: Duration::ZERO,
            clients: 4,
            ops_per_client: 60,
            keys: 6,
            think_time: Duration::from_millis(250),
            storage_latency: Duration::from_micros(300),
            request_timeout: Duration::from_secs(2),
            seeds: 3,
            warmup: Duration::from_secs(8),
            gossip: cassio_core::GossipConfig::default(),
        }
    }

    /// Whether reads are guaranteed to see acknowledged writes (R + W > N).
    pub fn overlapping_quorums(&self) -> bool {
        self.read_cl.required(self.rf) + self.write_cl.required(self.rf) > self.rf
    }
}

/// What a client operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A read.
    Get,
    /// A write of this value (values are unique across a history).
    Put(Bytes),
    /// A delete.
    Delete,
}

/// How a client operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpOutcome {
    /// No answer (the coordinator crashed, or the run ended first).
    Pending,
    /// The node was down; nothing was attempted.
    Refused,
    /// The coordinator crashed before answering; the write may or may not
    /// have reached replicas.
    CoordinatorCrashed,
    /// The coordinator answered.
    Done(Result<ClientResponse, ClientError>),
}

/// One client operation in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// Which client issued it.
    pub client: usize,
    /// The coordinator it was sent to.
    pub node: NodeId,
    /// The key.
    pub key: Bytes,
    /// The operation.
    pub kind: OpKind,
    /// The timestamp the coordinator gave a write, if it got that far.
    pub ts: Option<Timestamp>,
    /// When it was sent.
    pub invoked: Instant,
    /// When it was answered.
    pub completed: Option<Instant>,
    /// The answer.
    pub outcome: OpOutcome,
    /// Part of the final repair pass rather than the workload.
    pub repair_pass: bool,
    /// For writes: every virtual time at which some store executed an
    /// `Apply` of this write's version (replica writes, the coordinator's
    /// own, and read repairs), from the simulator's delivery log.
    pub applied: Vec<Instant>,
    /// Whether the coordinator sent replica requests or ran storage for
    /// this request while handling it.
    pub fanned_out: bool,
    /// Whether the coordinator was paused while the request was in flight
    /// (its answer may then be late through no fault of the protocol).
    pub coordinator_paused: bool,
}

/// The result of one simulation.
#[derive(Debug)]
pub struct SimOutcome {
    /// The seed that produced it.
    pub seed: u64,
    /// Every client operation, in invocation order.
    pub history: Vec<OpRecord>,
    /// For each key, each replica's final stored version (after repair).
    pub replicas: BTreeMap<Bytes, Vec<(NodeId, Option<cassio_core::Versioned>)>>,
    /// Frames sent, delivered, dropped.
    pub frames: (u64, u64, u64),
}

impl SimOutcome {
    /// The history as text: identical seeds must give identical text.
    pub fn history_text(&self) -> String {
        let mut s = String::new();
        for op in &self.history {
            let _ = writeln!(s, "{op:?}");
        }
        for (k, rs) in &self.replicas {
            let _ = writeln!(s, "{k:?} {rs:?}");
        }
        s
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        frame: Vec<u8>,
    },
    Timer {
        node: usize,
        incarnation: u64,
    },
    StorageDone {
        node: usize,
        incarnation: u64,
        token: StorageToken,
        op: StorageOp,
    },
    ClientNext {
        client: usize,
    },
    Fault(Fault),
    RepairPass,
}

struct SimNode {
    id: NodeId,
    node: Option<Node>,
    store: Arc<dyn Store>,
    incarnation: u64,
    skew_micros: i64,
    timer_at: Option<Instant>,
    started_before: bool,
}

/// A simulated cluster: nodes, network, clients and virtual time. Most
/// callers use [`simulate`]; membership experiments drive it step by step.
pub struct SimCluster<'a> {
    scenario: &'a Scenario,
    rng: ChaCha8Rng,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    events: Vec<Option<Event>>,
    nodes: Vec<SimNode>,
    by_addr: BTreeMap<SocketAddr, usize>,
    seeds: Vec<SocketAddr>,
    membership_log: Vec<(Instant, usize, MembershipEvent)>,
    codec: WireCodec,
    cut: BTreeSet<(usize, usize)>,
    loss: f64,
    history: Vec<OpRecord>,
    in_flight: BTreeMap<RequestId, usize>,
    client_ops_left: Vec<usize>,
    next_request: u64,
    next_value: u64,
    frames: (u64, u64, u64),
    capture_ts_for: Option<usize>,
    /// Which client operation each write timestamp belongs to.
    ts_owner: BTreeMap<Timestamp, usize>,
    /// Which client operation each written value belongs to (values are
    /// unique across a history).
    value_owner: BTreeMap<Bytes, usize>,
    /// Which client operation each coordinator's request tag serves:
    /// (node, incarnation, tag) → history index, so that a write the
    /// coordinator re-stamps and sends again is still attributed.
    tag_owner: BTreeMap<(usize, u64, u64), usize>,
    workload_end: Instant,
}

/// Wall-clock time (micros since the epoch) at the start of every simulation.
const SIM_EPOCH_MICROS: u64 = 1_700_000_000_000_000;

fn addr_of(i: usize) -> SocketAddr {
    let port = u16::try_from(10_000 + i).unwrap_or(u16::MAX);
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl<'a> SimCluster<'a> {
    /// A cluster for `scenario` whose randomness all comes from `seed`; no
    /// node runs until [`SimCluster::start_all`] or [`SimCluster::restart`].
    pub fn new(scenario: &'a Scenario, seed: u64, factory: StoreFactory<'_>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ids: Vec<NodeId> = (0..scenario.nodes).map(|i| NodeId(i as u64 + 1)).collect();
        let by_addr = (0..scenario.nodes).map(|i| (addr_of(i), i)).collect();
        let seeds = (0..scenario.seeds.min(scenario.nodes))
            .map(addr_of)
            .collect();
        let skew = i64::try_from(scenario.clock_skew.as_micros()).unwrap_or(i64::MAX);
        let nodes = ids
            .iter()
            .map(|&id| SimNode {
                id,
                node: None,
                store: factory(id),
                incarnation: 0,
                skew_micros: if skew > 0 {
                    rng.random_range(-skew..=skew)
                } else {
                    0
                },
                timer_at: None,
                started_before: false,
            })
            .collect();
        let codec = WireCodec::new("sim");
        SimCluster {
            scenario,
            rng,
            now: Instant::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            nodes,
            by_addr,
            seeds,
            membership_log: Vec::new(),
            codec,
            cut: BTreeSet::new(),
            loss: scenario.net.loss,
            history: Vec::new(),
            in_flight: BTreeMap::new(),
            client_ops_left: vec![scenario.ops_per_client; scenario.clients],
            next_request: 1,
            next_value: 1,
            frames: (0, 0, 0),
            capture_ts_for: None,
            ts_owner: BTreeMap::new(),
            value_owner: BTreeMap::new(),
            tag_owner: BTreeMap::new(),
            workload_end: Instant::ZERO,
        }
    }

    fn schedule(&mut self, at: Instant, ev: Event) {
        self.seq += 1;
        self.events.push(Some(ev));
        self.queue
            .push(Reverse((at, self.seq, self.events.len() - 1)));
    }

    fn config_for(&self, i: usize) -> Config {
        let mut c = Config::new("sim", addr_of(i));
        c.rng_seed = self.nodes[i]
            .incarnation
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ i as u64;
        c.seeds = self.seeds.clone();
        c.vnodes = 16;
        c.gossip = self.scenario.gossip.clone();
        c.keyspaces = vec![KeyspaceConfig {
            default_consistency: Consistency::Quorum,
            ..KeyspaceConfig::default_keyspace(self.scenario.rf)
        }];
        c.request_timeout = self.scenario.request_timeout;
        // New on the first start; a restart is an existing member coming back.
        c.bootstrap = !self.nodes[i].started_before;
        c
    }

    fn start_node(&mut self, i: usize) {
        self.nodes[i].incarnation += 1;
        let wall = SIM_EPOCH_MICROS
            .saturating_add_signed(self.nodes[i].skew_micros)
            .saturating_add(self.now.as_micros());
        let config = self.config_for(i);
        // A simulated configuration is valid by construction.
        let node = Node::new(self.nodes[i].id, config, self.now, wall)
            .unwrap_or_else(|e| panic!("simulator built a bad config: {e}"));
        self.nodes[i].node = Some(node);
        self.nodes[i].timer_at = None;
        self.nodes[i].started_before = true;
        self.pump(i);
    }

    /// Drains a node's outputs and arms its timer.
    fn pump(&mut self, i: usize) {
        loop {
            let Some(out) = self.nodes[i].node.as_mut().and_then(|n| n.poll_output()) else {
                break;
            };
            match out {
                Output::Send { addr, msg, .. } => self.send(i, addr, &msg),
                Output::Reply { id, result } => self.complete(id, result),
                Output::Storage { token, op } => {
                    if let StorageOp::Apply { version, .. } = &op {
                        self.note_write_ts(version.ts);
                    }
                    self.note_fan_out();
                    let delay = self
                        .rng
                        .random_range(0..=self.scenario.storage_latency.as_micros() as u64);
                    let incarnation = self.nodes[i].incarnation;
                    self.schedule(
                        self.now + Duration::from_micros(delay),
                        Event::StorageDone {
                            node: i,
                            incarnation,
                            token,
                            op,
                        },
                    );
                }
                Output::Event(NodeEvent::Membership(e)) => {
                    self.membership_log.push((self.now, i, e));
                }
                Output::Event(_) => {}
            }
        }
        let next = self.nodes[i].node.as_ref().and_then(|n| n.poll_timeout());
        if let Some(t) = next {
            if self.nodes[i].timer_at != Some(t) {
                self.nodes[i].timer_at = Some(t);
                let incarnation = self.nodes[i].incarnation;
                self.schedule(
                    t.max(self.now),
                    Event::Timer {
                        node: i,
                        incarnation,
                    },
                );
            }
        }
    }

    /// The coordinator's outputs right after `handle_client` carry the
    /// write's timestamp; remember it for the checker.
    fn note_write_ts(&mut self, ts: Timestamp) {
        if let Some(idx) = self.capture_ts_for {
            if let Some(op) = self.history.get_mut(idx) {
                op.ts.get_or_insert(ts);
                self.ts_owner.entry(ts).or_insert(idx);
            }
        }
    }

    /// Notes that the request being handled made the coordinator act.
    fn note_fan_out(&mut self) {
        if let Some(op) = self.capture_ts_for.and_then(|i| self.history.get_mut(i)) {
            op.fanned_out = true;
        }
    }

    /// Attributes a coordinator's `Write` to its client operation: during
    /// `handle_client` by capture, later (a re-stamped rewrite) by its tag.
    fn note_write_msg(&mut self, from: usize, tag: u64, ts: Timestamp) {
        let key = (from, self.nodes[from].incarnation, tag);
        if let Some(idx) = self.capture_ts_for {
            self.note_write_ts(ts);
            self.tag_owner.insert(key, idx);
        } else if let Some(&idx) = self.tag_owner.get(&key) {
            self.ts_owner.entry(ts).or_insert(idx);
        }
    }

    /// Records that a store executed `version`, for the operation that wrote it.
    fn note_applied(&mut self, version: &cassio_core::Versioned) {
        let owner = match &version.value {
            Some(v) => self.value_owner.get(v),
            None => self.ts_owner.get(&version.ts),
        };
        if let Some(op) = owner.copied().and_then(|i| self.history.get_mut(i)) {
            op.applied.push(self.now);
        }
    }

    fn send(&mut self, from: usize, to: SocketAddr, msg: &PeerMsg) {
        match msg {
            PeerMsg::Write { tag, version, .. } => {
                self.note_write_msg(from, *tag, version.ts);
                self.note_fan_out();
            }
            PeerMsg::Read { .. } => self.note_fan_out(),
            _ => {}
        }
        self.frames.0 += 1;
        let Some(&to) = self.by_addr.get(&to) else {
            return;
        };
        let frame = match self.codec.encode(self.nodes[from].id, msg) {
            Ok(f) => f,
            Err(e) => panic!("simulated message does not encode: {e}"),
        };
        let copies = if self.rng.random_bool(self.scenario.net.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.cut.contains(&(from, to)) || self.rng.random_bool(self.loss) {
                self.frames.2 += 1;
                continue;
            }
            let (min, max) = self
                .scenario
                .net
                .links
                .get(&(from, to))
                .copied()
                .unwrap_or((self.scenario.net.min_latency, self.scenario.net.max_latency));
            let lo = min.as_micros() as u64;
            let hi = max.as_micros() as u64;
            let delay = self.rng.random_range(lo..=hi.max(lo));
            self.schedule(
                self.now + Duration::from_micros(delay),
                Event::Deliver {
                    to,
                    frame: frame.clone(),
                },
            );
        }
    }

    fn complete(&mut self, id: RequestId, result: Result<ClientResponse, ClientError>) {
        let Some(idx) = self.in_flight.remove(&id) else {
            return;
        };
        let op = &mut self.history[idx];
        op.completed = Some(self.now);
        op.outcome = OpOutcome::Done(result);
        let client = op.client;
        if !op.repair_pass {
            let think = self
                .rng
                .random_range(0..=self.scenario.think_time.as_micros() as u64);
            self.schedule(
                self.now + Duration::from_micros(think),
                Event::ClientNext { client },
            );
        }
    }

    fn issue(
        &mut self,
        client: usize,
        node: usize,
        kind: OpKind,
        key: Bytes,
        level: Consistency,
        repair_pass: bool,
    ) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let req = match &kind {
            OpKind::Get => ClientRequest::get(key.clone()),
            OpKind::Put(v) => ClientRequest::put(key.clone(), v.clone()),
            OpKind::Delete => ClientRequest::delete(key.clone()),
        }
        .with_consistency(level);
        self.history.push(OpRecord {
            client,
            node: self.nodes[node].id,
            key,
            kind,
            ts: None,
            invoked: self.now,
            completed: None,
            outcome: OpOutcome::Pending,
            repair_pass,
            applied: Vec::new(),
            fanned_out: false,
            coordinator_paused: false,
        });
        let idx = self.history.len() - 1;
        if let OpKind::Put(v) = &self.history[idx].kind {
            self.value_owner.insert(v.clone(), idx);
        }
        if self.nodes[node].node.is_none() {
            self.history[idx].outcome = OpOutcome::Refused;
            self.history[idx].completed = Some(self.now);
            if !repair_pass {
                self.schedule(
                    self.now + Duration::from_millis(5),
                    Event::ClientNext { client },
                );
            }
            return;
        }
        self.in_flight.insert(id, idx);
        let now = self.now;
        if let Some(n) = self.nodes[node].node.as_mut() {
            n.handle_client(now, id, req);
        }
        self.capture_ts_for = Some(idx);
        self.pump(node);
        self.capture_ts_for = None;
    }

    fn client_next(&mut self, client: usize) {
        if self.client_ops_left[client] == 0 || self.now >= self.workload_end {
            return;
        }
        self.client_ops_left[client] -= 1;
        let node = self.rng.random_range(0..self.nodes.len());
        let key = Bytes::from(format!("k{}", self.rng.random_range(0..self.scenario.keys)));
        let roll = self.rng.random_range(0..100);
        let (kind, level) = if roll < 45 {
            (OpKind::Get, self.scenario.read_cl)
        } else if roll < 90 {
            let v = Bytes::from(format!("v{}", self.next_value));
            self.next_value += 1;
            (OpKind::Put(v), self.scenario.write_cl)
        } else {
            (OpKind::Delete, self.scenario.write_cl)
        };
        self.issue(client, node, kind, key, level, false);
    }

    fn apply_fault(&mut self, fault: Fault) {
        match fault {
            Fault::Partition { from, to, one_way } => {
                for &a in &from {
                    for &b in &to {
                        self.cut.insert((a, b));
                        if !one_way {
                            self.cut.insert((b, a));
                        }
                    }
                }
            }
            Fault::Heal => self.cut.clear(),
            Fault::Crash(i) => {
                let id = self.nodes.get(i).map(|n| n.id);
                let lost: Vec<RequestId> = self
                    .in_flight
                    .iter()
                    .filter(|(_, &idx)| Some(self.history[idx].node) == id)
                    .map(|(&r, _)| r)
                    .collect();
                for r in lost {
                    if let Some(idx) = self.in_flight.remove(&r) {
                        self.history[idx].outcome = OpOutcome::CoordinatorCrashed;
                        let client = self.history[idx].client;
                        if !self.history[idx].repair_pass {
                            self.schedule(
                                self.now + Duration::from_millis(5),
                                Event::ClientNext { client },
                            );
                        }
                    }
                }
                if let Some(n) = self.nodes.get_mut(i) {
                    n.node = None;
                    // Bumping the incarnation orphans its timers and
                    // in-flight storage operations.
                    n.incarnation += 1;
                    n.timer_at = None;
                }
            }
            Fault::Restart(i) => {
                if self.nodes.get(i).is_some_and(|n| n.node.is_none()) {
                    self.start_node(i);
                }
            }
            Fault::SetLoss(p) => self.loss = p,
        }
    }

    /// After faults stop: read every key at ALL from a live node so that read
    /// repair brings every replica to the newest version.
    fn repair_pass(&mut self) {
        let keys: BTreeSet<Bytes> = self.history.iter().map(|o| o.key.clone()).collect();
        for key in keys {
            let node = self.rng.random_range(0..self.nodes.len());
            self.issue(usize::MAX, node, OpKind::Get, key, Consistency::All, true);
        }
    }

    fn run(mut self, seed: u64) -> SimOutcome {
        self.start_all();
        let warmup = Instant::ZERO + self.scenario.warmup;
        for c in 0..self.scenario.clients {
            let start = Duration::from_micros(self.rng.random_range(0..10_000));
            self.schedule(warmup + start, Event::ClientNext { client: c });
        }
        let mut last_fault = Duration::ZERO;
        for (at, f) in self.scenario.faults.clone() {
            last_fault = last_fault.max(at);
            self.schedule(warmup + at, Event::Fault(f));
        }
        // Faults stop well after the workload: heal, restore every node,
        // drop loss, let liveness settle, then repair and wait for quiet.
        let settle = warmup + last_fault.max(Duration::from_secs(12)) + Duration::from_secs(1);
        self.schedule(settle, Event::Fault(Fault::Heal));
        self.schedule(settle, Event::Fault(Fault::SetLoss(0.0)));
        for i in 0..self.nodes.len() {
            self.schedule(settle, Event::Fault(Fault::Restart(i)));
        }
        // Clients stop early enough that every request is answered (or
        // times out) before the faults stop.
        self.workload_end = Instant::from_micros(
            settle
                .as_micros()
                .saturating_sub(self.scenario.request_timeout.as_micros() as u64 + 1_000_000),
        );
        // Liveness needs a few rounds after healing (phi must fall, probes
        // must land) before a read at ALL can reach every replica.
        let repair_at = settle + Duration::from_secs(40);
        self.schedule(repair_at, Event::RepairPass);
        let end = repair_at + Duration::from_secs(5);
        self.run_until(end);
        self.outcome(seed)
    }

    /// Starts every node that is not running.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].node.is_none() {
                self.start_node(i);
            }
        }
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Node `i`'s state machine, if it is running.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i).and_then(|n| n.node.as_ref())
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Membership events so far: (time, node index, event).
    pub fn membership_log(&self) -> &[(Instant, usize, MembershipEvent)] {
        &self.membership_log
    }

    /// Applies a fault now.
    pub fn inject(&mut self, fault: Fault) {
        self.apply_fault(fault);
    }

    /// Processes every event up to and including virtual time `end`.
    pub fn run_until(&mut self, end: Instant) {
        while let Some(&Reverse((at, _, idx))) = self.queue.peek() {
            if at > end {
                break;
            }
            self.queue.pop();
            self.now = at;
            let Some(ev) = self.events[idx].take() else {
                continue;
            };
            self.dispatch(ev);
        }
        self.now = self.now.max(end);
    }

    fn dispatch(&mut self, ev: Event) {
        match ev {
            Event::Deliver { to, frame } => {
                if self.nodes[to].node.is_some() {
                    self.frames.1 += 1;
                    let now = self.now;
                    if let Some(n) = self.nodes[to].node.as_mut() {
                        n.handle_frame(now, &frame);
                    }
                    self.pump(to);
                }
            }
            Event::Timer { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation
                    && self.nodes[node].timer_at.is_some_and(|t| t <= self.now)
                {
                    self.nodes[node].timer_at = None;
                    let now = self.now;
                    if let Some(n) = self.nodes[node].node.as_mut() {
                        n.handle_timeout(now);
                    }
                    self.pump(node);
                }
            }
            Event::StorageDone {
                node,
                incarnation,
                token,
                op,
            } => {
                if self.nodes[node].incarnation != incarnation {
                    return;
                }
                let store = Arc::clone(&self.nodes[node].store);
                let result = match op {
                    StorageOp::Apply { key, version } => {
                        let r = store.apply(&key, &version).map_err(|e| e.to_string());
                        // A store that refused the write did not apply it.
                        if r.is_ok() {
                            self.note_applied(&version);
                        }
                        StorageResult::Applied(r)
                    }
                    StorageOp::Get { key } => {
                        StorageResult::Got(store.get(&key).map_err(|e| e.to_string()))
                    }
                };
                let now = self.now;
                if let Some(n) = self.nodes[node].node.as_mut() {
                    n.handle_storage(now, token, result);
                }
                self.pump(node);
            }
            Event::ClientNext { client } => self.client_next(client),
            Event::Fault(f) => self.apply_fault(f),
            Event::RepairPass => self.repair_pass(),
        }
    }

    fn outcome(self, seed: u64) -> SimOutcome {
        let mut replicas = BTreeMap::new();
        let keys: BTreeSet<Bytes> = self.history.iter().map(|o| o.key.clone()).collect();
        for key in keys {
            let Some(view) = self.nodes.iter().find_map(|n| n.node.as_ref()) else {
                break;
            };
            let skey = cassio_core::node::storage_key(cassio_core::DEFAULT_KEYSPACE, &key);
            let owners = view.replicas_of(cassio_core::DEFAULT_KEYSPACE, &key);
            let versions = owners
                .into_iter()
                .map(|id| {
                    let v = self
                        .nodes
                        .iter()
                        .find(|n| n.id == id)
                        .and_then(|n| n.store.get(&skey).ok().flatten());
                    (id, v)
                })
                .collect();
            replicas.insert(key, versions);
        }
        SimOutcome {
            seed,
            history: self.history,
            replicas,
            frames: self.frames,
        }
    }
}

/// Runs `scenario` once with `seed`, each node on a store from `factory`.
pub fn simulate(scenario: &Scenario, seed: u64, factory: StoreFactory<'_>) -> SimOutcome {
    SimCluster::new(scenario, seed, factory).run(seed)
}

/// Runs `scenario` with `seed` on [`crate::MemStore`]s.
pub fn simulate_mem(scenario: &Scenario, seed: u64) -> SimOutcome {
    simulate(scenario, seed, &|_| {
        Arc::new(crate::MemStore::new()) as Arc<dyn Store>
    })
}

/// The seeds a sweep runs: `CASSIO_SIM_SEED=S` replays just `S`;
/// otherwise `CASSIO_SIM_SEEDS=N` (default `default_count`) seeds from 0.
pub fn sweep_seeds(default_count: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("CASSIO_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let n = std::env::var("CASSIO_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_count);
    (0..n).collect()
}

/// Runs `scenario` over the sweep's seeds (200 unless `CASSIO_SIM_SEEDS`
/// says otherwise) and checks every history; on the first violation, panics
/// with the seed, the violations and the command that replays it.
/// `test_args` are the `cargo test` arguments that select the calling test,
/// e.g. `"-p conformance --test cluster no_faults"`.
pub fn sweep(scenario: &Scenario, test_args: &str, factory: StoreFactory<'_>) -> SweepStats {
    sweep_with(scenario, test_args, factory, 200)
}

/// [`sweep`] with another default number of seeds, for costly stores.
pub fn sweep_with(
    scenario: &Scenario,
    test_args: &str,
    factory: StoreFactory<'_>,
    default_seeds: u64,
) -> SweepStats {
    let mut stats = SweepStats::default();
    for seed in sweep_seeds(default_seeds) {
        let outcome = simulate(scenario, seed, factory);
        let violations = check(scenario, &outcome);
        stats.add(&outcome);
        if !violations.is_empty() {
            let shown: Vec<String> = violations
                .iter()
                .take(5)
                .map(|v| format!("  - {v}"))
                .collect();
            panic!(
                "scenario {:?} failed at seed {seed} ({} violations):\n{}\nreplay with: CASSIO_SIM_SEED={seed} cargo test {test_args} -- --nocapture",
                scenario.name,
                violations.len(),
                shown.join("\n")
            );
        }
    }
    stats
}

/// Totals over a sweep, to show the sweep did real work.
#[derive(Clone, Debug, Default)]
pub struct SweepStats {
    /// Seeds run.
    pub seeds: u64,
    /// Client operations that completed successfully.
    pub ok: u64,
    /// Client operations that failed with an error or were refused.
    pub failed: u64,
    /// Successful reads that returned a value.
    pub reads_with_value: u64,
}

impl SweepStats {
    fn add(&mut self, o: &SimOutcome) {
        self.seeds += 1;
        for op in o.history.iter().filter(|op| !op.repair_pass) {
            match &op.outcome {
                OpOutcome::Done(Ok(r)) => {
                    self.ok += 1;
                    if matches!(r, ClientResponse::Value(Some(_))) {
                        self.reads_with_value += 1;
                    }
                }
                OpOutcome::Done(Err(_)) | OpOutcome::Refused | OpOutcome::CoordinatorCrashed => {
                    self.failed += 1
                }
                OpOutcome::Pending => {}
            }
        }
    }
}

/// Client operations completed per second of host time, for the benchmark:
/// one simulation's history length divided by how long it took is measured
/// by the caller; this helper just counts the operations.
pub fn completed_ops(o: &SimOutcome) -> usize {
    o.history
        .iter()
        .filter(|op| matches!(op.outcome, OpOutcome::Done(_)))
        .count()
}
