//! Turning [`Settings`] into a running node with its client ports: what
//! `cassio start` and `cassio local-cluster` do.

use crate::builder::{BuildError, NodeBuilder, RunningNode};
use crate::config::{
    prepare_data_dir, ConfigError, DataDirError, Settings, StoreEngine, SyncSetting, TransportKind,
};
use crate::driver::{ShutdownError, StorageMode};
use cassio_core::{Store, StoreError, Transport, TransportError};
use core::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Why a node could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A setting is wrong (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be prepared.
    #[error("data directory: {0}")]
    DataDir(DataDirError),
    /// The store could not be opened.
    #[error("cannot open the {engine} store in {dir}: {source}")]
    Store {
        /// Engine name.
        engine: &'static str,
        /// Its directory.
        dir: String,
        /// Why.
        source: StoreError,
    },
    /// The hint log could not be opened.
    #[error("cannot open the hint log in {dir}: {source}")]
    Hints {
        /// Its directory.
        dir: String,
        /// Why.
        source: StoreError,
    },
    /// The transport could not be started.
    #[error("cannot start the {kind} transport on {addr}: {source}")]
    Transport {
        /// `tcp` or `quic`.
        kind: &'static str,
        /// The listen address.
        addr: SocketAddr,
        /// Why.
        source: TransportError,
    },
    /// A gateway port could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which port.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The node could not be assembled.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The client ports' certificate or key could not be used.
    #[error("client TLS: {0}")]
    ClientTls(#[from] crate::auth::ClientTlsError),
}

impl LaunchError {
    /// Whether the error is the operator's setting (exit code 2) rather
    /// than a runtime failure.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            LaunchError::Config(_) | LaunchError::DataDir(DataDirError::Config(_))
        )
    }
}

impl From<DataDirError> for LaunchError {
    fn from(e: DataDirError) -> Self {
        LaunchError::DataDir(e)
    }
}

/// A started node and the ports it serves.
#[derive(Debug)]
pub struct Launched {
    /// The node.
    pub node: RunningNode,
    /// Its id.
    pub node_id: u64,
    /// This run's generation.
    pub generation: u64,
    /// Peer-to-peer address.
    pub peer_addr: SocketAddr,
    /// Native client protocol address.
    pub client_addr: Option<SocketAddr>,
    /// RESP gateway address.
    pub resp_addr: Option<SocketAddr>,
    /// HTTP gateway address.
    pub http_addr: Option<SocketAddr>,
    gateways: Vec<JoinHandle<()>>,
}

impl Launched {
    /// One line with every address, as `cassio start` prints it once ready
    /// (tests and scripts parse it).
    pub fn ready_line(&self) -> String {
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_string(), |a| a.to_string());
        format!(
            "cassio: node {} ready peer={} client={} resp={} http={} generation={}",
            self.node_id,
            self.peer_addr,
            show(self.client_addr),
            show(self.resp_addr),
            show(self.http_addr),
            self.generation
        )
    }

    /// Stops gateways, then the node (see [`RunningNode::shutdown`]).
    pub async fn shutdown(self, leave: bool) -> Result<(), ShutdownError> {
        let result = self.node.shutdown(leave).await;
        for g in self.gateways {
            // The node's shutdown signal already told them to stop.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(6), g).await;
        }
        result
    }
}

fn open_store(settings: &Settings, dir: &std::path::Path) -> Result<Arc<dyn Store>, StoreError> {
    match settings.store {
        StoreEngine::Native => {
            use cassio_store_native::{NativeOptions, NativeStore, SyncPolicy};
            let sync = match settings.sync {
                SyncSetting::Always => SyncPolicy::Always,
                SyncSetting::Periodic(d) => SyncPolicy::Periodic(d),
                SyncSetting::Never => SyncPolicy::Never,
            };
            let store = NativeStore::open(
                dir,
                NativeOptions {
                    sync,
                    truncate_corrupt_log: settings.truncate_corrupt_log,
                    // The store and the core must agree on the grace.
                    tombstone_grace: settings.tombstone_grace,
                    ..NativeOptions::default()
                },
            )?;
            if let Some(d) = &store.recovery_report().damage {
                tracing::warn!(segment = %d.segment.display(), offset = d.offset, detail = %d.detail,
                    bytes_dropped = d.bytes_dropped, valid_records_dropped = d.valid_records_dropped,
                    "commit log was damaged; it was cut there");
            }
            Ok(Arc::new(store))
        }
        #[cfg(feature = "rocksdb")]
        StoreEngine::Rocksdb => {
            use cassio_store_rocksdb::{RocksOptions, RocksStore};
            let store = RocksStore::open(
                dir,
                RocksOptions {
                    sync: embedded_sync(settings.sync),
                    tombstone_grace: settings.tombstone_grace,
                    ..RocksOptions::default()
                },
            )?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "sled")]
        StoreEngine::Sled => {
            use cassio_store_rocksdb::{SledOptions, SledStore};
            let store = SledStore::open(
                dir,
                SledOptions {
                    sync: embedded_sync(settings.sync),
                    tombstone_grace: settings.tombstone_grace,
                    ..SledOptions::default()
                },
            )?;
            Ok(Arc::new(store))
        }
        #[allow(unreachable_patterns)]
        other => Err(StoreError::Engine(format!(
            "this binary was built without the `{}` cargo feature",
            other.name()
        ))),
    }
}

