//! Where the node keeps hints (writes a down replica missed), per target:
//! [`DiskHintLog`] in the data directory, [`MemoryHintLog`] for nodes built
//! without one.
//!
//! # On disk
//!
//! `<data_dir>/hints/<target node id, 16 hex digits>/` holds append-only
//! segment files `000001.log`, `000002.log`, … A segment is rolled once it
//! holds [`DEFAULT_SEGMENT_BYTES`] (so one may exceed it by one record).
//! Each record is framed as
//!
//! ```text
//! magic 0xC4 | format 1 | payload length u32 | crc32 of (the 6 bytes before it + payload) u32
//! payload: seq u64 | created micros u64 | ts micros u64 | ts logical u32 | ts node u64
//!          | flags u8 (bit 0: tombstone) | key length u32 | value length u32 | key | value
//! ```
//!
//! all integers little-endian. A small text file `trimmed` beside the
//! segments holds the target's trim point (the highest sequence number
//! trimmed or dropped), replaced atomically (written to a temporary file,
//! then renamed) on every trim, so trimmed hints stay trimmed across a
//! restart and sequence numbers continue above it even when every segment
//! was deleted.
//!
//! # What survives what
//!
//! Appends are one `write` of the whole record, not synced: a killed
//! process loses nothing, a power loss may lose the latest hints (hints are
//! best effort; anti-entropy repairs what they carried). The trim file is
//! not synced either: if a power loss leaves it empty or stale, hints up to
//! the last trim may be delivered again, which is harmless (a replay keeps
//! the original timestamp, so it is idempotent).
//!
//! At open every segment is scanned and checked. A torn or damaged record
//! in the newest segment ends it: the file is truncated there (logged with
//! `tracing::warn`) and appends continue after the last good record. In an
//! older segment the rest of that file is skipped (with a warning) and the
//! next one read. Damage found later by a read is handled the same way
//! (the segment's remainder is skipped, the segment takes no more appends).
//! A damaged hint is never returned. The hints lost to damage at the end of
//! the newest segment may see their sequence numbers handed out again;
//! nothing can refer to them any more, since the node that got them was the
//! process that crashed.
//!
//! # In memory
//!
//! Per target, an index of its segments (first and last sequence number,
//! count, charged bytes, oldest creation time, valid byte range), so
//! `backlog` reads no file. A trim that lands inside a segment re-reads the
//! record headers of that segment's remainder to keep these exact (at most
//! one segment per trim). Each target has its own mutex: appends to
//! different targets never wait for each other.

use cassio_core::{Hint, HintBacklog, HintLog, NodeId, StoreError, Timestamp, Versioned};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The hint directory's name inside the data directory.
pub const DIR_NAME: &str = "hints";
/// Size at which a segment is rolled.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// The largest key a hint may carry (the core's limit, which every hint
/// log enforces).
pub use cassio_core::hint_log::MAX_HINT_KEY_LEN as MAX_KEY_LEN;
/// The largest value a hint may carry.
pub use cassio_core::hint_log::MAX_HINT_VALUE_LEN as MAX_VALUE_LEN;

const MAGIC: u8 = 0xC4;
const FORMAT: u8 = 1;
/// Magic, format, payload length, crc.
const FRAME_HEADER: usize = 10;
/// The payload's fixed fields before the key.
const FIXED: usize = 8 + 8 + 8 + 4 + 8 + 1 + 4 + 4;
const MAX_PAYLOAD: usize = FIXED + MAX_KEY_LEN + MAX_VALUE_LEN;
const TOMBSTONE: u8 = 1;
/// The value region starts with the value's expiry (HLC micros, u64 LE).
/// Records without it read as before expiries existed, so old logs replay.
const EXPIRING: u8 = 2;
/// The trim point's file inside a target's directory.
const TRIM_FILE: &str = "trimmed";
const SEGMENT_EXT: &str = "log";
/// The charge's fixed overhead ([`Hint::charge`]).
const CHARGE_OVERHEAD: u64 = 48;

// ---- records ----

/// What the fixed part of a record says.
#[derive(Clone, Copy, Debug)]
struct Meta {
    seq: u64,
    created: u64,
    /// [`Hint::charge`] of the record's hint.
    charge: u64,
    /// Bytes of the whole record, frame included.
    len: u64,
}

