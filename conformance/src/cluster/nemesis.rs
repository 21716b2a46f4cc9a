//! The nemesis catalog: named scenarios, each a workload under faults long
//! enough to cross conviction (≈ 8–10 s) where that matters, and the swarm,
//! which draws a random mix of those faults from each seed (as TigerBeetle's
//! VOPR does): a safety phase with faults, then a liveness phase without,
//! in which the cluster must converge and answer every request.
//!
//! Fault times count from the end of the warm-up. Every scenario ends the
//! same way (see [`super::sim`]): faults stop, partitions heal, clocks are
//! corrected, every node restarts, a repair pass reads every key at ALL,
//! then every key is written and read again; all of it must succeed.

use super::{Fault, Scenario};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// Emits a nemesis scenario that cannot pass until a later issue lands, as
/// an ignored test whose reason names the missing capability, so every run
/// lists it (`cargo test -- --ignored` still runs it).
#[macro_export]
macro_rules! known_failure_scenario {
    ($name:ident, $reason:literal, $body:block) => {
        #[test]
        #[ignore = $reason]
        fn $name() $body
    };
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// The common base: 5 nodes, RF 3, QUORUM; clients spread their operations
/// over ≈ 40 s so that every fault happens under load, and the workload
/// goes on for 12 s after the last fault. Fewer clients than
/// the cluster suite, so the whole catalog runs 200 seeds each in minutes.
pub fn base(name: &str) -> Scenario {
    let mut s = Scenario::new(name);
    s.clients = 3;
    s.ops_per_client = 60;
    s.think_time = ms(1400);
    s.aftermath = secs(12);
    s
}

fn partition(from: &[usize], to: &[usize]) -> Fault {
    Fault::Partition {
        from: from.to_vec(),
        to: to.to_vec(),
        one_way: false,
    }
}

/// Two nodes cut off from the other three for 25 s.
pub fn partition_minority() -> Scenario {
    let mut s = base("partition_minority");
    s.faults = vec![
        (secs(2), partition(&[0, 1], &[2, 3, 4])),
        (secs(27), Fault::Heal),
    ];
    s
}

/// A majority of the nodes (three of five) each isolated from every other
/// node for 25 s; only the remaining two see each other.
pub fn partition_majority() -> Scenario {
    let mut s = base("partition_majority");
    s.faults = vec![
        (secs(2), partition(&[0], &[1, 2, 3, 4])),
        (secs(2), partition(&[1], &[0, 2, 3, 4])),
        (secs(2), partition(&[2], &[0, 1, 3, 4])),
        (secs(27), Fault::Heal),
    ];
    s
}

/// Node 0 can hear everyone but nobody hears it, for 25 s.
pub fn partition_one_way() -> Scenario {
    let mut s = base("partition_one_way");
    s.faults = vec![
        (
            secs(2),
            Fault::Partition {
                from: vec![0],
                to: vec![1, 2, 3, 4],
                one_way: true,
            },
        ),
        (secs(27), Fault::Heal),
    ];
    s
}

/// Partitions that come and go for 30 s, each split different, each long
/// enough to start conviction and short enough to end before it settles.
pub fn partition_flapping() -> Scenario {
    let mut s = base("partition_flapping");
    let splits: [(&[usize], &[usize]); 5] = [
        (&[0, 1], &[2, 3, 4]),
        (&[2], &[0, 1, 3, 4]),
        (&[3, 4], &[0, 1, 2]),
        (&[0, 2, 4], &[1, 3]),
        (&[1], &[0, 2, 3, 4]),
    ];
    for (k, (a, b)) in splits.iter().enumerate() {
        let t = 2 + 6 * k as u64;
        s.faults.push((secs(t), partition(a, b)));
        s.faults.push((secs(t + 4) + ms(500), Fault::Heal));
    }
    s
}

/// Nodes {0,1} and {3,4} cannot see each other, node 2 sees both (a
/// non-transitive network), for 25 s.
pub fn partition_bridge() -> Scenario {
    let mut s = base("partition_bridge");
    s.faults = vec![
        (secs(2), partition(&[0, 1], &[3, 4])),
        (secs(27), Fault::Heal),
    ];
    s
}

/// Three of five nodes crash for ≈ 20 s, then restart one by one.
pub fn crash_majority() -> Scenario {
    let mut s = base("crash_majority");
    s.faults = vec![
        (secs(2), Fault::Crash(0)),
        (secs(2) + ms(300), Fault::Crash(2)),
        (secs(3), Fault::Crash(4)),
        (secs(22), Fault::Restart(2)),
        (secs(24), Fault::Restart(0)),
        (secs(26), Fault::Restart(4)),
    ];
    s
}

/// Every node crashes; a minority restarts first and runs alone for 15 s
/// (long enough to convict the others), then the rest come back.
pub fn crash_all_restart_in_waves() -> Scenario {
    let mut s = base("crash_all_restart_in_waves");
    // Many keys, so that what the first wave acknowledges is not simply
    // overwritten before the second wave is back.
    s.keys = 16;
    for i in 0..5 {
        s.faults
            .push((secs(2) + ms(100 * i as u64), Fault::Crash(i)));
    }
    s.faults.push((secs(5), Fault::Restart(3)));
    s.faults.push((secs(6), Fault::Restart(1)));
    for (k, i) in [0, 2, 4].into_iter().enumerate() {
        s.faults.push((secs(21 + 2 * k as u64), Fault::Restart(i)));
    }
    s
}

/// Nodes crash one at a time, each down 9 s (convicted), two seconds apart,
/// so that at most one replica of any key is down at once and a restarted
/// replica has time to be caught up before the next crash. Many keys, so
/// that a lost write is not simply overwritten first. For the store models
/// that lose unsynced writes: what they then show is a replica that lost
/// acknowledged writes serving reads next to one that missed them while it
/// was down.
pub fn crash_each_in_turn(name: &str) -> Scenario {
    let mut s = base(name);
    s.keys = 16;
    for (k, i) in [1, 3, 0].into_iter().enumerate() {
        let t = 2 + 11 * k as u64;
        s.faults.push((secs(t), Fault::Crash(i)));
        s.faults.push((secs(t + 9), Fault::Restart(i)));
    }
    s
}

/// Node 2 loses its data directory and restarts empty at the same address
/// with the same id, after 10 s down.
pub fn wipe_same_id() -> Scenario {
    let mut s = base("wipe_same_id");
    s.faults = vec![
        (
            secs(3),
            Fault::Wipe {
                node: 2,
                new_id: false,
            },
        ),
        (secs(13), Fault::Restart(2)),
    ];
    s
}

/// Node 3 is down for 10 s and misses writes; right after it is back,
/// node 2 loses its data directory and comes back empty (same id): writes
/// made while node 3 was down are then on one replica of three.
pub fn wipe_after_missed_writes() -> Scenario {
    let mut s = base("wipe_after_missed_writes");
    s.keys = 16;
    s.faults = vec![
        (secs(2), Fault::Crash(3)),
        (secs(12) + ms(500), Fault::Restart(3)),
        (
            secs(13),
            Fault::Wipe {
                node: 2,
                new_id: false,
            },
        ),
        (secs(13) + ms(300), Fault::Restart(2)),
    ];
    s
}

/// Node 2 is replaced: its directory is wiped and a node with a new id
/// starts at its address.
pub fn wipe_new_id() -> Scenario {
    let mut s = base("wipe_new_id");
    s.faults = vec![
        (
            secs(3),
            Fault::Wipe {
                node: 2,
                new_id: true,
            },
        ),
        (secs(13), Fault::Restart(2)),
    ];
    s
}

/// The cluster's founder (no seeds but itself) crashes and restarts while
/// the others run: it must not coordinate on the view of one node.
pub fn seedless_first_node_restart() -> Scenario {
    let mut s = base("seedless_first_node_restart");
    s.seedless_first_node = true;
    s.seeds = 1;
    s.faults = vec![(secs(3), Fault::Crash(0)), (secs(14), Fault::Restart(0))];
    s
}

/// Clocks jump: node 1 ten seconds forward then thirty back, node 3 five
/// back; restarts make the jumps visible to a core that reads the wall
/// clock only at start.
pub fn clock_jumps() -> Scenario {
    let mut s = base("clock_jumps");
    s.faults = vec![
        (
            secs(2),
            Fault::ClockJump {
                node: 1,
                micros: 10_000_000,
            },
        ),
        (
            secs(4),
            Fault::ClockJump {
                node: 3,
                micros: -5_000_000,
            },
        ),
        (secs(5), Fault::Crash(3)),
        (secs(6), Fault::Restart(3)),
        (
            secs(12),
            Fault::ClockJump {
                node: 1,
                micros: -30_000_000,
            },
        ),
        (secs(13), Fault::Crash(1)),
        (secs(14), Fault::Restart(1)),
    ];
    s
}

/// Node 2's wall clock runs an hour ahead of the others'.
pub fn clock_one_node_hour_ahead() -> Scenario {
    let mut s = base("clock_one_node_hour_ahead");
    s.clock_offsets.insert(2, 3_600_000_000);
    s
}

/// Skewed clocks (±500 ms) and a node that restarts two seconds behind.
pub fn clock_skew_with_restart() -> Scenario {
    let mut s = base("clock_skew_with_restart");
    s.clock_skew = ms(500);
    s.faults = vec![
        (secs(3), Fault::Crash(1)),
        (
            secs(4),
            Fault::ClockJump {
                node: 1,
                micros: -2_000_000,
            },
        ),
        (secs(6), Fault::Restart(1)),
    ];
    s
}

/// Stores fail: node 1 a third of its operations for 20 s, node 3 all of
/// them for 10 s.
pub fn storage_errors() -> Scenario {
    let mut s = base("storage_errors");
    s.faults = vec![
        (secs(2), Fault::StorageErrors { node: 1, rate: 0.3 }),
        (secs(8), Fault::StorageErrors { node: 3, rate: 1.0 }),
        (secs(18), Fault::StorageErrors { node: 3, rate: 0.0 }),
        (secs(22), Fault::StorageErrors { node: 1, rate: 0.0 }),
    ];
    s
}

/// Disks hang: node 2 for 5 s, then node 4 for 8 s.
pub fn storage_stalls() -> Scenario {
    let mut s = base("storage_stalls");
    s.faults = vec![
        (
            secs(3),
            Fault::StorageStall {
                node: 2,
                duration: secs(5),
            },
        ),
        (
            secs(12),
            Fault::StorageStall {
                node: 4,
                duration: secs(8),
            },
        ),
    ];
    s
}

/// Processes pause (handle no input) for 10 s and 12 s and come back with
/// their old state, long after the others convicted them.
pub fn process_pauses() -> Scenario {
    let mut s = base("process_pauses");
    s.faults = vec![
        (
            secs(3),
            Fault::Pause {
                node: 1,
                duration: secs(10),
            },
        ),
        (
            secs(16),
            Fault::Pause {
                node: 3,
                duration: secs(12),
            },
        ),
    ];
    s
}

/// Node 4 is configured with RF 1 where the cluster has RF 3: it must
/// refuse to coordinate rather than acknowledge one copy as a quorum.
pub fn config_mismatch() -> Scenario {
    let mut s = base("config_mismatch");
    s.rf_overrides.insert(4, 1);
    s
}

/// The cluster grows from five nodes to eight under load (three join at
/// once): keys whose replicas move to two new nodes find no data there.
pub fn join_under_load() -> Scenario {
    let mut s = base("join_under_load");
    s.keys = 40;
    s.nodes = 8;
    s.join_later = vec![5, 6, 7];
    s.faults = vec![
        (secs(3), Fault::Join(5)),
        (secs(3), Fault::Join(6)),
        (secs(3), Fault::Join(7)),
    ];
    s
}

/// The cluster shrinks from five nodes to three under load (two leave at
/// once): their ranges move to nodes that never held them.
pub fn leave_under_load() -> Scenario {
    let mut s = base("leave_under_load");
    s.keys = 40;
    s.faults = vec![(secs(3), Fault::Leave(4)), (secs(3), Fault::Leave(3))];
    s
}

/// Three nodes join under load over a network that loses 10% of frames.
pub fn join_with_loss() -> Scenario {
    let mut s = join_under_load();
    s.name = "join_with_loss".into();
    s.net.loss = 0.1;
    s
}

/// Three nodes join under load; an existing owner crashes while their
/// ranges move and comes back 10 s later.
pub fn join_with_crash() -> Scenario {
    let mut s = join_under_load();
    s.name = "join_with_crash".into();
    s.faults.push((secs(4), Fault::Crash(2)));
    s.faults.push((secs(14), Fault::Restart(2)));
    s
}

/// Three nodes join under load and one of them crashes while it pulls its
/// ranges (it comes back 10 s later on its data and resumes): the others'
/// moves complete, and its own completes once it is back.
pub fn join_with_joiner_crash() -> Scenario {
    let mut s = join_under_load();
    s.name = "join_with_joiner_crash".into();
    s.faults.push((secs(3) + ms(600), Fault::Crash(6)));
    s.faults.push((secs(14), Fault::Restart(6)));
    s
}

/// Three nodes join while node 1 is cut off from all the others; the move
/// completes without it, and once the partition heals node 1 coordinates
/// at once, with the rings it had before: its writes must not land on
/// replicas that no longer own the key.
pub fn join_while_partitioned() -> Scenario {
    let mut s = join_under_load();
    s.name = "join_while_partitioned".into();
    s.faults = vec![
        (secs(2), partition(&[1], &[0, 2, 3, 4, 5, 6, 7])),
        (secs(3), Fault::Join(5)),
        (secs(3), Fault::Join(6)),
        (secs(3), Fault::Join(7)),
        (secs(30), Fault::Heal),
    ];
    s
}

/// Two nodes leave under load over a network that loses 10% of frames.
pub fn leave_with_loss() -> Scenario {
    let mut s = leave_under_load();
    s.name = "leave_with_loss".into();
    s.net.loss = 0.1;
    s
}

/// A node leaves under load; a node that stays crashes while the ranges
/// move and comes back 10 s later.
pub fn leave_with_crash() -> Scenario {
    let mut s = base("leave_with_crash");
    s.keys = 40;
    s.faults = vec![
        (secs(3), Fault::Leave(4)),
        (secs(4), Fault::Crash(1)),
        (secs(14), Fault::Restart(1)),
    ];
    s
}

/// A node dies for good under load and an operator removes it: its ranges
/// are synced among the other four from the replicas that remain.
pub fn remove_dead_under_load() -> Scenario {
    let mut s = base("remove_dead_under_load");
    s.keys = 40;
    s.faults = vec![
        (secs(3), Fault::Crash(2)),
        (secs(8), Fault::RemoveDead { by: 0, dead: 2 }),
    ];
    s
}

/// The same with 10% of frames lost and a survivor crashing mid-removal.
pub fn remove_dead_with_loss_and_crash() -> Scenario {
    let mut s = remove_dead_under_load();
    s.name = "remove_dead_with_loss_and_crash".into();
    s.net.loss = 0.1;
    s.faults.push((secs(9), Fault::Crash(3)));
    s.faults.push((secs(19), Fault::Restart(3)));
    s
}

/// Two nodes of five die in turn under load and an operator removes each:
/// the first one's ranges are synced among the other four, then the
/// second one's among the last three. Every range the two held together
/// is left with one replica that held it: a removal that did not sync
/// loses its writes (`mutation_remove_without_sync`).
pub fn remove_two_dead_in_turn() -> Scenario {
    let mut s = remove_dead_under_load();
    s.name = "remove_two_dead_in_turn".into();
    s.faults.push((secs(14), Fault::Crash(3)));
    s.faults
        .push((secs(19), Fault::RemoveDead { by: 0, dead: 3 }));
    s
}

/// A node is replaced under load: it dies, its directory is wiped, and a
/// new node (new id, same address) takes its place at once.
pub fn replace_under_load() -> Scenario {
    let mut s = base("replace_under_load");
    s.faults = vec![
        (
            secs(5),
            Fault::Wipe {
                node: 2,
                new_id: true,
            },
        ),
        (secs(6), Fault::Join(2)),
    ];
    s
}

/// A dead node replaced under load over a network that loses 10% of
/// frames.
pub fn replace_with_loss() -> Scenario {
    let mut s = replace_under_load();
    s.name = "replace_with_loss".into();
    s.net.loss = 0.1;
    s
}

/// A dead node replaced under load while another replica crashes in the
/// middle of the replacement's sync (it comes back 10 s later).
pub fn replace_with_crash() -> Scenario {
    let mut s = replace_under_load();
    s.name = "replace_with_crash".into();
    s.faults.push((secs(6) + ms(500), Fault::Crash(0)));
    s.faults.push((secs(16), Fault::Restart(0)));
    s
}

/// Anti-entropy and hinted handoff (issue 11): a replica down for 30
/// virtual minutes under a slow, steady load; once it is back, with no
/// client request, every key's replicas must agree within a minute, and
/// the moment it leaves `Syncing` its store is judged as a read.
pub fn replica_down_30_minutes() -> Scenario {
    let mut s = base("replica_down_30_minutes");
    s.keys = 16;
    s.ops_per_client = 120;
    s.think_time = secs(30);
    s.faults = vec![(secs(2), Fault::Crash(2)), (secs(1802), Fault::Restart(2))];
    s.converge_within = Some(secs(60));
    s.snapshot_when_caught_up = vec![2];
    s
}

/// A node down 20 s under load comes back: the moment it leaves
/// `Syncing`, its store (what it would answer at ONE) is judged as a read
/// of every key it holds, and replicas converge without reads.
pub fn revived_node_caught_up() -> Scenario {
    let mut s = base("revived_node_caught_up");
    s.keys = 16;
    s.faults = vec![(secs(2), Fault::Crash(1)), (secs(22), Fault::Restart(1))];
    s.converge_within = Some(secs(30));
    s.snapshot_when_caught_up = vec![1];
    s
}

/// A replica loses its data directory and comes back empty (same id): it
/// is repopulated by anti-entropy alone (no client request meanwhile).
pub fn wipe_repopulated() -> Scenario {
    let mut s = base("wipe_repopulated");
    s.keys = 16;
    s.faults = vec![
        (
            secs(3),
            Fault::Wipe {
                node: 2,
                new_id: false,
            },
        ),
        (secs(13), Fault::Restart(2)),
    ];
    s.converge_within = Some(secs(30));
    s.snapshot_when_caught_up = vec![2];
    s
}

/// A replica cut off for 20 s while writes go on over few keys with skewed
/// clocks: when it returns, hints replay old stamps while new writes land
/// on the same keys. A hint must never overwrite a newer version.
pub fn hints_replayed_under_load() -> Scenario {
    let mut s = base("hints_replayed_under_load");
    s.keys = 4;
    s.clock_skew = ms(300);
    s.faults = vec![
        (secs(2), partition(&[3], &[0, 1, 2, 4])),
        (secs(22), Fault::Heal),
    ];
    s.aftermath = secs(15);
    s.converge_within = Some(secs(30));
    s
}

/// Deletes under a one-minute tombstone grace, with compactions every 5 s,
/// lost frames (deletes among them), a replica down for 30 s and another
/// cut off for 90 s, longer than the grace, so that the deletes it missed
/// are past the grace everywhere else when it returns (and the hints that
/// carried them are too old to replay): no deleted key may ever come back.
pub fn no_resurrection_short_grace() -> Scenario {
    let mut s = base("no_resurrection_short_grace");
    // Many keys, each written rarely: a delete is often a key's last word
    // for a long while, so a purge of it is visible when it comes back.
    s.keys = 60;
    s.delete_percent = 40;
    s.ops_per_client = 100;
    s.think_time = secs(2);
    s.tombstone_grace = secs(60);
    s.repair.interval = secs(20);
    s.compact_every = Some(secs(5));
    s.net.loss = 0.02;
    s.faults = vec![
        (secs(5), Fault::Crash(2)),
        (secs(35), Fault::Restart(2)),
        (secs(10), partition(&[4], &[0, 1, 2, 3])),
        (secs(100), Fault::Heal),
    ];
    s.faults.sort_by_key(|(t, _)| *t);
    s.aftermath = secs(60);
    s
}

/// Half the puts carry a 500 ms TTL, under skewed clocks (±200 ms), a
/// crash, a node whose clock jumps 2 s back while down, and its restart;
/// stores compact with a short grace, so expired values are purged like
/// tombstones while the run goes on. Many keys, each written rarely, so
/// reads land well after expiries. The checker judges expired reads
/// (guarantee 6) besides everything else.
pub fn ttl_under_crash_and_skew() -> Scenario {
    let mut s = ttl_base("ttl_under_crash_and_skew");
    s.clock_skew = ms(200);
    s.tombstone_grace = secs(30);
    s.repair.interval = secs(15);
    s.compact_every = Some(secs(5));
    s.faults = vec![
        (secs(3), Fault::Crash(1)),
        (
            secs(4),
            Fault::ClockJump {
                node: 1,
                micros: -2_000_000,
            },
        ),
        (secs(8), Fault::Restart(1)),
        (secs(12), Fault::Crash(3)),
        (secs(18), Fault::Restart(3)),
    ];
    s
}

/// TTL writes without faults or skew: the control of the expiry mutation.
pub fn ttl_base(name: &str) -> Scenario {
    let mut s = base(name);
    s.keys = 12;
    s.ttl_percent = 50;
    s.ttl = ms(500);
    s
}

/// A replica down four hours under load, with small hint caps: the hints
/// held for it stay under the per-target cap, then the window stops them.
pub fn hint_cap_through_4h_outage() -> Scenario {
    let mut s = base("hint_cap_through_4h_outage");
    s.keys = 32;
    s.ops_per_client = 240;
    s.think_time = secs(120);
    // Each of the four other nodes coordinates a quarter of the writes and
    // holds its own hints for the down node: caps small enough to bind.
    s.hints.max_bytes_per_target = 2 * 1024;
    s.hints.max_bytes_total = 4 * 1024;
    s.faults = vec![
        (secs(2), Fault::Crash(3)),
        (secs(4 * 3600), Fault::Restart(3)),
    ];
    s.converge_within = Some(secs(60));
    s
}

/// Partitions, crashes and loss for 40 s; after the faults stop, with no
/// client requests, every key's replicas agree within two anti-entropy
/// rounds (a 20 s interval here).
pub fn trees_equal_within_two_rounds() -> Scenario {
    let mut s = base("trees_equal_within_two_rounds");
    s.keys = 24;
    s.repair.interval = secs(20);
    s.net.loss = 0.03;
    s.faults = vec![
        (secs(2), partition(&[0, 1], &[2, 3, 4])),
        (secs(12), Fault::Heal),
        (secs(14), Fault::Crash(3)),
        (secs(26), Fault::Restart(3)),
        (secs(28), Fault::SetLoss(0.0)),
        (secs(30), partition(&[4], &[0, 1, 2, 3])),
        (secs(40), Fault::Heal),
    ];
    s.converge_within = Some(secs(40));
    s
}

/// The swarm: a random mix of the catalog's faults drawn from `seed` over a
/// 30 s safety phase, then healing and the liveness phase. Faults that wait
/// for later issues (wiped directories, lost unsynced writes, range
/// movements) are not drawn; their own scenarios list them.
pub fn swarm(seed: u64) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5a4a_0000_0001);
    let mut s = base("swarm");
    let n = s.nodes;
    if rng.random_bool(0.3) {
        s.net.loss = rng.random_range(0.0..0.08);
        s.net.duplicate = rng.random_range(0.0..0.05);
    }
    if rng.random_bool(0.3) {
        s.net.max_latency = ms(rng.random_range(2..40));
    }
    if rng.random_bool(0.3) {
        s.clock_skew = ms(rng.random_range(0..800));
    }
    let count = rng.random_range(1..=6);
    for _ in 0..count {
        let at = ms(rng.random_range(1_000..30_000));
        let node = rng.random_range(0..n);
        let long = secs(rng.random_range(2..=25));
        match rng.random_range(0..9) {
            0 => {
                // A random split into two sides.
                let mut a = Vec::new();
                let mut b = Vec::new();
                for i in 0..n {
                    if rng.random_bool(0.5) {
                        a.push(i);
                    } else {
                        b.push(i);
                    }
                }
                s.faults.push((at, partition(&a, &b)));
                s.faults.push((at + long, Fault::Heal));
            }
            1 => {
                let to: Vec<usize> = (0..n).filter(|&i| i != node).collect();
                s.faults.push((
                    at,
                    Fault::Partition {
                        from: vec![node],
                        to,
                        one_way: true,
                    },
                ));
                s.faults.push((at + long, Fault::Heal));
            }
            2 | 3 => {
                s.faults.push((at, Fault::Crash(node)));
                s.faults.push((at + long, Fault::Restart(node)));
            }
            4 => s.faults.push((
                at,
                Fault::Pause {
                    node,
                    duration: secs(rng.random_range(1..=12)),
                },
            )),
            5 => {
                s.faults.push((
                    at,
                    Fault::StorageErrors {
                        node,
                        rate: rng.random_range(0.05..1.0),
                    },
                ));
                s.faults
                    .push((at + long, Fault::StorageErrors { node, rate: 0.0 }));
            }
            6 => s.faults.push((
                at,
                Fault::StorageStall {
                    node,
                    duration: ms(rng.random_range(200..6_000)),
                },
            )),
            7 => {
                let jump = rng.random_range(-20_000_000i64..20_000_000);
                s.faults.push((at, Fault::ClockJump { node, micros: jump }));
                s.faults.push((at + ms(100), Fault::Crash(node)));
                s.faults.push((at + secs(2), Fault::Restart(node)));
            }
            _ => s
                .faults
                .push((at, Fault::SetLoss(rng.random_range(0.0..0.2)))),
        }
    }
    s.faults.sort_by_key(|(t, _)| *t);
    s
}

