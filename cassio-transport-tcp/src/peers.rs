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
//!
//! The table is bounded: past [`PeerConfig::max_peers`] destinations, the
//! least recently used idle peer (nothing queued, no send in progress) is
//! evicted to make room, and if every peer is busy the new one is refused
//! with `TooManyPeers`. [`Peers::forget`] drops one peer at once (the host
//! calls it for nodes that left). Evicting or forgetting a peer aborts its
//! task, which closes its connection and frees its queue; a later send to
//! the same address starts afresh.

use crate::inbox::Tasks;
use bytes::Bytes;
use cassio_core::{SendManyError, TransportError};
use core::net::SocketAddr;
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::AbortHandle;
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
    /// Most destinations tracked at once (each holds a task, a queue and a
    /// connection); see the module documentation for what happens past it.
    pub max_peers: usize,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            queue_frames: 4096,
            queue_bytes: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            // Far above any cluster Cassio's gossip supports, far below
            // what would exhaust file descriptors or memory.
            max_peers: 4096,
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
    /// Stops the peer's task: its connection and queue go with it.
    task: AbortHandle,
    /// The table's use counter when a send last looked this peer up.
    last_used: AtomicU64,
}

impl Peer {
    /// Whether this peer may be evicted: no frame queued and no send
    /// holding it (only the table's reference exists). Exact while the
    /// table is locked, since sends take their reference under that lock.
    fn is_idle(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1 && self.tx.capacity() == self.tx.max_capacity()
    }

    /// Queues `frame`; on failure the frame comes back with the error.
    fn enqueue(&self, to: SocketAddr, frame: Bytes, cap: usize) -> Result<(), Refused> {
        let len = frame.len();
        let before = self.bytes.fetch_add(len, Ordering::AcqRel);
        if before != 0 && before.saturating_add(len) > cap {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            return Err((TransportError::QueueFull { addr: to }, frame));
        }
        self.tx.try_send(frame).map_err(|e| {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(f) => (TransportError::QueueFull { addr: to }, f),
                mpsc::error::TrySendError::Closed(f) => (TransportError::Closed, f),
            }
        })
    }
}

/// A frame that was not queued, and why: `send_many` hands such frames
/// back to its caller without having cloned every frame it queued.
type Refused = (TransportError, Bytes);

