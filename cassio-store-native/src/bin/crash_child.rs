//! Crash-test child for `tests/crash.rs`: opens the store in the directory
//! given as the first argument with `SyncPolicy::Always`, prints `ready`, then
//! has four threads write keys `{round}-{thread}-{i}` forever, printing each
//! key only after its `apply` returned `Ok`. The parent kills it with SIGKILL
//! at a random moment and checks that every printed key survived.

use cassio_core::{NodeId, Store, Timestamp, Versioned};
use cassio_store_native::{NativeOptions, NativeStore, SyncPolicy};
use std::io::Write;
use std::sync::Arc;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(round)) = (args.next(), args.next()) else {
        eprintln!("usage: native-crash-child DIR ROUND");
        std::process::exit(2);
    };
    let opts = NativeOptions {
        sync: SyncPolicy::Always,
        // Small, so flushes and compactions are in flight when the kill lands.
        memtable_bytes: 128 * 1024,
        ..NativeOptions::default()
    };
    let store = match NativeStore::open(&dir, opts) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("open failed: {e}");
            std::process::exit(3);
        }
    };
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    if let Ok(mut out) = stdout.lock() {
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            let stdout = stdout.clone();
            let round = round.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let key = format!("{round}-{t}-{i}");
                    let value = format!("{key:-<100}");
                    let v = Versioned::value(Timestamp::new(i + 1, 0, NodeId(t)), value);
                    if let Err(e) = store.apply(key.as_bytes(), &v) {
                        eprintln!("apply failed: {e}");
                        std::process::exit(4);
                    }
                    let Ok(mut out) = stdout.lock() else { return };
                    // A closed pipe means the parent is gone: stop.
                    if writeln!(out, "{key}").and_then(|_| out.flush()).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
