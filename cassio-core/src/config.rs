//! Node configuration as the core sees it (the host parses files and flags).

use crate::membership::GossipConfig;
use crate::placement::PlacementKind;
use core::net::SocketAddr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How many replicas must answer before the coordinator answers the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Consistency {
    /// One replica.
    One,
    /// Two replicas.
    Two,
    /// Three replicas.
    Three,
    /// A majority of the replication factor: `rf / 2 + 1`.
    Quorum,
    /// Every replica.
    All,
    /// A quorum of the replicas in the coordinator's datacenter (its own
    /// factor `/ 2 + 1`); with a single factor, a quorum of all replicas.
    LocalQuorum,
    /// A quorum of the replicas in every datacenter that holds replicas;
    /// with a single factor, a quorum of all replicas.
    EachQuorum,
}

impl Consistency {
    /// How many replica answers this level needs with replication factor
    /// `rf`. The per-datacenter levels count a quorum in each datacenter
    /// (see [`Consistency::per_datacenter`]); over a single factor they
    /// are a quorum.
    pub fn required(self, rf: usize) -> usize {
        match self {
            Consistency::One => 1,
            Consistency::Two => 2,
            Consistency::Three => 3,
            Consistency::Quorum | Consistency::LocalQuorum | Consistency::EachQuorum => rf / 2 + 1,
            Consistency::All => rf,
        }
    }

    /// Whether this level counts answers per datacenter (`LOCAL_QUORUM`,
    /// `EACH_QUORUM`) when the keyspace has a factor per datacenter.
    pub fn per_datacenter(self) -> bool {
        matches!(self, Consistency::LocalQuorum | Consistency::EachQuorum)
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Consistency::One),
            "two" => Ok(Consistency::Two),
            "three" => Ok(Consistency::Three),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            "local_quorum" => Ok(Consistency::LocalQuorum),
            "each_quorum" => Ok(Consistency::EachQuorum),
            _ => Err(format!(
                "unknown consistency level {s:?} (expected one, two, three, quorum, all, local_quorum or each_quorum)"
            )),
        }
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Consistency::One => "ONE",
            Consistency::Two => "TWO",
            Consistency::Three => "THREE",
            Consistency::Quorum => "QUORUM",
            Consistency::All => "ALL",
            Consistency::LocalQuorum => "LOCAL_QUORUM",
            Consistency::EachQuorum => "EACH_QUORUM",
        };
        f.write_str(s)
    }
}

/// How a keyspace keeps its replicas in step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicationStrategy {
    /// Dynamo-style: fan out to all replicas, count acks, last write wins.
    #[default]
    Leaderless,
    /// Chain replication with apportioned queries (CRAQ): the head orders
    /// each key's writes, the tail commits them, and every serving replica
    /// answers linearizable reads (see [`crate::chain`]).
    Craq,
}

impl ReplicationStrategy {
    /// The name operators use (`lww`, `craq`).
    pub fn name(self) -> &'static str {
        match self {
            ReplicationStrategy::Leaderless => "lww",
            ReplicationStrategy::Craq => "craq",
        }
    }

    /// Parses an operator's name (`lww` or `craq`, any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "lww" | "leaderless" => Some(ReplicationStrategy::Leaderless),
            "craq" | "chain" => Some(ReplicationStrategy::Craq),
            _ => None,
        }
    }
}

/// A keyspace: a namespace of keys with its own replication settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceConfig {
    /// Its name (at most 255 bytes).
    pub name: String,
    /// How many nodes hold each key.
    pub replication_factor: usize,
    /// The level used when a request names none.
    pub default_consistency: Consistency,
    /// How replicas are kept in step.
    pub strategy: ReplicationStrategy,
    /// A replication factor per datacenter (empty: `replication_factor`
    /// over the whole cluster). When set, `replication_factor` is their
    /// sum, and each datacenter's replicas spread over its racks.
    #[serde(default)]
    pub datacenters: BTreeMap<String, usize>,
    /// With a single factor: place the replicas on distinct racks while
    /// the cluster has enough of them (see [`crate::topology`]).
    #[serde(default)]
    pub spread_racks: bool,
}