/// Frames `hint` as record `seq` into `out` (cleared first).
fn encode(seq: u64, hint: &Hint, out: &mut Vec<u8>) {
    let value = hint.version.value.as_deref();
    let expires = hint.version.expires.filter(|_| value.is_some());
    let vlen = value.map_or(0, <[u8]>::len) + if expires.is_some() { 8 } else { 0 };
    let payload = FIXED + hint.key.len() + vlen;
    out.clear();
    out.reserve(FRAME_HEADER + payload);
    out.push(MAGIC);
    out.push(FORMAT);
    // Sizes are checked by `Hint::check_size`, so the payload fits in a u32.
    out.extend_from_slice(&(payload as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&hint.created_micros.to_le_bytes());
    let ts = hint.version.ts;
    out.extend_from_slice(&ts.micros.to_le_bytes());
    out.extend_from_slice(&ts.logical.to_le_bytes());
    out.extend_from_slice(&ts.node.0.to_le_bytes());
    out.push(match (value, expires) {
        (None, _) => TOMBSTONE,
        (Some(_), Some(_)) => EXPIRING,
        (Some(_), None) => 0,
    });
    out.extend_from_slice(&(hint.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(vlen as u32).to_le_bytes());
    out.extend_from_slice(&hint.key);
    if let Some(e) = expires {
        out.extend_from_slice(&e.to_le_bytes());
    }
    if let Some(v) = value {
        out.extend_from_slice(v);
    }
    let crc = checksum(&out[..6], &out[FRAME_HEADER..]);
    out[6..10].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(head: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(payload);
    h.finalize()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The fixed fields of a payload (`fixed` is its first [`FIXED`] bytes)
/// checked against the payload length.
fn parse_fixed(fixed: &[u8], payload_len: usize) -> Result<(Meta, Timestamp, u8), String> {
    let key_len = u32_at(fixed, 37) as usize;
    let value_len = u32_at(fixed, 41) as usize;
    let flags = fixed[36];
    if FIXED + key_len + value_len != payload_len {
        return Err(format!(
            "lengths disagree: key {key_len} + value {value_len} in a payload of {payload_len}"
        ));
    }
    if flags & !(TOMBSTONE | EXPIRING) != 0
        || (flags & TOMBSTONE != 0 && (value_len != 0 || flags & EXPIRING != 0))
        || (flags & EXPIRING != 0 && value_len < 8)
    {
        return Err(format!("bad flags {flags:#x}"));
    }
    let meta = Meta {
        seq: u64_at(fixed, 0),
        created: u64_at(fixed, 8),
        // `Hint::charge` counts the value's bytes, not the expiry's.
        charge: (key_len + value_len - if flags & EXPIRING != 0 { 8 } else { 0 }) as u64
            + CHARGE_OVERHEAD,
        len: (FRAME_HEADER + payload_len) as u64,
    };
    let ts = Timestamp {
        micros: u64_at(fixed, 16),
        logical: u32_at(fixed, 24),
        node: NodeId(u64_at(fixed, 28)),
    };
    Ok((meta, ts, flags))
}

/// The hint in a checked payload.
fn decode(payload: &[u8]) -> Result<Hint, String> {
    let (meta, ts, flags) = parse_fixed(&payload[..FIXED], payload.len())?;
    let key_len = u32_at(payload, 37) as usize;
    let key = bytes::Bytes::copy_from_slice(&payload[FIXED..FIXED + key_len]);
    let mut at = FIXED + key_len;
    let mut expires = None;
    if flags & EXPIRING != 0 {
        // `parse_fixed` checked the value region holds the 8 bytes.
        expires = Some(u64_at(payload, at));
        at += 8;
    }
    let value = if flags & TOMBSTONE != 0 {
        None
    } else {
        Some(bytes::Bytes::copy_from_slice(&payload[at..]))
    };
    Ok(Hint {
        key,
        version: Versioned { ts, value, expires },
        created_micros: meta.created,
    })
}

/// Why walking a segment stopped early.
enum WalkError {
    Io(io::Error),
    /// A torn or damaged record starts at `at`.
    Damage {
        at: u64,
        why: String,
    },
}

impl From<io::Error> for WalkError {
    fn from(e: io::Error) -> Self {
        WalkError::Io(e)
    }
}

/// Reads the records of one segment between two offsets.
struct Walker {
    reader: BufReader<File>,
    pos: u64,
    end: u64,
}

impl Walker {
    fn open(path: &Path, from: u64, end: u64) -> io::Result<Self> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(from))?;
        Ok(Walker {
            reader: BufReader::with_capacity(64 * 1024, file),
            pos: from,
            end,
        })
    }

    fn damage(&self, why: impl Into<String>) -> WalkError {
        WalkError::Damage {
            at: self.pos,
            why: why.into(),
        }
    }

    /// Reads the frame header and the payload's fixed part; checks what
    /// can be checked without the rest.
    fn head(&mut self, fixed: &mut [u8; FIXED]) -> Result<Option<(usize, u32)>, WalkError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let left = self.end - self.pos;
        if left < (FRAME_HEADER + FIXED) as u64 {
            return Err(self.damage(format!("torn record: {left} bytes left")));
        }
        let mut frame = [0u8; FRAME_HEADER];
        self.reader.read_exact(&mut frame)?;
        if frame[0] != MAGIC || frame[1] != FORMAT {
            return Err(self.damage(format!(
                "no record here (bytes {:#x} {:#x})",
                frame[0], frame[1]
            )));
        }
        let payload_len = u32_at(&frame, 2) as usize;
        if !(FIXED..=MAX_PAYLOAD).contains(&payload_len) {
            return Err(self.damage(format!("impossible record length {payload_len}")));
        }
        if (FRAME_HEADER + payload_len) as u64 > left {
            return Err(self.damage(format!(
                "torn record: {payload_len} payload bytes, {left} bytes left"
            )));
        }
        self.reader.read_exact(fixed)?;
        Ok(Some((payload_len, u32_at(&frame, 6))))
    }

    /// The next record, checked end to end; its payload is left in `buf`.
    fn next_checked(&mut self, buf: &mut Vec<u8>) -> Result<Option<Meta>, WalkError> {
        let mut fixed = [0u8; FIXED];
        let Some((payload_len, crc)) = self.head(&mut fixed)? else {
            return Ok(None);
        };
        buf.clear();
        buf.extend_from_slice(&fixed);
        buf.resize(payload_len, 0);
        self.reader.read_exact(&mut buf[FIXED..])?;
        let mut head = [0u8; 6];
        head[0] = MAGIC;
        head[1] = FORMAT;
        head[2..6].copy_from_slice(&(payload_len as u32).to_le_bytes());
        if checksum(&head, buf) != crc {
            return Err(self.damage("checksum mismatch"));
        }
        let (meta, _, _) = parse_fixed(&fixed, payload_len).map_err(|why| self.damage(why))?;
        self.pos += meta.len;
        Ok(Some(meta))
    }

    /// The next record's fixed fields only, skipping its key and value
    /// (for bookkeeping over records already checked once).
    fn next_meta(&mut self) -> Result<Option<Meta>, WalkError> {
        let mut fixed = [0u8; FIXED];
        let Some((payload_len, _)) = self.head(&mut fixed)? else {
            return Ok(None);
        };
        let (meta, _, _) = parse_fixed(&fixed, payload_len).map_err(|why| self.damage(why))?;
        self.reader.seek_relative((payload_len - FIXED) as i64)?;
        self.pos += meta.len;
        Ok(Some(meta))
    }
}

// ---- one target ----

/// What a run of held records adds up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stats {
    count: u64,
    bytes: u64,
    first_seq: u64,
    last_seq: u64,
    oldest: u64,
}

