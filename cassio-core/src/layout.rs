//! The layout: which nodes hold which keys under the current membership
//! view, kept as a placement (token ring or rendezvous) rebuilt only when
//! membership changes who owns what.

use crate::membership::Membership;
use crate::placement::{Placement, PlacementKind, Rendezvous, TokenRing};
use crate::types::{NodeId, Token};
use std::collections::BTreeMap;

/// The placement of keys on this node's view of the ring.
pub(crate) struct Layout {
    kind: PlacementKind,
    placement: Box<dyn Placement + Send + Sync>,
    /// The membership ring epoch `placement` was built from.
    epoch: u64,
}

impl Layout {
    /// An empty layout of kind `kind`, built at the first [`Layout::rebuild`].
    pub fn new(kind: PlacementKind) -> Self {
        Layout {
            kind,
            placement: Box::new(TokenRing::default()),
            epoch: 0,
        }
    }

    fn build(&self, membership: &Membership) -> Box<dyn Placement + Send + Sync> {
        let owners = membership.token_owners();
        match self.kind {
            PlacementKind::TokenRing => Box::new(TokenRing::new(owners)),
            PlacementKind::Rendezvous => {
                Box::new(Rendezvous::new(owners.into_iter().map(|(id, _)| id)))
            }
        }
    }

    /// Rebuilds the ring only when membership changed who owns what: in a
    /// large cluster that is joining, rebuilding on every gossip delta
    /// would cost more than the gossip itself.
    pub fn rebuild(&mut self, membership: &Membership) {
        if self.epoch != membership.ring_epoch() {
            self.placement = self.build(membership);
            self.epoch = membership.ring_epoch();
        }
    }

    /// The placement as last rebuilt.
    pub fn placement(&self) -> &(dyn Placement + Send + Sync) {
        self.placement.as_ref()
    }

    /// The `rf` replicas of `token` under `membership`'s current view
    /// (built afresh if the layout is stale, since this takes `&self`).
    pub fn replicas_of(&self, membership: &Membership, token: Token, rf: usize) -> Vec<NodeId> {
        if self.epoch == membership.ring_epoch() {
            self.placement.replicas(token, rf)
        } else {
            self.build(membership).replicas(token, rf)
        }
    }

    /// Each token owner's share of the ring (token-ring placement), or an
    /// equal share per owner (rendezvous placement); sums to 1.
    pub fn ownership(&self, membership: &Membership) -> BTreeMap<NodeId, f64> {
        let owners = membership.token_owners();
        match self.kind {
            PlacementKind::TokenRing => TokenRing::new(owners).ownership(),
            PlacementKind::Rendezvous => {
                let share = 1.0 / owners.len().max(1) as f64;
                owners.into_iter().map(|(id, _)| (id, share)).collect()
            }
        }
    }
}
