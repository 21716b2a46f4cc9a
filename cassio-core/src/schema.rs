//! The cluster's schema: its keyspaces and the nodes that vote on changes
//! to them, as one versioned value.
//!
//! Every version is chosen by the schema agreement
//! ([`crate::schema_agreement`]) and spread to every node, so all nodes
//! that know version `v` know the same keyspaces. Version 0 is each node's
//! own seed (from its configuration), used until the cluster's first
//! version is chosen; a node that joins an existing cluster takes the
//! cluster's version over its own seed.
//!
//! A keyspace has an id that is never reused, so a keyspace dropped and
//! created again under the same name starts empty: a created keyspace's
//! keys are stored under its id ([`KeyspaceDef::storage`]), not its name.

use crate::agreed_ring::AgreedRing;
use crate::chain_config::{ChainConfig, MemberState};
use crate::config::{Consistency, KeyspaceConfig, ReplicationStrategy};
use crate::topology::{Replication, TopologyError};
use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A keyspace's id: never reused within a cluster. `default` is 0.
pub type KeyspaceId = u32;

/// The longest keyspace name accepted.
pub const MAX_KEYSPACE_NAME: usize = 48;

/// The most keyspaces a cluster holds (every node keeps a tree per keyspace).
pub const MAX_KEYSPACES: usize = 256;

/// One keyspace as the cluster defines it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceDef {
    /// Never reused, so a re-created keyspace never sees a dropped one's keys.
    pub id: KeyspaceId,
    /// The name under which the store keeps its keys: a keyspace created at
    /// runtime is `#` and its id, which no keyspace name can be; one from
    /// a node's configuration (version 0, `default` among them) keeps its
    /// name, so data directories written before keyspaces had ids stay
    /// readable.
    pub storage: String,
    /// Its settings (name, replication factor, default level, strategy).
    pub config: KeyspaceConfig,
    /// The schema version of the last alter that changed its replication
    /// factor (0: none since it was created or seeded). The
    /// next factor change waits until every replica completed a repair
    /// under this version (see [`Schema::check_repaired`]).
    pub rf_version: u64,
}

/// A change an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchemaChange {
    /// Create a keyspace.
    Create {
        /// Its name.
        name: String,
        /// Its replication factor.
        replication_factor: usize,
        /// The level of requests that name none.
        default_consistency: Consistency,
    },
    /// Change a keyspace's settings.
    Alter {
        /// The keyspace.
        name: String,
        /// A new replication factor: at most one more or one less than
        /// today's, so every quorum under the old factor meets every quorum
        /// under the new one.
        replication_factor: Option<usize>,
        /// A new default level.
        default_consistency: Option<Consistency>,
    },
    /// Drop a keyspace (its id is never reused).
    Drop {
        /// The keyspace.
        name: String,
    },
    /// Set the nodes that vote on the next versions (the agreement's own
    /// change, when the cluster's token owners changed).
    SetVoters(BTreeSet<NodeId>),
    /// The claimant's change: the ring as its gossip view has it (nodes
    /// that asked to join, leave or be removed) and the voters that go
    /// with it (see [`crate::agreed_ring`]).
    Claim {
        /// The version the claimant read the ring against: a claim is
        /// chosen only as the very next version, so a claim that lost a
        /// race is dropped (the claimant proposes afresh from its newer
        /// view), never applied over a newer ring.
        base: u64,
        /// The voters of the next versions.
        voters: BTreeSet<NodeId>,
        /// The ring.
        ring: AgreedRing,
    },
    /// Create a keyspace placed by datacenter or spread over racks.
    CreatePlaced {
        /// Its name.
        name: String,
        /// How many replicas, and where.
        replication: Replication,
        /// The level of requests that name none.
        default_consistency: Consistency,
    },
    /// Change a keyspace's replication: a single factor by at most one, or
    /// one datacenter's factor by one (adding a datacenter at 1, or
    /// removing one at 1), so every quorum under the old placement meets
    /// every quorum under the new one. Switching between a single factor
    /// and factors per datacenter, or turning rack spread on or off, is
    /// refused: it would move most replicas at once.
    AlterReplication {
        /// The keyspace.
        name: String,
        /// Its new replication.
        replication: Replication,
    },
    /// Create a chain-replicated (CRAQ) keyspace: linearizable, its
    /// writes ordered by each key's head (see [`crate::chain`]).
    CreateCraq {
        /// Its name.
        name: String,
        /// Its chain length (replication factor).
        replication_factor: usize,
    },
    /// The claimant's change of one member's state in the CRAQ chains (out
    /// when down, syncing when back, serving once caught up).
    ChainMember {
        /// The chain epoch the claimant read: a change against an older
        /// one is refused, as a stale claim is.
        base_epoch: u64,
        /// The member.
        node: NodeId,
        /// Its new state.
        state: MemberState,
    },
}