impl Stats {
    fn add(&mut self, m: &Meta) {
        if self.count == 0 {
            self.first_seq = m.seq;
            self.oldest = m.created;
        } else {
            self.oldest = self.oldest.min(m.created);
        }
        self.last_seq = m.seq;
        self.count += 1;
        self.bytes += m.charge;
    }
}

/// One segment file and what it holds.
#[derive(Debug)]
struct Segment {
    number: u64,
    path: PathBuf,
    /// Offset of the first held (untrimmed) record.
    start: u64,
    /// Offset past the last good record.
    end: u64,
    /// Of the records in `start..end`.
    stats: Stats,
    /// Takes no more appends (rolled, or damaged).
    sealed: bool,
}

/// Where the last read stopped, so the next one from there need not walk
/// the records before it.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    after: u64,
    number: u64,
    offset: u64,
}

/// One target's log; guarded by its own mutex.
struct TargetLog {
    target: NodeId,
    dir: PathBuf,
    /// Oldest first.
    segments: VecDeque<Segment>,
    /// Append handle of the newest segment, unless it is sealed.
    active: Option<File>,
    /// The last sequence number handed out (or trimmed).
    last_seq: u64,
    /// The trim point: hints up to it are forgotten.
    trimmed: u64,
    next_number: u64,
    cursor: Option<Cursor>,
    /// Encoding buffer, reused across appends.
    buf: Vec<u8>,
}

