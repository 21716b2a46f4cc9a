//! The node: a message-in / message-out state machine that composes
//! membership, placement, the coordinator and the replica.
//!
//! The host feeds it with `handle_*` calls, then drains [`Node::poll_output`]
//! until it returns `None`, and calls [`Node::handle_timeout`] at (or after)
//! [`Node::poll_timeout`]. It never performs I/O, reads a clock or spawns.

use crate::anti_entropy::{AntiEntropy, RepairStatus, SyncMsg};
use crate::budget::ByteBudget;
use crate::clock_guard::ClockGuard;
use crate::config::{Config, KeyspaceConfig, ReplicationStrategy};
use crate::effects::{AfterApply, BgWaiter, Effects};
use crate::hints::{HintStatus, Hints};
use crate::membership::{AppState, GossipSend, Membership, MembershipEvent, NodeStatus};
use crate::persist::PersistedState;
use crate::placement::{default_tokens, Placement, PlacementKind, Rendezvous, TokenRing};
pub use crate::storage_ops::{StorageOp, StorageResult};
use crate::store::ApplyOutcome;
use crate::time::{Instant, Now};
use crate::types::{HybridClock, Key, NodeId, Timestamp, Token, Value, Versioned};
use crate::wire::{Envelope, PeerMsg, RequestTag, WireCodec, WriteOutcome};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

pub use crate::client_api::{ClientError, ClientOp, ClientRequest, ClientResponse, RequestId};
pub use crate::config::ConfigError;
pub use crate::output::{NodeEvent, Output, StorageToken};
pub use crate::storage_key::{
    split_storage_key, split_storage_key_token, storage_key, token_range_bounds,
};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Waiter {
    CoordWrite {
        tag: RequestTag,
        ts: Timestamp,
        key: Key,
    },
    /// The local store kept a newer version: read it to learn its stamp.
    CoordSuperseded {
        tag: RequestTag,
        ts: Timestamp,
    },
    CoordRead {
        tag: RequestTag,
    },
    ReplicaWrite {
        to: NodeId,
        tag: RequestTag,
        ts: Timestamp,
        key: Key,
    },
    ReplicaSuperseded {
        to: NodeId,
        tag: RequestTag,
        ts: Timestamp,
    },
    ReplicaRead {
        to: NodeId,
        tag: RequestTag,
    },
    Repair,
    /// Anti-entropy or hinted handoff.
    Bg(BgWaiter),
}

/// How many times a coordinator re-stamps a superseded write before it
/// gives up with [`ClientError::Contended`].
const MAX_STAMPS: u8 = 4;

/// How often a running node records that it is alive.
const ALIVE_PERSIST_MICROS: u64 = 3600 * 1_000_000;

/// How far above its newest timestamp a node persists its clock's
/// high-water mark: one persist per this much clock progress at most.
const CLOCK_RESERVE_MICROS: u64 = 1_000_000;

#[derive(Debug)]
enum PendingKind {
    Write {
        ts: Timestamp,
        value: Option<Value>,
        stamps: u8,
    },
    Read {
        responses: Vec<(NodeId, Option<Versioned>)>,
        repaired: Vec<(NodeId, Timestamp)>,
    },
}

#[derive(Debug)]
struct Pending {
    client: RequestId,
    key: Key,
    /// The whole replica set (for writes: who gets a hint if it missed it).
    replicas: Vec<NodeId>,
    /// Replicas that applied the write (its latest stamp).
    applied_by: Vec<NodeId>,
    sent_to: Vec<NodeId>,
    responded: Vec<NodeId>,
    needed: usize,
    ok: usize,
    failed: usize,
    answered: bool,
    deadline: Instant,
    kind: PendingKind,
}

/// One Cassio node as a pure state machine.
pub struct Node {
    id: NodeId,
    codec: WireCodec,
    /// The hybrid logical clock, kept within the clock bound.
    clock: ClockGuard,
    membership: Membership,
    placement_kind: PlacementKind,
    placement: Box<dyn Placement + Send + Sync>,
    placement_epoch: u64,
    keyspaces: BTreeMap<String, KeyspaceConfig>,
    request_timeout: std::time::Duration,
    rng: ChaCha8Rng,
    next_tag: RequestTag,
    next_token: u64,
    pending: HashMap<RequestTag, Pending>,
    deadlines: BTreeSet<(Instant, RequestTag)>,
    waiters: HashMap<u64, Waiter>,
    events: Vec<MembershipEvent>,
    out: VecDeque<Output>,
    shutting_down: bool,
    /// True once the node's view of the cluster has settled (see `settle`).
    ready: bool,
    /// Whether this node joins through seeds (it must wait for its view).
    joins_through_seeds: bool,
    /// The ring epoch last seen, and since when it has not changed.
    view_stable_since: (u64, Instant),
    /// The last wall-clock reading from the host, and when it was taken.
    wall: (Instant, u64),
    /// The clock high-water mark last persisted.
    clock_persisted: u64,
    /// The membership view epoch last persisted.
    view_persisted: u64,
    /// Before coordinating after a restart: the persisted view's members, a
    /// majority of which (this node included) must be heard from.
    restart_quorum: Option<Vec<NodeId>>,
    /// Before coordinating after a restart: the wall clock must pass the
    /// persisted high-water mark, so new writes are stamped near real time.
    clock_floor: u64,
    /// Keyspace agreement, cached per membership view epoch.
    agreement: (u64, BTreeMap<String, Option<ClientError>>),
    /// Anti-entropy: trees, rounds, exchanges.
    ae: AntiEntropy,
    /// Hinted handoff.
    hints: Hints,
    /// The byte budget anti-entropy and hint delivery share.
    budget: ByteBudget,
    /// Scratch space for the background machines' requests.
    fx: Effects,
    /// Items of Apply/ApplyBatch operations in flight, by token, so the
    /// tree can be updated from what each one replaced.
    applying: HashMap<u64, Vec<(Key, Versioned)>>,
    /// The purge watermark last given to the store.
    watermark_sent: u64,
    /// The wall time last persisted as `alive_micros`.
    alive_persisted: u64,
    #[cfg(feature = "mutations")]
    mutations: crate::config::Mutations,
}