/// Paged scans under faults and while a node joins (issue 14): 300 keys
/// written once each, 15% then deleted; then pages of 7 at QUORUM walk
/// the ring again and again while 2% of frames are lost, a node is cut
/// off, another crashes and restarts, and a sixth node joins (ranges
/// move under the scan). Every finished pass must hold each
/// acknowledged, not deleted key exactly once.
pub fn scan_under_faults_and_join() -> Scenario {
    let mut s = base("scan_under_faults_and_join");
    s.clients = 0;
    s.nodes = 6;
    s.join_later = vec![5];
    s.net.loss = 0.02;
    s.scan = Some(super::ScanPlan {
        keys: 300,
        delete_percent: 15,
        page: 7,
    });
    s.faults = vec![
        (secs(1), partition(&[0], &[1, 2, 3, 4, 5])),
        (secs(3), Fault::Heal),
        (secs(4), Fault::Crash(2)),
        (secs(5), Fault::Join(5)),
        (secs(9), Fault::Restart(2)),
    ];
    s
}

/// Racks and datacenters: 2 datacenters x 3 racks x 2 nodes (nodes 0-5
/// in `dc1`, 6-11 in `dc2`; racks `r1`..`r3`, two nodes each), the
/// default keyspace at `dc1:3,dc2:3`, every client pinned to one
/// datacenter, at `level` for writes and `LOCAL_QUORUM` for reads.
pub fn two_datacenters(name: &str, write: cassio_core::Consistency) -> Scenario {
    let mut s = base(name);
    s.nodes = 12;
    s.rf = 6;
    s.topology = (0..12)
        .map(|i| {
            let dc = if i < 6 { "dc1" } else { "dc2" };
            (dc.to_string(), format!("r{}", (i % 6) / 2 + 1))
        })
        .collect();
    s.datacenters = [("dc1".to_string(), 3), ("dc2".to_string(), 3)].into();
    s.pin_clients_to_datacenter = true;
    s.clients = 4;
    s.keys = 12;
    s.write_cl = write;
    s.read_cl = cassio_core::Consistency::LocalQuorum;
    // Twelve fresh nodes take their tokens `Syncing` (fewer owners than
    // the 6 replicas at first) until a first anti-entropy round: let it
    // finish before the load (and the loss) starts.
    s.warmup = secs(25);
    s
}

