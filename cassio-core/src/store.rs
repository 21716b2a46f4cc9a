//! The storage contract every backend implements (native LSM, RocksDB, sled,
//! the in-memory reference). The conformance suite tests exactly these words.

use crate::types::{Key, Timestamp, Versioned};
use std::ops::Bound;

/// What [`Store::apply_replacing`] did with a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The version was kept; it replaced `replaced` (`None`: the key held
    /// nothing, or only a purged tombstone).
    Kept {
        /// The version it replaced.
        replaced: Option<Versioned>,
    },
    /// The stored version wins under last-write-wins; nothing changed.
    Superseded,
}

impl ApplyOutcome {
    /// True when the version was kept.
    pub fn kept(&self) -> bool {
        matches!(self, ApplyOutcome::Kept { .. })
    }
}

/// One entry of a digest scan ([`Store::digests`]): a stored key with the
/// timestamp and [`Versioned::digest`] of its version, without its value.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyDigest {
    /// The stored key.
    pub key: Key,
    /// The stored version's timestamp.
    pub ts: Timestamp,
    /// True when the stored version is a tombstone.
    pub tombstone: bool,
    /// `version.digest(key)`.
    pub digest: u128,
}

impl KeyDigest {
    /// The digest entry of `version` stored under `key`.
    pub fn of(key: Key, version: &Versioned) -> Self {
        let digest = version.digest(&key);
        KeyDigest {
            key,
            ts: version.ts,
            tombstone: version.is_tombstone(),
            digest,
        }
    }
}

/// Errors a store reports. Corruption is never served as data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The operating system refused an I/O operation.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Bytes on disk failed a checksum or could not be decoded.
    #[error("corrupt data in {location}: {detail}")]
    Corruption {
        /// The file (and offset, where known) that holds the damage.
        location: String,
        /// What check failed.
        detail: String,
    },
    /// The store was closed or poisoned by an earlier fatal error.
    #[error("store is closed")]
    Closed,
    /// A key or value is larger than this store accepts.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// "key" or "value".
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An error from an embedded engine that has no better category.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// An earlier fsync (or write) of the commit log failed, so what the OS
    /// holds is unknown (a failed fsync may drop dirty pages and a retry may
    /// then "succeed" falsely): the store refuses every write and sync until
    /// it is reopened, which replays what really reached the disk.
    #[error("commit log poisoned by an earlier fsync failure; reopen the store ({detail})")]
    Poisoned {
        /// The failure that poisoned the log.
        detail: String,
    },
    /// The store's bounded write queue stayed full for the whole wait (the
    /// disk is not keeping up); the write was not applied. Retry later.
    #[error("store overloaded: {what} stayed full ({queued} of {cap} in use) for {waited_ms} ms")]
    Overloaded {
        /// Which limit was hit ("in-flight write bytes", "memtables").
        what: &'static str,
        /// Units in use when the wait ended.
        queued: u64,
        /// The limit.
        cap: u64,
        /// How long the write waited before giving up.
        waited_ms: u64,
    },
}

/// A versioned key-value store with last-write-wins semantics.
///
/// Contract (each sentence is a conformance case):
/// - Keys and values are arbitrary bytes; the empty key and empty value are valid.
/// - [`Store::apply`] keeps, per key, the version that wins under
///   [`Versioned::lww_cmp`]: a newer timestamp replaces, an older one is
///   ignored, equal timestamps resolve the same way on every store.
/// - A tombstone (`value: None`) is stored like a value: it hides older values,
///   it is hidden by newer ones, and [`Store::get`] returns it (the coordinator
///   needs it to resolve reads). A tombstone may be purged only when its
///   timestamp is both older than the store's configured grace period and
///   below the purge watermark last set by [`Store::set_purge_watermark`]
///   (zero when the store opens: nothing is purged until the node has seen
///   every replica complete an anti-entropy round).
/// - [`Store::apply_replacing`] decides like `apply` and also reports the
///   version it replaced; [`Store::digests`] lists what `range` lists, as
///   [`KeyDigest`]s.
/// - Methods take `&self` and may be called from many threads at once.
/// - After [`Store::sync`] returns `Ok`, every earlier `apply` survives a crash.
///   Durable stores may also sync on their own (per their sync policy).
/// - Damage detected on disk is reported as [`StoreError::Corruption`], never
///   returned as data.
pub trait Store: Send + Sync {
    /// Stores `version` under `key` unless the stored version wins under
    /// last-write-wins; returns `true` when `version` was kept.
    fn apply(&self, key: &[u8], version: &Versioned) -> Result<bool, StoreError>;

    /// The stored version of `key` (tombstones included), or `None` if the
    /// key was never written (or its tombstone was purged).
    fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError>;

