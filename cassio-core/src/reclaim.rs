//! Reclaiming the data of dropped keyspaces.
//!
//! A dropped keyspace's keys stay in the store under its storage name
//! (`#<id>`, never reused), unreadable but taking space. This machine walks
//! the storage names present in the store, one short range read per name,
//! and turns every live item of a dropped one into a tombstone just above
//! its version, a chunk at a time; compaction then purges them as it
//! purges any tombstone older than the purge watermark.
//!
//! Dropped means provably dropped: a storage name `#<id>` whose id is
//! below the schema's next id and that no keyspace of the schema uses. A
//! keyspace this node has not heard of yet has an id at or above the next
//! id it knows, so a node behind on the schema never reclaims the data of
//! a keyspace just created elsewhere. Names given by configuration
//! (`default`, seeded keyspaces) are never reclaimed.
//!
//! The walk runs when a schema version this node adopts drops a keyspace
//! it held, [`FIRST_WALK_AFTER`] after the node becomes ready (a restart
//! resumes an interrupted reclaim), and every [`WALK_EVERY`] (a hint
//! replayed into a dropped keyspace is caught by the next walk). One
//! storage operation is in flight at a time.

use crate::schema::Schema;
use crate::storage_key::{keyspace_prefix, split_storage_key};
use crate::storage_ops::{StorageOp, StorageResult};
use crate::time::Instant;
use crate::types::{Key, Timestamp, Versioned};
use std::ops::Bound;
use std::time::Duration;

/// How often the store is walked again when nothing asked for it.
pub const WALK_EVERY: Duration = Duration::from_secs(3600);

/// How long after the node becomes ready the first walk runs (a start
/// has more urgent work: catching up, founding the schema).
pub const FIRST_WALK_AFTER: Duration = Duration::from_secs(300);

/// How long a walk waits after a failed storage operation.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Items read (and tombstoned) per storage operation.
const CHUNK: usize = 256;

/// What a reclaim's storage operation was for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReclaimWaiter {
    /// The first item at or after the walk's position.
    Next,
    /// A chunk of a dropped keyspace's items.
    Chunk,
    /// Tombstones for a chunk; `more`: the chunk was full.
    Tombstoned { last: Key, more: bool },
}

#[derive(Debug)]
enum State {
    Idle,
    /// Looking for the next storage name at or after `from`.
    Walking,
    /// Tombstoning the items of `prefix` (a dropped keyspace's storage
    /// keys), after `after`.
    Purging {
        prefix: Key,
        after: Option<Key>,
    },
}

/// Figures for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimStatus {
    /// Walks completed.
    pub walks: u64,
    /// Items of dropped keyspaces turned into tombstones.
    pub tombstoned: u64,
}

/// The reclaim machine (see the module docs).
#[derive(Debug)]
pub(crate) struct Reclaim {
    state: State,
    in_flight: bool,
    /// Where the walk resumes: the first storage key not yet looked at.
    from: Option<Key>,
    walk_requested: bool,
    next_walk: Option<Instant>,
    status: ReclaimStatus,
}

impl Default for Reclaim {
    fn default() -> Self {
        Reclaim {
            state: State::Idle,
            in_flight: false,
            from: None,
            walk_requested: false,
            next_walk: None,
            status: ReclaimStatus::default(),
        }
    }
}

/// Whether `storage` names a keyspace `schema` dropped.
pub(crate) fn is_dropped(schema: &Schema, storage: &str) -> bool {
    let Some(id) = storage
        .strip_prefix('#')
        .and_then(|d| d.parse::<u32>().ok())
    else {
        return false;
    };
    id < schema.next_id && schema.keyspaces.values().all(|k| k.storage != storage)
}

/// The smallest key above every key that starts with `prefix` (`None`:
/// there is none, the prefix is all 0xFF).
fn prefix_end(prefix: &[u8]) -> Option<Key> {
    let mut b = prefix.to_vec();
    while let Some(last) = b.pop() {
        if last < u8::MAX {
            b.push(last + 1);
            return Some(Key::from(b));
        }
    }
    None
}

/// A tombstone just above `v` (so it wins, and is as old as `v` for the
/// purge watermark).
fn tombstone_above(v: &Versioned) -> Versioned {
    let ts = match v.ts.logical.checked_add(1) {
        Some(logical) => Timestamp::new(v.ts.micros, logical, v.ts.node),
        None => Timestamp::new(v.ts.micros.saturating_add(1), 0, v.ts.node),
    };
    Versioned::tombstone(ts)
}

impl Reclaim {
    /// Figures so far.
    pub fn status(&self) -> ReclaimStatus {
        self.status
    }

    /// Walks the store again as soon as the current walk (if any) ends.
    pub fn request_walk(&mut self) {
        self.walk_requested = true;
    }

