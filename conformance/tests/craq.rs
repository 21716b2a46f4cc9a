//! Chain-replicated (CRAQ) keyspaces under the nemesis, judged by the
//! linearizability checker: every key's history of reads, writes,
//! deletes, compare-and-sets and increments must be linearizable, and
//! once faults stop every key must be written and read again.

use conformance::cluster::history::{OpKind, OpOutcome};
use conformance::cluster::{nemesis, simulate_mem, Fault, Scenario};
use conformance::linearizability::{check, Options, Verdict};
use std::time::Duration;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The CRAQ base: the nemesis base on a CRAQ keyspace.
fn craq(name: &str) -> Scenario {
    let mut s = nemesis::base(name);
    s.craq = true;
    s
}

#[derive(Default, Debug)]
struct Tally {
    events: usize,
    keys: usize,
    ok: usize,
    not_linearizable: usize,
    gave_up: usize,
    liveness_failed: usize,
}

fn judge(s: &Scenario, seeds: std::ops::Range<u64>) -> Tally {
    let mut t = Tally::default();
    for seed in seeds {
        let outcome = simulate_mem(s, seed);
        let history = outcome.linearizability_events();
        t.events += history.len();
        t.ok += outcome
            .history
            .iter()
            .filter(|o| !o.repair_pass && matches!(o.outcome, OpOutcome::Done(Ok(_))))
            .count();
        for op in outcome.history.iter().filter(|o| o.repair_pass) {
            if !matches!(op.outcome, OpOutcome::Done(Ok(_))) {
                t.liveness_failed += 1;
                if t.liveness_failed <= 3 {
                    println!(
                        "{} seed {seed}: final pass {:?} on {:?} at {:?}: {:?}",
                        s.name, op.kind, op.key, op.node, op.outcome
                    );
                }
            }
        }
        let report = check(&history, Options::default()).expect("a well-formed history");
        for (key, k) in &report.keys {
            t.keys += 1;
            match &k.verdict {
                Verdict::NotLinearizable(c) => {
                    t.not_linearizable += 1;
                    if t.not_linearizable <= 2 {
                        println!("{} seed {seed} key {key:?}:\n{c}", s.name);
                    }
                }
                Verdict::GaveUp { .. } => t.gave_up += 1,
                Verdict::Linearizable { .. } => {}
            }
        }
    }
    println!("{}: {t:?}", s.name);
    t
}

fn seeds() -> std::ops::Range<u64> {
    let n = std::env::var("CASSIO_CRAQ_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    0..n
}

fn assert_holds(s: &Scenario) {
    let t = judge(s, seeds());
    assert!(t.events > 100, "{t:?}");
    assert!(t.ok > 50, "{t:?}");
    assert_eq!(t.not_linearizable, 0, "{t:?}");
    assert_eq!(t.gave_up, 0, "{t:?}");
    assert_eq!(t.liveness_failed, 0, "{t:?}");
}

#[test]
fn craq_without_faults() {
    assert_holds(&craq("craq_without_faults"));
}

#[test]
fn craq_cas_and_incr_answer() {
    let s = craq("craq_cas_and_incr_answer");
    let outcome = simulate_mem(&s, 1);
    let swapped = outcome
        .history
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Cas { .. }))
        .filter(|o| {
            matches!(
                o.outcome,
                OpOutcome::Done(Ok(cassio_core::ClientResponse::Swapped(true)))
            )
        })
        .count();
    let counted = outcome
        .history
        .iter()
        .filter(|o| {
            matches!(
                o.outcome,
                OpOutcome::Done(Ok(cassio_core::ClientResponse::Counter(_)))
            )
        })
        .count();
    println!("swapped {swapped}, counted {counted}");
    assert!(
        swapped > 0 && counted > 0,
        "swapped {swapped}, counted {counted}"
    );
}

fn crash_restart(name: &str, node: usize) -> Scenario {
    let mut s = craq(name);
    s.faults = vec![
        (secs(3), Fault::Crash(node)),
        (secs(15), Fault::Restart(node)),
    ];
    s
}

#[test]
fn craq_crash_and_restart() {
    assert_holds(&crash_restart("craq_crash_and_restart", 0));
}
