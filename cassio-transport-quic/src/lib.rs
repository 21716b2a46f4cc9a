//! Cassio's QUIC transport (quinn): always TLS 1.3, with mutual
//! authentication by the cluster CA (the same [`TlsConfig`] as TCP+TLS).
//!
//! One connection per destination peer. After the handshake (versions and
//! cluster name, on a bidirectional stream) frames travel on two
//! unidirectional streams: a prioritised one for small frames and another
//! for frames over [`QuicConfig::large_frame`] bytes, so an 8 MiB frame
//! does not hold up the gossip and acks queued behind it. Order is kept
//! within each stream; a large frame may overtake or be overtaken by small
//! ones.
//!
//! Every certificate names its node's id (see `cassio_transport_tcp::tls`);
//! the accepting side hands the dialler's id with each of its frames
//! (`InboundFrame::peer_id`), and either side refuses a peer whose
//! certificate names none.

use bytes::{Bytes, BytesMut};
use cassio_core::{InboundFrame, NodeId, SendManyError, Transport, TransportError};
use cassio_transport_tcp::framing::{self, ReadFrameError};
use cassio_transport_tcp::handshake::{self, HandshakeError, Hello};
use cassio_transport_tcp::inbox::{Inbox, Tasks};
use cassio_transport_tcp::peers::{Link, Outbox, Peers};
use cassio_transport_tcp::tls;
pub use cassio_transport_tcp::{PeerConfig, TlsConfig, TlsMaterial, TransportStats};
use core::net::SocketAddr;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, ConnectionError, Endpoint, VarInt};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Application close codes, so the other end can log why.
mod close_code {
    pub const NORMAL: u32 = 0;
    pub const HANDSHAKE_REFUSED: u32 = 1;
    pub const BAD_FRAME: u32 = 2;
}

/// Where a [`QuicTransport`] gets its TLS material.
#[derive(Clone, Debug)]
pub enum QuicTls {
    /// Certificate files (see `cassio_transport_tcp::tls`).
    Files(TlsConfig),
    /// Prepared rustls configurations (TLS 1.3, `ring`).
    Rustls(TlsMaterial),
}

/// Settings of a [`QuicTransport`].
#[derive(Clone, Debug)]
pub struct QuicConfig {
    /// The cluster's name, checked in every handshake.
    pub cluster: String,
    /// Certificates; QUIC has no plaintext mode.
    pub tls: QuicTls,
    /// The largest frame sent or accepted.
    pub max_frame: usize,
    /// Frames longer than this travel on the large-frame stream.
    pub large_frame: usize,
    /// Outbound queues, connect timeout and backoff.
    pub peer: PeerConfig,
    /// How long an inbound connection may take for TLS and the handshake.
    pub handshake_timeout: Duration,
    /// A connection silent for this long is considered dead.
    pub idle_timeout: Duration,
    /// How often an idle connection is pinged to keep it (and the idle
    /// timeout's knowledge of the peer) alive.
    pub keep_alive: Duration,
    /// Bytes of received frames held for `recv` before inbound streams
    /// stop being read.
    pub inbound_buffer_bytes: usize,
}

impl QuicConfig {
    /// Defaults for `cluster` with the given TLS material.
    pub fn new(cluster: impl Into<String>, tls: QuicTls) -> Self {
        QuicConfig {
            cluster: cluster.into(),
            tls,
            max_frame: cassio_core::wire::DEFAULT_MAX_FRAME,
            large_frame: 64 * 1024,
            peer: PeerConfig::default(),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(3),
            inbound_buffer_bytes: 64 * 1024 * 1024,
        }
    }

    /// Defaults for `cluster` with certificates from files.
    pub fn with_files(cluster: impl Into<String>, tls: TlsConfig) -> Self {
        Self::new(cluster, QuicTls::Files(tls))
    }
}

/// The QUIC transport.
#[derive(Debug)]
pub struct QuicTransport {
    local: SocketAddr,
    endpoint: Endpoint,
    inbox: Arc<Inbox>,
    peers: Peers<QuicLink>,
    tasks: Arc<Tasks>,
}

struct QuicLink {
    endpoint: Endpoint,
    server_name: String,
    hello: Hello,
    large_frame: usize,
}

struct Acceptor {
    hello: Hello,
    inbox: Arc<Inbox>,
    max_frame: usize,
    handshake_timeout: Duration,
}

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

fn invalid(msg: &str) -> TransportError {
    TransportError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        msg.to_owned(),
    ))
}

