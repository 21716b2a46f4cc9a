//! Membership and liveness: who is in the cluster, where they listen, what
//! tokens they own, and who is believed alive. The coordinator asks only
//! this module about liveness.
//!
//! Membership spreads by gossip in the style of Cassandra: every node keeps
//! a state per member (generation, a version it bumps every round as its
//! heartbeat, and application state: status, tokens, address, keyspaces, load).
//! Once per round a node sends a `Syn` of digests `(id, generation,
//! version)` to one random live peer, sometimes to a seed; the peer answers
//! with an `Ack` holding the states it has newer and the digests it wants;
//! the initiator completes with an `Ack2`. The newer `(generation, version)`
//! always wins. Deltas that would not fit in one message are split across
//! rounds, newest-needed first.
//!
//! Liveness is a phi-accrual failure detector per peer, fed by arrivals of
//! that peer's heartbeat (directly or through others). Peers believed down
//! are probed directly at doubling intervals (with jitter, up to a cap); any
//! answer, or any newer heartbeat heard second-hand, brings them back at
//! once.

use crate::time::Instant;
use crate::types::{NodeId, Token};
use core::net::SocketAddr;
use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// A member's place in the cluster's life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// New: takes writes for the ranges it will own (it is on the next
    /// ring) while it syncs them, and owns them (`Normal`) once every owner
    /// of the next ring has synced (see [`crate::transition`]).
    Joining,
    /// Owns its tokens and serves.
    Normal,
    /// Still owns its tokens (it serves reads and takes writes) while the
    /// nodes that gain its ranges sync them; `Left` once they all have.
    Leaving,
    /// Owns its tokens and takes writes after a restart, but is left out of
    /// read sets until it has caught up: the hints other nodes hold for it
    /// are delivered and one anti-entropy round over its ranges completed.
    Syncing,
    /// Left the ring for good; forgotten after a while.
    Left,
}

impl NodeStatus {
    /// Whether a node in this status owns its tokens on the ring.
    pub fn owns_tokens(self) -> bool {
        matches!(
            self,
            NodeStatus::Normal | NodeStatus::Leaving | NodeStatus::Syncing
        )
    }

    /// Whether a node in this status owns its tokens on the ring the
    /// cluster is moving to: a `Leaving` node owns them now but not next.
    pub fn owns_tokens_next(self) -> bool {
        matches!(
            self,
            NodeStatus::Normal | NodeStatus::Syncing | NodeStatus::Joining
        )
    }

    /// What the rings (current and next) see of a node in this status.
    fn ring_class(self) -> (bool, bool) {
        (self.owns_tokens(), self.owns_tokens_next())
    }
}

/// The application state a node gossips about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppState {
    /// Life-cycle status.
    pub status: NodeStatus,
    /// Where peers reach it.
    pub addr: SocketAddr,
    /// Its tokens on the ring.
    pub tokens: Vec<Token>,
    /// Its keyspace definitions, compared across the cluster so that a node
    /// configured differently refuses to coordinate instead of acknowledging
    /// writes with too few copies.
    pub keyspaces: Vec<crate::config::KeyspaceConfig>,
    /// Bytes it stores, as its host last reported.
    pub load: u64,
    /// Wall micros at which its last anti-entropy round that synced every
    /// pair began (0: none yet): tombstones below the minimum over all
    /// members may be purged.
    pub repaired_through: u64,
    /// The schema version settled everywhere when that round began: every
    /// replica set of that version (and older) is repaired on this node's
    /// ranges (see [`crate::anti_entropy::RepairStatus::repaired_schema`]).
    pub repaired_schema: u64,
    /// The nodes it holds undelivered hints for.
    pub hinting: Vec<NodeId>,
    /// The ring transition (see [`crate::transition`]) this node routes
    /// writes by with no write of an older ring still in flight (0: none).
    pub ring_acked: u64,
    /// The ring transition whose moved ranges this node has synced (0: none).
    pub ring_synced: u64,
    /// Dead members this node asks the cluster to take off the ring (an
    /// operator's `remove`, or the dead node a new node replaces): they
    /// keep their tokens on the current ring but not on the next one,
    /// and are forgotten once their ranges are synced elsewhere.
    #[serde(default)]
    pub removing: Vec<NodeId>,
    /// Dead members whose removal this node completed (their ranges were
    /// synced elsewhere): every node forgets them on hearing it. The last
    /// [`MAX_REMOVED`] are kept.
    #[serde(default)]
    pub removed: Vec<NodeId>,
    /// Its datacenter (see [`crate::topology`]).
    #[serde(default = "crate::topology::default_datacenter")]
    pub datacenter: String,
    /// Its rack within the datacenter.
    #[serde(default = "crate::topology::default_rack")]
    pub rack: String,
    /// Where clients reach it through the native protocol, as configured
    /// (`None`: it serves no native client port). Token-aware clients send
    /// each request to a replica of its key through it; a wildcard address
    /// (`0.0.0.0`, `[::]`) is advertised as configured and is not usable
    /// for routing (such clients use their plain path for that node).
    /// Not persisted: a restarted node learns it again through gossip.
    #[serde(default)]
    pub client_addr: Option<SocketAddr>,
}

/// How many completed removals a node keeps announcing.
pub const MAX_REMOVED: usize = 16;

/// What a node knows about one member, as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The member.
    pub id: NodeId,
    /// Changes on every restart of the member.
    pub generation: u64,
    /// Bumped every gossip round (the heartbeat) and on every state change.
    pub version: u64,
    /// The version at which `app` last changed.
    pub app_version: u64,
    /// The application state; omitted in a delta when the receiver has it.
    pub app: Option<AppState>,
}

/// A digest entry: what the sender knows about one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// The member.
    pub id: NodeId,
    /// The member's generation as known to the sender.
    pub generation: u64,
    /// The member's version as known to the sender.
    pub version: u64,
}