/// Why a change cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SchemaError {
    /// The name is empty, too long or has characters other than ASCII
    /// letters, digits, `_` and `-`.
    #[error("invalid keyspace name {0:?}: use 1 to 48 ASCII letters, digits, '_' or '-'")]
    InvalidName(String),
    /// A keyspace of that name exists.
    #[error("keyspace {0:?} already exists")]
    Exists(String),
    /// No keyspace of that name exists.
    #[error("keyspace {0:?} does not exist")]
    Unknown(String),
    /// The keyspace's previous factor change is not repaired everywhere yet.
    #[error("the replication factor of {name:?} changed at schema version {set_at} and not every replica has completed an anti-entropy round since (all are repaired through version {repaired}); wait for the round (or run `cassio repair`) and retry")]
    RepairPending {
        /// The keyspace.
        name: String,
        /// The version that set today's factor.
        set_at: u64,
        /// The newest version under which every replica completed a round.
        repaired: u64,
    },
    /// A replication factor of 0.
    #[error("replication factor must be at least 1")]
    ZeroReplication,
    /// An alter that moves the replication factor by more than one.
    #[error("replication factor can change by one per step ({from} -> {to} asked); alter it step by step, letting each step's repair finish")]
    ReplicationStep {
        /// Today's factor.
        from: usize,
        /// The one asked for.
        to: usize,
    },
    /// A default level that needs more replicas than the factor.
    #[error("default consistency {level} needs more replicas than the replication factor {rf}")]
    Consistency {
        /// The level.
        level: Consistency,
        /// The factor.
        rf: usize,
    },
    /// `default` cannot be dropped.
    #[error("the default keyspace cannot be dropped")]
    DropDefault,
    /// The cluster holds as many keyspaces as it may.
    #[error("the cluster already holds {0} keyspaces, the most it may")]
    TooMany(usize),
    /// A datacenter name or factor is invalid.
    #[error(transparent)]
    Replication(#[from] TopologyError),
    /// An alter that switches between a single factor and factors per
    /// datacenter, or turns rack spread on or off.
    #[error("keyspace {0:?}: switching between a single factor and factors per datacenter (or turning rack spread on or off) moves most replicas at once and is refused; create a new keyspace and copy the data")]
    ReplicationMode(String),
    /// An alter that moves more than one datacenter's factor, or one by
    /// more than one.
    #[error("replication can change one datacenter's factor by one per step ({from} -> {to} asked); alter it step by step, letting each step's repair finish")]
    DatacenterStep {
        /// Today's replication.
        from: String,
        /// The one asked for.
        to: String,
    },
    /// A CRAQ keyspace's chain length cannot change yet (its members would
    /// need a handover the chains do not make).
    #[error(
        "keyspace {0:?} is chain-replicated (craq): its replication factor is fixed at creation"
    )]
    CraqFactorFixed(String),
    /// A chain member change refused (stale epoch, wrong state, or none
    /// left serving).
    #[error("chain change refused: {0}")]
    Chain(String),
    /// A claimant's ring read against an older version than the newest.
    #[error("the ring was read against schema version {base}, but version {version} is newer")]
    StaleClaim {
        /// The version the claim was read against.
        base: u64,
        /// The newest version.
        version: u64,
    },
}

