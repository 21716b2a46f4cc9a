//! The linearizability checker on the simulator's histories of
//! last-write-wins keyspaces. LWW at QUORUM promises no stale read after
//! an acknowledged write (the cluster checker's rules), not
//! linearizability: this test records what the stronger checker says of
//! such histories, and that the adapter feeds it real histories (every
//! completed operation reaches it).

use conformance::cluster::{nemesis, simulate_mem, Scenario};
use conformance::linearizability::{check, Options, Verdict};

fn judge(s: &Scenario, seeds: std::ops::Range<u64>) -> (usize, usize, usize, usize) {
    let (mut events, mut keys, mut not_lin, mut gave_up) = (0, 0, 0, 0);
    for seed in seeds {
        let outcome = simulate_mem(s, seed);
        let history = outcome.linearizability_events();
        events += history.len();
        let report = check(&history, Options::default()).expect("a well-formed history");
        for (key, k) in &report.keys {
            keys += 1;
            match &k.verdict {
                Verdict::NotLinearizable(c) => {
                    not_lin += 1;
                    if not_lin <= 2 {
                        println!("{} seed {seed} key {key:?}:\n{c}", s.name);
                    }
                }
                Verdict::GaveUp { .. } => gave_up += 1,
                Verdict::Linearizable { .. } => {}
            }
        }
    }
    (events, keys, not_lin, gave_up)
}

/// Reads and writes at ONE during a partition read stale values: the
/// checker must find such histories not linearizable (it can fail on the
/// simulator's real histories, not only on made-up ones).
#[test]
fn histories_at_one_under_a_partition_are_not_linearizable() {
    let mut one = nemesis::partition_minority();
    one.name = "partition_minority at ONE/ONE".into();
    one.write_cl = cassio_core::Consistency::One;
    one.read_cl = cassio_core::Consistency::One;
    let (events, keys, not_lin, gave_up) = judge(&one, 0..10);
    println!(
        "{}: {events} events, {keys} keys, {not_lin} not linearizable, {gave_up} gave up",
        one.name
    );
    assert!(events > 1000, "{events} events");
    assert_eq!(gave_up, 0);
    assert!(
        not_lin * 2 > keys,
        "only {not_lin} of {keys} keys not linearizable"
    );
}

/// LWW at QUORUM is judged by the cluster checker's rules, not by
/// linearizability (README: LWW keyspaces are not linearizable). What the
/// stronger checker says of such histories is printed, for the record
/// (docs/testing.md); the assertions are that it judged every key of a
/// real history within its budget.
#[test]
fn lww_quorum_histories_are_judged_within_the_budget() {
    for s in [
        nemesis::partition_minority(),
        nemesis::clock_one_node_hour_ahead(),
    ] {
        let (events, keys, not_lin, gave_up) = judge(&s, 0..5);
        println!(
            "{}: {events} events, {keys} keys, {not_lin} not linearizable, {gave_up} gave up",
            s.name
        );
        assert!(events > 200 && keys > 0, "{events} events, {keys} keys");
        assert_eq!(gave_up, 0);
    }
}