impl Node {
    /// A node `id` configured by `config`, started at monotonic time `now`
    /// when the host's wall clock read `wall_micros` (microseconds since the
    /// Unix epoch). The generation (new on every restart) is derived from
    /// the wall clock, as in Cassandra.
    pub fn new(
        id: NodeId,
        config: Config,
        now: Instant,
        wall_micros: u64,
    ) -> Result<Self, ConfigError> {
        let mut keyspaces = BTreeMap::new();
        let mut ks_list = config.keyspaces.clone();
        if !ks_list.iter().any(|k| k.name == crate::DEFAULT_KEYSPACE) {
            ks_list.push(KeyspaceConfig::default_keyspace(3));
        }
        for ks in ks_list {
            if ks.name.is_empty() || ks.name.len() > 255 {
                return Err(ConfigError::KeyspaceName(ks.name));
            }
            if ks.replication_factor == 0 {
                return Err(ConfigError::ZeroReplication(ks.name));
            }
            if ks.default_consistency.required(ks.replication_factor) > ks.replication_factor {
                return Err(ConfigError::DefaultConsistency {
                    name: ks.name,
                    level: ks.default_consistency,
                    rf: ks.replication_factor,
                });
            }
            if keyspaces.contains_key(&ks.name) {
                return Err(ConfigError::DuplicateKeyspace(ks.name));
            }
            keyspaces.insert(ks.name.clone(), ks);
        }
        if config.vnodes == 0 && config.placement == PlacementKind::TokenRing {
            return Err(ConfigError::ZeroVnodes);
        }
        // Generations must grow across restarts even if the wall clock went
        // back: start above the one persisted by the previous run.
        let after_persisted = config
            .persisted
            .as_ref()
            .map_or(0, |p| p.generation.saturating_add(1));
        let generation = config
            .generation
            .unwrap_or(wall_micros / 1_000_000)
            .max(after_persisted);
        let tokens = config
            .tokens
            .clone()
            .unwrap_or_else(|| default_tokens(id, config.vnodes.max(1)));
        let joins_through_seeds = config.seeds.iter().any(|s| *s != config.listen_addr);
        let app = AppState {
            status: if joins_through_seeds && config.bootstrap {
                NodeStatus::Joining
            } else {
                NodeStatus::Normal
            },
            addr: config.listen_addr,
            tokens,
            keyspaces: keyspaces.values().cloned().collect(),
            load: 0,
            repaired_through: 0,
            hinting: Vec::new(),
        };
        let own_size = Membership::state_size(&crate::membership::NodeState {
            id,
            generation,
            version: u64::MAX,
            app_version: u64::MAX,
            app: Some(app.clone()),
        });
        if own_size > config.gossip.max_message_bytes {
            return Err(ConfigError::TooManyVnodes {
                vnodes: app.tokens.len(),
                bytes: own_size,
                max: config.gossip.max_message_bytes,
            });
        }
        let mut membership = Membership::new(
            id,
            generation,
            app,
            &config.seeds,
            config.gossip.clone(),
            now,
        );
        membership.set_wall(wall_micros);
        #[cfg(feature = "mutations")]
        let ignore_clock = config.mutations.ignore_persisted_clock;
        #[cfg(not(feature = "mutations"))]
        let ignore_clock = false;
        let persisted = config.persisted.clone().unwrap_or_default();
        let grace = u64::try_from(config.tombstone_grace.as_micros()).unwrap_or(u64::MAX);
        if persisted.alive_micros > 0 && wall_micros.saturating_sub(persisted.alive_micros) > grace
        {
            return Err(ConfigError::DownTooLong {
                down_hours: wall_micros.saturating_sub(persisted.alive_micros) / 3_600_000_000,
                grace_hours: grace / 3_600_000_000,
            });
        }
        let clock_floor = if ignore_clock {
            0
        } else {
            persisted.clock_high_water
        };
        if !persisted.members.is_empty() {
            membership.load_persisted(&persisted.members, now);
        }
        let restart_quorum = if persisted.members.is_empty() || config.start_without_quorum {
            None
        } else {
            Some(persisted.members.iter().map(|m| m.id).collect())
        };
        let ae_keyspaces: Vec<(String, usize)> = keyspaces
            .values()
            .map(|k| (k.name.clone(), k.replication_factor))
            .collect();
        let mut node = Node {
            id,
            codec: WireCodec::new(config.cluster.clone()),
            clock: ClockGuard::new(
                HybridClock::starting_above(id, clock_floor),
                u64::try_from(config.max_clock_offset.as_micros()).unwrap_or(u64::MAX),
            ),
            membership,
            placement_kind: config.placement,
            placement: Box::new(TokenRing::default()),
            placement_epoch: 0,
            keyspaces,
            request_timeout: config.request_timeout,
            rng: ChaCha8Rng::seed_from_u64(config.rng_seed ^ id.0.rotate_left(32)),
            // Tags carry the generation, so a late reply to the previous
            // run of this node can never match a request of this one.
            next_tag: ((generation & 0xFFFF_FFFF) << 32) | 1,
            next_token: 1,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            waiters: HashMap::new(),
            events: Vec::new(),
            out: VecDeque::new(),
            shutting_down: false,
            joins_through_seeds: false,
            // A node with no one to join and nothing persisted coordinates at
            // once; a joining or restarting node waits until its view has
            // settled (see `settle`).
            ready: false,
            view_stable_since: (0, now),
            wall: (now, wall_micros),
            clock_persisted: 0,
            view_persisted: 0,
            restart_quorum,
            clock_floor: if config.start_without_quorum {
                0
            } else {
                clock_floor
            },
            agreement: (0, BTreeMap::new()),
            ae: AntiEntropy::new(
                id,
                config.repair.clone(),
                ae_keyspaces,
                now,
                ((generation & 0xFFFF_FFFF) << 32) | 1,
            ),
            hints: Hints::new(
                config.hints.clone(),
                config.tombstone_grace,
                ((generation & 0xFFFF_FFFF) << 32) | 1,
            ),
            budget: ByteBudget::new(config.repair.bytes_per_sec, now),
            fx: Effects::default(),
            applying: HashMap::new(),
            watermark_sent: 0,
            alive_persisted: 0,
            #[cfg(feature = "mutations")]
            mutations: config.mutations.clone(),
        };
        #[cfg(feature = "mutations")]
        let skip_syncing = config.mutations.skip_syncing;
        #[cfg(not(feature = "mutations"))]
        let skip_syncing = false;
        if skip_syncing {
            node.membership.set_joined_status(NodeStatus::Normal);
        }
        if config.persisted.is_some() && !skip_syncing {
            // A restart: this node may have missed writes while it was
            // down; it reads again once hints and a round caught it up.
            node.membership.set_status(NodeStatus::Syncing);
        }
        #[cfg(feature = "mutations")]
        if config.mutations.purge_by_grace_only {
            node.watermark_sent = u64::MAX;
            node.storage(
                StorageOp::SetPurgeWatermark { micros: u64::MAX },
                Waiter::Bg(BgWaiter::Watermark),
            );
        }
        node.joins_through_seeds = joins_through_seeds;
        node.rebuild_placement();
        node.settle(now);
        node.persist_if_changed();
        Ok(node)
    }

    fn build_placement(&self) -> Box<dyn Placement + Send + Sync> {
        let owners = self.membership.token_owners();
        match self.placement_kind {
            PlacementKind::TokenRing => Box::new(TokenRing::new(owners)),
            PlacementKind::Rendezvous => {
                Box::new(Rendezvous::new(owners.into_iter().map(|(id, _)| id)))
            }
        }
    }