impl KeyspaceConfig {
    /// The keyspace that exists from the start.
    pub fn default_keyspace(replication_factor: usize) -> Self {
        KeyspaceConfig {
            name: crate::DEFAULT_KEYSPACE.to_string(),
            replication_factor,
            default_consistency: Consistency::Quorum,
            strategy: ReplicationStrategy::Leaderless,
            datacenters: BTreeMap::new(),
            spread_racks: false,
        }
    }

    /// How many replicas it wants and where (the placement's input).
    pub fn replication(&self) -> crate::topology::Replication {
        crate::topology::Replication {
            factor: self.replication_factor,
            datacenters: self.datacenters.clone(),
            spread_racks: self.spread_racks || !self.datacenters.is_empty(),
        }
    }

    /// Sets the replication (factor, datacenters, rack spread) from `r`.
    pub fn set_replication(&mut self, r: &crate::topology::Replication) {
        self.replication_factor = r.total();
        self.datacenters = r.datacenters.clone();
        self.spread_racks = r.spread_racks && r.datacenters.is_empty();
    }
}

/// Everything the core needs to know to run one node.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cluster's name; peers of another cluster are refused.
    pub cluster: String,
    /// Seeds the node's random number generator (gossip targets, jitter).
    pub rng_seed: u64,
    /// Where peers reach this node.
    pub listen_addr: SocketAddr,
    /// Addresses of seed nodes to join through (this node's own is ignored).
    pub seeds: Vec<SocketAddr>,
    /// This node's ring tokens; derived from its id when `None`, so a
    /// restarted node takes the same place without persisting them.
    pub tokens: Option<Vec<crate::types::Token>>,
    /// Virtual nodes per node on the token ring.
    pub vnodes: u16,
    /// The placement strategy.
    pub placement: PlacementKind,
    /// This node's datacenter (see [`crate::topology`]); `dc1` by default.
    pub datacenter: String,
    /// This node's rack within its datacenter; `rack1` by default.
    pub rack: String,
    /// Where this node serves the native client protocol, gossiped so that
    /// token-aware clients can reach each replica (`None`: not served).
    pub client_addr: Option<SocketAddr>,
    /// Keyspaces; `default` is added if missing.
    pub keyspaces: Vec<KeyspaceConfig>,
    /// How long a coordinator waits for replicas before answering `Timeout`.
    pub request_timeout: Duration,
    /// Gossip and failure-detection settings.
    pub gossip: GossipConfig,
    /// This run's generation; it must grow on every restart of the node.
    /// `None` uses the wall clock's seconds (as Cassandra does); hosts that
    /// may restart twice in a second persist the last one and pass a larger.
    pub generation: Option<u64>,
    /// `true` for a node joining the cluster for the first time: it gossips
    /// `Joining`, takes writes for the ranges it will own while it syncs
    /// them from their current owners, and owns them (`Normal`) once every
    /// owner of the next ring has synced (see [`crate::transition`]). Into
    /// a cluster still smaller than a keyspace's replication factor (which
    /// cannot have acknowledged a write at that factor) it takes its tokens
    /// at once, `Syncing` until anti-entropy filled it. `false` (a restart
    /// of an existing member, or a cluster's first node): it is `Normal` at
    /// once, so its ranges never move away and back while it restarts.
    pub bootstrap: bool,
    /// A new node (with `bootstrap`) that takes the place of this dead
    /// member: it joins, and asks the cluster to take the dead one off the
    /// ring once the ranges are synced (`cassio start --replace NODE_ID`).
    pub replaces: Option<crate::types::NodeId>,
    /// How far ahead of this node's clock (wall clock and hybrid clock alike)
    /// a timestamp from a peer may be. A write stamped further ahead is
    /// refused with [`crate::ClientError::ClockOffset`] at its coordinator,
    /// and no farther timestamp is ever observed, so one node whose clock
    /// runs a day ahead cannot drag every node's clock with it. 500 ms by
    /// default, as CockroachDB's `max-offset`.
    pub max_clock_offset: Duration,
    /// What the previous run of this node persisted (its view of the
    /// cluster and its clock's high-water mark), or `None` for a node whose
    /// data directory is new.
    pub persisted: Option<crate::persist::PersistedState>,
    /// Coordinate at once after a restart instead of waiting to hear from a
    /// majority of the persisted view. Only for an operator who knows the
    /// other members are gone for good: with an incomplete view this node
    /// may place writes on the wrong replicas, and acknowledged writes can
    /// then be missed by later reads.
    pub start_without_quorum: bool,
    /// How long a tombstone is kept at least (and at most, once every
    /// replica has completed an anti-entropy round past it); hints older
    /// than this are dropped, and a node down longer than this refuses to
    /// rejoin. 10 days by default, as Cassandra's `gc_grace_seconds`. The
    /// host gives its store the same value.
    pub tombstone_grace: Duration,
    /// Anti-entropy settings.
    pub repair: crate::anti_entropy::RepairConfig,
    /// Hinted-handoff settings.
    pub hints: crate::hints::HintConfig,
    /// Deliberate faults for the simulator's mutation tests, which prove the
    /// checker can see a broken system. Never set them in production.
    #[cfg(feature = "mutations")]
    pub mutations: Mutations,
}

