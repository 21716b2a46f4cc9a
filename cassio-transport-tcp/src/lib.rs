//! Cassio's TCP transport: length-prefixed frames over one connection per
//! destination peer, optionally inside mutual TLS.
//!
//! Every connection starts with TLS (unless plaintext was chosen
//! explicitly) and then the [`handshake`], which checks protocol versions and
//! the cluster name on both ends. Under TLS, the accepting side reads the
//! node id from the dialler's certificate and hands it with every frame of
//! that connection (`InboundFrame::peer_id`). After that the dialling side writes frames
//! and the accepting side reads them; each node dials the peers it sends to,
//! so two nodes that talk both ways hold two connections.
//!
//! This crate also holds what the QUIC transport shares with it: [`tls`]
//! (certificate configuration and dev certificate generation),
//! [`handshake`], [`framing`], [`inbox`] (the receive queue) and [`peers`]
//! (outbound queues, reconnection, backoff).

pub mod framing;
pub mod handshake;
pub mod inbox;
pub mod peers;
pub mod tls;

pub use inbox::TransportStats;
pub use peers::PeerConfig;
pub use tls::{TlsConfig, TlsMaterial};

use bytes::Bytes;
use cassio_core::{InboundFrame, NodeId, SendManyError, Transport, TransportError};
use core::net::SocketAddr;
use framing::ReadFrameError;
use handshake::{HandshakeError, Hello};
use inbox::{Inbox, Tasks};
use peers::{Link, Outbox, Peers};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

/// How connections are secured. There is no default: plaintext must be
/// chosen by name.
#[derive(Clone, Debug)]
pub enum TcpSecurity {
    /// No encryption and no authentication: anyone who can reach the port
    /// and knows the cluster name is a peer. For tests and trusted networks.
    Plaintext,
    /// Mutual TLS with certificates from files (see [`tls`]).
    MutualTls(TlsConfig),
    /// Mutual TLS with rustls configurations built by the caller.
    Rustls(TlsMaterial),
}

/// Settings of a [`TcpTransport`].
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// The cluster's name, checked in every handshake.
    pub cluster: String,
    /// Plaintext or mutual TLS.
    pub security: TcpSecurity,
    /// The largest frame sent or accepted.
    pub max_frame: usize,
    /// Outbound queues, connect timeout and backoff.
    pub peer: PeerConfig,
    /// How long an inbound connection may take for TLS and the handshake.
    pub handshake_timeout: Duration,
    /// Bytes of received frames held for `recv` before inbound connections
    /// stop being read.
    pub inbound_buffer_bytes: usize,
}

impl TcpConfig {
    fn with_security(cluster: impl Into<String>, security: TcpSecurity) -> Self {
        TcpConfig {
            cluster: cluster.into(),
            security,
            max_frame: cassio_core::wire::DEFAULT_MAX_FRAME,
            peer: PeerConfig::default(),
            handshake_timeout: Duration::from_secs(5),
            inbound_buffer_bytes: 64 * 1024 * 1024,
        }
    }

    /// Mutual TLS with the given certificate files.
    pub fn mutual_tls(cluster: impl Into<String>, tls: TlsConfig) -> Self {
        Self::with_security(cluster, TcpSecurity::MutualTls(tls))
    }

    /// Mutual TLS with prepared rustls configurations.
    pub fn rustls(cluster: impl Into<String>, material: TlsMaterial) -> Self {
        Self::with_security(cluster, TcpSecurity::Rustls(material))
    }

    /// Unencrypted, unauthenticated TCP; only for tests and trusted networks.
    pub fn plaintext(cluster: impl Into<String>) -> Self {
        Self::with_security(cluster, TcpSecurity::Plaintext)
    }
}

/// A bidirectional byte stream: plain TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;

/// The TCP transport.
#[derive(Debug)]
pub struct TcpTransport {
    local: SocketAddr,
    inbox: Arc<Inbox>,
    peers: Peers<TcpLink>,
    tasks: Arc<Tasks>,
}

