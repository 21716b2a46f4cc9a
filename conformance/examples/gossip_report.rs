//! Membership figures for `docs/benchmarks.md`: convergence, conviction,
//! false convictions, restart and partition recovery, swept over seeds.
//!
//! `cargo run --release -p conformance --example gossip_report -- [SEEDS]`
//! (default 100 seeds; the 500-node and 1,000-second runs use fewer).

use conformance::cluster::gossip::{
    false_convictions, median_and_max, membership_scenario, partition_and_heal, rounds_to_converge,
    rounds_to_recognise_restart, seconds_to_convict,
};
use std::time::{Duration, Instant};

fn dist(name: &str, v: Vec<Option<f64>>, unit: &str) {
    let missing = v.iter().filter(|x| x.is_none()).count();
    let vals: Vec<f64> = v.into_iter().map(|x| x.unwrap_or(f64::INFINITY)).collect();
    let mut sorted = vals.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    let (median, max) = median_and_max(vals);
    println!(
        "{name}: median {median:.1} {unit}, p90 {:.1}, max {max:.1}, min {:.1} over {} seeds ({missing} did not finish)",
        p(0.9),
        p(0.0),
        sorted.len()
    );
}

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let t = Instant::now();

    let s50 = membership_scenario(50, 3, 0.0);
    dist(
        "50 nodes from 3 seeds: rounds until all see all up",
        (0..seeds)
            .map(|seed| rounds_to_converge(&s50, seed, 60).map(f64::from))
            .collect(),
        "rounds",
    );
    let s500 = membership_scenario(500, 3, 0.0);
    dist(
        "500 nodes from 3 seeds: rounds until all see all up",
        (0..(seeds / 10).max(3))
            .map(|seed| rounds_to_converge(&s500, seed, 120).map(f64::from))
            .collect(),
        "rounds",
    );
    dist(
        "50 nodes: seconds from crash until every live node convicted it",
        (0..seeds)
            .map(|seed| seconds_to_convict(&s50, seed, Duration::from_secs(120)))
            .collect(),
        "s",
    );
    for loss in [0.05, 0.20] {
        let s = membership_scenario(50, 3, loss);
        let runs = if loss < 0.1 {
            seeds
        } else {
            (seeds / 5).max(3)
        };
        let counts: Vec<usize> = (0..runs)
            .map(|seed| false_convictions(&s, seed, Duration::from_secs(1000)))
            .collect();
        let total: usize = counts.iter().sum();
        let seeds_hit = counts.iter().filter(|&&c| c > 0).count();
        println!(
            "50 nodes, {:.0}% loss, 1000 s: {total} false convictions in {runs} seeds ({seeds_hit} seeds with any); {:.2e} per node-pair-second",
            loss * 100.0,
            total as f64 / (runs as f64 * 50.0 * 49.0 * 1000.0)
        );
    }
    let s10 = membership_scenario(10, 3, 0.0);
    dist(
        "10 nodes: rounds until a restarted node is seen up (new generation) by all",
        (0..seeds)
            .map(|seed| rounds_to_recognise_restart(&s10, seed, 30).map(f64::from))
            .collect(),
        "rounds",
    );
    let s7 = membership_scenario(7, 3, 0.0);
    let outcomes: Vec<_> = (0..seeds)
        .map(|seed| partition_and_heal(&s7, seed, 2, Duration::from_secs(60), 60))
        .collect();
    let convicted = outcomes.iter().filter(|o| o.both_sides_convicted).count();
    let forgotten = outcomes
        .iter()
        .filter(|o| o.members_known.iter().any(|&m| m != 7))
        .count();
    println!("7 nodes, 2 cut off for 60 s: both sides convicted each other in {convicted}/{seeds} seeds; a node forgotten in {forgotten} seeds");
    dist(
        "7 nodes: rounds after healing until all see all up",
        outcomes
            .iter()
            .map(|o| o.rounds_to_heal.map(f64::from))
            .collect(),
        "rounds",
    );
    println!("(report took {:.1} s)", t.elapsed().as_secs_f64());
}
