//! The cluster's layout as a token-aware client needs it: which nodes hold
//! which keys, and where clients reach each node.
//!
//! Any node answers [`crate::proto::RequestOp::Layout`] with a
//! [`ClusterLayout`] built from its membership view ([`ClusterLayout::of`]):
//! the placement strategy, every member's id, state (as the agreed ring
//! has it: `cassio_core::Node::agreed_status`), liveness, tokens,
//! datacenter, rack and native client address (gossiped, see
//! `cassio_core::membership::AppState::client_addr`), and each keyspace's
//! replication. The client turns it into [`Routes`], which place keys with
//! cassio-core's own placement code (`cassio_core::placement::build`,
//! `Placement::replicas_for`), so client and nodes agree on replicas by
//! construction: nothing of the placement algorithm is repeated here.
//!
//! Versions: [`ClusterLayout::version`] is a hash of the layout's routing
//! content (placement, members' states, tokens, locations and client
//! addresses, keyspaces' replication; not liveness), equal on every node
//! that sees the same cluster, so a client can tell a changed layout from
//! the one it holds, whichever node answers. `ring_epoch` (the answering
//! node's own count of ring changes, not comparable across nodes) and
//! `schema_version` (the cluster's) are given for information.

use cassio_core::membership::NodeStatus;
use cassio_core::placement::{Placement, PlacementKind};
use cassio_core::topology::{Location, Replication, Topology};
use cassio_core::{NodeId, Token};
use core::net::SocketAddr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The cluster's layout as one node sees it (the answer to
/// [`crate::proto::RequestOp::Layout`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterLayout {
    /// The node that answered.
    pub answered_by: u64,
    /// A hash of the routing content (see the module documentation): the
    /// same on every node with the same view; a different one means the
    /// layout changed.
    pub version: u64,
    /// The answering node's ring epoch (bumped on every change of token
    /// owners it saw; local to that node).
    pub ring_epoch: u64,
    /// The cluster's schema version the keyspaces are from.
    pub schema_version: u64,
    /// How keys are placed.
    pub placement: PlacementKind,
    /// Every known member, the answering node included, by id.
    pub members: Vec<LayoutMember>,
    /// Every keyspace and its replication.
    pub keyspaces: Vec<LayoutKeyspace>,
}

/// One member in a [`ClusterLayout`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutMember {
    /// Its node id.
    pub id: u64,
    /// Its life-cycle state.
    pub state: NodeStatus,
    /// Whether the answering node believes it is alive.
    pub up: bool,
    /// Its tokens on the ring.
    pub tokens: Vec<Token>,
    /// Its datacenter.
    pub datacenter: String,
    /// Its rack.
    pub rack: String,
    /// Where it serves the native client protocol, as it advertises it
    /// (`None`: not served, or not known yet).
    pub client_addr: Option<SocketAddr>,
}

/// One keyspace in a [`ClusterLayout`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutKeyspace {
    /// Its name.
    pub name: String,
    /// How many replicas, and where.
    pub replication: Replication,
}

impl ClusterLayout {
    /// The layout of `node`'s current view.
    pub fn of(node: &cassio_core::Node) -> ClusterLayout {
        let m = node.membership();
        let members = m
            .members()
            .into_iter()
            .filter_map(|id| {
                let (_, app) = m.state_of(id)?;
                Some(LayoutMember {
                    id: id.0,
                    state: node.agreed_status(id).unwrap_or(app.status),
                    up: m.is_alive(id),
                    tokens: app.tokens.clone(),
                    datacenter: app.datacenter.clone(),
                    rack: app.rack.clone(),
                    client_addr: app.client_addr,
                })
            })
            .collect();
        let schema = node.schema();
        let keyspaces = schema
            .keyspaces
            .values()
            .map(|k| LayoutKeyspace {
                name: k.config.name.clone(),
                replication: k.config.replication(),
            })
            .collect();
        let mut layout = ClusterLayout {
            answered_by: node.id().0,
            version: 0,
            ring_epoch: m.ring_epoch(),
            schema_version: schema.version,
            placement: node.placement_kind(),
            members,
            keyspaces,
        };
        layout.version = layout.content_hash();
        layout
    }

