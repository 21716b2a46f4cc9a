//! What a node keeps across restarts besides its data: the membership view
//! it last had (ids, addresses, tokens, generations, statuses) and the
//! high-water mark of its hybrid logical clock.
//!
//! The core decides what to keep and when ([`crate::Output::Persist`]); the
//! host writes the bytes of [`PersistedState::encode`] to its data directory
//! (atomically, by rename) and hands the decoded state back in
//! [`crate::Config::persisted`] at the next start. A restarted node thus
//! knows the whole ring before it hears from anyone (so it never places keys
//! on a partial ring) and never issues a timestamp below one it issued
//! before the crash.

use crate::membership::NodeStatus;
use crate::types::{NodeId, Token};
use core::net::SocketAddr;
use serde::{Deserialize, Serialize};

/// The format version written first in every encoded state. 2: storage
/// keys are laid out in token order ([`crate::node::storage_key`]) and the
/// state records when the node was last alive; a data directory of format
/// 1 is refused rather than read with the wrong key layout.
/// 3 adds the schema and the schema acceptor's state; format 2 is still
/// read (as a node that knows no schema yet). 4 records, per keyspace, the
/// version that set its replication factor; format 3 is read as if every
/// factor were settled (version 0). 5 adds each keyspace's replication
/// per datacenter and rack spread, and each member's datacenter and rack;
/// formats 3 and 4 are read as plain factors and default locations.
/// 6 adds the agreed ring to the schema ([`crate::agreed_ring`]); format 5
/// is read as a schema whose ring the claimant has yet to propose.
/// 7 adds the CRAQ chain configuration to the schema
/// ([`crate::chain_config`]); format 6 is read as every member serving at
/// chain epoch 0.
const FORMAT: u8 = 7;

/// One member of the persisted view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedMember {
    /// The member.
    pub id: NodeId,
    /// Its generation when last seen.
    pub generation: u64,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its ring tokens.
    pub tokens: Vec<Token>,
    /// Its life-cycle status when last seen.
    pub status: NodeStatus,
}

/// Everything a node persists besides its data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Every timestamp this node issued is below this many micros; the next
    /// run starts its clock above it.
    pub clock_high_water: u64,
    /// The generation of the run that wrote this state: the next run's must
    /// be larger, or peers would keep the old run's state and never see the
    /// new one (a wall clock that stepped back across a restart).
    pub generation: u64,
    /// The other members as last known (this node excluded).
    pub members: Vec<PersistedMember>,
    /// Wall micros at which the node last persisted while running (at
    /// least hourly): a node down longer than the tombstone grace may hold
    /// data whose deletes were purged everywhere else, so it refuses to
    /// rejoin until its data directory is wiped.
    pub alive_micros: u64,
    /// The newest schema version this node knew (none: it knew only its
    /// own seed).
    pub schema: Option<crate::schema::Schema>,
    /// The schema acceptor's promise and accepted value, which it must
    /// not forget across a restart.
    pub schema_acceptor: crate::schema_agreement::AcceptorState,
    /// The datacenter and rack of the members in `members`, so a restarted
    /// node places keys as the cluster does before it hears from anyone.
    pub locations: Vec<(NodeId, crate::topology::Location)>,
}

/// Format 2: the same without the schema.
#[derive(Deserialize)]
struct PersistedStateV2 {
    clock_high_water: u64,
    generation: u64,
    members: Vec<PersistedMember>,
    alive_micros: u64,
}