/// Switches that break the node on purpose (feature `mutations`), so that
/// mutation tests can show the simulator's checker catches each breakage.
#[cfg(feature = "mutations")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mutations {
    /// Stamp every write with a random timestamp instead of the clock's.
    pub random_timestamps: bool,
    /// The schema acceptor promises and accepts every ballot, however low
    /// (Paxos without its one rule).
    pub promise_every_ballot: bool,
    /// Count a replica's "superseded" answer as an acknowledgement instead of
    /// re-stamping the write above the newer version (trust the local clock).
    pub trust_local_clock: bool,
    /// Ignore the persisted clock high-water mark at start (and do not wait).
    pub ignore_persisted_clock: bool,
    /// Coordinate even when this node's keyspace settings differ from the
    /// rest of the cluster's.
    pub skip_config_check: bool,
    /// Run no anti-entropy exchange and keep no hint: replicas converge
    /// only through read repair.
    pub no_anti_entropy: bool,
    /// Let the store purge tombstones by the grace period alone, as if
    /// every replica had been repaired (the watermark is set to the end of
    /// time at start).
    pub purge_by_grace_only: bool,
    /// A restarted node is `Normal` at once: it serves reads before it has
    /// caught up.
    pub skip_syncing: bool,
    /// A leaving node announces `Left` at once, before the nodes gaining
    /// its ranges synced them.
    pub leave_without_handoff: bool,
    /// While a node leaves, writes reach only the current ring's replicas
    /// (not the next ring's too).
    pub writes_skip_next_ring: bool,
    /// A dead node asked to be removed is forgotten at once, before its
    /// ranges are synced elsewhere.
    pub remove_without_sync: bool,
    /// A keyspace's replication factor may change again before the
    /// previous change was repaired on every replica.
    pub skip_rf_repair_gate: bool,
    /// Reads ignore expiries: an expired value is served as live.
    pub ignore_expiry: bool,
    /// A scan takes a range whose replica chunk was cut by its limit as
    /// read to its end (it skips the range's tail).
    pub scan_skip_range_tail: bool,
    /// Last write wins per row instead of per cell: every column of a row
    /// is stored as one item, so concurrent writes to different columns
    /// overwrite each other.
    pub row_lww: bool,
    /// `LOCAL_QUORUM` counts acknowledgements from replicas in any
    /// datacenter instead of the coordinator's own.
    pub local_quorum_any_dc: bool,
    /// Place keys by this node's gossip view of the ring, as before the
    /// ring was agreed, instead of by the ring of its schema version.
    pub place_by_gossip: bool,
    /// CRAQ: a read of a dirty key answers the newest version without
    /// asking the tail which one is committed.
    pub chain_skip_version_query: bool,
    /// CRAQ: leases and the wait before a new chain epoch are ignored, so
    /// a member an epoch left behind keeps answering reads.
    pub chain_ignore_leases: bool,
    /// CRAQ: the head commits a write before it reaches the tail.
    pub chain_commit_at_head: bool,
}

