//! Racks and datacenters: where each node stands, how a keyspace wants its
//! replicas spread over them, and the pure walk that picks them.
//!
//! Every node declares a datacenter and a rack (`dc1`/`rack1` unless told),
//! gossiped in its [`crate::membership::AppState`]. A keyspace's
//! [`Replication`] is either a single factor over the whole cluster (as
//! before), optionally spread over distinct racks, or a factor per
//! datacenter (Cassandra's `NetworkTopologyStrategy`), always spread over
//! distinct racks within each datacenter.
//!
//! The walk ([`select`]) takes candidates in the placement's order (the
//! token ring clockwise from the key's token, or rendezvous scores) and,
//! for each datacenter, takes its nodes while it needs more, preferring
//! racks that datacenter has not used yet: a node on a used rack is set
//! aside while unused racks remain, and taken (in the order it was met)
//! once every rack of the datacenter holds a replica. Replicas come out in
//! the order they were taken, so the first is the first candidate whose
//! datacenter wants replicas (for a plain keyspace: the key's first node
//! clockwise, as before). The result depends only on the candidates' order
//! and each node's location, so every node that sees the same layout picks
//! the same replicas; on the ring the replica set is constant between two
//! consecutive tokens, so ranges stay contiguous.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The datacenter a node is in when it names none.
pub const DEFAULT_DATACENTER: &str = "dc1";
/// The rack a node is in when it names none.
pub const DEFAULT_RACK: &str = "rack1";
/// The longest datacenter or rack name accepted.
pub const MAX_LOCATION_NAME: usize = 64;

/// The default datacenter name, for `#[serde(default = ...)]`.
pub fn default_datacenter() -> String {
    DEFAULT_DATACENTER.to_string()
}

/// The default rack name, for `#[serde(default = ...)]`.
pub fn default_rack() -> String {
    DEFAULT_RACK.to_string()
}

/// Where a node stands.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Location {
    /// Its datacenter.
    pub datacenter: String,
    /// Its rack within the datacenter.
    pub rack: String,
}

impl Default for Location {
    fn default() -> Self {
        Location {
            datacenter: default_datacenter(),
            rack: default_rack(),
        }
    }
}

/// Why a datacenter or rack name, or a replication setting, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum TopologyError {
    /// A datacenter or rack name is empty, too long, or has a character
    /// outside `[A-Za-z0-9_.-]`.
    #[error("{what} name {name:?} must be 1 to 64 bytes of letters, digits, '_', '.' or '-'")]
    BadName {
        /// `datacenter` or `rack`.
        what: String,
        /// The name given.
        name: String,
    },
    /// A datacenter's replication factor is zero.
    #[error("datacenter {0:?} has replication factor 0")]
    ZeroFactor(String),
    /// A replication spec could not be parsed.
    #[error("bad replication {0:?}: expected N or DC:N[,DC:N...]")]
    Syntax(String),
}

/// Checks a datacenter or rack name: 1 to 64 bytes of `[A-Za-z0-9_.-]`.
pub fn check_location_name(what: &'static str, name: &str) -> Result<(), TopologyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_LOCATION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TopologyError::BadName {
            what: what.to_string(),
            name: name.to_string(),
        })
    }
}

/// How many replicas a keyspace wants, and where.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Replication {
    /// The factor over the whole cluster, when `datacenters` is empty.
    pub factor: usize,
    /// A factor per datacenter (empty: the single `factor`). Datacenters
    /// not named here hold no replica.
    pub datacenters: BTreeMap<String, usize>,
    /// With a single factor: spread the replicas over distinct racks (in
    /// any datacenter). Per-datacenter replication always spreads them.
    pub spread_racks: bool,
}

impl From<usize> for Replication {
    fn from(factor: usize) -> Self {
        Replication {
            factor,
            datacenters: BTreeMap::new(),
            spread_racks: false,
        }
    }
}

impl Replication {
    /// Replicas per key in all: the factor, or the sum of the datacenters'.
    pub fn total(&self) -> usize {
        if self.datacenters.is_empty() {
            self.factor
        } else {
            self.datacenters.values().sum()
        }
    }

