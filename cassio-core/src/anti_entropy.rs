//! Anti-entropy: replicas compare their hash trees and exchange only the
//! items that differ, so data converges without reads.
//!
//! One exchange compares one keyspace between this node (the initiator) and
//! one peer over the token ranges both replicate:
//!
//! 1. `Tree`: the initiator sends its 256 branch hashes over the segments
//!    both replicate wholly; the peer answers `Equal`, or the segment
//!    hashes of the branches that differ.
//! 2. For each run of differing segments (and each segment the two share
//!    only in part), the initiator pages through key digests: it asks the
//!    peer for its digests (`Keys`) while scanning its own, compares them,
//!    and pushes the items it holds newer while pulling the ones the peer
//!    holds newer (`Push` / `PushReply`). Last-write-wins makes both
//!    directions commutative and idempotent.
//!
//! A round runs one exchange per (keyspace, peer) pair, at most
//! [`RepairConfig::max_exchanges`] at a time, every
//! [`RepairConfig::interval`] with jitter, at once when a peer comes back
//! up, and at once after this node restarts. The round's start time, once
//! every pair (down peers included) has been synced, is this node's repair
//! watermark: gossiped, and the minimum over all members bounds which
//! tombstones any store may purge.

use crate::budget::ByteBudget;
use crate::effects::{BgWaiter, Effects};
use crate::output::NodeEvent;
use crate::placement::Placement;
use crate::storage_key::{split_storage_key_token, token_range_bounds};
use crate::storage_ops::StorageOp;
use crate::store::KeyDigest;
use crate::time::Instant;
use crate::topology::Replication;
use crate::tree::{segment_last, segment_of, segment_start, SegmentTree, BRANCH_WIDTH, SEGMENTS};
use crate::types::{Key, NodeId, Token, Versioned};
use crate::wire::PeerMsg;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::time::Duration;

/// The low bits of a sync message's `xid` number the exchange's requests,
/// so a late or duplicated reply to an earlier request is told apart.
const STEP_MASK: u64 = 0xFFFF;

/// A request not answered within this is sent again (the responder's
/// answers are idempotent).
const RESEND_AFTER: Duration = Duration::from_secs(1);

/// Attempts at one (keyspace, peer) pair within a round before the round
/// counts it failed.
const PAIR_ATTEMPTS: u8 = 4;

/// The most digest entries or items one sync message carries.
pub const MAX_SYNC_ENTRIES: usize = 4096;

/// How anti-entropy runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairConfig {
    /// Time between rounds (a random ±10% is added). 10 minutes by default.
    pub interval: Duration,
    /// Exchanges running at once. 2 by default.
    pub max_exchanges: usize,
    /// Bytes per second that anti-entropy pushes and hint delivery may send
    /// together. 16 MiB/s by default; 0 is unlimited.
    pub bytes_per_sec: u64,
    /// Digest entries per page of an exchange (at most [`MAX_SYNC_ENTRIES`]).
    pub page_entries: usize,
    /// An exchange that makes no progress for this long fails (10 s by
    /// default); the pair is tried again, up to 4 times within the round.
    pub exchange_timeout: Duration,
    /// How often each keyspace's tree is rebuilt from a scan (against bit
    /// rot and drift). 24 hours by default.
    pub rebuild_every: Duration,
    /// Keys per second a rebuild scan may read. 1,000,000 by default.
    pub rebuild_keys_per_sec: u64,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            interval: Duration::from_secs(600),
            max_exchanges: 2,
            bytes_per_sec: 16 * 1024 * 1024,
            page_entries: MAX_SYNC_ENTRIES,
            exchange_timeout: Duration::from_secs(10),
            rebuild_every: Duration::from_secs(24 * 3600),
            rebuild_keys_per_sec: 1_000_000,
        }
    }
}

/// Anti-entropy messages between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMsg {
    /// Initiator → peer: my branch hashes of `keyspace`.
    Tree {
        /// The exchange.
        xid: u64,
        /// The keyspace compared.
        keyspace: String,
        /// 256 branch hashes over the segments both replicate wholly.
        branches: Vec<u128>,
    },
    /// Peer → initiator: how its tree compares.
    TreeReply {
        /// The exchange.
        xid: u64,
        /// Equal, the differing branches' segments, or not ready.
        reply: TreeReply,
    },
    /// Initiator → peer: your digests of the keys in `[start, end)`.
    Keys {
        /// The exchange.
        xid: u64,
        /// The keyspace.
        keyspace: String,
        /// First storage key (inclusive unless `after`).
        start: Key,
        /// Whether `start` itself is excluded.
        after: bool,
        /// End storage key (exclusive).
        end: Key,
        /// At most this many stored entries are scanned.
        limit: u32,
        /// Only entries in these tree segments are wanted (empty: all).
        segments: Vec<u16>,
    },
    /// Peer → initiator: its digests of the wanted segments, in key order.
    KeysReply {
        /// The exchange.
        xid: u64,
        /// The entries.
        entries: Vec<KeyDigest>,
        /// The last key scanned when the scan stopped at its limit before
        /// the range's end (`None`: the whole range was scanned).
        scanned_to: Option<Key>,
    },
    /// Initiator → peer: apply these items, then send me yours of `pull`.
    Push {
        /// The exchange.
        xid: u64,
        /// Items the initiator holds newer.
        items: Vec<(Key, Versioned)>,
        /// Keys the peer holds newer.
        pull: Vec<Key>,
    },
    /// Peer → initiator: the pulled items.
    PushReply {
        /// The exchange.
        xid: u64,
        /// The items.
        items: Vec<(Key, Versioned)>,
    },
    /// Peer → initiator: the exchange failed on the peer's side.
    Failed {
        /// The exchange.
        xid: u64,
    },
}

/// The peer's answer to a tree comparison.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeReply {
    /// Every branch matches.
    Equal,
    /// The peer's segment hashes of every branch that differs.
    Segments(Vec<(u16, u128)>),
    /// The peer's tree is being rebuilt, or it does not know the keyspace.
    NotReady,
}

