//! What anti-entropy costs: a replica that missed 1% of N keys (1,000,000
//! by default; `CASSIO_BENCH_KEYS` to change) is repaired by real `Node`s
//! over an in-memory host (no network: the time is the nodes' and the
//! stores' CPU work), against a full transfer to an empty replica, with the
//! bytes of every anti-entropy frame as encoded on the wire. Prints one
//! line per case and the trees' memory.
//!
//! `cargo bench -p cassio-core --bench repair`

#[path = "../tests/support/mem_cluster.rs"]
mod mem_cluster;

use bytes::Bytes;
use cassio_core::node::storage_key;
use cassio_core::{NodeId, Timestamp, Versioned};
use mem_cluster::{Cluster, WALL0};
use std::time::Duration;

fn keys() -> u32 {
    std::env::var("CASSIO_BENCH_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// Three nodes, RF 3; node 3 lacks every key `missing` selects.
fn case(name: &str, n: u32, missing: impl Fn(u32) -> bool) {
    let value = Bytes::from(vec![b'x'; 100]);
    let ts = Timestamp::new(WALL0 - 1_000_000, 0, NodeId(9));
    let mut c = Cluster::new(
        3,
        |c| {
            c.repair.interval = Duration::from_secs(3600);
            c.repair.bytes_per_sec = 0;
            c.repair.rebuild_keys_per_sec = u64::MAX / 2;
        },
        |i, h| {
            for k in 0..n {
                if i < 2 || !missing(k) {
                    h.store.insert(
                        storage_key("default", format!("key-{k:012}").as_bytes()),
                        Versioned::value(ts, value.clone()),
                    );
                }
            }
        },
    );
    let lacking = c.hosts[0].store.len() - c.hosts[2].store.len();
    // From start: every node builds its tree by a scan, then the rounds
    // that start at once compare and repair.
    let t0 = std::time::Instant::now();
    let mut steps = 0;
    loop {
        c.run_for(Duration::from_secs(1));
        steps += 1;
        let done = c
            .nodes
            .iter()
            .all(|n| n.repair_status().rounds_completed > 0);
        if (done && c.hosts[2].store == c.hosts[0].store) || steps > 600 {
            break;
        }
    }
    let took = t0.elapsed();
    assert_eq!(c.hosts[2].store, c.hosts[0].store, "{name}: not repaired");
    let pulled: u64 = c.nodes.iter().map(|n| n.repair_status().items_pulled).sum();
    let pushed: u64 = c.nodes.iter().map(|n| n.repair_status().items_pushed).sum();
    println!(
        "{name}: {n} keys, {lacking} missing: trees built and compared, replica repaired in {:.2} s of CPU; {} bytes of anti-entropy frames; {} items pushed, {} pulled; tree memory {} KiB per node per keyspace",
        took.as_secs_f64(),
        c.sync_bytes,
        pushed,
        pulled,
        c.nodes[2].repair_status().tree_memory_bytes / 1024,
    );
}

fn main() {
    let n = keys();
    case("nothing missing (build and compare only)", n, |_| false);
    case("missed 1%", n, |k| k % 100 == 7);
    case("full transfer (empty replica)", n, |_| true);
}
