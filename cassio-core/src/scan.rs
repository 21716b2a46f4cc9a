//! Paged scans of a keyspace across the cluster.
//!
//! Storage keys are keyspace + token + key, so every store lists a
//! keyspace in token order, and so does a scan: it walks the ring from a
//! position (a [`ScanCursor`]: a token, and within it the last key
//! returned) through the token ranges in order. For each range it asks
//! the range's live replicas for a chunk of their entries (tombstones
//! included, [`crate::wire::PeerMsg::ScanRead`]), waits for as many as the
//! consistency level needs, merges them by last-write-wins, repairs the
//! replicas that answered with an older version or none, and hides
//! tombstones. Results come in token order, not key order (as Cassandra's
//! range reads do); a prefix filters within that order.
//!
//! A chunk that was cut by its limit (`more`) is complete only up to its
//! last key: the merge keeps what every answer covers (up to the smallest
//! such last key, the *horizon*) and the next read of the range starts
//! after it, so a key absent from one replica's chunk because that replica
//! stopped early is never taken for missing. Pages end on a token boundary
//! whenever they can (so a cursor is usually a bare token, which fits a
//! Redis `SCAN` cursor); every position moves strictly forward, so pages
//! neither repeat nor skip a key that was not written during the scan,
//! whatever ranges moved between pages.
//!
//! Memory is bounded per page: each replica answers at most the page's
//! remaining limit (and [`MAX_CHUNK_BYTES`] of data).

use crate::client_api::{ClientError, ClientResponse, RequestId};
use crate::storage_key::{
    classify, item_storage_key, split_storage_key_token, token_range_bounds, StoredItem,
};
use crate::storage_ops::{StorageOp, StorageResult};
use crate::time::Instant;
use crate::types::{Key, NodeId, Token, Value, Versioned};
use crate::wire::{PeerMsg, RequestTag};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// The most entries a page may ask for; larger limits are lowered to it.
pub const MAX_PAGE: usize = 10_000;

/// A replica stops a chunk once it holds this many bytes of keys and
/// values (the frame cap is 16 MiB), marking it `more`.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// A page reads at most this many ranges (or chunks) before it answers,
/// full or not, so a sparse keyspace still answers within a bounded time.
pub const MAX_READS_PER_PAGE: u32 = 256;

/// The format version of an encoded cursor.
const CURSOR_VERSION: u8 = 1;

/// Where a scan resumes: at `token`, after key `after` of that token
/// (`None`: at the token's first key). Opaque to clients through
/// [`ScanCursor::encode`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScanCursor {
    /// The first token still to be scanned.
    pub token: Token,
    /// Within `token`, the last item already passed: a key, or (when a
    /// read was cut among the cells of a row on `token`) the bytes after
    /// the token of that cell's storage key.
    pub after: Option<Key>,
}

/// Why a cursor could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Too short, another format version, or a bad checksum.
    #[error("malformed scan cursor")]
    Malformed,
    /// The cursor names a key whose token is not the cursor's token.
    #[error("scan cursor is inconsistent (key and token disagree)")]
    Inconsistent,
}

impl ScanCursor {
    /// The start of the ring.
    pub fn start() -> Self {
        ScanCursor {
            token: Token(0),
            after: None,
        }
    }

    /// The position just after `key` (a scan "from a key", in token order).
    pub fn after_key(key: impl Into<Key>) -> Self {
        let key = key.into();
        ScanCursor {
            token: Token::of(&key),
            after: Some(key),
        }
    }

    /// Whether the cursor is well formed: its key (or cell) lies on its
    /// token.
    pub fn validate(&self) -> Result<(), CursorError> {
        match &self.after {
            Some(k) if classify(&item_storage_key("", self.token, k)).is_none() => {
                Err(CursorError::Inconsistent)
            }
            _ => Ok(()),
        }
    }

    /// The cursor as bytes: a version byte, the token, the key, and a
    /// checksum, so a client's typo is refused rather than misread.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + 8 + self.after.as_ref().map_or(0, |k| k.len()) + 8);
        out.push(CURSOR_VERSION);
        out.push(u8::from(self.after.is_some()));
        out.extend_from_slice(&self.token.0.to_be_bytes());
        if let Some(k) = &self.after {
            out.extend_from_slice(k);
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_be_bytes());
        out
    }

    /// Decodes [`ScanCursor::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, CursorError> {
        if bytes.len() < 2 + 8 + 8 {
            return Err(CursorError::Malformed);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let mut s = [0u8; 8];
        s.copy_from_slice(sum);
        if xxhash_rust::xxh3::xxh3_64(body) != u64::from_be_bytes(s) || body[0] != CURSOR_VERSION {
            return Err(CursorError::Malformed);
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&body[2..10]);
        let key = &body[10..];
        let after = match body[1] {
            0 if key.is_empty() => None,
            1 => Some(Key::copy_from_slice(key)),
            _ => return Err(CursorError::Malformed),
        };
        let cursor = ScanCursor {
            token: Token(u64::from_be_bytes(t)),
            after,
        };
        cursor.validate()?;
        Ok(cursor)
    }
}

