//! The coordinator: the bookkeeping of the client requests this node
//! coordinates, from fan-out to the answer.
//!
//! A request is sent to the live replicas under a fresh tag, counted as
//! their answers come in, answered once enough replicas (the consistency
//! level) agree or too few can, and forgotten once every replica answered
//! or its deadline passed. Reads answer with the newest version (last write
//! wins) and repair the replicas that answered with an older one; writes
//! that a replica superseded are re-stamped above the newer version.
//!
//! The coordinator owns no clock, store or network: it asks for stamps
//! through a [`Stamper`], and everything it wants done comes out, in order,
//! as [`CoordEffect`]s that the node carries out.

use crate::client_api::{ClientError, ClientResponse, RequestId};
use crate::clock_guard::Stamper;
use crate::output::NodeEvent;
use crate::replica::superseded_outcome;
use crate::storage_ops::{StorageOp, StorageResult};
use crate::store::ApplyOutcome;
use crate::time::Instant;
use crate::types::{Key, NodeId, Timestamp, Value, Versioned};
use crate::wire::{PeerMsg, RequestTag, WriteOutcome};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// How many times a coordinator re-stamps a superseded write before it
/// gives up with [`ClientError::Contended`].
const MAX_STAMPS: u8 = 4;

/// What a client request asks the replicas for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Read the key.
    Read,
    /// Write this value (`None`: a tombstone).
    Write(Option<Value>),
    /// Write this value ending at this expiry.
    WriteExpiring(Value, crate::client_api::Expiry),
    /// Read the key and answer with its expiry ([`ClientResponse::Entry`]).
    ReadEntry,
    /// Read the items from the key up to `end` (excluded), at most `limit`
    /// per replica: a row's cells, merged cell by cell.
    ReadRange { end: Key, limit: usize },
}

/// Who waits for a storage operation the coordinator asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CoordWaiter {
    /// This node's own replica applying write `tag`.
    Write {
        tag: RequestTag,
        ts: Timestamp,
        key: Key,
    },
    /// The local store kept a newer version: read it to learn its stamp.
    Superseded { tag: RequestTag, ts: Timestamp },
    /// This node's own replica answering read `tag`.
    Read { tag: RequestTag },
    /// A read repair of this node's own replica (nothing to do after).
    Repair,
    /// This node's own replica answering range read `tag`.
    ReadRange { tag: RequestTag },
}

/// One thing the coordinator wants done; the node carries them out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CoordEffect {
    /// Answer client request `0`.
    Reply(RequestId, Result<ClientResponse, ClientError>),
    /// Send a message to a replica.
    Send(NodeId, PeerMsg),
    /// Run an operation on this node's store.
    Storage(StorageOp, CoordWaiter),
    /// Something worth logging.
    Event(NodeEvent),
    /// A finished write that some replicas did not apply (while at least
    /// one did): keep hints of `version` for `targets`.
    Hint {
        key: Key,
        version: Versioned,
        targets: Vec<NodeId>,
    },
}

/// The coordinator's requests, in the order it makes them.
#[derive(Debug, Default)]
pub(crate) struct CoordEffects(pub Vec<CoordEffect>);

impl CoordEffects {
    fn reply(&mut self, id: RequestId, result: Result<ClientResponse, ClientError>) {
        self.0.push(CoordEffect::Reply(id, result));
    }

    fn send(&mut self, to: NodeId, msg: PeerMsg) {
        self.0.push(CoordEffect::Send(to, msg));
    }

    fn storage(&mut self, op: StorageOp, waiter: CoordWaiter) {
        self.0.push(CoordEffect::Storage(op, waiter));
    }
}

/// One replica set a request must reach to its level: every replica of
/// the key on one ring, and those of them believed alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReplicaSet {
    /// Every replica (`rf` of them once the ring has that many nodes).
    pub all: Vec<NodeId>,
    /// Those believed alive (and, for reads, caught up): the ones asked.
    pub live: Vec<NodeId>,
    /// `(needed, wanted)` for this set when it differs from the request's
    /// level and replication factor: a datacenter's replicas counted for
    /// `LOCAL_QUORUM` or `EACH_QUORUM` (a quorum of its own factor), or
    /// the replicas a write reaches without waiting for them (`needed` 0).
    pub quorum: Option<(usize, usize)>,
}

#[derive(Debug)]
enum PendingKind {
    Write {
        ts: Timestamp,
        value: Option<Value>,
        stamps: u8,
        /// The absolute expiry, fixed at the first stamp (a re-stamp keeps it).
        expires: Option<u64>,
    },
    Read {
        responses: Vec<(NodeId, Option<Versioned>)>,
        repaired: Vec<(NodeId, Timestamp)>,
        /// Answer with [`ClientResponse::Entry`] rather than `Value`.
        entry: bool,
    },
    ReadRange {
        limit: usize,
        responses: Vec<(NodeId, Vec<(Key, Versioned)>)>,
        /// (replica, cell, stamp) repairs already sent.
        repaired: Vec<(NodeId, Key, Timestamp)>,
    },
}

#[derive(Debug)]
struct Pending {
    client: RequestId,
    key: Key,
    /// Every replica of every set (for writes: who gets a hint if it
    /// missed it).
    replicas: Vec<NodeId>,
    /// The live replicas of each set and how many of them must answer: a
    /// request succeeds once that many of each set applied the write (or
    /// answered the read). One set unless the ring is moving or the level
    /// counts per datacenter.
    sets: Vec<(Vec<NodeId>, usize)>,
    /// Replicas that applied the write (its latest stamp), or answered
    /// the read.
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

impl Pending {
    /// Whether `needed` replicas of every set applied the write.
    fn each_set_applied(&self) -> bool {
        sets_applied(&self.sets, &self.applied_by)
    }

