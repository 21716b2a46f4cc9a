//! Embedded-engine storage backends for Cassio.
//!
//! - [`RocksStore`]: RocksDB (the `rocksdb` crate, C++ engine built from source).
//! - [`SledStore`]: sled (pure Rust), behind the cargo feature `sled` (on by default).
//!
//! Both implement [`cassio_core::Store`]: each key maps to one engine entry
//! holding a [`codec`] record (timestamp, tombstone flag, value), and
//! last-write-wins is decided in [`Store::apply`](cassio_core::Store::apply)
//! before anything is written, so the engine only ever holds the winner.
//! Durability is chosen with a [`SyncPolicy`]; each store's rustdoc says how
//! it maps onto its engine. Both report the version a write replaced
//! exactly (`Store::apply_replacing` decides and writes atomically per key),
//! and purge a tombstone only when it is past the grace period and below
//! the purge watermark, which is zero (nothing purged) at every open.

pub mod codec;
mod rocks;
#[cfg(feature = "sled")]
mod sled_store;
mod stripes;

pub use rocks::{RocksOptions, RocksStore};
#[cfg(feature = "sled")]
pub use sled_store::{SledOptions, SledStore};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When writes are forced to stable storage (see each store for the mapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every `apply` is durable before it returns.
    Always,
    /// Writes become durable within this period (a background flush), and on `sync`.
    Periodic(Duration),
    /// Writes become durable only on `sync` (or when the engine chooses to).
    Never,
}

impl Default for SyncPolicy {
    /// Group-commit every 100 ms: at most that much acknowledged work is lost
    /// in a power failure, in exchange for not paying an fsync per write.
    fn default() -> Self {
        SyncPolicy::Periodic(Duration::from_millis(100))
    }
}

/// Cassandra's default `gc_grace_seconds` (10 days): long enough for repair
/// to spread a delete before its tombstone may go.
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(10 * 24 * 3600);
/// Largest key accepted by default (keys are repeated in every index block).
pub const DEFAULT_MAX_KEY_BYTES: usize = 64 * 1024;
/// Largest value accepted by default: a value must fit in one peer frame anyway.
pub const DEFAULT_MAX_VALUE_BYTES: usize = cassio_core::wire::DEFAULT_MAX_FRAME;

/// Rejects keys and values over the configured limits.
fn check_sizes(
    key: &[u8],
    value: Option<&[u8]>,
    max_key: usize,
    max_value: usize,
) -> Result<(), cassio_core::StoreError> {
    if key.len() > max_key {
        return Err(cassio_core::StoreError::TooLarge {
            what: "key",
            len: key.len(),
            max: max_key,
        });
    }
    if let Some(v) = value {
        if v.len() > max_value {
            return Err(cassio_core::StoreError::TooLarge {
                what: "value",
                len: v.len(),
                max: max_value,
            });
        }
    }
    Ok(())
}

pub(crate) use cassio_core::store::{key_before_end as before_end, range_is_empty};

/// True when a tombstone written at `ts_micros` may be purged now: it is
/// older than the grace period and below the purge watermark
/// ([`cassio_core::Store::set_purge_watermark`]).
fn tombstone_purgeable(ts_micros: u64, grace: Duration, watermark: u64) -> bool {
    ts_micros < watermark && tombstone_expired(ts_micros, grace)
}

/// True when a tombstone written at `ts_micros` is older than `grace` now.
fn tombstone_expired(ts_micros: u64, grace: Duration) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let grace = u64::try_from(grace.as_micros()).unwrap_or(u64::MAX);
    ts_micros.saturating_add(grace) < now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_ranges_are_recognised() {
        use std::ops::Bound::*;
        let (a, b, e): (&[u8], &[u8], &[u8]) = (b"a", b"b", b"");
        assert!(range_is_empty(Included(b), Included(a)));
        assert!(!range_is_empty(Included(a), Included(a)));
        assert!(range_is_empty(Included(a), Excluded(a)));
        assert!(range_is_empty(Excluded(a), Included(a)));
        assert!(range_is_empty(Unbounded, Excluded(e)));
        assert!(!range_is_empty(Unbounded, Included(e)));
        assert!(!range_is_empty(Unbounded, Unbounded));
    }

    #[test]
    fn tombstones_expire_only_after_grace() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_micros() as u64;
        assert!(!tombstone_expired(now, Duration::from_secs(60)));
        assert!(tombstone_expired(
            now - 120_000_000,
            Duration::from_secs(60)
        ));
        assert!(!tombstone_expired(u64::MAX, Duration::ZERO));
    }

    #[test]
    fn tombstones_are_purgeable_only_below_the_watermark() {
        let grace = Duration::from_secs(60);
        let old = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_micros() as u64
            - 120_000_000;
        assert!(!tombstone_purgeable(old, grace, 0), "no watermark yet");
        assert!(!tombstone_purgeable(old, grace, old), "at the watermark");
        assert!(tombstone_purgeable(old, grace, old + 1));
        assert!(tombstone_purgeable(old, grace, u64::MAX));
        assert!(
            !tombstone_purgeable(old + 90_000_000, grace, u64::MAX),
            "inside the grace period"
        );
    }
}
