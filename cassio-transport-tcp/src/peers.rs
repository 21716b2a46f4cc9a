//! Outbound peer management shared by TCP and QUIC: one connection per
//! destination, a bounded send queue in front of it, and reconnection with
//! exponential backoff and jitter.
//!
//! Each destination gets a task that owns the connection. `send` only looks
//! at the peer's state and queues: while connected, it never waits; while a
//! connection is being set up, it waits at most for that attempt (bounded by
//! the connect timeout); while the peer is in backoff after a failure, it
//! fails at once with the error that put it there. A peer that is down thus
//! costs a caller one connect timeout at most, never a hang.

use crate::inbox::Tasks;
use bytes::Bytes;
use cassio_core::TransportError;
use core::net::SocketAddr;
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

/// Queueing and reconnection settings for outbound peers.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Frames that may wait for one peer before `send` reports `QueueFull`.
    pub queue_frames: usize,
    /// Bytes that may wait for one peer before `send` reports `QueueFull`
    /// (a frame is always accepted into an empty queue).
    pub queue_bytes: usize,
    /// How long one attempt to connect (including TLS and the handshake)
    /// may take.
    pub connect_timeout: Duration,
    /// The backoff after the first failed attempt.
    pub backoff_initial: Duration,
    /// The longest backoff.
    pub backoff_max: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            queue_frames: 4096,
            queue_bytes: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

impl PeerConfig {
    /// The wait before attempt number `failures + 1`: doubling from
    /// `backoff_initial`, capped at `backoff_max`, then scaled by a random
    /// factor in [0.5, 1] so peers that lost the same node do not retry in
    /// lock-step.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let base = self
            .backoff_initial
            .saturating_mul(1u32 << exp)
            .min(self.backoff_max);
        base.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

/// The frames waiting for one peer, as seen by the task that writes them.
#[derive(Debug)]
pub struct Outbox {
    rx: mpsc::Receiver<Bytes>,
    bytes: Arc<AtomicUsize>,
}

impl Outbox {
    /// Waits for the next frame; `None` once the transport is closing.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.recv().await?;
        self.bytes.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// The next frame if one is waiting.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Drops every waiting frame, returning how many there were.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.try_recv().is_some() {
            n += 1;
        }
        n
    }
}

/// How a transport reaches one peer; [`Peers`] does the rest.
#[async_trait::async_trait]
pub trait Link: Send + Sync + 'static {
    /// An established, authenticated connection.
    type Conn: Send + 'static;

    /// Connects to `to` and completes TLS and the handshake. The caller
    /// bounds it by the connect timeout.
    async fn connect(&self, to: SocketAddr) -> Result<Self::Conn, TransportError>;

    /// Writes frames from `outbox` to `conn` until the connection fails
    /// (returns why) or the outbox closes (returns `None`).
    async fn pump(&self, to: SocketAddr, conn: Self::Conn, outbox: &mut Outbox) -> Option<String>;
}

#[derive(Clone, Debug)]
enum DownKind {
    Unreachable,
    Handshake,
    Tls,
}

#[derive(Clone, Debug)]
enum State {
    Connecting,
    Up,
    Down {
        kind: DownKind,
        reason: String,
        retry_at: Instant,
    },
}

impl State {
    fn down(e: &TransportError, retry_at: Instant) -> State {
        let (kind, reason) = match e {
            TransportError::Handshake { reason, .. } => (DownKind::Handshake, reason.clone()),
            TransportError::Tls(reason) => (DownKind::Tls, reason.clone()),
            TransportError::Unreachable { reason, .. } => (DownKind::Unreachable, reason.clone()),
            other => (DownKind::Unreachable, other.to_string()),
        };
        State::Down {
            kind,
            reason,
            retry_at,
        }
    }
}

fn down_error(kind: &DownKind, reason: &str, addr: SocketAddr) -> TransportError {
    let reason = reason.to_owned();
    match kind {
        DownKind::Unreachable => TransportError::Unreachable { addr, reason },
        DownKind::Handshake => TransportError::Handshake { addr, reason },
        DownKind::Tls => TransportError::Tls(reason),
    }
}

#[derive(Debug)]
struct Peer {
    tx: mpsc::Sender<Bytes>,
    bytes: Arc<AtomicUsize>,
    state: watch::Receiver<State>,
    demand: Arc<Notify>,
}

impl Peer {
    fn enqueue(&self, to: SocketAddr, frame: Bytes, cap: usize) -> Result<(), TransportError> {
        let len = frame.len();
        let before = self.bytes.fetch_add(len, Ordering::AcqRel);
        if before != 0 && before.saturating_add(len) > cap {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(TransportError::QueueFull { addr: to });
        }
        match self.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.bytes.fetch_sub(len, Ordering::AcqRel);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => TransportError::QueueFull { addr: to },
                    mpsc::error::TrySendError::Closed(_) => TransportError::Closed,
                })
            }
        }
    }
}

/// The outbound side of a transport: a table of peers and their tasks.
pub struct Peers<L: Link> {
    link: Arc<L>,
    config: PeerConfig,
    max_frame: usize,
    tasks: Arc<Tasks>,
    map: parking_lot::Mutex<HashMap<SocketAddr, Arc<Peer>>>,
    closed: AtomicBool,
}

