//! The node: a message-in / message-out state machine that composes
//! membership, placement, the coordinator and the replica.
//!
//! The host feeds it with `handle_*` calls, then drains [`Node::poll_output`]
//! until it returns `None`, and calls [`Node::handle_timeout`] at (or after)
//! [`Node::poll_timeout`]. It never performs I/O, reads a clock or spawns.

use crate::config::{Config, Consistency, KeyspaceConfig, ReplicationStrategy};
use crate::membership::{AppState, GossipSend, Membership, MembershipEvent, NodeStatus};
use crate::placement::{default_tokens, Placement, PlacementKind, Rendezvous, TokenRing};
use crate::time::Instant;
use crate::types::{HybridClock, Key, NodeId, Timestamp, Token, Value, Versioned};
use crate::wire::{Envelope, PeerMsg, RequestTag, WireCodec, WireError};
use bytes::{BufMut, BytesMut};
use core::net::SocketAddr;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Identifies one client request; chosen by the host, echoed in the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Ties a storage operation to its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageToken(pub u64);

/// What a client asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientOp {
    /// Read a key.
    Get {
        /// The key.
        key: Key,
    },
    /// Write a value.
    Put {
        /// The key.
        key: Key,
        /// The value.
        value: Value,
    },
    /// Delete a key (writes a tombstone).
    Delete {
        /// The key.
        key: Key,
    },
}

/// A client request: an operation in a keyspace at a consistency level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// The keyspace; [`crate::DEFAULT_KEYSPACE`] unless chosen.
    pub keyspace: String,
    /// The operation.
    pub op: ClientOp,
    /// The level, or `None` for the keyspace's default.
    pub consistency: Option<Consistency>,
}

impl ClientRequest {
    fn new(op: ClientOp) -> Self {
        ClientRequest {
            keyspace: crate::DEFAULT_KEYSPACE.to_string(),
            op,
            consistency: None,
        }
    }

    /// A read of `key` in the default keyspace.
    pub fn get(key: impl Into<Key>) -> Self {
        Self::new(ClientOp::Get { key: key.into() })
    }

    /// A write of `value` under `key` in the default keyspace.
    pub fn put(key: impl Into<Key>, value: impl Into<Value>) -> Self {
        Self::new(ClientOp::Put {
            key: key.into(),
            value: value.into(),
        })
    }

    /// A delete of `key` in the default keyspace.
    pub fn delete(key: impl Into<Key>) -> Self {
        Self::new(ClientOp::Delete { key: key.into() })
    }

    /// The same request at consistency level `level`.
    pub fn with_consistency(mut self, level: Consistency) -> Self {
        self.consistency = Some(level);
        self
    }

    /// The same request in keyspace `keyspace`.
    pub fn in_keyspace(mut self, keyspace: impl Into<String>) -> Self {
        self.keyspace = keyspace.into();
        self
    }
}

/// A successful answer to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The answer to a get: the newest value, or `None` if absent or deleted.
    Value(Option<Value>),
    /// A put or delete was acknowledged by enough replicas; `ts` is its timestamp.
    Written {
        /// The timestamp the write carries.
        ts: Timestamp,
    },
}

/// Why a request failed. A failed write may still have reached some replicas.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClientError {
    /// Too few replicas were believed alive; nothing was sent.
    #[error("unavailable: {needed} replicas needed, {alive} believed alive")]
    Unavailable {
        /// Replicas the level needs.
        needed: usize,
        /// Replicas believed alive.
        alive: usize,
    },
    /// Replicas did not answer in time.
    #[error("timeout: {acked} of {needed} replicas answered in time")]
    Timeout {
        /// Replicas that answered.
        acked: usize,
        /// Replicas the level needs.
        needed: usize,
    },
    /// Replicas answered with storage errors, so the level cannot be met.
    #[error("replica failure: {failed} replicas failed, {acked} answered, {needed} needed")]
    ReplicaFailure {
        /// Replicas that succeeded.
        acked: usize,
        /// Replicas that failed.
        failed: usize,
        /// Replicas the level needs.
        needed: usize,
    },
    /// The keyspace does not exist.
    #[error("unknown keyspace {0:?}")]
    UnknownKeyspace(String),
    /// The level needs more replicas than the keyspace has.
    #[error("consistency {level} needs more replicas than the replication factor {rf}")]
    InvalidConsistency {
        /// The level asked for.
        level: Consistency,
        /// The keyspace's replication factor.
        rf: usize,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The node has not yet learned the whole cluster (it just started or
    /// restarted); coordinating now could pick the wrong replicas. Retry, or
    /// ask another node.
    #[error("node is still joining the cluster; retry shortly or ask another node")]
    Joining,
    /// The node holds as much work as it is allowed to (storage operations
    /// queued behind a slow store, or connections at a client port's cap);
    /// the request was refused before anything was sent or stored. Back
    /// off, then retry (or ask another node).
    #[error("node is overloaded; back off and retry, or ask another node")]
    Overloaded,
}

/// A storage operation for the host to run against its `Store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageOp {
    /// `Store::apply(key, version)`.
    Apply {
        /// Storage key (keyspace-qualified).
        key: Key,
        /// The version to keep if newer.
        version: Versioned,
    },
    /// `Store::get(key)`.
    Get {
        /// Storage key (keyspace-qualified).
        key: Key,
    },
}