/// Anti-entropy figures for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairStatus {
    /// Rounds in which every reachable pair synced.
    pub rounds_completed: u64,
    /// Operator rounds over one keyspace or peer that completed.
    pub scoped_rounds_completed: u64,
    /// Wall micros at which the last round in which every pair (down peers
    /// included) synced began: this node's repair watermark; 0 for none.
    pub repaired_through: u64,
    /// The schema version settled on every member when the round behind
    /// `repaired_through` began (see [`AntiEntropy::set_settled_schema`]):
    /// each replica under that version's replication factors was synced.
    pub repaired_schema: u64,
    /// Wall micros at which the last round that synced every live pair began.
    pub last_round_started: u64,
    /// Wall micros at which the last round that synced every live pair ended.
    pub last_round_completed: u64,
    /// Exchanges completed / failed.
    pub exchanges_completed: u64,
    /// Exchanges that failed (peer down, timeout, storage error).
    pub exchanges_failed: u64,
    /// Segments found to differ.
    pub segments_repaired: u64,
    /// Key digests compared.
    pub keys_compared: u64,
    /// Items pushed to peers.
    pub items_pushed: u64,
    /// Items pulled from peers.
    pub items_pulled: u64,
    /// Item bytes sent and received by exchanges.
    pub bytes_sent: u64,
    /// Items in this node's trees.
    pub tree_items: u64,
    /// Bytes of memory the trees hold.
    pub tree_memory_bytes: u64,
    /// Whether every keyspace's tree is built.
    pub trees_ready: bool,
    /// The round in progress: (pairs done, pairs in the round).
    pub round_progress: Option<(u64, u64)>,
}

/// What an operator's repair covers: all keyspaces and peers by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairScope {
    /// Only this keyspace.
    pub keyspace: Option<String>,
    /// Only exchanges with this peer.
    pub peer: Option<NodeId>,
}

impl RepairScope {
    fn is_full(&self) -> bool {
        self.keyspace.is_none() && self.peer.is_none()
    }
}

/// The token ranges two nodes both replicate in one keyspace, classified by
/// tree segment.
#[derive(Clone, Debug)]
struct Shared {
    /// Sorted, disjoint inclusive token ranges; `None` when placement is
    /// per key (rendezvous), where every key is checked one by one.
    ranges: Option<Vec<(Token, Token)>>,
    /// Segments wholly inside the ranges (bitset).
    full: Vec<u64>,
    /// Segments partly inside.
    partial: Vec<u16>,
}

impl Shared {
    fn compute(placement: &dyn Placement, rf: &Replication, a: NodeId, b: NodeId) -> Shared {
        let mut full = vec![0u64; SEGMENTS / 64];
        let Some(all) = placement.ranges_for(rf) else {
            return Shared {
                ranges: None,
                full,
                partial: (0..=u16::MAX).collect(),
            };
        };
        let mut ranges: Vec<(Token, Token)> = all
            .into_iter()
            .filter(|(_, _, r)| r.contains(&a) && r.contains(&b))
            .map(|(f, l, _)| (f, l))
            .collect();
        ranges.sort();
        let mut cover: BTreeMap<u16, u64> = BTreeMap::new();
        for &(f, l) in &ranges {
            let (sf, sl) = (segment_of(f), segment_of(l));
            if sf == sl {
                *cover.entry(sf).or_default() += l.0 - f.0 + 1;
                continue;
            }
            *cover.entry(sf).or_default() += segment_last(sf).0 - f.0 + 1;
            *cover.entry(sl).or_default() += l.0 - segment_start(sl).0 + 1;
            for s in sf + 1..sl {
                full[usize::from(s) / 64] |= 1 << (s % 64);
            }
        }
        let mut partial = Vec::new();
        for (s, c) in cover {
            if c >= 1 << 48 {
                full[usize::from(s) / 64] |= 1 << (s % 64);
            } else {
                partial.push(s);
            }
        }
        Shared {
            ranges: Some(ranges),
            full,
            partial,
        }
    }

    fn is_full(&self, s: u16) -> bool {
        self.full[usize::from(s) / 64] & (1 << (s % 64)) != 0
    }

    fn is_empty(&self) -> bool {
        self.partial.is_empty() && self.full.iter().all(|w| *w == 0)
    }

    fn contains(
        &self,
        t: Token,
        placement: &dyn Placement,
        rf: &Replication,
        a: NodeId,
        b: NodeId,
    ) -> bool {
        match &self.ranges {
            Some(r) => {
                let i = r.partition_point(|&(f, _)| f <= t);
                i > 0 && r[i - 1].1 >= t
            }
            None => {
                let reps = placement.replicas_for(t, rf);
                reps.contains(&a) && reps.contains(&b)
            }
        }
    }
}

#[derive(Debug)]
struct Rebuild {
    run: u64,
    shadow: SegmentTree,
    /// The last key scanned so far (None: nothing yet).
    cursor: Option<Key>,
    next_page_at: Instant,
    in_flight: bool,
}

#[derive(Debug)]
struct KsTree {
    rf: Replication,
    live: SegmentTree,
    ready: bool,
    rebuild: Option<Rebuild>,
    rebuilt_at: Instant,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Tree,
    Keys,
    Push,
}

#[derive(Debug)]
struct Exchange {
    peer: NodeId,
    /// The number of this exchange's latest request (in its `xid`).
    step: u16,
    /// That request, until it is answered, and when to send it again.
    unanswered: Option<(PeerMsg, Instant)>,
    /// Earlier failed attempts at this pair in this round.
    attempts: u8,
    keyspace: String,
    rf: Replication,
    shared: Shared,
    phase: Phase,
    deadline: Instant,
    /// Token intervals still to compare key by key, each with the tree
    /// segments wanted in it (empty: every key).
    work: VecDeque<(Token, Token, Vec<u16>)>,
    /// The segments wanted in the current window.
    wanted: Vec<u16>,
    /// The interval being compared, as storage-key bounds, and the cursor.
    window: Option<(Key, bool, Key)>,
    theirs: Option<(Vec<KeyDigest>, Option<Key>)>,
    ours: Option<Vec<KeyDigest>>,
    /// A push waiting for the byte budget.
    deferred: Option<PeerMsg>,
}

#[derive(Debug)]
struct Round {
    /// False for an operator's round over one keyspace or peer.
    full: bool,
    started_wall: u64,
    /// The settled schema version when it began.
    settled_schema: u64,
    /// Pairs still to sync: keyspace, peer, attempts so far, not before.
    queue: VecDeque<(String, NodeId, u8, Instant)>,
    total: u64,
    done: u64,
    failed: u64,
    skipped_down: u64,
    /// Peers left out because they were down when the round began.
    skipped: BTreeSet<NodeId>,
}