/// Membership messages between peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMsg {
    /// Round opener: where to answer, and a digest of every known member.
    Syn {
        /// The sender's listen address (it may be unknown to the receiver).
        reply_to: SocketAddr,
        /// One entry per member the sender knows.
        digests: Vec<Digest>,
        /// The sender's wall clock when it sent this (0: unknown), so peers
        /// can tell a node whose clock is off from the rest.
        wall_micros: u64,
    },
    /// Answer to `Syn`: states the receiver lacked, and what it wants back.
    Ack {
        /// Newer states for the initiator.
        states: Vec<NodeState>,
        /// Members the responder wants newer states of.
        requests: Vec<Digest>,
        /// The responder's wall clock when it sent this (0: unknown).
        wall_micros: u64,
    },
    /// Completion: the states the responder asked for.
    Ack2 {
        /// Newer states for the responder.
        states: Vec<NodeState>,
    },
}

/// A change in what this node believes about a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member was heard of for the first time.
    Joined(NodeId),
    /// The failure detector convicted the member: now believed down.
    Down(NodeId),
    /// A member believed down was heard from again.
    Up(NodeId),
    /// The member came back with a new generation: it restarted.
    Restarted {
        /// The member.
        id: NodeId,
        /// Its new generation.
        generation: u64,
    },
    /// The member's status changed (joining, normal, leaving, left).
    StatusChanged {
        /// The member.
        id: NodeId,
        /// Its new status.
        status: NodeStatus,
    },
    /// The member was forgotten (left long ago, or down for too long); hosts
    /// drop what they keep per peer for `addr` (connections, queues).
    Removed {
        /// The member.
        id: NodeId,
        /// Where it listened.
        addr: SocketAddr,
    },
}

/// Gossip and failure-detection settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GossipConfig {
    /// Time between gossip rounds (and heartbeats).
    pub interval: Duration,
    /// Live peers each round gossips with. Two halves how stale second-hand
    /// heartbeats get, which lets the detector convict a crash sooner
    /// without convicting live nodes behind lost messages.
    pub fanout: usize,
    /// Phi above which a peer is convicted (believed down).
    pub phi_threshold: f64,
    /// Heartbeat inter-arrival samples kept per peer.
    pub window: usize,
    /// Floor on the standard deviation used by the detector.
    pub min_std_deviation: Duration,
    /// Silence tolerated on top of the mean interval before phi rises.
    pub acceptable_pause: Duration,
    /// Cap on the doubling interval between probes of a down peer.
    pub probe_max_interval: Duration,
    /// A peer down this long that owns no tokens (one that died while
    /// joining) is removed from membership. A dead token owner never is:
    /// it leaves the ring only through a removal (`Node::remove_dead`, or
    /// a node that replaces it), which first syncs its ranges elsewhere.
    pub remove_dead_after: Duration,
    /// A peer that left is forgotten this long after it was seen leaving.
    pub forget_left_after: Duration,
    /// Largest encoded size of the states in one gossip message.
    pub max_message_bytes: usize,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            interval: Duration::from_secs(1),
            fanout: 2,
            phi_threshold: 8.0,
            window: 100,
            min_std_deviation: Duration::from_millis(1000),
            acceptable_pause: Duration::from_millis(2000),
            probe_max_interval: Duration::from_secs(32),
            remove_dead_after: Duration::from_secs(3 * 24 * 3600),
            forget_left_after: Duration::from_secs(3 * 24 * 3600),
            max_message_bytes: 48 * 1024,
        }
    }
}

/// Phi-accrual failure detection over a sliding window of heartbeat
/// inter-arrival times, with the normal-distribution approximation
/// (Hayashibara et al.) and a tolerated pause on top of the mean.
#[derive(Clone, Debug)]
pub struct ArrivalWindow {
    last: Option<Instant>,
    intervals: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
}

impl ArrivalWindow {
    fn new() -> Self {
        ArrivalWindow {
            last: None,
            intervals: VecDeque::new(),
            sum: 0.0,
            sum_sq: 0.0,
        }
    }

    /// Records the arrival of `beats` new heartbeats at once. Second-hand
    /// heartbeats come in bursts (several versions in one delta after a
    /// quiet spell); spreading the interval over the beats it carried keeps
    /// the window's spread honest, so the detector neither convicts slowly
    /// after bursty history nor quickly after smooth history.
    fn record(&mut self, now: Instant, window: usize, beats: u64) {
        if let Some(last) = self.last {
            let beats = beats.clamp(1, 16);
            let dt = now.saturating_duration_since(last).as_secs_f64() / beats as f64;
            for _ in 0..beats {
                self.intervals.push_back(dt);
                self.sum += dt;
                self.sum_sq += dt * dt;
            }
            while self.intervals.len() > window.max(1) {
                if let Some(old) = self.intervals.pop_front() {
                    self.sum -= old;
                    self.sum_sq -= old * old;
                }
            }
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    /// The suspicion level at `now`: how unlikely the current silence is.
    pub fn phi(&self, now: Instant, cfg: &GossipConfig) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        let n = self.intervals.len() as f64;
        let (mean, var) = if self.intervals.is_empty() {
            (cfg.interval.as_secs_f64(), 0.0)
        } else {
            let mean = self.sum / n;
            (mean, (self.sum_sq / n - mean * mean).max(0.0))
        };
        let std = var.sqrt().max(cfg.min_std_deviation.as_secs_f64());
        let y = (elapsed - mean - cfg.acceptable_pause.as_secs_f64()) / std;
        // Logistic approximation of the normal CDF's tail, as in Akka.
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        if y > 0.0 {
            -(e / (1.0 + e)).log10()
        } else {
            -(1.0 - 1.0 / (1.0 + e)).log10()
        }
    }
}

#[derive(Clone, Debug)]
struct Member {
    state: NodeState,
    app: AppState,
    alive: bool,
    detector: ArrivalWindow,
    down_since: Option<Instant>,
    left_at: Option<Instant>,
    next_probe: Instant,
    probe_interval: Duration,
    /// Its wall clock minus ours, as last measured from its gossip.
    clock_offset: Option<i64>,
}

/// Something membership wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipSend {
    /// The recipient, if its id is known (a seed may be known by address only).
    pub to: Option<NodeId>,
    /// Where to send.
    pub addr: SocketAddr,
    /// The message.
    pub msg: GossipMsg,
}

