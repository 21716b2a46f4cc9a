//! Membership on the simulator: gossip convergence, failure detection,
//! restarts and partitions, over fixed seed sweeps. The full sweeps behind
//! the figures in docs/benchmarks.md run in
//! `cargo run --release -p conformance --example gossip_report`; these
//! tests run the same experiments on fewer seeds where a seed is costly.

use conformance::cluster::gossip::{
    false_convictions, median_and_max, membership_scenario, partition_and_heal, rounds_to_converge,
    rounds_to_recognise_restart, seconds_to_convict,
};
use std::time::Duration;

fn seeds(n: u64) -> impl Iterator<Item = u64> {
    conformance::cluster::sweep_seeds(n).into_iter()
}

#[test]
fn fifty_nodes_from_three_seeds_all_see_all_up_quickly() {
    let s = membership_scenario(50, 3, 0.0);
    let rounds: Vec<f64> = seeds(100)
        .map(|seed| {
            let r = rounds_to_converge(&s, seed, 20);
            f64::from(r.unwrap_or_else(|| panic!("seed {seed}: no convergence within 20 rounds")))
        })
        .collect();
    let (median, max) = median_and_max(rounds);
    assert!(median <= 10.0, "median {median} rounds");
    assert!(max <= 20.0, "worst {max} rounds");
}

#[test]
fn a_crashed_node_is_convicted_by_every_live_node_within_15_s_at_the_median() {
    let s = membership_scenario(50, 3, 0.0);
    let secs: Vec<f64> = seeds(10)
        .map(|seed| {
            seconds_to_convict(&s, seed, Duration::from_secs(60))
                .unwrap_or_else(|| panic!("seed {seed}: crash not convicted by all within 60 s"))
        })
        .collect();
    let (median, _) = median_and_max(secs);
    assert!(median <= 15.0, "median {median} s");
}

#[test]
fn no_false_convictions_with_5_percent_loss() {
    let s = membership_scenario(50, 3, 0.05);
    for seed in seeds(3) {
        let n = false_convictions(&s, seed, Duration::from_secs(1000));
        assert_eq!(n, 0, "seed {seed}: {n} false convictions");
    }
}

#[test]
fn heavy_loss_does_produce_false_convictions_the_detector_can_see() {
    // At 60% loss gossip barely gets through: the detector must notice,
    // which shows the no-false-conviction test above can fail.
    let s = membership_scenario(20, 3, 0.60);
    let n = false_convictions(&s, 1, Duration::from_secs(300));
    assert!(n > 0, "no convictions at 60% loss");
}

#[test]
fn a_restarted_node_is_seen_up_by_all_within_5_rounds() {
    let s = membership_scenario(10, 3, 0.0);
    for seed in seeds(50) {
        let r = rounds_to_recognise_restart(&s, seed, 30);
        assert!(r.is_some_and(|r| r <= 5), "seed {seed}: {r:?} rounds");
    }
}

#[test]
fn a_partition_of_two_of_seven_is_convicted_both_ways_and_heals() {
    let s = membership_scenario(7, 3, 0.0);
    for seed in seeds(50) {
        let o = partition_and_heal(&s, seed, 2, Duration::from_secs(60), 30);
        assert!(o.both_sides_convicted, "seed {seed}: {o:?}");
        assert!(
            o.rounds_to_heal.is_some_and(|r| r <= 10),
            "seed {seed}: {o:?}"
        );
        assert!(
            o.members_known.iter().all(|&m| m == 7),
            "seed {seed}: {o:?}"
        );
    }
}