/// What an exchange's end means for its round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Synced,
    Failed,
}

/// The anti-entropy machine of one node.
#[derive(Debug)]
pub(crate) struct AntiEntropy {
    cfg: RepairConfig,
    me: NodeId,
    trees: BTreeMap<String, KsTree>,
    round: Option<Round>,
    next_round_at: Instant,
    /// Run another round as soon as the current one ends.
    again: bool,
    exchanges: BTreeMap<u64, Exchange>,
    next_xid: u64,
    next_run: u64,
    status: RepairStatus,
    /// Rounds that synced every live pair since this node started.
    live_rounds_since_start: u64,
    /// Peers the last full round that completed left out as down.
    last_round_skipped: BTreeSet<NodeId>,
    /// The scope of the next round, when an operator narrowed it.
    scope: Option<RepairScope>,
    /// The newest schema version every member adopted long enough ago that
    /// no write under an older one is still in flight.
    settled_schema: u64,
}

impl AntiEntropy {
    /// A machine for `keyspaces` (name, replication factor); trees are
    /// built by a scan before the first exchange.
    pub fn new(
        me: NodeId,
        cfg: RepairConfig,
        keyspaces: impl IntoIterator<Item = (String, impl Into<Replication>)>,
        now: Instant,
        xid_base: u64,
    ) -> Self {
        let mut ae = AntiEntropy {
            cfg,
            me,
            trees: BTreeMap::new(),
            round: None,
            next_round_at: now,
            again: false,
            exchanges: BTreeMap::new(),
            // Exchange ids leave their low bits to the request numbers.
            next_xid: (xid_base & !STEP_MASK).wrapping_add(STEP_MASK + 1),
            next_run: 1,
            status: RepairStatus::default(),
            live_rounds_since_start: 0,
            last_round_skipped: BTreeSet::new(),
            scope: None,
            settled_schema: 0,
        };
        ae.set_keyspaces(keyspaces, now);
        ae
    }

    /// Figures for status and metrics.
    pub fn status(&self) -> RepairStatus {
        let mut s = self.status.clone();
        s.tree_items = self.trees.values().map(|t| t.live.items()).sum();
        s.tree_memory_bytes = self
            .trees
            .values()
            .map(|t| t.live.memory_bytes() as u64)
            .sum();
        s.trees_ready = self.trees_ready();
        s.round_progress = self.round.as_ref().map(|r| (r.done, r.total));
        s
    }

    /// Whether a push waits for the byte budget.
    pub fn has_deferred(&self) -> bool {
        self.exchanges.values().any(|x| x.deferred.is_some())
    }

    /// Whether a full round completed since this node started and synced
    /// with every peer alive now. A peer seen up only after that round
    /// began (the common case right after a restart, when peers are heard
    /// from one by one) may hold writes the others lack: until a round
    /// syncs with it too, this node is not caught up.
    pub fn synced_with_every_live_peer(&self, alive: &dyn Fn(NodeId) -> bool) -> bool {
        self.live_rounds_since_start > 0 && !self.last_round_skipped.iter().any(|&p| alive(p))
    }

    /// Whether a full round that started at or after wall time `wall`
    /// completed and synced with every peer alive now.
    pub fn synced_since(&self, wall: u64, alive: &dyn Fn(NodeId) -> bool) -> bool {
        self.synced_with_every_live_peer(alive) && self.status.last_round_started >= wall
    }

    /// The storage names of the keyspaces it keeps trees for.
    pub fn keyspace_names(&self) -> impl Iterator<Item = &str> {
        self.trees.keys().map(String::as_str)
    }

    /// Follows a schema change: a tree for each new keyspace (built by a
    /// scan before the next round), none for a dropped one, and each
    /// keyspace's replication factor as the schema now has it. Answers
    /// whether a kept keyspace's factor changed.
    pub fn set_keyspaces(
        &mut self,
        keyspaces: impl IntoIterator<Item = (String, impl Into<Replication>)>,
        now: Instant,
    ) -> bool {
        let wanted: BTreeMap<String, Replication> = keyspaces
            .into_iter()
            .map(|(name, r)| (name, r.into()))
            .collect();
        self.trees.retain(|name, _| wanted.contains_key(name));
        let mut rf_changed = false;
        for (name, rf) in wanted {
            match self.trees.get_mut(&name) {
                Some(t) => {
                    rf_changed |= t.rf != rf;
                    t.rf = rf;
                }
                None => {
                    self.trees.insert(
                        name,
                        KsTree {
                            rf,
                            live: SegmentTree::default(),
                            ready: false,
                            rebuild: None,
                            rebuilt_at: now,
                        },
                    );
                }
            }
        }
        rf_changed
    }

    fn trees_ready(&self) -> bool {
        self.trees.values().all(|t| t.ready)
    }

    /// The root hash of `keyspace`'s tree, once built.
    pub fn root(&self, keyspace: &str) -> Option<u128> {
        self.trees
            .get(keyspace)
            .filter(|t| t.ready)
            .map(|t| t.live.root())
    }

    /// Sets the newest schema version that every member adopted at least a
    /// request's lifetime ago. A full round that begins now and syncs every
    /// pair repairs every write acknowledged under that version's (or an
    /// older) replica sets, so its end reports that version
    /// ([`RepairStatus::repaired_schema`]).
    pub fn set_settled_schema(&mut self, version: u64) {
        self.settled_schema = self.settled_schema.max(version);
    }

    /// Asks for a round as soon as possible (a peer came back, an operator
    /// asked, this node restarted).
    pub fn request_round(&mut self, now: Instant) {
        if self.round.is_some() {
            self.again = true;
        } else {
            self.next_round_at = self.next_round_at.min(now);
        }
    }

    /// Asks for a round over part of the data (one keyspace, one peer) as
    /// soon as possible. A partial round does not move the watermark.
    pub fn request_scoped_round(&mut self, now: Instant, scope: RepairScope) {
        self.scope = Some(scope);
        self.request_round(now);
    }

