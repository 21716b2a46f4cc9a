//! Cassio's native storage engine: a log-structured merge tree.
//!
//! - **Commit log** ([`SyncPolicy`]): every write is appended to a segment
//!   file with a CRC32 per record before it is applied; `Always` fsyncs before
//!   acknowledging, and concurrent writers share one fsync (group commit).
//!   Recovery replays the log and cuts a torn tail; damage followed by valid
//!   records refuses to open (see [`NativeOptions::truncate_corrupt_log`]).
//!   A failed write or fsync poisons the log ([`StoreError::Poisoned`]): no
//!   durability is reported after it until the store is reopened.
//! - **Backpressure**: writes in flight are bounded by bytes and count
//!   ([`NativeOptions::max_write_queue_bytes`]); past the bound a writer waits,
//!   then gets [`StoreError::Overloaded`].
//! - **Memtable**: a concurrent skip list. When it passes
//!   [`NativeOptions::memtable_bytes`] it is frozen and a background thread
//!   writes it to a table while writers carry on in a fresh one.
//! - **Tables**: immutable files of checksummed sorted blocks, a block index
//!   and a bloom filter; the live set is recorded in an atomically replaced
//!   manifest.
//! - **Reads** look in the memtables, then tables newest to oldest, skipping
//!   a table whose bloom filter rules the key out.
//! - **Compaction** (size-tiered) merges adjacent tables in the background,
//!   keeps the newest version of each key and drops tombstones older than
//!   [`NativeOptions::tombstone_grace`] and below the purge watermark
//!   ([`Store::set_purge_watermark`]; zero, so nothing is purged, until the
//!   node sets it after each open).

mod bloom;
mod compaction;
mod faults;
mod format;
mod gate;
mod log;
mod manifest;
mod memtable;
mod recovery;
mod sstable;

pub use crate::faults::LogFaults;

use crate::bloom::KeyHash;
use crate::compaction::{Merge, Source};
use crate::gate::WriteGate;
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::sstable::{ReadCounters, Table, TableIter, TableWriter};
use cassio_core::{ApplyOutcome, Key, Store, StoreError, Versioned};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::HashSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// The largest value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;
/// Bytes charged to the write queue per write besides its key and value
/// (the memtable's per-entry overhead, as `memtable::ENTRY_OVERHEAD`).
const WRITE_OVERHEAD: usize = 96;

/// When the commit log is fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Before every write is acknowledged; concurrent writers share fsyncs.
    Always,
    /// Every interval, by a background thread (and on `sync`).
    Periodic(Duration),
    /// Only when [`Store::sync`] is called (or a memtable reaches a table).
    Never,
}

/// Tuning of a [`NativeStore`].
#[derive(Clone, Debug)]
pub struct NativeOptions {
    /// When the commit log is fsynced.
    pub sync: SyncPolicy,
    /// A memtable is frozen and flushed to a table once it holds this many bytes.
    pub memtable_bytes: usize,
    /// Target false-positive rate of each table's bloom filter.
    pub bloom_fp_rate: f64,
    /// Tombstones are purged by compaction only once this much time has passed
    /// since their timestamp (and only below the purge watermark).
    pub tombstone_grace: Duration,
    /// Target size of a table's data blocks.
    pub block_bytes: usize,
    /// Frozen memtables waiting for a flush before writers are held back
    /// (bounds memory when the disk cannot keep up).
    pub max_immutable_memtables: usize,
    /// Adjacent tables of similar size merged together, at least.
    pub compaction_min_tables: usize,
    /// Adjacent tables merged in one compaction, at most.
    pub compaction_max_tables: usize,
    /// Above this many tables, compaction merges the newest ones regardless
    /// of size, which bounds read amplification.
    pub max_tables: usize,
    /// Whether a background thread compacts on its own.
    pub background_compaction: bool,
    /// What to do with damage in the commit log that valid records follow
    /// (so it is not a torn tail). `false` (the default): refuse to open with
    /// [`StoreError::Corruption`] naming the file and offset. `true`: cut the
    /// log at the damage and set every later record aside (as `*.discarded`
    /// files), logging what was dropped. That loses writes that may have been
    /// acknowledged; an operator chooses it, for one start, after reading the
    /// error (`cassio start --truncate-corrupt-log`).
    pub truncate_corrupt_log: bool,
    /// Bytes of writes (key + value + 96 bytes of bookkeeping each) admitted
    /// at once: waiting for memtable space, the append lock or a group-commit
    /// fsync. Bounds what a stalled disk lets writers pile up in memory, on
    /// top of the memtables. A single larger write is admitted alone.
    ///
    /// Default 64 MiB: one maximal value (64 MiB) still gets in, and the
    /// bound on memory (memtables plus this) stays near
    /// `memtable_bytes * (1 + max_immutable_memtables)` + 64 MiB = 256 MiB.
    /// In `tests/overload.rs` 32 writers of 1 MiB values against a 4 MiB cap
    /// and a stalled fsync never held more than the cap.
    pub max_write_queue_bytes: usize,
    /// Writes admitted at once (each is a blocked thread at worst). Default
    /// 1024: far above the node's storage pool, so only a flood reaches it.
    pub max_write_queue_len: usize,
    /// How long a write waits for room (in the gate, or for a memtable flush)
    /// before it fails with [`StoreError::Overloaded`]. Default 5 s: longer
    /// than the node's request timeout (2 s), so a node sees its own timeout
    /// first and the store's error only when the disk is really stuck.
    pub write_queue_wait: Duration,
}