fn segment_number(path: &Path) -> Option<u64> {
    if path.extension()? != SEGMENT_EXT {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

/// The segment files in `dir`, by number.
fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(n) = segment_number(&path) {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

fn read_trim_point(dir: &Path) -> io::Result<u64> {
    let path = dir.join(TRIM_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(file = %path.display(), "unreadable hint trim point; trimmed hints may be delivered again");
            0
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn remove_segment(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            // The trim point already hides its hints; the next open retries.
            tracing::warn!(file = %path.display(), error = %e, "cannot delete a trimmed hint segment");
        }
    }
}

impl TargetLog {
    fn empty(target: NodeId, dir: PathBuf) -> Self {
        TargetLog {
            target,
            dir,
            segments: VecDeque::new(),
            active: None,
            last_seq: 0,
            trimmed: 0,
            next_number: 1,
            cursor: None,
            buf: Vec::new(),
        }
    }

    /// Opens the target's directory: reads the trim point, checks every
    /// segment (truncating a damaged tail of the newest one), forgets
    /// what is trimmed.
    fn open(target: NodeId, dir: PathBuf) -> Result<Self, StoreError> {
        let mut t = TargetLog::empty(target, dir);
        t.trimmed = read_trim_point(&t.dir)?;
        let files = list_segments(&t.dir)?;
        let mut buf = Vec::new();
        let mut prev_seq = 0u64;
        for (i, (number, path)) in files.iter().enumerate() {
            let newest = i + 1 == files.len();
            let len = fs::metadata(path)?.len();
            let mut walker = Walker::open(path, 0, len)?;
            let mut stats = Stats::default();
            let damage = loop {
                let at = walker.pos;
                match walker.next_checked(&mut buf) {
                    Ok(Some(m)) if m.seq <= prev_seq => {
                        // Numbers only grow; a record that goes back is
                        // not one this log wrote there.
                        break Some((at, format!("sequence number {} after {prev_seq}", m.seq)));
                    }
                    Ok(Some(m)) => {
                        prev_seq = m.seq;
                        stats.add(&m);
                    }
                    Ok(None) => break None,
                    Err(WalkError::Io(e)) => return Err(e.into()),
                    Err(WalkError::Damage { at, why }) => break Some((at, why)),
                }
            };
            let end = damage.as_ref().map_or(walker.pos, |(at, _)| *at);
            let mut sealed = !newest;
            if let Some((at, why)) = &damage {
                if newest {
                    tracing::warn!(target = %target, file = %path.display(), offset = at, dropped_bytes = len - at, %why,
                        "truncating the torn or damaged tail of the newest hint segment");
                    OpenOptions::new().write(true).open(path)?.set_len(*at)?;
                } else {
                    tracing::warn!(target = %target, file = %path.display(), offset = at, skipped_bytes = len - at, %why,
                        "skipping the rest of a damaged hint segment");
                    sealed = true;
                }
            }
            t.segments.push_back(Segment {
                number: *number,
                path: path.clone(),
                start: 0,
                end,
                stats,
                sealed,
            });
            t.next_number = number + 1;
        }
        t.last_seq = prev_seq.max(t.trimmed);
        t.forget_trimmed()?;
        if let Some(seg) = t.segments.back() {
            if !seg.sealed {
                t.active = Some(OpenOptions::new().append(true).open(&seg.path)?);
            }
        }
        Ok(t)
    }

    fn append(&mut self, hint: &Hint, segment_bytes: u64) -> Result<u64, StoreError> {
        let roll = match (self.segments.back(), &self.active) {
            (Some(seg), Some(_)) => seg.sealed || (seg.end >= segment_bytes && seg.end > 0),
            _ => true,
        };
        if roll {
            self.roll()?;
        }
        let seq = self.last_seq + 1;
        encode(seq, hint, &mut self.buf);
        let (Some(seg), Some(file)) = (self.segments.back_mut(), self.active.as_mut()) else {
            return Err(StoreError::Engine(
                "hint log has no segment to append to".into(),
            ));
        };
        // One write of the whole record, not synced: see the module docs.
        match file.write_all(&self.buf) {
            Ok(()) => {
                let meta = Meta {
                    seq,
                    created: hint.created_micros,
                    charge: hint.charge(),
                    len: self.buf.len() as u64,
                };
                seg.end += meta.len;
                seg.stats.add(&meta);
                self.last_seq = seq;
                Ok(seq)
            }
            Err(e) => {
                // Part of the record may be on disk: never hand its number
                // out again, and append no more behind it (a reopen skips
                // the partial record as damage).
                self.last_seq = seq;
                seg.sealed = true;
                self.active = None;
                Err(e.into())
            }
        }
    }

    /// Starts a new segment file for appends.
    fn roll(&mut self) -> Result<(), StoreError> {
        if let Some(seg) = self.segments.back_mut() {
            seg.sealed = true;
        }
        self.active = None;
        fs::create_dir_all(&self.dir)?;
        let number = self.next_number;
        let path = self.dir.join(format!("{number:06}.{SEGMENT_EXT}"));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)?;
        self.next_number += 1;
        self.segments.push_back(Segment {
            number,
            path,
            start: 0,
            end: 0,
            stats: Stats::default(),
            sealed: false,
        });
        self.active = Some(file);
        Ok(())
    }

    /// Replaces the trim point file (temporary file, then rename).
    fn save_trim_point(&self, through: u64) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(TRIM_FILE);
        let tmp = self.dir.join(format!("{TRIM_FILE}.tmp"));
        fs::write(&tmp, format!("{through}\n"))?;
        fs::rename(&tmp, &path)
    }

    /// Deletes segments whose every record is trimmed (and empty sealed
    /// ones), and recounts a segment the trim point falls inside.
    fn forget_trimmed(&mut self) -> Result<(), StoreError> {
        while let Some(seg) = self.segments.front() {
            let gone = if seg.stats.count == 0 {
                seg.sealed || self.segments.len() > 1 || self.active.is_none()
            } else {
                seg.stats.last_seq <= self.trimmed
            };
            if !gone {
                break;
            }
            if let Some(seg) = self.segments.pop_front() {
                if self.segments.is_empty() {
                    self.active = None;
                }
                remove_segment(&seg.path);
            }
        }
        let trimmed = self.trimmed;
        let target = self.target;
        if let Some(seg) = self.segments.front_mut() {
            if seg.stats.count > 0 && seg.stats.first_seq <= trimmed {
                recount(target, seg, trimmed)?;
            }
        }
        Ok(())
    }

    fn trim(&mut self, through: u64) -> Result<(), StoreError> {
        // Never past the last number handed out, so numbering continues
        // above the trim point.
        let through = through.min(self.last_seq);
        if through <= self.trimmed {
            return Ok(());
        }
        // The point first: a crash between the two steps leaves files the
        // next open deletes, not hints that come back.
        self.save_trim_point(through)?;
        self.trimmed = through;
        self.forget_trimmed()
    }

    fn drop_all(&mut self) -> Result<(), StoreError> {
        if self.last_seq > self.trimmed {
            self.save_trim_point(self.last_seq)?;
            self.trimmed = self.last_seq;
        }
        self.active = None;
        for seg in self.segments.drain(..) {
            remove_segment(&seg.path);
        }
        self.cursor = None;
        Ok(())
    }

    fn read(&mut self, after: u64, max_bytes: u64) -> Result<Vec<(u64, Hint)>, StoreError> {
        let after = after.max(self.trimmed);
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut buf = Vec::new();
        let mut i = match self
            .segments
            .iter()
            .position(|s| s.stats.count > 0 && s.stats.last_seq > after)
        {
            Some(i) => i,
            None => return Ok(out),
        };
        let mut from = {
            let seg = &self.segments[i];
            match self.cursor {
                Some(c)
                    if c.after == after
                        && c.number == seg.number
                        && (seg.start..=seg.end).contains(&c.offset) =>
                {
                    c.offset
                }
                _ => seg.start,
            }
        };
        while i < self.segments.len() {
            let seg = &self.segments[i];
            if seg.stats.count == 0 {
                i += 1;
                from = self.segments.get(i).map_or(0, |s| s.start);
                continue;
            }
            let (number, path, end) = (seg.number, seg.path.clone(), seg.end);
            let mut walker = Walker::open(&path, from, end)?;
            loop {
                let at = walker.pos;
                match walker.next_checked(&mut buf) {
                    Ok(Some(m)) => {
                        if m.seq <= after {
                            continue;
                        }
                        let hint = match decode(&buf) {
                            Ok(h) => h,
                            Err(why) => {
                                self.damaged(i, at, &why)?;
                                break;
                            }
                        };
                        bytes = bytes.saturating_add(hint.charge());
                        out.push((m.seq, hint));
                        if bytes >= max_bytes {
                            self.cursor = Some(Cursor {
                                after: m.seq,
                                number,
                                offset: walker.pos,
                            });
                            return Ok(out);
                        }
                    }
                    Ok(None) => break,
                    Err(WalkError::Io(e)) => return Err(e.into()),
                    Err(WalkError::Damage { at, why }) => {
                        self.damaged(i, at, &why)?;
                        break;
                    }
                }
            }
            i += 1;
            from = self.segments.get(i).map_or(0, |s| s.start);
        }
        if let (Some((seq, _)), Some(seg)) = (out.last(), self.segments.back()) {
            self.cursor = Some(Cursor {
                after: *seq,
                number: seg.number,
                offset: seg.end,
            });
        }
        Ok(out)
    }

    /// A read found damage at `at` in segment `i`: skip the rest of it.
    fn damaged(&mut self, i: usize, at: u64, why: &str) -> Result<(), StoreError> {
        let newest = i + 1 == self.segments.len();
        let target = self.target;
        let seg = &mut self.segments[i];
        tracing::warn!(target = %target, file = %seg.path.display(), offset = at, %why,
            "damaged hint record; skipping the rest of its segment");
        seg.end = at.max(seg.start);
        seg.sealed = true;
        if newest {
            self.active = None;
        }
        let seg = &mut self.segments[i];
        recount(target, seg, 0)
    }

    fn backlog(&self) -> Option<HintBacklog> {
        let mut b = HintBacklog::default();
        for s in self.segments.iter().filter(|s| s.stats.count > 0) {
            if b.count == 0 {
                b.first_seq = s.stats.first_seq;
                b.oldest_micros = s.stats.oldest;
            }
            b.count += s.stats.count;
            b.bytes += s.stats.bytes;
            b.last_seq = s.stats.last_seq;
            b.oldest_micros = b.oldest_micros.min(s.stats.oldest);
        }
        (b.count > 0).then_some(b)
    }
}

/// Recounts `seg` from its start: records up to `trimmed` are skipped (the
/// start moves past them), the rest counted. Damage found on the way ends
/// the segment there.
fn recount(target: NodeId, seg: &mut Segment, trimmed: u64) -> Result<(), StoreError> {
    let mut walker = Walker::open(&seg.path, seg.start, seg.end)?;
    let mut stats = Stats::default();
    let mut start = seg.start;
    loop {
        let at = walker.pos;
        match walker.next_meta() {
            Ok(Some(m)) if m.seq <= trimmed => start = walker.pos,
            Ok(Some(m)) => {
                if stats.count == 0 {
                    start = at;
                }
                stats.add(&m);
            }
            Ok(None) => break,
            Err(WalkError::Io(e)) => return Err(e.into()),
            Err(WalkError::Damage { at, why }) => {
                tracing::warn!(target = %target, file = %seg.path.display(), offset = at, %why,
                    "damaged hint record; skipping the rest of its segment");
                seg.end = at;
                seg.sealed = true;
                break;
            }
        }
    }
    seg.start = if stats.count == 0 { seg.end } else { start };
    seg.stats = stats;
    Ok(())
}

// ---- the log ----

/// A durable hint log in a directory (normally `<data_dir>/hints`); see the
/// module docs for its format and what survives a crash.
pub struct DiskHintLog {
    dir: PathBuf,
    segment_bytes: u64,
    targets: RwLock<BTreeMap<NodeId, Arc<Mutex<TargetLog>>>>,
}

impl std::fmt::Debug for DiskHintLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskHintLog")
            .field("dir", &self.dir)
            .field("segment_bytes", &self.segment_bytes)
            .field("targets", &self.targets.read().len())
            .finish()
    }
}