/// [`two_datacenters`] at `LOCAL_QUORUM` writes, 10% loss, and a crash in
/// each datacenter (one back 10 s later, one 14 s later): reads are
/// judged against the writes of their own datacenter.
pub fn dc_local_quorum_with_crash_and_loss() -> Scenario {
    let mut s = two_datacenters(
        "dc_local_quorum_with_crash_and_loss",
        cassio_core::Consistency::LocalQuorum,
    );
    s.net.loss = 0.1;
    s.faults = vec![
        (secs(3), Fault::Crash(1)),
        (secs(6), Fault::Crash(8)),
        (secs(13), Fault::Restart(1)),
        (secs(20), Fault::Restart(8)),
    ];
    s
}

/// [`two_datacenters`] at `EACH_QUORUM` writes (a quorum in both
/// datacenters), 10% loss and the same crashes: every `LOCAL_QUORUM` read,
/// in either datacenter, is judged against every write.
pub fn dc_each_quorum_with_crash_and_loss() -> Scenario {
    let mut s = dc_local_quorum_with_crash_and_loss();
    s.name = "dc_each_quorum_with_crash_and_loss".into();
    s.write_cl = cassio_core::Consistency::EachQuorum;
    s
}

/// [`two_datacenters`] at `LOCAL_QUORUM`, and two nodes join `dc1` (racks
/// `r1` and `r2`) under load: `dc1`'s ranges move, `dc2`'s do not.
pub fn dc_join_under_load() -> Scenario {
    let mut s = two_datacenters("dc_join_under_load", cassio_core::Consistency::LocalQuorum);
    s.nodes = 14;
    s.keys = 30;
    s.topology.push(("dc1".into(), "r1".into()));
    s.topology.push(("dc1".into(), "r2".into()));
    s.join_later = vec![12, 13];
    s.faults = vec![(secs(3), Fault::Join(12)), (secs(3), Fault::Join(13))];
    s
}