    /// Starts a walk when one is due and nothing is in flight.
    pub fn tick(&mut self, now: Instant, ready: bool, fx: &mut Vec<(StorageOp, ReclaimWaiter)>) {
        if !ready || self.in_flight || !matches!(self.state, State::Idle) {
            return;
        }
        let due = match self.next_walk {
            Some(t) => self.walk_requested || now >= t,
            None => {
                // Ready for the first time: the first walk comes a little
                // later, unless a drop asks for one.
                self.next_walk = Some(now + FIRST_WALK_AFTER);
                self.walk_requested
            }
        };
        if !due {
            return;
        }
        self.walk_requested = false;
        self.from = None;
        self.state = State::Walking;
        self.next(fx);
    }

    fn next(&mut self, fx: &mut Vec<(StorageOp, ReclaimWaiter)>) {
        let start = match &self.from {
            Some(k) => Bound::Included(k.clone()),
            None => Bound::Unbounded,
        };
        self.in_flight = true;
        fx.push((
            StorageOp::Range {
                start,
                end: Bound::Unbounded,
                limit: 1,
            },
            ReclaimWaiter::Next,
        ));
    }

    fn chunk(&mut self, fx: &mut Vec<(StorageOp, ReclaimWaiter)>) {
        let State::Purging { prefix, after } = &self.state else {
            return;
        };
        let start = match after {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Included(prefix.clone()),
        };
        let end = match prefix_end(prefix) {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        self.in_flight = true;
        fx.push((
            StorageOp::Range {
                start,
                end,
                limit: CHUNK,
            },
            ReclaimWaiter::Chunk,
        ));
    }

    /// Goes on with the walk after the keys of `prefix`.
    fn skip_past(&mut self, prefix: &[u8], now: Instant, fx: &mut Vec<(StorageOp, ReclaimWaiter)>) {
        match prefix_end(prefix) {
            Some(end) => {
                self.from = Some(end);
                self.state = State::Walking;
                self.next(fx);
            }
            None => self.finish(now),
        }
    }

    fn finish(&mut self, now: Instant) {
        self.state = State::Idle;
        self.status.walks += 1;
        self.next_walk = Some(now + WALK_EVERY);
    }

    fn fail(&mut self, now: Instant) {
        self.state = State::Idle;
        self.next_walk = Some(now + RETRY_AFTER);
    }

    /// A storage operation of the walk completed.
    pub fn storage_done(
        &mut self,
        now: Instant,
        schema: &Schema,
        w: ReclaimWaiter,
        result: StorageResult,
        fx: &mut Vec<(StorageOp, ReclaimWaiter)>,
    ) {
        self.in_flight = false;
        match (w, result) {
            (ReclaimWaiter::Next, StorageResult::Ranged(Ok(entries))) => {
                let Some((key, _)) = entries.into_iter().next() else {
                    return self.finish(now);
                };
                let Some((storage, _)) = split_storage_key(&key) else {
                    // Not a storage key of ours: step over it.
                    let mut after = key.to_vec();
                    after.push(0);
                    self.from = Some(Key::from(after));
                    return self.next(fx);
                };
                let prefix = keyspace_prefix(storage);
                if is_dropped(schema, storage) {
                    self.state = State::Purging {
                        prefix,
                        after: None,
                    };
                    self.chunk(fx);
                } else {
                    self.skip_past(&prefix, now, fx);
                }
            }
            (ReclaimWaiter::Chunk, StorageResult::Ranged(Ok(entries))) => {
                let more = entries.len() >= CHUNK;
                let Some(last) = entries.last().map(|(k, _)| k.clone()) else {
                    return self.purged(now, fx);
                };
                let items: Vec<(Key, Versioned)> = entries
                    .into_iter()
                    .filter(|(_, v)| !v.is_tombstone())
                    .map(|(k, v)| {
                        let t = tombstone_above(&v);
                        (k, t)
                    })
                    .collect();
                if items.is_empty() {
                    return self.after_chunk(last, more, now, fx);
                }
                self.status.tombstoned += items.len() as u64;
                self.in_flight = true;
                fx.push((
                    StorageOp::ApplyBatch { items },
                    ReclaimWaiter::Tombstoned { last, more },
                ));
            }
            (ReclaimWaiter::Tombstoned { last, more }, StorageResult::AppliedBatch(Ok(_))) => {
                self.after_chunk(last, more, now, fx)
            }
            // A failed read or write: try again later, from the start.
            _ => self.fail(now),
        }
    }

    fn after_chunk(
        &mut self,
        last: Key,
        more: bool,
        now: Instant,
        fx: &mut Vec<(StorageOp, ReclaimWaiter)>,
    ) {
        if more {
            if let State::Purging { after, .. } = &mut self.state {
                *after = Some(last);
            }
            self.chunk(fx);
        } else {
            self.purged(now, fx);
        }
    }

    /// The dropped keyspace being purged has no live item left.
    fn purged(&mut self, now: Instant, fx: &mut Vec<(StorageOp, ReclaimWaiter)>) {
        let State::Purging { prefix, .. } = &self.state else {
            return self.fail(now);
        };
        let prefix = prefix.clone();
        self.skip_past(&prefix, now, fx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::SchemaChange;
    use crate::storage_key::storage_key;
    use crate::types::NodeId;
    use std::collections::BTreeMap;

    fn ts(m: u64) -> Timestamp {
        Timestamp::new(m, 0, NodeId(1))
    }

    fn seed() -> Schema {
        let mut ks = std::collections::BTreeMap::new();
        ks.insert(
            "default".to_string(),
            crate::config::KeyspaceConfig::default_keyspace(3),
        );
        Schema::seed(NodeId(1), &ks)
    }

    /// Runs `r` against an in-memory store until it goes idle.
    fn run(r: &mut Reclaim, schema: &Schema, store: &mut BTreeMap<Key, Versioned>) {
        let now = Instant::ZERO;
        let mut fx = Vec::new();
        r.request_walk();
        r.tick(now, true, &mut fx);
        let mut guard = 0;
        while let Some((op, w)) = fx.pop() {
            guard += 1;
            assert!(guard < 100_000, "the walk does not end");
            let result = match op {
                StorageOp::Range { start, end, limit } => StorageResult::Ranged(Ok(store
                    .range::<Key, _>((start, end))
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect())),
                StorageOp::ApplyBatch { items } => {
                    for (k, v) in &items {
                        let keep = store.get(k).is_some_and(|old| old.ts >= v.ts);
                        if !keep {
                            store.insert(k.clone(), v.clone());
                        }
                    }
                    StorageResult::AppliedBatch(Ok(Vec::new()))
                }
                other => panic!("unexpected {other:?}"),
            };
            r.storage_done(now, schema, w, result, &mut fx);
        }
    }

    fn live(store: &BTreeMap<Key, Versioned>, storage: &str) -> usize {
        store
            .iter()
            .filter(|(k, v)| {
                split_storage_key(k).is_some_and(|(s, _)| s == storage) && !v.is_tombstone()
            })
            .count()
    }

    #[test]
    fn only_dropped_keyspaces_lose_their_items() {
        let mut s = seed();
        let create = |name: &str| SchemaChange::Create {
            name: name.into(),
            replication_factor: 3,
            default_consistency: crate::Consistency::Quorum,
        };
        s = s.apply(&create("a"), NodeId(1)).unwrap();
        s = s.apply(&create("b"), NodeId(1)).unwrap();
        let a = s.keyspace("a").unwrap().storage.clone();
        let b = s.keyspace("b").unwrap().storage.clone();
        s = s
            .apply(&SchemaChange::Drop { name: "a".into() }, NodeId(1))
            .unwrap();
        // A keyspace created elsewhere that this node has not heard of.
        let unknown = format!("#{}", s.next_id + 5);
        let mut store = BTreeMap::new();
        for (storage, n) in [
            ("default", 300),
            (&a[..], 1000),
            (&b[..], 300),
            (&unknown[..], 10),
        ] {
            for i in 0..n {
                store.insert(
                    storage_key(storage, format!("k{i}").as_bytes()),
                    Versioned::value(ts(10 + i), "v"),
                );
            }
        }
        assert!(is_dropped(&s, &a));
        assert!(!is_dropped(&s, &b) && !is_dropped(&s, "default") && !is_dropped(&s, &unknown));
        let mut r = Reclaim::default();
        run(&mut r, &s, &mut store);
        assert_eq!(
            live(&store, &a),
            0,
            "the dropped keyspace's items are tombstones"
        );
        assert_eq!(live(&store, &b), 300);
        assert_eq!(live(&store, "default"), 300);
        assert_eq!(live(&store, &unknown), 10, "an unknown keyspace is kept");
        assert_eq!(
            r.status(),
            ReclaimStatus {
                walks: 1,
                tombstoned: 1000
            }
        );
        // The next walk finds nothing left to do.
        r.request_walk();
        run(&mut r, &s, &mut store);
        assert_eq!(
            r.status(),
            ReclaimStatus {
                walks: 2,
                tombstoned: 1000
            }
        );
    }

    #[test]
    fn a_walk_waits_for_readiness_and_its_interval() {
        let mut r = Reclaim::default();
        let mut fx = Vec::new();
        let t0 = Instant::ZERO + Duration::from_secs(1);
        r.tick(t0, false, &mut fx);
        assert!(fx.is_empty(), "not before the node is ready");
        r.tick(t0, true, &mut fx);
        assert!(
            fx.is_empty(),
            "the first walk comes a while after readiness"
        );
        r.tick(t0 + FIRST_WALK_AFTER, true, &mut fx);
        assert_eq!(fx.len(), 1);
        let (_, w) = fx.pop().unwrap();
        let s = seed();
        let t1 = t0 + FIRST_WALK_AFTER;
        r.storage_done(t1, &s, w, StorageResult::Ranged(Ok(Vec::new())), &mut fx);
        assert!(fx.is_empty());
        r.tick(t1 + Duration::from_secs(10), true, &mut fx);
        assert!(fx.is_empty(), "the next walk waits its interval");
        r.request_walk();
        r.tick(t1 + Duration::from_secs(11), true, &mut fx);
        assert_eq!(fx.len(), 1, "a dropped keyspace asks for a walk at once");
    }
}