    /// Records that the item under `key` changed from `old` to `new` in the
    /// local store.
    pub fn applied(&mut self, key: &[u8], old: Option<&Versioned>, new: &Versioned) {
        let Some((ks, token, _)) = split_storage_key_token(key) else {
            return;
        };
        let Some(t) = self.trees.get_mut(ks) else {
            return;
        };
        t.live.update(token, key, old, Some(new));
        if let Some(r) = &mut t.rebuild {
            // Keys the scan already passed are not scanned again: keep the
            // shadow tree current for them too.
            if r.cursor.as_deref().is_some_and(|c| key <= c) {
                r.shadow.update(token, key, old, Some(new));
            }
        }
    }

    /// When [`AntiEntropy::tick`] wants to run next.
    pub fn poll_timeout(&self) -> Instant {
        // While a round runs, the next one is not due; its exchanges are.
        let mut t = Instant::from_micros(u64::MAX);
        match &self.round {
            None => t = self.next_round_at,
            Some(r) => {
                // A round waits while a tree is being built (a keyspace
                // created mid-round): its queued exchanges are not due
                // before the build's pages come back.
                if self.exchanges.len() < self.cfg.max_exchanges.max(1) && self.trees_ready() {
                    if let Some(first) = r.queue.iter().map(|e| e.3).min() {
                        t = first;
                    }
                }
            }
        }
        for tree in self.trees.values() {
            match &tree.rebuild {
                Some(r) if !r.in_flight => t = t.min(r.next_page_at),
                Some(_) => {}
                None => t = t.min(tree.rebuilt_at + self.cfg.rebuild_every),
            }
        }
        for x in self.exchanges.values() {
            t = t.min(x.deadline);
            if let Some((_, at)) = &x.unanswered {
                t = t.min(*at);
            }
        }
        t
    }

    /// Starts rebuilds, rounds and exchanges that are due; fails exchanges
    /// that timed out; sends pushes the budget now allows.
    #[allow(clippy::too_many_arguments)]
    pub fn tick(
        &mut self,
        now: Instant,
        wall: u64,
        ready: bool,
        placement: &dyn Placement,
        alive: &dyn Fn(NodeId) -> bool,
        budget: &mut ByteBudget,
        fx: &mut Effects,
    ) {
        self.tick_rebuilds(now, fx);
        let timed_out: Vec<u64> = self
            .exchanges
            .iter()
            .filter(|(_, x)| x.deadline <= now)
            .map(|(&k, _)| k)
            .collect();
        for xid in timed_out {
            self.end_exchange(xid, Ending::Failed, now, wall, fx);
        }
        let deferred: Vec<u64> = self
            .exchanges
            .iter()
            .filter(|(_, x)| x.deferred.is_some())
            .map(|(&k, _)| k)
            .collect();
        for xid in deferred {
            if !budget.ready(now) {
                break;
            }
            if let Some(x) = self.exchanges.get_mut(&xid) {
                if let Some(msg) = x.deferred.take() {
                    budget.charge(now, sync_bytes(&msg));
                    self.status.bytes_sent += sync_bytes(&msg);
                    x.unanswered = Some((msg.clone(), now + RESEND_AFTER));
                    fx.send(x.peer, msg);
                }
            }
        }
        // Requests whose answer did not come (a lost frame): again.
        for x in self.exchanges.values_mut() {
            if let Some((msg, at)) = &mut x.unanswered {
                if *at <= now {
                    *at = now + RESEND_AFTER;
                    fx.send(x.peer, msg.clone());
                }
            }
        }
        if !ready || !self.trees_ready() {
            // Nothing to start yet; look again in a while, not in a loop.
            if self.next_round_at <= now {
                self.next_round_at = now + Duration::from_millis(200);
            }
            return;
        }
        if self.round.is_none() && now >= self.next_round_at {
            self.start_round(wall, placement, alive);
        }
        self.start_exchanges(now, wall, placement, alive, fx);
    }

    fn tick_rebuilds(&mut self, now: Instant, fx: &mut Effects) {
        let page = self.cfg.page_entries.clamp(1, MAX_SYNC_ENTRIES);
        for (name, t) in &mut self.trees {
            if t.rebuild.is_none() && (!t.ready || now >= t.rebuilt_at + self.cfg.rebuild_every) {
                t.rebuild = Some(Rebuild {
                    run: self.next_run,
                    shadow: SegmentTree::default(),
                    cursor: None,
                    next_page_at: now,
                    in_flight: false,
                });
                self.next_run += 1;
            }
            let Some(r) = &mut t.rebuild else {
                continue;
            };
            if r.in_flight || now < r.next_page_at {
                continue;
            }
            let (first, end) = token_range_bounds(name, Token(0), Token(u64::MAX));
            let start = match &r.cursor {
                Some(c) => Bound::Excluded(c.clone()),
                None => first,
            };
            r.in_flight = true;
            fx.storage(
                StorageOp::Digests {
                    start,
                    end,
                    limit: page,
                },
                BgWaiter::RebuildPage {
                    keyspace: name.clone(),
                    run: r.run,
                },
            );
        }
    }

    /// A page of a rebuild scan came back.
    pub fn on_rebuild_page(
        &mut self,
        keyspace: &str,
        run: u64,
        result: Result<Vec<KeyDigest>, String>,
        now: Instant,
    ) {
        let page = self.cfg.page_entries.clamp(1, MAX_SYNC_ENTRIES);
        let rate = self.cfg.rebuild_keys_per_sec.max(1);
        let Some(t) = self.trees.get_mut(keyspace) else {
            return;
        };
        let Some(r) = t.rebuild.as_mut().filter(|r| r.run == run) else {
            return;
        };
        r.in_flight = false;
        let entries = match result {
            Ok(e) => e,
            Err(_) => {
                // Try again later; the old tree (if any) stays in use.
                r.next_page_at = now + Duration::from_secs(10);
                return;
            }
        };
        for e in &entries {
            if let Some((_, token, _)) = split_storage_key_token(&e.key) {
                r.shadow.add_digest(token, e.digest);
            }
        }
        r.next_page_at = now + Duration::from_secs_f64(entries.len() as f64 / rate as f64);
        if entries.len() < page {
            if let Some(done) = t.rebuild.take() {
                t.live = done.shadow;
                t.ready = true;
                t.rebuilt_at = now;
            }
        } else if let Some(last) = entries.last() {
            r.cursor = Some(last.key.clone());
        }
    }