/// Every named scenario of the catalog that runs on `MemStore`s (the
/// store-model and swarm scenarios are built where they run).
pub fn catalog() -> Vec<Scenario> {
    vec![
        partition_minority(),
        partition_majority(),
        partition_one_way(),
        partition_flapping(),
        partition_bridge(),
        crash_majority(),
        crash_all_restart_in_waves(),
        crash_each_in_turn("crash_each_in_turn"),
        wipe_same_id(),
        wipe_after_missed_writes(),
        wipe_new_id(),
        seedless_first_node_restart(),
        clock_jumps(),
        clock_one_node_hour_ahead(),
        clock_skew_with_restart(),
        storage_errors(),
        storage_stalls(),
        process_pauses(),
        config_mismatch(),
        join_under_load(),
        leave_under_load(),
        replace_under_load(),
        replica_down_30_minutes(),
        revived_node_caught_up(),
        wipe_repopulated(),
        hints_replayed_under_load(),
        no_resurrection_short_grace(),
        hint_cap_through_4h_outage(),
        trees_equal_within_two_rounds(),
        ttl_under_crash_and_skew(),
        scan_under_faults_and_join(),
        cells_concurrent_columns(),
        cells_join_under_load(),
        dc_local_quorum_with_crash_and_loss(),
        dc_each_quorum_with_crash_and_loss(),
        dc_join_under_load(),
    ]
}