    /// Rebuilds the ring only when membership changed who owns what: in a
    /// large cluster that is joining, rebuilding on every gossip delta
    /// would cost more than the gossip itself.
    fn rebuild_placement(&mut self) {
        if self.placement_epoch != self.membership.ring_epoch() {
            self.placement = self.build_placement();
            self.placement_epoch = self.membership.ring_epoch();
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The codec for this node's cluster (frame cap, cluster name).
    pub fn codec(&self) -> &WireCodec {
        &self.codec
    }

    /// What this node knows of membership and liveness.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The replica set of `key` in `keyspace` under the current view.
    pub fn replicas_of(&self, keyspace: &str, key: &[u8]) -> Vec<NodeId> {
        let rf = self
            .keyspaces
            .get(keyspace)
            .map_or(0, |k| k.replication_factor);
        if self.placement_epoch == self.membership.ring_epoch() {
            self.placement.replicas(Token::of(key), rf)
        } else {
            self.build_placement().replicas(Token::of(key), rf)
        }
    }

    /// Each token owner's share of the ring (token-ring placement), or an
    /// equal share per owner (rendezvous placement); sums to 1.
    pub fn ownership(&self) -> BTreeMap<NodeId, f64> {
        let owners = self.membership.token_owners();
        match self.placement_kind {
            PlacementKind::TokenRing => TokenRing::new(owners).ownership(),
            PlacementKind::Rendezvous => {
                let share = 1.0 / owners.len().max(1) as f64;
                owners.into_iter().map(|(id, _)| (id, share)).collect()
            }
        }
    }

    /// Starts a graceful leave: the node gossips `Leaving`, then `Left`;
    /// the host shuts down once [`Node::has_left`] is true.
    pub fn leave(&mut self, now: impl Into<Now>) {
        let now = self.enter(now);
        self.membership.leave(now);
        self.leave_input();
    }

    /// True once this node has announced that it left the cluster.
    pub fn has_left(&self) -> bool {
        self.membership.has_left()
    }

    /// Updates the storage load this node gossips (bytes).
    pub fn set_load(&mut self, load: u64) {
        self.membership.set_load(load);
    }

    /// Requests in flight (answered or not) that still hold state.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The wall clock at monotonic time `now`: the host's latest reading
    /// plus the monotonic time since it was taken.
    fn wall_now(&self, now: Instant) -> u64 {
        self.wall
            .1
            .saturating_add(now.as_micros().saturating_sub(self.wall.0.as_micros()))
    }

    /// Takes in the host's clock readings at an input.
    fn enter(&mut self, now: impl Into<Now>) -> Instant {
        let now = now.into();
        if let Some(w) = now.wall_micros {
            self.wall = (now.mono, w);
        }
        let wall = self.wall_now(now.mono);
        self.membership.set_wall(wall);
        now.mono
    }

    /// Work every input ends with: persist what changed.
    fn leave_input(&mut self) {
        self.flush_events();
        self.persist_if_changed();
    }

    /// Emits [`Output::Persist`] when the view changed or the clock nears
    /// the persisted high-water mark.
    fn persist_if_changed(&mut self) {
        let clock = self.clock.micros();
        let view = self.membership.view_epoch();
        if view == self.view_persisted
            && clock.saturating_add(CLOCK_RESERVE_MICROS / 2) < self.clock_persisted
            && self.wall.1.saturating_sub(self.alive_persisted) < ALIVE_PERSIST_MICROS
        {
            return;
        }
        self.view_persisted = view;
        self.clock_persisted = self
            .clock_persisted
            .max(clock.saturating_add(CLOCK_RESERVE_MICROS))
            .max(self.clock_floor);
        self.alive_persisted = self.wall.1;
        self.out.push_back(Output::Persist(PersistedState {
            clock_high_water: self.clock_persisted,
            generation: self.membership.generation(),
            members: self.membership.persisted_members(),
            alive_micros: self.wall.1,
        }));
    }

    /// Moves the clock past `ts` if it is within the maximum offset of the
    /// cluster's time; returns how far ahead it was otherwise.
    fn observe_bounded(&mut self, now: Instant, ts: Timestamp) -> Result<(), u64> {
        let wall = self.wall_now(now);
        let membership = &self.membership;
        self.clock
            .observe_bounded(now, wall, ts, || membership.live_clock_offsets())
    }

    /// A new timestamp for a write this node coordinates.
    fn stamp(&mut self, now: Instant) -> Timestamp {
        let wall = self.wall_now(now);
        #[cfg(feature = "mutations")]
        if self.mutations.random_timestamps {
            use rand::Rng;
            // Anywhere from 2 s behind to just inside the offset bound ahead,
            // so replicas accept them: wrong, but not refused.
            let ahead = self.clock.max_offset().saturating_sub(100_000);
            let micros =
                wall.saturating_sub(2_000_000) + self.rng.random_range(0..2_000_000 + ahead);
            let logical = self.rng.random_range(0..4);
            return Timestamp::new(micros, logical, self.id);
        }
        self.clock.stamp(wall)
    }

    /// The next thing for the host to do, or `None` when there is nothing.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the host should call [`Node::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut m = self.membership.poll_timeout();
        #[cfg(feature = "mutations")]
        let background = !self.mutations.no_anti_entropy;
        #[cfg(not(feature = "mutations"))]
        let background = true;
        if background {
            m = m.min(self.ae.poll_timeout());
            if let Some(h) = self.hints.poll_timeout() {
                m = m.min(h);
            }
            if self.ae.has_deferred() {
                m = m.min(self.budget.ready_at());
            }
        }
        Some(match self.deadlines.first() {
            Some(&(d, _)) => d.min(m),
            None => m,
        })
    }

    /// Decodes a frame and handles the message in it; a bad frame is
    /// reported as an event and dropped.
    pub fn handle_frame(&mut self, now: impl Into<Now>, frame: &[u8]) {
        match self.codec.decode(frame) {
            Ok(Envelope { from, msg, .. }) => self.handle_message(now, from, msg),
            Err(e) => self.out.push_back(Output::Event(NodeEvent::BadFrame(e))),
        }
    }

    /// Handles a message from peer `from`.
    pub fn handle_message(&mut self, now: impl Into<Now>, from: NodeId, msg: PeerMsg) {
        let now = self.enter(now);
        self.handle_peer(now, from, msg);
        self.settle(now);
        self.leave_input();
    }

    fn handle_peer(&mut self, now: Instant, from: NodeId, msg: PeerMsg) {
        let is_gossip = matches!(msg, PeerMsg::Gossip(_));
        // Gossip is how strangers join; anything else must come from a member.
        if from == self.id || (!is_gossip && !self.membership.is_member(from)) {
            self.out
                .push_back(Output::Event(NodeEvent::UnknownPeer(from)));
            return;
        }
        if !is_gossip {
            self.membership.heard_from(from, now, &mut self.events);
        }
        match msg {
            PeerMsg::Gossip(g) => {
                let sends =
                    self.membership
                        .handle_gossip(from, g, now, &mut self.rng, &mut self.events);
                self.push_gossip(sends);
            }
            PeerMsg::Write { tag, key, version } => {
                if let Err(ahead_micros) = self.observe_bounded(now, version.ts) {
                    self.out
                        .push_back(Output::Event(NodeEvent::ClockAheadRefused {
                            from,
                            ahead_micros,
                        }));
                    self.send(
                        from,
                        PeerMsg::WriteAck {
                            tag,
                            outcome: WriteOutcome::ClockAhead,
                        },
                    );
                } else {
                    let ts = version.ts;
                    self.storage(
                        StorageOp::Apply {
                            key: key.clone(),
                            version,
                        },
                        Waiter::ReplicaWrite {
                            to: from,
                            tag,
                            ts,
                            key,
                        },
                    );
                }
            }
            PeerMsg::Read { tag, key } => {
                self.storage(
                    StorageOp::Get { key },
                    Waiter::ReplicaRead { to: from, tag },
                );
            }
            PeerMsg::Repair { key, version } => {
                if let Err(ahead_micros) = self.observe_bounded(now, version.ts) {
                    self.out
                        .push_back(Output::Event(NodeEvent::ClockAheadRefused {
                            from,
                            ahead_micros,
                        }));
                } else {
                    self.storage(StorageOp::Apply { key, version }, Waiter::Repair);
                }
            }
            PeerMsg::Sync(m) => {
                self.rebuild_placement();
                let wall = self.wall_now(now);
                self.ae.on_message(
                    from,
                    m,
                    now,
                    wall,
                    self.placement.as_ref(),
                    &mut self.budget,
                    &mut self.fx,
                );
                self.drain_fx();
            }
            PeerMsg::Hints(m) => {
                let keyspaces = &self.keyspaces;
                self.hints
                    .on_message(from, m, &|ks| keyspaces.contains_key(ks), &mut self.fx);
                self.drain_fx();
            }
            PeerMsg::WriteAck { tag, outcome } => self.on_write_result(now, tag, from, outcome),
            PeerMsg::ReadReply { tag, result } => {
                if let Ok(Some(v)) = &result {
                    // A version too far ahead still answers the read (it is
                    // stored data) but does not drag this node's clock.
                    let _ = self.observe_bounded(now, v.ts);
                }
                self.on_read_result(tag, from, result.ok())
            }
        }
    }

    /// Starts a client request; its answer comes out as `Output::Reply { id, .. }`.
    pub fn handle_client(&mut self, now: impl Into<Now>, id: RequestId, req: ClientRequest) {
        let now = self.enter(now);
        self.client_request(now, id, req);
        self.leave_input();
    }

    fn client_request(&mut self, now: Instant, id: RequestId, req: ClientRequest) {
        if self.shutting_down {
            return self.reply(id, Err(ClientError::ShuttingDown));
        }
        self.settle(now);
        if !self.ready {
            return self.reply(id, Err(ClientError::Joining));
        }
        if !self.keyspaces.contains_key(&req.keyspace) {
            return self.reply(id, Err(ClientError::UnknownKeyspace(req.keyspace)));
        }
        if let Some(e) = self.disagreement(&req.keyspace) {
            return self.reply(id, Err(e));
        }
        if !matches!(req.op, ClientOp::Get { .. }) {
            let membership = &self.membership;
            let check = self
                .clock
                .check_own_offset(now, || membership.live_clock_offsets());
            let offset = check.offset_micros;
            if check.changed {
                self.out.push_back(Output::Event(NodeEvent::ClockOffset {
                    offset_micros: offset,
                }));
            }
            if check.off {
                return self.reply(
                    id,
                    Err(ClientError::ClockOffset {
                        offset_ms: offset / 1000,
                        max_ms: self.clock.max_offset() / 1000,
                    }),
                );
            }
        }
        let Some(ks) = self.keyspaces.get(&req.keyspace) else {
            return self.reply(id, Err(ClientError::UnknownKeyspace(req.keyspace)));
        };
        let level = req.consistency.unwrap_or(ks.default_consistency);
        let rf = ks.replication_factor;
        let needed = level.required(rf);
        if needed > rf {
            return self.reply(id, Err(ClientError::InvalidConsistency { level, rf }));
        }
        match ks.strategy {
            ReplicationStrategy::Leaderless => self.start_leaderless(now, id, &req, rf, needed),
        }
    }

    fn start_leaderless(
        &mut self,
        now: Instant,
        id: RequestId,
        req: &ClientRequest,
        rf: usize,
        needed: usize,
    ) {
        let user_key = match &req.op {
            ClientOp::Get { key } | ClientOp::Put { key, .. } | ClientOp::Delete { key } => key,
        };
        self.rebuild_placement();
        let replicas = self.placement.replicas(Token::of(user_key), rf);
        // A `Syncing` replica may lack writes it missed while down: it takes
        // writes but answers no reads until it has caught up. A read of
        // every replica (ALL) may include it: the newest version among all
        // replicas is the newest any of them kept.
        let skip_syncing = matches!(req.op, ClientOp::Get { .. }) && needed < rf;
        let live: Vec<NodeId> = replicas
            .iter()
            .copied()
            .filter(|&r| self.membership.is_alive(r))
            .filter(|&r| !skip_syncing || !self.membership.is_syncing(r))
            .collect();
        // Fewer nodes on the ring than the replication factor: a "quorum"
        // of the few would not intersect the quorum of the full set later.
        if live.len() < needed || replicas.len() < rf {
            return self.reply(
                id,
                Err(ClientError::Unavailable {
                    needed,
                    alive: live.len(),
                }),
            );
        }
        let key = storage_key(&req.keyspace, user_key);
        let tag = self.new_tag();
        let kind = match &req.op {
            ClientOp::Get { .. } => {
                for &r in &live {
                    if r == self.id {
                        self.storage(
                            StorageOp::Get { key: key.clone() },
                            Waiter::CoordRead { tag },
                        );
                    } else {
                        self.send(
                            r,
                            PeerMsg::Read {
                                tag,
                                key: key.clone(),
                            },
                        );
                    }
                }
                PendingKind::Read {
                    responses: Vec::new(),
                    repaired: Vec::new(),
                }
            }
            ClientOp::Put { value, .. } => {
                self.fan_out_write(now, tag, &key, Some(value.clone()), &live)
            }
            ClientOp::Delete { .. } => self.fan_out_write(now, tag, &key, None, &live),
        };
        let deadline = now + self.request_timeout;
        self.pending.insert(
            tag,
            Pending {
                client: id,
                key,
                replicas,
                applied_by: Vec::new(),
                sent_to: live,
                responded: Vec::new(),
                needed,
                ok: 0,
                failed: 0,
                answered: false,
                deadline,
                kind,
            },
        );
        self.deadlines.insert((deadline, tag));
    }

    fn new_tag(&mut self) -> RequestTag {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        tag
    }

    fn fan_out_write(
        &mut self,
        now: Instant,
        tag: RequestTag,
        key: &Key,
        value: Option<Value>,
        live: &[NodeId],
    ) -> PendingKind {
        let ts = self.stamp(now);
        self.send_write(
            tag,
            key,
            Versioned {
                ts,
                value: value.clone(),
            },
            live,
        );
        PendingKind::Write {
            ts,
            value,
            stamps: 1,
        }
    }

    fn send_write(&mut self, tag: RequestTag, key: &Key, version: Versioned, live: &[NodeId]) {
        let ts = version.ts;
        for &r in live {
            if r == self.id {
                self.storage(
                    StorageOp::Apply {
                        key: key.clone(),
                        version: version.clone(),
                    },
                    Waiter::CoordWrite {
                        tag,
                        ts,
                        key: key.clone(),
                    },
                );
            } else {
                self.send(
                    r,
                    PeerMsg::Write {
                        tag,
                        key: key.clone(),
                        version: version.clone(),
                    },
                );
            }
        }
    }

    /// Completes a storage operation the node asked for.
    pub fn handle_storage(
        &mut self,
        now: impl Into<Now>,
        token: StorageToken,
        result: StorageResult,
    ) {
        let now = self.enter(now);
        self.storage_done(now, token, result);
        self.leave_input();
    }

    fn storage_done(&mut self, now: Instant, token: StorageToken, result: StorageResult) {
        let Some(waiter) = self.waiters.remove(&token.0) else {
            return; // unknown or duplicate completion
        };
        let applied = self.applying.remove(&token.0);
        match &result {
            StorageResult::Applied(Err(e))
            | StorageResult::Got(Err(e))
            | StorageResult::AppliedBatch(Err(e))
            | StorageResult::GotBatch(Err(e))
            | StorageResult::Digests(Err(e))
            | StorageResult::HintAppended(Err(e))
            | StorageResult::HintsRead(Err(e))
            | StorageResult::HintsTrimmed(Err(e))
            | StorageResult::HintBacklog(Err(e)) => self
                .out
                .push_back(Output::Event(NodeEvent::StorageFailed(e.clone()))),
            StorageResult::Applied(Ok(outcome)) => {
                if let (ApplyOutcome::Kept { replaced }, Some(items)) = (outcome, &applied) {
                    if let Some((key, version)) = items.first() {
                        self.ae.applied(key, replaced.as_ref(), version);
                    }
                }
            }
            StorageResult::AppliedBatch(Ok(outcomes)) => {
                if let Some(items) = &applied {
                    for (o, (key, version)) in outcomes.iter().zip(items) {
                        if let ApplyOutcome::Kept { replaced } = o {
                            self.ae.applied(key, replaced.as_ref(), version);
                        }
                    }
                }
            }
            _ => {}
        }
        if let Waiter::Bg(w) = waiter {
            self.background_done(now, w, result);
            return;
        }
        match (waiter, result) {
            (Waiter::CoordWrite { tag, ts, key }, StorageResult::Applied(r)) => match r {
                Ok(ApplyOutcome::Kept { .. }) => {
                    self.on_write_result(now, tag, self.id, WriteOutcome::Applied)
                }
                Ok(ApplyOutcome::Superseded) => {
                    self.storage(StorageOp::Get { key }, Waiter::CoordSuperseded { tag, ts })
                }
                Err(_) => self.on_write_result(now, tag, self.id, WriteOutcome::Failed),
            },
            (Waiter::CoordSuperseded { tag, ts }, StorageResult::Got(r)) => {
                let outcome = superseded_outcome(ts, r);
                self.on_write_result(now, tag, self.id, outcome)
            }
            (Waiter::CoordRead { tag }, StorageResult::Got(r)) => {
                self.on_read_result(tag, self.id, r.ok())
            }
            (Waiter::ReplicaWrite { to, tag, ts, key }, StorageResult::Applied(r)) => match r {
                Ok(ApplyOutcome::Kept { .. }) => self.send(
                    to,
                    PeerMsg::WriteAck {
                        tag,
                        outcome: WriteOutcome::Applied,
                    },
                ),
                Ok(ApplyOutcome::Superseded) => self.storage(
                    StorageOp::Get { key },
                    Waiter::ReplicaSuperseded { to, tag, ts },
                ),
                Err(_) => self.send(
                    to,
                    PeerMsg::WriteAck {
                        tag,
                        outcome: WriteOutcome::Failed,
                    },
                ),
            },
            (Waiter::ReplicaSuperseded { to, tag, ts }, StorageResult::Got(r)) => {
                let outcome = superseded_outcome(ts, r);
                self.send(to, PeerMsg::WriteAck { tag, outcome })
            }
            (Waiter::ReplicaRead { to, tag }, StorageResult::Got(r)) => self.send(
                to,
                PeerMsg::ReadReply {
                    tag,
                    result: r.map_err(|_| ()),
                },
            ),
            (Waiter::Repair | Waiter::Bg(_), _) => {}
            // A host that answers an Apply with Got (or the reverse) broke the
            // contract; treat it as a failed operation rather than guess.
            (Waiter::CoordWrite { tag, .. } | Waiter::CoordSuperseded { tag, .. }, _) => {
                self.on_write_result(now, tag, self.id, WriteOutcome::Failed)
            }
            (Waiter::CoordRead { tag }, _) => self.on_read_result(tag, self.id, None),
            (
                Waiter::ReplicaWrite { to, tag, .. } | Waiter::ReplicaSuperseded { to, tag, .. },
                _,
            ) => self.send(
                to,
                PeerMsg::WriteAck {
                    tag,
                    outcome: WriteOutcome::Failed,
                },
            ),
            (Waiter::ReplicaRead { to, tag }, _) => self.send(
                to,
                PeerMsg::ReadReply {
                    tag,
                    result: Err(()),
                },
            ),
        }
    }

    /// Runs timers: liveness, heartbeats, request deadlines. Early or
    /// spurious calls do nothing harmful.
    pub fn handle_timeout(&mut self, now: impl Into<Now>) {
        let now = self.enter(now);
        self.timers(now);
        self.leave_input();
    }

    fn timers(&mut self, now: Instant) {
        let sends = self
            .membership
            .handle_timeout(now, &mut self.rng, &mut self.events);
        self.push_gossip(sends);
        self.flush_events();
        self.settle(now);
        self.background(now);
        while let Some(&(deadline, tag)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&tag) {
                self.hint_missed(now, &p);
                if !p.answered {
                    let acked = p.ok;
                    self.reply(
                        p.client,
                        Err(ClientError::Timeout {
                            acked,
                            needed: p.needed,
                        }),
                    );
                }
            }
        }
    }

