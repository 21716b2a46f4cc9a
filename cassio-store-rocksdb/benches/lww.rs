//! How to keep last-write-wins under concurrent writers, measured: for each
//! engine the strategy the store uses against the main alternative, with two
//! writer threads (this machine's core count) on 10,000 keys.
//!
//! ```text
//! cargo bench -p cassio-store-rocksdb --bench lww -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! - `rocksdb/striped-lock`: `RocksStore::apply` (get, compare, put under a key-striped lock).
//! - `rocksdb/merge-operator`: the same decision read without a lock, then a
//!   `merge` whose operator keeps the LWW winner (the read is still needed to
//!   return "kept"); reads later pay for resolving operands, not measured here.
//! - `sled/cas-loop`: `SledStore::apply` (get, compare, `compare_and_swap`, retry).
//! - `sled/striped-lock`: get, compare, `insert` under a key-striped lock.

use cassio_core::{NodeId, Store, Timestamp, Versioned};
use cassio_store_rocksdb::{codec, RocksOptions, RocksStore, SledOptions, SledStore, SyncPolicy};
use criterion::Criterion;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: u64 = 10_000;
const THREADS: u64 = 2;

/// One way of applying a versioned write.
trait Apply: Send + Sync {
    fn apply(&self, key: &[u8], v: &Versioned) -> bool;
}

impl<S: Store> Apply for S {
    fn apply(&self, key: &[u8], v: &Versioned) -> bool {
        Store::apply(self, key, v).expect("apply")
    }
}

fn wins(new: &Versioned, raw: Option<&[u8]>) -> bool {
    raw.is_none_or(|r| new.supersedes(&codec::decode(r).expect("decode")))
}

/// The merge-operator variant on raw RocksDB.
struct RocksMerge(rocksdb::DB);

fn lww_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let mut best: Option<(Versioned, &[u8])> = None;
    for raw in existing.into_iter().chain(operands.iter()) {
        let Ok(v) = codec::decode(raw) else { continue };
        if best.as_ref().is_none_or(|(b, _)| v.supersedes(b)) {
            best = Some((v, raw));
        }
    }
    best.map(|(_, raw)| raw.to_vec())
}

impl Apply for RocksMerge {
    fn apply(&self, key: &[u8], v: &Versioned) -> bool {
        let cur = self.0.get_pinned(key).expect("get");
        if !wins(v, cur.as_deref()) {
            return false;
        }
        self.0.merge(key, codec::encode(v)).expect("merge");
        true
    }
}

/// The striped-lock variant on raw sled.
struct SledLocked {
    db: sled::Db,
    locks: Vec<Mutex<()>>,
}

impl Apply for SledLocked {
    fn apply(&self, key: &[u8], v: &Versioned) -> bool {
        let _g = self.locks[(cassio_core::Token::of(key).0 % 1024) as usize].lock();
        let cur = self.db.get(key).expect("get");
        if !wins(v, cur.as_deref()) {
            return false;
        }
        self.db.insert(key, codec::encode(v)).expect("insert");
        true
    }
}

fn run(c: &mut Criterion, name: &str, target: Arc<dyn Apply>) {
    let clock = Arc::new(AtomicU64::new(1));
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let target = Arc::clone(&target);
                    let clock = Arc::clone(&clock);
                    std::thread::spawn(move || {
                        let mut rng = ChaCha8Rng::seed_from_u64(t ^ iters);
                        let value = vec![7u8; 100];
                        for _ in 0..iters.div_ceil(THREADS) {
                            let key = rng.random_range(0..KEYS).to_be_bytes();
                            let ts =
                                Timestamp::new(clock.fetch_add(1, Ordering::Relaxed), 0, NodeId(t));
                            target.apply(&key, &Versioned::value(ts, value.clone()));
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("writer");
            }
            started.elapsed()
        })
    });
}

fn lww(c: &mut Criterion) {
    let dirs: Vec<_> = (0..4)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let rocks_opts = RocksOptions {
        sync: SyncPolicy::Never,
        ..RocksOptions::default()
    };
    run(
        c,
        "rocksdb/striped-lock",
        Arc::new(RocksStore::open(dirs[0].path(), rocks_opts).expect("open")),
    );
    // The same engine settings as RocksStore's defaults, so only the LWW
    // strategy differs.
    let mut o = rocksdb::Options::default();
    o.create_if_missing(true);
    o.set_max_background_jobs(2);
    o.set_write_buffer_size(64 << 20);
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(&rocksdb::Cache::new_lru_cache(64 << 20));
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    o.set_block_based_table_factory(&table);
    o.set_merge_operator_associative("cassio-lww", lww_merge);
    run(
        c,
        "rocksdb/merge-operator",
        Arc::new(RocksMerge(
            rocksdb::DB::open(&o, dirs[1].path()).expect("open"),
        )),
    );
    let sled_opts = SledOptions {
        sync: SyncPolicy::Never,
        ..SledOptions::default()
    };
    run(
        c,
        "sled/cas-loop",
        Arc::new(SledStore::open(dirs[2].path(), sled_opts).expect("open")),
    );
    let db = sled::Config::new()
        .path(dirs[3].path())
        .cache_capacity(64 << 20)
        .flush_every_ms(None)
        .open()
        .expect("open");
    run(
        c,
        "sled/striped-lock",
        Arc::new(SledLocked {
            db,
            locks: (0..1024).map(|_| Mutex::new(())).collect(),
        }),
    );
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    lww(&mut c);
    c.final_summary();
}