/// Rows of columns (issue 14): every client writes, deletes and reads the
/// columns of one row, so writers of different columns of one row are
/// concurrent all the time, under a minority partition and then a crash
/// of a replica. Each (row, column) is judged as a register: a per-row
/// last write wins loses one of two concurrent column writes, which the
/// checker sees as a stale read (`mutation_row_lww`).
pub fn cells_concurrent_columns() -> Scenario {
    let mut s = base("cells_concurrent_columns");
    s.cells = true;
    s.clients = 4;
    s.keys = 4;
    s.faults = vec![
        (secs(2), partition(&[0, 1], &[2, 3, 4])),
        (secs(14), Fault::Heal),
        (secs(16), Fault::Crash(3)),
        (secs(26), Fault::Restart(3)),
    ];
    s
}

/// Rows of cells while the ring grows: three nodes join five under the
/// cells workload (40 columns over 10 rows), so rows' ranges move by the
/// same sync as plain keys; no cell may be lost or resurrected.
pub fn cells_join_under_load() -> Scenario {
    let mut s = base("cells_join_under_load");
    s.cells = true;
    s.cell_rows = 10;
    s.clients = 4;
    s.keys = 40;
    s.nodes = 8;
    s.join_later = vec![5, 6, 7];
    s.faults = vec![
        (secs(3), Fault::Join(5)),
        (secs(3), Fault::Join(6)),
        (secs(3), Fault::Join(7)),
    ];
    s
}