/// One replica's answer to a [`PeerMsg::ScanRead`]: its entries (storage
/// keys, tombstones included) in order, and whether it stopped early.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanChunk {
    /// Storage keys and versions, ascending.
    pub entries: Vec<(Key, Versioned)>,
    /// True when the replica stopped at the limit (or the byte cap): it
    /// may hold more keys after the last one.
    pub more: bool,
}

impl ScanChunk {
    /// A chunk of what a store's `range(.., limit)` returned: cut at
    /// [`MAX_CHUNK_BYTES`], and `more` when either limit was reached.
    pub fn from_range(mut entries: Vec<(Key, Versioned)>, limit: usize) -> Self {
        let mut more = entries.len() >= limit;
        let mut bytes = 0usize;
        for (i, (k, v)) in entries.iter().enumerate() {
            bytes += k.len() + v.value.as_ref().map_or(0, |v| v.len()) + 16;
            // Always keep the first entry so a chunk makes progress.
            if bytes > MAX_CHUNK_BYTES && i > 0 {
                entries.truncate(i);
                more = true;
                break;
            }
        }
        ScanChunk { entries, more }
    }
}

/// Who waits for a storage operation a scan asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScanWaiter {
    /// This node's own replica answering sub-read `tag`.
    Local { tag: RequestTag, limit: usize },
    /// This node serving `ScanRead` `tag` for coordinator `to`.
    Replica {
        to: NodeId,
        tag: RequestTag,
        limit: usize,
    },
    /// A repair of this node's own replica (nothing to do after).
    Repair,
}

/// One thing a scan wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScanEffect {
    /// Answer client request `0`.
    Reply(RequestId, Result<ClientResponse, ClientError>),
    /// Send a message to a replica.
    Send(NodeId, PeerMsg),
    /// Run an operation on this node's store.
    Storage(StorageOp, ScanWaiter),
}

/// A token range as the node's placement sees it: its last token, its
/// replicas, and those believed alive (and caught up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RangeView {
    /// The range's last token (inclusive).
    pub last: Token,
    /// Those replicas to ask.
    pub live: Vec<NodeId>,
}

/// A client's scan request as the node hands it to [`Scans::start`].
#[derive(Clone, Debug)]
pub(crate) struct PageRequest {
    pub client: RequestId,
    /// The keyspace's storage name.
    pub storage: String,
    /// The keyspace's replication (the placement's input).
    pub rf: crate::topology::Replication,
    pub needed: usize,
    pub prefix: Key,
    pub limit: usize,
    pub from: ScanCursor,
}

#[derive(Debug)]
struct Page {
    req: PageRequest,
    pos: ScanCursor,
    entries: Vec<(Key, Value)>,
    reads: u32,
    /// The current read: its range's last token and whom it asked.
    last: Token,
    asked: Vec<NodeId>,
    chunk_limit: usize,
    responses: Vec<(NodeId, ScanChunk)>,
    failed: usize,
    deadline: Instant,
}

/// The scans this node coordinates.
#[derive(Debug, Default)]
pub(crate) struct Scans {
    /// By the tag of each page's current read.
    pending: HashMap<RequestTag, Page>,
    deadlines: BTreeSet<(Instant, RequestTag)>,
    /// Mutation: a range whose chunk was cut is taken as read to its end.
    pub skip_range_tail: bool,
}

/// Lookups a scan needs from the node: the range holding a token, a fresh
/// request tag, and the node's own id.
pub(crate) struct ScanCtx<'a> {
    pub me: NodeId,
    pub now: Instant,
    /// The cluster time (HLC microseconds) values' expiries are judged
    /// at: an expired value is as absent as a tombstone.
    pub hlc_micros: u64,
    pub timeout: Duration,
    /// The range holding a token, for a replication factor; the flag
    /// says whether replicas still catching up (`Syncing`) are left out.
    pub range: &'a mut dyn FnMut(Token, &crate::topology::Replication, bool) -> Option<RangeView>,
    pub tag: &'a mut dyn FnMut() -> RequestTag,
}

