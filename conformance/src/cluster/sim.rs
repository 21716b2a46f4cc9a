//! The simulator's engine: nodes, network, storage, clients and faults on
//! one virtual clock, driven by one seeded random number generator.

use super::history::{OpRecord, SimOutcome};
use super::stores::{FaultyStore, NodeStores};
use super::{Fault, Scenario};
use crate::MemHintLog;
use bytes::Bytes;
use cassio_core::config::{Config, Consistency, KeyspaceConfig};
use cassio_core::membership::MembershipEvent;
use cassio_core::NodeEvent;
use cassio_core::{
    ClientError, ClientRequest, HintLog, Instant, Node, NodeId, Output, PeerMsg, RequestId,
    StorageOp, StorageResult, StorageToken, Store, Timestamp,
};
use core::net::SocketAddr;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

mod clients;
mod inject;
mod scans;
mod sync_checks;

/// Makes and crashes the stores of the nodes of a simulation.
pub type StoreFactory<'a> = &'a dyn NodeStores;

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
    /// The scan workload's loader starts.
    LoaderStart,
    /// The scanner asks for its next page.
    ScanNext,
    /// The scanner gives page `id` up if it is still unanswered.
    ScanGiveUp {
        id: RequestId,
    },
    /// A client request that reached a paused coordinator.
    Client {
        node: usize,
        incarnation: u64,
        id: RequestId,
        idx: usize,
        req: ClientRequest,
    },
    Fault(Fault),
    RepairPass,
    LivenessWrites,
    LivenessReads,
    SyncTick,
    /// Replicas must agree now (see `Scenario::converge_within`).
    ConvergeCheck,
    /// Compact every store (see `Scenario::compact_every`).
    CompactTick,
    /// Sample hint bytes held.
    HintSample,
    /// Watch a leaving node until it announces `Left`, then stop it.
    /// An operator asks again for schema change `idx`.
    SchemaRetry {
        /// The node asked.
        by: usize,
        /// The change, by index.
        idx: usize,
    },
    LeftWatch {
        node: usize,
        since: Instant,
    },
    /// Watch a restarted node until it leaves `Syncing`.
    CaughtUpWatch {
        node: usize,
        incarnation: u64,
        since: Instant,
    },
}

impl Event {
    /// The node whose process handles this event, if one does.
    fn node(&self) -> Option<usize> {
        match self {
            Event::Deliver { to, .. } => Some(*to),
            Event::Timer { node, .. }
            | Event::StorageDone { node, .. }
            | Event::Client { node, .. } => Some(*node),
            _ => None,
        }
    }
}

struct SimNode {
    id: NodeId,
    node: Option<Node>,
    store: Option<Arc<FaultyStore>>,
    /// Its hint log, beside the store in its data directory: a crash keeps
    /// it (the simulated process is killed, not the machine), a wipe
    /// replaces it with an empty one.
    hints: Arc<MemHintLog>,
    incarnation: u64,
    skew_micros: i64,
    /// Its wall clock was, at some point, further from true time than
    /// [`CLOCK_OUTLIER_MICROS`].
    clock_outlier: bool,
    timer_at: Option<Instant>,
    started_before: bool,
    /// Its data directory is empty: the next start bootstraps (as the node
    /// host decides from the directory).
    fresh: bool,
    paused_until: Instant,
    stall_until: Instant,
    left: bool,
    /// The dead member this node replaces (a wiped node started with a
    /// new id at the same address), on its first start.
    replaces: Option<NodeId>,
    /// The node state it last asked to persist (on its "disk": a crash
    /// keeps it, a wipe drops it).
    persisted: Option<cassio_core::persist::PersistedState>,
}

