//! The deterministic cluster simulator.
//!
//! Many [`cassio_core::Node`]s run in one thread on virtual time. A simulated
//! network delays, drops, duplicates and reorders frames and can be split by
//! partitions (symmetric, one-way, non-transitive); nodes crash (their
//! in-memory state is lost, their store keeps what its model says survives)
//! and restart with a new generation, or come back on a wiped directory;
//! clocks are skewed and jump; stores fail and stall; processes pause.
//! Clients record a history that [`checker`] judges against the guarantees
//! Cassio promises; [`nemesis`] names the scenarios.
//!
//! Files: [`sim`] (the engine), [`net`], [`faults`], [`stores`] (store
//! models and wrappers), [`history`], [`checker`], [`nemesis`] (catalog
//! and swarm), [`gossip`] (membership experiments).
//!
//! One `u64` seed decides everything: the same seed gives the same history,
//! byte for byte.

pub mod checker;
pub mod faults;
pub mod gossip;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod sim;
pub mod stores;

use cassio_core::config::Consistency;
use cassio_core::{ClientResponse, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use checker::{check, Violation};
pub use faults::Fault;
pub use history::{OpKind, OpOutcome, OpRecord, ScanPass, SimOutcome};
pub use net::NetConfig;
pub use sim::{SimCluster, StoreFactory};
pub use stores::{FaultyStore, NodeStores, SimStore, SimStores, SimSync};

/// A simulated workload and the faults that hit it.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name, used in failure messages.
    pub name: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Replication factor of the default keyspace.
    pub rf: usize,
    /// Level for client writes and deletes.
    pub write_cl: Consistency,
    /// Level for client reads.
    pub read_cl: Consistency,
    /// Network behaviour while the workload runs.
    pub net: NetConfig,
    /// Faults, at virtual times from the start.
    pub faults: Vec<(Duration, Fault)>,
    /// Each node's wall clock is offset by a uniform value in `[-skew, skew]`.
    pub clock_skew: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations each client performs, one after another.
    pub ops_per_client: usize,
    /// Distinct keys the clients use (few keys means many conflicts).
    pub keys: usize,
    /// A client waits uniformly up to this long between operations.
    pub think_time: Duration,
    /// Time a storage operation takes: uniform in `[0, storage_latency]`.
    pub storage_latency: Duration,
    /// The coordinator's request timeout.
    pub request_timeout: Duration,
    /// How many of the nodes (the first ones) are seeds.
    pub seeds: usize,
    /// Time for the cluster to form by gossip before clients start; fault
    /// times count from its end.
    pub warmup: Duration,
    /// Gossip and failure-detection settings of every node.
    pub gossip: cassio_core::GossipConfig,
    /// Nodes whose default keyspace has another replication factor than
    /// `rf` (a misconfigured node): index → its RF.
    pub rf_overrides: BTreeMap<usize, usize>,
    /// Fixed wall-clock offsets (microseconds, negative: behind) added to
    /// some nodes' skew, e.g. one node an hour ahead.
    pub clock_offsets: BTreeMap<usize, i64>,
    /// Nodes that are not started with the others; a [`Fault::Join`] starts
    /// them (a new node joining under load).
    pub join_later: Vec<usize>,
    /// The first node has no seeds (the cluster's founder, as an operator
    /// starts it); the others join through the seeds.
    pub seedless_first_node: bool,
    /// Broken on purpose: node `.0`'s store acknowledges every `.1`-th
    /// apply without applying it.
    pub drop_every_nth_write: Option<(usize, u32)>,
    /// How long the workload goes on after the last fault (a restart, a
    /// heal) before the simulator stops faults and heals everything: what
    /// a node does right after it comes back is observed under load.
    pub aftermath: Duration,
    /// Time from healing to the repair pass: liveness needs a few rounds
    /// (phi must fall, probes must land) before a read at ALL can work.
    pub heal_time: Duration,
    /// After the repair pass, every key is written and read once more at
    /// the scenario's levels; each must succeed (the cluster is live).
    pub liveness_phase: bool,
    /// Deliberate faults in every node's core, for the mutation tests.
    pub mutations: cassio_core::config::Mutations,
    /// Every node's tombstone grace (the store model purges by it when
    /// `compact_every` is set).
    pub tombstone_grace: Duration,
    /// Every node's anti-entropy settings.
    pub repair: cassio_core::anti_entropy::RepairConfig,
    /// Every node's hinted-handoff settings.
    pub hints: cassio_core::hints::HintConfig,
    /// Compact every running node's store this often (virtual time), so
    /// tombstones past the grace and below the node's purge watermark go.
    pub compact_every: Option<Duration>,
    /// Guarantee 4 without reads: this long after the workload ends, with
    /// no client request in between and before the final restarts and the
    /// repair pass, every key's replicas must hold the same version.
    pub converge_within: Option<Duration>,
    /// Percent of client operations that are deletes (45% are reads, the
    /// rest puts).
    pub delete_percent: u32,
    /// Each schema change waits for the previous one's answer, as one
    /// operator stepping a replication factor does (false: changes fire at
    /// their instants, concurrently).
    pub schema_changes_in_order: bool,
    /// Nodes whose stores are read, key by key, the moment they leave
    /// `Syncing` after each restart; the checker judges those as reads
    /// (a revived node serving reads at ONE serves these versions).
    pub snapshot_when_caught_up: Vec<usize>,
    /// Percent of client puts that carry a TTL of [`Scenario::ttl`] (0: none).
    pub ttl_percent: u32,
    /// The TTL of those puts.
    pub ttl: Duration,
    /// Client keys are the columns of rows ([`CELL_ROW`], or
    /// [`Scenario::cell_rows`] of them): writes and deletes are cell ops, reads alternate between reading the cell and
    /// reading the row's slice that holds only it; the checker judges each
    /// (row, column) as a register.
    pub cells: bool,
    /// With `cells`: how many rows the keys are spread over (by their
    /// token; 1: every key is a column of [`CELL_ROW`]). More rows put
    /// cells on more token ranges, so ring changes move some of them.
    pub cell_rows: u64,
    /// A scan workload instead of (or beside) the clients' (see
    /// [`ScanPlan`]).
    pub scan: Option<ScanPlan>,
    /// Each node's `(datacenter, rack)` by index (a node past the end is
    /// in `dc1`/`rack1`).
    pub topology: Vec<(String, String)>,
    /// The default keyspace's factor per datacenter (empty: `rf` over the
    /// whole cluster).
    pub datacenters: BTreeMap<String, usize>,
    /// Client `c` sends every operation to a node of the `c`-th datacenter
    /// (cyclically, in name order) instead of any node.
    pub pin_clients_to_datacenter: bool,
    /// The keyspace is chain-replicated (CRAQ): the workload adds
    /// compare-and-set and increments, and histories are judged by the
    /// linearizability checker ([`crate::linearizability`]).
    pub craq: bool,
}