impl Config {
    /// A configuration with Cassio's defaults for a node listening at `listen_addr`.
    pub fn new(cluster: impl Into<String>, listen_addr: SocketAddr) -> Self {
        Config {
            cluster: cluster.into(),
            rng_seed: 0,
            listen_addr,
            seeds: Vec::new(),
            tokens: None,
            vnodes: 256,
            placement: PlacementKind::TokenRing,
            datacenter: crate::topology::default_datacenter(),
            rack: crate::topology::default_rack(),
            client_addr: None,
            keyspaces: vec![KeyspaceConfig::default_keyspace(3)],
            request_timeout: Duration::from_secs(2),
            gossip: GossipConfig::default(),
            generation: None,
            bootstrap: false,
            replaces: None,
            max_clock_offset: Duration::from_millis(500),
            persisted: None,
            start_without_quorum: false,
            tombstone_grace: Duration::from_secs(10 * 24 * 3600),
            repair: crate::anti_entropy::RepairConfig::default(),
            hints: crate::hints::HintConfig::default(),
            #[cfg(feature = "mutations")]
            mutations: Mutations::default(),
        }
    }
}

impl Config {
    /// The configured keyspaces by name, with `default` (replication factor
    /// 3) added if missing, or the first one that is invalid: a name empty
    /// or over 255 bytes, a replication factor of zero, a default level that
    /// needs more replicas than the keyspace has, or a name used twice.
    pub fn validate_keyspaces(&self) -> Result<BTreeMap<String, KeyspaceConfig>, ConfigError> {
        let mut keyspaces = BTreeMap::new();
        let mut ks_list = self.keyspaces.clone();
        if !ks_list.iter().any(|k| k.name == crate::DEFAULT_KEYSPACE) {
            ks_list.push(KeyspaceConfig::default_keyspace(3));
        }
        for ks in ks_list {
            // `#` starts the storage names of keyspaces created at runtime.
            if ks.name.is_empty() || ks.name.len() > 255 || ks.name.starts_with('#') {
                return Err(ConfigError::KeyspaceName(ks.name));
            }
            if let Err(error) = ks.replication().check() {
                return Err(ConfigError::KeyspaceReplication {
                    name: ks.name,
                    error,
                });
            }
            let mut ks = ks;
            if !ks.datacenters.is_empty() {
                // The total is the datacenters' sum, whatever was written.
                ks.replication_factor = ks.datacenters.values().sum();
            }
            if ks.replication_factor == 0 {
                return Err(ConfigError::ZeroReplication(ks.name));
            }
            if ks.default_consistency.required(ks.replication_factor) > ks.replication_factor {
                return Err(ConfigError::DefaultConsistency {
                    name: ks.name,
                    level: ks.default_consistency,
                    rf: ks.replication_factor,
                });
            }
            if keyspaces.contains_key(&ks.name) {
                return Err(ConfigError::DuplicateKeyspace(ks.name));
            }
            keyspaces.insert(ks.name.clone(), ks);
        }
        Ok(keyspaces)
    }
}

