//! Chain replication with apportioned queries (CRAQ), the replication of
//! keyspaces created with `--mode craq`: linearizable reads from any
//! serving replica, compare-and-set and increments.
//!
//! A key's chain is its replica list in ring order, filtered by the chain
//! configuration in the agreed schema ([`crate::chain_config`]): serving
//! members head first, then syncing (rejoining) ones. This machine is one
//! node's part in every chain:
//!
//! - **Writes** go to the head, which serialises a key's writes, decides
//!   compare-and-set and increments against the newest version
//!   ([`crate::chain_op`]), gives the next version number and passes it
//!   down. Each member stores a version dirty before passing it on; the
//!   last member stores it committed and sends an acknowledgement back up,
//!   each member marking it clean. The head answers the client once the
//!   version is committed. A member resends its dirty versions to its
//!   successor until they are acknowledged; a member that finds a gap asks
//!   its predecessor for its whole record.
//! - **Reads** at a serving member holding a read lease
//!   ([`crate::read_lease`]): a clean key is answered at once; a dirty one
//!   asks the last member which version is committed. `consistency=ONE`
//!   answers the newest version held, dirty included, without a lease:
//!   not linearizable.
//! - **Epochs.** The chain configuration, and so every chain, changes only
//!   with a new chain epoch of the agreed schema (chosen by Paxos among
//!   the voters). Every chain message names its epoch and a member drops
//!   messages of another one. A node starts using an epoch only a lease
//!   period after it learned it: by then every lease on an older epoch
//!   has ended, so no old member can still answer a read (its lease is
//!   renewed only by a majority of voters still on its epoch).
//! - **Reconfiguration** is lazy, per key: at a new epoch a member that
//!   became the last commits every dirty version it holds (each passed
//!   through it towards the old last one), a member with a new successor
//!   sends it its record, and a member that rejoined drops the dirty
//!   versions it held from before (they may never have committed).
//! - **Rejoining.** The claimant marks a member that stayed down `Out`, a
//!   member back up `Syncing` and a synced one `Serving` again
//!   ([`SchemaChange::ChainMember`]). A syncing member is the last of its
//!   chains, so every write committed since it rejoined passed through
//!   it; it pulls what was committed before from each key's serving tail
//!   and reports itself synced.
//!
//! A key's record ([`ChainRecord`]) is stored under its storage key as the
//! value of a version stamped by this node's clock (always newer than the
//! last it stored), and is loaded when a key is touched; records with work
//! in flight or dirty versions stay in memory (bounded by [`MAX_SLOTS`]).

use crate::chain_config::{Chain, ChainConfig, MemberState};
use crate::chain_op::{decide, ChainOp, ChainOpError, ChainReply};
use crate::chain_record::{Applied, ChainError, ChainRead, ChainRecord, ChainVersion};
use crate::client_api::{ClientError, ClientResponse, RequestId};
use crate::config::ReplicationStrategy;
use crate::read_lease::ReadLease;
use crate::schema::{Schema, SchemaChange};
use crate::storage_key::{split_storage_key_token, token_range_bounds};
use crate::storage_ops::{StorageOp, StorageResult};
use crate::time::Instant;
use crate::topology::Replication;
use crate::types::{Key, NodeId, Timestamp, Token, Value, Versioned};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::time::Duration;

/// How long a read lease lasts (half of it from each renewal), and how long
/// a node waits after learning a new chain epoch before using it.
pub const LEASE_PERIOD: Duration = Duration::from_secs(2);

/// How often a node renews its read lease.
const RENEW_EVERY: Duration = Duration::from_millis(400);

/// How long a member waits for an acknowledgement before sending its dirty
/// versions again.
const RESEND_EVERY: Duration = Duration::from_millis(300);

/// How long a syncing member waits for a page before asking again, and how
/// often it repeats that it is synced.
const SYNC_RETRY: Duration = Duration::from_secs(1);

/// How long the claimant waits before taking a member that is down out of
/// the chains.
pub const OUT_AFTER: Duration = Duration::from_secs(3);

/// How often the claimant proposes a chain change at most.
const PROPOSE_EVERY: Duration = Duration::from_millis(500);

/// The most keys with work in flight or dirty versions held in memory;
/// work on other keys is refused (`Overloaded`) beyond it.
pub const MAX_SLOTS: usize = 65_536;

/// The most operations waiting on one key.
const MAX_QUEUE: usize = 1024;

/// The most client requests this node forwards at once.
const MAX_REQUESTS: usize = 65_536;

/// Records per page of a syncing member's pull.
const SYNC_PAGE: usize = 256;

/// A chain message between two nodes, each naming the sender's chain epoch
/// where it matters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainMsg {
    /// Any node → the key's head: do this write (the sender's request `req`).
    Submit {
        /// The sender's chain epoch.
        epoch: u64,
        /// Storage key.
        key: Key,
        /// The write.
        op: ChainOp,
        /// The sender's request number.
        req: u64,
    },
    /// Head → submitter: the write committed with this answer, or nothing
    /// was done.
    Submitted {
        /// The submitter's request number.
        req: u64,
        /// The answer.
        result: Result<ChainReply, ChainRefusal>,
    },
    /// Predecessor → successor: a version of a key.
    Write {
        /// The sender's chain epoch.
        epoch: u64,
        /// Storage key.
        key: Key,
        /// The version.
        version: ChainVersion,
        /// Its value (`None`: a delete).
        value: Option<Value>,
    },
    /// Successor → predecessor: versions up to `version` are committed.
    Ack {
        /// The sender's chain epoch.
        epoch: u64,
        /// Storage key.
        key: Key,
        /// The newest committed version.
        version: ChainVersion,
    },
    /// Successor → predecessor: a version arrived after a gap; send the
    /// whole record.
    Behind {
        /// The sender's chain epoch.
        epoch: u64,
        /// Storage key.
        key: Key,
    },
    /// Predecessor → successor: its whole record of a key.
    Catchup {
        /// The sender's chain epoch.
        epoch: u64,
        /// Storage key.
        key: Key,
        /// The record.
        record: ChainRecord,
    },
    /// Any node → a member: read a key (`weak`: the newest version held).
    Read {
        /// The sender's chain epoch.
        epoch: u64,
        /// Storage key.
        key: Key,
        /// The sender's request number.
        req: u64,
        /// `consistency=ONE`: no lease, dirty versions included.
        weak: bool,
    },
    /// Member → reader: the value, or why it was not read.
    ReadReply {
        /// The reader's request number.
        req: u64,
        /// The value (`None`: absent).
        result: Result<Option<Value>, ChainRefusal>,
    },
    /// Member → the key's last member: which version is committed?
    Query {
        /// The sender's chain epoch.
        epoch: u64,
        /// Storage key.
        key: Key,
        /// The asker's query number.
        qid: u64,
    },
    /// Last member → asker: the committed version.
    QueryReply {
        /// The asker's query number.
        qid: u64,
        /// The committed version.
        result: Result<ChainVersion, ChainRefusal>,
    },
    /// Lease holder → voter: still on this epoch?
    LeaseAsk {
        /// The holder's round.
        round: u64,
    },
    /// Voter → holder: the newest chain epoch it accepted.
    LeaseAnswer {
        /// The holder's round.
        round: u64,
        /// The voter's newest chain epoch.
        epoch: u64,
    },
    /// Syncing member → serving member: the committed records of keys of
    /// `keyspace` after `after` whose serving tail you are.
    SyncPull {
        /// The sender's chain epoch.
        epoch: u64,
        /// The keyspace's storage name.
        keyspace: String,
        /// Resume after this storage key.
        after: Option<Key>,
    },
    /// Serving member → syncing member: a page of committed records.
    SyncPage {
        /// The sender's chain epoch.
        epoch: u64,
        /// The keyspace's storage name.
        keyspace: String,
        /// Storage keys with their committed version and value.
        items: Vec<(Key, ChainVersion, Option<Value>)>,
        /// Where the next page starts (`None`: done).
        next: Option<Key>,
    },
    /// Syncing member → every ring owner (the claimant acts on it): it
    /// pulled everything committed before it rejoined at `epoch`.
    Synced {
        /// The epoch it synced under.
        epoch: u64,
    },
}