/// The scan workload: right after warm-up a loader writes `keys` distinct
/// keys once each (at the write level) and deletes `delete_percent` of
/// them once their write is acknowledged; when all of that was answered,
/// a scanner pages through the keyspace (pages of `page`, at the read
/// level) again and again until the workload ends, under the scenario's
/// faults. The checker wants every finished pass to hold each
/// acknowledged, not deleted key exactly once, and no deleted one.
#[derive(Clone, Debug)]
pub struct ScanPlan {
    /// Distinct keys written.
    pub keys: usize,
    /// Percent of them deleted afterwards.
    pub delete_percent: u32,
    /// Entries per page.
    pub page: usize,
}

/// The row whose columns a [`Scenario::cells`] workload uses.
pub const CELL_ROW: &[u8] = b"row";

/// The row a [`Scenario::cells`] workload puts column `key` in, with
/// `rows` rows ([`Scenario::cell_rows`]).
pub fn cell_row(key: &[u8], rows: u64) -> bytes::Bytes {
    if rows <= 1 {
        return bytes::Bytes::from_static(CELL_ROW);
    }
    let n = cassio_core::Token::of(key).0 % rows;
    bytes::Bytes::from(format!("row{n}"))
}

impl Scenario {
    /// A fault-free scenario with 5 nodes, RF=3, QUORUM reads and writes.
    pub fn new(name: impl Into<String>) -> Self {
        Scenario {
            name: name.into(),
            nodes: 5,
            rf: 3,
            write_cl: Consistency::Quorum,
            read_cl: Consistency::Quorum,
            net: NetConfig::default(),
            faults: Vec::new(),
            clock_skew: Duration::ZERO,
            clients: 4,
            ops_per_client: 60,
            keys: 6,
            think_time: Duration::from_millis(250),
            storage_latency: Duration::from_micros(300),
            request_timeout: Duration::from_secs(2),
            seeds: 3,
            warmup: Duration::from_secs(8),
            gossip: cassio_core::GossipConfig::default(),
            rf_overrides: BTreeMap::new(),
            clock_offsets: BTreeMap::new(),
            join_later: Vec::new(),
            seedless_first_node: false,
            drop_every_nth_write: None,
            aftermath: Duration::ZERO,
            heal_time: Duration::from_secs(40),
            liveness_phase: true,
            mutations: cassio_core::config::Mutations::default(),
            tombstone_grace: Duration::from_secs(10 * 24 * 3600),
            repair: cassio_core::anti_entropy::RepairConfig::default(),
            hints: cassio_core::hints::HintConfig::default(),
            compact_every: None,
            converge_within: None,
            snapshot_when_caught_up: Vec::new(),
            delete_percent: 10,
            schema_changes_in_order: false,
            ttl_percent: 0,
            ttl: Duration::from_millis(500),
            scan: None,
            cells: false,
            cell_rows: 1,
            topology: Vec::new(),
            datacenters: BTreeMap::new(),
            pin_clients_to_datacenter: false,
            craq: false,
        }
    }

