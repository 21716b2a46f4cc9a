//! The client-facing API of a node: requests, their ids, answers and
//! errors. Hosts build a [`ClientRequest`], hand it to
//! [`crate::node::Node::handle_client`] and get back an
//! [`crate::node::Output::Reply`] with a [`ClientResponse`] or a
//! [`ClientError`].

use crate::config::Consistency;
use crate::scan::ScanCursor;
use crate::types::{Key, Timestamp, Value};
use serde::{Deserialize, Serialize};

/// The most entries a row read returns per replica (a page): bounds the
/// size of a replica's answer. A slice with more continues with
/// [`RowSlice::After`].
pub const MAX_ROW_PAGE: usize = 1000;

/// Identifies one client request; chosen by the host, echoed in the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub u64);

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
    /// Write a value that ends at an expiry (see [`Expiry`]).
    PutExpiring {
        /// The key.
        key: Key,
        /// The value.
        value: Value,
        /// When it ends.
        expiry: Expiry,
    },
    /// Read a key with its expiry: answered with [`ClientResponse::Entry`].
    GetEntry {
        /// The key.
        key: Key,
    },
    /// One page of a scan of the keyspace, in token order (see
    /// [`crate::scan`]): live keys starting with `prefix`, from `from`,
    /// at most `limit` of them.
    Scan {
        /// Only keys that start with these bytes (empty: every key).
        prefix: Key,
        /// Where the page starts ([`ScanCursor::start`] for the first).
        from: ScanCursor,
        /// At most this many entries (lowered to [`crate::scan::MAX_PAGE`]).
        limit: usize,
    },
    /// Read column `column` of row `row` (one cell).
    GetCell {
        /// The row.
        row: Key,
        /// The column.
        column: Key,
    },
    /// Write one cell: its own timestamp, last write wins per cell.
    PutCell {
        /// The row.
        row: Key,
        /// The column.
        column: Key,
        /// The value.
        value: Value,
    },
    /// Delete one cell (writes a tombstone for that cell only).
    DeleteCell {
        /// The row.
        row: Key,
        /// The column.
        column: Key,
    },
    /// Read a slice of a row: its live cells in column order, merged
    /// across replicas cell by cell (newest wins, tombstones hidden).
    ReadRow {
        /// The row.
        row: Key,
        /// Which columns.
        slice: RowSlice,
        /// At most this many entries (live or tombstones) per replica; the
        /// answer says whether more may follow.
        limit: u32,
    },
    /// Compare-and-set (CRAQ keyspaces only): set `new` if and only if the
    /// current value is `expected` (`None`: only if the key is absent).
    /// Answered with [`ClientResponse::Swapped`].
    Cas {
        /// The key.
        key: Key,
        /// The value required.
        expected: Option<Value>,
        /// The value set if it matches.
        new: Value,
    },
    /// Add `by` to the key's value read as a decimal `i64`, absent being 0
    /// (CRAQ keyspaces only). Answered with [`ClientResponse::Counter`].
    Incr {
        /// The key.
        key: Key,
        /// The amount (negative: a decrement).
        by: i64,
    },
}

/// Which columns of a row a [`ClientOp::ReadRow`] reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowSlice {
    /// Every column.
    #[default]
    All,
    /// Columns starting with these bytes.
    Prefix(Key),
    /// Columns in `from..to` (`from` included, `to` excluded; `None`: no
    /// bound).
    Range {
        /// First column, included.
        from: Option<Key>,
        /// Bound after the last column, excluded.
        to: Option<Key>,
    },
    /// Columns strictly after this one (the next page of a slice).
    After(Key),
}

impl ClientOp {
    /// The key that decides the token: the key, a cell op's row (a row
    /// lives on one replica set), a scan's prefix.
    pub fn key(&self) -> &Key {
        match self {
            ClientOp::Get { key }
            | ClientOp::Put { key, .. }
            | ClientOp::Delete { key }
            | ClientOp::PutExpiring { key, .. }
            | ClientOp::GetEntry { key }
            | ClientOp::Cas { key, .. }
            | ClientOp::Incr { key, .. } => key,
            ClientOp::GetCell { row, .. }
            | ClientOp::PutCell { row, .. }
            | ClientOp::DeleteCell { row, .. }
            | ClientOp::ReadRow { row, .. } => row,
            ClientOp::Scan { prefix, .. } => prefix,
        }
    }