/// Why a chain member did nothing with a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChainRefusal {
    /// The member is on another chain epoch.
    #[error("the member is on chain epoch {theirs}")]
    Epoch {
        /// The member's epoch.
        theirs: u64,
    },
    /// The member cannot answer yet (a new epoch not yet usable, no lease).
    #[error("the member cannot answer yet")]
    NotReady,
    /// The member does not play that part in the key's chain.
    #[error("the member does not play that part in the key's chain")]
    NotMember,
    /// The member holds as much work as it may.
    #[error("the member is overloaded")]
    Overloaded,
    /// The member's store failed.
    #[error("the member's store failed")]
    Storage,
    /// The operation does not apply to the value.
    #[error(transparent)]
    Op(ChainOpError),
}

impl ChainRefusal {
    /// The client's error for a refusal (nothing was done).
    pub fn to_client(&self) -> ClientError {
        match self {
            ChainRefusal::Epoch { .. } | ChainRefusal::NotReady | ChainRefusal::NotMember => {
                ClientError::ChainChanging
            }
            ChainRefusal::Overloaded => ClientError::Overloaded,
            ChainRefusal::Storage => ClientError::ReplicaFailure {
                acked: 0,
                failed: 1,
                needed: 1,
            },
            ChainRefusal::Op(e) => ClientError::InvalidOp(e.to_string()),
        }
    }
}

/// What a client asks of a CRAQ keyspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainRequest {
    /// A read (`weak`: `consistency=ONE`).
    Read {
        /// Newest version held, no lease.
        weak: bool,
    },
    /// A write.
    Write(ChainOp),
}

/// Who waits for an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asker {
    /// A client of this node.
    Local(RequestId),
    /// Another node's request.
    Remote(NodeId, u64),
}

/// Work waiting on a key.
#[derive(Clone, Debug)]
enum Work {
    Submit {
        op: ChainOp,
        asker: Asker,
    },
    Write {
        from: NodeId,
        version: ChainVersion,
        value: Option<Value>,
    },
    Ack {
        from: NodeId,
        version: ChainVersion,
    },
    Read {
        asker: Asker,
        weak: bool,
    },
    Query {
        from: NodeId,
        qid: u64,
    },
    Behind {
        from: NodeId,
    },
    Catchup {
        from: NodeId,
        record: ChainRecord,
    },
    Install {
        version: ChainVersion,
        value: Option<Value>,
        run: u64,
    },
    /// The epoch changed, or the record was just loaded: look at the
    /// key's chain again.
    Handover {
        /// Just loaded (not an epoch change).
        loaded: bool,
    },
}

/// One key with work in flight, or dirty.
#[derive(Debug, Default)]
struct Slot {
    /// `None` while loading.
    record: Option<ChainRecord>,
    /// A load or store is in flight: work waits.
    busy: bool,
    queue: VecDeque<Work>,
    /// Answers waiting for a version to commit (the head's).
    waiting: Vec<(ChainVersion, ChainReply, Asker)>,
    /// When the dirty versions were last sent down (`None`: send now).
    sent_at: Option<Instant>,
    /// The newest committed version acknowledged to the predecessor.
    acked_up: ChainVersion,
    /// Sync installs (by run) the store in flight completes.
    installs: Vec<u64>,
}

/// Who waits for a chain storage operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ChainWaiter {
    /// A key's record is loading.
    Load(Key),
    /// A key's record is being stored.
    Store(Key),
    /// A page of a keyspace read for a syncing member.
    SyncRange {
        to: NodeId,
        keyspace: String,
        epoch: u64,
    },
}

/// What the chain machine asks the node to do.
#[derive(Debug)]
pub(crate) enum ChainEffect {
    Send(NodeId, ChainMsg),
    /// Load (`Get`) or range-read: a storage operation as is.
    Storage(StorageOp, ChainWaiter),
    /// Store `record` under `key`, stamped by the node's clock.
    Store(Key, Vec<u8>),
    Reply(RequestId, Result<ClientResponse, ClientError>),
    Propose(SchemaChange),
}

/// What the node tells the chain machine about itself and the cluster.
pub(crate) struct ChainCtx<'a> {
    pub me: NodeId,
    pub now: Instant,
    pub schema: &'a Schema,
    /// A token's replicas on the current ring, then (while the ring moves
    /// and they differ) on the next, each in ring order.
    pub replicas: &'a dyn Fn(Token, &Replication) -> Vec<Vec<NodeId>>,
    /// The wall clock (microseconds), for the ring move's sync tracking.
    pub wall: u64,
    /// A peer remembered this node from an earlier run
    /// ([`crate::membership::Membership::remembered_from_before`]).
    pub remembered: bool,
    pub alive: &'a dyn Fn(NodeId) -> bool,
    /// This node is the claimant and may propose chain changes.
    pub claimant: bool,
    /// The newest chain epoch this node's acceptor accepted (answers to
    /// lease rounds name it).
    pub accepted_epoch: u64,
}

impl ChainCtx<'_> {
    fn config(&self) -> &ChainConfig {
        &self.schema.chain
    }

    /// The chain of a storage key (`None`: not a CRAQ keyspace's key).
    fn chain_of(&self, key: &[u8]) -> Option<Chain> {
        let (ks, token, _) = split_storage_key_token(key)?;
        let def = self.schema.by_storage_name(ks)?;
        if def.config.strategy != ReplicationStrategy::Craq {
            return None;
        }
        let sets = (self.replicas)(token, &def.config.replication());
        let now = sets.first().map_or(&[][..], |s| &s[..]);
        Some(match sets.get(1) {
            Some(next) => self.config().chain_moving(now, next),
            None => self.config().chain(now),
        })
    }
}

/// A syncing member's pull.
#[derive(Debug)]
struct SyncRun {
    epoch: u64,
    id: u64,
    /// (keyspace, serving member) pairs left to pull from.
    todo: Vec<(String, NodeId)>,
    cursor: Option<Key>,
    /// When the outstanding pull was sent.
    asked_at: Option<Instant>,
    /// Installs of the last page not yet stored.
    pending: usize,
    /// When this member last said it is synced.
    reported_at: Option<Instant>,
    /// The wall clock when the run started.
    started_wall: u64,
}

/// Figures for status and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainStatus {
    /// The chain epoch in use.
    pub epoch: u64,
    /// Whether this node holds a read lease now.
    pub lease: bool,
    /// Keys with work in flight or dirty versions in memory.
    pub slots: usize,
    /// Writes committed here as the last member.
    pub commits: u64,
    /// Reads that asked the last member (dirty keys).
    pub queries: u64,
    /// Whether this node is syncing and has pulled everything.
    pub synced: bool,
}