/// What this node knows of the cluster's members and their liveness.
#[derive(Clone, Debug)]
pub struct Membership {
    me: NodeId,
    own: NodeState,
    own_app: AppState,
    members: BTreeMap<NodeId, Member>,
    seeds: Vec<SocketAddr>,
    cfg: GossipConfig,
    next_round: Instant,
    /// Forgotten members: generation, when, and address (a seed removed
    /// as dead no longer holds the schema's founding back).
    forgotten: BTreeMap<NodeId, (u64, Instant, SocketAddr)>,
    ring_epoch: u64,
    next_check: Instant,
    /// Bumped whenever what [`Membership::persisted_members`] returns changes.
    view_epoch: u64,
    /// The wall clock (micros) at the current input, 0 when unknown.
    wall_micros: u64,
    /// What a `Joining` node becomes on the cluster's first answer.
    joined_status: NodeStatus,
    /// Whether a peer has answered this node's gossip.
    answered: bool,
    /// A peer sent this node's state from an earlier generation.
    remembered: bool,
}

/// A generation more than this far ahead of our wall clock (in seconds) is
/// refused: generations are wall-clock seconds, and one far in the future
/// would shadow every later restart of that node.
const MAX_GENERATION_AHEAD_SECS: u64 = 24 * 3600;

impl Membership {
    /// Membership of `me` in generation `generation`, listening at `addr`
    /// with `tokens`, joining through `seeds` (its own address is ignored).
    pub fn new(
        me: NodeId,
        generation: u64,
        app: AppState,
        seeds: &[SocketAddr],
        cfg: GossipConfig,
        now: Instant,
    ) -> Self {
        let own = NodeState {
            id: me,
            generation,
            version: 1,
            app_version: 1,
            app: None,
        };
        let seeds = seeds.iter().copied().filter(|s| *s != app.addr).collect();
        Membership {
            me,
            own,
            own_app: app,
            members: BTreeMap::new(),
            seeds,
            cfg,
            next_round: now,
            forgotten: BTreeMap::new(),
            ring_epoch: 1,
            next_check: now,
            view_epoch: 1,
            wall_micros: 0,
            joined_status: NodeStatus::Syncing,
            answered: false,
            remembered: false,
        }
    }

    /// Whether a peer remembered this node from an earlier generation: it
    /// was a member before this run (so a run on an empty data directory
    /// lost what the earlier one held).
    pub fn remembered_from_before(&self) -> bool {
        self.remembered
    }

    /// Tells membership the wall clock at the current input; it stamps
    /// outgoing gossip with it and measures peers' offsets against it.
    pub fn set_wall(&mut self, wall_micros: u64) {
        self.wall_micros = wall_micros;
    }

    /// Bumped whenever the persisted view would change (a member added or
    /// removed, a new generation, a new address, tokens or status).
    pub fn view_epoch(&self) -> u64 {
        self.view_epoch
    }

    /// The other members as they should be persisted.
    pub fn persisted_members(&self) -> Vec<crate::persist::PersistedMember> {
        self.members
            .iter()
            .map(|(&id, m)| crate::persist::PersistedMember {
                id,
                generation: m.state.generation,
                addr: m.app.addr,
                tokens: m.app.tokens.clone(),
                status: m.app.status,
            })
            .collect()
    }

    /// The other members' locations as they should be persisted.
    pub fn persisted_locations(&self) -> Vec<(NodeId, crate::topology::Location)> {
        self.members
            .iter()
            .map(|(&id, m)| {
                let l = crate::topology::Location {
                    datacenter: m.app.datacenter.clone(),
                    rack: m.app.rack.clone(),
                };
                (id, l)
            })
            .collect()
    }

    /// Loads the view a previous run persisted: every member is known (so
    /// the ring is whole from the start) but believed down until heard from.
    pub fn load_persisted(
        &mut self,
        members: &[crate::persist::PersistedMember],
        locations: &[(NodeId, crate::topology::Location)],
        now: Instant,
    ) {
        for p in members {
            let location = locations
                .iter()
                .find(|(id, _)| *id == p.id)
                .map(|(_, l)| l.clone())
                .unwrap_or_default();
            if p.id == self.me || p.status == NodeStatus::Left {
                continue;
            }
            let app = AppState {
                status: p.status,
                addr: p.addr,
                tokens: p.tokens.clone(),
                keyspaces: Vec::new(),
                load: 0,
                repaired_through: 0,
                repaired_schema: 0,
                hinting: Vec::new(),
                ring_acked: 0,
                ring_synced: 0,
                removing: Vec::new(),
                removed: Vec::new(),
                datacenter: location.datacenter,
                rack: location.rack,
                // Not persisted: gossip brings it back.
                client_addr: None,
            };
            self.members.insert(
                p.id,
                Member {
                    state: NodeState {
                        id: p.id,
                        generation: p.generation,
                        version: 0,
                        app_version: 0,
                        app: None,
                    },
                    app,
                    alive: false,
                    detector: ArrivalWindow::new(),
                    down_since: Some(now),
                    left_at: None,
                    next_probe: now,
                    probe_interval: self.cfg.interval,
                    clock_offset: None,
                },
            );
        }
        self.ring_epoch += 1;
        self.view_epoch += 1;
    }

    /// Measured wall-clock offsets (theirs minus ours, micros) of the live
    /// members that have reported one.
    pub fn live_clock_offsets(&self) -> Vec<i64> {
        self.members
            .values()
            .filter(|m| m.alive)
            .filter_map(|m| m.clock_offset)
            .collect()
    }

    /// Each member's gossiped keyspace definitions (token owners only).
    pub fn member_keyspaces(&self) -> Vec<(NodeId, &[crate::config::KeyspaceConfig])> {
        self.members
            .iter()
            .filter(|(_, m)| m.app.status.owns_tokens() && !m.app.keyspaces.is_empty())
            .map(|(&id, m)| (id, m.app.keyspaces.as_slice()))
            .collect()
    }

