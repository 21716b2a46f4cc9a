//! The record format both engines store under each key.
//!
//! Layout (all integers big-endian):
//! `[format: u8][micros: u64][logical: u32][node: u64][kind: u8][value bytes...]`
//! with `kind` 0 for a tombstone (no value bytes follow) and 1 for a value.
//! A value with an expiry is written as format 2, whose header is followed
//! by the expiry (`u64`, HLC micros) before the value bytes; format 1
//! records (everything written before expiries existed, and values without
//! one) read as before.
//! No checksum of our own: RocksDB verifies a CRC32C per block on every read
//! and sled one per log message, so a second checksum would only cost CPU;
//! the decoder still checks every length and tag so a bad record is a typed
//! error, never a value.

use bytes::Bytes;
use cassio_core::{NodeId, Timestamp, Versioned};

/// The record format of tombstones and of values without an expiry.
pub const FORMAT_V1: u8 = 1;
/// The record format of a value with an expiry (8 more bytes after the
/// header); a reader refuses any format but these two.
pub const FORMAT_V2_EXPIRING: u8 = 2;
/// Bytes a record takes before the value bytes.
pub const HEADER_LEN: usize = 1 + 8 + 4 + 8 + 1;
const _: () = assert!(HEADER_LEN == 22, "the Short error message names the length");

const KIND_TOMBSTONE: u8 = 0;
const KIND_VALUE: u8 = 1;

/// Why a stored record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the fixed header.
    #[error("record of {0} bytes is shorter than the 22-byte header")]
    Short(usize),
    /// A format byte this version does not know.
    #[error("unknown record format {0}")]
    Format(u8),
    /// A kind byte that is neither tombstone nor value.
    #[error("unknown record kind {0}")]
    Kind(u8),
    /// A tombstone followed by value bytes.
    #[error("tombstone record carries {0} trailing bytes")]
    TrailingBytes(usize),
    /// An expiring record that is a tombstone or lacks its expiry.
    #[error("expiring record of {0} bytes is not a value with its expiry")]
    BadExpiring(usize),
}

/// Encodes `v` as a record.
pub fn encode(v: &Versioned) -> Vec<u8> {
    let value_len = v.value.as_ref().map_or(0, Bytes::len);
    let expires = v.expires.filter(|_| v.value.is_some());
    let mut out = Vec::with_capacity(HEADER_LEN + 8 + value_len);
    out.push(if expires.is_some() {
        FORMAT_V2_EXPIRING
    } else {
        FORMAT_V1
    });
    out.extend_from_slice(&v.ts.micros.to_be_bytes());
    out.extend_from_slice(&v.ts.logical.to_be_bytes());
    out.extend_from_slice(&v.ts.node.0.to_be_bytes());
    match &v.value {
        None => out.push(KIND_TOMBSTONE),
        Some(value) => {
            out.push(KIND_VALUE);
            if let Some(e) = expires {
                out.extend_from_slice(&e.to_be_bytes());
            }
            out.extend_from_slice(value);
        }
    }
    out
}

/// The header fields of a record, without copying its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The version's timestamp.
    pub ts: Timestamp,
    /// True for a tombstone.
    pub tombstone: bool,
    /// The value's expiry (HLC micros), if it has one.
    pub expires: Option<u64>,
}

impl Header {
    /// When the record is dead for good (see [`Versioned::dead_since`]):
    /// what the tombstone purge rules compare.
    pub fn dead_since(&self) -> Option<u64> {
        match (self.tombstone, self.expires) {
            (true, _) => Some(self.ts.micros),
            (false, Some(e)) => Some(e.max(self.ts.micros)),
            (false, None) => None,
        }
    }

    /// Where the value bytes start in the record.
    fn value_start(&self) -> usize {
        HEADER_LEN + if self.expires.is_some() { 8 } else { 0 }
    }
}

