//! The anti-entropy hash tree of one keyspace, maintained incrementally.
//!
//! The token space is cut into [`SEGMENTS`] segments by the top 16 bits of
//! a key's token. A segment's hash is the XOR of [`Versioned::digest`] over
//! every item stored in it (Riak's "tictac" tree): applying a write changes
//! it by `digest(old) ^ digest(new)`, with no rebuild scan and no dirty
//! bits, and two replicas holding the same items have equal segment hashes
//! whatever order the writes came in. 256 branches of 256 segments each sit
//! above the segments; a branch's hash is the XOR of its segments' over the
//! segments being compared, so two replicas compare 256 branch hashes, then
//! the segments of differing branches, then keys of differing segments.
//!
//! Storage keys are laid out in token order ([`crate::node::storage_key`]),
//! so a segment, or any token range, is one contiguous key range.
//!
//! Memory: 65,536 × 16 bytes = 1 MiB per keyspace, whatever the data size.

use crate::types::{Token, Versioned};

/// Segments per keyspace tree (the top 16 bits of a token).
pub const SEGMENTS: usize = 1 << 16;

/// Segments per branch; also the number of branches.
pub const BRANCH_WIDTH: usize = 256;

/// The segment a token falls in.
pub fn segment_of(token: Token) -> u16 {
    // The top 16 bits of a 64-bit value always fit in a u16.
    (token.0 >> 48) as u16
}

/// The first token of segment `s`.
pub fn segment_start(s: u16) -> Token {
    Token(u64::from(s) << 48)
}

/// The last token of segment `s`.
pub fn segment_last(s: u16) -> Token {
    Token((u64::from(s) << 48) | 0xFFFF_FFFF_FFFF)
}

/// One keyspace's tree: a hash per segment.
#[derive(Clone)]
pub struct SegmentTree {
    segments: Vec<u128>,
    items: u64,
}

impl Default for SegmentTree {
    fn default() -> Self {
        SegmentTree {
            segments: vec![0; SEGMENTS],
            items: 0,
        }
    }
}

impl std::fmt::Debug for SegmentTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentTree")
            .field("items", &self.items)
            .field("root", &self.root())
            .finish()
    }
}

impl SegmentTree {
    /// Records that the item stored under `key` (whose token is `token`)
    /// changed from `old` to `new` (`None`: absent).
    pub fn update(
        &mut self,
        token: Token,
        key: &[u8],
        old: Option<&Versioned>,
        new: Option<&Versioned>,
    ) {
        let s = usize::from(segment_of(token));
        if let Some(o) = old {
            self.segments[s] ^= o.digest(key);
            self.items = self.items.saturating_sub(1);
        }
        if let Some(n) = new {
            self.segments[s] ^= n.digest(key);
            self.items += 1;
        }
    }

    /// Adds an item's digest, as a rebuild scan finds it.
    pub fn add_digest(&mut self, token: Token, digest: u128) {
        self.segments[usize::from(segment_of(token))] ^= digest;
        self.items += 1;
    }

    /// Items recorded (an estimate once writes raced a rebuild).
    pub fn items(&self) -> u64 {
        self.items
    }

    /// The hash of segment `s`.
    pub fn segment(&self, s: u16) -> u128 {
        self.segments[usize::from(s)]
    }

    /// The XOR of every segment.
    pub fn root(&self) -> u128 {
        self.segments.iter().fold(0, |a, b| a ^ b)
    }

    /// The 256 branch hashes over the segments `include` accepts.
    pub fn branches(&self, include: impl Fn(u16) -> bool) -> Vec<u128> {
        let mut out = vec![0u128; BRANCH_WIDTH];
        for (i, h) in self.segments.iter().enumerate() {
            // `i` < 65,536 by construction.
            let s = i as u16;
            if *h != 0 && include(s) {
                out[i / BRANCH_WIDTH] ^= h;
            }
        }
        out
    }

    /// The hashes of branch `b`'s segments that `include` accepts.
    pub fn branch_segments(&self, b: u8, include: impl Fn(u16) -> bool) -> Vec<(u16, u128)> {
        let first = usize::from(b) * BRANCH_WIDTH;
        (first..first + BRANCH_WIDTH)
            .map(|i| i as u16)
            .filter(|&s| include(s))
            .map(|s| (s, self.segments[usize::from(s)]))
            .collect()
    }

    /// Bytes of memory this tree holds.
    pub fn memory_bytes(&self) -> usize {
        self.segments.len() * std::mem::size_of::<u128>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{NodeId, Timestamp};

    fn v(micros: u64, val: &'static [u8]) -> Versioned {
        Versioned::value(Timestamp::new(micros, 0, NodeId(1)), val)
    }

    #[test]
    fn order_of_writes_does_not_matter() {
        let (ka, kb) = (b"a".as_slice(), b"b".as_slice());
        let (ta, tb) = (Token::of(ka), Token::of(kb));
        let mut x = SegmentTree::default();
        x.update(ta, ka, None, Some(&v(1, b"1")));
        x.update(ta, ka, Some(&v(1, b"1")), Some(&v(2, b"2")));
        x.update(tb, kb, None, Some(&v(3, b"3")));
        let mut y = SegmentTree::default();
        y.update(tb, kb, None, Some(&v(3, b"3")));
        y.update(ta, ka, None, Some(&v(2, b"2")));
        assert_eq!(x.root(), y.root());
        assert_ne!(x.root(), 0);
        assert_eq!(x.segment(segment_of(ta)), y.segment(segment_of(ta)));
    }

    #[test]
    fn a_differing_item_shows_in_exactly_its_segment_and_branch() {
        let mut x = SegmentTree::default();
        let mut y = SegmentTree::default();
        for i in 0..1000u32 {
            let k = i.to_be_bytes();
            let t = Token::of(&k);
            x.update(t, &k, None, Some(&v(u64::from(i), b"v")));
            y.update(t, &k, None, Some(&v(u64::from(i), b"v")));
        }
        let k = 7u32.to_be_bytes();
        let t = Token::of(&k);
        y.update(t, &k, Some(&v(7, b"v")), Some(&v(9, b"w")));
        let (bx, by) = (x.branches(|_| true), y.branches(|_| true));
        let differing: Vec<usize> = (0..BRANCH_WIDTH).filter(|&b| bx[b] != by[b]).collect();
        let s = segment_of(t);
        assert_eq!(differing, vec![usize::from(s) / BRANCH_WIDTH]);
        let b = (s / 256) as u8;
        let sx = x.branch_segments(b, |_| true);
        let sy = y.branch_segments(b, |_| true);
        let diff: Vec<u16> = sx
            .iter()
            .zip(&sy)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect();
        assert_eq!(diff, vec![s]);
        // Excluding the segment hides the difference.
        assert_eq!(x.branches(|q| q != s), y.branches(|q| q != s));
    }

    #[test]
    fn segment_bounds_cover_the_ring() {
        assert_eq!(segment_start(0), Token(0));
        assert_eq!(segment_last(u16::MAX), Token(u64::MAX));
        assert_eq!(segment_of(segment_last(5)), 5);
        assert_eq!(segment_of(segment_start(6)), 6);
    }
}