    /// The hash behind [`ClusterLayout::version`]: every field that
    /// decides where a request goes, liveness and the answering node's
    /// local counters left out.
    pub fn content_hash(&self) -> u64 {
        let mut members: Vec<_> = self
            .members
            .iter()
            .map(|m| {
                (
                    m.id,
                    m.state,
                    &m.tokens,
                    &m.datacenter,
                    &m.rack,
                    m.client_addr,
                )
            })
            .collect();
        members.sort_by_key(|m| m.0);
        let mut keyspaces: Vec<_> = self
            .keyspaces
            .iter()
            .map(|k| (&k.name, &k.replication))
            .collect();
        keyspaces.sort_by(|a, b| a.0.cmp(b.0));
        // Encoding plain data into a Vec cannot fail.
        let bytes =
            postcard::to_allocvec(&(self.placement, members, keyspaces)).unwrap_or_default();
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// Routes built from this layout.
    pub fn routes(&self) -> Routes {
        let owners = self
            .members
            .iter()
            .filter(|m| m.state.owns_tokens())
            .map(|m| (NodeId(m.id), m.tokens.clone()))
            .collect();
        let topology: Topology = self
            .members
            .iter()
            .map(|m| {
                (
                    NodeId(m.id),
                    Location {
                        datacenter: m.datacenter.clone(),
                        rack: m.rack.clone(),
                    },
                )
            })
            .collect();
        Routes {
            placement: cassio_core::placement::build(self.placement, owners, topology),
            replication: self
                .keyspaces
                .iter()
                .map(|k| (k.name.clone(), k.replication.clone()))
                .collect(),
            members: self.members.iter().map(|m| (m.id, m.clone())).collect(),
        }
    }
}

/// Where a client sends a key's requests: a [`ClusterLayout`] made ready
/// to place keys.
pub struct Routes {
    placement: Box<dyn Placement + Send + Sync>,
    replication: BTreeMap<String, Replication>,
    members: BTreeMap<u64, LayoutMember>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("members", &self.members.len())
            .field("keyspaces", &self.replication.keys())
            .finish_non_exhaustive()
    }
}

impl Routes {
    /// The replicas of `key` in `keyspace` (the row, for a row's cells),
    /// in placement order, as the nodes place it on their current ring;
    /// `None` for a keyspace the layout does not know.
    pub fn replicas(&self, keyspace: &str, key: &[u8]) -> Option<Vec<u64>> {
        let replication = self.replication.get(keyspace)?;
        Some(
            self.placement
                .replicas_for(Token::of(key), replication)
                .into_iter()
                .map(|n| n.0)
                .collect(),
        )
    }

    /// The node a request for `key` in `keyspace` goes to, and its client
    /// address: the first replica in placement order that is `Normal`,
    /// believed up, not in `avoid`, and advertises a usable client address
    /// (not a wildcard, not port 0); one in `datacenter` first when given.
    /// `None`: no such replica (the client takes its plain path).
    pub fn target(
        &self,
        keyspace: &str,
        key: &[u8],
        datacenter: Option<&str>,
        avoid: &[u64],
    ) -> Option<(u64, SocketAddr)> {
        let replicas = self.replicas(keyspace, key)?;
        let usable = |id: &u64| -> Option<(u64, SocketAddr)> {
            let m = self.members.get(id)?;
            let addr = m.client_addr?;
            (m.state == NodeStatus::Normal
                && m.up
                && !avoid.contains(id)
                && !addr.ip().is_unspecified()
                && addr.port() != 0)
                .then_some((*id, addr))
        };
        let local = datacenter.and_then(|dc| {
            replicas
                .iter()
                .filter(|id| self.members.get(id).is_some_and(|m| m.datacenter == dc))
                .find_map(usable)
        });
        local.or_else(|| replicas.iter().find_map(usable))
    }