/// The catalog scenario called `name`, or the swarm's draw for `seed` when
/// `name` is `swarm`.
pub fn by_name(name: &str, seed: u64) -> Option<Scenario> {
    if name == "swarm" {
        return Some(swarm(seed));
    }
    catalog().into_iter().find(|s| s.name == name)
}

fn create(name: &str, rf: usize) -> cassio_core::schema::SchemaChange {
    cassio_core::schema::SchemaChange::Create {
        name: name.into(),
        replication_factor: rf,
        default_consistency: cassio_core::Consistency::Quorum,
    }
}

/// Layouts minted at once while the ring moves: three nodes join (the
/// claimant, node 0 with the lowest id, mints their ring changes) while
/// two other nodes ask for keyspaces at the same instant, over a network
/// that loses 10% of frames; the claimant crashes in the middle of the
/// move and comes back 7 s later, so another node claims meanwhile. One
/// content per version, every acknowledged change in its version, one
/// placement per version, and the move completes once faults stop.
pub fn layout_mints_race() -> Scenario {
    let mut s = join_under_load();
    s.name = "layout_mints_race".into();
    s.net.loss = 0.1;
    s.faults.extend([
        (
            secs(3),
            Fault::SchemaChange {
                by: 1,
                change: create("orders", 3),
            },
        ),
        (
            secs(3),
            Fault::SchemaChange {
                by: 3,
                change: create("users", 3),
            },
        ),
        (secs(3) + Duration::from_millis(800), Fault::Crash(0)),
        (secs(10), Fault::Restart(0)),
    ]);
    s
}