    fn start_round(
        &mut self,
        wall: u64,
        placement: &dyn Placement,
        alive: &dyn Fn(NodeId) -> bool,
    ) {
        let mut queue = VecDeque::new();
        let mut skipped_down = 0;
        let mut skipped = BTreeSet::new();
        let nodes = placement.nodes();
        let scope = self.scope.take().unwrap_or_default();
        for (name, t) in &self.trees {
            if scope.keyspace.as_ref().is_some_and(|k| k != name) {
                continue;
            }
            for &peer in &nodes {
                if peer == self.me || scope.peer.is_some_and(|p| p != peer) {
                    continue;
                }
                let shared = Shared::compute(placement, &t.rf, self.me, peer);
                if shared.is_empty() {
                    continue;
                }
                if alive(peer) {
                    queue.push_back((name.clone(), peer, 0, Instant::ZERO));
                } else {
                    skipped_down += 1;
                    skipped.insert(peer);
                }
            }
        }
        self.again = false;
        self.round = Some(Round {
            full: scope.is_full(),
            started_wall: wall,
            settled_schema: self.settled_schema,
            total: queue.len() as u64,
            queue,
            done: 0,
            failed: 0,
            skipped_down,
            skipped,
        });
    }

    fn start_exchanges(
        &mut self,
        now: Instant,
        wall: u64,
        placement: &dyn Placement,
        alive: &dyn Fn(NodeId) -> bool,
        fx: &mut Effects,
    ) {
        loop {
            let Some(round) = &mut self.round else {
                return;
            };
            if round.queue.is_empty() && self.exchanges.is_empty() {
                self.finish_round(now, wall, fx);
                return;
            }
            if self.exchanges.len() >= self.cfg.max_exchanges.max(1) {
                return;
            }
            let Some(pos) = round.queue.iter().position(|e| e.3 <= now) else {
                return;
            };
            let Some((ks, peer, attempts, _)) = round.queue.remove(pos) else {
                return;
            };
            if !alive(peer) {
                round.failed += 1;
                round.done += 1;
                continue;
            }
            self.start_exchange(now, &ks, peer, attempts, placement, fx);
        }
    }

    fn start_exchange(
        &mut self,
        now: Instant,
        keyspace: &str,
        peer: NodeId,
        attempts: u8,
        placement: &dyn Placement,
        fx: &mut Effects,
    ) {
        let Some(t) = self.trees.get(keyspace) else {
            return;
        };
        let shared = Shared::compute(placement, &t.rf, self.me, peer);
        let branches = t.live.branches(|s| shared.is_full(s));
        let xid = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(STEP_MASK + 1);
        self.exchanges.insert(
            xid,
            Exchange {
                peer,
                step: 0,
                unanswered: None,
                attempts,
                keyspace: keyspace.to_string(),
                rf: t.rf.clone(),
                shared,
                phase: Phase::Tree,
                deadline: now + self.cfg.exchange_timeout,
                work: VecDeque::new(),
                wanted: Vec::new(),
                window: None,
                theirs: None,
                ours: None,
                deferred: None,
            },
        );
        let keyspace = keyspace.to_string();
        if let Some(x) = self.exchanges.get_mut(&xid) {
            request(x, xid, now, fx, |xid| SyncMsg::Tree {
                xid,
                keyspace,
                branches,
            });
        }
    }

    fn finish_round(&mut self, now: Instant, wall: u64, fx: &mut Effects) {
        let Some(r) = self.round.take() else {
            return;
        };
        let ok = r.failed == 0;
        if ok && !r.full {
            self.status.scoped_rounds_completed += 1;
        } else if ok {
            self.status.rounds_completed += 1;
            self.live_rounds_since_start += 1;
            self.last_round_skipped = r.skipped;
            self.status.last_round_started = r.started_wall;
            self.status.last_round_completed = wall;
            if r.skipped_down == 0 {
                self.status.repaired_through = r.started_wall;
                self.status.repaired_schema = r.settled_schema;
            }
        }
        fx.event(NodeEvent::RepairRound {
            pairs: r.total,
            failed: r.failed,
            skipped_down: r.skipped_down,
        });
        let next = if !ok || self.again {
            // Retry soon, but not in a tight loop against a failing peer.
            self.cfg
                .interval
                .min(Duration::from_secs(if ok { 0 } else { 5 }))
        } else {
            self.cfg.interval
        };
        self.again = false;
        // ±10% jitter, derived from the round's start so it needs no rng.
        let jitter = next.as_micros() as u64 / 10;
        let j = if jitter > 0 {
            r.started_wall % (2 * jitter)
        } else {
            0
        };
        self.next_round_at =
            now + (next + Duration::from_micros(j)).saturating_sub(Duration::from_micros(jitter));
    }

    fn end_exchange(&mut self, xid: u64, how: Ending, now: Instant, wall: u64, fx: &mut Effects) {
        let Some(x) = self.exchanges.remove(&xid) else {
            return;
        };
        match how {
            Ending::Synced => self.status.exchanges_completed += 1,
            Ending::Failed => self.status.exchanges_failed += 1,
        }
        if let Some(r) = &mut self.round {
            if how == Ending::Failed && x.attempts + 1 < PAIR_ATTEMPTS {
                // A lost message or a peer still building its tree: try
                // the pair again shortly, within this round.
                r.queue.push_back((
                    x.keyspace,
                    x.peer,
                    x.attempts + 1,
                    now + Duration::from_secs(1 << x.attempts),
                ));
                return;
            }
            r.done += 1;
            if how == Ending::Failed {
                r.failed += 1;
            }
            if r.queue.is_empty() && self.exchanges.is_empty() {
                self.finish_round(now, wall, fx);
            }
        }
    }

