//! The power-loss model the simulator uses: `simulate_power_loss` leaves the
//! directory as a power cut would (logs cut to their fsynced length,
//! buffers and memtables gone). After reopening, every synced write is there
//! and no write that was never synced is.

use bytes::Bytes;
use cassio_core::{NodeId, Store, Timestamp, Versioned};
use cassio_store_native::{NativeOptions, NativeStore, SyncPolicy};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn v(i: u64, len: usize) -> Versioned {
    Versioned::value(
        Timestamp::new(i + 1, 0, NodeId(1)),
        Bytes::from(vec![b'a' + (i % 26) as u8; len]),
    )
}

fn opts(sync: SyncPolicy) -> NativeOptions {
    NativeOptions {
        sync,
        ..NativeOptions::default()
    }
}

/// `Never` and a periodic sync too slow to fire: only explicit syncs count.
#[test]
fn synced_writes_survive_and_unsynced_ones_are_gone() {
    for sync in [
        SyncPolicy::Never,
        SyncPolicy::Periodic(Duration::from_secs(3600)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = NativeStore::open(dir.path(), opts(sync)).unwrap();
        for i in 0..100u64 {
            s.apply(format!("a{i}").as_bytes(), &v(i, 100)).unwrap();
        }
        s.sync().unwrap();
        // More than the 256 KiB log buffer: part of it reaches the OS (and
        // would survive a mere process crash), none of it is fsynced.
        for i in 0..40u64 {
            s.apply(format!("b{i}").as_bytes(), &v(i, 20_000)).unwrap();
        }
        let on_disk: u64 = NativeStore::log_files(dir.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        let report = s.simulate_power_loss().unwrap();
        eprintln!("{sync:?}: {report:?}, {on_disk} log bytes in the OS before the cut");
        assert!(report.bytes_dropped > 0, "handed to the OS, never synced");
        assert_eq!(report.segments_truncated, 1);

        let s = NativeStore::open(dir.path(), opts(sync)).unwrap();
        assert_eq!(s.recovery_report().damage, None, "cut at a record boundary");
        for i in 0..100u64 {
            assert_eq!(
                s.get(format!("a{i}").as_bytes()).unwrap(),
                Some(v(i, 100)),
                "{sync:?}: synced write a{i} lost"
            );
        }
        for i in 0..40u64 {
            assert_eq!(
                s.get(format!("b{i}").as_bytes()).unwrap(),
                None,
                "{sync:?}: never-synced write b{i} survived the power cut"
            );
        }
    }
}

#[test]
fn every_acknowledged_write_survives_under_always() {
    let dir = tempfile::tempdir().unwrap();
    let o = NativeOptions {
        // Small, so rotations, flushes and compactions happen on the way.
        memtable_bytes: 64 * 1024,
        ..opts(SyncPolicy::Always)
    };
    let s = Arc::new(NativeStore::open(dir.path(), o.clone()).unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    s.apply(format!("t{t}-{i}").as_bytes(), &v(i, 500)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = Arc::try_unwrap(s).unwrap();
    assert!(s.stats().flushes > 0, "the test crossed memtable flushes");
    s.simulate_power_loss().unwrap();
    let s = NativeStore::open(dir.path(), o).unwrap();
    for t in 0..4u64 {
        for i in 0..300u64 {
            assert_eq!(
                s.get(format!("t{t}-{i}").as_bytes()).unwrap(),
                Some(v(i, 500)),
                "acknowledged t{t}-{i} lost"
            );
        }
    }
}

/// What a process crash left in the page cache is replayed at the next open
/// and synced then, so a power cut after that open does not lose it.
#[test]
fn what_was_replayed_after_a_crash_survives_a_later_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let s = NativeStore::open(dir.path(), opts(SyncPolicy::Never)).unwrap();
    for i in 0..40u64 {
        s.apply(format!("c{i}").as_bytes(), &v(i, 20_000)).unwrap();
    }
    s.crash();
    let s = NativeStore::open(dir.path(), opts(SyncPolicy::Never)).unwrap();
    let replayed: Vec<u64> = (0..40u64)
        .filter(|i| s.get(format!("c{i}").as_bytes()).unwrap().is_some())
        .collect();
    assert!(!replayed.is_empty(), "the OS held part of the log");
    s.simulate_power_loss().unwrap();
    let s = NativeStore::open(dir.path(), opts(SyncPolicy::Never)).unwrap();
    for i in replayed {
        assert_eq!(
            s.get(format!("c{i}").as_bytes()).unwrap(),
            Some(v(i, 20_000))
        );
    }
}

/// Random cycles of writes, syncs, flushes, crashes and power cuts on one
/// directory, against a model of what must and what may survive.
#[test]
fn random_cycles_match_the_model() {
    let seed: u64 = std::env::var("POWER_LOSS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("power-loss seed {seed} (replay with POWER_LOSS_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let o = NativeOptions {
        memtable_bytes: 32 * 1024,
        ..opts(SyncPolicy::Never)
    };
    // key -> (durable version, latest version written)
    let mut model: BTreeMap<u64, (Option<u64>, u64)> = BTreeMap::new();
    let mut ts = 0u64;
    // Keys whose latest write did not survive: proof the cuts bite.
    let mut lost = 0;
    const CYCLES: usize = 12;
    for cycle in 0..=CYCLES {
        let s = NativeStore::open(dir.path(), o.clone()).unwrap();
        for (k, (durable, latest)) in &model {
            let got = s.get(&k.to_be_bytes()).unwrap().map(|x| x.ts.micros - 1);
            // Never a version newer than written, never one older than the
            // last durable one (nor nothing, once something was durable).
            assert!(
                got.is_none_or(|g| g <= *latest),
                "cycle {cycle} seed {seed}: key {k} holds {got:?}, latest written {latest}"
            );
            if let Some(d) = durable {
                assert!(
                    got.is_some_and(|g| g >= *d),
                    "cycle {cycle} seed {seed}: key {k} holds {got:?}, lost durable {d}"
                );
            }
        }
        // What survived is now the baseline: it was replayed and synced at open.
        for (k, e) in model.iter_mut() {
            let got = s.get(&k.to_be_bytes()).unwrap().map(|x| x.ts.micros - 1);
            if got != Some(e.1) {
                lost += 1;
            }
            *e = (got, got.unwrap_or(e.1));
        }
        model.retain(|_, (d, _)| d.is_some());
        if cycle == CYCLES {
            break;
        }
        for _ in 0..rng.random_range(1..200) {
            let k = rng.random_range(0..64u64);
            ts += 1;
            s.apply(&k.to_be_bytes(), &v(ts, rng.random_range(10..3000)))
                .unwrap();
            let e = model.entry(k).or_insert((None, ts));
            e.1 = ts;
            match rng.random_range(0..40) {
                0 => {
                    s.sync().unwrap();
                    for e in model.values_mut() {
                        e.0 = Some(e.1);
                    }
                }
                1 => {
                    // A flush writes memtables to synced tables.
                    s.flush().unwrap();
                    for e in model.values_mut() {
                        e.0 = Some(e.1);
                    }
                }
                _ => {}
            }
        }
        if rng.random_bool(0.2) {
            s.crash();
        } else {
            s.simulate_power_loss().unwrap();
        }
    }
    eprintln!("{lost} keys lost their latest, unsynced write over {CYCLES} cycles");
    assert!(
        lost > 0,
        "no cut ever dropped an unsynced write (seed {seed})"
    );
}
