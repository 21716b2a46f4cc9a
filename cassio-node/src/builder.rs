//! [`NodeBuilder`]: a running node from a transport, a store and a few settings.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use cassio_node::builder::NodeBuilder;
//! use cassio_transport_tcp::{TcpConfig, TcpTransport};
//! use std::sync::Arc;
//! let transport = TcpTransport::bind("127.0.0.1:0".parse()?, TcpConfig::plaintext("demo")).await?;
//! let store = cassio_store_native::NativeStore::open("/tmp/n1", Default::default())?;
//! let node = NodeBuilder::new(1, "demo")
//!     .transport(Arc::new(transport))
//!     .store(Arc::new(store))
//!     .replication_factor(1)
//!     .client_addr("127.0.0.1:0".parse()?)
//!     .start()
//!     .await?;
//! node.shutdown(false).await?;
//! # Ok(()) }
//! ```

use crate::driver::{Clock, Control, Driver, ShutdownError, StorageLimits, StorageMode};
use crate::gateway::GatewayLimits;
use crate::handle::NodeHandle;
use crate::node_state::NodeStateFile;
use cassio_core::{
    node::ConfigError, Config, Consistency, HintLog, KeyspaceConfig, Node, NodeId, Store, Transport,
};
use core::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Commands queued for the driver before callers wait (back-pressure).
const COMMAND_QUEUE: usize = 4096;

