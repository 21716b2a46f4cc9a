//! Ring transitions: moving ranges off a leaving node without a read
//! missing a write acknowledged before.
//!
//! While a node is `Leaving`, every node routes writes to the replicas of
//! both the current ring and the next one (see [`crate::layout`]), and
//! anti-entropy syncs every pair that shares a range on either ring. A
//! transition is named by a hash of the two rings, the same on every node
//! whose view agrees, and each node gossips two trackers about it:
//!
//! 1. **acked**: the node routes writes by this transition, and every write
//!    it coordinated before (to the current ring only) has passed its
//!    deadline. Once every live owner has acked, no write that skips the
//!    next ring can still land.
//! 2. **synced**: a full anti-entropy round that started after that moment
//!    has synced with every live peer. Everything acknowledged before the
//!    transition is then on this node, for every range it gains.
//!
//! The leaving node announces `Left`, and leaves the rings, only once every
//! live owner on the next ring has synced. Reads use the current ring until
//! then, so none misses a write acknowledged before it began.

use crate::membership::NodeStatus;
use crate::time::Instant;
use crate::types::NodeId;
use std::time::Duration;

/// Why a node refuses to leave.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaveError {
    /// Leaving would leave fewer token owners than a keyspace's
    /// replication factor, so some range would lose a copy for good.
    #[error("leaving would leave {remaining} node(s) owning tokens, fewer than replication factor {rf}: add a node first or lower the replication factor")]
    TooFewNodes {
        /// Token owners that would remain.
        remaining: usize,
        /// The largest replication factor of a keyspace.
        rf: usize,
    },
    /// This node does not own tokens (it is joining, or left already).
    #[error("this node is {0:?}: only a node that owns tokens can leave")]
    NotAnOwner(NodeStatus),
}

/// Why a node refuses to take a member off the ring.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    /// No such member.
    #[error("node {0} is not a member of this cluster (as this node sees it)")]
    Unknown(crate::types::NodeId),
    /// The member is believed alive: a live node leaves by itself.
    #[error("node {0} is alive: decommission it (`cassio decommission`, or stop it with --leave-on-exit), or stop it and remove it once it is down")]
    Alive(crate::types::NodeId),
    /// This node itself.
    #[error("a node cannot remove itself: decommission it (`cassio decommission`)")]
    Itself,
    /// Removing it would leave fewer token owners than a keyspace's
    /// replication factor.
    #[error("removing it would leave {remaining} node(s) owning tokens, fewer than replication factor {rf}: add a node first")]
    TooFewNodes {
        /// Token owners that would remain.
        remaining: usize,
        /// The largest replication factor of a keyspace.
        rf: usize,
    },
}

/// What the transition machine asks of the node after a tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TransitionStep {
    /// Start an anti-entropy round now: the sync of a transition begins.
    pub request_round: bool,
    /// Every live owner on the next ring has synced the transition: a
    /// leaving node may go.
    pub all_synced: bool,
}

/// This node's side of the ring transition under way.
#[derive(Debug, Default)]
pub(crate) struct Transition {
    /// The transition this node routes by, and when it first saw it.
    seen: (u64, Option<Instant>),
    acked: u64,
    synced: u64,
    /// Wall time at which every live owner had acked `seen`: a round that
    /// starts after it syncs every moved range.
    barrier_wall: Option<u64>,
}

impl Transition {
    /// The trackers this node gossips: `(acked, synced)`.
    pub fn trackers(&self) -> (u64, u64) {
        (self.acked, self.synced)
    }