struct TcpLink {
    hello: Hello,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

struct Acceptor {
    hello: Hello,
    tls: Option<tokio_rustls::TlsAcceptor>,
    inbox: Arc<Inbox>,
    max_frame: usize,
    handshake_timeout: Duration,
}

/// Most frames written before a flush is forced, so one busy peer's batch
/// stays bounded even if its queue never runs dry.
const MAX_BATCH: usize = 256;
const BUF_SIZE: usize = 64 * 1024;

impl TcpTransport {
    /// Binds a listener on `addr` (port 0 picks one) and starts accepting.
    pub async fn bind(addr: SocketAddr, config: TcpConfig) -> Result<Self, TransportError> {
        let hello = Hello::new(&config.cluster)?;
        if config.max_frame == 0 || config.max_frame > u32::MAX as usize {
            return Err(TransportError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "max_frame must be between 1 and u32::MAX",
            )));
        }
        let material = match &config.security {
            TcpSecurity::Plaintext => None,
            TcpSecurity::MutualTls(files) => Some(files.load()?),
            TcpSecurity::Rustls(m) => Some(m.clone()),
        };
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let inbox = Inbox::new(config.inbound_buffer_bytes.max(config.max_frame));
        let tasks = Tasks::new();
        let acceptor = Arc::new(Acceptor {
            hello: hello.clone(),
            tls: material
                .as_ref()
                .map(|m| tokio_rustls::TlsAcceptor::from(m.server.clone())),
            inbox: inbox.clone(),
            max_frame: config.max_frame,
            handshake_timeout: config.handshake_timeout,
        });
        let link = TcpLink {
            hello,
            tls: material.map(|m| {
                (
                    tokio_rustls::TlsConnector::from(m.client.clone()),
                    m.server_name.clone(),
                )
            }),
        };
        tasks.spawn(accept_loop(listener, acceptor, Arc::downgrade(&tasks)));
        tracing::info!(addr = %local, cluster = %config.cluster, tls = link.tls.is_some(), "tcp transport listening");
        Ok(TcpTransport {
            local,
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

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.tasks.shutdown();
    }
}

#[async_trait::async_trait]
impl Transport for TcpTransport {
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
        // Aborting drops the listener and every socket, which is what lets
        // a restarted node bind the same address again.
        self.tasks.shutdown();
    }
}

async fn accept_loop(listener: TcpListener, acceptor: Arc<Acceptor>, tasks: Weak<Tasks>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(tasks) = tasks.upgrade() else { return };
        tasks.spawn(serve_inbound(stream, from, acceptor.clone()));
    }
}

/// Maps a stream error to a transport error, recognising TLS failures.
fn stream_error(addr: SocketAddr, e: &std::io::Error) -> TransportError {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(t) => TransportError::Tls(format!("{addr}: {t}")),
        None => TransportError::Unreachable {
            addr,
            reason: e.to_string(),
        },
    }
}

/// The accepted connection and, under TLS, the node id its certificate names.
type Accepted = (BoxIo, Option<NodeId>);

async fn inbound_handshake(
    stream: TcpStream,
    from: SocketAddr,
    acceptor: &Acceptor,
) -> Result<Accepted, TransportError> {
    let _ = stream.set_nodelay(true);
    let (mut io, peer_id): Accepted = match &acceptor.tls {
        Some(tls) => {
            let stream = tls
                .accept(stream)
                .await
                .map_err(|e| stream_error(from, &e))?;
            // Our verifier already required the id; configurations built by
            // the caller may not have, so it is checked here for all.
            let id = tls::peer_node_id(stream.get_ref().1.peer_certificates())
                .map_err(|e| TransportError::Tls(format!("{from}: {e}")))?;
            (Box::new(stream), Some(id))
        }
        None => (Box::new(stream), None),
    };
    handshake::server(&mut io, &acceptor.hello, from)
        .await
        .map_err(|e| match e {
            HandshakeError::Io(io) => stream_error(from, &io),
            refused => refused.into_transport(from),
        })?;
    Ok((io, peer_id))
}

