//! The data model: node ids, keys, values, hybrid-logical-clock timestamps,
//! versioned values (with tombstones) and ring tokens.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// A key as the client gave it: arbitrary bytes, empty allowed.
pub type Key = Bytes;
/// A value as the client gave it: arbitrary bytes, empty allowed.
pub type Value = Bytes;

/// Identifies one node of a cluster; stable across restarts of that node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A hybrid-logical-clock timestamp: totally ordered by physical micros, then
/// the logical counter, then the node id that issued it (the tie-break that
/// makes two different writes never compare equal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Wall-clock microseconds since the Unix epoch, as the issuing node saw it.
    pub micros: u64,
    /// Counter that orders events within one microsecond (or behind a clock that went back).
    pub logical: u32,
    /// The node that issued the timestamp.
    pub node: NodeId,
}

impl Timestamp {
    /// The smallest timestamp; every real write is newer.
    pub const ZERO: Timestamp = Timestamp {
        micros: 0,
        logical: 0,
        node: NodeId(0),
    };

    /// Builds a timestamp from its parts.
    pub fn new(micros: u64, logical: u32, node: NodeId) -> Self {
        Timestamp {
            micros,
            logical,
            node,
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.micros, self.logical, self.node)
    }
}

/// A hybrid logical clock: issues timestamps that never go backwards on this
/// node and that move past any timestamp it has observed from others.
#[derive(Clone, Debug)]
pub struct HybridClock {
    node: NodeId,
    micros: u64,
    logical: u32,
}

impl HybridClock {
    /// A clock for `node` that has issued nothing yet.
    pub fn new(node: NodeId) -> Self {
        HybridClock {
            node,
            micros: 0,
            logical: 0,
        }
    }

    /// Issues a new timestamp given the current wall time in micros.
    pub fn now(&mut self, wall_micros: u64) -> Timestamp {
        if wall_micros > self.micros {
            self.micros = wall_micros;
            self.logical = 0;
        } else {
            self.bump_logical();
        }
        Timestamp::new(self.micros, self.logical, self.node)
    }

    /// A clock for `node` whose next timestamp is above `floor_micros`: a
    /// restarted node starts above every timestamp its previous run could
    /// have issued (the persisted high-water mark).
    pub fn starting_above(node: NodeId, floor_micros: u64) -> Self {
        HybridClock {
            node,
            micros: floor_micros,
            logical: 0,
        }
    }

    /// The physical part of the newest timestamp issued or observed.
    pub fn micros(&self) -> u64 {
        self.micros
    }

    /// Moves the clock past a timestamp seen in a message from another node.
    pub fn observe(&mut self, seen: Timestamp, wall_micros: u64) {
        let max_micros = self.micros.max(seen.micros).max(wall_micros);
        if max_micros == self.micros && max_micros == seen.micros {
            self.logical = self.logical.max(seen.logical);
        } else if max_micros == seen.micros {
            self.logical = seen.logical;
        } else if max_micros != self.micros {
            self.logical = 0;
        }
        self.micros = max_micros;
    }

    fn bump_logical(&mut self) {
        match self.logical.checked_add(1) {
            Some(l) => self.logical = l,
            // 4 billion events in one microsecond cannot happen; if the counter
            // still runs out, borrow the next microsecond so order is kept.
            None => {
                self.micros = self.micros.saturating_add(1);
                self.logical = 0;
            }
        }
    }
}

/// A value at a point in time: `value: None` is a tombstone (a delete).
///
/// A value may carry an expiry: an absolute time in the cluster's HLC
/// microseconds (the `micros` of [`Timestamp`]), part of the version so every
/// replica holds the same deadline whatever its own clock says. At and after
/// that time the value reads as absent ([`Versioned::is_live_at`]); under
/// last-write-wins it still wins over older versions exactly like a
/// tombstone written at its timestamp, and once expired it is purged under
/// the tombstone rules as if it were a tombstone written at
/// [`Versioned::dead_since`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Versioned {
    /// When the write happened; the newest timestamp wins.
    pub ts: Timestamp,
    /// The value, or `None` for a tombstone.
    pub value: Option<Value>,
    /// When the value ends, in HLC microseconds (`None`: never). Ignored
    /// (and kept `None`) for tombstones. (Self-describing encodings may
    /// leave it out; postcard, on the wire, always carries it.)
    #[serde(default)]
    pub expires: Option<u64>,
}

