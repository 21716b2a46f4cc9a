//! Admission control for writes: a counting semaphore by bytes and by
//! number of writes.
//!
//! Every `apply` holds a permit from before its memtable-space check until
//! its commit-log sync returned, so the permit covers every place a write
//! can queue inside the store: waiting for memtable space, for the append
//! lock, and for a group-commit fsync. When the disk stalls, writers pile up
//! here instead, and a writer that cannot get a permit within the configured
//! wait gets [`StoreError::Overloaded`] rather than adding to an unbounded
//! backlog. (Before this gate, each concurrent writer could add its whole
//! value to the active memtable past the flush threshold, so a stalled disk
//! plus many threads writing 15 MiB values grew memory without limit.)
//!
//! Every queue in the store that callers feed, and its bound:
//!
//! | queue | bound |
//! | --- | --- |
//! | writers waiting for a group-commit fsync | this gate (count and bytes) |
//! | writers waiting for the append lock | this gate |
//! | the active memtable | `memtable_bytes`, overshot by at most this gate's bytes |
//! | frozen memtables waiting for a flush | `max_immutable_memtables`; writers then wait in `stall_if_needed`, holding a permit, up to `write_queue_wait`, then `Overloaded` |
//! | the log's user-space buffer | 256 KiB |
//! | bytes written to the OS and not fsynced | the kernel's dirty-page limits (not process memory) |
//! | flush and compaction hand-off | boolean signals, one background thread each |
//! | tables awaiting compaction | `max_tables` (compaction merges the newest beyond it) |

use cassio_core::StoreError;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Held {
    bytes: u64,
    writes: u64,
}

/// The write admission gate of one store.
pub(crate) struct WriteGate {
    held: Mutex<Held>,
    released: Condvar,
    max_bytes: u64,
    max_writes: u64,
    wait: Duration,
    /// Highest `bytes` ever held, for tests and metrics.
    peak_bytes: AtomicU64,
    /// Writes refused with `Overloaded`.
    pub(crate) refused: AtomicU64,
}

/// A write's share of the gate, returned when dropped.
pub(crate) struct Permit<'a> {
    gate: &'a WriteGate,
    bytes: u64,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut h = self.gate.held.lock();
        h.bytes -= self.bytes;
        h.writes -= 1;
        drop(h);
        self.gate.released.notify_all();
    }
}

impl WriteGate {
    /// A gate admitting at most `max_bytes` and `max_writes` at once, where
    /// a writer waits at most `wait` for room.
    pub(crate) fn new(max_bytes: u64, max_writes: u64, wait: Duration) -> Self {
        WriteGate {
            held: Mutex::new(Held::default()),
            released: Condvar::new(),
            max_bytes: max_bytes.max(1),
            max_writes: max_writes.max(1),
            wait,
            peak_bytes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Waits for room for a write of `bytes`. A write larger than the whole
    /// byte cap is admitted alone (when nothing else is held), so no valid
    /// write is refused forever and the cap is exceeded by at most one write.
    pub(crate) fn admit(&self, bytes: u64) -> Result<Permit<'_>, StoreError> {
        let deadline = Instant::now() + self.wait;
        let mut h = self.held.lock();
        loop {
            let fits = h.writes < self.max_writes
                && (h.bytes.saturating_add(bytes) <= self.max_bytes || h.bytes == 0);
            if fits {
                h.bytes += bytes;
                h.writes += 1;
                self.peak_bytes.fetch_max(h.bytes, Ordering::Relaxed);
                return Ok(Permit { gate: self, bytes });
            }
            if self.released.wait_until(&mut h, deadline).timed_out() {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let (what, queued, cap) = if h.writes >= self.max_writes {
                    ("in-flight writes", h.writes, self.max_writes)
                } else {
                    ("in-flight write bytes", h.bytes, self.max_bytes)
                };
                return Err(StoreError::Overloaded {
                    what,
                    queued,
                    cap,
                    waited_ms: u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX),
                });
            }
        }
    }

    /// [`WriteGate::admit`] if there is room now; `None` instead of waiting.
    pub(crate) fn try_admit(&self, bytes: u64) -> Option<Permit<'_>> {
        let mut h = self.held.lock();
        let fits = h.writes < self.max_writes
            && (h.bytes.saturating_add(bytes) <= self.max_bytes || h.bytes == 0);
        if !fits {
            return None;
        }
        h.bytes += bytes;
        h.writes += 1;
        self.peak_bytes.fetch_max(h.bytes, Ordering::Relaxed);
        Some(Permit { gate: self, bytes })
    }

    /// Bytes and writes held right now.
    pub(crate) fn held(&self) -> (u64, u64) {
        let h = self.held.lock();
        (h.bytes, h.writes)
    }

    /// The most bytes ever held at once.
    pub(crate) fn peak_bytes(&self) -> u64 {
        self.peak_bytes.load(Ordering::Relaxed)
    }

    /// How long a writer waits for room.
    pub(crate) fn wait(&self) -> Duration {
        self.wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_caps_then_refuses_after_the_wait() {
        let g = WriteGate::new(100, 3, Duration::from_millis(30));
        let a = g.admit(60).unwrap();
        let b = g.admit(40).unwrap();
        assert_eq!(g.held(), (100, 2));
        let t = Instant::now();
        assert!(matches!(
            g.admit(1),
            Err(StoreError::Overloaded {
                what: "in-flight write bytes",
                queued: 100,
                cap: 100,
                ..
            })
        ));
        assert!(t.elapsed() >= Duration::from_millis(30));
        drop(a);
        let c = g.admit(1).unwrap();
        let d = g.admit(1).unwrap();
        assert!(matches!(
            g.admit(1),
            Err(StoreError::Overloaded {
                what: "in-flight writes",
                ..
            })
        ));
        drop((b, c, d));
        assert_eq!(g.held(), (0, 0));
        // Larger than the cap: admitted alone, never with others.
        let big = g.admit(500).unwrap();
        assert!(g.admit(1).is_err());
        drop(big);
        assert_eq!(g.peak_bytes(), 500);
        assert_eq!(g.refused.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_release_wakes_a_waiting_writer() {
        let g = std::sync::Arc::new(WriteGate::new(10, 10, Duration::from_secs(10)));
        let held = g.admit(10).unwrap();
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.admit(5).map(|_| ()));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!t.is_finished(), "the second writer waits for room");
        drop(held);
        assert!(t.join().unwrap().is_ok());
    }
}