    /// A node that joined through seeds coordinates only once it is `Normal`
    /// and its ring has not changed for three gossip rounds (as Cassandra
    /// waits for gossip to settle): a partial view would place keys on the
    /// wrong replicas and acknowledge writes that reads elsewhere miss.
    ///
    /// A node that restarts with a persisted view also waits until it has
    /// heard from a majority of that view (itself included): the first
    /// nodes of a whole-cluster restart must not acknowledge writes on a
    /// ring where most replicas are still down and unknown-state. And it
    /// waits until its wall clock has passed the persisted clock high-water
    /// mark, so its first writes are not stamped far ahead of real time.
    fn settle(&mut self, now: Instant) {
        if self.ready {
            return;
        }
        let epoch = self.membership.ring_epoch();
        if self.view_stable_since.0 != epoch {
            self.view_stable_since = (epoch, now);
            if self.joins_through_seeds {
                return;
            }
        }
        if self.joins_through_seeds && self.restart_quorum.is_none() {
            let settle_for = self.membership.config().interval * 3;
            if !matches!(
                self.membership.status(),
                NodeStatus::Normal | NodeStatus::Syncing
            ) || now.saturating_duration_since(self.view_stable_since.1) < settle_for
            {
                return;
            }
        }
        if let Some(view) = &self.restart_quorum {
            let heard = view
                .iter()
                .filter(|&&id| self.membership.is_alive(id))
                .count();
            // This node counts as heard; a majority of view + 1.
            if (heard + 1) * 2 <= view.len() + 1 {
                return;
            }
        }
        if self.wall_now(now) < self.clock_floor {
            return;
        }
        self.ready = true;
    }