    /// A sync message from `from`: as responder (Tree, Keys, Push) or as
    /// initiator (the replies).
    #[allow(clippy::too_many_arguments)]
    pub fn on_message(
        &mut self,
        from: NodeId,
        msg: SyncMsg,
        now: Instant,
        wall: u64,
        placement: &dyn Placement,
        budget: &mut ByteBudget,
        fx: &mut Effects,
    ) {
        match msg {
            SyncMsg::Tree {
                xid,
                keyspace,
                branches,
            } => {
                let reply = self.compare_tree(from, &keyspace, &branches, placement);
                fx.send(from, PeerMsg::Sync(SyncMsg::TreeReply { xid, reply }));
            }
            SyncMsg::Keys {
                xid,
                keyspace,
                start,
                after,
                end,
                limit,
                segments,
            } => {
                let limit = (limit as usize).clamp(1, MAX_SYNC_ENTRIES);
                if !self.trees.contains_key(&keyspace)
                    || !within_keyspace(&start, &keyspace)
                    || !within_keyspace_or_end(&end, &keyspace)
                {
                    fx.send(from, PeerMsg::Sync(SyncMsg::Failed { xid }));
                    return;
                }
                let start = if after {
                    Bound::Excluded(start)
                } else {
                    Bound::Included(start)
                };
                fx.storage(
                    StorageOp::Digests {
                        start,
                        end: Bound::Excluded(end),
                        limit,
                    },
                    BgWaiter::AnswerKeys {
                        to: from,
                        xid,
                        limit,
                        segments,
                    },
                );
            }
            SyncMsg::Push { xid, items, pull } => {
                let known = |k: &Key| {
                    split_storage_key_token(k).is_some_and(|(ks, _, _)| self.trees.contains_key(ks))
                };
                if items.len() > MAX_SYNC_ENTRIES
                    || pull.len() > MAX_SYNC_ENTRIES
                    || !items.iter().all(|(k, _)| known(k))
                    || !pull.iter().all(known)
                {
                    fx.send(from, PeerMsg::Sync(SyncMsg::Failed { xid }));
                    return;
                }
                budget.charge(now, items_bytes(&items));
                if items.is_empty() {
                    answer_pull(from, xid, pull, fx);
                } else {
                    fx.storage(
                        StorageOp::ApplyBatch {
                            items: items.clone(),
                        },
                        BgWaiter::ApplyItems {
                            items,
                            then: crate::effects::AfterApply::SyncPush {
                                to: from,
                                xid,
                                pull,
                            },
                        },
                    );
                }
            }
            SyncMsg::TreeReply { xid, reply } => {
                let Some(xid) = self.accept_reply(from, xid) else {
                    return;
                };
                self.on_tree_reply(from, xid, reply, now, wall, fx)
            }
            SyncMsg::KeysReply {
                xid,
                entries,
                scanned_to,
            } => {
                let Some(xid) = self.accept_reply(from, xid) else {
                    return;
                };
                let timeout = self.cfg.exchange_timeout;
                let Some(x) = self.exchange_of(from, xid, Phase::Keys) else {
                    return;
                };
                if entries.len() > MAX_SYNC_ENTRIES {
                    return self.end_exchange(xid, Ending::Failed, now, wall, fx);
                }
                x.theirs = Some((entries, scanned_to));
                x.deadline = now + timeout;
                self.compare_window(xid, now, wall, placement, budget, fx);
            }
            SyncMsg::PushReply { xid, items } => {
                let Some(xid) = self.accept_reply(from, xid) else {
                    return;
                };
                let timeout = self.cfg.exchange_timeout;
                let Some(x) = self.exchange_of(from, xid, Phase::Push) else {
                    return;
                };
                x.deadline = now + timeout;
                let ks = x.keyspace.clone();
                let ok = items.len() <= MAX_SYNC_ENTRIES
                    && items.iter().all(|(k, _)| {
                        split_storage_key_token(k).is_some_and(|(k2, _, _)| k2 == ks)
                    });
                if !ok {
                    return self.end_exchange(xid, Ending::Failed, now, wall, fx);
                }
                self.status.items_pulled += items.len() as u64;
                let bytes = items_bytes(&items);
                self.status.bytes_sent += bytes;
                budget.charge(now, bytes);
                if !items.is_empty() {
                    fx.storage(
                        StorageOp::ApplyBatch {
                            items: items.clone(),
                        },
                        BgWaiter::ApplyItems {
                            items,
                            then: crate::effects::AfterApply::Nothing,
                        },
                    );
                }
                self.next_window(xid, now, wall, fx);
            }
            SyncMsg::Failed { xid } => {
                if let Some(xid) = self.accept_reply(from, xid) {
                    self.end_exchange(xid, Ending::Failed, now, wall, fx);
                }
            }
        }
    }

    /// The exchange a reply from `from` answers, if it answers that
    /// exchange's latest request (a late or duplicated reply does not).
    fn accept_reply(&mut self, from: NodeId, xid: u64) -> Option<u64> {
        let base = xid & !STEP_MASK;
        let x = self.exchanges.get_mut(&base).filter(|x| x.peer == from)?;
        if xid & STEP_MASK != u64::from(x.step) || x.unanswered.is_none() {
            return None;
        }
        x.unanswered = None;
        Some(base)
    }

    fn exchange_of(&mut self, from: NodeId, xid: u64, phase: Phase) -> Option<&mut Exchange> {
        self.exchanges
            .get_mut(&xid)
            .filter(|x| x.peer == from && x.phase == phase)
    }

    fn compare_tree(
        &self,
        from: NodeId,
        keyspace: &str,
        theirs: &[u128],
        placement: &dyn Placement,
    ) -> TreeReply {
        let Some(t) = self.trees.get(keyspace).filter(|t| t.ready) else {
            return TreeReply::NotReady;
        };
        if theirs.len() != BRANCH_WIDTH {
            return TreeReply::NotReady;
        }
        let shared = Shared::compute(placement, &t.rf, self.me, from);
        let ours = t.live.branches(|s| shared.is_full(s));
        let mut segments = Vec::new();
        for b in 0..BRANCH_WIDTH {
            if ours[b] != theirs[b] {
                // `b` < 256.
                segments.extend(t.live.branch_segments(b as u8, |s| shared.is_full(s)));
            }
        }
        if segments.is_empty() {
            TreeReply::Equal
        } else {
            TreeReply::Segments(segments)
        }
    }

