//! Placement: which nodes hold a key. A pure function of the membership view.

use crate::topology::{select, Replication, Topology};
use crate::types::{NodeId, Token};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A replica-placement strategy: the `rf` distinct nodes that hold a token.
pub trait Placement {
    /// Up to `rf` distinct nodes for `token`, the first being the primary.
    /// Fewer are returned only when the cluster has fewer than `rf` nodes.
    fn replicas(&self, token: Token, rf: usize) -> Vec<NodeId>;

    /// Every node known to this placement.
    fn nodes(&self) -> Vec<NodeId>;

    /// The last token of the range that holds `token` (its replicas are
    /// those of every token through it); `None` when placement is decided
    /// key by key (rendezvous) or the ring is empty.
    fn range_last(&self, token: Token) -> Option<Token> {
        let _ = token;
        None
    }

    /// The ring cut into contiguous inclusive token ranges `(first, last)`,
    /// each with its `rf` replicas, covering every token once; `None` when
    /// placement is decided key by key (rendezvous).
    fn ranges(&self, rf: usize) -> Option<Vec<(Token, Token, Vec<NodeId>)>> {
        let _ = rf;
        None
    }

    /// The replicas of `token` by a keyspace's [`Replication`] (a factor
    /// per datacenter, or racks to spread over): see [`crate::topology`].
    /// A plain factor gives what [`Placement::replicas`] gives.
    fn replicas_for(&self, token: Token, replication: &Replication) -> Vec<NodeId> {
        self.replicas(token, replication.total())
    }

    /// [`Placement::ranges`] by a keyspace's [`Replication`].
    fn ranges_for(&self, replication: &Replication) -> Option<Vec<(Token, Token, Vec<NodeId>)>> {
        self.ranges(replication.total())
    }
}

/// Which placement strategy a cluster uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementKind {
    /// A consistent-hash ring with virtual nodes (as in Cassandra).
    #[default]
    TokenRing,
    /// Rendezvous ("highest similarity") hashing, as in the original Cassiopeia.
    Rendezvous,
}

/// The placement of kind `kind` over the token owners `owners` (each
/// with its tokens; rendezvous uses only the ids) located by `topology`:
/// what every node builds from its membership view, and what a
/// token-aware client builds from a node's layout answer, so both place
/// keys alike.
pub fn build(
    kind: PlacementKind,
    owners: Vec<(NodeId, Vec<Token>)>,
    topology: Topology,
) -> Box<dyn Placement + Send + Sync> {
    match kind {
        PlacementKind::TokenRing => Box::new(TokenRing::new(owners).with_topology(topology)),
        PlacementKind::Rendezvous => {
            Box::new(Rendezvous::new(owners.into_iter().map(|(id, _)| id)).with_topology(topology))
        }
    }
}

/// The tokens a node takes on the ring when it has not chosen its own:
/// `vnodes` tokens derived from its id, so every node computes the same ring.
pub fn default_tokens(node: NodeId, vnodes: u16) -> Vec<Token> {
    (0..u64::from(vnodes))
        .map(|i| {
            let mut buf = [0u8; 16];
            buf[..8].copy_from_slice(&node.0.to_le_bytes());
            buf[8..].copy_from_slice(&i.to_le_bytes());
            Token(xxhash_rust::xxh3::xxh3_64_with_seed(&buf, 0x6361_7373_696f))
        })
        .collect()
}

/// A token ring with virtual nodes: a key belongs to the owners of the first
/// tokens at or after its own token, walking clockwise and skipping nodes
/// already chosen.
#[derive(Clone, Debug, Default)]
pub struct TokenRing {
    ring: BTreeMap<Token, NodeId>,
    node_count: usize,
    /// Each node's datacenter and rack (for [`Placement::replicas_for`]).
    topology: Topology,
}

impl TokenRing {
    /// Builds a ring from each node's tokens. When two nodes claim the same
    /// token, the smaller node id keeps it (the same choice everywhere).
    pub fn new<I, T>(nodes: I) -> Self
    where
        I: IntoIterator<Item = (NodeId, T)>,
        T: IntoIterator<Item = Token>,
    {
        let mut ring = BTreeMap::new();
        let mut ids = std::collections::BTreeSet::new();
        for (node, tokens) in nodes {
            ids.insert(node);
            for t in tokens {
                ring.entry(t)
                    .and_modify(|owner: &mut NodeId| *owner = (*owner).min(node))
                    .or_insert(node);
            }
        }
        TokenRing {
            ring,
            node_count: ids.len(),
            topology: Topology::new(),
        }
    }