async fn serve_inbound(stream: TcpStream, from: SocketAddr, acceptor: Arc<Acceptor>) {
    let (io, peer_id) = match tokio::time::timeout(
        acceptor.handshake_timeout,
        inbound_handshake(stream, from, &acceptor),
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
    tracing::debug!(peer = %from, node = ?peer_id, "inbound connection accepted");
    let mut reader = BufReader::with_capacity(BUF_SIZE, io);
    loop {
        match framing::read_frame(&mut reader, acceptor.max_frame).await {
            Ok(Some(payload)) => {
                let mut batch = vec![InboundFrame {
                    from,
                    payload,
                    peer_id,
                }];
                // Frames already in the read buffer are taken now and
                // handed over together.
                while batch.len() < MAX_BATCH
                    && whole_frame_buffered(reader.buffer(), acceptor.max_frame)
                {
                    match framing::read_frame(&mut reader, acceptor.max_frame).await {
                        Ok(Some(payload)) => batch.push(InboundFrame {
                            from,
                            payload,
                            peer_id,
                        }),
                        _ => break,
                    }
                }
                if acceptor.inbox.deliver_batch(batch).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                tracing::debug!(peer = %from, "peer closed its connection");
                return;
            }
            Err(ReadFrameError::TooLarge { len, max }) => {
                acceptor.inbox.note_bad_frame();
                tracing::warn!(peer = %from, len, max, "oversize frame: closing connection");
                return;
            }
            Err(ReadFrameError::Io(e)) => {
                acceptor.inbox.note_bad_frame();
                tracing::info!(peer = %from, error = %e, "inbound connection failed: closing it");
                return;
            }
        }
    }
}

/// Whether `buf` starts with a complete frame within the cap.
fn whole_frame_buffered(buf: &[u8], max: usize) -> bool {
    let Some(head) = buf.get(..framing::HEADER_LEN) else {
        return false;
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    len <= max && buf.len() - framing::HEADER_LEN >= len
}

#[async_trait::async_trait]
impl Link for TcpLink {
    type Conn = BoxIo;

    async fn connect(&self, to: SocketAddr) -> Result<BoxIo, TransportError> {
        let stream = TcpStream::connect(to)
            .await
            .map_err(|e| TransportError::Unreachable {
                addr: to,
                reason: e.to_string(),
            })?;
        // Latency matters more than packet count: coalescing happens in our
        // writer, so Nagle would only add delay.
        stream.set_nodelay(true)?;
        let mut io: BoxIo = match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| stream_error(to, &e))?;
                // A server must name its node id too (see the acceptor).
                tls::peer_node_id(stream.get_ref().1.peer_certificates())
                    .map_err(|e| TransportError::Tls(format!("{to}: {e}")))?;
                Box::new(stream)
            }
            None => Box::new(stream),
        };
        handshake::client(&mut io, &self.hello, to)
            .await
            .map_err(|e| match e {
                HandshakeError::Io(io) => stream_error(to, &io),
                refused => refused.into_transport(to),
            })?;
        Ok(io)
    }

    async fn pump(&self, to: SocketAddr, conn: BoxIo, outbox: &mut Outbox) -> Option<String> {
        let (mut rd, wr) = tokio::io::split(conn);
        let mut wr = BufWriter::with_capacity(BUF_SIZE, wr);
        let mut probe = [0u8; 1];
        loop {
            // The peer never writes after the handshake, so anything on the
            // read side means the connection is over; watching it notices a
            // dead peer before the next write fails.
            let first = tokio::select! {
                f = outbox.recv() => f?,
                r = rd.read(&mut probe) => return Some(match r {
                    Ok(0) => "closed by peer".to_owned(),
                    Ok(_) => "peer sent unexpected data".to_owned(),
                    Err(e) => stream_error(to, &e).to_string(),
                }),
            };
            if let Err(e) = framing::write_frame(&mut wr, &first).await {
                return Some(e.to_string());
            }
            // Everything already queued goes out in the same write(s).
            let mut batch = 1;
            while batch < MAX_BATCH {
                let Some(next) = outbox.try_recv() else { break };
                if let Err(e) = framing::write_frame(&mut wr, &next).await {
                    return Some(e.to_string());
                }
                batch += 1;
            }
            if let Err(e) = wr.flush().await {
                return Some(e.to_string());
            }
        }
    }
}