    /// Whether this node's definition of `keyspace` disagrees with most of
    /// the cluster's token owners that gossip one; the error says how.
    fn disagreement(&mut self, keyspace: &str) -> Option<ClientError> {
        #[cfg(feature = "mutations")]
        if self.mutations.skip_config_check {
            return None;
        }
        let epoch = self.membership.view_epoch();
        if self.agreement.0 != epoch {
            self.agreement = (epoch, BTreeMap::new());
        }
        if let Some(cached) = self.agreement.1.get(keyspace) {
            return cached.clone();
        }
        let ours = self.keyspaces.get(keyspace)?.clone();
        let mut same = 1usize;
        let mut others: Vec<KeyspaceConfig> = Vec::new();
        for (_, defs) in self.membership.member_keyspaces() {
            match defs.iter().find(|k| k.name == keyspace) {
                Some(k) if *k == ours => same += 1,
                Some(k) => others.push(k.clone()),
                None => {}
            }
        }
        let verdict = if same * 2 > same + others.len() {
            None
        } else {
            // The most common other definition is "the cluster's".
            let theirs = others
                .iter()
                .max_by_key(|k| others.iter().filter(|o| o == k).count())
                .cloned();
            theirs.map(|theirs| {
                let (setting, a, b) = if theirs.replication_factor != ours.replication_factor {
                    (
                        "replication_factor",
                        ours.replication_factor.to_string(),
                        theirs.replication_factor.to_string(),
                    )
                } else if theirs.default_consistency != ours.default_consistency {
                    (
                        "default_consistency",
                        ours.default_consistency.to_string(),
                        theirs.default_consistency.to_string(),
                    )
                } else {
                    (
                        "strategy",
                        format!("{:?}", ours.strategy),
                        format!("{:?}", theirs.strategy),
                    )
                };
                self.out.push_back(Output::Event(NodeEvent::ConfigMismatch {
                    keyspace: keyspace.to_string(),
                    detail: format!("{setting}: ours {a}, cluster {b}"),
                }));
                ClientError::ConfigMismatch {
                    keyspace: keyspace.to_string(),
                    setting: setting.to_string(),
                    ours: a,
                    theirs: b,
                }
            })
        };
        self.agreement
            .1
            .insert(keyspace.to_string(), verdict.clone());
        verdict
    }

