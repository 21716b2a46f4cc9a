//! Sorted string tables: immutable files of sorted entries.
//!
//! Layout:
//! ```text
//! [data block]* [bloom block] [index block] [footer: 64 bytes]
//! data block  = entry* | crc32(entries)          (entries as in format::encode_entry)
//! bloom block = k: u32 | bits | crc32
//! index block = (varint key_len | last key | varint offset | varint len)* | crc32
//! footer      = index_off u64 | index_len u64 | bloom_off u64 | bloom_len u64
//!             | entries u64 | tombstones u64 | version u32 | crc32(previous 52 bytes) u32
//!             | magic u64
//! ```
//! Every block carries its own checksum, checked on every read, so a flipped
//! bit surfaces as `StoreError::Corruption` and is never served.

use crate::bloom::{Bloom, KeyHash};
use crate::format::{self, corruption, get_u32, get_u64, get_varint, parse_entry, put_varint};
use bytes::Bytes;
use cassio_core::{StoreError, Versioned};
use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// Identifies the file as a Cassio table ("CASSIOST").
const MAGIC: u64 = u64::from_le_bytes(*b"CASSIOST");
/// The on-disk format version this code writes (2: entries may carry an
/// expiry, see `format::encode_entry`).
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The format before expiries, still read (its entries never carry one).
pub(crate) const FORMAT_VERSION_PRE_EXPIRY: u32 = 1;
/// Bytes in the footer.
const FOOTER_LEN: u64 = 64;

/// Writes one table; entries must arrive in strictly ascending key order.
pub(crate) struct TableWriter {
    out: BufWriter<File>,
    offset: u64,
    block: Vec<u8>,
    block_target: usize,
    last_key: Vec<u8>,
    index: Vec<u8>,
    hashes: Vec<KeyHash>,
    entries: u64,
    tombstones: u64,
    bloom_fp: f64,
}

impl TableWriter {
    /// Creates `path` (which must not exist).
    pub(crate) fn create(
        path: &Path,
        block_target: usize,
        bloom_fp: f64,
    ) -> Result<Self, StoreError> {
        let file = File::options().write(true).create_new(true).open(path)?;
        Ok(TableWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            offset: 0,
            block: Vec::with_capacity(block_target * 2),
            block_target: block_target.max(256),
            last_key: Vec::new(),
            index: Vec::new(),
            hashes: Vec::new(),
            entries: 0,
            tombstones: 0,
            bloom_fp,
        })
    }

    /// Appends an entry.
    pub(crate) fn add(&mut self, key: &[u8], v: &Versioned) -> Result<(), StoreError> {
        debug_assert!(self.entries == 0 || key > self.last_key.as_slice());
        format::encode_entry(&mut self.block, key, v);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.hashes.push(KeyHash::of(key));
        self.entries += 1;
        // Counts what a purge could drop: tombstones and expiring values.
        if v.dead_since().is_some() {
            self.tombstones += 1;
        }
        if self.block.len() >= self.block_target {
            self.finish_block()?;
        }
        Ok(())
    }

    /// Entries added so far.
    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    fn finish_block(&mut self) -> Result<(), StoreError> {
        if self.block.is_empty() {
            return Ok(());
        }
        let c = format::crc(&self.block);
        self.block.extend_from_slice(&c.to_le_bytes());
        self.out.write_all(&self.block)?;
        put_varint(&mut self.index, self.last_key.len() as u64);
        self.index.extend_from_slice(&self.last_key);
        put_varint(&mut self.index, self.offset);
        put_varint(&mut self.index, self.block.len() as u64);
        self.offset += self.block.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Writes the bloom filter, index and footer, and fsyncs the file.
    /// Returns the table's size in bytes.
    pub(crate) fn finish(mut self) -> Result<u64, StoreError> {
        self.finish_block()?;
        let mut bloom = Bloom::with_capacity(self.hashes.len(), self.bloom_fp);
        for h in &self.hashes {
            bloom.insert(*h);
        }
        let mut bb = Vec::new();
        bloom.encode(&mut bb);
        let c = format::crc(&bb);
        bb.extend_from_slice(&c.to_le_bytes());
        let bloom_off = self.offset;
        self.out.write_all(&bb)?;
        self.offset += bb.len() as u64;

        let c = format::crc(&self.index);
        self.index.extend_from_slice(&c.to_le_bytes());
        let index_off = self.offset;
        self.out.write_all(&self.index)?;
        self.offset += self.index.len() as u64;

        let mut footer = Vec::with_capacity(FOOTER_LEN as usize);
        for x in [
            index_off,
            self.index.len() as u64,
            bloom_off,
            bb.len() as u64,
            self.entries,
            self.tombstones,
        ] {
            footer.extend_from_slice(&x.to_le_bytes());
        }
        footer.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let c = format::crc(&footer);
        footer.extend_from_slice(&c.to_le_bytes());
        footer.extend_from_slice(&MAGIC.to_le_bytes());
        self.out.write_all(&footer)?;
        self.offset += FOOTER_LEN;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(self.offset)
    }
}