    /// The member with node id `id`, as the layout has it.
    pub fn member(&self, id: u64) -> Option<&LayoutMember> {
        self.members.get(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cassio_core::placement::{default_tokens, TokenRing};

    fn member(id: u64, port: u16) -> LayoutMember {
        LayoutMember {
            id,
            state: NodeStatus::Normal,
            up: true,
            tokens: default_tokens(NodeId(id), 16),
            datacenter: if id == 3 { "dc2" } else { "dc1" }.into(),
            rack: "rack1".into(),
            client_addr: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        }
    }

    fn layout() -> ClusterLayout {
        let mut l = ClusterLayout {
            answered_by: 1,
            version: 0,
            ring_epoch: 7,
            schema_version: 1,
            placement: PlacementKind::TokenRing,
            members: vec![member(1, 7001), member(2, 7002), member(3, 7003)],
            keyspaces: vec![
                LayoutKeyspace {
                    name: "default".into(),
                    replication: Replication::from(1),
                },
                LayoutKeyspace {
                    name: "three".into(),
                    replication: Replication::from(3),
                },
            ],
        };
        l.version = l.content_hash();
        l
    }

    #[test]
    fn replicas_are_the_core_placements() {
        let routes = layout().routes();
        let ring = TokenRing::new((1..=3).map(|i| (NodeId(i), default_tokens(NodeId(i), 16))));
        for k in 0..200u32 {
            let key = k.to_be_bytes();
            let want: Vec<u64> = ring
                .replicas(Token::of(&key), 3)
                .into_iter()
                .map(|n| n.0)
                .collect();
            assert_eq!(routes.replicas("three", &key), Some(want.clone()));
            assert_eq!(routes.replicas("default", &key), Some(want[..1].to_vec()));
            let (id, addr) = routes.target("three", &key, None, &[]).unwrap();
            assert_eq!(id, want[0]);
            assert_eq!(addr.port(), 7000 + u16::try_from(id).unwrap());
            // Avoiding the first replica picks the second; a datacenter
            // preference picks its replica whatever the order.
            assert_eq!(
                routes.target("three", &key, None, &[want[0]]).unwrap().0,
                want[1]
            );
            assert_eq!(routes.target("three", &key, Some("dc2"), &[]).unwrap().0, 3);
        }
        assert_eq!(routes.replicas("nope", b"k"), None);
    }

    #[test]
    fn the_layout_request_and_answer_cross_the_native_protocol() {
        use crate::proto::{decode, encode, Reply, Request, RequestOp, Response};
        let req = Request {
            id: 9,
            op: RequestOp::Layout,
        };
        let frame = encode(&req).unwrap();
        assert_eq!(decode::<Request>(&frame[4..]).unwrap(), req);
        assert!(!RequestOp::Layout.is_data());
        let resp = Response {
            id: 9,
            result: Ok(Reply::Layout(Box::new(layout()))),
        };
        let frame = encode(&resp).unwrap();
        let back: Response = decode(&frame[4..]).unwrap();
        assert_eq!(back, resp);
        let Ok(Reply::Layout(l)) = back.result else {
            panic!("not a layout")
        };
        // A decoded layout routes as the original.
        assert_eq!(
            l.routes().replicas("three", b"k"),
            layout().routes().replicas("three", b"k")
        );
    }

    #[test]
    fn unusable_replicas_are_skipped_and_the_version_tracks_routing_content() {
        let base = layout();
        let mut l = base.clone();
        for m in &mut l.members {
            m.client_addr = Some(SocketAddr::from(([0, 0, 0, 0], 7000)));
        }
        // Wildcard addresses cannot be routed to.
        assert_eq!(l.routes().target("default", b"k", None, &[]), None);
        assert_ne!(l.content_hash(), base.version);
        // Liveness and the answering node's counters are not content.
        let mut l = base.clone();
        l.members[0].up = false;
        l.ring_epoch = 99;
        l.answered_by = 2;
        assert_eq!(l.content_hash(), base.version);
        let owner = base.routes().target("default", b"k", None, &[]).unwrap().0;
        let mut l = base.clone();
        l.members.iter_mut().for_each(|m| m.up = m.id != owner);
        assert_eq!(l.routes().target("default", b"k", None, &[]), None);
        // A joining member changes the version.
        let mut l = base.clone();
        l.members.push(LayoutMember {
            state: NodeStatus::Joining,
            ..member(4, 7004)
        });
        assert_ne!(l.content_hash(), base.version);
    }
}