    /// Node `i`'s datacenter.
    pub fn datacenter_of(&self, i: usize) -> &str {
        self.topology
            .get(i)
            .map_or(cassio_core::topology::DEFAULT_DATACENTER, |(dc, _)| {
                dc.as_str()
            })
    }

    /// Node `i`'s rack.
    pub fn rack_of(&self, i: usize) -> &str {
        self.topology
            .get(i)
            .map_or(cassio_core::topology::DEFAULT_RACK, |(_, r)| r.as_str())
    }

    /// Whether an acknowledged write at `w` (level, coordinator's
    /// datacenter) is promised to be seen by a later read at `r`: their
    /// replica sets overlap. Without datacenters every pair is judged
    /// (a run at ONE/ONE shows the stale reads weaker levels allow); with
    /// them, `LOCAL_QUORUM` pairs only within one datacenter, and a
    /// global `QUORUM` never with a `LOCAL_QUORUM` (4 of 6 replicas may
    /// hold only one of the reader's datacenter).
    pub fn levels_overlap(
        &self,
        w: (Option<Consistency>, &str),
        r: (Option<Consistency>, &str),
    ) -> bool {
        use Consistency::{All, EachQuorum, LocalQuorum, Quorum};
        if self.datacenters.is_empty() {
            return true;
        }
        match (w.0, r.0) {
            (None, _) | (_, None) => true,
            (Some(All | EachQuorum), _) | (_, Some(All | EachQuorum)) => true,
            (Some(LocalQuorum), Some(LocalQuorum)) => w.1 == r.1,
            (Some(LocalQuorum), Some(Quorum)) | (Some(Quorum), Some(LocalQuorum)) => false,
            _ => true,
        }
    }

    /// How far apart two nodes' hybrid clocks may judge one instant: a
    /// node's wall clock is off true time by its skew and fixed offset, and
    /// its HLC may run up to the cluster's maximum clock offset (500 ms by
    /// default) ahead of that. The checker allows expiries this much
    /// either way of where true time puts them.
    pub fn clock_uncertainty(&self) -> Duration {
        let offsets = self
            .clock_offsets
            .values()
            .map(|o| o.unsigned_abs())
            .max()
            .unwrap_or(0);
        // A node whose clock jumped back reads expiries that much late
        // until its hybrid clock hears of newer timestamps.
        let jumps: u64 = self
            .faults
            .iter()
            .map(|(_, f)| match f {
                Fault::ClockJump { micros, .. } => micros.unsigned_abs(),
                _ => 0,
            })
            .sum();
        self.clock_skew
            + Duration::from_micros(offsets.saturating_add(jumps))
            + Duration::from_millis(500)
    }

    /// Whether reads are guaranteed to see acknowledged writes (R + W > N).
    pub fn overlapping_quorums(&self) -> bool {
        self.read_cl.required(self.rf) + self.write_cl.required(self.rf) > self.rf
    }
}

/// Runs `scenario` once with `seed`, each node on a store from `factory`.
pub fn simulate(scenario: &Scenario, seed: u64, factory: StoreFactory<'_>) -> SimOutcome {
    SimCluster::new(scenario, seed, factory).run()
}

/// Runs `scenario` with `seed` on [`crate::MemStore`]s.
pub fn simulate_mem(scenario: &Scenario, seed: u64) -> SimOutcome {
    simulate(scenario, seed, &|_| {
        Arc::new(crate::MemStore::new()) as Arc<dyn Store>
    })
}

