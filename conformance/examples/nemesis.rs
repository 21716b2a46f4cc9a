//! Replays one nemesis scenario with one seed on `MemStore`s and prints the
//! history (one line per operation, times in virtual milliseconds), the
//! final replicas and the checker's verdict.
//!
//! `cargo run -p conformance --example nemesis -- SCENARIO SEED`

use conformance::cluster::{check, nemesis, simulate_mem};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "swarm".into());
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let Some(s) = nemesis::by_name(&name, seed) else {
        let names: Vec<String> = nemesis::catalog().into_iter().map(|s| s.name).collect();
        eprintln!(
            "unknown scenario {name:?}; one of: swarm {}",
            names.join(" ")
        );
        std::process::exit(2);
    };
    println!("faults: {:?}", s.faults);
    let o = simulate_mem(&s, seed);
    for op in &o.history {
        println!(
            "{:>9.3}..{:<9} c{:<2} {} {:?} {:?} -> {:?}",
            op.invoked.as_micros() as f64 / 1000.0,
            op.completed
                .map(|c| format!("{:.3}", c.as_micros() as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            if op.client == usize::MAX {
                99
            } else {
                op.client
            },
            op.node,
            op.key,
            op.kind,
            op.outcome
        );
    }
    for (k, v) in &o.replicas {
        println!("{k:?}: {v:?}");
    }
    let v = check(&s, &o);
    println!("{} violations", v.len());
    for v in v.iter().take(10) {
        println!("- {v}");
    }
}