/// Two nodes mint schema versions at once, twice, under load: each asks
/// for its own keyspace at the same instant, so both propose the same
/// version. Exactly one content may be used per version, and both changes
/// must end up in the schema.
pub fn concurrent_schema_changes() -> Scenario {
    let mut s = base("concurrent_schema_changes");
    s.faults = vec![
        (
            secs(2),
            Fault::SchemaChange {
                by: 1,
                change: create("orders", 3),
            },
        ),
        (
            secs(2),
            Fault::SchemaChange {
                by: 3,
                change: create("users", 3),
            },
        ),
        (
            secs(6),
            Fault::SchemaChange {
                by: 0,
                change: cassio_core::schema::SchemaChange::Alter {
                    name: "orders".into(),
                    replication_factor: Some(4),
                    default_consistency: None,
                },
            },
        ),
        (
            secs(6),
            Fault::SchemaChange {
                by: 4,
                change: create("events", 2),
            },
        ),
    ];
    s
}

/// The same with 10% of frames lost and a minter crashing right after it
/// proposed (it comes back 10 s later).
pub fn concurrent_schema_changes_with_loss_and_crash() -> Scenario {
    let mut s = concurrent_schema_changes();
    s.name = "concurrent_schema_changes_with_loss_and_crash".into();
    s.net.loss = 0.1;
    s.faults
        .push((secs(2) + Duration::from_millis(3), Fault::Crash(3)));
    s.faults.push((secs(12), Fault::Restart(3)));
    s
}

