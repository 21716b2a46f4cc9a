//! Throughput benchmark of the native store (16-byte keys, 100-byte values).
//!
//! ```text
//! cargo bench -p cassio-store-native --bench native -- [--keys N] [--reps R] [--always-keys N]
//! ```
//!
//! Workloads, each repeated `--reps` times on a fresh store (median reported):
//! sequential fill, random fill, random reads of present keys, random reads
//! of missing keys and 1,000-key range scans, with `SyncPolicy::Periodic`;
//! then a fill by 8 concurrent writers with `SyncPolicy::Always` (group
//! commit). The in-memory reference `MemStore` runs the same workloads in the
//! same process as a baseline. RSS after loading the keys is read from
//! `/proc/self/status`.

use bytes::Bytes;
use cassio_core::{NodeId, Store, Timestamp, Versioned};
use cassio_store_native::{NativeOptions, NativeStore, SyncPolicy};
use rand::{Rng, SeedableRng};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    keys: u64,
    reps: usize,
    always_keys: u64,
}

fn args() -> Args {
    let mut a = Args {
        keys: 1_000_000,
        reps: 3,
        always_keys: 200_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse::<u64>().ok());
        match x.as_str() {
            "--keys" => a.keys = num().unwrap_or(a.keys),
            "--reps" => a.reps = num().map_or(a.reps, |n| n as usize),
            "--always-keys" => a.always_keys = num().unwrap_or(a.always_keys),
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    a
}

fn seq_key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn rand_key(i: u64) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()).to_be_bytes()
}

fn version(i: u64, value: &Bytes) -> Versioned {
    Versioned::value(Timestamp::new(i + 1, 0, NodeId(1)), value.clone())
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn proc_status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l[field.len()..].trim().to_string())
        })
        .unwrap_or_else(|| "n/a".into())
}

#[derive(Default)]
struct Figures {
    fill_seq: Vec<f64>,
    fill_rand: Vec<f64>,
    read_present: Vec<f64>,
    read_missing: Vec<f64>,
    scan: Vec<f64>,
}

fn run_workloads<S: Store>(
    open: &dyn Fn() -> S,
    a: &Args,
    f: &mut Figures,
    mut after_fill: impl FnMut(&S),
) {
    let value = Bytes::from(vec![0x5a; 100]);
    let n = a.keys;
    let s = open();
    let t = Instant::now();
    for i in 0..n {
        s.apply(&seq_key(i), &version(i, &value)).expect("apply");
    }
    f.fill_seq.push(rate(n, t.elapsed()));
    drop(s);

    let s = open();
    let t = Instant::now();
    for i in 0..n {
        s.apply(&rand_key(i), &version(i, &value)).expect("apply");
    }
    f.fill_rand.push(rate(n, t.elapsed()));
    after_fill(&s);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let t = Instant::now();
    for _ in 0..n {
        let i = rng.random_range(0..n);
        assert!(s.get(&rand_key(i)).expect("get").is_some());
    }
    f.read_present.push(rate(n, t.elapsed()));

    let t = Instant::now();
    for _ in 0..n {
        let i = rng.random_range(n..n * 100);
        assert!(s.get(&rand_key(i)).expect("get").is_none());
    }
    f.read_missing.push(rate(n, t.elapsed()));

    let scans = 1000u64;
    let t = Instant::now();
    for _ in 0..scans {
        let start = rand_key(rng.random_range(0..n));
        let r = s
            .range(Bound::Included(&start), Bound::Unbounded, 1000)
            .expect("range");
        assert!(!r.is_empty());
    }
    f.scan.push(rate(scans, t.elapsed()));
}