    /// Whether this is a single factor with no rack spread: the placement
    /// is the plain walk, locations play no part.
    pub fn is_plain(&self) -> bool {
        self.datacenters.is_empty() && !self.spread_racks
    }

    /// Whether replicas are counted per datacenter.
    pub fn per_datacenter(&self) -> bool {
        !self.datacenters.is_empty()
    }

    /// Parses `N` (a single factor) or `DC:N[,DC:N...]` (per datacenter).
    pub fn parse(s: &str) -> Result<Replication, TopologyError> {
        let s = s.trim();
        if let Ok(n) = s.parse::<usize>() {
            return Ok(Replication::from(n));
        }
        let mut datacenters = BTreeMap::new();
        for part in s.split(',') {
            let (dc, n) = part
                .split_once(':')
                .ok_or_else(|| TopologyError::Syntax(s.to_string()))?;
            let dc = dc.trim();
            check_location_name("datacenter", dc)?;
            let n: usize = n
                .trim()
                .parse()
                .map_err(|_| TopologyError::Syntax(s.to_string()))?;
            if datacenters.insert(dc.to_string(), n).is_some() {
                return Err(TopologyError::Syntax(s.to_string()));
            }
        }
        let r = Replication {
            factor: datacenters.values().sum(),
            datacenters,
            spread_racks: true,
        };
        r.check()?;
        Ok(r)
    }