/// Why a node could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No transport was given.
    #[error("a transport is required")]
    NoTransport,
    /// No store was given.
    #[error("a store is required")]
    NoStore,
    /// The core refused the configuration.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The persisted node state could not be read.
    #[error(transparent)]
    State(#[from] crate::node_state::NodeStateError),
    /// The client port could not be bound.
    #[error("cannot listen for clients on {addr}: {source}")]
    ClientBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Assembles a node; see the module docs.
#[must_use]
pub struct NodeBuilder {
    id: NodeId,
    config: Config,
    transport: Option<Arc<dyn Transport>>,
    store: Option<Arc<dyn Store>>,
    hints: Option<Arc<dyn HintLog>>,
    advertise: Option<SocketAddr>,
    client_addr: Option<SocketAddr>,
    mode: StorageMode,
    state_file: Option<NodeStateFile>,
    storage_limits: StorageLimits,
    client_limits: GatewayLimits,
    client_security: crate::auth::ClientSecurity,
}

impl NodeBuilder {
    /// A node with id `id` in cluster `cluster`, with Cassio's defaults.
    pub fn new(id: u64, cluster: impl Into<String>) -> Self {
        let unspecified = SocketAddr::from(([127, 0, 0, 1], 0));
        let config = Config::new(cluster, unspecified);
        NodeBuilder {
            id: NodeId(id),
            config,
            transport: None,
            store: None,
            hints: None,
            advertise: None,
            client_addr: None,
            mode: StorageMode::default(),
            state_file: None,
            storage_limits: StorageLimits::default(),
            client_limits: GatewayLimits::default(),
            client_security: crate::auth::ClientSecurity::default(),
        }
    }

    /// Replaces the whole core configuration (its `listen_addr` is still
    /// taken from the transport unless [`NodeBuilder::advertise`] is set).
    pub fn core_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The peer-to-peer transport (already bound).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// The storage backend.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Where hints for down replicas are kept (normally a
    /// [`crate::hint_log::DiskHintLog`] in the data directory). Without one
    /// the node keeps them in memory ([`crate::hint_log::MemoryHintLog`]),
    /// so a restart loses them (anti-entropy repairs what they carried).
    pub fn hint_log(mut self, hints: Arc<dyn HintLog>) -> Self {
        self.hints = Some(hints);
        self
    }

    /// Seed nodes' peer addresses to join through.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.config.seeds = seeds.into_iter().collect();
        self
    }

    /// The default keyspace's replication factor (its default level stays).
    pub fn replication_factor(mut self, rf: usize) -> Self {
        let level = self.default_keyspace().default_consistency;
        *self.default_keyspace() = KeyspaceConfig {
            default_consistency: level,
            ..KeyspaceConfig::default_keyspace(rf)
        };
        self
    }

    /// The default keyspace's default consistency level.
    pub fn default_consistency(mut self, level: Consistency) -> Self {
        self.default_keyspace().default_consistency = level;
        self
    }

    fn default_keyspace(&mut self) -> &mut KeyspaceConfig {
        let ks = &mut self.config.keyspaces;
        let pos = match ks
            .iter()
            .position(|k| k.name == cassio_core::DEFAULT_KEYSPACE)
        {
            Some(p) => p,
            None => {
                ks.push(KeyspaceConfig::default_keyspace(3));
                ks.len() - 1
            }
        };
        &mut ks[pos]
    }

    /// Virtual nodes on the token ring.
    pub fn vnodes(mut self, vnodes: u16) -> Self {
        self.config.vnodes = vnodes;
        self
    }

    /// This node's datacenter and rack (see `cassio_core::topology`).
    pub fn location(mut self, datacenter: impl Into<String>, rack: impl Into<String>) -> Self {
        self.config.datacenter = datacenter.into();
        self.config.rack = rack.into();
        self
    }

    /// Gossip round interval; the failure detector's tolerances scale with
    /// it (minimum deviation one interval, acceptable pause two).
    pub fn gossip_interval(mut self, interval: Duration) -> Self {
        self.config.gossip.interval = interval;
        self.config.gossip.min_std_deviation = interval;
        self.config.gossip.acceptable_pause = interval * 2;
        self
    }

    /// Phi above which the failure detector convicts a silent peer.
    pub fn phi_threshold(mut self, phi: f64) -> Self {
        self.config.gossip.phi_threshold = phi;
        self
    }

    /// How long a coordinator waits for replicas.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Whether this node joins the cluster for the first time (`true`: it
    /// gossips `Joining` until the cluster answers) or restarts as an
    /// existing member (`false`, the default: `Normal` at once, so its
    /// ranges do not move away and back).
    pub fn bootstrap(mut self, bootstrap: bool) -> Self {
        self.config.bootstrap = bootstrap;
        self
    }

    /// Makes this new node take dead member `dead`'s place: it joins (with
    /// [`NodeBuilder::bootstrap`]) and asks the cluster to take the dead one
    /// off the ring once its ranges are synced ([`cassio_core::Config::replaces`]).
    pub fn replaces(mut self, dead: Option<NodeId>) -> Self {
        self.config.replaces = dead;
        self
    }

    /// Coordinate at once after a restart, without waiting to hear from a
    /// majority of the persisted view ([`cassio_core::Config::start_without_quorum`]
    /// says what it risks).
    pub fn start_without_quorum(mut self, yes: bool) -> Self {
        self.config.start_without_quorum = yes;
        self
    }

    /// How long tombstones are kept at least; a node down longer refuses to
    /// restart on its data. Give the store the same value, or it purges
    /// tombstones the core still counts on (or keeps them needlessly).
    pub fn tombstone_grace(mut self, grace: Duration) -> Self {
        self.config.tombstone_grace = grace;
        self
    }

    /// Anti-entropy settings (round interval, byte rate, ...).
    pub fn repair(mut self, repair: cassio_core::anti_entropy::RepairConfig) -> Self {
        self.config.repair = repair;
        self
    }

    /// Hinted-handoff settings (on or off, window, caps).
    pub fn hints(mut self, hints: cassio_core::hints::HintConfig) -> Self {
        self.config.hints = hints;
        self
    }

    /// This run's generation (must grow across restarts of this node).
    pub fn generation(mut self, generation: u64) -> Self {
        self.config.generation = Some(generation);
        self
    }

    /// The peer address gossiped to others, when it differs from the
    /// transport's local address (e.g. bound to 0.0.0.0).
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// Also serve the native client protocol on `addr`.
    pub fn client_addr(mut self, addr: SocketAddr) -> Self {
        self.client_addr = Some(addr);
        self
    }

    /// Where storage operations run (default: batched worker threads).
    pub fn storage_mode(mut self, mode: StorageMode) -> Self {
        self.mode = mode;
        self
    }

    /// Where the node keeps its persisted view and clock high-water mark
    /// (normally the data directory's [`crate::node_state::FILE_NAME`]). It
    /// is loaded at start and kept up to date; without it a restarted node
    /// starts with an empty view.
    pub fn state_file(mut self, file: NodeStateFile) -> Self {
        self.state_file = Some(file);
        self
    }

    /// Bounds on storage work in flight; past them the node pushes back
    /// (see [`crate::storage_exec`]).
    pub fn storage_limits(mut self, limits: StorageLimits) -> Self {
        self.storage_limits = limits;
        self
    }

    /// Caps on the native client port (connections, buffered bytes).
    pub fn client_limits(mut self, limits: GatewayLimits) -> Self {
        self.client_limits = limits;
        self
    }

    /// Users and TLS of the native client port ([`crate::auth`]).
    pub fn client_security(mut self, security: crate::auth::ClientSecurity) -> Self {
        self.client_security = security;
        self
    }

    /// Starts the driver (and the client server, if asked for).
    pub async fn start(self) -> Result<RunningNode, BuildError> {
        let transport = self.transport.ok_or(BuildError::NoTransport)?;
        let store = self.store.ok_or(BuildError::NoStore)?;
        let hints = self
            .hints
            .unwrap_or_else(|| Arc::new(crate::hint_log::MemoryHintLog::new()));
        let mut config = self.config;
        if let Some(f) = &self.state_file {
            config.persisted = f.load()?;
        }
        config.listen_addr = self.advertise.unwrap_or_else(|| transport.local_addr());
        if config.rng_seed == 0 {
            config.rng_seed = rand::random();
        }
        // The client port is bound before the node starts so that its
        // bound address (port 0 resolved) is what the node gossips for
        // token-aware clients.
        let client_listener = match self.client_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| BuildError::ClientBind { addr, source })?,
            ),
            None => None,
        };
        let client_addr = match (&client_listener, self.client_addr) {
            (Some(l), Some(addr)) => Some(
                l.local_addr()
                    .map_err(|source| BuildError::ClientBind { addr, source })?,
            ),
            _ => None,
        };
        config.client_addr = client_addr;
        let clock = Clock::new();
        let op_timeout = config.request_timeout;
        let hints_enabled = config.hints.enabled;
        let node = Node::new(
            self.id,
            config,
            clock.instant(),
            crate::driver::wall_micros(),
        )?;
        let generation = node.membership().generation();
        let peer_addr = transport.local_addr();

        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (ctl_tx, ctl_rx) = mpsc::channel(4);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (left_tx, left_rx) = watch::channel(false);
        let handle = NodeHandle::new(cmd_tx);
        let driver = Driver {
            node,
            clock,
            state_file: self.state_file,
            transport,
            store,
            hints,
            commands: cmd_rx,
            control: ctl_rx,
            mode: self.mode,
            limits: self.storage_limits,
            op_timeout,
            hints_enabled,
            left: left_tx,
        };
        let driver_task = tokio::spawn(driver.run());
        let client_task = client_listener.map(|l| {
            tokio::spawn(crate::server::serve_client_secured(
                l,
                handle.clone(),
                stop_rx.clone(),
                self.client_limits,
                self.client_security.clone(),
            ))
        });
        tracing::info!(node = %self.id, peer = %peer_addr, generation, "node started");
        Ok(RunningNode {
            id: self.id,
            handle,
            peer_addr,
            client_addr,
            generation,
            control: ctl_tx,
            stop: stop_tx,
            left: left_rx,
            driver_task: Some(driver_task),
            client_task,
        })
    }
}