impl Default for NativeOptions {
    fn default() -> Self {
        NativeOptions {
            sync: SyncPolicy::Periodic(Duration::from_millis(100)),
            memtable_bytes: 64 << 20,
            bloom_fp_rate: 0.01,
            tombstone_grace: Duration::from_secs(10 * 24 * 3600),
            block_bytes: 4096,
            max_immutable_memtables: 2,
            compaction_min_tables: 4,
            compaction_max_tables: 32,
            max_tables: 12,
            background_compaction: true,
            truncate_corrupt_log: false,
            max_write_queue_bytes: 64 << 20,
            max_write_queue_len: 1024,
            write_queue_wait: Duration::from_secs(5),
        }
    }
}

/// Counters and sizes, for metrics and for checking amplification.
#[derive(Clone, Debug, Default)]
pub struct NativeStats {
    /// Live tables.
    pub tables: usize,
    /// Bytes in live tables.
    pub table_bytes: u64,
    /// Entries in live tables (a key counts once per table holding it).
    pub table_entries: u64,
    /// Bytes in the active and frozen memtables.
    pub memtable_bytes: u64,
    /// Frozen memtables waiting for their flush.
    pub immutable_memtables: usize,
    /// Bytes of table indexes and bloom filters held in memory.
    pub index_and_bloom_bytes: u64,
    /// Memtables flushed to tables.
    pub flushes: u64,
    /// Compactions completed.
    pub compactions: u64,
    /// Bytes written by flushes and compactions (write amplification input).
    pub table_bytes_written: u64,
    /// Data blocks read from disk.
    pub block_reads: u64,
    /// Table lookups skipped because the bloom filter said "absent".
    pub bloom_negatives: u64,
    /// Table lookups that passed the filter and found the key.
    pub bloom_true_positives: u64,
    /// Table lookups that passed the filter but did not find the key.
    pub bloom_false_positives: u64,
    /// fsync calls on the commit log.
    pub log_fsyncs: u64,
    /// Bytes of writes admitted and not finished (the write queue).
    pub write_queue_bytes: u64,
    /// Writes admitted and not finished.
    pub write_queue_len: u64,
    /// The most bytes the write queue ever held.
    pub write_queue_peak_bytes: u64,
    /// Writes refused with [`StoreError::Overloaded`].
    pub writes_overloaded: u64,
    /// Whether a failed write or fsync poisoned the commit log.
    pub log_poisoned: bool,
}

/// Damage found in the commit log when the store was opened, and cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogDamage {
    /// The segment holding the first bad record.
    pub segment: PathBuf,
    /// Its offset; the segment was truncated here.
    pub offset: u64,
    /// What was wrong with it.
    pub detail: String,
    /// Later segments holding bytes, set aside (renamed `*.log.discarded`)
    /// and not replayed. Empty later segments are removed.
    pub discarded: Vec<PathBuf>,
    /// Bytes cut from the segment and in later segments.
    pub bytes_dropped: u64,
    /// True when valid records followed the damage and were dropped because
    /// [`NativeOptions::truncate_corrupt_log`] was set (the cut bytes of the
    /// segment are kept as `*.log.from-{offset}.discarded`); false for a
    /// torn tail.
    pub valid_records_dropped: bool,
}

/// What [`NativeStore::simulate_power_loss`] did to the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PowerLossReport {
    /// Log segments cut back to their durable length.
    pub segments_truncated: usize,
    /// Bytes the OS had been handed but not fsynced, now gone.
    pub bytes_dropped: u64,
}

/// What opening the store found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Log segments replayed.
    pub segments_replayed: usize,
    /// Log records replayed.
    pub records_replayed: u64,
    /// A torn or corrupt log tail, if there was one. Nothing from it or after
    /// it is served.
    pub damage: Option<LogDamage>,
    /// Table files not in the manifest (from an interrupted flush or
    /// compaction) that were removed.
    pub orphan_tables_removed: usize,
}

/// The set of memtables and tables readers look at. Replaced, never mutated.
struct Version {
    active: Arc<Memtable>,
    /// Frozen memtables, oldest first.
    immutables: Vec<Arc<Memtable>>,
    /// Live tables, newest first.
    tables: Vec<Arc<Table>>,
}

#[derive(Default)]
struct Signals {
    flush: bool,
    compact: bool,
    shutdown: bool,
}