impl QuicTransport {
    /// Binds a UDP endpoint on `addr` (port 0 picks one) and starts accepting.
    pub async fn bind(addr: SocketAddr, config: QuicConfig) -> Result<Self, TransportError> {
        let hello = Hello::new(&config.cluster)?;
        if config.max_frame == 0 || config.max_frame > u32::MAX as usize {
            return Err(invalid("max_frame must be between 1 and u32::MAX"));
        }
        let material = match &config.tls {
            QuicTls::Files(files) => files.load()?,
            QuicTls::Rustls(m) => m.clone(),
        };
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                config
                    .idle_timeout
                    .try_into()
                    .map_err(|_| invalid("idle_timeout is out of range"))?,
            ))
            .keep_alive_interval(Some(config.keep_alive))
            // One handshake stream, then the two frame streams; a few spare
            // for streams being replaced after an error.
            .max_concurrent_bidi_streams(VarInt::from_u32(4))
            .max_concurrent_uni_streams(VarInt::from_u32(8))
            // Enough in flight for a multi-megabyte frame to stream at
            // loopback speed without waiting on window updates.
            .stream_receive_window(VarInt::from_u32(8 * 1024 * 1024))
            .receive_window(VarInt::from_u32(16 * 1024 * 1024))
            .send_window(16 * 1024 * 1024);
        let transport = Arc::new(transport);

        let server_crypto = QuicServerConfig::try_from(material.server.clone()).map_err(tls_err)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let client_crypto = QuicClientConfig::try_from(material.client.clone()).map_err(tls_err)?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);

        let mut endpoint = Endpoint::server(server, addr)?;
        endpoint.set_default_client_config(client);
        let local = endpoint.local_addr()?;

        let inbox = Inbox::new(config.inbound_buffer_bytes.max(config.max_frame));
        let tasks = Tasks::new();
        let acceptor = Arc::new(Acceptor {
            hello: hello.clone(),
            inbox: inbox.clone(),
            max_frame: config.max_frame,
            handshake_timeout: config.handshake_timeout,
        });
        tasks.spawn(accept_loop(
            endpoint.clone(),
            acceptor,
            Arc::downgrade(&tasks),
        ));
        let link = QuicLink {
            endpoint: endpoint.clone(),
            server_name: material.server_name.to_str().into_owned(),
            hello,
            large_frame: config.large_frame,
        };
        tracing::info!(addr = %local, cluster = %config.cluster, "quic transport listening");
        Ok(QuicTransport {
            local,
            endpoint,
            inbox,
            peers: Peers::new(link, config.peer, config.max_frame, tasks.clone()),
            tasks,
        })
    }

    /// Counters of inbound connections.
    pub fn stats(&self) -> TransportStats {
        self.inbox.stats()
    }

    /// How many destination peers are tracked (bounded by
    /// [`PeerConfig::max_peers`]).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.tasks.shutdown();
        self.endpoint
            .close(VarInt::from_u32(close_code::NORMAL), b"shutting down");
    }
}

#[async_trait::async_trait]
impl Transport for QuicTransport {
    async fn send(&self, to: SocketAddr, frame: Bytes) -> Result<(), TransportError> {
        self.peers.send(to, frame).await
    }

    async fn recv(&self) -> Result<InboundFrame, TransportError> {
        self.inbox.recv().await
    }

    async fn send_many(&self, to: SocketAddr, frames: Vec<Bytes>) -> Result<(), SendManyError> {
        self.peers.send_many(to, frames).await
    }