/// One data block's place in the file, and the last key it holds.
struct IndexEntry {
    key_start: u32,
    key_len: u32,
    offset: u64,
    len: u64,
}

/// Counters shared by all tables of a store, for the stats report.
#[derive(Default, Debug)]
pub(crate) struct ReadCounters {
    /// Data blocks read from disk.
    pub block_reads: AtomicU64,
    /// Table lookups a bloom filter answered "absent".
    pub bloom_negatives: AtomicU64,
    /// Table lookups a bloom filter let through that found the key.
    pub bloom_true_positives: AtomicU64,
    /// Table lookups a bloom filter let through that did not find the key.
    pub bloom_false_positives: AtomicU64,
}

/// An open, immutable table.
pub(crate) struct Table {
    /// The file id (tables are named `{id}.sst`).
    pub(crate) id: u64,
    path: PathBuf,
    file: File,
    /// File size in bytes.
    pub(crate) size: u64,
    /// Number of entries.
    pub(crate) entries: u64,
    /// Number of tombstones among them.
    pub(crate) tombstones: u64,
    index_keys: Vec<u8>,
    index: Vec<IndexEntry>,
    bloom: Bloom,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("id", &self.id)
            .field("size", &self.size)
            .field("entries", &self.entries)
            .finish()
    }
}

impl Table {
    /// Opens and validates the footer, index and bloom filter of `path`.
    pub(crate) fn open(path: &Path, id: u64) -> Result<Table, StoreError> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        if size < FOOTER_LEN {
            return Err(corruption(
                path,
                0,
                format!("table of {size} bytes has no footer"),
            ));
        }
        let mut footer = [0u8; FOOTER_LEN as usize];
        format::read_exact_at(&file, &mut footer, size - FOOTER_LEN)?;
        let bad_footer = |d: &str| corruption(path, size - FOOTER_LEN, d.to_string());
        if get_u64(&footer, 56) != Some(MAGIC) {
            return Err(bad_footer("bad magic number"));
        }
        if get_u32(&footer, 52) != Some(format::crc(&footer[..52])) {
            return Err(bad_footer("footer checksum mismatch"));
        }
        let version = get_u32(&footer, 48).unwrap_or(0);
        if version != FORMAT_VERSION && version != FORMAT_VERSION_PRE_EXPIRY {
            return Err(bad_footer(&format!(
                "unsupported table format version {version}"
            )));
        }
        let field = |i: usize| get_u64(&footer, i * 8).unwrap_or(u64::MAX);
        let (index_off, index_len, bloom_off, bloom_len) = (field(0), field(1), field(2), field(3));
        let (entries, tombstones) = (field(4), field(5));
        let data_end = size - FOOTER_LEN;
        let in_file =
            |off: u64, len: u64| len >= 4 && off.checked_add(len).is_some_and(|e| e <= data_end);
        if !in_file(index_off, index_len) || !in_file(bloom_off, bloom_len) {
            return Err(bad_footer("block handles point outside the file"));
        }

        let bloom_buf = read_checked(&file, path, bloom_off, bloom_len)?;
        let bloom = Bloom::decode(&bloom_buf)
            .ok_or_else(|| corruption(path, bloom_off, "undecodable bloom filter"))?;

