//! Hinted handoff: a coordinator keeps the writes a replica missed (it was
//! down, timed out or failed) in a per-target hint log on its host's disk,
//! and replays them, throttled, once the target is up again.
//!
//! A hint carries the write's original timestamp, so replaying it is
//! idempotent and can never overwrite a newer version. A hint never counts
//! toward a consistency level. Hints are a fast path, not the guarantee:
//! past the window or the caps this node stops hinting (and counts it), and
//! anti-entropy repairs what hints did not carry. A hint older than the
//! tombstone grace is dropped rather than replayed, since the delete that
//! superseded it may have been purged (Cassandra's rule).

use crate::budget::ByteBudget;
use crate::effects::{AfterApply, BgWaiter, Effects};
use crate::hint_log::{Hint, HintBacklog};
use crate::storage_key::split_storage_key_token;
use crate::storage_ops::StorageOp;
use crate::time::Instant;
use crate::types::{Key, NodeId, Versioned};
use crate::wire::PeerMsg;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How hinted handoff behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintConfig {
    /// Whether coordinators keep hints at all.
    pub enabled: bool,
    /// No new hints for a target down longer than this, or whose oldest
    /// undelivered hint is older (a flapping node cannot pile up hints
    /// forever). 3 hours by default, as Cassandra's `max_hint_window`.
    pub window: Duration,
    /// Hint bytes held for one target, at most. 256 MiB by default.
    pub max_bytes_per_target: u64,
    /// Hint bytes held for all targets together, at most. 1 GiB by default.
    pub max_bytes_total: u64,
    /// Bytes per delivery batch. 256 KiB by default.
    pub batch_bytes: u64,
    /// The longest wait for a batch's acknowledgement before it is sent
    /// again (the first resend comes after 1 s, each next one waits twice
    /// as long, up to this).
    pub delivery_timeout: Duration,
}

impl Default for HintConfig {
    fn default() -> Self {
        HintConfig {
            enabled: true,
            window: Duration::from_secs(3 * 3600),
            max_bytes_per_target: 256 * 1024 * 1024,
            max_bytes_total: 1024 * 1024 * 1024,
            batch_bytes: 256 * 1024,
            delivery_timeout: Duration::from_secs(10),
        }
    }
}

/// Hint messages between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HintMsg {
    /// Holder → target: writes you missed, with their original timestamps.
    Batch {
        /// Echoed in the ack.
        tag: u64,
        /// Storage keys and versions.
        items: Vec<(Key, Versioned)>,
    },
    /// Target → holder: the batch was applied (`ok`) or not.
    Ack {
        /// The batch.
        tag: u64,
        /// Whether every item was applied.
        ok: bool,
    },
}

/// Hint figures for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HintStatus {
    /// Hints stored.
    pub stored: u64,
    /// Hints delivered and acknowledged.
    pub delivered: u64,
    /// Hints not stored because a cap was reached.
    pub dropped_cap: u64,
    /// Hints not stored because the target was past the window.
    pub dropped_window: u64,
    /// Hints dropped at delivery because they were older than the grace.
    pub dropped_expired: u64,
    /// Hints that failed to be stored.
    pub failed: u64,
    /// Bytes pending, per target.
    pub pending_bytes: BTreeMap<u64, u64>,
}

#[derive(Debug, Default)]
struct Target {
    bytes: u64,
    /// Highest sequence number appended (or known from the log).
    last_seq: u64,
    /// Everything up to here was delivered (or dropped).
    delivered_through: u64,
    oldest_created: u64,
    /// The batch in flight: (tag, last seq, bytes, count, sent at).
    in_flight: Option<(u64, u64, u64, u64, Instant)>,
    reading: bool,
    /// Times the batch in flight was sent again unacknowledged: its next
    /// resend waits twice as long.
    resends: u32,
}

/// The first wait for a batch's acknowledgement before it is sent again.
/// Short, because the likeliest loss is the first frames to a target that
/// just restarted (a transport reconnecting drops them), and the target
/// stays `Syncing` until its hints arrive; each resend doubles the wait, up
/// to [`HintConfig::delivery_timeout`], so a slow target is not flooded.
const FIRST_RESEND: Duration = Duration::from_secs(1);

impl Target {
    fn pending(&self) -> bool {
        self.last_seq > self.delivered_through
    }

    /// How long the batch in flight may wait for its acknowledgement.
    fn resend_after(&self, max: Duration) -> Duration {
        FIRST_RESEND
            .saturating_mul(1u32 << self.resends.min(16))
            .min(max)
    }
}

/// The hinted-handoff machine of one node.
#[derive(Debug)]
pub(crate) struct Hints {
    cfg: HintConfig,
    grace_micros: u64,
    targets: BTreeMap<NodeId, Target>,
    total_bytes: u64,
    status: HintStatus,
    next_tag: u64,
    loaded: bool,
    asked_backlog: bool,
    /// When [`Hints::tick`] next has something to try.
    next_tick: Instant,
}