/// The seeds a sweep runs: `CASSIO_SIM_SEED=S` replays just `S`;
/// otherwise `CASSIO_SIM_SEEDS=N` (default `default_count`) seeds from 0.
pub fn sweep_seeds(default_count: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("CASSIO_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let n = std::env::var("CASSIO_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_count);
    (0..n).collect()
}

/// Runs `scenario` over the sweep's seeds (200 unless `CASSIO_SIM_SEEDS`
/// says otherwise) and checks every history; on the first violation, panics
/// with the seed, the violations and the command that replays it.
/// `test_args` are the `cargo test` arguments that select the calling test,
/// e.g. `"-p conformance --test cluster no_faults"`.
pub fn sweep(scenario: &Scenario, test_args: &str, factory: StoreFactory<'_>) -> SweepStats {
    sweep_with(scenario, test_args, factory, 200)
}

/// [`sweep`] with another default number of seeds, for costly stores.
pub fn sweep_with(
    scenario: &Scenario,
    test_args: &str,
    factory: StoreFactory<'_>,
    default_seeds: u64,
) -> SweepStats {
    sweep_each(&|_| scenario.clone(), test_args, factory, default_seeds)
}

/// [`sweep`] over scenarios made per seed by `make` (the swarm draws its
/// faults from the seed). With `CASSIO_SIM_KEEP_GOING=1` the sweep runs
/// every seed and then lists all that failed.
pub fn sweep_each(
    make: &dyn Fn(u64) -> Scenario,
    test_args: &str,
    factory: StoreFactory<'_>,
    default_seeds: u64,
) -> SweepStats {
    let keep_going = std::env::var_os("CASSIO_SIM_KEEP_GOING").is_some();
    let mut stats = SweepStats::default();
    let mut failed: Vec<(u64, String)> = Vec::new();
    for seed in sweep_seeds(default_seeds) {
        let scenario = make(seed);
        let outcome = simulate(&scenario, seed, factory);
        let violations = check(&scenario, &outcome);
        stats.add(&outcome);
        if violations.is_empty() {
            continue;
        }
        let shown: Vec<String> = violations
            .iter()
            .take(5)
            .map(|v| format!("  - {v}"))
            .collect();
        let report = format!(
            "scenario {:?} failed at seed {seed} ({} violations):\n{}\nreplay with: CASSIO_SIM_SEED={seed} cargo test {test_args} -- --nocapture",
            scenario.name,
            violations.len(),
            shown.join("\n")
        );
        if !keep_going {
            panic!("{report}");
        }
        failed.push((seed, report));
    }
    if let Some((_, first)) = failed.first() {
        let seeds: Vec<u64> = failed.iter().map(|(s, _)| *s).collect();
        panic!(
            "{} of {} seeds failed: {seeds:?}\nfirst: {first}",
            failed.len(),
            stats.seeds
        );
    }
    stats
}

/// Totals over a sweep, to show the sweep did real work.
#[derive(Clone, Debug, Default)]
pub struct SweepStats {
    /// Seeds run.
    pub seeds: u64,
    /// Client operations that completed successfully.
    pub ok: u64,
    /// Client operations that failed with an error or were refused.
    pub failed: u64,
    /// Successful reads that returned a value.
    pub reads_with_value: u64,
    /// Finished passes of the scan workload, and their pages.
    pub scan_passes: u64,
    /// Pages of those passes.
    pub scan_pages: u64,
}

impl SweepStats {
    fn add(&mut self, o: &SimOutcome) {
        self.seeds += 1;
        self.scan_passes += o.scans.len() as u64;
        self.scan_pages += o.scans.iter().map(|p| u64::from(p.pages)).sum::<u64>();
        for op in o.history.iter().filter(|op| !op.repair_pass) {
            match &op.outcome {
                OpOutcome::Done(Ok(r)) => {
                    self.ok += 1;
                    if matches!(r, ClientResponse::Value(Some(_))) {
                        self.reads_with_value += 1;
                    }
                }
                OpOutcome::Done(Err(_)) | OpOutcome::Refused | OpOutcome::CoordinatorCrashed => {
                    self.failed += 1
                }
                OpOutcome::Pending => {}
            }
        }
    }
}

/// Client operations completed per second of host time, for the benchmark:
/// one simulation's history length divided by how long it took is measured
/// by the caller; this helper just counts the operations.
pub fn completed_ops(o: &SimOutcome) -> usize {
    o.history
        .iter()
        .filter(|op| matches!(op.outcome, OpOutcome::Done(_)))
        .count()
}
