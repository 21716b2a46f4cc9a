//! The transport contract every peer-to-peer transport implements (TCP, QUIC).
//! The conformance suite tests exactly these words.

use crate::types::NodeId;
use bytes::Bytes;
use core::net::SocketAddr;

/// Errors a transport reports; none of them is a hang.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer could not be reached (refused, reset, or down past the
    /// connect timeout); retried later with backoff.
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable {
        /// The peer's address.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The per-peer send queue is full; the frame was not queued.
    #[error("send queue to {addr} is full")]
    QueueFull {
        /// The peer's address.
        addr: SocketAddr,
    },
    /// The frame is larger than the configured cap; it was not sent.
    #[error("frame of {len} bytes exceeds the cap of {max} bytes")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The peer speaks another protocol version or belongs to another cluster.
    #[error("handshake with {addr} refused: {reason}")]
    Handshake {
        /// The peer's address.
        addr: SocketAddr,
        /// The mismatch.
        reason: String,
    },
    /// TLS set-up or peer authentication failed (including a peer
    /// certificate that names no node id).
    #[error("TLS error: {0}")]
    Tls(String),
    /// The transport already tracks its cap of peers and none of them is
    /// idle enough to be evicted; the frame was not queued.
    #[error("cannot add peer {addr}: {max} peers are already connected and busy")]
    TooManyPeers {
        /// The peer that was refused.
        addr: SocketAddr,
        /// The cap.
        max: usize,
    },
    /// The transport was closed.
    #[error("transport is closed")]
    Closed,
    /// A local I/O error (binding, configuration files).
    #[error("transport I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// `send_many` stopped at a frame it could not queue.
#[derive(Debug, thiserror::Error)]
#[error("{error} (after {queued} frames of the batch were queued)")]
pub struct SendManyError {
    /// How many frames, from the first, were queued before the failure.
    pub queued: usize,
    /// Why the next frame was not queued.
    #[source]
    pub error: TransportError,
    /// The frames not queued, in order, starting with the one that failed
    /// (the caller may send them again: after `QueueFull`, all of them; a
    /// frame too large says nothing of the ones after it).
    pub unsent: Vec<Bytes>,
}

impl SendManyError {
    /// The error for frame number `queued` of a batch, which failed with
    /// `error`; `rest` are the frames after it, not tried.
    pub fn new(
        queued: usize,
        error: TransportError,
        failed: Bytes,
        rest: impl IntoIterator<Item = Bytes>,
    ) -> Self {
        SendManyError {
            queued,
            error,
            unsent: std::iter::once(failed).chain(rest).collect(),
        }
    }
}

/// A frame received from a peer.
#[derive(Clone, Debug)]
pub struct InboundFrame {
    /// The remote address of the connection it came on (not necessarily the
    /// peer's listen address; the envelope names the sender).
    pub from: SocketAddr,
    /// The frame's bytes, exactly as the sender passed them to `send`.
    pub payload: Bytes,
    /// The node id the peer's certificate names, checked by mutual TLS when
    /// the connection was set up; `None` on transports that do not
    /// authenticate peers (plaintext). The host refuses a frame whose
    /// envelope names another sender, so a peer speaks only for itself.
    pub peer_id: Option<NodeId>,
}

/// Moves opaque frames between the nodes of one cluster.
///
/// Contract (each sentence is a conformance case):
/// - A frame passed to `send` arrives whole, or not at all; never truncated,
///   never merged with another.
/// - Frames from one sender to one peer arrive in the order they were sent,
///   unless a connection was lost in between (then some may be lost). A
///   transport may carry frames above a size threshold it documents on a
///   separate lane, so that one large frame does not stall small ones; order
///   then holds within each lane. (The core needs no cross-message order:
///   every reply is tagged and every write is last-write-wins.)
/// - `send` returns once the frame is queued; an error means it was not.
///   Frames over the cap are refused with `FrameTooLarge`.
/// - A peer that is down makes `send` fail (or its frames drop) within a
///   bounded time; nothing blocks forever.
/// - Connections are re-established after a peer restarts on the same address.
/// - Both ends exchange protocol version and cluster name first; a mismatch
///   is refused on both sides.
/// - Oversize or garbage input closes the offending connection only.
/// - Under mutual TLS, every received frame carries the node id its sender's
///   certificate names (`InboundFrame::peer_id`); a certificate that names
///   none is refused in the handshake, on both sides.
/// - `send_many` and `recv_many` keep the same order and whole-frame
///   guarantees as `send` and `recv`; `recv_many` never returns an empty
///   batch nor more than it was asked for.
/// - The transport tracks a bounded number of peers; `forget` drops one
///   (its connection and queued frames) at once.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Queues `frame` for delivery to the peer listening at `to`.
    async fn send(&self, to: SocketAddr, frame: Bytes) -> Result<(), TransportError>;

    /// Waits for the next frame from any peer; `Err(Closed)` after `close`.
    async fn recv(&self) -> Result<InboundFrame, TransportError>;

    /// Queues every frame of `frames` for the peer at `to`, in order, as
    /// `send` would one by one (same errors, same waits), but with one
    /// lookup of the peer and one wake-up of its writer for the lot. On an
    /// error, the frames before the failing one were queued (the error
    /// says how many) and the rest were not. The default sends them one by
    /// one.
    async fn send_many(&self, to: SocketAddr, frames: Vec<Bytes>) -> Result<(), SendManyError> {
        let mut frames = frames.into_iter().enumerate();
        while let Some((queued, frame)) = frames.next() {
            // `send` consumes the frame; the clone (a reference count) is
            // what an error gives back.
            if let Err(error) = self.send(to, frame.clone()).await {
                return Err(SendManyError::new(
                    queued,
                    error,
                    frame,
                    frames.map(|(_, f)| f),
                ));
            }
        }
        Ok(())
    }

    /// Waits for at least one frame, then appends to `out` every frame
    /// already received, up to `max` in all (at least one), in the order
    /// `recv` would return them; returns how many it appended, or
    /// `Err(Closed)` after `close`. A host draining a busy transport takes
    /// a batch per wake-up instead of a frame. The default takes one frame.
    async fn recv_many(
        &self,
        out: &mut Vec<InboundFrame>,
        max: usize,
    ) -> Result<usize, TransportError> {
        let _ = max;
        out.push(self.recv().await?);
        Ok(1)
    }

    /// The address peers should send to.
    fn local_addr(&self) -> SocketAddr;

    /// Stops accepting, drops connections and wakes `recv` with `Closed`.
    async fn close(&self);

    /// Drops everything kept for the peer at `addr` (its outbound
    /// connection and the frames queued for it), because it left the
    /// cluster. A later `send` to `addr` starts afresh. The default does
    /// nothing, for transports that keep no per-peer state.
    fn forget(&self, addr: SocketAddr) {
        let _ = addr;
    }
}