    /// Whether every set can still reach `needed`: the replicas that
    /// applied plus those yet to answer.
    fn each_set_can_apply(&self) -> bool {
        sets_can_apply(&self.sets, &self.applied_by, &self.responded)
    }
}

/// Whether `needed` replicas of every set are among `applied`.
fn sets_applied(sets: &[(Vec<NodeId>, usize)], applied: &[NodeId]) -> bool {
    sets.iter()
        .all(|(set, needed)| set.iter().filter(|r| applied.contains(r)).count() >= *needed)
}

/// Whether every set can still reach its `needed`: the replicas that
/// applied plus those yet to answer.
fn sets_can_apply(sets: &[(Vec<NodeId>, usize)], applied: &[NodeId], responded: &[NodeId]) -> bool {
    sets.iter().all(|(set, needed)| {
        let possible = set
            .iter()
            .filter(|r| applied.contains(r) || !responded.contains(r))
            .count();
        possible >= *needed
    })
}

/// The requests this node coordinates.
#[derive(Debug)]
pub(crate) struct Coordinator {
    id: NodeId,
    request_timeout: Duration,
    next_tag: RequestTag,
    pending: HashMap<RequestTag, Pending>,
    deadlines: BTreeSet<(Instant, RequestTag)>,
    /// Mutation: count a superseded write as applied.
    #[cfg(feature = "mutations")]
    pub trust_local_clock: bool,
}

impl Coordinator {
    /// The coordinator of node `id`, whose first tag is `first_tag` (tags
    /// carry the generation, so a late reply to the previous run of this
    /// node can never match a request of this one).
    pub fn new(id: NodeId, first_tag: RequestTag, request_timeout: Duration) -> Self {
        Coordinator {
            id,
            request_timeout,
            next_tag: first_tag,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            #[cfg(feature = "mutations")]
            trust_local_clock: false,
        }
    }

    /// Requests in flight (answered or not) that still hold state.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The earliest deadline of a request in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(d, _)| d)
    }

    /// A fresh tag.
    pub fn new_tag(&mut self) -> RequestTag {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        tag
    }