    /// Whether the node coordinates client requests (its view has settled).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Fails every unanswered request with `ShuttingDown` and refuses new ones.
    pub fn shutdown(&mut self, now: impl Into<Now>) {
        let _ = self.enter(now);
        self.shutting_down = true;
        let mut tags: Vec<RequestTag> = self.pending.keys().copied().collect();
        tags.sort_unstable();
        for tag in tags {
            if let Some(p) = self.pending.remove(&tag) {
                self.deadlines.remove(&(p.deadline, tag));
                if !p.answered {
                    self.reply(p.client, Err(ClientError::ShuttingDown));
                }
            }
        }
    }

    /// Runs the background machines: tree rebuilds, anti-entropy rounds,
    /// hint delivery, the purge watermark and the exit from `Syncing`.
    fn background(&mut self, now: Instant) {
        #[cfg(feature = "mutations")]
        if self.mutations.no_anti_entropy {
            if self.membership.status() == NodeStatus::Syncing {
                self.membership.set_status(NodeStatus::Normal);
            }
            return;
        }
        self.rebuild_placement();
        let wall = self.wall_now(now);
        let membership = &self.membership;
        let alive = |id: NodeId| membership.is_alive(id);
        self.ae.tick(
            now,
            wall,
            self.ready && !self.shutting_down,
            self.placement.as_ref(),
            &alive,
            &mut self.budget,
            &mut self.fx,
        );
        self.hints.tick(now, &alive, &mut self.budget, &mut self.fx);
        let repaired_through = self.ae.status().repaired_through;
        self.membership
            .set_sync_state(repaired_through, self.hints.targets_pending());
        self.update_watermark();
        let membership = &self.membership;
        if membership.status() == NodeStatus::Syncing
            && self
                .ae
                .synced_with_every_live_peer(&|id| membership.is_alive(id))
            && !membership.hints_pending_for(self.id)
        {
            self.membership.set_status(NodeStatus::Normal);
            self.out.push_back(Output::Event(NodeEvent::CaughtUp));
        }
        self.drain_fx();
    }

    /// Tombstones may be purged below the time before which every member
    /// has completed an anti-entropy round with all its peers (less the
    /// clock offset and a request's lifetime, for writes in flight then).
    fn update_watermark(&mut self) {
        let Some(min) = self
            .membership
            .repair_watermarks()
            .into_iter()
            .map(|(_, w)| w)
            .min()
        else {
            return;
        };
        let margin = self.clock.max_offset()
            + u64::try_from(self.request_timeout.as_micros()).unwrap_or(u64::MAX)
            + 60_000_000;
        let wm = min.saturating_sub(margin);
        if min > 0 && wm > self.watermark_sent {
            self.watermark_sent = wm;
            self.storage(
                StorageOp::SetPurgeWatermark { micros: wm },
                Waiter::Bg(BgWaiter::Watermark),
            );
            self.out
                .push_back(Output::Event(NodeEvent::PurgeWatermark { micros: wm }));
        }
    }

    /// Turns what the background machines asked for into outputs.
    fn drain_fx(&mut self) {
        let fx = std::mem::take(&mut self.fx);
        for (to, msg) in fx.sends {
            self.send(to, msg);
        }
        for (op, w) in fx.storage {
            self.storage(op, Waiter::Bg(w));
        }
        for e in fx.events {
            self.out.push_back(Output::Event(e));
        }
    }