impl Versioned {
    /// A live value written at `ts`.
    pub fn value(ts: Timestamp, value: impl Into<Value>) -> Self {
        Versioned {
            ts,
            value: Some(value.into()),
            expires: None,
        }
    }

    /// A live value written at `ts` that ends at `expires` (HLC micros).
    pub fn expiring(ts: Timestamp, value: impl Into<Value>, expires: u64) -> Self {
        Versioned {
            ts,
            value: Some(value.into()),
            expires: Some(expires),
        }
    }

    /// A tombstone (a delete) written at `ts`.
    pub fn tombstone(ts: Timestamp) -> Self {
        Versioned {
            ts,
            value: None,
            expires: None,
        }
    }

    /// True when this is a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// True when this is a value whose expiry is at or before `now_micros`
    /// (HLC microseconds).
    pub fn is_expired_at(&self, now_micros: u64) -> bool {
        self.value.is_some() && self.expires.is_some_and(|e| e <= now_micros)
    }

    /// True when a read at HLC time `now_micros` sees a value: not a
    /// tombstone and not expired.
    pub fn is_live_at(&self, now_micros: u64) -> bool {
        self.value.is_some() && !self.is_expired_at(now_micros)
    }

    /// The value a read at HLC time `now_micros` sees: `None` for a
    /// tombstone or an expired value.
    pub fn live_value(&self, now_micros: u64) -> Option<&Value> {
        if self.is_live_at(now_micros) {
            self.value.as_ref()
        } else {
            None
        }
    }

    /// The HLC micros from which this version is dead for good, so the
    /// tombstone purge rules apply to it as to a tombstone stamped then: its
    /// timestamp for a tombstone, the later of its timestamp and its expiry
    /// for an expiring value (a value that expired "before" it was written
    /// is dead from its write on), `None` for a value that never expires.
    pub fn dead_since(&self) -> Option<u64> {
        match (&self.value, self.expires) {
            (None, _) => Some(self.ts.micros),
            (Some(_), Some(e)) => Some(e.max(self.ts.micros)),
            (Some(_), None) => None,
        }
    }

    /// The last-write-wins order every store and every coordinator uses:
    /// newer timestamp wins; at equal timestamps a tombstone beats a value and
    /// a larger value (bytewise) beats a smaller one, so every replica picks
    /// the same winner whatever order it saw the writes in.
    pub fn lww_cmp(&self, other: &Versioned) -> Ordering {
        self.ts
            .cmp(&other.ts)
            .then_with(|| match (&self.value, &other.value) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                // Equal values differing only in expiry: the one with no
                // expiry (`None` sorts first) loses to any deadline, and
                // deadlines compare as numbers; any fixed order would do,
                // as long as every replica uses this one.
                (Some(a), Some(b)) => a.cmp(b).then_with(|| self.expires.cmp(&other.expires)),
            })
    }

    /// True when `self` should replace `existing` under last-write-wins.
    pub fn supersedes(&self, existing: &Versioned) -> bool {
        self.lww_cmp(existing) == Ordering::Greater
    }

    /// The digest of this version stored under `key`: XXH3-128 of the key's
    /// length, the key, the timestamp and the value (or a tombstone mark),
    /// with the expiry for an expiring value (so anti-entropy repairs a
    /// replica whose deadline differs; a value without one hashes as it
    /// did before expiries existed).
    /// Two replicas hold the same item exactly when their digests agree
    /// (up to a 2^-128 collision); anti-entropy trees XOR these digests.
    pub fn digest(&self, key: &[u8]) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&(key.len() as u64).to_le_bytes());
        h.update(key);
        h.update(&self.ts.micros.to_le_bytes());
        h.update(&self.ts.logical.to_le_bytes());
        h.update(&self.ts.node.0.to_le_bytes());
        match (&self.value, self.expires) {
            (None, _) => h.update(&[0]),
            (Some(v), None) => {
                h.update(&[1]);
                h.update(v);
            }
            (Some(v), Some(e)) => {
                h.update(&[2]);
                h.update(&e.to_le_bytes());
                h.update(v);
            }
        }
        h.digest128()
    }
}

/// A position on the 64-bit token ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token(pub u64);