fn alter_rf(name: &str, rf: usize) -> cassio_core::schema::SchemaChange {
    cassio_core::schema::SchemaChange::Alter {
        name: name.into(),
        replication_factor: Some(rf),
        default_consistency: None,
    }
}

/// The replication factor of the keyspace under load steps 3 -> 4 -> 5 ->
/// 4 on six nodes, one operator asking each step after the previous one
/// was answered, and retrying a step refused until the previous one's
/// repair completed (anti-entropy every 3 s). Each single step keeps old
/// and new quorums overlapping; the wait for repair keeps two steps from
/// adding up to quorums that miss each other (2 of 3 written, 3 of 5
/// read).
pub fn rf_change_under_load() -> Scenario {
    let mut s = base("rf_change_under_load");
    s.nodes = 6;
    s.ops_per_client = 30;
    s.repair.interval = secs(3);
    s.schema_changes_in_order = true;
    s.faults = vec![
        (
            secs(4),
            Fault::SchemaChange {
                by: 0,
                change: alter_rf(cassio_core::DEFAULT_KEYSPACE, 4),
            },
        ),
        (
            secs(5),
            Fault::SchemaChange {
                by: 2,
                change: alter_rf(cassio_core::DEFAULT_KEYSPACE, 5),
            },
        ),
        (
            secs(6),
            Fault::SchemaChange {
                by: 4,
                change: alter_rf(cassio_core::DEFAULT_KEYSPACE, 4),
            },
        ),
    ];
    s
}

/// The same with a replica crashing while the second step waits for its
/// repair (it comes back 12 s later: the step waits for it).
pub fn rf_change_with_crash() -> Scenario {
    let mut s = rf_change_under_load();
    s.name = "rf_change_with_crash".into();
    s.faults.push((secs(5), Fault::Crash(5)));
    s.faults.push((secs(17), Fault::Restart(5)));
    s
}

/// The same while two nodes are cut off from the other four (4 s to
/// 16 s): the first step goes through the majority side, the second must
/// wait until the minority is back and repaired. Taken at once, it would
/// let the majority side read at QUORUM of five from three nodes that all
/// miss a write the cut-off pair acknowledged.
pub fn rf_change_with_partition() -> Scenario {
    let mut s = rf_change_under_load();
    s.name = "rf_change_with_partition".into();
    // Enough keys that some have both cut-off nodes among their three
    // replicas, and clients on both sides.
    s.keys = 30;
    s.clients = 6;
    s.think_time = ms(400);
    s.ops_per_client = 70;
    for (_, f) in &mut s.faults {
        if let Fault::SchemaChange { by, .. } = f {
            *by = 2;
        }
    }
    s.faults.push((
        secs(4) - Duration::from_millis(500),
        partition(&[0, 1], &[2, 3, 4, 5]),
    ));
    s.faults.push((secs(16), Fault::Heal));
    s
}

/// The same with 10% of frames lost throughout.
pub fn rf_change_with_loss() -> Scenario {
    let mut s = rf_change_under_load();
    s.name = "rf_change_with_loss".into();
    s.net.loss = 0.1;
    s
}
