//! The layout: which nodes hold which keys, kept as placements (token ring
//! or rendezvous) of the ring in the newest schema version this node knows
//! ([`crate::agreed_ring`]), rebuilt only when that version changes.
//!
//! While the ring moves, the cluster has two rings: the current one
//! (leaving nodes still own their tokens, joining ones do not yet; reads
//! use it) and the next one. Writes go to the replicas of both, each to the
//! requested level, and anti-entropy syncs every pair that shares a range
//! on either ring, so the nodes gaining a range fill it from its current
//! owners before reads move (see [`crate::transition`]).

use crate::agreed_ring::AgreedRing;
use crate::membership::Membership;
use crate::placement::{Placement, PlacementKind, TokenRing};
use crate::schema::Schema;
use crate::topology::{Replication, Topology};
use crate::types::{NodeId, Token};
use std::collections::BTreeMap;

type BoxedPlacement = Box<dyn Placement + Send + Sync>;

/// Ring owners and their tokens, in id order.
type Owners = Vec<(NodeId, Vec<Token>)>;

/// What the placements were built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Not built yet.
    Nothing,
    /// The agreed ring of this schema version.
    Agreed(u64),
    /// This node's gossip view at this membership ring epoch: only while it
    /// knows no agreed ring (see [`crate::agreed_ring`]).
    Gossip(u64),
}

/// The placement of keys on the ring this node knows.
pub(crate) struct Layout {
    kind: PlacementKind,
    current: BoxedPlacement,
    /// The ring the cluster moves to, when it differs from `current`.
    next: Option<BoxedPlacement>,
    /// The current ring's owners and their tokens.
    owners: Owners,
    /// Names the move from `current` to `next` (0: no move).
    transition: u64,
    source: Source,
    /// Mutation: ignore the agreed ring and place keys by gossip.
    #[cfg(feature = "mutations")]
    pub place_by_gossip: bool,
}

impl Layout {
    /// An empty layout of kind `kind`, built at the first [`Layout::rebuild`].
    pub fn new(kind: PlacementKind) -> Self {
        Layout {
            kind,
            current: Box::new(TokenRing::default()),
            next: None,
            owners: Vec::new(),
            transition: 0,
            source: Source::Nothing,
            #[cfg(feature = "mutations")]
            place_by_gossip: false,
        }
    }

    fn build(
        kind: PlacementKind,
        owners: Vec<(NodeId, Vec<Token>)>,
        topology: Topology,
    ) -> BoxedPlacement {
        crate::placement::build(kind, owners, topology)
    }

    /// The placement strategy of this layout.
    pub fn kind(&self) -> PlacementKind {
        self.kind
    }

