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
    never_left: usize,
}

fn judge(s: &Scenario, seeds: std::ops::Range<u64>) -> Tally {
    let mut t = Tally::default();
    for seed in seeds {
        let outcome = simulate_mem(s, seed);
        t.never_left += outcome.never_left.len();
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
    assert_eq!(t.never_left, 0, "{t:?}");
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

fn partitioned(name: &str, side: &[usize], other: &[usize]) -> Scenario {
    let mut s = craq(name);
    s.faults = vec![
        (
            secs(3),
            Fault::Partition {
                from: side.to_vec(),
                to: other.to_vec(),
                one_way: false,
            },
        ),
        (secs(25), Fault::Heal),
    ];
    s
}

/// Each of the three nodes of a three-node cluster crashes in turn under
/// load (every key's chain holds all three, in an order that depends on
/// the key, so each crash takes out the head of some chains, the middle
/// of others and the tail of the rest, with writes in flight), and comes
/// back.
#[test]
fn craq_crash_head_middle_and_tail() {
    let mut s = craq("craq_crash_head_middle_and_tail");
    s.nodes = 3;
    s.faults = vec![
        (secs(3), Fault::Crash(0)),
        (secs(12), Fault::Restart(0)),
        (secs(18), Fault::Crash(1)),
        (secs(27), Fault::Restart(1)),
        (secs(32), Fault::Crash(2)),
        (secs(40), Fault::Restart(2)),
    ];
    assert_holds(&s);
}

/// A node comes back with an empty data directory (same id): it asks to
/// be taken out of its chains, rejoins syncing and must pull everything
/// before it serves.
#[test]
fn craq_member_returns_empty() {
    let mut s = craq("craq_member_returns_empty");
    s.faults = vec![
        (
            secs(3),
            Fault::Wipe {
                node: 2,
                new_id: false,
            },
        ),
        (secs(12), Fault::Restart(2)),
    ];
    assert_holds(&s);
}

/// The claimant (node 0, the lowest id) cut off alone: the others must
/// take it out of its chains without it.
#[test]
fn craq_partition_isolates_the_claimant() {
    assert_holds(&partitioned(
        "craq_partition_isolates_the_claimant",
        &[0],
        &[1, 2, 3, 4],
    ));
}

/// Two nodes cut off from three: every chain with a member on the small
/// side loses its head, middle or tail there.
#[test]
fn craq_partition_minority() {
    assert_holds(&partitioned("craq_partition_minority", &[0, 1], &[2, 3, 4]));
}

/// One node (a head, middle or tail of each of its chains) cut off alone,
/// not the claimant.
#[test]
fn craq_partition_isolates_one_member() {
    assert_holds(&partitioned(
        "craq_partition_isolates_one_member",
        &[3],
        &[0, 1, 2, 4],
    ));
}

/// Lossy network with a crash: resends and catch-ups carry the chains.
#[test]
fn craq_loss_and_crash() {
    let mut s = craq("craq_loss_and_crash");
    s.faults = vec![
        (secs(1), Fault::SetLoss(0.1)),
        (secs(5), Fault::Crash(1)),
        (secs(20), Fault::Restart(1)),
        (secs(30), Fault::SetLoss(0.0)),
    ];
    assert_holds(&s);
}

/// A busy workload on few keys, where reads often meet dirty versions and
/// race writes at other members: what the mutations below need to show.
fn busy(name: &str) -> Scenario {
    let mut s = craq(name);
    s.clients = 8;
    s.keys = 3;
    s.think_time = Duration::from_millis(60);
    s.ops_per_client = 300;
    // Slow, jittery links keep versions dirty for long: writes and reads
    // overtake each other between members.
    s.net.max_latency = Duration::from_millis(15);
    s
}

fn caught(mut s: Scenario, m: impl Fn(&mut cassio_core::config::Mutations)) -> usize {
    m(&mut s.mutations);
    let t = judge(&s, 0..5);
    t.not_linearizable
}

/// The control: the busy workload is linearizable without mutations.
#[test]
fn craq_busy_workload_is_linearizable() {
    let mut s = busy("craq_busy");
    s.faults = vec![(secs(5), Fault::Crash(1)), (secs(15), Fault::Restart(1))];
    let t = judge(&s, 0..5);
    assert!(t.events > 2000, "{t:?}");
    assert_eq!(t.not_linearizable, 0, "{t:?}");
    assert_eq!(t.liveness_failed, 0, "{t:?}");
}

/// Mutation: a dirty read answers its newest version without asking the
/// tail.
#[test]
fn mutation_skip_version_query_is_caught() {
    let n = caught(busy("craq_skip_version_query"), |m| {
        m.chain_skip_version_query = true
    });
    assert!(n > 0, "not caught");
}

/// Mutation: the head commits (and answers) before the write reaches the
/// tail.
#[test]
fn mutation_commit_at_head_is_caught() {
    let n = caught(busy("craq_commit_at_head"), |m| {
        m.chain_commit_at_head = true
    });
    assert!(n > 0, "not caught");
}

/// Mutation: no leases and no wait before a new epoch: a member cut off
/// keeps answering reads (an old tail keeps answering version queries)
/// after the others took it out.
#[test]
fn mutation_ignore_leases_is_caught() {
    let mut s = busy("craq_ignore_leases");
    s.faults = vec![
        (
            secs(3),
            Fault::Partition {
                from: vec![3],
                to: vec![0, 1, 2, 4],
                one_way: false,
            },
        ),
        (secs(20), Fault::Heal),
    ];
    let n = caught(s, |m| m.chain_ignore_leases = true);
    assert!(n > 0, "not caught");
}

fn on_craq(mut s: Scenario, name: &str) -> Scenario {
    s.craq = true;
    s.name = name.into();
    s
}

/// Three nodes join a five-node cluster under load: each pulls the
/// committed state of the keys it gains while it is the last member of
/// their chains, and serves once the ring moved.
#[test]
fn craq_join_under_load() {
    assert_holds(&on_craq(nemesis::join_under_load(), "craq_join_under_load"));
}

/// Two of five nodes leave under load: their chains move to nodes that
/// never held them.
#[test]
fn craq_leave_under_load() {
    assert_holds(&on_craq(
        nemesis::leave_under_load(),
        "craq_leave_under_load",
    ));
}

/// A dead node is replaced by a new one under load.
#[test]
fn craq_replace_under_load() {
    assert_holds(&on_craq(
        nemesis::replace_under_load(),
        "craq_replace_under_load",
    ));
}

/// Three nodes join while an owner crashes and comes back.
#[test]
fn craq_join_with_crash() {
    assert_holds(&on_craq(nemesis::join_with_crash(), "craq_join_with_crash"));
}

/// The nemesis catalog's scenarios that apply to a CRAQ keyspace (not
/// those of cells, expiry, scans, datacenters or factor changes), each on
/// one.
macro_rules! craq_catalog {
    ($($test:ident => $scenario:expr),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                assert_holds(&on_craq($scenario, stringify!($test)));
            }
        )*
    };
}

