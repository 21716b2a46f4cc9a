//! The first exchange on every connection, shared by TCP and QUIC: the
//! dialling side says which protocol versions and cluster it speaks, the
//! accepting side answers with its own and a verdict. Both sides check, so a
//! mismatch is refused (and logged) on both ends.
//!
//! ```text
//! hello : "CSIO" | kind=1 | transport version | wire version | len | cluster
//! reply : "CSIO" | kind=2 | transport version | wire version | len | cluster | status
//! status: 0 accepted, 1 version mismatch, 2 cluster mismatch
//! ```

use cassio_core::TransportError;
use core::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The version of the connection protocol (handshake and framing) itself.
pub const TRANSPORT_VERSION: u8 = 1;

const MAGIC: &[u8; 4] = b"CSIO";
const KIND_HELLO: u8 = 1;
const KIND_REPLY: u8 = 2;
const STATUS_OK: u8 = 0;
const STATUS_VERSION: u8 = 1;
const STATUS_CLUSTER: u8 = 2;

/// The longest cluster name the handshake can carry.
pub const MAX_CLUSTER_NAME: usize = u8::MAX as usize;

/// What one side announces about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The connection protocol version ([`TRANSPORT_VERSION`]).
    pub transport_version: u8,
    /// The message encoding version ([`cassio_core::wire::WIRE_VERSION`]).
    pub wire_version: u8,
    /// The cluster this node belongs to.
    pub cluster: String,
}

impl Hello {
    /// What this build announces for `cluster`; refuses names the
    /// handshake cannot carry.
    pub fn new(cluster: &str) -> Result<Self, TransportError> {
        if cluster.is_empty() || cluster.len() > MAX_CLUSTER_NAME {
            return Err(TransportError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("cluster name must be 1..={MAX_CLUSTER_NAME} bytes"),
            )));
        }
        Ok(Hello {
            transport_version: TRANSPORT_VERSION,
            wire_version: cassio_core::wire::WIRE_VERSION,
            cluster: cluster.to_owned(),
        })
    }

    fn encode(&self, kind: u8) -> Vec<u8> {
        let name = self.cluster.as_bytes();
        let len = name.len().min(MAX_CLUSTER_NAME);
        let mut out = Vec::with_capacity(9 + len);
        out.extend_from_slice(MAGIC);
        out.push(kind);
        out.push(self.transport_version);
        out.push(self.wire_version);
        out.push(len as u8);
        out.extend_from_slice(&name[..len]);
        out
    }

    fn mismatch(&self, theirs: &Hello) -> Option<(u8, String)> {
        if theirs.transport_version != self.transport_version
            || theirs.wire_version != self.wire_version
        {
            Some((
                STATUS_VERSION,
                format!(
                    "protocol version mismatch: peer speaks transport v{} / wire v{}, we speak transport v{} / wire v{}",
                    theirs.transport_version,
                    theirs.wire_version,
                    self.transport_version,
                    self.wire_version
                ),
            ))
        } else if theirs.cluster != self.cluster {
            Some((
                STATUS_CLUSTER,
                format!(
                    "cluster name mismatch: peer is in {:?}, we are in {:?}",
                    theirs.cluster, self.cluster
                ),
            ))
        } else {
            None
        }
    }
}

/// Why a handshake failed, before the caller maps it to a [`TransportError`].
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer is not one of ours: wrong magic, version or cluster.
    #[error("{0}")]
    Refused(String),
    /// The stream failed (closed, reset, TLS alert).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl HandshakeError {
    /// The typed error for `addr`; I/O failures become `Unreachable`
    /// unless the caller knows better.
    pub fn into_transport(self, addr: SocketAddr) -> TransportError {
        match self {
            HandshakeError::Refused(reason) => TransportError::Handshake { addr, reason },
            HandshakeError::Io(e) => TransportError::Unreachable {
                addr,
                reason: format!("handshake: {e}"),
            },
        }
    }
}

async fn read_hello<S: AsyncRead + Unpin>(io: &mut S, kind: u8) -> Result<Hello, HandshakeError> {
    let mut head = [0u8; 8];
    io.read_exact(&mut head).await?;
    if &head[..4] != MAGIC || head[4] != kind {
        return Err(HandshakeError::Refused(
            "not a cassio peer (bad handshake magic)".into(),
        ));
    }
    let mut name = vec![0u8; usize::from(head[7])];
    io.read_exact(&mut name).await?;
    let cluster = String::from_utf8(name)
        .map_err(|_| HandshakeError::Refused("cluster name is not UTF-8".into()))?;
    Ok(Hello {
        transport_version: head[5],
        wire_version: head[6],
        cluster,
    })
}

