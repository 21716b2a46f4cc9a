//! Per-table bloom filters: a get skips a table whose filter says the key is
//! absent, so reads of missing keys touch no data block.

/// The two 64-bit hashes a probe is derived from. Computed once per lookup
/// and reused against every table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHash(u64, u64);

impl KeyHash {
    /// Hashes `key` (XXH3-128, split into two halves for double hashing).
    pub(crate) fn of(key: &[u8]) -> Self {
        let h = xxhash_rust::xxh3::xxh3_128(key);
        // An odd step visits distinct bits for any power-of-two-free modulus
        // and never degenerates into probing one bit k times.
        KeyHash(h as u64, ((h >> 64) as u64) | 1)
    }
}

/// A bloom filter over the keys of one table.
#[derive(Debug)]
pub(crate) struct Bloom {
    bits: Vec<u8>,
    nbits: u64,
    k: u32,
}

/// The largest number of probes we accept from a file (a sane filter uses < 30).
const MAX_K: u32 = 64;

impl Bloom {
    /// An empty filter sized for `n` keys at false-positive rate `fp`.
    pub(crate) fn with_capacity(n: usize, fp: f64) -> Self {
        let fp = if fp.is_finite() {
            fp.clamp(1e-9, 0.5)
        } else {
            0.01
        };
        let ln2 = std::f64::consts::LN_2;
        let n = n.max(1) as f64;
        let nbits = (-(n * fp.ln()) / (ln2 * ln2)).ceil().max(64.0) as u64;
        let k = ((nbits as f64 / n) * ln2).round().clamp(1.0, 30.0) as u32;
        let nbits = nbits.div_ceil(8) * 8;
        Bloom {
            bits: vec![0; (nbits / 8) as usize],
            nbits,
            k,
        }
    }

    /// Adds a key (by its hash).
    pub(crate) fn insert(&mut self, h: KeyHash) {
        let mut x = h.0;
        for _ in 0..self.k {
            let bit = x % self.nbits;
            self.bits[(bit / 8) as usize] |= 1 << (bit % 8);
            x = x.wrapping_add(h.1);
        }
    }

    /// False only when the key is certainly absent.
    pub(crate) fn may_contain(&self, h: KeyHash) -> bool {
        let mut x = h.0;
        for _ in 0..self.k {
            let bit = x % self.nbits;
            if self.bits[(bit / 8) as usize] & (1 << (bit % 8)) == 0 {
                return false;
            }
            x = x.wrapping_add(h.1);
        }
        true
    }

    /// Serialised form: `k: u32 | bits`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.k.to_le_bytes());
        out.extend_from_slice(&self.bits);
    }

    /// Parses `encode`'s output; `None` if it is not a plausible filter.
    pub(crate) fn decode(buf: &[u8]) -> Option<Self> {
        let k = crate::format::get_u32(buf, 0)?;
        let bits = buf.get(4..)?.to_vec();
        if k == 0 || k > MAX_K || bits.is_empty() {
            return None;
        }
        Some(Bloom {
            nbits: bits.len() as u64 * 8,
            bits,
            k,
        })
    }

    /// Heap bytes held, for memory accounting.
    pub(crate) fn memory(&self) -> usize {
        self.bits.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured_fp(n: usize, fp: f64) -> f64 {
        let mut b = Bloom::with_capacity(n, fp);
        for i in 0..n {
            b.insert(KeyHash::of(format!("present-{i}").as_bytes()));
        }
        for i in 0..n {
            assert!(b.may_contain(KeyHash::of(format!("present-{i}").as_bytes())));
        }
        let probes = 200_000;
        let hits = (0..probes)
            .filter(|i| b.may_contain(KeyHash::of(format!("absent-{i}").as_bytes())))
            .count();
        hits as f64 / probes as f64
    }

    #[test]
    fn false_positive_rate_is_near_the_configured_rate() {
        let one = measured_fp(100_000, 0.01);
        assert!(one > 0.003 && one < 0.02, "1% filter measured {one}");
        let tenth = measured_fp(100_000, 0.001);
        assert!(tenth < 0.003, "0.1% filter measured {tenth}");
        assert!(tenth < one);
    }

    #[test]
    fn encoding_round_trips_and_rejects_junk() {
        let mut b = Bloom::with_capacity(100, 0.01);
        b.insert(KeyHash::of(b"a"));
        let mut buf = Vec::new();
        b.encode(&mut buf);
        let d = Bloom::decode(&buf).unwrap();
        assert!(d.may_contain(KeyHash::of(b"a")));
        assert_eq!(d.k, b.k);
        assert!(Bloom::decode(&[0, 0, 0, 0, 1]).is_none());
        assert!(Bloom::decode(&[1, 0, 0, 0]).is_none());
        assert!(Bloom::decode(&[]).is_none());
    }
}