impl Hints {
    /// A machine with nothing held yet; [`Hints::tick`] reads the log's
    /// backlog first.
    pub fn new(cfg: HintConfig, grace: Duration, tag_base: u64) -> Self {
        Hints {
            cfg,
            grace_micros: u64::try_from(grace.as_micros()).unwrap_or(u64::MAX),
            targets: BTreeMap::new(),
            total_bytes: 0,
            status: HintStatus::default(),
            next_tag: tag_base,
            loaded: false,
            asked_backlog: false,
            next_tick: Instant::ZERO,
        }
    }

    /// Figures for status and metrics.
    pub fn status(&self) -> HintStatus {
        let mut s = self.status.clone();
        s.pending_bytes = self
            .targets
            .iter()
            .filter(|(_, t)| t.pending())
            .map(|(id, t)| (id.0, t.bytes))
            .collect();
        s
    }

    /// Targets this node holds undelivered hints for (gossiped, so that a
    /// revived target stays `Syncing` until they are delivered).
    pub fn targets_pending(&self) -> Vec<NodeId> {
        self.targets
            .iter()
            .filter(|(_, t)| t.pending())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Keeps a hint of `version` under `key` for `target`, which missed it;
    /// `down_for` is how long the target has been believed down (zero when
    /// it is up but did not answer).
    pub fn hint(
        &mut self,
        target: NodeId,
        key: Key,
        version: Versioned,
        down_for: Duration,
        wall: u64,
        fx: &mut Effects,
    ) {
        if !self.cfg.enabled {
            return;
        }
        let window = u64::try_from(self.cfg.window.as_micros()).unwrap_or(u64::MAX);
        let t = self.targets.entry(target).or_default();
        let oldest_too_old =
            t.pending() && t.oldest_created > 0 && wall.saturating_sub(t.oldest_created) > window;
        if down_for > self.cfg.window || oldest_too_old {
            self.status.dropped_window += 1;
            return;
        }
        let hint = Hint {
            key,
            version,
            created_micros: wall,
        };
        let charge = hint.charge();
        if t.bytes + charge > self.cfg.max_bytes_per_target
            || self.total_bytes + charge > self.cfg.max_bytes_total
        {
            self.status.dropped_cap += 1;
            return;
        }
        // Counted at once, so the caps hold while appends are in flight.
        t.bytes += charge;
        self.total_bytes += charge;
        if t.oldest_created == 0 || !t.pending() {
            t.oldest_created = wall;
        }
        fx.append_hint(target, hint);
    }

    /// An append completed.
    pub fn on_appended(&mut self, target: NodeId, charge: u64, result: Result<u64, String>) {
        let t = self.targets.entry(target).or_default();
        match result {
            Ok(seq) => {
                t.last_seq = t.last_seq.max(seq);
                self.status.stored += 1;
            }
            Err(_) => {
                t.bytes = t.bytes.saturating_sub(charge);
                self.total_bytes = self.total_bytes.saturating_sub(charge);
                self.status.failed += 1;
            }
        }
    }

    /// The log's backlog, read at start.
    pub fn on_backlog(&mut self, result: Result<Vec<(NodeId, HintBacklog)>, String>) {
        match result {
            Ok(list) => {
                for (id, b) in list {
                    let t = self.targets.entry(id).or_default();
                    t.last_seq = t.last_seq.max(b.last_seq);
                    t.delivered_through = t.delivered_through.max(b.first_seq.saturating_sub(1));
                    t.bytes += b.bytes;
                    self.total_bytes += b.bytes;
                    if t.oldest_created == 0 {
                        t.oldest_created = b.oldest_micros;
                    }
                }
                self.loaded = true;
            }
            Err(_) => self.asked_backlog = false,
        }
    }

    /// When [`Hints::tick`] wants to run next: at once after an ack or at
    /// start, else once a second while hints are pending (a target may
    /// have come up), or when a batch in flight times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut pending = !self.loaded && !self.asked_backlog;
        for tg in self.targets.values() {
            if let Some((.., sent)) = tg.in_flight {
                let d = sent + tg.resend_after(self.cfg.delivery_timeout);
                t = Some(t.map_or(d, |x| x.min(d)));
            } else if tg.pending() && !tg.reading {
                pending = true;
            }
        }
        if pending {
            t = Some(t.map_or(self.next_tick, |x| x.min(self.next_tick)));
        }
        t
    }