    /// Advances the trackers for transition `id` (0: none) at `now` (wall
    /// `wall`). `owners` are the live token owners on either ring with
    /// their status and gossiped trackers; `synced_since(w)` tells whether
    /// a full anti-entropy round that started at or after wall time `w`
    /// has synced with every live peer.
    pub fn tick(
        &mut self,
        now: Instant,
        wall: u64,
        id: u64,
        request_timeout: Duration,
        owners: &[(NodeId, NodeStatus, u64, u64)],
        synced_since: &dyn Fn(u64) -> bool,
    ) -> TransitionStep {
        let mut step = TransitionStep::default();
        if self.seen.0 != id || self.seen.1.is_none() {
            self.seen = (id, Some(now));
            self.barrier_wall = None;
        }
        if id == 0 {
            self.acked = 0;
            self.synced = 0;
            return step;
        }
        let since = self.seen.1.unwrap_or(now);
        // A write this node coordinated before it saw the transition is
        // answered or failed by its deadline.
        if self.acked != id && now.saturating_duration_since(since) >= request_timeout {
            self.acked = id;
        }
        if self.acked != id {
            return step;
        }
        // Owners are listed with their own trackers; this node's entry may
        // be stale by one tick, so its own are taken from here.
        let all_acked = owners.iter().all(|&(_, _, acked, _)| acked == id);
        if self.barrier_wall.is_none() && all_acked {
            self.barrier_wall = Some(wall);
            step.request_round = true;
        }
        if self.synced != id {
            if let Some(b) = self.barrier_wall {
                if synced_since(b) {
                    self.synced = id;
                }
            }
        }
        step.all_synced = owners
            .iter()
            .filter(|(_, status, ..)| status.owns_tokens_next())
            .all(|&(_, _, _, synced)| synced == id);
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: u64 = 42;
    const TIMEOUT: Duration = Duration::from_secs(2);

    fn at(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    #[test]
    fn acks_after_a_request_timeout_then_syncs_after_every_owner_acked() {
        let mut t = Transition::default();
        let never = |_: u64| false;
        let owners = |a: u64, b: u64| {
            vec![
                (NodeId(1), NodeStatus::Normal, a, 0),
                (NodeId(2), NodeStatus::Leaving, b, 0),
            ]
        };
        let s = t.tick(at(0), 0, ID, TIMEOUT, &owners(0, 0), &never);
        assert_eq!(
            t.trackers(),
            (0, 0),
            "writes of the old ring may be in flight"
        );
        assert!(!s.request_round);
        t.tick(at(2), 2, ID, TIMEOUT, &owners(0, 0), &never);
        assert_eq!(t.trackers(), (ID, 0));
        // Node 2 has not acked: no write-barrier yet, no round.
        let s = t.tick(at(3), 3, ID, TIMEOUT, &owners(ID, 0), &never);
        assert!(!s.request_round);
        let s = t.tick(at(4), 4, ID, TIMEOUT, &owners(ID, ID), &never);
        assert!(s.request_round, "every owner acked: sync now");
        // A round that started before the barrier does not count.
        let s = t.tick(at(5), 5, ID, TIMEOUT, &owners(ID, ID), &|w| w < 4);
        assert_eq!(t.trackers(), (ID, 0));
        assert!(!s.request_round, "asked once");
        t.tick(at(6), 6, ID, TIMEOUT, &owners(ID, ID), &|w| w <= 4);
        assert_eq!(t.trackers(), (ID, ID));
    }

    #[test]
    fn a_leaving_node_may_go_only_once_every_next_owner_synced() {
        let mut t = Transition::default();
        t.tick(at(0), 0, ID, TIMEOUT, &[], &|_| true);
        let owners = |synced_1: u64| {
            vec![
                (NodeId(1), NodeStatus::Normal, ID, synced_1),
                (NodeId(2), NodeStatus::Syncing, ID, ID),
                // The leaving node itself need not sync: the others pull
                // from it.
                (NodeId(3), NodeStatus::Leaving, ID, 0),
            ]
        };
        let s = t.tick(at(3), 3, ID, TIMEOUT, &owners(0), &|_| true);
        assert!(!s.all_synced);
        let s = t.tick(at(4), 4, ID, TIMEOUT, &owners(ID), &|_| true);
        assert!(s.all_synced);
    }

    #[test]
    fn a_new_transition_starts_over() {
        let mut t = Transition::default();
        let owners = |id: u64| vec![(NodeId(1), NodeStatus::Normal, id, id)];
        t.tick(at(0), 0, ID, TIMEOUT, &owners(ID), &|_| true);
        t.tick(at(2), 2, ID, TIMEOUT, &owners(ID), &|_| true);
        t.tick(at(3), 3, ID, TIMEOUT, &owners(ID), &|_| true);
        assert_eq!(t.trackers(), (ID, ID));
        let s = t.tick(at(4), 4, 7, TIMEOUT, &owners(ID), &|_| true);
        assert_eq!(t.trackers(), (ID, ID), "not acked before a timeout");
        assert!(!s.all_synced, "trackers of another transition do not count");
        t.tick(at(9), 9, 0, TIMEOUT, &owners(0), &|_| true);
        assert_eq!(t.trackers(), (0, 0));
    }
}