craq_catalog! {
    craq_join_with_loss => nemesis::join_with_loss(),
    craq_leave_with_loss => nemesis::leave_with_loss(),
    craq_remove_dead_with_loss_and_crash => nemesis::remove_dead_with_loss_and_crash(),
    craq_replace_with_loss => nemesis::replace_with_loss(),
    craq_partition_majority => nemesis::partition_majority(),
    craq_partition_one_way => nemesis::partition_one_way(),
    craq_partition_flapping => nemesis::partition_flapping(),
    craq_partition_bridge => nemesis::partition_bridge(),
    craq_crash_majority => nemesis::crash_majority(),
    craq_crash_all_restart_in_waves => nemesis::crash_all_restart_in_waves(),
    craq_wipe_same_id => nemesis::wipe_same_id(),
    craq_wipe_after_missed_writes => nemesis::wipe_after_missed_writes(),
    craq_wipe_new_id => nemesis::wipe_new_id(),
    craq_clock_jumps => nemesis::clock_jumps(),
    craq_clock_one_node_hour_ahead => nemesis::clock_one_node_hour_ahead(),
    craq_clock_skew_with_restart => nemesis::clock_skew_with_restart(),
    craq_storage_errors => nemesis::storage_errors(),
    craq_storage_stalls => nemesis::storage_stalls(),
    craq_process_pauses => nemesis::process_pauses(),
    craq_join_while_partitioned => nemesis::join_while_partitioned(),
    craq_leave_with_crash => nemesis::leave_with_crash(),
    craq_remove_dead_under_load => nemesis::remove_dead_under_load(),
    craq_swarm => nemesis::swarm(7),
    craq_replace_with_crash => nemesis::replace_with_crash(),
    craq_join_with_joiner_crash => nemesis::join_with_joiner_crash(),
}
