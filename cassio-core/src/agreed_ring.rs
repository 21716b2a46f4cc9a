//! The ring as the cluster agreed it: which nodes own which tokens now and
//! on the ring the cluster moves to, with each node's location, held in the
//! versioned schema ([`crate::schema::Schema::ring`]).
//!
//! Nodes ask to join, leave or remove a dead member through gossip (their
//! status and removal requests); the claimant (the lowest live `Normal`
//! token owner) turns its gossip view of those requests into a new ring and
//! proposes it as the next schema version, chosen by the schema's voters
//! by Paxos (see [`crate::schema_agreement`]). Keys are placed by the ring
//! of the newest version a node knows, never by its own gossip view, so two
//! nodes that know the same version place every key alike, and two rings
//! minted at once cannot both be used: at most one is chosen per version.
//!
//! The only rings taken from gossip are those of a node that knows no
//! chosen version yet (version 0, its own seed): a brand-new cluster
//! before its first version is founded, where every node owns its own
//! tokens and no data has moved.

use crate::membership::Membership;
use crate::topology::{Location, Topology};
use crate::types::{NodeId, Token};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One node's place on the agreed ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingMember {
    /// Its tokens.
    pub tokens: Vec<Token>,
    /// Its datacenter and rack.
    pub location: Location,
    /// Owns its tokens on the current ring (reads and writes).
    pub now: bool,
    /// Owns its tokens on the ring the cluster moves to (writes; reads once
    /// the move completes).
    pub next: bool,
}

/// The ring of one schema version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreedRing {
    /// Every node on the current or the next ring, by id.
    pub members: BTreeMap<NodeId, RingMember>,
}

impl AgreedRing {
    /// The ring `membership` sees through gossip: what the claimant
    /// proposes.
    pub fn from_gossip(membership: &Membership) -> AgreedRing {
        let topology = membership.topology();
        let mut members: BTreeMap<NodeId, RingMember> = BTreeMap::new();
        let location = |id: NodeId| topology.get(&id).cloned().unwrap_or_default();
        for (id, tokens) in membership.token_owners() {
            members.insert(
                id,
                RingMember {
                    tokens,
                    location: location(id),
                    now: true,
                    next: false,
                },
            );
        }
        for (id, tokens) in membership.token_owners_next() {
            members
                .entry(id)
                .or_insert_with(|| RingMember {
                    tokens,
                    location: location(id),
                    now: false,
                    next: false,
                })
                .next = true;
        }
        AgreedRing { members }
    }

    /// The current ring's owners and their tokens, in id order.
    pub fn owners_now(&self) -> Vec<(NodeId, Vec<Token>)> {
        self.owners(|m| m.now)
    }

    /// The next ring's owners and their tokens, in id order.
    pub fn owners_next(&self) -> Vec<(NodeId, Vec<Token>)> {
        self.owners(|m| m.next)
    }

    fn owners(&self, on: impl Fn(&RingMember) -> bool) -> Vec<(NodeId, Vec<Token>)> {
        self.members
            .iter()
            .filter(|(_, m)| on(m))
            .map(|(&id, m)| (id, m.tokens.clone()))
            .collect()
    }

    /// The location of every node on either ring.
    pub fn topology(&self) -> Topology {
        self.members
            .iter()
            .map(|(&id, m)| (id, m.location.clone()))
            .collect()
    }

    /// Whether the cluster is moving from one ring to another.
    pub fn is_moving(&self) -> bool {
        self.members.values().any(|m| m.now != m.next)
    }

    /// `(now, next)`: whether `id` owns its tokens on the current and on
    /// the next ring.
    pub fn owns(&self, id: NodeId) -> (bool, bool) {
        self.members
            .get(&id)
            .map_or((false, false), |m| (m.now, m.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(now: bool, next: bool) -> RingMember {
        RingMember {
            tokens: vec![Token(1)],
            location: Location::default(),
            now,
            next,
        }
    }

    #[test]
    fn owners_follow_each_ring_and_moving_means_they_differ() {
        let mut ring = AgreedRing::default();
        ring.members.insert(NodeId(1), member(true, true));
        ring.members.insert(NodeId(2), member(true, false));
        ring.members.insert(NodeId(3), member(false, true));
        let ids =
            |v: Vec<(NodeId, Vec<Token>)>| v.into_iter().map(|(id, _)| id.0).collect::<Vec<_>>();
        assert_eq!(ids(ring.owners_now()), vec![1, 2]);
        assert_eq!(ids(ring.owners_next()), vec![1, 3]);
        assert!(ring.is_moving());
        assert_eq!(ring.owns(NodeId(2)), (true, false));
        assert_eq!(ring.owns(NodeId(9)), (false, false));
        ring.members.remove(&NodeId(2));
        ring.members.insert(NodeId(3), member(true, true));
        assert!(!ring.is_moving());
    }
}
