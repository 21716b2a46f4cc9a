//! Fault injection at the commit log's file I/O: the one seam through which
//! tests (and the simulator) make the disk fail or stall without mocking the
//! store. Every write the log hands to the OS and every fsync it makes passes
//! through [`LogFaults`] first; with no fault armed that costs two atomic
//! loads.

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Faults to inject into the commit log of one [`crate::NativeStore`]
/// (see [`crate::NativeStore::log_faults`]).
///
/// - `fail_next_syncs(n)`: the next `n` fsyncs fail with an I/O error (as an
///   `EIO` from a dying disk would), which poisons the log.
/// - `fail_next_writes(n)`: the next `n` writes to the segment file fail.
/// - `stall()` / `resume()`: every write and fsync blocks until `resume`, as
///   on a disk that stopped answering; `stall_syncs()` blocks only fsyncs (a
///   slow flush of the disk cache). Dropping the store resumes, so a
///   forgotten stall cannot hang a test's teardown.
#[derive(Debug, Default)]
pub struct LogFaults {
    fail_syncs: AtomicU32,
    fail_writes: AtomicU32,
    /// (writes stalled, fsyncs stalled)
    stalled: Mutex<(bool, bool)>,
    resumed: Condvar,
    /// Operations blocked in a stall right now.
    waiting: AtomicU64,
}

/// Takes one unit from `n` if it is positive; true if one was taken.
fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
        .is_ok()
}

impl LogFaults {
    /// Makes the next `n` fsyncs of the commit log fail.
    pub fn fail_next_syncs(&self, n: u32) {
        self.fail_syncs.store(n, Ordering::Release);
    }

    /// Makes the next `n` writes to a commit-log segment fail.
    pub fn fail_next_writes(&self, n: u32) {
        self.fail_writes.store(n, Ordering::Release);
    }

    /// Blocks every later commit-log write and fsync until [`Self::resume`].
    pub fn stall(&self) {
        *self.stalled.lock() = (true, true);
    }

    /// Blocks every later commit-log fsync (not writes) until [`Self::resume`].
    pub fn stall_syncs(&self) {
        self.stalled.lock().1 = true;
    }

    /// Ends a stall; blocked operations carry on.
    pub fn resume(&self) {
        *self.stalled.lock() = (false, false);
        self.resumed.notify_all();
    }

    /// Commit-log operations blocked in a stall right now (lets a test wait
    /// until the stall has really caught a writer).
    pub fn stalled_operations(&self) -> u64 {
        self.waiting.load(Ordering::Acquire)
    }

    fn wait_while_stalled(&self, sync: bool) {
        let stalled = |s: &(bool, bool)| if sync { s.1 } else { s.0 };
        let mut g = self.stalled.lock();
        if !stalled(&g) {
            return;
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        while stalled(&g) {
            self.resumed.wait(&mut g);
        }
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// Called before each fsync of a segment.
    pub(crate) fn before_sync(&self) -> std::io::Result<()> {
        self.wait_while_stalled(true);
        if take_one(&self.fail_syncs) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        Ok(())
    }

    /// Called before each write of buffered records to a segment.
    pub(crate) fn before_write(&self) -> std::io::Result<()> {
        self.wait_while_stalled(false);
        if take_one(&self.fail_writes) {
            return Err(std::io::Error::other("injected write failure"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn failures_are_counted_and_stalls_block_until_resumed() {
        let f = Arc::new(LogFaults::default());
        f.fail_next_syncs(2);
        assert!(f.before_sync().is_err());
        assert!(f.before_sync().is_err());
        assert!(f.before_sync().is_ok());
        assert!(f.before_write().is_ok());
        f.fail_next_writes(1);
        assert!(f.before_write().is_err());
        assert!(f.before_write().is_ok());

        f.stall();
        let g = f.clone();
        let t = std::thread::spawn(move || g.before_sync());
        let deadline = Instant::now() + Duration::from_secs(10);
        while f.stalled_operations() == 0 {
            assert!(Instant::now() < deadline, "the stall never caught the sync");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!t.is_finished());
        f.resume();
        assert!(t.join().unwrap().is_ok());
        assert_eq!(f.stalled_operations(), 0);
        // A sync-only stall lets writes through.
        f.stall_syncs();
        assert!(f.before_write().is_ok());
        let g = f.clone();
        let t = std::thread::spawn(move || g.before_sync());
        while f.stalled_operations() == 0 {
            assert!(Instant::now() < deadline, "the stall never caught the sync");
            std::thread::sleep(Duration::from_millis(1));
        }
        f.resume();
        assert!(t.join().unwrap().is_ok());
    }
}