    /// A background storage operation completed.
    fn background_done(&mut self, now: Instant, w: BgWaiter, result: StorageResult) {
        self.rebuild_placement();
        let wall = self.wall_now(now);
        match (w, result) {
            (BgWaiter::RebuildPage { keyspace, run }, StorageResult::Digests(r)) => {
                self.ae.on_rebuild_page(&keyspace, run, r, now)
            }
            (BgWaiter::OwnDigests { xid }, StorageResult::Digests(r)) => self.ae.on_own_digests(
                xid,
                r,
                now,
                wall,
                self.placement.as_ref(),
                &mut self.budget,
                &mut self.fx,
            ),
            (BgWaiter::PushItems { xid, keys, pull }, StorageResult::GotBatch(r)) => {
                self.ae.on_push_items(
                    xid,
                    keys,
                    pull,
                    r,
                    now,
                    wall,
                    &mut self.budget,
                    &mut self.fx,
                )
            }
            (BgWaiter::ApplyItems { then, .. }, StorageResult::AppliedBatch(r)) => match then {
                AfterApply::Nothing => {}
                AfterApply::SyncPush { to, xid, pull } => match r {
                    Ok(_) => crate::anti_entropy::answer_pull(to, xid, pull, &mut self.fx),
                    Err(_) => self.fx.send(to, PeerMsg::Sync(SyncMsg::Failed { xid })),
                },
                AfterApply::HintBatch { to, tag } => self.fx.send(
                    to,
                    PeerMsg::Hints(crate::hints::HintMsg::Ack { tag, ok: r.is_ok() }),
                ),
            },
            (
                BgWaiter::AnswerKeys {
                    to,
                    xid,
                    limit,
                    segments,
                },
                StorageResult::Digests(r),
            ) => {
                let msg = match r {
                    Ok(entries) => crate::anti_entropy::keys_reply(xid, entries, limit, &segments),
                    Err(_) => SyncMsg::Failed { xid },
                };
                self.fx.send(to, PeerMsg::Sync(msg));
            }
            (BgWaiter::AnswerPull { to, xid, keys }, StorageResult::GotBatch(r)) => {
                let msg = match r {
                    Ok(values) => SyncMsg::PushReply {
                        xid,
                        items: keys
                            .into_iter()
                            .zip(values)
                            .filter_map(|(k, v)| v.map(|v| (k, v)))
                            .collect(),
                    },
                    Err(_) => SyncMsg::Failed { xid },
                };
                self.fx.send(to, PeerMsg::Sync(msg));
            }
            (BgWaiter::HintAppended { target, charge, .. }, StorageResult::HintAppended(r)) => {
                self.hints.on_appended(target, charge, r)
            }
            (BgWaiter::HintsRead { target }, StorageResult::HintsRead(r)) => {
                self.hints
                    .on_read(target, r, now, wall, &mut self.budget, &mut self.fx)
            }
            (BgWaiter::HintBacklog, StorageResult::HintBacklog(r)) => self.hints.on_backlog(r),
            (BgWaiter::HintsTrimmed | BgWaiter::Watermark, _) => {}
            // A host that answers with the wrong kind of result broke the
            // contract; the machines time out and retry.
            (w, r) => self
                .out
                .push_back(Output::Event(NodeEvent::StorageFailed(format!(
                    "storage answered {w:?} with {r:?}"
                )))),
        }
        self.drain_fx();
    }

    /// Keeps hints for the replicas of a finished write that did not
    /// apply it, when at least one did (a write no replica applied failed,
    /// and is not made durable behind the client's back).
    fn hint_missed(&mut self, now: Instant, p: &Pending) {
        #[cfg(feature = "mutations")]
        if self.mutations.no_anti_entropy {
            return;
        }
        let PendingKind::Write { ts, value, .. } = &p.kind else {
            return;
        };
        if p.applied_by.is_empty() {
            return;
        }
        let wall = self.wall_now(now);
        let version = Versioned {
            ts: *ts,
            value: value.clone(),
        };
        for &r in &p.replicas {
            if r == self.id || p.applied_by.contains(&r) {
                continue;
            }
            let down_for = self.membership.down_for(r, now);
            self.hints.hint(
                r,
                p.key.clone(),
                version.clone(),
                down_for,
                wall,
                &mut self.fx,
            );
        }
        self.drain_fx();
    }

    /// Anti-entropy figures: rounds, repairs, tree size.
    pub fn repair_status(&self) -> RepairStatus {
        self.ae.status()
    }

    /// Hinted-handoff figures: hints stored, delivered, dropped, pending.
    pub fn hint_status(&self) -> HintStatus {
        self.hints.status()
    }

    /// The root hash of `keyspace`'s anti-entropy tree, once built (two
    /// replicas of the same whole ranges agree on it).
    pub fn tree_root(&self, keyspace: &str) -> Option<u128> {
        self.ae.root(keyspace)
    }

    /// Starts an anti-entropy round now (or right after the running one),
    /// as `cassio repair` asks.
    pub fn start_repair(&mut self, now: impl Into<Now>, scope: crate::anti_entropy::RepairScope) {
        let now = self.enter(now);
        self.ae.request_scoped_round(now, scope);
        self.background(now);
        self.leave_input();
    }

    fn flush_events(&mut self) {
        let events = std::mem::take(&mut self.events);
        for e in events {
            match &e {
                // A peer back up may have missed writes: compare at once.
                MembershipEvent::Up(_) => self.ae.request_round(self.wall.0),
                MembershipEvent::Removed { id, .. } => {
                    self.hints.forget(*id, &mut self.fx);
                    self.drain_fx();
                }
                _ => {}
            }
            self.out.push_back(Output::Event(NodeEvent::Membership(e)));
        }
    }

    fn reply(&mut self, id: RequestId, result: Result<ClientResponse, ClientError>) {
        self.out.push_back(Output::Reply { id, result });
    }

    fn send(&mut self, to: NodeId, msg: PeerMsg) {
        if let Some(addr) = self.membership.addr_of(to) {
            self.out.push_back(Output::Send {
                to: Some(to),
                addr,
                msg,
            });
        }
    }

    fn push_gossip(&mut self, sends: Vec<GossipSend>) {
        for g in sends {
            self.out.push_back(Output::Send {
                to: g.to,
                addr: g.addr,
                msg: PeerMsg::Gossip(g.msg),
            });
        }
    }

    fn storage(&mut self, op: StorageOp, waiter: Waiter) {
        let token = self.next_token;
        self.next_token += 1;
        match &op {
            StorageOp::Apply { key, version } => {
                self.applying
                    .insert(token, vec![(key.clone(), version.clone())]);
            }
            StorageOp::ApplyBatch { items } => {
                self.applying.insert(token, items.clone());
            }
            _ => {}
        }
        self.waiters.insert(token, waiter);
        self.out.push_back(Output::Storage {
            token: StorageToken(token),
            op,
        });
    }

    /// Records that `from` answered request `tag`; false for duplicates,
    /// strangers and requests already finished.
    fn record_response(&mut self, tag: RequestTag, from: NodeId) -> bool {
        match self.pending.get_mut(&tag) {
            Some(p) if p.sent_to.contains(&from) && !p.responded.contains(&from) => {
                p.responded.push(from);
                true
            }
            _ => false,
        }
    }

