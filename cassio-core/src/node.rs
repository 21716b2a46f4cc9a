//! The node: a message-in / message-out state machine that composes
//! membership, placement, the coordinator and the replica.
//!
//! The host feeds it with `handle_*` calls, then drains [`Node::poll_output`]
//! until it returns `None`, and calls [`Node::handle_timeout`] at (or after)
//! [`Node::poll_timeout`]. It never performs I/O, reads a clock or spawns.
//!
//! This file holds the node's state, its construction and what every input
//! shares (entering and leaving an input, persisting, outputs, timers). Each
//! kind of input has its own file under `node/`: `peer_input` (messages from
//! peers), `client_input` (client requests and scans), `upkeep` (the
//! background timer's work), `ring_change` (leave, remove, join) and
//! `schema_ops` (keyspace changes). The machines they drive live in their
//! own modules (`coordinator`, `replica`, `layout`, `hints`, `anti_entropy`,
//! `scan`, `schema_agreement`), each tested alone.

use crate::anti_entropy::{AntiEntropy, RepairStatus};
use crate::background::Machines;
use crate::budget::ByteBudget;
use crate::clock_guard::{wall_at, ClockGuard, NodeStamper, Stamper};
use crate::config::{Config, Consistency, ReplicationStrategy};
use crate::coordinator::{CoordEffect, CoordEffects, CoordWaiter, Coordinator, Op, ReplicaSet};
use crate::effects::{BgWaiter, Effects};
use crate::hints::{HintStatus, Hints};
use crate::keyspace_check::KeyspaceCheck;
use crate::layout::Layout;
use crate::membership::{AppState, GossipSend, Membership, MembershipEvent, NodeStatus};
use crate::persist::PersistedState;
use crate::placement::{default_tokens, PlacementKind};
use crate::readiness::Readiness;
use crate::replica::{self, ReplicaEffect, ReplicaWaiter};
use crate::scan::{PageRequest, RangeView, ScanCtx, ScanEffect, ScanWaiter, Scans};
use crate::schema::Schema;
use crate::schema_agreement::SchemaAgreement;
pub use crate::storage_ops::{StorageOp, StorageResult};
use crate::store::ApplyOutcome;
use crate::time::{Instant, Now};
use crate::transition::Transition;
use crate::types::{HybridClock, Key, NodeId, Token, Versioned};
use crate::wire::{Envelope, PeerMsg, WireCodec, WireError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};

pub use crate::client_api::{
    ClientError, ClientOp, ClientRequest, ClientResponse, RequestId, RowSlice,
};
pub use crate::config::ConfigError;
pub use crate::output::{NodeEvent, Output, StorageToken};
pub use crate::storage_key::{
    cell_storage_key, classify, row_bounds, row_prefix_bounds, split_storage_key,
    split_storage_key_token, storage_key, token_range_bounds, StoredItem,
};

mod chain_input;
mod client_input;
mod peer_input;
mod ring_change;
mod schema_ops;
mod upkeep;

/// Who waits for a storage operation, by the machine that asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Waiter {
    /// The coordinator.
    Coord(CoordWaiter),
    /// The replica.
    Replica(ReplicaWaiter),
    /// Anti-entropy or hinted handoff.
    Bg(BgWaiter),
    /// A scan (coordinated here, or served as a replica).
    Scan(ScanWaiter),
    /// Reclaiming a dropped keyspace's data.
    Reclaim(crate::reclaim::ReclaimWaiter),
    /// The chain machine (CRAQ keyspaces).
    Chain(crate::chain::ChainWaiter),
}

/// How often a running node records that it is alive.
const ALIVE_PERSIST_MICROS: u64 = 3600 * 1_000_000;

/// How far above its newest timestamp a node persists its clock's
/// high-water mark: one persist per this much clock progress at most.
const CLOCK_RESERVE_MICROS: u64 = 1_000_000;