impl SchemaError {
    /// Whether the change is wrong whatever the schema holds (a bad name,
    /// a factor of 0, dropping `default`). Every other refusal is judged
    /// against a version that may already be old on the node asked, so it
    /// is final only once the node knows it holds the newest version.
    pub fn is_regardless_of_schema(&self) -> bool {
        matches!(
            self,
            SchemaError::InvalidName(_)
                | SchemaError::ZeroReplication
                | SchemaError::DropDefault
                | SchemaError::Replication(_)
        )
    }
}

/// The schema at one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// 0: this node's own seed; 1 and up: chosen by the agreement.
    pub version: u64,
    /// The node whose proposal this version was.
    pub minted_by: NodeId,
    /// Keyspaces by name.
    pub keyspaces: BTreeMap<String, KeyspaceDef>,
    /// The id the next created keyspace gets.
    pub next_id: KeyspaceId,
    /// The nodes whose majority chooses the next version; empty until the
    /// first version is chosen.
    pub voters: BTreeSet<NodeId>,
    /// The changes behind the last [`RECENT_CHANGES`] versions (minter and
    /// its change id), so a proposer that learns of a newer version can
    /// tell whether its own change is in it.
    pub recent: Vec<(u64, NodeId, u64)>,
    /// The ring keys are placed by; `None` until the claimant's first
    /// [`SchemaChange::Claim`] (a node then places keys by its gossip
    /// view, see [`crate::agreed_ring`]).
    pub ring: Option<AgreedRing>,
    /// The chain members' states of every CRAQ keyspace, and the chain
    /// epoch (the version that last changed them or the ring).
    pub chain: ChainConfig,
}

/// How many versions' change ids a schema remembers.
pub const RECENT_CHANGES: usize = 64;

impl Schema {
    /// A node's version-0 seed: its configured keyspaces (`default` gets
    /// id 0, the others ids from 1 in name order).
    pub fn seed(me: NodeId, keyspaces: &BTreeMap<String, KeyspaceConfig>) -> Schema {
        let mut defs = BTreeMap::new();
        let mut next_id = 1;
        for (name, cfg) in keyspaces {
            let id = if name == crate::DEFAULT_KEYSPACE {
                0
            } else {
                next_id += 1;
                next_id - 1
            };
            defs.insert(
                name.clone(),
                KeyspaceDef {
                    id,
                    storage: name.clone(),
                    config: cfg.clone(),
                    rf_version: 0,
                },
            );
        }
        Schema {
            version: 0,
            minted_by: me,
            keyspaces: defs,
            next_id,
            voters: BTreeSet::new(),
            recent: Vec::new(),
            ring: None,
            chain: ChainConfig::new(0),
        }
    }

    /// Whether any keyspace is chain-replicated (CRAQ).
    pub fn has_craq(&self) -> bool {
        self.keyspaces
            .values()
            .any(|k| k.config.strategy == ReplicationStrategy::Craq)
    }

    /// The keyspace called `name`.
    pub fn keyspace(&self, name: &str) -> Option<&KeyspaceDef> {
        self.keyspaces.get(name)
    }

    /// The keyspace whose keys the store keeps under `storage_name`.
    pub fn by_storage_name(&self, storage_name: &str) -> Option<&KeyspaceDef> {
        match self.keyspaces.get(storage_name) {
            Some(k) if k.storage == storage_name => Some(k),
            _ => self.keyspaces.values().find(|k| k.storage == storage_name),
        }
    }