    /// This ring with each node's location (nodes left out stand in the
    /// default datacenter and rack); locations of nodes not on the ring
    /// are dropped, so racks count only nodes that hold tokens.
    pub fn with_topology(mut self, mut topology: Topology) -> Self {
        let nodes = self.nodes();
        topology.retain(|n, _| nodes.binary_search(n).is_ok());
        for n in nodes {
            topology.entry(n).or_default();
        }
        self.topology = topology;
        self
    }

    /// The distinct nodes met walking clockwise from `token`.
    fn walk(&self, token: Token) -> impl Iterator<Item = NodeId> + '_ {
        let mut seen = std::collections::BTreeSet::new();
        self.ring
            .range(token..)
            .chain(self.ring.range(..token))
            .map(|(_, &n)| n)
            .filter(move |n| seen.insert(*n))
            .take(self.node_count)
    }

    fn ranges_with(
        &self,
        replicas: impl Fn(Token) -> Vec<NodeId>,
    ) -> Option<Vec<(Token, Token, Vec<NodeId>)>> {
        let mut out = Vec::with_capacity(self.ring.len() + 1);
        let mut first = Token(0);
        for &t in self.ring.keys() {
            // (previous token, t] belongs to t's replicas.
            out.push((first, t, replicas(t)));
            match t.0.checked_add(1) {
                Some(n) => first = Token(n),
                None => return Some(out),
            }
        }
        if let Some((&t, _)) = self.ring.iter().next() {
            // The wrap-around range, after the last token, belongs to the
            // first token's replicas.
            out.push((first, Token(u64::MAX), replicas(t)));
        }
        Some(out)
    }

    /// Builds a ring where each node takes [`default_tokens`].
    pub fn with_default_tokens(nodes: &[NodeId], vnodes: u16) -> Self {
        TokenRing::new(nodes.iter().map(|&n| (n, default_tokens(n, vnodes))))
    }

    /// The share of the token space each node is primary for (sums to 1).
    pub fn ownership(&self) -> BTreeMap<NodeId, f64> {
        let mut out = BTreeMap::new();
        let Some((&last, _)) = self.ring.iter().next_back() else {
            return out;
        };
        let mut prev = last;
        for (&t, &node) in &self.ring {
            // The range (prev, t] belongs to t's owner; wrapping arithmetic
            // covers the range that crosses zero.
            let width = t.0.wrapping_sub(prev.0);
            let width = if self.ring.len() == 1 {
                u64::MAX
            } else {
                width
            };
            *out.entry(node).or_insert(0.0) += width as f64 / u64::MAX as f64;
            prev = t;
        }
        out
    }
}

impl Placement for TokenRing {
    fn replicas(&self, token: Token, rf: usize) -> Vec<NodeId> {
        let want = rf.min(self.node_count);
        let mut out = Vec::with_capacity(want);
        for (_, &node) in self.ring.range(token..).chain(self.ring.range(..token)) {
            if out.len() == want {
                break;
            }
            if !out.contains(&node) {
                out.push(node);
            }
        }
        out
    }

    fn range_last(&self, token: Token) -> Option<Token> {
        if self.ring.is_empty() {
            return None;
        }
        // (previous token, t] belongs to t's replicas; past the last
        // token, the wrap-around range runs to the end of the space.
        Some(
            self.ring
                .range(token..)
                .next()
                .map_or(Token(u64::MAX), |(&t, _)| t),
        )
    }

    fn ranges(&self, rf: usize) -> Option<Vec<(Token, Token, Vec<NodeId>)>> {
        self.ranges_with(|t| self.replicas(t, rf))
    }

    fn replicas_for(&self, token: Token, replication: &Replication) -> Vec<NodeId> {
        if replication.is_plain() {
            return self.replicas(token, replication.factor);
        }
        select(self.walk(token), &self.topology, replication)
    }

    fn ranges_for(&self, replication: &Replication) -> Option<Vec<(Token, Token, Vec<NodeId>)>> {
        self.ranges_with(|t| self.replicas_for(t, replication))
    }