/// A simulated cluster: nodes, network, clients and virtual time. Most
/// callers use [`super::simulate`]; membership experiments drive it step by
/// step.
pub struct SimCluster<'a> {
    scenario: &'a Scenario,
    factory: StoreFactory<'a>,
    seed: u64,
    rng: ChaCha8Rng,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    events: Vec<Option<Event>>,
    nodes: Vec<SimNode>,
    by_addr: BTreeMap<SocketAddr, usize>,
    seeds: Vec<SocketAddr>,
    membership_log: Vec<(Instant, usize, MembershipEvent)>,
    cut: BTreeSet<(usize, usize)>,
    loss: f64,
    history: Vec<OpRecord>,
    in_flight: BTreeMap<RequestId, usize>,
    /// Operator schema changes in flight: request id -> index in
    /// `schema_changes`.
    schema_requests: BTreeMap<RequestId, usize>,
    schema_changes: Vec<(
        cassio_core::schema::SchemaChange,
        Option<Result<u64, ClientError>>,
    )>,
    schema_adopted: Vec<(NodeId, cassio_core::schema::Schema)>,
    /// See [`SimOutcome::placements`]: keyed by version, digest and
    /// fingerprint.
    placements: BTreeMap<(u64, u64, u64), NodeId>,
    /// Factor changes refused until the previous one's repair (retried).
    schema_repair_waits: u64,
    /// With `schema_changes_in_order`: changes whose instant came while an
    /// earlier one was unanswered, in the order the scenario lists them
    /// (each is asked once the one before it is answered).
    schema_queued: std::collections::VecDeque<(usize, cassio_core::schema::SchemaChange)>,
    client_ops_left: Vec<usize>,
    next_request: u64,
    next_value: u64,
    next_node_id: u64,
    frames: (u64, u64, u64),
    capture: Option<usize>,
    /// Which client operation each write timestamp belongs to.
    ts_owner: BTreeMap<Timestamp, usize>,
    /// Which client operation each written value belongs to (values are
    /// unique across a history).
    value_owner: BTreeMap<Bytes, usize>,
    /// Which client operation each coordinator's request tag serves:
    /// (node, incarnation, tag) → history index, so that a write the
    /// coordinator sends again under the same tag is still attributed
    /// (re-stamps under a new tag are followed through `Restamped`).
    tag_owner: BTreeMap<(usize, u64, u64), usize>,
    workload_end: Instant,
    unconverged: Vec<(Bytes, String)>,
    never_caught_up: Vec<NodeId>,
    never_left: Vec<NodeId>,
    max_hint_bytes_per_target: u64,
    /// The scan workload's loader and scanner.
    scanner: scans::Scanner,
}

/// A node whose wall clock was ever this far from true time (twice Cassio's
/// default `max_clock_offset` of 500 ms) may, by design, refuse to
/// coordinate until its clock and hybrid clock are back in line (it
/// refuses rather than risk last-write-wins inversions); the repair pass and
/// the liveness phase do not send it their requests. It still serves as a
/// replica, and every safety check still applies to what it did.
const CLOCK_OUTLIER_MICROS: u64 = 1_000_000;

/// Wall-clock time (micros since the epoch) at the start of every simulation.
const SIM_EPOCH_MICROS: u64 = 1_700_000_000_000_000;