    /// A hash of everything in this version, to tell two versions with the
    /// same number apart.
    pub fn digest(&self) -> u64 {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// The version that holds change `change_id` of `by`, if among the
    /// recent ones.
    pub fn holds_change(&self, by: NodeId, change_id: u64) -> Option<u64> {
        self.recent
            .iter()
            .find(|(_, who, id)| *who == by && *id == change_id)
            .map(|(v, _, _)| *v)
    }

    /// The next version: this one with `change` applied, minted by `by`.
    pub fn apply(&self, change: &SchemaChange, by: NodeId) -> Result<Schema, SchemaError> {
        self.apply_as(change, by, 0)
    }

    /// Refuses a replication-factor change of a keyspace whose previous
    /// one is not yet repaired on every replica: `repaired` is the newest
    /// schema version under which every token owner completed a full
    /// anti-entropy round. One ±1 step keeps old and new quorums
    /// overlapping; two steps before the new replicas caught up would not
    /// (writes acknowledged by 2 of 3 replicas, read from 3 of 5 others).
    pub fn check_repaired(&self, change: &SchemaChange, repaired: u64) -> Result<(), SchemaError> {
        let (name, changes) = match change {
            SchemaChange::Alter {
                name,
                replication_factor: Some(rf),
                ..
            } => (
                name,
                self.keyspaces
                    .get(name)
                    .is_some_and(|d| d.config.replication_factor != *rf),
            ),
            SchemaChange::AlterReplication { name, replication } => (
                name,
                self.keyspaces
                    .get(name)
                    .is_some_and(|d| d.config.replication() != *replication),
            ),
            _ => return Ok(()),
        };
        match self.keyspaces.get(name) {
            Some(def) if changes && def.rf_version > repaired => Err(SchemaError::RepairPending {
                name: name.clone(),
                set_at: def.rf_version,
                repaired,
            }),
            _ => Ok(()),
        }
    }

    /// [`Schema::apply`], recording the change as `by`'s `change_id`.
    pub fn apply_as(
        &self,
        change: &SchemaChange,
        by: NodeId,
        change_id: u64,
    ) -> Result<Schema, SchemaError> {
        let mut next = self.clone();
        next.version = self.version + 1;
        next.minted_by = by;
        if next.recent.len() >= RECENT_CHANGES {
            next.recent.remove(0);
        }
        next.recent.push((next.version, by, change_id));
        match change {
            SchemaChange::Create {
                name,
                replication_factor,
                default_consistency,
            } => self.create_keyspace(
                &mut next,
                KeyspaceConfig {
                    name: name.clone(),
                    replication_factor: *replication_factor,
                    default_consistency: *default_consistency,
                    strategy: ReplicationStrategy::Leaderless,
                    datacenters: Default::default(),
                    spread_racks: false,
                },
            )?,
            SchemaChange::Alter {
                name,
                replication_factor,
                default_consistency,
            } => {
                let def = next
                    .keyspaces
                    .get_mut(name)
                    .ok_or_else(|| SchemaError::Unknown(name.clone()))?;
                if let Some(rf) = *replication_factor {
                    if def.config.strategy == ReplicationStrategy::Craq
                        && rf != def.config.replication_factor
                    {
                        return Err(SchemaError::CraqFactorFixed(name.clone()));
                    }
                    if !def.config.datacenters.is_empty() {
                        return Err(SchemaError::ReplicationMode(name.clone()));
                    }
                    let from = def.config.replication_factor;
                    if rf.abs_diff(from) > 1 {
                        return Err(SchemaError::ReplicationStep { from, to: rf });
                    }
                    if rf != from {
                        def.config.replication_factor = rf;
                        def.rf_version = next.version;
                    }
                }
                if let Some(level) = *default_consistency {
                    def.config.default_consistency = level;
                }
                check_settings(&def.config)?;
            }
            SchemaChange::Drop { name } => {
                if name == crate::DEFAULT_KEYSPACE {
                    return Err(SchemaError::DropDefault);
                }
                if next.keyspaces.remove(name).is_none() {
                    return Err(SchemaError::Unknown(name.clone()));
                }
            }
            SchemaChange::SetVoters(voters) => {
                if *voters != self.voters {
                    // Leases are renewed by the voters: new voters, new epoch.
                    next.chain.epoch = next.version;
                }
                next.voters = voters.clone();
            }
            SchemaChange::Claim { base, voters, ring } => {
                if *base != self.version {
                    return Err(SchemaError::StaleClaim {
                        base: *base,
                        version: self.version,
                    });
                }
                if self.ring.as_ref() != Some(ring) || self.voters != *voters {
                    // Chains follow the ring, and leases are renewed by the
                    // voters: either changing is a new epoch.
                    next.chain.epoch = next.version;
                }
                if let Some(old) = self.ring.as_ref().filter(|_| self.has_craq()) {
                    // A node the move made a current owner joins its chains
                    // syncing, then serves behind the members already
                    // there (it may lack dirty versions they hold, so it
                    // must not head them, nor serve reads before its pull).
                    for (id, m) in &ring.members {
                        if m.now && !old.owns(*id).0 {
                            next.chain.mark_joined(*id, next.version);
                        }
                    }
                }
                next.voters = voters.clone();
                next.ring = Some(ring.clone());
            }
            SchemaChange::CreateCraq {
                name,
                replication_factor,
            } => {
                self.create_keyspace(
                    &mut next,
                    KeyspaceConfig {
                        name: name.clone(),
                        replication_factor: *replication_factor,
                        default_consistency: Consistency::Quorum,
                        strategy: ReplicationStrategy::Craq,
                        datacenters: Default::default(),
                        spread_racks: false,
                    },
                )?;
                if !self.has_craq() {
                    // The first one: nothing for a syncing member to pull.
                    next.chain.first_keyspace(next.version);
                }
            }
            SchemaChange::ChainMember {
                base_epoch,
                node,
                state,
            } => {
                if *base_epoch != self.chain.epoch {
                    return Err(SchemaError::Chain(format!(
                        "read against chain epoch {base_epoch}, the newest is {}",
                        self.chain.epoch
                    )));
                }
                let owners: Vec<NodeId> = self
                    .ring
                    .as_ref()
                    .map(|r| r.owners_now().into_iter().map(|(id, _)| id).collect())
                    .unwrap_or_default();
                let v = next.version;
                next.chain = match state {
                    MemberState::Out => self.chain.take_out(*node, &owners, v),
                    MemberState::Syncing => self.chain.rejoin(*node, v),
                    MemberState::Serving => self.chain.promote(*node, v),
                }
                .map_err(|e| SchemaError::Chain(e.to_string()))?;
            }
            SchemaChange::CreatePlaced {
                name,
                replication,
                default_consistency,
            } => {
                let mut config = KeyspaceConfig::default_keyspace(0);
                config.name = name.clone();
                config.default_consistency = *default_consistency;
                config.set_replication(replication);
                self.create_keyspace(&mut next, config)?;
            }
            SchemaChange::AlterReplication { name, replication } => {
                let def = next
                    .keyspaces
                    .get_mut(name)
                    .ok_or_else(|| SchemaError::Unknown(name.clone()))?;
                replication.check()?;
                let from = def.config.replication();
                let mut to = KeyspaceConfig::default_keyspace(0);
                to.set_replication(replication);
                let to = to.replication();
                check_replication_step(name, &from, &to)?;
                if to != from {
                    def.config.set_replication(&to);
                    def.rf_version = next.version;
                }
                check_settings(&def.config)?;
            }
        }
        Ok(next)
    }
}

impl Schema {
    /// Adds a keyspace of `config` to `next` (this version's successor)
    /// under the next unused id, once its name and settings are checked.
    fn create_keyspace(
        &self,
        next: &mut Schema,
        config: KeyspaceConfig,
    ) -> Result<(), SchemaError> {
        let name = config.name.clone();
        check_name(&name)?;
        if self.keyspaces.contains_key(&name) {
            return Err(SchemaError::Exists(name));
        }
        if self.keyspaces.len() >= MAX_KEYSPACES {
            return Err(SchemaError::TooMany(self.keyspaces.len()));
        }
        check_settings(&config)?;
        next.keyspaces.insert(
            name,
            KeyspaceDef {
                id: self.next_id,
                storage: format!("#{}", self.next_id),
                config,
                // A new keyspace's first step has no earlier one to wait
                // for: its keys were only ever written under this factor.
                rf_version: 0,
            },
        );
        next.next_id = self.next_id + 1;
        Ok(())
    }
}

/// Checks a keyspace name: 1 to 48 ASCII letters, digits, `_` or `-`.
pub fn check_name(name: &str) -> Result<(), SchemaError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEYSPACE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SchemaError::InvalidName(name.to_string()))
    }
}