/// Decodes only the header of a record (the compaction filter needs no more).
pub fn decode_header(raw: &[u8]) -> Result<Header, DecodeError> {
    if raw.len() < HEADER_LEN {
        return Err(DecodeError::Short(raw.len()));
    }
    let expiring = match raw[0] {
        FORMAT_V1 => false,
        FORMAT_V2_EXPIRING => true,
        other => return Err(DecodeError::Format(other)),
    };
    let micros = u64::from_be_bytes(fixed(&raw[1..9]));
    let logical = u32::from_be_bytes(fixed(&raw[9..13]));
    let node = u64::from_be_bytes(fixed(&raw[13..21]));
    let tombstone = match raw[21] {
        KIND_TOMBSTONE if raw.len() == HEADER_LEN => true,
        KIND_TOMBSTONE => return Err(DecodeError::TrailingBytes(raw.len() - HEADER_LEN)),
        KIND_VALUE => false,
        other => return Err(DecodeError::Kind(other)),
    };
    let expires = if expiring {
        if tombstone || raw.len() < HEADER_LEN + 8 {
            return Err(DecodeError::BadExpiring(raw.len()));
        }
        Some(u64::from_be_bytes(fixed(&raw[HEADER_LEN..HEADER_LEN + 8])))
    } else {
        None
    };
    Ok(Header {
        ts: Timestamp::new(micros, logical, NodeId(node)),
        tombstone,
        expires,
    })
}

/// Decodes a full record.
pub fn decode(raw: &[u8]) -> Result<Versioned, DecodeError> {
    let h = decode_header(raw)?;
    Ok(Versioned {
        ts: h.ts,
        value: (!h.tombstone).then(|| Bytes::copy_from_slice(&raw[h.value_start()..])),
        expires: h.expires,
    })
}

/// Converts a slice whose length the caller has already checked.
fn fixed<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(m: u64) -> Timestamp {
        Timestamp::new(m, 7, NodeId(3))
    }

    #[test]
    fn round_trips_values_tombstones_and_empty_values() {
        for v in [
            Versioned::value(ts(1), "hello"),
            Versioned::value(ts(u64::MAX), ""),
            Versioned::tombstone(ts(42)),
            Versioned::expiring(ts(5), "ttl", 99),
            Versioned::expiring(ts(5), "", u64::MAX),
        ] {
            assert_eq!(decode(&encode(&v)), Ok(v));
        }
    }

    #[test]
    fn format_1_records_still_read_and_expiring_ones_are_format_2() {
        // A record as written before expiries existed, byte for byte.
        let mut old = vec![FORMAT_V1];
        old.extend_from_slice(&9u64.to_be_bytes());
        old.extend_from_slice(&7u32.to_be_bytes());
        old.extend_from_slice(&3u64.to_be_bytes());
        old.push(KIND_VALUE);
        old.extend_from_slice(b"old");
        assert_eq!(decode(&old), Ok(Versioned::value(ts(9), "old")));
        assert_eq!(encode(&Versioned::value(ts(9), "old")), old);
        let new = encode(&Versioned::expiring(ts(9), "v", 42));
        assert_eq!(new[0], FORMAT_V2_EXPIRING);
        assert_eq!(decode_header(&new).map(|h| h.dead_since()), Ok(Some(42)));
        assert_eq!(
            decode(&new[..HEADER_LEN + 3]),
            Err(DecodeError::BadExpiring(HEADER_LEN + 3))
        );
    }

    #[test]
    fn rejects_damaged_records() {
        let good = encode(&Versioned::value(ts(1), "x"));
        assert_eq!(decode(&good[..5]), Err(DecodeError::Short(5)));
        let mut bad = good.clone();
        bad[0] = 9;
        assert_eq!(decode(&bad), Err(DecodeError::Format(9)));
        let mut bad = good.clone();
        bad[21] = 7;
        assert_eq!(decode(&bad), Err(DecodeError::Kind(7)));
        let mut bad = encode(&Versioned::tombstone(ts(1)));
        bad.push(0);
        assert_eq!(decode(&bad), Err(DecodeError::TrailingBytes(1)));
    }
}