    async fn recv_many(
        &self,
        out: &mut Vec<InboundFrame>,
        max: usize,
    ) -> Result<usize, TransportError> {
        self.inbox.recv_many(out, max).await
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn forget(&self, addr: SocketAddr) {
        self.peers.forget(addr);
    }

    async fn close(&self) {
        self.inbox.close();
        self.peers.close();
        self.tasks.shutdown();
        self.endpoint
            .close(VarInt::from_u32(close_code::NORMAL), b"shutting down");
        // Give the close packets a moment to leave, so peers notice at once
        // instead of after their idle timeout; never wait long for it.
        let _ = tokio::time::timeout(Duration::from_millis(300), self.endpoint.wait_idle()).await;
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100..=0x1ff.
fn is_crypto(code: quinn::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

/// Maps a connection error, recognising TLS (crypto) failures and refusals.
fn connection_error(addr: SocketAddr, e: &ConnectionError) -> TransportError {
    match e {
        ConnectionError::TransportError(t) if is_crypto(t.code) => {
            TransportError::Tls(format!("{addr}: {t}"))
        }
        ConnectionError::ConnectionClosed(c) if is_crypto(c.error_code) => {
            TransportError::Tls(format!("{addr}: {c}"))
        }
        ConnectionError::ApplicationClosed(a)
            if a.error_code == VarInt::from_u32(close_code::HANDSHAKE_REFUSED) =>
        {
            TransportError::Handshake {
                addr,
                reason: format!(
                    "peer refused the handshake: {}",
                    String::from_utf8_lossy(&a.reason)
                ),
            }
        }
        other => TransportError::Unreachable {
            addr,
            reason: other.to_string(),
        },
    }
}

async fn accept_loop(endpoint: Endpoint, acceptor: Arc<Acceptor>, tasks: Weak<Tasks>) {
    while let Some(incoming) = endpoint.accept().await {
        let Some(tasks) = tasks.upgrade() else { return };
        tasks.spawn(serve_connection(
            incoming,
            acceptor.clone(),
            Arc::downgrade(&tasks),
        ));
    }
}

/// The node id the peer's certificate names. Our verifiers already required
/// it; configurations built by the caller may not have, so it is checked
/// after every handshake.
fn peer_id_of(conn: &Connection, addr: SocketAddr) -> Result<NodeId, TransportError> {
    let chain = conn.peer_identity().and_then(|any| {
        any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()
    });
    tls::peer_node_id(chain.as_deref().map(Vec::as_slice)).map_err(|e| {
        conn.close(
            VarInt::from_u32(close_code::HANDSHAKE_REFUSED),
            e.to_string().as_bytes(),
        );
        TransportError::Tls(format!("{addr}: {e}"))
    })
}

async fn inbound_handshake(
    incoming: quinn::Incoming,
    from: SocketAddr,
    acceptor: &Acceptor,
) -> Result<(Connection, NodeId), TransportError> {
    let conn = incoming.await.map_err(|e| connection_error(from, &e))?;
    let peer_id = peer_id_of(&conn, from)?;
    let (send, recv) = conn
        .accept_bi()
        .await
        .map_err(|e| connection_error(from, &e))?;
    let mut stream = tokio::io::join(recv, send);
    match handshake::server(&mut stream, &acceptor.hello, from).await {
        Ok(()) => Ok((conn, peer_id)),
        Err(HandshakeError::Refused(reason)) => {
            // Let the refusal reach the peer before the connection goes: it
            // closes on reading it, and that close is our cue.
            let (_, mut send) = stream.into_inner();
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
            conn.close(
                VarInt::from_u32(close_code::HANDSHAKE_REFUSED),
                reason.as_bytes(),
            );
            Err(TransportError::Handshake { addr: from, reason })
        }
        Err(HandshakeError::Io(e)) => {
            conn.close(
                VarInt::from_u32(close_code::HANDSHAKE_REFUSED),
                b"handshake failed",
            );
            Err(match conn.close_reason() {
                Some(c) => connection_error(from, &c),
                None => TransportError::Unreachable {
                    addr: from,
                    reason: e.to_string(),
                },
            })
        }
    }
}

async fn serve_connection(incoming: quinn::Incoming, acceptor: Arc<Acceptor>, tasks: Weak<Tasks>) {
    let from = incoming.remote_address();
    let (conn, peer_id) = match tokio::time::timeout(
        acceptor.handshake_timeout,
        inbound_handshake(incoming, from, &acceptor),
    )
    .await
    {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            acceptor.inbox.note_refused();
            tracing::warn!(peer = %from, error = %e, "inbound connection refused");
            return;
        }
        Err(_) => {
            acceptor.inbox.note_refused();
            tracing::warn!(peer = %from, "inbound connection refused: handshake timed out");
            return;
        }
    };
    acceptor.inbox.note_accepted();
    tracing::debug!(peer = %from, node = %peer_id, "inbound connection accepted");
    loop {
        match conn.accept_uni().await {
            Ok(stream) => {
                let Some(tasks) = tasks.upgrade() else { return };
                tasks.spawn(read_stream(
                    stream,
                    conn.clone(),
                    (from, peer_id),
                    acceptor.clone(),
                ));
            }
            Err(e) => {
                tracing::debug!(peer = %from, error = %e, "inbound connection ended");
                return;
            }
        }
    }
}

async fn read_stream(
    mut stream: quinn::RecvStream,
    conn: Connection,
    (from, peer_id): (SocketAddr, NodeId),
    acceptor: Arc<Acceptor>,
) {
    loop {
        match framing::read_frame(&mut stream, acceptor.max_frame).await {
            Ok(Some(payload)) => {
                if acceptor
                    .inbox
                    .deliver(from, Some(peer_id), payload)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                // An ended connection surfaces here too; only a live one
                // that sent something bad is the peer's fault.
                if conn.close_reason().is_some() {
                    return;
                }
                acceptor.inbox.note_bad_frame();
                let detail = match &e {
                    ReadFrameError::TooLarge { .. } => "oversize frame",
                    ReadFrameError::Io(_) => "malformed frame stream",
                };
                tracing::warn!(peer = %from, error = %e, "{detail}: closing connection");
                conn.close(VarInt::from_u32(close_code::BAD_FRAME), detail.as_bytes());
                return;
            }
        }
    }
}

#[async_trait::async_trait]
impl Link for QuicLink {
    type Conn = Connection;

    async fn connect(&self, to: SocketAddr) -> Result<Connection, TransportError> {
        let connecting = self.endpoint.connect(to, &self.server_name).map_err(|e| {
            TransportError::Unreachable {
                addr: to,
                reason: e.to_string(),
            }
        })?;
        let conn = connecting.await.map_err(|e| connection_error(to, &e))?;
        peer_id_of(&conn, to)?;
        let result = async {
            let (send, recv) = conn.open_bi().await.map_err(|e| connection_error(to, &e))?;
            let mut stream = tokio::io::join(recv, send);
            let shaken = handshake::client(&mut stream, &self.hello, to).await;
            let (_, mut send) = stream.into_inner();
            let _ = send.finish();
            shaken.map_err(|e| match (e, conn.close_reason()) {
                (HandshakeError::Io(_), Some(reason)) => connection_error(to, &reason),
                (e, _) => e.into_transport(to),
            })
        }
        .await;
        if let Err(e) = result {
            conn.close(
                VarInt::from_u32(close_code::HANDSHAKE_REFUSED),
                e.to_string().as_bytes(),
            );
            return Err(e);
        }
        Ok(conn)
    }

    async fn pump(&self, to: SocketAddr, conn: Connection, outbox: &mut Outbox) -> Option<String> {
        let (large_tx, large_rx) = mpsc::channel::<Bytes>(4);
        let mut large = AbortOnDrop(tokio::spawn(large_lane(conn.clone(), large_rx)));
        let mut small: Option<quinn::SendStream> = None;
        let mut batch = BytesMut::new();
        loop {
            let first = tokio::select! {
                f = outbox.recv() => f?,
                e = conn.closed() => return Some(e.to_string()),
                r = &mut large.0 => return Some(match r {
                    Ok(reason) => reason,
                    Err(e) => e.to_string(),
                }),
            };
            batch.clear();
            let mut next = Some(first);
            // Small frames already queued go out in one stream write; large
            // ones are handed to their own stream as they come.
            while let Some(frame) = next.take() {
                if frame.len() > self.large_frame {
                    tokio::select! {
                        r = large_tx.send(frame) => if r.is_err() {
                            return Some("large-frame stream failed".into());
                        },
                        e = conn.closed() => return Some(e.to_string()),
                    }
                } else {
                    batch.extend_from_slice(&framing::header(frame.len()));
                    batch.extend_from_slice(&frame);
                }
                if batch.len() < 256 * 1024 {
                    next = outbox.try_recv();
                }
            }
            if batch.is_empty() {
                continue;
            }
            let stream = match &mut small {
                Some(s) => s,
                None => match conn.open_uni().await {
                    Ok(s) => {
                        // Small frames are latency-sensitive: serve them first.
                        let _ = s.set_priority(1);
                        small.insert(s)
                    }
                    Err(e) => return Some(connection_error(to, &e).to_string()),
                },
            };
            if let Err(e) = stream.write_chunk(batch.split().freeze()).await {
                return Some(e.to_string());
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<String>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn large_lane(conn: Connection, mut rx: mpsc::Receiver<Bytes>) -> String {
    let mut stream = None;
    while let Some(frame) = rx.recv().await {
        let s = match &mut stream {
            Some(s) => s,
            None => match conn.open_uni().await {
                Ok(s) => stream.insert(s),
                Err(e) => return e.to_string(),
            },
        };
        let header = Bytes::copy_from_slice(&framing::header(frame.len()));
        if let Err(e) = s.write_all_chunks(&mut [header, frame]).await {
            return e.to_string();
        }
    }
    "closing".into()
}
