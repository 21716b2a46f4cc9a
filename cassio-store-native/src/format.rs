//! Byte-level encodings shared by the commit log and the tables: varints,
//! the entry codec, checksums and positioned reads.

use bytes::Bytes;
use cassio_core::{NodeId, StoreError, Timestamp, Versioned};
use std::fs::File;
use std::ops::Range;
use std::path::Path;

/// Bytes in an encoded timestamp: micros (8) + logical (4) + node (8).
const TS_LEN: usize = 20;

/// Appends `v` as an LEB128 varint.
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads an LEB128 varint at `*pos`, advancing it; `None` when truncated or
/// longer than 64 bits.
pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// Reads a little-endian u64 at `pos`.
pub(crate) fn get_u64(buf: &[u8], pos: usize) -> Option<u64> {
    let b = buf.get(pos..pos.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// Reads a little-endian u32 at `pos`.
pub(crate) fn get_u32(buf: &[u8], pos: usize) -> Option<u32> {
    let b = buf.get(pos..pos.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    Some(u32::from_le_bytes(a))
}

/// Set in an entry's tag when an expiry (u64 LE) follows the tag. No value
/// can be 2^62 bytes long, so entries written before expiries existed
/// never have it set and still parse the same.
const TAG_EXPIRING: u64 = 1 << 62;

/// Appends one entry: `varint key_len | key | ts | varint tag | [expiry] | value`,
/// where tag 0 is a tombstone and tag n > 0 is a value of n - 1 bytes; a
/// value with an expiry sets [`TAG_EXPIRING`] in the tag and puts the
/// expiry (HLC micros, u64 LE) before the value bytes.
pub(crate) fn encode_entry(buf: &mut Vec<u8>, key: &[u8], v: &Versioned) {
    put_varint(buf, key.len() as u64);
    buf.extend_from_slice(key);
    buf.extend_from_slice(&v.ts.micros.to_le_bytes());
    buf.extend_from_slice(&v.ts.logical.to_le_bytes());
    buf.extend_from_slice(&v.ts.node.0.to_le_bytes());
    match (&v.value, v.expires) {
        (None, _) => put_varint(buf, 0),
        (Some(val), None) => {
            put_varint(buf, val.len() as u64 + 1);
            buf.extend_from_slice(val);
        }
        (Some(val), Some(e)) => {
            put_varint(buf, TAG_EXPIRING | (val.len() as u64 + 1));
            buf.extend_from_slice(&e.to_le_bytes());
            buf.extend_from_slice(val);
        }
    }
}

/// An entry parsed in place: where its parts are inside the buffer.
pub(crate) struct EntryRef {
    /// Where the key is.
    pub key: Range<usize>,
    /// The timestamp.
    pub ts: Timestamp,
    /// Where the value is, or `None` for a tombstone.
    pub value: Option<Range<usize>>,
    /// The value's expiry, if it has one.
    pub expires: Option<u64>,
    /// Where the next entry starts.
    pub next: usize,
}

/// Parses the entry at `pos`; `None` when the bytes are not a whole entry.
/// Every length is checked against the buffer, so hostile input cannot panic.
pub(crate) fn parse_entry(buf: &[u8], pos: usize) -> Option<EntryRef> {
    let mut p = pos;
    let klen = usize::try_from(get_varint(buf, &mut p)?).ok()?;
    let kend = p.checked_add(klen)?;
    if kend > buf.len() {
        return None;
    }
    let key = p..kend;
    p = kend;
    let micros = get_u64(buf, p)?;
    let logical = get_u32(buf, p + 8)?;
    let node = get_u64(buf, p + 12)?;
    p += TS_LEN;
    let mut tag = get_varint(buf, &mut p)?;
    let mut expires = None;
    if tag & TAG_EXPIRING != 0 {
        tag &= !TAG_EXPIRING;
        // An expiring tombstone is not a thing: refuse it as damage.
        if tag == 0 {
            return None;
        }
        expires = Some(get_u64(buf, p)?);
        p += 8;
    }
    let value = if tag == 0 {
        None
    } else {
        let vlen = usize::try_from(tag - 1).ok()?;
        let vend = p.checked_add(vlen)?;
        if vend > buf.len() {
            return None;
        }
        let r = p..vend;
        p = vend;
        Some(r)
    };
    Some(EntryRef {
        key,
        ts: Timestamp::new(micros, logical, NodeId(node)),
        value,
        expires,
        next: p,
    })
}

impl EntryRef {
    /// Materialises the entry as owned (zero-copy) slices of `buf`.
    pub(crate) fn to_owned(&self, buf: &Bytes) -> (Bytes, Versioned) {
        (self.key_bytes(buf), self.versioned(buf))
    }

    /// The key as a zero-copy slice of `buf`.
    pub(crate) fn key_bytes(&self, buf: &Bytes) -> Bytes {
        buf.slice(self.key.clone())
    }

    /// The version as a zero-copy slice of `buf`.
    pub(crate) fn versioned(&self, buf: &Bytes) -> Versioned {
        Versioned {
            ts: self.ts,
            value: self.value.clone().map(|r| buf.slice(r)),
            expires: self.expires,
        }
    }
}

/// A CRC32 (Castagnoli polynomial is not required; crc32fast's IEEE is fine
/// for detecting media damage and torn writes).
pub(crate) fn crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// A corruption error naming the file and offset.
pub(crate) fn corruption(path: &Path, offset: u64, detail: impl Into<String>) -> StoreError {
    StoreError::Corruption {
        location: format!("{} @ {}", path.display(), offset),
        detail: detail.into(),
    }
}

/// Fills `buf` from `file` at `offset` without moving a shared cursor, so
/// many readers can use one handle at once.
#[cfg(unix)]
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

/// Fills `buf` from `file` at `offset` without moving a shared cursor, so
/// many readers can use one handle at once.
#[cfg(windows)]
pub(crate) fn read_exact_at(
    file: &File,
    mut buf: &mut [u8],
    mut offset: u64,
) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "failed to fill whole buffer",
                ))
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes the directory entry changes in `dir` (creates, renames, deletes)
/// durable. A no-op where directories cannot be opened (Windows).
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A numbered file in the store directory: `{id:020}.{ext}`.
pub(crate) fn file_name(id: u64, ext: &str) -> String {
    format!("{id:020}.{ext}")
}

/// Parses `{id}.{ext}` back into the id, for directory scans.
pub(crate) fn parse_file_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Every `(id, path)` of files with extension `ext` in `dir`, by ascending id.
pub(crate) fn list_numbered(
    dir: &Path,
    ext: &str,
) -> std::io::Result<Vec<(u64, std::path::PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| parse_file_name(n, ext))
        {
            out.push((id, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_truncations_are_rejected() {
        let key = b"k\xff\x00";
        let v = Versioned::value(
            Timestamp::new(7, 3, NodeId(9)),
            Bytes::from_static(b"hello"),
        );
        let t = Versioned::tombstone(Timestamp::new(u64::MAX, u32::MAX, NodeId(u64::MAX)));
        let mut buf = Vec::new();
        encode_entry(&mut buf, key, &v);
        let first = buf.len();
        encode_entry(&mut buf, b"", &t);
        let bytes = Bytes::from(buf.clone());
        let e1 = parse_entry(&buf, 0).unwrap();
        assert_eq!(e1.next, first);
        assert_eq!(e1.to_owned(&bytes), (Bytes::from_static(key), v));
        let e2 = parse_entry(&buf, first).unwrap();
        assert_eq!(e2.next, buf.len());
        assert_eq!(e2.to_owned(&bytes), (Bytes::new(), t));
        for cut in 0..first {
            assert!(parse_entry(&buf[..cut], 0).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_lengths_do_not_panic() {
        let mut buf = Vec::new();
        put_varint(&mut buf, u64::MAX);
        assert!(parse_entry(&buf, 0).is_none());
        assert!(parse_entry(&[0xff; 11], 0).is_none());
        assert!(parse_entry(&[], 5).is_none());
    }

    #[test]
    fn file_names_parse_back() {
        assert_eq!(parse_file_name(&file_name(42, "sst"), "sst"), Some(42));
        assert_eq!(parse_file_name("42.log", "sst"), None);
        assert_eq!(parse_file_name(".sst", "sst"), None);
        assert_eq!(parse_file_name("x1.sst", "sst"), None);
    }
}