    /// True for the operations that only read.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            ClientOp::Get { .. }
                | ClientOp::GetEntry { .. }
                | ClientOp::Scan { .. }
                | ClientOp::GetCell { .. }
                | ClientOp::ReadRow { .. }
        )
    }
}

/// When a written value ends, in the cluster's hybrid-logical-clock time
/// (microseconds since the Unix epoch, as the coordinator's clock sees it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// This many microseconds after the write's timestamp (a TTL).
    After(u64),
    /// At this absolute HLC time in microseconds (may be in the past: the
    /// value is then written already expired, as Redis's `EXPIREAT` does).
    At(u64),
}

impl Expiry {
    /// The absolute expiry of a write stamped at `ts_micros`.
    pub fn resolve(self, ts_micros: u64) -> u64 {
        match self {
            Expiry::After(d) => ts_micros.saturating_add(d),
            Expiry::At(at) => at,
        }
    }
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

    /// The first page (of at most `limit` entries) of a scan of the
    /// default keyspace's keys that start with `prefix`.
    pub fn scan(prefix: impl Into<Key>, limit: usize) -> Self {
        Self::new(ClientOp::Scan {
            prefix: prefix.into(),
            from: ScanCursor::start(),
            limit,
        })
    }

    /// A delete of `key` in the default keyspace.
    pub fn delete(key: impl Into<Key>) -> Self {
        Self::new(ClientOp::Delete { key: key.into() })
    }

    /// A write of `value` under `key` that ends at `expiry`, in the
    /// default keyspace.
    pub fn put_expiring(key: impl Into<Key>, value: impl Into<Value>, expiry: Expiry) -> Self {
        Self::new(ClientOp::PutExpiring {
            key: key.into(),
            value: value.into(),
            expiry,
        })
    }

    /// A read of `key` with its expiry, in the default keyspace.
    pub fn get_entry(key: impl Into<Key>) -> Self {
        Self::new(ClientOp::GetEntry { key: key.into() })
    }

    /// A read of column `column` of row `row` in the default keyspace.
    pub fn hget(row: impl Into<Key>, column: impl Into<Key>) -> Self {
        Self::new(ClientOp::GetCell {
            row: row.into(),
            column: column.into(),
        })
    }

    /// A write of one cell in the default keyspace.
    pub fn hset(row: impl Into<Key>, column: impl Into<Key>, value: impl Into<Value>) -> Self {
        Self::new(ClientOp::PutCell {
            row: row.into(),
            column: column.into(),
            value: value.into(),
        })
    }

    /// A delete of one cell in the default keyspace.
    pub fn hdel(row: impl Into<Key>, column: impl Into<Key>) -> Self {
        Self::new(ClientOp::DeleteCell {
            row: row.into(),
            column: column.into(),
        })
    }