/// One Cassio node as a pure state machine.
pub struct Node {
    id: NodeId,
    codec: WireCodec,
    /// The hybrid logical clock, kept within the clock bound.
    clock: ClockGuard,
    membership: Membership,
    /// Which nodes hold which keys.
    layout: Layout,
    /// The cluster's keyspaces, and the agreement that changes them.
    schema: SchemaAgreement,
    /// The newest schema version any peer's message claimed.
    peer_schema: u64,
    /// When this node last asked a peer for a newer schema.
    schema_fetched: Option<Instant>,
    /// The newest schema version each peer's messages carried.
    schema_seen: BTreeMap<NodeId, u64>,
    /// When the lowest version adopted by every token owner rose, and to
    /// what (oldest first; see `settle_schema`).
    schema_adopted: VecDeque<(Instant, u64)>,
    /// The seeds this node was given (itself included if listed): it
    /// founds the schema only together with them (see `agreement_view`).
    seeds: std::collections::BTreeSet<core::net::SocketAddr>,
    request_timeout: std::time::Duration,
    rng: ChaCha8Rng,
    next_token: u64,
    /// The client requests this node coordinates.
    coord: Coordinator,
    /// The scan pages this node coordinates.
    scans: Scans,
    /// Reclaims the data of dropped keyspaces.
    reclaim: crate::reclaim::Reclaim,
    waiters: HashMap<u64, Waiter>,
    events: Vec<MembershipEvent>,
    out: VecDeque<Output>,
    shutting_down: bool,
    /// Whether the node coordinates yet, and what it waits for.
    readiness: Readiness,
    /// The last wall-clock reading from the host, and when it was taken.
    wall: (Instant, u64),
    /// The clock high-water mark last persisted.
    clock_persisted: u64,
    /// The membership view epoch last persisted.
    view_persisted: u64,
    /// Keyspace agreement with the cluster, cached per view epoch.
    agreement: KeyspaceCheck,
    /// Anti-entropy: trees, rounds, exchanges.
    ae: AntiEntropy,
    /// Hinted handoff.
    hints: Hints,
    /// This node's part in the CRAQ chains.
    chain: crate::chain::ChainMachine,
    /// This node's side of a ring transition (a node leaving).
    transition: Transition,
    /// When this node started joining, while it is `Joining`.
    joining_since: Option<Instant>,
    /// Per keyspace, the largest replication factor any member declares,
    /// as of a membership view epoch (see [`Node::holds`]).
    widest_rf: (u64, BTreeMap<String, usize>),
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
    /// Mutation `skip_config_check`: the node's own version-0 schema,
    /// which it keeps using for its requests.
    #[cfg(feature = "mutations")]
    seed_schema: Schema,
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
        crate::topology::check_location_name("datacenter", &config.datacenter)?;
        crate::topology::check_location_name("rack", &config.rack)?;
        let keyspaces = config.validate_keyspaces()?;
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
        // Request, query and round numbers of every machine start from the
        // generation, so a late reply to the previous run of this node can
        // never match a request of this one.
        let first_number = ((generation & 0xFFFF_FFFF) << 32) | 1;
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
            repaired_schema: 0,
            hinting: Vec::new(),
            ring_acked: 0,
            ring_synced: 0,
            removing: match config.replaces {
                Some(dead) if config.bootstrap && dead != id => vec![dead],
                _ => Vec::new(),
            },
            removed: Vec::new(),
            datacenter: config.datacenter.clone(),
            rack: config.rack.clone(),
            client_addr: config.client_addr,
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
            membership.load_persisted(&persisted.members, &persisted.locations, now);
        }
        let restart_quorum = if persisted.members.is_empty() || config.start_without_quorum {
            None
        } else {
            Some(persisted.members.iter().map(|m| m.id).collect())
        };
        let seed = Schema::seed(id, &keyspaces);
        #[cfg(feature = "mutations")]
        let seed_for_mutations = seed.clone();
        let chosen = persisted.schema.clone().unwrap_or(seed);
        let ae_keyspaces: Vec<(String, crate::topology::Replication)> = chosen
            .keyspaces
            .values()
            .filter(|k| k.config.strategy == ReplicationStrategy::Leaderless)
            .map(|k| (k.storage.clone(), k.config.replication()))
            .collect();
        let schema = SchemaAgreement::new(
            id,
            chosen,
            persisted.schema_acceptor.clone(),
            now,
            generation,
        );
        let mut node = Node {
            id,
            codec: WireCodec::new(config.cluster.clone()),
            clock: ClockGuard::new(
                HybridClock::starting_above(id, clock_floor),
                u64::try_from(config.max_clock_offset.as_micros()).unwrap_or(u64::MAX),
            ),
            membership,
            layout: Layout::new(config.placement),
            schema,
            peer_schema: 0,
            schema_fetched: None,
            schema_seen: BTreeMap::new(),
            schema_adopted: VecDeque::new(),
            seeds: config.seeds.iter().copied().collect(),
            request_timeout: config.request_timeout,
            rng: ChaCha8Rng::seed_from_u64(config.rng_seed ^ id.0.rotate_left(32)),
            next_token: 1,
            coord: Coordinator::new(id, first_number, config.request_timeout),
            scans: Scans::default(),
            reclaim: crate::reclaim::Reclaim::default(),
            waiters: HashMap::new(),
            events: Vec::new(),
            out: VecDeque::new(),
            shutting_down: false,
            // A node with no one to join and nothing persisted coordinates at
            // once; a joining or restarting node waits until its view has
            // settled (see `Readiness`).
            readiness: Readiness::new(
                joins_through_seeds,
                restart_quorum,
                if config.start_without_quorum {
                    0
                } else {
                    clock_floor
                },
                now,
            ),
            wall: (now, wall_micros),
            clock_persisted: 0,
            view_persisted: 0,
            agreement: KeyspaceCheck::default(),
            ae: AntiEntropy::new(id, config.repair.clone(), ae_keyspaces, now, first_number),
            hints: Hints::new(config.hints.clone(), config.tombstone_grace, first_number),
            chain: {
                let mut c =
                    crate::chain::ChainMachine::new(now, config.request_timeout, first_number);
                if config.persisted.is_none() {
                    c.set_fresh();
                }
                c
            },
            transition: Transition::default(),
            joining_since: None,
            widest_rf: (0, BTreeMap::new()),
            budget: ByteBudget::new(config.repair.bytes_per_sec, now),
            fx: Effects::default(),
            applying: HashMap::new(),
            watermark_sent: 0,
            alive_persisted: 0,
            #[cfg(feature = "mutations")]
            mutations: config.mutations.clone(),
            #[cfg(feature = "mutations")]
            seed_schema: seed_for_mutations,
        };
        #[cfg(feature = "mutations")]
        {
            node.coord.trust_local_clock = config.mutations.trust_local_clock;
            node.scans.skip_range_tail = config.mutations.scan_skip_range_tail;
            node.schema.promise_every_ballot = config.mutations.promise_every_ballot;
            node.chain.mutations = crate::chain::ChainMutations {
                skip_version_query: config.mutations.chain_skip_version_query,
                ignore_leases: config.mutations.chain_ignore_leases,
                commit_at_head: config.mutations.chain_commit_at_head,
            };
        }
        #[cfg(feature = "mutations")]
        let skip_syncing = config.mutations.skip_syncing;
        #[cfg(not(feature = "mutations"))]
        let skip_syncing = false;
        if skip_syncing {
            node.membership.set_joined_status(NodeStatus::Normal);
        } else {
            // A joining node stays `Joining` while its ranges move to it
            // (see `advance_joining`).
            node.membership.set_joined_status(NodeStatus::Joining);
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
        if node.membership.status() == NodeStatus::Joining {
            node.joining_since = Some(now);
        }
        #[cfg(feature = "mutations")]
        {
            node.layout.place_by_gossip = node.mutations.place_by_gossip;
        }
        node.rebuild_placement();
        node.chain_with(now, |c, cx, fx| c.on_schema(cx, fx));
        node.settle(now);
        node.persist_if_changed();
        Ok(node)
    }

    /// Rebuilds the layout if membership changed who owns what.
    fn rebuild_placement(&mut self) {
        self.layout.rebuild(&self.membership, self.schema.schema());
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Encodes `msg` as a frame from this node, stamped with the newest
    /// schema version it knows.
    pub fn encode(&self, msg: &PeerMsg) -> Result<Vec<u8>, WireError> {
        self.codec
            .encode_at(self.id, self.schema.schema().version, msg)
    }

    /// The codec for this node's cluster (frame cap, cluster name).
    pub fn codec(&self) -> &WireCodec {
        &self.codec
    }

    /// What this node knows of membership and liveness.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The placement strategy this node places keys by.
    pub fn placement_kind(&self) -> crate::placement::PlacementKind {
        self.layout.kind()
    }

    /// The replica set of `key` in `keyspace` under the current view.
    pub fn replicas_of(&self, keyspace: &str, key: &[u8]) -> Vec<NodeId> {
        let replication = self
            .schema
            .schema()
            .keyspace(keyspace)
            .map_or_else(|| 0.into(), |k| k.config.replication());
        self.layout.replicas_of(
            &self.membership,
            self.schema.schema(),
            Token::of(key),
            &replication,
        )
    }

    /// Each token owner's share of the ring (token-ring placement), or an
    /// equal share per owner (rendezvous placement); sums to 1.
    pub fn ownership(&self) -> BTreeMap<NodeId, f64> {
        self.layout.ownership()
    }

    /// True once this node has announced that it left the cluster and the
    /// ring it knows no longer places keys on it: until the cluster agreed
    /// on a ring without it, reads may still be sent to it, so it keeps
    /// serving.
    pub fn has_left(&self) -> bool {
        self.membership.has_left()
            && self
                .schema
                .schema()
                .ring
                .as_ref()
                .is_none_or(|ring| ring.owns(self.id) == (false, false))
    }

    /// Updates the storage load this node gossips (bytes).
    pub fn set_load(&mut self, load: u64) {
        self.membership.set_load(load);
    }

    /// Requests in flight (answered or not) that still hold state.
    pub fn in_flight(&self) -> usize {
        self.coord.in_flight() + self.scans.in_flight()
    }

    /// The wall clock at monotonic time `now`: the host's latest reading
    /// plus the monotonic time since it was taken.
    fn wall_now(&self, now: Instant) -> u64 {
        wall_at(self.wall, now)
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
        self.persist(false);
    }

    /// Emits [`Output::Persist`] if something changed, or always if
    /// `force` (the schema acceptor must persist before it answers).
    fn persist(&mut self, force: bool) {
        let clock = self.clock.micros();
        let view = self.membership.view_epoch();
        if !force
            && view == self.view_persisted
            && clock.saturating_add(CLOCK_RESERVE_MICROS / 2) < self.clock_persisted
            && self.wall.1.saturating_sub(self.alive_persisted) < ALIVE_PERSIST_MICROS
        {
            return;
        }
        self.view_persisted = view;
        self.clock_persisted = self
            .clock_persisted
            .max(clock.saturating_add(CLOCK_RESERVE_MICROS))
            .max(self.readiness.clock_floor());
        self.alive_persisted = self.wall.1;
        self.out.push_back(Output::Persist(PersistedState {
            clock_high_water: self.clock_persisted,
            generation: self.membership.generation(),
            members: self.membership.persisted_members(),
            alive_micros: self.wall.1,
            schema: Some(self.schema.schema().clone()).filter(|s| s.version > 0),
            schema_acceptor: self.schema.acceptor().clone(),
            locations: self.membership.persisted_locations(),
        }));
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
        if let Some(s) = self.schema_deadline() {
            m = m.min(s);
        }
        if let Some(s) = self.scans.next_deadline() {
            m = m.min(s);
        }
        if let Some(c) = self.chain.poll_timeout(self.schema.schema().has_craq()) {
            m = m.min(c);
        }
        Some(match self.coord.next_deadline() {
            Some(d) => d.min(m),
            None => m,
        })
    }

    /// Completes a storage operation the node asked for.
    pub fn handle_storage(
        &mut self,
        now: impl Into<Now>,
        token: StorageToken,
        result: StorageResult,
    ) {
        let now = self.enter(now);
        // A request whose deadline passed times out before any late result
        // is counted: a store that dropped the request's operation because
        // it waited past that same deadline must not turn the client's
        // timeout into a replica failure, whichever the driver saw first.
        if self.coord.next_deadline().is_some_and(|d| d <= now) {
            self.coordinate(now, |c, _, fx| c.expire(now, fx));
        }
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
            | StorageResult::Ranged(Err(e))
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
        match waiter {
            Waiter::Coord(w) => {
                let at = self.wall.0;
                self.coordinate(at, |c, clock, fx| c.storage_done(now, w, result, clock, fx))
            }
            Waiter::Replica(w) => self.replicate(|_, fx| replica::storage_done(w, result, fx)),
            Waiter::Bg(w) => self.background_done(now, w, result),
            Waiter::Scan(w) => self.scan_with(now, |s, cx, fx| s.storage_done(w, result, cx, fx)),
            Waiter::Chain(w) => self.chain_with(now, |c, cx, fx| c.storage_done(cx, fx, w, result)),
            Waiter::Reclaim(w) => {
                let mut fx = Vec::new();
                self.reclaim
                    .storage_done(now, self.schema.schema(), w, result, &mut fx);
                self.reclaim_effects(fx);
            }
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
        self.schema_tick(now);
        self.coordinate(now, |c, _, fx| c.expire(now, fx));
        self.scan_with(now, |s, _, fx| s.expire(now, fx));
        if self.schema.schema().has_craq() || !self.chain.is_idle() {
            self.chain_with(now, |c, cx, fx| c.tick(cx, fx));
        }
    }

    /// Becomes ready to coordinate once the view has settled (see
    /// [`Readiness`]).
    fn settle(&mut self, now: Instant) {
        let wall = self.wall_now(now);
        self.readiness.settle(&self.membership, now, wall);
    }

    /// Whether the node coordinates client requests (its view has settled).
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// Fails every unanswered request with `ShuttingDown` and refuses new ones.
    pub fn shutdown(&mut self, now: impl Into<Now>) {
        let _ = self.enter(now);
        self.shutting_down = true;
        let at = self.wall.0;
        self.coordinate(at, |c, _, fx| c.shutdown(fx));
        self.scan_with(at, |s, _, fx| s.shutdown(fx));
    }

    /// Runs `f` on the coordinator, then carries out what it asked for, in
    /// order; hints of missed writes are kept as of `hint_at`.
    fn coordinate(
        &mut self,
        hint_at: Instant,
        f: impl FnOnce(&mut Coordinator, &mut dyn Stamper, &mut CoordEffects),
    ) {
        let mut fx = CoordEffects::default();
        self.with_clock(|coord, clock| f(coord, clock, &mut fx));
        for e in fx.0 {
            match e {
                CoordEffect::Reply(id, result) => self.reply(id, result),
                CoordEffect::Send(to, msg) => self.send(to, msg),
                CoordEffect::Storage(op, w) => self.storage(op, Waiter::Coord(w)),
                CoordEffect::Event(e) => self.out.push_back(Output::Event(e)),
                CoordEffect::Hint {
                    key,
                    version,
                    targets,
                } => self.hint_missed(hint_at, key, version, targets),
            }
        }
    }

    /// Runs `f` on the replica, then carries out what it asked for, in order.
    fn replicate(&mut self, f: impl FnOnce(&mut dyn Stamper, &mut Vec<ReplicaEffect>)) {
        let mut fx = Vec::new();
        self.with_clock(|_, clock| f(clock, &mut fx));
        for e in fx {
            match e {
                ReplicaEffect::Send(to, msg) => self.send(to, msg),
                ReplicaEffect::Storage(op, w) => self.storage(op, Waiter::Replica(w)),
                ReplicaEffect::Event(e) => self.out.push_back(Output::Event(e)),
            }
        }
    }

    /// Runs `f` with the coordinator and this node's clock as the
    /// coordinator and replica see it.
    fn with_clock<R>(&mut self, f: impl FnOnce(&mut Coordinator, &mut dyn Stamper) -> R) -> R {
        let mut clock = NodeStamper {
            clock: &mut self.clock,
            membership: &self.membership,
            wall: self.wall,
            #[cfg(feature = "mutations")]
            rng: &mut self.rng,
            #[cfg(feature = "mutations")]
            id: self.id,
            #[cfg(feature = "mutations")]
            random_timestamps: self.mutations.random_timestamps,
            #[cfg(feature = "mutations")]
            ignore_expiry: self.mutations.ignore_expiry,
        };
        f(&mut self.coord, &mut clock)
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
                MembershipEvent::Up(id) => {
                    // A member being removed came back: it stays.
                    let removing: Vec<NodeId> = self
                        .membership
                        .removing()
                        .iter()
                        .copied()
                        .filter(|r| r != id)
                        .collect();
                    self.membership.set_removing(removing);
                    self.ae.request_round(self.wall.0)
                }
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
}