    /// Checks each datacenter's name and that its factor is at least 1.
    pub fn check(&self) -> Result<(), TopologyError> {
        for (dc, &n) in &self.datacenters {
            check_location_name("datacenter", dc)?;
            if n == 0 {
                return Err(TopologyError::ZeroFactor(dc.clone()));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Replication {
    /// `N` (plus ` spread over racks`), or `dc1:3,dc2:2`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.datacenters.is_empty() {
            write!(f, "{}", self.factor)?;
            if self.spread_racks {
                f.write_str(" (racks)")?;
            }
            return Ok(());
        }
        let mut first = true;
        for (dc, n) in &self.datacenters {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{dc}:{n}")?;
        }
        Ok(())
    }
}

/// Every node's location, as the layout knows it. A node missing from the
/// map stands in the default datacenter and rack.
pub type Topology = BTreeMap<NodeId, Location>;

fn location_of(topology: &Topology, node: NodeId) -> (&str, &str) {
    match topology.get(&node) {
        Some(l) => (l.datacenter.as_str(), l.rack.as_str()),
        None => (DEFAULT_DATACENTER, DEFAULT_RACK),
    }
}

/// Per datacenter (or, for a single factor with rack spread, the whole
/// cluster as one group): how many replicas it wants and how many racks
/// its candidates span.
struct Group<'a> {
    want: usize,
    racks_total: usize,
    racks_used: BTreeSet<(&'a str, &'a str)>,
    taken: usize,
    /// Every rack of the group holds a replica already.
    every_rack_used: bool,
    /// Nodes met on a rack already used, in the order met.
    skipped: Vec<NodeId>,
}

/// Picks the replicas of one key from `candidates` (each node once, in the
/// placement's order for that key) by `replication`: see the module
/// documentation for the walk and the order of the result. `topology`
/// holds the location of every node of the placement (rack counts are
/// taken from it).
pub fn select(
    candidates: impl IntoIterator<Item = NodeId>,
    topology: &Topology,
    replication: &Replication,
) -> Vec<NodeId> {
    if replication.is_plain() {
        return candidates.into_iter().take(replication.factor).collect();
    }
    // Per datacenter each group is named by it; a spread single factor
    // makes one group ("") of the whole cluster.
    let per_dc = replication.per_datacenter();
    let mut groups: BTreeMap<&str, Group<'_>> = BTreeMap::new();
    let new_group = |want| Group {
        want,
        racks_total: 0,
        racks_used: BTreeSet::new(),
        taken: 0,
        every_rack_used: false,
        skipped: Vec::new(),
    };
    if per_dc {
        for (dc, &n) in &replication.datacenters {
            groups.insert(dc.as_str(), new_group(n));
        }
    } else {
        groups.insert("", new_group(replication.factor));
    }
    // Racks per group (a rack is named with its datacenter: rack1 of dc1
    // and rack1 of dc2 are two racks).
    let mut racks: BTreeMap<&str, BTreeSet<(&str, &str)>> = BTreeMap::new();
    for l in topology.values() {
        let g = if per_dc { l.datacenter.as_str() } else { "" };
        if groups.contains_key(g) {
            racks
                .entry(g)
                .or_default()
                .insert((l.datacenter.as_str(), l.rack.as_str()));
        }
    }
    for (g, set) in &racks {
        if let Some(group) = groups.get_mut(g) {
            group.racks_total = set.len();
        }
    }
    let mut out = Vec::with_capacity(replication.total());
    let mut open = groups.values().filter(|g| g.want > 0).count();
    for n in candidates {
        if open == 0 {
            break;
        }
        let (dc, rack) = location_of(topology, n);
        let g = if per_dc { dc } else { "" };
        let Some(group) = groups.get_mut(g) else {
            continue;
        };
        if group.taken >= group.want {
            continue;
        }
        if group.every_rack_used || group.racks_used.insert((dc, rack)) {
            out.push(n);
            group.taken += 1;
        } else {
            group.skipped.push(n);
        }
        // Every rack used: the nodes set aside fill what is left, in the
        // order they were met, before any later node; later nodes of this
        // group are taken as they come.
        if !group.every_rack_used && group.racks_used.len() >= group.racks_total {
            group.every_rack_used = true;
            let fill = (group.want - group.taken).min(group.skipped.len());
            out.extend(group.skipped.drain(..fill));
            group.taken += fill;
        }
        if group.taken >= group.want {
            open -= 1;
        }
    }
    // A walk that ended before every rack was met (a node of the topology
    // was not a candidate): what was set aside still counts.
    for group in groups.values_mut() {
        let fill = group
            .want
            .saturating_sub(group.taken)
            .min(group.skipped.len());
        out.extend(group.skipped.drain(..fill));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{default_tokens, Placement, Rendezvous, TokenRing};
    use crate::types::Token;

    /// `(id, datacenter, rack)` for every node.
    fn layout(nodes: &[(u64, &str, &str)]) -> (Vec<(NodeId, Vec<Token>)>, Topology) {
        let owners = nodes
            .iter()
            .map(|&(i, _, _)| (NodeId(i), default_tokens(NodeId(i), 64)))
            .collect();
        let topology = nodes
            .iter()
            .map(|&(i, dc, rack)| {
                let l = Location {
                    datacenter: dc.into(),
                    rack: rack.into(),
                };
                (NodeId(i), l)
            })
            .collect();
        (owners, topology)
    }

    fn ring(nodes: &[(u64, &str, &str)]) -> TokenRing {
        let (owners, topology) = layout(nodes);
        TokenRing::new(owners).with_topology(topology)
    }

    /// 2 datacenters x 3 racks x 2 nodes: ids 1..=6 in dc1, 7..=12 in dc2.
    fn two_dcs() -> Vec<(u64, &'static str, &'static str)> {
        let mut v = Vec::new();
        for (d, dc) in ["dc1", "dc2"].into_iter().enumerate() {
            for r in 0..3u64 {
                for k in 0..2u64 {
                    let id = d as u64 * 6 + r * 2 + k + 1;
                    v.push((id, dc, ["r1", "r2", "r3"][r as usize]));
                }
            }
        }
        v
    }

    fn keys(n: u64) -> impl Iterator<Item = Token> {
        (0..n).map(|k| Token::of(&k.to_le_bytes()))
    }

    #[test]
    fn every_datacenter_gets_its_factor_on_distinct_racks() {
        let nodes = two_dcs();
        let (_, topo) = layout(&nodes);
        let rep = Replication::parse("dc1:3,dc2:2").expect("parse");
        for placement in [
            Box::new(ring(&nodes)) as Box<dyn Placement>,
            Box::new(Rendezvous::new((1..=12).map(NodeId)).with_topology(topo.clone())),
        ] {
            for t in keys(5_000) {
                let reps = placement.replicas_for(t, &rep);
                assert_eq!(reps.len(), 5, "{reps:?}");
                let mut distinct = reps.clone();
                distinct.sort();
                distinct.dedup();
                assert_eq!(distinct.len(), 5, "each node once: {reps:?}");
                for (dc, want) in [("dc1", 3usize), ("dc2", 2)] {
                    let in_dc: Vec<&Location> = reps
                        .iter()
                        .map(|n| &topo[n])
                        .filter(|l| l.datacenter == dc)
                        .collect();
                    assert_eq!(in_dc.len(), want, "{dc}: {reps:?}");
                    let racks: BTreeSet<&str> = in_dc.iter().map(|l| l.rack.as_str()).collect();
                    assert_eq!(racks.len(), want.min(3), "{dc} racks: {reps:?}");
                }
            }
        }
    }

    #[test]
    fn a_factor_above_the_racks_reuses_racks_and_above_the_nodes_takes_them_all() {
        // dc1: 2 racks of 2 nodes; dc2: 2 nodes.
        let nodes = [
            (1, "dc1", "a"),
            (2, "dc1", "a"),
            (3, "dc1", "b"),
            (4, "dc1", "b"),
            (5, "dc2", "a"),
            (6, "dc2", "b"),
        ];
        let (_, topo) = layout(&nodes);
        let ring = ring(&nodes);
        let rep = Replication::parse("dc1:3,dc2:3").expect("parse");
        for t in keys(2_000) {
            let reps = ring.replicas_for(t, &rep);
            let dc1: Vec<&Location> = reps
                .iter()
                .map(|n| &topo[n])
                .filter(|l| l.datacenter == "dc1")
                .collect();
            assert_eq!(dc1.len(), 3);
            let racks: BTreeSet<&str> = dc1.iter().map(|l| l.rack.as_str()).collect();
            assert_eq!(racks.len(), 2, "both racks before reusing one");
            // The first two dc1 replicas are on distinct racks.
            assert_ne!(dc1[0].rack, dc1[1].rack);
            let dc2 = reps.iter().filter(|n| topo[n].datacenter == "dc2").count();
            assert_eq!(dc2, 2, "dc2 has only 2 nodes: all of them");
        }
    }

    #[test]
    fn a_single_factor_spread_over_racks_uses_distinct_racks_cluster_wide() {
        let nodes = two_dcs();
        let (_, topo) = layout(&nodes);
        let ring = ring(&nodes);
        let rep = Replication {
            factor: 4,
            datacenters: BTreeMap::new(),
            spread_racks: true,
        };
        for t in keys(3_000) {
            let reps = ring.replicas_for(t, &rep);
            assert_eq!(reps.len(), 4);
            let racks: BTreeSet<&Location> = reps.iter().map(|n| &topo[n]).collect();
            assert_eq!(racks.len(), 4, "6 racks in all: 4 distinct: {reps:?}");
        }
        // The plain walk ignores racks and equals the old placement.
        for t in keys(1_000) {
            assert_eq!(ring.replicas_for(t, &3.into()), ring.replicas(t, 3));
        }
    }

    /// The share of `dc`'s replica slots (key, node) that moved.
    fn moved_slots(
        before: &dyn Placement,
        after: &dyn Placement,
        topo: &Topology,
        rep: &Replication,
        dc: &str,
    ) -> f64 {
        let (mut moved, mut total) = (0usize, 0usize);
        for t in keys(20_000) {
            let a: BTreeSet<NodeId> = before
                .replicas_for(t, rep)
                .into_iter()
                .filter(|n| topo.get(n).is_some_and(|l| l.datacenter == dc))
                .collect();
            let b: BTreeSet<NodeId> = after
                .replicas_for(t, rep)
                .into_iter()
                .filter(|n| topo.get(n).is_some_and(|l| l.datacenter == dc))
                .collect();
            total += a.len();
            moved += a.difference(&b).count();
        }
        moved as f64 / total as f64
    }

    #[test]
    fn a_node_joining_one_datacenter_moves_about_one_in_n_plus_one_of_its_slots_and_none_elsewhere()
    {
        let before_nodes = two_dcs();
        let mut after_nodes = before_nodes.clone();
        after_nodes.push((13, "dc1", "r2"));
        let (_, topo) = layout(&after_nodes);
        let rep = Replication::parse("dc1:3,dc2:3").expect("parse");
        let (before, after) = (ring(&before_nodes), ring(&after_nodes));
        let dc1 = moved_slots(&before, &after, &topo, &rep, "dc1");
        let dc2 = moved_slots(&before, &after, &topo, &rep, "dc2");
        let expected = 1.0 / 7.0;
        eprintln!(
            "ring: dc1 moved {dc1:.4} of its slots (expected about {expected:.4}), dc2 {dc2}"
        );
        assert!(
            (expected * 0.5..=expected * 2.0).contains(&dc1),
            "dc1 moved {dc1:.4} of its slots, expected about {expected:.4}"
        );
        assert_eq!(dc2, 0.0, "dc2's replicas do not move");
        // Rendezvous alike.
        let hrw = |n: &[(u64, &str, &str)]| {
            let (o, t) = layout(n);
            Rendezvous::new(o.into_iter().map(|(id, _)| id)).with_topology(t)
        };
        let dc1 = moved_slots(&hrw(&before_nodes), &hrw(&after_nodes), &topo, &rep, "dc1");
        let dc2 = moved_slots(&hrw(&before_nodes), &hrw(&after_nodes), &topo, &rep, "dc2");
        eprintln!("rendezvous: dc1 moved {dc1:.4} of its slots, dc2 {dc2}");
        assert!(
            (expected * 0.5..=expected * 2.0).contains(&dc1),
            "rendezvous: dc1 moved {dc1:.4}, expected about {expected:.4}"
        );
        assert_eq!(dc2, 0.0);
    }

    #[test]
    fn every_node_computes_the_same_placement_and_ranges_match_it() {
        let nodes = two_dcs();
        let mut reversed = nodes.clone();
        reversed.reverse();
        let rep = Replication::parse("dc1:2,dc2:2").expect("parse");
        let (a, b) = (ring(&nodes), ring(&reversed));
        for t in keys(2_000) {
            assert_eq!(a.replicas_for(t, &rep), b.replicas_for(t, &rep));
        }
        let ranges = a.ranges_for(&rep).expect("ring has ranges");
        assert_eq!(ranges.first().map(|r| r.0), Some(Token(0)));
        assert_eq!(ranges.last().map(|r| r.1), Some(Token(u64::MAX)));
        for w in ranges.windows(2) {
            assert_eq!(w[0].1 .0 + 1, w[1].0 .0, "gap or overlap");
        }
        for (lo, hi, reps) in ranges.iter().step_by(7) {
            assert_eq!(&a.replicas_for(*lo, &rep), reps);
            assert_eq!(&a.replicas_for(*hi, &rep), reps);
        }
    }

    #[test]
    fn replication_parses_and_names_are_checked() {
        assert_eq!(Replication::parse("3"), Ok(Replication::from(3)));
        let r = Replication::parse("dc1:3, dc2:2").expect("parse");
        assert_eq!(r.total(), 5);
        assert_eq!(r.to_string(), "dc1:3,dc2:2");
        assert!(r.spread_racks && r.per_datacenter());
        assert!(matches!(
            Replication::parse("dc1:0"),
            Err(TopologyError::ZeroFactor(_))
        ));
        for bad in ["dc1", "dc1:x", "dc1:1,dc1:2", ""] {
            assert!(Replication::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Replication::parse("d c:1").is_err());
        assert!(check_location_name("rack", "r-1.a_B").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            assert!(check_location_name("rack", bad).is_err(), "{bad:?}");
        }
    }
}