/// Checks one replication step: the same mode (single factor or per
/// datacenter, rack spread or not), and in all one replica more or fewer
/// in one place, so old and new quorums (of all replicas, of each
/// datacenter) overlap.
fn check_replication_step(
    name: &str,
    from: &Replication,
    to: &Replication,
) -> Result<(), SchemaError> {
    if from.per_datacenter() != to.per_datacenter() || from.spread_racks != to.spread_racks {
        return Err(SchemaError::ReplicationMode(name.to_string()));
    }
    let moved: usize = if from.per_datacenter() {
        let dcs: BTreeSet<&String> = from
            .datacenters
            .keys()
            .chain(to.datacenters.keys())
            .collect();
        dcs.into_iter()
            .map(|dc| {
                let a = from.datacenters.get(dc).copied().unwrap_or(0);
                let b = to.datacenters.get(dc).copied().unwrap_or(0);
                a.abs_diff(b)
            })
            .sum()
    } else {
        from.factor.abs_diff(to.factor)
    };
    if moved > 1 {
        return Err(SchemaError::DatacenterStep {
            from: from.to_string(),
            to: to.to_string(),
        });
    }
    Ok(())
}

fn check_settings(cfg: &KeyspaceConfig) -> Result<(), SchemaError> {
    cfg.replication().check()?;
    if cfg.replication_factor == 0 {
        return Err(SchemaError::ZeroReplication);
    }
    if cfg.default_consistency.required(cfg.replication_factor) > cfg.replication_factor {
        return Err(SchemaError::Consistency {
            level: cfg.default_consistency,
            rf: cfg.replication_factor,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Schema {
        let mut ks = BTreeMap::new();
        ks.insert("default".to_string(), KeyspaceConfig::default_keyspace(3));
        Schema::seed(NodeId(1), &ks)
    }

    fn create(name: &str, rf: usize) -> SchemaChange {
        SchemaChange::Create {
            name: name.into(),
            replication_factor: rf,
            default_consistency: Consistency::Quorum,
        }
    }

    /// A ring of nodes `1..=n` (`joining` on the next ring only).
    fn ring(n: u64, joining: &[u64]) -> AgreedRing {
        AgreedRing {
            members: (1..=n)
                .map(|i| {
                    let m = crate::agreed_ring::RingMember {
                        tokens: vec![crate::types::Token(i * 1000)],
                        location: Default::default(),
                        now: !joining.contains(&i),
                        next: true,
                    };
                    (NodeId(i), m)
                })
                .collect(),
        }
    }

    #[test]
    fn chains_wait_for_a_pull_only_once_a_craq_keyspace_holds_data() {
        let claim = |s: &Schema, r: AgreedRing| SchemaChange::Claim {
            base: s.version,
            voters: s.voters.clone(),
            ring: r,
        };
        let craq = |name: &str| SchemaChange::CreateCraq {
            name: name.into(),
            replication_factor: 3,
        };
        let mut s = seed();
        s = s.apply(&claim(&s, ring(3, &[])), NodeId(1)).unwrap();
        // No CRAQ keyspace: a node the ring makes an owner has nothing to pull.
        s = s.apply(&claim(&s, ring(4, &[4])), NodeId(1)).unwrap();
        s = s.apply(&claim(&s, ring(4, &[])), NodeId(1)).unwrap();
        assert_eq!(s.chain.state(NodeId(4)), MemberState::Serving);
        s = s.apply(&craq("a"), NodeId(1)).unwrap();
        assert_eq!(s.chain.state(NodeId(4)), MemberState::Serving);
        // With one, it does.
        s = s.apply(&claim(&s, ring(5, &[5])), NodeId(1)).unwrap();
        s = s.apply(&claim(&s, ring(5, &[])), NodeId(1)).unwrap();
        assert_eq!(s.chain.state(NodeId(5)), MemberState::Syncing);
        assert_eq!(s.chain.joined_at(NodeId(5)), s.version);
        // A second CRAQ keyspace leaves it syncing (the first holds data).
        s = s.apply(&craq("b"), NodeId(1)).unwrap();
        assert_eq!(s.chain.state(NodeId(5)), MemberState::Syncing);
        // Dropped, none holds data: the next first one serves it at once,
        // under a new chain epoch.
        for name in ["a", "b"] {
            let drop = SchemaChange::Drop { name: name.into() };
            s = s.apply(&drop, NodeId(1)).unwrap();
        }
        s = s.apply(&craq("c"), NodeId(1)).unwrap();
        assert_eq!(s.chain.state(NodeId(5)), MemberState::Serving);
        assert_eq!(s.chain.joined_at(NodeId(5)), 0);
        assert_eq!(s.chain.epoch, s.version);
    }

    #[test]
    fn placed_keyspaces_step_one_datacenter_by_one_and_keep_their_mode() {
        let rep = |s: &str| Replication::parse(s).unwrap();
        let placed = SchemaChange::CreatePlaced {
            name: "p".into(),
            replication: rep("dc1:3,dc2:2"),
            default_consistency: Consistency::LocalQuorum,
        };
        let s = seed().apply(&placed, NodeId(1)).unwrap();
        let k = &s.keyspace("p").unwrap().config;
        assert_eq!(k.replication_factor, 5);
        assert_eq!(k.replication(), rep("dc1:3,dc2:2"));
        let alter = |r: Replication| SchemaChange::AlterReplication {
            name: "p".into(),
            replication: r,
        };
        // One datacenter by one: accepted, and gated on repair like a factor.
        let s2 = s.apply(&alter(rep("dc1:3,dc2:3")), NodeId(1)).unwrap();
        assert_eq!(s2.keyspace("p").unwrap().config.replication_factor, 6);
        assert_eq!(s2.keyspace("p").unwrap().rf_version, s2.version);
        assert!(s2.check_repaired(&alter(rep("dc1:3,dc2:2")), 0).is_err());
        // A new datacenter at 1 is one step; two datacenters at once are not.
        assert!(s.apply(&alter(rep("dc1:3,dc2:2,dc3:1")), NodeId(1)).is_ok());
        for bad in ["dc1:4,dc2:3", "dc1:1,dc2:2", "dc1:3,dc2:2,dc3:2"] {
            assert!(
                matches!(
                    s.apply(&alter(rep(bad)), NodeId(1)),
                    Err(SchemaError::DatacenterStep { .. })
                ),
                "{bad}"
            );
        }
        // Switching modes is refused both ways.
        assert_eq!(
            s.apply(&alter(Replication::from(5)), NodeId(1)),
            Err(SchemaError::ReplicationMode("p".into()))
        );
        let plain_alter = SchemaChange::Alter {
            name: "p".into(),
            replication_factor: Some(4),
            default_consistency: None,
        };
        assert_eq!(
            s.apply(&plain_alter, NodeId(1)),
            Err(SchemaError::ReplicationMode("p".into()))
        );
        let s = s.apply(&create("a", 3), NodeId(1)).unwrap();
        let to_dcs = SchemaChange::AlterReplication {
            name: "a".into(),
            replication: rep("dc1:3"),
        };
        assert_eq!(
            s.apply(&to_dcs, NodeId(1)),
            Err(SchemaError::ReplicationMode("a".into()))
        );
        // A zero factor is refused at create.
        let zero = SchemaChange::CreatePlaced {
            name: "z".into(),
            replication: Replication {
                factor: 0,
                datacenters: [("dc1".to_string(), 0)].into(),
                spread_racks: true,
            },
            default_consistency: Consistency::Quorum,
        };
        assert!(matches!(
            s.apply(&zero, NodeId(1)),
            Err(SchemaError::Replication(TopologyError::ZeroFactor(_)))
        ));
    }

    #[test]
    fn ids_are_never_reused_and_storage_names_follow_them() {
        let s = seed();
        let s = s.apply(&create("a", 3), NodeId(1)).unwrap();
        let first = s.keyspace("a").unwrap().storage.clone();
        let s = s
            .apply(&SchemaChange::Drop { name: "a".into() }, NodeId(1))
            .unwrap();
        let s = s.apply(&create("a", 3), NodeId(1)).unwrap();
        let second = s.keyspace("a").unwrap().storage.clone();
        assert_ne!(first, second);
        assert_eq!(s.version, 3);
        assert_eq!(s.keyspace("default").unwrap().storage, "default");
        assert_eq!(s.by_storage_name(&second).unwrap().config.name, "a");
        assert!(s.by_storage_name(&first).is_none());
    }

    #[test]
    fn a_factor_step_waits_for_the_repair_of_the_previous_one() {
        let alter = |rf: Option<usize>, level: Option<Consistency>| SchemaChange::Alter {
            name: "a".into(),
            replication_factor: rf,
            default_consistency: level,
        };
        let s = seed().apply(&create("a", 3), NodeId(1)).unwrap();
        // A new keyspace's first step waits for nothing.
        assert_eq!(s.keyspace("a").unwrap().rf_version, 0);
        assert_eq!(s.check_repaired(&alter(Some(4), None), 0), Ok(()));
        let s = s.apply(&alter(Some(4), None), NodeId(1)).unwrap();
        assert_eq!(s.keyspace("a").unwrap().rf_version, 2);
        // Repaired only under version 1: the step to 4 is not repaired yet.
        assert_eq!(
            s.check_repaired(&alter(Some(5), None), 1),
            Err(SchemaError::RepairPending {
                name: "a".into(),
                set_at: 2,
                repaired: 1
            })
        );
        assert!(s.check_repaired(&alter(Some(3), None), 1).is_err());
        // Not a factor change: no wait.
        assert_eq!(
            s.check_repaired(&alter(None, Some(Consistency::One)), 0),
            Ok(())
        );
        assert_eq!(s.check_repaired(&alter(Some(4), None), 0), Ok(()));
        // Repaired under version 2: the next step goes.
        assert_eq!(s.check_repaired(&alter(Some(5), None), 2), Ok(()));
        // A level-only alter keeps the factor's version.
        let s = s
            .apply(&alter(None, Some(Consistency::One)), NodeId(1))
            .unwrap();
        assert_eq!(s.keyspace("a").unwrap().rf_version, 2);
        // Seeded keyspaces are settled.
        assert_eq!(seed().keyspace("default").unwrap().rf_version, 0);
    }

    #[test]
    fn bad_changes_are_refused() {
        let s = seed();
        assert_eq!(
            s.apply(&create("default", 3), NodeId(1)),
            Err(SchemaError::Exists("default".into()))
        );
        assert!(matches!(
            s.apply(&create("#1", 3), NodeId(1)),
            Err(SchemaError::InvalidName(_))
        ));
        assert_eq!(
            s.apply(&create("z", 0), NodeId(1)),
            Err(SchemaError::ZeroReplication)
        );
        let step = SchemaChange::Alter {
            name: "default".into(),
            replication_factor: Some(5),
            default_consistency: None,
        };
        assert_eq!(
            s.apply(&step, NodeId(1)),
            Err(SchemaError::ReplicationStep { from: 3, to: 5 })
        );
        assert_eq!(
            s.apply(
                &SchemaChange::Drop {
                    name: "default".into()
                },
                NodeId(1)
            ),
            Err(SchemaError::DropDefault)
        );
        let all = SchemaChange::Alter {
            name: "default".into(),
            replication_factor: Some(2),
            default_consistency: Some(Consistency::Three),
        };
        assert!(matches!(
            s.apply(&all, NodeId(1)),
            Err(SchemaError::Consistency { .. })
        ));
    }

    #[test]
    fn digests_tell_versions_apart() {
        let s = seed();
        let a = s.apply(&create("a", 3), NodeId(1)).unwrap();
        let b = s.apply(&create("b", 3), NodeId(2)).unwrap();
        assert_eq!(a.version, b.version);
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), a.clone().digest());
    }
}