impl<L: Link> std::fmt::Debug for Peers<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("peers", &self.map.lock().len())
            .finish_non_exhaustive()
    }
}

impl<L: Link> Peers<L> {
    /// An empty table whose peer tasks are spawned into `tasks`; frames over
    /// `max_frame` bytes are refused by [`Peers::send`].
    pub fn new(link: L, config: PeerConfig, max_frame: usize, tasks: Arc<Tasks>) -> Self {
        Peers {
            link: Arc::new(link),
            config,
            max_frame,
            tasks,
            map: parking_lot::Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues `frame` for `to`, connecting first if needed (see the module
    /// documentation for how long this may wait).
    pub async fn send(&self, to: SocketAddr, frame: Bytes) -> Result<(), TransportError> {
        if frame.len() > self.max_frame {
            return Err(TransportError::FrameTooLarge {
                len: frame.len(),
                max: self.max_frame,
            });
        }
        let peer = self.peer(to)?;
        if matches!(*peer.state.borrow(), State::Up) {
            return peer.enqueue(to, frame, self.config.queue_bytes);
        }
        // One connect attempt, plus slack for a backoff that is just ending.
        let deadline = Instant::now() + self.config.connect_timeout * 2 + Duration::from_secs(1);
        let mut state = peer.state.clone();
        loop {
            let now = state.borrow_and_update().clone();
            match now {
                State::Up => return peer.enqueue(to, frame, self.config.queue_bytes),
                State::Connecting => {}
                State::Down {
                    kind,
                    reason,
                    retry_at,
                } => {
                    if Instant::now() < retry_at {
                        return Err(down_error(&kind, &reason, to));
                    }
                    peer.demand.notify_one();
                }
            }
            match tokio::time::timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(TransportError::Closed),
                Err(_) => {
                    return Err(TransportError::Unreachable {
                        addr: to,
                        reason: "connection attempt did not finish in time".into(),
                    })
                }
            }
        }
    }

    fn peer(&self, to: SocketAddr) -> Result<Arc<Peer>, TransportError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        let mut map = self.map.lock();
        if let Some(p) = map.get(&to) {
            return Ok(p.clone());
        }
        let (tx, rx) = mpsc::channel(self.config.queue_frames.max(1));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (state_tx, state_rx) = watch::channel(State::Connecting);
        let demand = Arc::new(Notify::new());
        let peer = Arc::new(Peer {
            tx,
            bytes: bytes.clone(),
            state: state_rx,
            demand: demand.clone(),
        });
        let outbox = Outbox { rx, bytes };
        let spawned = self.tasks.spawn(run_peer(
            self.link.clone(),
            self.config.clone(),
            to,
            state_tx,
            outbox,
            demand,
        ));
        if !spawned {
            return Err(TransportError::Closed);
        }
        map.insert(to, peer.clone());
        Ok(peer)
    }

    /// Refuses further sends and forgets every peer (their tasks end when
    /// the transport's task set shuts down).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let old = std::mem::take(&mut *self.map.lock());
        drop(old);
    }
}

async fn run_peer<L: Link>(
    link: Arc<L>,
    config: PeerConfig,
    to: SocketAddr,
    state: watch::Sender<State>,
    mut outbox: Outbox,
    demand: Arc<Notify>,
) {
    let mut failures: u32 = 0;
    loop {
        state.send_replace(State::Connecting);
        let attempt = match tokio::time::timeout(config.connect_timeout, link.connect(to)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Unreachable {
                addr: to,
                reason: format!("connect timed out after {:?}", config.connect_timeout),
            }),
        };
        let retry_at = match attempt {
            Ok(conn) => {
                if failures > 0 {
                    tracing::info!(peer = %to, "reconnected to peer");
                } else {
                    tracing::debug!(peer = %to, "connected to peer");
                }
                failures = 0;
                state.send_replace(State::Up);
                let Some(reason) = link.pump(to, conn, &mut outbox).await else {
                    return;
                };
                tracing::info!(peer = %to, %reason, "connection to peer lost");
                // The first reconnect is immediate: a lost connection is
                // usually a restart, not an outage.
                let now = Instant::now();
                state.send_replace(State::Down {
                    kind: DownKind::Unreachable,
                    reason: format!("connection lost: {reason}"),
                    retry_at: now,
                });
                now
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = config.backoff(failures);
                let dropped = outbox.drain();
                tracing::warn!(peer = %to, error = %e, retry_in = ?delay, dropped, "cannot reach peer");
                let retry_at = Instant::now() + delay;
                state.send_replace(State::down(&e, retry_at));
                retry_at
            }
        };
        tokio::time::sleep_until(retry_at).await;
        // Reconnect only when someone wants to send: a dead peer nobody
        // talks to costs nothing.
        if outbox.is_empty() {
            demand.notified().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let cfg = PeerConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..PeerConfig::default()
        };
        for _ in 0..100 {
            let d1 = cfg.backoff(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = cfg.backoff(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d30 = cfg.backoff(30);
            assert!(d30 >= Duration::from_millis(500) && d30 <= Duration::from_secs(1));
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| cfg.backoff(2)).collect();
        assert!(spread.len() > 1, "jitter must vary the delay");
    }
}