impl DiskHintLog {
    /// Opens (creating if needed) the hint log in `dir`, with segments
    /// rolled at [`DEFAULT_SEGMENT_BYTES`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, DEFAULT_SEGMENT_BYTES)
    }

    /// The hint log of the data directory `data_dir` (in its [`DIR_NAME`]).
    pub fn open_in_data_dir(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open(&data_dir.join(DIR_NAME))
    }

    /// Like [`DiskHintLog::open`], rolling segments at `segment_bytes`
    /// (small values make tests cover rolling).
    pub fn open_with(dir: &Path, segment_bytes: u64) -> Result<Self, StoreError> {
        fs::create_dir_all(dir)?;
        let mut targets = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .filter(|n| n.len() == 16)
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            else {
                tracing::debug!(entry = ?name, "ignoring a stray entry in the hint directory");
                continue;
            };
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let target = NodeId(id);
            let log = TargetLog::open(target, entry.path())?;
            targets.insert(target, Arc::new(Mutex::new(log)));
        }
        Ok(DiskHintLog {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(1),
            targets: RwLock::new(targets),
        })
    }

    /// The directory of `target`'s hints inside the hint directory `dir`.
    pub fn target_dir(dir: &Path, target: NodeId) -> PathBuf {
        dir.join(format!("{:016x}", target.0))
    }

    /// `target`'s segment files in the hint directory `dir`, oldest first.
    pub fn segment_files(dir: &Path, target: NodeId) -> Vec<PathBuf> {
        list_segments(&Self::target_dir(dir, target))
            .map(|v| v.into_iter().map(|(_, p)| p).collect())
            .unwrap_or_default()
    }

    fn existing(&self, target: NodeId) -> Option<Arc<Mutex<TargetLog>>> {
        self.targets.read().get(&target).cloned()
    }

    fn get_or_create(&self, target: NodeId) -> Arc<Mutex<TargetLog>> {
        if let Some(t) = self.existing(target) {
            return t;
        }
        let dir = Self::target_dir(&self.dir, target);
        self.targets
            .write()
            .entry(target)
            .or_insert_with(|| Arc::new(Mutex::new(TargetLog::empty(target, dir))))
            .clone()
    }
}