    /// The agreed ring of `schema`, unless a mutation ignores it.
    fn agreed<'s>(&self, schema: &'s Schema) -> Option<&'s AgreedRing> {
        #[cfg(feature = "mutations")]
        if self.place_by_gossip {
            return None;
        }
        schema.ring.as_ref()
    }

    fn source_of(&self, membership: &Membership, schema: &Schema) -> Source {
        match self.agreed(schema) {
            Some(_) => Source::Agreed(schema.version),
            None => Source::Gossip(membership.ring_epoch()),
        }
    }

    /// The rings `schema` agreed on, or, before any ring was agreed, the
    /// ones `membership` gossips: `(current, next, topology)`.
    fn rings_of(&self, membership: &Membership, schema: &Schema) -> (Owners, Owners, Topology) {
        match self.agreed(schema) {
            Some(ring) => (ring.owners_now(), ring.owners_next(), ring.topology()),
            None => {
                let gossip = AgreedRing::from_gossip(membership);
                (gossip.owners_now(), gossip.owners_next(), gossip.topology())
            }
        }
    }

    /// Rebuilds the rings only when the schema version (or, before a ring
    /// is agreed, the gossip ring) changed: in a large cluster that is
    /// joining, rebuilding on every gossip delta would cost more than the
    /// gossip itself.
    pub fn rebuild(&mut self, membership: &Membership, schema: &Schema) {
        let source = self.source_of(membership, schema);
        if self.source == source {
            return;
        }
        let (now, next, topology) = self.rings_of(membership, schema);
        self.transition = transition_id(&now, &next);
        self.next = (self.transition != 0).then(|| Self::build(self.kind, next, topology.clone()));
        self.current = Self::build(self.kind, now.clone(), topology);
        self.owners = now;
        self.source = source;
    }

    /// The current placement (reads), as last rebuilt.
    pub fn placement(&self) -> &(dyn Placement + Send + Sync) {
        self.current.as_ref()
    }

    /// The ring transition under way as last rebuilt (0: none).
    pub fn transition(&self) -> u64 {
        self.transition
    }

    /// The placement anti-entropy syncs by: every pair of nodes that share
    /// a range on the current or the next ring.
    pub fn sync_placement(&self) -> Transitional<'_> {
        Transitional {
            current: self.current.as_ref(),
            next: self.next.as_deref().map(|p| p as &dyn Placement),
        }
    }

    /// The replica sets a write of `token` must reach, each to the
    /// requested level: the current ring's, and the next ring's while the
    /// cluster moves (each picked by the keyspace's [`Replication`]).
    pub fn write_sets_for(&self, token: Token, replication: &Replication) -> Vec<Vec<NodeId>> {
        let mut sets = vec![self.current.replicas_for(token, replication)];
        if let Some(next) = &self.next {
            let n = next.replicas_for(token, replication);
            if n != sets[0] {
                sets.push(n);
            }
        }
        sets
    }

    /// The replicas of `token` on the current ring of `schema` (or of
    /// `membership`'s view before a ring is agreed), built afresh if the
    /// layout is stale, since this takes `&self`.
    pub fn replicas_of(
        &self,
        membership: &Membership,
        schema: &Schema,
        token: Token,
        replication: &Replication,
    ) -> Vec<NodeId> {
        if self.source == self.source_of(membership, schema) {
            self.current.replicas_for(token, replication)
        } else {
            let (now, _, topology) = self.rings_of(membership, schema);
            Self::build(self.kind, now, topology).replicas_for(token, replication)
        }
    }

    /// Each current owner's share of the ring (token-ring placement), or an
    /// equal share per owner (rendezvous placement); sums to 1.
    pub fn ownership(&self) -> BTreeMap<NodeId, f64> {
        let owners = self.owners.clone();
        match self.kind {
            PlacementKind::TokenRing => TokenRing::new(owners).ownership(),
            PlacementKind::Rendezvous => {
                let share = 1.0 / owners.len().max(1) as f64;
                owners.into_iter().map(|(id, _)| (id, share)).collect()
            }
        }
    }
}

/// Names the move from ring `now` to ring `next`: 0 when they are the same,
/// else a hash of both, equal on every node that sees the same two rings.
fn transition_id(now: &[(NodeId, Vec<Token>)], next: &[(NodeId, Vec<Token>)]) -> u64 {
    if now == next {
        return 0;
    }
    let mut bytes = Vec::new();
    for (ring, owners) in [(0u8, now), (1u8, next)] {
        for (id, tokens) in owners {
            bytes.push(ring);
            bytes.extend_from_slice(&id.0.to_le_bytes());
            for t in tokens {
                bytes.extend_from_slice(&t.0.to_le_bytes());
            }
        }
    }
    xxhash_rust::xxh3::xxh3_64(&bytes).max(1)
}

/// The current and next rings seen as one placement: a token's replicas
/// are both rings' replicas of it.
pub(crate) struct Transitional<'a> {
    current: &'a dyn Placement,
    next: Option<&'a dyn Placement>,
}