    /// Up to `limit` entries with keys in `(start, end)`, in ascending
    /// bytewise key order, tombstones included. An empty or inverted range
    /// yields no entries. Page by calling again with `Bound::Excluded(last_key)`.
    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Key, Versioned)>, StoreError>;

    /// Moves buffered writes toward stable storage (for an LSM: the memtable
    /// into a table). It does not by itself promise durability; see `sync`.
    fn flush(&self) -> Result<(), StoreError>;

    /// Makes every write applied before this call durable across a crash.
    fn sync(&self) -> Result<(), StoreError>;

    /// An estimate of the bytes this store holds, for status and metrics.
    fn approximate_size(&self) -> u64 {
        0
    }

    /// Like [`Store::apply`], and reports the version replaced, which the
    /// node needs to keep its anti-entropy tree current without a scan.
    ///
    /// The default reads then applies; concurrent writers of one key may
    /// then report a stale `replaced` (the tree drifts until its periodic
    /// rebuild, which costs repair work, never correctness). Engines that
    /// read the old version to decide LWW anyway should override it.
    fn apply_replacing(&self, key: &[u8], version: &Versioned) -> Result<ApplyOutcome, StoreError> {
        let replaced = self.get(key)?;
        if self.apply(key, version)? {
            Ok(ApplyOutcome::Kept { replaced })
        } else {
            Ok(ApplyOutcome::Superseded)
        }
    }

    /// [`Store::get`], answered only if that cannot wait on the disk or a
    /// lock held across I/O: `None` means "not without waiting" (nothing
    /// was read), and the caller runs [`Store::get`] where blocking is
    /// fine. A host may call this on its event loop, so an engine answers
    /// here only from memory (a memtable hit, or every on-disk table's
    /// filter ruling the key out). The default never answers.
    fn get_if_cached(&self, key: &[u8]) -> Option<Result<Option<Versioned>, StoreError>> {
        let _ = key;
        None
    }

    /// [`Store::apply_replacing`], done only if it cannot wait: no fsync
    /// (a sync-every-write policy never applies here), no write stall, and
    /// the replaced version found in memory. `None` means nothing was
    /// written and the caller runs [`Store::apply_replacing`] where
    /// blocking is fine. Appending to a commit log's buffer (a `write` to
    /// the page cache) counts as not waiting. The default never applies.
    fn apply_replacing_if_cached(
        &self,
        key: &[u8],
        version: &Versioned,
    ) -> Option<Result<ApplyOutcome, StoreError>> {
        let _ = (key, version);
        None
    }

    /// The entries `range(start, end, limit)` would return, as digests
    /// (timestamps and [`Versioned::digest`], no values).
    fn digests(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyDigest>, StoreError> {
        Ok(self
            .range(start, end, limit)?
            .into_iter()
            .map(|(k, v)| KeyDigest::of(k, &v))
            .collect())
    }

    /// Raises the purge watermark (microseconds of HLC time): from now on
    /// compaction may drop a tombstone whose timestamp is below it *and*
    /// older than the grace period, never one above it. Lower values than
    /// the current watermark are ignored. The node sets it to the time
    /// before which every replica of every range has completed an
    /// anti-entropy round, so a purged delete can never come back.
    /// A store that never purges tombstones may ignore it.
    fn set_purge_watermark(&self, micros: u64);
}

/// True when no key can lie in `(start, end)`: an inverted range, an empty
/// one, or one that ends before the empty key. Stores answer such a range
/// with no entries without touching their data.
pub fn range_is_empty(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
        (Bound::Unbounded, Bound::Excluded(e)) => e.is_empty(),
        _ => false,
    }
}

/// True when `key` lies at or before the `end` bound of a range.
pub fn key_before_end(key: &[u8], end: Bound<&[u8]>) -> bool {
    match end {
        Bound::Included(e) => key <= e,
        Bound::Excluded(e) => key < e,
        Bound::Unbounded => true,
    }
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn apply(&self, key: &[u8], version: &Versioned) -> Result<bool, StoreError> {
        (**self).apply(key, version)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        (**self).get(key)
    }
    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Key, Versioned)>, StoreError> {
        (**self).range(start, end, limit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        (**self).flush()
    }
    fn sync(&self) -> Result<(), StoreError> {
        (**self).sync()
    }
    fn approximate_size(&self) -> u64 {
        (**self).approximate_size()
    }
    fn apply_replacing(&self, key: &[u8], version: &Versioned) -> Result<ApplyOutcome, StoreError> {
        (**self).apply_replacing(key, version)
    }
    fn digests(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyDigest>, StoreError> {
        (**self).digests(start, end, limit)
    }
    fn set_purge_watermark(&self, micros: u64) {
        (**self).set_purge_watermark(micros)
    }
    fn get_if_cached(&self, key: &[u8]) -> Option<Result<Option<Versioned>, StoreError>> {
        (**self).get_if_cached(key)
    }
    fn apply_replacing_if_cached(
        &self,
        key: &[u8],
        version: &Versioned,
    ) -> Option<Result<ApplyOutcome, StoreError>> {
        (**self).apply_replacing_if_cached(key, version)
    }
}