/// Format 5: the schema without the agreed ring.
mod v5 {
    use crate::schema::{KeyspaceDef, KeyspaceId, Schema};
    use crate::schema_agreement::{AcceptorState, Ballot};
    use crate::types::NodeId;
    use serde::Deserialize;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct SchemaV5 {
        pub(super) version: u64,
        pub(super) minted_by: NodeId,
        pub(super) keyspaces: BTreeMap<String, KeyspaceDef>,
        pub(super) next_id: KeyspaceId,
        pub(super) voters: BTreeSet<NodeId>,
        pub(super) recent: Vec<(u64, NodeId, u64)>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct AcceptorStateV5 {
        pub(super) slot: u64,
        pub(super) promised: Ballot,
        pub(super) accepted: Option<(Ballot, SchemaV5)>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct PersistedStateV5 {
        pub(super) clock_high_water: u64,
        pub(super) generation: u64,
        pub(super) members: Vec<super::PersistedMember>,
        pub(super) alive_micros: u64,
        pub(super) schema: Option<SchemaV5>,
        pub(super) schema_acceptor: AcceptorStateV5,
        pub(super) locations: Vec<(NodeId, crate::topology::Location)>,
    }

    impl From<SchemaV5> for Schema {
        fn from(s: SchemaV5) -> Schema {
            Schema {
                version: s.version,
                minted_by: s.minted_by,
                keyspaces: s.keyspaces,
                next_id: s.next_id,
                voters: s.voters,
                recent: s.recent,
                ring: None,
                chain: Default::default(),
            }
        }
    }

    impl From<PersistedStateV5> for super::PersistedState {
        fn from(v5: PersistedStateV5) -> Self {
            super::PersistedState {
                clock_high_water: v5.clock_high_water,
                generation: v5.generation,
                members: v5.members,
                alive_micros: v5.alive_micros,
                schema: v5.schema.map(Schema::from),
                schema_acceptor: AcceptorState {
                    slot: v5.schema_acceptor.slot,
                    promised: v5.schema_acceptor.promised,
                    accepted: v5
                        .schema_acceptor
                        .accepted
                        .map(|(b, s)| (b, Schema::from(s))),
                },
                locations: v5.locations,
            }
        }
    }
}

/// Format 6: the schema without the chain configuration.
mod v6 {
    use crate::agreed_ring::AgreedRing;
    use crate::schema::{KeyspaceDef, KeyspaceId, Schema};
    use crate::schema_agreement::{AcceptorState, Ballot};
    use crate::types::NodeId;
    use serde::Deserialize;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct SchemaV6 {
        pub(super) version: u64,
        pub(super) minted_by: NodeId,
        pub(super) keyspaces: BTreeMap<String, KeyspaceDef>,
        pub(super) next_id: KeyspaceId,
        pub(super) voters: BTreeSet<NodeId>,
        pub(super) recent: Vec<(u64, NodeId, u64)>,
        pub(super) ring: Option<AgreedRing>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct AcceptorStateV6 {
        pub(super) slot: u64,
        pub(super) promised: Ballot,
        pub(super) accepted: Option<(Ballot, SchemaV6)>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct PersistedStateV6 {
        pub(super) clock_high_water: u64,
        pub(super) generation: u64,
        pub(super) members: Vec<super::PersistedMember>,
        pub(super) alive_micros: u64,
        pub(super) schema: Option<SchemaV6>,
        pub(super) schema_acceptor: AcceptorStateV6,
        pub(super) locations: Vec<(NodeId, crate::topology::Location)>,
    }

    impl From<SchemaV6> for Schema {
        fn from(s: SchemaV6) -> Schema {
            Schema {
                version: s.version,
                minted_by: s.minted_by,
                keyspaces: s.keyspaces,
                next_id: s.next_id,
                voters: s.voters,
                recent: s.recent,
                ring: s.ring,
                chain: Default::default(),
            }
        }
    }

    impl From<PersistedStateV6> for super::PersistedState {
        fn from(v6: PersistedStateV6) -> Self {
            super::PersistedState {
                clock_high_water: v6.clock_high_water,
                generation: v6.generation,
                members: v6.members,
                alive_micros: v6.alive_micros,
                schema: v6.schema.map(Schema::from),
                schema_acceptor: AcceptorState {
                    slot: v6.schema_acceptor.slot,
                    promised: v6.schema_acceptor.promised,
                    accepted: v6
                        .schema_acceptor
                        .accepted
                        .map(|(b, s)| (b, Schema::from(s))),
                },
                locations: v6.locations,
            }
        }
    }
}

/// Formats 3 and 4: a keyspace's settings without datacenters.
mod legacy {
    use crate::config::{Consistency, KeyspaceConfig, ReplicationStrategy};
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct KeyspaceConfigV4 {
        pub(super) name: String,
        pub(super) replication_factor: usize,
        pub(super) default_consistency: Consistency,
        pub(super) strategy: ReplicationStrategy,
    }

    impl From<KeyspaceConfigV4> for KeyspaceConfig {
        fn from(k: KeyspaceConfigV4) -> KeyspaceConfig {
            KeyspaceConfig {
                name: k.name,
                replication_factor: k.replication_factor,
                default_consistency: k.default_consistency,
                strategy: k.strategy,
                datacenters: Default::default(),
                spread_racks: false,
            }
        }
    }
}

/// Format 4: keyspaces without datacenters, members without locations.
mod v4 {
    use super::legacy::KeyspaceConfigV4;
    use crate::schema::{KeyspaceDef, KeyspaceId, Schema};
    use crate::schema_agreement::{AcceptorState, Ballot};
    use crate::types::NodeId;
    use serde::Deserialize;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct KeyspaceDefV4 {
        pub(super) id: KeyspaceId,
        pub(super) storage: String,
        pub(super) config: KeyspaceConfigV4,
        pub(super) rf_version: u64,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct SchemaV4 {
        pub(super) version: u64,
        pub(super) minted_by: NodeId,
        pub(super) keyspaces: BTreeMap<String, KeyspaceDefV4>,
        pub(super) next_id: KeyspaceId,
        pub(super) voters: BTreeSet<NodeId>,
        pub(super) recent: Vec<(u64, NodeId, u64)>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct AcceptorStateV4 {
        pub(super) slot: u64,
        pub(super) promised: Ballot,
        pub(super) accepted: Option<(Ballot, SchemaV4)>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct PersistedStateV4 {
        pub(super) clock_high_water: u64,
        pub(super) generation: u64,
        pub(super) members: Vec<super::PersistedMember>,
        pub(super) alive_micros: u64,
        pub(super) schema: Option<SchemaV4>,
        pub(super) schema_acceptor: AcceptorStateV4,
    }

    impl From<SchemaV4> for Schema {
        fn from(s: SchemaV4) -> Schema {
            Schema {
                version: s.version,
                minted_by: s.minted_by,
                keyspaces: s
                    .keyspaces
                    .into_iter()
                    .map(|(name, k)| {
                        let def = KeyspaceDef {
                            id: k.id,
                            storage: k.storage,
                            config: k.config.into(),
                            rf_version: k.rf_version,
                        };
                        (name, def)
                    })
                    .collect(),
                next_id: s.next_id,
                voters: s.voters,
                recent: s.recent,
                ring: None,
                chain: Default::default(),
            }
        }
    }

    impl From<PersistedStateV4> for super::PersistedState {
        fn from(v4: PersistedStateV4) -> Self {
            super::PersistedState {
                clock_high_water: v4.clock_high_water,
                generation: v4.generation,
                members: v4.members,
                alive_micros: v4.alive_micros,
                schema: v4.schema.map(Schema::from),
                schema_acceptor: AcceptorState {
                    slot: v4.schema_acceptor.slot,
                    promised: v4.schema_acceptor.promised,
                    accepted: v4
                        .schema_acceptor
                        .accepted
                        .map(|(b, s)| (b, Schema::from(s))),
                },
                locations: Vec::new(),
            }
        }
    }
}

/// Format 3: keyspaces without the version that set their factor.
mod v3 {
    use super::legacy::KeyspaceConfigV4 as KeyspaceConfig;
    use crate::schema::{KeyspaceDef, KeyspaceId, Schema};
    use crate::schema_agreement::{AcceptorState, Ballot};
    use crate::types::NodeId;
    use serde::Deserialize;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct KeyspaceDefV3 {
        pub(super) id: KeyspaceId,
        pub(super) storage: String,
        pub(super) config: KeyspaceConfig,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct SchemaV3 {
        pub(super) version: u64,
        pub(super) minted_by: NodeId,
        pub(super) keyspaces: BTreeMap<String, KeyspaceDefV3>,
        pub(super) next_id: KeyspaceId,
        pub(super) voters: BTreeSet<NodeId>,
        pub(super) recent: Vec<(u64, NodeId, u64)>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct AcceptorStateV3 {
        pub(super) slot: u64,
        pub(super) promised: Ballot,
        pub(super) accepted: Option<(Ballot, SchemaV3)>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct PersistedStateV3 {
        pub(super) clock_high_water: u64,
        pub(super) generation: u64,
        pub(super) members: Vec<super::PersistedMember>,
        pub(super) alive_micros: u64,
        pub(super) schema: Option<SchemaV3>,
        pub(super) schema_acceptor: AcceptorStateV3,
    }

    impl From<SchemaV3> for Schema {
        fn from(s: SchemaV3) -> Schema {
            Schema {
                version: s.version,
                minted_by: s.minted_by,
                keyspaces: s
                    .keyspaces
                    .into_iter()
                    .map(|(name, k)| {
                        let def = KeyspaceDef {
                            id: k.id,
                            storage: k.storage,
                            config: k.config.into(),
                            rf_version: 0,
                        };
                        (name, def)
                    })
                    .collect(),
                next_id: s.next_id,
                voters: s.voters,
                recent: s.recent,
                ring: None,
                chain: Default::default(),
            }
        }
    }

    impl From<PersistedStateV3> for super::PersistedState {
        fn from(v3: PersistedStateV3) -> Self {
            super::PersistedState {
                clock_high_water: v3.clock_high_water,
                generation: v3.generation,
                members: v3.members,
                alive_micros: v3.alive_micros,
                schema: v3.schema.map(Schema::from),
                schema_acceptor: AcceptorState {
                    slot: v3.schema_acceptor.slot,
                    promised: v3.schema_acceptor.promised,
                    accepted: v3
                        .schema_acceptor
                        .accepted
                        .map(|(b, s)| (b, Schema::from(s))),
                },
                locations: Vec::new(),
            }
        }
    }
}

/// Why persisted bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// Too short to hold a version byte and a checksum.
    #[error("persisted node state is truncated ({0} bytes)")]
    Truncated(usize),
    /// Written by another format version.
    #[error("persisted node state has format {got}, this node reads {want}; a data directory written by another format cannot be read (format 2 lays keys out in token order): move it away and start this node empty (anti-entropy refills it from its peers)")]
    Format {
        /// The version byte found.
        got: u8,
        /// The version this node reads.
        want: u8,
    },
    /// The checksum does not match: the file is damaged.
    #[error("persisted node state is corrupt (checksum mismatch)")]
    Checksum,
    /// The checksum matched but the contents do not decode.
    #[error("persisted node state does not decode: {0}")]
    Malformed(String),
}

impl PersistedState {
    /// The bytes to write: a format byte, the postcard body, and an XXH3-64
    /// checksum of both (little-endian), so a torn or damaged file is
    /// refused instead of trusted.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        // Encoding plain data into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Decodes bytes written by [`PersistedState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, PersistError> {
        if bytes.len() < 9 {
            return Err(PersistError::Truncated(bytes.len()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let mut want = [0u8; 8];
        want.copy_from_slice(sum);
        if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(want) {
            return Err(PersistError::Checksum);
        }
        match body[0] {
            FORMAT => {
                postcard::from_bytes(&body[1..]).map_err(|e| PersistError::Malformed(e.to_string()))
            }
            6 => postcard::from_bytes::<v6::PersistedStateV6>(&body[1..])
                .map(PersistedState::from)
                .map_err(|e| PersistError::Malformed(e.to_string())),
            5 => postcard::from_bytes::<v5::PersistedStateV5>(&body[1..])
                .map(PersistedState::from)
                .map_err(|e| PersistError::Malformed(e.to_string())),
            4 => postcard::from_bytes::<v4::PersistedStateV4>(&body[1..])
                .map(PersistedState::from)
                .map_err(|e| PersistError::Malformed(e.to_string())),
            3 => postcard::from_bytes::<v3::PersistedStateV3>(&body[1..])
                .map(PersistedState::from)
                .map_err(|e| PersistError::Malformed(e.to_string())),
            2 => postcard::from_bytes::<PersistedStateV2>(&body[1..])
                .map(|v2| PersistedState {
                    clock_high_water: v2.clock_high_water,
                    generation: v2.generation,
                    members: v2.members,
                    alive_micros: v2.alive_micros,
                    schema: None,
                    schema_acceptor: Default::default(),
                    locations: Vec::new(),
                })
                .map_err(|e| PersistError::Malformed(e.to_string())),
            got => Err(PersistError::Format { got, want: FORMAT }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistedState {
        PersistedState {
            clock_high_water: 1_700_000_000_000_000,
            generation: 1_700_000_000,
            members: vec![PersistedMember {
                id: NodeId(7),
                generation: 42,
                addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
                tokens: vec![Token(1), Token(u64::MAX)],
                status: NodeStatus::Normal,
            }],
            alive_micros: 1_700_000_000_000_000,
            schema: None,
            schema_acceptor: Default::default(),
            locations: vec![(
                NodeId(7),
                crate::topology::Location {
                    datacenter: "dc2".into(),
                    rack: "r3".into(),
                },
            )],
        }
    }

    #[test]
    fn format_2_is_read_without_a_schema() {
        let s = PersistedState {
            locations: Vec::new(),
            ..sample()
        };
        let mut out = vec![2u8];
        out.extend(
            postcard::to_allocvec(&(s.clock_high_water, s.generation, &s.members, s.alive_micros))
                .unwrap(),
        );
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(PersistedState::decode(&out), Ok(s));
    }

    #[test]
    fn format_3_is_read_with_every_factor_settled() {
        use crate::schema::Schema;
        let mut ks = std::collections::BTreeMap::new();
        ks.insert(
            "default".to_string(),
            crate::config::KeyspaceConfig {
                name: "default".into(),
                replication_factor: 3,
                default_consistency: crate::Consistency::Quorum,
                strategy: crate::config::ReplicationStrategy::Leaderless,
                datacenters: Default::default(),
                spread_racks: false,
            },
        );
        let schema = Schema::seed(NodeId(7), &ks);
        let to_v3 = |s: &Schema| v3::SchemaV3 {
            version: s.version,
            minted_by: s.minted_by,
            keyspaces: s
                .keyspaces
                .iter()
                .map(|(n, k)| {
                    let def = v3::KeyspaceDefV3 {
                        id: k.id,
                        storage: k.storage.clone(),
                        config: legacy::KeyspaceConfigV4 {
                            name: k.config.name.clone(),
                            replication_factor: k.config.replication_factor,
                            default_consistency: k.config.default_consistency,
                            strategy: k.config.strategy,
                        },
                    };
                    (n.clone(), def)
                })
                .collect(),
            next_id: s.next_id,
            voters: s.voters.clone(),
            recent: s.recent.clone(),
        };
        let s = sample();
        let old = v3::PersistedStateV3 {
            clock_high_water: s.clock_high_water,
            generation: s.generation,
            members: s.members.clone(),
            alive_micros: s.alive_micros,
            schema: Some(to_v3(&schema)),
            schema_acceptor: v3::AcceptorStateV3 {
                slot: 2,
                promised: Default::default(),
                accepted: Some((Default::default(), to_v3(&schema))),
            },
        };
        let mut out = vec![3u8];
        out.extend(postcard::to_allocvec(&old).unwrap());
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        let got = PersistedState::decode(&out).unwrap();
        assert_eq!(got.schema.as_ref(), Some(&schema));
        assert_eq!(got.schema_acceptor.slot, 2);
        assert_eq!(got.schema_acceptor.accepted.map(|(_, s)| s), Some(schema));
    }

    #[test]
    fn format_5_is_read_with_no_agreed_ring() {
        let mut ks = std::collections::BTreeMap::new();
        ks.insert(
            "default".to_string(),
            crate::config::KeyspaceConfig::default_keyspace(3),
        );
        let mut schema = crate::schema::Schema::seed(NodeId(7), &ks);
        schema.version = 4;
        let to_v5 = |s: &crate::schema::Schema| v5::SchemaV5 {
            version: s.version,
            minted_by: s.minted_by,
            keyspaces: s.keyspaces.clone(),
            next_id: s.next_id,
            voters: s.voters.clone(),
            recent: s.recent.clone(),
        };
        let s = sample();
        let old = v5::PersistedStateV5 {
            clock_high_water: s.clock_high_water,
            generation: s.generation,
            members: s.members.clone(),
            alive_micros: s.alive_micros,
            schema: Some(to_v5(&schema)),
            schema_acceptor: v5::AcceptorStateV5 {
                slot: 5,
                promised: Default::default(),
                accepted: Some((Default::default(), to_v5(&schema))),
            },
            locations: s.locations.clone(),
        };
        let mut out = vec![5u8];
        out.extend(postcard::to_allocvec(&old).unwrap());
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        let got = PersistedState::decode(&out).unwrap();
        assert_eq!(got.schema.as_ref(), Some(&schema));
        assert_eq!(got.schema.as_ref().and_then(|s| s.ring.as_ref()), None);
        assert_eq!(got.locations, s.locations);
        assert_eq!(got.schema_acceptor.accepted.map(|(_, s)| s), Some(schema));
    }

    #[test]
    fn format_6_is_read_with_every_chain_member_serving() {
        let mut ks = std::collections::BTreeMap::new();
        ks.insert(
            "default".to_string(),
            crate::config::KeyspaceConfig::default_keyspace(3),
        );
        let mut schema = crate::schema::Schema::seed(NodeId(7), &ks);
        schema.version = 9;
        schema.ring = Some(Default::default());
        let to_v6 = |s: &crate::schema::Schema| v6::SchemaV6 {
            version: s.version,
            minted_by: s.minted_by,
            keyspaces: s.keyspaces.clone(),
            next_id: s.next_id,
            voters: s.voters.clone(),
            recent: s.recent.clone(),
            ring: s.ring.clone(),
        };
        let s = sample();
        let old = v6::PersistedStateV6 {
            clock_high_water: s.clock_high_water,
            generation: s.generation,
            members: s.members.clone(),
            alive_micros: s.alive_micros,
            schema: Some(to_v6(&schema)),
            schema_acceptor: v6::AcceptorStateV6 {
                slot: 10,
                promised: Default::default(),
                accepted: Some((Default::default(), to_v6(&schema))),
            },
            locations: s.locations.clone(),
        };
        let mut out = vec![6u8];
        out.extend(postcard::to_allocvec(&old).unwrap());
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        let got = PersistedState::decode(&out).unwrap();
        assert_eq!(got.schema.as_ref(), Some(&schema));
        assert_eq!(
            got.schema.as_ref().map(|s| s.chain.clone()),
            Some(crate::chain_config::ChainConfig::new(0))
        );
        assert_eq!(got.schema_acceptor.accepted.map(|(_, s)| s), Some(schema));
    }

    #[test]
    fn round_trips() {
        let s = sample();
        assert_eq!(PersistedState::decode(&s.encode()), Ok(s));
    }

    #[test]
    fn damage_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(PersistedState::decode(&b).is_err(), "flip at {i} accepted");
        }
        assert_eq!(
            PersistedState::decode(&bytes[..5]),
            Err(PersistError::Truncated(5))
        );
        assert!(PersistedState::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
