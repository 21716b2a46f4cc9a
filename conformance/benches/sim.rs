//! Simulated client operations per second: 5 nodes, RF=3, QUORUM, no faults
//! and 10% loss, over 20 seeds each; prints the median. Run with
//! `cargo bench -p conformance --bench sim`.

use conformance::cluster::{completed_ops, simulate_mem, Scenario};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then one seed is enough to show the bench still runs.
    let seeds: u64 = if std::env::args().any(|a| a == "--bench") {
        20
    } else {
        1
    };
    for (name, loss) in [("no faults", 0.0), ("10% loss", 0.10)] {
        let mut s = Scenario::new(name);
        s.net.loss = loss;
        s.clients = 16;
        s.ops_per_client = 200;
        s.think_time = std::time::Duration::from_millis(5);
        let mut rates = Vec::new();
        let mut ops_total = 0;
        for seed in 0..seeds {
            let start = Instant::now();
            let o = simulate_mem(&s, seed);
            let secs = start.elapsed().as_secs_f64();
            let ops = completed_ops(&o);
            ops_total += ops;
            rates.push(ops as f64 / secs);
        }
        println!(
            "sim 5 nodes RF=3 QUORUM, {name}: median {:.0} client ops/s over {seeds} seeds ({ops_total} ops)",
            median(rates)
        );
    }
}