impl HintLog for DiskHintLog {
    fn append(&self, target: NodeId, hint: &Hint) -> Result<u64, StoreError> {
        hint.check_size()?;
        let t = self.get_or_create(target);
        let mut t = t.lock();
        t.append(hint, self.segment_bytes)
    }

    fn read(
        &self,
        target: NodeId,
        after: u64,
        max_bytes: u64,
    ) -> Result<Vec<(u64, Hint)>, StoreError> {
        match self.existing(target) {
            Some(t) => t.lock().read(after, max_bytes),
            None => Ok(Vec::new()),
        }
    }

    fn trim(&self, target: NodeId, through: u64) -> Result<(), StoreError> {
        match self.existing(target) {
            Some(t) => t.lock().trim(through),
            None => Ok(()),
        }
    }

    fn drop_target(&self, target: NodeId) -> Result<(), StoreError> {
        match self.existing(target) {
            Some(t) => t.lock().drop_all(),
            None => Ok(()),
        }
    }

    fn backlog(&self) -> Result<Vec<(NodeId, HintBacklog)>, StoreError> {
        let targets: Vec<(NodeId, Arc<Mutex<TargetLog>>)> = self
            .targets
            .read()
            .iter()
            .map(|(id, t)| (*id, t.clone()))
            .collect();
        Ok(targets
            .into_iter()
            .filter_map(|(id, t)| t.lock().backlog().map(|b| (id, b)))
            .collect())
    }
}