    fn on_write_result(
        &mut self,
        now: Instant,
        tag: RequestTag,
        from: NodeId,
        outcome: WriteOutcome,
    ) {
        if !self.record_response(tag, from) {
            return;
        }
        #[cfg(feature = "mutations")]
        let outcome = match outcome {
            WriteOutcome::Superseded(_) if self.mutations.trust_local_clock => {
                WriteOutcome::Applied
            }
            o => o,
        };
        if let WriteOutcome::Superseded(newer) = outcome {
            if self.restamp(now, tag, newer) {
                return;
            }
        }
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        if outcome == WriteOutcome::Applied {
            p.applied_by.push(from);
            p.ok += 1;
        } else {
            p.failed += 1;
        }
        let (client, needed, acked, failed) = (p.client, p.needed, p.ok, p.failed);
        let outstanding = p.sent_to.len() - p.responded.len();
        let mut answer = None;
        if !p.answered && acked >= needed {
            p.answered = true;
            if let PendingKind::Write { ts, .. } = p.kind {
                answer = Some(Ok(ClientResponse::Written { ts }));
            }
        } else if !p.answered && acked + outstanding < needed {
            p.answered = true;
            answer = Some(Err(if outcome == WriteOutcome::ClockAhead {
                // Replicas refused our stamp: our clock is ahead of theirs.
                ClientError::ClockOffset {
                    offset_ms: i64::try_from(self.clock.max_offset() / 1000).unwrap_or(i64::MAX),
                    max_ms: self.clock.max_offset() / 1000,
                }
            } else {
                ClientError::ReplicaFailure {
                    acked,
                    failed,
                    needed,
                }
            }));
        }
        if let Some(a) = answer {
            self.reply(client, a);
        }
        self.finish_if_complete(tag);
    }

    /// A replica holds a version newer than the write's: unless the client
    /// was already answered, stamp the write again above it and send it to
    /// every replica anew under a fresh tag (late acks of the old stamp then
    /// match nothing). A write acknowledged before this one began is on a
    /// quorum, which intersects this write's quorum, so this write cannot be
    /// acknowledged below it. Returns whether the write was re-sent.
    fn restamp(&mut self, now: Instant, tag: RequestTag, newer: Timestamp) -> bool {
        let Some(p) = self.pending.get(&tag) else {
            return false;
        };
        let PendingKind::Write { ts, stamps, .. } = &p.kind else {
            return false;
        };
        if p.answered || newer <= *ts {
            return false;
        }
        if *stamps >= MAX_STAMPS {
            let (client, attempts) = (p.client, *stamps);
            if let Some(p) = self.pending.get_mut(&tag) {
                p.answered = true;
            }
            self.reply(client, Err(ClientError::Contended { attempts }));
            return true;
        }
        if self.observe_bounded(now, newer).is_err() {
            // A version stamped beyond the clock bound: count it as a failed
            // replica rather than chase it.
            return false;
        }
        let Some(mut p) = self.pending.remove(&tag) else {
            return false;
        };
        self.deadlines.remove(&(p.deadline, tag));
        let PendingKind::Write { ts, value, stamps } = p.kind else {
            return false;
        };
        let new_ts = self.stamp(now);
        self.out.push_back(Output::Event(NodeEvent::Restamped {
            from: ts,
            to: new_ts,
        }));
        let new_tag = self.new_tag();
        p.kind = PendingKind::Write {
            ts: new_ts,
            value: value.clone(),
            stamps: stamps + 1,
        };
        p.responded.clear();
        p.applied_by.clear();
        p.ok = 0;
        p.failed = 0;
        let key = p.key.clone();
        let targets = p.sent_to.clone();
        self.deadlines.insert((p.deadline, new_tag));
        self.pending.insert(new_tag, p);
        self.send_write(new_tag, &key, Versioned { ts: new_ts, value }, &targets);
        true
    }

    fn on_read_result(&mut self, tag: RequestTag, from: NodeId, result: Option<Option<Versioned>>) {
        if !self.record_response(tag, from) {
            return;
        }
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        let PendingKind::Read { responses, .. } = &mut p.kind else {
            return;
        };
        match result {
            Some(v) => {
                responses.push((from, v));
                p.ok += 1;
            }
            None => p.failed += 1,
        }
        let outstanding = p.sent_to.len() - p.responded.len();
        if !p.answered && p.ok >= p.needed {
            p.answered = true;
            let best = best_version(responses);
            let value = best.and_then(|v| v.value.clone());
            let client = p.client;
            self.reply(client, Ok(ClientResponse::Value(value)));
        } else if !p.answered && p.ok + outstanding < p.needed {
            p.answered = true;
            let err = ClientError::ReplicaFailure {
                acked: p.ok,
                failed: p.failed,
                needed: p.needed,
            };
            let client = p.client;
            self.reply(client, Err(err));
        }
        // Read repair runs after the answer, on every answer that arrives
        // (late ones included), so it never delays the client.
        if self.pending.get(&tag).is_some_and(|p| p.answered) {
            self.repair_stale(tag);
        }
        self.finish_if_complete(tag);
    }

    fn repair_stale(&mut self, tag: RequestTag) {
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        let PendingKind::Read {
            responses,
            repaired,
        } = &mut p.kind
        else {
            return;
        };
        let Some(best) = best_version(responses).cloned() else {
            return;
        };
        let mut targets = Vec::new();
        for (node, v) in responses.iter() {
            let stale = v.as_ref().is_none_or(|v| best.supersedes(v));
            if stale && !repaired.contains(&(*node, best.ts)) {
                repaired.push((*node, best.ts));
                targets.push(*node);
            }
        }
        let key = p.key.clone();
        for node in targets {
            if node == self.id {
                self.storage(
                    StorageOp::Apply {
                        key: key.clone(),
                        version: best.clone(),
                    },
                    Waiter::Repair,
                );
            } else {
                self.send(
                    node,
                    PeerMsg::Repair {
                        key: key.clone(),
                        version: best.clone(),
                    },
                );
            }
        }
    }

    fn finish_if_complete(&mut self, tag: RequestTag) {
        if let Some(p) = self.pending.get(&tag) {
            if p.answered && p.responded.len() == p.sent_to.len() {
                self.deadlines.remove(&(p.deadline, tag));
                if let Some(p) = self.pending.remove(&tag) {
                    // Replicas that were down were never sent the write.
                    if p.replicas.len() > p.applied_by.len() {
                        let now = self.wall.0;
                        self.hint_missed(now, &p);
                    }
                }
            }
        }
    }
}

/// What a replica answers when its store kept a newer version than `ts`:
/// the stored version's stamp, or `Applied` if it is this very write (a
/// duplicate delivery).
fn superseded_outcome(ts: Timestamp, stored: Result<Option<Versioned>, String>) -> WriteOutcome {
    match stored {
        Ok(Some(v)) if v.ts > ts => WriteOutcome::Superseded(v.ts),
        Ok(Some(v)) if v.ts == ts => WriteOutcome::Applied,
        // Equal-or-older stamp yet not kept, or gone: the store contradicts
        // itself; do not count it.
        Ok(_) | Err(_) => WriteOutcome::Failed,
    }
}

fn best_version(responses: &[(NodeId, Option<Versioned>)]) -> Option<&Versioned> {
    responses
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .max_by(|a, b| a.lww_cmp(b))
}