impl Placement for Transitional<'_> {
    fn replicas(&self, token: Token, rf: usize) -> Vec<NodeId> {
        self.replicas_for(token, &Replication::from(rf))
    }

    fn replicas_for(&self, token: Token, replication: &Replication) -> Vec<NodeId> {
        let mut out = self.current.replicas_for(token, replication);
        if let Some(next) = self.next {
            for n in next.replicas_for(token, replication) {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    fn nodes(&self) -> Vec<NodeId> {
        let mut v = self.current.nodes();
        if let Some(next) = self.next {
            v.extend(next.nodes());
        }
        v.sort();
        v.dedup();
        v
    }

    fn ranges(&self, rf: usize) -> Option<Vec<(Token, Token, Vec<NodeId>)>> {
        self.ranges_for(&Replication::from(rf))
    }

    fn ranges_for(&self, replication: &Replication) -> Option<Vec<(Token, Token, Vec<NodeId>)>> {
        let a = self.current.ranges_for(replication)?;
        let Some(next) = self.next else {
            return Some(a);
        };
        let b = next.ranges_for(replication)?;
        if a.is_empty() || b.is_empty() {
            return Some(if a.is_empty() { b } else { a });
        }
        // Both cover the whole token space in order: cut at every boundary
        // of either, each piece replicated by both rings' replicas.
        let (mut i, mut j) = (0, 0);
        let mut lo = Token(0);
        let mut out = Vec::with_capacity(a.len() + b.len());
        while i < a.len() && j < b.len() {
            let (ea, eb) = (a[i].1, b[j].1);
            let hi = ea.min(eb);
            let mut reps = a[i].2.clone();
            for n in &b[j].2 {
                if !reps.contains(n) {
                    reps.push(*n);
                }
            }
            out.push((lo, hi, reps));
            if ea == hi {
                i += 1;
            }
            if eb == hi {
                j += 1;
            }
            match hi.0.checked_add(1) {
                Some(n) => lo = Token(n),
                None => break,
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::default_tokens;

    fn ring(ids: &[u64]) -> Vec<(NodeId, Vec<Token>)> {
        ids.iter()
            .map(|&i| (NodeId(i), default_tokens(NodeId(i), 8)))
            .collect()
    }

    #[test]
    fn no_move_has_no_transition_and_a_move_is_named_alike_everywhere() {
        assert_eq!(transition_id(&ring(&[1, 2, 3]), &ring(&[1, 2, 3])), 0);
        let a = transition_id(&ring(&[1, 2, 3, 4]), &ring(&[1, 2, 3]));
        assert_ne!(a, 0);
        assert_eq!(a, transition_id(&ring(&[1, 2, 3, 4]), &ring(&[1, 2, 3])));
        assert_ne!(a, transition_id(&ring(&[1, 2, 3, 4]), &ring(&[1, 2, 4])));
    }

    #[test]
    fn transitional_ranges_cover_every_token_once_with_both_rings_replicas() {
        let now = TokenRing::new(ring(&[1, 2, 3, 4, 5]));
        let next = TokenRing::new(ring(&[1, 2, 3, 4]));
        let t = Transitional {
            current: &now,
            next: Some(&next),
        };
        let ranges = t.ranges(3).expect("token ring has ranges");
        assert_eq!(ranges.first().map(|r| r.0), Some(Token(0)));
        assert_eq!(ranges.last().map(|r| r.1), Some(Token(u64::MAX)));
        for w in ranges.windows(2) {
            assert_eq!(w[0].1 .0 + 1, w[1].0 .0, "gap or overlap");
        }
        let mut moved = 0;
        for (lo, hi, reps) in &ranges {
            for probe in [*lo, *hi] {
                let mut want = now.replicas(probe, 3);
                for n in next.replicas(probe, 3) {
                    if !want.contains(&n) {
                        want.push(n);
                    }
                }
                assert_eq!(&want, reps, "replicas of {probe:?}");
            }
            if reps.len() > 3 {
                moved += 1;
            }
        }
        assert!(moved > 0, "node 5's ranges gain a replica on the next ring");
        assert!(t.replicas(Token(12345), 3).len() >= 3);
    }
}