impl Token {
    /// The token of a key: XXH3-64 (seed 0) of the key bytes, as specified by
    /// the xxHash project. It is the same on every platform and every Cassio
    /// version; changing it would move every key, so test vectors pin it.
    pub fn of(key: &[u8]) -> Token {
        Token(xxhash_rust::xxh3::xxh3_64(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_vectors_are_pinned() {
        // These values are part of the on-disk and on-wire contract.
        assert_eq!(Token::of(b"").0, 0x2d06800538d394c2);
        assert_eq!(Token::of(b"a").0, 0xe6c632b61e964e1f);
        assert_eq!(Token::of(b"user1").0, Token::of(b"user1").0);
        assert_ne!(Token::of(b"user1"), Token::of(b"user2"));
    }

    #[test]
    fn timestamps_order_by_micros_then_logical_then_node() {
        let a = Timestamp::new(10, 5, NodeId(9));
        let b = Timestamp::new(11, 0, NodeId(1));
        let c = Timestamp::new(11, 0, NodeId(2));
        assert!(a < b && b < c);
    }

    #[test]
    fn clock_never_goes_backwards() {
        let mut c = HybridClock::new(NodeId(1));
        let t1 = c.now(100);
        let t2 = c.now(50); // wall clock jumped back
        let t3 = c.now(100);
        assert!(t1 < t2 && t2 < t3, "{t1} {t2} {t3}");
        c.observe(Timestamp::new(500, 7, NodeId(2)), 120);
        let t4 = c.now(120);
        assert!(t4 > Timestamp::new(500, 7, NodeId(2)), "{t4}");
    }

    #[test]
    fn lww_ties_are_deterministic() {
        let ts = Timestamp::new(1, 0, NodeId(1));
        let a = Versioned::value(ts, "a");
        let b = Versioned::value(ts, "b");
        let t = Versioned::tombstone(ts);
        assert!(b.supersedes(&a) && !a.supersedes(&b));
        assert!(t.supersedes(&b) && !b.supersedes(&t));
        assert!(!a.supersedes(&a));
    }

    #[test]
    fn expiry_hides_the_value_from_its_deadline_on() {
        let ts = Timestamp::new(100, 0, NodeId(1));
        let v = Versioned::expiring(ts, "a", 500);
        assert!(v.is_live_at(499) && !v.is_expired_at(499));
        assert!(!v.is_live_at(500) && v.is_expired_at(500));
        assert_eq!(v.live_value(499).map(|b| &b[..]), Some(&b"a"[..]));
        assert_eq!(v.live_value(10_000), None);
        assert_eq!(v.dead_since(), Some(500));
        // A deadline before the write: dead from the write on.
        assert_eq!(Versioned::expiring(ts, "a", 7).dead_since(), Some(100));
        assert_eq!(Versioned::value(ts, "a").dead_since(), None);
        assert_eq!(Versioned::tombstone(ts).dead_since(), Some(100));
        assert!(Versioned::value(ts, "a").is_live_at(u64::MAX));
        assert!(!Versioned::tombstone(ts).is_live_at(0));
    }

    #[test]
    fn an_expired_version_still_wins_lww_like_a_tombstone() {
        let old = Versioned::value(Timestamp::new(1, 0, NodeId(1)), "old");
        let expired = Versioned::expiring(Timestamp::new(2, 0, NodeId(1)), "new", 3);
        assert!(expired.supersedes(&old) && !old.supersedes(&expired));
        // Equal timestamp and value: the expiry decides, the same way everywhere.
        let ts = Timestamp::new(5, 0, NodeId(1));
        let a = Versioned::value(ts, "v");
        let b = Versioned::expiring(ts, "v", 9);
        assert!(b.supersedes(&a) && !a.supersedes(&b));
        assert!(Versioned::tombstone(ts).supersedes(&b));
    }

    #[test]
    fn the_digest_covers_the_expiry_and_keeps_old_digests() {
        let ts = Timestamp::new(5, 0, NodeId(1));
        let plain = Versioned::value(ts, "v");
        let a = Versioned::expiring(ts, "v", 9);
        let b = Versioned::expiring(ts, "v", 10);
        assert_ne!(a.digest(b"k"), b.digest(b"k"));
        assert_ne!(a.digest(b"k"), plain.digest(b"k"));
        // Pinned: a value without expiry hashes as before expiries existed.
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&1u64.to_le_bytes());
        h.update(b"k");
        h.update(&5u64.to_le_bytes());
        h.update(&0u32.to_le_bytes());
        h.update(&1u64.to_le_bytes());
        h.update(&[1]);
        h.update(b"v");
        assert_eq!(plain.digest(b"k"), h.digest128());
    }
}