/// One node's part in every CRAQ chain.
pub(crate) struct ChainMachine {
    epoch: u64,
    voters: BTreeSet<NodeId>,
    usable_at: Instant,
    /// Keys wait for the epoch to become usable before they send.
    pending_ready: bool,
    /// The keys waiting when the epoch became usable were settled.
    settled_ready: bool,
    lease: ReadLease,
    next_renew: Instant,
    slots: BTreeMap<Key, Slot>,
    /// Forwarded client requests: number → (client, deadline).
    /// (Numbers grow and the timeout is fixed: the first ends first.)
    requests: BTreeMap<u64, (RequestId, Instant)>,
    next_req: u64,
    /// Version queries in flight: number → (key, reader, deadline).
    queries: BTreeMap<u64, (Key, Asker, Instant)>,
    next_qid: u64,
    sync: Option<SyncRun>,
    next_run: u64,
    /// The earliest start a ring move's tracking asked of a finished run.
    sync_wanted: std::cell::Cell<u64>,
    /// The claimant's view: since when each owner is down, and which
    /// syncing members said they are synced (at which epoch).
    down_since: BTreeMap<NodeId, Instant>,
    synced: BTreeMap<NodeId, u64>,
    proposed_at: Option<Instant>,
    request_timeout: Duration,
    /// Started on an empty data directory and not (yet) known to be a
    /// founder or out of its chains: it may have lost what it held, so it
    /// does no chain work and asks to be taken out, then rejoins syncing.
    amnesiac: bool,
    /// Started on an empty data directory.
    fresh: bool,
    /// Accepted the cluster's first schema version.
    founder: bool,
    /// When it last asked to be taken out.
    asked_out_at: Option<Instant>,
    rr: usize,
    commits: u64,
    query_count: u64,
    /// Mutation hooks for the checker's tests.
    #[cfg(feature = "mutations")]
    pub(crate) mutations: ChainMutations,
}

/// Deliberate bugs the simulator's checker must catch.
#[cfg(feature = "mutations")]
#[derive(Clone, Debug, Default)]
pub(crate) struct ChainMutations {
    /// A dirty read answers the newest version without asking the tail.
    pub skip_version_query: bool,
    /// Leases and the wait before a new epoch are ignored: an old tail
    /// keeps answering.
    pub ignore_leases: bool,
    /// The head commits a write before it reaches the tail.
    pub commit_at_head: bool,
}

impl ChainMachine {
    /// A machine whose request, query and sync-run numbers start at
    /// `first_number`: unique to this run of the node (a reply meant for
    /// an earlier run must not answer this one's request).
    pub fn new(now: Instant, request_timeout: Duration, first_number: u64) -> Self {
        ChainMachine {
            epoch: 0,
            voters: BTreeSet::new(),
            usable_at: now + LEASE_PERIOD,
            pending_ready: true,
            settled_ready: false,
            lease: ReadLease::new(0, BTreeSet::new(), LEASE_PERIOD),
            next_renew: now,
            slots: BTreeMap::new(),
            requests: BTreeMap::new(),
            next_req: first_number,
            queries: BTreeMap::new(),
            next_qid: first_number,
            sync: None,
            next_run: first_number,
            sync_wanted: std::cell::Cell::new(0),
            down_since: BTreeMap::new(),
            synced: BTreeMap::new(),
            proposed_at: None,
            request_timeout,
            amnesiac: false,
            fresh: false,
            founder: false,
            asked_out_at: None,
            rr: 0,
            commits: 0,
            query_count: 0,
            #[cfg(feature = "mutations")]
            mutations: ChainMutations::default(),
        }
    }

    /// Figures for status and tests.
    pub fn status(&self, now: Instant) -> ChainStatus {
        ChainStatus {
            epoch: self.epoch,
            lease: self.can_serve(now),
            slots: self.slots.len(),
            commits: self.commits,
            queries: self.query_count,
            synced: self
                .sync
                .as_ref()
                .is_some_and(|s| s.todo.is_empty() && s.pending == 0),
        }
    }

    /// This node started on an empty data directory: unless it turns out
    /// to be one of the founders of the cluster's first schema version (no
    /// chain held data before it), it may be a member that lost its data.
    pub fn set_fresh(&mut self) {
        self.amnesiac = true;
        self.fresh = true;
    }

    /// This node accepted the cluster's first schema version: it is one
    /// of its founders, so no chain held data before it (unless a peer
    /// remembers it from an earlier run: see [`ChainCtx::remembered`]).
    pub fn founded(&mut self) {
        self.founder = true;
    }

    /// Whether this node may have lost chain data it held: started empty,
    /// not (known to be) a founder, and not cleared since (see
    /// `on_schema`).
    fn judge_amnesia(&mut self, cx: &ChainCtx<'_>) {
        if self.amnesiac && self.founder && !cx.remembered {
            self.amnesiac = false;
            self.fresh = false;
        }
    }

    /// Whether this node has pulled its CRAQ chains' committed state in a
    /// run that started at or after wall time `wall` (true without CRAQ
    /// keyspaces): a ring move waits for it as for anti-entropy.
    /// A run that finished before `wall` makes the next tick start another.
    pub fn synced_since(&self, wall: u64, has_craq: bool) -> bool {
        if !has_craq {
            return true;
        }
        self.sync_wanted.set(self.sync_wanted.get().max(wall));
        self.sync
            .as_ref()
            .is_some_and(|s| s.todo.is_empty() && s.pending == 0 && s.started_wall >= wall)
    }

    /// Nothing in flight: a node without CRAQ keyspaces need not tick it.
    pub fn is_idle(&self) -> bool {
        self.slots.is_empty() && self.requests.is_empty() && self.queries.is_empty()
    }

    fn ready(&self, now: Instant) -> bool {
        if self.amnesiac {
            return false;
        }
        #[cfg(feature = "mutations")]
        if self.mutations.ignore_leases {
            return true;
        }
        now >= self.usable_at
    }

    fn can_serve(&self, now: Instant) -> bool {
        #[cfg(feature = "mutations")]
        if self.mutations.ignore_leases {
            return true;
        }
        self.ready(now) && self.lease.is_valid(now)
    }

    /// When the machine next needs a timer.
    pub fn poll_timeout(&self, has_craq: bool) -> Option<Instant> {
        if !has_craq && self.slots.is_empty() && self.requests.is_empty() {
            return None;
        }
        // Resends ride on the renewal timer.
        let mut t = self.next_renew;
        if self.pending_ready {
            t = t.min(self.usable_at);
        }
        if let Some((_, r)) = self.requests.first_key_value() {
            t = t.min(r.1);
        }
        if let Some((_, q)) = self.queries.first_key_value() {
            t = t.min(q.2);
        }
        Some(t)
    }

    /// The schema changed: a new chain epoch starts a lease period from
    /// now, and every key in memory looks at its chain again.
    pub fn on_schema(&mut self, cx: &ChainCtx<'_>, fx: &mut Vec<ChainEffect>) {
        let epoch = cx.config().epoch;
        let voters = cx.schema.voters.clone();
        self.judge_amnesia(cx);
        if self.amnesiac && cx.schema.version >= 1 {
            // A member already out rejoins syncing; a node on no ring holds
            // no chain: nothing to fear either way.
            // (A node joining the ring held none of its chains' data.)
            let owner = cx.schema.ring.as_ref().is_some_and(|r| r.owns(cx.me).0);
            if cx.config().state(cx.me) == MemberState::Out || !cx.schema.has_craq() || !owner {
                self.amnesiac = false;
                self.fresh = false;
            }
        }
        if epoch == self.epoch && voters == self.voters {
            return;
        }
        let changed = epoch != self.epoch;
        self.epoch = epoch;
        self.voters = voters.clone();
        self.lease.set_epoch(epoch, voters);
        self.next_renew = cx.now;
        if changed {
            self.usable_at = self.usable_at.max(cx.now + LEASE_PERIOD);
            self.pending_ready = true;
            self.settled_ready = false;
            self.sync = None;
            let keys: Vec<Key> = self.slots.keys().cloned().collect();
            for k in keys {
                if let Some(s) = self.slots.get_mut(&k) {
                    s.queue.push_front(Work::Handover { loaded: false });
                }
                self.run(cx, fx, &k);
            }
        }
    }