#[cfg(any(feature = "rocksdb", feature = "sled"))]
fn embedded_sync(s: SyncSetting) -> cassio_store_rocksdb::SyncPolicy {
    use cassio_store_rocksdb::SyncPolicy;
    match s {
        SyncSetting::Always => SyncPolicy::Always,
        SyncSetting::Periodic(d) => SyncPolicy::Periodic(d),
        SyncSetting::Never => SyncPolicy::Never,
    }
}

async fn bind_transport(settings: &Settings) -> Result<Arc<dyn Transport>, LaunchError> {
    match settings.transport {
        TransportKind::Tcp => {
            use cassio_transport_tcp::{TcpConfig, TcpTransport};
            let config = match &settings.tls {
                Some(tls) => TcpConfig::mutual_tls(&settings.cluster, tls.clone()),
                None => {
                    if settings.listen.ip().is_loopback() {
                        tracing::info!("peer traffic is plaintext: allowed on loopback; configure tls_ca/tls_cert/tls_key for other networks");
                    } else {
                        tracing::warn!(listen = %settings.listen, "peer traffic is plaintext (insecure_plaintext = true)");
                    }
                    TcpConfig::plaintext(&settings.cluster)
                }
            };
            let t = TcpTransport::bind(settings.listen, config)
                .await
                .map_err(|source| LaunchError::Transport {
                    kind: "tcp",
                    addr: settings.listen,
                    source,
                })?;
            Ok(Arc::new(t))
        }
        TransportKind::Quic => {
            use cassio_transport_quic::{QuicConfig, QuicTransport};
            let Some(tls) = &settings.tls else {
                return Err(ConfigError::new(
                    "transport",
                    "quic",
                    "QUIC needs tls_ca, tls_cert and tls_key",
                )
                .into());
            };
            let t = QuicTransport::bind(
                settings.listen,
                QuicConfig::with_files(&settings.cluster, tls.clone()),
            )
            .await
            .map_err(|source| LaunchError::Transport {
                kind: "quic",
                addr: settings.listen,
                source,
            })?;
            Ok(Arc::new(t))
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, LaunchError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| LaunchError::Bind { what, addr, source })
}

/// The node id this node must run with: under mutual TLS, the one its
/// certificate names (peers hold every frame to it), which a configured
/// `node_id` must then equal; without TLS, the configured one if any.
pub fn effective_node_id(settings: &Settings) -> Result<Option<u64>, ConfigError> {
    let Some(tls) = &settings.tls else {
        return Ok(settings.node_id);
    };
    let named = tls
        .node_id()
        .map_err(|e| {
            ConfigError::new(
                "tls_cert",
                tls.cert.display().to_string(),
                format!("{e}; under TLS the certificate must name this node's id (`cassio gen-certs --node-ids ...` issues such certificates)"),
            )
        })?
        .0;
    match settings.node_id {
        Some(configured) if configured != named => Err(ConfigError::new(
            "node_id",
            configured.to_string(),
            format!(
                "the TLS certificate {} names node {named}: peers would refuse every frame of this node; use that id or a certificate issued for {configured}",
                tls.cert.display()
            ),
        )),
        _ => Ok(Some(named)),
    }
}

/// Refuses `--replace` on a data directory that already names a node: a
/// replacement must start empty, and a restart of a node that replaced
/// another must not ask again (drop `--replace` after the first start).
fn check_empty_for_replace(settings: &Settings, dead: u64) -> Result<(), LaunchError> {
    let id_path = settings.data_dir.join("node-id");
    match std::fs::read_to_string(&id_path) {
        Ok(text) => Err(ConfigError::new(
            "replace",
            dead.to_string(),
            format!(
                "data_dir {} already holds node {}: a replacement starts with an empty data directory (after its first start, run it without --replace)",
                settings.data_dir.display(),
                text.trim()
            ),
        )
        .into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LaunchError::DataDir(DataDirError::Io {
            path: id_path,
            source,
        })),
    }
}

/// The client ports' users and TLS, from the settings.
fn client_security(settings: &Settings) -> Result<crate::auth::ClientSecurity, LaunchError> {
    let tls = match &settings.client_tls {
        Some(files) => Some(crate::auth::tls_acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let auth = (!settings.users.is_empty())
        .then(|| crate::auth::Authenticator::new(settings.users.clone()));
    let off_loopback = [settings.client_addr, settings.resp_addr, settings.http_addr]
        .into_iter()
        .flatten()
        .any(|a| !a.ip().is_loopback());
    if off_loopback {
        if auth.is_none() {
            tracing::warn!("client ports off loopback without users (insecure_no_auth = true): anyone who can reach them can read and write");
        } else if tls.is_none() {
            tracing::warn!("client ports off loopback without TLS: passwords cross the network in the clear (set client_tls_cert and client_tls_key)");
        }
    }
    Ok(crate::auth::ClientSecurity { auth, tls })
}

/// Prepares the data directory, opens the store, binds the transport and
/// the client ports, and starts the node and its gateways.
pub async fn launch(settings: &Settings) -> Result<Launched, LaunchError> {
    let now_secs = crate::driver::wall_micros() / 1_000_000;
    if let Some(dead) = settings.replace {
        check_empty_for_replace(settings, dead)?;
    }
    let dd = {
        let dir = settings.data_dir.clone();
        let id = effective_node_id(settings)?;
        let engine = settings.store;
        tokio::task::spawn_blocking(move || prepare_data_dir(&dir, id, engine, now_secs))
            .await
            .map_err(|e| {
                LaunchError::DataDir(DataDirError::Io {
                    path: settings.data_dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            })??
    };
    let store = {
        let s = settings.clone();
        let dir = dd.store_dir.clone();
        tokio::task::spawn_blocking(move || open_store(&s, &dir))
            .await
            .map_err(|e| StoreError::Engine(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| LaunchError::Store {
                engine: settings.store.name(),
                dir: dd.store_dir.display().to_string(),
                source,
            })?
    };
    let hints = {
        let dir = settings.data_dir.join(crate::hint_log::DIR_NAME);
        let open_dir = dir.clone();
        tokio::task::spawn_blocking(move || crate::hint_log::DiskHintLog::open(&open_dir))
            .await
            .map_err(|e| StoreError::Engine(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| LaunchError::Hints {
                dir: dir.display().to_string(),
                source,
            })?
    };
    let security = client_security(settings)?;
    // Gateway ports are bound before the node starts, so a port in use is
    // reported before the node joins the cluster.
    let resp = match settings.resp_addr {
        Some(a) => Some(bind("RESP", a).await?),
        None => None,
    };
    let http = match settings.http_addr {
        Some(a) => Some(bind("HTTP", a).await?),
        None => None,
    };
    let transport = bind_transport(settings).await?;
    let peer_addr = transport.local_addr();
    let mut builder = NodeBuilder::new(dd.node_id, settings.cluster.clone())
        .transport(transport)
        .store(store)
        .hint_log(Arc::new(hints))
        .seeds(settings.seeds.iter().copied())
        .replication_factor(settings.replication_factor)
        .default_consistency(settings.consistency)
        .vnodes(settings.vnodes)
        .location(settings.datacenter.clone(), settings.rack.clone())
        .gossip_interval(settings.gossip_interval)
        .request_timeout(settings.request_timeout)
        .generation(dd.generation)
        .state_file(crate::node_state::NodeStateFile::in_dir(&settings.data_dir))
        .storage_limits(settings.storage_limits)
        .client_limits(settings.gateway_limits)
        .client_security(security.clone())
        // A node that has never been a member joins as `Joining`; one whose
        // data dir already names it restarts as the member it was.
        .bootstrap(dd.fresh && !settings.seeds.is_empty())
        .replaces(settings.replace.map(cassio_core::NodeId))
        .start_without_quorum(settings.start_without_quorum)
        .tombstone_grace(settings.tombstone_grace)
        .repair(settings.repair.clone())
        .hints(settings.hints.clone())
        // Measured (see the driver's docs): group commit needs concurrent
        // callers, which per-op blocking tasks give and batches do not.
        .storage_mode(match settings.sync {
            SyncSetting::Always => StorageMode::BlockingPerOp,
            _ => StorageMode::Workers {
                threads: settings.storage_threads,
            },
        });
    builder = builder.phi_threshold(settings.phi_threshold);
    if let Some(a) = settings.advertise {
        builder = builder.advertise(a);
    }
    if let Some(a) = settings.client_addr {
        builder = builder.client_addr(a);
    }
    let node = match builder.start().await {
        Ok(n) => n,
        Err(BuildError::ClientBind { addr, source }) => {
            return Err(LaunchError::Bind {
                what: "native clients",
                addr,
                source,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let mut gateways = Vec::new();
    let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let resp_addr = local(&resp);
    let http_addr = local(&http);
    let limits = settings.gateway_limits;
    if let Some(l) = resp {
        let (h, stop) = (node.handle(), node.shutdown_signal());
        let sec = security.clone();
        gateways.push(tokio::spawn(async move {
            if let Err(e) = crate::gateway::serve_resp_secured(l, h, stop, limits, sec).await {
                tracing::error!(error = %e, "RESP gateway stopped");
            }
        }));
    }
    if let Some(l) = http {
        let (h, stop) = (node.handle(), node.shutdown_signal());
        let sec = security.clone();
        gateways.push(tokio::spawn(async move {
            if let Err(e) = crate::gateway::serve_http_secured(l, h, stop, limits, sec).await {
                tracing::error!(error = %e, "HTTP gateway stopped");
            }
        }));
    }
    Ok(Launched {
        node_id: dd.node_id,
        generation: dd.generation,
        peer_addr,
        client_addr: node.client_addr(),
        resp_addr,
        http_addr,
        node,
        gateways,
    })
}