    fn on_tree_reply(
        &mut self,
        from: NodeId,
        xid: u64,
        reply: TreeReply,
        now: Instant,
        wall: u64,
        fx: &mut Effects,
    ) {
        let Some(x) = self
            .exchanges
            .get(&xid)
            .filter(|x| x.peer == from && x.phase == Phase::Tree)
        else {
            return;
        };
        let Some(t) = self.trees.get(&x.keyspace) else {
            return;
        };
        let mut differing: Vec<u16> = Vec::new();
        match reply {
            TreeReply::NotReady => return self.end_exchange(xid, Ending::Failed, now, wall, fx),
            TreeReply::Equal => {}
            TreeReply::Segments(segs) => {
                for (s, h) in segs {
                    if x.shared.is_full(s) && t.live.segment(s) != h {
                        differing.push(s);
                    }
                }
            }
        }
        self.status.segments_repaired += differing.len() as u64;
        // Each branch with differing segments becomes one interval from its
        // first to its last differing segment, in which the peer returns
        // only the differing segments' digests (one round trip per branch,
        // bytes in proportion to what differs); segments shared only in
        // part are compared whole, key by key.
        let mut by_branch: BTreeMap<u16, Vec<u16>> = BTreeMap::new();
        for s in differing {
            by_branch
                .entry(s / BRANCH_WIDTH as u16)
                .or_default()
                .push(s);
        }
        for &s in &x.shared.partial {
            by_branch
                .entry(s / BRANCH_WIDTH as u16)
                .or_default()
                .push(s);
        }
        let mut merged: VecDeque<(Token, Token, Vec<u16>)> = VecDeque::new();
        for mut segs in by_branch.into_values() {
            segs.sort_unstable();
            segs.dedup();
            if let (Some(&f), Some(&l)) = (segs.first(), segs.last()) {
                merged.push_back((segment_start(f), segment_last(l), segs));
            }
        }
        if let Some(x) = self.exchanges.get_mut(&xid) {
            x.work = merged;
            x.deadline = now + self.cfg.exchange_timeout;
        }
        self.next_window(xid, now, wall, fx);
    }

    /// Moves exchange `xid` to its next page of digests, or ends it.
    fn next_window(&mut self, xid: u64, now: Instant, wall: u64, fx: &mut Effects) {
        let page = self.cfg.page_entries.clamp(1, MAX_SYNC_ENTRIES);
        let Some(x) = self.exchanges.get_mut(&xid) else {
            return;
        };
        if x.window.is_none() {
            let Some((f, l, wanted)) = x.work.pop_front() else {
                return self.end_exchange(xid, Ending::Synced, now, wall, fx);
            };
            x.wanted = wanted;
            let (Bound::Included(start), Bound::Excluded(end)) =
                token_range_bounds(&x.keyspace, f, l)
            else {
                return self.end_exchange(xid, Ending::Failed, now, wall, fx);
            };
            x.window = Some((start, false, end));
        }
        let Some((start, after, end)) = x.window.clone() else {
            return;
        };
        x.phase = Phase::Keys;
        x.theirs = None;
        x.ours = None;
        let own_start = if after {
            Bound::Excluded(start.clone())
        } else {
            Bound::Included(start.clone())
        };
        let keyspace = x.keyspace.clone();
        let key_end = end.clone();
        let segments = x.wanted.clone();
        request(x, xid, now, fx, |xid| SyncMsg::Keys {
            xid,
            keyspace,
            start,
            after,
            end: key_end,
            limit: page as u32,
            segments,
        });
        fx.storage(
            StorageOp::Digests {
                start: own_start,
                end: Bound::Excluded(end),
                limit: page,
            },
            BgWaiter::OwnDigests { xid },
        );
    }

    /// Our own digests for exchange `xid`'s window came back.
    #[allow(clippy::too_many_arguments)]
    pub fn on_own_digests(
        &mut self,
        xid: u64,
        result: Result<Vec<KeyDigest>, String>,
        now: Instant,
        wall: u64,
        placement: &dyn Placement,
        budget: &mut ByteBudget,
        fx: &mut Effects,
    ) {
        let Some(x) = self
            .exchanges
            .get_mut(&xid)
            .filter(|x| x.phase == Phase::Keys)
        else {
            return;
        };
        match result {
            Ok(d) => x.ours = Some(d),
            Err(_) => return self.end_exchange(xid, Ending::Failed, now, wall, fx),
        }
        self.compare_window(xid, now, wall, placement, budget, fx);
    }

    /// Compares a window once both sides' digests are in: decides what to
    /// push and pull, and where the next window starts.
    fn compare_window(
        &mut self,
        xid: u64,
        now: Instant,
        wall: u64,
        placement: &dyn Placement,
        budget: &mut ByteBudget,
        fx: &mut Effects,
    ) {
        let page = self.cfg.page_entries.clamp(1, MAX_SYNC_ENTRIES);
        let me = self.me;
        let Some(x) = self.exchanges.get_mut(&xid) else {
            return;
        };
        let (Some((theirs, their_end)), Some(ours)) = (&x.theirs, &x.ours) else {
            return;
        };
        // The window both sides have fully scanned ends at the smaller of
        // the keys their scans stopped at, when either was cut short.
        let mut upto: Option<Key> = their_end.clone();
        if ours.len() >= page {
            if let Some(last) = ours.last() {
                upto = Some(match upto {
                    Some(u) if u < last.key => u,
                    _ => last.key.clone(),
                });
            }
        }
        let wanted = &x.wanted;
        let within = |k: &Key| {
            upto.as_ref().is_none_or(|u| k <= u)
                && (wanted.is_empty()
                    || split_storage_key_token(k)
                        .is_some_and(|(_, t, _)| wanted.binary_search(&segment_of(t)).is_ok()))
        };
        let shared = |k: &Key| {
            split_storage_key_token(k)
                .is_some_and(|(_, t, _)| x.shared.contains(t, placement, &x.rf, me, x.peer))
        };
        let theirs_map: BTreeMap<&Key, &KeyDigest> = theirs
            .iter()
            .filter(|e| within(&e.key) && shared(&e.key))
            .map(|e| (&e.key, e))
            .collect();
        let mut push = Vec::new();
        let mut pull = Vec::new();
        let mut compared = 0u64;
        let mut seen: BTreeSet<&Key> = BTreeSet::new();
        for o in ours.iter().filter(|e| within(&e.key) && shared(&e.key)) {
            compared += 1;
            seen.insert(&o.key);
            match theirs_map.get(&o.key) {
                None => push.push(o.key.clone()),
                Some(t) if t.digest == o.digest => {}
                Some(t) if t.ts > o.ts => pull.push(o.key.clone()),
                Some(t) if t.ts < o.ts => push.push(o.key.clone()),
                // Equal stamps, different items: both sides take the LWW
                // winner.
                Some(_) => {
                    push.push(o.key.clone());
                    pull.push(o.key.clone());
                }
            }
        }
        for (k, _) in theirs_map.iter().filter(|(k, _)| !seen.contains(*k)) {
            compared += 1;
            pull.push((*k).clone());
        }
        self.status.keys_compared += compared;
        // Advance the window.
        match upto {
            Some(u) => {
                if let Some(w) = &mut x.window {
                    w.0 = u;
                    w.1 = true;
                }
            }
            None => x.window = None,
        }
        x.theirs = None;
        x.ours = None;
        x.deadline = now + self.cfg.exchange_timeout;
        if push.is_empty() && pull.is_empty() {
            return self.next_window(xid, now, wall, fx);
        }
        x.phase = Phase::Push;
        if push.is_empty() {
            let items = Vec::new();
            send_or_defer(x, xid, items, pull, now, budget, &mut self.status, fx);
        } else {
            fx.storage(
                StorageOp::GetBatch { keys: push.clone() },
                BgWaiter::PushItems {
                    xid,
                    keys: push,
                    pull,
                },
            );
        }
    }