    /// A client's request of a CRAQ keyspace's key.
    pub fn client(
        &mut self,
        cx: &ChainCtx<'_>,
        fx: &mut Vec<ChainEffect>,
        id: RequestId,
        key: Key,
        request: ChainRequest,
    ) {
        // Chains form under an agreed schema only: before the first version
        // each node places keys by its own gossip view, which no epoch
        // fences. (So a ring move before it has no chain data to move.)
        let founded = cx.schema.version > 0;
        let Some(chain) = cx.chain_of(&key).filter(|_| founded) else {
            return fx.push(ChainEffect::Reply(id, Err(ClientError::ChainChanging)));
        };
        let target = match &request {
            ChainRequest::Write(_) => chain.head(),
            ChainRequest::Read { weak } => {
                let candidates: Vec<NodeId> = if *weak {
                    chain.members().collect()
                } else {
                    chain.serving().to_vec()
                };
                if candidates.contains(&cx.me) {
                    Some(cx.me)
                } else {
                    let live: Vec<NodeId> = candidates
                        .iter()
                        .copied()
                        .filter(|&n| (cx.alive)(n))
                        .collect();
                    self.rr = self.rr.wrapping_add(1);
                    live.get(self.rr % live.len().max(1)).copied()
                }
            }
        };
        let Some(target) = target else {
            return fx.push(ChainEffect::Reply(
                id,
                Err(ClientError::Unavailable {
                    needed: 1,
                    alive: 0,
                }),
            ));
        };
        if target == cx.me {
            let work = match request {
                ChainRequest::Write(op) => Work::Submit {
                    op,
                    asker: Asker::Local(id),
                },
                ChainRequest::Read { weak } => Work::Read {
                    asker: Asker::Local(id),
                    weak,
                },
            };
            return self.accept(cx, fx, key, work);
        }
        if !(cx.alive)(target) {
            return fx.push(ChainEffect::Reply(
                id,
                Err(ClientError::Unavailable {
                    needed: 1,
                    alive: 0,
                }),
            ));
        }
        if self.requests.len() >= MAX_REQUESTS {
            return fx.push(ChainEffect::Reply(id, Err(ClientError::Overloaded)));
        }
        let req = self.next_req;
        self.next_req += 1;
        self.requests
            .insert(req, (id, cx.now + self.request_timeout));
        let epoch = self.epoch;
        let msg = match request {
            ChainRequest::Write(op) => ChainMsg::Submit {
                epoch,
                key,
                op,
                req,
            },
            ChainRequest::Read { weak } => ChainMsg::Read {
                epoch,
                key,
                req,
                weak,
            },
        };
        fx.push(ChainEffect::Send(target, msg));
    }

    /// Answers `asker` with a refusal.
    fn refuse(fx: &mut Vec<ChainEffect>, asker: Asker, write: bool, why: ChainRefusal) {
        match asker {
            Asker::Local(id) => fx.push(ChainEffect::Reply(id, Err(why.to_client()))),
            Asker::Remote(to, req) => fx.push(ChainEffect::Send(
                to,
                if write {
                    ChainMsg::Submitted {
                        req,
                        result: Err(why),
                    }
                } else {
                    ChainMsg::ReadReply {
                        req,
                        result: Err(why),
                    }
                },
            )),
        }
    }

    /// Queues `work` on `key` (refusing it if the node is not ready or
    /// holds too much) and runs what can run.
    fn accept(&mut self, cx: &ChainCtx<'_>, fx: &mut Vec<ChainEffect>, key: Key, work: Work) {
        let refusal = match &work {
            Work::Submit { .. } if !self.ready(cx.now) => Some(ChainRefusal::NotReady),
            Work::Read { weak: false, .. } if !self.can_serve(cx.now) => {
                Some(ChainRefusal::NotReady)
            }
            _ if !self.slots.contains_key(&key) && self.slots.len() >= MAX_SLOTS => {
                Some(ChainRefusal::Overloaded)
            }
            _ if self
                .slots
                .get(&key)
                .is_some_and(|s| s.queue.len() >= MAX_QUEUE) =>
            {
                Some(ChainRefusal::Overloaded)
            }
            _ => None,
        };
        if let Some(why) = refusal {
            match work {
                Work::Submit { asker, .. } => Self::refuse(fx, asker, true, why),
                Work::Read { asker, .. } => Self::refuse(fx, asker, false, why),
                Work::Query { from, qid } => fx.push(ChainEffect::Send(
                    from,
                    ChainMsg::QueryReply {
                        qid,
                        result: Err(why),
                    },
                )),
                Work::Install { run, .. } => self.install_done(run),
                _ => {}
            }
            return;
        }
        self.slots
            .entry(key.clone())
            .or_default()
            .queue
            .push_back(work);
        self.run(cx, fx, &key);
    }

    /// Runs the work queued on `key` until it waits for storage or is done.
    fn run(&mut self, cx: &ChainCtx<'_>, fx: &mut Vec<ChainEffect>, key: &Key) {
        loop {
            let Some(slot) = self.slots.get_mut(key) else {
                return;
            };
            if slot.busy {
                return;
            }
            if slot.record.is_none() {
                slot.busy = true;
                fx.push(ChainEffect::Storage(
                    StorageOp::Get { key: key.clone() },
                    ChainWaiter::Load(key.clone()),
                ));
                return;
            }
            let Some(work) = slot.queue.pop_front() else {
                self.settle(cx, fx, key);
                return;
            };
            let changed = self.work(cx, fx, key, work);
            if changed {
                self.store(fx, key);
                return;
            }
        }
    }