struct Inner {
    dir: PathBuf,
    opts: NativeOptions,
    /// Writers hold the read side from their LWW check until their memtable
    /// insert, so a freeze (write side) never strands a write in a memtable
    /// that is already being flushed.
    version: RwLock<Arc<Version>>,
    log: log::CommitLog,
    faults: Arc<LogFaults>,
    gate: WriteGate,
    next_id: AtomicU64,
    flush_lock: Mutex<()>,
    compaction_lock: Mutex<()>,
    /// Held while the table list changes, from computing the new manifest to
    /// installing the new version.
    manifest_lock: Mutex<()>,
    signals: Mutex<Signals>,
    signals_cv: Condvar,
    stall: Mutex<()>,
    stall_cv: Condvar,
    failed: Mutex<Option<String>>,
    counters: ReadCounters,
    flushes: AtomicU64,
    compactions: AtomicU64,
    bytes_written: AtomicU64,
    /// Compaction drops only tombstones older than this (HLC micros). Zero
    /// at open and only ever raised ([`Store::set_purge_watermark`]).
    purge_watermark: AtomicU64,
    /// Serialise [`Store::apply_replacing`] per key, so the version it
    /// reports replaced is the one it really replaced.
    stripes: KeyStripes,
}

/// A fixed set of mutexes picked by key hash.
struct KeyStripes(Box<[Mutex<()>]>);

impl KeyStripes {
    /// Enough that writer threads rarely share one (16 KiB in all).
    const N: usize = 1024;

    fn new() -> Self {
        KeyStripes((0..Self::N).map(|_| Mutex::new(())).collect())
    }

    fn lock(&self, key: &[u8]) -> parking_lot::MutexGuard<'_, ()> {
        // The ring token is a well-mixed hash of the key.
        self.0[cassio_core::Token::of(key).0 as usize % Self::N].lock()
    }
}

/// Cassio's native LSM store. See the crate documentation.
pub struct NativeStore {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
    recovery: RecoveryReport,
    crashed: bool,
}

impl std::fmt::Debug for NativeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn table_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format::file_name(id, "sst"))
}

impl NativeStore {
    /// Opens the store in `dir`, creating it if needed, and replays the commit log.
    pub fn open(dir: impl AsRef<Path>, opts: NativeOptions) -> Result<NativeStore, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let manifest = Manifest::load(&dir)?.unwrap_or_default();
        let mut report = RecoveryReport::default();

        let mut tables = Vec::with_capacity(manifest.tables.len());
        for &id in manifest.tables.iter().rev() {
            tables.push(Arc::new(Table::open(&table_path(&dir, id), id)?));
        }
        let live: HashSet<u64> = manifest.tables.iter().copied().collect();
        let mut max_id = manifest.next_id;
        for (id, path) in format::list_numbered(&dir, "sst")? {
            max_id = max_id.max(id + 1);
            if !live.contains(&id) {
                tracing::info!(path = %path.display(), "removing table not in the manifest");
                std::fs::remove_file(&path)?;
                report.orphan_tables_removed += 1;
            }
        }
        let logs = format::list_numbered(&dir, log::EXT)?;
        let mut replay = Vec::new();
        for (id, path) in logs {
            max_id = max_id.max(id + 1);
            if id < manifest.log_start {
                // Already in a table; the deletion after that flush was cut short.
                std::fs::remove_file(&path)?;
            } else {
                replay.push((id, path));
            }
        }
        let next_id = max_id.max(1);
        let new_segment = next_id;
        let memtable = Memtable::new(replay.first().map_or(new_segment, |(id, _)| *id));
        let counters = ReadCounters::default();
        let recovered = recovery::recover_log(&dir, &replay, opts.truncate_corrupt_log, |k, v| {
            let h = KeyHash::of(&k);
            for t in &tables {
                if let Some(existing) = t.get(&k, h, &counters)? {
                    if !v.supersedes(&existing) {
                        return Ok(());
                    }
                    break;
                }
            }
            memtable.insert(&k, &v);
            Ok(())
        })?;
        report.segments_replayed = recovered.segments_replayed;
        report.records_replayed = recovered.records_replayed;
        report.damage = recovered.damage;
        let _ = std::fs::remove_file(dir.join("MANIFEST.tmp"));