/// The completion of a [`StorageOp`]; errors are carried as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageResult {
    /// The result of an `Apply`.
    Applied(Result<bool, String>),
    /// The result of a `Get`.
    Got(Result<Option<Versioned>, String>),
}

/// Something that happened inside the node, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A change in membership or liveness.
    Membership(MembershipEvent),
    /// A message came from a node that is not a member; it was dropped.
    UnknownPeer(NodeId),
    /// A frame could not be decoded; it was dropped.
    BadFrame(WireError),
    /// A storage operation failed.
    StorageFailed(String),
}

/// Work the node asks its host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `msg` to the node listening at `addr`.
    Send {
        /// The recipient, when its id is known (seeds may be known by address only).
        to: Option<NodeId>,
        /// Where it listens.
        addr: SocketAddr,
        /// The message.
        msg: PeerMsg,
    },
    /// Answer client request `id`.
    Reply {
        /// The request.
        id: RequestId,
        /// The answer.
        result: Result<ClientResponse, ClientError>,
    },
    /// Run `op` against the store, then call `handle_storage(token, ..)`.
    Storage {
        /// Pass back with the result.
        token: StorageToken,
        /// The operation.
        op: StorageOp,
    },
    /// Something worth logging.
    Event(NodeEvent),
}

/// Why a node could not be built from a configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A keyspace name is longer than 255 bytes or empty.
    #[error("keyspace name {0:?} must be 1 to 255 bytes")]
    KeyspaceName(String),
    /// A keyspace has a replication factor of zero.
    #[error("keyspace {0:?} has replication factor 0")]
    ZeroReplication(String),
    /// Two keyspaces share a name.
    #[error("keyspace {0:?} is defined twice")]
    DuplicateKeyspace(String),
    /// A keyspace's default level needs more replicas than it has.
    #[error("keyspace {name:?}: default consistency {level} needs more than {rf} replicas")]
    DefaultConsistency {
        /// The keyspace.
        name: String,
        /// Its default level.
        level: Consistency,
        /// Its replication factor.
        rf: usize,
    },
    /// `vnodes` is zero with the token ring placement.
    #[error("vnodes must be at least 1")]
    ZeroVnodes,
}

/// The key under which `key` of `keyspace` is stored: one length byte, the
/// keyspace name, then the key. Keys of one keyspace are contiguous.
pub fn storage_key(keyspace: &str, key: &[u8]) -> Key {
    let mut b = BytesMut::with_capacity(1 + keyspace.len() + key.len());
    // Keyspace names are validated to 1..=255 bytes when the node is built.
    b.put_u8(u8::try_from(keyspace.len()).unwrap_or(u8::MAX));
    b.put_slice(keyspace.as_bytes());
    b.put_slice(key);
    b.freeze()
}

/// Splits a storage key into (keyspace, key), or `None` if malformed.
pub fn split_storage_key(skey: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = skey.split_first()?;
    let len = usize::from(len);
    if rest.len() < len {
        return None;
    }
    let ks = std::str::from_utf8(&rest[..len]).ok()?;
    Some((ks, &rest[len..]))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    CoordWrite { tag: RequestTag },
    CoordRead { tag: RequestTag },
    ReplicaWrite { to: NodeId, tag: RequestTag },
    ReplicaRead { to: NodeId, tag: RequestTag },
    Repair,
}