// ---- in memory ----

/// A hint log in memory, for nodes built without a data directory (the
/// default of [`crate::NodeBuilder`]): hints last as long as the process.
/// The core's in-memory log, the same one the simulator runs.
pub type MemoryHintLog = cassio_core::hint_log::MemHintLog;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn hint(i: u64, len: usize) -> Hint {
        Hint {
            key: Bytes::from(format!("k{i}")),
            version: Versioned::value(Timestamp::new(i, 1, NodeId(2)), vec![i as u8; len]),
            created_micros: i * 10,
        }
    }

    #[test]
    fn a_record_decodes_to_its_hint_and_its_header_to_its_charge() {
        for h in [
            hint(3, 100),
            Hint {
                key: Bytes::new(),
                version: Versioned::tombstone(Timestamp::new(1, 2, NodeId(3))),
                created_micros: 4,
            },
            Hint {
                key: Bytes::from_static(b"ttl"),
                version: Versioned::expiring(Timestamp::new(1, 2, NodeId(3)), "v", 99),
                created_micros: 5,
            },
            Hint {
                key: Bytes::from_static(b"ttl-empty"),
                version: Versioned::expiring(Timestamp::new(1, 2, NodeId(3)), "", u64::MAX),
                created_micros: 6,
            },
        ] {
            let mut buf = Vec::new();
            encode(77, &h, &mut buf);
            let payload = &buf[FRAME_HEADER..];
            assert_eq!(decode(payload), Ok(h.clone()));
            let (meta, _, _) = parse_fixed(&payload[..FIXED], payload.len()).expect("parse");
            assert_eq!((meta.seq, meta.created), (77, h.created_micros));
            assert_eq!(
                meta.charge,
                h.charge(),
                "the header-only charge matches Hint::charge"
            );
            assert_eq!(meta.len, buf.len() as u64);
        }
    }

    #[test]
    fn oversize_keys_and_values_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = DiskHintLog::open(dir.path()).expect("open");
        let mut h = hint(1, 1);
        h.key = Bytes::from(vec![0u8; MAX_KEY_LEN + 1]);
        assert!(matches!(
            log.append(NodeId(1), &h),
            Err(StoreError::TooLarge { what: "key", .. })
        ));
        let mut h = hint(1, 1);
        h.version.value = Some(Bytes::from(vec![0u8; MAX_VALUE_LEN + 1]));
        assert!(matches!(
            MemoryHintLog::new().append(NodeId(1), &h),
            Err(StoreError::TooLarge { what: "value", .. })
        ));
        let mut h = hint(1, 1);
        h.key = Bytes::from(vec![0u8; MAX_KEY_LEN]);
        assert_eq!(log.append(NodeId(1), &h).expect("a key at the limit"), 1);
    }

    #[test]
    fn segments_roll_and_whole_trimmed_segments_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = DiskHintLog::open_with(dir.path(), 4096).expect("open");
        let t = NodeId(5);
        let seqs: Vec<u64> = (0..40)
            .map(|i| log.append(t, &hint(i, 1000)).expect("append"))
            .collect();
        let files = DiskHintLog::segment_files(dir.path(), t);
        assert!(
            files.len() >= 9,
            "1 kB hints in 4 kB segments: {}",
            files.len()
        );
        log.trim(t, seqs[20]).expect("trim");
        let left = DiskHintLog::segment_files(dir.path(), t);
        assert!(
            left.len() < files.len() - 4,
            "{} of {} left",
            left.len(),
            files.len()
        );
        assert_eq!(left.last(), files.last());
        log.drop_target(t).expect("drop");
        assert!(DiskHintLog::segment_files(dir.path(), t).is_empty());
        // The directory keeps the trim point, so numbers go on.
        drop(log);
        let log = DiskHintLog::open_with(dir.path(), 4096).expect("reopen");
        assert_eq!(log.append(t, &hint(1, 1)).expect("append"), 41);
    }

    #[test]
    fn damage_in_an_older_segment_skips_only_its_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = NodeId(9);
        let log = DiskHintLog::open_with(dir.path(), 10_000).expect("open");
        let all: Vec<(u64, Hint)> = (0..30)
            .map(|i| {
                let h = hint(i, 1000);
                (log.append(t, &h).expect("append"), h)
            })
            .collect();
        drop(log);
        let files = DiskHintLog::segment_files(dir.path(), t);
        assert!(files.len() >= 3);
        // Damage the third record of the first segment (10 per segment).
        let mut bytes = fs::read(&files[0]).expect("read");
        let rec = bytes.len() / 10;
        bytes[2 * rec + rec / 2] ^= 1;
        fs::write(&files[0], bytes).expect("write");
        let log = DiskHintLog::open_with(dir.path(), 10_000).expect("reopen");
        let got = log.read(t, 0, u64::MAX).expect("read");
        let mut want = all[..2].to_vec();
        want.extend_from_slice(&all[10..]);
        assert_eq!(got, want, "the first two, then every later segment");
        let b = log.backlog().expect("backlog");
        assert_eq!(b[0].1.count, 22);
    }

    #[test]
    fn damage_found_by_a_read_is_skipped_not_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = NodeId(9);
        let log = DiskHintLog::open_with(dir.path(), 10_000).expect("open");
        let all: Vec<(u64, Hint)> = (0..25)
            .map(|i| {
                let h = hint(i, 1000);
                (log.append(t, &h).expect("append"), h)
            })
            .collect();
        let files = DiskHintLog::segment_files(dir.path(), t);
        // Damaged while open: the fifth record of the second segment.
        let mut bytes = fs::read(&files[1]).expect("read");
        let rec = bytes.len() / 10;
        bytes[4 * rec + 20] ^= 0xFF;
        fs::write(&files[1], bytes).expect("write");
        let got = log.read(t, 0, u64::MAX).expect("read");
        let mut want = all[..14].to_vec();
        want.extend_from_slice(&all[20..]);
        assert_eq!(got, want);
        let b = log.backlog().expect("backlog");
        assert_eq!(
            b[0].1.count,
            want.len() as u64,
            "the backlog forgets the skipped rest"
        );
        // The newest segment still takes appends.
        let s = log.append(t, &hint(99, 10)).expect("append");
        assert_eq!(s, 26);
    }

    #[test]
    fn sequential_reads_resume_where_the_last_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = NodeId(3);
        let log = DiskHintLog::open_with(dir.path(), 50_000).expect("open");
        let all: Vec<(u64, Hint)> = (0..200)
            .map(|i| {
                let h = hint(i, 500);
                (log.append(t, &h).expect("append"), h)
            })
            .collect();
        let mut after = 0;
        let mut got = Vec::new();
        for round in 0..200 {
            let page = log.read(t, after, 3000).expect("read");
            let Some(last) = page.last().map(|(s, _)| *s) else {
                break;
            };
            // Trim every other page, and read once from an earlier point.
            if round % 2 == 0 {
                log.trim(t, last).expect("trim");
            }
            if round == 7 {
                // Round 6 trimmed everything before this page.
                assert_eq!(log.read(t, 0, 1).expect("read")[0], page[0]);
            }
            after = last;
            got.extend(page);
        }
        assert_eq!(got, all);
    }
}