    fn nodes(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.ring.values().copied().collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Rendezvous ("highest random weight") placement: every node scores each
/// key by a hash of (node, key token) and the `rf` highest scores hold it.
/// Adding or removing a node moves only the keys that node wins or loses.
#[derive(Clone, Debug, Default)]
pub struct Rendezvous {
    nodes: Vec<NodeId>,
    /// Each node's datacenter and rack (for [`Placement::replicas_for`]).
    topology: Topology,
}

impl Rendezvous {
    /// Placement over these nodes.
    pub fn new(nodes: impl IntoIterator<Item = NodeId>) -> Self {
        let mut nodes: Vec<NodeId> = nodes.into_iter().collect();
        nodes.sort();
        nodes.dedup();
        Rendezvous {
            nodes,
            topology: Topology::new(),
        }
    }

    /// This placement with each node's location (as
    /// [`TokenRing::with_topology`]).
    pub fn with_topology(mut self, mut topology: Topology) -> Self {
        topology.retain(|n, _| self.nodes.binary_search(n).is_ok());
        for &n in &self.nodes {
            topology.entry(n).or_default();
        }
        self.topology = topology;
        self
    }

    /// Every node, highest score for `token` first.
    fn ordered(&self, token: Token) -> Vec<NodeId> {
        let mut scored: Vec<(u64, NodeId)> = self
            .nodes
            .iter()
            .map(|&n| (Self::score(n, token), n))
            .collect();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        scored.into_iter().map(|(_, n)| n).collect()
    }

    fn score(node: NodeId, token: Token) -> u64 {
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(&node.0.to_le_bytes());
        buf[8..].copy_from_slice(&token.0.to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&buf)
    }
}

impl Placement for Rendezvous {
    fn replicas(&self, token: Token, rf: usize) -> Vec<NodeId> {
        let mut v = self.ordered(token);
        v.truncate(rf);
        v
    }

    fn replicas_for(&self, token: Token, replication: &Replication) -> Vec<NodeId> {
        select(self.ordered(token), &self.topology, replication)
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.nodes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64) -> Vec<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    #[test]
    fn replicas_are_distinct_and_walk_clockwise() {
        let ring = TokenRing::new([
            (NodeId(1), vec![Token(100), Token(400)]),
            (NodeId(2), vec![Token(200)]),
            (NodeId(3), vec![Token(300)]),
        ]);
        assert_eq!(
            ring.replicas(Token(150), 3),
            vec![NodeId(2), NodeId(3), NodeId(1)]
        );
        // wraps past the end of the ring
        assert_eq!(ring.replicas(Token(450), 2), vec![NodeId(1), NodeId(2)]);
        // rf above the node count returns every node once
        assert_eq!(ring.replicas(Token(350), 5).len(), 3);
        assert!(TokenRing::default().replicas(Token(1), 3).is_empty());
    }

    #[test]
    fn vnodes_spread_ownership_within_20_percent() {
        for seed_offset in [0u64, 100, 1000] {
            let nodes: Vec<NodeId> = (1..=10).map(|i| NodeId(i + seed_offset)).collect();
            let ring = TokenRing::with_default_tokens(&nodes, 256);
            let own = ring.ownership();
            let total: f64 = own.values().sum();
            assert!((total - 1.0).abs() < 1e-6, "ownership sums to {total}");
            for (node, share) in own {
                let ratio = share / 0.1;
                assert!(
                    (0.8..=1.2).contains(&ratio),
                    "{node} owns {share:.4}, {ratio:.3}x a fair share"
                );
            }
        }
    }

    fn moved_fraction(before: &dyn Placement, after: &dyn Placement) -> f64 {
        let keys = 20_000u64;
        let moved = (0..keys)
            .filter(|k| {
                let t = Token::of(&k.to_le_bytes());
                before.replicas(t, 1) != after.replicas(t, 1)
            })
            .count();
        moved as f64 / keys as f64
    }

    #[test]
    fn adding_a_node_moves_about_one_in_n_plus_one_keys() {
        for n in [4u64, 9] {
            let expected = 1.0 / (n as f64 + 1.0);
            let ring = moved_fraction(
                &TokenRing::with_default_tokens(&ids(n), 256),
                &TokenRing::with_default_tokens(&ids(n + 1), 256),
            );
            let hrw = moved_fraction(&Rendezvous::new(ids(n)), &Rendezvous::new(ids(n + 1)));
            for (name, got) in [("ring", ring), ("rendezvous", hrw)] {
                assert!(
                    (expected * 0.5..=expected * 1.5).contains(&got),
                    "{name}: {n}->{} nodes moved {got:.4}, expected about {expected:.4}",
                    n + 1
                );
            }
        }
    }

    #[test]
    fn rendezvous_returns_distinct_replicas_and_balances() {
        let p = Rendezvous::new(ids(5));
        let mut primary = BTreeMap::new();
        for k in 0u64..10_000 {
            let r = p.replicas(Token::of(&k.to_le_bytes()), 3);
            assert_eq!(r.len(), 3);
            assert!(r[0] != r[1] && r[1] != r[2] && r[0] != r[2]);
            *primary.entry(r[0]).or_insert(0u32) += 1;
        }
        for (_, count) in primary {
            assert!((1600..=2400).contains(&count), "primary count {count}");
        }
    }
}