        let ibuf = read_checked(&file, path, index_off, index_len)?;
        let mut index = Vec::new();
        let mut index_keys = Vec::new();
        let mut p = 0;
        let bad_index = || corruption(path, index_off, "undecodable block index");
        while p < ibuf.len() {
            let klen = get_varint(&ibuf, &mut p).ok_or_else(bad_index)? as usize;
            let key = ibuf.get(p..p.saturating_add(klen)).ok_or_else(bad_index)?;
            p += klen;
            let offset = get_varint(&ibuf, &mut p).ok_or_else(bad_index)?;
            let len = get_varint(&ibuf, &mut p).ok_or_else(bad_index)?;
            if !in_file(offset, len) || offset.saturating_add(len) > bloom_off {
                return Err(bad_index());
            }
            index.push(IndexEntry {
                key_start: u32::try_from(index_keys.len()).map_err(|_| bad_index())?,
                key_len: u32::try_from(klen).map_err(|_| bad_index())?,
                offset,
                len,
            });
            index_keys.extend_from_slice(key);
        }
        index.shrink_to_fit();
        index_keys.shrink_to_fit();
        Ok(Table {
            id,
            path: path.to_path_buf(),
            file,
            size,
            entries,
            tombstones,
            index_keys,
            index,
            bloom,
        })
    }

    /// Where the table lives.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn index_key(&self, i: usize) -> &[u8] {
        let e = &self.index[i];
        let s = e.key_start as usize;
        &self.index_keys[s..s + e.key_len as usize]
    }

    /// The first block whose last key is >= `key` (or past the end).
    fn block_for(&self, key: &[u8]) -> usize {
        self.index.partition_point(|e| {
            let s = e.key_start as usize;
            &self.index_keys[s..s + e.key_len as usize] < key
        })
    }

    /// Bytes of memory held for the index and bloom filter.
    pub(crate) fn memory(&self) -> usize {
        self.index_keys.capacity()
            + self.index.capacity() * std::mem::size_of::<IndexEntry>()
            + self.bloom.memory()
    }

    /// Reads and checks block `i`.
    fn read_block(&self, i: usize, counters: &ReadCounters) -> Result<Bytes, StoreError> {
        let e = &self.index[i];
        counters.block_reads.fetch_add(1, AtomicOrdering::Relaxed);
        read_checked(&self.file, &self.path, e.offset, e.len).map(Bytes::from)
    }

    /// The version of `key` in this table, consulting the bloom filter first.
    /// Whether the table's filter rules `h`'s key out (so a lookup needs
    /// no block read); counted like a lookup's filter check.
    pub(crate) fn rules_out(&self, h: KeyHash, counters: &ReadCounters) -> bool {
        let out = !self.bloom.may_contain(h);
        if out {
            counters
                .bloom_negatives
                .fetch_add(1, AtomicOrdering::Relaxed);
        }
        out
    }

    pub(crate) fn get(
        &self,
        key: &[u8],
        h: KeyHash,
        counters: &ReadCounters,
    ) -> Result<Option<Versioned>, StoreError> {
        if !self.bloom.may_contain(h) {
            counters
                .bloom_negatives
                .fetch_add(1, AtomicOrdering::Relaxed);
            return Ok(None);
        }
        let found = self.get_unfiltered(key, counters)?;
        let c = if found.is_some() {
            &counters.bloom_true_positives
        } else {
            &counters.bloom_false_positives
        };
        c.fetch_add(1, AtomicOrdering::Relaxed);
        Ok(found)
    }

    fn get_unfiltered(
        &self,
        key: &[u8],
        counters: &ReadCounters,
    ) -> Result<Option<Versioned>, StoreError> {
        let i = self.block_for(key);
        if i >= self.index.len() {
            return Ok(None);
        }
        let block = self.read_block(i, counters)?;
        let mut p = 0;
        while p < block.len() {
            let e = parse_entry(&block, p).ok_or_else(|| self.bad_block(i))?;
            match block[e.key.clone()].cmp(key) {
                Ordering::Less => p = e.next,
                Ordering::Equal => return Ok(Some(e.versioned(&block))),
                Ordering::Greater => return Ok(None),
            }
        }
        Ok(None)
    }

    fn bad_block(&self, i: usize) -> StoreError {
        corruption(
            &self.path,
            self.index[i].offset,
            "undecodable entry in data block",
        )
    }

    /// The largest key in the table, if any.
    pub(crate) fn last_key(&self) -> Option<&[u8]> {
        self.index.len().checked_sub(1).map(|i| self.index_key(i))
    }
}