/// Why a node could not be built from a configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A keyspace name is longer than 255 bytes, empty, or starts with `#`.
    #[error("keyspace name {0:?} must be 1 to 255 bytes and not start with '#'")]
    KeyspaceName(String),
    /// A keyspace has a replication factor of zero.
    #[error("keyspace {0:?} has replication factor 0")]
    ZeroReplication(String),
    /// Two keyspaces share a name.
    #[error("keyspace {0:?} is defined twice")]
    DuplicateKeyspace(String),
    /// A keyspace's default level needs more replicas than it has.
    #[error("keyspace {name:?}: default consistency {level} needs more than {rf} replicas")]
    DefaultConsistency {
        /// The keyspace.
        name: String,
        /// Its default level.
        level: Consistency,
        /// Its replication factor.
        rf: usize,
    },
    /// The node was down longer than the tombstone grace: deletes it missed
    /// may have been purged everywhere else, and its data would bring the
    /// deleted values back. Wipe its data directory (or replace the node)
    /// and start it empty; anti-entropy refills it.
    #[error("this node was down for {down_hours} h, longer than the tombstone grace of {grace_hours} h: its data may resurrect deleted keys; wipe its data directory and start it empty (anti-entropy refills it from its peers)")]
    DownTooLong {
        /// How long it was down, in hours.
        down_hours: u64,
        /// The grace, in hours.
        grace_hours: u64,
    },
    /// The node's datacenter or rack name is invalid.
    #[error(transparent)]
    Location(#[from] crate::topology::TopologyError),
    /// A keyspace's replication per datacenter is invalid.
    #[error("keyspace {name:?}: {error}")]
    KeyspaceReplication {
        /// The keyspace.
        name: String,
        /// What is wrong.
        error: crate::topology::TopologyError,
    },
    /// `vnodes` is zero with the token ring placement.
    #[error("vnodes must be at least 1")]
    ZeroVnodes,
    /// The node's gossiped state (its tokens and keyspaces) would not fit in
    /// one gossip message, so the node could never join.
    #[error("{vnodes} vnodes make this node's gossip state {bytes} bytes, over the gossip message cap of {max} bytes; use fewer vnodes")]
    TooManyVnodes {
        /// Vnodes asked for.
        vnodes: usize,
        /// The state's size.
        bytes: usize,
        /// The cap (`GossipConfig::max_message_bytes`).
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(keyspaces: Vec<KeyspaceConfig>) -> Config {
        let mut config = Config::new("test", "127.0.0.1:7000".parse().expect("addr"));
        config.keyspaces = keyspaces;
        config
    }

    fn keyspace(name: &str, rf: usize, level: Consistency) -> KeyspaceConfig {
        KeyspaceConfig {
            name: name.to_string(),
            replication_factor: rf,
            default_consistency: level,
            strategy: ReplicationStrategy::Leaderless,
            datacenters: BTreeMap::new(),
            spread_racks: false,
        }
    }

    #[test]
    fn valid_keyspaces_are_kept_and_default_is_added() {
        let ks = config_with(vec![keyspace("users", 5, Consistency::Two)])
            .validate_keyspaces()
            .expect("valid");
        assert_eq!(
            ks.keys().cloned().collect::<Vec<_>>(),
            vec!["default".to_string(), "users".to_string()]
        );
        assert_eq!(ks["users"].replication_factor, 5);
        assert_eq!(ks["default"], KeyspaceConfig::default_keyspace(3));
    }

    #[test]
    fn invalid_keyspaces_are_refused_with_their_error() {
        let long = "k".repeat(256);
        let cases = [
            (
                keyspace("", 3, Consistency::One),
                ConfigError::KeyspaceName(String::new()),
            ),
            (
                keyspace(&long, 3, Consistency::One),
                ConfigError::KeyspaceName(long.clone()),
            ),
            (
                keyspace("zero", 0, Consistency::One),
                ConfigError::ZeroReplication("zero".to_string()),
            ),
            (
                keyspace("thin", 2, Consistency::Three),
                ConfigError::DefaultConsistency {
                    name: "thin".to_string(),
                    level: Consistency::Three,
                    rf: 2,
                },
            ),
        ];
        for (ks, expected) in cases {
            assert_eq!(config_with(vec![ks]).validate_keyspaces(), Err(expected));
        }
        let twice = config_with(vec![
            keyspace("users", 3, Consistency::One),
            keyspace("users", 5, Consistency::One),
        ]);
        assert_eq!(
            twice.validate_keyspaces(),
            Err(ConfigError::DuplicateKeyspace("users".to_string()))
        );
    }

    #[test]
    fn node_refuses_a_bad_keyspace_with_the_same_error() {
        let config = config_with(vec![keyspace("zero", 0, Consistency::One)]);
        let expected = config.validate_keyspaces().expect_err("invalid");
        let got =
            crate::Node::new(crate::NodeId(1), config, crate::Instant::from_micros(0), 0).err();
        assert_eq!(got, Some(expected));
    }
}