    /// Stores `key`'s record; work resumes when it is stored.
    fn store(&mut self, fx: &mut Vec<ChainEffect>, key: &Key) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Some(record) = &slot.record else {
            return;
        };
        match record.encode() {
            Ok(bytes) => {
                slot.busy = true;
                fx.push(ChainEffect::Store(key.clone(), bytes));
            }
            Err(_) => self.fail_slot(fx, key),
        }
    }

    /// A store failed: everything waiting on the key is refused and the
    /// key is forgotten (loaded again from the store next time).
    fn fail_slot(&mut self, fx: &mut Vec<ChainEffect>, key: &Key) {
        let Some(slot) = self.slots.remove(key) else {
            return;
        };
        for (_, _, asker) in slot.waiting {
            Self::refuse(fx, asker, true, ChainRefusal::Storage);
        }
        for w in slot.queue {
            match w {
                Work::Submit { asker, .. } => Self::refuse(fx, asker, true, ChainRefusal::Storage),
                Work::Read { asker, .. } => Self::refuse(fx, asker, false, ChainRefusal::Storage),
                Work::Install { run, .. } => self.install_done(run),
                _ => {}
            }
        }
    }

    /// Does one piece of work on a loaded, idle key; true when the record
    /// changed and must be stored before anything else happens.
    fn work(
        &mut self,
        cx: &ChainCtx<'_>,
        fx: &mut Vec<ChainEffect>,
        key: &Key,
        work: Work,
    ) -> bool {
        let me = cx.me;
        let chain = cx.chain_of(key).unwrap_or_default();
        let last = chain.last() == Some(me);
        let epoch = self.epoch;
        let can_serve = self.can_serve(cx.now);
        #[cfg(feature = "mutations")]
        let skip_query = self.mutations.skip_version_query;
        #[cfg(not(feature = "mutations"))]
        let skip_query = false;
        #[cfg(feature = "mutations")]
        let commit_at_head = self.mutations.commit_at_head;
        #[cfg(not(feature = "mutations"))]
        let commit_at_head = false;
        let Some(slot) = self.slots.get_mut(key) else {
            return false;
        };
        let Some(record) = slot.record.as_mut() else {
            return false;
        };
        match work {
            Work::Submit { op, asker } => {
                if chain.head() != Some(me) {
                    Self::refuse(fx, asker, true, ChainRefusal::NotMember);
                    return false;
                }
                let (newest, value) = record.newest();
                match decide(&op, value) {
                    Err(e) => {
                        Self::refuse(fx, asker, true, ChainRefusal::Op(e));
                        false
                    }
                    Ok(d) => match d.write {
                        // A compare-and-set that does not swap writes
                        // nothing: it is a read at the head, and answers
                        // only under a lease as reads do (an old head cut
                        // off from a newer epoch must not answer from its
                        // stale record), once the version it read commits.
                        None if !can_serve => {
                            Self::refuse(fx, asker, true, ChainRefusal::NotReady);
                            false
                        }
                        None => {
                            slot.waiting.push((newest, d.reply, asker));
                            false
                        }
                        Some(value) => {
                            let v = record.next_version();
                            match record.apply_at(epoch, v, value) {
                                Ok(_) => {
                                    if last || commit_at_head {
                                        record.commit_all();
                                        if last {
                                            self.commits += 1;
                                        }
                                    }
                                    slot.waiting.push((v, d.reply, asker));
                                    slot.sent_at = None;
                                    true
                                }
                                Err(_) => {
                                    Self::refuse(fx, asker, true, ChainRefusal::Overloaded);
                                    false
                                }
                            }
                        }
                    },
                }
            }
            Work::Write {
                from,
                version,
                value,
            } => {
                if chain.predecessor(me) != Some(from) {
                    return false;
                }
                match record.apply_at(epoch, version, value) {
                    Ok(Applied::New) => {
                        if last {
                            record.commit_all();
                            self.commits += 1;
                        }
                        slot.sent_at = None;
                        true
                    }
                    Ok(Applied::Duplicate) => {
                        let committed = record.committed().0;
                        if version <= committed {
                            fx.push(ChainEffect::Send(
                                from,
                                ChainMsg::Ack {
                                    epoch,
                                    key: key.clone(),
                                    version: committed,
                                },
                            ));
                            slot.acked_up = slot.acked_up.max(committed);
                        } else {
                            // Dirty here: the successor may lack it too.
                            slot.sent_at = None;
                        }
                        false
                    }
                    Err(ChainError::Gap { .. }) => {
                        fx.push(ChainEffect::Send(
                            from,
                            ChainMsg::Behind {
                                epoch,
                                key: key.clone(),
                            },
                        ));
                        false
                    }
                    Err(_) => false,
                }
            }
            Work::Ack { from, version } => {
                if chain.successor(me) != Some(from) {
                    return false;
                }
                let committed = record.committed().0;
                if version > committed && version <= record.newest().0 {
                    // Cannot fail: `version` is held and newer than the
                    // committed one.
                    let _ = record.commit(version);
                    true
                } else {
                    false
                }
            }
            Work::Read { asker, weak } => {
                let answer = |fx: &mut Vec<ChainEffect>, value: Option<Value>| match asker {
                    Asker::Local(id) => {
                        fx.push(ChainEffect::Reply(id, Ok(ClientResponse::Value(value))))
                    }
                    Asker::Remote(to, req) => fx.push(ChainEffect::Send(
                        to,
                        ChainMsg::ReadReply {
                            req,
                            result: Ok(value),
                        },
                    )),
                };
                if weak {
                    if chain.members().any(|m| m == me) {
                        answer(fx, record.newest().1.cloned());
                    } else {
                        Self::refuse(fx, asker, false, ChainRefusal::NotMember);
                    }
                    return false;
                }
                if !chain.serves(me) {
                    Self::refuse(fx, asker, false, ChainRefusal::NotMember);
                    return false;
                }
                if !can_serve {
                    Self::refuse(fx, asker, false, ChainRefusal::NotReady);
                    return false;
                }
                match record.read() {
                    ChainRead::Clean(v) => answer(fx, v.cloned()),
                    ChainRead::Dirty if skip_query => answer(fx, record.newest().1.cloned()),
                    ChainRead::Dirty => match chain.last() {
                        Some(tail) if tail != me => {
                            let qid = self.next_qid;
                            self.next_qid += 1;
                            self.query_count += 1;
                            self.queries
                                .insert(qid, (key.clone(), asker, cx.now + self.request_timeout));
                            fx.push(ChainEffect::Send(
                                tail,
                                ChainMsg::Query {
                                    epoch,
                                    key: key.clone(),
                                    qid,
                                },
                            ));
                        }
                        // The last member commits what it holds on load.
                        _ => answer(fx, record.committed().1.cloned()),
                    },
                }
                false
            }
            Work::Query { from, qid } => {
                let result = if chain.last() != Some(me) {
                    Err(ChainRefusal::NotMember)
                } else if !can_serve {
                    Err(ChainRefusal::NotReady)
                } else {
                    Ok(record.committed().0)
                };
                fx.push(ChainEffect::Send(
                    from,
                    ChainMsg::QueryReply { qid, result },
                ));
                false
            }
            Work::Behind { from } => {
                if chain.successor(me) == Some(from) {
                    fx.push(ChainEffect::Send(
                        from,
                        ChainMsg::Catchup {
                            epoch,
                            key: key.clone(),
                            record: record.clone(),
                        },
                    ));
                }
                false
            }
            Work::Catchup {
                from,
                record: theirs,
            } => {
                if chain.predecessor(me) != Some(from) {
                    return false;
                }
                let mut changed = record.catch_up(epoch, &theirs);
                if last && record.commit_all() {
                    self.commits += 1;
                    changed = true;
                }
                if changed {
                    slot.sent_at = None;
                }
                changed
            }
            Work::Install {
                version,
                value,
                run,
            } => {
                let changed = record.install_committed(version, value);
                if changed {
                    // Counted once stored.
                    slot.installs.push(run);
                } else if let Some(s) = self.sync.as_mut().filter(|s| s.id == run) {
                    s.pending = s.pending.saturating_sub(1);
                }
                changed
            }
            Work::Handover { loaded } => {
                let mut changed = false;
                if record.dirty_epoch() < cx.config().joined_at(me) && record.strip_dirty() {
                    changed = true;
                }
                if last && record.commit_all() {
                    self.commits += 1;
                    changed = true;
                }
                if chain.head() != Some(me) {
                    // Answers a head owed are owed by no one now: the
                    // clients time out (the writes may or may not commit).
                    slot.waiting.clear();
                }
                slot.sent_at = None;
                // A record just loaded owes its predecessor nothing it
                // knows of; after an epoch change, the (maybe new)
                // predecessor hears the committed version again.
                slot.acked_up = if loaded { record.committed().0 } else { 0 };
                changed
            }
        }
    }

    /// A sync install was stored (or changed nothing).
    fn install_done(&mut self, run: u64) {
        if let Some(s) = self.sync.as_mut().filter(|s| s.id == run) {
            s.pending = s.pending.saturating_sub(1);
        }
    }

    /// Sends what the key's record owes its neighbours, answers what
    /// committed, and forgets the key once nothing is left to do.
    fn settle(&mut self, cx: &ChainCtx<'_>, fx: &mut Vec<ChainEffect>, key: &Key) {
        let me = cx.me;
        let chain = cx.chain_of(key).unwrap_or_default();
        let epoch = self.epoch;
        let ready = self.ready(cx.now);
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Some(record) = slot.record.as_ref() else {
            return;
        };
        let committed = record.committed().0;
        if ready {
            // Answers owed for committed versions (never before the epoch
            // is usable: an older epoch's member may still serve reads).
            let (done, rest): (Vec<_>, Vec<_>) = slot
                .waiting
                .drain(..)
                .partition(|(v, _, _)| *v <= committed);
            slot.waiting = rest;
            for (_, reply, asker) in done {
                match asker {
                    Asker::Local(id) => fx.push(ChainEffect::Reply(id, Ok(client_reply(reply)))),
                    Asker::Remote(to, req) => fx.push(ChainEffect::Send(
                        to,
                        ChainMsg::Submitted {
                            req,
                            result: Ok(reply),
                        },
                    )),
                }
            }
            if let Some(pred) = chain.predecessor(me) {
                if committed > slot.acked_up {
                    slot.acked_up = committed;
                    fx.push(ChainEffect::Send(
                        pred,
                        ChainMsg::Ack {
                            epoch,
                            key: key.clone(),
                            version: committed,
                        },
                    ));
                }
            }
            if let Some(next) = chain.successor(me) {
                if !record.is_clean() && slot.sent_at.is_none() {
                    slot.sent_at = Some(cx.now);
                    for (version, value) in record.dirty() {
                        fx.push(ChainEffect::Send(
                            next,
                            ChainMsg::Write {
                                epoch,
                                key: key.clone(),
                                version: *version,
                                value: value.clone(),
                            },
                        ));
                    }
                }
            }
        }
        let idle = !slot.busy && slot.queue.is_empty() && slot.waiting.is_empty();
        let in_chain = chain.members().any(|m| m == me);
        let queried = self.queries.values().any(|(k, _, _)| k == key);
        if idle && !queried && (record.is_clean() || !in_chain) {
            self.slots.remove(key);
        }
    }

    /// A chain storage operation completed.
    pub fn storage_done(
        &mut self,
        cx: &ChainCtx<'_>,
        fx: &mut Vec<ChainEffect>,
        waiter: ChainWaiter,
        result: StorageResult,
    ) {
        match waiter {
            ChainWaiter::Load(key) => {
                let loaded = match result {
                    StorageResult::Got(Ok(None)) => Ok(ChainRecord::default()),
                    StorageResult::Got(Ok(Some(v))) => match v.value {
                        Some(bytes) => ChainRecord::decode(&bytes),
                        None => Ok(ChainRecord::default()),
                    },
                    _ => Err(ChainError::Corrupt("storage failed".into())),
                };
                match loaded {
                    Ok(record) => {
                        if let Some(slot) = self.slots.get_mut(&key) {
                            slot.record = Some(record);
                            slot.busy = false;
                            // What a new epoch asks of a record applies to
                            // one loaded under it too.
                            slot.queue.push_front(Work::Handover { loaded: true });
                        }
                        self.run(cx, fx, &key);
                    }
                    Err(_) => self.fail_slot(fx, &key),
                }
            }
            ChainWaiter::Store(key) => match result {
                StorageResult::Applied(Ok(_)) => {
                    if let Some(slot) = self.slots.get_mut(&key) {
                        slot.busy = false;
                        for run in std::mem::take(&mut slot.installs) {
                            if let Some(s) = self.sync.as_mut().filter(|s| s.id == run) {
                                s.pending = s.pending.saturating_sub(1);
                            }
                        }
                    }
                    self.settle(cx, fx, &key);
                    self.run(cx, fx, &key);
                }
                _ => self.fail_slot(fx, &key),
            },
            ChainWaiter::SyncRange {
                to,
                keyspace,
                epoch,
            } => {
                let StorageResult::Ranged(Ok(rows)) = result else {
                    return;
                };
                if epoch != self.epoch {
                    return;
                }
                let full = rows.len() >= SYNC_PAGE;
                let next = if full {
                    rows.last().map(|(k, _)| k.clone())
                } else {
                    None
                };
                let mut items = Vec::new();
                for (key, version) in rows {
                    let Some(chain) = cx.chain_of(&key) else {
                        continue;
                    };
                    if chain.tail() != Some(cx.me) || !chain.members().any(|m| m == to) {
                        continue;
                    }
                    let record = match self.slots.get(&key).and_then(|s| s.record.clone()) {
                        Some(r) => r,
                        None => match version.value.as_deref().map(ChainRecord::decode) {
                            Some(Ok(r)) => r,
                            _ => continue,
                        },
                    };
                    let (v, value) = record.committed();
                    if v > 0 {
                        items.push((key, v, value.cloned()));
                    }
                }
                fx.push(ChainEffect::Send(
                    to,
                    ChainMsg::SyncPage {
                        epoch,
                        keyspace,
                        items,
                        next,
                    },
                ));
            }
        }
    }

    /// A chain message from `from`.
    pub fn on_message(
        &mut self,
        cx: &ChainCtx<'_>,
        fx: &mut Vec<ChainEffect>,
        from: NodeId,
        msg: ChainMsg,
    ) {
        // Messages that name an epoch: only this node's counts, and only
        // once it is usable.
        let (mine, ready) = (self.epoch, self.ready(cx.now));
        let stale = |epoch: u64| epoch != mine || !ready;
        match msg {
            ChainMsg::LeaseAsk { round } => {
                let epoch = cx.config().epoch.max(cx.accepted_epoch);
                fx.push(ChainEffect::Send(
                    from,
                    ChainMsg::LeaseAnswer { round, epoch },
                ));
            }
            ChainMsg::LeaseAnswer { round, epoch } => {
                let _ = self.lease.on_answer(round, from, epoch);
            }
            ChainMsg::Submit {
                epoch,
                key,
                op,
                req,
            } => {
                if epoch != self.epoch {
                    let why = ChainRefusal::Epoch { theirs: self.epoch };
                    return Self::refuse(fx, Asker::Remote(from, req), true, why);
                }
                let asker = Asker::Remote(from, req);
                self.accept(cx, fx, key, Work::Submit { op, asker });
            }
            ChainMsg::Read {
                epoch,
                key,
                req,
                weak,
            } => {
                if epoch != self.epoch && !weak {
                    let why = ChainRefusal::Epoch { theirs: self.epoch };
                    return Self::refuse(fx, Asker::Remote(from, req), false, why);
                }
                let asker = Asker::Remote(from, req);
                self.accept(cx, fx, key, Work::Read { asker, weak });
            }
            ChainMsg::Submitted { req, result } => {
                if let Some((id, _)) = self.requests.remove(&req) {
                    let r = result.map(client_reply).map_err(|e| e.to_client());
                    fx.push(ChainEffect::Reply(id, r));
                }
            }
            ChainMsg::ReadReply { req, result } => {
                if let Some((id, _)) = self.requests.remove(&req) {
                    let r = result.map(ClientResponse::Value).map_err(|e| e.to_client());
                    fx.push(ChainEffect::Reply(id, r));
                }
            }
            ChainMsg::Write {
                epoch,
                key,
                version,
                value,
            } => {
                if !stale(epoch) {
                    let w = Work::Write {
                        from,
                        version,
                        value,
                    };
                    self.accept(cx, fx, key, w);
                }
            }
            ChainMsg::Ack {
                epoch,
                key,
                version,
            } => {
                if !stale(epoch) {
                    self.accept(cx, fx, key, Work::Ack { from, version });
                }
            }
            ChainMsg::Behind { epoch, key } => {
                if !stale(epoch) {
                    self.accept(cx, fx, key, Work::Behind { from });
                }
            }
            ChainMsg::Catchup { epoch, key, record } => {
                if !stale(epoch) {
                    self.accept(cx, fx, key, Work::Catchup { from, record });
                }
            }
            ChainMsg::Query { epoch, key, qid } => {
                if stale(epoch) {
                    let result = Err(ChainRefusal::Epoch { theirs: self.epoch });
                    return fx.push(ChainEffect::Send(
                        from,
                        ChainMsg::QueryReply { qid, result },
                    ));
                }
                self.accept(cx, fx, key, Work::Query { from, qid });
            }
            ChainMsg::QueryReply { qid, result } => self.on_query_reply(cx, fx, qid, result),
            ChainMsg::SyncPull {
                epoch,
                keyspace,
                after,
            } => {
                if stale(epoch) || cx.schema.by_storage_name(&keyspace).is_none() {
                    return;
                }
                let (start, end) = token_range_bounds(&keyspace, Token(0), Token(u64::MAX));
                let start = match after {
                    Some(k) => Bound::Excluded(k),
                    None => start,
                };
                fx.push(ChainEffect::Storage(
                    StorageOp::Range {
                        start,
                        end,
                        limit: SYNC_PAGE,
                    },
                    ChainWaiter::SyncRange {
                        to: from,
                        keyspace,
                        epoch,
                    },
                ));
            }
            ChainMsg::SyncPage {
                epoch,
                keyspace,
                items,
                next,
            } => self.on_sync_page(cx, fx, from, epoch, keyspace, items, next),
            ChainMsg::Synced { epoch } => {
                self.synced.insert(from, epoch);
            }
        }
    }

    fn on_query_reply(
        &mut self,
        cx: &ChainCtx<'_>,
        fx: &mut Vec<ChainEffect>,
        qid: u64,
        result: Result<ChainVersion, ChainRefusal>,
    ) {
        let Some((key, asker, _)) = self.queries.remove(&qid) else {
            return;
        };
        let value = match (
            &result,
            self.slots.get(&key).and_then(|s| s.record.as_ref()),
        ) {
            (Ok(v), Some(record)) => match record.value_at(*v) {
                Ok(value) => Ok(value.cloned()),
                // Committed further here since the query was answered: the
                // newer committed version is as good an answer.
                Err(ChainError::StaleAnswer { .. }) => Ok(record.committed().1.cloned()),
                Err(_) => Err(ChainRefusal::NotReady),
            },
            (Ok(_), None) => Err(ChainRefusal::NotReady),
            (Err(e), _) => Err(e.clone()),
        };
        match (asker, value) {
            (Asker::Local(id), r) => fx.push(ChainEffect::Reply(
                id,
                r.map(ClientResponse::Value).map_err(|e| e.to_client()),
            )),
            (Asker::Remote(to, req), result) => {
                fx.push(ChainEffect::Send(to, ChainMsg::ReadReply { req, result }))
            }
        }
        self.settle(cx, fx, &key);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_sync_page(
        &mut self,
        cx: &ChainCtx<'_>,
        fx: &mut Vec<ChainEffect>,
        from: NodeId,
        epoch: u64,
        keyspace: String,
        items: Vec<(Key, ChainVersion, Option<Value>)>,
        next: Option<Key>,
    ) {
        let Some(run) = self.sync.as_mut() else {
            return;
        };
        if epoch != run.epoch || run.asked_at.is_none() {
            return;
        }
        if run.todo.first() != Some(&(keyspace.clone(), from)) {
            return;
        }
        run.asked_at = None;
        match next {
            Some(k) => run.cursor = Some(k),
            None => {
                run.todo.remove(0);
                run.cursor = None;
            }
        }
        let id = run.id;
        // Only this page's own keyspace's keys are taken.
        let items: Vec<_> = items
            .into_iter()
            .filter(|(k, _, _)| split_storage_key_token(k).is_some_and(|(ks, _, _)| ks == keyspace))
            .take(SYNC_PAGE)
            .collect();
        run.pending += items.len();
        for (key, version, value) in items {
            self.accept(
                cx,
                fx,
                key,
                Work::Install {
                    version,
                    value,
                    run: id,
                },
            );
        }
        self.step_sync(cx, fx);
    }

    /// Starts, continues or reports a syncing member's pull.
    fn step_sync(&mut self, cx: &ChainCtx<'_>, fx: &mut Vec<ChainEffect>) {
        let me = cx.me;
        // A member rejoining, or a node the moving ring gives keys: each
        // pulls what was committed before it came into their chains.
        let rejoining = cx.config().state(me) == MemberState::Syncing;
        let gaining = cx
            .schema
            .ring
            .as_ref()
            .is_some_and(|r| r.is_moving() && r.owns(me).1);
        if !(rejoining || gaining) || !cx.schema.has_craq() || !self.ready(cx.now) {
            self.sync = None;
            return;
        }
        let stale_run = self.sync.as_ref().is_none_or(|s| {
            s.epoch != self.epoch
                || (s.todo.is_empty() && s.pending == 0 && s.started_wall < self.sync_wanted.get())
        });
        if stale_run {
            let owners: Vec<NodeId> = cx
                .schema
                .ring
                .as_ref()
                .map(|r| r.owners_now().into_iter().map(|(id, _)| id).collect())
                .unwrap_or_default();
            let mut todo = Vec::new();
            for def in cx.schema.keyspaces.values() {
                if def.config.strategy != ReplicationStrategy::Craq {
                    continue;
                }
                for &p in &owners {
                    if p != me && cx.config().state(p) == MemberState::Serving {
                        todo.push((def.storage.clone(), p));
                    }
                }
            }
            self.sync = Some(SyncRun {
                epoch: self.epoch,
                id: self.next_run,
                todo,
                cursor: None,
                asked_at: None,
                pending: 0,
                reported_at: None,
                started_wall: cx.wall,
            });
            self.next_run += 1;
        }
        let epoch = self.epoch;
        let Some(run) = self.sync.as_mut() else {
            return;
        };
        if run.pending > 0 {
            return;
        }
        match run.todo.first() {
            Some((ks, peer)) => {
                let due = run
                    .asked_at
                    .is_none_or(|at| cx.now.saturating_duration_since(at) >= SYNC_RETRY);
                if due {
                    run.asked_at = Some(cx.now);
                    fx.push(ChainEffect::Send(
                        *peer,
                        ChainMsg::SyncPull {
                            epoch,
                            keyspace: ks.clone(),
                            after: run.cursor.clone(),
                        },
                    ));
                }
            }
            None if !rejoining => {
                // Done: the ring move's tracking asks `synced_since`.
            }
            None => {
                let due = run
                    .reported_at
                    .is_none_or(|at| cx.now.saturating_duration_since(at) >= SYNC_RETRY);
                if due {
                    run.reported_at = Some(cx.now);
                    let owners: Vec<NodeId> = cx
                        .schema
                        .ring
                        .as_ref()
                        .map(|r| r.owners_now().into_iter().map(|(id, _)| id).collect())
                        .unwrap_or_default();
                    for o in owners {
                        if o == me {
                            self.synced.insert(me, epoch);
                        } else {
                            fx.push(ChainEffect::Send(o, ChainMsg::Synced { epoch }));
                        }
                    }
                }
            }
        }
    }

    /// Timers: lease renewal, resends, request deadlines, the sync, and the
    /// claimant's chain changes.
    pub fn tick(&mut self, cx: &ChainCtx<'_>, fx: &mut Vec<ChainEffect>) {
        let now = cx.now;
        if !cx.schema.has_craq() && self.slots.is_empty() {
            self.expire(fx, now);
            return;
        }
        if now >= self.next_renew {
            self.next_renew = now + RENEW_EVERY;
            let round = self.lease.start_round(now);
            for &v in &self.voters {
                if v == cx.me {
                    let epoch = cx.config().epoch.max(cx.accepted_epoch);
                    let _ = self.lease.on_answer(round, v, epoch);
                } else {
                    fx.push(ChainEffect::Send(v, ChainMsg::LeaseAsk { round }));
                }
            }
        }
        // Dirty versions not acknowledged in time go down again.
        let due: Vec<Key> = self
            .slots
            .iter_mut()
            .filter(|(_, s)| {
                s.sent_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= RESEND_EVERY)
            })
            .map(|(k, s)| {
                s.sent_at = None;
                k.clone()
            })
            .collect();
        for k in due {
            if self.slots.get(&k).is_some_and(|s| !s.busy) {
                self.settle(cx, fx, &k);
            }
        }
        // Keys that waited for the epoch to become usable.
        // (Cleared at the usable time even when not ready, or the timer
        // would keep firing at a time already past.)
        if self.pending_ready && now >= self.usable_at {
            self.pending_ready = false;
        }
        if !self.pending_ready && self.ready(now) && !self.settled_ready {
            self.settled_ready = true;
            let idle: Vec<Key> = self
                .slots
                .iter()
                .filter(|(_, s)| !s.busy && s.sent_at.is_none() && s.record.is_some())
                .map(|(k, _)| k.clone())
                .collect();
            for k in idle {
                self.settle(cx, fx, &k);
            }
        }
        self.expire(fx, now);
        self.judge_amnesia(cx);
        if self.fresh && !self.amnesiac && cx.remembered {
            // Taken for a founder before a peer's gossip showed otherwise.
            self.amnesiac = true;
        }
        self.step_sync(cx, fx);
        if self.amnesiac && cx.schema.version >= 1 {
            // Ask to be taken out of the chains (then rejoin syncing).
            let due = self
                .asked_out_at
                .is_none_or(|at| now.saturating_duration_since(at) >= SYNC_RETRY);
            if due {
                self.asked_out_at = Some(now);
                fx.push(ChainEffect::Propose(SchemaChange::ChainMember {
                    base_epoch: cx.config().epoch,
                    node: cx.me,
                    state: MemberState::Out,
                }));
            }
        }
        if cx.claimant {
            self.claim(cx, fx);
        }
    }

    fn expire(&mut self, fx: &mut Vec<ChainEffect>, now: Instant) {
        let timeout = || {
            Err(ClientError::Timeout {
                acked: 0,
                needed: 1,
            })
        };
        for (id, _) in take_due(&mut self.requests, |r| r.1 <= now) {
            fx.push(ChainEffect::Reply(id, timeout()));
        }
        for (_, asker, _) in take_due(&mut self.queries, |q| q.2 <= now) {
            // A remote asker's own deadline answers it.
            if let Asker::Local(id) = asker {
                fx.push(ChainEffect::Reply(id, timeout()));
            }
        }
    }

    /// The claimant's chain changes: a member down for [`OUT_AFTER`] goes
    /// out, one back up rejoins syncing, a synced one serves again. One
    /// change at a time.
    fn claim(&mut self, cx: &ChainCtx<'_>, fx: &mut Vec<ChainEffect>) {
        let now = cx.now;
        let Some(ring) = cx.schema.ring.as_ref() else {
            return;
        };
        if !cx.schema.has_craq() {
            return;
        }
        let owners: Vec<NodeId> = ring.owners_now().into_iter().map(|(id, _)| id).collect();
        self.down_since.retain(|n, _| owners.contains(n));
        for &n in &owners {
            if n == cx.me || (cx.alive)(n) {
                self.down_since.remove(&n);
            } else {
                self.down_since.entry(n).or_insert(now);
            }
        }
        if self
            .proposed_at
            .is_some_and(|at| now.saturating_duration_since(at) < PROPOSE_EVERY)
        {
            return;
        }
        let config = cx.config();
        let base_epoch = config.epoch;
        let mut change = None;
        for &n in &owners {
            let state = config.state(n);
            let down_long = self
                .down_since
                .get(&n)
                .is_some_and(|at| now.saturating_duration_since(*at) >= OUT_AFTER);
            let alive = n == cx.me || (cx.alive)(n);
            let next = match state {
                MemberState::Serving | MemberState::Syncing
                    if down_long && !last_serving_somewhere(cx, ring, n) =>
                {
                    config
                        .take_out(n, &owners, base_epoch + 1)
                        .ok()
                        .map(|_| MemberState::Out)
                }
                MemberState::Out if alive => Some(MemberState::Syncing),
                MemberState::Syncing if self.synced.get(&n) == Some(&base_epoch) => {
                    Some(MemberState::Serving)
                }
                _ => None,
            };
            if let Some(state) = next {
                change = Some(SchemaChange::ChainMember {
                    base_epoch,
                    node: n,
                    state,
                });
                break;
            }
        }
        if let Some(c) = change {
            self.proposed_at = Some(now);
            fx.push(ChainEffect::Propose(c));
        }
    }
}

