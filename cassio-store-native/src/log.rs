//! The commit log: every write is appended here before it reaches the
//! memtable, so a crash loses nothing that was synced.
//!
//! A segment file is a sequence of records
//! `len: u32 | crc32(payload): u32 | payload` where the payload is one entry
//! (`format::encode_entry`). Writes go through a user-space buffer; `sync_to`
//! flushes it and fsyncs. Concurrent callers of `sync_to` share fsyncs (group
//! commit): one becomes the leader and syncs everything appended so far, the
//! others wait for it and return without a syscall of their own.

use crate::faults::LogFaults;
use crate::format::{self, corruption, get_u32};
use bytes::Bytes;
use cassio_core::{StoreError, Versioned};
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

/// Extension of segment files.
pub(crate) const EXT: &str = "log";
/// Bytes of record header.
const HEADER: usize = 8;
/// The user-space buffer in front of the file.
const BUFFER: usize = 256 * 1024;

/// A `Write` over a shared file handle, so the group-commit leader can fsync
/// the file without holding the append lock. It counts the bytes handed to
/// the OS, which is what a later fsync makes durable.
struct Shared {
    file: Arc<File>,
    faults: Arc<LogFaults>,
    written: u64,
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.faults.before_write()?;
        let n = (&*self.file).write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A segment whose last bytes may not be fsynced yet.
struct Pending {
    segment: u64,
    file: Arc<File>,
    /// Bytes in the OS when it was last flushed (at a record boundary).
    len: u64,
}

struct Appender {
    writer: Option<BufWriter<Shared>>,
    file: Arc<File>,
    segment: u64,
    /// Records appended so far (the log sequence number of the last one).
    appended: u64,
    /// Earlier segments whose tail may not be fsynced yet.
    unsynced: Vec<Pending>,
    scratch: Vec<u8>,
}

#[derive(Default)]
struct SyncState {
    synced: u64,
    leader_active: bool,
}

/// The commit log of one store.
pub(crate) struct CommitLog {
    dir: PathBuf,
    app: Mutex<Appender>,
    sync: Mutex<SyncState>,
    synced_cv: Condvar,
    faults: Arc<LogFaults>,
    /// Set by the first failed write or fsync; never cleared. Linux may drop
    /// the dirty pages of a failed fsync and report the next fsync as a
    /// success ("fsyncgate"), so after one failure nothing this log says about
    /// durability can be trusted until the store is reopened and replays what
    /// really reached the disk.
    poison: OnceLock<String>,
    /// Per segment id, the bytes known durable (fsynced, or present when the
    /// store was opened and synced then). The power-loss model truncates to it.
    durable: Mutex<BTreeMap<u64, u64>>,
    /// fsync calls made, for tests and stats.
    pub(crate) fsyncs: AtomicU64,
}

fn open_segment(dir: &Path, id: u64) -> Result<Arc<File>, StoreError> {
    let path = dir.join(format::file_name(id, EXT));
    let file = File::options().append(true).create_new(true).open(path)?;
    // The new name must survive a crash before any write in it is acknowledged.
    format::sync_dir(dir)?;
    Ok(Arc::new(file))
}

fn writer(file: &Arc<File>, faults: &Arc<LogFaults>) -> BufWriter<Shared> {
    BufWriter::with_capacity(
        BUFFER,
        Shared {
            file: file.clone(),
            faults: faults.clone(),
            written: 0,
        },
    )
}

impl CommitLog {
    /// Starts a new segment `segment` in `dir`. `durable` lists the segments
    /// already on disk (replayed and synced at open) with their lengths.
    pub(crate) fn create(
        dir: &Path,
        segment: u64,
        faults: Arc<LogFaults>,
        durable: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<Self, StoreError> {
        let file = open_segment(dir, segment)?;
        let mut durable: BTreeMap<u64, u64> = durable.into_iter().collect();
        durable.insert(segment, 0);
        Ok(CommitLog {
            dir: dir.to_path_buf(),
            app: Mutex::new(Appender {
                writer: Some(writer(&file, &faults)),
                file,
                segment,
                appended: 0,
                unsynced: Vec::new(),
                scratch: Vec::new(),
            }),
            sync: Mutex::new(SyncState::default()),
            synced_cv: Condvar::new(),
            faults,
            poison: OnceLock::new(),
            durable: Mutex::new(durable),
            fsyncs: AtomicU64::new(0),
        })
    }

    /// The error every operation returns once the log is poisoned.
    pub(crate) fn check_poison(&self) -> Result<(), StoreError> {
        match self.poison.get() {
            None => Ok(()),
            Some(detail) => Err(StoreError::Poisoned {
                detail: detail.clone(),
            }),
        }
    }

    /// Poisons the log with `e` (the first failure wins) and returns the
    /// poisoned error for the caller to report.
    fn poison_with(&self, what: &str, e: StoreError) -> StoreError {
        if let StoreError::Poisoned { .. } | StoreError::Closed = e {
            return e;
        }
        let detail = format!("{what} failed: {e}");
        if self.poison.set(detail.clone()).is_ok() {
            tracing::error!(
                dir = %self.dir.display(), error = %detail,
                "commit log poisoned: the store refuses writes and syncs until it is reopened"
            );
        }
        StoreError::Poisoned {
            detail: self.poison.get().cloned().unwrap_or(detail),
        }
    }

    /// Appends one write; returns its sequence number for `sync_to`.
    pub(crate) fn append(&self, key: &[u8], v: &Versioned) -> Result<u64, StoreError> {
        self.check_poison()?;
        let mut guard = self.app.lock();
        let a = &mut *guard;
        let writer = a.writer.as_mut().ok_or(StoreError::Closed)?;
        a.scratch.clear();
        a.scratch.extend_from_slice(&[0; HEADER]);
        format::encode_entry(&mut a.scratch, key, v);
        let len = u32::try_from(a.scratch.len() - HEADER).map_err(|_| StoreError::TooLarge {
            what: "record",
            len: a.scratch.len(),
            max: u32::MAX as usize,
        })?;
        let crc = format::crc(&a.scratch[HEADER..]);
        a.scratch[..4].copy_from_slice(&len.to_le_bytes());
        a.scratch[4..8].copy_from_slice(&crc.to_le_bytes());
        if let Err(e) = writer.write_all(&a.scratch) {
            // A partial record may now sit in the file; appending after it
            // would put acknowledged writes behind a torn record, so refuse.
            a.writer = None;
            return Err(self.poison_with("commit-log write", e.into()));
        }
        a.appended += 1;
        Ok(a.appended)
    }

    /// The sequence number of the last appended record.
    pub(crate) fn appended(&self) -> u64 {
        self.app.lock().appended
    }

    /// Returns once every record up to `lsn` is on stable storage. If the
    /// fsync that would cover `lsn` fails, every writer waiting on it gets
    /// the error and the log is poisoned.
    pub(crate) fn sync_to(&self, lsn: u64) -> Result<(), StoreError> {
        let mut st = self.sync.lock();
        loop {
            // Records synced before a failure really are durable.
            if st.synced >= lsn {
                return Ok(());
            }
            self.check_poison()?;
            if !st.leader_active {
                st.leader_active = true;
                break;
            }
            self.synced_cv.wait(&mut st);
        }
        drop(st);
        let result = self
            .sync_everything_appended()
            .map_err(|e| self.poison_with("commit-log sync (buffer write or fsync)", e));
        let mut st = self.sync.lock();
        st.leader_active = false;
        if let Ok(target) = result {
            st.synced = st.synced.max(target);
        }
        drop(st);
        self.synced_cv.notify_all();
        result.map(|_| ())
    }

    /// Flushes the buffer and fsyncs every segment that may hold unsynced
    /// records; returns the sequence number now durable.
    fn sync_everything_appended(&self) -> Result<u64, StoreError> {
        let (files, target) = {
            let mut a = self.app.lock();
            self.check_poison()?;
            let writer = a.writer.as_mut().ok_or(StoreError::Closed)?;
            if let Err(e) = writer.flush() {
                a.writer = None;
                return Err(e.into());
            }
            let len = writer.get_ref().written;
            // Taken under the same lock as `appended` so a concurrent rotate
            // cannot move records into a file this leader does not sync.
            let mut files = std::mem::take(&mut a.unsynced);
            files.push(Pending {
                segment: a.segment,
                file: a.file.clone(),
                len,
            });
            (files, a.appended)
        };
        for p in &files {
            self.faults.before_sync()?;
            p.file.sync_data()?;
            self.fsyncs.fetch_add(1, AtomicOrdering::Relaxed);
            let mut d = self.durable.lock();
            let e = d.entry(p.segment).or_insert(0);
            *e = (*e).max(p.len);
        }
        Ok(target)
    }

    /// Syncs everything appended so far.
    pub(crate) fn sync_all(&self) -> Result<(), StoreError> {
        // A poisoned log cannot vouch even for "nothing new to sync".
        self.check_poison()?;
        let lsn = self.appended();
        self.sync_to(lsn)
    }

    /// Flushes the buffer to the OS without fsyncing (at rotation); returns
    /// the bytes the segment then holds.
    fn flush_buffer(&self, a: &mut Appender) -> Result<u64, StoreError> {
        let w = a.writer.as_mut().ok_or(StoreError::Closed)?;
        if let Err(e) = w.flush() {
            a.writer = None;
            return Err(self.poison_with("commit-log write", e.into()));
        }
        Ok(w.get_ref().written)
    }

    /// Starts segment `segment`; later appends go there. The old segment's
    /// buffered records reach the OS now and its fsync is left to the next
    /// `sync_to`, which covers it.
    pub(crate) fn rotate(&self, segment: u64) -> Result<(), StoreError> {
        self.check_poison()?;
        let file = open_segment(&self.dir, segment)?;
        let mut a = self.app.lock();
        let len = self.flush_buffer(&mut a)?;
        let old = std::mem::replace(&mut a.file, file.clone());
        let old_segment = a.segment;
        a.unsynced.push(Pending {
            segment: old_segment,
            file: old,
            len,
        });
        a.writer = Some(writer(&file, &self.faults));
        a.segment = segment;
        self.durable.lock().insert(segment, 0);
        Ok(())
    }

    /// Segments below `log_start` were deleted (their records are in tables):
    /// stop tracking them.
    pub(crate) fn forget_below(&self, log_start: u64) {
        let mut d = self.durable.lock();
        *d = d.split_off(&log_start);
    }

    /// The segment new records go to.
    #[cfg(test)]
    pub(crate) fn segment(&self) -> u64 {
        self.app.lock().segment
    }

    /// Clean shutdown: flush and fsync.
    pub(crate) fn close(&self) -> Result<(), StoreError> {
        let r = self.sync_all();
        self.app.lock().writer = None;
        r
    }

    /// Simulated crash: buffered records are dropped as if the process died.
    pub(crate) fn crash(&self) {
        let mut a = self.app.lock();
        if let Some(w) = a.writer.take() {
            let (_file, _lost_buffer) = w.into_parts();
        }
    }

    /// Simulated power loss, step one: a crash, then the durable length of
    /// every segment this log knows, by id, for the caller to truncate to.
    pub(crate) fn power_loss(&self) -> BTreeMap<u64, u64> {
        self.crash();
        self.durable.lock().clone()
    }
}

/// What replaying one segment found.
#[derive(Debug)]
pub(crate) struct SegmentReplay {
    /// Records applied.
    pub records: u64,
    /// Bytes in the segment file.
    pub len: u64,
    /// Where the first bad record starts, and why it is bad.
    pub damage: Option<(u64, String)>,
}

/// Checks the record at `pos`: `Ok((payload range))` if it is whole and its
/// checksum holds, else why not.
fn check_record(data: &[u8], pos: usize) -> Result<std::ops::Range<usize>, String> {
    if data.len() - pos < HEADER {
        return Err("torn record header".to_string());
    }
    let len = get_u32(data, pos).unwrap_or(0) as usize;
    let crc = get_u32(data, pos + 4).unwrap_or(0);
    let body = pos + HEADER;
    if len == 0 {
        return Err("zero-length record".to_string());
    }
    if len > data.len() - body {
        return Err(format!("record of {len} bytes runs past the end"));
    }
    if format::crc(&data[body..body + len]) != crc {
        return Err("record checksum mismatch".to_string());
    }
    Ok(body..body + len)
}

/// The first offset at or after `from` where a whole, checksummed, decodable
/// record starts, if any: proof that damage before it is not a torn tail.
///
/// Every byte offset is tried (damage can shift record boundaries), but a
/// candidate is checksummed only after its header and entry structure agree
/// on its length, which random bytes almost never do; so the scan is linear
/// in practice rather than quadratic.
pub(crate) fn find_record(data: &[u8], from: usize) -> Option<usize> {
    let mut pos = from;
    while pos + HEADER < data.len() {
        let len = get_u32(data, pos).unwrap_or(0) as usize;
        let body = pos + HEADER;
        if len > 0 && len <= data.len() - body {
            let payload = &data[body..body + len];
            let whole = format::parse_entry(payload, 0).is_some_and(|e| e.next == len);
            if whole && check_record(data, pos).is_ok() {
                return Some(pos);
            }
        }
        pos += 1;
    }
    None
}

/// Reads the records of segment `path`, passing each to `apply`, and stops at
/// the first record that is torn or fails its checksum.
pub(crate) fn replay_segment(
    path: &Path,
    mut apply: impl FnMut(Bytes, Versioned) -> Result<(), StoreError>,
) -> Result<SegmentReplay, StoreError> {
    let data = Bytes::from(std::fs::read(path)?);
    let mut pos = 0usize;
    let mut records = 0;
    let damage = loop {
        if pos == data.len() {
            break None;
        }
        let range = match check_record(&data, pos) {
            Ok(r) => r,
            Err(detail) => break Some((pos as u64, detail)),
        };
        let len = range.len();
        let slice = data.slice(range.clone());
        match format::parse_entry(&slice, 0) {
            Some(e) if e.next == len => {
                let (k, v) = e.to_owned(&slice);
                apply(k, v)?;
            }
            _ => {
                return Err(corruption(
                    path,
                    pos as u64,
                    "record passed its checksum but does not decode",
                ))
            }
        }
        records += 1;
        pos = range.end;
    };
    Ok(SegmentReplay {
        records,
        len: data.len() as u64,
        damage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cassio_core::{NodeId, Timestamp};

    fn v(i: u64) -> Versioned {
        Versioned::value(
            Timestamp::new(i, 0, NodeId(1)),
            Bytes::from(vec![i as u8; 100]),
        )
    }

    #[test]
    fn replays_until_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::create(dir.path(), 1, Default::default(), []).unwrap();
        for i in 0..10u64 {
            log.append(&i.to_be_bytes(), &v(i)).unwrap();
        }
        log.sync_all().unwrap();
        log.close().unwrap();
        let path = dir.path().join(format::file_name(1, EXT));
        let full = std::fs::read(&path).unwrap();
        let mut seen = Vec::new();
        let r = replay_segment(&path, |k, x| {
            seen.push((k, x));
            Ok(())
        })
        .unwrap();
        assert_eq!(r.records, 10);
        assert!(r.damage.is_none());
        assert_eq!(seen[3].1, v(3));
        // Every truncation point yields a clean prefix.
        for cut in (1..full.len()).step_by(7) {
            std::fs::write(&path, &full[..cut]).unwrap();
            let r = replay_segment(&path, |_, _| Ok(())).unwrap();
            let rec = full.len() / 10;
            assert_eq!(r.records as usize, cut / rec, "cut at {cut}");
            assert_eq!(r.damage.is_some(), cut % rec != 0);
        }
        // A flipped bit stops replay at that record.
        let mut bad = full.clone();
        bad[full.len() / 2 + 20] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let r = replay_segment(&path, |_, _| Ok(())).unwrap();
        assert_eq!(r.records, 5);
        assert!(r.damage.unwrap().1.contains("checksum"));
    }

    #[test]
    fn concurrent_syncs_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(CommitLog::create(dir.path(), 1, Default::default(), []).unwrap());
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50u64 {
                        let lsn = log.append(&(t * 1000 + i).to_be_bytes(), &v(i)).unwrap();
                        log.sync_to(lsn).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(log.appended(), 200);
        assert!(log.sync.lock().synced >= 200);
        assert!(log.fsyncs.load(AtomicOrdering::Relaxed) <= 200);
    }

    #[test]
    fn one_fsync_covers_every_earlier_append() {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::create(dir.path(), 1, Default::default(), []).unwrap();
        let lsns: Vec<u64> = (0..3u64)
            .map(|i| log.append(&i.to_be_bytes(), &v(i)).unwrap())
            .collect();
        log.sync_to(lsns[0]).unwrap();
        log.sync_to(lsns[2]).unwrap();
        log.sync_to(lsns[1]).unwrap();
        assert_eq!(log.fsyncs.load(AtomicOrdering::Relaxed), 1);
        // Records in a rotated-away segment are covered by the next sync too.
        let lsn = log.append(b"x", &v(9)).unwrap();
        log.rotate(2).unwrap();
        log.sync_to(lsn).unwrap();
        assert_eq!(log.fsyncs.load(AtomicOrdering::Relaxed), 3);
        assert_eq!(log.segment(), 2);
    }

    #[test]
    fn a_failed_fsync_poisons_but_earlier_syncs_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(LogFaults::default());
        let log = CommitLog::create(dir.path(), 1, faults.clone(), []).unwrap();
        let a = log.append(b"a", &v(1)).unwrap();
        log.sync_to(a).unwrap();
        let b = log.append(b"b", &v(2)).unwrap();
        faults.fail_next_syncs(1);
        assert!(matches!(log.sync_to(b), Err(StoreError::Poisoned { .. })));
        // `a` was durable before the failure; nothing after it is vouched for.
        assert!(log.sync_to(a).is_ok());
        assert!(matches!(log.sync_to(b), Err(StoreError::Poisoned { .. })));
        assert!(matches!(log.sync_all(), Err(StoreError::Poisoned { .. })));
        assert!(matches!(
            log.append(b"c", &v(3)),
            Err(StoreError::Poisoned { .. })
        ));
        assert!(matches!(log.rotate(2), Err(StoreError::Poisoned { .. })));
        // The durable length is the one of the last good fsync.
        let rec = std::fs::metadata(dir.path().join(format::file_name(1, EXT)))
            .unwrap()
            .len()
            / 2;
        assert_eq!(log.power_loss().get(&1), Some(&rec));
    }

    #[test]
    fn durable_lengths_follow_fsyncs_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::create(dir.path(), 1, Default::default(), [(0, 77)]).unwrap();
        log.append(b"a", &v(1)).unwrap();
        log.rotate(2).unwrap();
        log.append(b"b", &v(2)).unwrap();
        let len = |id| {
            std::fs::metadata(dir.path().join(format::file_name(id, EXT)))
                .unwrap()
                .len()
        };
        // Rotation hands segment 1 to the OS but fsyncs nothing.
        assert!(len(1) > 0);
        let d = log.durable.lock().clone();
        assert_eq!((d[&0], d[&1], d[&2]), (77, 0, 0));
        log.sync_all().unwrap();
        let d = log.power_loss();
        assert_eq!((d[&1], d[&2]), (len(1), len(2)));
        log.forget_below(2);
        assert_eq!(log.durable.lock().keys().copied().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn find_record_finds_a_whole_record_after_garbage_and_nothing_in_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::create(dir.path(), 1, Default::default(), []).unwrap();
        log.append(b"k", &v(1)).unwrap();
        log.close().unwrap();
        let rec = std::fs::read(dir.path().join(format::file_name(1, EXT))).unwrap();
        let mut data: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert_eq!(
            find_record(&data, 0),
            None,
            "pseudo-random bytes hold no record"
        );
        assert_eq!(find_record(&[0u8; 4096], 0), None);
        data.extend_from_slice(&rec);
        assert_eq!(find_record(&data, 0), Some(5000));
        assert_eq!(find_record(&data, 5001), None);
    }
}
