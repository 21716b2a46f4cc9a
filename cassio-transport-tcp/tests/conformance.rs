//! The transport conformance suite, for plain TCP and for TCP with mutual TLS.

#![allow(clippy::unwrap_used)] // tests may unwrap

use cassio_core::{NodeId, TransportError};
use cassio_transport_tcp::tls::{self, TlsConfig, TlsMaterial};
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use conformance::transport::{BindOptions, InboundStats, TlsTransportHarness, TransportHarness};
use core::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Short timeouts, so the reconnect cases run in well under a second each.
fn tune(mut config: TcpConfig, opts: &BindOptions) -> TcpConfig {
    config.max_frame = opts.max_frame;
    if let Some(max) = opts.max_peers {
        config.peer.max_peers = max;
    }
    config.peer.connect_timeout = Duration::from_secs(1);
    config.peer.backoff_initial = Duration::from_millis(20);
    config.peer.backoff_max = Duration::from_millis(300);
    config.handshake_timeout = Duration::from_secs(2);
    config
}

fn stats(t: &TcpTransport) -> InboundStats {
    let s = t.stats();
    InboundStats {
        accepted: s.inbound_accepted,
        refused: s.inbound_refused,
        bad_frames: s.inbound_bad_frames,
    }
}

/// Connects a raw socket, writes junk, and reports whether the far end
/// closed (EOF or reset) within five seconds.
async fn raw_garbage(target: SocketAddr) -> bool {
    let mut s = tokio::net::TcpStream::connect(target).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: cassio\r\n\r\n\x00\xff\xfe garbage")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let closed = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .is_ok()
}

struct Plain;

#[async_trait::async_trait]
impl TransportHarness for Plain {
    type Transport = TcpTransport;
    const AUTHENTICATES_PEERS: bool = false;

    async fn setup() -> Self {
        Plain
    }

    async fn bind(&self, opts: BindOptions) -> Result<TcpTransport, TransportError> {
        let config = tune(TcpConfig::plaintext(opts.cluster.clone()), &opts);
        TcpTransport::bind(opts.addr, config).await
    }

    async fn inject_garbage(&self, target: SocketAddr) -> bool {
        raw_garbage(target).await
    }

    fn stats(t: &TcpTransport) -> InboundStats {
        stats(t)
    }

    fn peer_count(t: &TcpTransport) -> usize {
        t.peer_count()
    }
}

struct Tls {
    dir: tempfile::TempDir,
    ca: tls::DevCa,
    node: TlsConfig,
    foreign: TlsConfig,
}

impl Tls {
    /// Node `id`'s certificate from the harness CA, issued on first use.
    fn cert_for(&self, id: NodeId) -> TlsConfig {
        let dir = self.dir.path().join("ca");
        let cfg = TlsConfig::from_dev_dir(&dir, id);
        if cfg.cert.exists() {
            cfg
        } else {
            tls::generate_node_cert(&self.ca, &dir, id, &[]).unwrap()
        }
    }

    async fn bind_with(
        &self,
        opts: BindOptions,
        files: TlsConfig,
    ) -> Result<TcpTransport, TransportError> {
        let config = tune(TcpConfig::mutual_tls(opts.cluster.clone(), files), &opts);
        TcpTransport::bind(opts.addr, config).await
    }
}

#[async_trait::async_trait]
impl TransportHarness for Tls {
    type Transport = TcpTransport;
    const AUTHENTICATES_PEERS: bool = true;

    async fn setup() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = tls::generate_dev_ca(&dir.path().join("ca"), "conformance").unwrap();
        let node = tls::generate_node_cert(&ca, &dir.path().join("ca"), NodeId(1), &[]).unwrap();
        let other = tls::generate_dev_ca(&dir.path().join("other"), "other").unwrap();
        let foreign =
            tls::generate_node_cert(&other, &dir.path().join("other"), NodeId(1), &[]).unwrap();
        Tls {
            dir,
            ca,
            node,
            foreign,
        }
    }

    async fn bind(&self, opts: BindOptions) -> Result<TcpTransport, TransportError> {
        self.bind_with(opts, self.node.clone()).await
    }

    async fn inject_garbage(&self, target: SocketAddr) -> bool {
        raw_garbage(target).await
    }

    fn stats(t: &TcpTransport) -> InboundStats {
        stats(t)
    }

    fn peer_count(t: &TcpTransport) -> usize {
        t.peer_count()
    }
}

#[async_trait::async_trait]
impl TlsTransportHarness for Tls {
    async fn bind_without_cert(&self, opts: BindOptions) -> Result<TcpTransport, TransportError> {
        let good = self.node.load().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in tls::read_certs(&self.node.ca_cert).unwrap() {
            roots.add(ca).unwrap();
        }
        let mut client = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![tls::ALPN.to_vec()];
        let material = TlsMaterial {
            client: Arc::new(client),
            ..good
        };
        let config = tune(TcpConfig::rustls(opts.cluster.clone(), material), &opts);
        TcpTransport::bind(opts.addr, config).await
    }

    async fn bind_with_foreign_ca(
        &self,
        opts: BindOptions,
    ) -> Result<TcpTransport, TransportError> {
        self.bind_with(opts, self.foreign.clone()).await
    }

    async fn bind_as(&self, opts: BindOptions, id: NodeId) -> Result<TcpTransport, TransportError> {
        self.bind_with(opts, self.cert_for(id)).await
    }

    async fn bind_without_node_id(
        &self,
        opts: BindOptions,
    ) -> Result<TcpTransport, TransportError> {
        let files =
            tls::cert_without_node_id(&self.ca, &self.dir.path().join("ca"), "anon").unwrap();
        self.bind_with(opts, files).await
    }
}

conformance::transport_tests!(plain, Plain);
conformance::transport_tests!(mutual_tls, Tls);
conformance::tls_transport_tests!(mutual_tls_auth, Tls);
