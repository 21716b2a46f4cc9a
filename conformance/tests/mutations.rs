//! Mutation tests: each breaks the system on purpose and asserts that the
//! checker reports a violation in some seed of the sweep (200 seeds unless
//! `CASSIO_SIM_SEEDS` says otherwise) where the same scenario, unbroken,
//! passes: the violation is the mutation's doing. They prove the checker
//! can fail. The first such seed and violation are printed.

use cassio_core::{NodeId, Store};
use conformance::cluster::{check, nemesis, simulate, NodeStores, Scenario, SimStores, SimSync};
use conformance::MemStore;
use std::sync::Arc;

fn mem(_: NodeId) -> Arc<dyn Store> {
    Arc::new(MemStore::new())
}

/// The first seed at which `broken` (on `broken_stores`) has a violation
/// and `control` (on `control_stores`) has none, with that violation.
fn caught(
    broken: &Scenario,
    broken_stores: &dyn NodeStores,
    control: &Scenario,
    control_stores: &dyn NodeStores,
) -> Option<(u64, String)> {
    let found = conformance::cluster::sweep_seeds(200)
        .into_iter()
        .find_map(|seed| {
            let v = check(broken, &simulate(broken, seed, broken_stores));
            let first = v.first()?;
            check(control, &simulate(control, seed, control_stores))
                .is_empty()
                .then(|| (seed, first.to_string()))
        });
    if let Some((seed, v)) = &found {
        println!("{}: seed {seed}: {v}", broken.name);
    }
    found
}

#[test]
fn mutation_replica_drops_every_tenth_write() {
    let control = nemesis::crash_each_in_turn("crash_each_in_turn");
    let mut broken = control.clone();
    broken.name = "mutation_replica_drops_every_tenth_write".into();
    broken.drop_every_nth_write = Some((2, 10));
    assert!(
        caught(&broken, &mem, &control, &mem).is_some(),
        "a replica that acknowledges every tenth write without applying it went unnoticed"
    );
}

#[test]
fn mutation_store_loses_synced_writes_on_crash() {
    let control = nemesis::crash_each_in_turn("crash_each_in_turn");
    let mut broken = control.clone();
    broken.name = "mutation_store_loses_synced_writes_on_crash".into();
    assert!(
        caught(
            &broken,
            &SimStores::losing_synced_writes(SimSync::Always),
            &control,
            &SimStores::new(SimSync::Always),
        )
        .is_some(),
        "a store that loses synced writes on crash went unnoticed"
    );
}