    /// The repair watermark (`repaired_through`) of every member that owns
    /// or is taking tokens, this node included.
    pub fn repair_watermarks(&self) -> Vec<(NodeId, u64)> {
        let mut out: Vec<(NodeId, u64)> = self
            .members
            .iter()
            .filter(|(_, m)| m.app.status != NodeStatus::Left)
            .map(|(&id, m)| (id, m.app.repaired_through))
            .collect();
        out.push((self.me, self.own_app.repaired_through));
        out
    }

    /// Whether any live member gossips that it holds hints for `target`.
    pub fn hints_pending_for(&self, target: NodeId) -> bool {
        self.members
            .values()
            .any(|m| m.alive && m.app.hinting.contains(&target))
    }

    /// Whether `id` is a live member that is `Syncing` (left out of reads).
    pub fn is_syncing(&self, id: NodeId) -> bool {
        if id == self.me {
            return self.own_app.status == NodeStatus::Syncing;
        }
        self.members
            .get(&id)
            .is_some_and(|m| m.app.status == NodeStatus::Syncing)
    }

    /// How long `id` has been believed down (zero when alive or unknown).
    pub fn down_for(&self, id: NodeId, now: Instant) -> Duration {
        self.members
            .get(&id)
            .and_then(|m| m.down_since)
            .map_or(Duration::ZERO, |d| now.saturating_duration_since(d))
    }

    fn record_offset(&mut self, from: NodeId, their_wall: u64) {
        if their_wall == 0 || self.wall_micros == 0 {
            return;
        }
        if let Some(m) = self.members.get_mut(&from) {
            let theirs = i64::try_from(their_wall).unwrap_or(i64::MAX);
            let ours = i64::try_from(self.wall_micros).unwrap_or(i64::MAX);
            m.clock_offset = Some(theirs.saturating_sub(ours));
        }
    }

    /// This node's generation.
    pub fn generation(&self) -> u64 {
        self.own.generation
    }

    /// This node's status.
    pub fn status(&self) -> NodeStatus {
        self.own_app.status
    }

    /// The gossip settings.
    pub fn config(&self) -> &GossipConfig {
        &self.cfg
    }

    /// Bumped whenever the set of token owners or their tokens change, so
    /// callers can cache placement.
    pub fn ring_epoch(&self) -> u64 {
        self.ring_epoch
    }

    /// Every known member, this node included.
    pub fn members(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.members.keys().copied().collect();
        v.push(self.me);
        v.sort();
        v
    }

    /// Whether `id` is believed alive (this node always is).
    pub fn is_alive(&self, id: NodeId) -> bool {
        id == self.me || self.members.get(&id).is_some_and(|m| m.alive)
    }

    /// Whether `id` is a known member (this node included).
    pub fn is_member(&self, id: NodeId) -> bool {
        id == self.me || self.members.contains_key(&id)
    }

    /// Where `id` listens, if known.
    pub fn addr_of(&self, id: NodeId) -> Option<SocketAddr> {
        if id == self.me {
            return Some(self.own_app.addr);
        }
        self.members.get(&id).map(|m| m.app.addr)
    }

    /// What is known of `id`: its gossiped state and application state.
    pub fn state_of(&self, id: NodeId) -> Option<(u64, &AppState)> {
        if id == self.me {
            return Some((self.own.generation, &self.own_app));
        }
        self.members.get(&id).map(|m| (m.state.generation, &m.app))
    }

    /// The current suspicion level of `id` (0 for this node or unknown ids).
    pub fn phi(&self, id: NodeId, now: Instant) -> f64 {
        self.members
            .get(&id)
            .map_or(0.0, |m| m.detector.phi(now, &self.cfg))
    }

    /// The ids of the token owners (this node included if it is one), in
    /// id order; [`Membership::token_owners`] without copying the tokens.
    pub fn token_owner_ids(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.token_owner_iter().collect();
        v.sort_unstable();
        v
    }