        let faults = Arc::new(LogFaults::default());
        let log = log::CommitLog::create(&dir, new_segment, faults.clone(), recovered.durable)?;
        let gate = WriteGate::new(
            opts.max_write_queue_bytes as u64,
            opts.max_write_queue_len as u64,
            opts.write_queue_wait,
        );
        let inner = Arc::new(Inner {
            dir,
            version: RwLock::new(Arc::new(Version {
                active: Arc::new(memtable),
                immutables: Vec::new(),
                tables,
            })),
            log,
            faults,
            gate,
            next_id: AtomicU64::new(next_id + 1),
            flush_lock: Mutex::new(()),
            compaction_lock: Mutex::new(()),
            manifest_lock: Mutex::new(()),
            signals: Mutex::new(Signals::default()),
            signals_cv: Condvar::new(),
            stall: Mutex::new(()),
            stall_cv: Condvar::new(),
            failed: Mutex::new(None),
            counters,
            flushes: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            purge_watermark: AtomicU64::new(0),
            stripes: KeyStripes::new(),
            opts,
        });
        let mut threads = Vec::new();
        let spawn = |name: &str, f: fn(&Inner)| -> Result<JoinHandle<()>, StoreError> {
            let inner = inner.clone();
            Ok(std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || f(&inner))?)
        };
        threads.push(spawn("cassio-flush", Inner::flush_loop)?);
        if inner.opts.background_compaction {
            threads.push(spawn("cassio-compact", Inner::compaction_loop)?);
        }
        if let SyncPolicy::Periodic(_) = inner.opts.sync {
            threads.push(spawn("cassio-logsync", Inner::sync_loop)?);
        }
        let store = NativeStore {
            inner,
            threads,
            recovery: report,
            crashed: false,
        };
        store.inner.maybe_freeze(false)?;
        store.inner.signal(|s| s.compact = true);
        Ok(store)
    }

    /// What opening the store found in the commit log.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Flushes the memtables and merges every table into one, purging
    /// tombstones past the grace period and below the purge watermark.
    pub fn compact(&self) -> Result<(), StoreError> {
        self.flush()?;
        self.inner.compact_once(true).map(|_| ())
    }

    /// Counters and sizes.
    pub fn stats(&self) -> NativeStats {
        let v = self.inner.version.read().clone();
        let c = &self.inner.counters;
        NativeStats {
            tables: v.tables.len(),
            table_bytes: v.tables.iter().map(|t| t.size).sum(),
            table_entries: v.tables.iter().map(|t| t.entries).sum(),
            memtable_bytes: (v.active.bytes()
                + v.immutables.iter().map(|m| m.bytes()).sum::<usize>())
                as u64,
            immutable_memtables: v.immutables.len(),
            index_and_bloom_bytes: v.tables.iter().map(|t| t.memory() as u64).sum(),
            flushes: self.inner.flushes.load(Ordering::Relaxed),
            compactions: self.inner.compactions.load(Ordering::Relaxed),
            table_bytes_written: self.inner.bytes_written.load(Ordering::Relaxed),
            block_reads: c.block_reads.load(Ordering::Relaxed),
            bloom_negatives: c.bloom_negatives.load(Ordering::Relaxed),
            bloom_true_positives: c.bloom_true_positives.load(Ordering::Relaxed),
            bloom_false_positives: c.bloom_false_positives.load(Ordering::Relaxed),
            log_fsyncs: self.inner.log.fsyncs.load(Ordering::Relaxed),
            write_queue_bytes: self.inner.gate.held().0,
            write_queue_len: self.inner.gate.held().1,
            write_queue_peak_bytes: self.inner.gate.peak_bytes(),
            writes_overloaded: self.inner.gate.refused.load(Ordering::Relaxed),
            log_poisoned: self.inner.log.check_poison().is_err(),
        }
    }

    /// The fault-injection seam of this store's commit log (for tests and
    /// the simulator): make its writes or fsyncs fail, or stall them.
    pub fn log_faults(&self) -> &LogFaults {
        &self.inner.faults
    }

    /// Simulates a power cut, for tests and the simulator, and consumes the
    /// store. Afterwards `dir` holds exactly what a power cut could leave:
    ///
    /// - user-space buffers are dropped, background threads stop, memtables
    ///   are gone (as in [`Self::crash`]);
    /// - every commit-log segment is truncated to the length last made
    ///   durable by an fsync (bytes handed to the OS but never fsynced are
    ///   lost: the harshest outcome a power cut may have);
    /// - tables and the manifest are untouched: they are fsynced (and the
    ///   directory too) before they are installed.
    ///
    /// Reopening then must find every write acknowledged under
    /// `SyncPolicy::Always` and every write before a successful
    /// [`Store::sync`], and no write that was never fsynced, unless a memtable
    /// flush had already written it to a (synced) table.
    pub fn simulate_power_loss(mut self) -> Result<PowerLossReport, StoreError> {
        self.crashed = true;
        // A stalled fsync finishes first (it was "in the disk" before the
        // cut); a stalled write must not keep the append lock forever.
        self.inner.faults.resume();
        self.inner.log.crash();
        self.stop_threads();
        let durable = self.inner.log.power_loss();
        let mut report = PowerLossReport::default();
        for (id, path) in format::list_numbered(&self.inner.dir, log::EXT)? {
            // Untracked segments are below the manifest's log start (their
            // deletion was cut short) and are ignored by the next open.
            let Some(&keep) = durable.get(&id) else {
                continue;
            };
            let len = std::fs::metadata(&path)?.len();
            if len > keep {
                let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                f.set_len(keep)?;
                f.sync_all()?;
                report.segments_truncated += 1;
                report.bytes_dropped += len - keep;
            }
        }
        Ok(report)
    }

    /// Simulates a process crash, for tests: buffered commit-log records are
    /// dropped unwritten and nothing is flushed or synced; background threads
    /// stop. Only what a real crash would leave on disk remains.
    pub fn crash(mut self) {
        self.crashed = true;
        self.inner.log.crash();
        self.stop_threads();
    }

    /// Commit-log segment files in `dir`, oldest first.
    pub fn log_files(dir: &Path) -> Vec<PathBuf> {
        format::list_numbered(dir, log::EXT)
            .map(|v| v.into_iter().map(|(_, p)| p).collect())
            .unwrap_or_default()
    }

    /// Table files in `dir`, by id (oldest first).
    pub fn table_files(dir: &Path) -> Vec<PathBuf> {
        format::list_numbered(dir, "sst")
            .map(|v| v.into_iter().map(|(_, p)| p).collect())
            .unwrap_or_default()
    }

    fn stop_threads(&mut self) {
        self.inner.signal(|s| s.shutdown = true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for NativeStore {
    fn drop(&mut self) {
        // An injected stall must not hang the teardown.
        self.inner.faults.resume();
        self.stop_threads();
        if !self.crashed {
            if let Err(e) = self.inner.log.close() {
                tracing::warn!(error = %e, "closing the commit log failed");
            }
        }
    }
}

impl Inner {
    fn signal(&self, f: impl FnOnce(&mut Signals)) {
        f(&mut self.signals.lock());
        self.signals_cv.notify_all();
    }

    fn check_failed(&self) -> Result<(), StoreError> {
        self.log.check_poison()?;
        match &*self.failed.lock() {
            None => Ok(()),
            Some(e) => Err(StoreError::Engine(format!(
                "store stopped after a background failure: {e}"
            ))),
        }
    }

    fn fail(&self, what: &str, e: &StoreError) {
        tracing::error!(error = %e, "{what} failed; the store refuses further writes");
        self.failed
            .lock()
            .get_or_insert_with(|| format!("{what}: {e}"));
        self.stall_cv.notify_all();
    }

    /// The version of `key` the store holds, looking newest to oldest.
    fn lookup(&self, v: &Version, key: &[u8], h: KeyHash) -> Result<Option<Versioned>, StoreError> {
        if let Some(x) = v.active.get(key) {
            return Ok(Some(x));
        }
        for m in v.immutables.iter().rev() {
            if let Some(x) = m.get(key) {
                return Ok(Some(x));
            }
        }
        for t in &v.tables {
            if let Some(x) = t.get(key, h, &self.counters)? {
                return Ok(Some(x));
            }
        }
        Ok(None)
    }

    /// [`Inner::lookup`] from memory only: `None` when some table's filter
    /// does not rule the key out (answering would read a block).
    fn lookup_cached(&self, v: &Version, key: &[u8], h: KeyHash) -> Option<Option<Versioned>> {
        if let Some(x) = v.active.get(key) {
            return Some(Some(x));
        }
        for m in v.immutables.iter().rev() {
            if let Some(x) = m.get(key) {
                return Some(Some(x));
            }
        }
        for t in &v.tables {
            if !t.rules_out(h, &self.counters) {
                return None;
            }
        }
        Some(None)
    }

    /// Holds a writer back while the memtable is full and the flush queue is
    /// too, so memory stays bounded when the disk falls behind; past the
    /// write-queue wait it gives up with `Overloaded`.
    fn stall_if_needed(&self) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + self.gate.wait();
        loop {
            {
                let v = self.version.read();
                if v.active.bytes() < self.opts.memtable_bytes
                    || v.immutables.len() < self.opts.max_immutable_memtables.max(1)
                {
                    return Ok(());
                }
            }
            self.check_failed()?;
            if std::time::Instant::now() >= deadline {
                self.gate.refused.fetch_add(1, Ordering::Relaxed);
                let v = self.version.read();
                return Err(StoreError::Overloaded {
                    what: "memtables waiting for a flush",
                    queued: v.immutables.len() as u64,
                    cap: self.opts.max_immutable_memtables.max(1) as u64,
                    waited_ms: u64::try_from(self.gate.wait().as_millis()).unwrap_or(u64::MAX),
                });
            }
            let mut g = self.stall.lock();
            self.stall_cv.wait_for(&mut g, Duration::from_millis(20));
        }
    }

    /// Freezes the active memtable (if full, or if `force`) and starts a new
    /// log segment for its successor.
    fn maybe_freeze(&self, force: bool) -> Result<(), StoreError> {
        let want = |v: &Version| {
            !v.active.is_empty()
                && (force
                    || (v.active.bytes() >= self.opts.memtable_bytes
                        && v.immutables.len() < self.opts.max_immutable_memtables.max(1)))
        };
        if !want(&self.version.read()) {
            return Ok(());
        }
        let segment = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut w = self.version.write();
        if !want(&w) {
            return Ok(());
        }
        self.log.rotate(segment)?;
        let mut immutables = w.immutables.clone();
        immutables.push(w.active.clone());
        *w = Arc::new(Version {
            active: Arc::new(Memtable::new(segment)),
            immutables,
            tables: w.tables.clone(),
        });
        drop(w);
        self.signal(|s| s.flush = true);
        Ok(())
    }

    /// Writes `entries` to table `id`; `None` if there were none.
    fn write_table<'a>(
        &self,
        id: u64,
        entries: impl Iterator<Item = Result<(Key, Versioned), StoreError>> + 'a,
    ) -> Result<Option<Arc<Table>>, StoreError> {
        let path = table_path(&self.dir, id);
        let result = (|| {
            let mut w = TableWriter::create(&path, self.opts.block_bytes, self.opts.bloom_fp_rate)?;
            for e in entries {
                let (k, v) = e?;
                w.add(&k, &v)?;
            }
            if w.entries() == 0 {
                return Ok(None);
            }
            let size = w.finish()?;
            self.bytes_written.fetch_add(size, Ordering::Relaxed);
            Ok(Some(Arc::new(Table::open(&path, id)?)))
        })();
        if !matches!(result, Ok(Some(_))) {
            let _ = std::fs::remove_file(&path);
        }
        result
    }

    /// Log segments before this one are no longer needed once `v` is durable.
    fn log_start(v_active: &Memtable, immutables: &[Arc<Memtable>]) -> u64 {
        immutables
            .first()
            .map_or(v_active.first_log, |m| m.first_log)
    }

    /// Writes every frozen memtable to a table, oldest first.
    fn flush_immutables(&self) -> Result<(), StoreError> {
        let _g = self.flush_lock.lock();
        loop {
            let Some(mem) = self.version.read().immutables.first().cloned() else {
                return Ok(());
            };
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let table = self.write_table(id, mem.iter().map(Ok))?;
            let log_start = {
                let _m = self.manifest_lock.lock();
                let cur = self.version.read().clone();
                let immutables: Vec<_> = cur
                    .immutables
                    .iter()
                    .filter(|m| !Arc::ptr_eq(m, &mem))
                    .cloned()
                    .collect();
                let mut tables = cur.tables.clone();
                if let Some(t) = &table {
                    tables.insert(0, t.clone());
                }
                let log_start = Self::log_start(&cur.active, &immutables);
                self.store_manifest(&tables, log_start)?;
                let mut w = self.version.write();
                let immutables = w
                    .immutables
                    .iter()
                    .filter(|m| !Arc::ptr_eq(m, &mem))
                    .cloned()
                    .collect();
                *w = Arc::new(Version {
                    active: w.active.clone(),
                    immutables,
                    tables,
                });
                log_start
            };
            self.flushes.fetch_add(1, Ordering::Relaxed);
            self.stall_cv.notify_all();
            for (id, path) in format::list_numbered(&self.dir, log::EXT)? {
                if id < log_start {
                    std::fs::remove_file(path)?;
                }
            }
            self.log.forget_below(log_start);
            self.signal(|s| s.compact = true);
        }
    }

    fn store_manifest(
        &self,
        tables_newest_first: &[Arc<Table>],
        log_start: u64,
    ) -> Result<(), StoreError> {
        Manifest {
            next_id: self.next_id.load(Ordering::Relaxed),
            log_start,
            tables: tables_newest_first.iter().rev().map(|t| t.id).collect(),
        }
        .store(&self.dir)
    }

    /// Runs one compaction: all tables if `full`, else the size-tiered pick.
    /// Returns whether anything was compacted.
    fn compact_once(&self, full: bool) -> Result<bool, StoreError> {
        let _c = self.compaction_lock.lock();
        let v = self.version.read().clone();
        let n = v.tables.len();
        let run = if full {
            if n == 0 || (n == 1 && v.tables[0].tombstones == 0) {
                return Ok(false);
            }
            0..n
        } else {
            let sizes: Vec<u64> = v.tables.iter().map(|t| t.size).collect();
            match compaction::pick(
                &sizes,
                self.opts.compaction_min_tables,
                self.opts.compaction_max_tables,
                self.opts.max_tables,
            ) {
                Some(r) => r,
                None => return Ok(false),
            }
        };
        let inputs: Vec<Arc<Table>> = v.tables[run.clone()].to_vec();
        // Only a merge that reaches the oldest table may drop a tombstone:
        // otherwise an older table could still hold a value it shadows.
        let purge = run.end == n;
        // A tombstone goes only when it is both past the grace period and
        // below the watermark (older than every replica's last anti-entropy
        // round), so no replica can still hold what it deleted.
        let horizon = now_micros()
            .saturating_sub(
                u64::try_from(self.opts.tombstone_grace.as_micros()).unwrap_or(u64::MAX),
            )
            .min(self.purge_watermark.load(Ordering::Acquire));
        let sources = inputs
            .iter()
            .map(|t| {
                Ok(Box::new(TableIter::new(t, Bound::Unbounded, &self.counters)?) as Source<'_>)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let merged = Merge::new(sources)?.filter(|e| match e {
            // An expiring value is purged like a tombstone stamped when it
            // died (`dead_since`): once every replica has it and its
            // deadline is older than the grace period, nothing older can
            // come back from under it.
            Ok((_, x)) => !(purge && x.dead_since().is_some_and(|d| d < horizon)),
            Err(_) => true,
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let out = self.write_table(id, merged)?;
        {
            let _m = self.manifest_lock.lock();
            let cur = self.version.read().clone();
            let pos = cur
                .tables
                .iter()
                .position(|t| t.id == inputs[0].id)
                .ok_or_else(|| StoreError::Engine("compaction inputs vanished".into()))?;
            let same = cur
                .tables
                .get(pos..pos + inputs.len())
                .is_some_and(|s| s.iter().zip(&inputs).all(|(a, b)| a.id == b.id));
            if !same {
                return Err(StoreError::Engine(
                    "compaction inputs are no longer adjacent".into(),
                ));
            }
            let mut tables = cur.tables.clone();
            tables.splice(pos..pos + inputs.len(), out.iter().cloned());
            self.store_manifest(&tables, Self::log_start(&cur.active, &cur.immutables))?;
            let mut w = self.version.write();
            *w = Arc::new(Version {
                active: w.active.clone(),
                immutables: w.immutables.clone(),
                tables,
            });
        }
        for t in &inputs {
            // Readers holding the old version keep their open handles.
            if let Err(e) = std::fs::remove_file(t.path()) {
                tracing::warn!(error = %e, path = %t.path().display(), "could not remove a compacted table");
            }
        }
        self.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(inputs = inputs.len(), output = id, purge, "compaction done");
        Ok(true)
    }

    /// Waits for `pred` on the signals (clearing what it consumed); false on shutdown.
    fn wait_signal(&self, mut take: impl FnMut(&mut Signals) -> bool) -> bool {
        let mut s = self.signals.lock();
        loop {
            if s.shutdown {
                return false;
            }
            if take(&mut s) {
                return true;
            }
            self.signals_cv.wait(&mut s);
        }
    }

    fn flush_loop(&self) {
        while self.wait_signal(|s| std::mem::take(&mut s.flush)) {
            if let Err(e) = self.flush_immutables() {
                self.fail("memtable flush", &e);
                return;
            }
        }
    }

    fn compaction_loop(&self) {
        while self.wait_signal(|s| std::mem::take(&mut s.compact)) {
            loop {
                if self.signals.lock().shutdown {
                    return;
                }
                match self.compact_once(false) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        // Not fatal: the inputs stay live and reads report
                        // any corruption themselves.
                        tracing::error!(error = %e, "background compaction failed");
                        break;
                    }
                }
            }
        }
    }

    fn sync_loop(&self) {
        let SyncPolicy::Periodic(every) = self.opts.sync else {
            return;
        };
        let every = every.max(Duration::from_micros(100));
        loop {
            {
                let mut s = self.signals.lock();
                let deadline = std::time::Instant::now() + every;
                while !s.shutdown && std::time::Instant::now() < deadline {
                    self.signals_cv.wait_until(&mut s, deadline);
                }
                if s.shutdown {
                    return;
                }
            }
            match self.log.sync_all() {
                Ok(()) => {}
                // Logged once, when it was poisoned; every write now fails.
                Err(StoreError::Poisoned { .. }) => return,
                Err(e) => tracing::warn!(error = %e, "periodic commit-log sync failed"),
            }
        }
    }
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), StoreError> {
    if len > max {
        return Err(StoreError::TooLarge { what, len, max });
    }
    Ok(())
}

use cassio_core::store::{key_before_end as before_end, range_is_empty as inverted};

impl NativeStore {
    /// `apply`, reporting what was replaced (`None` in `Kept`: nothing, or
    /// the caller did not ask). With `exclusive` the key's stripe lock is
    /// held from the LWW lookup to the memtable insert, so the replaced
    /// version is exact among writers that take it.
    /// One write. With `wait`, it waits for room (the write gate, a
    /// stall) and reads the replaced version from disk if need be; without,
    /// it answers `Ok(None)`, having written nothing, wherever it would
    /// wait (see [`Store::apply_replacing_if_cached`]).
    fn apply_impl(
        &self,
        key: &[u8],
        version: &Versioned,
        exclusive: bool,
        wait: bool,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        let inner = &*self.inner;
        inner.check_failed()?;
        check_len("key", key.len(), MAX_KEY_LEN)?;
        check_len(
            "value",
            version.value.as_ref().map_or(0, |v| v.len()),
            MAX_VALUE_LEN,
        )?;
        if !wait && inner.opts.sync == SyncPolicy::Always {
            return Ok(None);
        }
        // Held until the write is synced: it bounds every queue a write can
        // wait in (memtable space, append lock, group commit).
        let charge = key.len() + version.value.as_ref().map_or(0, |v| v.len()) + WRITE_OVERHEAD;
        let _permit = if wait {
            let permit = inner.gate.admit(charge as u64)?;
            inner.stall_if_needed()?;
            permit
        } else {
            let Some(permit) = inner.gate.try_admit(charge as u64) else {
                return Ok(None);
            };
            // Room in the active memtable for this write: it then neither
            // stalls nor freezes (a freeze starts a log segment: a file
            // creation).
            let v = inner.version.read();
            if v.active.bytes() + charge >= inner.opts.memtable_bytes {
                return Ok(None);
            }
            permit
        };
        let h = KeyHash::of(key);
        let (lsn, outcome, full) = {
            // Taken before the version lock: a freeze (which takes the
            // version lock's write side) never waits for a stripe.
            let _stripe = exclusive.then(|| inner.stripes.lock(key));
            let v = inner.version.read();
            let existing = if wait {
                inner.lookup(&v, key, h)?
            } else {
                match inner.lookup_cached(&v, key, h) {
                    Some(x) => x,
                    None => return Ok(None),
                }
            };
            if let Some(existing) = &existing {
                if !version.supersedes(existing) {
                    return Ok(Some(ApplyOutcome::Superseded));
                }
            }
            let lsn = inner.log.append(key, version)?;
            // The memtable decides again: a concurrent writer (one of
            // `apply`, which takes no stripe) may have got in since the
            // lookup.
            let outcome = if v.active.insert(key, version) {
                ApplyOutcome::Kept { replaced: existing }
            } else {
                ApplyOutcome::Superseded
            };
            (lsn, outcome, v.active.bytes() >= inner.opts.memtable_bytes)
        };
        if inner.opts.sync == SyncPolicy::Always {
            inner.log.sync_to(lsn)?;
        }
        if full {
            // Without `wait` only when concurrent writers filled the room
            // checked above: rare, and a freeze is short.
            inner.maybe_freeze(false)?;
        }
        Ok(Some(outcome))
    }
}

impl Store for NativeStore {
    fn apply(&self, key: &[u8], version: &Versioned) -> Result<bool, StoreError> {
        // Plain applies skip the stripe: the memtable settles races between
        // them, and they have no replaced version to get right.
        self.apply_impl(key, version, false, true)
            .map(|o| o.is_some_and(|o| o.kept()))
    }

    /// The replaced version is the one the LWW lookup found. Calls for one
    /// key are serialised by a striped lock (one uncontended mutex per
    /// write), so among `apply_replacing` callers it is exact; a plain
    /// [`Store::apply`] of the same key racing with it may make it stale
    /// (it then names a version the racing write had already replaced).
    fn apply_replacing(&self, key: &[u8], version: &Versioned) -> Result<ApplyOutcome, StoreError> {
        // With `wait`, every path answers `Some`.
        self.apply_impl(key, version, true, true)
            .map(|o| o.unwrap_or(ApplyOutcome::Superseded))
    }

    fn apply_replacing_if_cached(
        &self,
        key: &[u8],
        version: &Versioned,
    ) -> Option<Result<ApplyOutcome, StoreError>> {
        self.apply_impl(key, version, true, false).transpose()
    }

    fn get_if_cached(&self, key: &[u8]) -> Option<Result<Option<Versioned>, StoreError>> {
        let v = self.inner.version.read().clone();
        self.inner.lookup_cached(&v, key, KeyHash::of(key)).map(Ok)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        let v = self.inner.version.read().clone();
        self.inner.lookup(&v, key, KeyHash::of(key))
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Key, Versioned)>, StoreError> {
        if limit == 0 || inverted(start, end) {
            return Ok(Vec::new());
        }
        let v = self.inner.version.read().clone();
        let mut sources: Vec<Source<'_>> =
            Vec::with_capacity(1 + v.immutables.len() + v.tables.len());
        sources.push(Box::new(v.active.range(start, end).map(Ok)));
        for m in v.immutables.iter().rev() {
            sources.push(Box::new(m.range(start, end).map(Ok)));
        }
        for t in &v.tables {
            if let Some(last) = t.last_key() {
                let past = match start {
                    Bound::Unbounded => false,
                    Bound::Included(s) => last < s,
                    Bound::Excluded(s) => last <= s,
                };
                if past {
                    continue;
                }
            }
            sources.push(Box::new(TableIter::new(t, start, &self.inner.counters)?));
        }
        let mut out = Vec::new();
        for e in Merge::new(sources)? {
            let (k, x) = e?;
            if !before_end(&k, end) {
                break;
            }
            out.push((k, x));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.check_failed()?;
        self.inner.maybe_freeze(true)?;
        self.inner.flush_immutables()
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.inner.log.sync_all()
    }

    fn approximate_size(&self) -> u64 {
        let s = self.stats();
        s.table_bytes + s.memtable_bytes
    }

    fn set_purge_watermark(&self, micros: u64) {
        self.inner
            .purge_watermark
            .fetch_max(micros, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use cassio_core::{NodeId, Timestamp};

    /// With the flush held (its lock taken here, as a disk too slow to write
    /// tables would), writers fill the memtable and the one frozen slot, then
    /// wait the configured time and get `Overloaded`; memtables stay bounded.
    #[test]
    fn a_stuck_flush_answers_overloaded_and_bounds_memtables() {
        let dir = tempfile::tempdir().unwrap();
        let memtable = 64 * 1024;
        let s = NativeStore::open(
            dir.path(),
            NativeOptions {
                sync: SyncPolicy::Never,
                memtable_bytes: memtable,
                max_immutable_memtables: 1,
                write_queue_wait: Duration::from_millis(50),
                ..NativeOptions::default()
            },
        )
        .unwrap();
        let value = |i: u64| {
            Versioned::value(
                Timestamp::new(i + 1, 0, NodeId(1)),
                Bytes::from(vec![7u8; 4096]),
            )
        };
        let held = s.inner.flush_lock.lock();
        let mut refused = 0;
        let mut written = Vec::new();
        for i in 0..200u64 {
            if refused == 5 {
                break;
            }
            match s.apply(&i.to_be_bytes(), &value(i)) {
                Ok(_) => written.push(i),
                Err(StoreError::Overloaded { what, .. }) => {
                    assert_eq!(what, "memtables waiting for a flush");
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
            let st = s.stats();
            assert!(st.immutable_memtables <= 1);
            // One frozen memtable plus the active one, each overshooting by
            // at most one write.
            assert!(st.memtable_bytes <= 2 * (memtable as u64 + 4096 + 200));
        }
        assert!(
            refused == 5 && !written.is_empty(),
            "{written:?} written, {refused} refused"
        );
        assert_eq!(s.stats().writes_overloaded, refused);
        drop(held);
        // Once the flush runs, writes are accepted again.
        s.flush().unwrap();
        assert!(s.apply(b"after", &value(1000)).unwrap());
        for i in written {
            assert_eq!(s.get(&i.to_be_bytes()).unwrap(), Some(value(i)));
        }
    }
}