fn concurrent_fill<S: Store + 'static>(s: Arc<S>, writers: u64, n: u64) -> f64 {
    let value = Bytes::from(vec![0x5a; 100]);
    let per = n / writers;
    let t = Instant::now();
    let hs: Vec<_> = (0..writers)
        .map(|w| {
            let s = s.clone();
            let value = value.clone();
            std::thread::spawn(move || {
                for i in w * per..(w + 1) * per {
                    s.apply(&rand_key(i), &version(i, &value)).expect("apply");
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("writer");
    }
    rate(per * writers, t.elapsed())
}

fn main() {
    let a = args();
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    println!(
        "keys={} reps={} always_keys={} dir={}",
        a.keys,
        a.reps,
        a.always_keys,
        base.display()
    );
    let periodic = NativeOptions {
        sync: SyncPolicy::Periodic(Duration::from_millis(100)),
        ..NativeOptions::default()
    };

    let mut native = Figures::default();
    let mut rss = String::new();
    for rep in 0..a.reps {
        let dir = tempfile::tempdir_in(&base).expect("temp dir");
        let counter = std::cell::Cell::new(0);
        let open = || {
            counter.set(counter.get() + 1);
            NativeStore::open(dir.path().join(counter.get().to_string()), periodic.clone())
                .expect("open")
        };
        run_workloads(&open, &a, &mut native, |s| {
            if rep == 0 {
                let st = s.stats();
                rss = format!(
                    "after loading {} keys: VmRSS {}, VmHWM {}; memtables {} MiB, index+bloom {} KiB, {} tables",
                    a.keys,
                    proc_status("VmRSS:"),
                    proc_status("VmHWM:"),
                    st.memtable_bytes >> 20,
                    st.index_and_bloom_bytes >> 10,
                    st.tables
                );
                println!("{rss}");
            }
        });
        println!(
            "native rep {rep}: fillseq {:.0}/s fillrandom {:.0}/s readrandom {:.0}/s readmissing {:.0}/s scan1000 {:.0}/s",
            native.fill_seq[rep], native.fill_rand[rep], native.read_present[rep], native.read_missing[rep], native.scan[rep]
        );
    }

    let mut always = Vec::new();
    let mut fsyncs = Vec::new();
    for _ in 0..a.reps {
        let dir = tempfile::tempdir_in(&base).expect("temp dir");
        let s = Arc::new(
            NativeStore::open(
                dir.path(),
                NativeOptions {
                    sync: SyncPolicy::Always,
                    ..NativeOptions::default()
                },
            )
            .expect("open"),
        );
        always.push(concurrent_fill(s.clone(), 8, a.always_keys));
        fsyncs.push(s.stats().log_fsyncs);
    }
    let mut single_always = Vec::new();
    {
        let dir = tempfile::tempdir_in(&base).expect("temp dir");
        let s = Arc::new(
            NativeStore::open(
                dir.path(),
                NativeOptions {
                    sync: SyncPolicy::Always,
                    ..NativeOptions::default()
                },
            )
            .expect("open"),
        );
        single_always.push(concurrent_fill(s, 1, a.always_keys / 20));
    }

    let mut mem = Figures::default();
    for _ in 0..a.reps {
        run_workloads(&conformance::MemStore::new, &a, &mut mem, |_| {});
    }

    println!();
    println!("| workload | native (ops/s, median of {}) | MemStore baseline (ops/s) | native / MemStore |", a.reps);
    println!("|---|---:|---:|---:|");
    let rows = [
        (
            "sequential fill, Periodic(100ms)",
            &native.fill_seq,
            &mem.fill_seq,
        ),
        (
            "random fill, Periodic(100ms)",
            &native.fill_rand,
            &mem.fill_rand,
        ),
        (
            "random read, present keys",
            &native.read_present,
            &mem.read_present,
        ),
        (
            "random read, missing keys",
            &native.read_missing,
            &mem.read_missing,
        ),
        (
            "range scan of 1,000 keys (scans/s)",
            &native.scan,
            &mem.scan,
        ),
    ];
    for (name, n, m) in rows {
        let (n, m) = (median(n.clone()), median(m.clone()));
        println!("| {name} | {n:.0} | {m:.0} | {:.2} |", n / m);
    }
    println!(
        "| random fill, Always, 8 writers ({} keys) | {:.0} | – | – |",
        a.always_keys,
        median(always)
    );
    println!(
        "| random fill, Always, 1 writer ({} keys) | {:.0} | – | – |",
        a.always_keys / 20,
        median(single_always)
    );
    println!();
    println!(
        "Always/8 writers: {:?} log fsyncs for {} writes per rep (group commit)",
        fsyncs, a.always_keys
    );
    println!("{rss}");
}