/// A node whose driver is running; shut it down with [`RunningNode::shutdown`].
#[derive(Debug)]
pub struct RunningNode {
    id: NodeId,
    handle: NodeHandle,
    peer_addr: SocketAddr,
    client_addr: Option<SocketAddr>,
    generation: u64,
    control: mpsc::Sender<Control>,
    stop: watch::Sender<bool>,
    left: watch::Receiver<bool>,
    driver_task: Option<tokio::task::JoinHandle<()>>,
    client_task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// A handle for submitting requests (what gateways use).
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The peer-to-peer address (the transport's local address).
    pub fn local_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The native client protocol's address, if it is served.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client_addr
    }

    /// This run's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A signal that turns `true` when the node starts shutting down: pass
    /// it to gateways so they stop accepting first.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// A signal that turns `true` once a decommission asked over the admin
    /// API ([`NodeHandle::decommission`]) has completed: the node announced
    /// `Left`, the cluster heard it, and the host should now stop it with
    /// [`RunningNode::shutdown`].
    pub fn left_signal(&self) -> watch::Receiver<bool> {
        self.left.clone()
    }

    /// Stops the node gracefully: gateways stop accepting, the node leaves
    /// the ring first if `leave` (gossiping `Leaving`, then `Left`), requests
    /// in flight fail with `ShuttingDown`, storage is flushed and synced,
    /// and the transport is closed.
    pub async fn shutdown(mut self, leave: bool) -> Result<(), ShutdownError> {
        let _ = self.stop.send(true);
        let (tx, rx) = oneshot::channel();
        let sent = self
            .control
            .send(Control::Shutdown { leave, done: tx })
            .await;
        let result = match sent {
            Ok(()) => rx.await.unwrap_or(Err(ShutdownError::DriverGone)),
            Err(_) => Err(ShutdownError::DriverGone),
        };
        if let Some(t) = self.driver_task.take() {
            let _ = t.await;
        }
        if let Some(t) = self.client_task.take() {
            let _ = t.await;
        }
        result
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        // Without an explicit shutdown the driver still stops (it sees its
        // control channel close) and flushes storage in the background.
        let _ = self.stop.send(true);
    }
}
