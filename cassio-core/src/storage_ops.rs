//! The work a node hands its host for the store and the hint log
//! ([`StorageOp`]), and what comes back ([`StorageResult`]). The host runs
//! each operation against its [`crate::Store`] or [`crate::hint_log::HintLog`]
//! and calls `Node::handle_storage` with the token it was given.

use crate::hint_log::{Hint, HintBacklog};
use crate::store::{ApplyOutcome, KeyDigest};
use crate::types::{Key, NodeId, Versioned};
use std::ops::Bound;

/// A storage operation for the host to run against its store or hint log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageOp {
    /// `Store::apply_replacing(key, version)`.
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
    /// `Store::apply_replacing` of each item, in order.
    ApplyBatch {
        /// Storage keys and versions.
        items: Vec<(Key, Versioned)>,
    },
    /// `Store::get` of each key, in order.
    GetBatch {
        /// Storage keys.
        keys: Vec<Key>,
    },
    /// `Store::digests(start, end, limit)`.
    Digests {
        /// Lower bound (storage keys).
        start: Bound<Key>,
        /// Upper bound (storage keys).
        end: Bound<Key>,
        /// At most this many entries.
        limit: usize,
    },
    /// `Store::range(start, end, limit)` (a scan's read, a row's cells).
    Range {
        /// Lower bound (storage keys).
        start: Bound<Key>,
        /// Upper bound (storage keys).
        end: Bound<Key>,
        /// At most this many entries.
        limit: usize,
    },
    /// `Store::set_purge_watermark(micros)`.
    SetPurgeWatermark {
        /// The new watermark (HLC microseconds).
        micros: u64,
    },
    /// `HintLog::append(target, hint)`.
    HintAppend {
        /// The node the hint is for.
        target: NodeId,
        /// The hint.
        hint: Hint,
    },
    /// `HintLog::read(target, after, max_bytes)`.
    HintRead {
        /// The node the hints are for.
        target: NodeId,
        /// Read hints after this sequence number.
        after: u64,
        /// About this many bytes at most.
        max_bytes: u64,
    },
    /// `HintLog::trim(target, through)`.
    HintTrim {
        /// The node the hints are for.
        target: NodeId,
        /// Forget hints up to this sequence number.
        through: u64,
    },
    /// `HintLog::drop_target(target)`.
    HintDrop {
        /// The node whose hints are dropped.
        target: NodeId,
    },
    /// `HintLog::backlog()`.
    HintBacklog,
}

/// The completion of a [`StorageOp`]; errors are carried as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageResult {
    /// The result of an `Apply`.
    Applied(Result<ApplyOutcome, String>),
    /// The result of a `Get`.
    Got(Result<Option<Versioned>, String>),
    /// The result of an `ApplyBatch`: one outcome per item, in order.
    AppliedBatch(Result<Vec<ApplyOutcome>, String>),
    /// The result of a `GetBatch`: one entry per key, in order.
    GotBatch(Result<Vec<Option<Versioned>>, String>),
    /// The result of a `Digests` scan.
    Digests(Result<Vec<KeyDigest>, String>),
    /// The result of a `Range` read: storage keys and versions, ascending.
    Ranged(Result<Vec<(Key, Versioned)>, String>),
    /// A `SetPurgeWatermark` was passed to the store.
    WatermarkSet,
    /// The result of a `HintAppend`: the hint's sequence number.
    HintAppended(Result<u64, String>),
    /// The result of a `HintRead`.
    HintsRead(Result<Vec<(u64, Hint)>, String>),
    /// The result of a `HintTrim` or `HintDrop`.
    HintsTrimmed(Result<(), String>),
    /// The result of a `HintBacklog`.
    HintBacklog(Result<Vec<(NodeId, HintBacklog)>, String>),
}