    /// Starts deliveries to targets that are up and have hints pending.
    pub fn tick(
        &mut self,
        now: Instant,
        alive: &dyn Fn(NodeId) -> bool,
        budget: &mut ByteBudget,
        fx: &mut Effects,
    ) {
        self.next_tick = now + Duration::from_secs(1);
        if !self.loaded {
            if !self.asked_backlog {
                self.asked_backlog = true;
                fx.storage(StorageOp::HintBacklog, BgWaiter::HintBacklog);
            }
            return;
        }
        for (&id, t) in &mut self.targets {
            if let Some((.., sent)) = t.in_flight {
                if now.saturating_duration_since(sent) >= t.resend_after(self.cfg.delivery_timeout)
                {
                    // Unacknowledged: read and send the batch again.
                    t.in_flight = None;
                    t.resends = t.resends.saturating_add(1);
                }
            }
            if !t.pending() || t.in_flight.is_some() || t.reading || !alive(id) {
                continue;
            }
            if !budget.ready(now) {
                self.next_tick = budget.ready_at();
                return;
            }
            t.reading = true;
            fx.storage(
                StorageOp::HintRead {
                    target: id,
                    after: t.delivered_through,
                    max_bytes: self.cfg.batch_bytes,
                },
                BgWaiter::HintsRead { target: id },
            );
        }
    }

    /// A batch of `target`'s hints was read: send what is still live.
    pub fn on_read(
        &mut self,
        target: NodeId,
        result: Result<Vec<(u64, Hint)>, String>,
        now: Instant,
        wall: u64,
        budget: &mut ByteBudget,
        fx: &mut Effects,
    ) {
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        t.reading = false;
        let Ok(batch) = result else {
            return;
        };
        let Some(&(last, _)) = batch.last() else {
            // The log holds nothing past what we thought: all delivered.
            t.delivered_through = t.last_seq;
            self.total_bytes = self.total_bytes.saturating_sub(t.bytes);
            t.bytes = 0;
            return;
        };
        let bytes: u64 = batch.iter().map(|(_, h)| h.charge()).sum();
        let cutoff = wall.saturating_sub(self.grace_micros);
        let before = batch.len();
        let items: Vec<(Key, Versioned)> = batch
            .into_iter()
            .filter(|(_, h)| h.version.ts.micros >= cutoff)
            .map(|(_, h)| (h.key, h.version))
            .collect();
        self.status.dropped_expired += (before - items.len()) as u64;
        let tag = self.next_tag;
        self.next_tag += 1;
        let count = items.len() as u64;
        t.in_flight = Some((tag, last, bytes, count, now));
        budget.charge(now, bytes);
        fx.send(target, PeerMsg::Hints(HintMsg::Batch { tag, items }));
    }

    /// A hint message from `from`.
    pub fn on_message(
        &mut self,
        from: NodeId,
        msg: HintMsg,
        known: &dyn Fn(&str) -> bool,
        fx: &mut Effects,
    ) {
        match msg {
            HintMsg::Batch { tag, items } => {
                let valid = items.len() <= crate::anti_entropy::MAX_SYNC_ENTRIES * 16
                    && items.iter().all(|(k, _)| {
                        split_storage_key_token(k).is_some_and(|(ks, _, _)| known(ks))
                    });
                if !valid {
                    fx.send(from, PeerMsg::Hints(HintMsg::Ack { tag, ok: false }));
                } else if items.is_empty() {
                    fx.send(from, PeerMsg::Hints(HintMsg::Ack { tag, ok: true }));
                } else {
                    fx.storage(
                        StorageOp::ApplyBatch {
                            items: items.clone(),
                        },
                        BgWaiter::ApplyItems {
                            items,
                            then: AfterApply::HintBatch { to: from, tag },
                        },
                    );
                }
            }
            HintMsg::Ack { tag, ok } => {
                let Some(t) = self.targets.get_mut(&from) else {
                    return;
                };
                let Some((sent_tag, last, bytes, count, _)) = t.in_flight else {
                    return;
                };
                if sent_tag != tag {
                    return;
                }
                t.in_flight = None;
                t.resends = 0;
                if !ok {
                    return;
                }
                // Delivered: send the next batch without waiting a tick.
                self.next_tick = Instant::ZERO;
                t.delivered_through = last;
                t.bytes = t.bytes.saturating_sub(bytes);
                self.total_bytes = self.total_bytes.saturating_sub(bytes);
                self.status.delivered += count;
                if !t.pending() {
                    t.bytes = 0;
                    t.oldest_created = 0;
                }
                fx.storage(
                    StorageOp::HintTrim {
                        target: from,
                        through: last,
                    },
                    BgWaiter::HintsTrimmed,
                );
            }
        }
    }

    /// `target` left the cluster for good: forget its hints.
    pub fn forget(&mut self, target: NodeId, fx: &mut Effects) {
        if let Some(t) = self.targets.remove(&target) {
            self.total_bytes = self.total_bytes.saturating_sub(t.bytes);
            fx.storage(StorageOp::HintDrop { target }, BgWaiter::HintsTrimmed);
        }
    }
}