/// The dialling side: announce, then read and check the verdict.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    ours: &Hello,
    peer: SocketAddr,
) -> Result<(), HandshakeError> {
    io.write_all(&ours.encode(KIND_HELLO)).await?;
    io.flush().await?;
    let theirs = read_hello(io, KIND_REPLY).await?;
    let status = io.read_u8().await?;
    // Check locally too, so an accepting side that does not check (or lies
    // about its verdict) cannot pull us into another cluster.
    let verdict = match (status, ours.mismatch(&theirs)) {
        (_, Some((_, reason))) => Err(reason),
        (STATUS_OK, None) => Ok(()),
        (other, None) => Err(format!("peer refused us with status {other}")),
    };
    verdict.map_err(|reason| {
        tracing::warn!(%peer, %reason, "handshake refused: closing connection");
        HandshakeError::Refused(reason)
    })
}

/// The accepting side: read the peer's announcement, answer with ours and
/// a verdict; a mismatch is answered, logged and returned as an error.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    ours: &Hello,
    peer: SocketAddr,
) -> Result<(), HandshakeError> {
    let theirs = match read_hello(io, KIND_HELLO).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "inbound handshake failed: closing connection");
            return Err(e);
        }
    };
    let mismatch = ours.mismatch(&theirs);
    let mut reply = ours.encode(KIND_REPLY);
    reply.push(mismatch.as_ref().map_or(STATUS_OK, |(status, _)| *status));
    io.write_all(&reply).await?;
    io.flush().await?;
    match mismatch {
        None => Ok(()),
        Some((_, reason)) => {
            tracing::warn!(%peer, %reason, "inbound handshake refused: closing connection");
            Err(HandshakeError::Refused(reason))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    async fn run(a: Hello, b: Hello) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
        let (mut x, mut y) = tokio::io::duplex(1024);
        tokio::join!(client(&mut x, &a, addr()), server(&mut y, &b, addr()))
    }

    #[tokio::test]
    async fn matching_peers_are_accepted() {
        let (c, s) = run(Hello::new("alpha").unwrap(), Hello::new("alpha").unwrap()).await;
        c.unwrap();
        s.unwrap();
    }

    #[tokio::test]
    async fn cluster_mismatch_is_refused_on_both_sides() {
        let (c, s) = run(Hello::new("alpha").unwrap(), Hello::new("beta").unwrap()).await;
        for r in [c, s] {
            match r {
                Err(HandshakeError::Refused(reason)) => assert!(reason.contains("cluster")),
                other => panic!("expected refusal, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn version_mismatch_is_refused_on_both_sides() {
        let mut old = Hello::new("alpha").unwrap();
        old.transport_version = TRANSPORT_VERSION + 1;
        let (c, s) = run(old, Hello::new("alpha").unwrap()).await;
        for r in [c, s] {
            match r {
                Err(HandshakeError::Refused(reason)) => assert!(reason.contains("version")),
                other => panic!("expected refusal, got {other:?}"),
            }
        }
        let mut wire = Hello::new("alpha").unwrap();
        wire.wire_version = wire.wire_version.wrapping_add(1);
        let (c, s) = run(Hello::new("alpha").unwrap(), wire).await;
        assert!(matches!(c, Err(HandshakeError::Refused(_))));
        assert!(matches!(s, Err(HandshakeError::Refused(_))));
    }

    #[tokio::test]
    async fn garbage_is_refused_without_reading_further() {
        let (mut x, mut y) = tokio::io::duplex(1024);
        x.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let r = server(&mut y, &Hello::new("alpha").unwrap(), addr()).await;
        assert!(matches!(r, Err(HandshakeError::Refused(_))), "{r:?}");
    }

    #[tokio::test]
    async fn truncated_hello_is_an_io_error() {
        let (mut x, mut y) = tokio::io::duplex(1024);
        x.write_all(&b"CSIO\x01\x01\x01\x05al"[..]).await.unwrap();
        drop(x);
        let r = server(&mut y, &Hello::new("alpha").unwrap(), addr()).await;
        assert!(matches!(r, Err(HandshakeError::Io(_))), "{r:?}");
    }

    #[test]
    fn cluster_names_must_fit() {
        assert!(Hello::new("").is_err());
        assert!(Hello::new(&"x".repeat(256)).is_err());
        assert!(Hello::new(&"x".repeat(255)).is_ok());
    }
}
