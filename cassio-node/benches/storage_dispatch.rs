//! Where should the driver run storage operations? One node (RF 1) with the
//! native store in a temp dir; each iteration is a round of 64 concurrent
//! clients, each doing a put then a get through the `NodeHandle`, so the
//! numbers include the driver's channel hops and the storage hand-off.
//!
//! Run: `cargo bench -p cassio-node --bench storage_dispatch -- --warm-up-time 1 --measurement-time 3`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]
// A benchmark that cannot set itself up should stop loudly.
#![allow(clippy::unwrap_used)]

use cassio_core::ClientRequest;
use cassio_node::driver::StorageMode;
use cassio_node::NodeBuilder;
use cassio_store_native::{NativeOptions, NativeStore, SyncPolicy};
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;

fn bench_mode(c: &mut Criterion, label: &str, mode: StorageMode, sync: SyncPolicy) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = rt.block_on(async {
        let transport = TcpTransport::bind(
            "127.0.0.1:0".parse().unwrap(),
            TcpConfig::plaintext("bench"),
        )
        .await
        .unwrap();
        let store = NativeStore::open(
            dir.path(),
            NativeOptions {
                sync,
                ..NativeOptions::default()
            },
        )
        .unwrap();
        NodeBuilder::new(1, "bench")
            .transport(Arc::new(transport))
            .store(Arc::new(store))
            .replication_factor(1)
            .storage_mode(mode)
            .start()
            .await
            .unwrap()
    });
    let handle = node.handle();
    let mut round = 0u64;
    c.bench_function(label, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    round += 1;
                    let mut tasks = Vec::with_capacity(CLIENTS);
                    for i in 0..CLIENTS {
                        let h = handle.clone();
                        let key = format!("key-{}", (round as usize * CLIENTS + i) % 10_000);
                        tasks.push(tokio::spawn(async move {
                            h.execute(ClientRequest::put(key.clone(), vec![7u8; 100]))
                                .await
                                .unwrap();
                            h.execute(ClientRequest::get(key)).await.unwrap();
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                }
                start.elapsed()
            })
        })
    });
    rt.block_on(node.shutdown(false)).unwrap();
}

fn storage_dispatch(c: &mut Criterion) {
    let periodic = SyncPolicy::Periodic(Duration::from_millis(100));
    bench_mode(c, "periodic/inline", StorageMode::Inline, periodic);
    bench_mode(
        c,
        "periodic/spawn_blocking_per_op",
        StorageMode::BlockingPerOp,
        periodic,
    );
    bench_mode(
        c,
        "periodic/workers_1_batched",
        StorageMode::Workers { threads: 1 },
        periodic,
    );
    bench_mode(
        c,
        "periodic/workers_2_batched",
        StorageMode::Workers { threads: 2 },
        periodic,
    );
    bench_mode(
        c,
        "periodic/workers_4_batched",
        StorageMode::Workers { threads: 4 },
        periodic,
    );
    bench_mode(c, "always/inline", StorageMode::Inline, SyncPolicy::Always);
    bench_mode(
        c,
        "always/spawn_blocking_per_op",
        StorageMode::BlockingPerOp,
        SyncPolicy::Always,
    );
    bench_mode(
        c,
        "always/workers_4_batched",
        StorageMode::Workers { threads: 4 },
        SyncPolicy::Always,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = storage_dispatch
}
criterion_main!(benches);