    /// Starts client request `client`: `op` on storage key `key`, which
    /// must reach `needed` replicas of each of `sets` (each of `rf`
    /// wanted).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        now: Instant,
        client: RequestId,
        key: Key,
        op: Op,
        sets: Vec<ReplicaSet>,
        needed: usize,
        rf: usize,
        clock: &mut dyn Stamper,
        fx: &mut CoordEffects,
    ) {
        // Fewer nodes on the ring than the replication factor: a "quorum"
        // of the few would not intersect the quorum of the full set later.
        let need = |s: &ReplicaSet| s.quorum.map_or(needed, |q| q.0);
        let want = |s: &ReplicaSet| s.quorum.map_or(rf, |q| q.1);
        if sets.is_empty() {
            return fx.reply(client, Err(ClientError::Unavailable { needed, alive: 0 }));
        }
        if let Some(s) = sets
            .iter()
            .find(|s| s.live.len() < need(s) || s.all.len() < want(s))
        {
            let (needed, alive) = (need(s), s.live.len());
            return fx.reply(client, Err(ClientError::Unavailable { needed, alive }));
        }
        let needed = sets.iter().map(need).max().unwrap_or(needed);
        let mut replicas: Vec<NodeId> = Vec::new();
        let mut live: Vec<NodeId> = Vec::new();
        for s in &sets {
            for &r in &s.all {
                if !replicas.contains(&r) {
                    replicas.push(r);
                }
            }
            for &r in &s.live {
                if !live.contains(&r) {
                    live.push(r);
                }
            }
        }
        let sets: Vec<(Vec<NodeId>, usize)> = sets
            .into_iter()
            .map(|s| {
                let n = need(&s);
                (s.live, n)
            })
            .collect();
        let tag = self.new_tag();
        let entry = matches!(op, Op::ReadEntry);
        let kind = match op {
            Op::Read | Op::ReadEntry => {
                for &r in &live {
                    if r == self.id {
                        fx.storage(
                            StorageOp::Get { key: key.clone() },
                            CoordWaiter::Read { tag },
                        );
                    } else {
                        fx.send(
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
                    entry,
                }
            }
            Op::ReadRange { end, limit } => {
                for &r in &live {
                    if r == self.id {
                        fx.storage(
                            StorageOp::Range {
                                start: std::ops::Bound::Included(key.clone()),
                                end: std::ops::Bound::Excluded(end.clone()),
                                limit,
                            },
                            CoordWaiter::ReadRange { tag },
                        );
                    } else {
                        fx.send(
                            r,
                            PeerMsg::ReadRange {
                                tag,
                                start: key.clone(),
                                end: end.clone(),
                                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                            },
                        );
                    }
                }
                PendingKind::ReadRange {
                    limit,
                    responses: Vec::new(),
                    repaired: Vec::new(),
                }
            }
            Op::Write(value) => self.first_stamp(now, tag, &key, value, None, &live, clock, fx),
            Op::WriteExpiring(value, expiry) => {
                self.first_stamp(now, tag, &key, Some(value), Some(expiry), &live, clock, fx)
            }
        };
        let deadline = now + self.request_timeout;
        self.pending.insert(
            tag,
            Pending {
                client,
                key,
                replicas,
                sets,
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

    /// Stamps a new write, resolves its expiry against that stamp, and sends it.
    #[allow(clippy::too_many_arguments)]
    fn first_stamp(
        &mut self,
        now: Instant,
        tag: RequestTag,
        key: &Key,
        value: Option<Value>,
        expiry: Option<crate::client_api::Expiry>,
        live: &[NodeId],
        clock: &mut dyn Stamper,
        fx: &mut CoordEffects,
    ) -> PendingKind {
        let ts = clock.stamp(now);
        let expires = expiry.map(|e| e.resolve(ts.micros));
        let version = Versioned {
            ts,
            value: value.clone(),
            expires,
        };
        self.send_write(tag, key, version, live, fx);
        PendingKind::Write {
            ts,
            value,
            stamps: 1,
            expires,
        }
    }

    fn send_write(
        &self,
        tag: RequestTag,
        key: &Key,
        version: Versioned,
        live: &[NodeId],
        fx: &mut CoordEffects,
    ) {
        let ts = version.ts;
        for &r in live {
            if r == self.id {
                fx.storage(
                    StorageOp::Apply {
                        key: key.clone(),
                        version: version.clone(),
                    },
                    CoordWaiter::Write {
                        tag,
                        ts,
                        key: key.clone(),
                    },
                );
            } else {
                fx.send(
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

    /// A storage operation the coordinator asked for completed.
    pub fn storage_done(
        &mut self,
        now: Instant,
        waiter: CoordWaiter,
        result: StorageResult,
        clock: &mut dyn Stamper,
        fx: &mut CoordEffects,
    ) {
        let id = self.id;
        match (waiter, result) {
            (CoordWaiter::Write { tag, ts, key }, StorageResult::Applied(r)) => match r {
                Ok(ApplyOutcome::Kept { .. }) => {
                    self.on_write_result(now, tag, id, WriteOutcome::Applied, clock, fx)
                }
                Ok(ApplyOutcome::Superseded) => {
                    fx.storage(StorageOp::Get { key }, CoordWaiter::Superseded { tag, ts })
                }
                Err(_) => self.on_write_result(now, tag, id, WriteOutcome::Failed, clock, fx),
            },
            (CoordWaiter::Superseded { tag, ts }, StorageResult::Got(r)) => {
                let outcome = superseded_outcome(ts, r);
                self.on_write_result(now, tag, id, outcome, clock, fx)
            }
            (CoordWaiter::Read { tag }, StorageResult::Got(r)) => {
                let hlc = clock.hlc_micros(now);
                self.on_read_result(tag, id, r.ok(), hlc, fx)
            }
            (CoordWaiter::ReadRange { tag }, StorageResult::Ranged(r)) => {
                self.on_range_result(tag, id, r.ok(), fx)
            }
            (CoordWaiter::ReadRange { tag }, _) => self.on_range_result(tag, id, None, fx),
            (CoordWaiter::Repair, _) => {}
            // A host that answers an Apply with Got (or the reverse) broke the
            // contract; treat it as a failed operation rather than guess.
            (CoordWaiter::Write { tag, .. } | CoordWaiter::Superseded { tag, .. }, _) => {
                self.on_write_result(now, tag, id, WriteOutcome::Failed, clock, fx)
            }
            (CoordWaiter::Read { tag }, _) => {
                let hlc = clock.hlc_micros(now);
                self.on_read_result(tag, id, None, hlc, fx)
            }
        }
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

    /// Replica `from` answered write `tag` with `outcome`.
    pub fn on_write_result(
        &mut self,
        now: Instant,
        tag: RequestTag,
        from: NodeId,
        outcome: WriteOutcome,
        clock: &mut dyn Stamper,
        fx: &mut CoordEffects,
    ) {
        if !self.record_response(tag, from) {
            return;
        }
        #[cfg(feature = "mutations")]
        let outcome = match outcome {
            WriteOutcome::Superseded(_) if self.trust_local_clock => WriteOutcome::Applied,
            o => o,
        };
        if let WriteOutcome::Superseded(newer) = outcome {
            if self.restamp(now, tag, newer, clock, fx) {
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
        let mut answer = None;
        if !p.answered && p.each_set_applied() {
            p.answered = true;
            if let PendingKind::Write { ts, .. } = p.kind {
                answer = Some(Ok(ClientResponse::Written { ts }));
            }
        } else if !p.answered && !p.each_set_can_apply() {
            p.answered = true;
            answer = Some(Err(if outcome == WriteOutcome::ClockAhead {
                // Replicas refused our stamp: our clock is ahead of theirs.
                ClientError::ClockOffset {
                    offset_ms: i64::try_from(clock.max_offset() / 1000).unwrap_or(i64::MAX),
                    max_ms: clock.max_offset() / 1000,
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
            fx.reply(client, a);
        }
        self.finish_if_complete(tag, fx);
    }

    /// A replica holds a version newer than the write's: unless the client
    /// was already answered, stamp the write again above it and send it to
    /// every replica anew under a fresh tag (late acks of the old stamp then
    /// match nothing). A write acknowledged before this one began is on a
    /// quorum, which intersects this write's quorum, so this write cannot be
    /// acknowledged below it. Returns whether the write was re-sent.
    fn restamp(
        &mut self,
        now: Instant,
        tag: RequestTag,
        newer: Timestamp,
        clock: &mut dyn Stamper,
        fx: &mut CoordEffects,
    ) -> bool {
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
            fx.reply(client, Err(ClientError::Contended { attempts }));
            return true;
        }
        if clock.observe(now, newer).is_err() {
            // A version stamped beyond the clock bound: count it as a failed
            // replica rather than chase it.
            return false;
        }
        let Some(mut p) = self.pending.remove(&tag) else {
            return false;
        };
        self.deadlines.remove(&(p.deadline, tag));
        let PendingKind::Write {
            ts,
            value,
            stamps,
            expires,
        } = p.kind
        else {
            return false;
        };
        let new_ts = clock.stamp(now);
        fx.0.push(CoordEffect::Event(NodeEvent::Restamped {
            from: ts,
            to: new_ts,
        }));
        let new_tag = self.new_tag();
        p.kind = PendingKind::Write {
            ts: new_ts,
            value: value.clone(),
            stamps: stamps + 1,
            expires,
        };
        p.responded.clear();
        p.applied_by.clear();
        p.ok = 0;
        p.failed = 0;
        let key = p.key.clone();
        let targets = p.sent_to.clone();
        self.deadlines.insert((p.deadline, new_tag));
        self.pending.insert(new_tag, p);
        let version = Versioned {
            ts: new_ts,
            value,
            expires,
        };
        self.send_write(new_tag, &key, version, &targets, fx);
        true
    }

    /// Replica `from` answered read `tag` (`Err`: its store failed). A
    /// version too far ahead still answers the read (it is stored data)
    /// but does not drag this node's clock.
    pub fn on_read_reply(
        &mut self,
        now: Instant,
        tag: RequestTag,
        from: NodeId,
        result: Result<Option<Versioned>, ()>,
        clock: &mut dyn Stamper,
        fx: &mut CoordEffects,
    ) {
        if let Ok(Some(v)) = &result {
            let _ = clock.observe(now, v.ts);
        }
        let hlc = clock.hlc_micros(now);
        self.on_read_result(tag, from, result.ok(), hlc, fx)
    }

    /// Replica `from` answered read `tag` (`None`: its store failed).
    fn on_read_result(
        &mut self,
        tag: RequestTag,
        from: NodeId,
        result: Option<Option<Versioned>>,
        hlc_micros: u64,
        fx: &mut CoordEffects,
    ) {
        if !self.record_response(tag, from) {
            return;
        }
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        let PendingKind::Read {
            responses, entry, ..
        } = &mut p.kind
        else {
            return;
        };
        match result {
            Some(v) => {
                responses.push((from, v));
                p.applied_by.push(from);
                p.ok += 1;
            }
            None => p.failed += 1,
        }
        if !p.answered && sets_applied(&p.sets, &p.applied_by) {
            p.answered = true;
            // An expired value reads as absent: judged against this
            // coordinator's HLC time, the same time base as the deadline.
            let best = best_version(responses).filter(|v| v.is_live_at(hlc_micros));
            let value = best.and_then(|v| v.value.clone());
            let reply = if *entry {
                ClientResponse::Entry {
                    value,
                    expires: best.and_then(|v| v.expires),
                    now_micros: hlc_micros,
                }
            } else {
                ClientResponse::Value(value)
            };
            fx.reply(p.client, Ok(reply));
        } else if !p.answered && !sets_can_apply(&p.sets, &p.applied_by, &p.responded) {
            p.answered = true;
            let err = ClientError::ReplicaFailure {
                acked: p.ok,
                failed: p.failed,
                needed: p.needed,
            };
            fx.reply(p.client, Err(err));
        }
        // Read repair runs after the answer, on every answer that arrives
        // (late ones included), so it never delays the client.
        if self.pending.get(&tag).is_some_and(|p| p.answered) {
            self.repair_stale(tag, fx);
        }
        self.finish_if_complete(tag, fx);
    }

    /// Replica `from` answered range read `tag` (`Err`: its store failed).
    pub fn on_range_reply(
        &mut self,
        now: Instant,
        tag: RequestTag,
        from: NodeId,
        result: Result<Vec<(Key, Versioned)>, ()>,
        clock: &mut dyn Stamper,
        fx: &mut CoordEffects,
    ) {
        if let Ok(items) = &result {
            if let Some(newest) = items.iter().map(|(_, v)| v.ts).max() {
                let _ = clock.observe(now, newest);
            }
        }
        self.on_range_result(tag, from, result.ok(), fx)
    }

    /// Replica `from` answered range read `tag` (`None`: its store failed).
    fn on_range_result(
        &mut self,
        tag: RequestTag,
        from: NodeId,
        result: Option<Vec<(Key, Versioned)>>,
        fx: &mut CoordEffects,
    ) {
        if !self.record_response(tag, from) {
            return;
        }
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        let PendingKind::ReadRange {
            limit, responses, ..
        } = &mut p.kind
        else {
            return;
        };
        match result {
            Some(mut items) => {
                // A replica answers at most a page, in key order, whatever
                // it sent.
                items.truncate(*limit);
                items.sort_by(|a, b| a.0.cmp(&b.0));
                responses.push((from, items));
                p.applied_by.push(from);
                p.ok += 1;
            }
            None => p.failed += 1,
        }
        if !p.answered && sets_applied(&p.sets, &p.applied_by) {
            p.answered = true;
            let merged = merge_ranges(responses, *limit);
            let cells = merged
                .cells
                .iter()
                .filter_map(|(k, v)| {
                    let value = v.value.clone()?;
                    match crate::storage_key::classify(k) {
                        Some((_, crate::storage_key::StoredItem::Cell { column, .. })) => {
                            Some((Key::copy_from_slice(column), value))
                        }
                        // A plain key hashing to the row's token inside the
                        // row's range: not a cell.
                        _ => None,
                    }
                })
                .collect();
            let last =
                merged
                    .cells
                    .last()
                    .and_then(|(k, _)| match crate::storage_key::classify(k) {
                        Some((_, crate::storage_key::StoredItem::Cell { column, .. })) => {
                            Some(Key::copy_from_slice(column))
                        }
                        _ => None,
                    });
            fx.reply(
                p.client,
                Ok(ClientResponse::Cells {
                    cells,
                    more: merged.more,
                    last,
                }),
            );
        } else if !p.answered && !sets_can_apply(&p.sets, &p.applied_by, &p.responded) {
            p.answered = true;
            let err = ClientError::ReplicaFailure {
                acked: p.ok,
                failed: p.failed,
                needed: p.needed,
            };
            fx.reply(p.client, Err(err));
        }
        if self.pending.get(&tag).is_some_and(|p| p.answered) {
            self.repair_stale_cells(tag, fx);
        }
        self.finish_if_complete(tag, fx);
    }

    /// Repairs, cell by cell, the replicas of range read `tag` that
    /// answered without the newest version of a cell the merge covers.
    fn repair_stale_cells(&mut self, tag: RequestTag, fx: &mut CoordEffects) {
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        let PendingKind::ReadRange {
            limit,
            responses,
            repaired,
        } = &mut p.kind
        else {
            return;
        };
        let merged = merge_ranges(responses, *limit);
        let mut repairs = Vec::new();
        for (key, best) in &merged.cells {
            for (node, items) in responses.iter() {
                let theirs = items
                    .binary_search_by(|(k, _)| k.cmp(key))
                    .ok()
                    .map(|i| &items[i].1);
                let stale = theirs.is_none_or(|v| best.supersedes(v));
                if stale && !repaired.contains(&(*node, key.clone(), best.ts)) {
                    repaired.push((*node, key.clone(), best.ts));
                    repairs.push((*node, key.clone(), best.clone()));
                }
            }
        }
        for (node, key, version) in repairs {
            if node == self.id {
                fx.storage(StorageOp::Apply { key, version }, CoordWaiter::Repair);
            } else {
                fx.send(node, PeerMsg::Repair { key, version });
            }
        }
    }

    fn repair_stale(&mut self, tag: RequestTag, fx: &mut CoordEffects) {
        let Some(p) = self.pending.get_mut(&tag) else {
            return;
        };
        let PendingKind::Read {
            responses,
            repaired,
            ..
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
                fx.storage(
                    StorageOp::Apply {
                        key: key.clone(),
                        version: best.clone(),
                    },
                    CoordWaiter::Repair,
                );
            } else {
                fx.send(
                    node,
                    PeerMsg::Repair {
                        key: key.clone(),
                        version: best.clone(),
                    },
                );
            }
        }
    }

    fn finish_if_complete(&mut self, tag: RequestTag, fx: &mut CoordEffects) {
        if let Some(p) = self.pending.get(&tag) {
            if p.answered && p.responded.len() == p.sent_to.len() {
                self.deadlines.remove(&(p.deadline, tag));
                if let Some(p) = self.pending.remove(&tag) {
                    // Replicas that were down were never sent the write.
                    if p.replicas.len() > p.applied_by.len() {
                        self.hint_missed(&p, fx);
                    }
                }
            }
        }
    }

    /// Asks for hints for the replicas of a finished write that did not
    /// apply it, when at least one did (a write no replica applied failed,
    /// and is not made durable behind the client's back).
    fn hint_missed(&self, p: &Pending, fx: &mut CoordEffects) {
        let PendingKind::Write {
            ts, value, expires, ..
        } = &p.kind
        else {
            return;
        };
        if p.applied_by.is_empty() {
            return;
        }
        let targets: Vec<NodeId> = p
            .replicas
            .iter()
            .copied()
            .filter(|&r| r != self.id && !p.applied_by.contains(&r))
            .collect();
        if targets.is_empty() {
            return;
        }
        fx.0.push(CoordEffect::Hint {
            key: p.key.clone(),
            version: Versioned {
                ts: *ts,
                value: value.clone(),
                expires: *expires,
            },
            targets,
        });
    }

    /// Fails the requests whose deadline is at or before `now` with
    /// [`ClientError::Timeout`] (those not answered yet), and hints the
    /// replicas that missed their writes.
    pub fn expire(&mut self, now: Instant, fx: &mut CoordEffects) {
        while let Some(&(deadline, tag)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&tag) {
                self.hint_missed(&p, fx);
                if !p.answered {
                    fx.reply(
                        p.client,
                        Err(ClientError::Timeout {
                            acked: p.ok,
                            needed: p.needed,
                        }),
                    );
                }
            }
        }
    }

    /// Fails every unanswered request with [`ClientError::ShuttingDown`]
    /// and forgets them all.
    pub fn shutdown(&mut self, fx: &mut CoordEffects) {
        let mut tags: Vec<RequestTag> = self.pending.keys().copied().collect();
        tags.sort_unstable();
        for tag in tags {
            if let Some(p) = self.pending.remove(&tag) {
                self.deadlines.remove(&(p.deadline, tag));
                if !p.answered {
                    fx.reply(p.client, Err(ClientError::ShuttingDown));
                }
            }
        }
    }
}

/// Replicas' range answers merged cell by cell.
struct MergedRange {
    /// Every cell (tombstones included) up to the bound all replicas
    /// covered, with its newest version, in key order.
    cells: Vec<(Key, Versioned)>,
    /// Whether some replica stopped at its page limit (more may follow).
    more: bool,
}

/// Merges range answers by last write wins per cell. A replica that
/// answered a full page may hold more past its last key, so the merge
/// stops at the smallest such last key: past it, a replica's silence does
/// not mean it lacks the cell.
fn merge_ranges(responses: &[(NodeId, Vec<(Key, Versioned)>)], limit: usize) -> MergedRange {
    let bound = responses
        .iter()
        .filter(|(_, items)| items.len() >= limit)
        .filter_map(|(_, items)| items.last().map(|(k, _)| k))
        .min();
    let mut cells: std::collections::BTreeMap<&Key, &Versioned> = std::collections::BTreeMap::new();
    for (_, items) in responses {
        for (k, v) in items {
            if bound.is_some_and(|b| k > b) {
                break;
            }
            let e = cells.entry(k).or_insert(v);
            if v.lww_cmp(e) == std::cmp::Ordering::Greater {
                *e = v;
            }
        }
    }
    MergedRange {
        cells: cells
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        more: bound.is_some(),
    }
}

fn best_version(responses: &[(NodeId, Option<Versioned>)]) -> Option<&Versioned> {
    responses
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .max_by(|a, b| a.lww_cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const ME: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);
    const TIMEOUT: Duration = Duration::from_secs(2);

    /// A clock that stamps 1, 2, 3, ... ms and accepts every version.
    struct TestClock(u64);

    impl Stamper for TestClock {
        fn stamp(&mut self, _now: Instant) -> Timestamp {
            self.0 += 1000;
            Timestamp::new(self.0, 0, ME)
        }
        fn observe(&mut self, _now: Instant, ts: Timestamp) -> Result<(), u64> {
            self.0 = self.0.max(ts.micros);
            Ok(())
        }
        fn max_offset(&self) -> u64 {
            500_000
        }
        fn hlc_micros(&self, _now: Instant) -> u64 {
            self.0
        }
    }

    fn key() -> Key {
        Bytes::from_static(b"k")
    }

    fn version(micros: u64, value: &'static [u8]) -> Versioned {
        Versioned {
            ts: Timestamp::new(micros, 0, B),
            value: Some(Bytes::from_static(value)),
            expires: None,
        }
    }

    /// Starts `op` at QUORUM of RF 3 on replicas ME, B, C (all live);
    /// returns the coordinator, the request's tag and the fan-out.
    fn started(op: Op) -> (Coordinator, TestClock, RequestTag, Vec<CoordEffect>) {
        let mut c = Coordinator::new(ME, 100, TIMEOUT);
        let mut clock = TestClock(0);
        let mut fx = CoordEffects::default();
        let all = vec![ME, B, C];
        c.start(
            Instant::ZERO,
            RequestId(7),
            key(),
            op,
            vec![ReplicaSet {
                all: all.clone(),
                live: all,
                quorum: None,
            }],
            2,
            3,
            &mut clock,
            &mut fx,
        );
        (c, clock, 100, fx.0)
    }

    /// Replica `from` answers write `tag` with `outcome`, at time zero.
    fn ack(
        c: &mut Coordinator,
        clock: &mut TestClock,
        tag: RequestTag,
        from: NodeId,
        outcome: WriteOutcome,
        fx: &mut CoordEffects,
    ) {
        c.on_write_result(Instant::ZERO, tag, from, outcome, clock, fx);
    }

    fn replies(fx: &[CoordEffect]) -> Vec<&Result<ClientResponse, ClientError>> {
        fx.iter()
            .filter_map(|e| match e {
                CoordEffect::Reply(RequestId(7), r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Starts `op` over two datacenters' sets: dc1 = ME, B, C and dc2 =
    /// D, E, F, each set with its `(needed, wanted)`.
    fn started_two_dcs(
        op: Op,
        dc1: (usize, usize),
        dc2: Option<(usize, usize)>,
    ) -> (Coordinator, TestClock, Vec<CoordEffect>) {
        let mut c = Coordinator::new(ME, 100, TIMEOUT);
        let mut clock = TestClock(0);
        let mut fx = CoordEffects::default();
        let set = |v: Vec<NodeId>, q| ReplicaSet {
            all: v.clone(),
            live: v,
            quorum: Some(q),
        };
        let mut sets = vec![set(vec![ME, B, C], dc1)];
        if let Some(q) = dc2 {
            sets.push(set(vec![D, E, F], q));
        }
        c.start(
            Instant::ZERO,
            RequestId(7),
            key(),
            op,
            sets,
            4,
            6,
            &mut clock,
            &mut fx,
        );
        (c, clock, fx.0)
    }

    const D: NodeId = NodeId(4);
    const E: NodeId = NodeId(5);
    const F: NodeId = NodeId(6);

    #[test]
    fn local_quorum_counts_only_the_local_datacenter_and_still_writes_everywhere() {
        let write = || Op::Write(Some(Bytes::from_static(b"v")));
        let (mut c, mut clock, fx) = started_two_dcs(write(), (2, 3), Some((0, 0)));
        let sent: Vec<NodeId> = fx
            .iter()
            .filter_map(|e| match e {
                CoordEffect::Send(to, PeerMsg::Write { .. }) => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(
            sent,
            vec![B, C, D, E, F],
            "the write reaches both datacenters"
        );
        let mut fx = CoordEffects::default();
        for r in [D, E, F] {
            ack(&mut c, &mut clock, 100, r, WriteOutcome::Applied, &mut fx);
        }
        assert!(
            replies(&fx.0).is_empty(),
            "three remote acks are no local quorum: {fx:?}"
        );
        ack(&mut c, &mut clock, 100, B, WriteOutcome::Applied, &mut fx);
        assert!(replies(&fx.0).is_empty(), "one local ack of two");
        ack(&mut c, &mut clock, 100, C, WriteOutcome::Applied, &mut fx);
        assert!(matches!(
            replies(&fx.0)[..],
            [Ok(ClientResponse::Written { .. })]
        ));

        // A local failure that leaves no local quorum fails the write, however
        // many remote replicas applied it.
        let (mut c, mut clock, _) = started_two_dcs(write(), (2, 3), Some((0, 0)));
        let mut fx = CoordEffects::default();
        for r in [D, E, F] {
            ack(&mut c, &mut clock, 100, r, WriteOutcome::Applied, &mut fx);
        }
        ack(&mut c, &mut clock, 100, B, WriteOutcome::Failed, &mut fx);
        ack(&mut c, &mut clock, 100, C, WriteOutcome::Failed, &mut fx);
        assert!(matches!(
            replies(&fx.0)[..],
            [Err(ClientError::ReplicaFailure { .. })]
        ));
    }

    #[test]
    fn each_quorum_needs_a_quorum_in_every_datacenter() {
        let write = || Op::Write(Some(Bytes::from_static(b"v")));
        let (mut c, mut clock, _) = started_two_dcs(write(), (2, 3), Some((2, 3)));
        let mut fx = CoordEffects::default();
        ack(&mut c, &mut clock, 100, B, WriteOutcome::Applied, &mut fx);
        ack(&mut c, &mut clock, 100, C, WriteOutcome::Applied, &mut fx);
        ack(&mut c, &mut clock, 100, D, WriteOutcome::Applied, &mut fx);
        assert!(replies(&fx.0).is_empty(), "dc2 has one ack of two: {fx:?}");
        ack(&mut c, &mut clock, 100, E, WriteOutcome::Applied, &mut fx);
        assert_eq!(replies(&fx.0).len(), 1);

        // A datacenter with too few live replicas is unavailable at once.
        let mut c = Coordinator::new(ME, 100, TIMEOUT);
        let mut fx = CoordEffects::default();
        c.start(
            Instant::ZERO,
            RequestId(7),
            key(),
            write(),
            vec![
                ReplicaSet {
                    all: vec![ME, B, C],
                    live: vec![ME, B, C],
                    quorum: Some((2, 3)),
                },
                ReplicaSet {
                    all: vec![D, E, F],
                    live: vec![D],
                    quorum: Some((2, 3)),
                },
            ],
            4,
            6,
            &mut clock,
            &mut fx,
        );
        assert!(matches!(
            replies(&fx.0)[..],
            [Err(ClientError::Unavailable {
                needed: 2,
                alive: 1
            })]
        ));
    }

    #[test]
    fn a_local_quorum_read_asks_and_counts_its_own_datacenter() {
        let (mut c, mut clock, fx) = started_two_dcs(Op::Read, (2, 3), None);
        let asked: Vec<NodeId> = fx
            .iter()
            .filter_map(|e| match e {
                CoordEffect::Send(to, PeerMsg::Read { .. }) => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(asked, vec![B, C]);
        let mut fx = CoordEffects::default();
        c.on_read_reply(Instant::ZERO, 100, B, Ok(None), &mut clock, &mut fx);
        assert!(replies(&fx.0).is_empty());
        c.on_read_reply(Instant::ZERO, 100, C, Ok(None), &mut clock, &mut fx);
        assert!(matches!(
            replies(&fx.0)[..],
            [Ok(ClientResponse::Value(None))]
        ));
    }

    #[test]
    fn a_write_fans_out_to_every_live_replica_under_one_tag() {
        let (c, _, tag, fx) = started(Op::Write(Some(Bytes::from_static(b"v"))));
        assert_eq!(c.in_flight(), 1);
        assert_eq!(c.next_deadline(), Some(Instant::ZERO + TIMEOUT));
        let sent: Vec<NodeId> = fx
            .iter()
            .filter_map(|e| match e {
                CoordEffect::Send(to, PeerMsg::Write { tag: t, .. }) if *t == tag => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(sent, vec![B, C]);
        assert!(fx.iter().any(|e| matches!(
            e,
            CoordEffect::Storage(StorageOp::Apply { .. }, CoordWaiter::Write { tag: t, .. })
                if *t == tag
        )));
    }

    #[test]
    fn a_quorum_write_of_rf_3_completes_after_2_acks_not_1() {
        let (mut c, mut clock, tag, _) = started(Op::Write(Some(Bytes::from_static(b"v"))));
        let mut fx = CoordEffects::default();
        ack(&mut c, &mut clock, tag, B, WriteOutcome::Applied, &mut fx);
        assert!(replies(&fx.0).is_empty(), "answered after one ack: {fx:?}");
        // A duplicate ack from the same replica does not count twice.
        ack(&mut c, &mut clock, tag, B, WriteOutcome::Applied, &mut fx);
        assert!(replies(&fx.0).is_empty(), "a duplicate ack counted: {fx:?}");
        ack(&mut c, &mut clock, tag, C, WriteOutcome::Applied, &mut fx);
        assert_eq!(
            replies(&fx.0),
            vec![&Ok(ClientResponse::Written {
                ts: Timestamp::new(1000, 0, ME)
            })]
        );
        // The local replica has not answered: the request still holds state.
        assert_eq!(c.in_flight(), 1);
    }

    #[test]
    fn a_write_that_cannot_reach_quorum_fails_at_once() {
        let (mut c, mut clock, tag, _) = started(Op::Write(None));
        let mut fx = CoordEffects::default();
        ack(&mut c, &mut clock, tag, B, WriteOutcome::Failed, &mut fx);
        assert!(replies(&fx.0).is_empty());
        ack(&mut c, &mut clock, tag, C, WriteOutcome::Failed, &mut fx);
        assert_eq!(
            replies(&fx.0),
            vec![&Err(ClientError::ReplicaFailure {
                acked: 0,
                failed: 2,
                needed: 2
            })]
        );
    }

    #[test]
    fn a_read_returns_the_newest_reply_and_repairs_the_stale_replica() {
        let (mut c, _, tag, _) = started(Op::Read);
        let mut fx = CoordEffects::default();
        let (old, new) = (version(5, b"old"), version(9, b"new"));
        c.on_read_result(tag, C, Some(Some(old)), 0, &mut fx);
        assert!(replies(&fx.0).is_empty());
        c.on_read_result(tag, B, Some(Some(new.clone())), 0, &mut fx);
        assert_eq!(
            replies(&fx.0),
            vec![&Ok(ClientResponse::Value(Some(Bytes::from_static(b"new"))))]
        );
        let repairs: Vec<(NodeId, &Versioned)> =
            fx.0.iter()
                .filter_map(|e| match e {
                    CoordEffect::Send(to, PeerMsg::Repair { version, .. }) => Some((*to, version)),
                    _ => None,
                })
                .collect();
        assert_eq!(repairs, vec![(C, &new)]);
        // The local replica answers late, with nothing: it is repaired too,
        // and the request is done.
        let mut fx = CoordEffects::default();
        c.on_read_result(tag, ME, Some(None), 0, &mut fx);
        assert!(fx.0.contains(&CoordEffect::Storage(
            StorageOp::Apply {
                key: key(),
                version: new
            },
            CoordWaiter::Repair
        )));
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn an_expired_newest_version_reads_as_absent_and_still_repairs() {
        let (mut c, _, tag, _) = started(Op::ReadEntry);
        let mut fx = CoordEffects::default();
        let old = version(5, b"old");
        let expired = Versioned::expiring(Timestamp::new(9, 0, B), "new", 20);
        c.on_read_result(tag, C, Some(Some(old)), 30, &mut fx);
        c.on_read_result(tag, B, Some(Some(expired.clone())), 30, &mut fx);
        // Absent, not the older value it still hides.
        assert_eq!(
            replies(&fx.0),
            vec![&Ok(ClientResponse::Entry {
                value: None,
                expires: None,
                now_micros: 30
            })]
        );
        assert!(fx.0.contains(&CoordEffect::Send(
            C,
            PeerMsg::Repair {
                key: key(),
                version: expired
            }
        )));
        // Before its deadline the same version is live, with its expiry.
        let (mut c, _, tag, _) = started(Op::ReadEntry);
        let mut fx = CoordEffects::default();
        let live = Versioned::expiring(Timestamp::new(9, 0, B), "new", 20);
        c.on_read_result(tag, B, Some(Some(live.clone())), 19, &mut fx);
        c.on_read_result(tag, C, Some(Some(live)), 19, &mut fx);
        assert_eq!(
            replies(&fx.0),
            vec![&Ok(ClientResponse::Entry {
                value: Some(Bytes::from_static(b"new")),
                expires: Some(20),
                now_micros: 19
            })]
        );
    }

    #[test]
    fn an_expiring_write_resolves_its_ttl_at_the_first_stamp_and_keeps_it() {
        let op = Op::WriteExpiring(
            Bytes::from_static(b"v"),
            crate::client_api::Expiry::After(5_000),
        );
        let (mut c, mut clock, tag, fx) = started(op);
        let first = fx
            .iter()
            .find_map(|e| match e {
                CoordEffect::Send(_, PeerMsg::Write { version, .. }) => Some(version.clone()),
                _ => None,
            })
            .expect("a write was sent");
        assert_eq!(first.expires, Some(first.ts.micros + 5_000));
        // Superseded: the re-stamped write keeps the same deadline.
        let mut fx = CoordEffects::default();
        let newer = Timestamp::new(first.ts.micros + 100_000, 0, B);
        ack(
            &mut c,
            &mut clock,
            tag,
            B,
            WriteOutcome::Superseded(newer),
            &mut fx,
        );
        let again =
            fx.0.iter()
                .find_map(|e| match e {
                    CoordEffect::Send(_, PeerMsg::Write { version, .. }) => Some(version.clone()),
                    _ => None,
                })
                .expect("re-stamped");
        assert!(again.ts > first.ts);
        assert_eq!(again.expires, first.expires);
    }

    #[test]
    fn a_deadline_past_with_too_few_replies_times_out() {
        let (mut c, mut clock, tag, _) = started(Op::Write(Some(Bytes::from_static(b"v"))));
        let mut fx = CoordEffects::default();
        ack(&mut c, &mut clock, tag, B, WriteOutcome::Applied, &mut fx);
        // Just before the deadline nothing happens.
        c.expire(
            Instant::ZERO + (TIMEOUT - Duration::from_micros(1)),
            &mut fx,
        );
        assert!(replies(&fx.0).is_empty());
        c.expire(Instant::ZERO + TIMEOUT, &mut fx);
        assert_eq!(
            replies(&fx.0),
            vec![&Err(ClientError::Timeout {
                acked: 1,
                needed: 2
            })]
        );
        // B applied it, so C (not this node) gets a hint.
        assert!(fx.0.iter().any(|e| matches!(
            e,
            CoordEffect::Hint { targets, .. } if targets == &vec![C]
        )));
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn a_superseded_write_is_restamped_above_the_newer_version() {
        let (mut c, mut clock, tag, _) = started(Op::Write(Some(Bytes::from_static(b"v"))));
        let mut fx = CoordEffects::default();
        let newer = Timestamp::new(50_000, 0, B);
        ack(
            &mut c,
            &mut clock,
            tag,
            B,
            WriteOutcome::Superseded(newer),
            &mut fx,
        );
        let resent: Vec<(NodeId, RequestTag, Timestamp)> =
            fx.0.iter()
                .filter_map(|e| match e {
                    CoordEffect::Send(to, PeerMsg::Write { tag, version, .. }) => {
                        Some((*to, *tag, version.ts))
                    }
                    _ => None,
                })
                .collect();
        assert_eq!(resent.len(), 2);
        assert!(resent.iter().all(|&(_, t, ts)| t != tag && ts > newer));
        // Late acks of the old stamp match nothing.
        let mut late = CoordEffects::default();
        c.on_write_result(
            Instant::ZERO,
            tag,
            C,
            WriteOutcome::Applied,
            &mut clock,
            &mut late,
        );
        assert!(late.0.is_empty());
    }

    #[test]
    fn shutdown_fails_unanswered_requests() {
        let (mut c, _, _, _) = started(Op::Read);
        let mut fx = CoordEffects::default();
        c.shutdown(&mut fx);
        assert_eq!(replies(&fx.0), vec![&Err(ClientError::ShuttingDown)]);
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn while_the_ring_moves_a_write_needs_its_level_in_each_replica_set() {
        // Node C leaves: the current ring's set is ME, B, C and the next
        // ring's is ME, B, D. QUORUM needs two of each.
        let mut c = Coordinator::new(ME, 100, TIMEOUT);
        let mut clock = TestClock(0);
        let mut fx = CoordEffects::default();
        let set = |v: Vec<NodeId>| ReplicaSet {
            all: v.clone(),
            live: v,
            quorum: None,
        };
        c.start(
            Instant::ZERO,
            RequestId(7),
            key(),
            Op::Write(Some(Bytes::from_static(b"v"))),
            vec![set(vec![ME, B, C]), set(vec![ME, B, D])],
            2,
            3,
            &mut clock,
            &mut fx,
        );
        let sent: Vec<NodeId> =
            fx.0.iter()
                .filter_map(|e| match e {
                    CoordEffect::Send(to, PeerMsg::Write { .. }) => Some(*to),
                    _ => None,
                })
                .collect();
        assert_eq!(sent, vec![B, C, D], "every replica of both sets");
        let mut fx = CoordEffects::default();
        ack(&mut c, &mut clock, 100, C, WriteOutcome::Applied, &mut fx);
        ack(&mut c, &mut clock, 100, D, WriteOutcome::Applied, &mut fx);
        assert!(
            replies(&fx.0).is_empty(),
            "C and D are one of each set, not two: {fx:?}"
        );
        ack(&mut c, &mut clock, 100, B, WriteOutcome::Applied, &mut fx);
        assert_eq!(replies(&fx.0).len(), 1);
        assert!(matches!(
            replies(&fx.0)[0],
            Ok(ClientResponse::Written { .. })
        ));

        // A set that can no longer reach its level fails the write, even
        // though the replicas that applied it would make a quorum of the
        // union.
        let mut c = Coordinator::new(ME, 200, TIMEOUT);
        let mut fx = CoordEffects::default();
        c.start(
            Instant::ZERO,
            RequestId(7),
            key(),
            Op::Write(Some(Bytes::from_static(b"v"))),
            vec![set(vec![B, C, ME]), set(vec![B, D, ME])],
            2,
            3,
            &mut clock,
            &mut fx,
        );
        let mut fx = CoordEffects::default();
        ack(&mut c, &mut clock, 200, C, WriteOutcome::Applied, &mut fx);
        ack(&mut c, &mut clock, 200, B, WriteOutcome::Failed, &mut fx);
        assert!(replies(&fx.0).is_empty());
        ack(&mut c, &mut clock, 200, D, WriteOutcome::Failed, &mut fx);
        assert!(
            matches!(
                replies(&fx.0)[..],
                [Err(ClientError::ReplicaFailure { .. })]
            ),
            "the next ring's set has only ME left: {fx:?}"
        );
    }
}
