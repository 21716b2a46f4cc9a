//! The transport conformance suite for QUIC, plus QUIC-specific cases.

#![allow(clippy::unwrap_used)] // tests may unwrap

use bytes::Bytes;
use cassio_core::{NodeId, Transport, TransportError};
use cassio_transport_quic::{QuicConfig, QuicTls, QuicTransport};
use cassio_transport_tcp::tls::{self, TlsConfig, TlsMaterial};
use conformance::transport::{BindOptions, InboundStats, TlsTransportHarness, TransportHarness};
use core::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Short timeouts, so the reconnect cases run quickly.
fn tune(mut config: QuicConfig, opts: &BindOptions) -> QuicConfig {
    config.max_frame = opts.max_frame;
    if let Some(max) = opts.max_peers {
        config.peer.max_peers = max;
    }
    config.peer.connect_timeout = Duration::from_secs(1);
    config.peer.backoff_initial = Duration::from_millis(20);
    config.peer.backoff_max = Duration::from_millis(300);
    config.handshake_timeout = Duration::from_secs(2);
    config.idle_timeout = Duration::from_secs(3);
    config.keep_alive = Duration::from_millis(500);
    config
}

struct Quic {
    dir: tempfile::TempDir,
    ca: tls::DevCa,
    node: TlsConfig,
    foreign: TlsConfig,
}

impl Quic {
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
    ) -> Result<QuicTransport, TransportError> {
        let config = tune(QuicConfig::with_files(opts.cluster.clone(), files), &opts);
        QuicTransport::bind(opts.addr, config).await
    }

    fn anonymous_client(&self) -> rustls::ClientConfig {
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
        client
    }
}

#[async_trait::async_trait]
impl TransportHarness for Quic {
    type Transport = QuicTransport;
    const AUTHENTICATES_PEERS: bool = true;

    async fn setup() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = tls::generate_dev_ca(&dir.path().join("ca"), "conformance").unwrap();
        let node = tls::generate_node_cert(&ca, &dir.path().join("ca"), NodeId(1), &[]).unwrap();
        let other = tls::generate_dev_ca(&dir.path().join("other"), "other").unwrap();
        let foreign =
            tls::generate_node_cert(&other, &dir.path().join("other"), NodeId(1), &[]).unwrap();
        Quic {
            dir,
            ca,
            node,
            foreign,
        }
    }

    async fn bind(&self, opts: BindOptions) -> Result<QuicTransport, TransportError> {
        self.bind_with(opts, self.node.clone()).await
    }

    /// Junk UDP datagrams first (they must be ignored without harm), then
    /// an authenticated connection that sends junk instead of the
    /// handshake, which must be closed.
    async fn inject_garbage(&self, target: SocketAddr) -> bool {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..5u8 {
            let junk: Vec<u8> = (0..1200u32)
                .map(|j| (j as u8).wrapping_mul(31) ^ i)
                .collect();
            udp.send_to(&junk, target).await.unwrap();
        }
        let material = self.node.load().unwrap();
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(material.client.clone()).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = endpoint
            .connect(target, tls::DEFAULT_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(b"GET / HTTP/1.1\r\n\r\n not a cassio hello at all")
            .await
            .unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .is_ok();
        endpoint.close(0u32.into(), b"done");
        closed
    }

    fn stats(t: &QuicTransport) -> InboundStats {
        let s = t.stats();
        InboundStats {
            accepted: s.inbound_accepted,
            refused: s.inbound_refused,
            bad_frames: s.inbound_bad_frames,
        }
    }

    fn peer_count(t: &QuicTransport) -> usize {
        t.peer_count()
    }
}

#[async_trait::async_trait]
impl TlsTransportHarness for Quic {
    async fn bind_without_cert(&self, opts: BindOptions) -> Result<QuicTransport, TransportError> {
        let good = self.node.load().unwrap();
        let material = TlsMaterial {
            client: Arc::new(self.anonymous_client()),
            ..good
        };
        let config = tune(
            QuicConfig::new(opts.cluster.clone(), QuicTls::Rustls(material)),
            &opts,
        );
        QuicTransport::bind(opts.addr, config).await
    }

    async fn bind_with_foreign_ca(
        &self,
        opts: BindOptions,
    ) -> Result<QuicTransport, TransportError> {
        self.bind_with(opts, self.foreign.clone()).await
    }

    async fn bind_as(
        &self,
        opts: BindOptions,
        id: NodeId,
    ) -> Result<QuicTransport, TransportError> {
        self.bind_with(opts, self.cert_for(id)).await
    }

    async fn bind_without_node_id(
        &self,
        opts: BindOptions,
    ) -> Result<QuicTransport, TransportError> {
        let files =
            tls::cert_without_node_id(&self.ca, &self.dir.path().join("ca"), "anon").unwrap();
        self.bind_with(opts, files).await
    }
}

conformance::transport_tests!(quic, Quic);
conformance::tls_transport_tests!(quic_auth, Quic);

/// A small frame queued right after a large one is not held up by it: it
/// travels on its own, prioritised stream and arrives first.
#[test]
fn small_frame_is_not_stuck_behind_a_large_one() {
    conformance::transport::run(async {
        let h = Quic::setup().await;
        let a = h.bind(BindOptions::new("c")).await.unwrap();
        let b = h.bind(BindOptions::new("c")).await.unwrap();
        // Connect first, so both frames go out on an established connection.
        conformance::transport::send_ok(&a, b.local_addr(), Bytes::from_static(b"hi")).await;
        conformance::transport::recv_within(&b, "warm-up").await;
        let big = Bytes::from(vec![7u8; 15 * 1024 * 1024]);
        conformance::transport::send_ok(&a, b.local_addr(), big.clone()).await;
        conformance::transport::send_ok(&a, b.local_addr(), Bytes::from_static(b"urgent")).await;
        let first = conformance::transport::recv_within(&b, "first").await;
        assert_eq!(
            first.payload,
            &b"urgent"[..],
            "small frame waited for the large one"
        );
        let second = conformance::transport::recv_within(&b, "second").await;
        assert!(second.payload == big);
        a.close().await;
        b.close().await;
    });
}

/// QUIC has no plaintext mode: a transport without usable certificates
/// does not start.
#[test]
fn missing_certificates_fail_to_bind_with_a_tls_error() {
    conformance::transport::run(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TlsConfig::new(
            dir.path().join("ca.pem"),
            dir.path().join("n.pem"),
            dir.path().join("n.key"),
        );
        let r = QuicTransport::bind(
            "127.0.0.1:0".parse().unwrap(),
            QuicConfig::with_files("c", cfg),
        )
        .await;
        assert!(matches!(r, Err(TransportError::Tls(_))), "{r:?}");
    });
}