impl Scans {
    /// The earliest deadline of a read in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(d, _)| d)
    }

    /// Scans in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Starts a page.
    pub fn start(&mut self, req: PageRequest, cx: &mut ScanCtx<'_>, fx: &mut Vec<ScanEffect>) {
        if let Err(e) = req.from.validate() {
            fx.push(ScanEffect::Reply(
                req.client,
                Err(ClientError::InvalidScan(e.to_string())),
            ));
            return;
        }
        let pos = req.from.clone();
        let page = Page {
            req,
            pos,
            entries: Vec::new(),
            reads: 0,
            last: Token(0),
            asked: Vec::new(),
            chunk_limit: 0,
            responses: Vec::new(),
            failed: 0,
            deadline: cx.now,
        };
        self.read_next(page, cx, fx);
    }

    /// Sends the page's next read: the range holding its position.
    fn read_next(&mut self, mut page: Page, cx: &mut ScanCtx<'_>, fx: &mut Vec<ScanEffect>) {
        let client = page.req.client;
        let skip_syncing = page.req.needed < page.req.rf.total();
        let Some(view) = (cx.range)(page.pos.token, &page.req.rf, skip_syncing) else {
            fx.push(ScanEffect::Reply(
                client,
                Err(ClientError::InvalidScan(
                    "scans need token-ring placement".into(),
                )),
            ));
            return;
        };
        if view.live.len() < page.req.needed {
            let err = ClientError::Unavailable {
                needed: page.req.needed,
                alive: view.live.len(),
            };
            fx.push(ScanEffect::Reply(client, partial(page, err)));
            return;
        }
        let tag = (cx.tag)();
        page.reads += 1;
        page.last = view.last;
        page.asked = view.live.clone();
        page.responses.clear();
        page.failed = 0;
        // One more than the page still wants: a chunk cut by its limit is
        // kept only up to the token before its last key, so asking for
        // exactly what remains would make a page of one key cost two reads.
        page.chunk_limit = page
            .req
            .limit
            .saturating_sub(page.entries.len())
            .saturating_add(1)
            .clamp(2, MAX_PAGE + 1);
        page.deadline = cx.now + cx.timeout;
        let msg = PeerMsg::ScanRead {
            tag,
            keyspace: page.req.storage.clone(),
            first: page.pos.token,
            last: view.last,
            after: page.pos.after.clone(),
            limit: u32::try_from(page.chunk_limit).unwrap_or(u32::MAX),
        };
        for r in &view.live {
            if *r == cx.me {
                fx.push(ScanEffect::Storage(
                    range_op(&page.req.storage, &page.pos, view.last, page.chunk_limit),
                    ScanWaiter::Local {
                        tag,
                        limit: page.chunk_limit,
                    },
                ));
            } else {
                fx.push(ScanEffect::Send(*r, msg.clone()));
            }
        }
        self.deadlines.insert((page.deadline, tag));
        self.pending.insert(tag, page);
    }

    /// A replica's answer to read `tag` (`None`: it failed or refused).
    pub fn on_chunk(
        &mut self,
        tag: RequestTag,
        from: NodeId,
        chunk: Option<ScanChunk>,
        cx: &mut ScanCtx<'_>,
        fx: &mut Vec<ScanEffect>,
    ) {
        let Some(page) = self.pending.get_mut(&tag) else {
            return; // late, duplicate or unknown
        };
        if !page.asked.contains(&from) || page.responses.iter().any(|(n, _)| *n == from) {
            return;
        }
        match chunk {
            Some(c) => page.responses.push((from, c)),
            None => page.failed += 1,
        }
        let needed = page.req.needed;
        if page.responses.len() >= needed {
            let Some(page) = self.take(tag) else { return };
            self.merge(page, cx, fx);
        } else if page.asked.len() - page.failed < needed {
            let Some(page) = self.take(tag) else { return };
            let err = ClientError::ReplicaFailure {
                acked: page.responses.len(),
                failed: page.failed,
                needed,
            };
            fx.push(ScanEffect::Reply(page.req.client, partial(page, err)));
        }
    }

    /// This node's own store answered read `tag`.
    pub fn storage_done(
        &mut self,
        waiter: ScanWaiter,
        result: StorageResult,
        cx: &mut ScanCtx<'_>,
        fx: &mut Vec<ScanEffect>,
    ) {
        let chunk = |limit: usize| match result {
            StorageResult::Ranged(Ok(entries)) => Some(ScanChunk::from_range(entries, limit)),
            _ => None,
        };
        match waiter {
            ScanWaiter::Local { tag, limit } => {
                let c = chunk(limit);
                self.on_chunk(tag, cx.me, c, cx, fx);
            }
            ScanWaiter::Replica { to, tag, limit } => {
                let result = chunk(limit).ok_or(());
                fx.push(ScanEffect::Send(to, PeerMsg::ScanReply { tag, result }));
            }
            ScanWaiter::Repair => {}
        }
    }

    fn take(&mut self, tag: RequestTag) -> Option<Page> {
        let page = self.pending.remove(&tag)?;
        self.deadlines.remove(&(page.deadline, tag));
        Some(page)
    }

    /// Enough replicas answered the page's read: merge, repair, move on.
    fn merge(&mut self, mut page: Page, cx: &mut ScanCtx<'_>, fx: &mut Vec<ScanEffect>) {
        // Each cut chunk is complete only up to its last key.
        let mut horizon: Option<Key> = page
            .responses
            .iter()
            .filter(|(_, c)| c.more)
            .filter_map(|(_, c)| c.entries.last().map(|(k, _)| k.clone()))
            .min();
        if self.skip_range_tail {
            horizon = None;
        }
        let mut merged: BTreeMap<Key, Versioned> = BTreeMap::new();
        for (_, c) in &page.responses {
            for (k, v) in &c.entries {
                if horizon.as_ref().is_some_and(|h| k > h) {
                    break;
                }
                match merged.get(k) {
                    Some(best) if best.lww_cmp(v) != Ordering::Less => {}
                    _ => {
                        merged.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        // Read repair: every answering replica gets each winner it lacks.
        for (node, c) in &page.responses {
            let have: HashMap<&Key, &Versioned> = c.entries.iter().map(|(k, v)| (k, v)).collect();
            for (k, best) in &merged {
                let stale = have
                    .get(k)
                    .is_none_or(|v| v.lww_cmp(best) == Ordering::Less);
                if !stale {
                    continue;
                }
                if *node == cx.me {
                    fx.push(ScanEffect::Storage(
                        StorageOp::Apply {
                            key: k.clone(),
                            version: best.clone(),
                        },
                        ScanWaiter::Repair,
                    ));
                } else {
                    fx.push(ScanEffect::Send(
                        *node,
                        PeerMsg::Repair {
                            key: k.clone(),
                            version: best.clone(),
                        },
                    ));
                }
            }
        }
        // Where the next read starts; a cut read ends at a token boundary
        // when that still moves forward.
        let next: Option<ScanCursor> = match &horizon {
            None => page.last.0.checked_add(1).map(|t| ScanCursor {
                token: Token(t),
                after: None,
            }),
            Some(h) => {
                let (_, th, key) = split_storage_key_token(h).unwrap_or(("", page.pos.token, h));
                if th > page.pos.token {
                    merged
                        .retain(|k, _| split_storage_key_token(k).is_some_and(|(_, t, _)| t < th));
                    Some(ScanCursor {
                        token: th,
                        after: None,
                    })
                } else {
                    Some(ScanCursor {
                        token: th,
                        after: Some(Key::copy_from_slice(key)),
                    })
                }
            }
        };
        for (k, v) in merged {
            // Plain keys only: a row's cells (Redis hashes) have no single
            // value and are read with row reads.
            let live = v.live_value(cx.hlc_micros).cloned();
            let (Some((_, StoredItem::Plain(key))), Some(value)) = (classify(&k), live) else {
                continue;
            };
            if key.starts_with(&page.req.prefix) {
                page.entries.push((Key::copy_from_slice(key), value));
            }
        }
        let client = page.req.client;
        let limit = page.req.limit;
        if page.entries.len() >= limit {
            let next = cut(&mut page.entries, limit).or(next);
            fx.push(ScanEffect::Reply(
                client,
                Ok(ClientResponse::Page {
                    entries: page.entries,
                    next,
                }),
            ));
            return;
        }
        match next {
            Some(pos) if page.reads < MAX_READS_PER_PAGE => {
                page.pos = pos;
                self.read_next(page, cx, fx);
            }
            next => fx.push(ScanEffect::Reply(
                client,
                Ok(ClientResponse::Page {
                    entries: page.entries,
                    next,
                }),
            )),
        }
    }

    /// Fails the pages whose read is past its deadline.
    pub fn expire(&mut self, now: Instant, fx: &mut Vec<ScanEffect>) {
        while let Some(&(d, tag)) = self.deadlines.first() {
            if d > now {
                break;
            }
            let Some(page) = self.take(tag) else { continue };
            let err = ClientError::Timeout {
                acked: page.responses.len(),
                needed: page.req.needed,
            };
            fx.push(ScanEffect::Reply(page.req.client, partial(page, err)));
        }
    }

    /// Fails every page in flight (the node shuts down).
    pub fn shutdown(&mut self, fx: &mut Vec<ScanEffect>) {
        let tags: Vec<RequestTag> = self.pending.keys().copied().collect();
        for tag in tags {
            if let Some(page) = self.take(tag) {
                fx.push(ScanEffect::Reply(
                    page.req.client,
                    Err(ClientError::ShuttingDown),
                ));
            }
        }
    }
}

/// The answer to a page whose current read failed with `err`: the
/// entries it already holds and a cursor at the failed read's position
/// (the client resumes there), or `err` when it holds none.
fn partial(page: Page, err: ClientError) -> Result<ClientResponse, ClientError> {
    if page.entries.is_empty() {
        return Err(err);
    }
    Ok(ClientResponse::Page {
        entries: page.entries,
        next: Some(page.pos),
    })
}

/// Cuts a page that holds more than `limit` entries back to `limit` at
/// most, on a token boundary when one lies within the page; returns where
/// the next page starts (`None`: nothing was cut).
fn cut(entries: &mut Vec<(Key, Value)>, limit: usize) -> Option<ScanCursor> {
    let first_out = entries.get(limit)?;
    let t = Token::of(&first_out.0);
    let keep = entries
        .iter()
        .take(limit)
        .take_while(|(k, _)| Token::of(k) < t)
        .count();
    if keep > 0 {
        entries.truncate(keep);
        Some(ScanCursor {
            token: t,
            after: None,
        })
    } else {
        // More than `limit` keys share one token (a 64-bit hash
        // collision): resume after the last key kept.
        entries.truncate(limit.max(1));
        let last = entries.last().map(|(k, _)| k.clone()).unwrap_or_default();
        Some(ScanCursor {
            token: Token::of(&last),
            after: Some(last),
        })
    }
}

/// The store read for the range of `storage` from `pos` through `last`.
pub(crate) fn range_op(storage: &str, pos: &ScanCursor, last: Token, limit: usize) -> StorageOp {
    let (start, end) = token_range_bounds(storage, pos.token, last);
    let start = match &pos.after {
        // On the cursor's token, not `Token::of(k)`: `k` may be a cell's
        // tail, which does not hash to its row's token.
        Some(k) => std::ops::Bound::Excluded(item_storage_key(storage, pos.token, k)),
        None => start,
    };
    StorageOp::Range { start, end, limit }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage_key::{cell_storage_key, storage_key};
    use crate::types::Timestamp;

    const ME: NodeId = NodeId(1);

    fn ts(m: u64) -> Timestamp {
        Timestamp::new(m, 0, NodeId(9))
    }

    /// The cluster time the test scans judge expiries at.
    const HLC_NOW: u64 = 1_000;

    /// A three-replica ring cut in two ranges at `u64::MAX / 2`.
    fn ctx<'a>(
        range: &'a mut dyn FnMut(Token, &crate::topology::Replication, bool) -> Option<RangeView>,
        tag: &'a mut dyn FnMut() -> RequestTag,
    ) -> ScanCtx<'a> {
        ScanCtx {
            me: ME,
            now: Instant::ZERO,
            hlc_micros: HLC_NOW,
            timeout: Duration::from_secs(1),
            range,
            tag,
        }
    }

    fn two_ranges(t: Token, _rf: &crate::topology::Replication, _skip: bool) -> Option<RangeView> {
        let last = if t.0 <= u64::MAX / 2 {
            Token(u64::MAX / 2)
        } else {
            Token(u64::MAX)
        };
        Some(RangeView {
            last,
            live: vec![NodeId(2), NodeId(3), NodeId(4)],
        })
    }

    fn req(limit: usize, from: ScanCursor) -> PageRequest {
        req_with(limit, from, b"")
    }

    fn req_with(limit: usize, from: ScanCursor, prefix: &[u8]) -> PageRequest {
        PageRequest {
            client: RequestId(7),
            storage: "ks".into(),
            rf: 3.into(),
            needed: 2,
            prefix: Key::copy_from_slice(prefix),
            limit,
            from,
        }
    }

    /// What a replica holding `data` (storage keys) answers to `msg`.
    fn answer(data: &BTreeMap<Key, Versioned>, msg: &PeerMsg) -> ScanChunk {
        let PeerMsg::ScanRead {
            keyspace,
            first,
            last,
            after,
            limit,
            ..
        } = msg
        else {
            panic!("not a scan read: {msg:?}");
        };
        let pos = ScanCursor {
            token: *first,
            after: after.clone(),
        };
        let StorageOp::Range { start, end, limit } =
            range_op(keyspace, &pos, *last, *limit as usize)
        else {
            unreachable!()
        };
        let mut all: Vec<(Key, Versioned)> = data
            .range((start, end))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.truncate(limit);
        ScanChunk::from_range(all, limit)
    }

    /// Scans to the end in pages of `limit` with replicas 2 and 3 holding
    /// `a` and `b` (replica 4 never answers); returns every page.
    fn scan_all(
        a: &BTreeMap<Vec<u8>, Versioned>,
        b: &BTreeMap<Vec<u8>, Versioned>,
        limit: usize,
        skip_tail: bool,
    ) -> (Vec<Vec<(Key, Value)>>, Vec<ScanEffect>) {
        scan_prefix(a, b, limit, skip_tail, b"")
    }

    fn scan_prefix(
        a: &BTreeMap<Vec<u8>, Versioned>,
        b: &BTreeMap<Vec<u8>, Versioned>,
        limit: usize,
        skip_tail: bool,
        prefix: &[u8],
    ) -> (Vec<Vec<(Key, Value)>>, Vec<ScanEffect>) {
        let stored = |d: &BTreeMap<Vec<u8>, Versioned>| -> BTreeMap<Key, Versioned> {
            d.iter()
                .map(|(k, v)| (storage_key("ks", k), v.clone()))
                .collect()
        };
        scan_stored(&stored(a), &stored(b), limit, skip_tail, prefix)
    }

    /// [`scan_prefix`] over replicas given by storage keys (so they may
    /// hold cells).
    fn scan_stored(
        a: &BTreeMap<Key, Versioned>,
        b: &BTreeMap<Key, Versioned>,
        limit: usize,
        skip_tail: bool,
        prefix: &[u8],
    ) -> (Vec<Vec<(Key, Value)>>, Vec<ScanEffect>) {
        let mut scans = Scans {
            skip_range_tail: skip_tail,
            ..Scans::default()
        };
        let mut next_tag = 0u64;
        let mut range = two_ranges;
        let mut tagf = || {
            next_tag += 1;
            next_tag
        };
        let mut cx = ctx(&mut range, &mut tagf);
        let mut pages = Vec::new();
        let mut repairs = Vec::new();
        let mut cursor = Some(ScanCursor::start());
        let mut guard = 0;
        while let Some(from) = cursor.take() {
            guard += 1;
            assert!(guard < 10_000, "the scan does not end");
            let mut fx = Vec::new();
            scans.start(req_with(limit, from, prefix), &mut cx, &mut fx);
            loop {
                let sends: Vec<ScanEffect> = std::mem::take(&mut fx);
                let mut progressed = false;
                for e in sends {
                    match e {
                        ScanEffect::Send(n, msg @ PeerMsg::ScanRead { .. }) => {
                            let PeerMsg::ScanRead { tag, .. } = &msg else {
                                unreachable!()
                            };
                            let data = match n.0 {
                                2 => a,
                                3 => b,
                                _ => continue,
                            };
                            let chunk = answer(data, &msg);
                            scans.on_chunk(*tag, n, Some(chunk), &mut cx, &mut fx);
                            progressed = true;
                        }
                        ScanEffect::Reply(_, Ok(ClientResponse::Page { entries, next })) => {
                            pages.push(entries);
                            cursor = next;
                        }
                        ScanEffect::Reply(_, other) => panic!("page failed: {other:?}"),
                        other => repairs.push(other),
                    }
                }
                if !progressed && fx.is_empty() {
                    break;
                }
            }
        }
        (pages, repairs)
    }

    fn data(keys: impl IntoIterator<Item = u32>, at: u64) -> BTreeMap<Vec<u8>, Versioned> {
        keys.into_iter()
            .map(|i| {
                (
                    format!("key{i}").into_bytes(),
                    Versioned::value(ts(at), format!("v{i}@{at}")),
                )
            })
            .collect()
    }

    #[test]
    fn pages_return_every_live_key_once_in_token_order() {
        let a = data(0..300, 10);
        let b = data(0..300, 10);
        for limit in [1, 7, 50, 1000] {
            let (pages, repairs) = scan_all(&a, &b, limit, false);
            let keys: Vec<Key> = pages.iter().flatten().map(|(k, _)| k.clone()).collect();
            assert_eq!(keys.len(), 300, "limit {limit}");
            let set: BTreeSet<&Key> = keys.iter().collect();
            assert_eq!(set.len(), 300, "duplicates at limit {limit}");
            let tokens: Vec<Token> = keys.iter().map(|k| Token::of(k)).collect();
            assert!(tokens.windows(2).all(|w| w[0] < w[1]), "token order");
            assert!(pages.iter().all(|p| p.len() <= limit));
            assert!(repairs.is_empty(), "equal replicas need no repair");
        }
    }

    #[test]
    fn expired_values_are_hidden_like_tombstones() {
        // Keys 0..10 ended before the scan's cluster time, 10..20 end after
        // it; both replicas agree.
        let mut a = data(20..100, 10);
        for i in 0..20u32 {
            let expires = if i < 10 { HLC_NOW - 1 } else { HLC_NOW + 1 };
            a.insert(
                format!("key{i}").into_bytes(),
                Versioned::expiring(ts(10), format!("v{i}"), expires),
            );
        }
        let (pages, _) = scan_all(&a, &a.clone(), 7, false);
        let got: BTreeSet<Key> = pages.into_iter().flatten().map(|(k, _)| k).collect();
        assert_eq!(got.len(), 90);
        assert!((0..10).all(|i| !got.contains(format!("key{i}").as_bytes())));
        assert!((10..20).all(|i| got.contains(format!("key{i}").as_bytes())));
    }

    #[test]
    fn replicas_that_differ_are_merged_by_lww_and_repaired() {
        // Replica 2 misses keys 100..200 and has older values of 0..50;
        // replica 3 has key 250 deleted after replica 2's value of it.
        let mut a = data((0..100).chain(200..300), 10);
        a.extend(data(0..50, 5));
        let mut b = data(0..300, 10);
        b.insert(b"key250".to_vec(), Versioned::tombstone(ts(20)));
        let (pages, repairs) = scan_all(&a, &b, 13, false);
        let got: BTreeMap<Key, Value> = pages.into_iter().flatten().collect();
        assert_eq!(got.len(), 299);
        assert!(!got.contains_key(&b"key250"[..]));
        assert_eq!(got[&b"key3"[..]], Value::from("v3@10"));
        // The test's replicas do not apply repairs, so a key read twice
        // (a page cut back to a token boundary) is repaired twice.
        let repaired_on_2: BTreeSet<Key> = repairs
            .iter()
            .filter_map(|e| match e {
                ScanEffect::Send(NodeId(2), PeerMsg::Repair { key, .. }) => Some(key.clone()),
                _ => None,
            })
            .collect();
        // 100 missing, 50 older, 1 tombstone.
        assert_eq!(repaired_on_2.len(), 151);
        assert!(!repairs
            .iter()
            .any(|e| matches!(e, ScanEffect::Send(NodeId(3), PeerMsg::Repair { .. }))));
    }

    #[test]
    fn a_replica_that_stops_early_does_not_hide_keys() {
        // Replica 3 holds many tombstones before the live keys, so its chunk
        // is cut far earlier in the range than replica 2's.
        let a = data(0..200, 10);
        let mut b = data(0..200, 10);
        for i in 1000..1400 {
            b.insert(
                format!("gone{i}").into_bytes(),
                Versioned::tombstone(ts(11)),
            );
        }
        let (pages, _) = scan_all(&a, &b, 17, false);
        let n: usize = pages.iter().map(Vec::len).sum();
        assert_eq!(n, 200);
    }

    #[test]
    fn the_skip_range_tail_mutation_loses_keys() {
        // With a prefix, pages fill slowly, so reads go on past a cut chunk.
        let a = data(0..300, 10);
        let (pages, _) = scan_prefix(&a, &a, 7, false, b"key1");
        let n: usize = pages.iter().map(Vec::len).sum();
        assert_eq!(n, 111, "key1, key10..19, key100..199");
        assert!(pages.iter().flatten().all(|(k, _)| k.starts_with(b"key1")));
        let (pages, _) = scan_prefix(&a, &a, 7, true, b"key1");
        let n: usize = pages.iter().map(Vec::len).sum();
        assert!(n < 111, "the mutation should lose keys, got {n}");
    }

    #[test]
    fn a_read_cut_among_a_rows_cells_resumes_after_the_cell() {
        // A row of 100 cells (a Redis hash) among 300 plain keys: reads
        // of 8 items are cut inside the row, and the next read must start
        // after the last cell passed on the row's token, not at the token
        // the cell's bytes hash to (which skipped the rest of the range).
        let mut a: BTreeMap<Key, Versioned> = data(0..300, 10)
            .into_iter()
            .map(|(k, v)| (storage_key("ks", &k), v))
            .collect();
        for c in 0..100 {
            let cell = cell_storage_key("ks", b"row", format!("f{c}").as_bytes()).unwrap();
            a.insert(cell, Versioned::value(ts(10), "cell"));
        }
        for limit in [1, 7, 50] {
            let (pages, _) = scan_stored(&a, &a, limit, false, b"");
            let keys: Vec<Key> = pages.into_iter().flatten().map(|(k, _)| k).collect();
            let set: BTreeSet<&Key> = keys.iter().collect();
            assert_eq!(keys.len(), 300, "limit {limit}");
            assert_eq!(set.len(), 300, "duplicates at limit {limit}");
        }
        // Such a position is a valid cursor; a tail on another token is not.
        let cell = cell_storage_key("ks", b"row", b"f1").unwrap();
        let (_, token, tail) = split_storage_key_token(&cell).unwrap();
        let at = ScanCursor {
            token,
            after: Some(Key::copy_from_slice(tail)),
        };
        assert_eq!(ScanCursor::decode(&at.encode()), Ok(at));
        let off = ScanCursor {
            token: Token(token.0 ^ 1),
            after: Some(Key::copy_from_slice(tail)),
        };
        assert_eq!(off.validate(), Err(CursorError::Inconsistent));
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_typed_errors() {
        for c in [
            ScanCursor::start(),
            ScanCursor::after_key(&b"alice"[..]),
            ScanCursor::after_key(&b""[..]),
            ScanCursor {
                token: Token(u64::MAX),
                after: None,
            },
        ] {
            assert_eq!(ScanCursor::decode(&c.encode()), Ok(c));
        }
        let mut bytes = ScanCursor::after_key(&b"alice"[..]).encode();
        bytes[3] ^= 1;
        assert_eq!(ScanCursor::decode(&bytes), Err(CursorError::Malformed));
        assert_eq!(ScanCursor::decode(b"short"), Err(CursorError::Malformed));
        let bad = ScanCursor {
            token: Token(5),
            after: Some(Key::from_static(b"alice")),
        };
        assert_eq!(
            ScanCursor::decode(&bad.encode()),
            Err(CursorError::Inconsistent)
        );
        // A page that starts from it is refused with a typed error.
        let mut scans = Scans::default();
        let mut range = two_ranges;
        let mut tagf = || 1;
        let mut cx = ctx(&mut range, &mut tagf);
        let mut fx = Vec::new();
        scans.start(req(10, bad), &mut cx, &mut fx);
        assert!(matches!(
            fx.as_slice(),
            [ScanEffect::Reply(_, Err(ClientError::InvalidScan(_)))]
        ));
    }

    #[test]
    fn too_few_answers_fail_the_page_and_deadlines_time_it_out() {
        let mut scans = Scans::default();
        let mut range = two_ranges;
        let mut tagf = || 9;
        let mut cx = ctx(&mut range, &mut tagf);
        let mut fx = Vec::new();
        scans.start(req(10, ScanCursor::start()), &mut cx, &mut fx);
        fx.clear();
        scans.on_chunk(9, NodeId(2), None, &mut cx, &mut fx);
        assert!(fx.is_empty());
        scans.on_chunk(9, NodeId(3), None, &mut cx, &mut fx);
        assert!(matches!(
            fx.as_slice(),
            [ScanEffect::Reply(
                _,
                Err(ClientError::ReplicaFailure { .. })
            )]
        ));
        assert_eq!(scans.in_flight(), 0);
        scans.start(req(10, ScanCursor::start()), &mut cx, &mut fx);
        fx.clear();
        scans.expire(Instant::ZERO + Duration::from_secs(2), &mut fx);
        assert!(matches!(
            fx.as_slice(),
            [ScanEffect::Reply(_, Err(ClientError::Timeout { .. }))]
        ));
        assert_eq!(scans.next_deadline(), None);
    }
}