/// The outbound side of a transport: a table of peers and their tasks.
pub struct Peers<L: Link> {
    link: Arc<L>,
    config: PeerConfig,
    max_frame: usize,
    tasks: Arc<Tasks>,
    map: parking_lot::Mutex<HashMap<SocketAddr, Arc<Peer>>>,
    /// Ticks once per lookup; orders peers by last use for eviction.
    uses: AtomicU64,
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
            uses: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues `frame` for `to`, connecting first if needed (see the module
    /// documentation for how long this may wait).
    pub async fn send(&self, to: SocketAddr, frame: Bytes) -> Result<(), TransportError> {
        self.send_one(&mut None, to, frame)
            .await
            .map_err(|(e, _)| e)
    }

    /// Queues `frames` for `to` in order, looking the peer up once; stops
    /// at the first error (the frames before it stay queued).
    pub async fn send_many(&self, to: SocketAddr, frames: Vec<Bytes>) -> Result<(), SendManyError> {
        let mut peer = None;
        let mut frames = frames.into_iter().enumerate();
        while let Some((queued, frame)) = frames.next() {
            if let Err((error, frame)) = self.send_one(&mut peer, to, frame).await {
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

    /// Queues one frame, looking the peer up into `peer` unless a previous
    /// frame of the same batch did.
    async fn send_one(
        &self,
        peer: &mut Option<Arc<Peer>>,
        to: SocketAddr,
        frame: Bytes,
    ) -> Result<(), Refused> {
        if frame.len() > self.max_frame {
            let len = frame.len();
            let max = self.max_frame;
            return Err((TransportError::FrameTooLarge { len, max }, frame));
        }
        let p = match peer {
            Some(p) => p,
            None => match self.peer(to) {
                Ok(p) => peer.insert(p),
                Err(e) => return Err((e, frame)),
            },
        };
        // Checked per frame: a connection that drops midway makes the rest
        // of a batch wait or fail exactly as single sends would.
        if matches!(*p.state.borrow(), State::Up) {
            self.enqueue(p, to, frame)
        } else {
            self.send_when_up(p, to, frame).await
        }
    }

    /// Waits (bounded) for the peer's connection attempt, then queues.
    async fn send_when_up(
        &self,
        peer: &Arc<Peer>,
        to: SocketAddr,
        frame: Bytes,
    ) -> Result<(), Refused> {
        // One connect attempt, plus slack for a backoff that is just ending.
        let deadline = Instant::now() + self.config.connect_timeout * 2 + Duration::from_secs(1);
        let mut state = peer.state.clone();
        loop {
            let now = state.borrow_and_update().clone();
            match now {
                State::Up => return self.enqueue(peer, to, frame),
                State::Connecting => {}
                State::Down {
                    kind,
                    reason,
                    retry_at,
                } => {
                    if Instant::now() < retry_at {
                        return Err((down_error(&kind, &reason, to), frame));
                    }
                    peer.demand.notify_one();
                }
            }
            match tokio::time::timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err((self.gone(to), frame)),
                Err(_) => {
                    let reason = "connection attempt did not finish in time".into();
                    return Err((TransportError::Unreachable { addr: to, reason }, frame));
                }
            }
        }
    }

    fn enqueue(&self, peer: &Peer, to: SocketAddr, frame: Bytes) -> Result<(), Refused> {
        match peer.enqueue(to, frame, self.config.queue_bytes) {
            Err((TransportError::Closed, frame)) => Err((self.gone(to), frame)),
            other => other,
        }
    }

    /// The error for a peer whose task ended under a send: the transport
    /// closed, or the peer was forgotten meanwhile.
    fn gone(&self, to: SocketAddr) -> TransportError {
        if self.closed.load(Ordering::Acquire) {
            TransportError::Closed
        } else {
            TransportError::Unreachable {
                addr: to,
                reason: "the peer was forgotten while the frame was being queued".into(),
            }
        }
    }

    fn peer(&self, to: SocketAddr) -> Result<Arc<Peer>, TransportError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        let now = self.uses.fetch_add(1, Ordering::Relaxed);
        let mut map = self.map.lock();
        if let Some(p) = map.get(&to) {
            p.last_used.store(now, Ordering::Relaxed);
            return Ok(p.clone());
        }
        let max = self.config.max_peers.max(1);
        if map.len() >= max {
            // A linear scan, only when full and a new destination appears:
            // cheaper than keeping an ordered index on every send.
            let victim = map
                .iter()
                .filter(|(_, p)| p.is_idle())
                .min_by_key(|(_, p)| p.last_used.load(Ordering::Relaxed))
                .map(|(addr, _)| *addr);
            let Some(victim) = victim else {
                tracing::warn!(peer = %to, max, "peer table is full of busy peers: frame refused");
                return Err(TransportError::TooManyPeers { addr: to, max });
            };
            if let Some(old) = map.remove(&victim) {
                old.task.abort();
                tracing::debug!(evicted = %victim, peer = %to, max, "peer table full: least recently used idle peer evicted");
            }
        }
        let (tx, rx) = mpsc::channel(self.config.queue_frames.max(1));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (state_tx, state_rx) = watch::channel(State::Connecting);
        let demand = Arc::new(Notify::new());
        let outbox = Outbox {
            rx,
            bytes: bytes.clone(),
        };
        let task = self
            .tasks
            .spawn_abortable(run_peer(
                self.link.clone(),
                self.config.clone(),
                to,
                state_tx,
                outbox,
                demand.clone(),
            ))
            .ok_or(TransportError::Closed)?;
        let peer = Arc::new(Peer {
            tx,
            bytes,
            state: state_rx,
            demand,
            task,
            last_used: AtomicU64::new(now),
        });
        map.insert(to, peer.clone());
        Ok(peer)
    }

    /// Drops the peer at `to`: aborts its task, which closes its connection
    /// and discards the frames queued for it. Returns whether it was known.
    pub fn forget(&self, to: SocketAddr) -> bool {
        let removed = self.map.lock().remove(&to);
        match removed {
            Some(peer) => {
                peer.task.abort();
                tracing::debug!(peer = %to, "peer forgotten");
                true
            }
            None => false,
        }
    }

    /// How many destinations are tracked now.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether no destination is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses further sends and forgets every peer (their tasks end when
    /// the transport's task set shuts down).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let old = std::mem::take(&mut *self.map.lock());
        for peer in old.values() {
            peer.task.abort();
        }
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

    /// A link that connects at once and either delivers what it is given
    /// or, when `stall` is set, never reads its queue (a stuck peer).
    struct FakeLink {
        stall: bool,
        live: Arc<AtomicUsize>,
        connects: Arc<AtomicUsize>,
        delivered: mpsc::UnboundedSender<(SocketAddr, Bytes)>,
    }

    struct FakeConn(Arc<AtomicUsize>);

    impl Drop for FakeConn {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl Link for FakeLink {
        type Conn = FakeConn;

        async fn connect(&self, _to: SocketAddr) -> Result<FakeConn, TransportError> {
            self.connects.fetch_add(1, Ordering::SeqCst);
            self.live.fetch_add(1, Ordering::SeqCst);
            Ok(FakeConn(self.live.clone()))
        }

        async fn pump(
            &self,
            to: SocketAddr,
            conn: FakeConn,
            outbox: &mut Outbox,
        ) -> Option<String> {
            let _conn = conn;
            if self.stall {
                std::future::pending::<()>().await;
            }
            while let Some(frame) = outbox.recv().await {
                let _ = self.delivered.send((to, frame));
            }
            None
        }
    }

    struct Fixture {
        peers: Peers<FakeLink>,
        live: Arc<AtomicUsize>,
        connects: Arc<AtomicUsize>,
        delivered: mpsc::UnboundedReceiver<(SocketAddr, Bytes)>,
        _tasks: Arc<Tasks>,
    }

    fn fixture(max_peers: usize, stall: bool) -> Fixture {
        let (tx, delivered) = mpsc::unbounded_channel();
        let live = Arc::new(AtomicUsize::new(0));
        let connects = Arc::new(AtomicUsize::new(0));
        let tasks = Tasks::new();
        let link = FakeLink {
            stall,
            live: live.clone(),
            connects: connects.clone(),
            delivered: tx,
        };
        let config = PeerConfig {
            max_peers,
            ..PeerConfig::default()
        };
        Fixture {
            peers: Peers::new(link, config, 1 << 20, tasks.clone()),
            live,
            connects,
            delivered,
            _tasks: tasks,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    async fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "{what}: timed out");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn delivered(f: &mut Fixture) -> (SocketAddr, Bytes) {
        tokio::time::timeout(Duration::from_secs(10), f.delivered.recv())
            .await
            .expect("frame not delivered in time")
            .expect("link gone")
    }

    #[tokio::test]
    async fn the_cap_holds_under_many_distinct_peers() {
        let cap = 8;
        let mut f = fixture(cap, false);
        for port in 1..=500u16 {
            f.peers
                .send(addr(port), Bytes::from(port.to_be_bytes().to_vec()))
                .await
                .unwrap();
            let (to, frame) = delivered(&mut f).await;
            assert_eq!((to, &frame[..]), (addr(port), &port.to_be_bytes()[..]));
            assert!(f.peers.len() <= cap, "{} peers tracked", f.peers.len());
        }
        assert_eq!(f.peers.len(), cap);
        assert_eq!(f.connects.load(Ordering::SeqCst), 500);
        // Evicted peers' connections are closed, not merely untracked.
        let live = f.live.clone();
        wait_until("evicted connections closed", || {
            live.load(Ordering::SeqCst) <= cap
        })
        .await;
    }

    #[tokio::test]
    async fn the_least_recently_used_idle_peer_is_evicted() {
        let mut f = fixture(3, false);
        for port in [1, 2, 3, 1] {
            f.peers.send(addr(port), Bytes::new()).await.unwrap();
            delivered(&mut f).await;
        }
        // 2 is now the least recently used.
        f.peers.send(addr(4), Bytes::new()).await.unwrap();
        delivered(&mut f).await;
        let mut kept: Vec<_> = f.peers.map.lock().keys().map(|a| a.port()).collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![1, 3, 4]);
        // The evicted one reconnects on demand.
        f.peers.send(addr(2), Bytes::new()).await.unwrap();
        assert_eq!(delivered(&mut f).await.0, addr(2));
        assert_eq!(f.connects.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn busy_peers_are_not_evicted_and_a_new_one_is_refused() {
        let f = fixture(2, true);
        for port in [1, 2] {
            f.peers.send(addr(port), Bytes::new()).await.unwrap();
        }
        let err = f.peers.send(addr(3), Bytes::new()).await.unwrap_err();
        assert!(
            matches!(err, TransportError::TooManyPeers { addr: a, max: 2 } if a == addr(3)),
            "{err:?}"
        );
        assert_eq!(f.peers.len(), 2);
        // Forgetting one makes room.
        assert!(f.peers.forget(addr(1)));
        f.peers.send(addr(3), Bytes::new()).await.unwrap();
        let mut kept: Vec<_> = f.peers.map.lock().keys().map(|a| a.port()).collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![2, 3]);
    }

    #[tokio::test]
    async fn forget_drops_the_connection_and_the_queue() {
        let f = fixture(16, true);
        for i in 0..5u8 {
            f.peers.send(addr(1), Bytes::from(vec![i])).await.unwrap();
        }
        f.peers.send(addr(2), Bytes::new()).await.unwrap();
        assert_eq!(f.live.load(Ordering::SeqCst), 2);
        let queue = f.peers.map.lock()[&addr(1)].tx.clone();
        assert_eq!(queue.max_capacity() - queue.capacity(), 5);

        assert!(f.peers.forget(addr(1)));
        assert!(!f.peers.forget(addr(1)), "forgotten twice");
        assert_eq!(f.peers.len(), 1);
        let live = f.live.clone();
        wait_until("forgotten connection closed", || {
            live.load(Ordering::SeqCst) == 1
        })
        .await;
        // The queue went with the task: its frames were dropped.
        wait_until("forgotten queue dropped", || queue.is_closed()).await;
        // A later send starts afresh with a new connection.
        f.peers.send(addr(1), Bytes::new()).await.unwrap();
        assert_eq!(f.connects.load(Ordering::SeqCst), 3);
        assert_eq!(f.live.load(Ordering::SeqCst), 2);
    }
}