/// Whether `n` is the only serving member of some CRAQ chain: taking it
/// out would leave that chain's keys with no member holding them (a
/// rejoining member pulls from a serving one), so it stays in, and those
/// keys wait for it.
fn last_serving_somewhere(
    cx: &ChainCtx<'_>,
    ring: &crate::agreed_ring::AgreedRing,
    n: NodeId,
) -> bool {
    let config = cx.config();
    let replications: Vec<Replication> = cx
        .schema
        .keyspaces
        .values()
        .filter(|k| k.config.strategy == ReplicationStrategy::Craq)
        .map(|k| k.config.replication())
        .collect();
    ring.members.values().flat_map(|m| &m.tokens).any(|&token| {
        replications.iter().any(|r| {
            let sets = (cx.replicas)(token, r);
            sets.iter().any(|set| {
                set.contains(&n)
                    && !set
                        .iter()
                        .any(|&m| m != n && config.state(m) == MemberState::Serving)
            })
        })
    })
}

/// Removes and returns the entries at the front of `map` (numbered in the
/// order their deadlines fall) whose deadline `due` says has passed.
fn take_due<V>(map: &mut BTreeMap<u64, V>, due: impl Fn(&V) -> bool) -> Vec<V> {
    let mut out = Vec::new();
    while let Some(entry) = map.first_entry() {
        if !due(entry.get()) {
            break;
        }
        out.push(entry.remove());
    }
    out
}

/// The client's answer for a committed chain write.
fn client_reply(reply: ChainReply) -> ClientResponse {
    match reply {
        ChainReply::Done => ClientResponse::Written {
            ts: Timestamp::ZERO,
        },
        ChainReply::Swapped(s) => ClientResponse::Swapped(s),
        ChainReply::Counter(n) => ClientResponse::Counter(n),
    }
}

/// The version a record is stored as: the record's bytes stamped `ts`.
pub(crate) fn stored_version(ts: Timestamp, bytes: Vec<u8>) -> Versioned {
    Versioned {
        ts,
        value: Some(bytes.into()),
        expires: None,
    }
}