/// Reads `len` bytes at `off` (the last 4 being a CRC32 of the rest), checks
/// the CRC and returns the payload.
fn read_checked(file: &File, path: &Path, off: u64, len: u64) -> Result<Vec<u8>, StoreError> {
    if len < 4 {
        return Err(corruption(path, off, "block shorter than its checksum"));
    }
    let n = usize::try_from(len).map_err(|_| corruption(path, off, "block too large"))?;
    let mut buf = vec![0u8; n];
    format::read_exact_at(file, &mut buf, off).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            corruption(path, off, "block extends past the end of the file")
        } else {
            StoreError::Io(e)
        }
    })?;
    let body = n - 4;
    let stored = get_u32(&buf, body).unwrap_or(0);
    if stored != format::crc(&buf[..body]) {
        return Err(corruption(path, off, "block checksum mismatch"));
    }
    buf.truncate(body);
    Ok(buf)
}

/// Iterates a table's entries in key order from a starting bound.
pub(crate) struct TableIter<'a> {
    table: &'a Table,
    counters: &'a ReadCounters,
    block_idx: usize,
    block: Bytes,
    pos: usize,
    failed: bool,
}

impl<'a> TableIter<'a> {
    /// Positions the iterator at the first entry inside `start`.
    pub(crate) fn new(
        table: &'a Table,
        start: Bound<&[u8]>,
        counters: &'a ReadCounters,
    ) -> Result<Self, StoreError> {
        let block_idx = match start {
            Bound::Unbounded => 0,
            Bound::Included(k) | Bound::Excluded(k) => table.block_for(k),
        };
        let mut it = TableIter {
            table,
            counters,
            block_idx,
            block: Bytes::new(),
            pos: 0,
            failed: false,
        };
        if block_idx < table.index.len() {
            it.block = table.read_block(block_idx, counters)?;
            // Skip entries before the start bound inside the first block.
            if let Bound::Included(k) | Bound::Excluded(k) = start {
                while it.pos < it.block.len() {
                    let e =
                        parse_entry(&it.block, it.pos).ok_or_else(|| table.bad_block(block_idx))?;
                    let ek = &it.block[e.key.clone()];
                    let inside = match start {
                        Bound::Included(_) => ek >= k,
                        _ => ek > k,
                    };
                    if inside {
                        break;
                    }
                    it.pos = e.next;
                }
            }
        }
        Ok(it)
    }
}