fn addr_of(i: usize) -> SocketAddr {
    let port = u16::try_from(10_000 + i).unwrap_or(u16::MAX);
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl<'a> SimCluster<'a> {
    /// A cluster for `scenario` whose randomness all comes from `seed`; no
    /// node runs until [`SimCluster::start_all`] or a restart.
    pub fn new(scenario: &'a Scenario, seed: u64, factory: StoreFactory<'a>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let by_addr = (0..scenario.nodes).map(|i| (addr_of(i), i)).collect();
        let seeds = (0..scenario.seeds.min(scenario.nodes))
            .map(addr_of)
            .collect();
        let skew = i64::try_from(scenario.clock_skew.as_micros()).unwrap_or(i64::MAX);
        let nodes = (0..scenario.nodes)
            .map(|i| {
                let id = NodeId(i as u64 + 1);
                let drift = if skew > 0 {
                    rng.random_range(-skew..=skew)
                } else {
                    0
                };
                let offset = scenario.clock_offsets.get(&i).copied().unwrap_or(0);
                let store = FaultyStore::new(factory.open(id), seed ^ ((i as u64) << 32));
                if let Some((n, every)) = scenario.drop_every_nth_write {
                    if n == i {
                        store.set_drop_every(Some(every));
                    }
                }
                SimNode {
                    id,
                    node: None,
                    store: Some(Arc::new(store)),
                    hints: Arc::new(MemHintLog::new()),
                    incarnation: 0,
                    skew_micros: drift.saturating_add(offset),
                    clock_outlier: drift.saturating_add(offset).unsigned_abs()
                        >= CLOCK_OUTLIER_MICROS,
                    timer_at: None,
                    started_before: false,
                    fresh: true,
                    paused_until: Instant::ZERO,
                    stall_until: Instant::ZERO,
                    left: false,
                    replaces: None,
                    persisted: None,
                }
            })
            .collect();
        SimCluster {
            scenario,
            factory,
            seed,
            rng,
            now: Instant::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            nodes,
            by_addr,
            seeds,
            membership_log: Vec::new(),
            cut: BTreeSet::new(),
            loss: scenario.net.loss,
            history: Vec::new(),
            in_flight: BTreeMap::new(),
            schema_requests: BTreeMap::new(),
            schema_changes: Vec::new(),
            schema_repair_waits: 0,
            schema_queued: std::collections::VecDeque::new(),
            schema_adopted: Vec::new(),
            placements: BTreeMap::new(),
            client_ops_left: vec![scenario.ops_per_client; scenario.clients],
            next_request: 1,
            next_value: 1,
            next_node_id: scenario.nodes as u64 + 1,
            frames: (0, 0, 0),
            capture: None,
            ts_owner: BTreeMap::new(),
            value_owner: BTreeMap::new(),
            tag_owner: BTreeMap::new(),
            workload_end: Instant::ZERO,
            unconverged: Vec::new(),
            never_caught_up: Vec::new(),
            never_left: Vec::new(),
            max_hint_bytes_per_target: 0,
            scanner: scans::Scanner::default(),
        }
    }

    fn schedule(&mut self, at: Instant, ev: Event) {
        self.seq += 1;
        self.events.push(Some(ev));
        self.queue
            .push(Reverse((at, self.seq, self.events.len() - 1)));
    }

    /// Node `i`'s wall clock now (microseconds since the Unix epoch): the
    /// virtual time plus its skew and every jump it took.
    fn wall_of(&self, i: usize) -> u64 {
        SIM_EPOCH_MICROS
            .saturating_add(self.now.as_micros())
            .saturating_add_signed(self.nodes[i].skew_micros)
    }

    /// The time given to node `i` with every input: virtual time and the
    /// node's own wall clock (skewed, possibly jumping).
    fn now_for(&self, i: usize) -> cassio_core::time::Now {
        cassio_core::time::Now::new(self.now, self.wall_of(i))
    }

    fn config_for(&self, i: usize) -> Config {
        let mut c = Config::new("sim", addr_of(i));
        c.rng_seed = self.nodes[i]
            .incarnation
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ i as u64;
        c.seeds = if self.scenario.seedless_first_node && i == 0 {
            Vec::new()
        } else {
            self.seeds.clone()
        };
        c.vnodes = 16;
        c.gossip = self.scenario.gossip.clone();
        let rf = self
            .scenario
            .rf_overrides
            .get(&i)
            .copied()
            .unwrap_or(self.scenario.rf);
        c.keyspaces = vec![KeyspaceConfig {
            default_consistency: Consistency::Quorum,
            datacenters: self.scenario.datacenters.clone(),
            strategy: if self.scenario.craq {
                cassio_core::ReplicationStrategy::Craq
            } else {
                cassio_core::ReplicationStrategy::Leaderless
            },
            ..KeyspaceConfig::default_keyspace(rf)
        }];
        c.datacenter = self.scenario.datacenter_of(i).to_string();
        c.rack = self.scenario.rack_of(i).to_string();
        c.request_timeout = self.scenario.request_timeout;
        c.tombstone_grace = self.scenario.tombstone_grace;
        c.repair = self.scenario.repair.clone();
        c.hints = self.scenario.hints.clone();
        c.mutations = self.scenario.mutations.clone();
        c.persisted = self.nodes[i].persisted.clone();
        // New on the first start or on a wiped directory; a restart is an
        // existing member coming back.
        c.bootstrap = self.nodes[i].fresh;
        c.replaces = self.nodes[i].replaces.filter(|_| self.nodes[i].fresh);
        c
    }

    fn start_node(&mut self, i: usize) {
        self.nodes[i].incarnation += 1;
        let wall = self.wall_of(i);
        let config = self.config_for(i);
        // A simulated configuration is valid by construction.
        let node = Node::new(self.nodes[i].id, config, self.now, wall)
            .unwrap_or_else(|e| panic!("simulator built a bad config: {e}"));
        self.nodes[i].node = Some(node);
        self.nodes[i].timer_at = None;
        if self.nodes[i].started_before && self.scenario.snapshot_when_caught_up.contains(&i) {
            let incarnation = self.nodes[i].incarnation;
            self.schedule(
                self.now,
                Event::CaughtUpWatch {
                    node: i,
                    incarnation,
                    since: self.now,
                },
            );
        }
        self.nodes[i].started_before = true;
        self.nodes[i].fresh = false;
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
                Output::Reply { id, result } => {
                    if let Some(idx) = self.schema_requests.remove(&id) {
                        self.schema_answered(idx, i, result);
                    } else if self.is_scan_request(id) {
                        self.scan_answered(result);
                    } else {
                        self.complete(id, result)
                    }
                }
                Output::Event(NodeEvent::SchemaAdopted { version, .. }) => {
                    if let Some(n) = self.nodes[i].node.as_ref() {
                        if n.schema().version == version {
                            self.schema_adopted.push((n.id(), n.schema().clone()));
                        }
                        self.placement_sample(i);
                    }
                }
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
                Output::Persist(state) => self.nodes[i].persisted = Some(state),
                Output::Event(NodeEvent::Restamped { from, to }) => {
                    // The coordinator re-stamped a superseded write: stores
                    // will execute it under the new stamp.
                    if let Some(&idx) = self.ts_owner.get(&from) {
                        self.ts_owner.entry(to).or_insert(idx);
                    }
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

    fn send(&mut self, from: usize, to: SocketAddr, msg: &PeerMsg) {
        match msg {
            PeerMsg::Write { tag, version, .. } => {
                self.note_write_msg(from, *tag, version.ts);
                self.note_fan_out();
            }
            // A chain request forwarded to a key's head or a serving
            // member: it may take effect whatever the answer.
            PeerMsg::Read { .. } | PeerMsg::Chain(_) => self.note_fan_out(),
            _ => {}
        }
        self.frames.0 += 1;
        let Some(&to) = self.by_addr.get(&to) else {
            return;
        };
        let Some(node) = self.nodes[from].node.as_ref() else {
            return;
        };
        let frame = match node.encode(msg) {
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

    pub(super) fn run(mut self) -> SimOutcome {
        for i in 0..self.nodes.len() {
            if !self.scenario.join_later.contains(&i) {
                self.start_node(i);
            }
        }
        let warmup = Instant::ZERO + self.scenario.warmup;
        for c in 0..self.scenario.clients {
            let start = Duration::from_micros(self.rng.random_range(0..10_000));
            self.schedule(warmup + start, Event::ClientNext { client: c });
        }
        if self.scenario.scan.is_some() {
            self.schedule(warmup, Event::LoaderStart);
        }
        let mut last_fault = Duration::ZERO;
        for (at, f) in self.scenario.faults.clone() {
            let end = match &f {
                Fault::Pause { duration, .. } | Fault::StorageStall { duration, .. } => {
                    at + *duration
                }
                _ => at,
            };
            last_fault = last_fault.max(end);
            self.schedule(warmup + at, Event::Fault(f));
        }
        if let Some(every) = self.factory.sync_interval() {
            self.schedule(Instant::ZERO + every, Event::SyncTick);
        }
        if let Some(every) = self.scenario.compact_every {
            self.schedule(Instant::ZERO + every, Event::CompactTick);
        }
        self.schedule(Instant::ZERO, Event::HintSample);
        // Faults stop well after the workload: heal, restore every node,
        // drop loss, let liveness settle, then repair and wait for quiet.
        let workload_settle = warmup
            + (last_fault + self.scenario.aftermath).max(Duration::from_secs(12))
            + Duration::from_secs(1);
        // With a convergence check, the replicas get that long without
        // client requests (and with every scheduled fault over) before the
        // check, and the final heal and restarts come after it.
        let settle = match self.scenario.converge_within {
            Some(d) => {
                let at = workload_settle + d;
                self.schedule(at, Event::ConvergeCheck);
                at + Duration::from_secs(1)
            }
            None => workload_settle,
        };
        self.schedule(settle, Event::Fault(Fault::Heal));
        self.schedule(settle, Event::Fault(Fault::SetLoss(0.0)));
        self.schedule(settle, Event::Fault(Fault::SyncClocks));
        for i in 0..self.nodes.len() {
            self.schedule(
                settle,
                Event::Fault(Fault::StorageErrors { node: i, rate: 0.0 }),
            );
            self.schedule(settle, Event::Fault(Fault::Restart(i)));
        }
        // Clients stop early enough that every request is answered (or
        // times out) before the faults stop.
        self.workload_end = Instant::from_micros(
            workload_settle
                .as_micros()
                .saturating_sub(self.scenario.request_timeout.as_micros() as u64 + 1_000_000),
        );
        // Liveness needs a few rounds after healing (phi must fall, probes
        // must land) before a read at ALL can reach every replica.
        let repair_at = settle + self.scenario.heal_time;
        self.schedule(repair_at, Event::RepairPass);
        let mut end = repair_at + Duration::from_secs(5);
        if self.scenario.liveness_phase {
            self.schedule(end, Event::LivenessWrites);
            self.schedule(end + Duration::from_secs(3), Event::LivenessReads);
            end = end + Duration::from_secs(6);
        }
        self.run_until(end);
        self.outcome()
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
            // A paused process handles nothing: its inputs wait.
            if let Some(i) = ev.node() {
                let until = self.nodes[i].paused_until;
                if until > self.now && self.nodes[i].node.is_some() {
                    self.schedule(until, ev);
                    continue;
                }
            }
            self.dispatch(ev);
        }
        self.now = self.now.max(end);
    }

    fn dispatch(&mut self, ev: Event) {
        match ev {
            Event::Deliver { to, frame } => {
                if self.nodes[to].node.is_some() {
                    self.frames.1 += 1;
                    let now = self.now_for(to);
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
                    let now = self.now_for(node);
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
            } => self.storage_done(node, incarnation, token, op),
            Event::Client {
                node,
                incarnation,
                id,
                idx,
                req,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.handle_client(node, id, idx, req);
                }
            }
            Event::ClientNext { client } => self.client_next(client),
            Event::ScanNext => self.scan_next(),
            Event::LoaderStart => self.start_loader(),
            Event::ScanGiveUp { id } => self.scan_give_up(id),
            Event::Fault(f) => self.apply_fault(f),
            Event::RepairPass => self.repair_pass(),
            Event::LivenessWrites => self.liveness(true),
            Event::LivenessReads => self.liveness(false),
            Event::ConvergeCheck => self.converge_check(),
            Event::CompactTick => {
                if let Some(every) = self.scenario.compact_every {
                    self.compact_tick(every);
                }
            }
            Event::HintSample => {
                self.hint_sample();
                for i in 0..self.nodes.len() {
                    self.placement_sample(i);
                }
            }
            Event::CaughtUpWatch {
                node,
                incarnation,
                since,
            } => self.caught_up_watch(node, incarnation, since),
            Event::LeftWatch { node, since } => self.left_watch(node, since),
            Event::SchemaRetry { by, idx } => self.ask_schema(by, idx),
            Event::SyncTick => {
                for n in &self.nodes {
                    if let (Some(_), Some(s)) = (&n.node, &n.store) {
                        // A failed sync is the store's to report; the model
                        // then simply keeps less.
                        let _ = s.sync();
                    }
                }
                if let Some(every) = self.factory.sync_interval() {
                    self.schedule(self.now + every, Event::SyncTick);
                }
            }
        }
    }

    fn storage_done(&mut self, node: usize, incarnation: u64, token: StorageToken, op: StorageOp) {
        if self.nodes[node].incarnation != incarnation {
            return;
        }
        // A stalled disk completes nothing until it recovers.
        let stall = self.nodes[node].stall_until;
        if stall > self.now {
            self.schedule(
                stall,
                Event::StorageDone {
                    node,
                    incarnation,
                    token,
                    op,
                },
            );
            return;
        }
        let Some(store) = self.nodes[node].store.clone() else {
            return;
        };
        let hints = self.nodes[node].hints.clone();
        let result = self.execute(&*store, &*hints, op);
        let now = self.now_for(node);
        if let Some(n) = self.nodes[node].node.as_mut() {
            n.handle_storage(now, token, result);
        }
        self.pump(node);
    }

    /// Runs one storage operation against a node's store or hint log, with
    /// the history's bookkeeping of which writes a store executed.
    fn execute(&mut self, store: &dyn Store, hints: &dyn HintLog, op: StorageOp) -> StorageResult {
        let text = |e: cassio_core::StoreError| e.to_string();
        match op {
            StorageOp::Apply { key, version } => {
                let r = store.apply_replacing(&key, &version).map_err(text);
                // A store that refused the write did not apply it.
                if r.is_ok() {
                    self.note_applied(&version);
                }
                StorageResult::Applied(r)
            }
            StorageOp::Get { key } => StorageResult::Got(store.get(&key).map_err(text)),
            StorageOp::ApplyBatch { items } => {
                let mut outcomes = Vec::with_capacity(items.len());
                for (key, version) in &items {
                    match store.apply_replacing(key, version) {
                        Ok(outcome) => {
                            if outcome.kept() {
                                self.note_applied(version);
                            }
                            outcomes.push(outcome);
                        }
                        // The items before it stay applied, as on a real store.
                        Err(e) => return StorageResult::AppliedBatch(Err(text(e))),
                    }
                }
                StorageResult::AppliedBatch(Ok(outcomes))
            }
            StorageOp::GetBatch { keys } => StorageResult::GotBatch(
                keys.iter()
                    .map(|k| store.get(k))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(text),
            ),
            StorageOp::Digests { start, end, limit } => StorageResult::Digests(
                store
                    .digests(bound_slice(&start), bound_slice(&end), limit)
                    .map_err(text),
            ),
            StorageOp::Range { start, end, limit } => StorageResult::Ranged(
                store
                    .range(bound_slice(&start), bound_slice(&end), limit)
                    .map_err(text),
            ),
            StorageOp::SetPurgeWatermark { micros } => {
                store.set_purge_watermark(micros);
                StorageResult::WatermarkSet
            }
            StorageOp::HintAppend { target, hint } => {
                StorageResult::HintAppended(hints.append(target, &hint).map_err(text))
            }
            StorageOp::HintRead {
                target,
                after,
                max_bytes,
            } => StorageResult::HintsRead(hints.read(target, after, max_bytes).map_err(text)),
            StorageOp::HintTrim { target, through } => {
                StorageResult::HintsTrimmed(hints.trim(target, through).map_err(text))
            }
            StorageOp::HintDrop { target } => {
                StorageResult::HintsTrimmed(hints.drop_target(target).map_err(text))
            }
            StorageOp::HintBacklog => StorageResult::HintBacklog(hints.backlog().map_err(text)),
        }
    }

    fn outcome(mut self) -> SimOutcome {
        // A node still leaving when the run ends never finished handing
        // its ranges over.
        for n in &self.nodes {
            if n.left && n.node.as_ref().is_some_and(|node| !node.has_left()) {
                self.never_left.push(n.id);
            }
        }
        let mut replicas = BTreeMap::new();
        let view = self
            .regular_nodes()
            .first()
            .and_then(|&i| self.nodes[i].node.as_ref());
        for key in self.keys() {
            let Some(view) = view else {
                break;
            };
            let (skey, placed_by) = stored_as(self.scenario, &key);
            let owners = view.replicas_of(cassio_core::DEFAULT_KEYSPACE, &placed_by);
            let versions = owners
                .into_iter()
                .map(|id| {
                    let v = self
                        .nodes
                        .iter()
                        .find(|n| n.id == id)
                        .and_then(|n| n.store.as_ref())
                        .and_then(|s| s.get(&skey).ok().flatten());
                    (id, v)
                })
                .collect();
            replicas.insert(key, versions);
        }
        SimOutcome {
            seed: self.seed,
            history: self.history,
            replicas,
            frames: self.frames,
            unconverged: self.unconverged,
            never_caught_up: self.never_caught_up,
            never_left: self.never_left,
            max_hint_bytes_per_target: self.max_hint_bytes_per_target,
            final_schema_versions: self
                .nodes
                .iter()
                .filter_map(|n| n.node.as_ref())
                .map(|n| (n.id(), n.schema().version))
                .collect(),
            schema_adopted: self.schema_adopted,
            placements: self
                .placements
                .into_iter()
                .map(|((v, d, f), id)| (v, d, f, id))
                .collect(),
            schema_changes: self.schema_changes,
            schema_repair_waits: self.schema_repair_waits,
            scans: self.scanner.done,
        }
    }
}

/// A bound on a storage key as the store's scans take it.
fn bound_slice(b: &Bound<cassio_core::Key>) -> Bound<&[u8]> {
    b.as_ref().map(|k| &k[..])
}

/// The storage key of workload key `key`, and the key that places it: the
/// key itself, or (for a [`Scenario::cells`] workload) column `key` of its
/// row ([`crate::cluster::cell_row`]), placed by the row.
pub(crate) fn stored_as(scenario: &Scenario, key: &Bytes) -> (Bytes, Bytes) {
    let ks = cassio_core::DEFAULT_KEYSPACE;
    if scenario.cells {
        let row = crate::cluster::cell_row(key, scenario.cell_rows);
        if let Some(skey) = cassio_core::node::cell_storage_key(ks, &row, key) {
            return (skey, row);
        }
    }
    (cassio_core::node::storage_key(ks, key), key.clone())
}