    /// The members that own tokens, this node included if it does, in no
    /// particular order and without allocating.
    pub fn token_owner_iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.app.status.owns_tokens())
            .map(|(&id, _)| id)
            .chain(self.own_app.status.owns_tokens().then_some(self.me))
    }

    /// Each token owner and its tokens, for building the ring.
    pub fn token_owners(&self) -> Vec<(NodeId, Vec<Token>)> {
        let mut v: Vec<(NodeId, Vec<Token>)> = self
            .members
            .iter()
            .filter(|(_, m)| m.app.status.owns_tokens())
            .map(|(&id, m)| (id, m.app.tokens.clone()))
            .collect();
        if self.own_app.status.owns_tokens() {
            v.push((self.me, self.own_app.tokens.clone()));
        }
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// The datacenter of member `id` (this node included); the default
    /// one for a node it does not know.
    pub fn datacenter_of(&self, id: NodeId) -> &str {
        if id == self.me {
            return &self.own_app.datacenter;
        }
        self.members
            .get(&id)
            .map_or(crate::topology::DEFAULT_DATACENTER, |m| {
                m.app.datacenter.as_str()
            })
    }

    /// The location of every member (this node included), by id: the
    /// placement takes the locations of the nodes on its ring from it.
    pub fn topology(&self) -> crate::topology::Topology {
        let loc = |a: &AppState| crate::topology::Location {
            datacenter: a.datacenter.clone(),
            rack: a.rack.clone(),
        };
        let mut t: crate::topology::Topology = self
            .members
            .iter()
            .map(|(&id, m)| (id, loc(&m.app)))
            .collect();
        t.insert(self.me, loc(&self.own_app));
        t
    }

    /// Each owner of tokens on the ring the cluster moves to (`Leaving`
    /// nodes left out) and its tokens; equal to [`Membership::token_owners`]
    /// when no node is leaving.
    pub fn token_owners_next(&self) -> Vec<(NodeId, Vec<Token>)> {
        let mut v: Vec<(NodeId, Vec<Token>)> = self
            .members
            .iter()
            .filter(|(&id, m)| m.app.status.owns_tokens_next() && !self.removal_requested(id))
            .map(|(&id, m)| (id, m.app.tokens.clone()))
            .collect();
        if self.own_app.status.owns_tokens_next() {
            v.push((self.me, self.own_app.tokens.clone()));
        }
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// Whether a live member (this node included) asks for `id` to be
    /// taken off the ring.
    pub fn removal_requested(&self, id: NodeId) -> bool {
        self.own_app.removing.contains(&id)
            || self.members.values().any(|m| {
                m.alive && m.app.status != NodeStatus::Left && m.app.removing.contains(&id)
            })
    }

    /// The members some live member asks to take off the ring.
    pub fn removals(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .members
            .keys()
            .copied()
            .filter(|&id| self.removal_requested(id))
            .collect();
        v.sort();
        v
    }

    /// Sets the dead members this node asks the cluster to take off the
    /// ring (a no-op when unchanged).
    pub fn set_removing(&mut self, mut ids: Vec<NodeId>) {
        ids.sort();
        ids.dedup();
        if self.own_app.removing != ids {
            self.set_own_app(|a| a.removing = ids);
        }
    }

    /// This node's removal requests.
    pub fn removing(&self) -> &[NodeId] {
        &self.own_app.removing
    }

    /// Completes this node's removal of dead member `id`: forgets it and
    /// announces it, so that every node forgets it.
    pub fn complete_removal(
        &mut self,
        id: NodeId,
        now: Instant,
        events: &mut Vec<MembershipEvent>,
    ) {
        self.forget(id, now, events);
        self.set_own_app(|a| {
            a.removing.retain(|r| *r != id);
            if !a.removed.contains(&id) {
                a.removed.push(id);
            }
            let excess = a.removed.len().saturating_sub(MAX_REMOVED);
            a.removed.drain(..excess);
        });
    }

    /// Whether `id` was forgotten lately (removed, or left long ago).
    pub fn is_forgotten(&self, id: NodeId) -> bool {
        self.forgotten.contains_key(&id)
    }

    /// Whether the node at `addr` is gone without owning tokens: a member
    /// there is down and owns none (it died joining), or none is there and
    /// one was forgotten lately (removed, or left long ago).
    pub fn gone_without_tokens(&self, addr: SocketAddr) -> bool {
        if addr == self.own_app.addr {
            return false;
        }
        let mut at = self
            .members
            .values()
            .filter(|m| m.app.addr == addr)
            .peekable();
        if at.peek().is_none() {
            return self.forgotten.values().any(|&(_, _, a)| a == addr);
        }
        at.all(|m| !m.alive && !m.app.status.owns_tokens())
    }

    /// Forgets member `id` now (its removal completed): it leaves the
    /// rings, and its generation is not readmitted for a while.
    pub fn forget(&mut self, id: NodeId, now: Instant, events: &mut Vec<MembershipEvent>) {
        if let Some(m) = self.members.remove(&id) {
            self.view_epoch += 1;
            self.ring_epoch += 1;
            self.forgotten
                .insert(id, (m.state.generation, now, m.app.addr));
            events.push(MembershipEvent::Removed {
                id,
                addr: m.app.addr,
            });
        }
    }

    /// Every member believed alive that owns tokens now or next (this node
    /// included), with its status and ring trackers `(acked, synced)`.
    pub fn ring_trackers(&self) -> Vec<(NodeId, NodeStatus, u64, u64)> {
        let mut v: Vec<(NodeId, NodeStatus, u64, u64)> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.alive && (m.app.status.owns_tokens() || m.app.status.owns_tokens_next())
            })
            .map(|(&id, m)| (id, m.app.status, m.app.ring_acked, m.app.ring_synced))
            .collect();
        let own = &self.own_app;
        if own.status.owns_tokens() || own.status.owns_tokens_next() {
            v.push((self.me, own.status, own.ring_acked, own.ring_synced));
        }
        v.sort_by_key(|(id, ..)| *id);
        v
    }

    /// The ring trackers `(acked, synced)` of `id` (this node included), if
    /// it is a member believed alive.
    pub fn trackers_of(&self, id: NodeId) -> Option<(u64, u64)> {
        if id == self.me {
            return Some((self.own_app.ring_acked, self.own_app.ring_synced));
        }
        self.members
            .get(&id)
            .filter(|m| m.alive)
            .map(|m| (m.app.ring_acked, m.app.ring_synced))
    }

    /// Sets the ring trackers this node gossips (a no-op when unchanged).
    pub fn set_ring_trackers(&mut self, acked: u64, synced: u64) {
        if self.own_app.ring_acked != acked || self.own_app.ring_synced != synced {
            self.set_own_app(|a| {
                a.ring_acked = acked;
                a.ring_synced = synced;
            });
        }
    }

    fn bump(&mut self) {
        self.own.version += 1;
    }

    fn set_own_app(&mut self, f: impl FnOnce(&mut AppState)) {
        let before = self.own_app.clone();
        f(&mut self.own_app);
        if self.own_app != before {
            self.bump();
            self.own.app_version = self.own.version;
            if before.status.ring_class() != self.own_app.status.ring_class()
                || before.tokens != self.own_app.tokens
                || before.removing != self.own_app.removing
                || before.datacenter != self.own_app.datacenter
                || before.rack != self.own_app.rack
            {
                self.ring_epoch += 1;
            }
            if before.status != self.own_app.status || before.tokens != self.own_app.tokens {
                self.view_epoch += 1;
            }
        }
    }

    /// Changes this node's status (e.g. `Normal` after joining, `Leaving`).
    pub fn set_status(&mut self, status: NodeStatus) {
        self.set_own_app(|a| a.status = status);
    }

    /// Starts a graceful leave: `Leaving` now; the node announces `Left`
    /// through [`Membership::complete_leave`] once its ranges have moved.
    pub fn leave(&mut self) {
        if matches!(
            self.own_app.status,
            NodeStatus::Joining | NodeStatus::Normal | NodeStatus::Syncing
        ) {
            self.set_status(NodeStatus::Leaving);
        }
    }

    /// Announces `Left`: this node's ranges have moved to their new owners.
    pub fn complete_leave(&mut self) {
        if self.own_app.status == NodeStatus::Leaving {
            self.set_status(NodeStatus::Left);
        }
    }

    /// True once this node has announced `Left`.
    pub fn has_left(&self) -> bool {
        self.own_app.status == NodeStatus::Left
    }

    /// Updates the load this node reports.
    pub fn set_load(&mut self, load: u64) {
        self.set_own_app(|a| a.load = load);
    }

    /// Whether a peer has answered this node's gossip (a joining node
    /// then knows the ring).
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// The status a joining node takes on the cluster's first answer
    /// (`Syncing` by default; `Joining` keeps it joining).
    pub fn set_joined_status(&mut self, status: NodeStatus) {
        self.joined_status = status;
    }

    /// Sets this node's gossiped anti-entropy watermark, the schema
    /// version it repaired under, and its hint targets (a no-op when
    /// unchanged, so gossip carries no needless deltas).
    pub fn set_sync_state(
        &mut self,
        repaired_through: u64,
        repaired_schema: u64,
        hinting: Vec<NodeId>,
    ) {
        let a = &self.own_app;
        if a.repaired_through != repaired_through
            || a.repaired_schema != repaired_schema
            || a.hinting != hinting
        {
            self.set_own_app(|a| {
                a.repaired_through = repaired_through;
                a.repaired_schema = repaired_schema;
                a.hinting = hinting;
            });
        }
    }

    /// The lowest schema version under which a member that owns or takes
    /// tokens (this node included; down ones too, at what they last
    /// gossiped) completed a full anti-entropy round.
    pub fn min_repaired_schema(&self) -> u64 {
        self.members
            .values()
            .filter(|m| m.app.status.owns_tokens())
            .map(|m| m.app.repaired_schema)
            .chain(std::iter::once(self.own_app.repaired_schema))
            .min()
            .unwrap_or(0)
    }

    fn own_state_full(&self) -> NodeState {
        NodeState {
            app: Some(self.own_app.clone()),
            ..self.own.clone()
        }
    }

    fn digests(&self) -> Vec<Digest> {
        let mut v: Vec<Digest> = self
            .members
            .values()
            .map(|m| Digest {
                id: m.state.id,
                generation: m.state.generation,
                version: m.state.version,
            })
            .collect();
        v.push(Digest {
            id: self.me,
            generation: self.own.generation,
            version: self.own.version,
        });
        v
    }

    fn known(&self, id: NodeId) -> Option<(u64, u64, u64)> {
        if id == self.me {
            return Some((self.own.generation, self.own.version, self.own.app_version));
        }
        self.members
            .get(&id)
            .map(|m| (m.state.generation, m.state.version, m.state.app_version))
    }

    /// The state of `id` for a receiver that knows `(generation, version)`
    /// of it; app state included only if the receiver lacks it.
    fn delta_for(&self, id: NodeId, their_gen: u64, their_ver: u64) -> Option<NodeState> {
        let (gen, ver, app_ver) = self.known(id)?;
        if (gen, ver) <= (their_gen, their_ver) {
            return None;
        }
        let needs_app = gen > their_gen || their_ver < app_ver;
        let (state, app) = if id == self.me {
            (&self.own, &self.own_app)
        } else {
            let m = self.members.get(&id)?;
            (&m.state, &m.app)
        };
        Some(NodeState {
            app: needs_app.then(|| app.clone()),
            ..state.clone()
        })
    }

    /// Rough encoded size of a state, to keep messages under the cap
    /// (varints are at most 10 bytes; the address at most 19). An upper
    /// bound: a state larger than the message cap can never be sent.
    pub fn state_size(s: &NodeState) -> usize {
        40 + s.app.as_ref().map_or(0, |a| {
            40 + 10 * a.tokens.len() + a.keyspaces.iter().map(|k| 24 + k.name.len()).sum::<usize>()
        })
    }

    fn fit(&self, mut states: Vec<NodeState>) -> Vec<NodeState> {
        let mut budget = self.cfg.max_message_bytes;
        // Heartbeat-only updates are small and keep liveness fresh: first.
        states.sort_by_key(|s| s.app.is_some());
        states.retain(|s| {
            let size = Self::state_size(s);
            if size <= budget {
                budget -= size;
                true
            } else {
                false
            }
        });
        states
    }

    /// Handles a gossip message from `from`; returns what to send back.
    pub fn handle_gossip(
        &mut self,
        from: NodeId,
        msg: GossipMsg,
        now: Instant,
        rng: &mut ChaCha8Rng,
        events: &mut Vec<MembershipEvent>,
    ) -> Vec<GossipSend> {
        let _ = rng;
        self.heard_from(from, now, events);
        match msg {
            GossipMsg::Syn {
                reply_to,
                digests,
                wall_micros,
            } => {
                self.record_offset(from, wall_micros);
                let mut states = Vec::new();
                let mut requests = Vec::new();
                let mut mentioned = std::collections::BTreeSet::new();
                for d in &digests {
                    mentioned.insert(d.id);
                    match self.known(d.id) {
                        Some((gen, ver, _)) if (gen, ver) > (d.generation, d.version) => {
                            if let Some(s) = self.delta_for(d.id, d.generation, d.version) {
                                states.push(s);
                            }
                        }
                        Some((gen, ver, _)) if (gen, ver) < (d.generation, d.version) => {
                            requests.push(Digest {
                                id: d.id,
                                generation: gen,
                                version: ver,
                            });
                        }
                        Some(_) => {}
                        None => {
                            if !self.is_quarantined(d.id, d.generation) {
                                requests.push(Digest {
                                    id: d.id,
                                    generation: 0,
                                    version: 0,
                                });
                            }
                        }
                    }
                }
                // Members the initiator has never heard of.
                for id in self
                    .members()
                    .into_iter()
                    .filter(|id| !mentioned.contains(id))
                {
                    if let Some(s) = self.delta_for(id, 0, 0) {
                        states.push(s);
                    }
                }
                let states = self.fit(states);
                vec![GossipSend {
                    to: Some(from),
                    addr: reply_to,
                    msg: GossipMsg::Ack {
                        states,
                        requests,
                        wall_micros: self.wall_micros,
                    },
                }]
            }
            GossipMsg::Ack {
                states,
                requests,
                wall_micros,
            } => {
                let states = self.vouched(from, states);
                self.apply_states(states, now, events);
                self.record_offset(from, wall_micros);
                // The first answer from the cluster: the node knows the
                // ring, and takes the status it joins with (unless it
                // stays `Joining` until its ranges are synced).
                self.answered = true;
                if self.own_app.status == NodeStatus::Joining
                    && self.joined_status != NodeStatus::Joining
                {
                    self.set_status(self.joined_status);
                }
                let answer: Vec<NodeState> = requests
                    .iter()
                    .filter_map(|d| self.delta_for(d.id, d.generation, d.version))
                    .collect();
                let answer = self.fit(answer);
                match self.addr_of(from) {
                    Some(addr) if !answer.is_empty() => vec![GossipSend {
                        to: Some(from),
                        addr,
                        msg: GossipMsg::Ack2 { states: answer },
                    }],
                    _ => Vec::new(),
                }
            }
            GossipMsg::Ack2 { states } => {
                let states = self.vouched(from, states);
                self.apply_states(states, now, events);
                Vec::new()
            }
        }
    }

    /// The states `from` may speak for: a member (or any node while this one
    /// knows nobody and is joining through its seeds) speaks for everyone; a
    /// stranger only for itself, so a non-member cannot inject or overwrite
    /// other nodes' states.
    fn vouched(&self, from: NodeId, mut states: Vec<NodeState>) -> Vec<NodeState> {
        if !self.members.is_empty() && !self.members.contains_key(&from) {
            states.retain(|s| s.id == from);
        }
        states
    }

    fn is_quarantined(&self, id: NodeId, generation: u64) -> bool {
        id == self.me
            || self
                .forgotten
                .get(&id)
                .is_some_and(|&(gen, _, _)| generation <= gen)
    }

    fn apply_states(
        &mut self,
        states: Vec<NodeState>,
        now: Instant,
        events: &mut Vec<MembershipEvent>,
    ) {
        for s in states {
            if s.id == self.me {
                // Someone remembers us from a generation we have since
                // replaced; our own newer state wins on the next exchange.
                if s.generation < self.own.generation {
                    self.remembered = true;
                }
                continue;
            }
            if self.is_quarantined(s.id, s.generation) {
                continue;
            }
            if self.wall_micros > 0
                && s.generation > self.wall_micros / 1_000_000 + MAX_GENERATION_AHEAD_SECS
            {
                // A generation a day in the future: a broken clock or a
                // forged state. Accepting it would shadow every honest restart.
                continue;
            }
            self.forgotten.remove(&s.id);
            match self.members.get_mut(&s.id) {
                None => {
                    // A state without app data cannot make a member: we do not
                    // know its address yet. The next exchange brings it.
                    let Some(app) = s.app.clone() else { continue };
                    if app.status == NodeStatus::Left {
                        continue;
                    }
                    let mut detector = ArrivalWindow::new();
                    detector.record(now, self.cfg.window, 1);
                    let id = s.id;
                    let changes_rings = app.status.owns_tokens()
                        || app.status.owns_tokens_next()
                        || !app.removing.is_empty();
                    self.members.insert(
                        id,
                        Member {
                            state: NodeState { app: None, ..s },
                            app,
                            alive: true,
                            detector,
                            down_since: None,
                            left_at: None,
                            next_probe: now,
                            probe_interval: self.cfg.interval,
                            clock_offset: None,
                        },
                    );
                    if changes_rings {
                        self.ring_epoch += 1;
                    }
                    self.view_epoch += 1;
                    events.push(MembershipEvent::Joined(id));
                }
                Some(m) => {
                    if (s.generation, s.version) <= (m.state.generation, m.state.version) {
                        continue;
                    }
                    let restarted = s.generation > m.state.generation;
                    if restarted && s.app.is_none() {
                        // A new generation must come with its app state.
                        continue;
                    }
                    if restarted {
                        self.view_epoch += 1;
                        m.detector = ArrivalWindow::new();
                        events.push(MembershipEvent::Restarted {
                            id: s.id,
                            generation: s.generation,
                        });
                    }
                    let beats = if restarted {
                        1
                    } else {
                        s.version - m.state.version
                    };
                    m.detector.record(now, self.cfg.window, beats);
                    if !m.alive {
                        m.alive = true;
                        m.down_since = None;
                        m.probe_interval = self.cfg.interval;
                        events.push(MembershipEvent::Up(s.id));
                    }
                    if let Some(app) = s.app.clone() {
                        if app.status != m.app.status {
                            events.push(MembershipEvent::StatusChanged {
                                id: s.id,
                                status: app.status,
                            });
                            if app.status == NodeStatus::Left {
                                m.left_at = Some(now);
                            }
                        }
                        if app.status.ring_class() != m.app.status.ring_class()
                            || app.tokens != m.app.tokens
                            || app.removing != m.app.removing
                            || app.datacenter != m.app.datacenter
                            || app.rack != m.app.rack
                        {
                            self.ring_epoch += 1;
                        }
                        if app.status != m.app.status
                            || app.tokens != m.app.tokens
                            || app.addr != m.app.addr
                        {
                            self.view_epoch += 1;
                        }
                        m.app = app;
                    }
                    m.state = NodeState { app: None, ..s };
                }
            }
        }
        // Members whose removal a live member completed are forgotten here
        // too (unless they came back).
        let done: Vec<NodeId> = self
            .members
            .values()
            .filter(|m| m.alive)
            .flat_map(|m| m.app.removed.iter().copied())
            .filter(|id| self.members.get(id).is_some_and(|m| !m.alive))
            .collect();
        for id in done {
            self.forget(id, now, events);
        }
    }

    /// Records that a message from `from` arrived directly: a sign of life
    /// that brings a down peer back at once.
    pub fn heard_from(&mut self, from: NodeId, now: Instant, events: &mut Vec<MembershipEvent>) {
        if let Some(m) = self.members.get_mut(&from) {
            if !m.alive {
                m.alive = true;
                m.down_since = None;
                m.probe_interval = self.cfg.interval;
                m.detector.record(now, self.cfg.window, 1);
                events.push(MembershipEvent::Up(from));
            }
        }
    }

    fn convict(&mut self, now: Instant, rng: &mut ChaCha8Rng, events: &mut Vec<MembershipEvent>) {
        for (&id, m) in self.members.iter_mut() {
            if m.alive && m.detector.phi(now, &self.cfg) > self.cfg.phi_threshold {
                m.alive = false;
                m.down_since = Some(now);
                m.probe_interval = self.cfg.interval;
                m.next_probe = now + jitter(rng, self.cfg.interval);
                events.push(MembershipEvent::Down(id));
            }
        }
    }

    /// Runs a gossip round when due, convicts silent peers, probes down
    /// peers whose backoff expired, and forgets long-gone members.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        rng: &mut ChaCha8Rng,
        events: &mut Vec<MembershipEvent>,
    ) -> Vec<GossipSend> {
        let mut out = Vec::new();
        if now >= self.next_check {
            // Checking suspicion several times a round convicts sooner
            // than waiting for the next round, at no cost in accuracy.
            self.next_check = now + self.cfg.interval / 4;
            self.convict(now, rng, events);
        }
        if now < self.next_round {
            return out;
        }
        self.next_round = now + self.cfg.interval;
        self.bump();
        // Forgetting.
        let mut gone = Vec::new();
        for (&id, m) in &self.members {
            let left_long_ago = m
                .left_at
                .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.forget_left_after);
            // A dead node that owns tokens is never dropped silently: its
            // ranges would lose a copy. It leaves the ring only through a
            // removal (`removing`), which first syncs them elsewhere.
            let dead_long = !m.app.status.owns_tokens()
                && m.down_since.is_some_and(|t| {
                    now.saturating_duration_since(t) >= self.cfg.remove_dead_after
                });
            if left_long_ago || dead_long {
                gone.push((
                    id,
                    m.state.generation,
                    m.app.status.owns_tokens(),
                    m.app.addr,
                ));
            }
        }
        for (id, generation, owned, addr) in gone {
            self.members.remove(&id);
            self.view_epoch += 1;
            self.forgotten.insert(id, (generation, now, addr));
            if owned {
                self.ring_epoch += 1;
            }
            events.push(MembershipEvent::Removed { id, addr });
        }
        let quarantine = self.cfg.forget_left_after.max(self.cfg.remove_dead_after);
        self.forgotten
            .retain(|_, &mut (_, at, _)| now.saturating_duration_since(at) < quarantine);

        let syn = GossipMsg::Syn {
            reply_to: self.own_app.addr,
            digests: self.digests(),
            wall_micros: self.wall_micros,
        };
        let live: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.alive && m.app.status != NodeStatus::Left)
            .map(|(&id, _)| id)
            .collect();
        let mut target_was_seed = false;
        for &id in live.choose_multiple(rng, self.cfg.fanout.max(1)) {
            if let Some(addr) = self.addr_of(id) {
                target_was_seed |= self.seeds.contains(&addr);
                out.push(GossipSend {
                    to: Some(id),
                    addr,
                    msg: syn.clone(),
                });
            }
        }
        // Seeds: always while we know nobody alive, otherwise now and then,
        // so that partitioned groups find each other again through them.
        if !self.seeds.is_empty() && !target_was_seed {
            let p = self.seeds.len() as f64 / (self.members.len() + 1) as f64;
            if live.is_empty() || rng.random_bool(p.min(1.0)) {
                if let Some(&addr) = self.seeds.choose(rng) {
                    let to = self
                        .members
                        .iter()
                        .find(|(_, m)| m.app.addr == addr)
                        .map(|(&id, _)| id);
                    out.push(GossipSend {
                        to,
                        addr,
                        msg: syn.clone(),
                    });
                }
            }
        }
        // Probes of down peers, with exponential backoff and jitter.
        let cap = self.cfg.probe_max_interval;
        for (&id, m) in self.members.iter_mut() {
            if !m.alive && m.app.status != NodeStatus::Left && now >= m.next_probe {
                m.probe_interval = (m.probe_interval * 2).min(cap);
                m.next_probe = now + jitter(rng, m.probe_interval);
                out.push(GossipSend {
                    to: Some(id),
                    addr: m.app.addr,
                    msg: syn.clone(),
                });
            }
        }
        out
    }

    /// When `handle_timeout` next has work to do.
    pub fn poll_timeout(&self) -> Instant {
        self.next_round.min(self.next_check)
    }

    /// Encoded `Syn` for this node's current view (for size checks and benchmarks).
    pub fn syn(&self) -> GossipMsg {
        GossipMsg::Syn {
            reply_to: self.own_app.addr,
            digests: self.digests(),
            wall_micros: self.wall_micros,
        }
    }

    /// Adds a fully-known member directly (tests, benchmarks and tools that
    /// preload a view); gossip is the normal way members arrive.
    pub fn insert_member(&mut self, state: NodeState, now: Instant) {
        let mut ev = Vec::new();
        self.apply_states(vec![state], now, &mut ev);
    }

    /// This node's own full state, as it gossips it.
    pub fn own_state(&self) -> NodeState {
        self.own_state_full()
    }
}

/// `base` scaled by a uniform factor in [0.75, 1.25].
fn jitter(rng: &mut ChaCha8Rng, base: Duration) -> Duration {
    base.mul_f64(rng.random_range(0.75..=1.25))
}