impl Iterator for TableIter<'_> {
    type Item = Result<(Bytes, Versioned), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        while self.pos >= self.block.len() {
            self.block_idx += 1;
            if self.block_idx >= self.table.index.len() {
                return None;
            }
            match self.table.read_block(self.block_idx, self.counters) {
                Ok(b) => {
                    self.block = b;
                    self.pos = 0;
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        match parse_entry(&self.block, self.pos) {
            Some(e) => {
                self.pos = e.next;
                Some(Ok(e.to_owned(&self.block)))
            }
            None => {
                self.failed = true;
                Some(Err(self.table.bad_block(self.block_idx)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cassio_core::{NodeId, Timestamp};

    fn ver(i: u64) -> Versioned {
        if i % 10 == 0 {
            Versioned::tombstone(Timestamp::new(i, 0, NodeId(1)))
        } else {
            Versioned::value(
                Timestamp::new(i, 0, NodeId(1)),
                Bytes::from(format!("value-{i}")),
            )
        }
    }

    fn key(i: u64) -> Vec<u8> {
        format!("key-{i:06}").into_bytes()
    }

    fn build(dir: &Path, n: u64) -> Table {
        let path = dir.join("1.sst");
        let mut w = TableWriter::create(&path, 512, 0.01).unwrap();
        for i in 0..n {
            w.add(&key(i), &ver(i)).unwrap();
        }
        w.finish().unwrap();
        Table::open(&path, 1).unwrap()
    }

    #[test]
    fn format_1_tables_still_open_and_expiries_round_trip_in_format_2() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.sst");
        let mut w = TableWriter::create(&path, 512, 0.01).unwrap();
        let expiring = Versioned::expiring(Timestamp::new(5, 0, NodeId(1)), "ttl", 77);
        w.add(b"a", &ver(1)).unwrap();
        w.add(b"b", &expiring).unwrap();
        w.finish().unwrap();
        let c = ReadCounters::default();
        let t = Table::open(&path, 1).unwrap();
        assert_eq!(t.get(b"b", KeyHash::of(b"b"), &c).unwrap(), Some(expiring));
        // Counted as purgeable, like a tombstone.
        assert_eq!(t.tombstones, 1);
        drop(t);
        // A table written before expiries: footer version 1 (entries
        // without the expiry bit read the same).
        let path1 = dir.path().join("2.sst");
        let mut w = TableWriter::create(&path1, 512, 0.01).unwrap();
        w.add(b"a", &ver(1)).unwrap();
        w.finish().unwrap();
        let mut bytes = std::fs::read(&path1).unwrap();
        let f = bytes.len() - FOOTER_LEN as usize;
        bytes[f + 48..f + 52].copy_from_slice(&FORMAT_VERSION_PRE_EXPIRY.to_le_bytes());
        let crc = format::crc(&bytes[f..f + 52]);
        bytes[f + 52..f + 56].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path1, &bytes).unwrap();
        let t = Table::open(&path1, 2).unwrap();
        assert_eq!(t.get(b"a", KeyHash::of(b"a"), &c).unwrap(), Some(ver(1)));
        // An unknown version is still refused.
        bytes[f + 48..f + 52].copy_from_slice(&9u32.to_le_bytes());
        let crc = format::crc(&bytes[f..f + 52]);
        bytes[f + 52..f + 56].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path1, &bytes).unwrap();
        assert!(Table::open(&path1, 2).is_err());
    }

    #[test]
    fn point_reads_and_iteration_see_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let t = build(dir.path(), 2000);
        let c = ReadCounters::default();
        assert!(t.index.len() > 10, "small blocks give many index entries");
        for i in 0..2000 {
            assert_eq!(
                t.get(&key(i), KeyHash::of(&key(i)), &c).unwrap(),
                Some(ver(i))
            );
        }
        assert_eq!(t.get(b"key-9", KeyHash::of(b"key-9"), &c).unwrap(), None);
        let all: Vec<_> = TableIter::new(&t, Bound::Unbounded, &c)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(all.len(), 2000);
        let from: Vec<_> = TableIter::new(&t, Bound::Excluded(&key(1500)), &c)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(from.len(), 499);
        assert_eq!(from[0].0.as_ref(), key(1501).as_slice());
        assert_eq!(t.last_key(), Some(key(1999).as_slice()));
        assert_eq!((t.entries, t.tombstones), (2000, 200));
    }

    #[test]
    fn flipped_bytes_are_reported_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let t = build(dir.path(), 2000);
        let size = t.size;
        drop(t);
        let path = dir.path().join("1.sst");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1000] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let t = Table::open(&path, 1).unwrap();
        let c = ReadCounters::default();
        let errors = (0..2000)
            .filter(|&i| match t.get(&key(i), KeyHash::of(&key(i)), &c) {
                Ok(v) => {
                    assert_eq!(v, Some(ver(i)));
                    false
                }
                Err(StoreError::Corruption { .. }) => true,
                Err(e) => panic!("unexpected error {e}"),
            })
            .count();
        assert!(errors > 0);
        // Damage in the footer makes the table unopenable.
        bytes[1000] ^= 0x40;
        bytes[size as usize - 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Table::open(&path, 1),
            Err(StoreError::Corruption { .. })
        ));
        std::fs::write(&path, &bytes[..30]).unwrap();
        assert!(matches!(
            Table::open(&path, 1),
            Err(StoreError::Corruption { .. })
        ));
    }
}
