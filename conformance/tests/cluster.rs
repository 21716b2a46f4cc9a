//! The simulated-cluster suite: every scenario runs over a sweep of seeds
//! (200 by default; `CASSIO_SIM_SEEDS=N` for more, `CASSIO_SIM_SEED=S` to
//! replay one) and each history must pass the checker.

use cassio_core::Consistency;
use conformance::cluster::{check, simulate_mem, sweep, Fault, Scenario, SweepStats, Violation};
use conformance::MemStore;
use std::sync::Arc;
use std::time::Duration;

fn mem(_: cassio_core::NodeId) -> Arc<dyn cassio_core::Store> {
    Arc::new(MemStore::new())
}

fn assert_did_work(stats: &SweepStats) {
    assert!(stats.seeds >= 1);
    // Each seed completes dozens of operations; a sweep that did nothing
    // would pass the checker vacuously.
    assert!(
        stats.ok >= stats.seeds * 20,
        "too few successful ops: {stats:?}"
    );
    assert!(
        stats.reads_with_value >= stats.seeds,
        "reads never saw data: {stats:?}"
    );
}

#[test]
fn no_faults() {
    let s = Scenario::new("no_faults");
    let stats = sweep(&s, "-p conformance --test cluster no_faults", &mem);
    assert_did_work(&stats);
    assert_eq!(stats.failed, 0, "fault-free run had failures: {stats:?}");
}

#[test]
fn lossy_network() {
    let mut s = Scenario::new("lossy_network");
    s.net.loss = 0.10;
    s.net.duplicate = 0.10;
    s.net.max_latency = Duration::from_millis(20); // wide spread: heavy reordering
    let stats = sweep(&s, "-p conformance --test cluster lossy_network", &mem);
    assert_did_work(&stats);
}

#[test]
fn minority_partition() {
    let mut s = Scenario::new("minority_partition");
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
    let stats = sweep(&s, "-p conformance --test cluster minority_partition", &mem);
    assert_did_work(&stats);
    assert!(
        stats.failed > 0,
        "a partition should fail some requests: {stats:?}"
    );
}

#[test]
fn one_way_partition() {
    let mut s = Scenario::new("one_way_partition");
    s.faults = vec![
        (
            Duration::from_secs(1),
            Fault::Partition {
                from: vec![0],
                to: vec![1, 2, 3, 4],
                one_way: true,
            },
        ),
        (Duration::from_secs(7), Fault::Heal),
    ];
    assert_did_work(&sweep(
        &s,
        "-p conformance --test cluster one_way_partition",
        &mem,
    ));
}

#[test]
fn crash_and_restart() {
    let mut s = Scenario::new("crash_and_restart");
    s.faults = vec![
        (Duration::from_millis(800), Fault::Crash(1)),
        (Duration::from_secs(5), Fault::Restart(1)),
        (Duration::from_secs(6), Fault::Crash(3)),
        (Duration::from_secs(8), Fault::Restart(3)),
    ];
    assert_did_work(&sweep(
        &s,
        "-p conformance --test cluster crash_and_restart",
        &mem,
    ));
}

#[test]
fn crash_restart_with_loss() {
    // A restarted node must not coordinate on a partial view of the ring,
    // nor leave and re-enter the ring while it restarts.
    let mut s = Scenario::new("crash_restart_with_loss");
    s.net.loss = 0.05;
    s.faults = vec![
        (Duration::from_secs(1), Fault::Crash(2)),
        (Duration::from_secs(4), Fault::Restart(2)),
    ];
    assert_did_work(&sweep(
        &s,
        "-p conformance --test cluster crash_restart_with_loss",
        &mem,
    ));
}

#[test]
fn slow_links_to_one_node() {
    // Node 4 sits behind slow links (20–80 ms each way), the rest on a LAN.
    let mut s = Scenario::new("slow_links_to_one_node");
    for other in 0..4 {
        let slow = (Duration::from_millis(20), Duration::from_millis(80));
        s.net.links.insert((4, other), slow);
        s.net.links.insert((other, 4), slow);
    }
    assert_did_work(&sweep(
        &s,
        "-p conformance --test cluster slow_links_to_one_node",
        &mem,
    ));
}

#[test]
fn clock_skew() {
    let mut s = Scenario::new("clock_skew");
    s.clock_skew = Duration::from_millis(500);
    assert_did_work(&sweep(&s, "-p conformance --test cluster clock_skew", &mem));
}

#[test]
fn same_seed_gives_identical_history() {
    let mut s = Scenario::new("determinism");
    s.net.loss = 0.05;
    s.net.duplicate = 0.05;
    s.clock_skew = Duration::from_millis(100);
    s.faults = vec![
        (Duration::from_secs(1), Fault::Crash(2)),
        (Duration::from_secs(3), Fault::Restart(2)),
    ];
    let a = simulate_mem(&s, 42).history_text();
    let b = simulate_mem(&s, 42).history_text();
    let c = simulate_mem(&s, 43).history_text();
    assert!(a.len() > 1000, "history too short to mean anything");
    assert_eq!(a, b, "same seed, different history");
    assert_ne!(a, c, "different seeds gave the same history");
}

