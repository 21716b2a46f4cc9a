//! Membership experiments on the simulator: how fast a cluster forms, how
//! fast a crash is noticed, how often a live node is wrongly convicted, how
//! fast a restart or a healed partition is recognised. Each function runs
//! one seed and returns a measurement; tests and the report sweep seeds.

use super::{Fault, Scenario, SimCluster, StoreFactory};
use cassio_core::membership::MembershipEvent;
use cassio_core::{Instant, NodeId, Store};
use std::sync::Arc;
use std::time::Duration;

fn mem_factory() -> impl Fn(NodeId) -> Arc<dyn Store> {
    |_| Arc::new(crate::MemStore::new()) as Arc<dyn Store>
}

/// A membership-only scenario: `nodes` nodes, `seeds` seeds, no clients.
pub fn membership_scenario(nodes: usize, seeds: usize, loss: f64) -> Scenario {
    let mut s = Scenario::new(format!("membership-{nodes}"));
    s.nodes = nodes;
    s.seeds = seeds;
    s.clients = 0;
    s.net.loss = loss;
    s
}

fn round(s: &Scenario) -> Duration {
    s.gossip.interval
}

/// Whether node `i` is running and sees every node in `ids` as a live member.
fn sees_all_up(c: &SimCluster<'_>, i: usize, ids: &[NodeId]) -> bool {
    c.node(i).is_some_and(|n| {
        let m = n.membership();
        ids.iter().all(|&id| m.is_member(id) && m.is_alive(id))
    })
}

fn all_ids(c: &SimCluster<'_>) -> Vec<NodeId> {
    (0..c.len()).map(|i| NodeId(i as u64 + 1)).collect()
}

/// Rounds until every node sees every node as up, starting all at once
/// (`None` if not within `max_rounds`).
pub fn rounds_to_converge(s: &Scenario, seed: u64, max_rounds: u32) -> Option<u32> {
    let factory = mem_factory();
    let mut c = SimCluster::new(s, seed, &factory);
    c.start_all();
    let ids = all_ids(&c);
    for r in 1..=max_rounds {
        c.run_until(Instant::ZERO + round(s) * r);
        if (0..c.len()).all(|i| sees_all_up(&c, i, &ids)) {
            return Some(r);
        }
    }
    None
}

fn converged_cluster<'a>(s: &'a Scenario, seed: u64, factory: StoreFactory<'a>) -> SimCluster<'a> {
    let mut c = SimCluster::new(s, seed, factory);
    c.start_all();
    // Two minutes: the failure detectors' windows hold steady-state
    // heartbeat intervals, not just the burst of joining.
    c.run_until(Instant::ZERO + Duration::from_secs(120));
    c
}

/// Seconds from crashing one node until every live node has convicted it
/// (`None` if not within `limit`).
pub fn seconds_to_convict(s: &Scenario, seed: u64, limit: Duration) -> Option<f64> {
    let factory = mem_factory();
    let mut c = converged_cluster(s, seed, &factory);
    let victim = c.len() / 2;
    let victim_id = NodeId(victim as u64 + 1);
    let crashed_at = c.now();
    c.inject(Fault::Crash(victim));
    let step = Duration::from_millis(100);
    let mut t = crashed_at;
    while t.saturating_duration_since(crashed_at) <= limit {
        t = t + step;
        c.run_until(t);
        let all = (0..c.len()).filter(|&i| i != victim).all(|i| {
            c.node(i)
                .is_some_and(|n| !n.membership().is_alive(victim_id))
        });
        if all {
            return Some(t.saturating_duration_since(crashed_at).as_secs_f64());
        }
    }
    None
}

/// False convictions (a live node believed down by another) over
/// `duration` of virtual time after the cluster formed.
pub fn false_convictions(s: &Scenario, seed: u64, duration: Duration) -> usize {
    let factory = mem_factory();
    let mut c = converged_cluster(s, seed, &factory);
    let from = c.now();
    c.run_until(from + duration);
    c.membership_log()
        .iter()
        .filter(|(t, _, e)| *t > from && matches!(e, MembershipEvent::Down(_)))
        .count()
}

/// Rounds from restarting a crashed (and convicted) node until every node
/// sees it up again with its new generation.
pub fn rounds_to_recognise_restart(s: &Scenario, seed: u64, max_rounds: u32) -> Option<u32> {
    let factory = mem_factory();
    let mut c = converged_cluster(s, seed, &factory);
    let victim = c.len() - 1;
    let victim_id = NodeId(victim as u64 + 1);
    let old_gen = c.node(victim).map(|n| n.membership().generation());
    c.inject(Fault::Crash(victim));
    let t = c.now() + Duration::from_secs(30);
    c.run_until(t);
    c.inject(Fault::Restart(victim));
    let new_gen = c.node(victim).map(|n| n.membership().generation());
    assert_ne!(old_gen, new_gen, "a restart must change the generation");
    let start = c.now();
    for r in 1..=max_rounds {
        c.run_until(start + round(s) * r);
        let ok = (0..c.len()).filter(|&i| i != victim).all(|i| {
            c.node(i).is_some_and(|n| {
                let m = n.membership();
                m.is_alive(victim_id) && m.state_of(victim_id).map(|(g, _)| g) == new_gen
            })
        });
        if ok {
            return Some(r);
        }
    }
    None
}

/// The outcome of a partition experiment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOutcome {
    /// Every node convicted every node across the cut.
    pub both_sides_convicted: bool,
    /// Rounds after healing until all saw all up (`None`: not within the limit).
    pub rounds_to_heal: Option<u32>,
    /// Members each node knows at the end (all must know all).
    pub members_known: Vec<usize>,
}

/// Cuts `minority` nodes off for `duration`, heals, and measures.
pub fn partition_and_heal(
    s: &Scenario,
    seed: u64,
    minority: usize,
    duration: Duration,
    max_rounds: u32,
) -> PartitionOutcome {
    let factory = mem_factory();
    let mut c = converged_cluster(s, seed, &factory);
    let n = c.len();
    let small: Vec<usize> = (n - minority..n).collect();
    let big: Vec<usize> = (0..n - minority).collect();
    c.inject(Fault::Partition {
        from: small.clone(),
        to: big.clone(),
        one_way: false,
    });
    let t = c.now() + duration;
    c.run_until(t);
    let id = |i: usize| NodeId(i as u64 + 1);
    let convicted = |c: &SimCluster<'_>, a: &[usize], b: &[usize]| {
        a.iter().all(|&i| {
            c.node(i)
                .is_some_and(|node| b.iter().all(|&j| !node.membership().is_alive(id(j))))
        })
    };
    let both_sides_convicted = convicted(&c, &small, &big) && convicted(&c, &big, &small);
    c.inject(Fault::Heal);
    let ids = all_ids(&c);
    let start = c.now();
    let mut rounds_to_heal = None;
    for r in 1..=max_rounds {
        c.run_until(start + round(s) * r);
        if (0..n).all(|i| sees_all_up(&c, i, &ids)) {
            rounds_to_heal = Some(r);
            break;
        }
    }
    let members_known = (0..n)
        .map(|i| {
            c.node(i)
                .map_or(0, |node| node.membership().members().len())
        })
        .collect();
    PartitionOutcome {
        both_sides_convicted,
        rounds_to_heal,
        members_known,
    }
}

/// Median and maximum of some measurements (`None` entries count as the worst).
pub fn median_and_max(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let median = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    let max = v.last().copied().unwrap_or(f64::NAN);
    (median, max)
}