#[derive(Debug)]
enum PendingKind {
    Write {
        ts: Timestamp,
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
    start: Instant,
    wall_at_start: u64,
    clock: HybridClock,
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
    /// The ring epoch last seen, and since when it has not changed.
    view_stable_since: (u64, Instant),
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
        let generation = config.generation.unwrap_or(wall_micros / 1_000_000);
        let tokens = config
            .tokens
            .clone()
            .unwrap_or_else(|| default_tokens(id, config.vnodes.max(1)));
        let schema = {
            let encoded = postcard::to_allocvec(&keyspaces).unwrap_or_default();
            xxhash_rust::xxh3::xxh3_64(&encoded)
        };
        let joins_through_seeds = config.seeds.iter().any(|s| *s != config.listen_addr);
        let app = AppState {
            status: if joins_through_seeds && config.bootstrap {
                NodeStatus::Joining
            } else {
                NodeStatus::Normal
            },
            addr: config.listen_addr,
            tokens,
            schema,
            load: 0,
        };
        let membership = Membership::new(
            id,
            generation,
            app,
            &config.seeds,
            config.gossip.clone(),
            now,
        );
        let mut node = Node {
            id,
            codec: WireCodec::new(config.cluster.clone()),
            start: now,
            wall_at_start: wall_micros,
            clock: HybridClock::new(id),
            membership,
            placement_kind: config.placement,
            placement: Box::new(TokenRing::default()),
            placement_epoch: 0,
            keyspaces,
            request_timeout: config.request_timeout,
            rng: ChaCha8Rng::seed_from_u64(config.rng_seed ^ id.0.rotate_left(32)),
            next_tag: 1,
            next_token: 1,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            waiters: HashMap::new(),
            events: Vec::new(),
            out: VecDeque::new(),
            shutting_down: false,
            // A node with no one to join coordinates at once; a joining or
            // restarting node waits until its view has settled.
            ready: !joins_through_seeds,
            view_stable_since: (0, now),
        };
        node.rebuild_placement();
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
    pub fn leave(&mut self, now: Instant) {
        self.membership.leave(now);
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

    fn wall_now(&self, now: Instant) -> u64 {
        self.wall_at_start
            .saturating_add(now.as_micros().saturating_sub(self.start.as_micros()))
    }

    /// The next thing for the host to do, or `None` when there is nothing.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the host should call [`Node::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let m = self.membership.poll_timeout();
        Some(match self.deadlines.first() {
            Some(&(d, _)) => d.min(m),
            None => m,
        })
    }

    /// Decodes a frame and handles the message in it; a bad frame is
    /// reported as an event and dropped.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        match self.codec.decode(frame) {
            Ok(Envelope { from, msg, .. }) => self.handle_message(now, from, msg),
            Err(e) => self.out.push_back(Output::Event(NodeEvent::BadFrame(e))),
        }
    }

    /// Handles a message from peer `from`.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, msg: PeerMsg) {
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
                let wall = self.wall_now(now);
                self.clock.observe(version.ts, wall);
                self.storage(
                    StorageOp::Apply { key, version },
                    Waiter::ReplicaWrite { to: from, tag },
                );
            }
            PeerMsg::Read { tag, key } => {
                self.storage(
                    StorageOp::Get { key },
                    Waiter::ReplicaRead { to: from, tag },
                );
            }
            PeerMsg::Repair { key, version } => {
                let wall = self.wall_now(now);
                self.clock.observe(version.ts, wall);
                self.storage(StorageOp::Apply { key, version }, Waiter::Repair);
            }
            PeerMsg::WriteAck { tag, ok } => self.on_write_result(tag, from, ok),
            PeerMsg::ReadReply { tag, result } => self.on_read_result(tag, from, result.ok()),
        }
        self.flush_events();
    }

    /// Starts a client request; its answer comes out as `Output::Reply { id, .. }`.
    pub fn handle_client(&mut self, now: Instant, id: RequestId, req: ClientRequest) {
        if self.shutting_down {
            return self.reply(id, Err(ClientError::ShuttingDown));
        }
        if !self.ready {
            return self.reply(id, Err(ClientError::Joining));
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
        let live: Vec<NodeId> = replicas
            .iter()
            .copied()
            .filter(|&r| self.membership.is_alive(r))
            .collect();
        if live.len() < needed {
            return self.reply(
                id,
                Err(ClientError::Unavailable {
                    needed,
                    alive: live.len(),
                }),
            );
        }
        let key = storage_key(&req.keyspace, user_key);
        let tag = self.next_tag;
        self.next_tag += 1;
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

    fn fan_out_write(
        &mut self,
        now: Instant,
        tag: RequestTag,
        key: &Key,
        value: Option<Value>,
        live: &[NodeId],
    ) -> PendingKind {
        let wall = self.wall_now(now);
        let ts = self.clock.now(wall);
        let version = Versioned { ts, value };
        for &r in live {
            if r == self.id {
                self.storage(
                    StorageOp::Apply {
                        key: key.clone(),
                        version: version.clone(),
                    },
                    Waiter::CoordWrite { tag },
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
        PendingKind::Write { ts }
    }

    /// Completes a storage operation the node asked for.
    pub fn handle_storage(&mut self, _now: Instant, token: StorageToken, result: StorageResult) {
        let Some(waiter) = self.waiters.remove(&token.0) else {
            return; // unknown or duplicate completion
        };
        if let StorageResult::Applied(Err(e)) | StorageResult::Got(Err(e)) = &result {
            self.out
                .push_back(Output::Event(NodeEvent::StorageFailed(e.clone())));
        }
        match (waiter, result) {
            (Waiter::CoordWrite { tag }, StorageResult::Applied(r)) => {
                self.on_write_result(tag, self.id, r.is_ok())
            }
            (Waiter::CoordRead { tag }, StorageResult::Got(r)) => {
                self.on_read_result(tag, self.id, r.ok())
            }
            (Waiter::ReplicaWrite { to, tag }, StorageResult::Applied(r)) => {
                self.send(to, PeerMsg::WriteAck { tag, ok: r.is_ok() })
            }
            (Waiter::ReplicaRead { to, tag }, StorageResult::Got(r)) => self.send(
                to,
                PeerMsg::ReadReply {
                    tag,
                    result: r.map_err(|_| ()),
                },
            ),
            (Waiter::Repair, _) => {}
            // A host that answers an Apply with Got (or the reverse) broke the
            // contract; treat it as a failed operation rather than guess.
            (Waiter::CoordWrite { tag }, _) => self.on_write_result(tag, self.id, false),
            (Waiter::CoordRead { tag }, _) => self.on_read_result(tag, self.id, None),
            (Waiter::ReplicaWrite { to, tag }, _) => {
                self.send(to, PeerMsg::WriteAck { tag, ok: false })
            }
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
    pub fn handle_timeout(&mut self, now: Instant) {
        let sends = self
            .membership
            .handle_timeout(now, &mut self.rng, &mut self.events);
        self.push_gossip(sends);
        self.flush_events();
        self.settle(now);
        while let Some(&(deadline, tag)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&tag) {
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
    fn settle(&mut self, now: Instant) {
        if self.ready {
            return;
        }
        let epoch = self.membership.ring_epoch();
        if self.view_stable_since.0 != epoch {
            self.view_stable_since = (epoch, now);
            return;
        }
        let settle_for = self.membership.config().interval * 3;
        if self.membership.status() == NodeStatus::Normal
            && now.saturating_duration_since(self.view_stable_since.1) >= settle_for
        {
            self.ready = true;
        }
    }

    /// Whether the node coordinates client requests (its view has settled).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Fails every unanswered request with `ShuttingDown` and refuses new ones.
    pub fn shutdown(&mut self, _now: Instant) {
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

    fn flush_events(&mut self) {
        for e in self.events.drain(..) {
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

    fn on_write_result(&mut self, tag: RequestTag, from: NodeId, ok: bool) {
        if !self.record_response(tag, from) {
            return;
        }
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        if ok {
            p.ok += 1;
        } else {
            p.failed += 1;
        }
        let (client, needed, acked, failed) = (p.client, p.needed, p.ok, p.failed);
        let outstanding = p.sent_to.len() - p.responded.len();
        let mut answer = None;
        if !p.answered && acked >= needed {
            p.answered = true;
            if let PendingKind::Write { ts } = p.kind {
                answer = Some(Ok(ClientResponse::Written { ts }));
            }
        } else if !p.answered && acked + outstanding < needed {
            p.answered = true;
            answer = Some(Err(ClientError::ReplicaFailure {
                acked,
                failed,
                needed,
            }));
        }
        if let Some(a) = answer {
            self.reply(client, a);
        }
        self.finish_if_complete(tag);
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
                self.pending.remove(&tag);
            }
        }
    }
}

fn best_version(responses: &[(NodeId, Option<Versioned>)]) -> Option<&Versioned> {
    responses
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .max_by(|a, b| a.lww_cmp(b))
}