#[test]
fn checker_finds_stale_reads_at_one_one() {
    let mut s = Scenario::new("one_one");
    s.write_cl = Consistency::One;
    s.read_cl = Consistency::One;
    s.net.max_latency = Duration::from_millis(30);
    s.net.loss = 0.05;
    assert!(!s.overlapping_quorums());
    let mut stale_seeds = 0;
    for seed in 0..50 {
        let outcome = simulate_mem(&s, seed);
        let v = check(&s, &outcome);
        if v.iter().any(|v| {
            matches!(
                v,
                Violation::StaleRead { .. } | Violation::DeleteUndone { .. }
            )
        }) {
            stale_seeds += 1;
        }
    }
    assert!(
        stale_seeds > 0,
        "ONE/ONE never produced a stale read in 50 seeds"
    );
}

#[test]
fn checker_flags_a_phantom_value_and_divergence() {
    let s = Scenario::new("tamper");
    let mut outcome = simulate_mem(&s, 7);
    assert!(check(&s, &outcome).is_empty());
    // Make one successful read return a value that nobody wrote.
    let read = outcome
        .history
        .iter_mut()
        .find(|op| {
            matches!(
                op.outcome,
                conformance::cluster::OpOutcome::Done(Ok(cassio_core::ClientResponse::Value(_)))
            )
        })
        .expect("some successful read");
    read.outcome = conformance::cluster::OpOutcome::Done(Ok(cassio_core::ClientResponse::Value(
        Some(bytes::Bytes::from_static(b"never-written")),
    )));
    // And make one replica disagree.
    let (_, versions) = outcome.replicas.iter_mut().next().expect("some key");
    versions[0].1 = None;
    let v = check(&s, &outcome);
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::PhantomValue { .. })),
        "{v:?}"
    );
    assert!(
        v.iter().any(|v| matches!(v, Violation::Diverged { .. })),
        "{v:?}"
    );
}

#[test]
fn checker_judges_by_real_time_not_by_timestamps() {
    use cassio_core::{ClientError, ClientResponse, Timestamp};
    use conformance::cluster::{OpKind, OpOutcome};
    let s = Scenario::new("tamper_real_time");
    let clean = simulate_mem(&s, 11);
    assert!(check(&s, &clean).is_empty());

    // A read after two acknowledged puts (in real-time order) returns the
    // first one's value: stale, whatever timestamps the system chose.
    let mut o = simulate_mem(&s, 11);
    let acked_put = |op: &conformance::cluster::OpRecord| {
        matches!(op.kind, OpKind::Put(_))
            && matches!(
                op.outcome,
                OpOutcome::Done(Ok(ClientResponse::Written { .. }))
            )
    };
    let (i1, i2) = {
        let h = &o.history;
        let mut found = None;
        'outer: for (i, w1) in h.iter().enumerate().filter(|(_, op)| acked_put(op)) {
            for (j, w2) in h.iter().enumerate().filter(|(_, op)| acked_put(op)) {
                if w2.key == w1.key && w2.invoked > w1.completed.expect("acked") {
                    found = Some((i, j));
                    break 'outer;
                }
            }
        }
        found.expect("two acknowledged puts of one key in real-time order")
    };
    let OpKind::Put(v1) = o.history[i1].kind.clone() else {
        unreachable!()
    };
    let key = o.history[i2].key.clone();
    let after = o.history[i2].completed.expect("acked") + Duration::from_millis(1);
    // Give w1 a timestamp far above w2's, as a lying clock would: the
    // checker must not care.
    o.history[i1].ts = Some(Timestamp::new(u64::MAX / 2, 0, cassio_core::NodeId(1)));
    let mut read = o.history[i2].clone();
    read.kind = OpKind::Get;
    read.invoked = after;
    read.completed = Some(after + Duration::from_millis(1));
    read.outcome = OpOutcome::Done(Ok(ClientResponse::Value(Some(v1))));
    read.applied.clear();
    o.history.push(read.clone());
    let v = check(&s, &o);
    assert!(
        v.iter().any(|v| matches!(v, Violation::StaleRead { .. })),
        "{v:?}"
    );

    // The same read answering empty, with no delete executed anywhere: stale.
    let mut o2 = simulate_mem(&s, 11);
    o2.history
        .retain(|op| op.key != key || op.kind != OpKind::Delete);
    let mut empty = read.clone();
    empty.outcome = OpOutcome::Done(Ok(ClientResponse::Value(None)));
    o2.history.push(empty);
    assert!(
        check(&s, &o2)
            .iter()
            .any(|v| matches!(v, Violation::StaleRead { .. })),
        "an empty read with no applied delete must be stale"
    );

    // A failed repair-pass read, and an Unavailable answer after sending.
    let mut o3 = simulate_mem(&s, 11);
    let rp = o3
        .history
        .iter_mut()
        .find(|op| op.repair_pass)
        .expect("a repair-pass read");
    rp.outcome = OpOutcome::Done(Err(ClientError::Timeout {
        acked: 2,
        needed: 3,
    }));
    let sent = o3
        .history
        .iter_mut()
        .find(|op| op.fanned_out && !op.repair_pass)
        .expect("a request that fanned out");
    sent.outcome = OpOutcome::Done(Err(ClientError::Unavailable {
        needed: 2,
        alive: 1,
    }));
    let v = check(&s, &o3);
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::RepairFailed { .. })),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::UnavailableAfterSending { .. })),
        "{v:?}"
    );
}
