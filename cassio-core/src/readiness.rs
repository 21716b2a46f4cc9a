//! Readiness: whether this node's view of the cluster has settled enough
//! for it to coordinate client requests.
//!
//! A node that joined through seeds coordinates only once the cluster has
//! answered it (it knows the current and next rings, `Joining` or after)
//! and its ring has not changed for three gossip rounds (as Cassandra
//! waits for gossip to settle): a partial view would place keys on the
//! wrong replicas and acknowledge writes that reads elsewhere miss.
//!
//! A node that restarts with a persisted view also waits until it has
//! heard from a majority of that view (itself included): the first nodes
//! of a whole-cluster restart must not acknowledge writes on a ring where
//! most replicas are still down and unknown-state. And it waits until its
//! wall clock has passed the persisted clock high-water mark, so its first
//! writes are not stamped far ahead of real time.

use crate::membership::{Membership, NodeStatus};
use crate::time::Instant;
use crate::types::NodeId;

/// What a node waits for before it coordinates, and whether it has.
#[derive(Debug)]
pub(crate) struct Readiness {
    /// True once the node's view of the cluster has settled.
    ready: bool,
    /// Whether this node joins through seeds (it must wait for its view).
    joins_through_seeds: bool,
    /// The ring epoch last seen, and since when it has not changed.
    view_stable_since: (u64, Instant),
    /// After a restart: the persisted view's members, a majority of which
    /// (this node included) must be heard from.
    restart_quorum: Option<Vec<NodeId>>,
    /// After a restart: the wall clock must pass the persisted high-water
    /// mark, so new writes are stamped near real time.
    clock_floor: u64,
}

impl Readiness {
    /// A node not yet ready, started at `now`, that waits for its view if
    /// it `joins_through_seeds`, for a majority of `restart_quorum` if any,
    /// and for its wall clock to reach `clock_floor`.
    pub fn new(
        joins_through_seeds: bool,
        restart_quorum: Option<Vec<NodeId>>,
        clock_floor: u64,
        now: Instant,
    ) -> Self {
        Readiness {
            ready: false,
            joins_through_seeds,
            view_stable_since: (0, now),
            restart_quorum,
            clock_floor,
        }
    }

    /// Whether the node coordinates client requests.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The wall time before which the node does not coordinate (0: none).
    pub fn clock_floor(&self) -> u64 {
        self.clock_floor
    }

    /// Becomes ready if everything waited for has happened by `now`, when
    /// the wall clock reads `wall`; once ready, the node stays ready.
    pub fn settle(&mut self, membership: &Membership, now: Instant, wall: u64) {
        if self.ready {
            return;
        }
        let epoch = membership.ring_epoch();
        if self.view_stable_since.0 != epoch {
            self.view_stable_since = (epoch, now);
            if self.joins_through_seeds {
                return;
            }
        }
        if self.joins_through_seeds && self.restart_quorum.is_none() {
            let settle_for = membership.config().interval * 3;
            // A node still `Joining` knows both rings once the cluster has
            // answered: it coordinates, and syncs the ranges it gains.
            let knows_ring = match membership.status() {
                NodeStatus::Normal | NodeStatus::Syncing => true,
                NodeStatus::Joining => membership.answered(),
                NodeStatus::Leaving | NodeStatus::Left => false,
            };
            if !knows_ring || now.saturating_duration_since(self.view_stable_since.1) < settle_for {
                return;
            }
        }
        if let Some(view) = &self.restart_quorum {
            let heard = view.iter().filter(|&&id| membership.is_alive(id)).count();
            // This node counts as heard; a majority of view + 1.
            if (heard + 1) * 2 <= view.len() + 1 {
                return;
            }
        }
        if wall < self.clock_floor {
            return;
        }
        self.ready = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::AppState;

    fn membership(now: Instant) -> Membership {
        let app = AppState {
            status: NodeStatus::Normal,
            addr: "127.0.0.1:7000".parse().expect("addr"),
            tokens: Vec::new(),
            keyspaces: Vec::new(),
            load: 0,
            repaired_through: 0,
            repaired_schema: 0,
            hinting: Vec::new(),
            ring_acked: 0,
            ring_synced: 0,
            removing: Vec::new(),
            removed: Vec::new(),
            datacenter: crate::topology::default_datacenter(),
            rack: crate::topology::default_rack(),
            client_addr: None,
        };
        Membership::new(NodeId(1), 1, app, &[], Default::default(), now)
    }

    #[test]
    fn a_lone_node_is_ready_at_once_and_stays_so() {
        let now = Instant::from_micros(0);
        let m = membership(now);
        let mut r = Readiness::new(false, None, 0, now);
        assert!(!r.is_ready());
        r.settle(&m, now, 0);
        assert!(r.is_ready());
        r.settle(&m, now, 0);
        assert!(r.is_ready());
    }

    #[test]
    fn a_restarted_node_waits_for_its_clock_floor() {
        let now = Instant::from_micros(0);
        let m = membership(now);
        let mut r = Readiness::new(false, None, 5_000, now);
        r.settle(&m, now, 4_999);
        assert!(!r.is_ready());
        r.settle(&m, now, 5_000);
        assert!(r.is_ready());
    }

    #[test]
    fn a_restarted_node_waits_for_a_majority_of_its_view() {
        let now = Instant::from_micros(0);
        let m = membership(now);
        // Peers 2 and 3 unheard: this node alone is not a majority of 3.
        let mut r = Readiness::new(false, Some(vec![NodeId(2), NodeId(3)]), 0, now);
        r.settle(&m, now, 0);
        assert!(!r.is_ready());
        // A view of just this node and one peer: this node alone is not
        // a majority either.
        let mut r = Readiness::new(false, Some(vec![NodeId(2)]), 0, now);
        r.settle(&m, now, 0);
        assert!(!r.is_ready());
    }
}
