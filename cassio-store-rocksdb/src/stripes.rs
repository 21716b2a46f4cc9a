//! A fixed set of mutexes picked by key hash, serialising read-compare-write
//! on one key without serialising different keys.

use parking_lot::{Mutex, MutexGuard};

/// Enough stripes that two threads rarely collide (the node runs one store
/// per process with at most a few dozen writer threads), few enough to be
/// 16 KiB of memory.
const STRIPES: usize = 1024;

/// Key-striped locks.
pub(crate) struct Stripes {
    locks: Box<[Mutex<()>]>,
}

impl Stripes {
    pub(crate) fn new() -> Self {
        Stripes {
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Locks the stripe that owns `key`.
    pub(crate) fn lock(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        // The ring token is a well-mixed 64-bit hash, already computed
        // cheaply by the core for placement.
        let h = cassio_core::Token::of(key).0 as usize;
        self.locks[h % STRIPES].lock()
    }
}