    /// A read of a row's slice in the default keyspace.
    pub fn read_row(row: impl Into<Key>, slice: RowSlice, limit: u32) -> Self {
        Self::new(ClientOp::ReadRow {
            row: row.into(),
            slice,
            limit,
        })
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
    /// A page of a scan: entries in token order, and where the next page
    /// starts (`None`: the scan is complete).
    Page {
        /// Keys and values.
        entries: Vec<(Key, Value)>,
        /// The cursor of the next page.
        next: Option<ScanCursor>,
    },
    /// The answer to a row read: live cells as (column, value) in column
    /// order. `more`: some replica had entries past the last one
    /// returned, so the slice may continue after `last` (the last column
    /// looked at, live or not).
    Cells {
        /// Live cells in column order.
        cells: Vec<(Key, Value)>,
        /// Whether another page may follow.
        more: bool,
        /// The last column covered (resume with [`RowSlice::After`]).
        last: Option<Key>,
    },
    /// A schema change was chosen, as part of this schema version.
    SchemaChanged {
        /// The version that holds the change.
        version: u64,
    },
    /// The answer to a [`ClientOp::GetEntry`]: the newest live value (`None`
    /// if absent, deleted or expired), its expiry, and the coordinator's
    /// HLC time when it judged it (so the remaining TTL is
    /// `expires - now_micros`, whatever the asker's clock says).
    Entry {
        /// The value, or `None`.
        value: Option<Value>,
        /// When it ends (HLC micros), `None` if never (or no value).
        expires: Option<u64>,
        /// The coordinator's HLC time at the answer, in micros.
        now_micros: u64,
    },
    /// The answer to a [`ClientOp::Cas`]: whether it set the value.
    Swapped(bool),
    /// The answer to a [`ClientOp::Incr`]: the new value.
    Counter(i64),
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
    /// The node has not yet learned the whole cluster (it just joined), or
    /// it restarted and has not yet heard from a majority of the members it
    /// last knew; coordinating now could pick the wrong replicas. Retry, or
    /// ask another node.
    #[error("node is not ready to coordinate yet (joining, or restarted and waiting to hear from a majority of the cluster); retry shortly or ask another node")]
    Joining,
    /// This node's wall clock is further from the rest of the cluster's than
    /// the maximum clock offset, so it refuses to stamp writes (a write
    /// stamped far ahead would shadow later ones; far behind, it would lose
    /// to earlier ones). Fix the clock (NTP), or ask another node.
    #[error("this node's clock is {offset_ms} ms off the cluster's (max {max_ms} ms); fix its time source or ask another node")]
    ClockOffset {
        /// This node's wall clock minus the cluster's median, in ms.
        offset_ms: i64,
        /// The configured maximum offset, in ms.
        max_ms: u64,
    },
    /// This node's definition of the keyspace differs from the rest of the
    /// cluster's; it refuses to coordinate rather than place or count
    /// replicas differently. Start it with the cluster's settings.
    #[error("keyspace {keyspace:?}: this node has {setting} = {ours}, the cluster has {theirs}; restart it with the cluster's settings")]
    ConfigMismatch {
        /// The keyspace.
        keyspace: String,
        /// The setting that differs (e.g. `replication_factor`).
        setting: String,
        /// This node's value.
        ours: String,
        /// The value most of the cluster has.
        theirs: String,
    },
    /// The write kept losing to newer writes of the same key that arrived
    /// while it was re-stamped; it may or may not be visible. Retry.
    #[error("write kept losing to concurrent writes of the same key ({attempts} attempts); it may or may not be visible")]
    Contended {
        /// Stamps tried.
        attempts: u8,
    },
    /// The node holds as much work as it is allowed to (storage operations
    /// queued behind a slow store, or connections at a client port's cap);
    /// the request was refused before anything was sent or stored. Back
    /// off, then retry (or ask another node).
    #[error("node is overloaded; back off and retry, or ask another node")]
    Overloaded,
    /// A scan was refused: a malformed cursor, or a placement that does
    /// not keep keys in token ranges (rendezvous).
    #[error("invalid scan: {0}")]
    InvalidScan(String),
    /// The row and column cannot be stored as a cell (one pair in 2^64
    /// whose encoding would be indistinguishable from a plain key), or the
    /// row is longer than 4 GiB.
    #[error("this row and column cannot be stored as a cell; pick another column name")]
    UnstorableCell,
    /// A schema change was refused or could not be agreed on.
    #[error("schema change failed: {0}")]
    Schema(crate::schema_agreement::ChangeError),
    /// The key's chain (CRAQ keyspace) is changing: a member failed or
    /// rejoined, or this node has not yet used the newest chain epoch for
    /// the lease period. Nothing was done. Retry shortly.
    #[error("the key's chain is being reconfigured; nothing was done, retry shortly")]
    ChainChanging,
    /// The operation does not apply: compare-and-set or increment on a
    /// keyspace that is not chain-replicated, an operation a CRAQ keyspace
    /// does not offer (scans, cells, expiry), or an increment of a value
    /// that is not an integer.
    #[error("invalid operation: {0}")]
    InvalidOp(String),
}