    /// Our items to push for exchange `xid` were read.
    #[allow(clippy::too_many_arguments)]
    pub fn on_push_items(
        &mut self,
        xid: u64,
        keys: Vec<Key>,
        pull: Vec<Key>,
        result: Result<Vec<Option<Versioned>>, String>,
        now: Instant,
        wall: u64,
        budget: &mut ByteBudget,
        fx: &mut Effects,
    ) {
        let Some(x) = self
            .exchanges
            .get_mut(&xid)
            .filter(|x| x.phase == Phase::Push)
        else {
            return;
        };
        let values = match result {
            Ok(v) => v,
            Err(_) => return self.end_exchange(xid, Ending::Failed, now, wall, fx),
        };
        let items: Vec<(Key, Versioned)> = keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        self.status.items_pushed += items.len() as u64;
        send_or_defer(x, xid, items, pull, now, budget, &mut self.status, fx);
    }
}

/// Sends exchange `base`'s next request (numbered in its `xid`) and keeps
/// it until answered, to send again if it is lost.
fn request(
    x: &mut Exchange,
    base: u64,
    now: Instant,
    fx: &mut Effects,
    make: impl FnOnce(u64) -> SyncMsg,
) {
    x.step = x.step.wrapping_add(1);
    let msg = PeerMsg::Sync(make(base | u64::from(x.step)));
    x.unanswered = Some((msg.clone(), now + RESEND_AFTER));
    fx.send(x.peer, msg);
}

/// Sends a push now if the byte budget allows, else keeps it for a tick.
#[allow(clippy::too_many_arguments)]
fn send_or_defer(
    x: &mut Exchange,
    base: u64,
    items: Vec<(Key, Versioned)>,
    pull: Vec<Key>,
    now: Instant,
    budget: &mut ByteBudget,
    status: &mut RepairStatus,
    fx: &mut Effects,
) {
    x.step = x.step.wrapping_add(1);
    let msg = PeerMsg::Sync(SyncMsg::Push {
        xid: base | u64::from(x.step),
        items,
        pull,
    });
    if budget.ready(now) {
        let bytes = sync_bytes(&msg);
        budget.charge(now, bytes);
        status.bytes_sent += bytes;
        x.unanswered = Some((msg.clone(), now + RESEND_AFTER));
        fx.send(x.peer, msg);
    } else {
        x.deferred = Some(msg);
    }
}

/// A responder's answer to `Keys`: the scanned entries of the wanted
/// segments, and where the scan stopped if it hit its limit.
pub(crate) fn keys_reply(
    xid: u64,
    scanned: Vec<KeyDigest>,
    limit: usize,
    segments: &[u16],
) -> SyncMsg {
    let scanned_to = if scanned.len() >= limit {
        scanned.last().map(|e| e.key.clone())
    } else {
        None
    };
    let entries = scanned
        .into_iter()
        .filter(|e| {
            segments.is_empty()
                || split_storage_key_token(&e.key)
                    .is_some_and(|(_, t, _)| segments.binary_search(&segment_of(t)).is_ok())
        })
        .collect();
    SyncMsg::KeysReply {
        xid,
        entries,
        scanned_to,
    }
}

/// A responder's reply to a pull: read the keys, then send them.
pub(crate) fn answer_pull(to: NodeId, xid: u64, pull: Vec<Key>, fx: &mut Effects) {
    if pull.is_empty() {
        fx.send(
            to,
            PeerMsg::Sync(SyncMsg::PushReply {
                xid,
                items: Vec::new(),
            }),
        );
    } else {
        fx.storage(
            StorageOp::GetBatch { keys: pull.clone() },
            BgWaiter::AnswerPull {
                to,
                xid,
                keys: pull,
            },
        );
    }
}

/// Bytes of items' keys and values.
pub(crate) fn items_bytes(items: &[(Key, Versioned)]) -> u64 {
    items
        .iter()
        .map(|(k, v)| (k.len() + v.value.as_ref().map_or(0, |b| b.len()) + 24) as u64)
        .sum()
}

fn sync_bytes(msg: &PeerMsg) -> u64 {
    match msg {
        PeerMsg::Sync(SyncMsg::Push { items, pull, .. }) => {
            items_bytes(items) + pull.iter().map(|k| k.len() as u64).sum::<u64>()
        }
        _ => 0,
    }
}

fn ks_prefix(keyspace: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + keyspace.len());
    p.push(u8::try_from(keyspace.len()).unwrap_or(u8::MAX));
    p.extend_from_slice(keyspace.as_bytes());
    p
}

fn within_keyspace(key: &[u8], keyspace: &str) -> bool {
    key.starts_with(&ks_prefix(keyspace))
}

/// A range end is inside the keyspace or its exclusive end.
fn within_keyspace_or_end(key: &[u8], keyspace: &str) -> bool {
    if within_keyspace(key, keyspace) {
        return true;
    }
    let (_, end) = token_range_bounds(keyspace, Token(0), Token(u64::MAX));
    matches!(end, Bound::Excluded(e) if e.as_ref() == key)
}
