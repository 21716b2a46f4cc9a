//! Runs one simulated five-node cluster (RF=3, QUORUM) through a fault
//! scenario and prints what happened and what the checker says.
//!
//! `cargo run -p conformance --example simulate -- [SCENARIO] [SEED]` where
//! SCENARIO is one of: calm, lossy, partition, crash, skew (default: crash).

use conformance::cluster::{check, simulate_mem, Fault, OpOutcome, Scenario};
use std::time::Duration;

fn scenario(name: &str) -> Option<Scenario> {
    let mut s = Scenario::new(name);
    match name {
        "calm" => {}
        "lossy" => {
            s.net.loss = 0.10;
            s.net.duplicate = 0.10;
            s.net.max_latency = Duration::from_millis(20);
        }
        "partition" => {
            s.faults = vec![
                (
                    Duration::from_secs(1),
                    Fault::Partition {
                        from: vec![0, 1],
                        to: vec![2, 3, 4],
                        one_way: false,
                    },
                ),
                (Duration::from_secs(7), Fault::Heal),
            ];
        }
        "crash" => {
            s.faults = vec![
                (Duration::from_secs(1), Fault::Crash(1)),
                (Duration::from_secs(5), Fault::Restart(1)),
            ];
        }
        "skew" => s.clock_skew = Duration::from_millis(500),
        _ => return None,
    }
    Some(s)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "crash".into());
    let seed: u64 = match args.next().map(|s| s.parse()) {
        None => 1,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!("SEED must be a number: {e}");
            std::process::exit(2);
        }
    };
    let Some(s) = scenario(&name) else {
        eprintln!("unknown scenario {name:?}; pick one of: calm, lossy, partition, crash, skew");
        std::process::exit(2);
    };
    let outcome = simulate_mem(&s, seed);
    let (mut ok, mut failed, mut lost) = (0, 0, 0);
    for op in &outcome.history {
        match &op.outcome {
            OpOutcome::Done(Ok(_)) => ok += 1,
            OpOutcome::Done(Err(_)) | OpOutcome::Refused => failed += 1,
            OpOutcome::CoordinatorCrashed | OpOutcome::Pending => lost += 1,
        }
    }
    println!("scenario {name}, seed {seed}: 5 nodes, RF=3, QUORUM");
    println!("client ops: {ok} ok, {failed} failed with a typed error, {lost} lost with a crashed coordinator");
    println!(
        "frames: {} sent, {} delivered, {} dropped",
        outcome.frames.0, outcome.frames.1, outcome.frames.2
    );
    for op in outcome.history.iter().filter(|o| !o.repair_pass).take(8) {
        println!(
            "  {:>8}us {} {:?} {:?} -> {:?}",
            op.invoked.as_micros(),
            op.node,
            op.kind,
            op.key,
            op.outcome
        );
    }
    let violations = check(&s, &outcome);
    if violations.is_empty() {
        println!(
            "checker: all guarantees held; {} keys converged on every replica",
            outcome.replicas.len()
        );
    } else {
        println!("checker: {} violations", violations.len());
        for v in violations.iter().take(10) {
            println!("  - {v}");
        }
        std::process::exit(1);
    }
}
